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
