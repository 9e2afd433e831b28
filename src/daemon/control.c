/* Control server: JSON lines on DIR/control.sock.  Requests are small and
 * answered at once from the supervisor's own records (no lock a worker
 * could hold), so a connection is served inline from the main loop. */
#include "daemon/control.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/profile.h"
#include "daemon/supervisor.h"
#include "util/fd.h"
#include "util/log.h"

#define CONTROL_MAX_LINE (64 * 1024)

struct VgpuControl {
  VgpuSupervisor *sup;
  int fd;
  guint watch;
  char *path;
  GHashTable *conns; /* Conn* set */
};

typedef struct {
  VgpuControl *ctl;
  int fd;
  guint watch;
  uid_t uid;
  pid_t pid;
  GString *in;
} Conn;

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

static void add_str(JsonBuilder *b, const char *k, const char *v) {
  json_builder_set_member_name(b, k);
  json_builder_add_string_value(b, v ? v : "");
}

/* The scheduling settings are stored and reported but nothing enforces
 * them yet: every view that shows them says so. */
static void add_not_enforced(JsonBuilder *b) {
  static const char *const fields[] = {"gpu_share", "weight", "fps_cap", "heads"};
  json_builder_set_member_name(b, "not_enforced");
  json_builder_begin_array(b);
  for (size_t i = 0; i < G_N_ELEMENTS(fields); i++)
    json_builder_add_string_value(b, fields[i]);
  json_builder_end_array(b);
}

static void build_instance(JsonBuilder *b, VgpuSupervisor *s, VgpuInstance *in, bool tenants) {
  /* Everything below comes from the supervisor's own records; what workers
   * wrote is read through the book, clamped to what each was granted. */
  VgpuBook *book = vgpu_supervisor_book(s);
  VgpuBookUsage u;
  vgpu_book_instance_usage(book, (uint32_t)in->ledger_index, &u);
  json_builder_begin_object(b);
  add_str(b, "name", in->cfg->name);
  add_str(b, "profile", in->cfg->profile);
  add_str(b, "socket", in->socket_path);
  add_str(b, "origin", in->runtime_origin ? "runtime" : "config");
  add_str(b, "state", in->draining ? "draining" : "active");
  add_str(b, "gpu_share", vgpu_share_mode_name(in->cfg->eff.share));
  add_u64(b, "weight", in->cfg->eff.weight);
  add_u64(b, "fps_cap", in->cfg->eff.fps_cap);
  add_u64(b, "heads", in->cfg->eff.heads);
  add_not_enforced(b);
  json_builder_set_member_name(b, "limits");
  json_builder_begin_object(b);
  add_u64(b, "vram", u.limit[VGPU_RES_VRAM]);
  add_u64(b, "resources", u.limit[VGPU_RES_OBJECTS]);
  add_u64(b, "contexts", u.limit[VGPU_RES_CONTEXTS]);
  add_u64(b, "clients", in->cfg->eff.max_clients);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "usage");
  json_builder_begin_object(b);
  add_u64(b, "vram", u.used[VGPU_RES_VRAM]);
  add_u64(b, "resources", u.used[VGPU_RES_OBJECTS]);
  add_u64(b, "contexts", u.used[VGPU_RES_CONTEXTS]);
  add_u64(b, "clients", g_hash_table_size(in->workers));
  add_u64(b, "frames", u.used[VGPU_RES_FRAMES]);
  add_u64(b, "commands", u.used[VGPU_RES_COMMANDS]);
  add_u64(b, "bytes_in", u.used[VGPU_RES_BYTES_IN]);
  add_u64(b, "busy_ns", u.used[VGPU_RES_BUSY_NS]);
  add_u64(b, "refusals", u.refusals);
  add_u64(b, "worker_crashes", u.worker_crashes);
  json_builder_end_object(b);
  if (tenants) {
    json_builder_set_member_name(b, "tenants");
    json_builder_begin_array(b);
    GHashTableIter it;
    gpointer v;
    uint64_t now = now_ns();
    g_hash_table_iter_init(&it, in->workers);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      VgpuWorker *w = v;
      VgpuBookWorkerUsage wu;
      if (!vgpu_book_worker_usage(book, (uint32_t)w->slot, &wu))
        continue;
      json_builder_begin_object(b);
      add_u64(b, "worker_pid", (uint64_t)w->pid);
      add_u64(b, "client_pid", (uint64_t)w->client_pid);
      add_u64(b, "client_uid", (uint64_t)w->client_uid);
      add_u64(b, "slot", (uint64_t)w->slot);
      add_u64(b, "vram", wu.used[VGPU_RES_VRAM]);
      add_u64(b, "peak_vram", wu.peak_vram);
      add_u64(b, "resources", wu.used[VGPU_RES_OBJECTS]);
      add_u64(b, "contexts", wu.used[VGPU_RES_CONTEXTS]);
      add_u64(b, "frames", wu.used[VGPU_RES_FRAMES]);
      add_u64(b, "commands", wu.used[VGPU_RES_COMMANDS]);
      add_u64(b, "busy_ns", wu.used[VGPU_RES_BUSY_NS]);
      add_u64(b, "uptime_s", now > wu.started_ns ? (now - wu.started_ns) / 1000000000ull : 0);
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
  }
  json_builder_end_object(b);
}

static void build_profile(JsonBuilder *b, const VgpuProfile *p) {
  json_builder_begin_object(b);
  add_str(b, "name", p->name);
  add_str(b, "description", p->description);
  add_u64(b, "vram", p->vram);
  add_u64(b, "resources", p->max_resources);
  add_u64(b, "contexts", p->max_contexts);
  add_u64(b, "clients", p->max_clients);
  add_str(b, "gpu_share", vgpu_share_mode_name(p->share));
  add_u64(b, "weight", p->weight);
  add_u64(b, "fps_cap", p->fps_cap);
  add_u64(b, "heads", p->heads);
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

static const char *const admin_commands[] = {"create", "destroy", "set", "reload", NULL};

/* The request's known members must have the right JSON type before any
 * accessor sees them (json-glib's *_with_default accessors log a critical
 * on a member of another kind).  Unknown members are ignored.  Returns NULL
 * or the refusal. */
static char *check_member_types(JsonObject *req) {
  static const struct {
    const char *name;
    GType type; /* G_TYPE_NONE: a JSON object */
  } members[] = {
      {"command", G_TYPE_STRING}, {"name", G_TYPE_STRING},   {"profile", G_TYPE_STRING},
      {"force", G_TYPE_BOOLEAN},  {"settings", G_TYPE_NONE},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(members); i++) {
    JsonNode *n = json_object_get_member(req, members[i].name);
    if (!n)
      continue;
    bool right = members[i].type == G_TYPE_NONE
                     ? JSON_NODE_HOLDS_OBJECT(n)
                     : JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == members[i].type;
    if (!right)
      return reply_error("bad request: \"%s\" must be %s", members[i].name,
                         members[i].type == G_TYPE_STRING    ? "a string"
                         : members[i].type == G_TYPE_BOOLEAN ? "true or false"
                                                             : "an object");
  }
  return NULL;
}

char *vgpu_control_handle(VgpuSupervisor *s, const char *line, uid_t uid) {
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
  const char *name = json_object_get_string_member_with_default(req, "name", NULL);

  if (g_strv_contains(admin_commands, cmd) && uid != 0 && uid != geteuid())
    return reply_error("permission denied: \"%s\" needs root or the daemon's user (uid %u)", cmd,
                       (unsigned)geteuid());

  if (g_str_equal(cmd, "status")) {
    JsonBuilder *b = reply_ok();
    json_builder_set_member_name(b, "daemon");
    json_builder_begin_object(b);
    add_str(b, "version", VGPU_VERSION);
    add_u64(b, "pid", (uint64_t)getpid());
    add_u64(b, "uptime_s",
            (uint64_t)((g_get_monotonic_time() - vgpu_supervisor_started_us(s)) / G_USEC_PER_SEC));
    add_str(b, "runtime_dir", vgpu_supervisor_runtime_dir(s));
    add_str(b, "renderer", vgpu_supervisor_config(s)->renderer);
    add_str(b, "config", vgpu_supervisor_config_source(s));
    g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
    add_u64(b, "instances", all->len);
    json_builder_end_object(b);
    return reply_finish(b);
  }
  if (g_str_equal(cmd, "list")) {
    JsonBuilder *b = reply_ok();
    json_builder_set_member_name(b, "instances");
    json_builder_begin_array(b);
    g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
    for (guint i = 0; i < all->len; i++)
      build_instance(b, s, g_ptr_array_index(all, i), false);
    json_builder_end_array(b);
    return reply_finish(b);
  }
  if (g_str_equal(cmd, "show")) {
    VgpuInstance *in = vgpu_supervisor_find(s, name);
    if (!in)
      return reply_error("no instance \"%s\" (vgpuctl list shows them)", name ? name : "");
    JsonBuilder *b = reply_ok();
    json_builder_set_member_name(b, "instance");
    build_instance(b, s, in, true);
    return reply_finish(b);
  }
  if (g_str_equal(cmd, "profiles")) {
    JsonBuilder *b = reply_ok();
    json_builder_set_member_name(b, "profiles");
    json_builder_begin_array(b);
    const VgpuConfig *cfg = vgpu_supervisor_config(s);
    for (guint i = 0; i < cfg->profiles->len; i++)
      build_profile(b, g_ptr_array_index(cfg->profiles, i));
    json_builder_end_array(b);
    return reply_finish(b);
  }
  if (g_str_equal(cmd, "create")) {
    const char *profile = json_object_get_string_member_with_default(req, "profile", NULL);
    VgpuInstance *in = vgpu_supervisor_create_instance(s, name, profile, &e);
    if (!in)
      return reply_error("%s", e->message);
    JsonBuilder *b = reply_ok();
    json_builder_set_member_name(b, "instance");
    build_instance(b, s, in, false);
    return reply_finish(b);
  }
  if (g_str_equal(cmd, "destroy")) {
    bool force = json_object_get_boolean_member_with_default(req, "force", FALSE);
    if (!vgpu_supervisor_destroy_instance(s, name, force, &e))
      return reply_error("%s", e->message);
    return reply_finish(reply_ok());
  }
  if (g_str_equal(cmd, "set")) {
    JsonNode *sn = json_object_get_member(req, "settings");
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
    if (!vgpu_supervisor_set(s, name, kv, &e))
      return reply_error("%s", e->message);
    JsonBuilder *b = reply_ok();
    json_builder_set_member_name(b, "instance");
    build_instance(b, s, vgpu_supervisor_find(s, name), false);
    return reply_finish(b);
  }
  if (g_str_equal(cmd, "reload")) {
    g_autofree char *not_added = NULL;
    if (!vgpu_supervisor_reload(s, &not_added, &e))
      return reply_error("reload failed, configuration unchanged: %s", e->message);
    JsonBuilder *b = reply_ok();
    if (not_added)
      add_str(b, "warning", not_added);
    return reply_finish(b);
  }
  return reply_error("unknown command \"%s\" (status, list, show, profiles, create, destroy, set, "
                     "reload)",
                     cmd);
}

/* ---- connections --------------------------------------------------------- */

static void conn_free(gpointer p) {
  Conn *c = p;
  if (c->watch)
    g_source_remove(c->watch);
  vgpu_close(c->fd);
  g_string_free(c->in, TRUE);
  g_free(c);
}

static bool conn_send(Conn *c, const char *line) {
  struct iovec iov[2] = {{(void *)line, strlen(line)}, {(void *)"\n", 1}};
  return vgpu_writev_all(c->fd, iov, 2) == 0;
}

static gboolean on_conn_readable(gint fd, GIOCondition cond, gpointer user) {
  Conn *c = user;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return G_SOURCE_CONTINUE;
  if (n <= 0)
    goto close;
  g_string_append_len(c->in, buf, n);
  char *nl;
  while ((nl = memchr(c->in->str, '\n', c->in->len))) {
    *nl = '\0';
    /* Replies may be large; write them blocking, then go back to polling. */
    vgpu_set_nonblock(fd, false);
    g_autofree char *reply = vgpu_control_handle(c->ctl->sup, c->in->str, c->uid);
    bool ok = conn_send(c, reply);
    vgpu_set_nonblock(fd, true);
    g_string_erase(c->in, 0, (gssize)(nl - c->in->str) + 1);
    if (!ok)
      goto close;
  }
  if (c->in->len > CONTROL_MAX_LINE) {
    g_autofree char *reply = reply_error("request longer than %d bytes", CONTROL_MAX_LINE);
    vgpu_set_nonblock(fd, false);
    conn_send(c, reply);
    vgpu_warn("control: pid %d uid %u sent an oversize request; closed", (int)c->pid,
              (unsigned)c->uid);
    goto close;
  }
  return G_SOURCE_CONTINUE;
close:
  c->watch = 0;
  g_hash_table_remove(c->ctl->conns, c);
  return G_SOURCE_REMOVE;
}

static gboolean on_control_accept(gint fd, GIOCondition cond, gpointer user) {
  VgpuControl *ctl = user;
  for (;;) {
    int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0)
      break;
    Conn *c = g_new0(Conn, 1);
    c->ctl = ctl;
    c->fd = cfd;
    c->in = g_string_new(NULL);
    c->uid = (uid_t)-1;
    vgpu_peer_cred(cfd, &c->pid, &c->uid, NULL);
    c->watch = g_unix_fd_add(cfd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_conn_readable, c);
    g_hash_table_add(ctl->conns, c);
  }
  return G_SOURCE_CONTINUE;
}

VgpuControl *vgpu_control_new(VgpuSupervisor *s, GError **error) {
  g_autofree char *path = g_build_filename(vgpu_supervisor_runtime_dir(s), "control.sock", NULL);
  int fd = vgpu_listen_unix(path, 0666, 16);
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
  c->watch = g_unix_fd_add(c->fd, G_IO_IN, on_control_accept, c);
  return c;
}

void vgpu_control_free(VgpuControl *c) {
  if (!c)
    return;
  g_source_remove(c->watch);
  g_hash_table_unref(c->conns);
  vgpu_close(c->fd);
  (void)unlink(c->path);
  g_free(c->path);
  g_free(c);
}
