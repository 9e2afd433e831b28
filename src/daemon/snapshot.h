/* One reading of an instance's usage and its tenants, from the
 * supervisor's own records and the book (what workers wrote, clamped to
 * what each was granted): the figures the control server's views and the
 * metrics endpoint both report. */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "core/ledger.h"
#include "daemon/supervisor.h"

typedef struct VgpuTenantSnapshot {
  VgpuTenantInfo info;
  VgpuBookWorkerUsage usage;
} VgpuTenantSnapshot;

typedef struct VgpuInstanceSnapshot {
  VgpuBookUsage usage;     /* limits, usage and the instance's counters */
  guint clients;           /* connected tenants */
  guint vm_clients;        /* of those, virtual machines */
  uint64_t sessions_ended; /* vgpu_instance_sessions_ended() */
  /* GPU busy over about the last second, tenths of a percent of one GPU:
   * the sum of every tenant's busy_permille, so more than 1000 when
   * tenants render at once (llvmpipe on several CPUs). */
  uint32_t busy_permille;
  GArray *tenants;         /* VgpuTenantSnapshot in slot order; NULL unless asked for */
} VgpuInstanceSnapshot;

/* The totals and the tenants come from one reading of the workers (the
 * book frozen meanwhile).  Every tenant is included: the caller decides
 * what a viewer may see. */
void vgpu_instance_snapshot(VgpuSupervisor *s, VgpuInstance *in, bool tenants,
                            VgpuInstanceSnapshot *out);
void vgpu_instance_snapshot_clear(VgpuInstanceSnapshot *snap);
