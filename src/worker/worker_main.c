/* vgpu-worker: serves one vtest client on one instance.  Started by vgpud
 * with the client connection and its ledger fds inherited (see the worker
 * contract in docs/ARCHITECTURE.md). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ledger.h"
#include "render/renderer.h"
#include "util/fd.h"
#include "util/log.h"
#include "util/sanitize.h"
#include "vtest/vtest_decode.h"
#include "vtest/vtest_session.h"
#include "worker/sandbox.h"

#if VGPU_SANITIZED
/* Sanitizer builds: at exit, LeakSanitizer finds blocks allocated from
 * llvmpipe's JIT code, which it cannot attribute or suppress by library.
 * The code this worker runs per command is leak-checked by the session
 * unit tests and the fuzzer, which drive the same library functions. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_leaks=0";
}
#endif

enum {
  WORKER_EXIT_OK = 0,
  WORKER_EXIT_ERROR = 1,
  WORKER_EXIT_VIOLATION = 2,
  WORKER_EXIT_QUOTA = 3,
  WORKER_EXIT_RENDERER = 4,
};

typedef struct {
  gint client_fd;
  gchar *ledger_fds;
  gint slot;
  gchar *instance;
  gint client_pid;
  gint client_uid;
  gchar *renderer;
  gchar *render_node;
  gchar *log_level;
  gint64 max_submit_bytes;
  gint max_stream_objects;
  gint idle_timeout;
  gint64 host_memory;
  gint header_timeout;
  gboolean no_sandbox;
  gboolean version;
} WorkerArgs;

static void args_clear(WorkerArgs *a) {
  g_free(a->ledger_fds);
  g_free(a->instance);
  g_free(a->renderer);
  g_free(a->render_node);
  g_free(a->log_level);
}

static int exit_code_for(VtestEnd end) {
  switch (end) {
  case VTEST_END_DISCONNECT:
  case VTEST_END_IDLE:
  case VTEST_END_IO:
    return WORKER_EXIT_OK;
  case VTEST_END_VIOLATION:
    return WORKER_EXIT_VIOLATION;
  case VTEST_END_QUOTA:
    return WORKER_EXIT_QUOTA;
  case VTEST_END_RENDERER:
    return WORKER_EXIT_RENDERER;
  default:
    return WORKER_EXIT_ERROR;
  }
}

static bool parse_args(int argc, char **argv, WorkerArgs *a, GError **error) {
  GOptionEntry entries[] = {
      {"client-fd", 0, 0, G_OPTION_ARG_INT, &a->client_fd, "Connected client socket", "FD"},
      {"ledger-fds", 0, 0, G_OPTION_ARG_STRING, &a->ledger_fds,
       "Slot page, grant page and request socket (omit: no quota)", "S,G,Q"},
      {"slot", 0, 0, G_OPTION_ARG_INT, &a->slot, "Ledger slot of this worker (for logs)", "N"},
      {"instance", 0, 0, G_OPTION_ARG_STRING, &a->instance, "Instance name (for logs)", "NAME"},
      {"client-pid", 0, 0, G_OPTION_ARG_INT, &a->client_pid, "Client pid (for logs)", "PID"},
      {"client-uid", 0, 0, G_OPTION_ARG_INT, &a->client_uid, "Client uid (for logs)", "UID"},
      {"renderer", 0, 0, G_OPTION_ARG_STRING, &a->renderer, "virgl (default) or null", "NAME"},
      {"render-node", 0, 0, G_OPTION_ARG_STRING, &a->render_node, "DRM render node", "PATH"},
      {"log-level", 0, 0, G_OPTION_ARG_STRING, &a->log_level, "error|warning|info|debug", "L"},
      {"max-submit-bytes", 0, 0, G_OPTION_ARG_INT64, &a->max_submit_bytes,
       "Largest command stream accepted", "N"},
      {"max-stream-objects", 0, 0, G_OPTION_ARG_INT, &a->max_stream_objects,
       "Live objects command streams may create (default 65536)", "N"},
      {"idle-timeout", 0, 0, G_OPTION_ARG_INT, &a->idle_timeout,
       "End the session after this many idle seconds (0: never)", "S"},
      {"host-memory", 0, 0, G_OPTION_ARG_INT64, &a->host_memory,
       "Bytes it may allocate once the renderer is up (RLIMIT_DATA; 0: no limit)", "N"},
      {"header-timeout", 0, 0, G_OPTION_ARG_INT, &a->header_timeout,
       "End the session when no whole command header arrived within S seconds (0: idle-timeout)",
       "S"},
      {"no-sandbox", 0, 0, G_OPTION_ARG_NONE, &a->no_sandbox, "Do not install seccomp", NULL},
      {"version", 0, 0, G_OPTION_ARG_NONE, &a->version, "Print the version", NULL},
      {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("- serve one vtest client (started by vgpud)");
  g_option_context_add_main_entries(ctx, entries, NULL);
  return g_option_context_parse(ctx, &argc, &argv, error);
}

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

int main(int argc, char **argv) {
  __attribute__((cleanup(args_clear))) WorkerArgs a = {.client_fd = -1, .slot = -1, .client_pid = 0};
  g_autoptr(GError) error = NULL;
  vgpu_log_init("vgpu-worker", VGPU_LOG_INFO);
  if (!parse_args(argc, argv, &a, &error)) {
    fprintf(stderr, "vgpu-worker: %s\n", error->message);
    return WORKER_EXIT_ERROR;
  }
  if (a.version) {
    printf("vgpu-worker %s\n", VGPU_VERSION);
    return 0;
  }
  VgpuLogLevel level;
  if (a.log_level && vgpu_log_level_parse(a.log_level, &level))
    vgpu_log_set_level(level);
  g_autofree char *tag = g_strdup_printf("%s client %d", a.instance ? a.instance : "?",
                                         a.client_pid);
  vgpu_log_set_tag(tag);

  /* Never outlive the supervisor: it is the one that reclaims our slot. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1 && a.ledger_fds) {
    vgpu_error("supervisor already gone");
    return WORKER_EXIT_ERROR;
  }
  signal(SIGPIPE, SIG_IGN);

  struct stat st;
  if (a.client_fd < 0 || fstat(a.client_fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
    vgpu_error("--client-fd must name a connected socket");
    return WORKER_EXIT_ERROR;
  }
  vgpu_set_nonblock(a.client_fd, false);

  g_autoptr(VgpuLedger) ledger = NULL;
  if (a.ledger_fds) {
    int sfd, gfd, qfd;
    char end;
    if (sscanf(a.ledger_fds, "%d,%d,%d%c", &sfd, &gfd, &qfd, &end) != 3 || sfd < 0 || gfd < 0 ||
        qfd < 0) {
      vgpu_error("--ledger-fds must be three fds, as in 4,5,6");
      return WORKER_EXIT_ERROR;
    }
    ledger = vgpu_ledger_attach(sfd, gfd, qfd, &error);
    if (!ledger) {
      vgpu_error("ledger: %s", error->message);
      return WORKER_EXIT_ERROR;
    }
  }

  /* Start the renderer (EGL, llvmpipe: tens of milliseconds) only once the
   * client has sent a whole command header: a client that connects and
   * leaves, or leaves part of a header behind, costs a fork and an exec,
   * nothing more. */
  int header_s = a.header_timeout > 0 ? MIN(a.header_timeout, 86400) : a.idle_timeout;
  ssize_t have = wait_for_header(a.client_fd, header_s > 0 ? header_s * 1000 : -1);
  if (have == 0) {
    vgpu_info("client left before sending a command");
    return WORKER_EXIT_OK;
  }
  if (have < (ssize_t)VTEST_HDR_SIZE) {
    vgpu_warn("session ended (io): only %zd of a command header's %u bytes arrived before the "
              "client hung up or went idle",
              have, VTEST_HDR_SIZE);
    return WORKER_EXIT_ERROR;
  }

  VgpuRendererConfig rcfg = {.render_node = a.render_node, .use_thread_sync = true};
  g_autoptr(VgpuRenderer) renderer =
      vgpu_renderer_new(a.renderer ? a.renderer : "virgl", &rcfg, NULL, NULL, &error);
  if (!renderer) {
    vgpu_error("renderer: %s", error->message);
    return WORKER_EXIT_RENDERER;
  }

  VgpuSandboxConfig sb = {.host_memory = (uint64_t)MAX(a.host_memory, 0),
                           .filter = !a.no_sandbox};
  VgpuSandboxState sbs;
  if (!vgpu_sandbox_apply(&sb, &sbs, &error)) {
    vgpu_error("sandbox: %s", error->message);
    return WORKER_EXIT_ERROR;
  }

  VtestSessionConfig scfg = {.ledger = ledger, .slot = (uint32_t)MAX(a.slot, 0),
                             .limits = VTEST_DEFAULT_LIMITS};
  if (a.max_submit_bytes > 0)
    scfg.limits.max_submit_bytes = (uint32_t)MIN(a.max_submit_bytes, (gint64)UINT32_MAX);
  if (a.max_stream_objects > 0)
    scfg.max_stream_objects = (uint32_t)a.max_stream_objects;
  vgpu_debug("serving with %s", renderer->ops->describe(renderer));

  g_autoptr(VtestSession) session = vtest_session_new(renderer, a.client_fd, &scfg);
  VtestEnd end = vtest_session_run(session, a.idle_timeout > 0 ? a.idle_timeout * 1000 : 0);
  const char *who = vtest_session_client_name(session);
  const char *reason = vtest_session_end_reason(session);
  switch (end) {
  case VTEST_END_DISCONNECT:
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
  g_clear_pointer(&session, vtest_session_free);
  g_clear_pointer(&renderer, vgpu_renderer_free);
  vgpu_close(a.client_fd);
  return exit_code_for(end);
}
