/* Renderer probes: one `vgpu-worker --probe` per renderer configuration,
 * spawned and isolated like a worker, read without blocking and parsed as
 * untrusted input (see probe.h). */
#include "daemon/probe.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/capset.h"
#include "core/worker_exit.h"
#include "util/fd.h"
#include "util/log.h"

/* ---- the answer ---------------------------------------------------------- */

/* json-glib's parser recurses once per nesting level: the depth is bounded
 * before it runs.  The answer needs 3 levels. */
#define MAX_DEPTH 8

static bool depth_ok(const char *data, size_t len) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < len; i++) {
    char c = data[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > MAX_DEPTH)
        return false;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return true;
}

static bool fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool fail(GError **error, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  /* json-glib's messages quote the input: what reaches a log or a terminal
   * is printable ASCII, one line, of bounded length. */
  for (char *p = msg; *p; p++)
    if (*p < 0x20 || *p > 0x7e)
      *p = '?';
  if (strlen(msg) > VGPU_PROBE_MAX_REASON)
    msg[VGPU_PROBE_MAX_REASON] = '\0';
  g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, msg);
  return false;
}

/* A member that is a JSON integer within [min, max]. */
static bool get_int(JsonObject *o, const char *name, gint64 min, gint64 max, uint32_t *out,
                    const char *what, GError **error) {
  JsonNode *n = json_object_get_member(o, name);
  if (!n)
    return fail(error, "%s has no \"%s\"", what, name);
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
    return fail(error, "%s: \"%s\" is not an integer", what, name);
  gint64 v = json_node_get_int(n);
  if (v < min || v > max)
    return fail(
        error, "%s: \"%s\" %" G_GINT64_FORMAT " is outside %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT,
        what, name, v, min, max);
  *out = (uint32_t)v;
  return true;
}

static const char *get_string(JsonObject *o, const char *name, GError **error) {
  JsonNode *n = json_object_get_member(o, name);
  if (!n) {
    fail(error, "no \"%s\"", name);
    return NULL;
  }
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    fail(error, "\"%s\" is not a string", name);
    return NULL;
  }
  return json_node_get_string(n);
}

/* An optional member: absent (NULL), or a string of 1..VGPU_PROBE_MAX_TEXT
 * printable ASCII characters (shown as it is, so nothing else passes). */
static bool get_optional_text(JsonObject *o, const char *name, char **out, GError **error) {
  *out = NULL;
  if (!json_object_has_member(o, name))
    return true;
  const char *v = get_string(o, name, error);
  if (!v)
    return false;
  size_t n = strlen(v);
  if (n == 0 || n > VGPU_PROBE_MAX_TEXT)
    return fail(error, "\"%s\" is not 1..%u characters", name, VGPU_PROBE_MAX_TEXT);
  for (size_t i = 0; i < n; i++)
    if (v[i] < 0x20 || v[i] > 0x7e)
      return fail(error, "\"%s\" is not printable ASCII", name);
  *out = g_strdup(v);
  return true;
}

char *vgpu_probe_mesa_version(const char *gl_version) {
  /* "4.5 (Core Profile) Mesa 22.3.6", "OpenGL ES 3.2 Mesa 25.0.7-2",
   * "4.6 (Compatibility Profile) Mesa 24.1.0-devel (git-1a2b3c)". */
  const char *m = gl_version ? strstr(gl_version, "Mesa ") : NULL;
  while (m && m != gl_version && m[-1] != ' ')
    m = strstr(m + 1, "Mesa ");
  if (!m)
    return NULL;
  m += strlen("Mesa ");
  size_t n = strspn(m, "0123456789.");
  if (n == 0 || !g_ascii_isdigit(m[0]))
    return NULL;
  n += strspn(m + n, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_+~");
  return g_strndup(m, MIN(n, 64));
}

static JsonArray *get_array(JsonObject *o, const char *name, GError **error) {
  JsonNode *n = json_object_get_member(o, name);
  if (!n) {
    fail(error, "no \"%s\"", name);
    return NULL;
  }
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    fail(error, "\"%s\" is not an array", name);
    return NULL;
  }
  return json_node_get_array(n);
}

static bool parse_object(JsonObject *root, VgpuProbeAnswer *a, GError **error) {
  const char *renderer = get_string(root, "renderer", error);
  if (!renderer)
    return false;
  size_t rl = strlen(renderer);
  if (rl == 0 || rl > VGPU_PROBE_MAX_NAME ||
      strspn(renderer, "abcdefghijklmnopqrstuvwxyz0123456789_-") != rl)
    return fail(error, "\"renderer\" is not a name (1-%u of a-z, 0-9, _ and -)",
                VGPU_PROBE_MAX_NAME);
  const char *desc = get_string(root, "description", error);
  if (!desc)
    return false;
  /* Shown as it is, so only printable ASCII is kept: anything else (a
   * driver's UTF-8, an escape sequence) reads as '?'. */
  if (!g_utf8_validate(desc, -1, NULL) || g_utf8_strlen(desc, -1) > VGPU_PROBE_MAX_DESCRIPTION)
    return fail(error, "\"description\" is over %u characters", VGPU_PROBE_MAX_DESCRIPTION);
  GString *d = g_string_new(NULL);
  for (const char *p = desc; *p; p = g_utf8_next_char(p))
    g_string_append_c(d, *p >= 0x20 && *p < 0x7f ? *p : '?');

  JsonArray *vs = get_array(root, "vtest_protocols", error);
  JsonArray *cs = vs ? get_array(root, "capsets", error) : NULL;
  if (!cs) {
    g_string_free(d, TRUE);
    return false;
  }
  a->renderer = g_strdup(renderer);
  a->description = g_string_free(d, FALSE);
  /* Optional: what the renderer runs on. */
  struct {
    const char *key;
    char **out;
  } texts[] = {{"gl_renderer", &a->gl_renderer},
               {"gl_version", &a->gl_version},
               {"virglrenderer_version", &a->virgl_version},
               {"virglrenderer_library", &a->virgl_library}};
  for (size_t i = 0; i < G_N_ELEMENTS(texts); i++)
    if (!get_optional_text(root, texts[i].key, texts[i].out, error))
      return false;
  if (a->virgl_library && a->virgl_library[0] != '/')
    return fail(error, "\"virglrenderer_library\" is not an absolute path");
  if (a->gl_version)
    a->mesa_version = vgpu_probe_mesa_version(a->gl_version);

  guint nv = json_array_get_length(vs);
  if (nv == 0 || nv > VGPU_PROBE_MAX_VERSIONS)
    return fail(error, "\"vtest_protocols\" has %u entries (1..%u)", nv, VGPU_PROBE_MAX_VERSIONS);
  for (guint i = 0; i < nv; i++) {
    JsonNode *n = json_array_get_element(vs, i);
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
      return fail(error, "\"vtest_protocols\" entry %u is not an integer", i);
    gint64 v = json_node_get_int(n);
    if (v < 0 || v > 255 || (i && v <= a->versions[i - 1]))
      return fail(error,
                  "\"vtest_protocols\" entry %u (%" G_GINT64_FORMAT
                  ") is not a version above the one before",
                  i, v);
    a->versions[i] = (uint32_t)v;
    a->n_versions = i + 1;
  }

  guint nc = json_array_get_length(cs);
  if (nc > VGPU_PROBE_MAX_CAPSETS)
    return fail(error, "\"capsets\" has %u entries (at most %u)", nc, VGPU_PROBE_MAX_CAPSETS);
  for (guint i = 0; i < nc; i++) {
    JsonNode *n = json_array_get_element(cs, i);
    char what[32];
    g_snprintf(what, sizeof(what), "capset %u", i);
    if (!JSON_NODE_HOLDS_OBJECT(n))
      return fail(error, "%s is not an object", what);
    JsonObject *o = json_node_get_object(n);
    VgpuProbeCapset c;
    if (!get_int(o, "id", 1, VGPU_PROBE_MAX_CAPSET_ID, &c.id, what, error) ||
        !get_int(o, "version", 0, G_MAXUINT32, &c.version, what, error) ||
        !get_int(o, "size", 1, VGPU_PROBE_MAX_CAPSET_SIZE, &c.size, what, error))
      return false;
    if (i && c.id <= a->capsets[i - 1].id)
      return fail(error, "%s: id %u is not above the one before", what, c.id);
    a->capsets[i] = c;
    a->n_capsets = i + 1;
  }
  return true;
}

bool vgpu_probe_parse(const char *data, size_t len, VgpuProbeAnswer *out, GError **error) {
  memset(out, 0, sizeof(*out));
  if (len > VGPU_PROBE_MAX_ANSWER)
    return fail(error, "answer of %zu bytes, over the %u-byte limit", len, VGPU_PROBE_MAX_ANSWER);
  if (len == 0)
    return fail(error, "empty answer");
  if (memchr(data, 0, len) || !g_utf8_validate(data, (gssize)len, NULL))
    return fail(error, "answer is not UTF-8 text");
  if (!depth_ok(data, len))
    return fail(error, "answer nests deeper than %d levels", MAX_DEPTH);
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  g_autoptr(GError) e = NULL;
  if (!json_parser_load_from_data(parser, data, (gssize)len, &e))
    return fail(error, "not JSON: %s", e->message);
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    return fail(error, "answer is not a JSON object");
  if (!parse_object(json_node_get_object(root), out, error)) {
    vgpu_probe_answer_clear(out);
    return false;
  }
  return true;
}

void vgpu_probe_answer_clear(VgpuProbeAnswer *a) {
  g_free(a->renderer);
  g_free(a->description);
  g_free(a->gl_renderer);
  g_free(a->gl_version);
  g_free(a->mesa_version);
  g_free(a->virgl_version);
  g_free(a->virgl_library);
  memset(a, 0, sizeof(*a));
}

/* ---- the process --------------------------------------------------------- */

struct VgpuProbe {
  char *label;
  guint timeout_s;
  VgpuIsolation *isolation;
  VgpuWorkerIdentity id;
  VgpuProbeState state;
  char *reason;
  VgpuProbeAnswer answer;
  GPid pid; /* 0: not started or reaped */
  int out_fd;
  GString *out;
  bool overflow;
  guint out_watch, child_watch, timer;
};

static void set_unknown(VgpuProbe *p, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void set_unknown(VgpuProbe *p, const char *fmt, ...) {
  if (p->state != VGPU_PROBE_PROBING)
    return; /* the first reason stands */
  va_list ap;
  va_start(ap, fmt);
  p->reason = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  p->state = VGPU_PROBE_UNKNOWN;
  vgpu_warn("renderer probe (%s): %s; vgpuctl status shows it as unknown", p->label, p->reason);
}

/* Reads what is there without blocking; false at EOF, on an error, or once
 * the answer is over its limit. */
static bool read_some(VgpuProbe *p) {
  char buf[4096];
  for (;;) {
    ssize_t n = read(p->out_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return errno == EAGAIN;
    if (n == 0)
      return false;
    if (p->out->len + (size_t)n > VGPU_PROBE_MAX_ANSWER) {
      p->overflow = true;
      return false;
    }
    g_string_append_len(p->out, buf, n);
  }
}

static void close_output(VgpuProbe *p) {
  if (p->out_watch) {
    g_source_remove(p->out_watch);
    p->out_watch = 0;
  }
  if (p->out_fd >= 0) {
    vgpu_close(p->out_fd);
    p->out_fd = -1;
  }
}

static void kill_group(VgpuProbe *p) {
  /* Its own process group (child setup), so the group holds whatever it forked. */
  if (p->pid > 0) {
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
  }
}

void vgpu_probe_kill(VgpuProbe *p, const char *why) {
  if (!p->pid)
    return;
  if (why)
    set_unknown(p, "%s", why);
  kill_group(p);
}

static gboolean on_output(gint fd, GIOCondition cond, gpointer user) {
  VgpuProbe *p = user;
  (void)fd;
  (void)cond;
  if (read_some(p))
    return G_SOURCE_CONTINUE;
  p->out_watch = 0;
  if (p->overflow) {
    set_unknown(p, "answer over %u bytes: killed", VGPU_PROBE_MAX_ANSWER);
    kill_group(p);
  }
  return G_SOURCE_REMOVE;
}

static gboolean on_timeout(gpointer user) {
  VgpuProbe *p = user;
  p->timer = 0;
  g_autofree char *why = g_strdup_printf("no answer within %u s: killed", p->timeout_s);
  vgpu_probe_kill(p, why);
  return G_SOURCE_REMOVE;
}

static void describe_exit(int status, char *buf, size_t len) {
  if (WIFEXITED(status)) {
    const char *name = vgpu_worker_exit_name(WEXITSTATUS(status));
    g_snprintf(buf, len, "%s (exit %d)", name ? name : "exit status", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    const char *sig = sigabbrev_np(WTERMSIG(status));
    g_snprintf(buf, len, "killed by SIG%s", sig ? sig : "?");
  } else {
    g_snprintf(buf, len, "status 0x%x", status);
  }
}

static void on_probe_exit(GPid pid, gint status, gpointer user) {
  VgpuProbe *p = user;
  p->child_watch = 0;
  if (p->timer) {
    g_source_remove(p->timer);
    p->timer = 0;
  }
  /* What it wrote before it ended is in the pipe: take it, never wait for
   * an EOF that something it left behind could hold back. */
  if (p->out_fd >= 0 && p->out_watch && !read_some(p) && p->overflow)
    set_unknown(p, "answer over %u bytes", VGPU_PROBE_MAX_ANSWER);
  close_output(p);
  g_spawn_close_pid(pid);
  p->pid = 0;
  vgpu_isolation_worker_done(p->isolation, &p->id);
  if (p->state != VGPU_PROBE_PROBING)
    return;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char why[96];
    describe_exit(status, why, sizeof(why));
    set_unknown(p, "the probe failed: %s; the log has its reason", why);
    return;
  }
  g_autoptr(GError) e = NULL;
  if (!vgpu_probe_parse(p->out->str, p->out->len, &p->answer, &e)) {
    set_unknown(p, "malformed answer: %s", e->message);
    return;
  }
  p->state = VGPU_PROBE_READY;
  g_autoptr(GString) caps = g_string_new(NULL);
  for (guint i = 0; i < p->answer.n_capsets; i++) {
    const VgpuProbeCapset *c = &p->answer.capsets[i];
    const char *name = vgpu_capset_name(c->id);
    if (name)
      g_string_append_printf(caps, "%s%s v%u (%u B)", i ? ", " : "", name, c->version, c->size);
    else
      g_string_append_printf(caps, "%scapset %u v%u (%u B)", i ? ", " : "", c->id, c->version,
                             c->size);
  }
  g_autoptr(GString) vers = g_string_new(NULL);
  for (guint i = 0; i < p->answer.n_versions; i++)
    g_string_append_printf(vers, "%s%u", i ? ", " : "", p->answer.versions[i]);
  vgpu_info("renderer probe (%s): %s, %s; vtest protocols %s; capsets %s; GL renderer %s, "
            "version %s; virglrenderer %s (%s)",
            p->label, p->answer.renderer, p->answer.description, vers->str,
            caps->len ? caps->str : "none", p->answer.gl_renderer ? p->answer.gl_renderer : "-",
            p->answer.gl_version ? p->answer.gl_version : "-",
            p->answer.virgl_version ? p->answer.virgl_version : "-",
            p->answer.virgl_library ? p->answer.virgl_library : "-");
}

VgpuProbe *vgpu_probe_start(const VgpuProbeSpawn *sp) {
  VgpuProbe *p = g_new0(VgpuProbe, 1);
  p->label = g_strdup(sp->label);
  p->timeout_s = MAX(sp->timeout_s, 1u);
  p->isolation = sp->isolation;
  p->out_fd = -1;
  p->out = g_string_new(NULL);
  p->id = (VgpuWorkerIdentity){.cgroup_procs_fd = -1};
  g_autoptr(GError) e = NULL;
  if (!vgpu_isolation_worker_prepare(sp->isolation, VGPU_PROBE_HOST_MEMORY, NULL, &p->id, &e)) {
    set_unknown(p, "cannot start the probe: %s", e->message);
    return p;
  }
  GPid pid;
  int out_fd = -1;
  bool spawned = g_spawn_async_with_pipes_and_fds(
      "/", sp->argv, sp->envp, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL,
      vgpu_isolation_child_setup, &p->id, -1, -1, -1, NULL, NULL, 0, &pid, NULL, &out_fd, NULL, &e);
  vgpu_isolation_worker_spawned(&p->id);
  if (!spawned) {
    vgpu_isolation_worker_done(sp->isolation, &p->id);
    set_unknown(p, "cannot start the probe: %s", e->message);
    return p;
  }
  p->pid = pid;
  p->out_fd = out_fd;
  vgpu_set_nonblock(out_fd, true);
  p->out_watch = g_unix_fd_add(out_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_output, p);
  p->child_watch = g_child_watch_add(pid, on_probe_exit, p);
  p->timer = g_timeout_add_seconds(p->timeout_s, on_timeout, p);
  vgpu_debug("renderer probe (%s): worker %d started", p->label, (int)pid);
  return p;
}

VgpuProbeState vgpu_probe_state(const VgpuProbe *p) {
  return p->state;
}
const char *vgpu_probe_reason(const VgpuProbe *p) {
  return p->state == VGPU_PROBE_UNKNOWN ? p->reason : NULL;
}
const VgpuProbeAnswer *vgpu_probe_answer(const VgpuProbe *p) {
  return p->state == VGPU_PROBE_READY ? &p->answer : NULL;
}
bool vgpu_probe_alive(const VgpuProbe *p) {
  return p->pid != 0;
}

void vgpu_probe_free(VgpuProbe *p) {
  if (!p)
    return;
  if (p->pid) {
    kill_group(p);
    /* Reaped now if it is already gone; otherwise left (vgpud is stopping). */
    if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
      vgpu_isolation_worker_done(p->isolation, &p->id);
    else
      g_free(p->id.cgroup_dir);
  }
  if (p->child_watch)
    g_source_remove(p->child_watch);
  if (p->timer)
    g_source_remove(p->timer);
  close_output(p);
  vgpu_probe_answer_clear(&p->answer);
  g_string_free(p->out, TRUE);
  g_free(p->reason);
  g_free(p->label);
  g_free(p);
}
