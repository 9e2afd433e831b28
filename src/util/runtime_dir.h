/* The runtime directory that vgpud, vgpuctl and vgpu-run agree on, the
 * instance names found in it, and the checks that make vgpud use a
 * directory only when no other user can change what is in it.  Shared by
 * the daemon and the client tools, so the tools need nothing of the
 * daemon's configuration module. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

/* Longest instance name plus its NUL (the ledger's record size). */
#define VGPU_INSTANCE_NAME_MAX 32

/* Longest runtime directory: DIR/NAME/vhost-user.sock (the longest of an
 * instance's socket names) must fit an AF_UNIX address (107 bytes and a
 * NUL) for the longest NAME. */
#define VGPU_RUNTIME_DIR_MAX (107 - (1 + (VGPU_INSTANCE_NAME_MAX - 1) + 16))

/* [a-zA-Z0-9_-]{1,31}: safe as one path component. */
bool vgpu_instance_name_valid(const char *name);

/* /run/vgpu for root, $XDG_RUNTIME_DIR/vgpu when that is an absolute path,
 * else /tmp/vgpu-UID. */
char *vgpu_builtin_runtime_dir(void);
/* $VGPU_RUNTIME_DIR when set and not empty, else the built-in one. */
char *vgpu_default_runtime_dir(void);

/* The system vgpud's runtime directory (systemd's RuntimeDirectory=vgpu). */
#define VGPU_SYSTEM_RUNTIME_DIR "/run/vgpu"

/* Where a client (vgpuctl, vgpu-run, vgpu-vhost-gpu) finds vgpud:
 * $VGPU_RUNTIME_DIR when set and not empty; else the built-in directory
 * when a control socket is there (a vgpud of the user's own); else the
 * system vgpud's when a control socket is there; else the built-in one (so
 * that errors name it). */
char *vgpu_client_runtime_dir(void);
/* The same choice with the directories given (for tests): env may be NULL. */
char *vgpu_client_runtime_dir_pick(const char *env, const char *own, const char *system);

/* Opens the directory at the absolute `path` for this process's private
 * files, creating it (and missing parents) with exactly `mode` (the umask does
 * not apply) when absent.  No
 * symbolic link is followed anywhere on the path.  Each existing parent
 * must be owned by root or by the effective uid and, when group or others
 * may write it, carry the sticky bit, so no other user can rename or
 * replace anything below it; the directory itself must be owned by the
 * effective uid and be writable by neither group nor others.  Returns an
 * O_DIRECTORY|O_CLOEXEC fd, or -1 with an error that names the path, its
 * owner and mode.  *created (when given) says whether the last component
 * was made here. */
int vgpu_private_dir_open(const char *path, mode_t mode, bool *created, GError **error);

/* Opens (creating with exactly `mode`, never through a symbolic link) the regular
 * file `name` in the directory dirfd; `path` names it in errors.  Refuses
 * a symbolic link, anything but a regular file, a file owned by another
 * uid and one with further hard links.  flags: O_RDWR/O_WRONLY plus e.g.
 * O_APPEND.  Returns the fd (close-on-exec) or -1 with the error set. */
int vgpu_private_file_open(int dirfd, const char *name, const char *path, int flags, mode_t mode,
                           GError **error);

/* Removes the directory `name` in dirfd (AT_FDCWD: a path) with all it
 * holds, or only what it holds when keep_top.  Symbolic links are
 * removed, never followed, and nothing deeper than 16 levels is entered.
 * A missing directory is success.  Returns 0 or the first failure's
 * negative errno (it goes on with the rest). */
int vgpu_remove_tree_at(int dirfd, const char *name, bool keep_top);
