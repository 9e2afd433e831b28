#include "util/small_file.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <unistd.h>

#include "util/fd.h"

char *vgpu_read_small(const char *dir, const char *name, size_t max) {
  if (max >= G_MAXSIZE - 1) {
    errno = EINVAL;
    return NULL;
  }
  g_autofree char *joined = dir ? g_build_filename(dir, name, NULL) : NULL;
  vgpu_autofd int fd = open(dir ? joined : name, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  /* Up to max + 1 bytes are read: one more than max tells a file that is
   * too large from one that fills max exactly. */
  size_t limit = max + 1, cap = MIN(limit, (size_t)4096), len = 0;
  char *buf = g_malloc(cap + 1);
  for (;;) {
    if (len == cap) {
      cap = cap > limit / 2 ? limit : cap * 2;
      buf = g_realloc(buf, cap + 1);
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0)
      break;
    if (n > 0)
      len += (size_t)n;
    if (n < 0 || len > max) {
      int err = n < 0 ? errno : EFBIG;
      g_free(buf);
      errno = err;
      return NULL;
    }
  }
  buf[len] = '\0';
  return buf;
}

ssize_t vgpu_read_small_into(int dirfd, const char *path, char *buf, size_t size) {
  if (size == 0) {
    errno = EINVAL;
    return -1;
  }
  vgpu_autofd int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return -1;
  size_t got = 0;
  while (got < size - 1) {
    ssize_t n = read(fd, buf + got, size - 1 - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      buf[got] = '\0';
      errno = e;
      return -1;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  buf[got] = '\0';
  return (ssize_t)got;
}
