/* Who is really behind a VM's vhost-user socket.
 *
 * libvirt (and anyone starting vgpu-vhost-gpu with --fd=N) makes a socket
 * pair, gives one end to the back-end and the other to the QEMU it starts
 * afterwards.  SO_PEERCRED on such a socket names the process that made
 * the pair (libvirtd), not QEMU.  vgpud learns the inode of the other end
 * once, at attach time (sock_diag, UNIX_DIAG_PEER), and later walks /proc
 * for the processes holding that inode, a bounded number of entries per
 * main-loop turn so the walk never stalls the daemon.  Everything read from
 * /proc is treated as untrusted text. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* The inode of the other end of connected AF_UNIX socket @fd.  0, or a
 * negative errno (-ENOENT: no peer, -EPROTONOSUPPORT: no unix_diag). */
int vgpu_unix_peer_ino(int fd, ino_t *peer);

typedef struct VgpuPeerWalk VgpuPeerWalk;

/* A walk of /proc/PID/fd for holders of socket inode @ino.  @root is the
 * proc mount ("/proc"; tests may pass another tree). */
VgpuPeerWalk *vgpu_peer_walk_new(const char *root, ino_t ino);
void vgpu_peer_walk_free(VgpuPeerWalk *w);
/* Looks at up to @budget directory entries; true once the walk is done
 * (then holders are final). */
bool vgpu_peer_walk_step(VgpuPeerWalk *w, unsigned budget);
/* Distinct holder pids found (at most 8 kept; *more set when there were
 * more), and for each the fd number that held it. */
unsigned vgpu_peer_walk_holders(const VgpuPeerWalk *w, const pid_t **pids, const int **fds,
                                bool *more);

typedef struct {
  pid_t pid;
  uid_t uid;     /* real uid, from status */
  char name[16]; /* comm, printable ASCII only */
} VgpuProcIdentity;

/* Reads @pid's real uid and name under @root, then checks that its fd
 * @fd still is socket inode @ino (so a pid reused meanwhile is not taken).
 * false when anything is missing or malformed. */
bool vgpu_proc_identity(const char *root, pid_t pid, int fd, ino_t ino, VgpuProcIdentity *out);
/* The real uid of a /proc/PID/status text (NUL-terminated); false when
 * its Uid line is missing or malformed. */
bool vgpu_proc_status_uid(const char *text, uid_t *uid);
/* A comm text's first line, at most 15 bytes, non-printable bytes as '?'. */
void vgpu_proc_comm_name(const char *text, char name[16]);
/* @pid's name (comm, printable ASCII), "" when unreadable. */
void vgpu_proc_name(const char *root, pid_t pid, char name[16]);
/* Whether two processes run the same program (/proc/PID/exe).  false when
 * either cannot be read. */
bool vgpu_proc_same_exe(const char *root, pid_t a, pid_t b);
