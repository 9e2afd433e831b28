/* vgpud configuration: GKeyFile groups [daemon], [profile NAME] and
 * [instance NAME], validated completely before anything is applied.
 * GKeyFile does not report line numbers, so errors are located by scanning
 * the text for the group header or key line. */
#include "daemon/config.h"

#include "daemon/http.h"
#include "daemon/isolation.h"
#include "core/gpumem.h"
#include "core/virgl_stream.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <unistd.h>

static const char default_config[] =
    "# vgpud built-in configuration (vgpud --print-default-config).\n"
    "# See vgpud.conf(5).\n"
    "\n"
    "[daemon]\n"
    "log-level=info\n"
    "renderer=virgl\n"
    "render-node=auto\n"
    "worker-uid-range=61184-65519\n"
    "cgroups=auto\n"
    "# The instances' vram limits together may use this much times overcommit\n"
    "# (auto: the GPU's VRAM where its driver reports it, else half of host RAM).\n"
    "gpu-memory=auto\n"
    "overcommit=1.0\n"
    "\n"
    "# gpu-share (best-effort, equal, fixed with weight) divides GPU time\n"
    "# between instances, fps-cap paces each tenant's frames.\n"
    "\n"
    "[profile tiny]\n"
    "description=Quota demonstrations and tests: 8 MiB, two clients\n"
    "vram=8M\n"
    "max-resources=256\n"
    "max-contexts=8\n"
    "max-stream-objects=4096\n"
    "max-clients=2\n"
    "host-memory=1G\n"
    "gpu-share=equal\n"
    "\n"
    "[profile small]\n"
    "description=A desktop session or a light 3D application\n"
    "vram=256M\n"
    "max-resources=4096\n"
    "max-contexts=16\n"
    "max-stream-objects=16384\n"
    "max-clients=4\n"
    "host-memory=2G\n"
    "gpu-share=equal\n"
    "\n"
    "[profile medium]\n"
    "description=3D applications and games\n"
    "vram=1G\n"
    "max-resources=16384\n"
    "max-contexts=64\n"
    "max-stream-objects=65536\n"
    "max-clients=8\n"
    "host-memory=4G\n"
    "gpu-share=equal\n"
    "\n"
    "[profile large]\n"
    "description=Heavy rendering: the largest quotas and a fixed double share of GPU time\n"
    "vram=4G\n"
    "max-resources=65536\n"
    "max-contexts=256\n"
    "max-stream-objects=262144\n"
    "max-clients=16\n"
    "host-memory=8G\n"
    "gpu-share=fixed\n"
    "weight=200\n"
    "\n"
    "[instance vgpu0]\n"
    "profile=small\n"
    "\n"
    "[instance vgpu1]\n"
    "profile=medium\n";

const char *vgpu_config_default_text(void) {
  return default_config;
}

/* ---- line numbers ------------------------------------------------------- */

/* Where the loader's last refusal stood: the group, and the key when
 * it was about one key (else NULL), so that the loader can leave that
 * out and go on to find the file's other errors. */
typedef struct {
  char *group, *key;
} FailSite;

/* A repeat GKeyFile would have merged: a group header ("group") or a key
 * in one group ("group\nkey") seen again at `line`. */
typedef struct {
  char *what;
  int line;
} Repeat;

typedef struct {
  GHashTable *lines; /* "group" or "group\nkey" -> line of first appearance */
  const char *source;
  /* GKeyFile silently merges a repeated group and keeps the last of a
   * repeated key, so repeats are found here and refused by the loader. */
  GArray *repeats; /* Repeat, in file order */
  FailSite *site;  /* set by fail_at() */
} LineMap;

static void repeat_clear(gpointer p) {
  g_free(((Repeat *)p)->what);
}

static void line_map_build(LineMap *m, const char *data, gssize len, const char *source) {
  memset(m, 0, sizeof(*m));
  m->lines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  m->repeats = g_array_new(FALSE, FALSE, sizeof(Repeat));
  g_array_set_clear_func(m->repeats, repeat_clear);
  m->source = source;
  g_autofree char *text = g_strndup(data, len < 0 ? strlen(data) : (size_t)len);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  g_autofree char *group = NULL;
  for (int i = 0; lines[i]; i++) {
    char *l = g_strstrip(lines[i]);
    if (!*l || *l == '#')
      continue;
    if (*l == '[') {
      char *end = strrchr(l, ']');
      if (end) {
        g_free(group);
        group = g_strndup(l + 1, (size_t)(end - l - 1));
        if (!g_hash_table_contains(m->lines, group)) {
          g_hash_table_insert(m->lines, g_strdup(group), GINT_TO_POINTER(i + 1));
        } else {
          Repeat r = {g_strdup(group), i + 1};
          g_array_append_val(m->repeats, r);
        }
      }
      continue;
    }
    char *eq = strchr(l, '=');
    if (eq && group) {
      g_autofree char *key = g_strstrip(g_strndup(l, (size_t)(eq - l)));
      g_autofree char *k = g_strdup_printf("%s\n%s", group, key);
      if (!g_hash_table_contains(m->lines, k)) {
        g_hash_table_insert(m->lines, g_steal_pointer(&k), GINT_TO_POINTER(i + 1));
      } else {
        Repeat r = {g_steal_pointer(&k), i + 1};
        g_array_append_val(m->repeats, r);
      }
    }
  }
}

static void line_map_clear(LineMap *m) {
  g_hash_table_unref(m->lines);
  g_array_unref(m->repeats);
}

static int line_of(const LineMap *m, const char *group, const char *key) {
  g_autofree char *k = key ? g_strdup_printf("%s\n%s", group, key) : g_strdup(group);
  return GPOINTER_TO_INT(g_hash_table_lookup(m->lines, k));
}

static bool fail_line(GError **error, const char *source, int line, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
static bool fail_line(GError **error, const char *source, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_INVALID_VALUE, "%s:%d: %s", source, line,
              msg);
  return false;
}

/* At the key's line, else the group header's. */
static bool fail_at(GError **error, const LineMap *m, const char *group, const char *key,
                    const char *fmt, ...) G_GNUC_PRINTF(5, 6);
static bool fail_at(GError **error, const LineMap *m, const char *group, const char *key,
                    const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  int line = line_of(m, group, key);
  if (!line && key)
    line = line_of(m, group, NULL);
  if (m->site) {
    g_free(m->site->group);
    g_free(m->site->key);
    m->site->group = g_strdup(group);
    m->site->key = g_strdup(key);
  }
  return fail_line(error, m->source, line, "%s", msg);
}

static bool group_known(const char *group) {
  return g_str_equal(group, "daemon") || g_str_has_prefix(group, "profile ") ||
         g_str_has_prefix(group, "instance ");
}

static const char *group_arg(const char *group);

/* One more error of a file, kept with its line for sorting. */
typedef struct {
  int line;
  int code; /* GKeyFileError */
  char *message;
} ConfigError;

static void config_error_clear(gpointer p) {
  g_free(((ConfigError *)p)->message);
}

/* Takes `e` (a "FILE:LINE: reason" error) into `errs`. */
static void collect(GArray *errs, GError *e, int line) {
  ConfigError ce = {line, e->code, g_strdup(e->message)};
  g_array_append_val(errs, ce);
  g_error_free(e);
}

/* The line a "FILE:LINE: reason" message names (0 when none). */
static int message_line(const char *msg, const char *source) {
  size_t n = strlen(source);
  if (strncmp(msg, source, n) != 0 || msg[n] != ':')
    return 0;
  return (int)g_ascii_strtoll(msg + n + 1, NULL, 10);
}

/* Repeats GKeyFile would have merged: a group header or a key in one
 * group, each one error.  Repeats of an unknown group are left to the
 * loader, which refuses the group itself. */
static void check_repeats(const LineMap *m, GArray *errs) {
  for (guint i = 0; i < m->repeats->len; i++) {
    const Repeat *r = &g_array_index(m->repeats, Repeat, i);
    GError *e = NULL;
    g_auto(GStrv) gk = g_strsplit(r->what, "\n", 2);
    const char *g = gk[0];
    if (!group_known(g))
      continue;
    if (gk[1])
      fail_line(&e, m->source, r->line, "key \"%s\" given twice in [%s] (first at line %d)", gk[1],
                g, line_of(m, g, gk[1]));
    else if (!g_str_equal(g, "daemon"))
      fail_line(&e, m->source, r->line, "%s \"%s\" defined twice (first at line %d)",
                g_str_has_prefix(g, "profile ") ? "profile" : "instance", group_arg(g),
                line_of(m, g, NULL));
    else
      fail_line(&e, m->source, r->line, "[daemon] appears twice (first at line %d)",
                line_of(m, g, NULL));
    collect(errs, e, r->line);
  }
}

/* ---- values ------------------------------------------------------------- */

G_STATIC_ASSERT(VGPU_IDLE_TIMEOUT_MAX == G_MAXINT / 1000);

/* Instance names are ledger record names. */
G_STATIC_ASSERT(VGPU_INSTANCE_NAME_MAX == VGPU_NAME_MAX);

/* Keys shared by [profile] and [instance] groups. */
static bool profile_set(VgpuProfile *p, const char *key, const char *value, GError **error) {
  uint64_t v;
  if (g_str_equal(key, "vram")) {
    if (!vgpu_parse_size(value, &v, error))
      return false;
    /* Reported as a JSON integer (int64) by the control socket. */
    if (v > (uint64_t)G_MAXINT64) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "vram must be below 8 EiB");
      return false;
    }
    p->vram = v;
    return true;
  }
  if (g_str_equal(key, "host-memory")) {
    if (!vgpu_parse_size(value, &v, error))
      return false;
    if (v < VGPU_HOST_MEMORY_MIN || v > VGPU_HOST_MEMORY_MAX) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "host-memory must be between 64M and 1T (a worker always has a cap)");
      return false;
    }
    p->host_memory = v;
    return true;
  }
  if (g_str_equal(key, "max-resources"))
    return vgpu_parse_count(value, &p->max_resources, error);
  if (g_str_equal(key, "max-contexts"))
    return vgpu_parse_count(value, &p->max_contexts, error);
  if (g_str_equal(key, "max-clients"))
    return vgpu_parse_count(value, &p->max_clients, error);
  if (g_str_equal(key, "max-clients-per-uid")) {
    if (!vgpu_parse_count(value, &p->max_clients_per_uid, error))
      return false;
    p->max_clients_per_uid_set = true;
    return true;
  }
  if (g_str_equal(key, "max-stream-objects")) {
    if (!vgpu_parse_count(value, &v, error))
      return false;
    if (v < VGPU_VIRGL_MIN_MAX_OBJECTS || v > VGPU_VIRGL_MAX_MAX_OBJECTS) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "max-stream-objects must be between %u and %u", VGPU_VIRGL_MIN_MAX_OBJECTS,
                  VGPU_VIRGL_MAX_MAX_OBJECTS);
      return false;
    }
    p->max_stream_objects = (uint32_t)v;
    return true;
  }
  if (g_str_equal(key, "max-syncs")) {
    if (!vgpu_parse_count(value, &v, error))
      return false;
    if (v < VGPU_MAX_SYNCS_MIN || v > VGPU_MAX_SYNCS_MAX) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "max-syncs must be between %u and %u", VGPU_MAX_SYNCS_MIN, VGPU_MAX_SYNCS_MAX);
      return false;
    }
    p->max_syncs = (uint32_t)v;
    return true;
  }
  if (g_str_equal(key, "gpu-share")) {
    if (vgpu_share_mode_parse(value, &p->share))
      return true;
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "\"%s\" is not a share mode (best-effort, equal, fixed)", value);
    return false;
  }
  if (g_str_equal(key, "weight") || g_str_equal(key, "fps-cap") || g_str_equal(key, "heads")) {
    if (!vgpu_parse_count(value, &v, error))
      return false;
    uint64_t lo = g_str_equal(key, "fps-cap") ? 0 : 1;
    uint64_t hi = g_str_equal(key, "weight") ? 10000 : g_str_equal(key, "heads") ? 16 : 1000;
    if (v < lo || v > hi) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "%s must be between %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT, key, lo, hi);
      return false;
    }
    if (g_str_equal(key, "weight"))
      p->weight = (uint32_t)v;
    else if (g_str_equal(key, "fps-cap"))
      p->fps_cap = (uint32_t)v;
    else
      p->heads = (uint32_t)v;
    return true;
  }
  if (g_str_equal(key, "render-threads")) {
    if (g_str_equal(value, "auto")) {
      p->render_threads = 0;
      return true;
    }
    if (!vgpu_parse_count(value, &v, error))
      return false;
    if (v > VGPU_RENDER_THREADS_MAX) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "render-threads must be auto (or 0) or between 1 and %u",
                  VGPU_RENDER_THREADS_MAX);
      return false;
    }
    p->render_threads = (uint32_t)v;
    return true;
  }
  if (g_str_equal(key, "gpu-timeout")) {
    if (!vgpu_parse_count(value, &v, error))
      return false;
    if (v > VGPU_GPU_TIMEOUT_MAX_S) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "gpu-timeout must be between 0 (none) and %u seconds", VGPU_GPU_TIMEOUT_MAX_S);
      return false;
    }
    p->gpu_timeout_s = (uint32_t)v;
    return true;
  }
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "unknown key \"%s\"", key);
  return false;
}

bool vgpu_instance_config_set(VgpuInstanceConfig *ic, const char *key, const char *value,
                              GError **error) {
  if (!key || !value) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "a setting needs a key and a value");
    return false;
  }
  if (g_str_equal(key, "socket-mode")) {
    guint64 mode;
    if (!g_ascii_string_to_unsigned(value, 8, 0, 0777, &mode, NULL)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "\"%s\" is not an octal file mode such as 0660", value);
      return false;
    }
    ic->socket_mode = (guint)mode;
  } else if (g_str_equal(key, "description") || g_str_equal(key, "profile")) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "\"%s\" cannot be set on an instance",
                key);
    return false;
  } else if (!profile_set(&ic->eff, key, value, error)) {
    return false;
  }
  if (!ic->kv)
    ic->kv = vgpu_kv_new();
  vgpu_kv_set(ic->kv, key, value);
  return true;
}

/* ---- key/value lists ---------------------------------------------------- */

GPtrArray *vgpu_kv_new(void) {
  return g_ptr_array_new_with_free_func(g_free);
}

GPtrArray *vgpu_kv_copy(const GPtrArray *kv) {
  GPtrArray *c = vgpu_kv_new();
  for (guint i = 0; kv && i < kv->len; i++)
    g_ptr_array_add(c, g_strdup(g_ptr_array_index(kv, i)));
  return c;
}

void vgpu_kv_set(GPtrArray *kv, const char *key, const char *value) {
  for (guint i = 0; i + 1 < kv->len; i += 2)
    if (g_str_equal(g_ptr_array_index(kv, i), key)) {
      g_free(kv->pdata[i + 1]);
      kv->pdata[i + 1] = g_strdup(value);
      return;
    }
  g_ptr_array_add(kv, g_strdup(key));
  g_ptr_array_add(kv, g_strdup(value));
}

const char *vgpu_kv_get(const GPtrArray *kv, const char *key) {
  for (guint i = 0; kv && i + 1 < kv->len; i += 2)
    if (g_str_equal(g_ptr_array_index(kv, i), key))
      return g_ptr_array_index(kv, i + 1);
  return NULL;
}

bool vgpu_kv_remove(GPtrArray *kv, const char *key) {
  for (guint i = 0; kv && i + 1 < kv->len; i += 2)
    if (g_str_equal(g_ptr_array_index(kv, i), key)) {
      g_ptr_array_remove_range(kv, i, 2);
      return true;
    }
  return false;
}

char *vgpu_default_state_dir(void) {
  if (geteuid() == 0)
    return g_strdup("/var/lib/vgpu");
  return g_build_filename(g_get_user_state_dir(), "vgpu", NULL);
}

static void profile_defaults(VgpuProfile *p) {
  memset(p, 0, sizeof(*p));
  p->share = VGPU_SHARE_EQUAL;
  p->weight = 100;
  p->heads = 1;
  p->host_memory = VGPU_HOST_MEMORY_DEFAULT;
  p->max_stream_objects = VGPU_VIRGL_DEFAULT_MAX_OBJECTS;
  p->max_syncs = VGPU_MAX_SYNCS_DEFAULT;
  p->gpu_timeout_s = VGPU_GPU_TIMEOUT_DEFAULT_S;
}

VgpuInstanceConfig *vgpu_instance_config_new(const char *name, const VgpuProfile *p) {
  VgpuInstanceConfig *ic = g_new0(VgpuInstanceConfig, 1);
  ic->name = g_strdup(name);
  ic->profile = g_strdup(p->name);
  ic->eff = *p;
  ic->eff.name = g_strdup(p->name);
  ic->eff.description = g_strdup(p->description);
  ic->socket_mode = 0666;
  return ic;
}

VgpuInstanceConfig *vgpu_instance_config_copy(const VgpuInstanceConfig *ic) {
  VgpuInstanceConfig *c = vgpu_instance_config_new(ic->name, &ic->eff);
  g_free(c->profile);
  c->profile = g_strdup(ic->profile);
  c->socket_mode = ic->socket_mode;
  c->kv = ic->kv ? vgpu_kv_copy(ic->kv) : NULL;
  return c;
}

void vgpu_instance_config_free(VgpuInstanceConfig *ic) {
  if (!ic)
    return;
  g_free(ic->name);
  g_free(ic->profile);
  g_free(ic->eff.name);
  g_free(ic->eff.description);
  if (ic->kv)
    g_ptr_array_unref(ic->kv);
  g_free(ic);
}

/* ---- groups ------------------------------------------------------------- */

static bool load_daemon(VgpuConfig *c, GKeyFile *kf, const LineMap *m, GError **error) {
  g_auto(GStrv) keys = g_key_file_get_keys(kf, "daemon", NULL, NULL);
  for (int i = 0; keys && keys[i]; i++) {
    const char *k = keys[i];
    g_autofree char *v = g_key_file_get_value(kf, "daemon", k, NULL);
    g_autoptr(GError) e = NULL;
    uint64_t n;
    vgpu_kv_set(c->daemon_kv, k, v);
    if (g_str_equal(k, "state-dir")) {
      if (!g_path_is_absolute(v))
        return fail_at(error, m, "daemon", k, "state-dir must be an absolute path");
      g_free(c->state_dir);
      c->state_dir = g_strdup(v);
    } else if (g_str_equal(k, "runtime-dir")) {
      if (!g_path_is_absolute(v))
        return fail_at(error, m, "daemon", k, "runtime-dir must be an absolute path");
      if (strlen(v) > VGPU_RUNTIME_DIR_MAX)
        return fail_at(error, m, "daemon", k,
                       "runtime-dir is longer than %d bytes (DIR/NAME/vhost-user.sock must fit a "
                       "socket address)",
                       VGPU_RUNTIME_DIR_MAX);
      g_free(c->runtime_dir);
      c->runtime_dir = g_strdup(v);
    } else if (g_str_equal(k, "log-level")) {
      if (!vgpu_log_level_parse(v, &c->log_level))
        return fail_at(error, m, "daemon", k,
                       "bad value \"%s\" for log-level (error, warning, info, debug)", v);
    } else if (g_str_equal(k, "renderer")) {
      if (!g_str_equal(v, "virgl") && !g_str_equal(v, "null"))
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for renderer (virgl, null)", v);
      g_free(c->renderer);
      c->renderer = g_strdup(v);
    } else if (g_str_equal(k, "render-node")) {
      if (!g_str_equal(v, "auto") && !g_path_is_absolute(v))
        return fail_at(error, m, "daemon", k, "render-node must be auto or an absolute path");
      g_free(c->render_node);
      c->render_node = g_strdup(v);
    } else if (g_str_equal(k, "worker")) {
      if (!g_path_is_absolute(v))
        return fail_at(error, m, "daemon", k, "worker must be an absolute path");
      g_free(c->worker_path);
      c->worker_path = g_strdup(v);
    } else if (g_str_equal(k, "idle-timeout")) {
      /* The worker takes an int of seconds and waits in milliseconds. */
      if (!vgpu_parse_count(v, &n, &e) || n > VGPU_IDLE_TIMEOUT_MAX)
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for idle-timeout: %s", v,
                       e ? e->message
                         : "at most " G_STRINGIFY(VGPU_IDLE_TIMEOUT_MAX) " seconds (24 days)");
      c->idle_timeout_s = (guint)n;
    } else if (g_str_equal(k, "max-submit-bytes")) {
      if (!vgpu_parse_size(v, &n, &e) || n == 0 || n > (1u << 30))
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for max-submit-bytes: %s", v,
                       e ? e->message : "must be between 1 byte and 1 GiB");
      c->max_submit_bytes = (uint32_t)n;
    } else if (g_str_equal(k, "worker-uid-range")) {
      if (!vgpu_uid_range_parse(v, &c->worker_uid_first, &c->worker_uid_last))
        return fail_at(error, m, "daemon", k,
                       "bad value \"%s\" for worker-uid-range (FIRST-LAST, e.g. 61184-65519)",
                       v);
    } else if (g_str_equal(k, "header-timeout") || g_str_equal(k, "control-timeout")) {
      /* A worker takes seconds as an int; a day is already generous. */
      if (!vgpu_parse_count(v, &n, &e) || n > 86400)
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for %s: %s", v, k,
                       e ? e->message : "at most 86400 seconds");
      if (g_str_equal(k, "header-timeout"))
        c->header_timeout_s = (guint)n;
      else
        c->control_timeout_s = (guint)n;
    } else if (g_str_equal(k, "probe-timeout")) {
      if (!vgpu_parse_count(v, &n, &e) || n == 0 || n > 600)
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for probe-timeout: %s", v,
                       e ? e->message : "must be between 1 and 600 seconds");
      c->probe_timeout_s = (guint)n;
    } else if (g_str_equal(k, "max-control-connections") ||
               g_str_equal(k, "max-control-connections-per-uid")) {
      if (!vgpu_parse_count(v, &n, &e) || n == 0 || n > 65536)
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for %s: %s", v, k,
                       e ? e->message : "must be between 1 and 65536");
      if (g_str_equal(k, "max-control-connections"))
        c->max_control_conns = (guint)n;
      else
        c->max_control_conns_per_uid = (guint)n;
    } else if (g_str_equal(k, "gpu-memory")) {
      if (g_str_equal(v, "auto")) {
        c->gpu_memory = 0;
      } else if (!vgpu_parse_size(v, &n, &e) || n == 0 || n > (uint64_t)G_MAXINT64) {
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for gpu-memory: %s", v,
                       e ? e->message : "auto or a size between 1 byte and 8 EiB");
      } else {
        c->gpu_memory = n;
      }
    } else if (g_str_equal(k, "overcommit")) {
      if (!vgpu_overcommit_parse(v, &c->overcommit_milli, &e))
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for overcommit: %s", v, e->message);
    } else if (g_str_equal(k, "vm-instance")) {
      if (!vgpu_instance_name_valid(v))
        return fail_at(error, m, "daemon", k,
                       "bad value \"%s\" for vm-instance (an instance name: 1-31 letters, digits, "
                       "- and _)",
                       v);
      g_free(c->vm_instance);
      c->vm_instance = g_strdup(v);
    } else if (g_str_equal(k, "metrics-listen")) {
      if (!vgpu_http_address_parse(v, NULL, NULL, &e))
        return fail_at(error, m, "daemon", k, "bad value for metrics-listen: %s", e->message);
      g_free(c->metrics_listen);
      c->metrics_listen = g_strdup(v);
    } else if (g_str_equal(k, "admin-group")) {
      if (!*v || strlen(v) > 64 || strpbrk(v, ":\n "))
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for admin-group (a group name)", v);
      g_free(c->admin_group);
      c->admin_group = g_strdup(v);
    } else if (g_str_equal(k, "sandbox")) {
      gboolean b = g_key_file_get_boolean(kf, "daemon", k, &e);
      if (e)
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for sandbox (true, false)", v);
      c->sandbox = b;
    } else if (g_str_equal(k, "cgroups")) {
      if (!g_str_equal(v, "auto") && !g_str_equal(v, "off"))
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for cgroups (auto, off)", v);
      c->cgroups = g_str_equal(v, "auto");
    } else if (g_str_equal(k, "shader-cache")) {
      if (!g_str_equal(v, "private") && !g_str_equal(v, "off"))
        return fail_at(error, m, "daemon", k, "bad value \"%s\" for shader-cache (private, off)",
                       v);
      c->shader_cache = g_str_equal(v, "private");
    } else {
      return fail_at(error, m, "daemon", k, "unknown key \"%s\" in [daemon]", k);
    }
  }
  return true;
}

static bool load_profile(VgpuConfig *c, GKeyFile *kf, const char *group, const char *name,
                         const LineMap *m, GError **error) {
  if (!vgpu_instance_name_valid(name))
    return fail_at(error, m, group, NULL, "invalid profile name \"%s\" (letters, digits, - and _)",
                   name);
  if (vgpu_config_find_profile(c, name))
    return fail_at(error, m, group, NULL, "profile \"%s\" defined twice", name);
  g_autoptr(VgpuProfile) p = g_new0(VgpuProfile, 1);
  profile_defaults(p);
  p->name = g_strdup(name);
  g_autoptr(GPtrArray) kv = vgpu_kv_new();
  g_auto(GStrv) keys = g_key_file_get_keys(kf, group, NULL, NULL);
  for (int i = 0; keys && keys[i]; i++) {
    g_autofree char *v = g_key_file_get_value(kf, group, keys[i], NULL);
    g_autoptr(GError) e = NULL;
    vgpu_kv_set(kv, keys[i], v);
    if (g_str_equal(keys[i], "description")) {
      g_free(p->description);
      p->description = g_strdup(v);
    } else if (!profile_set(p, keys[i], v, &e)) {
      if (g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_FOUND))
        return fail_at(error, m, group, keys[i], "unknown key \"%s\" in [%s]", keys[i], group);
      return fail_at(error, m, group, keys[i], "bad value \"%s\" for %s: %s", v, keys[i],
                     e->message);
    }
  }
  g_ptr_array_add(c->profiles, g_steal_pointer(&p));
  g_ptr_array_add(c->profile_kv, g_steal_pointer(&kv));
  return true;
}

static bool load_instance(VgpuConfig *c, GKeyFile *kf, const char *group, const char *name,
                          const LineMap *m, GError **error) {
  if (!vgpu_instance_name_valid(name))
    return fail_at(error, m, group, NULL,
                   "invalid instance name \"%s\" (1-31 letters, digits, - and _)", name);
  if (vgpu_config_find_instance(c, name))
    return fail_at(error, m, group, NULL, "instance \"%s\" defined twice", name);
  /* The ledger has a fixed number of instance records. */
  if (c->instances->len >= VGPU_LEDGER_MAX_INSTANCES)
    return fail_at(error, m, group, NULL, "too many instances (at most %d)",
                   VGPU_LEDGER_MAX_INSTANCES);
  g_autofree char *pname = g_key_file_get_value(kf, group, "profile", NULL);
  if (!pname)
    return fail_at(error, m, group, NULL, "[%s] needs a profile= key", group);
  const VgpuProfile *p = vgpu_config_find_profile(c, pname);
  if (!p)
    return fail_at(error, m, group, "profile", "unknown profile \"%s\"", pname);
  VgpuInstanceConfig *ic = vgpu_instance_config_new(name, p);
  g_ptr_array_add(c->instances, ic);
  g_auto(GStrv) keys = g_key_file_get_keys(kf, group, NULL, NULL);
  for (int i = 0; keys && keys[i]; i++) {
    if (g_str_equal(keys[i], "profile"))
      continue;
    g_autofree char *v = g_key_file_get_value(kf, group, keys[i], NULL);
    g_autoptr(GError) e = NULL;
    if (!vgpu_instance_config_set(ic, keys[i], v, &e)) {
      if (g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_FOUND) ||
          g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED))
        return fail_at(error, m, group, keys[i], "unknown key \"%s\" in [%s]", keys[i], group);
      return fail_at(error, m, group, keys[i], "bad value \"%s\" for %s: %s", v, keys[i],
                     e->message);
    }
  }
  return true;
}

/* The first line GKeyFile could not have parsed, for syntax errors: one
 * that is neither blank, a comment, a group header nor key=value, a key
 * before any group, an empty group name or key.  0 when none stands out
 * (GKeyFile also refuses text that is not UTF-8). */
static int first_bad_line(const char *data, gssize len) {
  g_autofree char *text = g_strndup(data, len < 0 ? strlen(data) : (size_t)len);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  bool in_group = false;
  for (int i = 0; lines[i]; i++) {
    if (!g_utf8_validate(lines[i], -1, NULL))
      return i + 1;
    char *l = g_strstrip(lines[i]);
    if (!*l || *l == '#')
      continue;
    if (*l == '[') {
      char *end = strrchr(l, ']');
      if (!end || end == l + 1)
        return i + 1;
      in_group = true;
      continue;
    }
    if (!in_group || !strchr(l, '=') || *l == '=')
      return i + 1;
  }
  return 0;
}

/* Blanks line `line` (1-based) of `text` in place, keeping the line count;
 * a broken group header takes the keys below it (up to the next header)
 * along, so that they are not read as keys of the group above.  false
 * when there was nothing left to blank. */
static bool blank_line(char *text, int line) {
  char *p = text;
  for (int i = 1; i < line && p; i++) {
    p = strchr(p, '\n');
    if (p)
      p++;
  }
  if (!p)
    return false;
  bool header = *(p + strspn(p, " \t")) == '[', any = false;
  for (;;) {
    for (; *p && *p != '\n'; p++)
      if (*p != ' ') {
        *p = ' ';
        any = true;
      }
    if (!header || !*p)
      break;
    p++;
    if (*(p + strspn(p, " \t")) == '[')
      break;
  }
  return any;
}

/* "profile  small" -> "small" (a pointer into the group name). */
static const char *group_arg(const char *group) {
  const char *p = strchr(group, ' ');
  while (p && *p == ' ')
    p++;
  return p ? p : "";
}

static VgpuConfig *config_new(const char *source) {
  VgpuConfig *c = g_new0(VgpuConfig, 1);
  c->source = g_strdup(source);
  c->log_level = VGPU_LOG_INFO;
  c->renderer = g_strdup("virgl");
  c->max_submit_bytes = 64u << 20;
  c->sandbox = true;
  c->shader_cache = true;
  c->cgroups = true;
  c->worker_uid_first = VGPU_WORKER_UID_FIRST;
  c->worker_uid_last = VGPU_WORKER_UID_LAST;
  c->header_timeout_s = 10;
  c->probe_timeout_s = 10;
  c->control_timeout_s = 30;
  c->max_control_conns = 64;
  c->max_control_conns_per_uid = 8;
  c->overcommit_milli = VGPU_OVERCOMMIT_DEFAULT;
  c->profiles = g_ptr_array_new_with_free_func((GDestroyNotify)vgpu_profile_free);
  c->instances = g_ptr_array_new_with_free_func((GDestroyNotify)vgpu_instance_config_free);
  c->daemon_kv = vgpu_kv_new();
  c->profile_kv = g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);
  return c;
}

/* Every group of `kf` into `c`; false with the first refusal. */
static bool load_groups(VgpuConfig *c, GKeyFile *kf, const LineMap *m, GError **error) {
  g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
  bool ok = true;
  /* Profiles first: instances refer to them wherever they stand. */
  for (int pass = 0; pass < 2 && ok; pass++) {
    for (int i = 0; groups[i] && ok; i++) {
      const char *g = groups[i];
      if (g_str_equal(g, "daemon")) {
        if (pass == 0)
          ok = load_daemon(c, kf, m, error);
      } else if (g_str_has_prefix(g, "profile ")) {
        if (pass == 0)
          ok = load_profile(c, kf, g, group_arg(g), m, error);
      } else if (g_str_has_prefix(g, "instance ")) {
        if (pass == 1)
          ok = load_instance(c, kf, g, group_arg(g), m, error);
      } else if (pass == 0) {
        ok = fail_at(error, m, g, NULL,
                     "unknown group [%s] (expected [daemon], [profile NAME], [instance NAME])", g);
      }
    }
  }
  return ok;
}

static gint by_line(gconstpointer a, gconstpointer b) {
  const ConfigError *x = a, *y = b;
  return (x->line > y->line) - (x->line < y->line);
}

/* Every error of the file, one "FILE:LINE: reason" a line, in line order:
 * syntax errors (each bad line is blanked and the text parsed again), then
 * repeats, then the loader's refusals (each refused key, or group, is left
 * out and the rest loaded again), up to VGPU_CONFIG_MAX_ERRORS. */
VgpuConfig *vgpu_config_load_data(const char *data, gssize len, const char *source,
                                  GError **error) {
  g_autoptr(GArray) errs = g_array_new(FALSE, FALSE, sizeof(ConfigError));
  g_array_set_clear_func(errs, config_error_clear);
  g_autoptr(GKeyFile) kf = g_key_file_new();
  g_autofree char *fixed = NULL; /* the text with bad lines blanked */
  bool parsed = false;
  while (errs->len < VGPU_CONFIG_MAX_ERRORS) {
    const char *text = fixed ? fixed : data;
    gssize n = fixed ? -1 : len;
    g_autoptr(GError) e = NULL;
    if (g_key_file_load_from_data(kf, text, n < 0 ? (gsize)-1 : (gsize)n, G_KEY_FILE_NONE, &e)) {
      parsed = true;
      break;
    }
    int line = first_bad_line(text, n);
    GError *pe = g_error_new(G_KEY_FILE_ERROR, G_KEY_FILE_ERROR_PARSE, "%s:%d: %s", source,
                             line ? line : 1, e->message);
    collect(errs, pe, line ? line : 1);
    if (!fixed)
      fixed = g_strndup(data, len < 0 ? strlen(data) : (size_t)len);
    if (!line || !blank_line(fixed, line))
      break;
  }
  g_autoptr(VgpuConfig) c = NULL;
  if (parsed) {
    if (!fixed)
      fixed = g_strndup(data, len < 0 ? strlen(data) : (size_t)len);
    LineMap m;
    FailSite site = {0};
    line_map_build(&m, fixed, -1, source);
    check_repeats(&m, errs);
    /* A repeated key is refused as such, not also for its value: all its
     * lines go (an instance's profile= takes its group along). */
    bool blanked = false;
    for (guint i = 0; i < m.repeats->len; i++) {
      const Repeat *r = &g_array_index(m.repeats, Repeat, i);
      g_auto(GStrv) gk = g_strsplit(r->what, "\n", 2);
      if (!gk[1])
        continue;
      if (g_str_has_prefix(gk[0], "instance ") && g_str_equal(gk[1], "profile")) {
        blank_line(fixed, line_of(&m, gk[0], NULL));
      } else {
        blank_line(fixed, line_of(&m, gk[0], gk[1]));
        blank_line(fixed, r->line);
      }
      blanked = true;
    }
    m.site = &site;
    while (errs->len < VGPU_CONFIG_MAX_ERRORS) {
      if (blanked) {
        /* What is left parses: only whole lines were blanked. */
        g_key_file_unref(kf);
        kf = g_key_file_new();
        if (!g_key_file_load_from_data(kf, fixed, (gsize)-1, G_KEY_FILE_NONE, NULL))
          break;
      }
      g_clear_pointer(&site.group, g_free);
      g_clear_pointer(&site.key, g_free);
      c = config_new(source);
      GError *e = NULL;
      if (load_groups(c, kf, &m, &e))
        break;
      g_clear_pointer(&c, vgpu_config_free);
      collect(errs, e, message_line(e->message, source));
      /* The refused key's line, else its group's (header and keys); an
       * instance's profile= cannot go alone: the group would then be
       * refused for lacking one. */
      if (!site.group)
        break;
      bool one_key = site.key && !(g_str_has_prefix(site.group, "instance ") &&
                                   g_str_equal(site.key, "profile"));
      int line = one_key ? line_of(&m, site.group, site.key) : line_of(&m, site.group, NULL);
      if (!line || !blank_line(fixed, line))
        break;
      blanked = true;
    }
    g_free(site.group);
    g_free(site.key);
    line_map_clear(&m);
  }
  if (errs->len == 0 && c)
    return g_steal_pointer(&c);
  g_array_sort(errs, by_line); /* stable: one line's errors stay in order */
  g_autoptr(GString) msg = g_string_new(NULL);
  for (guint i = 0; i < errs->len; i++)
    g_string_append_printf(msg, "%s%s", i ? "\n" : "", g_array_index(errs, ConfigError, i).message);
  if (errs->len >= VGPU_CONFIG_MAX_ERRORS)
    g_string_append_printf(msg, "\n%s: stopped after %d errors", source, VGPU_CONFIG_MAX_ERRORS);
  g_set_error_literal(error, G_KEY_FILE_ERROR, g_array_index(errs, ConfigError, 0).code, msg->str);
  return NULL;
}

VgpuConfig *vgpu_config_load_file(const char *path, GError **error) {
  g_autofree char *data = NULL;
  gsize len;
  if (!g_file_get_contents(path, &data, &len, error))
    return NULL;
  return vgpu_config_load_data(data, (gssize)len, path, error);
}

VgpuConfig *vgpu_config_load_default(GError **error) {
  return vgpu_config_load_data(default_config, -1, "<embedded>", error);
}

void vgpu_config_free(VgpuConfig *c) {
  if (!c)
    return;
  g_free(c->source);
  g_free(c->runtime_dir);
  g_free(c->state_dir);
  g_free(c->renderer);
  g_free(c->render_node);
  g_free(c->worker_path);
  g_free(c->admin_group);
  g_free(c->metrics_listen);
  g_free(c->vm_instance);
  if (c->profiles)
    g_ptr_array_unref(c->profiles);
  if (c->instances)
    g_ptr_array_unref(c->instances);
  if (c->daemon_kv)
    g_ptr_array_unref(c->daemon_kv);
  if (c->profile_kv)
    g_ptr_array_unref(c->profile_kv);
  g_free(c);
}

static void format_kv(GString *out, const GPtrArray *kv) {
  for (guint i = 0; i < vgpu_kv_len(kv); i++)
    g_string_append_printf(out, "%s=%s\n", vgpu_kv_key(kv, i), vgpu_kv_value(kv, i));
}

char *vgpu_config_format(const VgpuConfig *c, GPtrArray *instances, GPtrArray *notes,
                         const char *header) {
  GString *out = g_string_new(header);
  g_string_append(out, "[daemon]\n");
  format_kv(out, c->daemon_kv);
  for (guint i = 0; i < c->profiles->len; i++) {
    const VgpuProfile *p = g_ptr_array_index(c->profiles, i);
    g_string_append_printf(out, "\n[profile %s]\n", p->name);
    format_kv(out, g_ptr_array_index(c->profile_kv, i));
  }
  for (guint i = 0; i < instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(instances, i);
    const char *note = notes && i < notes->len ? g_ptr_array_index(notes, i) : NULL;
    g_string_append_c(out, '\n');
    if (note)
      g_string_append_printf(out, "# %s\n", note);
    g_string_append_printf(out, "[instance %s]\nprofile=%s\n", ic->name, ic->profile);
    format_kv(out, ic->kv);
  }
  return g_string_free(out, FALSE);
}

const VgpuProfile *vgpu_config_find_profile(const VgpuConfig *c, const char *name) {
  for (guint i = 0; i < c->profiles->len; i++) {
    const VgpuProfile *p = g_ptr_array_index(c->profiles, i);
    if (g_strcmp0(p->name, name) == 0)
      return p;
  }
  return NULL;
}

const VgpuInstanceConfig *vgpu_config_find_instance(const VgpuConfig *c, const char *name) {
  for (guint i = 0; i < c->instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(c->instances, i);
    if (g_strcmp0(ic->name, name) == 0)
      return ic;
  }
  return NULL;
}
