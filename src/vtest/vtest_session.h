/* One vtest client session: executes decoded commands against a renderer,
 * charging the ledger before anything is allocated.
 *
 * The session never logs; when it ends it reports why (end kind + a
 * sentence) and the worker writes the one log line. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/guard.h"
#include "core/ledger.h"
#include "core/loop.h"
#include "render/renderer.h"
#include "vtest/vtest_decode.h"

typedef enum {
  VTEST_END_NONE = 0,
  VTEST_END_DISCONNECT, /* client hung up between commands */
  VTEST_END_VIOLATION,  /* malformed or hostile input */
  VTEST_END_QUOTA,      /* a request beyond the instance's limits */
  VTEST_END_RENDERER,   /* the renderer failed on valid input */
  VTEST_END_IO,         /* socket error, or hang-up mid-message */
  VTEST_END_IDLE,       /* idle timeout */
  VTEST_END_GONE,       /* client hung up while waiting for its GPU work */
} VtestEnd;

typedef struct VtestSessionConfig {
  VgpuLedger *ledger; /* NULL: no quota (tests) */
  uint32_t slot;
  VtestLimits limits;
  uint32_t max_version;        /* highest protocol version to agree to */
  uint32_t max_stream_objects; /* live objects command streams may create; 0: default */
  uint32_t max_syncs;          /* sync objects the client may hold; 0: VTEST_DEFAULT_MAX_SYNCS */
  VgpuGuard *guard;            /* NULL: none (tests) */
} VtestSessionConfig;

/* Sync objects a client may hold when the profile does not say. */
#define VTEST_DEFAULT_MAX_SYNCS 1024u
#define VTEST_MIN_MAX_SYNCS 16u
#define VTEST_MAX_MAX_SYNCS (1u << 20)
/* SYNC_WAITs not yet satisfied that one client may leave pending (each
 * holds an eventfd), and how long one is kept at most. */
#define VTEST_MAX_PENDING_WAITS 256u
#define VTEST_MAX_WAIT_MS (10u * 60u * 1000u)

/* The highest protocol version a session on this renderer can agree to:
 * 3 needs blob resources and context fences, else 2. */
uint32_t vtest_renderer_max_version(const VgpuRenderer *r);

typedef struct VtestSession VtestSession;

/* The session takes ownership of neither the renderer nor the socket.
 * sock < 0 discards every reply (fuzzing). */
VtestSession *vtest_session_new(VgpuRenderer *r, int sock, const VtestSessionConfig *cfg);
void vtest_session_free(VtestSession *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VtestSession, vtest_session_free)

/* Executes every complete command in buf; *consumed is the bytes used and
 * *need the total size the next command needs (at least header size).
 * Returns false when the session has ended (see end_kind). */
bool vtest_session_process(VtestSession *s, const uint8_t *buf, size_t len, size_t *consumed,
                           size_t *need);
/* Writes buffered replies; false on a socket error. */
bool vtest_session_flush(VtestSession *s);
/* Serves the socket from a worker loop: watches the client's socket and
 * the renderer's fence fd, and quits the loop when the session ends.
 * idle_timeout_ms <= 0: none.  False if the loop has no room. */
bool vtest_session_attach(VtestSession *s, VgpuLoop *loop, int idle_timeout_ms);
/* The same on a loop of its own, until the session ends. */
VtestEnd vtest_session_run(VtestSession *s, int idle_timeout_ms);
/* Whether submitted work has not completed yet (polls the renderer once). */
bool vtest_session_work_pending(VtestSession *s);

VtestEnd vtest_session_end_kind(const VtestSession *s);
const char *vtest_session_end_reason(const VtestSession *s);
const char *vtest_end_name(VtestEnd e);
/* The name the client gave in CREATE_RENDERER (printable), or "". */
const char *vtest_session_client_name(const VtestSession *s);
/* Live resources, sync objects, pending waits, unsignalled timeline
 * submissions (for tests). */
guint vtest_session_resource_count(const VtestSession *s);
guint vtest_session_sync_count(const VtestSession *s);
guint vtest_session_wait_count(const VtestSession *s);
guint vtest_session_timeline_pending(const VtestSession *s);
/* VRAM charged for the session's resources (for tests). */
uint64_t vtest_session_vram(const VtestSession *s);
