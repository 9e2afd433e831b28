/* The whole text of a small file (procfs, sysfs, cgroupfs, where stat()
 * gives no size), read with a ceiling so that no file makes a process
 * allocate without end. */
#pragma once

#include <stddef.h>

/* Most any caller needs for one value or one short list: a cgroup or
 * sysfs value, /proc/meminfo. */
#define VGPU_SMALL_FILE_MAX ((size_t)64 * 1024)

/* Reads dir/name (name alone when dir is NULL) to its end and returns its
 * bytes NUL-terminated in memory to g_free(), or NULL with errno set: what
 * open() or read() failed with, or EFBIG when the file holds more than max
 * bytes (nothing of it is returned then).  EINTR is retried. */
char *vgpu_read_small(const char *dir, const char *name, size_t max);

/* Reads path (relative to dirfd, or AT_FDCWD; a final symlink is not
 * followed) into buf, at most size - 1 bytes, NUL-terminated: for /proc
 * files read often, without an allocation.  Returns how many bytes (a
 * longer file is cut there), or -1 with errno from open() or read().
 * EINTR is retried. */
#include <sys/types.h>
ssize_t vgpu_read_small_into(int dirfd, const char *path, char *buf, size_t size);
