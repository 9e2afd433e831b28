/* Worker isolation, vgpud's half: the identity each worker runs under and
 * its host-memory cap.
 *
 * When vgpud is root, every live worker gets a uid (and the same gid) of
 * its own from [daemon] worker-uid-range, no supplementary groups (but the
 * render node's group when the node needs it), an empty capability
 * bounding set and no_new_privs, all set in the child between fork and
 * exec (vgpu_isolation_child_setup).  The worker itself installs the
 * seccomp filter once its renderer is up (src/worker/sandbox.c).
 *
 * The host-memory cap is a cgroup v2 memory.max (and memory.swap.max=0)
 * per worker when vgpud's own cgroup is delegated to it, else an
 * RLIMIT_DATA the worker sets on itself (--host-memory). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/config.h"

typedef struct VgpuIsolation VgpuIsolation;

/* The default worker-uid-range: systemd's range for dynamic users, below
 * the subordinate ids useradd hands out (from 100000) and nobody (65534). */
#define VGPU_WORKER_UID_FIRST 61184u
#define VGPU_WORKER_UID_LAST 65519u

typedef enum {
  VGPU_MEMCAP_RLIMIT = 0, /* the worker sets RLIMIT_DATA on itself */
  VGPU_MEMCAP_CGROUP = 1, /* a cgroup v2 per worker */
} VgpuMemCap;

/* What one worker runs as; filled by vgpu_isolation_worker_prepare and
 * read (only) by the child setup, which runs between fork and exec. */
typedef struct VgpuWorkerIdentity {
  bool own_uid; /* false: vgpud is not root, the worker keeps vgpud's ids */
  uid_t uid;
  gid_t gid;
  int n_groups; /* 0 or 1 */
  gid_t groups[1];
  int cgroup_procs_fd; /* -1, or the worker cgroup's cgroup.procs */
  char *cgroup_dir;    /* NULL, or the worker's cgroup directory */
} VgpuWorkerIdentity;

/* Sets aside the ids of worker-uid-range that users or groups own (never
 * given to a worker; the system's databases are listed here and on
 * reload only, never on a spawn), refuses a range with fewer free ids than workers may
 * run at once or that overlaps /etc/subuid or /etc/subgid, finds whether
 * cgroups can be used, and logs once which measure is active and which
 * cannot apply. */
VgpuIsolation *vgpu_isolation_new(const VgpuConfig *cfg, const char *render_node, GError **error);
void vgpu_isolation_free(VgpuIsolation *iso);

VgpuMemCap vgpu_isolation_memcap(const VgpuIsolation *iso);
/* Builds the set of ids that accounts own anew (configuration reload):
 * an account made or removed since is seen from now on.  Too few free ids
 * left is logged; the running workers keep their ids. */
void vgpu_isolation_reload(VgpuIsolation *iso);
/* For tests: the local files read again on a spawn once changed (by
 * default /etc/passwd and /etc/group; the strings must outlive iso). */
void vgpu_isolation_set_account_files(VgpuIsolation *iso, const char *passwd, const char *group);

/* Picks a free uid (one no worker holds and no account owns) and, with
 * cgroups, creates the worker's cgroup with its cap.  No NSS lookup: an
 * account made since start-up or the last reload is found here only when
 * it is in the local files (/etc/passwd, /etc/group, read again once
 * changed), else at the next reload.  cgroup_parent (cgroup v2 only, may
 * be NULL) is the instance's CPU cgroup (daemon/cgroup.h): the worker's
 * cgroup is made there, with the memory cap when that is in use, and
 * joined in the child before exec.  false (and error) when every uid of
 * the range is in use or the cgroup cannot be made. */
bool vgpu_isolation_worker_prepare(VgpuIsolation *iso, uint64_t host_memory,
                                   const char *cgroup_parent, VgpuWorkerIdentity *id,
                                   GError **error);
/* The spawn is done (or failed): closes what only the child needed. */
void vgpu_isolation_worker_spawned(VgpuWorkerIdentity *id);
/* The worker has ended: its uid is free again and its cgroup removed.
 * Returns true when the cgroup's memory cap killed it (oom_kill). */
bool vgpu_isolation_worker_done(VgpuIsolation *iso, VgpuWorkerIdentity *id);

/* GSpawnChildSetupFunc: user_data is the VgpuWorkerIdentity.  Runs in the
 * child after fork: async-signal-safe calls only; on any failure it
 * writes one line to stderr and ends the child with status 1. */
void vgpu_isolation_child_setup(gpointer user_data);

/* Parses "FIRST-LAST" (both in 1..2^31-2, FIRST <= LAST). */
bool vgpu_uid_range_parse(const char *s, uint32_t *first, uint32_t *last);
