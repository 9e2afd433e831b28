/* The CPU capacity vgpud's workers may use, the whole "GPU" when they
 * render with llvmpipe (core/sched.h, VgpuCpuMeter): the CPUs in vgpud's
 * affinity mask (which a cpuset narrows too), bounded by every CPU ceiling
 * on the way from vgpud's cgroup up to the root of its hierarchy (cgroup
 * v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us).  Read once, at
 * start-up, before vgpud makes its own groups below its cgroup: the
 * ceilings of fixed shares that vgpud writes there are shares of this
 * capacity, not limits of it. */
#pragma once

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Thousandths of a CPU, at least VGPU_CPU_CAPACITY_MIN_MILLI; *desc (the
 * caller frees it) says where the figure came from, for the log. */
uint32_t vgpu_cpu_capacity_milli(char **desc);

#define VGPU_CPU_CAPACITY_MIN_MILLI 10u

/* ---- what the measured capacity reads (core/sched.h, VgpuCapacity) ------- */

/* vgpud's affinity mask (all CPUs when it cannot be read). */
void vgpu_cpu_affinity(cpu_set_t *set);
/* The idle (and iowait) time of the CPUs in set from /proc/stat, in ns;
 * false when it cannot be read. */
bool vgpu_cpu_idle_ns(const cpu_set_t *set, uint64_t *ns);
/* The CPU time of process pid (all its threads) from /proc/PID/stat, in
 * ns; false when it cannot be read (it ended and was reaped). */
bool vgpu_proc_cpu_ns(pid_t pid, uint64_t *ns);
/* The CPU time of process pid's live threads and the time they waited for
 * a CPU (the sums of their /proc/PID/task/N/schedstat), in ns, to the ns
 * (/proc/PID/stat counts clock ticks); false when they cannot be read (it
 * ended, or the kernel keeps no schedstats).  Threads that ended take
 * theirs with them: the sums may go back. */
bool vgpu_proc_sched_ns(pid_t pid, uint64_t *run_ns, uint64_t *delay_ns);

/* ---- pure functions (unit-tested) ---------------------------------------- */

/* A cgroup v2 cpu.max ("QUOTA PERIOD" or "max PERIOD"): the ceiling in
 * thousandths of a CPU (rounded down, at least 1), 0 for none ("max") or
 * text that is not a ceiling. */
uint32_t vgpu_cpu_max_milli(const char *text);
/* The same from cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us (a
 * quota of -1: none). */
uint32_t vgpu_cpu_cfs_milli(const char *quota_text, const char *period_text);
