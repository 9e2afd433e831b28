/* A worker front-end: the protocol one tenant speaks to its worker (vtest, or
 * vhost-user-gpu for QEMU's virtio-gpu).  The worker main is the same for all: it
 * parses the worker contract, maps the ledger, starts the guard, picks the
 * front-end by --protocol, lets it wait for its client, starts the
 * renderer, and runs the loop the front-end registered its fds on.
 *
 * The front-end decides what its tenant's refusals do (through the core
 * tenant's policy hook, core/tenant.h), writes the session's one log line,
 * and maps how the session ended to the worker exit contract
 * (core/worker_exit.h). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/guard.h"
#include "core/ledger.h"
#include "core/loop.h"
#include "render/renderer.h"

typedef struct VgpuFrontend VgpuFrontend;

typedef struct VgpuFrontendArgs {
  int client_fd;      /* connected, blocking; the worker keeps ownership */
  VgpuLedger *ledger; /* NULL: no quota */
  uint32_t slot;
  int idle_timeout_ms;         /* 0: none */
  int header_timeout_ms;       /* first request within this; 0: none */
  uint32_t max_submit_bytes;   /* 0: the front-end's default */
  uint32_t max_stream_objects; /* live objects command streams may create; 0: default */
  uint32_t max_syncs;          /* sync objects a client may hold; 0: default */
  VgpuGuard *guard;            /* NULL: none */
  uint32_t heads;              /* vhost-user-gpu: scanouts, 1..16 (0: 1) */
  int virgl;                   /* vhost-user-gpu: offer VIRGL; -1: when the renderer is virgl */
} VgpuFrontendArgs;

typedef struct VgpuFrontendOps {
  const char *name; /* --protocol=NAME */
  /* Before the renderer starts (tens of milliseconds of CPU and a few MiB):
   * waits until the client has sent enough to need one.  False: the client
   * left or went idle first; the front-end has logged it and the worker
   * exits with VGPU_WORKER_EXIT_CLIENT_LEFT. */
  bool (*await_client)(const VgpuFrontendArgs *a);
  /* Creates the session and registers its fds (and timer) on the loop; it
   * quits the loop when the session ends. */
  VgpuFrontend *(*create)(VgpuRenderer *r, VgpuLoop *loop, const VgpuFrontendArgs *a);
  /* After the loop returned: writes the session's one log line and returns
   * the exit status.  *abandon: GPU work is still running, so the worker
   * must exit without tearing the renderer down (that would wait for it). */
  int (*finish)(VgpuFrontend *fe, bool *abandon);
  void (*destroy)(VgpuFrontend *fe);
} VgpuFrontendOps;

extern const VgpuFrontendOps vgpu_vtest_frontend;
extern const VgpuFrontendOps vgpu_vhost_user_gpu_frontend;
