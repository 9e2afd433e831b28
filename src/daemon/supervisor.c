/* Supervisor: accepts clients on each instance's socket, checks the client
 * limit, opens a ledger record (slot page, grant page, request socket) and
 * hands the connection to a new vgpu-worker; answers the worker's ledger
 * requests without ever blocking (a worker that breaks the channel's rules
 * is killed); when a worker exits, for whatever reason, logs why and drops
 * its record so the instance's usage is again what its live tenants hold.
 * Event driven: no timers, no polling. */
#include "daemon/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <glob.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/gpumem.h"
#include "core/profile.h"
#include "core/worker_exit.h"
#include "vgpu-config.h"
#include "daemon/cgroup.h"
#include "daemon/cpu_capacity.h"
#include "core/sched.h"
#include "daemon/control.h"
#include "daemon/http.h"
#include "daemon/metrics.h"
#include "daemon/gpu_memory.h"
#include "daemon/listener.h"
#include "daemon/probe.h"
#include "daemon/vm_peer.h"
#include "daemon/session_end.h"
#include "daemon/shader_cache.h"
#include "daemon/state.h"
#include "util/fd.h"
#include "util/log.h"
#include "util/runtime_dir.h"

typedef struct VgpuWorker {
  struct VgpuInstance *inst;
  GPid pid;
  int slot;
  pid_t client_pid;
  uid_t client_uid;
  guint watch;
  VgpuWorkerIdentity id; /* the uid it runs as, its cgroup */
  bool shader_cache;     /* its private shader cache directory was made */
  guint ledger_watch;    /* the worker's ledger request socket */
  VgpuTenantKind kind;
  VgpuWorkerEndFunc end; /* attach_vm's caller, told of the end */
  gpointer end_user;
  char client_name[16]; /* the tenant process's name, "" when unknown */
  /* attach-vm on a socket pair: whose end the other one is, found later. */
  pid_t creator_pid;    /* who made the pair (SO_PEERCRED) */
  ino_t peer_ino;       /* the other end's inode; 0: nothing to find */
  VgpuPeerWalk *walk;   /* a /proc walk for its holders, while one runs */
  guint resolve_source; /* the next walk's timer, or the walk's turns */
  unsigned resolve_tries;
  /* Scheduling: busy_ns at the last tick, until when the worker counts as
   * active, and the share last written into its grant page. */
  uint64_t sched_busy;
  gint64 active_until_us;
  uint32_t share_ppm;
  uint64_t cpu_ns;                           /* its CPU time at the last tick (kernel's) */
  uint64_t run_ns, delay_ns; /* its live threads' CPU time and run delay then (kernel's) */
  VgpuBusyWindow busy;                       /* busy_ns samples for its utilisation */
  VgpuProcRef chain[VGPU_SESSION_ANCESTORS]; /* the client and its parents */
  guint n_chain;
} VgpuWorker;

struct VgpuInstance {
  VgpuSupervisor *sup;
  VgpuInstanceConfig *cfg;
  int ledger_index;
  int listen_fd;
  VgpuListener *listener;
  int vm_listen_fd; /* DIR/NAME/vhost-user.sock */
  VgpuListener *vm_listener;
  char *dir;
  char *socket_path;
  char *vm_socket_path;
  bool runtime_origin; /* created with vgpuctl create */
  bool transient;      /* create --transient: not in the state file */
  bool draining;       /* removed: no new clients, freed when empty */
  GHashTable *workers; /* pid -> VgpuWorker* */
  uint32_t share_ppm;  /* the instance's current share (0: best-effort) */
  guint active_tenants;
  uint64_t sessions_ended; /* workers' sessions vgpud's side ended */
};

struct VgpuSupervisor {
  VgpuConfig *cfg;
  char *runtime_dir;
  char *config_path;
  VgpuReloadFunc on_reload; /* see VgpuSupervisorOptions */
  gpointer on_reload_data;
  char *worker_path;
  char *render_node;
  char *render_driver; /* the render node's kernel driver, NULL if unknown */
  VgpuBook *book;
  VgpuIsolation *isolation;
  VgpuCgroups *cgroups;  /* CPU cgroups per instance and worker (may be off) */
  char **worker_env;     /* vgpud's environment, Mesa's disk cache off */
  VgpuShaderCache *shader_cache; /* DIR/shader-cache; NULL without own uids */
  GHashTable *instances; /* name -> VgpuInstance* */
  VgpuControl *control;
  VgpuHttp *http; /* metrics-listen; NULL: off */
  gint64 started_us;
  GHashTable *probes; /* renderer configuration (probe_key) -> VgpuProbe* */
  GHashTable *shots;  /* seq -> ShotPending*: screenshots asked of workers */
  uint32_t shot_seq;
  uint64_t gpu_memory; /* resolved [daemon] gpu-memory, bytes */
  /* The CPU capacity that is the whole GPU where workers render on
   * llvmpipe (thousandths of a CPU), and where that figure came from. */
  uint32_t cpu_milli;
  char *cpu_desc;
  /* On llvmpipe, the capacity that is the whole GPU is measured on the
   * tick (core/sched.h, VgpuCapacity): what was available to GPU work
   * within cpu_milli, on the CPUs of vgpud's affinity mask. */
  VgpuCapacity capacity;
  cpu_set_t cpus;
  uint32_t cpu_milli_written; /* the figure in the workers' grant pages */
  bool idle_warned;
  /* Whether an instance was starved (vgpu_capacity_starved()) over the
   * last STARVE_TICKS ticks, and when that window began: its threads'
   * schedstat files are read once a window, not every tick. */
  bool starved;
  guint starve_ticks;
  uint64_t starve_since_ns;
  /* Scheduling: the tick (while there are workers) and its reused arrays. */
  guint sched_timer;
  GPtrArray *sched_inst;
  GArray *sched_in, *sched_out;
  VgpuSessionRing *ends; /* why recent sessions ended */
  /* Run-time changes (daemon/state.h), kept in state_dir when it is set
   * and the file there could be read or moved aside (!state_read_only). */
  VgpuState *state;
  char *state_dir;
  bool state_read_only;
  char *state_error; /* why the last change was not kept, or NULL */
};

/* A screenshot asked of a worker, until it answers, ends or times out. */
typedef struct {
  VgpuSupervisor *sup;
  uint32_t seq;
  uint32_t slot;
  pid_t worker_pid;
  uint32_t head;
  char *instance;
  guint timer;
  VgpuShotDoneFunc done;
  gpointer user;
} ShotPending;

static void shot_pending_free(gpointer p) {
  ShotPending *sp = p;
  if (sp->timer)
    g_source_remove(sp->timer);
  g_free(sp->instance);
  g_free(sp);
}

/* Ends a pending screenshot: tells its caller (shot or error) once. */
static void shot_finish(ShotPending *sp, const VgpuShot *shot, const char *error) {
  VgpuShotDoneFunc done = sp->done;
  gpointer user = sp->user;
  g_hash_table_remove(sp->sup->shots, GUINT_TO_POINTER(sp->seq));
  done(shot, error, user);
}

static void instance_free(VgpuInstance *in);
static void sched_update(VgpuSupervisor *s);

/* ---- scheduling ----------------------------------------------------------- */

/* How often shares are recomputed, and how long after its last GPU work a
 * tenant still counts as active. */
#define SCHED_TICK_MS 200
#define SCHED_ACTIVE_US (750 * 1000)
/* The ledger ticks with it: a worker over a lowered limit keeps what it
 * held in the last 2 s (the docs say so). */
G_STATIC_ASSERT(SCHED_TICK_MS *VGPU_LEDGER_HOLD_TICKS == 2000);
/* Ticks per window of the starved-instance check: a second. */
#define STARVE_TICKS 5u

static bool renders_on_llvmpipe(VgpuSupervisor *s);

/* What a worker's CPU time is charged against now (0: it is charged wall
 * time). */
static uint32_t charge_cpu_milli(VgpuSupervisor *s) {
  return renders_on_llvmpipe(s) ? vgpu_capacity_milli(&s->capacity) : 0;
}

/* On llvmpipe: measures the CPU time that was available to GPU work since
 * the last tick, the workers' CPU time (the kernel's count, which a
 * worker cannot make larger or smaller than what it ran) plus the idle
 * time of vgpud's CPUs, and writes the smoothed figure into every
 * worker's grant page when it changed. */
static void capacity_tick(VgpuSupervisor *s) {
  if (!renders_on_llvmpipe(s))
    return;
  uint64_t idle = 0;
  if (!vgpu_cpu_idle_ns(&s->cpus, &idle)) {
    /* The figure stays; the window goes on to the next tick that reads. */
    if (!s->idle_warned)
      vgpu_warn("scheduling: cannot read the CPUs' idle time from /proc/stat: the CPU capacity "
                "stays at %u.%03u CPUs",
                vgpu_capacity_milli(&s->capacity) / 1000, vgpu_capacity_milli(&s->capacity) % 1000);
    s->idle_warned = true;
    return;
  }
  uint64_t now = (uint64_t)g_get_monotonic_time() * 1000u;
  uint32_t cap_now = vgpu_capacity_milli(&s->capacity);
  uint64_t used = 0, active_ppm = 0;
  /* Once a second: whether an instance was starved in that second. */
  bool check = ++s->starve_ticks >= STARVE_TICKS;
  uint64_t starve_window = 0;
  if (check) {
    s->starve_ticks = 0;
    starve_window = s->starve_since_ns && now > s->starve_since_ns ? now - s->starve_since_ns : 0;
    s->starve_since_ns = now;
    s->starved = false;
  }
  GHashTableIter it, wi;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    VgpuInstance *in = v;
    uint64_t inst_used = 0, inst_run = 0, inst_delay = 0;
    bool shared = in->cfg->eff.share != VGPU_SHARE_BEST_EFFORT;
    g_hash_table_iter_init(&wi, in->workers);
    while (g_hash_table_iter_next(&wi, NULL, &v)) {
      VgpuWorker *w = v;
      uint64_t ns = 0;
      /* One that ended since the last tick and was reaped is gone from
       * here: its last window's CPU time is not counted (the figure is a
       * little low for one tick). */
      if (vgpu_proc_cpu_ns(w->pid, &ns))
        inst_used += vgpu_cpu_delta(&w->cpu_ns, ns);
      uint64_t run = 0, delay = 0;
      if (check && shared && vgpu_proc_sched_ns(w->pid, &run, &delay)) {
        inst_run += vgpu_cpu_delta(&w->run_ns, run);
        inst_delay += vgpu_cpu_delta(&w->delay_ns, delay);
      }
    }
    used += inst_used;
    /* The part of the capacity the shares of instances that rendered hold
     * (by the kernel's count, so a worker cannot hide that it ran; one
     * that spins only makes the figure smaller). */
    if (inst_used > 0 && shared)
      active_ppm += in->share_ppm;
    /* Both counts are the kernel's too: a worker that makes itself wait
     * while under its share only withholds idle time it could not have
     * used; the others' shares stay shares of what the workers ran. */
    if (check && shared && inst_run > 0 &&
        vgpu_capacity_starved(inst_run, inst_delay, starve_window, in->share_ppm, cap_now))
      s->starved = true;
  }
  uint32_t milli = vgpu_capacity_tick(&s->capacity, now, idle, used,
                                      (uint32_t)MIN(active_ppm, UINT32_MAX), s->starved);
  if (milli == s->cpu_milli_written)
    return;
  s->cpu_milli_written = milli;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    VgpuInstance *in = v;
    g_hash_table_iter_init(&wi, in->workers);
    while (g_hash_table_iter_next(&wi, NULL, &v))
      vgpu_book_worker_set_cpu_milli(s->book, (uint32_t)((VgpuWorker *)v)->slot, milli);
  }
}

static gboolean on_sched_tick(gpointer user) {
  VgpuSupervisor *s = user;
  /* The ledger's tick too: recent peaks, and grants of instances over a
   * lowered limit falling with usage. */
  vgpu_book_tick(s->book);
  capacity_tick(s);
  sched_update(s);
  if (s->sched_timer)
    return G_SOURCE_CONTINUE;
  return G_SOURCE_REMOVE;
}

/* Reads each live worker's busy time (through the book: clamped and
 * monotonic, so a worker can only make itself look busier, which lowers
 * its own instance's tenants' shares, never others' beyond what one more
 * active tenant does), decides who is active, computes every instance's
 * share and writes each worker's share and frame-rate cap into its grant
 * page.  Runs on the tick, and at once when tenants or settings change.
 * The tick stops when no worker is left. */
static void sched_update(VgpuSupervisor *s) {
  gint64 now = g_get_monotonic_time();
  g_ptr_array_set_size(s->sched_inst, 0);
  guint workers = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v))
    g_ptr_array_add(s->sched_inst, v);
  g_array_set_size(s->sched_in, s->sched_inst->len);
  g_array_set_size(s->sched_out, s->sched_inst->len);
  for (guint i = 0; i < s->sched_inst->len; i++) {
    VgpuInstance *in = g_ptr_array_index(s->sched_inst, i);
    guint active = 0;
    GHashTableIter wi;
    g_hash_table_iter_init(&wi, in->workers);
    while (g_hash_table_iter_next(&wi, NULL, &v)) {
      VgpuWorker *w = v;
      uint64_t busy = vgpu_book_worker_busy_ns(s->book, (uint32_t)w->slot);
      if (busy > w->sched_busy)
        w->active_until_us = now + SCHED_ACTIVE_US;
      w->sched_busy = busy;
      vgpu_busy_window_push(&w->busy, now, busy);
      active += now < w->active_until_us;
      workers++;
    }
    in->active_tenants = active;
    VgpuShareIn *si = &g_array_index(s->sched_in, VgpuShareIn, i);
    si->mode = in->cfg->eff.share;
    si->weight = in->cfg->eff.weight;
    si->active_tenants = active;
  }
  vgpu_sched_shares((const VgpuShareIn *)(void *)s->sched_in->data, s->sched_in->len,
                    (VgpuShareOut *)(void *)s->sched_out->data);
  for (guint i = 0; i < s->sched_inst->len; i++) {
    VgpuInstance *in = g_ptr_array_index(s->sched_inst, i);
    const VgpuShareOut *so = &g_array_index(s->sched_out, VgpuShareOut, i);
    in->share_ppm = so->instance_ppm;
    GHashTableIter wi;
    g_hash_table_iter_init(&wi, in->workers);
    while (g_hash_table_iter_next(&wi, NULL, &v)) {
      VgpuWorker *w = v;
      w->share_ppm = now < w->active_until_us ? so->tenant_ppm : so->idle_tenant_ppm;
      vgpu_book_worker_set_sched(s->book, (uint32_t)w->slot, w->share_ppm, in->cfg->eff.fps_cap);
    }
  }
  if (workers && !s->sched_timer)
    s->sched_timer = g_timeout_add(SCHED_TICK_MS, on_sched_tick, s);
  else if (!workers && s->sched_timer) {
    g_source_remove(s->sched_timer);
    s->sched_timer = 0;
  }
}

const char *vgpu_tenant_kind_name(VgpuTenantKind kind) {
  return kind == VGPU_TENANT_VM ? "vm" : "vtest";
}

/* ---- worker binary and render node --------------------------------------- */

static char *find_worker(const VgpuConfig *cfg, GError **error) {
  g_autoptr(GPtrArray) tried = g_ptr_array_new_with_free_func(g_free);
  if (cfg->worker_path)
    g_ptr_array_add(tried, g_strdup(cfg->worker_path));
  else {
    const char *env = g_getenv("VGPU_WORKER");
    if (env && *env)
      g_ptr_array_add(tried, g_strdup(env));
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    if (self) {
      g_autofree char *dir = g_path_get_dirname(self);
      g_ptr_array_add(tried, g_build_filename(dir, "vgpu-worker", NULL));
      g_ptr_array_add(tried, g_build_filename(dir, "..", "worker", "vgpu-worker", NULL));
    }
    g_ptr_array_add(tried, g_build_filename(VGPU_LIBEXECDIR, "vgpu-worker", NULL));
  }
  for (guint i = 0; i < tried->len; i++) {
    const char *p = g_ptr_array_index(tried, i);
    if (access(p, X_OK) == 0)
      return g_canonicalize_filename(p, NULL);
  }
  g_ptr_array_add(tried, NULL);
  g_autofree char *list = g_strjoinv(", ", (char **)tried->pdata);
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
              "no executable vgpu-worker found (tried %s); set worker= in [daemon]", list);
  return NULL;
}

static char *find_render_node(const VgpuConfig *cfg) {
  if (cfg->render_node && !g_str_equal(cfg->render_node, "auto"))
    return g_strdup(cfg->render_node);
  glob_t g;
  char *found = NULL;
  if (glob("/dev/dri/renderD*", 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc && !found; i++) {
      int fd = open(g.gl_pathv[i], O_RDWR | O_CLOEXEC);
      if (fd >= 0) {
        found = g_strdup(g.gl_pathv[i]);
        close(fd);
      }
    }
    globfree(&g);
  }
  return found;
}

/* The kernel driver bound to a render node, from sysfs (by device number:
 * the path may be any name of the node), or NULL. */
static char *render_node_driver(const char *node) {
  struct stat st;
  if (!node || stat(node, &st) < 0 || !S_ISCHR(st.st_mode))
    return NULL;
  g_autofree char *link =
      g_strdup_printf("/sys/dev/char/%u:%u/device/driver", major(st.st_rdev), minor(st.st_rdev));
  g_autofree char *target = g_file_read_link(link, NULL);
  if (!target)
    return NULL;
  g_autofree char *name = g_path_get_basename(target);
  /* Shown as it is: a short name of printable ASCII only. */
  if (strlen(name) > 32 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-.") != strlen(name))
    return NULL;
  return g_steal_pointer(&name);
}

/* ---- workers ------------------------------------------------------------- */

static void describe_exit(int status, char *buf, size_t len, bool *crashed) {
  *crashed = false;
  if (WIFEXITED(status)) {
    int code = WEXITSTATUS(status);
    const char *name = vgpu_worker_exit_name(code);
    if (name)
      g_snprintf(buf, len, "%s (exit %d)", name, code);
    else
      g_snprintf(buf, len, "exit status %d", code);
    *crashed = vgpu_worker_exit_is_crash(code);
  } else if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    /* SIGTERM is a request to stop (vgpud's own at shutdown, or an
     * operator's), not a crash. */
    if (sig == SIGSYS)
      g_snprintf(buf, len, "killed by its seccomp filter (SIGSYS: a forbidden system call)");
    else
      g_snprintf(buf, len, "%s by SIG%s%s",
                 sig == SIGKILL   ? "killed"
                 : sig == SIGTERM ? "stopped"
                                  : "crashed",
                 sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
                 WCOREDUMP(status) ? " (core dumped)" : "");
    *crashed = sig != SIGTERM;
  } else {
    g_snprintf(buf, len, "status 0x%x", status);
  }
}

/* Brings the instances' CPU cgroups in line with their profiles (all
 * instances, draining ones included: their tenants still run). */
static void cgroups_sync(VgpuSupervisor *s) {
  if (vgpu_cgroups_mode(s->cgroups) == VGPU_CGROUPS_OFF)
    return;
  g_autoptr(GPtrArray) cfgs = g_ptr_array_new();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v))
    g_ptr_array_add(cfgs, ((VgpuInstance *)v)->cfg);
  vgpu_cgroups_apply(s->cgroups, (const VgpuInstanceConfig *const *)cfgs->pdata, cfgs->len);
}

static void maybe_finish_draining(VgpuInstance *in) {
  if (!in->draining || g_hash_table_size(in->workers) > 0)
    return;
  VgpuSupervisor *s = in->sup;
  vgpu_info("%s: removed (last tenant left)", in->cfg->name);
  g_hash_table_remove(s->instances, in->cfg->name);
  cgroups_sync(s);
}

static void on_worker_exit(GPid pid, gint status, gpointer user) {
  VgpuWorker *w = user;
  VgpuInstance *in = w->inst;
  VgpuSupervisor *s = in->sup;
  char why[128];
  bool crashed;
  describe_exit(status, why, sizeof(why), &crashed);
  vgpu_cgroups_worker_gone(s->cgroups, pid);
  /* Before its uid can be handed out again. */
  if (w->shader_cache)
    vgpu_shader_cache_remove(s->shader_cache, w->id.uid);
  if (vgpu_isolation_worker_done(s->isolation, &w->id)) {
    g_autofree char *cap = vgpu_format_size(in->cfg->eff.host_memory, false);
    g_snprintf(why, sizeof(why), "killed by its host-memory cap (%s, cgroup oom_kill)", cap);
  }
  if (w->ledger_watch) {
    g_source_remove(w->ledger_watch);
    w->ledger_watch = 0;
  }
  if (crashed)
    vgpu_book_note_crash(s->book, (uint32_t)in->ledger_index);
  /* Screenshots it was asked for end now. */
  for (bool again = true; again;) {
    again = false;
    GHashTableIter si;
    gpointer sv;
    g_hash_table_iter_init(&si, s->shots);
    while (g_hash_table_iter_next(&si, NULL, &sv)) {
      ShotPending *sp = sv;
      if (sp->worker_pid != pid)
        continue;
      g_autofree char *msg = g_strdup_printf("%s: the VM's worker %d ended before it answered (%s)",
                                             sp->instance, (int)pid, why);
      shot_finish(sp, NULL, msg);
      again = true;
      break;
    }
  }
  /* Why, for the tenant's own tools: composed here, from the status and
   * the book's last refusal, before the record goes. */
  VgpuSessionEnd rec = {.client_pid = w->client_pid,
                        .worker_pid = pid,
                        .client_uid = w->client_uid,
                        .ended_us = g_get_real_time(),
                        .n_chain = w->n_chain};
  g_strlcpy(rec.instance, in->cfg->name, sizeof(rec.instance));
  memcpy(rec.chain, w->chain, sizeof(rec.chain));
  VgpuBookRefusal refusal;
  vgpu_book_worker_last_refusal(s->book, (uint32_t)w->slot, &refusal);
  vgpu_session_end_compose(&rec, status, why, &refusal, in->cfg->eff.gpu_timeout_s);
  if (rec.by_vgpud)
    in->sessions_ended++;
  vgpu_session_ring_add(s->ends, &rec);
  uint64_t vram = vgpu_book_worker_remove(s->book, (uint32_t)w->slot);
  bool quiet = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
               (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  VgpuLogLevel lvl = quiet ? VGPU_LOG_INFO : VGPU_LOG_WARN;
  g_autofree char *vs = vgpu_format_size(vram, false);
  vgpu_log(lvl, "%s: %s pid %d worker %d ended: %s; slot %d reclaimed (%s)", in->cfg->name,
           w->kind == VGPU_TENANT_VM ? "VM (QEMU)" : "client", (int)w->client_pid, (int)pid, why,
           w->slot, vs);
  if (w->end) {
    VgpuWorkerEndFunc end = w->end;
    w->end = NULL;
    end(status, why, w->end_user);
  }
  g_spawn_close_pid(pid);
  w->watch = 0; /* this source ends itself after the callback */
  g_hash_table_remove(in->workers, GINT_TO_POINTER(pid));
  maybe_finish_draining(in);
  sched_update(s); /* its share goes to the others */
}

/* The worker's ledger requests.  The socket is non-blocking and the book
 * answers from memory, so this never waits on the worker; a worker that
 * breaks the channel's rules is killed (its exit is logged and reclaimed by
 * on_worker_exit as any other). */
static gboolean on_ledger_request(gint fd, GIOCondition cond, gpointer user) {
  VgpuWorker *w = user;
  VgpuInstance *in = w->inst;
  const char *why = NULL;
  int r = vgpu_book_worker_service(in->sup->book, (uint32_t)w->slot, &why);
  if (r == 0 && !(cond & (G_IO_HUP | G_IO_ERR)))
    return G_SOURCE_CONTINUE;
  if (r != 0 && r != -ECONNRESET) {
    vgpu_warn("%s: worker %d (client pid %d) %s: killed", in->cfg->name, (int)w->pid,
              (int)w->client_pid, why);
    kill(w->pid, SIGKILL);
  }
  w->ledger_watch = 0;
  return G_SOURCE_REMOVE;
}

/* What starts the renderer: the same for serving workers and probes. */
static void add_renderer_args(VgpuSupervisor *s, GPtrArray *argv) {
  g_ptr_array_add(argv, g_strdup_printf("--renderer=%s", s->cfg->renderer));
  if (s->render_node)
    g_ptr_array_add(argv, g_strdup_printf("--render-node=%s", s->render_node));
  g_ptr_array_add(argv,
                  g_strdup_printf("--log-level=%s", vgpu_log_level_name(vgpu_log_get_level())));
  if (!s->cfg->sandbox)
    g_ptr_array_add(argv, g_strdup("--no-sandbox"));
}

/* ---- renderer probes ------------------------------------------------------ */

/* Everything of the configuration that changes what a worker's renderer
 * offers. */
static char *probe_key(VgpuSupervisor *s) {
  return g_strdup_printf("%s|%s|%d", s->cfg->renderer, s->render_node ? s->render_node : "",
                         (int)s->cfg->sandbox);
}

/* Starts the probe of the current renderer configuration unless it has
 * one; never waits for it. */
static void probe_ensure(VgpuSupervisor *s) {
  g_autofree char *key = probe_key(s);
  if (g_hash_table_contains(s->probes, key))
    return;
  g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_strdup(s->worker_path));
  g_ptr_array_add(argv, g_strdup("--probe"));
  add_renderer_args(s, argv);
  if (vgpu_isolation_memcap(s->isolation) == VGPU_MEMCAP_RLIMIT)
    g_ptr_array_add(argv, g_strdup_printf("--host-memory=%llu", VGPU_PROBE_HOST_MEMORY));
  g_ptr_array_add(argv, NULL);
  g_autofree char *label = g_strdup_printf("%s on %s", s->cfg->renderer,
                                           s->render_node ? s->render_node : "EGL surfaceless");
  VgpuProbeSpawn sp = {.label = label,
                       .argv = (const char *const *)argv->pdata,
                       .envp = (const char *const *)s->worker_env,
                       .isolation = s->isolation,
                       .timeout_s = s->cfg->probe_timeout_s};
  g_hash_table_insert(s->probes, g_steal_pointer(&key), vgpu_probe_start(&sp));
}

/* Logs why a tenant is refused (one line, at lvl) and sets *error to the
 * reason alone. */
static void refuse_tenant(VgpuInstance *in, VgpuTenantKind kind, pid_t cpid, uid_t cuid,
                          VgpuLogLevel lvl, GError **error, const char *fmt, ...)
    G_GNUC_PRINTF(7, 8);
static void refuse_tenant(VgpuInstance *in, VgpuTenantKind kind, pid_t cpid, uid_t cuid,
                          VgpuLogLevel lvl, GError **error, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *why = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  vgpu_log(lvl, "%s: refused %s pid %d uid %u: %s", in->cfg->name,
           kind == VGPU_TENANT_VM ? "VM (QEMU)" : "client", (int)cpid, (unsigned)cuid, why);
  VgpuSessionEnd end = {.client_pid = cpid,
                        .client_uid = cuid,
                        .ended_us = g_get_real_time(),
                        .by_vgpud = true,
                        .cause = "refused"};
  g_strlcpy(end.instance, in->cfg->name, sizeof(end.instance));
  g_snprintf(end.reason, sizeof(end.reason), "refused by instance %s: %s", in->cfg->name, why);
  end.n_chain = vgpu_proc_ancestry(cpid, end.chain, VGPU_SESSION_ANCESTORS);
  vgpu_session_ring_add(in->sup->ends, &end);
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s", in->cfg->name, why);
}

/* Whether workers render with llvmpipe: virgl on EGL surfaceless, or on a
 * render node whose probe names llvmpipe (a software driver such as vgem's
 * kms_swrast). */
static bool renders_on_llvmpipe(VgpuSupervisor *s) {
  if (!g_str_equal(s->cfg->renderer, "virgl"))
    return false;
  if (!s->render_node)
    return true;
  g_autofree char *key = probe_key(s);
  const VgpuProbe *p = g_hash_table_lookup(s->probes, key);
  const VgpuProbeAnswer *a = p ? vgpu_probe_answer(p) : NULL;
  return a && a->description && strstr(a->description, "llvmpipe");
}

/* The start-up log's sentence on what a worker is charged as GPU time,
 * and why. */
static char *charge_clock_describe(VgpuSupervisor *s) {
  if (!g_str_equal(s->cfg->renderer, "virgl"))
    return g_strdup("wall time of the renderer's calls (renderer null: no GPU work)");
  unsigned n = (unsigned)CPU_COUNT(&s->cpus);
  g_autofree char *measured = g_strdup_printf(
      "the CPU time available to GPU work as the whole GPU, measured every %d ms as the "
      "workers' CPU time (/proc/PID/stat) plus the idle time of the %u CPU%s of vgpud's "
      "affinity mask (/proc/stat), averaged over about %llu s and kept between %u.%03u CPUs and "
      "the nominal %s (CPU time other processes take is no tenant's share)",
      SCHED_TICK_MS, n, n == 1 ? "" : "s", VGPU_CAPACITY_TAU_NS / 1000000000ull,
      s->capacity.floor_milli / 1000, s->capacity.floor_milli % 1000, s->cpu_desc);
  if (!s->render_node)
    return g_strdup_printf("each worker's process CPU time, with %s: llvmpipe renders on the "
                           "workers' own threads on these CPUs, where wall time to the fence "
                           "would also count the work of neighbours rendering at the same moment",
                           measured);
  return g_strdup_printf("wall time from submission to fence on %s (the GPU does the work); if "
                         "its probe names llvmpipe, each worker's process CPU time with %s",
                         s->render_node, measured);
}

/* Starts the worker of one tenant on client_fd (blocking, not owned).
 * Returns its pid, or 0 with the reason logged and in *error. */
static GPid spawn_worker(VgpuInstance *in, int client_fd, pid_t cpid, uid_t cuid,
                         VgpuTenantKind kind, bool virgl, GError **error) {
  VgpuSupervisor *s = in->sup;
  VgpuBookChildFds child;
  int slot = vgpu_book_worker_add(s->book, (uint32_t)in->ledger_index, cpid, cuid, &child);
  if (slot == -ENOSPC) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_WARN, error,
                  "no free ledger slot (%d tenants in all)", VGPU_LEDGER_MAX_SLOTS);
    return 0;
  }
  if (slot < 0) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_ERROR, error, "cannot create its ledger pages: %s",
                  g_strerror(-slot));
    return 0;
  }
  /* What its GPU time is, before it starts: on llvmpipe its process CPU
   * time against the measured capacity (rewritten on the tick), else wall
   * time to the fence. */
  vgpu_book_worker_set_cpu_milli(s->book, (uint32_t)slot, charge_cpu_milli(s));
  g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_strdup(s->worker_path));
  if (kind == VGPU_TENANT_VM) {
    /* The profile's heads bound the scanouts the guest sees. */
    g_ptr_array_add(argv, g_strdup("--protocol=vhost-user-gpu"));
    g_ptr_array_add(argv, g_strdup_printf("--heads=%u", CLAMP(in->cfg->eff.heads, 1u, 16u)));
    g_ptr_array_add(argv, g_strdup_printf("--virgl=%s", virgl ? "on" : "off"));
  }
  g_ptr_array_add(argv, g_strdup("--client-fd=3"));
  g_ptr_array_add(argv, g_strdup("--ledger-fds=4,5,6"));
  g_ptr_array_add(argv, g_strdup_printf("--slot=%d", slot));
  g_ptr_array_add(argv, g_strdup_printf("--instance=%s", in->cfg->name));
  g_ptr_array_add(argv, g_strdup_printf("--client-pid=%d", (int)cpid));
  g_ptr_array_add(argv, g_strdup_printf("--client-uid=%u", (unsigned)cuid));
  add_renderer_args(s, argv);
  g_ptr_array_add(argv, g_strdup_printf("--max-submit-bytes=%u", s->cfg->max_submit_bytes));
  if (vgpu_isolation_memcap(s->isolation) == VGPU_MEMCAP_RLIMIT)
    g_ptr_array_add(argv,
                    g_strdup_printf("--host-memory=%" G_GUINT64_FORMAT, in->cfg->eff.host_memory));
  g_ptr_array_add(argv,
                  g_strdup_printf("--max-stream-objects=%u", in->cfg->eff.max_stream_objects));
  g_ptr_array_add(argv, g_strdup_printf("--max-syncs=%u", in->cfg->eff.max_syncs));
  /* A guest may sit idle for hours, and QEMU speaks when its device is
   * set up, which libvirt may do well after starting the back-end: the
   * idle and first-request timeouts are for vtest tenants. */
  if (s->cfg->idle_timeout_s && kind == VGPU_TENANT_VTEST)
    g_ptr_array_add(argv, g_strdup_printf("--idle-timeout=%u", s->cfg->idle_timeout_s));
  if (s->cfg->header_timeout_s && kind == VGPU_TENANT_VTEST)
    g_ptr_array_add(argv, g_strdup_printf("--header-timeout=%u", s->cfg->header_timeout_s));
  g_ptr_array_add(argv, g_strdup_printf("--gpu-timeout=%u", in->cfg->eff.gpu_timeout_s));

  g_autoptr(GError) e = NULL;
  VgpuWorkerIdentity id;
  /* cgroup v2: the worker's cgroup is made under its instance's and
   * joined before exec; v1: it is moved there right after the spawn. */
  const char *cg_parent = vgpu_cgroups_worker_parent(s->cgroups, in->cfg->name);
  if (!vgpu_isolation_worker_prepare(s->isolation, in->cfg->eff.host_memory, cg_parent, &id, &e)) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_WARN, error, "%s", e->message);
    vgpu_book_worker_remove(s->book, (uint32_t)slot);
    return 0;
  }
  /* Its private shader cache (daemon/shader_cache.h); without one the
   * worker runs with Mesa's cache off, as before. */
  bool shader_cache = false;
  if (s->shader_cache && s->cfg->shader_cache && id.own_uid) {
    g_autofree char *dir = vgpu_shader_cache_make(s->shader_cache, id.uid, &e);
    if (dir) {
      g_ptr_array_add(argv, g_strdup_printf("--shader-cache=%s", dir));
      shader_cache = true;
    } else {
      vgpu_warn("%s: worker without a shader cache: %s", in->cfg->name, e->message);
      g_clear_error(&e);
    }
  }
  g_ptr_array_add(argv, NULL);
  /* llvmpipe's thread count is the profile's (render-threads). */
  g_auto(GStrv) env = g_strdupv(s->worker_env);
  if (in->cfg->eff.render_threads && renders_on_llvmpipe(s)) {
    char n[16];
    g_snprintf(n, sizeof(n), "%u", in->cfg->eff.render_threads);
    env = g_environ_setenv(env, "LP_NUM_THREADS", n, TRUE);
  }
  int source_fds[4] = {client_fd, child.slot_fd, child.grant_fd, child.sock};
  int target_fds[4] = {3, 4, 5, 6};
  GPid pid;
  /* The identity is dropped in the child, between fork and exec: the
   * worker starts as its own uid, without capabilities. */
  bool spawned = g_spawn_async_with_pipes_and_fds(
      "/", (const char *const *)argv->pdata, (const char *const *)env,
      G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL, vgpu_isolation_child_setup, &id, -1,
      -1, -1, source_fds, target_fds, 4, &pid, NULL, NULL, NULL, &e);
  vgpu_isolation_worker_spawned(&id);
  if (!spawned) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_ERROR, error, "cannot start a worker: %s",
                  e->message);
    if (shader_cache)
      vgpu_shader_cache_remove(s->shader_cache, id.uid);
    vgpu_isolation_worker_done(s->isolation, &id);
    vgpu_book_worker_remove(s->book, (uint32_t)slot);
    return 0;
  }
  vgpu_book_worker_started(s->book, (uint32_t)slot, pid);
  /* v1: until this write the worker runs in vgpud's cgroup (it is still
   * starting: no rendering has begun). */
  vgpu_cgroups_attach_worker(s->cgroups, in->cfg->name, pid);
  VgpuWorker *w = g_new0(VgpuWorker, 1);
  w->inst = in;
  w->pid = pid;
  w->slot = slot;
  w->client_pid = cpid;
  w->client_uid = cuid;
  vgpu_proc_name("/proc", cpid, w->client_name);
  w->id = id;
  w->shader_cache = shader_cache;
  w->kind = kind;
  vgpu_busy_window_init(&w->busy, g_get_monotonic_time(), 0);
  w->n_chain = vgpu_proc_ancestry(cpid, w->chain, VGPU_SESSION_ANCESTORS);
  g_hash_table_insert(in->workers, GINT_TO_POINTER(pid), w);
  w->watch = g_child_watch_add(pid, on_worker_exit, w);
  w->ledger_watch = g_unix_fd_add(vgpu_book_worker_fd(s->book, (uint32_t)slot),
                                  G_IO_IN | G_IO_HUP | G_IO_ERR, on_ledger_request, w);
  sched_update(s); /* its share and cap before it submits anything */
  const char *who = kind == VGPU_TENANT_VM ? "VM (QEMU)" : "client";
  if (id.own_uid)
    vgpu_info("%s: %s pid %d uid %u connected: worker %d (uid %u), slot %d", in->cfg->name, who,
              (int)cpid, (unsigned)cuid, (int)pid, (unsigned)id.uid, slot);
  else
    vgpu_info("%s: %s pid %d uid %u connected: worker %d, slot %d", in->cfg->name, who, (int)cpid,
              (unsigned)cuid, (int)pid, slot);
  return pid;
}

static guint clients_of_uid(VgpuInstance *in, uid_t uid) {
  guint n = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, in->workers);
  while (g_hash_table_iter_next(&it, NULL, &v))
    n += ((VgpuWorker *)v)->client_uid == uid;
  return n;
}

/* The limits of a new tenant, checked before a worker (and a ledger
 * slot) is spent on it.  False: refused, logged, reason in *error. */
static bool admit(VgpuInstance *in, VgpuTenantKind kind, pid_t cpid, uid_t cuid, GError **error) {
  guint live = g_hash_table_size(in->workers);
  if (in->draining) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_WARN, error, "instance is being removed");
    return false;
  }
  if (in->cfg->eff.max_clients && live >= in->cfg->eff.max_clients) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_WARN, error,
                  "client limit %" G_GUINT64_FORMAT " reached", in->cfg->eff.max_clients);
    vgpu_book_note_refusal(in->sup->book, (uint32_t)in->ledger_index);
    return false;
  }
  uint64_t per_uid = vgpu_profile_clients_per_uid(&in->cfg->eff);
  if (per_uid && clients_of_uid(in, cuid) >= per_uid) {
    refuse_tenant(in, kind, cpid, cuid, VGPU_LOG_WARN, error,
                  "per-uid client limit %" G_GUINT64_FORMAT " reached", per_uid);
    vgpu_book_note_refusal(in->sup->book, (uint32_t)in->ledger_index);
    return false;
  }
  return true;
}

/* 3D for VM tenants whenever the renderer can do it. */
static bool renderer_has_3d(const VgpuSupervisor *s) {
  return !g_str_equal(s->cfg->renderer, "null");
}

static void serve_connection(VgpuInstance *in, int fd, VgpuTenantKind kind) {
  vgpu_autofd int c = fd;
  pid_t cpid = 0;
  uid_t cuid = (uid_t)-1;
  vgpu_peer_cred(c, &cpid, &cuid, NULL);
  if (!admit(in, kind, cpid, cuid, NULL))
    return;
  /* The worker needs a blocking socket. */
  vgpu_set_nonblock(c, false);
  spawn_worker(in, c, cpid, cuid, kind, renderer_has_3d(in->sup), NULL);
}

/* Each new connection on DIR/NAME/vtest.sock. */
static void on_client(int fd, gpointer user) {
  serve_connection(user, fd, VGPU_TENANT_VTEST);
}

/* Each QEMU that connects on DIR/NAME/vhost-user.sock. */
static void on_vm_client(int fd, gpointer user) {
  serve_connection(user, fd, VGPU_TENANT_VM);
}

/* ---- instances ----------------------------------------------------------- */

static int listen_unix(const char *path, guint mode, GError **error) {
  int fd = vgpu_listen_unix(path, mode, 64);
  if (fd < 0)
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-fd), "listening on %s: %s", path,
                g_strerror(-fd));
  return fd;
}

static void instance_stop_listening(VgpuInstance *in) {
  g_clear_pointer(&in->listener, vgpu_listener_free);
  g_clear_pointer(&in->vm_listener, vgpu_listener_free);
  if (in->vm_listen_fd >= 0) {
    vgpu_close(in->vm_listen_fd);
    in->vm_listen_fd = -1;
    (void)unlink(in->vm_socket_path);
  }
  if (in->listen_fd >= 0) {
    vgpu_close(in->listen_fd);
    in->listen_fd = -1;
    (void)unlink(in->socket_path);
    (void)rmdir(in->dir);
  }
}

static void worker_forget(gpointer p) {
  VgpuWorker *w = p;
  if (w->watch)
    g_source_remove(w->watch);
  if (w->resolve_source)
    g_source_remove(w->resolve_source);
  vgpu_peer_walk_free(w->walk);
  /* Forgotten without its exit seen (vgpud is stopping): only the memory
   * goes; its cgroup, if any, is left to the next start-up. */
  g_free(w->id.cgroup_dir);
  if (w->ledger_watch)
    g_source_remove(w->ledger_watch);
  g_free(w);
}

static VgpuInstance *instance_new(VgpuSupervisor *s, const VgpuInstanceConfig *ic, bool runtime,
                                  GError **error) {
  uint64_t limits[VGPU_RES_N_QUOTA];
  vgpu_profile_limits(&ic->eff, limits);
  int idx = vgpu_book_instance_add(s->book, ic->name, limits);
  if (idx < 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE, "at most %d instances",
                VGPU_LEDGER_MAX_INSTANCES);
    return NULL;
  }
  VgpuInstance *in = g_new0(VgpuInstance, 1);
  in->sup = s;
  in->cfg = vgpu_instance_config_copy(ic);
  in->ledger_index = idx;
  in->listen_fd = -1;
  in->vm_listen_fd = -1;
  in->runtime_origin = runtime;
  in->workers = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, worker_forget);
  in->dir = g_build_filename(s->runtime_dir, ic->name, NULL);
  in->socket_path = g_build_filename(in->dir, "vtest.sock", NULL);
  in->vm_socket_path = g_build_filename(in->dir, "vhost-user.sock", NULL);
  /* Checked like the runtime directory: ours, not writable by others, no
   * symbolic link on the way. */
  int dfd = vgpu_private_dir_open(in->dir, 0755, NULL, error);
  if (dfd < 0) {
    instance_free(in);
    return NULL;
  }
  vgpu_close(dfd);
  in->listen_fd = listen_unix(in->socket_path, ic->socket_mode, error);
  if (in->listen_fd < 0) {
    instance_free(in);
    return NULL;
  }
  /* The same rules as the vtest socket: made with its mode, in the
   * instance's private directory, only a stale socket replaced. */
  in->vm_listen_fd = listen_unix(in->vm_socket_path, ic->socket_mode, error);
  if (in->vm_listen_fd < 0) {
    instance_free(in);
    return NULL;
  }
  /* One connection a wake-up: each starts a worker, and the control socket
   * gets its turn in between. */
  in->listener = vgpu_listener_new(in->listen_fd, ic->name, 1, on_client, in);
  g_autofree char *vm_what = g_strdup_printf("%s (vhost-user)", ic->name);
  in->vm_listener = vgpu_listener_new(in->vm_listen_fd, vm_what, 1, on_vm_client, in);
  g_autofree char *vram = vgpu_format_size(ic->eff.vram, true);
  vgpu_info("%s: listening on %s and %s (profile %s, VRAM %s, %" G_GUINT64_FORMAT
            " clients max, %" G_GUINT64_FORMAT " per uid)",
            ic->name, in->socket_path, in->vm_socket_path, ic->profile, vram, ic->eff.max_clients,
            vgpu_profile_clients_per_uid(&ic->eff));
  return in;
}

static void instance_free(VgpuInstance *in) {
  if (!in)
    return;
  instance_stop_listening(in);
  g_hash_table_unref(in->workers);
  if (in->ledger_index >= 0)
    vgpu_book_instance_remove(in->sup->book, (uint32_t)in->ledger_index);
  vgpu_instance_config_free(in->cfg);
  g_free(in->dir);
  g_free(in->socket_path);
  g_free(in->vm_socket_path);
  g_free(in);
}

static void instance_apply(VgpuInstance *in, const VgpuInstanceConfig *ic) {
  uint64_t limits[VGPU_RES_N_QUOTA];
  vgpu_profile_limits(&ic->eff, limits);
  vgpu_book_instance_set_limits(in->sup->book, (uint32_t)in->ledger_index, limits);
  /* The socket's own name in our directory, never through a symbolic link. */
  if (ic->socket_mode != in->cfg->socket_mode &&
      fchmodat(AT_FDCWD, in->socket_path, ic->socket_mode, AT_SYMLINK_NOFOLLOW) < 0)
    vgpu_warn("%s: cannot change the mode of %s: %s", ic->name, in->socket_path, g_strerror(errno));
  if (ic->socket_mode != in->cfg->socket_mode && in->vm_listen_fd >= 0 &&
      fchmodat(AT_FDCWD, in->vm_socket_path, ic->socket_mode, AT_SYMLINK_NOFOLLOW) < 0)
    vgpu_warn("%s: cannot change the mode of %s: %s", ic->name, in->vm_socket_path,
              g_strerror(errno));
  vgpu_instance_config_free(in->cfg);
  in->cfg = vgpu_instance_config_copy(ic);
  sched_update(in->sup); /* a new share mode, weight or cap holds at once */
}

static void instance_drain(VgpuInstance *in) {
  in->draining = true;
  instance_stop_listening(in);
  guint n = g_hash_table_size(in->workers);
  if (n)
    vgpu_info("%s: draining: no new clients, %u tenant(s) keep running", in->cfg->name, n);
  maybe_finish_draining(in);
}

/* ---- public --------------------------------------------------------------- */

/* ---- screenshots --------------------------------------------------------- */

/* A worker's screenshot reply (from the book; fd owned here).  Everything
 * in it is untrusted: a reply that breaks the rules (vgpu_shot_check) ends
 * that worker, and the caller gets the reason. */
static void on_shot_reply(void *user, uint32_t slot, const VgpuShotReply *r, int fd) {
  VgpuSupervisor *s = user;
  ShotPending *sp = g_hash_table_lookup(s->shots, GUINT_TO_POINTER(r->seq));
  if (!sp || sp->slot != slot) {
    /* Late (it timed out) or not this worker's to answer. */
    vgpu_debug("screenshot reply %u from slot %u dropped: nobody waits for it", r->seq, slot);
    vgpu_close(fd);
    return;
  }
  if (r->status != 0) {
    vgpu_close(fd);
    g_autofree char *msg =
        r->status == -ENOENT
            ? g_strdup_printf("%s: head %u shows nothing (the guest set no scanout there)",
                              sp->instance, sp->head)
            : g_strdup_printf(
                  "%s: the VM's worker could not capture head %u: %s", sp->instance, sp->head,
                  r->status < 0 && r->status > -4096 ? g_strerror(-r->status) : "bad status");
    shot_finish(sp, NULL, msg);
    return;
  }
  const char *why = NULL;
  if (r->head != sp->head || !vgpu_shot_check(r, fd, &why)) {
    if (!why)
      why = "screenshot of another head than asked";
    vgpu_warn("%s: worker %d sent a bad screenshot (%s): killed", sp->instance, (int)sp->worker_pid,
              why);
    vgpu_close(fd);
    kill(sp->worker_pid, SIGKILL);
    g_autofree char *msg =
        g_strdup_printf("%s: the VM's worker sent a bad screenshot (%s)", sp->instance, why);
    shot_finish(sp, NULL, msg);
    return;
  }
  VgpuShot shot = {.fd = fd,
                   .width = r->width,
                   .height = r->height,
                   .stride = r->stride,
                   .format = r->format,
                   .head = r->head,
                   .worker_pid = sp->worker_pid};
  shot_finish(sp, &shot, NULL);
  vgpu_close(shot.fd);
}

static gboolean on_shot_timeout(gpointer user) {
  ShotPending *sp = user;
  sp->timer = 0;
  vgpu_warn("%s: worker %d did not answer a screenshot request within %d ms", sp->instance,
            (int)sp->worker_pid, VGPU_SHOT_TIMEOUT_MS);
  g_autofree char *msg = g_strdup_printf("%s: the VM's worker did not answer within %d ms",
                                         sp->instance, VGPU_SHOT_TIMEOUT_MS);
  shot_finish(sp, NULL, msg);
  return G_SOURCE_REMOVE;
}

guint vgpu_supervisor_screenshot(VgpuSupervisor *s, const char *name, uint32_t head, pid_t tenant,
                                 uid_t uid, bool admin, VgpuShotDoneFunc done, gpointer user,
                                 GError **error) {
  VgpuInstance *in = vgpu_supervisor_find(s, name);
  if (!in) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "no instance \"%s\" (vgpuctl list shows them)", name ? name : "");
    return 0;
  }
  /* The VM tenants the caller may see: an admin all, others their own. */
  VgpuWorker *pick = NULL;
  guint n = 0, hidden = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, in->workers);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    VgpuWorker *w = v;
    if (w->kind != VGPU_TENANT_VM)
      continue;
    if (!admin && w->client_uid != uid) {
      hidden++;
      continue;
    }
    if (tenant && w->pid != tenant && w->client_pid != tenant)
      continue;
    n++;
    pick = w;
  }
  if (!pick) {
    if (tenant)
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                  "%s has no VM tenant with worker or QEMU pid %d%s", name, (int)tenant,
                  hidden ? " that you may see" : "");
    else
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s has no VM tenant%s", name,
                  hidden ? " of yours (screenshots of other users' VMs need an admin)" : "");
    return 0;
  }
  if (n > 1) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "%s has %u VM tenants: pick one with --tenant PID (vgpuctl show lists them)", name,
                n);
    return 0;
  }
  if (head >= VGPU_SHOT_MAX_HEADS) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s has no head %u", name, head);
    return 0;
  }
  uint32_t seq = ++s->shot_seq;
  if (seq == 0 || g_hash_table_contains(s->shots, GUINT_TO_POINTER(seq)))
    seq = ++s->shot_seq; /* wrapped: 0 means none */
  int rc = vgpu_book_worker_ask_shot(s->book, (uint32_t)pick->slot, seq, head);
  if (rc < 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-rc),
                "%s: cannot ask the VM's worker %d: %s", name, (int)pick->pid, g_strerror(-rc));
    return 0;
  }
  ShotPending *sp = g_new0(ShotPending, 1);
  sp->sup = s;
  sp->seq = seq;
  sp->slot = (uint32_t)pick->slot;
  sp->worker_pid = pick->pid;
  sp->head = head;
  sp->instance = g_strdup(in->cfg->name);
  sp->done = done;
  sp->user = user;
  sp->timer = g_timeout_add(VGPU_SHOT_TIMEOUT_MS, on_shot_timeout, sp);
  g_hash_table_insert(s->shots, GUINT_TO_POINTER(seq), sp);
  return seq;
}

void vgpu_supervisor_screenshot_cancel(VgpuSupervisor *s, guint id) {
  if (id)
    g_hash_table_remove(s->shots, GUINT_TO_POINTER(id));
}

/* ---- GPU memory ---------------------------------------------------------- */

static void log_gpu_memory(uint64_t gpu_memory, uint32_t milli, const char *source) {
  g_autofree char *gm = vgpu_format_size(gpu_memory, false);
  g_autofree char *cap = vgpu_format_size(vgpu_gpumem_capacity(gpu_memory, milli), false);
  g_autofree char *oc = vgpu_overcommit_format(milli);
  vgpu_info("GPU memory %s (%s), overcommit %s: the instances' vram limits may add up to %s", gm,
            source, oc, cap);
}

/* What the instances' VRAM limits take, but `skip`'s (NULL: none). */
static uint64_t gpu_memory_assigned(VgpuSupervisor *s, const VgpuInstance *skip) {
  uint64_t sum = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (v != skip)
      sum = vgpu_gpumem_add(sum,
                            vgpu_gpumem_charge(((VgpuInstance *)v)->cfg->eff.vram, s->gpu_memory));
  return sum;
}

/* Whether an instance `name` with this VRAM limit fits beside the others
 * (but `skip`, the one it replaces). */
static bool gpu_memory_fits(VgpuSupervisor *s, const VgpuInstance *skip, const char *name,
                            uint64_t vram, GError **error) {
  uint64_t assigned = gpu_memory_assigned(s, skip);
  if (vgpu_gpumem_fits(vgpu_gpumem_capacity(s->gpu_memory, s->cfg->overcommit_milli), assigned,
                       vgpu_gpumem_charge(vram, s->gpu_memory)))
    return true;
  g_autofree char *msg =
      vgpu_gpumem_refusal(name, vram, s->gpu_memory, s->cfg->overcommit_milli, assigned);
  g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE, msg);
  return false;
}

void vgpu_supervisor_gpu_memory(VgpuSupervisor *s, uint64_t *gpu_memory, uint32_t *milli,
                                uint64_t *assigned) {
  *gpu_memory = s->gpu_memory;
  *milli = s->cfg->overcommit_milli;
  *assigned = gpu_memory_assigned(s, NULL);
}

bool vgpu_supervisor_check_gpu_memory(const VgpuConfig *cfg, char **summary, GError **error) {
  g_autofree char *node = find_render_node(cfg);
  g_autofree char *source = NULL;
  uint64_t gm = vgpu_gpu_memory_resolve(cfg, node, &source), assigned = 0;
  if (!gm) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "GPU memory: %s", source);
    return false;
  }
  if (!vgpu_gpu_memory_check(cfg->instances, gm, cfg->overcommit_milli, &assigned, error))
    return false;
  uint64_t cap = vgpu_gpumem_capacity(gm, cfg->overcommit_milli);
  g_autofree char *gms = vgpu_format_size(gm, false);
  g_autofree char *as = vgpu_format_size(assigned, false);
  g_autofree char *fs = vgpu_format_size(vgpu_gpumem_free(cap, assigned), false);
  g_autofree char *oc = vgpu_overcommit_format(cfg->overcommit_milli);
  *summary = g_strdup_printf("GPU memory %s (%s), overcommit %s: %s assigned, %s free", gms, source,
                             oc, as, fs);
  return true;
}

VgpuSupervisor *vgpu_supervisor_new(VgpuConfig *cfg, const VgpuSupervisorOptions *opt,
                                    GError **error) {
  g_autofree char *worker = find_worker(cfg, error);
  if (!worker)
    return NULL;
  VgpuSupervisor *s = g_new0(VgpuSupervisor, 1);
  s->cfg = cfg;
  s->runtime_dir = g_strdup(opt->runtime_dir);
  s->config_path = g_strdup(opt->config_path);
  s->on_reload = opt->on_reload;
  s->on_reload_data = opt->on_reload_data;
  s->state_dir = g_strdup(opt->state_dir);
  s->state = vgpu_state_new();
  s->worker_path = g_steal_pointer(&worker);
  s->render_node = find_render_node(cfg);
  s->render_driver = render_node_driver(s->render_node);
  /* Keys are copies: an instance's cfg (and its name) is replaced on resize. */
  s->instances =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)instance_free);
  s->started_us = g_get_monotonic_time();
  s->probes =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)vgpu_probe_free);
  s->book = vgpu_book_new();
  s->ends = vgpu_session_ring_new();
  s->shots = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, shot_pending_free);
  s->sched_inst = g_ptr_array_new();
  s->sched_in = g_array_new(FALSE, TRUE, sizeof(VgpuShareIn));
  s->sched_out = g_array_new(FALSE, TRUE, sizeof(VgpuShareOut));
  vgpu_book_set_shot_hook(s->book, on_shot_reply, s);
  vgpu_info("worker %s, renderer %s on %s%s%s%s", s->worker_path, cfg->renderer,
            s->render_node ? s->render_node : "EGL surfaceless (llvmpipe)",
            s->render_node ? " (driver " : "",
            s->render_node ? (s->render_driver ? s->render_driver : "unknown") : "",
            s->render_node ? ")" : "");
  g_autofree char *gm_source = NULL;
  s->gpu_memory = vgpu_gpu_memory_resolve(cfg, s->render_node, &gm_source);
  if (!s->gpu_memory) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "GPU memory: %s", gm_source);
    s->cfg = NULL; /* the caller's again */
    vgpu_supervisor_free(s);
    return NULL;
  }
  log_gpu_memory(s->gpu_memory, cfg->overcommit_milli, gm_source);
  s->isolation = vgpu_isolation_new(cfg, s->render_node, error);
  if (!s->isolation) {
    s->cfg = NULL; /* the caller's again */
    vgpu_supervisor_free(s);
    return NULL;
  }
  /* Mesa's shader disk cache would be one directory every worker writes
   * and reads compiled (JIT) code from: a way for one tenant's worker to
   * plant code in another's.  Workers cannot create files anyway. */
  s->worker_env = g_environ_setenv(g_get_environ(), "MESA_SHADER_CACHE_DISABLE", "true", TRUE);
  /* What a worker compiles stays in a cache of its own instead
   * (daemon/shader_cache.h), where workers have uids of their own. */
  if (geteuid() == 0) {
    g_autoptr(GError) ce = NULL;
    s->shader_cache = vgpu_shader_cache_new(s->runtime_dir, &ce);
    if (!s->shader_cache)
      vgpu_warn("shader cache: off: %s", ce->message);
  }
  if (s->shader_cache)
    vgpu_info("shader cache: %s", cfg->shader_cache
                                      ? "private to each worker, for its session only"
                                      : "off (shader-cache=off)");
  else if (geteuid() != 0)
    vgpu_info("shader cache: off (workers compile every program they are given; a private "
              "cache per worker needs workers with uids of their own: vgpud as root)");
  /* The capacity is read before vgpud makes its cgroups: the ceilings it
   * writes there for fixed shares are parts of it. */
  s->cpu_milli = vgpu_cpu_capacity_milli(&s->cpu_desc);
  vgpu_capacity_init(&s->capacity, s->cpu_milli);
  s->cpu_milli_written = s->cpu_milli;
  vgpu_cpu_affinity(&s->cpus);
  /* Which CPU-sharing mechanisms are active, once. */
  s->cgroups = vgpu_cgroups_new(cfg->cgroups, s->runtime_dir);
  vgpu_info("scheduling: GPU-time token buckets and fps caps in the workers: %s; %s; llvmpipe "
            "threads per profile (render-threads): %s",
            VGPU_SCHEDULER ? "on" : "off (built with -Dscheduler=false)",
            vgpu_cgroups_describe(s->cgroups),
            !g_str_equal(cfg->renderer, "virgl") ? "off (renderer null)"
            : s->render_node                     ? "when the render node's driver is llvmpipe"
                                                 : "on (EGL surfaceless: llvmpipe)");
  g_autofree char *charge = charge_clock_describe(s);
  vgpu_info("scheduling: GPU time charged: %s", charge);
  return s;
}

static char *metrics_text(gpointer user) {
  return vgpu_metrics_text(user);
}

/* Listens on [daemon] metrics-listen (NULL: none). */
static VgpuHttp *http_open(VgpuSupervisor *s, const char *address, GError **error) {
  VgpuHttp *h = vgpu_http_new(address, metrics_text, s, error);
  if (!h)
    return NULL;
  vgpu_info("metrics: http%s://%s%s/metrics and the dashboard at /; reads only, at most %d "
            "connections (%d per IP address), requests up to %d bytes, connections closed "
            "after %d s idle or %d s open",
            address[0] == '/' ? "+unix" : "", address, address[0] == '/' ? ":" : "",
            VGPU_HTTP_MAX_CONNECTIONS, VGPU_HTTP_MAX_PER_IP, VGPU_HTTP_MEMORY_LIMIT,
            VGPU_HTTP_TIMEOUT_S, VGPU_HTTP_DEADLINE_S);
  return h;
}

bool vgpu_supervisor_start(VgpuSupervisor *s, GError **error) {
  if (!vgpu_gpu_memory_check(s->cfg->instances, s->gpu_memory, s->cfg->overcommit_milli, NULL,
                             error))
    return false;
  if (s->state_dir) {
    g_autofree char *warning = NULL;
    vgpu_state_free(s->state);
    s->state = vgpu_state_load(s->state_dir, &warning, &s->state_read_only);
    if (warning)
      vgpu_warn("run-time changes: %s", warning);
  }
  /* The file's instances with the run-time changes over them. */
  g_autoptr(VgpuStateMerge) m =
      vgpu_state_merge(s->cfg, s->state, s->gpu_memory, s->cfg->overcommit_milli, 0, NULL);
  for (guint i = 0; i < m->overridden->len; i++)
    vgpu_info("run-time change: %s", (char *)g_ptr_array_index(m->overridden, i));
  for (guint i = 0; i < m->not_applied->len; i++)
    vgpu_warn("run-time change not applied: %s", (char *)g_ptr_array_index(m->not_applied, i));
  for (guint i = 0; i < m->instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(m->instances, i);
    bool created = g_array_index(m->created, gboolean, i);
    g_autoptr(GError) e = NULL;
    VgpuInstance *in = instance_new(s, ic, created, &e);
    if (!in && !created) {
      g_propagate_error(error, g_steal_pointer(&e));
      return false;
    }
    if (!in) { /* reported, kept in the state file */
      vgpu_warn("run-time change not applied: %s: not created: %s; kept in the state file",
                ic->name, e->message);
      continue;
    }
    g_hash_table_insert(s->instances, g_strdup(in->cfg->name), in);
  }
  s->control = vgpu_control_new(s, error);
  if (!s->control)
    return false;
  if (s->cfg->metrics_listen && !(s->http = http_open(s, s->cfg->metrics_listen, error)))
    return false;
  probe_ensure(s);
  cgroups_sync(s);
  return true;
}

void vgpu_supervisor_stop(VgpuSupervisor *s) {
  g_clear_pointer(&s->http, vgpu_http_free);
  g_clear_pointer(&s->control, vgpu_control_free);
  GHashTableIter it;
  gpointer v;
  guint n = 0;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    VgpuInstance *in = v;
    instance_stop_listening(in);
    GHashTableIter wi;
    gpointer w;
    g_hash_table_iter_init(&wi, in->workers);
    while (g_hash_table_iter_next(&wi, NULL, &w)) {
      kill(((VgpuWorker *)w)->pid, SIGTERM);
      n++;
    }
  }
  GHashTableIter pi;
  g_hash_table_iter_init(&pi, s->probes);
  while (g_hash_table_iter_next(&pi, NULL, &v))
    vgpu_probe_kill(v, NULL);
  /* Let the child watches reclaim; whoever is still there after 3 s is
   * killed. */
  gint64 deadline = g_get_monotonic_time() + 3 * G_USEC_PER_SEC;
  bool killed = false;
  for (;;) {
    guint left = 0;
    g_hash_table_iter_init(&it, s->instances);
    while (g_hash_table_iter_next(&it, NULL, &v))
      left += g_hash_table_size(((VgpuInstance *)v)->workers);
    guint probes_left = 0;
    g_hash_table_iter_init(&pi, s->probes);
    while (g_hash_table_iter_next(&pi, NULL, &v))
      probes_left += vgpu_probe_alive(v);
    if (left == 0 && (probes_left == 0 || killed))
      break;
    if (!killed && g_get_monotonic_time() > deadline) {
      if (left)
        vgpu_warn("%u worker(s) still running after 3 s: killing", left);
      g_hash_table_iter_init(&it, s->instances);
      while (g_hash_table_iter_next(&it, NULL, &v)) {
        GHashTableIter wi;
        gpointer w;
        g_hash_table_iter_init(&wi, ((VgpuInstance *)v)->workers);
        while (g_hash_table_iter_next(&wi, NULL, &w))
          kill(((VgpuWorker *)w)->pid, SIGKILL);
      }
      killed = true;
    }
    g_main_context_iteration(NULL, FALSE);
    g_usleep(10000);
  }
  if (n)
    vgpu_info("stopped %u worker(s)", n);
  g_hash_table_remove_all(s->instances);
  if (s->sched_timer) {
    g_source_remove(s->sched_timer);
    s->sched_timer = 0;
  }
}

void vgpu_supervisor_free(VgpuSupervisor *s) {
  if (!s)
    return;
  g_clear_pointer(&s->http, vgpu_http_free);
  g_clear_pointer(&s->control, vgpu_control_free);
  if (s->instances)
    g_hash_table_unref(s->instances);
  if (s->probes)
    g_hash_table_unref(s->probes);
  if (s->shots)
    g_hash_table_unref(s->shots);
  if (s->sched_timer)
    g_source_remove(s->sched_timer);
  if (s->sched_inst)
    g_ptr_array_unref(s->sched_inst);
  if (s->sched_in)
    g_array_unref(s->sched_in);
  if (s->sched_out)
    g_array_unref(s->sched_out);
  vgpu_book_free(s->book);
  vgpu_cgroups_free(s->cgroups);
  vgpu_session_ring_free(s->ends);
  vgpu_state_free(s->state);
  g_free(s->state_dir);
  g_free(s->state_error);
  vgpu_isolation_free(s->isolation);
  vgpu_shader_cache_free(s->shader_cache);
  g_strfreev(s->worker_env);
  vgpu_config_free(s->cfg);
  g_free(s->runtime_dir);
  g_free(s->config_path);
  g_free(s->worker_path);
  g_free(s->render_node);
  g_free(s->render_driver);
  g_free(s->cpu_desc);
  g_free(s);
}

void vgpu_reload_report_free(VgpuReloadReport *r) {
  if (!r)
    return;
  g_ptr_array_unref(r->changed);
  g_ptr_array_unref(r->overridden);
  g_ptr_array_unref(r->not_applied);
  g_free(r->not_added);
  g_free(r);
}

static VgpuReloadReport *report_new(void) {
  VgpuReloadReport *r = g_new0(VgpuReloadReport, 1);
  r->changed = g_ptr_array_new_with_free_func(g_free);
  r->overridden = g_ptr_array_new_with_free_func(g_free);
  r->not_applied = g_ptr_array_new_with_free_func(g_free);
  return r;
}

static void take_all(GPtrArray *to, GPtrArray *from) {
  for (guint i = 0; i < from->len; i++)
    g_ptr_array_add(to, g_strdup(g_ptr_array_index(from, i)));
}

/* Writes the state file after a change; the change holds either way, and
 * s->state_error says when it is not kept. */
static void state_commit(VgpuSupervisor *s) {
  g_clear_pointer(&s->state_error, g_free);
  if (!s->state_dir)
    return;
  g_autoptr(GError) e = NULL;
  if (s->state_read_only)
    s->state_error = g_strdup_printf("not kept: %s/" VGPU_STATE_FILE " could not be read nor moved "
                                     "aside (see vgpud's log)",
                                     s->state_dir);
  else if (!vgpu_state_save(s->state, s->state_dir, &e))
    s->state_error = g_strdup_printf("not kept: %s", e->message);
  if (s->state_error)
    vgpu_warn("run-time change %s", s->state_error);
}

const char *vgpu_supervisor_state_error(VgpuSupervisor *s) {
  return s->state_error;
}

/* What `next` with the run-time changes gives, within gpu_memory: the
 * transient instances stay (their names in *keep), as do the tenants of
 * instances that drain (their memory is taken until they leave). */
static VgpuStateMerge *reload_merge(VgpuSupervisor *s, const VgpuConfig *next, uint64_t gpu_memory,
                                    GHashTable **keep_out) {
  GHashTable *keep = g_hash_table_new(g_str_hash, g_str_equal);
  uint64_t taken = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    VgpuInstance *in = v;
    if (in->transient && !in->draining)
      g_hash_table_add(keep, in->cfg->name);
    if ((in->transient && !in->draining) || (in->draining && g_hash_table_size(in->workers)))
      taken = vgpu_gpumem_add(taken, vgpu_gpumem_charge(in->cfg->eff.vram, gpu_memory));
  }
  VgpuStateMerge *m = NULL;
  /* Instances the merge leaves out drain and keep their tenants' memory:
   * merged again with that taken, until nothing more is left out. */
  for (int round = 0; round < 4; round++) {
    if (m)
      vgpu_state_merge_free(m);
    m = vgpu_state_merge(next, s->state, gpu_memory, next->overcommit_milli, taken, keep);
    uint64_t dropped = 0;
    g_hash_table_iter_init(&it, s->instances);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      VgpuInstance *in = v;
      if (in->draining || in->transient || !g_hash_table_size(in->workers))
        continue;
      bool stays = false;
      for (guint i = 0; i < m->instances->len && !stays; i++)
        stays = g_str_equal(((VgpuInstanceConfig *)g_ptr_array_index(m->instances, i))->name,
                            in->cfg->name);
      if (!stays)
        dropped = vgpu_gpumem_add(dropped, vgpu_gpumem_charge(in->cfg->eff.vram, gpu_memory));
    }
    if (!dropped || round == 3)
      break;
    taken = vgpu_gpumem_add(taken, dropped);
  }
  *keep_out = keep;
  return m;
}

/* Whether the file's own instances fit the GPU memory it names beside the
 * transient instances and the tenants of draining ones; the run-time
 * changes then fit in what is left, or are reported (vgpu_state_merge). */
static bool reload_gpu_memory_fits(VgpuSupervisor *s, const VgpuConfig *next, uint64_t *gpu_memory,
                                   GError **error) {
  g_autofree char *source = NULL;
  uint64_t gm = vgpu_gpu_memory_resolve(next, s->render_node, &source);
  if (!gm) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "GPU memory: %s", source);
    return false;
  }
  g_autoptr(GPtrArray) after = g_ptr_array_new();
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
  for (guint i = 0; i < all->len; i++) {
    VgpuInstance *in = g_ptr_array_index(all, i);
    if ((in->transient && !in->draining) || (in->draining && g_hash_table_size(in->workers) > 0))
      g_ptr_array_add(after, in->cfg);
  }
  for (guint i = 0; i < next->instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(next->instances, i);
    VgpuInstance *in = g_hash_table_lookup(s->instances, ic->name);
    if (!in || !in->transient)
      g_ptr_array_add(after, (gpointer)ic);
  }
  if (!vgpu_gpu_memory_check(after, gm, next->overcommit_milli, NULL, error))
    return false;
  if (gm != s->gpu_memory || next->overcommit_milli != s->cfg->overcommit_milli)
    log_gpu_memory(gm, next->overcommit_milli, source);
  *gpu_memory = gm;
  return true;
}

static bool kv_equal(const GPtrArray *a, const GPtrArray *b) {
  if (vgpu_kv_len(a) != vgpu_kv_len(b))
    return false;
  for (guint i = 0; i < vgpu_kv_len(a); i++)
    if (g_strcmp0(vgpu_kv_key(a, i), vgpu_kv_key(b, i)) ||
        g_strcmp0(vgpu_kv_value(a, i), vgpu_kv_value(b, i)))
      return false;
  return true;
}

/* Brings the live instances to `next` under the run-time changes: new ones
 * are made, those left out drain (their tenants keep running), the others
 * take their new limits. */
static void reconcile(VgpuSupervisor *s, const VgpuConfig *next, uint64_t gpu_memory,
                      VgpuReloadReport *r) {
  g_autoptr(GHashTable) keep = NULL;
  g_autoptr(VgpuStateMerge) m = reload_merge(s, next, gpu_memory, &keep);
  take_all(r->overridden, m->overridden);
  take_all(r->not_applied, m->not_applied);
  g_autoptr(GHashTable) wanted = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < m->instances->len; i++)
    g_hash_table_add(wanted, ((VgpuInstanceConfig *)g_ptr_array_index(m->instances, i))->name);
  g_autoptr(GString) failed = g_string_new(NULL);
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
  for (guint i = 0; i < all->len; i++) {
    VgpuInstance *in = g_ptr_array_index(all, i);
    if (in->draining || in->transient || g_hash_table_contains(wanted, in->cfg->name))
      continue;
    guint n = g_hash_table_size(in->workers);
    const VgpuStateEntry *e = vgpu_state_find(s->state, in->cfg->name);
    const char *why = e && e->kind == VGPU_STATE_CREATED
                          ? "its run-time entry cannot be applied now"
                      : e && e->kind == VGPU_STATE_DESTROYED ? "destroyed at run time"
                                                             : "no longer in the configuration";
    g_ptr_array_add(r->changed,
                    g_strdup_printf("%s: removed (%s)%s", in->cfg->name, why,
                                    n ? "; its tenants keep running until they leave" : ""));
    r->removed++;
    instance_drain(in);
  }
  for (guint i = 0; i < m->instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(m->instances, i);
    bool created = g_array_index(m->created, gboolean, i);
    VgpuInstance *in = g_hash_table_lookup(s->instances, ic->name);
    if (in && in->transient)
      continue;
    if (in && in->draining) {
      vgpu_warn("%s: still draining; re-added once its last tenant leaves", ic->name);
      g_ptr_array_add(r->not_applied,
                      g_strdup_printf("%s: still draining; not added until its last tenant "
                                      "leaves (then reload again)",
                                      ic->name));
      continue;
    }
    if (in) {
      in->runtime_origin = created;
      g_autofree char *diff = vgpu_instance_config_diff(in->cfg, ic);
      if (diff) {
        g_ptr_array_add(r->changed, g_strdup_printf("%s: %s", ic->name, diff));
        r->changed_limits++;
      }
      if (diff || !kv_equal(in->cfg->kv, ic->kv))
        instance_apply(in, ic);
      continue;
    }
    g_autoptr(GError) e = NULL;
    in = instance_new(s, ic, created, &e);
    if (!in) {
      vgpu_error("%s: cannot add: %s", ic->name, e->message);
      g_string_append_printf(failed, "%s%s: %s", failed->len ? "; " : "", ic->name, e->message);
      continue;
    }
    g_hash_table_insert(s->instances, g_strdup(in->cfg->name), in);
    g_ptr_array_add(r->changed, g_strdup_printf("%s: added (profile %s)", ic->name, ic->profile));
    r->added++;
  }
  for (guint i = 0; i < r->changed->len; i++)
    vgpu_info("reload: %s", (char *)g_ptr_array_index(r->changed, i));
  for (guint i = 0; i < r->not_applied->len; i++)
    vgpu_warn("run-time change not applied: %s", (char *)g_ptr_array_index(r->not_applied, i));
  if (failed->len)
    r->not_added = g_strdup(failed->str);
}

static bool supervisor_reload(VgpuSupervisor *s, VgpuReloadReport **report, GError **error);

bool vgpu_supervisor_reload(VgpuSupervisor *s, VgpuReloadReport **report, GError **error) {
  if (s->on_reload)
    s->on_reload(false, false, NULL, s->on_reload_data);
  GError *e = NULL;
  bool ok = supervisor_reload(s, report, &e);
  if (s->on_reload)
    s->on_reload(true, ok, e ? e->message : NULL, s->on_reload_data);
  if (e)
    g_propagate_error(error, e);
  return ok;
}

static bool supervisor_reload(VgpuSupervisor *s, VgpuReloadReport **report, GError **error) {
  VgpuConfig *next = s->config_path ? vgpu_config_load_file(s->config_path, error)
                                    : vgpu_config_load_default(error);
  if (!next)
    return false;
  uint64_t next_gpu_memory = 0;
  if (!reload_gpu_memory_fits(s, next, &next_gpu_memory, error)) {
    vgpu_config_free(next);
    return false;
  }
  /* A new metrics-listen is opened before anything changes (a refusal
   * leaves all as it was); the old listener goes once the reload is in. */
  bool http_changed = g_strcmp0(next->metrics_listen, s->cfg->metrics_listen) != 0;
  VgpuHttp *next_http = NULL;
  if (http_changed && next->metrics_listen) {
    /* The same Unix path or port as before is free only once the old one
     * is closed. */
    g_clear_pointer(&s->http, vgpu_http_free);
    next_http = http_open(s, next->metrics_listen, error);
    if (!next_http) {
      g_autoptr(GError) again = NULL;
      if (s->cfg->metrics_listen && !(s->http = http_open(s, s->cfg->metrics_listen, &again)))
        vgpu_error("metrics: no longer served: %s", again->message);
      vgpu_config_free(next);
      return false;
    }
  }
  g_autoptr(VgpuReloadReport) r = report_new();
  reconcile(s, next, next_gpu_memory, r);
  if (next->cgroups != s->cfg->cgroups)
    vgpu_warn("cgroups=%s: read at start-up only; the cgroups stay as they are (%s)",
              next->cgroups ? "auto" : "off", vgpu_cgroups_describe(s->cgroups));
  if (next->shader_cache != s->cfg->shader_cache)
    vgpu_info("shader-cache=%s: for workers started from now on%s",
              next->shader_cache ? "private" : "off",
              s->shader_cache || !next->shader_cache ? "" : " (still off: vgpud is not root)");
  vgpu_log_set_level(next->log_level);
  if (http_changed) {
    g_clear_pointer(&s->http, vgpu_http_free);
    s->http = next_http;
    if (!next->metrics_listen)
      vgpu_info("metrics: no longer served (metrics-listen removed)");
  }
  vgpu_config_free(s->cfg);
  s->cfg = next;
  s->gpu_memory = next_gpu_memory;
  probe_ensure(s); /* a new renderer, or sandbox setting, is probed anew */
  if (s->isolation)
    vgpu_isolation_reload(s->isolation); /* accounts made or removed since */
  cgroups_sync(s);
  sched_update(s);
  vgpu_info("reloaded %s: %u instance(s) added, %u removed, %u changed; %u run-time change(s) "
            "left in force, %u not applied",
            next->source, r->added, r->removed, r->changed_limits, r->overridden->len,
            r->not_applied->len);
  if (report)
    *report = g_steal_pointer(&r);
  return true;
}

bool vgpu_supervisor_reset(VgpuSupervisor *s, const char *name, const char *const *keys,
                           VgpuReloadReport **report, GError **error) {
  VgpuInstance *in = vgpu_supervisor_find(s, name);
  if (in && in->transient && !in->draining) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "\"%s\" is transient: none of its settings are kept (vgpuctl destroy removes it)",
                name);
    return false;
  }
  VgpuStateEntry *e = vgpu_state_find(s->state, name);
  if (!e) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "\"%s\" has no run-time changes",
                name ? name : "");
    return false;
  }
  bool all = !keys || !keys[0];
  if (!all && e->kind == VGPU_STATE_DESTROYED) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "\"%s\" was destroyed at run time: it has no settings (vgpuctl reset %s brings it "
                "back)",
                name, name);
    return false;
  }
  for (guint i = 0; !all && keys[i]; i++)
    if (!vgpu_kv_get(e->kv, keys[i])) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "\"%s\" has no run-time setting \"%s\"",
                  name, keys[i]);
      return false;
    }
  if (all && e->kind == VGPU_STATE_CREATED)
    g_ptr_array_set_size(e->kv, 0); /* back to its profile */
  else if (all)
    vgpu_state_remove(s->state, name);
  for (guint i = 0; !all && keys[i]; i++)
    vgpu_kv_remove(e->kv, keys[i]);
  if (!all && e->kind == VGPU_STATE_SET && !vgpu_kv_len(e->kv))
    vgpu_state_remove(s->state, name);
  vgpu_info("%s: run-time changes reset%s", name, all ? "" : " (some)");
  state_commit(s);
  g_autoptr(VgpuReloadReport) r = report_new();
  reconcile(s, s->cfg, s->gpu_memory, r);
  cgroups_sync(s);
  sched_update(s);
  if (report)
    *report = g_steal_pointer(&r);
  return true;
}

char *vgpu_supervisor_dump_config(VgpuSupervisor *s) {
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
  g_autoptr(GPtrArray) cfgs = g_ptr_array_new();
  g_autoptr(GPtrArray) notes = g_ptr_array_new();
  for (guint i = 0; i < all->len; i++) {
    VgpuInstance *in = g_ptr_array_index(all, i);
    if (in->draining)
      continue;
    g_ptr_array_add(cfgs, in->cfg);
    g_ptr_array_add(notes, in->transient        ? "created with vgpuctl create --transient"
                           : in->runtime_origin ? "created with vgpuctl create"
                           : vgpu_state_find(s->state, in->cfg->name) ? "changed with vgpuctl set"
                                                                      : NULL);
  }
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  g_autofree char *when = g_date_time_format_iso8601(now);
  g_autofree char *header =
      g_strdup_printf("# vgpud's live configuration, printed by vgpuctl dump-config at %s:\n"
                      "# %s with the run-time changes in force.  See vgpud.conf(5).\n\n",
                      when, s->cfg->source);
  return vgpu_config_format(s->cfg, cfgs, notes, header);
}

const VgpuConfig *vgpu_supervisor_config(VgpuSupervisor *s) {
  return s->cfg;
}
VgpuBook *vgpu_supervisor_book(VgpuSupervisor *s) {
  return s->book;
}
void vgpu_supervisor_render_device(VgpuSupervisor *s, const char **node, const char **driver) {
  *node = s->render_node;
  *driver = s->render_driver;
}
const char *vgpu_supervisor_runtime_dir(VgpuSupervisor *s) {
  return s->runtime_dir;
}
const char *vgpu_supervisor_config_source(VgpuSupervisor *s) {
  return s->cfg->source;
}
bool vgpu_supervisor_cpu_capacity(VgpuSupervisor *s, uint32_t *measured, uint32_t *nominal) {
  *nominal = s->cpu_milli;
  *measured = vgpu_capacity_milli(&s->capacity);
  return renders_on_llvmpipe(s);
}

gint64 vgpu_supervisor_started_us(VgpuSupervisor *s) {
  return s->started_us;
}

static gint by_name(gconstpointer a, gconstpointer b) {
  const VgpuInstance *x = *(VgpuInstance *const *)a, *y = *(VgpuInstance *const *)b;
  return strcmp(x->cfg->name, y->cfg->name);
}

GPtrArray *vgpu_supervisor_instances(VgpuSupervisor *s) {
  GPtrArray *a = g_ptr_array_new();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v))
    g_ptr_array_add(a, v);
  g_ptr_array_sort(a, by_name);
  return a;
}

VgpuInstance *vgpu_supervisor_find(VgpuSupervisor *s, const char *name) {
  return name ? g_hash_table_lookup(s->instances, name) : NULL;
}

VgpuInstance *vgpu_supervisor_create_instance(VgpuSupervisor *s, const char *name,
                                              const char *profile, bool transient, GError **error) {
  if (!vgpu_instance_name_valid(name)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "invalid instance name \"%s\" (1-31 letters, digits, - and _)", name ? name : "");
    return NULL;
  }
  if (g_hash_table_contains(s->instances, name)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS, "instance \"%s\" already exists", name);
    return NULL;
  }
  const VgpuProfile *p = profile ? vgpu_config_find_profile(s->cfg, profile) : NULL;
  if (!p) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "unknown profile \"%s\" (vgpuctl profiles lists them)", profile ? profile : "");
    return NULL;
  }
  if (!gpu_memory_fits(s, NULL, name, p->vram, error))
    return NULL;
  VgpuInstanceConfig *ic = vgpu_instance_config_new(name, p);
  VgpuInstance *in = instance_new(s, ic, true, error);
  vgpu_instance_config_free(ic);
  if (!in)
    return NULL;
  in->transient = transient;
  g_hash_table_insert(s->instances, g_strdup(in->cfg->name), in);
  vgpu_info("%s: created from profile %s%s", name, profile, transient ? " (transient)" : "");
  g_clear_pointer(&s->state_error, g_free);
  if (!transient) {
    VgpuStateEntry *e = vgpu_state_entry(s->state, name, VGPU_STATE_CREATED);
    g_free(e->profile);
    e->profile = g_strdup(profile);
    state_commit(s);
  }
  cgroups_sync(s);
  sched_update(s);
  return in;
}

bool vgpu_supervisor_destroy_instance(VgpuSupervisor *s, const char *name, bool force,
                                      GError **error) {
  VgpuInstance *in = vgpu_supervisor_find(s, name);
  if (!in || in->draining) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no instance \"%s\"", name ? name : "");
    return false;
  }
  guint n = g_hash_table_size(in->workers);
  if (n && !force) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_BUSY,
                "instance \"%s\" has %u connected tenant(s); use --force to end them", name, n);
    return false;
  }
  vgpu_info("%s: destroyed%s", name, n ? " (force: ending its tenants)" : "");
  GHashTableIter it;
  gpointer w;
  g_hash_table_iter_init(&it, in->workers);
  while (g_hash_table_iter_next(&it, NULL, &w))
    kill(((VgpuWorker *)w)->pid, SIGKILL);
  g_clear_pointer(&s->state_error, g_free);
  if (!in->transient) {
    if (in->runtime_origin)
      vgpu_state_remove(s->state, name);
    else
      vgpu_state_entry(s->state, name, VGPU_STATE_DESTROYED);
    state_commit(s);
  }
  instance_drain(in);
  cgroups_sync(s);
  sched_update(s);
  return true;
}

/* Whether fd is what QEMU's side of a vhost-user connection must be: a
 * connected AF_UNIX stream socket (not a listening one). */
static bool check_vm_socket(int fd, GError **error) {
  struct stat st;
  int domain = 0, type = 0, acceptconn = 0;
  socklen_t len = sizeof(int);
  if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "the file descriptor passed is not a socket");
    return false;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX ||
      (len = sizeof(int), getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len)) < 0 ||
      type != SOCK_STREAM) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "the socket passed is not an AF_UNIX stream socket");
    return false;
  }
  len = sizeof(int);
  struct sockaddr_storage peer;
  socklen_t plen = sizeof(peer);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acceptconn, &len) < 0 || acceptconn ||
      getpeername(fd, (struct sockaddr *)&peer, &plen) < 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "the socket passed is not connected (accept QEMU's connection first)");
    return false;
  }
  return true;
}

/* [daemon] vm-instance, else the first instance by name that takes
 * tenants. */
static VgpuInstance *default_vm_instance(VgpuSupervisor *s) {
  if (s->cfg->vm_instance)
    return vgpu_supervisor_find(s, s->cfg->vm_instance);
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
  for (guint i = 0; i < all->len; i++) {
    VgpuInstance *in = g_ptr_array_index(all, i);
    if (!in->draining)
      return in;
  }
  return NULL;
}

/* Whether path is the render node vgpud's workers use (the same device,
 * whatever its name). */
static bool check_render_node(VgpuSupervisor *s, const char *path, GError **error) {
  if (!s->render_node) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "render node %s not usable: vgpud renders without one (llvmpipe through EGL "
                "surfaceless); leave out --render-node",
                path);
    return false;
  }
  struct stat a, b;
  if (stat(path, &a) < 0 || !S_ISCHR(a.st_mode) || stat(s->render_node, &b) < 0 ||
      a.st_rdev != b.st_rdev) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "render node %s not usable: vgpud's workers render on %s ([daemon] render-node)",
                path, s->render_node);
    return false;
  }
  return true;
}

/* ---- the process behind a socket pair ----------------------------------- */

/* Walks: the first 0.25 s after the attach, each next one twice as late;
 * the last about four minutes (255.75 s) after the attach.  Each walk looks at a
 * bounded number of /proc entries per main-loop turn. */
#define RESOLVE_TRIES 10u
#define RESOLVE_BUDGET 256u

static gboolean resolve_start(gpointer user);

static void resolve_later(VgpuWorker *w, const char *why) {
  if (w->resolve_tries >= RESOLVE_TRIES) {
    vgpu_info("%s: VM worker %d: no process other than pid %d (which made its socket pair) "
              "found holding the other end (%s): counted under pid %d uid %u",
              w->inst->cfg->name, (int)w->pid, (int)w->creator_pid, why, (int)w->client_pid,
              (unsigned)w->client_uid);
    w->peer_ino = 0;
    w->resolve_source = 0;
    return;
  }
  w->resolve_source = g_timeout_add(250u << w->resolve_tries++, resolve_start, w);
}

static gboolean resolve_turn(gpointer user) {
  VgpuWorker *w = user;
  if (!vgpu_peer_walk_step(w->walk, RESOLVE_BUDGET))
    return G_SOURCE_CONTINUE;
  const pid_t *pids;
  const int *fds;
  bool more;
  unsigned n = vgpu_peer_walk_holders(w->walk, &pids, &fds, &more);
  /* QEMU: a holder other than the pair's maker that does not run the
   * maker's program (libvirtd's child before its exec does). */
  unsigned others = 0, pick = 0;
  for (unsigned i = 0; i < n; i++) {
    if (pids[i] == w->creator_pid || pids[i] == getpid() ||
        vgpu_proc_same_exe("/proc", pids[i], w->creator_pid))
      continue;
    others++;
    pick = i;
  }
  VgpuProcIdentity id;
  bool got =
      !more && others == 1 && vgpu_proc_identity("/proc", pids[pick], fds[pick], w->peer_ino, &id);
  vgpu_peer_walk_free(w->walk);
  w->walk = NULL;
  if (!got) {
    w->resolve_source = 0;
    resolve_later(w, more || others > 1 ? "more than one" : "none yet");
    return G_SOURCE_REMOVE;
  }
  vgpu_info("%s: VM worker %d: QEMU is pid %d uid %u (%s), behind the socket pair pid %d uid "
            "%u made: counted under QEMU from now",
            w->inst->cfg->name, (int)w->pid, (int)id.pid, (unsigned)id.uid, id.name,
            (int)w->client_pid, (unsigned)w->client_uid);
  w->client_pid = id.pid;
  w->client_uid = id.uid;
  g_strlcpy(w->client_name, id.name, sizeof(w->client_name));
  w->peer_ino = 0;
  w->resolve_source = 0;
  return G_SOURCE_REMOVE;
}

static gboolean resolve_start(gpointer user) {
  VgpuWorker *w = user;
  w->walk = vgpu_peer_walk_new("/proc", w->peer_ino);
  w->resolve_source = g_idle_add_full(G_PRIORITY_LOW, resolve_turn, w, NULL);
  return G_SOURCE_REMOVE;
}

/* A VM socket from attach-vm: an accepted connection (it has the
 * listening socket's name) names QEMU in SO_PEERCRED already; a socket
 * pair (libvirt's --fd=N) names whoever made it, so the process holding
 * the other end is looked for once QEMU has had time to start. */
static void resolve_setup(VgpuWorker *w, int fd) {
  struct sockaddr_un sa;
  socklen_t len = sizeof(sa);
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
      len > offsetof(struct sockaddr_un, sun_path))
    return;
  ino_t peer = 0;
  int rc = vgpu_unix_peer_ino(fd, &peer);
  if (rc < 0) {
    vgpu_info("%s: VM worker %d: cannot find the other end of its socket pair (sock_diag: %s): "
              "counted under pid %d uid %u, which made the pair",
              w->inst->cfg->name, (int)w->pid, g_strerror(-rc), (int)w->client_pid,
              (unsigned)w->client_uid);
    return;
  }
  w->creator_pid = w->client_pid;
  w->peer_ino = peer;
  resolve_later(w, "none yet");
}

pid_t vgpu_supervisor_attach_vm(VgpuSupervisor *s, const char *name, int fd, bool virgl,
                                const char *render_node, VgpuWorkerEndFunc end, gpointer user,
                                char **instance, GError **error) {
  vgpu_autofd int c = fd;
  VgpuInstance *in = name ? vgpu_supervisor_find(s, name) : default_vm_instance(s);
  if (!in || in->draining) {
    if (name)
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                  "no instance \"%s\" (vgpuctl list shows them)", name);
    else if (s->cfg->vm_instance)
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                  "no instance \"%s\" ([daemon] vm-instance names it)", s->cfg->vm_instance);
    else
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "vgpud has no instance");
    return 0;
  }
  if (!check_vm_socket(c, error))
    return 0;
  if (render_node && !check_render_node(s, render_node, error))
    return 0;
  if (virgl && !renderer_has_3d(s)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "no 3D: vgpud's renderer is \"%s\" ([daemon] renderer); start without --virgl",
                s->cfg->renderer);
    return 0;
  }
  pid_t cpid = 0;
  uid_t cuid = (uid_t)-1;
  vgpu_peer_cred(c, &cpid, &cuid, NULL);
  if (!admit(in, VGPU_TENANT_VM, cpid, cuid, error))
    return 0;
  vgpu_set_nonblock(c, false);
  GPid pid = spawn_worker(in, c, cpid, cuid, VGPU_TENANT_VM, virgl, error);
  if (!pid)
    return 0;
  VgpuWorker *w = g_hash_table_lookup(in->workers, GINT_TO_POINTER(pid));
  w->end = end;
  w->end_user = user;
  resolve_setup(w, c);
  if (instance)
    *instance = g_strdup(in->cfg->name);
  return pid;
}

void vgpu_supervisor_forget_end(VgpuSupervisor *s, pid_t worker_pid, bool kill_it) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    VgpuWorker *w = g_hash_table_lookup(((VgpuInstance *)v)->workers, GINT_TO_POINTER(worker_pid));
    if (!w)
      continue;
    w->end = NULL;
    w->end_user = NULL;
    if (kill_it) {
      vgpu_info("%s: the caller that attached VM (QEMU) pid %d left: ending worker %d",
                w->inst->cfg->name, (int)w->client_pid, (int)w->pid);
      kill(w->pid, SIGTERM);
    }
    return;
  }
}

bool vgpu_supervisor_set(VgpuSupervisor *s, const char *name, GHashTable *settings,
                         GError **error) {
  VgpuInstance *in = vgpu_supervisor_find(s, name);
  if (!in || in->draining) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no instance \"%s\"", name ? name : "");
    return false;
  }
  g_autoptr(GString) what = g_string_new(NULL);
  VgpuInstanceConfig *next = vgpu_instance_config_copy(in->cfg);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, settings);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    g_autoptr(GError) e = NULL;
    if (!vgpu_instance_config_set(next, k, v, &e)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s=%s: %s", (char *)k, (char *)v,
                  e->message);
      vgpu_instance_config_free(next);
      return false;
    }
    g_string_append_printf(what, " %s=%s", (char *)k, (char *)v);
  }
  if (next->eff.vram != in->cfg->eff.vram && !gpu_memory_fits(s, in, name, next->eff.vram, error)) {
    vgpu_instance_config_free(next);
    return false;
  }
  instance_apply(in, next);
  vgpu_instance_config_free(next);
  vgpu_info("%s: set%s", name, what->str);
  g_clear_pointer(&s->state_error, g_free);
  if (!in->transient) {
    VgpuStateEntry *e =
        vgpu_state_entry(s->state, name, in->runtime_origin ? VGPU_STATE_CREATED : VGPU_STATE_SET);
    g_hash_table_iter_init(&it, settings);
    while (g_hash_table_iter_next(&it, &k, &v))
      vgpu_kv_set(e->kv, k, v);
    state_commit(s);
  }
  cgroups_sync(s);
  return true;
}

/* ---- instance accessors -------------------------------------------------- */

uint32_t vgpu_instance_share_ppm(const VgpuInstance *in) {
  return in->share_ppm;
}

guint vgpu_instance_active_tenants(const VgpuInstance *in) {
  return in->active_tenants;
}

const char *vgpu_instance_name(const VgpuInstance *in) {
  return in->cfg->name;
}
const VgpuInstanceConfig *vgpu_instance_config(const VgpuInstance *in) {
  return in->cfg;
}
const char *vgpu_instance_socket_path(const VgpuInstance *in) {
  return in->socket_path;
}
const char *vgpu_instance_vm_socket_path(const VgpuInstance *in) {
  return in->vm_socket_path;
}
bool vgpu_instance_is_runtime(const VgpuInstance *in) {
  return in->runtime_origin;
}
bool vgpu_instance_is_transient(const VgpuInstance *in) {
  return in->transient;
}
bool vgpu_instance_is_draining(const VgpuInstance *in) {
  return in->draining;
}
uint32_t vgpu_instance_ledger_index(const VgpuInstance *in) {
  return (uint32_t)in->ledger_index;
}
const VgpuProbe *vgpu_instance_probe(const VgpuInstance *in) {
  g_autofree char *key = probe_key(in->sup);
  return g_hash_table_lookup(in->sup->probes, key);
}
const char *vgpu_instance_renderer(const VgpuInstance *in) {
  return in->sup->cfg->renderer;
}
guint vgpu_instance_n_tenants(const VgpuInstance *in) {
  return g_hash_table_size(in->workers);
}
uint64_t vgpu_instance_sessions_ended(const VgpuInstance *in) {
  return in->sessions_ended;
}
guint vgpu_instance_n_vm_tenants(const VgpuInstance *in) {
  guint n = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, in->workers);
  while (g_hash_table_iter_next(&it, NULL, &v))
    n += ((const VgpuWorker *)v)->kind == VGPU_TENANT_VM;
  return n;
}

static gint by_slot(gconstpointer a, gconstpointer b) {
  const VgpuTenantInfo *x = a, *y = b;
  return (x->slot > y->slot) - (x->slot < y->slot);
}

/* A tenant's GPU busy % over its last second, in tenths of a percent. */
static uint32_t worker_busy_permille(const VgpuWorker *w, gint64 now) {
  uint64_t busy = vgpu_book_worker_busy_ns(w->inst->sup->book, (uint32_t)w->slot);
  return vgpu_busy_window_permille(&w->busy, now, busy);
}

GArray *vgpu_instance_tenants(const VgpuInstance *in) {
  GArray *a = g_array_new(FALSE, FALSE, sizeof(VgpuTenantInfo));
  gint64 now = g_get_monotonic_time();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, in->workers);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    const VgpuWorker *w = v;
    VgpuTenantInfo t = {.worker_pid = w->pid,
                        .client_pid = w->client_pid,
                        .client_uid = w->client_uid,
                        .slot = w->slot,
                        .kind = w->kind,
                        .share_ppm = w->share_ppm,
                        .busy_permille = worker_busy_permille(w, now),
                        .active = now < w->active_until_us};
    g_strlcpy(t.client_name, w->client_name, sizeof(t.client_name));
    g_array_append_val(a, t);
  }
  g_array_sort(a, by_slot);
  return a;
}

GArray *vgpu_supervisor_session_ends(VgpuSupervisor *s, const VgpuProcRef *who, uid_t uid,
                                     bool admin, guint *live) {
  *live = 0;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->instances);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    GHashTableIter wi;
    gpointer wv;
    g_hash_table_iter_init(&wi, ((VgpuInstance *)v)->workers);
    while (g_hash_table_iter_next(&wi, NULL, &wv)) {
      const VgpuWorker *w = wv;
      *live += (admin || w->client_uid == uid) && vgpu_session_chain_has(w->chain, w->n_chain, who);
    }
  }
  return vgpu_session_ring_find(s->ends, who, uid, admin);
}
