/* Control client: request encoding, reply parsing, line framing, the human
 * formatting, and vgpuctl end to end against a fake vgpud in a thread. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl/ctl_format.h"
#include "ctl/ctl_proto.h"
#include "util/fd.h"

static JsonObject *parse_object(const char *json) {
  g_autoptr(JsonParser) p = json_parser_new();
  g_assert_true(json_parser_load_from_data(p, json, -1, NULL));
  return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

static JsonArray *parse_array(const char *json) {
  g_autoptr(JsonParser) p = json_parser_new();
  g_assert_true(json_parser_load_from_data(p, json, -1, NULL));
  return json_array_ref(json_node_get_array(json_parser_get_root(p)));
}

#define INSTANCE_VGPU0                                                                             \
  "{\"name\":\"vgpu0\",\"profile\":\"medium\",\"socket\":\"/run/vgpu/vgpu0/vtest.sock\","          \
  "\"vm_socket\":\"/run/vgpu/vgpu0/vhost-user.sock\","                                             \
  "\"origin\":\"config\",\"state\":\"active\",\"busy_percent\":137.5,"                             \
  "\"limits\":{\"vram\":268435456,"                                                                \
  "\"resources\":4096,\"contexts\":0,\"clients\":4},\"usage\":{\"vram\":13107200,"                 \
  "\"resources\":12,\"contexts\":1,\"clients\":2,\"vm_clients\":1,\"frames\":7462,"                \
  "\"commands\":90000,"                                                                            \
  "\"bytes_in\":1,\"refusals\":2,\"worker_crashes\":0}"
#define TENANT                                                                                     \
  "{\"worker_pid\":4242,\"client_pid\":4240,\"client_uid\":1000,\"vram\":13107200,"                \
  "\"peak_vram\":20971520,\"resources\":12,\"contexts\":1,\"frames\":7462,"                        \
  "\"commands\":90000,\"uptime_s\":3720,\"client_name\":\"glxgears\",\"busy_percent\":12.5}"
#define TENANT_VM                                                                                  \
  "{\"kind\":\"vm\",\"worker_pid\":4250,\"client_pid\":4249,\"client_uid\":0,\"vram\":0,"          \
  "\"peak_vram\":0,\"resources\":0,\"contexts\":0,\"frames\":0,\"commands\":0,\"uptime_s\":5}"

/* ---- requests ------------------------------------------------------------ */

static void test_encode_requests(void **state) {
  (void)state;
  g_autoptr(JsonObject) list = vgpu_ctl_request("list", NULL);
  g_autofree char *l = vgpu_ctl_encode(list);
  assert_string_equal(l, "{\"command\":\"list\"}\n");

  /* A newline inside a value is escaped: the terminator stays the only one. */
  g_autoptr(JsonObject) show = vgpu_ctl_request("show", "a\nb");
  g_autofree char *s = vgpu_ctl_encode(show);
  assert_string_equal(s, "{\"command\":\"show\",\"name\":\"a\\nb\"}\n");

  g_autoptr(JsonObject) create = vgpu_ctl_request_create("t1", "small");
  g_autofree char *c = vgpu_ctl_encode(create);
  assert_string_equal(c, "{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"small\"}\n");

  g_autoptr(JsonObject) destroy = vgpu_ctl_request_destroy("t1", true);
  g_autofree char *d = vgpu_ctl_encode(destroy);
  assert_string_equal(d, "{\"command\":\"destroy\",\"name\":\"t1\",\"force\":true}\n");

  const char *const kv[] = {"vram=512M", "max-clients=2", "fps-cap=", "socket-mode=0660=x", NULL};
  GError *e = NULL;
  g_autoptr(JsonObject) set = vgpu_ctl_request_set("vgpu0", kv, &e);
  assert_non_null(set);
  g_autofree char *st = vgpu_ctl_encode(set);
  /* Values stay strings: the daemon parses them like the configuration. */
  assert_string_equal(st, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{"
                          "\"vram\":\"512M\",\"max-clients\":\"2\",\"fps-cap\":\"\","
                          "\"socket-mode\":\"0660=x\"}}\n");

  const char *const none[] = {NULL};
  const char *const no_eq[] = {"vram", NULL};
  const char *const no_key[] = {"=5", NULL};
  const char *const twice[] = {"vram=1G", "heads=2", "vram=2G", NULL};
  const char *const *bad[] = {none, no_eq, no_key, twice};
  const char *why[] = {"at least one", "not KEY=VALUE", "not KEY=VALUE", "given twice"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    assert_null(vgpu_ctl_request_set("vgpu0", bad[i], &e));
    assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_USAGE));
    assert_non_null(strstr(e->message, why[i]));
    g_clear_error(&e);
  }
}

/* ---- replies ------------------------------------------------------------- */

static void test_parse_reply(void **state) {
  (void)state;
  GError *e = NULL;
  JsonObject *o = vgpu_ctl_parse_reply("{\"ok\":true,\"instances\":[]}", &e);
  assert_non_null(o);
  assert_non_null(vgpu_ctl_get_array(o, "instances"));
  json_object_unref(o);

  assert_null(vgpu_ctl_parse_reply("{\"ok\":false,\"error\":\"no instance \\\"x\\\"\"}", &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_REFUSED));
  assert_string_equal(e->message, "no instance \"x\"");
  g_clear_error(&e);

  /* A refusal without a usable reason still says something. */
  assert_null(vgpu_ctl_parse_reply("{\"ok\":false,\"error\":7}", &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_REFUSED));
  assert_non_null(strstr(e->message, "without a reason"));
  g_clear_error(&e);

  const char *broken[] = {"not json", "[1,2]", "{}", "{\"ok\":\"yes\"}", "{\"ok\":1}", ""};
  for (size_t i = 0; i < G_N_ELEMENTS(broken); i++) {
    assert_null(vgpu_ctl_parse_reply(broken[i], &e));
    assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL));
    assert_non_null(strstr(e->message, "bad reply from vgpud"));
    g_clear_error(&e);
  }
}

static void test_lenient_getters(void **state) {
  (void)state;
  g_autoptr(JsonObject) o =
      parse_object("{\"n\":5,\"neg\":-3,\"d\":2.9,\"huge\":1e30,\"s\":\"x\",\"o\":{},"
                   "\"a\":[1,{\"k\":1}],\"null\":null}");
  assert_int_equal(vgpu_ctl_get_u64(o, "n"), 5);
  assert_int_equal(vgpu_ctl_get_u64(o, "neg"), 0);
  assert_int_equal(vgpu_ctl_get_u64(o, "d"), 2);
  assert_true(vgpu_ctl_get_u64(o, "huge") == UINT64_MAX);
  assert_int_equal(vgpu_ctl_get_u64(o, "s"), 0);
  assert_int_equal(vgpu_ctl_get_u64(o, "missing"), 0);
  assert_int_equal(vgpu_ctl_get_u64(NULL, "n"), 0);
  assert_string_equal(vgpu_ctl_get_str(o, "s", "-"), "x");
  assert_string_equal(vgpu_ctl_get_str(o, "n", "-"), "-");
  assert_string_equal(vgpu_ctl_get_str(o, "null", "-"), "-");
  assert_null(vgpu_ctl_get_str(NULL, "s", NULL));
  assert_non_null(vgpu_ctl_get_object(o, "o"));
  assert_null(vgpu_ctl_get_object(o, "a"));
  JsonArray *a = vgpu_ctl_get_array(o, "a");
  assert_non_null(a);
  assert_null(vgpu_ctl_get_array(o, "o"));
  assert_null(vgpu_ctl_array_object(a, 0));
  assert_non_null(vgpu_ctl_array_object(a, 1));
  assert_null(vgpu_ctl_array_object(a, 2));
  assert_null(vgpu_ctl_array_object(NULL, 0));
}

/* ---- framing ------------------------------------------------------------- */

typedef struct {
  int fd;
  const char *const *pieces;
} Dribble;

/* Writes each piece after a pause, so the reader sees partial lines. */
static gpointer dribble(gpointer data) {
  Dribble *d = data;
  for (const char *const *p = d->pieces; *p; p++) {
    g_usleep(20000);
    if (vgpu_write_all(d->fd, *p, strlen(*p)) < 0)
      break;
  }
  return NULL;
}

static void test_read_line_partial(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  static const char *const pieces[] = {"{\"o", "k\":", "true,\"x\":\"", "y\"}", "\nafter", NULL};
  Dribble d = {sv[0], pieces};
  GThread *t = g_thread_new("dribble", dribble, &d);
  GError *e = NULL;
  char *line = vgpu_ctl_read_line(sv[1], 1024, 5000, &e);
  g_thread_join(t);
  assert_non_null(line);
  assert_string_equal(line, "{\"ok\":true,\"x\":\"y\"}");
  g_free(line);

  /* An empty line is a line. */
  assert_int_equal(write(sv[0], "\n", 1), 1);
  line = vgpu_ctl_read_line(sv[1], 1024, 1000, &e);
  assert_string_equal(line, "");
  g_free(line);

  /* Peer hangs up mid-line. */
  assert_int_equal(write(sv[0], "{\"ok\"", 5), 5);
  close(sv[0]);
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 1000, &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL));
  assert_non_null(strstr(e->message, "closed the connection"));
  g_clear_error(&e);
  close(sv[1]);
}

static void test_read_line_limits(void **state) {
  (void)state;
  GError *e = NULL;
  char big[4096];
  memset(big, 'x', sizeof(big));
  /* Without a newline: refused once past the limit, without waiting. */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  assert_int_equal(write(sv[0], big, sizeof(big)), (ssize_t)sizeof(big));
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 5000, &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL));
  assert_non_null(strstr(e->message, "longer than 1024 bytes"));
  g_clear_error(&e);
  close(sv[0]);
  close(sv[1]);

  /* With the newline in the same read, a long line is still refused. */
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  big[2000] = '\n';
  assert_int_equal(write(sv[0], big, 2001), 2001);
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 5000, &e));
  assert_non_null(strstr(e->message, "longer than"));
  g_clear_error(&e);
  close(sv[0]);
  close(sv[1]);

  /* Exactly at the limit is fine. */
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  big[1024] = '\n';
  assert_int_equal(write(sv[0], big, 1025), 1025);
  char *line = vgpu_ctl_read_line(sv[1], 1024, 5000, &e);
  assert_non_null(line);
  assert_int_equal(strlen(line), 1024);
  g_free(line);

  /* A NUL inside a line is not JSON text. */
  assert_int_equal(write(sv[0], "{\"ok\"\0:true}\n", 13), 13);
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 5000, &e));
  assert_non_null(strstr(e->message, "NUL"));
  g_clear_error(&e);
  close(sv[0]);
  close(sv[1]);
}

static void test_read_line_timeout(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  assert_int_equal(write(sv[0], "{\"ok\":", 6), 6); /* and then silence */
  GError *e = NULL;
  gint64 t0 = g_get_monotonic_time();
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 150, &e));
  gint64 waited = g_get_monotonic_time() - t0;
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_TIMEOUT));
  assert_string_equal(e->message, "no reply from vgpud within 150 ms");
  assert_true(waited >= 140000 && waited < 30000000); /* a timeout, not a hang */
  g_clear_error(&e);
  close(sv[0]);
  close(sv[1]);
}

/* ---- formatting ---------------------------------------------------------- */

static void test_table(void **state) {
  (void)state;
  static const char *const h[] = {"NAME", "VRAM", "FRAMES", NULL};
  g_autoptr(VgpuTable) t = vgpu_table_new(h);
  vgpu_table_add(t, "vgpu0", "2.2 MiB / 256 MiB (<1%)", "7462", NULL);
  vgpu_table_add(t, "a-much-longer-name", "0 B / 1 GiB (0%)", "0", NULL);
  vgpu_table_add(t, "short", NULL);           /* missing cells are blank */
  vgpu_table_add(t, "größe", "x", "1", NULL); /* padded by characters */
  assert_int_equal(vgpu_table_rows(t), 4);
  g_autofree char *s = vgpu_table_render(t);
  assert_string_equal(s, "NAME                VRAM                     FRAMES\n"
                         "vgpu0               2.2 MiB / 256 MiB (<1%)  7462\n"
                         "a-much-longer-name  0 B / 1 GiB (0%)         0\n"
                         "short\n"
                         "größe               x                        1\n");
}

static void test_units(void **state) {
  (void)state;
  const struct {
    uint64_t used, limit;
    const char *text;
  } bytes[] = {
      {2306867, 256u << 20, "2.2 MiB / 256 MiB (<1%)"},
      {13107200, 256u << 20, "12.5 MiB / 256 MiB (4%)"},
      {192u << 20, 256u << 20, "192 MiB / 256 MiB (75%)"},
      {0, 256u << 20, "0 B / 256 MiB (0%)"},
      {5, 0, "5 B / unlimited"},
      {25, 50, "25 B / 50 B (50%)"},
      {UINT64_MAX, UINT64_MAX, "16 EiB / 16 EiB (100%)"},
      {512u << 20, 256u << 20, "512 MiB / 256 MiB (200%)"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bytes); i++) {
    g_autofree char *s = vgpu_format_usage_bytes(bytes[i].used, bytes[i].limit);
    assert_string_equal(s, bytes[i].text);
  }
  g_autofree char *c1 = vgpu_format_usage_count(3, 0);
  assert_string_equal(c1, "3/unlimited");
  g_autofree char *c2 = vgpu_format_usage_count(12, 4096);
  assert_string_equal(c2, "12/4096");
  g_autofree char *l1 = vgpu_format_limit(0);
  assert_string_equal(l1, "unlimited");
  g_autofree char *l2 = vgpu_format_limit(64);
  assert_string_equal(l2, "64");

  const struct {
    uint64_t s;
    const char *t;
  } up[] = {{0, "0s"},         {45, "45s"},       {60, "1m00s"},
            {723, "12m03s"},   {3720, "1h02m"},   {10920, "3h02m"},
            {86399, "23h59m"}, {187200, "2d04h"}, {UINT64_MAX, "213503982334601d07h"}};
  for (size_t i = 0; i < G_N_ELEMENTS(up); i++) {
    g_autofree char *s = vgpu_format_uptime(up[i].s);
    assert_string_equal(s, up[i].t);
  }

  g_autofree char *r1 = vgpu_format_rate(100, 160, 1.0);
  assert_string_equal(r1, "60.0");
  g_autofree char *r2 = vgpu_format_rate(100, 130, 0.5);
  assert_string_equal(r2, "60.0");
  g_autofree char *r3 = vgpu_format_rate(100, 50, 1.0); /* counter went back */
  assert_string_equal(r3, "-");
  g_autofree char *r4 = vgpu_format_rate(100, 160, 0);
  assert_string_equal(r4, "-");
}

static void test_views(void **state) {
  (void)state;
  g_autoptr(JsonArray) list = parse_array("[" INSTANCE_VGPU0 "}, {\"name\":\"bare\"}, 7]");
  g_autofree char *l = vgpu_format_list(list);
  assert_string_equal(
      l, "NAME   PROFILE  STATE   CLIENTS      VMS  VRAM                     RESOURCES    "
         "CONTEXTS     GPU BUSY  FRAMES  REFUSALS  CRASHES\n"
         "vgpu0  medium   active  2/4          1    12.5 MiB / 256 MiB (4%)  12/4096      "
         "1/unlimited  137.5%    7462    2         0\n"
         "bare   -        -       0/unlimited  0    0 B / unlimited          0/unlimited  "
         "0/unlimited  -         0       0         0\n");

  g_autoptr(JsonArray) empty = parse_array("[]");
  g_autofree char *le = vgpu_format_list(empty);
  assert_non_null(strstr(le, "no instances"));
  g_autofree char *ln = vgpu_format_list(NULL);
  assert_non_null(strstr(ln, "NAME"));

  g_autoptr(JsonObject) in =
      parse_object(INSTANCE_VGPU0 ",\"tenants\":[" TENANT "," TENANT_VM "]}");
  g_autofree char *sh = vgpu_format_show(in);
  assert_string_equal(sh, "instance   vgpu0 (active, config)\n"
                          "profile    medium\n"
                          "socket     /run/vgpu/vgpu0/vtest.sock\n"
                          "vm socket  /run/vgpu/vgpu0/vhost-user.sock\n"
                          "clients    2/4 (1 VM)\n"
                          "VRAM       12.5 MiB / 256 MiB (4%)\n"
                          "resources  12/4096\n"
                          "contexts   1/unlimited\n"
                          "GPU busy   137.5% of the GPU over the last second\n"
                          "frames     7462   commands 90000   refusals 2   worker crashes 0\n"
                          "\n"
                          "KIND   WORKER  CLIENT  UID   PROCESS   GPU BUSY  VRAM      PEAK    "
                          "RESOURCES  CONTEXTS  FRAMES  UPTIME\n"
                          "vtest  4242    4240    1000  glxgears  12.5%     12.5 MiB  20 MiB  "
                          "12         1         7462    1h02m\n"
                          "vm     4250    4249    0     -         -         0 B       0 B     "
                          "0          0         0       5s\n");
  g_autoptr(JsonObject) lonely = parse_object(INSTANCE_VGPU0 ",\"tenants\":[]}");
  g_autofree char *sl = vgpu_format_show(lonely);
  assert_true(g_str_has_suffix(sl, "\n\nno tenants connected\n"));
  g_autofree char *snull = vgpu_format_show(NULL); /* reply without "instance" */
  assert_non_null(strstr(snull, "instance   ?"));
  /* Limits lowered below what the tenants hold: one line each, in show
   * (before the tenants) and for set. */
  g_autoptr(JsonObject) over = parse_object(
      INSTANCE_VGPU0 ",\"tenants\":[],\"over_limit\":["
                     "{\"kind\":\"vram\",\"limit\":1048576,\"held\":42152346,\"used\":40000000,"
                     "\"tenants\":2},"
                     "{\"kind\":\"resources\",\"limit\":10,\"held\":25,\"used\":25,"
                     "\"tenants\":1}]}");
  g_autofree char *ol = vgpu_format_over_limit(over);
  assert_string_equal(ol, "vgpu0: vram limit 1 MiB is below the 40.2 MiB its 2 tenants hold: they "
                          "keep what they hold; growth is refused until they hold less than 1 MiB\n"
                          "vgpu0: resources limit 10 is below the 25 its tenant holds: it keeps "
                          "what it holds; growth is refused until it holds less than 10\n");
  g_autofree char *so = vgpu_format_show(over);
  assert_non_null(strstr(so, "worker crashes 0\nvgpu0: vram limit 1 MiB"));
  assert_true(g_str_has_suffix(so, "less than 10\n\nno tenants connected\n"));
  g_autofree char *none = vgpu_format_over_limit(lonely);
  assert_string_equal(none, "");
  g_autofree char *onull = vgpu_format_over_limit(NULL);
  assert_string_equal(onull, "");

  g_autoptr(JsonArray) profiles = parse_array(
      "[{\"name\":\"small\",\"description\":\"for a desktop\",\"vram\":134217728,"
      "\"resources\":1024,\"contexts\":0,\"clients\":1,\"gpu_share\":\"fixed\",\"weight\":25,"
      "\"fps_cap\":30,\"heads\":1,\"available\":3,\"render_threads\":4},{\"name\":\"big\",\"vram\":"
      "0,"
      "\"gpu_share\":\"equal\",\"render_threads\":0}]");
  g_autofree char *p = vgpu_format_profiles(profiles);
  /* AVAILABLE: how many more fit the GPU memory; "-" when not said. */
  assert_string_equal(p,
                      "PROFILE  VRAM       AVAILABLE  RESOURCES  CONTEXTS   CLIENTS    SHARE     "
                      "HEADS  FPS CAP  THREADS  DESCRIPTION\n"
                      "small    128 MiB    3          1024       unlimited  1          fixed:25  "
                      "1      30       4        for a desktop\n"
                      "big      unlimited  -          unlimited  unlimited  unlimited  equal     "
                      "0      none     auto\n");
  /* What the daemon says it does not enforce is starred, with a note. */
  g_autoptr(JsonArray) unenforced = parse_array(
      "[{\"name\":\"large\",\"vram\":0,\"gpu_share\":\"fixed\",\"weight\":200,\"heads\":1,"
      "\"not_enforced\":[\"gpu_share\",\"weight\",\"fps_cap\",\"heads\"]},"
      "{\"name\":\"other\",\"vram\":0,\"gpu_share\":\"equal\",\"heads\":2,\"fps_cap\":60,"
      "\"not_enforced\":[\"heads\", 7]}]");
  g_autofree char *pu = vgpu_format_profiles(unenforced);
  assert_string_equal(pu, "PROFILE  VRAM       AVAILABLE  RESOURCES  CONTEXTS   CLIENTS    "
                          "SHARE       HEADS  FPS CAP  THREADS  DESCRIPTION\n"
                          "large    unlimited  -          unlimited  unlimited  unlimited  "
                          "fixed:200*  1*     none*    -\n"
                          "other    unlimited  -          unlimited  unlimited  unlimited  "
                          "equal       2*     60       -\n"
                          "* not enforced: vgpud was built without the GPU scheduler\n");
  g_autoptr(JsonObject) shared = parse_object(
      INSTANCE_VGPU0 ",\"gpu_share\":\"equal\",\"weight\":100,\"not_enforced\":[\"gpu_share\"]}");
  g_autofree char *ss = vgpu_format_show(shared);
  assert_non_null(strstr(ss, "\ngpu share  equal (weight 100), not enforced\n"));
  assert_null(strstr(ss, "threads")); /* not in the reply: not shown */
  g_autoptr(JsonObject) threaded = parse_object(INSTANCE_VGPU0 ",\"render_threads\":2}");
  g_autofree char *sth = vgpu_format_show(threaded);
  assert_non_null(strstr(sth, "\nthreads    2 (llvmpipe, per worker)\n"));

  g_autoptr(JsonObject) d = parse_object(
      "{\"version\":\"0.1.0\",\"pid\":77,\"uptime_s\":3725,\"runtime_dir\":\"/run/vgpu\","
      "\"renderer\":\"virgl\",\"config\":\"/etc/vgpu/vgpud.conf\"}");
  g_autofree char *st = vgpu_format_status(d, NULL);
  assert_string_equal(st, "vgpud 0.1.0, pid 77, up 1h02m\n"
                          "runtime dir    /run/vgpu\n"
                          "configuration  /etc/vgpu/vgpud.conf\n"
                          "renderer       virgl\n");
  /* Per instance: what its workers offer, still probing, or unknown. */
  g_autoptr(JsonObject) sr =
      parse_object("{\"instances\":["
                   "{\"name\":\"vgpu0\",\"renderer\":{\"name\":\"virgl\",\"state\":\"ready\","
                   "\"description\":\"virgl (llvmpipe)\",\"vtest_protocols\":[0,2],\"capsets\":["
                   "{\"id\":1,\"name\":\"virgl\",\"version\":1,\"size\":308},"
                   "{\"id\":2,\"name\":\"virgl2\",\"version\":2,\"size\":1376}]}},"
                   "{\"name\":\"vgpu1\",\"renderer\":{\"name\":\"virgl\",\"state\":\"probing\"}},"
                   "{\"name\":\"vgpu2\",\"renderer\":{\"name\":\"null\",\"state\":\"unknown\","
                   "\"reason\":\"no answer within 10 s: killed\"}},"
                   "{\"name\":\"vgpu3\",\"renderer\":{\"name\":\"null\",\"state\":\"ready\","
                   "\"description\":\"null\",\"vtest_protocols\":[0,2,\"x\"],\"capsets\":[7]}}]}");
  g_autofree char *sti = vgpu_format_status(NULL, vgpu_ctl_get_array(sr, "instances"));
  assert_string_equal(sti, "vgpud ?, pid 0, up 0s\n"
                           "runtime dir    -\n"
                           "configuration  -\n"
                           "renderer       -\n"
                           "\ninstance vgpu0\n"
                           "  renderer         virgl: virgl (llvmpipe)\n"
                           "  vtest protocols  0, 2\n"
                           "  capsets          virgl v1 (308 B), virgl2 v2 (1376 B)\n"
                           "\ninstance vgpu1\n"
                           "  renderer         virgl\n"
                           "  vtest protocols  probing\n"
                           "  capsets          probing\n"
                           "\ninstance vgpu2\n"
                           "  renderer         null\n"
                           "  vtest protocols  unknown (no answer within 10 s: killed)\n"
                           "  capsets          unknown (no answer within 10 s: killed)\n"
                           "\ninstance vgpu3\n"
                           "  renderer         null: null\n"
                           "  vtest protocols  0, 2\n"
                           "  capsets          none\n");
}

static JsonArray *top_sample(uint64_t frames_a, uint64_t frames_b, bool with_b) {
  g_autofree char *json = g_strdup_printf(
      "[{\"name\":\"a\",\"usage\":{\"frames\":%" G_GUINT64_FORMAT "}}%s%" G_GUINT64_FORMAT "%s]",
      frames_a, with_b ? ",{\"name\":\"b\",\"usage\":{\"frames\":" : "/*", frames_b,
      with_b ? "}}" : "*/");
  return parse_array(json);
}

static void test_top(void **state) {
  (void)state;
  g_autoptr(VgpuTop) top = vgpu_top_new();
  g_autoptr(JsonArray) s1 = top_sample(100, 0, true);
  g_autofree char *t1 = vgpu_top_screen(top, s1, 10 * G_USEC_PER_SEC);
  assert_true(vgpu_top_fps(top, "a") < 0); /* first screen: no rate yet */
  assert_non_null(strstr(t1, "FPS"));
  /* 2 s later: a drew 120 frames, b's counter went back (restarted). */
  g_autoptr(JsonArray) s2 = top_sample(220, 0, true);
  g_autofree char *t2 = vgpu_top_screen(top, s2, 12 * G_USEC_PER_SEC);
  assert_true(vgpu_top_fps(top, "a") > 59.99 && vgpu_top_fps(top, "a") < 60.01);
  assert_true(vgpu_top_fps(top, "b") == 0);
  assert_non_null(strstr(t2, "60.0"));
  g_autoptr(JsonArray) s3 = top_sample(250, 0, false);
  g_autofree char *t3 = vgpu_top_screen(top, s3, 13 * G_USEC_PER_SEC);
  assert_true(vgpu_top_fps(top, "a") > 29.99 && vgpu_top_fps(top, "a") < 30.01);
  assert_true(vgpu_top_fps(top, "b") < 0); /* gone from the screen */
  assert_non_null(strstr(t3, "30.0"));
  g_autoptr(JsonArray) s4 = top_sample(260, 5, true);
  g_autofree char *t4 = vgpu_top_screen(top, s4, 14 * G_USEC_PER_SEC);
  assert_true(vgpu_top_fps(top, "b") < 0); /* back, but no earlier reading */
  assert_non_null(strstr(t4, "10.0"));     /* a: 10 frames in 1 s */
  vgpu_top_free(NULL);
}

/* One instance "a" (fps-cap cap) with tenant 7 at these counters; with
 * throttled_ns and share_ppm only when given (>= 0). */
static JsonArray *top_tenant_sample(uint64_t frames, uint64_t busy_ns, int64_t throttled_ns,
                                    int64_t share_ppm, uint64_t cap) {
  g_autofree char *thr = throttled_ns >= 0
                             ? g_strdup_printf(",\"throttled_ns\":%" G_GINT64_FORMAT, throttled_ns)
                             : g_strdup("");
  g_autofree char *share = share_ppm >= 0
                               ? g_strdup_printf(",\"share_ppm\":%" G_GINT64_FORMAT, share_ppm)
                               : g_strdup("");
  g_autofree char *json = g_strdup_printf(
      "[{\"name\":\"a\",\"fps_cap\":%" G_GUINT64_FORMAT ",\"usage\":{\"frames\":%" G_GUINT64_FORMAT
      "},\"tenants\":[{\"worker_pid\":7,\"client_pid\":6,\"process\":\"glxgears\","
      "\"frames\":%" G_GUINT64_FORMAT ",\"busy_ns\":%" G_GUINT64_FORMAT "%s%s}]}]",
      cap, frames, frames, busy_ns, thr, share);
  return parse_array(json);
}

static double member_double(JsonArray *instances, const char *key) {
  JsonObject *t =
      vgpu_ctl_array_object(vgpu_ctl_get_array(vgpu_ctl_array_object(instances, 0), "tenants"), 0);
  JsonNode *n = json_object_get_member(t, key);
  assert_non_null(n);
  return JSON_NODE_HOLDS_NULL(n) ? -1 : json_node_get_double(n);
}

static void test_top_tenants(void **state) {
  (void)state;
  g_autoptr(VgpuTop) top = vgpu_top_new();
  /* First screen: no rates yet, the share already (50% = 500000 ppm). */
  g_autoptr(JsonArray) s1 = top_tenant_sample(100, 1000000000, 0, 500000, 30);
  g_autofree char *t1 = vgpu_top_screen(top, s1, 10 * G_USEC_PER_SEC);
  assert_true(member_double(s1, "busy_percent") < 0);
  assert_true(member_double(s1, "frames_per_s") < 0);
  assert_true(member_double(s1, "throttled_percent") < 0);
  assert_true(member_double(s1, "share_percent") > 49.99 &&
              member_double(s1, "share_percent") < 50.01);
  assert_non_null(strstr(t1, "glxgears"));
  assert_non_null(strstr(t1, "-/30"));
  /* 2 s later: 60 frames in 2 s (30/s against a cap of 30), 0.5 s busy
   * of 2 (25%), 1 s throttled of 2 (50%). */
  g_autoptr(JsonArray) s2 = top_tenant_sample(160, 1500000000, 1000000000, 500000, 30);
  g_autofree char *t2 = vgpu_top_screen(top, s2, 12 * G_USEC_PER_SEC);
  assert_true(fabs(member_double(s2, "frames_per_s") - 30.0) < 1e-9);
  assert_true(fabs(member_double(s2, "busy_percent") - 25.0) < 1e-9);
  assert_true(fabs(member_double(s2, "throttled_percent") - 50.0) < 1e-9);
  assert_non_null(strstr(t2, "30.0/30"));
  assert_non_null(strstr(t2, "25.0%"));
  assert_non_null(strstr(t2, "50.0%"));
  /* No throttled_ns and share 0 (best-effort): "-"; no cap: "/-"; a busy
   * counter that went back (a new worker in the same slot): no rate. */
  g_autoptr(JsonArray) s3 = top_tenant_sample(190, 1000, -1, 0, 0);
  g_autofree char *t3 = vgpu_top_screen(top, s3, 13 * G_USEC_PER_SEC);
  assert_true(member_double(s3, "throttled_percent") < 0);
  assert_true(member_double(s3, "share_percent") < 0);
  assert_true(member_double(s3, "busy_percent") < 0);
  assert_true(fabs(member_double(s3, "frames_per_s") - 30.0) < 1e-9);
  assert_non_null(strstr(t3, "30.0/-"));
  /* Counters near the largest JSON integer: only deltas are taken. */
  g_autoptr(JsonArray) s4 = top_tenant_sample(190, (uint64_t)G_MAXINT64 - 1000000000, -1, -1, 0);
  g_free(vgpu_top_screen(top, s4, 14 * G_USEC_PER_SEC));
  g_autoptr(JsonArray) s5 = top_tenant_sample(190, (uint64_t)G_MAXINT64, -1, -1, 0);
  g_free(vgpu_top_screen(top, s5, 15 * G_USEC_PER_SEC));
  assert_true(fabs(member_double(s5, "busy_percent") - 100.0) < 1e-6);
  assert_true(vgpu_top_elapsed(top) > 0.99 && vgpu_top_elapsed(top) < 1.01);
}

/* GPU busy figures and what `status` says the workers run on. */
static void test_utilisation_views(void **state) {
  (void)state;
  const struct {
    double v;
    const char *t;
  } busy[] = {{0, "0.0%"},         {0.04, "<0.1%"}, {0.05, "<0.1%"},   {0.1, "0.1%"},
              {37.25, "37.2%"},    {100, "100.0%"}, {250.5, "250.5%"}, {-1, "-"},
              {1e300, "99999.9%"}, {NAN, "-"}};
  for (size_t i = 0; i < G_N_ELEMENTS(busy); i++) {
    g_autofree char *b = vgpu_format_busy(busy[i].v);
    assert_string_equal(b, busy[i].t);
  }

  /* No render node: llvmpipe on EGL surfaceless, with what the probe saw. */
  g_autoptr(JsonObject) d =
      parse_object("{\"version\":\"0.1.0\",\"pid\":77,\"uptime_s\":5,\"renderer\":\"virgl\","
                   "\"render_node\":null,\"render_driver\":null}");
  g_autoptr(JsonObject) sr = parse_object(
      "{\"instances\":[{\"name\":\"a\",\"renderer\":{\"name\":\"virgl\",\"state\":\"probing\"}},"
      "{\"name\":\"b\",\"renderer\":{\"name\":\"virgl\",\"state\":\"ready\",\"description\":\"x\","
      "\"gl_renderer\":\"llvmpipe (LLVM 15.0.6, 256 bits)\","
      "\"gl_version\":\"4.5 (Core Profile) Mesa 22.3.6\",\"mesa_version\":\"22.3.6\","
      "\"virglrenderer_version\":\"0.10.4\","
      "\"virglrenderer_library\":\"/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1.7.7\"}}]}");
  g_autofree char *st = vgpu_format_status(d, vgpu_ctl_get_array(sr, "instances"));
  assert_non_null(strstr(st, "\nrenderer       virgl\n"
                             "render device  no render node, EGL surfaceless: llvmpipe (LLVM "
                             "15.0.6, 256 bits)\n"
                             "Mesa           22.3.6 (OpenGL 4.5 (Core Profile) Mesa 22.3.6)\n"
                             "virglrenderer  0.10.4 "
                             "(/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1.7.7)\n"));
  /* A render node with its driver; a GL version that names no Mesa. */
  g_autoptr(JsonObject) dn = parse_object("{\"renderer\":\"virgl\",\"render_node\":\"/dev/dri/"
                                          "renderD128\",\"render_driver\":\"i915\"}");
  g_autoptr(JsonObject) srn = parse_object(
      "{\"instances\":[{\"name\":\"a\",\"renderer\":{\"name\":\"virgl\",\"state\":\"ready\","
      "\"gl_renderer\":\"Mesa Intel(R) UHD Graphics 620 (KBL GT2)\",\"gl_version\":\"4.6 x\"}}]}");
  g_autofree char *stn = vgpu_format_status(dn, vgpu_ctl_get_array(srn, "instances"));
  assert_non_null(strstr(stn, "\nrender device  /dev/dri/renderD128 (driver i915): Mesa Intel(R) "
                              "UHD Graphics 620 (KBL GT2)\n"
                              "OpenGL         4.6 x\n"));
  assert_null(strstr(stn, "virglrenderer  "));
  /* Nothing probed yet, driver unknown: the node alone. */
  g_autoptr(JsonObject) du =
      parse_object("{\"renderer\":\"virgl\",\"render_node\":\"/dev/dri/renderD129\"}");
  g_autofree char *stu = vgpu_format_status(du, NULL);
  assert_non_null(strstr(stu, "\nrender device  /dev/dri/renderD129 (driver unknown)\n"));
  assert_null(strstr(stu, "Mesa"));
  /* A daemon that does not say: no device line at all. */
  g_autoptr(JsonObject) old = parse_object("{\"renderer\":\"virgl\"}");
  g_autofree char *sto = vgpu_format_status(old, vgpu_ctl_get_array(sr, "instances"));
  assert_null(strstr(sto, "render device"));

  /* top: on the first screen vgpud's own figures; later the deltas. */
  g_autoptr(VgpuTop) top = vgpu_top_new();
  g_autoptr(JsonArray) s1 = parse_array(
      "[{\"name\":\"a\",\"busy_percent\":40.0,\"usage\":{\"frames\":1,\"busy_ns\":1000000000},"
      "\"tenants\":[{\"worker_pid\":7,\"client_name\":\"glxgears\",\"busy_ns\":1000000000,"
      "\"busy_percent\":40.0}]}]");
  g_autofree char *t1 = vgpu_top_screen(top, s1, 10 * G_USEC_PER_SEC);
  assert_true(fabs(member_double(s1, "busy_percent") - 40.0) < 1e-9);
  JsonNode *ib = json_object_get_member(vgpu_ctl_array_object(s1, 0), "busy_percent");
  assert_true(fabs(json_node_get_double(ib) - 40.0) < 1e-9);
  assert_non_null(strstr(t1, "40.0%"));
  /* 1 s later the instance's busy_ns grew by 1.5 s (two tenants, one gone
   * meanwhile), the tenant's by 0.5 s. */
  g_autoptr(JsonArray) s2 = parse_array(
      "[{\"name\":\"a\",\"busy_percent\":40.0,\"usage\":{\"frames\":1,\"busy_ns\":2500000000},"
      "\"tenants\":[{\"worker_pid\":7,\"client_name\":\"glxgears\",\"busy_ns\":1500000000,"
      "\"busy_percent\":40.0}]}]");
  g_autofree char *t2 = vgpu_top_screen(top, s2, 11 * G_USEC_PER_SEC);
  assert_true(fabs(member_double(s2, "busy_percent") - 50.0) < 1e-9);
  ib = json_object_get_member(vgpu_ctl_array_object(s2, 0), "busy_percent");
  assert_true(fabs(json_node_get_double(ib) - 150.0) < 1e-9);
  assert_non_null(strstr(t2, "150.0%"));
  assert_non_null(strstr(t2, "50.0%"));
}

static void test_gpu_memory_line(void **state) {
  (void)state;
  g_autoptr(JsonObject) r =
      parse_object("{\"gpu_memory\":12455405158,\"overcommit\":1.0,"
                   "\"gpu_memory_assigned\":1342177280,\"gpu_memory_free\":11113227878}");
  g_autofree char *s = vgpu_format_gpu_memory(r);
  assert_string_equal(s, "GPU memory 11.6 GiB, overcommit 1.0: 1.2 GiB assigned, 10.3 GiB free\n");
  g_autoptr(JsonObject) r2 = parse_object("{\"gpu_memory\":1073741824,\"overcommit\":2.5,"
                                          "\"gpu_memory_assigned\":0,\"gpu_memory_free\":"
                                          "2684354560}");
  g_autofree char *s2 = vgpu_format_gpu_memory(r2);
  assert_string_equal(s2, "GPU memory 1 GiB, overcommit 2.5: 0 B assigned, 2.5 GiB free\n");
  g_autoptr(JsonObject) old = parse_object("{\"instances\":[]}");
  g_autofree char *s3 = vgpu_format_gpu_memory(old);
  assert_string_equal(s3, "");
  g_autoptr(JsonObject) d = parse_object(
      "{\"version\":\"0.1.0\",\"pid\":77,\"uptime_s\":5,\"gpu_memory\":1073741824,"
      "\"overcommit\":1,\"gpu_memory_assigned\":536870912,\"gpu_memory_free\":536870912}");
  g_autofree char *st = vgpu_format_status(d, NULL);
  assert_non_null(
      strstr(st, "\nGPU memory     1 GiB, overcommit 1.0: 512 MiB assigned, 512 MiB free\n"));
}

/* ---- a fake vgpud ------------------------------------------------------- */

/* Answers canned replies per the contract on DIR/control.sock, one request
 * per connection, in a thread; the replies go out in pieces so the client's
 * line reading is exercised end to end. */
typedef struct {
  char *dir;
  int listen_fd;
  GThread *thread;
  gint stop;
  GMutex lock;
  char *last_request; /* the most recent request line, for assertions */
  guint lists;        /* list requests seen: frames grow with each */
} FakeDaemon;

static char *fake_reply(FakeDaemon *f, JsonObject *req) {
  const char *cmd = vgpu_ctl_get_str(req, "command", "");
  const char *name = vgpu_ctl_get_str(req, "name", NULL);
  if (g_str_equal(cmd, "list")) {
    guint k;
    g_mutex_lock(&f->lock);
    k = f->lists++;
    g_mutex_unlock(&f->lock);
    return g_strdup_printf("{\"ok\":true,\"instances\":[{\"name\":\"vgpu0\",\"profile\":\"p\","
                           "\"state\":\"active\",\"limits\":{\"vram\":268435456},"
                           "\"usage\":{\"vram\":0,\"frames\":%u}}]}",
                           100 + 6 * k);
  }
  if (g_str_equal(cmd, "show") && name && g_str_equal(name, "vgpu0"))
    return g_strdup("{\"ok\":true,\"instance\":" INSTANCE_VGPU0 ",\"tenants\":[" TENANT "]}}");
  /* Applied, but the state file could not keep it. */
  if (g_str_equal(cmd, "set") && name && g_str_equal(name, "vgpu0"))
    return g_strdup("{\"ok\":true,\"instance\":{\"name\":\"vgpu0\"},"
                    "\"warning\":\"not kept: No space left on device\"}");
  if (g_str_equal(cmd, "show") || g_str_equal(cmd, "set") || g_str_equal(cmd, "destroy"))
    return g_strdup_printf("{\"ok\":false,\"error\":\"no instance \\\"%s\\\"\"}", name ? name : "");
  if (g_str_equal(cmd, "status"))
    return g_strdup("{\"ok\":true,\"daemon\":{\"version\":\"0.1.0\",\"pid\":77,"
                    "\"uptime_s\":5,\"runtime_dir\":\"/x\",\"renderer\":\"null\","
                    "\"config\":\"<embedded>\"}}");
  if (g_str_equal(cmd, "create"))
    return g_strdup("{\"ok\":true,\"instance\":{\"name\":\"t1\"}}");
  if (g_str_equal(cmd, "reload"))
    return g_strdup("{\"ok\":true}");
  return g_strdup("{\"ok\":false,\"error\":\"unknown command\"}");
}

static void fake_serve(FakeDaemon *f, int fd) {
  g_autofree char *line = vgpu_ctl_read_line(fd, 65536, 5000, NULL);
  if (!line)
    return;
  g_mutex_lock(&f->lock);
  g_free(f->last_request);
  f->last_request = g_strdup(line);
  g_mutex_unlock(&f->lock);
  g_autoptr(JsonParser) p = json_parser_new();
  if (!json_parser_load_from_data(p, line, -1, NULL) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    return;
  JsonObject *req = json_node_get_object(json_parser_get_root(p));
  if (g_str_equal(vgpu_ctl_get_str(req, "command", ""), "hang")) {
    /* Never answer; wait for the client to give up and hang up. */
    g_free(vgpu_ctl_read_line(fd, 16, 10000, NULL));
    return;
  }
  g_autofree char *reply = fake_reply(f, req);
  size_t len = strlen(reply), half = len / 2;
  if (vgpu_write_all(fd, reply, half) < 0)
    return;
  g_usleep(5000);
  if (vgpu_write_all(fd, reply + half, len - half) == 0)
    (void)vgpu_write_all(fd, "\n", 1);
}

static gpointer fake_main(gpointer data) {
  FakeDaemon *f = data;
  while (!g_atomic_int_get(&f->stop)) {
    struct pollfd p = {.fd = f->listen_fd, .events = POLLIN};
    if (poll(&p, 1, 50) <= 0)
      continue;
    vgpu_autofd int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    vgpu_set_nonblock(fd, false);
    fake_serve(f, fd);
  }
  return NULL;
}

static int fake_start(void **state) {
  FakeDaemon *f = g_new0(FakeDaemon, 1);
  f->dir = g_dir_make_tmp("vgpuctl-test-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(f->dir, "control.sock", NULL);
  f->listen_fd = vgpu_listen_unix(path, 0600, 8);
  if (f->listen_fd < 0)
    return -1;
  g_mutex_init(&f->lock);
  f->thread = g_thread_new("fake-vgpud", fake_main, f);
  *state = f;
  return 0;
}

static int fake_stop(void **state) {
  FakeDaemon *f = *state;
  g_atomic_int_set(&f->stop, 1);
  g_thread_join(f->thread);
  vgpu_close(f->listen_fd);
  g_autofree char *path = g_build_filename(f->dir, "control.sock", NULL);
  unlink(path);
  rmdir(f->dir);
  g_free(f->dir);
  g_free(f->last_request);
  g_mutex_clear(&f->lock);
  g_free(f);
  return 0;
}

static char *fake_last_request(FakeDaemon *f) {
  g_mutex_lock(&f->lock);
  char *s = g_strdup(f->last_request);
  g_mutex_unlock(&f->lock);
  return s;
}

static void test_client_against_fake(void **state) {
  FakeDaemon *f = *state;
  GError *e = NULL;
  g_autoptr(JsonObject) req = vgpu_ctl_request("status", NULL);
  g_autoptr(JsonObject) r = vgpu_ctl_transact(f->dir, req, 5000, &e);
  assert_non_null(r);
  assert_int_equal(vgpu_ctl_get_u64(vgpu_ctl_get_object(r, "daemon"), "pid"), 77);

  g_autoptr(JsonObject) bad = vgpu_ctl_request("show", "nosuch");
  assert_null(vgpu_ctl_transact(f->dir, bad, 5000, &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_REFUSED));
  assert_string_equal(e->message, "no instance \"nosuch\"");
  g_clear_error(&e);

  /* A daemon that accepts and never answers: a timeout, not a hang. */
  g_autoptr(JsonObject) hang = vgpu_ctl_request("hang", NULL);
  assert_null(vgpu_ctl_transact(f->dir, hang, 200, &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_TIMEOUT));
  g_clear_error(&e);

  /* Nobody listening. */
  g_autofree char *empty = g_dir_make_tmp("vgpuctl-test-XXXXXX", NULL);
  assert_null(vgpu_ctl_connect(empty, &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT));
  g_autofree char *want =
      g_strdup_printf("cannot connect to vgpud at %s/control.sock: No such file or directory "
                      "(is vgpud running? see --runtime-dir)",
                      empty);
  assert_string_equal(e->message, want);
  g_clear_error(&e);
  rmdir(empty);
}

/* ---- vgpuctl itself ------------------------------------------------------ */

/* meson passes the built vgpuctl in $VGPUCTL. */
static char *vgpuctl_path(void) {
  const char *p = g_getenv("VGPUCTL");
  return p && g_file_test(p, G_FILE_TEST_IS_EXECUTABLE) ? g_strdup(p) : NULL;
}

/* Runs vgpuctl with the arguments (NULL-terminated); returns its exit
 * status and hands back stdout and stderr. */
static int run_ctl(char **out, char **err, const char *first, ...) {
  g_autofree char *exe = vgpuctl_path();
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, exe);
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *))
    g_ptr_array_add(argv, (gpointer)a);
  va_end(ap);
  g_ptr_array_add(argv, NULL);
  int status = -1;
  fflush(NULL);
  if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, out, err,
                    &status, NULL))
    return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_vgpuctl_end_to_end(void **state) {
  FakeDaemon *f = *state;
  g_autofree char *exe = vgpuctl_path();
  if (!exe)
    fail_msg("$VGPUCTL does not name the built vgpuctl (run the test with meson test)");
  const char *d = f->dir;
  char *out = NULL, *err = NULL;

  assert_int_equal(run_ctl(&out, &err, "--runtime-dir", d, "list", NULL), 0);
  assert_true(g_str_has_prefix(out, "NAME   PROFILE  STATE   CLIENTS"));
  assert_non_null(strstr(out, "vgpu0  p        active  0/unlimited  0    0 B / 256 MiB (0%)"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* --json: the daemon's object, pretty-printed and parseable. */
  assert_int_equal(run_ctl(&out, &err, "show", "vgpu0", "--json", "-r", d, NULL), 0);
  g_autoptr(JsonObject) shown = parse_object(out);
  JsonObject *in = vgpu_ctl_get_object(shown, "instance");
  assert_int_equal(json_array_get_length(vgpu_ctl_get_array(in, "tenants")), 1);
  assert_non_null(strchr(out, '\n'));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  assert_int_equal(run_ctl(&out, &err, "-r", d, "show", "vgpu0", NULL), 0);
  assert_non_null(strstr(out, "KIND   WORKER  CLIENT  UID"));
  assert_non_null(strstr(out, "1h02m"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* The daemon's refusal, verbatim, and exit status 1. */
  assert_int_equal(run_ctl(&out, &err, "-r", d, "show", "nosuch", NULL), 1);
  assert_string_equal(err, "vgpuctl: no instance \"nosuch\"\n");
  assert_string_equal(out, "");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* Requests as the contract spells them. */
  assert_int_equal(run_ctl(&out, &err, "-r", d, "destroy", "vgpu9", "--force", NULL), 1);
  g_autofree char *destroy = fake_last_request(f);
  assert_string_equal(destroy, "{\"command\":\"destroy\",\"name\":\"vgpu9\",\"force\":true}");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  assert_int_equal(run_ctl(&out, &err, "-r", d, "create", "t1", "--profile=p", NULL), 0);
  assert_string_equal(out, "created t1 from profile p\n");
  g_autofree char *create = fake_last_request(f);
  assert_string_equal(create, "{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"p\"}");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  assert_int_equal(run_ctl(&out, &err, "-r", d, "set", "nope", "vram=1G", "heads=2", NULL), 1);
  g_autofree char *set = fake_last_request(f);
  assert_string_equal(set, "{\"command\":\"set\",\"name\":\"nope\",\"settings\":"
                           "{\"vram\":\"1G\",\"heads\":\"2\"}}");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  /* A change in force but not kept: done, the warning, and 1 (as for
   * create, destroy, reload and reset). */
  assert_int_equal(run_ctl(&out, &err, "-r", d, "set", "vgpu0", "vram=1G", NULL), 1);
  assert_string_equal(out, "updated vgpu0\n");
  assert_string_equal(err, "vgpuctl: warning: not kept: No space left on device\n");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* top: N screens, no clearing on a pipe, a rate from the second on. */
  assert_int_equal(
      run_ctl(&out, &err, "-r", d, "top", "--iterations", "3", "--interval", "0.1", NULL), 0);
  assert_null(strchr(out, '\033'));
  g_auto(GStrv) screens = g_strsplit(out, "vgpuctl top", -1);
  assert_int_equal(g_strv_length(screens), 4);
  assert_non_null(strstr(screens[1], "  -  "));
  /* The instance table (the tenants' follows a blank line) has its rate. */
  char *blank = strstr(screens[3], "\n\n");
  assert_non_null(blank);
  *blank = '\0';
  assert_null(strstr(screens[3], "  -  "));
  assert_non_null(strstr(blank + 2, "GPU BUSY"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  /* --json: one compact object per line, each instance as `show` has it. */
  assert_int_equal(
      run_ctl(&out, &err, "-r", d, "--json", "top", "--iterations", "2", "--interval", "0.1", NULL),
      0);
  g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
  assert_int_equal(g_strv_length(lines), 3);
  assert_string_equal(lines[2], "");
  for (int i = 0; i < 2; i++) {
    g_autoptr(JsonObject) o = parse_object(lines[i]);
    JsonArray *ins = vgpu_ctl_get_array(o, "instances");
    JsonObject *t0 =
        vgpu_ctl_array_object(vgpu_ctl_get_array(vgpu_ctl_array_object(ins, 0), "tenants"), 0);
    assert_non_null(t0);
    assert_true(json_object_has_member(t0, "busy_percent"));
    assert_true(json_object_has_member(o, "elapsed_s"));
  }
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* Usage errors: 2, and nothing sent. */
  const char *const usage[][4] = {
      {"create", "t2", NULL},           {"set", "vgpu0", "novalue", NULL},
      {"list", "extra", NULL},          {"bogus", NULL},
      {"top", "--interval", "0", NULL}, {"top", "--iterations", "x", NULL},
      {"list", "--force", NULL},        {"--frobnicate", NULL},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(usage); i++) {
    assert_int_equal(
        run_ctl(&out, &err, "-r", d, usage[i][0], usage[i][1], usage[i][2], usage[i][3], NULL), 2);
    assert_true(g_str_has_prefix(err, "vgpuctl: "));
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);
  }

  /* Help for the tool and for a command; --version. */
  assert_int_equal(run_ctl(&out, &err, "--help", NULL), 0);
  assert_non_null(strstr(out, "destroy NAME [--force]"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  assert_int_equal(run_ctl(&out, &err, "set", "--help", NULL), 0);
  assert_non_null(strstr(out, "max-clients"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  assert_int_equal(run_ctl(&out, &err, "--version", NULL), 0);
  assert_true(g_str_has_prefix(out, "vgpuctl "));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* Nobody there: 3. */
  g_autofree char *nowhere = g_build_filename(d, "absent", NULL);
  assert_int_equal(run_ctl(&out, &err, "-r", nowhere, "status", NULL), 3);
  assert_non_null(strstr(err, "is vgpud running?"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* --json errors: one JSON object on stdout, nothing on stderr, the same
   * status as without --json. */
  const struct {
    const char *argv[5];
    int code;
    const char *kind, *error;
  } jerr[] = {
      {{"-r", d, "show", "nosuch", "--json"}, 1, "refused", "no instance \"nosuch\""},
      {{"--json", "-r", d, "bogus", NULL}, 2, "usage", "unknown command \"bogus\" (try --help)"},
      {{"--frobnicate", "--json", NULL}, 2, "usage", "unknown option --frobnicate (try --help)"},
      {{"--json", "-r", d, "set", "vgpu0"}, 2, "usage", NULL},
      {{"--json", NULL}, 2, "usage", "no command given (try --help)"},
      {{"--json", "-r", nowhere, "status", NULL}, 3, "unreachable", NULL},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(jerr); i++) {
    const char *const *a = jerr[i].argv;
    assert_int_equal(run_ctl(&out, &err, a[0], a[1], a[2], a[3], a[4], NULL), jerr[i].code);
    assert_string_equal(err, "");
    g_autoptr(JsonObject) o = parse_object(out);
    assert_int_equal(vgpu_ctl_get_u64(o, "code"), jerr[i].code);
    assert_string_equal(vgpu_ctl_get_str(o, "kind", ""), jerr[i].kind);
    if (jerr[i].error)
      assert_string_equal(vgpu_ctl_get_str(o, "error", ""), jerr[i].error);
    else
      assert_true(*vgpu_ctl_get_str(o, "error", ""));
    assert_int_equal(strlen(out), strcspn(out, "\n") + 1); /* one line */
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encode_requests),
      cmocka_unit_test(test_parse_reply),
      cmocka_unit_test(test_lenient_getters),
      cmocka_unit_test(test_read_line_partial),
      cmocka_unit_test(test_read_line_limits),
      cmocka_unit_test(test_read_line_timeout),
      cmocka_unit_test(test_table),
      cmocka_unit_test(test_units),
      cmocka_unit_test(test_views),
      cmocka_unit_test(test_top),
      cmocka_unit_test(test_top_tenants),
      cmocka_unit_test(test_gpu_memory_line),
      cmocka_unit_test(test_utilisation_views),
      cmocka_unit_test_setup_teardown(test_client_against_fake, fake_start, fake_stop),
      cmocka_unit_test_setup_teardown(test_vgpuctl_end_to_end, fake_start, fake_stop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
