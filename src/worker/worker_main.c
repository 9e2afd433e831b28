/* vgpu-worker: serves one client on one instance, speaking the protocol
 * --protocol names (vtest, or vhost-user-gpu for QEMU's virtio-gpu).
 * Started by vgpud with the client connection and the ledger inherited
 * (see the worker contract in docs/ARCHITECTURE.md); exits with a status from core/worker_exit.h.
 * With --probe it serves nobody: it starts its renderer as a serving
 * worker would and writes on stdout what it offers. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/capset.h"
#include "core/guard.h"
#include "core/ledger.h"
#include "core/loop.h"
#include "core/profile.h"
#include "core/worker_exit.h"
#include "render/renderer.h"
#include "util/fd.h"
#include "util/log.h"
#include "util/runtime_dir.h"
#include "util/sanitize.h"
#include "vtest/vtest_session.h"
#include "vtest/vtest_version.h"
#include "worker/frontend.h"
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

/* Front-ends by --protocol name. */
static const VgpuFrontendOps *const frontends[] = {&vgpu_vtest_frontend,
                                                   &vgpu_vhost_user_gpu_frontend};

static const VgpuFrontendOps *frontend_find(const char *name) {
  for (size_t i = 0; i < G_N_ELEMENTS(frontends); i++)
    if (g_strcmp0(frontends[i]->name, name) == 0)
      return frontends[i];
  return NULL;
}

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
  gint max_syncs;
  gint idle_timeout;
  gint64 host_memory;
  gint header_timeout;
  gint gpu_timeout;
  gchar *protocol;
  gint heads;
  gchar *virgl;
  gchar *shader_cache;
  gboolean no_sandbox;
  gboolean probe;
  gboolean version;
} WorkerArgs;

static void args_clear(WorkerArgs *a) {
  g_free(a->ledger_fds);
  g_free(a->instance);
  g_free(a->renderer);
  g_free(a->render_node);
  g_free(a->log_level);
  g_free(a->protocol);
  g_free(a->virgl);
  g_free(a->shader_cache);
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
      {"max-syncs", 0, 0, G_OPTION_ARG_INT, &a->max_syncs,
       "Sync objects a client may hold (vtest protocol 3; default 1024)", "N"},
      {"idle-timeout", 0, 0, G_OPTION_ARG_INT, &a->idle_timeout,
       "End the session after this many idle seconds (0: never)", "S"},
      {"host-memory", 0, 0, G_OPTION_ARG_INT64, &a->host_memory,
       "Bytes it may allocate once the renderer is up (RLIMIT_DATA; 0: no limit)", "N"},
      {"header-timeout", 0, 0, G_OPTION_ARG_INT, &a->header_timeout,
       "End the session when no whole command header arrived within S seconds (0: idle-timeout)",
       "S"},
      {"gpu-timeout", 0, 0, G_OPTION_ARG_INT, &a->gpu_timeout,
       "End the session when submitted work runs this many seconds without completing (0: "
       "never)",
       "S"},
      {"protocol", 0, 0, G_OPTION_ARG_STRING, &a->protocol, "vtest (default) or vhost-user-gpu",
       "NAME"},
      {"heads", 0, 0, G_OPTION_ARG_INT, &a->heads,
       "vhost-user-gpu: number of scanouts, 1..16 (default 1)", "N"},
      {"virgl", 0, 0, G_OPTION_ARG_STRING, &a->virgl,
       "vhost-user-gpu: offer the guest 3D (VIRGL); default on when the renderer is virgl",
       "on|off"},
      {"shader-cache", 0, 0, G_OPTION_ARG_FILENAME, &a->shader_cache,
       "Keep compiled shaders for this session in files Mesa opens in DIR, an empty directory "
       "of this uid's alone (mode 0700), and which are removed once open",
       "DIR"},
      {"no-sandbox", 0, 0, G_OPTION_ARG_NONE, &a->no_sandbox, "Do not install seccomp", NULL},
      {"probe", 0, 0, G_OPTION_ARG_NONE, &a->probe,
       "Serve no client: start the renderer (with --renderer, --render-node, --host-memory, "
       "--no-sandbox as when serving), write one JSON object on stdout naming it, the vtest "
       "protocol versions and the capability sets it offers, and exit",
       NULL},
      {"version", 0, 0, G_OPTION_ARG_NONE, &a->version, "Print the version", NULL},
      {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("- serve one client (started by vgpud)");
  g_option_context_add_main_entries(ctx, entries, NULL);
  return g_option_context_parse(ctx, &argc, &argv, error);
}

/* A JSON string of printable ASCII: anything else is escaped, so the
 * answer is valid UTF-8 whatever the driver's description holds. */
static void json_string(GString *out, const char *s) {
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_printf(out, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      g_string_append_printf(out, "\\u%04x", *p);
    else
      g_string_append_c(out, (char)*p);
  }
  g_string_append_c(out, '"');
}

static bool write_all(int fd, const char *buf, size_t len) {
  while (len) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    buf += n;
    len -= (size_t)n;
  }
  return true;
}

/* --probe: the renderer is started and sandboxed exactly as for a client;
 * then each known capability set is asked for (a size of 0 means the
 * renderer does not have it).  The answer (docs/ARCHITECTURE.md, "Worker
 * contract"):
 *   {"renderer": NAME, "description": TEXT, "vtest_protocols": [0, 2],
 *    "capsets": [{"id": 1, "version": 1, "size": 308}, ...],
 *    "gl_renderer": TEXT, "gl_version": TEXT, "virglrenderer_version": TEXT,
 *    "virglrenderer_library": PATH}  (the last four where known) */
static int run_probe(const WorkerArgs *a) {
  g_autoptr(GError) error = NULL;
  VgpuRendererConfig rcfg = {.render_node = a->render_node, .use_thread_sync = true};
  g_autoptr(VgpuRenderer) renderer =
      vgpu_renderer_new(a->renderer ? a->renderer : "virgl", &rcfg, NULL, NULL, &error);
  if (!renderer) {
    vgpu_error("renderer: %s", error->message);
    return VGPU_WORKER_EXIT_RENDERER;
  }
  /* What it runs on, asked before the sandbox (the library's path is
   * resolved through the file system). */
  VgpuRendererVersions rv = {0};
  if (renderer->ops->versions)
    renderer->ops->versions(renderer, &rv);
  VgpuSandboxConfig sb = {.host_memory = (uint64_t)MAX(a->host_memory, 0),
                          .filter = !a->no_sandbox};
  VgpuSandboxState sbs;
  if (!vgpu_sandbox_apply(&sb, &sbs, &error)) {
    vgpu_error("sandbox: %s", error->message);
    return VGPU_WORKER_EXIT_ERROR;
  }
  g_autoptr(GString) out = g_string_new("{\"renderer\":");
  json_string(out, renderer->ops->name);
  g_string_append(out, ",\"description\":");
  json_string(out, renderer->ops->describe(renderer));
  const struct {
    const char *key, *value;
  } extra[] = {{"gl_renderer", rv.gl_renderer},
               {"gl_version", rv.gl_version},
               {"virglrenderer_version", rv.library_version},
               {"virglrenderer_library", rv.library_path}};
  for (size_t i = 0; i < G_N_ELEMENTS(extra); i++) {
    if (!extra[i].value)
      continue;
    g_string_append_printf(out, ",\"%s\":", extra[i].key);
    json_string(out, extra[i].value);
  }
  g_string_append(out, ",\"vtest_protocols\":[");
  uint32_t versions[16];
  size_t nv = MIN(vtest_protocol_versions_upto(vtest_renderer_max_version(renderer), versions,
                                               G_N_ELEMENTS(versions)),
                  G_N_ELEMENTS(versions));
  for (size_t i = 0; i < nv; i++)
    g_string_append_printf(out, "%s%u", i ? "," : "", versions[i]);
  g_string_append(out, "],\"capsets\":[");
  bool first = true;
  for (size_t i = 0; i < VGPU_CAPSET_N_KNOWN; i++) {
    uint32_t id = vgpu_capset_names[i].id, ver = 0, size = 0;
    if (renderer->ops->get_capset(renderer, id, &ver, &size) < 0 || size == 0)
      continue;
    g_string_append_printf(out, "%s{\"id\":%u,\"version\":%u,\"size\":%u}", first ? "" : ",", id,
                           ver, size);
    first = false;
  }
  g_string_append(out, "]}\n");
  if (!write_all(STDOUT_FILENO, out->str, out->len)) {
    vgpu_error("cannot write the answer: %s", g_strerror(errno));
    return VGPU_WORKER_EXIT_ERROR;
  }
  return 0;
}

/* --shader-cache: Mesa's single-file shader cache in dir, which vgpud
 * made for this worker alone (daemon/shader_cache.h).  Refused, and the
 * cache left off, unless dir is a directory of this uid's that nobody
 * else may enter.  Called before any thread starts (setenv). */
static bool shader_cache_setup(const char *dir) {
  vgpu_autofd int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    vgpu_warn("shader cache %s: %s; compiling without one", dir, g_strerror(errno));
    return false;
  }
  if (st.st_uid != geteuid() || (st.st_mode & 077)) {
    vgpu_warn("shader cache %s: owned by uid %u with mode %04o, not this worker's alone (uid %u, "
              "0700); compiling without one",
              dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned)geteuid());
    return false;
  }
  setenv("MESA_SHADER_CACHE_DIR", dir, 1);
  setenv("MESA_DISK_CACHE_SINGLE_FILE", "1", 1);
  unsetenv("MESA_SHADER_CACHE_DISABLE");
  return true;
}

/* Once the renderer is up, Mesa holds its cache files open: the names
 * go, before the sandbox and before any command is read, so that the
 * cache is in this process's open files only and ends with it. */
static void shader_cache_unlink(const char *dir) {
  int r = vgpu_remove_tree_at(AT_FDCWD, dir, true);
  if (r < 0)
    vgpu_warn("emptying the shader cache %s: %s", dir, g_strerror(-r));
}

/* llvmpipe allocates and frees megabytes of scene data every frame.
 * With glibc's defaults the freed top of the heap goes back to the kernel
 * (trimmed) and comes back on the next frame one zero-filled page fault at
 * a time, a large part of a frame's CPU time in a VM.  Kept: up to
 * VGPU_WORKER_TRIM_BYTES of freed heap stays mapped for the next frame,
 * and allocations up to glibc's largest mmap threshold come from the heap
 * rather than from an mmap a free unmaps.  What the worker may allocate is
 * still bounded by --host-memory (RLIMIT_DATA counts the heap whether in
 * use or kept). */
#define VGPU_WORKER_TRIM_BYTES (64 << 20)
#define VGPU_WORKER_MMAP_THRESHOLD (32 << 20) /* glibc's upper bound on 64-bit */

static void keep_freed_memory(void) {
  if (!mallopt(M_MMAP_THRESHOLD, VGPU_WORKER_MMAP_THRESHOLD) ||
      !mallopt(M_TRIM_THRESHOLD, VGPU_WORKER_TRIM_BYTES))
    vgpu_debug("malloc tuning not taken: freed memory goes back to the kernel");
}

int main(int argc, char **argv) {
  __attribute__((cleanup(args_clear))) WorkerArgs a = {.client_fd = -1, .slot = -1, .client_pid = 0};
  g_autoptr(GError) error = NULL;
  vgpu_log_init("vgpu-worker", VGPU_LOG_INFO);
  if (!parse_args(argc, argv, &a, &error)) {
    fprintf(stderr, "vgpu-worker: %s\n", error->message);
    return VGPU_WORKER_EXIT_ERROR;
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
  if (a.probe) {
    vgpu_log_set_tag("probe");
    signal(SIGPIPE, SIG_IGN);
    return run_probe(&a);
  }
  if (getppid() == 1 && a.ledger_fds) {
    vgpu_error("supervisor already gone");
    return VGPU_WORKER_EXIT_ERROR;
  }
  signal(SIGPIPE, SIG_IGN);

  struct stat st;
  if (a.client_fd < 0 || fstat(a.client_fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
    vgpu_error("--client-fd must name a connected socket");
    return VGPU_WORKER_EXIT_ERROR;
  }
  vgpu_set_nonblock(a.client_fd, false);

  g_autoptr(VgpuLedger) ledger = NULL;
  if (a.ledger_fds) {
    int sfd, gfd, qfd;
    char end;
    if (sscanf(a.ledger_fds, "%d,%d,%d%c", &sfd, &gfd, &qfd, &end) != 3 || sfd < 0 || gfd < 0 ||
        qfd < 0) {
      vgpu_error("--ledger-fds must be three fds, as in 4,5,6");
      return VGPU_WORKER_EXIT_ERROR;
    }
    ledger = vgpu_ledger_attach(sfd, gfd, qfd, &error);
    if (!ledger) {
      vgpu_error("ledger: %s", error->message);
      return VGPU_WORKER_EXIT_ERROR;
    }
  }

  const VgpuFrontendOps *fe_ops = frontend_find(a.protocol ? a.protocol : "vtest");
  if (!fe_ops) {
    vgpu_error("unknown --protocol \"%s\" (built in: vtest, vhost-user-gpu)", a.protocol);
    return VGPU_WORKER_EXIT_ERROR;
  }
  if (a.idle_timeout < 0 || a.idle_timeout > G_MAXINT / 1000 || a.gpu_timeout < 0 ||
      a.gpu_timeout > (gint)VGPU_GPU_TIMEOUT_MAX_S) {
    vgpu_error("--idle-timeout or --gpu-timeout out of range");
    return VGPU_WORKER_EXIT_ERROR;
  }
  if (a.heads < 0 || a.heads > 16) {
    vgpu_error("--heads must be 1..16");
    return VGPU_WORKER_EXIT_ERROR;
  }
  int virgl = -1;
  if (a.virgl && g_strcmp0(a.virgl, "on") == 0)
    virgl = 1;
  else if (a.virgl && g_strcmp0(a.virgl, "off") == 0)
    virgl = 0;
  else if (a.virgl) {
    vgpu_error("--virgl must be on or off");
    return VGPU_WORKER_EXIT_ERROR;
  }
  VgpuFrontendArgs fa = {
      .client_fd = a.client_fd,
      .ledger = ledger,
      .slot = (uint32_t)MAX(a.slot, 0),
      .idle_timeout_ms = a.idle_timeout * 1000,
      /* No whole header within this: the client left (0: idle-timeout). */
      .header_timeout_ms =
          (a.header_timeout > 0 ? MIN(a.header_timeout, 86400) : a.idle_timeout) * 1000,
      .max_submit_bytes = (uint32_t)CLAMP(a.max_submit_bytes, 0, (gint64)UINT32_MAX),
      .max_stream_objects = (uint32_t)MAX(a.max_stream_objects, 0),
      .max_syncs = (uint32_t)MAX(a.max_syncs, 0),
      .heads = (uint32_t)MAX(a.heads, 1),
      .virgl = virgl,
  };

  /* Start the renderer (EGL, llvmpipe: tens of milliseconds) only once the
   * client has asked for something: a client that connects and leaves, or
   * leaves part of a request behind, costs a fork and an exec, nothing
   * more.  It is not a crash. */
  if (!fe_ops->await_client(&fa))
    return VGPU_WORKER_EXIT_CLIENT_LEFT;

  bool shader_cache = a.shader_cache && shader_cache_setup(a.shader_cache);

  /* The guard ends the worker when its client hangs up while the main
   * thread is stuck in the renderer, or when GPU work outlives
   * --gpu-timeout.  Started before the sandbox (it is a thread). */
  VgpuGuard *guard = vgpu_guard_start(a.client_fd, (unsigned)a.gpu_timeout, NULL, NULL, &error);
  if (!guard) {
    vgpu_error("%s", error->message);
    return VGPU_WORKER_EXIT_ERROR;
  }
  fa.guard = guard;

  keep_freed_memory();
  VgpuRendererConfig rcfg = {.render_node = a.render_node, .use_thread_sync = true};
  g_autoptr(VgpuRenderer) renderer =
      vgpu_renderer_new(a.renderer ? a.renderer : "virgl", &rcfg, NULL, NULL, &error);
  if (!renderer) {
    vgpu_error("renderer: %s", error->message);
    return VGPU_WORKER_EXIT_RENDERER;
  }
  if (shader_cache)
    shader_cache_unlink(a.shader_cache);

  VgpuSandboxConfig sb = {.host_memory = (uint64_t)MAX(a.host_memory, 0),
                           .filter = !a.no_sandbox};
  VgpuSandboxState sbs;
  if (!vgpu_sandbox_apply(&sb, &sbs, &error)) {
    vgpu_error("sandbox: %s", error->message);
    return VGPU_WORKER_EXIT_ERROR;
  }

  vgpu_debug("serving %s with %s", fe_ops->name, renderer->ops->describe(renderer));
  VgpuLoop *loop = vgpu_loop_new();
  VgpuFrontend *fe = fe_ops->create(renderer, loop, &fa);
  int r = vgpu_loop_run(loop);
  if (r < 0)
    vgpu_warn("worker loop: %s", g_strerror(-r));
  bool abandon = false;
  int code = fe_ops->finish(fe, &abandon);
  if (abandon) {
    /* The renderer is still busy with this tenant's work and cannot be
     * stopped from inside the process: tearing it down would wait for it.
     * The supervisor reclaims the slot from the exit. */
    _exit(code);
  }
  fe_ops->destroy(fe);
  vgpu_loop_free(loop);
  vgpu_guard_stop(guard);
  g_clear_pointer(&renderer, vgpu_renderer_free);
  vgpu_close(a.client_fd);
  return code;
}
