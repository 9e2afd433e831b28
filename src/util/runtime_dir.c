#include "util/runtime_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fd.h"

bool vgpu_instance_name_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n >= VGPU_INSTANCE_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum(name[i]) && name[i] != '-' && name[i] != '_')
      return false;
  return true;
}

char *vgpu_builtin_runtime_dir(void) {
  if (geteuid() == 0)
    return g_strdup("/run/vgpu");
  const char *xdg = g_getenv("XDG_RUNTIME_DIR");
  if (xdg && g_path_is_absolute(xdg))
    return g_build_filename(xdg, "vgpu", NULL);
  return g_strdup_printf("/tmp/vgpu-%u", (unsigned)getuid());
}

char *vgpu_default_runtime_dir(void) {
  const char *env = g_getenv("VGPU_RUNTIME_DIR");
  if (env && *env)
    return g_strdup(env);
  return vgpu_builtin_runtime_dir();
}

static bool has_control_socket(const char *dir) {
  g_autofree char *path = g_build_filename(dir, "control.sock", NULL);
  struct stat st;
  return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

char *vgpu_client_runtime_dir_pick(const char *env, const char *own, const char *system) {
  if (env && *env)
    return g_strdup(env);
  if (!has_control_socket(own) && has_control_socket(system))
    return g_strdup(system);
  return g_strdup(own);
}

char *vgpu_client_runtime_dir(void) {
  g_autofree char *own = vgpu_builtin_runtime_dir();
  return vgpu_client_runtime_dir_pick(g_getenv("VGPU_RUNTIME_DIR"), own, VGPU_SYSTEM_RUNTIME_DIR);
}

static unsigned mode_bits(const struct stat *st) {
  return (unsigned)(st->st_mode & 07777);
}

static int fail_errno(GError **error, int e, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail_errno(GError **error, int e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error_literal(error, G_IO_ERROR, g_io_error_from_errno(e), msg);
  return -1;
}

/* A parent may be owned by root or by us; if others may write it, only the
 * sticky bit stops them from renaming what we made inside it. */
static bool parent_safe(const struct stat *st, uid_t me) {
  if (st->st_uid != 0 && st->st_uid != me)
    return false;
  return !(st->st_mode & (S_IWGRP | S_IWOTH)) || (st->st_mode & S_ISVTX);
}

int vgpu_private_dir_open(const char *path, mode_t mode, bool *created, GError **error) {
  if (created)
    *created = false;
  if (!path || !g_path_is_absolute(path))
    return fail_errno(error, EINVAL, "%s: not an absolute path", path ? path : "(null)");
  uid_t me = geteuid();
  g_auto(GStrv) parts = g_strsplit(path, "/", -1);
  int last = -1;
  for (int i = 0; parts[i]; i++) {
    if (g_str_equal(parts[i], ".") || g_str_equal(parts[i], ".."))
      return fail_errno(error, EINVAL, "%s: \".\" and \"..\" are not allowed in the path", path);
    if (*parts[i])
      last = i;
  }
  if (last < 0)
    return fail_errno(error, EINVAL, "/ cannot be a private directory");
  vgpu_autofd int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return fail_errno(error, errno, "/: %s", g_strerror(errno));
  g_autoptr(GString) sofar = g_string_new("");
  struct stat st;
  for (int i = 0; i <= last; i++) {
    if (!*parts[i])
      continue;
    /* What we are about to look in must be safe before we trust a name in it. */
    if (fstat(fd, &st) < 0)
      return fail_errno(error, errno, "%s: %s", sofar->len ? sofar->str : "/", g_strerror(errno));
    if (!parent_safe(&st, me))
      return fail_errno(error, EPERM,
                        "%s (a parent of %s) is owned by uid %u with mode %04o: a parent must be "
                        "owned by root or uid %u, and one that others may write needs the sticky "
                        "bit",
                        sofar->len ? sofar->str : "/", path, (unsigned)st.st_uid, mode_bits(&st),
                        (unsigned)me);
    g_string_append_printf(sofar, "/%s", parts[i]);
    bool made = false;
    int next = openat(fd, parts[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT) {
      if (mkdirat(fd, parts[i], mode) == 0)
        made = true;
      else if (errno != EEXIST)
        return fail_errno(error, errno, "cannot create %s: %s", sofar->str, g_strerror(errno));
      next = openat(fd, parts[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0)
      return fail_errno(error, errno, "%s: %s", sofar->str, g_strerror(errno));
    vgpu_autofd int fd_parent = fd;
    fd = next;
    if (fstat(fd, &st) < 0)
      return fail_errno(error, errno, "%s: %s", sofar->str, g_strerror(errno));
    if (S_ISLNK(st.st_mode))
      return fail_errno(
          error, ELOOP,
          "%s is a symbolic link (not followed): remove it or give a path without one", sofar->str);
    if (!S_ISDIR(st.st_mode))
      return fail_errno(error, ENOTDIR, "%s is not a directory", sofar->str);
    /* What we made gets exactly `mode`, whatever the umask: clients must
     * be able to reach the sockets.  The parent was found safe above, so
     * the name is still our directory. */
    if (made &&
        (fchmodat(fd_parent, parts[i], mode, AT_SYMLINK_NOFOLLOW) < 0 || fstat(fd, &st) < 0))
      return fail_errno(error, errno, "%s: %s", sofar->str, g_strerror(errno));
    if (i == last && created)
      *created = made;
  }
  if (st.st_uid != me || (st.st_mode & (S_IWGRP | S_IWOTH)))
    return fail_errno(error, EPERM,
                      "%s is owned by uid %u with mode %04o: it must be owned by uid %u (this "
                      "process) and writable by neither group nor others; remove it or choose "
                      "another directory",
                      path, (unsigned)st.st_uid, mode_bits(&st), (unsigned)me);
  int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return fail_errno(error, errno, "%s: %s", path, g_strerror(errno));
  return dfd;
}

int vgpu_private_file_open(int dirfd, const char *name, const char *path, int flags, mode_t mode,
                           GError **error) {
  /* O_NONBLOCK: a FIFO left there must not hang the open. */
  int how = flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  vgpu_autofd int fd = openat(dirfd, name, how | O_CREAT | O_EXCL, mode);
  bool made = fd >= 0;
  if (fd < 0 && errno == EEXIST)
    fd = openat(dirfd, name, how);
  if (fd < 0 && errno == ELOOP)
    return fail_errno(error, ELOOP, "%s is a symbolic link (not followed); remove it", path);
  if (fd < 0)
    return fail_errno(error, errno, "%s: %s", path, g_strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0)
    return fail_errno(error, errno, "%s: %s", path, g_strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fail_errno(error, EINVAL, "%s is not a regular file; remove it", path);
  if (st.st_uid != geteuid())
    return fail_errno(error, EPERM, "%s is owned by uid %u, not %u (this process); remove it", path,
                      (unsigned)st.st_uid, (unsigned)geteuid());
  if (st.st_nlink != 1)
    return fail_errno(error, EPERM,
                      "%s has %u hard links (another name for some other file?); "
                      "remove it",
                      path, (unsigned)st.st_nlink);
  /* A new file gets exactly `mode`, whatever the umask. */
  if (made && fchmod(fd, mode) < 0)
    return fail_errno(error, errno, "%s: %s", path, g_strerror(errno));
  int r = vgpu_set_nonblock(fd, false);
  if (r < 0)
    return fail_errno(error, -r, "%s: %s", path, g_strerror(-r));
  return vgpu_steal_fd(&fd);
}

#define VGPU_REMOVE_TREE_DEPTH 16

/* Empties the directory open at fd (taken over). */
static int remove_contents(int fd, int depth) {
  DIR *d = fdopendir(fd);
  if (!d) {
    int e = errno;
    close(fd);
    return -e;
  }
  int r = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (g_str_equal(de->d_name, ".") || g_str_equal(de->d_name, ".."))
      continue;
    if (unlinkat(dirfd(d), de->d_name, 0) == 0)
      continue;
    int rr = -errno;
    if (rr == -EISDIR) {
      int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0)
        rr = -errno;
      else if (depth <= 0) {
        close(sub);
        rr = -ELOOP;
      } else
        rr = remove_contents(sub, depth - 1);
      if (rr == 0 && unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0)
        rr = -errno;
    }
    if (rr < 0 && r == 0)
      r = rr;
  }
  closedir(d);
  return r;
}

int vgpu_remove_tree_at(int dirfd, const char *name, bool keep_top) {
  int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? 0 : -errno;
  int r = remove_contents(fd, VGPU_REMOVE_TREE_DEPTH);
  if (r == 0 && !keep_top && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    r = -errno;
  return r;
}
