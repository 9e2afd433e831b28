/* vgpuctl: the operator's view of vgpud (see vgpuctl(1)). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/profile.h"
#include "ctl/ctl_format.h"
#include "ctl/ctl_proto.h"
#include "daemon/config.h"

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

typedef struct {
  char *runtime_dir;
  bool json;
  bool force;
  char *profile;
  double interval;
  int iterations;
} Opts;

static const char usage_text[] =
    "Usage: vgpuctl [--runtime-dir DIR] [--json] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  list                       instances with usage and limits\n"
    "  show NAME                  one instance and its tenants\n"
    "  profiles                   the profiles instances are cut from\n"
    "  status                     the daemon\n"
    "  top [--interval S] [--iterations N]\n"
    "                             refreshing view with frame rates\n"
    "  create NAME --profile P    new instance (admin)\n"
    "  destroy NAME [--force]     remove an instance; --force ends its tenants (admin)\n"
    "  set NAME KEY=VALUE...      resize at run time: vram, max-resources, max-contexts,\n"
    "                             max-clients, gpu-share, weight, fps-cap, heads (admin)\n"
    "  reload                     re-read vgpud's configuration file (admin)\n"
    "\n"
    "Options:\n"
    "  -r, --runtime-dir DIR      vgpud's runtime directory (default: $VGPU_RUNTIME_DIR,\n"
    "                             then /run/vgpu for root, $XDG_RUNTIME_DIR/vgpu)\n"
    "  --json                     machine-readable output (read commands)\n"
    "  -h, --help                 this text;  -V, --version\n"
    "\n"
    "Exit status: 0 ok, 1 vgpud refused or failed, 2 usage error, 3 vgpud unreachable.\n";

static int fail(int code, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("vgpuctl: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return code;
}

static int error_code(const GError *e) {
  return g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT) ? EXIT_UNREACHABLE
                                                                     : EXIT_REFUSED;
}

static JsonObject *call(const Opts *o, JsonObject *req, int *rc) {
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuCtl) c = vgpu_ctl_connect(o->runtime_dir, &e);
  JsonObject *reply = c ? vgpu_ctl_call(c, req, 10000, &e) : NULL;
  json_object_unref(req);
  if (!reply)
    *rc = fail(error_code(e), "%s", e->message);
  return reply;
}

static void print_json(JsonObject *o) {
  g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, o);
  g_autoptr(JsonGenerator) g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  json_generator_set_root(g, n);
  g_autofree char *s = json_generator_to_data(g, NULL);
  puts(s);
}

/* A read command: returns the reply for the human printer, or NULL when
 * there is nothing left to do (*rc says how it went: an error was reported,
 * or --json already printed the reply). */
static JsonObject *read_command(const Opts *o, const char *cmd, const char *name, int *rc) {
  *rc = EXIT_OK;
  JsonObject *r = call(o, vgpu_ctl_request(cmd, name), rc);
  if (r && o->json) {
    print_json(r);
    json_object_unref(r);
    return NULL;
  }
  return r;
}

static uint64_t u64(JsonObject *o, const char *k) {
  return o && json_object_has_member(o, k) ? (uint64_t)json_object_get_int_member(o, k) : 0;
}

static char *num(uint64_t v) { return g_strdup_printf("%" G_GUINT64_FORMAT, v); }

static const char *const list_headers[] = {"NAME",     "PROFILE", "STATE",   "CLIENTS",
                                           "VRAM",     "RESOURCES", "CONTEXTS", "FRAMES",
                                           "REFUSALS", "CRASHES", NULL};

static void add_instance_row(VgpuTable *t, JsonObject *in) {
  JsonObject *l = json_object_get_object_member(in, "limits");
  JsonObject *u = json_object_get_object_member(in, "usage");
  g_autofree char *clients = vgpu_format_usage_count(u64(u, "clients"), u64(l, "clients"));
  g_autofree char *vram = vgpu_format_usage_bytes(u64(u, "vram"), u64(l, "vram"));
  g_autofree char *res = vgpu_format_usage_count(u64(u, "resources"), u64(l, "resources"));
  g_autofree char *ctx = vgpu_format_usage_count(u64(u, "contexts"), u64(l, "contexts"));
  g_autofree char *frames = num(u64(u, "frames"));
  g_autofree char *refusals = num(u64(u, "refusals"));
  g_autofree char *crashes = num(u64(u, "worker_crashes"));
  vgpu_table_add(t, json_object_get_string_member(in, "name"),
                 json_object_get_string_member(in, "profile"),
                 json_object_get_string_member(in, "state"), clients, vram, res, ctx, frames,
                 refusals, crashes, NULL);
}

static int cmd_list(const Opts *o) {
  int rc;
  g_autoptr(JsonObject) r = read_command(o, "list", NULL, &rc);
  if (!r)
    return rc;
  JsonArray *a = json_object_get_array_member(r, "instances");
  g_autoptr(VgpuTable) t = vgpu_table_new(list_headers);
  for (guint i = 0; i < json_array_get_length(a); i++)
    add_instance_row(t, json_array_get_object_element(a, i));
  g_autofree char *s = vgpu_table_render(t);
  fputs(s, stdout);
  if (json_array_get_length(a) == 0)
    puts("(no instances: vgpuctl create NAME --profile P adds one)");
  return EXIT_OK;
}

static int cmd_show(const Opts *o, const char *name) {
  int rc;
  g_autoptr(JsonObject) r = read_command(o, "show", name, &rc);
  if (!r)
    return rc;
  JsonObject *in = json_object_get_object_member(r, "instance");
  JsonObject *l = json_object_get_object_member(in, "limits");
  JsonObject *u = json_object_get_object_member(in, "usage");
  g_autofree char *vram = vgpu_format_usage_bytes(u64(u, "vram"), u64(l, "vram"));
  g_autofree char *res = vgpu_format_usage_count(u64(u, "resources"), u64(l, "resources"));
  g_autofree char *ctx = vgpu_format_usage_count(u64(u, "contexts"), u64(l, "contexts"));
  g_autofree char *cl = vgpu_format_usage_count(u64(u, "clients"), u64(l, "clients"));
  printf("instance   %s (%s, %s)\n", json_object_get_string_member(in, "name"),
         json_object_get_string_member(in, "state"), json_object_get_string_member(in, "origin"));
  printf("profile    %s\n", json_object_get_string_member(in, "profile"));
  printf("socket     %s\n", json_object_get_string_member(in, "socket"));
  printf("gpu share  %s (weight %" G_GUINT64_FORMAT ")\n",
         json_object_get_string_member(in, "gpu_share"), u64(in, "weight"));
  printf("clients    %s\nVRAM       %s\nresources  %s\ncontexts   %s\n", cl, vram, res, ctx);
  printf("frames     %" G_GUINT64_FORMAT "   commands %" G_GUINT64_FORMAT
         "   refusals %" G_GUINT64_FORMAT "   worker crashes %" G_GUINT64_FORMAT "\n\n",
         u64(u, "frames"), u64(u, "commands"), u64(u, "refusals"), u64(u, "worker_crashes"));
  static const char *const h[] = {"WORKER", "CLIENT", "UID",    "VRAM",   "PEAK",
                                  "RESOURCES", "CONTEXTS", "FRAMES", "UPTIME", NULL};
  g_autoptr(VgpuTable) t = vgpu_table_new(h);
  JsonArray *ts = json_object_get_array_member(in, "tenants");
  for (guint i = 0; ts && i < json_array_get_length(ts); i++) {
    JsonObject *x = json_array_get_object_element(ts, i);
    g_autofree char *w = num(u64(x, "worker_pid")), *c = num(u64(x, "client_pid"));
    g_autofree char *uid = num(u64(x, "client_uid"));
    g_autofree char *v = vgpu_format_size(u64(x, "vram"), false);
    g_autofree char *p = vgpu_format_size(u64(x, "peak_vram"), false);
    g_autofree char *rs = num(u64(x, "resources")), *cx = num(u64(x, "contexts"));
    g_autofree char *f = num(u64(x, "frames"));
    g_autofree char *up = vgpu_format_uptime(u64(x, "uptime_s"));
    vgpu_table_add(t, w, c, uid, v, p, rs, cx, f, up, NULL);
  }
  if (!ts || json_array_get_length(ts) == 0) {
    puts("no tenants connected");
    return EXIT_OK;
  }
  g_autofree char *s = vgpu_table_render(t);
  fputs(s, stdout);
  return EXIT_OK;
}

static int cmd_profiles(const Opts *o) {
  int rc;
  g_autoptr(JsonObject) r = read_command(o, "profiles", NULL, &rc);
  if (!r)
    return rc;
  static const char *const h[] = {"PROFILE", "VRAM",  "RESOURCES", "CONTEXTS",   "CLIENTS",
                                  "SHARE",   "HEADS", "FPS CAP",   "DESCRIPTION", NULL};
  g_autoptr(VgpuTable) t = vgpu_table_new(h);
  JsonArray *a = json_object_get_array_member(r, "profiles");
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonObject *p = json_array_get_object_element(a, i);
    g_autofree char *v = vgpu_format_size(u64(p, "vram"), true);
    g_autofree char *rs = u64(p, "resources") ? num(u64(p, "resources")) : g_strdup("unlimited");
    g_autofree char *cx = u64(p, "contexts") ? num(u64(p, "contexts")) : g_strdup("unlimited");
    g_autofree char *cl = u64(p, "clients") ? num(u64(p, "clients")) : g_strdup("unlimited");
    const char *mode = json_object_get_string_member(p, "gpu_share");
    g_autofree char *share = g_str_equal(mode, "fixed")
                                 ? g_strdup_printf("fixed:%" G_GUINT64_FORMAT, u64(p, "weight"))
                                 : g_strdup(mode);
    g_autofree char *heads = num(u64(p, "heads"));
    g_autofree char *fps = u64(p, "fps_cap") ? num(u64(p, "fps_cap")) : g_strdup("none");
    vgpu_table_add(t, json_object_get_string_member(p, "name"), v, rs, cx, cl, share, heads, fps,
                   json_object_get_string_member(p, "description"), NULL);
  }
  g_autofree char *s = vgpu_table_render(t);
  fputs(s, stdout);
  return EXIT_OK;
}

static int cmd_status(const Opts *o) {
  int rc;
  g_autoptr(JsonObject) r = read_command(o, "status", NULL, &rc);
  if (!r)
    return rc;
  JsonObject *d = json_object_get_object_member(r, "daemon");
  g_autofree char *up = vgpu_format_uptime(u64(d, "uptime_s"));
  printf("vgpud %s, pid %" G_GUINT64_FORMAT ", up %s\n", json_object_get_string_member(d, "version"),
         u64(d, "pid"), up);
  printf("runtime dir    %s\nconfiguration  %s\nrenderer       %s\ninstances      %" G_GUINT64_FORMAT
         "\n",
         json_object_get_string_member(d, "runtime_dir"), json_object_get_string_member(d, "config"),
         json_object_get_string_member(d, "renderer"), u64(d, "instances"));
  return EXIT_OK;
}

static int cmd_top(const Opts *o) {
  g_autoptr(GHashTable) last = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  gint64 last_t = 0;
  bool tty = isatty(STDOUT_FILENO);
  for (int i = 0; o->iterations <= 0 || i < o->iterations; i++) {
    if (i)
      g_usleep((gulong)(o->interval * G_USEC_PER_SEC));
    int rc = EXIT_OK;
    g_autoptr(JsonObject) r = call(o, vgpu_ctl_request("list", NULL), &rc);
    if (!r)
      return rc;
    gint64 now = g_get_monotonic_time();
    double dt = last_t ? (double)(now - last_t) / G_USEC_PER_SEC : 0;
    static const char *const h[] = {"NAME", "CLIENTS", "VRAM", "RESOURCES", "CONTEXTS",
                                    "FPS",  "REFUSALS", "CRASHES", NULL};
    g_autoptr(VgpuTable) t = vgpu_table_new(h);
    JsonArray *a = json_object_get_array_member(r, "instances");
    for (guint k = 0; k < json_array_get_length(a); k++) {
      JsonObject *in = json_array_get_object_element(a, k);
      JsonObject *l = json_object_get_object_member(in, "limits");
      JsonObject *u = json_object_get_object_member(in, "usage");
      const char *name = json_object_get_string_member(in, "name");
      uint64_t frames = u64(u, "frames");
      gpointer prev;
      g_autofree char *fps = NULL;
      if (dt > 0 && g_hash_table_lookup_extended(last, name, NULL, &prev) &&
          frames >= GPOINTER_TO_SIZE(prev))
        fps = g_strdup_printf("%.0f", (double)(frames - GPOINTER_TO_SIZE(prev)) / dt);
      else
        fps = g_strdup("-");
      g_hash_table_insert(last, g_strdup(name), GSIZE_TO_POINTER(frames));
      g_autofree char *cl = vgpu_format_usage_count(u64(u, "clients"), u64(l, "clients"));
      g_autofree char *vram = vgpu_format_usage_bytes(u64(u, "vram"), u64(l, "vram"));
      g_autofree char *res = vgpu_format_usage_count(u64(u, "resources"), u64(l, "resources"));
      g_autofree char *ctx = vgpu_format_usage_count(u64(u, "contexts"), u64(l, "contexts"));
      g_autofree char *ref = num(u64(u, "refusals")), *cr = num(u64(u, "worker_crashes"));
      vgpu_table_add(t, name, cl, vram, res, ctx, fps, ref, cr, NULL);
    }
    last_t = now;
    g_autofree char *s = vgpu_table_render(t);
    if (tty)
      fputs("\033[H\033[2J", stdout);
    g_autoptr(GDateTime) dtm = g_date_time_new_now_local();
    g_autofree char *ts = g_date_time_format(dtm, "%H:%M:%S");
    printf("vgpuctl top  %s  (every %.1fs, Ctrl-C quits)\n%s\n", ts, o->interval, s);
    fflush(stdout);
  }
  return EXIT_OK;
}

static int cmd_admin(const Opts *o, JsonObject *req, const char *done) {
  int rc = EXIT_OK;
  g_autoptr(JsonObject) r = call(o, req, &rc);
  if (!r)
    return rc;
  if (o->json)
    print_json(r);
  else if (done)
    puts(done);
  return EXIT_OK;
}

int main(int argc, char **argv) {
  Opts o = {.interval = 1.0};
  /* A daemon that goes away mid-request is an error to report, not a
   * reason to die silently. */
  signal(SIGPIPE, SIG_IGN);
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    if (g_str_equal(a, "-h") || g_str_equal(a, "--help")) {
      fputs(usage_text, stdout);
      return EXIT_OK;
    } else if (g_str_equal(a, "-V") || g_str_equal(a, "--version")) {
      printf("vgpuctl %s\n", VGPU_VERSION);
      return EXIT_OK;
    } else if (g_str_equal(a, "--json")) {
      o.json = true;
    } else if (g_str_equal(a, "--force")) {
      o.force = true;
    } else if ((g_str_equal(a, "-r") || g_str_equal(a, "--runtime-dir") ||
                g_str_equal(a, "--profile") || g_str_equal(a, "-p") ||
                g_str_equal(a, "--interval") || g_str_equal(a, "--iterations")) &&
               i + 1 < argc) {
      val = argv[++i];
      if (a[1] == 'r' || g_str_equal(a, "--runtime-dir"))
        o.runtime_dir = g_strdup(val);
      else if (g_str_equal(a, "--interval"))
        o.interval = g_ascii_strtod(val, NULL);
      else if (g_str_equal(a, "--iterations"))
        o.iterations = atoi(val);
      else
        o.profile = g_strdup(val);
    } else if (g_str_has_prefix(a, "--runtime-dir=")) {
      o.runtime_dir = g_strdup(a + strlen("--runtime-dir="));
    } else if (g_str_has_prefix(a, "--profile=")) {
      o.profile = g_strdup(a + strlen("--profile="));
    } else if (a[0] == '-' && a[1]) {
      return fail(EXIT_USAGE, "unknown option %s (try --help)", a);
    } else {
      g_ptr_array_add(args, (gpointer)a);
    }
  }
  if (o.interval <= 0.05)
    o.interval = 1.0;
  if (!o.runtime_dir)
    o.runtime_dir = g_getenv("VGPU_RUNTIME_DIR") ? g_strdup(g_getenv("VGPU_RUNTIME_DIR"))
                                                 : vgpu_default_runtime_dir();
  if (args->len == 0) {
    fputs(usage_text, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = g_ptr_array_index(args, 0);
  const char *name = args->len > 1 ? g_ptr_array_index(args, 1) : NULL;
  int rc;
  if (g_str_equal(cmd, "list") || g_str_equal(cmd, "ls"))
    rc = cmd_list(&o);
  else if (g_str_equal(cmd, "profiles"))
    rc = cmd_profiles(&o);
  else if (g_str_equal(cmd, "status"))
    rc = cmd_status(&o);
  else if (g_str_equal(cmd, "top"))
    rc = cmd_top(&o);
  else if (g_str_equal(cmd, "reload"))
    rc = cmd_admin(&o, vgpu_ctl_request("reload", NULL), "configuration reloaded");
  else if (!name)
    rc = fail(EXIT_USAGE, "%s needs an instance name (try --help)", cmd);
  else if (g_str_equal(cmd, "show"))
    rc = cmd_show(&o, name);
  else if (g_str_equal(cmd, "create")) {
    if (!o.profile)
      return fail(EXIT_USAGE, "create needs --profile P (vgpuctl profiles lists them)");
    JsonObject *req = vgpu_ctl_request("create", name);
    json_object_set_string_member(req, "profile", o.profile);
    g_autofree char *msg = g_strdup_printf("created %s from profile %s", name, o.profile);
    rc = cmd_admin(&o, req, msg);
  } else if (g_str_equal(cmd, "destroy")) {
    JsonObject *req = vgpu_ctl_request("destroy", name);
    json_object_set_boolean_member(req, "force", o.force);
    g_autofree char *msg = g_strdup_printf("destroyed %s", name);
    rc = cmd_admin(&o, req, msg);
  } else if (g_str_equal(cmd, "set")) {
    if (args->len < 3)
      return fail(EXIT_USAGE, "set needs KEY=VALUE settings (e.g. vram=512M)");
    JsonObject *settings = json_object_new();
    for (guint i = 2; i < args->len; i++) {
      const char *kv = g_ptr_array_index(args, i);
      const char *eq = strchr(kv, '=');
      if (!eq || eq == kv) {
        json_object_unref(settings);
        return fail(EXIT_USAGE, "\"%s\" is not KEY=VALUE", kv);
      }
      g_autofree char *k = g_strndup(kv, (gsize)(eq - kv));
      json_object_set_string_member(settings, k, eq + 1);
    }
    JsonObject *req = vgpu_ctl_request("set", name);
    json_object_set_object_member(req, "settings", settings);
    g_autofree char *msg = g_strdup_printf("updated %s", name);
    rc = cmd_admin(&o, req, msg);
  } else
    rc = fail(EXIT_USAGE, "unknown command \"%s\" (try --help)", cmd);
  g_free(o.runtime_dir);
  g_free(o.profile);
  return rc;
}
