/* The worker's guard: a thread that ends the worker when its tenant's work
 * must not go on, even while the main thread is stuck inside the renderer
 * (llvmpipe renders on its own threads, and a read-back or a flush waits
 * for them; nothing inside the process can cancel that):
 *
 *  - GPU timeout: GPU work has been outstanding for `gpu_timeout_s`
 *    without any of it completing;
 *  - client gone: the client's socket reports a hang-up (POLLHUP: the
 *    peer closed or died) while the main thread has been inside one
 *    renderer call for half a second, where it cannot look at the socket
 *    itself (shorter calls are left to the main thread, which sees the
 *    hang-up when it returns).
 *
 * Either way the guard calls its expire hook (default: one log line naming
 * the tenant, then _exit() with the worker-exit status: GPU_TIMEOUT or
 * CLIENT_LEFT).  Ending the process is the only way to stop llvmpipe.
 *
 * The main thread reports state with cheap calls (atomics, no system
 * call): enter/leave around renderer calls that may block, busy when GPU
 * work is submitted, progress when some completes.  Only entering the
 * renderer after a hang-up was seen wakes the thread.  While nothing is
 * outstanding the thread looks every eighth of the timeout, so a session
 * ends between gpu_timeout_s and 9/8 of it after its work stopped
 * progressing. */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct VgpuGuard VgpuGuard;

typedef enum {
  VGPU_GUARD_GPU_TIMEOUT,
  VGPU_GUARD_CLIENT_GONE,
} VgpuGuardCause;

/* Runs on the guard thread; seconds is how long the work has been
 * outstanding.  The default hook logs and exits the process. */
typedef void (*VgpuGuardExpire)(void *user, VgpuGuardCause cause, double seconds);

/* client_fd < 0: no hang-up watch; gpu_timeout_s 0: no timeout.  NULL hook:
 * log and _exit().  NULL (with error) if the thread cannot start. */
VgpuGuard *vgpu_guard_start(int client_fd, unsigned gpu_timeout_s, VgpuGuardExpire hook, void *user,
                            GError **error);
/* Stops and joins the thread. */
void vgpu_guard_stop(VgpuGuard *g);

/* All of these accept NULL (no guard). */
void vgpu_guard_enter(VgpuGuard *g);
void vgpu_guard_leave(VgpuGuard *g);
/* GPU work is outstanding (starts the clock if it was not). */
void vgpu_guard_busy(VgpuGuard *g);
/* Some GPU work completed: the clock restarts if some is still
 * outstanding, else stops. */
void vgpu_guard_progress(VgpuGuard *g, bool still_busy);
