/* CPU shares of instances through cgroups.
 *
 * On llvmpipe a worker renders on its own CPU threads, so an instance's
 * share of the GPU is also a share of the CPU.  vgpud keeps one cgroup per
 * instance, with a CPU weight from its profile (and, for a fixed share, a
 * CPU ceiling), and one cgroup per worker below it, so that the tenants of
 * an instance share its CPU equally:
 *
 *   cgroup v2 (vgpud's own cgroup delegated to it, cpu controller there):
 *     <own>/daemon                vgpud itself (no process may sit in a
 *                                 cgroup that hands controllers down)
 *     <own>/instances/<name>      cpu.weight, cpu.max
 *     <own>/instances/<name>/w<N> one worker; made and joined in the child
 *                                 before exec (daemon/isolation.c)
 *   cgroup v1 cpu hierarchy (vgpud's cpu cgroup writable):
 *     <own>/<tree>/<name>         cpu.shares, cpu.cfs_quota_us
 *     <own>/<tree>/<name>/w<PID>  one worker, moved there right after spawn
 *   where <tree> is "vgpu" for the default runtime directory and
 *   "vgpu-<hash of the runtime directory>" otherwise; <tree>/cpu.shares is
 *   1024 per live worker, what the workers weighed as plain processes, so
 *   the tree as a whole takes no more and no less of the host than before
 *   and only the split between instances changes.  (With v2 the tree is
 *   vgpud's service cgroup, weighed by its unit's CPUWeight=.)
 *
 * Every directory and file is root's (0755/0644): a worker runs under a uid
 * of its own and can neither leave its cgroup nor change a weight.  When
 * neither hierarchy can be used the object says why (never NULL). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/profile.h"
#include "daemon/config.h"

typedef enum {
  VGPU_CGROUPS_OFF = 0,
  VGPU_CGROUPS_V1 = 1,
  VGPU_CGROUPS_V2 = 2,
} VgpuCgroupsMode;

/* The period of every CPU ceiling (cpu.max, cpu.cfs_period_us), and the
 * burst (cpu.max.burst, cpu.cfs_burst_us) a ceiling gets: as much again,
 * so that what a worker left unused in one period it may use in the next.
 * A ceiling is the bound on a worker that ignores its GPU-time tokens;
 * one that keeps them renders in bursts (a frame's tens of ms on all its
 * threads, then a wait), which a 100 ms period without a burst cut: a
 * 1/28 share of two CPUs (7 ms a period) got 75-84% of its share under
 * load.  Over any run of periods a worker still gets at most its ceiling
 * plus one period's worth. */
#define VGPU_CGROUP_PERIOD_US 1000000u
/* The smallest ceiling the kernel accepts. */
#define VGPU_CGROUP_MIN_QUOTA_US 1000u

typedef struct VgpuCgroups VgpuCgroups;

/* Finds a usable cpu controller (v2 first, then v1), creates the tree (a
 * stale one left by a vgpud that did not stop cleanly is emptied first)
 * and, with v2, moves vgpud into <own>/daemon.  enabled false
 * ([daemon] cgroups=off) gives an object that is off.  Never NULL. */
VgpuCgroups *vgpu_cgroups_new(bool enabled, const char *runtime_dir);
/* Removes the tree (what is still busy is left and logged). */
void vgpu_cgroups_free(VgpuCgroups *cg);

VgpuCgroupsMode vgpu_cgroups_mode(const VgpuCgroups *cg);
/* One line for the start-up log: where and which files, or "off (why)". */
const char *vgpu_cgroups_describe(const VgpuCgroups *cg);

/* (Re)writes the group of each of the n instances from its effective
 * profile and removes the groups of instances not among them once they are
 * empty (retried at the next call). */
void vgpu_cgroups_apply(VgpuCgroups *cg, const VgpuInstanceConfig *const *instances, guint n);

/* cgroup v2: the directory a worker of instance @name gets its cgroup
 * under (its group is made when missing); NULL with v1 or off. */
const char *vgpu_cgroups_worker_parent(VgpuCgroups *cg, const char *name);
/* cgroup v1: moves the new worker @pid into a cgroup of its own under its
 * instance's.  Logs once per failure cause; does nothing with v2 or off. */
void vgpu_cgroups_attach_worker(VgpuCgroups *cg, const char *name, pid_t pid);
/* The worker has been reaped: its cgroup goes (retried later when the
 * kernel still counts it). */
void vgpu_cgroups_worker_gone(VgpuCgroups *cg, pid_t pid);

/* ---- pure functions (unit-tested) ---------------------------------------- */

/* From /proc/self/cgroup text: the v2 path ("0::PATH"), or with a
 * controller name the v1 path of the hierarchy that has it ("N:a,b:PATH").
 * NULL when there is none. */
char *vgpu_cgroup_self_path(const char *proc_self_cgroup, const char *controller);
/* From /proc/self/mountinfo text: the mount point of cgroup2 (controller
 * NULL) or of the v1 hierarchy that has the controller. */
char *vgpu_cgroup_mount_point(const char *mountinfo, const char *controller);
/* cgroup v2 cpu.weight (1..10000) of a profile: its weight for a fixed
 * share, 100 (the kernel's default) for equal and best-effort. */
uint32_t vgpu_cgroup_cpu_weight(const VgpuProfile *p);
/* The v1 cpu.shares of a v2 weight (x 1024 / 100, rounded, 2..262144). */
uint64_t vgpu_cgroup_v1_shares(uint32_t weight);
/* The CPU ceiling of a fixed share per period: weight / total of n_cpus x
 * period, at least VGPU_CGROUP_MIN_QUOTA_US; 0 (no ceiling) when total is
 * 0, n_cpus 0 or weight > total. */
uint64_t vgpu_cgroup_quota_us(uint32_t weight, uint64_t total, unsigned n_cpus, uint64_t period_us);
/* The sum of the weights of the instances that are not best-effort (the
 * denominator of a fixed share). */
uint64_t vgpu_cgroup_weight_total(const VgpuInstanceConfig *const *instances, guint n);
