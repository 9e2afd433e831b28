/* A process's parent and start time from /proc/PID/stat: what names one
 * process for good (a pid alone may be reused once it ends). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct VgpuProcRef {
  pid_t pid;
  uint64_t start; /* /proc/PID/stat field 22: clock ticks after boot */
} VgpuProcRef;

/* Parses the text of /proc/PID/stat (the command name in parentheses may
 * hold any byte, ')' and spaces too: it is skipped up to the last ')').
 * False when the text is not that file's format. */
bool vgpu_proc_stat_parse(const char *text, size_t len, pid_t *ppid, uint64_t *start);

/* pid, its parent, its parent's parent ... (at most max entries, ending at
 * pid 1 or where /proc cannot be read).  Returns how many were filled. */
guint vgpu_proc_ancestry(pid_t pid, VgpuProcRef *out, guint max);
