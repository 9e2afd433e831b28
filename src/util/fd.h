/* File-descriptor ownership and the few socket helpers every process needs.
 * GLib 2.74 has no g_autofd, so this is ours. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

static inline void vgpu_closep(int *fd);
#define vgpu_autofd __attribute__((cleanup(vgpu_closep)))

/* Returns the fd and leaves -1 behind, like g_steal_pointer. */
static inline int vgpu_steal_fd(int *fd) {
  int r = *fd;
  *fd = -1;
  return r;
}

void vgpu_close(int fd);
static inline void vgpu_closep(int *fd) {
  if (*fd >= 0)
    vgpu_close(*fd);
  *fd = -1;
}

/* All return 0 or a negative errno; EINTR is retried. */
int vgpu_write_all(int fd, const void *buf, size_t len);
int vgpu_writev_all(int fd, struct iovec *iov, int iovcnt);
int vgpu_read_all(int fd, void *buf, size_t len);
/* Room for the control data that carries one fd (SCM_RIGHTS), aligned as
 * a cmsghdr needs. */
typedef union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int))];
} VgpuFdControl;
/* Points m's control data at ctl (cleared) and puts fd there as
 * SCM_RIGHTS: sendmsg(m) then passes a copy of fd with its first byte. */
void vgpu_msg_set_fd(struct msghdr *m, VgpuFdControl *ctl, int fd);
/* Sends one data byte (0) carrying one fd in SCM_RIGHTS. */
int vgpu_send_fd(int sock, int fd);
/* Most fds one vgpu_recvmsg_fds() call takes in: a message carrying more
 * arrives truncated (MSG_CTRUNC) and is refused. */
#define VGPU_RECV_FDS_MAX 16u
/* recvmsg() of up to len bytes into buf, with the fds passed along
 * (SCM_RIGHTS): the first max_fds are stored in fds[] (their number in
 * *n_fds, 0 when none came), every further one is closed.  recvmsg()
 * always gets MSG_CMSG_CLOEXEC, besides flags (e.g. MSG_DONTWAIT,
 * MSG_TRUNC); EINTR is retried.  Returns what recvmsg() returned (0 at end
 * of file) or -errno, *n_fds 0 then; control data cut short (MSG_CTRUNC:
 * more than VGPU_RECV_FDS_MAX fds, or fds with other control data) closes
 * every fd that arrived and returns -EMSGSIZE, the data read being lost. */
ssize_t vgpu_recvmsg_fds(int sock, void *buf, size_t len, int flags, int *fds, size_t max_fds,
                         size_t *n_fds);
/* Receives up to max_fds fds with one byte; returns number of fds or -errno
 * (-EPIPE at end of file). */
int vgpu_recv_fds(int sock, int *fds, int max_fds);
int vgpu_set_nonblock(int fd, bool nonblock);
int vgpu_set_cloexec(int fd, bool cloexec);
/* A listening AF_UNIX stream socket at path, non-blocking and
 * close-on-exec.  A stale socket there is replaced; anything else there is
 * refused (-EEXIST).  The file is created with exactly `mode` (0..0777,
 * the umask does not apply): it is set on the socket before bind(), never
 * by a chmod through the path afterwards.  The umask is cleared for the
 * duration of bind(), so no other thread may create files meanwhile.
 * Returns the fd or -errno. */
int vgpu_listen_unix(const char *path, unsigned mode, int backlog);
/* Peer credentials of a connected AF_UNIX socket. */
int vgpu_peer_cred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);
/* Number of open fds of this process (for leak checks and metrics). */
int vgpu_count_fds(void);
