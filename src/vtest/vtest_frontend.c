/* The vtest front-end of the worker (worker/frontend.h): Mesa's virpipe
 * clients over a Unix socket.  A quota refusal ends the session. */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "core/worker_exit.h"
#include "util/log.h"
#include "vtest/vtest_decode.h"
#include "vtest/vtest_session.h"
#include "worker/frontend.h"

struct VgpuFrontend {
  VtestSession *session;
};

/* Waits until the client has sent VTEST_HDR_SIZE bytes (left in the
 * socket) or has gone.  Returns how many bytes are waiting: the header size
 * when it is all there, fewer (0 included) when the client hung up or sent
 * nothing within timeout_ms (-1: no limit).  Mesa writes each header in one
 * write(), so a real client is ready at the first wake-up.  While part of a
 * header waits, POLLIN stays set, so poll() can only wait for the hang-up:
 * the socket is looked at again after 5 ms, then less and less often (at
 * most once a second) for a client that dribbles its header or stops
 * half-way. */
static ssize_t wait_for_header(int fd, int timeout_ms) {
  gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  int backoff_ms = 5;
  for (;;) {
    char hdr[VTEST_HDR_SIZE];
    ssize_t n = recv(fd, hdr, sizeof(hdr), MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN)
      return 0;
    if (n == 0 || n == (ssize_t)sizeof(hdr))
      return n;
    n = MAX(n, 0);
    int wait_ms = -1;
    if (n > 0) {
      wait_ms = backoff_ms;
      backoff_ms = MIN(backoff_ms * 2, 1000);
    }
    if (deadline >= 0) {
      gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;
      if (left_ms <= 0)
        return n;
      wait_ms = wait_ms < 0 ? (int)MIN(left_ms, G_MAXINT) : (int)MIN(wait_ms, left_ms);
    }
    struct pollfd pfd = {.fd = fd, .events = (short)(n > 0 ? POLLRDHUP : POLLIN)};
    int pr = poll(&pfd, 1, wait_ms);
    if (pr < 0 && errno != EINTR)
      return n;
    if (pr > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      /* Gone: whatever it managed to send is all there will be. */
      ssize_t last = recv(fd, hdr, sizeof(hdr), MSG_PEEK | MSG_DONTWAIT);
      return MAX(last, 0);
    }
  }
}

static bool vtest_await_client(const VgpuFrontendArgs *a) {
  ssize_t have =
      wait_for_header(a->client_fd, a->header_timeout_ms > 0 ? a->header_timeout_ms : -1);
  if (have == 0) {
    vgpu_info("client left before sending a command");
    return false;
  }
  if (have < (ssize_t)VTEST_HDR_SIZE) {
    /* A client that leaves is not a crash, whenever it leaves. */
    vgpu_info("client left or went idle: only %zd of a command header's %u bytes arrived", have,
              VTEST_HDR_SIZE);
    return false;
  }
  return true;
}

static VgpuFrontend *vtest_create(VgpuRenderer *r, VgpuLoop *loop, const VgpuFrontendArgs *a) {
  VtestSessionConfig scfg = {
      .ledger = a->ledger, .slot = a->slot, .limits = VTEST_DEFAULT_LIMITS, .guard = a->guard};
  if (a->max_submit_bytes > 0)
    scfg.limits.max_submit_bytes = a->max_submit_bytes;
  scfg.max_stream_objects = a->max_stream_objects;
  scfg.max_syncs = a->max_syncs;
  if (vtest_renderer_max_version(r) < VTEST_PROTOCOL_VERSION)
    vgpu_info("renderer %s lacks blob resources or context fences: vtest protocol version 2 "
              "only (Mesa 24 and later clients that need version 3 cannot run)",
              r->ops->name);
  VgpuFrontend *fe = g_new0(VgpuFrontend, 1);
  fe->session = vtest_session_new(r, a->client_fd, &scfg);
  vtest_session_attach(fe->session, loop, a->idle_timeout_ms);
  return fe;
}

static int exit_code_for(VtestEnd end) {
  switch (end) {
  case VTEST_END_DISCONNECT:
  case VTEST_END_IDLE:
  case VTEST_END_IO:
  case VTEST_END_GONE:
    return VGPU_WORKER_EXIT_CLIENT_LEFT;
  case VTEST_END_VIOLATION:
    return VGPU_WORKER_EXIT_VIOLATION;
  case VTEST_END_QUOTA:
    return VGPU_WORKER_EXIT_QUOTA;
  case VTEST_END_RENDERER:
    return VGPU_WORKER_EXIT_RENDERER;
  default:
    return VGPU_WORKER_EXIT_ERROR;
  }
}

static int vtest_finish(VgpuFrontend *fe, bool *abandon) {
  VtestSession *s = fe->session;
  vtest_session_flush(s);
  VtestEnd end = vtest_session_end_kind(s);
  const char *who = vtest_session_client_name(s);
  const char *reason = vtest_session_end_reason(s);
  switch (end) {
  case VTEST_END_DISCONNECT:
  case VTEST_END_GONE:
    vgpu_info("%s%s%s", *who ? who : "", *who ? ": " : "", reason);
    break;
  case VTEST_END_VIOLATION:
    vgpu_warn("%s%sprotocol violation, session ended: %s", who, *who ? ": " : "", reason);
    break;
  case VTEST_END_QUOTA:
    vgpu_warn("%s%squota exceeded, session ended: %s", who, *who ? ": " : "", reason);
    break;
  default:
    vgpu_warn("%s%ssession ended (%s): %s", who, *who ? ": " : "", vtest_end_name(end), reason);
    break;
  }
  *abandon = vtest_session_work_pending(s);
  return exit_code_for(end);
}

static void vtest_destroy(VgpuFrontend *fe) {
  if (!fe)
    return;
  vtest_session_free(fe->session);
  g_free(fe);
}

const VgpuFrontendOps vgpu_vtest_frontend = {
    .name = "vtest",
    .await_client = vtest_await_client,
    .create = vtest_create,
    .finish = vtest_finish,
    .destroy = vtest_destroy,
};
