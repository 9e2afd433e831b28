/* vgpuctl: the operator's view of vgpud (see vgpuctl(1)).  Each command is
 * one request on a fresh connection to DIR/control.sock; this file only
 * parses the command line, picks the request and prints the reply. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vgpu-config.h"
#if HAVE_PNG
#include <png.h>
#endif

#include "core/ledger.h"

#include "ctl/ctl_format.h"
#include "ctl/ctl_proto.h"
#include "cli/doctor.h"
#include "util/runtime_dir.h"

enum { EXIT_OK = 0, EXIT_REFUSED = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3 };

/* Options that belong to one command; using one elsewhere is a usage
 * error rather than silently ignored. */
enum {
  OPT_PROFILE = 1 << 0,
  OPT_FORCE = 1 << 1,
  OPT_INTERVAL = 1 << 2,
  OPT_ITERATIONS = 1 << 3,
  OPT_HEAD = 1 << 4,
  OPT_TENANT = 1 << 5,
  OPT_ROOT = 1 << 6,
  OPT_TRANSIENT = 1 << 7,
};

typedef struct {
  char *runtime_dir;
  bool json;
  bool force;
  bool transient;
  char *profile;
  double interval;
  guint64 iterations; /* 0: until interrupted */
  guint64 head;
  guint64 tenant; /* 0: the instance's only VM tenant */
  unsigned used;  /* OPT_* seen */
  /* doctor: the tree to check */
  const char *root;
} Opts;

typedef struct {
  const char *name;
  const char *synopsis;
  const char *summary;
  const char *help;
  guint min_args, max_args; /* operands after the command word */
  unsigned opts;
  int (*run)(const Opts *o, char **args, guint nargs);
} Command;

/* --json anywhere before "--": errors are JSON too. */
static bool json_errors;

/* Under --json, one line on stdout: {"error": TEXT, "code": STATUS,
 * "kind": "refused"|"usage"|"unreachable"}; else "vgpuctl: TEXT" on
 * stderr.  Returns code, the exit status either way. */
static int fail(int code, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  if (!json_errors) {
    fprintf(stderr, "vgpuctl: %s\n", msg);
    return code;
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "error");
  json_builder_add_string_value(b, msg);
  json_builder_set_member_name(b, "code");
  json_builder_add_int_value(b, code);
  json_builder_set_member_name(b, "kind");
  json_builder_add_string_value(b, code == EXIT_USAGE         ? "usage"
                                   : code == EXIT_UNREACHABLE ? "unreachable"
                                                              : "refused");
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *line = json_to_string(root, FALSE);
  puts(line);
  fflush(stdout);
  return code;
}

static int exit_code(const GError *e) {
  if (e->domain == VGPU_CTL_ERROR &&
      (e->code == VGPU_CTL_ERROR_CONNECT || e->code == VGPU_CTL_ERROR_TIMEOUT))
    return EXIT_UNREACHABLE;
  if (e->domain == VGPU_CTL_ERROR && e->code == VGPU_CTL_ERROR_USAGE)
    return EXIT_USAGE;
  return EXIT_REFUSED;
}

/* Sends `req` (consumed); NULL with *rc set and the reason printed. */
static JsonObject *call(const Opts *o, JsonObject *req, int *rc) {
  g_autoptr(JsonObject) owned = req;
  g_autoptr(GError) e = NULL;
  JsonObject *reply = vgpu_ctl_transact(o->runtime_dir, owned, VGPU_CTL_TIMEOUT_MS, &e);
  if (!reply)
    *rc = fail(exit_code(e), "%s", e->message);
  return reply;
}

static void print_json(JsonObject *o) {
  g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, o);
  g_autoptr(JsonGenerator) g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  json_generator_set_indent(g, 2);
  json_generator_set_root(g, n);
  g_autofree char *s = json_generator_to_data(g, NULL);
  puts(s);
}

static void print_owned(char *s) {
  fputs(s, stdout);
  g_free(s);
}

/* The text printed for a reply without --json (to g_free), from the reply
 * and the command's own words (`done`, NULL for the read commands). */
typedef char *(*HumanFn)(JsonObject *reply, const char *done);

/* Sends `req` (consumed) and prints the reply: the daemon's object under
 * --json, else what `human` makes of it.  A reply's "warning" (done, but
 * not all of it: a reload that could not add an instance, a change in
 * force that the state file does not keep) follows it and gives 1. */
static int reply_command(const Opts *o, JsonObject *req, HumanFn human, const char *done) {
  int rc = EXIT_OK;
  g_autoptr(JsonObject) r = call(o, req, &rc);
  if (!r)
    return rc;
  if (o->json)
    print_json(r);
  else
    print_owned(human(r, done));
  const char *warning = json_object_get_string_member_with_default(r, "warning", NULL);
  if (warning)
    return fail(EXIT_REFUSED, "warning: %s", warning);
  return EXIT_OK;
}

/* ---- read commands ------------------------------------------------------- */

static char *human_list(JsonObject *r, const char *done) {
  (void)done;
  g_autofree char *t = vgpu_format_list(vgpu_ctl_get_array(r, "instances"));
  g_autofree char *gm = vgpu_format_gpu_memory(r);
  return g_strconcat(t, gm, NULL);
}
static char *human_show(JsonObject *r, const char *done) {
  (void)done;
  return vgpu_format_show(vgpu_ctl_get_object(r, "instance"));
}
static char *human_profiles(JsonObject *r, const char *done) {
  (void)done;
  return vgpu_format_profiles(vgpu_ctl_get_array(r, "profiles"));
}
static char *human_status(JsonObject *r, const char *done) {
  (void)done;
  return vgpu_format_status(vgpu_ctl_get_object(r, "daemon"), vgpu_ctl_get_array(r, "instances"));
}

static int cmd_list(const Opts *o, char **a, guint n) {
  (void)a, (void)n;
  return reply_command(o, vgpu_ctl_request("list", NULL), human_list, NULL);
}
static int cmd_show(const Opts *o, char **a, guint n) {
  (void)n;
  return reply_command(o, vgpu_ctl_request("show", a[0]), human_show, NULL);
}
static int cmd_profiles(const Opts *o, char **a, guint n) {
  (void)a, (void)n;
  return reply_command(o, vgpu_ctl_request("profiles", NULL), human_profiles, NULL);
}
static int cmd_status(const Opts *o, char **a, guint n) {
  (void)a, (void)n;
  return reply_command(o, vgpu_ctl_request("status", NULL), human_status, NULL);
}

/* One poll of top: the list reply with each instance replaced by its
 * `show` object (which has its tenants); an instance gone between the two
 * requests keeps its list object.  NULL with *rc set when vgpud fails. */
static JsonObject *top_poll(const Opts *o, int *rc) {
  JsonObject *r = call(o, vgpu_ctl_request("list", NULL), rc);
  JsonArray *a = r ? vgpu_ctl_get_array(r, "instances") : NULL;
  for (guint i = 0; a && i < json_array_get_length(a); i++) {
    JsonObject *in = vgpu_ctl_array_object(a, i);
    const char *name = vgpu_ctl_get_str(in, "name", NULL);
    if (!name)
      continue;
    g_autoptr(GError) e = NULL;
    g_autoptr(JsonObject) req = vgpu_ctl_request("show", name);
    g_autoptr(JsonObject) shown = vgpu_ctl_transact(o->runtime_dir, req, VGPU_CTL_TIMEOUT_MS, &e);
    JsonObject *full = shown ? vgpu_ctl_get_object(shown, "instance") : NULL;
    if (full)
      json_node_set_object(json_array_get_element(a, i), full);
  }
  return r;
}

static int cmd_top(const Opts *o, char **a, guint n) {
  (void)a, (void)n;
  g_autoptr(VgpuTop) top = vgpu_top_new();
  bool tty = isatty(STDOUT_FILENO);
  for (guint64 i = 0; o->iterations == 0 || i < o->iterations; i++) {
    if (i)
      g_usleep((gulong)(o->interval * G_USEC_PER_SEC));
    int rc = EXIT_OK;
    g_autoptr(JsonObject) r = top_poll(o, &rc);
    if (!r)
      return rc;
    g_autofree char *table =
        vgpu_top_screen(top, vgpu_ctl_get_array(r, "instances"), g_get_monotonic_time());
    if (o->json) {
      /* One compact object per line: a script reads line by line. */
      if (i)
        json_object_set_double_member(r, "elapsed_s", vgpu_top_elapsed(top));
      else
        json_object_set_null_member(r, "elapsed_s");
      g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
      json_node_set_object(node, r);
      g_autofree char *line = json_to_string(node, FALSE);
      puts(line);
    } else {
      /* Home and clear only on a terminal: a pipe or file gets plain
       * screens one after the other. */
      if (tty)
        fputs("\033[H\033[2J", stdout);
      g_autoptr(GDateTime) now = g_date_time_new_now_local();
      g_autofree char *clock = g_date_time_format(now, "%H:%M:%S");
      g_autofree char *gm = vgpu_format_gpu_memory(r);
      printf("vgpuctl top  %s  (every %gs%s)\n%s%s\n", clock, o->interval,
             o->iterations ? "" : ", Ctrl-C quits", gm, table);
    }
    if (fflush(stdout) != 0)
      return errno == EPIPE ? EXIT_OK : fail(EXIT_REFUSED, "writing: %s", g_strerror(errno));
  }
  return EXIT_OK;
}

/* ---- admin commands ------------------------------------------------------ */

/* `done` alone on its line. */
static char *human_done(JsonObject *r, const char *done) {
  (void)r;
  return g_strconcat(done, "\n", NULL);
}

static int cmd_create(const Opts *o, char **a, guint n) {
  (void)n;
  if (!o->profile)
    return fail(EXIT_USAGE, "create needs --profile P (vgpuctl profiles lists them)");
  g_autofree char *msg = g_strdup_printf("created %s from profile %s%s", a[0], o->profile,
                                         o->transient ? " (transient: not kept)" : "");
  JsonObject *req = vgpu_ctl_request_create(a[0], o->profile);
  if (o->transient)
    json_object_set_boolean_member(req, "transient", TRUE);
  return reply_command(o, req, human_done, msg);
}

static int cmd_destroy(const Opts *o, char **a, guint n) {
  (void)n;
  g_autofree char *msg = g_strdup_printf("destroyed %s", a[0]);
  return reply_command(o, vgpu_ctl_request_destroy(a[0], o->force), human_done, msg);
}

/* `done`, then a limit now below what the tenants hold, with the figures. */
static char *human_set(JsonObject *r, const char *done) {
  g_autofree char *over = vgpu_format_over_limit(vgpu_ctl_get_object(r, "instance"));
  return g_strdup_printf("%s\n%s", done, over);
}

static int cmd_set(const Opts *o, char **a, guint n) {
  g_autoptr(GError) e = NULL;
  g_autofree const char **kv = g_new0(const char *, n);
  for (guint i = 1; i < n; i++)
    kv[i - 1] = a[i];
  JsonObject *req = vgpu_ctl_request_set(a[0], kv, &e);
  if (!req)
    return fail(exit_code(e), "%s", e->message);
  g_autofree char *msg = g_strdup_printf("updated %s", a[0]);
  return reply_command(o, req, human_set, msg);
}

/* A reload's or reset's report: what changed, what run-time changes stay
 * in force, what could not be applied. */
static void add_section(GString *out, JsonObject *r, const char *member, const char *title,
                        const char *none) {
  JsonArray *a = vgpu_ctl_get_array(r, member);
  guint n = a ? json_array_get_length(a) : 0;
  if (!n && !none)
    return;
  g_string_append_printf(out, "%s:%s\n", title, n ? "" : none);
  for (guint i = 0; i < n; i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      g_string_append_printf(out, "  %s\n", json_node_get_string(e));
  }
}

static char *human_report(JsonObject *r, const char *done) {
  GString *out = g_string_new(NULL);
  const char *source = vgpu_ctl_get_str(r, "source", NULL);
  g_string_append_printf(out, "%s%s%s\n", done, source ? " from " : "", source ? source : "");
  add_section(out, r, "changed", "changed", " nothing");
  add_section(out, r, "overridden",
              "left overridden by run-time changes (vgpuctl reset drops them)", " none");
  add_section(out, r, "not_applied", "run-time changes not applied", NULL);
  return g_string_free(out, FALSE);
}

static int cmd_reload(const Opts *o, char **a, guint n) {
  (void)a, (void)n;
  return reply_command(o, vgpu_ctl_request("reload", NULL), human_report, "configuration reloaded");
}

static int cmd_reset(const Opts *o, char **a, guint n) {
  JsonObject *req = vgpu_ctl_request("reset", a[0]);
  JsonArray *keys = json_array_new();
  for (guint i = 1; i < n; i++)
    json_array_add_string_element(keys, a[i]);
  json_object_set_array_member(req, "keys", keys);
  g_autofree char *msg = g_strdup_printf("reset %s%s", a[0], n > 1 ? " (the settings named)" : "");
  return reply_command(o, req, human_report, msg);
}

static char *human_config(JsonObject *r, const char *done) {
  (void)done;
  return g_strdup(vgpu_ctl_get_str(r, "config", ""));
}

static int cmd_dump_config(const Opts *o, char **a, guint n) {
  (void)a, (void)n;
  return reply_command(o, vgpu_ctl_request("dump-config", NULL), human_config, NULL);
}

/* ---- screenshot ---------------------------------------------------------- */

#if HAVE_PNG
/* One pixel of a VIRTIO_GPU_FORMAT_* image as R, G, B (the format names the
 * bytes in memory order). */
static void to_rgb(uint32_t format, const uint8_t *p, uint8_t *rgb) {
  switch (format) {
  case 1: /* B8G8R8A8 */
  case 2: /* B8G8R8X8 */
    rgb[0] = p[2], rgb[1] = p[1], rgb[2] = p[0];
    break;
  case 3: /* A8R8G8B8 */
  case 4: /* X8R8G8B8 */
    rgb[0] = p[1], rgb[1] = p[2], rgb[2] = p[3];
    break;
  case 67:  /* R8G8B8A8 */
  case 134: /* R8G8B8X8 */
    rgb[0] = p[0], rgb[1] = p[1], rgb[2] = p[2];
    break;
  default: /* 68 X8B8G8R8, 121 A8B8G8R8 */
    rgb[0] = p[3], rgb[1] = p[2], rgb[2] = p[1];
    break;
  }
}

/* Writes the image as an 8-bit RGB PNG to fd; false with *err set. */
static bool write_png(int fd, const uint8_t *px, const VgpuShotReply *r, char **err) {
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    *err = g_strdup(g_strerror(errno));
    close(fd);
    return false;
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  uint8_t *volatile row = g_malloc((size_t)r->width * 3u);
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    g_free(row);
    fclose(f);
    *err = g_strdup("libpng failed to encode the image");
    return false;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, r->width, r->height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (uint32_t y = 0; y < r->height; y++) {
    const uint8_t *src = px + (size_t)y * r->stride;
    for (uint32_t x = 0; x < r->width; x++)
      to_rgb(r->format, src + (size_t)x * 4u, row + (size_t)x * 3u);
    png_write_row(png, row);
  }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  g_free(row);
  if (fflush(f) != 0 || ferror(f)) {
    *err = g_strdup(g_strerror(errno));
    fclose(f);
    return false;
  }
  if (fclose(f) != 0) {
    *err = g_strdup(g_strerror(errno));
    return false;
  }
  return true;
}

/* Opens FILE for writing as the user: never through a symlink (O_NOFOLLOW)
 * and only a regular file is replaced. */
static int open_output(const char *path, char **err) {
  int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0) {
    *err =
        g_strdup(errno == ELOOP ? "is a symbolic link; not written through it" : g_strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    *err = g_strdup("not a regular file");
    close(fd);
    return -1;
  }
  if (ftruncate(fd, 0) < 0) {
    *err = g_strdup(g_strerror(errno));
    close(fd);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}
#endif

static int cmd_screenshot(const Opts *o, char **a, guint n) {
  (void)n;
#if !HAVE_PNG
  (void)o, (void)a;
  return fail(EXIT_REFUSED, "this vgpuctl was built without libpng: no screenshots");
#else
  const char *path = a[1];
  g_autoptr(JsonObject) req = vgpu_ctl_request("screenshot", a[0]);
  json_object_set_int_member(req, "head", (gint64)o->head);
  if (o->tenant)
    json_object_set_int_member(req, "tenant", (gint64)o->tenant);
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuCtl) c = vgpu_ctl_connect(o->runtime_dir, &e);
  int fd = -1;
  /* vgpud answers within its worker timeout; this waits longer. */
  g_autoptr(JsonObject) r = c ? vgpu_ctl_call_fd(c, req, VGPU_CTL_TIMEOUT_MS, &fd, &e) : NULL;
  if (!r)
    return fail(exit_code(e), "%s", e->message);
  VgpuShotReply rep = {.width = (uint32_t)MIN(vgpu_ctl_get_u64(r, "width"), G_MAXUINT32),
                       .height = (uint32_t)MIN(vgpu_ctl_get_u64(r, "height"), G_MAXUINT32),
                       .stride = (uint32_t)MIN(vgpu_ctl_get_u64(r, "stride"), G_MAXUINT32),
                       .format = (uint32_t)MIN(vgpu_ctl_get_u64(r, "format"), G_MAXUINT32)};
  const char *why = NULL;
  if (!vgpu_shot_check(&rep, fd, &why)) {
    if (fd >= 0)
      close(fd);
    return fail(EXIT_REFUSED, "bad screenshot from vgpud: %s", why);
  }
  size_t size = (size_t)rep.stride * rep.height;
  void *px = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (px == MAP_FAILED)
    return fail(EXIT_REFUSED, "cannot map the screenshot: %s", g_strerror(errno));
  g_autofree char *err = NULL;
  int out = open_output(path, &err);
  bool ok = out >= 0 && write_png(out, px, &rep, &err);
  munmap(px, size);
  if (!ok)
    return fail(EXIT_REFUSED, "%s: %s", path, err);
  if (o->json) {
    json_object_set_string_member(r, "file", path);
    print_json(r);
  } else {
    printf("wrote %s: head %u of %s, %ux%u\n", path, (unsigned)vgpu_ctl_get_u64(r, "head"), a[0],
           rep.width, rep.height);
  }
  return EXIT_OK;
#endif
}

/* ---- doctor -------------------------------------------------------------- */

static int cmd_doctor(const Opts *o, char **a, guint n) {
  const char *root = o->root ? o->root : "/";
  if (!g_file_test(root, G_FILE_TEST_IS_DIR))
    return fail(EXIT_USAGE, "--root %s: not a directory", root);
  return vgpu_doctor_run(root, o->json);
}

/* ---- command line -------------------------------------------------------- */

static const Command commands[] = {
    {"list", "list", "instances with usage and limits",
     "Lists every instance: profile, state, clients, VRAM used / limit, resources,\n"
     "contexts, GPU BUSY, frames, refusals and worker crashes.  A limit of 0 reads\n"
     "\"unlimited\".  GPU BUSY (JSON: busy_percent) is the instance's GPU time over\n"
     "about the last second, in % of the GPU (on llvmpipe: of the CPU capacity):\n"
     "the sum of its tenants'.\n"
     "A line below the table gives the GPU memory ([daemon] gpu-memory), the\n"
     "overcommit, what the instances' VRAM limits take of gpu-memory x overcommit\n"
     "and what is free (JSON: gpu_memory, overcommit, gpu_memory_capacity,\n"
     "gpu_memory_assigned, gpu_memory_free).\n",
     0, 0, 0, cmd_list},
    {"show", "show NAME", "one instance and its tenants",
     "Prints the instance's limits, usage and GPU busy %, then one row per\n"
     "connected tenant: worker pid, client pid, uid, process name (PROCESS, JSON:\n"
     "client_name; \"-\" when vgpud could not read it), GPU BUSY (JSON:\n"
     "busy_percent: its submissions and waits for the GPU over about the last\n"
     "second, at most 100%), VRAM, peak VRAM, resources, contexts, frames, uptime.\n",
     1, 1, 0, cmd_show},
    {"profiles", "profiles", "the profiles instances are cut from",
     "Lists the profiles of vgpud's configuration with their limits.  AVAILABLE\n"
     "(JSON: available) is how many more instances of the profile fit the free GPU\n"
     "memory now.\n",
     0, 0, 0, cmd_profiles},
    {"status", "status", "the daemon; per instance its renderer, vtest protocols and capsets",
     "Prints vgpud's version, pid, uptime, runtime directory, configuration and\n"
     "renderer; the render device (the render node and its kernel driver, or\n"
     "none: EGL surfaceless, llvmpipe) with the GL renderer the workers get, the\n"
     "Mesa version their GL context reports and the virglrenderer version the\n"
     "worker was built against with the library file it loads (JSON: the daemon's\n"
     "render_node and render_driver; each renderer's gl_renderer, gl_version,\n"
     "mesa_version, virglrenderer_version, virglrenderer_library); then per\n"
     "instance what its workers offer: the renderer's\n"
     "description, the vtest protocol versions and the capability sets with\n"
     "their versions and sizes, as a probe worker started by vgpud reported\n"
     "them (\"probing\" until it has answered, \"unknown\" with the reason\n"
     "when it failed).\n",
     0, 0, 0, cmd_status},
    {"top", "top [--interval S] [--iterations N]", "refreshing view of instances and tenants",
     "Polls vgpud every S seconds (default 1) and prints, per poll, the GPU memory\n"
     "line, one row per instance (clients, VRAM, resources, contexts, GPU busy,\n"
     "frames per second, frames, refusals, worker crashes) and one row per tenant\n"
     "you may see: its worker and client pid, process name (when vgpud reports\n"
     "one),\n"
     "GPU BUSY (the share of the last interval its GPU work took, from busy_ns),\n"
     "SHARE (the GPU share the scheduler gives it, from share_ppm; \"-\" when\n"
     "none: best-effort), THROTTLED (the share of the last interval its\n"
     "submissions were held back, from throttled_ns), FPS/CAP (frames per\n"
     "second against the instance's fps-cap, \"-\" for none) and VRAM.  Rates\n"
     "come from the change of the counters between two polls: \"-\" on the\n"
     "first, except GPU busy, which is vgpud's own figure over its last second\n"
     "there.  The screen is cleared only when standard output is a terminal.\n"
     "--iterations N stops after N polls.  With --json each poll prints one\n"
     "line: the list reply, every instance as `show` has it (with its tenants)\n"
     "plus \"frames_per_s\" and \"busy_percent\" (over the poll interval), every\n"
     "tenant plus \"frames_per_s\",\n"
     "\"busy_percent\", \"throttled_percent\" and \"share_percent\" (null where\n"
     "there is no figure), and \"elapsed_s\" since the last poll (null on the\n"
     "first); the line is flushed at once.\n",
     0, 0, OPT_INTERVAL | OPT_ITERATIONS, cmd_top},
    {"create", "create NAME --profile P [--transient]", "new instance at run time (admin)",
     "Creates instance NAME from profile P; its socket appears at once.  vgpud keeps\n"
     "it in its state file: it survives reload and restart.  --transient: not kept\n"
     "(gone when vgpud stops).\n",
     1, 1, OPT_PROFILE | OPT_TRANSIENT, cmd_create},
    {"destroy", "destroy NAME [--force]", "remove an instance (admin)",
     "Removes instance NAME.  vgpud refuses while tenants are connected;\n"
     "--force ends them.  An instance of the configuration file stays removed\n"
     "across reload and restart until vgpuctl reset NAME.\n",
     1, 1, OPT_FORCE, cmd_destroy},
    {"set", "set NAME KEY=VALUE...", "change limits at run time (admin)",
     "Keys: vram, max-resources, max-contexts, max-stream-objects, max-clients,\n"
     "max-clients-per-uid, gpu-share, weight, fps-cap, heads, gpu-timeout,\n"
     "socket-mode; values as in vgpud.conf(5).  All settings are applied or none;\n"
     "gpu-timeout and heads apply to clients that connect after it; gpu-share,\n"
     "weight and fps-cap reach running tenants within a second.  The settings\n"
     "are kept in vgpud's state file: they override the configuration file across\n"
     "reload and restart until vgpuctl reset drops them.\n"
     "Example: vgpuctl set vgpu0 vram=512M max-clients=2\n",
     2, G_MAXUINT, 0, cmd_set},
    {"screenshot", "screenshot NAME [--head N] [--tenant PID] FILE.png", "a VM's screen as a PNG",
     "Asks the instance's VM tenant for what head N (default 0) shows and writes\n"
     "it to FILE.png (8-bit RGB) with your own permissions; FILE is never written\n"
     "through a symbolic link.  With several VM tenants, --tenant names one by\n"
     "its worker or QEMU pid (vgpuctl show lists them).  Admins may take any\n"
     "VM's screen, other users only their own VMs'.  Fails when the guest has\n"
     "set no scanout on that head or its worker does not answer within 2 s.\n",
     2, 2, OPT_HEAD | OPT_TENANT, cmd_screenshot},
    {"reload", "reload", "re-read the configuration file (admin)",
     "Asks vgpud to re-read its configuration file, as SIGHUP does, and prints\n"
     "what changed, the run-time changes (create, set, destroy) it left in force\n"
     "over the file, and any it could not apply (e.g. no longer fitting the GPU\n"
     "memory) with the reason.  JSON: changed, overridden, not_applied.\n",
     0, 0, 0, cmd_reload},
    {"reset", "reset NAME [KEY...]", "drop run-time changes of an instance (admin)",
     "Drops what vgpuctl set changed on NAME (only the KEYs named, else all of\n"
     "them): the configuration file's values (or, for an instance made with\n"
     "create, its profile's) apply again at once.  A configuration file's\n"
     "instance removed with destroy comes back.  Prints a report as reload does.\n",
     1, G_MAXUINT, 0, cmd_reset},
    {"dump-config", "dump-config", "the live configuration as vgpud.conf text (admin)",
     "Prints vgpud's configuration with the run-time changes in force, as a\n"
     "vgpud.conf that vgpud --check-config accepts and that starts a vgpud with\n"
     "the same instances and limits.  Instances made or changed at run time\n"
     "carry a comment saying so.\n",
     0, 0, 0, cmd_dump_config},
    {"doctor", "doctor [--root DIR]", "check what a vGPU host needs (no vgpud needed)",
     "Checks the host and prints one line per check: PASS, WARN or FAIL, what\n"
     "was found and, unless PASS, the fix.  Checks: render node (or llvmpipe),\n"
     "Mesa >= " VGPU_DOCTOR_MESA_MIN ", virglrenderer >= " VGPU_DOCTOR_VIRGL_MIN
     " and QEMU (>= " VGPU_DOCTOR_QEMU_MIN_KVM " with KVM, >= " VGPU_DOCTOR_QEMU_MIN_TCG "\n"
     "without) from dpkg's status file, /dev/kvm (a guest is created and run to\n"
     "its first instruction), unprivileged user namespaces, seccomp, cgroup v2\n"
     "delegation, IOMMU groups, VFIO modules, SR-IOV and mediated-device GPUs,\n"
     "hugepages, the CPUs of the GPU's interrupts and the libvirt descriptor.\n"
     "--root DIR reads DIR/proc, DIR/sys, DIR/dev, ... instead of the host's\n"
     "(then /dev/kvm is not opened and no program is run).  Exit status 0 when\n"
     "no check failed, 1 when one did.\n",
     0, 0, OPT_ROOT, cmd_doctor},
};

static const Command *find_command(const char *name) {
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
    if (g_str_equal(commands[i].name, name))
      return &commands[i];
  if (g_str_equal(name, "ls"))
    return &commands[0];
  return NULL;
}

static void print_usage(FILE *f) {
  fputs("Usage: vgpuctl [--runtime-dir DIR] [--json] COMMAND [ARGS]\n\nCommands:\n", f);
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
    fprintf(f, "  %-36s %s\n", commands[i].synopsis, commands[i].summary);
  fputs("\nOptions:\n"
        "  -r, --runtime-dir DIR  vgpud's runtime directory (default: $VGPU_RUNTIME_DIR,\n"
        "                         else /run/vgpu for root, $XDG_RUNTIME_DIR/vgpu or\n"
        "                         /tmp/vgpu-UID, and /run/vgpu when that has no vgpud)\n"
        "  --json                 print vgpud's reply as JSON\n"
        "  -h, --help             this text; after a command, that command's help\n"
        "  -V, --version          the version\n"
        "\nExit status: 0 ok, 1 vgpud refused or failed, 2 usage error,\n"
        "3 vgpud cannot be reached.  See vgpuctl(1).\n",
        f);
}

static void print_command_help(const Command *c) {
  printf("Usage: vgpuctl [--runtime-dir DIR] [--json] %s\n\n%s", c->synopsis, c->help);
}

static bool parse_interval(const char *s, double *out) {
  char *end = NULL;
  errno = 0;
  double v = g_ascii_strtod(s, &end);
  if (errno || end == s || *end || !(v >= 0.1 && v <= 3600))
    return false;
  *out = v;
  return true;
}

/* Matches "--name VALUE", "--name=VALUE" and the short form "-x VALUE";
 * *i moves past a separate value.  Returns 1 matched, 0 not this option,
 * -1 value missing. */
static int take_value(char **argv, int argc, int *i, const char *lng, const char *shrt,
                      const char **val) {
  const char *a = argv[*i];
  size_t n = strlen(lng);
  if (g_str_has_prefix(a, lng) && a[n] == '=') {
    *val = a + n + 1;
    return 1;
  }
  if (!g_str_equal(a, lng) && !(shrt && g_str_equal(a, shrt)))
    return 0;
  if (*i + 1 >= argc)
    return -1;
  *val = argv[++*i];
  return 1;
}

int main(int argc, char **argv) {
  /* A daemon that goes away mid-request, or a closed pipe on stdout, is an
   * error to report, not a reason to die silently. */
  signal(SIGPIPE, SIG_IGN);
  Opts o = {.interval = 1.0};
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  g_autofree char *runtime_dir = NULL, *profile = NULL;
  bool help = false, only_operands = false;
  for (int i = 1; i < argc && !g_str_equal(argv[i], "--"); i++)
    json_errors = json_errors || g_str_equal(argv[i], "--json");
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    int r;
    if (only_operands || a[0] != '-' || !a[1]) {
      g_ptr_array_add(args, argv[i]);
    } else if (g_str_equal(a, "--")) {
      only_operands = true;
    } else if (g_str_equal(a, "-h") || g_str_equal(a, "--help")) {
      help = true;
    } else if (g_str_equal(a, "-V") || g_str_equal(a, "--version")) {
      printf("vgpuctl %s\n", VGPU_VERSION);
      return EXIT_OK;
    } else if (g_str_equal(a, "--json")) {
      o.json = true;
    } else if (g_str_equal(a, "--transient")) {
      o.transient = true;
      o.used |= OPT_TRANSIENT;
    } else if (g_str_equal(a, "--force")) {
      o.force = true;
      o.used |= OPT_FORCE;
    } else if ((r = take_value(argv, argc, &i, "--runtime-dir", "-r", &val)) != 0) {
      if (r < 0 || !*val)
        return fail(EXIT_USAGE, "--runtime-dir needs a directory");
      g_free(runtime_dir);
      runtime_dir = g_strdup(val);
    } else if ((r = take_value(argv, argc, &i, "--profile", "-p", &val)) != 0) {
      if (r < 0 || !*val)
        return fail(EXIT_USAGE, "--profile needs a profile name");
      g_free(profile);
      profile = g_strdup(val);
      o.used |= OPT_PROFILE;
    } else if ((r = take_value(argv, argc, &i, "--interval", NULL, &val)) != 0) {
      if (r < 0 || !parse_interval(val, &o.interval))
        return fail(EXIT_USAGE, "--interval needs seconds between 0.1 and 3600");
      o.used |= OPT_INTERVAL;
    } else if ((r = take_value(argv, argc, &i, "--head", NULL, &val)) != 0) {
      if (r < 0 || !g_ascii_string_to_unsigned(val, 10, 0, 15, &o.head, NULL))
        return fail(EXIT_USAGE, "--head needs a head number 0..15");
      o.used |= OPT_HEAD;
    } else if ((r = take_value(argv, argc, &i, "--tenant", NULL, &val)) != 0) {
      if (r < 0 || !g_ascii_string_to_unsigned(val, 10, 1, G_MAXINT32, &o.tenant, NULL))
        return fail(EXIT_USAGE, "--tenant needs a pid");
      o.used |= OPT_TENANT;
    } else if ((r = take_value(argv, argc, &i, "--root", NULL, &val)) != 0) {
      if (r < 0 || !*val)
        return fail(EXIT_USAGE, "--root needs a directory");
      o.root = val;
      o.used |= OPT_ROOT;
    } else if ((r = take_value(argv, argc, &i, "--iterations", NULL, &val)) != 0) {
      if (r < 0 || !g_ascii_string_to_unsigned(val, 10, 1, G_MAXUINT32, &o.iterations, NULL))
        return fail(EXIT_USAGE, "--iterations needs a positive count");
      o.used |= OPT_ITERATIONS;
    } else {
      return fail(EXIT_USAGE, "unknown option %s (try --help)", a);
    }
  }

  const char *word = args->len ? g_ptr_array_index(args, 0) : NULL;
  if (word && g_str_equal(word, "help")) {
    help = true;
    word = args->len > 1 ? g_ptr_array_index(args, 1) : NULL;
  }
  const Command *cmd = word ? find_command(word) : NULL;
  if (word && !cmd)
    return fail(EXIT_USAGE, "unknown command \"%s\" (try --help)", word);
  if (help) {
    if (cmd)
      print_command_help(cmd);
    else
      print_usage(stdout);
    return EXIT_OK;
  }
  if (!cmd) {
    if (json_errors)
      return fail(EXIT_USAGE, "no command given (try --help)");
    print_usage(stderr);
    return EXIT_USAGE;
  }

  guint nargs = args->len - 1;
  if (nargs < cmd->min_args || nargs > cmd->max_args)
    return fail(EXIT_USAGE, "usage: vgpuctl %s (try vgpuctl %s --help)", cmd->synopsis, cmd->name);
  unsigned stray = o.used & ~cmd->opts;
  if (stray) {
    const char *opt = stray & OPT_PROFILE     ? "--profile"
                      : stray & OPT_FORCE     ? "--force"
                      : stray & OPT_INTERVAL  ? "--interval"
                      : stray & OPT_HEAD      ? "--head"
                      : stray & OPT_TENANT    ? "--tenant"
                      : stray & OPT_ROOT      ? "--root"
                      : stray & OPT_TRANSIENT ? "--transient"
                                              : "--iterations";
    return fail(EXIT_USAGE, "%s does not apply to %s (try vgpuctl %s --help)", opt, cmd->name,
                cmd->name);
  }

  if (!runtime_dir)
    runtime_dir = vgpu_client_runtime_dir();
  o.runtime_dir = runtime_dir;
  o.profile = profile;

  int rc = cmd->run(&o, (char **)args->pdata + 1, nargs);
  if (fflush(stdout) != 0 && errno != EPIPE && rc == EXIT_OK)
    rc = fail(EXIT_REFUSED, "writing output: %s", g_strerror(errno));
  return rc;
}
