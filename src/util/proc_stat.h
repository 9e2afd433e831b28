/* A process's parent and start time from /proc/PID/stat: what names one
 * process for good (a pid alone may be reused once it ends); its CPU time;
 * and the idle time of CPUs from /proc/stat. */
#pragma once

#include <glib.h>
#include <sched.h>
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
/* The same text's utime + stime (fields 14 and 15): the CPU time of every
 * thread of the process, those that ended included, in clock ticks
 * (sysconf(_SC_CLK_TCK)).  The kernel keeps these: a process cannot make
 * them smaller or larger than what it ran. */
bool vgpu_proc_stat_cpu(const char *text, size_t len, uint64_t *ticks);
/* The text of /proc/stat: idle + iowait (the fourth and fifth numbers) of
 * each "cpuN" line whose N is in mask (NULL: every one), summed in clock
 * ticks (saturating), and how many lines that was.  False when the text
 * holds no well-formed cpuN line at all. */
bool vgpu_proc_stat_idle(const char *text, size_t len, const cpu_set_t *mask, uint64_t *ticks,
                         unsigned *ncpus);

/* The text of /proc/PID/task/TID/schedstat ("RUN_NS DELAY_NS SLICES"):
 * the first number, the thread's CPU time, and the second, the time it
 * waited on a run queue for a CPU, both in ns.  The kernel keeps them.
 * False when the text is not that format. */
bool vgpu_proc_schedstat(const char *text, size_t len, uint64_t *run_ns, uint64_t *delay_ns);

/* pid, its parent, its parent's parent ... (at most max entries, ending at
 * pid 1 or where /proc cannot be read).  Returns how many were filled. */
guint vgpu_proc_ancestry(pid_t pid, VgpuProcRef *out, guint max);
