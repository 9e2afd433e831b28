/* Control server: JSON lines on DIR/control.sock.  Requests are small and
 * answered from the supervisor's own records (no lock a worker could hold)
 * in the main loop; replies are queued and written as the client reads
 * them, so no client can hold the main loop.  What one connection may cost
 * is bounded: its unfinished request (VGPU_CONTROL_MAX_REQUEST), its queued
 * replies (VGPU_CONTROL_MAX_QUEUE, then it is no longer read, and closed if
 * it reads nothing for VGPU_CONTROL_STALL_S), its idle time ([daemon]
 * control-timeout), and how many connections there are ([daemon]
 * max-control-connections, in all and per uid). */
#include "daemon/control.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <grp.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/capset.h"
#include "core/gpumem.h"
#include "core/profile.h"
#include "daemon/listener.h"
#include "daemon/snapshot.h"
#include "daemon/supervisor.h"
#include "util/fd.h"
#include "vgpu-config.h"
#include "util/log.h"

struct VgpuControl {
  VgpuSupervisor *sup;
  int fd;
  VgpuListener *listener;
  char *path;
  GHashTable *conns;   /* Conn* set */
  GHashTable *per_uid; /* uid -> open connections */
  guint non_admin;     /* open connections of callers that are not admins */
  char *admin_group;   /* the name admin_gid was looked up for */
  gid_t admin_gid;     /* (gid_t)-1: none */
};

typedef struct {
  VgpuControl *ctl;
  int fd;
  guint watch;
  GIOCondition watching;
  guint timer;
  gint64 last_us;     /* last complete request or reply progress */
  gint64 last_out_us; /* replies last queued into an empty queue, or written */
  uid_t uid;
  pid_t pid;
  bool admin;
  bool eof;     /* the client sent its last byte */
  bool closing; /* write what is queued, then close */
  int passed_fd;   /* received with the request bytes (SCM_RIGHTS); -1: none */
  pid_t vm_worker; /* attach-vm: the worker this connection stands for */
  bool holding;    /* attach-vm: open until vm_worker ends */
  bool uncounted;  /* no longer counted against the per-uid cap */
  guint shot;      /* screenshot: the request waiting for its worker; 0: none */
  int out_fd;      /* sent with the byte at out_fd_at of `out` (SCM_RIGHTS); -1: none */
  size_t out_fd_at;
  GString *in;
  GString *out;
  size_t out_off;
} Conn;

struct VgpuControlRequest {
  VgpuSupervisor *sup;
  Conn *conn; /* NULL: no connection (tests, fuzzing) */
  JsonObject *req;
  const char *name;
  uid_t uid;
  bool admin;
};

static guint open_connections;

/* ---- JSON building ------------------------------------------------------- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void add_u64(JsonBuilder *b, const char *k, uint64_t v) {
  json_builder_set_member_name(b, k);
  json_builder_add_int_value(b, (gint64)MIN(v, (uint64_t)G_MAXINT64));
}

static void add_bool(JsonBuilder *b, const char *k, bool v) {
  json_builder_set_member_name(b, k);
  json_builder_add_boolean_value(b, v);
}

static void add_str(JsonBuilder *b, const char *k, const char *v) {
  json_builder_set_member_name(b, k);
  json_builder_add_string_value(b, v ? v : "");
}

/* Tenths of a percent as a percentage with one decimal (12.5). */
static void add_permille(JsonBuilder *b, const char *k, uint32_t permille) {
  json_builder_set_member_name(b, k);
  json_builder_add_double_value(b, permille / 10.0);
}

/* Settings stored and reported but not enforced: the scheduling settings
 * in a build without the scheduler (-Dscheduler=false), nothing otherwise.
 * Every view that shows them says so. */
static void add_not_enforced(JsonBuilder *b) {
#if VGPU_SCHEDULER
  static const char *const fields[] = {NULL};
#else
  static const char *const fields[] = {"gpu_share", "weight", "fps_cap", NULL};
#endif
  json_builder_set_member_name(b, "not_enforced");
  json_builder_begin_array(b);
  for (size_t i = 0; fields[i]; i++)
    json_builder_add_string_value(b, fields[i]);
  json_builder_end_array(b);
}

/* viewer_uid/admin: who asks.  Tenants of other uids are counted, not
 * shown, unless the caller is an admin.  Everything below comes from the
 * supervisor's own records; what workers wrote is read through the book,
 * clamped to what each was granted. */
static void build_instance(JsonBuilder *b, VgpuSupervisor *s, VgpuInstance *in, bool tenants,
                           uid_t viewer_uid, bool admin) {
  const VgpuInstanceConfig *cfg = vgpu_instance_config(in);
  /* The totals and the tenants below from one reading of the workers. */
  VgpuInstanceSnapshot snap;
  vgpu_instance_snapshot(s, in, tenants, &snap);
  const VgpuBookUsage u = snap.usage;
  json_builder_begin_object(b);
  add_str(b, "name", cfg->name);
  add_str(b, "profile", cfg->profile);
  add_str(b, "socket", vgpu_instance_socket_path(in));
  add_str(b, "vm_socket", vgpu_instance_vm_socket_path(in));
  add_str(b, "origin", vgpu_instance_is_runtime(in) ? "runtime" : "config");
  json_builder_set_member_name(b, "transient");
  json_builder_add_boolean_value(b, vgpu_instance_is_transient(in));
  add_str(b, "state", vgpu_instance_is_draining(in) ? "draining" : "active");
  add_str(b, "gpu_share", vgpu_share_mode_name(cfg->eff.share));
  add_u64(b, "weight", cfg->eff.weight);
  add_u64(b, "fps_cap", cfg->eff.fps_cap);
  /* Scheduling now: its share of one GPU's wall time (0: best-effort),
   * whether a tenant did GPU work lately, and the time its tenants were
   * held back (also in usage, beside busy_ns). */
  add_u64(b, "share_ppm", vgpu_instance_share_ppm(in));
  add_bool(b, "active", vgpu_instance_active_tenants(in) > 0);
  /* GPU busy over about the last second: the sum of its tenants' (other
   * users' included), in % of the GPU's time (on llvmpipe: CPU time over
   * the measured CPU capacity); on a render node more than 100 when tenants render
   * at once. */
  add_permille(b, "busy_percent", snap.busy_permille);
  add_u64(b, "throttled_ns", u.used[VGPU_RES_THROTTLED_NS]);
  add_u64(b, "heads", cfg->eff.heads);
  add_u64(b, "gpu_timeout", cfg->eff.gpu_timeout_s);
  add_u64(b, "render_threads", cfg->eff.render_threads);
  add_not_enforced(b);
  json_builder_set_member_name(b, "limits");
  json_builder_begin_object(b);
  add_u64(b, "vram", u.limit[VGPU_RES_VRAM]);
  add_u64(b, "resources", u.limit[VGPU_RES_OBJECTS]);
  add_u64(b, "contexts", u.limit[VGPU_RES_CONTEXTS]);
  add_u64(b, "clients", cfg->eff.max_clients);
  add_u64(b, "clients_per_uid", vgpu_profile_clients_per_uid(&cfg->eff));
  json_builder_end_object(b);
  json_builder_set_member_name(b, "usage");
  json_builder_begin_object(b);
  add_u64(b, "vram", u.used[VGPU_RES_VRAM]);
  add_u64(b, "resources", u.used[VGPU_RES_OBJECTS]);
  add_u64(b, "contexts", u.used[VGPU_RES_CONTEXTS]);
  add_u64(b, "clients", snap.clients);
  add_u64(b, "vm_clients", snap.vm_clients);
  add_u64(b, "frames", u.used[VGPU_RES_FRAMES]);
  add_u64(b, "commands", u.used[VGPU_RES_COMMANDS]);
  add_u64(b, "bytes_in", u.used[VGPU_RES_BYTES_IN]);
  add_u64(b, "busy_ns", u.used[VGPU_RES_BUSY_NS]);
  add_u64(b, "throttled_ns", u.used[VGPU_RES_THROTTLED_NS]);
  add_u64(b, "refusals", u.refusals);
  add_u64(b, "worker_crashes", u.worker_crashes);
  json_builder_end_object(b);
  /* Limits lowered below what the tenants hold: they keep it, and growth
   * is refused until they hold less than the limit. */
  json_builder_set_member_name(b, "over_limit");
  json_builder_begin_array(b);
  static const char *const quota_key[VGPU_RES_N_QUOTA] = {"vram", "resources", "contexts"};
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
    if (!u.held[k])
      continue;
    json_builder_begin_object(b);
    add_str(b, "kind", quota_key[k]);
    add_u64(b, "limit", u.limit[k]);
    add_u64(b, "held", u.held[k]);
    add_u64(b, "used", u.used[k]);
    add_u64(b, "tenants", u.holders[k]);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  if (tenants) {
    GArray *ts = snap.tenants;
    uint64_t hidden = 0;
    json_builder_set_member_name(b, "tenants");
    json_builder_begin_array(b);
    uint64_t now = now_ns();
    for (guint i = 0; i < ts->len; i++) {
      const VgpuTenantInfo *t = &g_array_index(ts, VgpuTenantSnapshot, i).info;
      const VgpuBookWorkerUsage wu = g_array_index(ts, VgpuTenantSnapshot, i).usage;
      if (!admin && t->client_uid != viewer_uid) {
        hidden++;
        continue;
      }
      json_builder_begin_object(b);
      add_str(b, "kind", vgpu_tenant_kind_name(t->kind));
      add_u64(b, "worker_pid", (uint64_t)t->worker_pid);
      add_u64(b, "client_pid", (uint64_t)t->client_pid);
      add_u64(b, "client_uid", (uint64_t)t->client_uid);
      if (t->client_name[0])
        add_str(b, "client_name", t->client_name);
      add_u64(b, "slot", (uint64_t)t->slot);
      add_u64(b, "vram", wu.used[VGPU_RES_VRAM]);
      add_u64(b, "peak_vram", wu.peak_vram);
      add_u64(b, "resources", wu.used[VGPU_RES_OBJECTS]);
      add_u64(b, "contexts", wu.used[VGPU_RES_CONTEXTS]);
      add_u64(b, "frames", wu.used[VGPU_RES_FRAMES]);
      add_u64(b, "commands", wu.used[VGPU_RES_COMMANDS]);
      add_u64(b, "busy_ns", wu.used[VGPU_RES_BUSY_NS]);
      add_permille(b, "busy_percent", t->busy_permille);
      add_u64(b, "throttled_ns", wu.used[VGPU_RES_THROTTLED_NS]);
      add_u64(b, "share_ppm", t->share_ppm);
      add_bool(b, "active", t->active);
      add_u64(b, "uptime_s", now > wu.started_ns ? (now - wu.started_ns) / 1000000000ull : 0);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
    /* Other users' tenants: how many, nothing else. */
    add_u64(b, "tenants_hidden", hidden);
  }
  json_builder_end_object(b);
  vgpu_instance_snapshot_clear(&snap);
}

/* What the instance's workers offer, as their renderer probe answered:
 * {name, state: probing|ready|unknown, reason (unknown), description,
 * vtest_protocols, capsets [{id, name, version, size}]} (ready). */
static void build_renderer(JsonBuilder *b, VgpuInstance *in) {
  const VgpuProbe *p = vgpu_instance_probe(in);
  VgpuProbeState st = p ? vgpu_probe_state(p) : VGPU_PROBE_PROBING;
  json_builder_begin_object(b);
  add_str(b, "name", vgpu_instance_renderer(in));
  add_str(b, "state",
          st == VGPU_PROBE_READY     ? "ready"
          : st == VGPU_PROBE_UNKNOWN ? "unknown"
                                     : "probing");
  if (st == VGPU_PROBE_UNKNOWN)
    add_str(b, "reason", vgpu_probe_reason(p));
  const VgpuProbeAnswer *a = st == VGPU_PROBE_READY ? vgpu_probe_answer(p) : NULL;
  if (a) {
    add_str(b, "description", a->description);
    /* What it runs on, where the probe could tell. */
    const struct {
      const char *key, *value;
    } texts[] = {{"gl_renderer", a->gl_renderer},
                 {"gl_version", a->gl_version},
                 {"mesa_version", a->mesa_version},
                 {"virglrenderer_version", a->virgl_version},
                 {"virglrenderer_library", a->virgl_library}};
    for (size_t i = 0; i < G_N_ELEMENTS(texts); i++)
      if (texts[i].value)
        add_str(b, texts[i].key, texts[i].value);
    json_builder_set_member_name(b, "vtest_protocols");
    json_builder_begin_array(b);
    for (guint i = 0; i < a->n_versions; i++)
      json_builder_add_int_value(b, a->versions[i]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "capsets");
    json_builder_begin_array(b);
    for (guint i = 0; i < a->n_capsets; i++) {
      const VgpuProbeCapset *c = &a->capsets[i];
      const char *name = vgpu_capset_name(c->id);
      g_autofree char *unnamed = name ? NULL : g_strdup_printf("capset %u", c->id);
      json_builder_begin_object(b);
      add_u64(b, "id", c->id);
      add_str(b, "name", name ? name : unnamed);
      add_u64(b, "version", c->version);
      add_u64(b, "size", c->size);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
  }
  json_builder_end_object(b);
}

/* GPU memory partitioning: the figures of `list` and `status`. */
static void add_gpu_memory(JsonBuilder *b, VgpuSupervisor *s) {
  uint64_t gm, assigned;
  uint32_t milli;
  vgpu_supervisor_gpu_memory(s, &gm, &milli, &assigned);
  uint64_t cap = vgpu_gpumem_capacity(gm, milli);
  add_u64(b, "gpu_memory", gm);
  json_builder_set_member_name(b, "overcommit");
  json_builder_add_double_value(b, milli / 1000.0);
  add_u64(b, "gpu_memory_capacity", cap);
  add_u64(b, "gpu_memory_assigned", assigned);
  add_u64(b, "gpu_memory_free", vgpu_gpumem_free(cap, assigned));
}

/* available: how many more instances of the profile fit the GPU memory. */
static void build_profile(JsonBuilder *b, const VgpuProfile *p, uint64_t available) {
  json_builder_begin_object(b);
  add_str(b, "name", p->name);
  add_u64(b, "available", available);
  add_str(b, "description", p->description);
  add_u64(b, "vram", p->vram);
  add_u64(b, "resources", p->max_resources);
  add_u64(b, "contexts", p->max_contexts);
  add_u64(b, "clients", p->max_clients);
  add_u64(b, "clients_per_uid", vgpu_profile_clients_per_uid(p));
  add_str(b, "gpu_share", vgpu_share_mode_name(p->share));
  add_u64(b, "weight", p->weight);
  add_u64(b, "fps_cap", p->fps_cap);
  add_u64(b, "heads", p->heads);
  add_u64(b, "gpu_timeout", p->gpu_timeout_s);
  add_u64(b, "render_threads", p->render_threads);
  add_not_enforced(b);
  json_builder_end_object(b);
}

static char *reply_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static char *reply_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "ok");
  json_builder_add_boolean_value(b, FALSE);
  add_str(b, "error", msg);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return json_to_string(root, FALSE);
}

static JsonBuilder *reply_ok(void) {
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "ok");
  json_builder_add_boolean_value(b, TRUE);
  return b;
}

static char *reply_finish(JsonBuilder *b) {
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_object_unref(b);
  return json_to_string(root, FALSE);
}

/* ---- commands ------------------------------------------------------------ */

/* The request's known members must have the right JSON type before any
 * accessor sees them (json-glib's *_with_default accessors log a critical
 * on a member of another kind).  Unknown members are ignored.  Returns NULL
 * or the refusal. */
static char *check_member_types(JsonObject *req) {
  static const struct {
    const char *name;
    GType type; /* G_TYPE_NONE: a JSON object; G_TYPE_POINTER: an array */
  } members[] = {
      {"command", G_TYPE_STRING},     {"name", G_TYPE_STRING},   {"profile", G_TYPE_STRING},
      {"force", G_TYPE_BOOLEAN},      {"settings", G_TYPE_NONE}, {"virgl", G_TYPE_BOOLEAN},
      {"render_node", G_TYPE_STRING}, {"head", G_TYPE_INT64},    {"tenant", G_TYPE_INT64},
      {"pid", G_TYPE_INT64},          {"start", G_TYPE_INT64},   {"transient", G_TYPE_BOOLEAN},
      {"keys", G_TYPE_POINTER},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(members); i++) {
    JsonNode *n = json_object_get_member(req, members[i].name);
    if (!n)
      continue;
    bool right = members[i].type == G_TYPE_NONE ? JSON_NODE_HOLDS_OBJECT(n)
                 : members[i].type == G_TYPE_POINTER
                     ? JSON_NODE_HOLDS_ARRAY(n)
                     : JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == members[i].type;
    if (!right)
      return reply_error("bad request: \"%s\" must be %s", members[i].name,
                         members[i].type == G_TYPE_STRING    ? "a string"
                         : members[i].type == G_TYPE_BOOLEAN ? "true or false"
                         : members[i].type == G_TYPE_INT64   ? "an integer"
                         : members[i].type == G_TYPE_POINTER ? "an array of strings"
                                                             : "an object");
  }
  return NULL;
}

static char *cmd_status(VgpuControlRequest *r) {
  VgpuSupervisor *s = r->sup;
  JsonBuilder *b = reply_ok();
  json_builder_set_member_name(b, "daemon");
  json_builder_begin_object(b);
  add_str(b, "version", VGPU_VERSION);
  add_u64(b, "pid", (uint64_t)getpid());
  add_u64(b, "uptime_s",
          (uint64_t)((g_get_monotonic_time() - vgpu_supervisor_started_us(s)) / G_USEC_PER_SEC));
  add_str(b, "runtime_dir", vgpu_supervisor_runtime_dir(s));
  add_str(b, "renderer", vgpu_supervisor_config(s)->renderer);
  /* The device: a render node and its kernel driver, or null (EGL
   * surfaceless: llvmpipe). */
  const char *node, *driver;
  vgpu_supervisor_render_device(s, &node, &driver);
  json_builder_set_member_name(b, "render_node");
  if (node)
    json_builder_add_string_value(b, node);
  else
    json_builder_add_null_value(b);
  json_builder_set_member_name(b, "render_driver");
  if (driver)
    json_builder_add_string_value(b, driver);
  else
    json_builder_add_null_value(b);
  add_str(b, "config", vgpu_supervisor_config_source(s));
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
  add_u64(b, "instances", all->len);
  add_u64(b, "control_connections", open_connections);
  add_u64(b, "connections_shed", vgpu_listener_shed_total());
  add_u64(b, "log_lines_suppressed", vgpu_log_suppressed_total());
  add_str(b, "caller", r->admin ? "admin" : "user");
  add_gpu_memory(b, s);
  /* On llvmpipe, the CPU capacity shares are parts of (null otherwise). */
  uint32_t cap_now = 0, cap_nominal = 0;
  bool cpu_charged = vgpu_supervisor_cpu_capacity(s, &cap_now, &cap_nominal);
  json_builder_set_member_name(b, "cpu_capacity_milli");
  if (cpu_charged)
    json_builder_add_int_value(b, cap_now);
  else
    json_builder_add_null_value(b);
  add_u64(b, "cpu_capacity_nominal_milli", cap_nominal);
  json_builder_end_object(b);
  /* Per instance, what its workers offer. */
  json_builder_set_member_name(b, "instances");
  json_builder_begin_array(b);
  for (guint i = 0; i < all->len; i++) {
    VgpuInstance *in = g_ptr_array_index(all, i);
    json_builder_begin_object(b);
    add_str(b, "name", vgpu_instance_name(in));
    json_builder_set_member_name(b, "renderer");
    build_renderer(b, in);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  return reply_finish(b);
}

static char *cmd_list(VgpuControlRequest *r) {
  JsonBuilder *b = reply_ok();
  json_builder_set_member_name(b, "instances");
  json_builder_begin_array(b);
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(r->sup);
  for (guint i = 0; i < all->len; i++)
    build_instance(b, r->sup, g_ptr_array_index(all, i), false, r->uid, r->admin);
  json_builder_end_array(b);
  add_gpu_memory(b, r->sup);
  return reply_finish(b);
}

static char *cmd_show(VgpuControlRequest *r) {
  VgpuInstance *in = vgpu_supervisor_find(r->sup, r->name);
  if (!in)
    return reply_error("no instance \"%s\" (vgpuctl list shows them)", r->name ? r->name : "");
  JsonBuilder *b = reply_ok();
  json_builder_set_member_name(b, "instance");
  build_instance(b, r->sup, in, true, r->uid, r->admin);
  return reply_finish(b);
}

static char *cmd_profiles(VgpuControlRequest *r) {
  JsonBuilder *b = reply_ok();
  json_builder_set_member_name(b, "profiles");
  json_builder_begin_array(b);
  const VgpuConfig *cfg = vgpu_supervisor_config(r->sup);
  uint64_t gm, assigned;
  uint32_t milli;
  vgpu_supervisor_gpu_memory(r->sup, &gm, &milli, &assigned);
  for (guint i = 0; i < cfg->profiles->len; i++) {
    const VgpuProfile *p = g_ptr_array_index(cfg->profiles, i);
    build_profile(b, p,
                  vgpu_gpumem_available(vgpu_gpumem_capacity(gm, milli), assigned,
                                        vgpu_gpumem_charge(p->vram, gm)));
  }
  json_builder_end_array(b);
  return reply_finish(b);
}

/* "warning": a change in force that the state file does not keep. */
static void add_state_warning(JsonBuilder *b, VgpuSupervisor *s) {
  const char *why = vgpu_supervisor_state_error(s);
  if (why)
    add_str(b, "warning", why);
}

static void add_strings(JsonBuilder *b, const char *k, GPtrArray *a) {
  json_builder_set_member_name(b, k);
  json_builder_begin_array(b);
  for (guint i = 0; i < a->len; i++)
    json_builder_add_string_value(b, g_ptr_array_index(a, i));
  json_builder_end_array(b);
}

/* A reload's or a reset's report: "changed", "overridden", "not_applied"
 * (arrays of sentences) and "warning" for instances that could not be
 * made. */
static char *reply_report(VgpuSupervisor *s, const VgpuReloadReport *rep) {
  JsonBuilder *b = reply_ok();
  add_str(b, "source", vgpu_supervisor_config_source(s));
  add_strings(b, "changed", rep->changed);
  add_strings(b, "overridden", rep->overridden);
  add_strings(b, "not_applied", rep->not_applied);
  const char *kept = vgpu_supervisor_state_error(s);
  if (rep->not_added || kept) {
    g_autofree char *w =
        g_strjoin("; ", rep->not_added ? rep->not_added : kept, rep->not_added ? kept : NULL, NULL);
    add_str(b, "warning", w);
  }
  return reply_finish(b);
}

static char *cmd_create(VgpuControlRequest *r) {
  g_autoptr(GError) e = NULL;
  const char *profile = json_object_get_string_member_with_default(r->req, "profile", NULL);
  bool transient = json_object_get_boolean_member_with_default(r->req, "transient", FALSE);
  VgpuInstance *in = vgpu_supervisor_create_instance(r->sup, r->name, profile, transient, &e);
  if (!in)
    return reply_error("%s", e->message);
  JsonBuilder *b = reply_ok();
  add_state_warning(b, r->sup);
  json_builder_set_member_name(b, "instance");
  build_instance(b, r->sup, in, false, r->uid, r->admin);
  return reply_finish(b);
}

static char *cmd_destroy(VgpuControlRequest *r) {
  g_autoptr(GError) e = NULL;
  bool force = json_object_get_boolean_member_with_default(r->req, "force", FALSE);
  if (!vgpu_supervisor_destroy_instance(r->sup, r->name, force, &e))
    return reply_error("%s", e->message);
  JsonBuilder *b = reply_ok();
  add_state_warning(b, r->sup);
  return reply_finish(b);
}

static char *cmd_set(VgpuControlRequest *r) {
  g_autoptr(GError) e = NULL;
  JsonNode *sn = json_object_get_member(r->req, "settings");
  JsonObject *settings = sn ? json_node_get_object(sn) : NULL;
  if (!settings || json_object_get_size(settings) == 0)
    return reply_error("bad request: \"set\" needs a non-empty \"settings\" object");
  g_autoptr(GHashTable) kv = g_hash_table_new(g_str_hash, g_str_equal);
  g_autoptr(GList) members = json_object_get_members(settings);
  for (GList *m = members; m; m = m->next) {
    JsonNode *n = json_object_get_member(settings, m->data);
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
      return reply_error("bad request: setting \"%s\" must be a string", (char *)m->data);
    g_hash_table_insert(kv, m->data, (gpointer)json_node_get_string(n));
  }
  if (!vgpu_supervisor_set(r->sup, r->name, kv, &e))
    return reply_error("%s", e->message);
  JsonBuilder *b = reply_ok();
  add_state_warning(b, r->sup);
  json_builder_set_member_name(b, "instance");
  build_instance(b, r->sup, vgpu_supervisor_find(r->sup, r->name), false, r->uid, r->admin);
  return reply_finish(b);
}

static void conn_queue(Conn *c, const char *reply);
static void conn_serve(Conn *c);
static bool conn_flush(Conn *c);
static bool conn_rewatch(Conn *c);
static void conn_close(Conn *c);

/* The worker of an attached VM ended: one last line, then the connection
 * closes.  clean: the worker exited 0 (its tenant left). */
static void on_vm_end(int status, const char *why, gpointer user) {
  Conn *c = user;
  c->holding = false;
  c->vm_worker = 0;
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  JsonBuilder *b = reply_ok();
  add_str(b, "event", "worker-ended");
  json_builder_set_member_name(b, "clean");
  json_builder_add_boolean_value(b, clean);
  json_builder_set_member_name(b, "exit_code");
  json_builder_add_int_value(b, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  json_builder_set_member_name(b, "signal");
  json_builder_add_int_value(b, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  add_str(b, "reason", why);
  g_autofree char *line = reply_finish(b);
  conn_queue(c, line);
  c->closing = true;
  if (!conn_flush(c) || !conn_rewatch(c))
    conn_close(c);
}

/* A VM's connection (QEMU's end of a vhost-user socket) handed over with
 * the request as SCM_RIGHTS: vgpud starts its worker and keeps this
 * connection open until the worker ends, then writes one last line. */
static char *cmd_attach_vm(VgpuControlRequest *r) {
  Conn *c = r->conn;
  if (!c || c->passed_fd < 0)
    return reply_error("attach-vm needs the VM's connected socket passed with the request "
                       "(SCM_RIGHTS)");
  int fd = c->passed_fd;
  c->passed_fd = -1;
  if (c->holding) {
    vgpu_close(fd);
    return reply_error("this connection already stands for a VM");
  }
  bool virgl = json_object_get_boolean_member_with_default(r->req, "virgl", FALSE);
  const char *node = json_object_get_string_member_with_default(r->req, "render_node", NULL);
  g_autoptr(GError) e = NULL;
  g_autofree char *instance = NULL;
  pid_t pid =
      vgpu_supervisor_attach_vm(r->sup, r->name, fd, virgl, node, on_vm_end, c, &instance, &e);
  if (!pid)
    return reply_error("%s", e->message);
  c->vm_worker = pid;
  c->holding = true;
  /* An attached VM lives as long as its guest: no idle timeout, and it
   * does not count against its user's cap on control connections. */
  if (!c->uncounted) {
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(c->ctl->per_uid, GUINT_TO_POINTER(c->uid)));
    if (n > 1)
      g_hash_table_insert(c->ctl->per_uid, GUINT_TO_POINTER(c->uid), GUINT_TO_POINTER(n - 1));
    else
      g_hash_table_remove(c->ctl->per_uid, GUINT_TO_POINTER(c->uid));
    c->uncounted = true;
  }
  JsonBuilder *b = reply_ok();
  add_str(b, "instance", instance);
  add_u64(b, "worker_pid", (uint64_t)pid);
  return reply_finish(b);
}

/* The worker answered (or failed to): the reply line, with the image's
 * memfd passed along (SCM_RIGHTS) on its first byte. */
static void on_shot_done(const VgpuShot *shot, const char *error, gpointer user) {
  Conn *c = user;
  c->shot = 0;
  g_autofree char *line = NULL;
  if (!shot) {
    line = reply_error("%s", error);
  } else {
    JsonBuilder *b = reply_ok();
    add_u64(b, "head", shot->head);
    add_u64(b, "width", shot->width);
    add_u64(b, "height", shot->height);
    add_u64(b, "stride", shot->stride);
    add_u64(b, "format", shot->format);
    add_u64(b, "worker_pid", (uint64_t)shot->worker_pid);
    line = reply_finish(b);
    int fd = fcntl(shot->fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      g_free(line);
      line = reply_error("cannot pass the screenshot on: %s", g_strerror(errno));
    } else {
      c->out_fd = fd;
      c->out_fd_at = c->out->len;
    }
  }
  conn_queue(c, line);
  /* Requests that came meanwhile are served now. */
  conn_serve(c);
  if (!conn_flush(c) || !conn_rewatch(c))
    conn_close(c);
}

/* Asks the instance's VM worker for a head's image; the reply comes when
 * it answers (on_shot_done), or its timeout passes. */
static char *cmd_screenshot(VgpuControlRequest *r) {
  Conn *c = r->conn;
  gint64 head = json_object_get_int_member_with_default(r->req, "head", 0);
  gint64 tenant = json_object_get_int_member_with_default(r->req, "tenant", 0);
  if (head < 0 || head >= VGPU_SHOT_MAX_HEADS)
    return reply_error("bad request: \"head\" must be 0..%d", VGPU_SHOT_MAX_HEADS - 1);
  if (tenant < 0 || tenant > G_MAXINT32)
    return reply_error("bad request: \"tenant\" must be a pid");
  if (!c)
    return reply_error("screenshot needs a connection to pass the image on");
  g_autoptr(GError) e = NULL;
  guint id = vgpu_supervisor_screenshot(r->sup, r->name, (uint32_t)head, (pid_t)tenant, r->uid,
                                        r->admin, on_shot_done, c, &e);
  if (!id)
    return reply_error("%s", e->message);
  c->shot = id;
  return NULL; /* deferred */
}

static char *cmd_reload(VgpuControlRequest *r) {
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuReloadReport) rep = NULL;
  if (!vgpu_supervisor_reload(r->sup, &rep, &e))
    return reply_error("reload failed, configuration unchanged: %s", e->message);
  return reply_report(r->sup, rep);
}

/* Drops run-time changes: "keys" (setting names) or, absent or empty, all
 * of the instance's. */
static char *cmd_reset(VgpuControlRequest *r) {
  g_autoptr(GError) e = NULL;
  JsonNode *kn = json_object_get_member(r->req, "keys");
  JsonArray *ka = kn ? json_node_get_array(kn) : NULL;
  guint n = ka ? json_array_get_length(ka) : 0;
  if (n > 64)
    return reply_error("bad request: at most 64 \"keys\"");
  g_autofree const char **keys = g_new0(const char *, n + 1);
  for (guint i = 0; i < n; i++) {
    JsonNode *k = json_array_get_element(ka, i);
    if (!JSON_NODE_HOLDS_VALUE(k) || json_node_get_value_type(k) != G_TYPE_STRING)
      return reply_error("bad request: \"keys\" must be an array of strings");
    keys[i] = json_node_get_string(k);
  }
  g_autoptr(VgpuReloadReport) rep = NULL;
  if (!vgpu_supervisor_reset(r->sup, r->name, keys, &rep, &e))
    return reply_error("%s", e->message);
  return reply_report(r->sup, rep);
}

/* The live instances as vgpud.conf text ("config"). */
static char *cmd_dump_config(VgpuControlRequest *r) {
  g_autofree char *text = vgpu_supervisor_dump_config(r->sup);
  JsonBuilder *b = reply_ok();
  add_str(b, "config", text);
  return reply_finish(b);
}

/* Why the sessions of process "pid" (started at "start", clock ticks after
 * boot as /proc/PID/stat has it; absent: any) and of its descendants
 * ended, as vgpud composed it; only the caller's own uid's unless it is an
 * admin.  "live": how many of them still run. */
static char *cmd_session_end(VgpuControlRequest *r) {
  gint64 pid = json_object_get_int_member_with_default(r->req, "pid", 0);
  gint64 start = json_object_get_int_member_with_default(r->req, "start", 0);
  if (pid <= 0 || pid > G_MAXINT32)
    return reply_error("bad request: \"pid\" must be a process id");
  if (start < 0)
    return reply_error("bad request: \"start\" must not be negative");
  VgpuProcRef who = {.pid = (pid_t)pid, .start = (uint64_t)start};
  guint live = 0;
  g_autoptr(GArray) ends = vgpu_supervisor_session_ends(r->sup, &who, r->uid, r->admin, &live);
  JsonBuilder *b = reply_ok();
  add_u64(b, "live", live);
  json_builder_set_member_name(b, "sessions");
  json_builder_begin_array(b);
  for (guint i = 0; i < ends->len; i++) {
    const VgpuSessionEnd *e = &g_array_index(ends, VgpuSessionEnd, i);
    json_builder_begin_object(b);
    add_str(b, "instance", e->instance);
    add_u64(b, "client_pid", (uint64_t)e->client_pid);
    add_u64(b, "client_uid", (uint64_t)e->client_uid);
    add_u64(b, "worker_pid", (uint64_t)e->worker_pid);
    add_u64(b, "ended_ms", (uint64_t)(e->ended_us / 1000));
    json_builder_set_member_name(b, "by_vgpud");
    json_builder_add_boolean_value(b, e->by_vgpud);
    add_str(b, "cause", e->cause);
    add_str(b, "reason", e->reason);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  return reply_finish(b);
}

static const VgpuControlCommand commands[] = {
    {"status", cmd_status, false, ""},
    {"list", cmd_list, false, ""},
    {"show", cmd_show, false, "name"},
    {"profiles", cmd_profiles, false, ""},
    {"create", cmd_create, true, "name profile transient"},
    {"destroy", cmd_destroy, true, "name force"},
    {"set", cmd_set, true, "name settings"},
    {"reload", cmd_reload, true, ""},
    {"reset", cmd_reset, true, "name keys"},
    {"dump-config", cmd_dump_config, true, ""},
    {"attach-vm", cmd_attach_vm, true, "name virgl render_node"},
    {"screenshot", cmd_screenshot, false, "name head tenant"},
    {"session-end", cmd_session_end, false, "pid start"},
};

const VgpuControlCommand *vgpu_control_commands(size_t *n) {
  *n = G_N_ELEMENTS(commands);
  return commands;
}

const VgpuControlCommand *vgpu_control_command_find(const char *name) {
  for (size_t i = 0; name && i < G_N_ELEMENTS(commands); i++)
    if (g_str_equal(commands[i].name, name))
      return &commands[i];
  return NULL;
}

bool vgpu_control_is_admin(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups,
                           uid_t daemon_uid, gid_t admin_gid) {
  if (uid == 0)
    return true;
  /* An unprivileged vgpud is its user's own daemon.  A root vgpud's workers
   * run under other uids, which are never admins by uid. */
  if (daemon_uid != 0 && uid == daemon_uid)
    return true;
  if (admin_gid == (gid_t)-1)
    return false;
  if (gid == admin_gid)
    return true;
  for (size_t i = 0; i < n_groups; i++)
    if (groups[i] == admin_gid)
      return true;
  return false;
}

static char *handle(VgpuSupervisor *s, const char *line, uid_t uid, bool admin, Conn *conn) {
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) e = NULL;
  if (!json_parser_load_from_data(parser, line, -1, &e))
    return reply_error("bad request: %s", e->message);
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    return reply_error("bad request: expected a JSON object");
  JsonObject *req = json_node_get_object(root);
  char *refusal = check_member_types(req);
  if (refusal)
    return refusal;
  const char *cmd = json_object_get_string_member_with_default(req, "command", NULL);
  if (!cmd)
    return reply_error("bad request: missing \"command\"");
  const VgpuControlCommand *c = vgpu_control_command_find(cmd);
  if (!c) {
    g_autoptr(GString) names = g_string_new(NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
      g_string_append_printf(names, "%s%s", i ? ", " : "", commands[i].name);
    return reply_error("unknown command \"%s\" (%s)", cmd, names->str);
  }
  if (c->admin && !admin)
    return reply_error("permission denied: \"%s\" needs an admin: root, a member of [daemon] "
                       "admin-group, or the user an unprivileged vgpud runs as",
                       cmd);
  VgpuControlRequest r = {
      .sup = s,
      .conn = conn,
      .req = req,
      .name = json_object_get_string_member_with_default(req, "name", NULL),
      .uid = uid,
      .admin = admin,
  };
  return c->handler(&r);
}

char *vgpu_control_handle(VgpuSupervisor *s, const char *line, uid_t uid, bool admin) {
  return handle(s, line, uid, admin, NULL);
}

/* ---- connections --------------------------------------------------------- */

static void conn_free(gpointer p) {
  Conn *c = p;
  VgpuControl *ctl = c->ctl;
  if (c->watch)
    g_source_remove(c->watch);
  if (c->timer)
    g_source_remove(c->timer);
  if (c->holding)
    vgpu_supervisor_forget_end(ctl->sup, c->vm_worker, true);
  if (c->shot)
    vgpu_supervisor_screenshot_cancel(ctl->sup, c->shot);
  if (c->passed_fd >= 0)
    vgpu_close(c->passed_fd);
  if (c->out_fd >= 0)
    vgpu_close(c->out_fd);
  vgpu_close(c->fd);
  g_string_free(c->in, TRUE);
  g_string_free(c->out, TRUE);
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(ctl->per_uid, GUINT_TO_POINTER(c->uid)));
  if (c->uncounted)
    ;
  else if (n > 1)
    g_hash_table_insert(ctl->per_uid, GUINT_TO_POINTER(c->uid), GUINT_TO_POINTER(n - 1));
  else
    g_hash_table_remove(ctl->per_uid, GUINT_TO_POINTER(c->uid));
  if (!c->admin)
    ctl->non_admin--;
  open_connections--;
  g_free(c);
}

static void conn_close(Conn *c) {
  g_hash_table_remove(c->ctl->conns, c);
}

static size_t conn_queued(const Conn *c) {
  return c->out->len - c->out_off;
}

/* send(), with out_fd attached when the bytes start where it belongs. */
static ssize_t conn_send(Conn *c, const char *buf, size_t len) {
  if (c->out_fd < 0 || c->out_off != c->out_fd_at)
    return send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  VgpuFdControl ctrl;
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  vgpu_msg_set_fd(&m, &ctrl, c->out_fd);
  ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n > 0) {
    vgpu_close(c->out_fd);
    c->out_fd = -1;
  }
  return n;
}

/* Writes what the socket takes now.  False: the connection is broken. */
static bool conn_flush(Conn *c) {
  while (conn_queued(c) > 0) {
    /* The fd's reply starts a send of its own. */
    size_t len = conn_queued(c);
    if (c->out_fd >= 0 && c->out_fd_at > c->out_off)
      len = MIN(len, c->out_fd_at - c->out_off);
    ssize_t n = conn_send(c, c->out->str + c->out_off, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errno == EAGAIN;
    }
    c->out_off += (size_t)n;
    c->last_us = c->last_out_us = g_get_monotonic_time();
  }
  g_string_truncate(c->out, 0);
  c->out_off = 0;
  return true;
}

static gboolean on_conn_io(gint fd, GIOCondition cond, gpointer user);

static bool conn_has_line(const Conn *c) { return memchr(c->in->str, '\n', c->in->len) != NULL; }

/* More requests are read only while the replies already queued are under
 * VGPU_CONTROL_MAX_QUEUE and no complete request waits: a client that
 * does not read its replies stops being read (its requests wait in its
 * own socket buffer), and what vgpud holds for it stays bounded. */
static bool conn_may_read(const Conn *c) {
  return !c->eof && !c->closing && conn_queued(c) < VGPU_CONTROL_MAX_QUEUE && !conn_has_line(c);
}

/* Watches what the connection waits for; false when that is nothing (it
 * is done).  Requests left unanswered by the per-wake-up cap wait for the
 * socket to be writable, which is at once unless the client reads
 * nothing. */
static bool conn_rewatch(Conn *c) {
  GIOCondition want = 0;
  if (conn_may_read(c))
    want |= G_IO_IN;
  if (conn_queued(c) > 0 || (conn_has_line(c) && !c->closing && !c->shot))
    want |= G_IO_OUT;
  if (!want)
    return false;
  if (want != c->watching) {
    if (c->watch)
      g_source_remove(c->watch);
    c->watch = g_unix_fd_add(c->fd, want | G_IO_HUP | G_IO_ERR, on_conn_io, c);
    c->watching = want;
  }
  return true;
}

static void conn_queue(Conn *c, const char *reply) {
  if (conn_queued(c) == 0)
    c->last_out_us = g_get_monotonic_time();
  if (c->out_off > 0 && c->out_off == c->out->len && c->out_fd < 0) {
    g_string_truncate(c->out, 0);
    c->out_off = 0;
  }
  g_string_append(c->out, reply);
  g_string_append_c(c->out, '\n');
}

/* Requests answered per wake-up of one connection: the main loop turns to
 * other connections in between, so a client that pipelines many requests
 * delays others by at most this many. */
#define SERVE_BATCH 16

/* Answers complete lines in the input while the queue has room. */
static void conn_serve(Conn *c) {
  char *nl;
  size_t done = 0;
  int served = 0;
  while (!c->closing && !c->holding && !c->shot && served++ < SERVE_BATCH &&
         conn_queued(c) < VGPU_CONTROL_MAX_QUEUE &&
         (nl = memchr(c->in->str + done, '\n', c->in->len - done))) {
    *nl = '\0';
    const char *line = c->in->str + done;
    done = (size_t)(nl - c->in->str) + 1;
    c->last_us = g_get_monotonic_time();
    g_autofree char *reply = handle(c->ctl->sup, line, c->uid, c->admin, c);
    if (reply)
      conn_queue(c, reply); /* else deferred: a screenshot waits for its worker */
  }
  g_string_erase(c->in, 0, (gssize)done);
  /* A connection that stands for a VM takes no more requests. */
  if (c->holding)
    g_string_truncate(c->in, 0);
  if (!c->closing && !conn_has_line(c) && c->in->len > VGPU_CONTROL_MAX_REQUEST) {
    vgpu_warn("control: pid %d uid %u sent a request longer than %d bytes; closed", (int)c->pid,
              (unsigned)c->uid, VGPU_CONTROL_MAX_REQUEST);
    g_autofree char *reply =
        reply_error("request longer than %d bytes; connection closed", VGPU_CONTROL_MAX_REQUEST);
    g_string_truncate(c->in, 0);
    c->closing = true;
    conn_queue(c, reply);
  }
}

/* Reads like read() but returns -errno; an fd passed along (SCM_RIGHTS)
 * is kept for the request it came with, one at most: extra ones are
 * closed, and so is every fd of a message with more than the control
 * buffer holds, which fails (-EMSGSIZE). */
static ssize_t conn_recv(Conn *c, char *buf, size_t len) {
  int fd = -1;
  size_t n_fd;
  bool want = c->passed_fd < 0 && !c->holding;
  ssize_t n = vgpu_recvmsg_fds(c->fd, buf, len, MSG_DONTWAIT, &fd, want ? 1 : 0, &n_fd);
  if (n_fd > 0)
    c->passed_fd = fd;
  return n;
}

static gboolean on_conn_io(gint fd, GIOCondition cond, gpointer user) {
  Conn *c = user;
  if ((cond & (G_IO_IN | G_IO_HUP | G_IO_ERR)) && conn_may_read(c)) {
    /* One read a wake-up, never much past the request limit: the input
     * held for a connection stays under VGPU_CONTROL_MAX_REQUEST + 4 KiB. */
    char buf[4096];
    ssize_t n = conn_recv(c, buf, sizeof(buf));
    if (n < 0 && n != -EAGAIN)
      goto close;
    if (n == 0)
      c->eof = true; /* answer what came, then close */
    if (n > 0 && !c->holding)
      g_string_append_len(c->in, buf, n);
    /* The caller that stands for an attached VM left: so does the VM's
     * worker (conn_free). */
    if (c->holding && c->eof)
      goto close;
  } else if ((cond & (G_IO_HUP | G_IO_ERR)) && !(cond & G_IO_OUT)) {
    goto close; /* gone: nobody to answer */
  }
  if (!conn_flush(c))
    goto close;
  conn_serve(c);
  if (!conn_flush(c))
    goto close;
  if (conn_rewatch(c))
    return G_SOURCE_CONTINUE;
close:
  c->watch = 0; /* this source; it ends with the return value */
  conn_close(c);
  return G_SOURCE_REMOVE;
}

/* Once a second: a connection idle for control-timeout is closed, and so
 * is one with replies or requests waiting whose socket has taken nothing
 * for VGPU_CONTROL_STALL_S (the client does not read). */
static gboolean on_conn_timer(gpointer user) {
  Conn *c = user;
  if (c->holding)
    return G_SOURCE_CONTINUE;
  guint timeout_s = vgpu_supervisor_config(c->ctl->sup)->control_timeout_s;
  gint64 now = g_get_monotonic_time(), idle_us = now - c->last_us;
  bool waiting = conn_queued(c) > 0 || (conn_has_line(c) && !c->closing && !c->shot);
  if (waiting && now - c->last_out_us >= VGPU_CONTROL_STALL_S * G_USEC_PER_SEC) {
    vgpu_warn("control: pid %d uid %u does not read its replies (%zu bytes queued); closed",
              (int)c->pid, (unsigned)c->uid, conn_queued(c));
  } else if (timeout_s && idle_us >= (gint64)timeout_s * G_USEC_PER_SEC) {
    vgpu_info("control: pid %d uid %u idle for %u s; closed", (int)c->pid, (unsigned)c->uid,
              timeout_s);
  } else {
    return G_SOURCE_CONTINUE;
  }
  c->timer = 0;
  conn_close(c);
  return G_SOURCE_REMOVE;
}

/* The admin group's gid, looked up again when the configured name changes
 * (reload). */
static gid_t admin_gid(VgpuControl *ctl) {
  const char *name = vgpu_supervisor_config(ctl->sup)->admin_group;
  if (g_strcmp0(name, ctl->admin_group) == 0)
    return ctl->admin_gid;
  g_free(ctl->admin_group);
  ctl->admin_group = g_strdup(name);
  ctl->admin_gid = (gid_t)-1;
  if (name) {
    struct group *g = getgrnam(name);
    if (g)
      ctl->admin_gid = g->gr_gid;
    else
      vgpu_error("control: admin-group \"%s\" does not exist: no group has admin rights", name);
  }
  uid_t self = geteuid();
  g_autofree char *self_rule =
      self ? g_strdup_printf(", and uid %u (vgpud's own: it does not run as root)", (unsigned)self)
           : g_strdup("");
  g_autofree char *grp =
      ctl->admin_gid != (gid_t)-1
          ? g_strdup_printf(", members of group %s (gid %u)", name, (unsigned)ctl->admin_gid)
          : g_strdup("");
  vgpu_info("control: admin commands for uid 0%s%s; no other uid", grp, self_rule);
  return ctl->admin_gid;
}

/* The peer's supplementary groups (SO_PEERGROUPS); NULL when unknown. */
static gid_t *peer_groups(int fd, size_t *n) {
  socklen_t len = 32 * sizeof(gid_t);
  for (int tries = 0; tries < 3; tries++) {
    gid_t *g = g_malloc(len);
    socklen_t got = len;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &got) == 0) {
      *n = got / sizeof(gid_t);
      return g;
    }
    g_free(g);
    if (errno != ERANGE || got <= len || got > 65536 * sizeof(gid_t))
      break;
    len = got;
  }
  *n = 0;
  return NULL;
}

static void refuse(int fd, const char *msg) {
  g_autofree char *reply = reply_error("%s", msg);
  g_autofree char *line = g_strconcat(reply, "\n", NULL);
  (void)send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void on_control_client(int cfd, gpointer user) {
  VgpuControl *ctl = user;
  pid_t pid = 0;
  uid_t uid = (uid_t)-1;
  gid_t gid = (gid_t)-1;
  vgpu_peer_cred(cfd, &pid, &uid, &gid);
  size_t n_groups = 0;
  gid_t agid = admin_gid(ctl);
  g_autofree gid_t *groups = agid != (gid_t)-1 ? peer_groups(cfd, &n_groups) : NULL;
  bool admin = vgpu_control_is_admin(uid, gid, groups, n_groups, geteuid(), agid);
  const VgpuConfig *cfg = vgpu_supervisor_config(ctl->sup);
  guint mine = GPOINTER_TO_UINT(g_hash_table_lookup(ctl->per_uid, GUINT_TO_POINTER(uid)));
  /* Root is never refused: it can always reach its own daemon. */
  if (uid != 0 && (mine >= cfg->max_control_conns_per_uid ||
                   (!admin && ctl->non_admin >= cfg->max_control_conns))) {
    bool per_uid = mine >= cfg->max_control_conns_per_uid;
    vgpu_warn("control: refused pid %d uid %u: %s limit of %u connections reached", (int)pid,
              (unsigned)uid, per_uid ? "per-uid" : "total",
              per_uid ? cfg->max_control_conns_per_uid : cfg->max_control_conns);
    refuse(cfd, per_uid ? "too many control connections from this user; try again later"
                        : "too many control connections; try again later");
    vgpu_close(cfd);
    return;
  }
  Conn *c = g_new0(Conn, 1);
  c->ctl = ctl;
  c->fd = cfd;
  c->passed_fd = -1;
  c->out_fd = -1;
  c->in = g_string_new(NULL);
  c->out = g_string_new(NULL);
  c->uid = uid;
  c->pid = pid;
  c->admin = admin;
  c->last_us = c->last_out_us = g_get_monotonic_time();
  g_hash_table_add(ctl->conns, c);
  g_hash_table_insert(ctl->per_uid, GUINT_TO_POINTER(uid), GUINT_TO_POINTER(mine + 1));
  if (!admin)
    ctl->non_admin++;
  open_connections++;
  conn_rewatch(c);
  c->timer = g_timeout_add_seconds(1, on_conn_timer, c);
}

VgpuControl *vgpu_control_new(VgpuSupervisor *s, GError **error) {
  g_autofree char *path = g_build_filename(vgpu_supervisor_runtime_dir(s), "control.sock", NULL);
  int fd = vgpu_listen_unix(path, 0666, 64);
  if (fd < 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-fd), "control socket %s: %s", path,
                g_strerror(-fd));
    return NULL;
  }
  VgpuControl *c = g_new0(VgpuControl, 1);
  c->sup = s;
  c->fd = fd;
  c->path = g_steal_pointer(&path);
  c->conns = g_hash_table_new_full(g_direct_hash, g_direct_equal, conn_free, NULL);
  c->per_uid = g_hash_table_new(g_direct_hash, g_direct_equal);
  c->admin_group = g_strdup("\n"); /* no group name: the first lookup logs the rule */
  admin_gid(c);
  c->listener = vgpu_listener_new(c->fd, "control", 16, on_control_client, c);
  const VgpuConfig *cfg = vgpu_supervisor_config(s);
  vgpu_info("control: at most %u connections of non-admins (%u per uid), requests up to %d "
            "bytes, idle connections closed after %u s%s",
            cfg->max_control_conns, cfg->max_control_conns_per_uid, VGPU_CONTROL_MAX_REQUEST,
            cfg->control_timeout_s, cfg->control_timeout_s ? "" : " (0: never)");
  return c;
}

guint vgpu_control_n_connections(VgpuControl *c) {
  return g_hash_table_size(c->conns);
}

void vgpu_control_free(VgpuControl *c) {
  if (!c)
    return;
  vgpu_listener_free(c->listener);
  g_hash_table_unref(c->conns);
  g_hash_table_unref(c->per_uid);
  vgpu_close(c->fd);
  (void)unlink(c->path);
  g_free(c->path);
  g_free(c->admin_group);
  g_free(c);
}
