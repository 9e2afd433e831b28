/* The worker's side of GPU-time scheduling: one VgpuThrottle per tenant,
 * shared by the vtest session and the virtio-gpu device.
 *
 * Before a submission the front-end calls vgpu_throttle_submit(): while
 * the tenant has spent more GPU time than its share (the grant page's
 * share_ppm, read again after every slice of the wait) it waits.  After it,
 * vgpu_throttle_charge() with the wall time its GPU work took.  Where the
 * supervisor says so (the grant page's cpu_milli: llvmpipe), what is
 * charged instead is the process CPU time used since the last charge, as
 * a part of the host's CPU capacity (core/sched.h, VgpuCpuMeter); it is
 * also read before each submission, so that work llvmpipe's threads did
 * meanwhile counts.  At each frame
 * boundary vgpu_throttle_frame() paces frames to the grant page's fps_cap.
 * Waits come in slices of at most VGPU_THROTTLE_SLICE_MS, leave the guard
 * (a held-back tenant is not a GPU hang), watch the client's socket for a
 * hang-up, and are counted in the ledger as throttled_ns.  Work is only
 * delayed: never dropped, never reordered.
 *
 * Built with -Dscheduler=false, nothing waits (the calls still count busy
 * time).  A worker taken over by its tenant can skip its own waits: the
 * kernel-side CPU weight of its cgroup is what bounds it then. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/guard.h"
#include "core/ledger.h"
#include "core/sched.h"

#define VGPU_THROTTLE_SLICE_MS 50

typedef struct VgpuThrottle VgpuThrottle;

/* ledger NULL: never waits. */
VgpuThrottle *vgpu_throttle_new(VgpuLedger *ledger);
void vgpu_throttle_free(VgpuThrottle *t);
/* What a wait leaves and re-enters (NULL: none), and the socket whose
 * hang-up ends a wait early (-1: none, the wait sleeps). */
void vgpu_throttle_watch(VgpuThrottle *t, VgpuGuard *guard, int hangup_fd);
/* False when the client hung up while held back (the caller ends the
 * session as for any hang-up). */
bool vgpu_throttle_submit(VgpuThrottle *t);
/* Counts the GPU time of the work since the last charge in the ledger
 * (busy_ns) and takes it from the tenant's balance: busy_ns, the wall time
 * the caller measured, or on llvmpipe the process CPU time (busy_ns is
 * then not used). */
void vgpu_throttle_charge(VgpuThrottle *t, uint64_t busy_ns);
bool vgpu_throttle_frame(VgpuThrottle *t);
/* Tests: the clock (CLOCK_MONOTONIC ns) and the sleep.  sleep returns
 * false when the watched socket hung up. */
void vgpu_throttle_set_clock(VgpuThrottle *t, uint64_t (*now)(void *),
                             bool (*sleep)(void *, uint64_t ns), void *user);
uint64_t vgpu_throttle_now_ns(void);
/* Tests: the process CPU clock (ns) read on llvmpipe. */
void vgpu_throttle_set_cpu_clock(VgpuThrottle *t, uint64_t (*cpu_now)(void *), void *user);
