#include "ctl/ctl_format.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "core/profile.h"
#include "ctl/ctl_proto.h"

/* ---- tables -------------------------------------------------------------- */

struct VgpuTable {
  guint ncols;
  GPtrArray *rows; /* GStrv each, the first is the header */
};

VgpuTable *vgpu_table_new(const char *const *headers) {
  VgpuTable *t = g_new0(VgpuTable, 1);
  t->ncols = g_strv_length((char **)headers);
  t->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  g_ptr_array_add(t->rows, g_strdupv((char **)headers));
  return t;
}

void vgpu_table_add_row(VgpuTable *t, const char *const *cells) {
  char **row = g_new0(char *, t->ncols + 1);
  for (guint i = 0; i < t->ncols; i++)
    row[i] = g_strdup(cells[i] ? cells[i] : "");
  g_ptr_array_add(t->rows, row);
}

void vgpu_table_add(VgpuTable *t, ...) {
  g_autofree const char **cells = g_new0(const char *, t->ncols + 1);
  va_list ap;
  va_start(ap, t);
  for (guint i = 0; i < t->ncols; i++) {
    cells[i] = va_arg(ap, const char *);
    if (!cells[i])
      break; /* the rest stay NULL: blank */
  }
  va_end(ap);
  vgpu_table_add_row(t, cells);
}

guint vgpu_table_rows(const VgpuTable *t) {
  return t->rows->len - 1;
}

/* Width on a terminal: characters, not bytes (names may be UTF-8). */
static gsize cell_width(const char *s) {
  return g_utf8_validate(s, -1, NULL) ? (gsize)g_utf8_strlen(s, -1) : strlen(s);
}

char *vgpu_table_render(const VgpuTable *t) {
  g_autofree gsize *w = g_new0(gsize, t->ncols);
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = g_ptr_array_index(t->rows, r);
    for (guint c = 0; c < t->ncols; c++)
      w[c] = MAX(w[c], cell_width(row[c]));
  }
  GString *out = g_string_new(NULL);
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = g_ptr_array_index(t->rows, r);
    gsize start = out->len;
    for (guint c = 0; c < t->ncols; c++) {
      g_string_append(out, row[c]);
      if (c + 1 < t->ncols)
        for (gsize pad = cell_width(row[c]); pad < w[c] + 2; pad++)
          g_string_append_c(out, ' ');
    }
    while (out->len > start && out->str[out->len - 1] == ' ')
      g_string_truncate(out, out->len - 1);
    g_string_append_c(out, '\n');
  }
  return g_string_free(out, FALSE);
}

void vgpu_table_free(VgpuTable *t) {
  if (!t)
    return;
  g_ptr_array_unref(t->rows);
  g_free(t);
}

/* ---- units --------------------------------------------------------------- */

char *vgpu_format_usage_bytes(uint64_t used, uint64_t limit) {
  g_autofree char *u = vgpu_format_size(used, false);
  if (!limit)
    return g_strdup_printf("%s / unlimited", u);
  g_autofree char *l = vgpu_format_size(limit, false);
  /* In double: used * 100 overflows for sizes near 2^64. */
  double pct = (double)used * 100.0 / (double)limit;
  if (used > 0 && pct < 1.0)
    return g_strdup_printf("%s / %s (<1%%)", u, l);
  return g_strdup_printf("%s / %s (%u%%)", u, l, (unsigned)MIN(floor(pct), 999.0));
}

char *vgpu_format_usage_count(uint64_t used, uint64_t limit) {
  if (!limit)
    return g_strdup_printf("%" G_GUINT64_FORMAT "/unlimited", used);
  return g_strdup_printf("%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT, used, limit);
}

char *vgpu_format_limit(uint64_t limit) {
  return limit ? g_strdup_printf("%" G_GUINT64_FORMAT, limit) : g_strdup("unlimited");
}

char *vgpu_format_uptime(uint64_t s) {
  if (s < 60)
    return g_strdup_printf("%us", (unsigned)s);
  if (s < 3600)
    return g_strdup_printf("%um%02us", (unsigned)(s / 60), (unsigned)(s % 60));
  if (s < 86400)
    return g_strdup_printf("%uh%02um", (unsigned)(s / 3600), (unsigned)(s % 3600 / 60));
  return g_strdup_printf("%" G_GUINT64_FORMAT "d%02uh", s / 86400, (unsigned)(s % 86400 / 3600));
}

static double rate(uint64_t before, uint64_t after, double seconds) {
  if (!(seconds > 0) || after < before)
    return -1;
  return (double)(after - before) / seconds;
}

static char *format_fps(double fps) {
  return fps < 0 ? g_strdup("-") : g_strdup_printf("%.1f", fps);
}

char *vgpu_format_rate(uint64_t before, uint64_t after, double seconds) {
  return format_fps(rate(before, after, seconds));
}

static char *num(uint64_t v) {
  return g_strdup_printf("%" G_GUINT64_FORMAT, v);
}

/* Whether o has a number member `key`. */
static bool has_number(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_VALUE(n) &&
         (json_node_get_value_type(n) == G_TYPE_INT64 ||
          json_node_get_value_type(n) == G_TYPE_DOUBLE);
}

static double get_double(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  if (!n || !JSON_NODE_HOLDS_VALUE(n))
    return 0;
  if (json_node_get_value_type(n) == G_TYPE_DOUBLE)
    return json_node_get_double(n);
  if (json_node_get_value_type(n) == G_TYPE_INT64)
    return (double)json_node_get_int(n);
  return 0;
}

/* A daemon's busy_percent member: "37.5%", or "-" when it gives none. */
static char *format_busy(JsonObject *o) {
  if (!has_number(o, "busy_percent"))
    return g_strdup("-");
  return vgpu_format_busy(get_double(o, "busy_percent"));
}

char *vgpu_format_busy(double percent) {
  if (!(percent >= 0)) /* NaN too */
    return g_strdup("-");
  if (percent > 0 && percent < 0.1)
    return g_strdup("<0.1%");
  return g_strdup_printf("%.1f%%", MIN(percent, 99999.9));
}

/* ---- views --------------------------------------------------------------- */

char *vgpu_format_gpu_memory(JsonObject *r) {
  if (!has_number(r, "gpu_memory"))
    return g_strdup("");
  g_autofree char *gm = vgpu_format_size(vgpu_ctl_get_u64(r, "gpu_memory"), false);
  g_autofree char *as = vgpu_format_size(vgpu_ctl_get_u64(r, "gpu_memory_assigned"), false);
  g_autofree char *fr = vgpu_format_size(vgpu_ctl_get_u64(r, "gpu_memory_free"), false);
  double oc = has_number(r, "overcommit") ? get_double(r, "overcommit") : 1.0;
  g_autofree char *ocs = g_strdup_printf("%g", oc);
  return g_strdup_printf("GPU memory %s, overcommit %s%s: %s assigned, %s free\n", gm, ocs,
                         strchr(ocs, '.') ? "" : ".0", as, fr);
}

/* The usage cells every instance view shares, with their limits. */
typedef struct {
  char *clients, *vram, *resources, *contexts;
} UsageCells;

static void usage_cells(JsonObject *in, UsageCells *c) {
  JsonObject *l = vgpu_ctl_get_object(in, "limits");
  JsonObject *u = vgpu_ctl_get_object(in, "usage");
  c->clients =
      vgpu_format_usage_count(vgpu_ctl_get_u64(u, "clients"), vgpu_ctl_get_u64(l, "clients"));
  c->vram = vgpu_format_usage_bytes(vgpu_ctl_get_u64(u, "vram"), vgpu_ctl_get_u64(l, "vram"));
  c->resources =
      vgpu_format_usage_count(vgpu_ctl_get_u64(u, "resources"), vgpu_ctl_get_u64(l, "resources"));
  c->contexts =
      vgpu_format_usage_count(vgpu_ctl_get_u64(u, "contexts"), vgpu_ctl_get_u64(l, "contexts"));
}

static void usage_cells_clear(UsageCells *c) {
  g_free(c->clients);
  g_free(c->vram);
  g_free(c->resources);
  g_free(c->contexts);
}

char *vgpu_format_list(JsonArray *instances) {
  static const char *const h[] = {"NAME",     "PROFILE",   "STATE",    "CLIENTS",  "VMS",
                                  "VRAM",     "RESOURCES", "CONTEXTS", "GPU BUSY", "FRAMES",
                                  "REFUSALS", "CRASHES",   NULL};
  g_autoptr(VgpuTable) t = vgpu_table_new(h);
  guint n = instances ? json_array_get_length(instances) : 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *in = vgpu_ctl_array_object(instances, i);
    if (!in)
      continue;
    JsonObject *u = vgpu_ctl_get_object(in, "usage");
    UsageCells c;
    usage_cells(in, &c);
    g_autofree char *frames = num(vgpu_ctl_get_u64(u, "frames"));
    g_autofree char *refusals = num(vgpu_ctl_get_u64(u, "refusals"));
    g_autofree char *crashes = num(vgpu_ctl_get_u64(u, "worker_crashes"));
    g_autofree char *vms = num(vgpu_ctl_get_u64(u, "vm_clients"));
    g_autofree char *busy = format_busy(in);
    vgpu_table_add(t, vgpu_ctl_get_str(in, "name", "?"), vgpu_ctl_get_str(in, "profile", "-"),
                   vgpu_ctl_get_str(in, "state", "-"), c.clients, vms, c.vram, c.resources,
                   c.contexts, busy, frames, refusals, crashes, NULL);
    usage_cells_clear(&c);
  }
  g_autofree char *s = vgpu_table_render(t);
  if (vgpu_table_rows(t) == 0)
    return g_strconcat(s, "(no instances: vgpuctl create NAME --profile P adds one)\n", NULL);
  return g_steal_pointer(&s);
}

/* Whether the daemon lists `field` of o under "not_enforced". */
static bool not_enforced(JsonObject *o, const char *field) {
  JsonArray *a = vgpu_ctl_get_array(o, "not_enforced");
  guint n = a ? json_array_get_length(a) : 0;
  for (guint i = 0; i < n; i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING &&
        g_str_equal(json_node_get_string(e), field))
      return true;
  }
  return false;
}

#define NOT_ENFORCED_NOTE "* not enforced: vgpud was built without the GPU scheduler\n"

/* llvmpipe's threads per worker: "auto" (one per CPU), N, or "-" from a
 * daemon that does not say. */
static char *render_threads(JsonObject *o) {
  if (!o || !json_object_has_member(o, "render_threads"))
    return g_strdup("-");
  uint64_t n = vgpu_ctl_get_u64(o, "render_threads");
  return n ? g_strdup_printf("%" G_GUINT64_FORMAT, n) : g_strdup("auto");
}

/* The tenant's process name as vgpud read it, "-" when it could not. */
static const char *process_name(JsonObject *x) {
  const char *proc = vgpu_ctl_get_str(x, "client_name", NULL);
  return proc && *proc ? proc : "-";
}

char *vgpu_format_over_limit(JsonObject *in) {
  GString *out = g_string_new(NULL);
  JsonArray *a = vgpu_ctl_get_array(in, "over_limit");
  guint n = a ? json_array_get_length(a) : 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *x = vgpu_ctl_array_object(a, i);
    if (!x)
      continue;
    const char *kind = vgpu_ctl_get_str(x, "kind", "?");
    bool bytes = g_str_equal(kind, "vram");
    uint64_t limit = vgpu_ctl_get_u64(x, "limit"), held = vgpu_ctl_get_u64(x, "held");
    uint64_t tenants = vgpu_ctl_get_u64(x, "tenants");
    g_autofree char *l = bytes ? vgpu_format_size(limit, false) : num(limit);
    g_autofree char *h = bytes ? vgpu_format_size(held, false) : num(held);
    g_autofree char *who = tenants == 1
                               ? g_strdup("its tenant holds")
                               : g_strdup_printf("its %" G_GUINT64_FORMAT " tenants hold", tenants);
    bool one = tenants == 1;
    g_string_append_printf(out,
                           "%s: %s limit %s is below the %s %s: %s; growth is refused until %s "
                           "less than %s\n",
                           vgpu_ctl_get_str(in, "name", "?"), kind, l, h, who,
                           one ? "it keeps what it holds" : "they keep what they hold",
                           one ? "it holds" : "they hold", l);
  }
  return g_string_free(out, FALSE);
}

char *vgpu_format_show(JsonObject *in) {
  JsonObject *u = vgpu_ctl_get_object(in, "usage");
  UsageCells c;
  usage_cells(in, &c);
  GString *out = g_string_new(NULL);
  g_string_append_printf(out, "instance   %s (%s, %s)\n", vgpu_ctl_get_str(in, "name", "?"),
                         vgpu_ctl_get_str(in, "state", "-"), vgpu_ctl_get_str(in, "origin", "-"));
  g_string_append_printf(out, "profile    %s\n", vgpu_ctl_get_str(in, "profile", "-"));
  g_string_append_printf(out, "socket     %s\n", vgpu_ctl_get_str(in, "socket", "-"));
  const char *vm_socket = vgpu_ctl_get_str(in, "vm_socket", NULL);
  if (vm_socket)
    g_string_append_printf(out, "vm socket  %s\n", vm_socket);
  /* Scheduling fields are extras beyond the contract's instance object. */
  const char *share = vgpu_ctl_get_str(in, "gpu_share", NULL);
  if (share)
    g_string_append_printf(out, "gpu share  %s (weight %" G_GUINT64_FORMAT ")%s\n", share,
                           vgpu_ctl_get_u64(in, "weight"),
                           not_enforced(in, "gpu_share") ? ", not enforced" : "");
  if (in && json_object_has_member(in, "render_threads")) {
    g_autofree char *rt = render_threads(in);
    g_string_append_printf(out, "threads    %s (llvmpipe, per worker)\n", rt);
  }
  uint64_t vms = vgpu_ctl_get_u64(u, "vm_clients");
  g_autofree char *vm_note =
      vms ? g_strdup_printf(" (%" G_GUINT64_FORMAT " VM%s)", vms, vms == 1 ? "" : "s")
          : g_strdup("");
  g_string_append_printf(out, "clients    %s%s\nVRAM       %s\nresources  %s\ncontexts   %s\n",
                         c.clients, vm_note, c.vram, c.resources, c.contexts);
  if (has_number(in, "busy_percent")) {
    g_autofree char *busy = format_busy(in);
    g_string_append_printf(out, "GPU busy   %s of the GPU over the last second\n", busy);
  }
  g_string_append_printf(out,
                         "frames     %" G_GUINT64_FORMAT "   commands %" G_GUINT64_FORMAT
                         "   refusals %" G_GUINT64_FORMAT "   worker crashes %" G_GUINT64_FORMAT
                         "\n\n",
                         vgpu_ctl_get_u64(u, "frames"), vgpu_ctl_get_u64(u, "commands"),
                         vgpu_ctl_get_u64(u, "refusals"), vgpu_ctl_get_u64(u, "worker_crashes"));
  usage_cells_clear(&c);
  g_autofree char *over = vgpu_format_over_limit(in);
  if (*over) {
    /* Before the blank line that ends the summary. */
    g_string_truncate(out, out->len - 1);
    g_string_append_printf(out, "%s\n", over);
  }

  static const char *const h[] = {"KIND",     "WORKER", "CLIENT", "UID",       "PROCESS",
                                  "GPU BUSY", "VRAM",   "PEAK",   "RESOURCES", "CONTEXTS",
                                  "FRAMES",   "UPTIME", NULL};
  g_autoptr(VgpuTable) t = vgpu_table_new(h);
  JsonArray *ts = vgpu_ctl_get_array(in, "tenants");
  guint n = ts ? json_array_get_length(ts) : 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *x = vgpu_ctl_array_object(ts, i);
    if (!x)
      continue;
    g_autofree char *w = num(vgpu_ctl_get_u64(x, "worker_pid"));
    g_autofree char *cp = num(vgpu_ctl_get_u64(x, "client_pid"));
    g_autofree char *uid = num(vgpu_ctl_get_u64(x, "client_uid"));
    g_autofree char *v = vgpu_format_size(vgpu_ctl_get_u64(x, "vram"), false);
    g_autofree char *p = vgpu_format_size(vgpu_ctl_get_u64(x, "peak_vram"), false);
    g_autofree char *rs = num(vgpu_ctl_get_u64(x, "resources"));
    g_autofree char *cx = num(vgpu_ctl_get_u64(x, "contexts"));
    g_autofree char *f = num(vgpu_ctl_get_u64(x, "frames"));
    g_autofree char *up = vgpu_format_uptime(vgpu_ctl_get_u64(x, "uptime_s"));
    g_autofree char *busy = format_busy(x);
    /* A daemon that does not say had only vtest tenants. */
    vgpu_table_add(t, vgpu_ctl_get_str(x, "kind", "vtest"), w, cp, uid, process_name(x), busy, v, p,
                   rs, cx, f, up, NULL);
  }
  uint64_t hidden = vgpu_ctl_get_u64(in, "tenants_hidden");
  if (vgpu_table_rows(t) == 0) {
    if (!hidden)
      g_string_append(out, "no tenants connected\n");
  } else {
    g_autofree char *s = vgpu_table_render(t);
    g_string_append(out, s);
  }
  if (hidden)
    g_string_append_printf(out,
                           "%" G_GUINT64_FORMAT " tenant(s) of other users (details for admins "
                           "and their own users only)\n",
                           hidden);
  return g_string_free(out, FALSE);
}

char *vgpu_format_profiles(JsonArray *profiles) {
  static const char *const h[] = {"PROFILE",  "VRAM",    "AVAILABLE",   "RESOURCES",
                                  "CONTEXTS", "CLIENTS", "SHARE",       "HEADS",
                                  "FPS CAP",  "THREADS", "DESCRIPTION", NULL};
  g_autoptr(VgpuTable) t = vgpu_table_new(h);
  guint n = profiles ? json_array_get_length(profiles) : 0;
  bool starred = false;
  for (guint i = 0; i < n; i++) {
    JsonObject *p = vgpu_ctl_array_object(profiles, i);
    if (!p)
      continue;
    /* A star on each setting the daemon says it does not enforce. */
    const char *sh = not_enforced(p, "gpu_share") ? "*" : "";
    const char *hs = not_enforced(p, "heads") ? "*" : "";
    const char *fs = not_enforced(p, "fps_cap") ? "*" : "";
    starred = starred || *sh || *hs || *fs;
    g_autofree char *v = vgpu_format_size(vgpu_ctl_get_u64(p, "vram"), true);
    /* How many more instances of it fit the GPU memory ("-": not said). */
    g_autofree char *av =
        has_number(p, "available") ? num(vgpu_ctl_get_u64(p, "available")) : g_strdup("-");
    g_autofree char *rs = vgpu_format_limit(vgpu_ctl_get_u64(p, "resources"));
    g_autofree char *cx = vgpu_format_limit(vgpu_ctl_get_u64(p, "contexts"));
    g_autofree char *cl = vgpu_format_limit(vgpu_ctl_get_u64(p, "clients"));
    const char *mode = vgpu_ctl_get_str(p, "gpu_share", "-");
    /* The weight only means something for a fixed share. */
    g_autofree char *share =
        g_str_equal(mode, "fixed")
            ? g_strdup_printf("fixed:%" G_GUINT64_FORMAT "%s", vgpu_ctl_get_u64(p, "weight"), sh)
            : g_strdup_printf("%s%s", mode, sh);
    g_autofree char *heads =
        g_strdup_printf("%" G_GUINT64_FORMAT "%s", vgpu_ctl_get_u64(p, "heads"), hs);
    uint64_t cap = vgpu_ctl_get_u64(p, "fps_cap");
    g_autofree char *fps =
        cap ? g_strdup_printf("%" G_GUINT64_FORMAT "%s", cap, fs) : g_strdup_printf("none%s", fs);
    g_autofree char *rt = render_threads(p);
    vgpu_table_add(t, vgpu_ctl_get_str(p, "name", "?"), v, av, rs, cx, cl, share, heads, fps, rt,
                   vgpu_ctl_get_str(p, "description", ""), NULL);
  }
  g_autofree char *table = vgpu_table_render(t);
  return starred ? g_strconcat(table, NOT_ENFORCED_NOTE, NULL) : g_steal_pointer(&table);
}

/* "0, 2" from [0, 2]; fallback when the array is missing or empty. */
static char *join_numbers(JsonArray *a, const char *fallback) {
  GString *out = g_string_new(NULL);
  guint n = a ? json_array_get_length(a) : 0;
  for (guint i = 0; i < n; i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_INT64)
      g_string_append_printf(out, "%s%" G_GINT64_FORMAT, out->len ? ", " : "",
                             json_node_get_int(e));
  }
  if (!out->len)
    g_string_append(out, fallback);
  return g_string_free(out, FALSE);
}

/* The renderer lines of one instance of `status`. */
static void format_renderer(GString *out, JsonObject *in) {
  JsonObject *r = vgpu_ctl_get_object(in, "renderer");
  const char *name = vgpu_ctl_get_str(r, "name", "?");
  const char *state = vgpu_ctl_get_str(r, "state", "unknown");
  g_string_append_printf(out, "\ninstance %s\n", vgpu_ctl_get_str(in, "name", "?"));
  g_autofree char *offer = NULL;
  if (g_str_equal(state, "probing")) {
    g_string_append_printf(out, "  renderer         %s\n", name);
    offer = g_strdup("probing");
  } else if (!g_str_equal(state, "ready")) {
    g_string_append_printf(out, "  renderer         %s\n", name);
    offer = g_strdup_printf("unknown (%s)", vgpu_ctl_get_str(r, "reason", "no reason given"));
  }
  if (offer) {
    g_string_append_printf(out, "  vtest protocols  %s\n", offer);
    g_string_append_printf(out, "  capsets          %s\n", offer);
    return;
  }
  g_string_append_printf(out, "  renderer         %s: %s\n", name,
                         vgpu_ctl_get_str(r, "description", ""));
  g_autofree char *versions = join_numbers(vgpu_ctl_get_array(r, "vtest_protocols"), "none");
  g_string_append_printf(out, "  vtest protocols  %s\n", versions);
  JsonArray *caps = vgpu_ctl_get_array(r, "capsets");
  guint n = caps ? json_array_get_length(caps) : 0;
  g_autoptr(GString) cs = g_string_new(NULL);
  for (guint i = 0; i < n; i++) {
    JsonObject *c = vgpu_ctl_array_object(caps, i);
    if (!c)
      continue;
    g_string_append_printf(cs, "%s%s v%" G_GUINT64_FORMAT " (%" G_GUINT64_FORMAT " B)",
                           cs->len ? ", " : "", vgpu_ctl_get_str(c, "name", "?"),
                           vgpu_ctl_get_u64(c, "version"), vgpu_ctl_get_u64(c, "size"));
  }
  g_string_append_printf(out, "  capsets          %s\n", cs->len ? cs->str : "none");
}

/* The first ready renderer object of the instances that says what it runs
 * on (every instance's workers start the same renderer). */
static JsonObject *probed_renderer(JsonArray *instances) {
  guint n = instances ? json_array_get_length(instances) : 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *r = vgpu_ctl_get_object(vgpu_ctl_array_object(instances, i), "renderer");
    if (r && g_str_equal(vgpu_ctl_get_str(r, "state", ""), "ready") &&
        (json_object_has_member(r, "gl_renderer") ||
         json_object_has_member(r, "virglrenderer_version")))
      return r;
  }
  return NULL;
}

/* The render device, Mesa and virglrenderer lines of `status`: the device
 * from the daemon (render node and driver, or none: EGL surfaceless), the
 * rest from what a renderer probe reported. */
static void format_device(GString *out, JsonObject *d, JsonArray *instances) {
  if (!d || !json_object_has_member(d, "render_node"))
    return; /* a daemon that does not say */
  JsonObject *r = probed_renderer(instances);
  const char *node = vgpu_ctl_get_str(d, "render_node", NULL);
  const char *gl = vgpu_ctl_get_str(r, "gl_renderer", NULL);
  if (node)
    g_string_append_printf(out, "render device  %s (driver %s)%s%s\n", node,
                           vgpu_ctl_get_str(d, "render_driver", "unknown"), gl ? ": " : "",
                           gl ? gl : "");
  else
    g_string_append_printf(out, "render device  no render node, EGL surfaceless: %s\n",
                           gl ? gl : "llvmpipe");
  const char *glv = vgpu_ctl_get_str(r, "gl_version", NULL);
  const char *mesa = vgpu_ctl_get_str(r, "mesa_version", NULL);
  if (mesa)
    g_string_append_printf(out, "Mesa           %s (OpenGL %s)\n", mesa, glv ? glv : "?");
  else if (glv)
    g_string_append_printf(out, "OpenGL         %s\n", glv);
  const char *vv = vgpu_ctl_get_str(r, "virglrenderer_version", NULL);
  const char *vl = vgpu_ctl_get_str(r, "virglrenderer_library", NULL);
  if (vv || vl)
    g_string_append_printf(out, "virglrenderer  %s%s%s%s\n", vv ? vv : "version unknown",
                           vl ? " (" : "", vl ? vl : "", vl ? ")" : "");
}

char *vgpu_format_status(JsonObject *d, JsonArray *instances) {
  g_autofree char *up = vgpu_format_uptime(vgpu_ctl_get_u64(d, "uptime_s"));
  GString *out = g_string_new(NULL);
  g_string_append_printf(out, "vgpud %s, pid %" G_GUINT64_FORMAT ", up %s\n",
                         vgpu_ctl_get_str(d, "version", "?"), vgpu_ctl_get_u64(d, "pid"), up);
  g_string_append_printf(out, "runtime dir    %s\n", vgpu_ctl_get_str(d, "runtime_dir", "-"));
  g_string_append_printf(out, "configuration  %s\n", vgpu_ctl_get_str(d, "config", "-"));
  g_string_append_printf(out, "renderer       %s\n", vgpu_ctl_get_str(d, "renderer", "-"));
  format_device(out, d, instances);
  if (d && json_object_has_member(d, "instances"))
    g_string_append_printf(out, "instances      %" G_GUINT64_FORMAT "\n",
                           vgpu_ctl_get_u64(d, "instances"));
  g_autofree char *gm = vgpu_format_gpu_memory(d);
  if (*gm)
    g_string_append_printf(out, "GPU memory     %s", gm + strlen("GPU memory "));
  guint n = instances ? json_array_get_length(instances) : 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *in = vgpu_ctl_array_object(instances, i);
    if (in)
      format_renderer(out, in);
  }
  return g_string_free(out, FALSE);
}

/* ---- top ----------------------------------------------------------------- */

typedef struct {
  uint64_t frames, busy_ns;
  double fps;
} TopEntry;

/* A tenant's counters on the last screen. */
typedef struct {
  uint64_t frames, busy_ns, throttled_ns;
  bool has_throttled;
} TopTenant;

struct VgpuTop {
  GHashTable *last;    /* name -> TopEntry*, the instances of the last screen */
  GHashTable *tenants; /* "NAME\nWORKER_PID" -> TopTenant*, likewise */
  gint64 last_us;
  double elapsed_s; /* between the last two screens; 0 on the first */
};

VgpuTop *vgpu_top_new(void) {
  VgpuTop *t = g_new0(VgpuTop, 1);
  t->last = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  t->tenants = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return t;
}

void vgpu_top_free(VgpuTop *t) {
  if (!t)
    return;
  g_hash_table_unref(t->last);
  g_hash_table_unref(t->tenants);
  g_free(t);
}

double vgpu_top_fps(const VgpuTop *t, const char *name) {
  TopEntry *e = g_hash_table_lookup(t->last, name);
  return e ? e->fps : -1;
}

double vgpu_top_elapsed(const VgpuTop *t) {
  return t->elapsed_s;
}

/* Nanoseconds counted per second of wall time, as a percentage; -1 as
 * rate() when there is no earlier reading. */
static double ns_percent(uint64_t before, uint64_t after, double seconds) {
  double r = rate(before, after, seconds);
  return r < 0 ? -1 : r / 1e7;
}

static void set_rate(JsonObject *o, const char *key, double v) {
  if (v < 0)
    json_object_set_null_member(o, key);
  else
    json_object_set_double_member(o, key, v);
}

static char *format_percent(double v) {
  return v < 0 ? g_strdup("-") : g_strdup_printf("%.1f%%", v);
}

/* One tenant of instance `name` (its `show` object x): rates from the
 * counters of the last screen, written into x, and its row. */
static void top_tenant(VgpuTop *t, GHashTable *next, VgpuTable *tab, const char *name,
                       uint64_t fps_cap, JsonObject *x) {
  uint64_t worker = vgpu_ctl_get_u64(x, "worker_pid");
  char *key = g_strdup_printf("%s\n%" G_GUINT64_FORMAT, name, worker);
  if (g_hash_table_contains(next, key)) {
    g_free(key);
    return;
  }
  TopTenant *e = g_new0(TopTenant, 1);
  e->frames = vgpu_ctl_get_u64(x, "frames");
  e->busy_ns = vgpu_ctl_get_u64(x, "busy_ns");
  e->has_throttled = has_number(x, "throttled_ns");
  e->throttled_ns = vgpu_ctl_get_u64(x, "throttled_ns");
  const TopTenant *prev = g_hash_table_lookup(t->tenants, key);
  double dt = t->elapsed_s;
  double fps = prev ? rate(prev->frames, e->frames, dt) : -1;
  /* Over the interval between two screens; on the first, vgpud's own
   * figure over its last second. */
  double busy = prev                            ? ns_percent(prev->busy_ns, e->busy_ns, dt)
                : has_number(x, "busy_percent") ? get_double(x, "busy_percent")
                                                : -1;
  /* One worker's busy time is wall time of its own submissions and waits:
   * more than the interval is a misstatement, shown as 100%. */
  if (busy > 100)
    busy = 100;
  double thr = prev && prev->has_throttled && e->has_throttled
                   ? ns_percent(prev->throttled_ns, e->throttled_ns, dt)
                   : -1;
  /* 0 or none: best-effort, no share is enforced. */
  uint64_t ppm = vgpu_ctl_get_u64(x, "share_ppm");
  double share = ppm ? (double)ppm / 1e4 : -1;
  g_hash_table_insert(next, key, e);
  set_rate(x, "frames_per_s", fps);
  set_rate(x, "busy_percent", busy);
  set_rate(x, "throttled_percent", thr);
  set_rate(x, "share_percent", share);

  g_autofree char *w = num(worker);
  g_autofree char *cp = num(vgpu_ctl_get_u64(x, "client_pid"));
  g_autofree char *bs = vgpu_format_busy(busy);
  g_autofree char *ss = format_percent(share);
  g_autofree char *ts = format_percent(thr);
  g_autofree char *fs = format_fps(fps);
  g_autofree char *cap = fps_cap ? num(fps_cap) : g_strdup("-");
  g_autofree char *fc = g_strdup_printf("%s/%s", fs, cap);
  g_autofree char *v = vgpu_format_size(vgpu_ctl_get_u64(x, "vram"), false);
  const char *proc = vgpu_ctl_get_str(x, "client_name", NULL);
  if (!proc || !*proc)
    proc = vgpu_ctl_get_str(x, "process", NULL);
  if (!proc)
    proc = vgpu_ctl_get_str(x, "comm", "-");
  vgpu_table_add(tab, name, vgpu_ctl_get_str(x, "kind", "vtest"), w, cp, proc, bs, ss, ts, fc, v,
                 NULL);
}

char *vgpu_top_screen(VgpuTop *t, JsonArray *instances, gint64 now_us) {
  static const char *const h[] = {"NAME",      "CLIENTS",  "VMS",      "VRAM",
                                  "RESOURCES", "CONTEXTS", "GPU BUSY", "FPS",
                                  "FRAMES",    "REFUSALS", "CRASHES",  NULL};
  static const char *const th[] = {"INSTANCE", "KIND",     "WORKER", "CLIENT",
                                   "PROCESS",  "GPU BUSY", "SHARE",  "THROTTLED",
                                   "FPS/CAP",  "VRAM",     NULL};
  g_autoptr(VgpuTable) tab = vgpu_table_new(h);
  g_autoptr(VgpuTable) ttab = vgpu_table_new(th);
  t->elapsed_s = t->last_us ? (double)(now_us - t->last_us) / G_USEC_PER_SEC : 0;
  double dt = t->elapsed_s;
  /* Fresh maps each screen: instances and tenants gone meanwhile drop out,
   * and one that comes back starts without a stale counter. */
  GHashTable *next = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  GHashTable *next_tenants = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  guint n = instances ? json_array_get_length(instances) : 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *in = vgpu_ctl_array_object(instances, i);
    const char *name = vgpu_ctl_get_str(in, "name", NULL);
    if (!name || g_hash_table_contains(next, name))
      continue;
    JsonObject *u = vgpu_ctl_get_object(in, "usage");
    TopEntry *e = g_new0(TopEntry, 1);
    e->frames = vgpu_ctl_get_u64(u, "frames");
    e->busy_ns = vgpu_ctl_get_u64(u, "busy_ns");
    TopEntry *prev = g_hash_table_lookup(t->last, name);
    e->fps = prev ? rate(prev->frames, e->frames, dt) : -1;
    /* busy_ns of the instance keeps the time of tenants gone meanwhile. */
    double busy = prev                             ? ns_percent(prev->busy_ns, e->busy_ns, dt)
                  : has_number(in, "busy_percent") ? get_double(in, "busy_percent")
                                                   : -1;
    g_hash_table_insert(next, g_strdup(name), e);
    set_rate(in, "frames_per_s", e->fps);
    set_rate(in, "busy_percent", busy);

    UsageCells c;
    usage_cells(in, &c);
    g_autofree char *fps = format_fps(e->fps);
    g_autofree char *frames = num(e->frames);
    g_autofree char *ref = num(vgpu_ctl_get_u64(u, "refusals"));
    g_autofree char *cr = num(vgpu_ctl_get_u64(u, "worker_crashes"));
    g_autofree char *vms = num(vgpu_ctl_get_u64(u, "vm_clients"));
    g_autofree char *bs = vgpu_format_busy(busy);
    vgpu_table_add(tab, name, c.clients, vms, c.vram, c.resources, c.contexts, bs, fps, frames, ref,
                   cr, NULL);
    usage_cells_clear(&c);

    JsonArray *ts = vgpu_ctl_get_array(in, "tenants");
    guint nt = ts ? json_array_get_length(ts) : 0;
    for (guint j = 0; j < nt; j++) {
      JsonObject *x = vgpu_ctl_array_object(ts, j);
      if (x)
        top_tenant(t, next_tenants, ttab, name, vgpu_ctl_get_u64(in, "fps_cap"), x);
    }
  }
  g_hash_table_unref(t->last);
  t->last = next;
  g_hash_table_unref(t->tenants);
  t->tenants = next_tenants;
  t->last_us = now_us;
  g_autofree char *s = vgpu_table_render(tab);
  if (vgpu_table_rows(ttab) == 0)
    return g_steal_pointer(&s);
  g_autofree char *ts = vgpu_table_render(ttab);
  return g_strconcat(s, "\n", ts, NULL);
}
