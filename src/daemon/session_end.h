/* Why each recent session ended, as vgpud tells it to the tenant's own
 * tools (vgpu-run asks after its program exits: control command
 * "session-end").  Every sentence here is composed by vgpud from what it
 * knows itself: the worker's wait status (core/worker_exit.h), the book's
 * last refusal of that worker, the instance's settings.  Nothing a worker
 * wrote is ever copied in: a worker may be hijacked. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/ledger.h"
#include "util/proc_stat.h"

/* Sessions kept: the oldest is dropped for a new one. */
#define VGPU_SESSION_END_RING 64
/* How far up a client's parents vgpud looks when it connects: enough for
 * vgpu-run -> sh -> timeout -> program. */
#define VGPU_SESSION_ANCESTORS 12

typedef struct VgpuSessionEnd {
  char instance[VGPU_NAME_MAX];
  pid_t client_pid;
  pid_t worker_pid; /* 0: refused before a worker was started */
  uid_t client_uid;
  gint64 ended_us;   /* wall clock (g_get_real_time) */
  bool by_vgpud;     /* vgpud's side ended it (not the client leaving) */
  const char *cause; /* static: client-left, refused, quota, violation,
                        gpu-timeout, renderer, crash, stopped */
  char reason[240];
  /* The client and its parents when it connected. */
  VgpuProcRef chain[VGPU_SESSION_ANCESTORS];
  guint n_chain;
} VgpuSessionEnd;

typedef struct VgpuSessionRing VgpuSessionRing;

VgpuSessionRing *vgpu_session_ring_new(void);
void vgpu_session_ring_free(VgpuSessionRing *r);
/* Copies e into the ring (over the oldest when full). */
void vgpu_session_ring_add(VgpuSessionRing *r, const VgpuSessionEnd *e);
/* Whether process `who` (pid and start time; start 0: any) is the client of chain or one
 * of the parents it had when it connected. */
bool vgpu_session_chain_has(const VgpuProcRef *chain, guint n, const VgpuProcRef *who);
/* The ended sessions whose chain has `who`, oldest first, that the caller
 * may read (its own uid's; every one for an admin): an array of
 * VgpuSessionEnd. */
GArray *vgpu_session_ring_find(const VgpuSessionRing *r, const VgpuProcRef *who, uid_t uid,
                               bool admin);

/* Composes why a worker's session ended into e->reason, e->cause and
 * e->by_vgpud.  status: its wait status; why: vgpud's own description of
 * it (describe_exit, or the host-memory cap); refusal: the book's last
 * refusal of that worker (may be NULL); gpu_timeout_s: the instance's. */
void vgpu_session_end_compose(VgpuSessionEnd *e, int status, const char *why,
                              const VgpuBookRefusal *refusal, uint32_t gpu_timeout_s);
