/* Configuration: the embedded default and the example file, overrides,
 * every refusal with its FILE:LINE, the size and count syntax, run-time
 * settings and the runtime directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"

/* ---- the default and the example file ----------------------------------- */

static void check_profile(const VgpuConfig *c, const char *name, uint64_t vram, uint64_t res,
                          uint64_t ctx, uint64_t clients, VgpuShareMode share, uint32_t weight) {
  const VgpuProfile *p = vgpu_config_find_profile(c, name);
  if (!p)
    fail_msg("no profile %s", name);
  assert_string_equal(p->name, name);
  assert_non_null(p->description);
  assert_int_equal(p->vram, vram);
  assert_int_equal(p->max_resources, res);
  assert_int_equal(p->max_contexts, ctx);
  assert_int_equal(p->max_clients, clients);
  assert_int_equal(p->share, share);
  assert_int_equal(p->weight, weight);
  assert_int_equal(p->fps_cap, 0);
  assert_int_equal(p->heads, 1);
}

static void check_default_shape(const VgpuConfig *c) {
  assert_int_equal(c->profiles->len, 4);
  check_profile(c, "tiny", 8u << 20, 256, 8, 2, VGPU_SHARE_EQUAL, 100);
  check_profile(c, "small", 256u << 20, 4096, 16, 4, VGPU_SHARE_EQUAL, 100);
  check_profile(c, "medium", 1u << 30, 16384, 64, 8, VGPU_SHARE_EQUAL, 100);
  check_profile(c, "large", 4ull << 30, 65536, 256, 16, VGPU_SHARE_FIXED, 200);
  assert_int_equal(c->instances->len, 2);
  const VgpuInstanceConfig *v0 = vgpu_config_find_instance(c, "vgpu0");
  const VgpuInstanceConfig *v1 = vgpu_config_find_instance(c, "vgpu1");
  assert_non_null(v0);
  assert_non_null(v1);
  assert_string_equal(v0->profile, "small");
  assert_string_equal(v0->eff.name, "small");
  assert_string_equal(v1->profile, "medium");
  assert_int_equal(v0->eff.vram, 256u << 20);
  assert_int_equal(v0->eff.max_clients, 4);
  assert_int_equal(v1->eff.vram, 1u << 30);
  assert_int_equal(v1->eff.max_resources, 16384);
  assert_int_equal(v1->eff.max_contexts, 64);
  assert_int_equal(v1->eff.max_clients, 8);
  assert_int_equal(v0->eff.max_stream_objects, 16384);
  assert_int_equal(v1->eff.max_stream_objects, 65536);
  assert_int_equal(v0->socket_mode, 0666);
  assert_int_equal(v1->socket_mode, 0666);
  assert_null(vgpu_config_find_instance(c, "vgpu2"));
  assert_null(vgpu_config_find_profile(c, "huge"));
  assert_null(c->runtime_dir);
  assert_null(c->worker_path);
  assert_int_equal(c->log_level, VGPU_LOG_INFO);
  assert_string_equal(c->renderer, "virgl");
  assert_string_equal(c->render_node, "auto");
  assert_int_equal(c->idle_timeout_s, 0);
  assert_int_equal(c->max_submit_bytes, 64u << 20);
  assert_true(c->sandbox);
  assert_true(c->shader_cache);
  assert_int_equal(c->worker_uid_first, 61184);
  assert_int_equal(c->worker_uid_last, 65519);
  assert_int_equal(vgpu_config_find_profile(c, "small")->host_memory, 2ull << 30);
  assert_int_equal(vgpu_config_find_profile(c, "large")->host_memory, 8ull << 30);
}

static void test_default(void **state) {
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_default(&e);
  assert_non_null(c);
  assert_null(e);
  assert_string_equal(c->source, "<embedded>");
  check_default_shape(c);
  /* The daemon picks the runtime directory; the default must not. */
  assert_null(strstr(vgpu_config_default_text(), "runtime-dir"));
  vgpu_config_free(c);
}

/* Key, value and group lines only: comments and blank lines dropped. */
static char *settings_of(const char *text) {
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GString *s = g_string_new(NULL);
  for (int i = 0; lines[i]; i++) {
    const char *l = g_strstrip(lines[i]);
    if (*l && *l != '#')
      g_string_append_printf(s, "%s\n", l);
  }
  return g_string_free(s, FALSE);
}

/* etc/vgpud.conf is the default with comments: same settings, same lines. */
static void test_example_file(void **state) {
  g_autofree char *path = g_build_filename(VGPU_SOURCE_DIR, "etc", "vgpud.conf", NULL);
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_file(path, &e);
  if (!c)
    fail_msg("%s", e->message);
  assert_string_equal(c->source, path);
  check_default_shape(c);
  for (guint i = 0; i < c->profiles->len; i++) {
    const VgpuProfile *p = g_ptr_array_index(c->profiles, i);
    VgpuConfig *d = vgpu_config_load_default(NULL);
    assert_string_equal(p->description, vgpu_config_find_profile(d, p->name)->description);
    vgpu_config_free(d);
  }
  vgpu_config_free(c);
  g_autofree char *text = NULL;
  assert_true(g_file_get_contents(path, &text, NULL, NULL));
  g_autofree char *a = settings_of(text);
  g_autofree char *b = settings_of(vgpu_config_default_text());
  assert_string_equal(a, b);
}

static void test_empty(void **state) {
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data("", -1, "empty.conf", &e);
  assert_non_null(c);
  assert_int_equal(c->profiles->len, 0);
  assert_int_equal(c->instances->len, 0);
  vgpu_config_free(c);
  /* Profiles and no instance is fine: instances may come from vgpuctl. */
  c = vgpu_config_load_data("# nothing\n\n[profile p]\nvram=1M\n", -1, "p.conf", &e);
  assert_non_null(c);
  assert_int_equal(c->instances->len, 0);
  vgpu_config_free(c);
  vgpu_config_free(NULL);
}

/* ---- overrides ------------------------------------------------------------ */

static void test_overrides(void **state) {
  /* The instance comes first: profiles are found wherever they stand. */
  const char *text = "[instance a]\nprofile=p\nvram=1.5G\nmax-clients=unlimited\n"
                     "socket-mode=0660\nheads=4\nfps-cap=30\n\n"
                     "[instance b]\nprofile=p\n\n"
                     "[profile p]\ndescription=Test profile\nvram=64M\nmax-clients=3\n"
                     "max-resources=100\ngpu-share=fixed\nweight=300\n\n"
                     "[profile bare]\n";
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "t.conf", &e);
  if (!c)
    fail_msg("%s", e->message);
  const VgpuInstanceConfig *a = vgpu_config_find_instance(c, "a");
  assert_string_equal(a->profile, "p");
  assert_int_equal(a->eff.vram, 3ull << 29);
  assert_int_equal(a->eff.max_clients, 0);
  assert_int_equal(a->eff.max_resources, 100); /* inherited */
  assert_int_equal(a->eff.share, VGPU_SHARE_FIXED);
  assert_int_equal(a->eff.weight, 300);
  assert_int_equal(a->eff.heads, 4);
  assert_int_equal(a->eff.fps_cap, 30);
  assert_int_equal(a->socket_mode, 0660);
  assert_string_equal(a->eff.description, "Test profile");
  /* Overrides stay in their instance. */
  const VgpuInstanceConfig *b = vgpu_config_find_instance(c, "b");
  assert_int_equal(b->eff.vram, 64u << 20);
  assert_int_equal(b->eff.max_clients, 3);
  assert_int_equal(b->eff.heads, 1);
  assert_int_equal(b->socket_mode, 0666);
  const VgpuProfile *p = vgpu_config_find_profile(c, "p");
  assert_int_equal(p->vram, 64u << 20);
  assert_int_equal(p->max_clients, 3);
  /* An empty profile: no limits, equal share, weight 100, one head. */
  const VgpuProfile *bare = vgpu_config_find_profile(c, "bare");
  assert_int_equal(bare->vram, 0);
  assert_int_equal(bare->max_resources, 0);
  assert_int_equal(bare->max_contexts, 0);
  assert_int_equal(bare->max_clients, 0);
  assert_int_equal(bare->share, VGPU_SHARE_EQUAL);
  assert_int_equal(bare->weight, 100);
  assert_int_equal(bare->heads, 1);
  assert_int_equal(bare->max_stream_objects, 65536); /* bounded even when unset */
  assert_int_equal(bare->max_syncs, 1024);
  assert_null(bare->description);
  vgpu_config_free(c);
}

static void test_daemon_keys(void **state) {
  const char *text = "[daemon]\nruntime-dir=/srv/vgpu\nlog-level=debug\nrenderer=null\n"
                     "render-node=/dev/dri/renderD129\nworker=/opt/vgpu/vgpu-worker\n"
                     "idle-timeout=30\nmax-submit-bytes=1M\nsandbox=false\n"
                     "worker-uid-range=70000-70099\nshader-cache=off\n";
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "d.conf", &e);
  if (!c)
    fail_msg("%s", e->message);
  assert_string_equal(c->runtime_dir, "/srv/vgpu");
  assert_int_equal(c->log_level, VGPU_LOG_DEBUG);
  assert_string_equal(c->renderer, "null");
  assert_string_equal(c->render_node, "/dev/dri/renderD129");
  assert_string_equal(c->worker_path, "/opt/vgpu/vgpu-worker");
  assert_int_equal(c->idle_timeout_s, 30);
  assert_int_equal(c->max_submit_bytes, 1u << 20);
  assert_false(c->sandbox);
  assert_false(c->shader_cache);
  assert_int_equal(c->worker_uid_first, 70000);
  assert_int_equal(c->worker_uid_last, 70099);
  /* Not given: the defaults. */
  assert_int_equal(c->header_timeout_s, 10);
  assert_int_equal(c->control_timeout_s, 30);
  assert_int_equal(c->max_control_conns, 64);
  assert_int_equal(c->max_control_conns_per_uid, 8);
  assert_null(c->admin_group);
  vgpu_config_free(c);
}

/* host-memory: every worker has a cap, within bounds; an instance may
 * change its profile's; a profile without the key gets 2 GiB. */
static void test_host_memory(void **state) {
  const char *text = "[profile p]\nvram=1M\nhost-memory=512M\n[profile q]\nvram=1M\n"
                     "[instance a]\nprofile=p\nhost-memory=3G\n[instance b]\nprofile=p\n";
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "h.conf", &e);
  if (!c)
    fail_msg("%s", e->message);
  assert_int_equal(vgpu_config_find_profile(c, "p")->host_memory, 512ull << 20);
  assert_int_equal(vgpu_config_find_profile(c, "q")->host_memory, 2ull << 30);
  assert_int_equal(vgpu_config_find_instance(c, "a")->eff.host_memory, 3ull << 30);
  assert_int_equal(vgpu_config_find_instance(c, "b")->eff.host_memory, 512ull << 20);
  vgpu_config_free(c);
  static const char *const bad[] = {"host-memory=63M", "host-memory=unlimited",
                                    "host-memory=0", "host-memory=2T", "host-memory=lots"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autofree char *t = g_strdup_printf("[profile p]\n%s\n", bad[i]);
    c = vgpu_config_load_data(t, -1, "h.conf", &e);
    if (c)
      fail_msg("%s was accepted", bad[i]);
    assert_true(g_str_has_prefix(e->message, "h.conf:2: bad value"));
    g_clear_error(&e);
  }
  /* The lower and upper bounds themselves are fine. */
  c = vgpu_config_load_data("[profile p]\nhost-memory=64M\n[profile q]\nhost-memory=1T\n", -1,
                            "h.conf", &e);
  assert_non_null(c);
  vgpu_config_free(c);
}

static void test_worker_uid_range(void **state) {
  static const char *const bad[] = {"0-100", "100-99", "5", "1-2-3", "a-b", "-5-10",
                                    "100-2147483647", ""};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autofree char *t = g_strdup_printf("[daemon]\nworker-uid-range=%s\n", bad[i]);
    GError *e = NULL;
    VgpuConfig *c = vgpu_config_load_data(t, -1, "u.conf", &e);
    if (c)
      fail_msg("worker-uid-range=%s was accepted", bad[i]);
    assert_true(g_str_has_prefix(e->message, "u.conf:2: bad value"));
    g_clear_error(&e);
  }
}

static void expect_error(const char *text, const char *prefix);

/* The daemon's own limits: values, bounds, and the per-uid client limit
 * derived from max-clients unless given. */
static void test_daemon_limits(void **state) {
  const char *text = "[daemon]\nheader-timeout=3\ncontrol-timeout=0\nmax-control-connections=5\n"
                     "max-control-connections-per-uid=2\nadmin-group=vgpu-admin\n\n"
                     "[profile a]\nmax-clients=5\n[profile b]\nmax-clients=5\n"
                     "max-clients-per-uid=unlimited\n[profile c]\n"
                     "[instance i]\nprofile=a\nmax-clients-per-uid=1\n";
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "d.conf", &e);
  if (!c)
    fail_msg("%s", e->message);
  assert_int_equal(c->header_timeout_s, 3);
  assert_int_equal(c->control_timeout_s, 0);
  assert_int_equal(c->max_control_conns, 5);
  assert_int_equal(c->max_control_conns_per_uid, 2);
  assert_string_equal(c->admin_group, "vgpu-admin");
  assert_int_equal(vgpu_profile_clients_per_uid(vgpu_config_find_profile(c, "a")), 3);
  assert_int_equal(vgpu_profile_clients_per_uid(vgpu_config_find_profile(c, "b")), 0);
  assert_int_equal(vgpu_profile_clients_per_uid(vgpu_config_find_profile(c, "c")), 0);
  assert_int_equal(vgpu_profile_clients_per_uid(&vgpu_config_find_instance(c, "i")->eff), 1);
  vgpu_config_free(c);
  expect_error("[daemon]\nheader-timeout=86401\n", "x.conf:2: bad value \"86401\" for header-timeout");
  expect_error("[daemon]\ncontrol-timeout=-1\n", "x.conf:2: bad value \"-1\" for control-timeout");
  expect_error("[daemon]\nmax-control-connections=0\n",
               "x.conf:2: bad value \"0\" for max-control-connections");
  expect_error("[daemon]\nmax-control-connections-per-uid=65537\n",
               "x.conf:2: bad value \"65537\" for max-control-connections-per-uid");
  expect_error("[daemon]\nadmin-group=a b\n", "x.conf:2: bad value \"a b\" for admin-group");
  expect_error("[profile p]\nmax-clients-per-uid=x\n",
               "x.conf:2: bad value \"x\" for max-clients-per-uid");
}

/* ---- refusals ------------------------------------------------------------- */

/* The message must start with `prefix` (FILE:LINE: reason...). */
static void expect_error(const char *text, const char *prefix) {
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "x.conf", &e);
  if (c)
    fail_msg("accepted, expected \"%s\":\n%s", prefix, text);
  assert_non_null(e);
  assert_true(e->domain == G_KEY_FILE_ERROR);
  if (!g_str_has_prefix(e->message, prefix))
    fail_msg("expected \"%s...\", got \"%s\"", prefix, e->message);
  g_error_free(e);
}

static void test_errors_with_lines(void **state) {
  expect_error("[profile small]\nvram=1M\n\n\n\n# typo below\n\n\n\n\n\nvrma=2\n",
               "x.conf:12: unknown key \"vrma\" in [profile small]");
  expect_error("[profile p]\nvram=1M\n\n[instance a]\nprofile=p\nvrma=2\n",
               "x.conf:6: unknown key \"vrma\" in [instance a]");
  expect_error("[daemon]\nlog-level=info\nverbose=1\n", "x.conf:3: unknown key \"verbose\"");
  expect_error("# c\n[profile p]\nvram=1M\n\n\n\nvram = 12Q\n",
               "x.conf:7: key \"vram\" given twice in [profile p] (first at line 3)");
  expect_error("\n\n\n\n\n\n[profile p]\nvram=12Q\n", "x.conf:8: bad value \"12Q\" for vram: ");
  expect_error("[profile p]\nmax-clients=lots\n", "x.conf:2: bad value \"lots\" for max-clients");
  expect_error("[profile p]\nmax-resources=-1\n", "x.conf:2: bad value \"-1\" for max-resources");
  expect_error("[profile p]\nweight=0\n", "x.conf:2: bad value \"0\" for weight: ");
  expect_error("[profile p]\nweight=10001\n", "x.conf:2: bad value \"10001\" for weight: ");
  expect_error("[profile p]\nheads=17\n",
               "x.conf:2: bad value \"17\" for heads: heads must be between 1 and 16");
  expect_error("[profile p]\nheads=0\n", "x.conf:2: bad value \"0\" for heads");
  expect_error("[profile p]\nmax-stream-objects=63\n",
               "x.conf:2: bad value \"63\" for max-stream-objects: max-stream-objects must be "
               "between 64 and 16777216");
  expect_error("[profile p]\nmax-stream-objects=16777217\n",
               "x.conf:2: bad value \"16777217\" for max-stream-objects");
  expect_error("[profile p]\nmax-stream-objects=unlimited\n",
               "x.conf:2: bad value \"unlimited\" for max-stream-objects");
  expect_error("[profile p]\nvram=1M\n\n[instance a]\nprofile=p\nmax-stream-objects=0\n",
               "x.conf:6: bad value \"0\" for max-stream-objects");
  expect_error(
      "[profile p]\nmax-syncs=15\n",
      "x.conf:2: bad value \"15\" for max-syncs: max-syncs must be between 16 and 1048576");
  expect_error("[profile p]\nmax-syncs=1048577\n", "x.conf:2: bad value \"1048577\" for max-syncs");
  expect_error("[profile p]\nmax-syncs=unlimited\n",
               "x.conf:2: bad value \"unlimited\" for max-syncs");
  expect_error("[profile p]\nfps-cap=100000\n", "x.conf:2: bad value \"100000\" for fps-cap");
  expect_error("[profile p]\ngpu-share=most\n", "x.conf:2: bad value \"most\" for gpu-share");
  expect_error("[profile p]\nsocket-mode=0600\n", "x.conf:2: unknown key \"socket-mode\"");
  expect_error("[profile p]\nprofile=q\n", "x.conf:2: unknown key \"profile\"");
  /* Syntax GKeyFile refuses. */
  expect_error("[daemon]\nlog-level=info\nfoo\n", "x.conf:3: ");
  expect_error("log-level=info\n[daemon]\n", "x.conf:1: ");
  expect_error("[daemon]\n[profile p\n", "x.conf:2: ");
  /* Groups. */
  expect_error("[daemon]\n\n[bogus]\n", "x.conf:3: unknown group [bogus]");
  expect_error("[profile]\n", "x.conf:1: unknown group [profile]");
  expect_error("[profile ]\n", "x.conf:1: invalid profile name \"\"");
  expect_error("[daemon]\n[daemon]\n", "x.conf:2: [daemon] appears twice (first at line 1)");
  expect_error("[profile p]\nvram=1M\n[profile p]\n",
               "x.conf:3: profile \"p\" defined twice (first at line 1)");
  /* Instances. */
  expect_error("[profile p]\n[instance a]\nprofile=p\n\n[instance a]\nprofile=p\n",
               "x.conf:5: instance \"a\" defined twice (first at line 2)");
  expect_error("[profile p]\n[instance a]\nprofile=p\n[instance  a]\nprofile=p\n",
               "x.conf:4: instance \"a\" defined twice");
  expect_error("[instance a]\nvram=1M\nprofile=none\n", "x.conf:3: unknown profile \"none\"");
  expect_error("[profile p]\n[instance a]\n", "x.conf:2: [instance a] needs a profile= key");
  expect_error("[profile p]\n[instance bad/name]\nprofile=p\n",
               "x.conf:2: invalid instance name \"bad/name\"");
  expect_error("[profile p]\n[instance 0123456789012345678901234567890x]\nprofile=p\n",
               "x.conf:2: invalid instance name");
  expect_error("[profile p]\n[instance a]\nprofile=p\ndescription=mine\n",
               "x.conf:4: unknown key \"description\" in [instance a]");
  expect_error("[profile p]\n[instance a]\nprofile=p\nsocket-mode=999\n",
               "x.conf:4: bad value \"999\" for socket-mode");
  expect_error("[profile p]\n[instance a]\nprofile=p\nsocket-mode=01777\n",
               "x.conf:4: bad value \"01777\" for socket-mode");
  expect_error("[profile p]\n[instance a]\nprofile=p\nweight=0\n",
               "x.conf:4: bad value \"0\" for weight");
  /* [daemon] values. */
  expect_error("[daemon]\nlog-level=loud\n", "x.conf:2: bad value \"loud\" for log-level");
  expect_error("[daemon]\nrenderer=vulkan\n", "x.conf:2: bad value \"vulkan\" for renderer");
  expect_error("[daemon]\nrender-node=renderD128\n", "x.conf:2: render-node must be");
  expect_error("[daemon]\nruntime-dir=run\n", "x.conf:2: runtime-dir must be");
  expect_error("[daemon]\nworker=vgpu-worker\n", "x.conf:2: worker must be");
  expect_error("[daemon]\nidle-timeout=-5\n", "x.conf:2: bad value \"-5\" for idle-timeout");
  expect_error("[daemon]\nmax-submit-bytes=0\n", "x.conf:2: bad value \"0\" for max-submit-bytes");
  expect_error("[daemon]\nmax-submit-bytes=2G\n",
               "x.conf:2: bad value \"2G\" for max-submit-bytes");
  expect_error("[daemon]\nsandbox=maybe\n", "x.conf:2: bad value \"maybe\" for sandbox");
  expect_error("[daemon]\nshader-cache=shared\n",
               "x.conf:2: bad value \"shared\" for shader-cache (private, off)");
}

/* A file's every error, one "FILE:LINE: reason" a line in line order:
 * syntax errors, repeats, unknown keys and groups, bad values, each
 * reported once, and none made up by what was left out for another. */
static void test_every_error(void **state) {
  (void)state;
  const char *text = "[daemon]\n"       /* 1 */
                     "log-level=loud\n" /* 2 */
                     "verbose=1\n"      /* 3 */
                     "not a key\n"      /* 4 */
                     "[profile p]\n"    /* 5 */
                     "vram=12Q\n"       /* 6 */
                     "max-clients=2\n"  /* 7 */
                     "max-clients=3\n"  /* 8 */
                     "[instance a]\n"   /* 9 */
                     "profile=none\n"   /* 10 */
                     "[instance b]\n"   /* 11 */
                     "profile=p\n"      /* 12 */
                     "weight=0\n"       /* 13 */
                     "[bogus\n"         /* 14 */
                     "vram=1M\n"        /* 15: under a broken header */
                     "[instance c]\n"   /* 16 */
                     "[unknown]\n";     /* 17 */
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "x.conf", &e);
  assert_null(c);
  assert_non_null(e);
  assert_true(e->domain == G_KEY_FILE_ERROR);
  g_auto(GStrv) lines = g_strsplit(e->message, "\n", -1);
  const char *want[] = {
      "x.conf:2: bad value \"loud\" for log-level",
      "x.conf:3: unknown key \"verbose\" in [daemon]",
      "x.conf:4: ",
      "x.conf:6: bad value \"12Q\" for vram",
      "x.conf:8: key \"max-clients\" given twice in [profile p] (first at line 7)",
      "x.conf:10: unknown profile \"none\"",
      "x.conf:13: bad value \"0\" for weight",
      "x.conf:14: ",
      "x.conf:16: [instance c] needs a profile= key",
      "x.conf:17: unknown group [unknown]",
  };
  if (g_strv_length(lines) != G_N_ELEMENTS(want))
    fail_msg("expected %zu errors, got:\n%s", G_N_ELEMENTS(want), e->message);
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++)
    if (!g_str_has_prefix(lines[i], want[i]))
      fail_msg("error %zu: expected \"%s...\", got:\n%s", i + 1, want[i], e->message);
  g_clear_error(&e);

  /* Many errors: the first VGPU_CONFIG_MAX_ERRORS, then a last line. */
  g_autoptr(GString) many = g_string_new("[daemon]\n");
  for (int i = 0; i < VGPU_CONFIG_MAX_ERRORS + 10; i++)
    g_string_append_printf(many, "bad-%d=1\n", i);
  c = vgpu_config_load_data(many->str, -1, "m.conf", &e);
  assert_null(c);
  g_auto(GStrv) ml = g_strsplit(e->message, "\n", -1);
  assert_int_equal(g_strv_length(ml), VGPU_CONFIG_MAX_ERRORS + 1);
  assert_true(g_str_has_prefix(ml[0], "m.conf:2: unknown key \"bad-0\""));
  assert_true(g_str_has_suffix(ml[VGPU_CONFIG_MAX_ERRORS], "stopped after 50 errors"));
  g_clear_error(&e);
}

static void expect_ok(const char *text) {
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "x.conf", &e);
  if (!c)
    fail_msg("refused: %s\n%s", e->message, text);
  vgpu_config_free(c);
}

/* Each value's range is what its consumer takes, refused at load with
 * FILE:LINE beyond it, accepted at the edge. */
static void test_ranges(void **state) {
  /* The worker waits idle-timeout * 1000 ms in an int. */
  expect_ok("[daemon]\nidle-timeout=2147483\n");
  expect_error("[daemon]\nidle-timeout=2147484\n",
               "x.conf:2: bad value \"2147484\" for idle-timeout: at most 2147483 seconds");
  expect_error("[daemon]\n\nidle-timeout=4294967296\n",
               "x.conf:3: bad value \"4294967296\" for idle-timeout");
  /* A submission's length is a 32-bit count of dwords; the cap is 1 GiB. */
  expect_ok("[daemon]\nmax-submit-bytes=1G\n");
  expect_error("[daemon]\nmax-submit-bytes=1073741825\n",
               "x.conf:2: bad value \"1073741825\" for max-submit-bytes: must be between 1 byte "
               "and 1 GiB");
  expect_error("[daemon]\nmax-submit-bytes=4294967296\n",
               "x.conf:2: bad value \"4294967296\" for max-submit-bytes");
  /* vram is reported as a JSON int64. */
  expect_ok("[profile p]\nvram=8388607T\n");
  expect_error("[profile p]\nvram=8388608T\n",
               "x.conf:2: bad value \"8388608T\" for vram: vram must be below 8 EiB");
  expect_error("[profile p]\n[instance a]\nprofile=p\nvram=9000000T\n",
               "x.conf:4: bad value \"9000000T\" for vram: vram must be below 8 EiB");
  /* Counts are 32-bit. */
  expect_ok("[profile p]\nmax-clients=4294967295\n");
  expect_error("[profile p]\nmax-clients=4294967296\n",
               "x.conf:2: bad value \"4294967296\" for max-clients");
  expect_error("[profile p]\nmax-resources=99999999999\n",
               "x.conf:2: bad value \"99999999999\" for max-resources");
  expect_error("[profile p]\nmax-contexts=-1\n", "x.conf:2: bad value \"-1\" for max-contexts");
  /* Scheduling settings keep their ranges. */
  expect_ok("[profile p]\nweight=10000\nheads=16\nfps-cap=1000\n");
  expect_error("[profile p]\nweight=10001\n", "x.conf:2: bad value \"10001\" for weight");
  expect_error("[profile p]\nheads=17\n", "x.conf:2: bad value \"17\" for heads");
  expect_error("[profile p]\nheads=0\n", "x.conf:2: bad value \"0\" for heads");
  expect_error("[profile p]\nfps-cap=1001\n", "x.conf:2: bad value \"1001\" for fps-cap");
  /* The runtime directory leaves room for DIR/NAME/vhost-user.sock in a
   * socket address (108 bytes with the NUL). */
  g_autofree char *dir64 = g_strnfill(59, 'd');
  dir64[0] = '/';
  g_autofree char *ok_dir = g_strdup_printf("[daemon]\nruntime-dir=%s\n", dir64);
  expect_ok(ok_dir);
  g_autofree char *long_dir = g_strdup_printf("[daemon]\nruntime-dir=%sd\n", dir64);
  expect_error(long_dir, "x.conf:2: runtime-dir is longer than 59 bytes");
  assert_int_equal(59 + strlen("/abcdefghijklmnopqrstuvwxyz01234/vhost-user.sock"), 107);
  /* vm-instance names an instance. */
  expect_ok("[daemon]\nvm-instance=vgpu0\n");
  expect_error("[daemon]\nvm-instance=a/b\n", "x.conf:2: bad value \"a/b\" for vm-instance");
  /* socket-mode: permission bits only, octal. */
  expect_ok("[profile p]\n[instance a]\nprofile=p\nsocket-mode=0777\n");
  expect_error("[profile p]\n[instance a]\nprofile=p\nsocket-mode=04666\n",
               "x.conf:4: bad value \"04666\" for socket-mode");
  expect_error("[profile p]\n[instance a]\nprofile=p\nsocket-mode=0800\n",
               "x.conf:4: bad value \"0800\" for socket-mode");
}

/* No setting the code does not enforce is promised. */
static void test_default_is_honest(void **state) {
  const char *t = vgpu_config_default_text();
  assert_null(strstr(t, "guarantee"));
  /* The scheduler enforces the shares: nothing says otherwise, and the
   * large profile says what it gets. */
  assert_null(strstr(t, "not enforced"));
  assert_null(strstr(t, "not\n# enforced"));
  VgpuConfig *c = vgpu_config_load_default(NULL);
  const VgpuProfile *large = vgpu_config_find_profile(c, "large");
  assert_non_null(strstr(large->description, "fixed double share"));
  assert_int_equal(large->share, VGPU_SHARE_FIXED);
  vgpu_config_free(c);
}

static void test_too_many_instances(void **state) {
  GString *s = g_string_new("[profile p]\n");
  for (int i = 0; i <= VGPU_LEDGER_MAX_INSTANCES; i++)
    g_string_append_printf(s, "[instance i%d]\nprofile=p\n", i);
  g_autofree char *want =
      g_strdup_printf("x.conf:%d: too many instances", 2 + 2 * VGPU_LEDGER_MAX_INSTANCES);
  expect_error(s->str, want);
  /* Exactly the ledger's size is fine. */
  g_string_truncate(s, s->len - strlen("[instance i64]\nprofile=p\n"));
  VgpuConfig *c = vgpu_config_load_data(s->str, -1, "x.conf", NULL);
  assert_non_null(c);
  assert_int_equal(c->instances->len, VGPU_LEDGER_MAX_INSTANCES);
  vgpu_config_free(c);
  g_string_free(s, TRUE);
}

static void test_load_file(void **state) {
  g_autofree char *dir = g_dir_make_tmp("vgpu-config-XXXXXX", NULL);
  assert_non_null(dir);
  g_autofree char *path = g_build_filename(dir, "vgpud.conf", NULL);
  assert_true(
      g_file_set_contents(path, "[profile p]\nvram=1M\n\n[instance a]\nprofile=q\n", -1, NULL));
  GError *e = NULL;
  assert_null(vgpu_config_load_file(path, &e));
  g_autofree char *want = g_strdup_printf("%s:5: unknown profile \"q\"", path);
  if (!g_str_has_prefix(e->message, want))
    fail_msg("expected \"%s...\", got \"%s\"", want, e->message);
  g_clear_error(&e);
  /* Length-bounded data: what follows len is not read. */
  const char *text = "[profile p]\nvram=1M\n[bogus]\n";
  VgpuConfig *c = vgpu_config_load_data(text, (gssize)strlen("[profile p]\nvram=1M\n"), "n", &e);
  assert_non_null(c);
  vgpu_config_free(c);
  unlink(path);
  rmdir(dir);
  assert_null(vgpu_config_load_file(path, &e));
  assert_true(e->domain == G_FILE_ERROR);
  g_clear_error(&e);
}

/* ---- sizes and counts ------------------------------------------------------ */

static void test_sizes(void **state) {
  /* clang-format off */
  struct {
    const char *s;
    uint64_t v;
  } ok[] = {{"0", 0}, {"4096", 4096}, {"64K", 65536}, {"1k", 1024}, {"1KB", 1024},
            {"1KiB", 1024}, {"1.5K", 1536}, {"256M", 256u << 20}, {"512MiB", 512u << 20},
            {"0.5M", 512u << 10}, {"1G", 1u << 30}, {"1.5G", 3ull << 29}, {"1.25GiB", 5ull << 28},
            {"2 GB", 2ull << 30}, {"1T", 1ull << 40}, {"16777215T", 16777215ull << 40},
            {"18446744073709551615", UINT64_MAX}, {"100B", 100}, {"unlimited", 0},
            {"Unlimited", 0}};
  /* clang-format on */
  for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
    uint64_t v = 1;
    GError *e = NULL;
    if (!vgpu_parse_size(ok[i].s, &v, &e))
      fail_msg("refused \"%s\": %s", ok[i].s, e->message);
    if (v != ok[i].v)
      fail_msg("\"%s\" -> %" G_GUINT64_FORMAT ", want %" G_GUINT64_FORMAT, ok[i].s, v, ok[i].v);
  }
  const char *bad[] = {"",    "abc",  "-1",   "12Q", "1.2.3G", "M",   ".",  " 1G", "1G5",
                       "1e3", "0x10", "0.1B", "1 P", "++1",    "1GG", "K1", "1,5G"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    uint64_t v = 77;
    GError *e = NULL;
    if (vgpu_parse_size(bad[i], &v, &e))
      fail_msg("accepted \"%s\" as %" G_GUINT64_FORMAT, bad[i], v);
    assert_non_null(e);
    assert_int_equal(v, 77); /* untouched on refusal */
    g_error_free(e);
  }
  assert_false(vgpu_parse_size(NULL, &(uint64_t){0}, NULL));
  /* Overflow is refused, not wrapped. */
  const char *huge[] = {"99999999999T", "16777216T", "18446744073709551616",
                        "99999999999999999999999", "18446744073709551615.5K"};
  for (size_t i = 0; i < G_N_ELEMENTS(huge); i++) {
    uint64_t v = 77;
    GError *e = NULL;
    if (vgpu_parse_size(huge[i], &v, &e))
      fail_msg("accepted \"%s\" as %" G_GUINT64_FORMAT, huge[i], v);
    /* refused as too large, not for some other fault in the input */
    if (!strstr(e->message, "too large"))
      fail_msg("\"%s\" refused for another reason: %s", huge[i], e->message);
    assert_int_equal(v, 77);
    g_error_free(e);
  }
  /* Every unit divides 2^64, so the largest whole count of a unit plus any
   * fraction of it stays below 2^64: no wrap at the very top.  Fraction
   * digits past the sixth are ignored. */
  uint64_t v;
  assert_true(vgpu_parse_size("16777215.99999999999999999T", &v, NULL));
  assert_int_equal(v, (16777215ull << 40) + 999999ull * (1ull << 40) / 1000000u);
  assert_true(v < UINT64_MAX);
  assert_true(vgpu_parse_size("18014398509481983.999999K", &v, NULL));
  assert_int_equal(v, UINT64_MAX - 1023 + 999999ull * 1024 / 1000000u);
  assert_true(vgpu_parse_size("16777215.5T", &v, NULL));
  assert_int_equal(v, (16777215ull << 40) + (1ull << 39));
}

static void expect_format(uint64_t bytes, bool zero_unlimited, const char *want) {
  g_autofree char *s = vgpu_format_size(bytes, zero_unlimited);
  if (strcmp(s, want) != 0)
    fail_msg("%" G_GUINT64_FORMAT " -> \"%s\", want \"%s\"", bytes, s, want);
}

static void test_format(void **state) {
  expect_format(0, true, "unlimited");
  expect_format(0, false, "0 B");
  expect_format(512, false, "512 B");
  expect_format(1023, false, "1023 B");
  expect_format(1024, false, "1 KiB");
  expect_format(1536, false, "1.5 KiB");
  expect_format(256u << 20, true, "256 MiB");
  expect_format(3ull << 29, false, "1.5 GiB");
  expect_format(4ull << 30, false, "4 GiB");
  expect_format((1u << 20) - 1, false, "1 MiB"); /* not "1024 KiB" */
  expect_format(1ull << 40, false, "1 TiB");
  expect_format(UINT64_MAX, false, "16 EiB");
  /* Whole units survive a round trip through the parser. */
  const uint64_t whole[] = {4096, 8u << 20, 256u << 20, 1u << 30, 3ull << 29, 4ull << 30};
  for (size_t i = 0; i < G_N_ELEMENTS(whole); i++) {
    g_autofree char *s = vgpu_format_size(whole[i], false);
    uint64_t v;
    assert_true(vgpu_parse_size(s, &v, NULL));
    assert_int_equal(v, whole[i]);
  }
}

static void test_counts_and_shares(void **state) {
  uint64_t n = 5;
  assert_true(vgpu_parse_count("12", &n, NULL));
  assert_int_equal(n, 12);
  assert_true(vgpu_parse_count("0", &n, NULL));
  assert_int_equal(n, 0);
  n = 5;
  assert_true(vgpu_parse_count("unlimited", &n, NULL));
  assert_int_equal(n, 0);
  assert_true(vgpu_parse_count("4294967295", &n, NULL));
  assert_int_equal(n, 4294967295u);
  const char *bad[] = {"", "-3", "1.5", "12K", "4294967296", " 1", "abc", "0x10"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    GError *e = NULL;
    n = 5;
    if (vgpu_parse_count(bad[i], &n, &e))
      fail_msg("accepted count \"%s\"", bad[i]);
    assert_non_null(e);
    assert_int_equal(n, 5);
    g_error_free(e);
  }
  assert_false(vgpu_parse_count(NULL, &n, NULL));

  const char *names[] = {"best-effort", "equal", "fixed"};
  for (int m = 0; m < 3; m++) {
    VgpuShareMode out = (VgpuShareMode)-1;
    assert_string_equal(vgpu_share_mode_name((VgpuShareMode)m), names[m]);
    assert_true(vgpu_share_mode_parse(names[m], &out));
    assert_int_equal(out, m);
  }
  VgpuShareMode out = VGPU_SHARE_FIXED;
  assert_false(vgpu_share_mode_parse("fair", &out));
  assert_false(vgpu_share_mode_parse(NULL, &out));
  assert_int_equal(out, VGPU_SHARE_FIXED);
}

/* ---- profiles and instances ------------------------------------------------ */

static void test_profile_limits_and_copy(void **state) {
  VgpuProfile p = {.name = "p",
                   .description = "d",
                   .vram = 8u << 20,
                   .max_resources = 256,
                   .max_contexts = 4,
                   .max_clients = 2,
                   .share = VGPU_SHARE_FIXED,
                   .weight = 300,
                   .fps_cap = 60,
                   .heads = 2};
  uint64_t limits[VGPU_RES_N_QUOTA] = {1, 1, 1};
  vgpu_profile_limits(&p, limits);
  assert_int_equal(limits[VGPU_RES_VRAM], 8u << 20);
  assert_int_equal(limits[VGPU_RES_OBJECTS], 256);
  assert_int_equal(limits[VGPU_RES_CONTEXTS], 4);
  VgpuProfile none = {.name = "n", .weight = 100, .heads = 1};
  vgpu_profile_limits(&none, limits);
  for (int i = 0; i < VGPU_RES_N_QUOTA; i++)
    assert_int_equal(limits[i], 0); /* 0 = unlimited in the ledger too */

  VgpuProfile *c = vgpu_profile_copy(&p);
  assert_ptr_not_equal(c->name, p.name);
  assert_ptr_not_equal(c->description, p.description);
  assert_string_equal(c->name, "p");
  assert_string_equal(c->description, "d");
  assert_int_equal(c->weight, 300);
  assert_int_equal(c->fps_cap, 60);
  assert_int_equal(c->heads, 2);
  vgpu_profile_free(c);
  vgpu_profile_free(NULL);
}

static void test_instance_settings(void **state) {
  VgpuConfig *c = vgpu_config_load_default(NULL);
  const VgpuInstanceConfig *orig = vgpu_config_find_instance(c, "vgpu0");
  VgpuInstanceConfig *ic = vgpu_instance_config_copy(orig);
  assert_string_equal(ic->name, "vgpu0");
  assert_string_equal(ic->profile, "small");
  GError *e = NULL;
  struct {
    const char *key, *value;
  } good[] = {{"vram", "1G"},       {"max-resources", "10"}, {"max-contexts", "2"},
              {"max-clients", "1"}, {"gpu-share", "fixed"},  {"weight", "10000"},
              {"fps-cap", "60"},    {"heads", "16"},         {"socket-mode", "0600"}};
  for (size_t i = 0; i < G_N_ELEMENTS(good); i++)
    if (!vgpu_instance_config_set(ic, good[i].key, good[i].value, &e))
      fail_msg("%s=%s: %s", good[i].key, good[i].value, e->message);
  assert_int_equal(ic->eff.vram, 1u << 30);
  assert_int_equal(ic->eff.max_resources, 10);
  assert_int_equal(ic->eff.max_contexts, 2);
  assert_int_equal(ic->eff.max_clients, 1);
  assert_int_equal(ic->eff.share, VGPU_SHARE_FIXED);
  assert_int_equal(ic->eff.weight, 10000);
  assert_int_equal(ic->eff.fps_cap, 60);
  assert_int_equal(ic->eff.heads, 16);
  assert_int_equal(ic->socket_mode, 0600);
  /* The original is untouched: copies share nothing. */
  assert_int_equal(orig->eff.vram, 256u << 20);
  assert_int_equal(orig->socket_mode, 0666);
  assert_ptr_not_equal(ic->eff.name, orig->eff.name);

  assert_true(vgpu_instance_config_set(ic, "vram", "unlimited", &e));
  assert_int_equal(ic->eff.vram, 0);
  assert_true(vgpu_instance_config_set(ic, "max-clients", "0", &e));
  assert_int_equal(ic->eff.max_clients, 0);
  assert_true(vgpu_instance_config_set(ic, "fps-cap", "0", &e));
  assert_true(vgpu_instance_config_set(ic, "gpu-share", "best-effort", &e));
  assert_int_equal(ic->eff.share, VGPU_SHARE_BEST_EFFORT);

  /* Refusals leave the setting as it was. */
  struct {
    const char *key, *value;
  } bad[] = {{"vram", "lots"},         {"vram", "-1G"},          {"vram", "99999999999T"},
             {"max-resources", "1.5"}, {"max-contexts", "many"}, {"max-clients", "-1"},
             {"gpu-share", "fair"},    {"weight", "0"},          {"weight", "10001"},
             {"fps-cap", "-1"},        {"fps-cap", "1001"},      {"heads", "0"},
             {"heads", "17"},          {"socket-mode", "999"},   {"socket-mode", "rw"},
             {"socket-mode", "1000"},  {"socket-mode", ""},      {"profile", "large"},
             {"description", "x"},     {"name", "other"},        {"colour", "blue"}};
  VgpuInstanceConfig *before = vgpu_instance_config_copy(ic);
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    if (vgpu_instance_config_set(ic, bad[i].key, bad[i].value, &e))
      fail_msg("accepted %s=%s", bad[i].key, bad[i].value);
    assert_non_null(e);
    g_clear_error(&e);
  }
  assert_int_equal(ic->eff.vram, before->eff.vram);
  assert_int_equal(ic->eff.max_resources, before->eff.max_resources);
  assert_int_equal(ic->eff.max_contexts, before->eff.max_contexts);
  assert_int_equal(ic->eff.max_clients, before->eff.max_clients);
  assert_int_equal(ic->eff.share, before->eff.share);
  assert_int_equal(ic->eff.weight, before->eff.weight);
  assert_int_equal(ic->eff.fps_cap, before->eff.fps_cap);
  assert_int_equal(ic->eff.heads, before->eff.heads);
  assert_int_equal(ic->socket_mode, before->socket_mode);
  assert_string_equal(ic->profile, "small");
  vgpu_instance_config_free(before);
  assert_false(vgpu_instance_config_set(ic, "vram", NULL, &e));
  g_clear_error(&e);
  vgpu_instance_config_free(ic);
  vgpu_instance_config_free(NULL);

  /* vgpuctl create: a fresh instance from a profile. */
  ic = vgpu_instance_config_new("scratch", vgpu_config_find_profile(c, "large"));
  assert_string_equal(ic->name, "scratch");
  assert_string_equal(ic->profile, "large");
  assert_int_equal(ic->eff.vram, 4ull << 30);
  assert_int_equal(ic->eff.share, VGPU_SHARE_FIXED);
  assert_int_equal(ic->eff.weight, 200);
  assert_int_equal(ic->socket_mode, 0666);
  vgpu_instance_config_free(ic);
  vgpu_config_free(c);
}

static void test_names(void **state) {
  assert_true(vgpu_instance_name_valid("vgpu_0-a"));
  assert_true(vgpu_instance_name_valid("A"));
  assert_true(vgpu_instance_name_valid("0123456789012345678901234567890"));   /* 31 */
  assert_false(vgpu_instance_name_valid("01234567890123456789012345678901")); /* 32 */
  assert_false(vgpu_instance_name_valid(""));
  assert_false(vgpu_instance_name_valid(NULL));
  assert_false(vgpu_instance_name_valid("a b"));
  assert_false(vgpu_instance_name_valid("a.b"));
  assert_false(vgpu_instance_name_valid("../x"));
  assert_false(vgpu_instance_name_valid("caf\xc3\xa9"));
}

/* Runs in a child so the environment and ids of the test stay as they are. */
static void test_runtime_dir(void **state) {
  g_unsetenv("VGPU_RUNTIME_DIR"); /* it would take precedence */
  if (geteuid() == 0) {
    g_autofree char *d = vgpu_default_runtime_dir();
    assert_string_equal(d, "/run/vgpu");
  }
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (geteuid() == 0 && setresuid(65534, 65534, 65534) != 0)
      _exit(10);
    g_setenv("XDG_RUNTIME_DIR", "/run/user/4242", TRUE);
    g_autofree char *a = vgpu_default_runtime_dir();
    if (strcmp(a, "/run/user/4242/vgpu") != 0)
      _exit(11);
    g_unsetenv("XDG_RUNTIME_DIR");
    g_autofree char *b = vgpu_default_runtime_dir();
    g_autofree char *want = g_strdup_printf("/tmp/vgpu-%u", (unsigned)getuid());
    if (strcmp(b, want) != 0)
      _exit(12);
    /* A relative XDG_RUNTIME_DIR is not trusted. */
    g_setenv("XDG_RUNTIME_DIR", "run", TRUE);
    g_autofree char *d = vgpu_default_runtime_dir();
    _exit(strcmp(d, want) != 0 ? 13 : 0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* gpu-timeout: 10 s unless set, 0 = none, at most a day, in profiles,
 * instances and `vgpuctl set`. */
static void test_gpu_timeout(void **state) {
  const char *text = "[profile p]\ngpu-timeout=30\n\n[profile bare]\n\n"
                     "[instance a]\nprofile=p\ngpu-timeout=0\n\n[instance b]\nprofile=p\n\n"
                     "[instance c]\nprofile=bare\n";
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "g.conf", &e);
  if (!c)
    fail_msg("%s", e->message);
  assert_int_equal(vgpu_config_find_profile(c, "p")->gpu_timeout_s, 30);
  assert_int_equal(vgpu_config_find_profile(c, "bare")->gpu_timeout_s, VGPU_GPU_TIMEOUT_DEFAULT_S);
  assert_int_equal(VGPU_GPU_TIMEOUT_DEFAULT_S, 10);
  assert_int_equal(vgpu_config_find_instance(c, "a")->eff.gpu_timeout_s, 0);
  assert_int_equal(vgpu_config_find_instance(c, "b")->eff.gpu_timeout_s, 30);
  assert_int_equal(vgpu_config_find_instance(c, "c")->eff.gpu_timeout_s, 10);
  VgpuInstanceConfig *ic = vgpu_instance_config_copy(vgpu_config_find_instance(c, "b"));
  assert_true(vgpu_instance_config_set(ic, "gpu-timeout", "86400", &e));
  assert_int_equal(ic->eff.gpu_timeout_s, 86400);
  assert_false(vgpu_instance_config_set(ic, "gpu-timeout", "86401", &e));
  assert_non_null(strstr(e->message, "between 0 (none) and 86400"));
  g_clear_error(&e);
  assert_false(vgpu_instance_config_set(ic, "gpu-timeout", "-1", &e));
  g_clear_error(&e);
  assert_int_equal(ic->eff.gpu_timeout_s, 86400); /* unchanged by refusals */
  vgpu_instance_config_free(ic);
  vgpu_config_free(c);
  /* The built-in default's profiles all have the default. */
  c = vgpu_config_load_default(NULL);
  for (guint i = 0; i < c->profiles->len; i++)
    assert_int_equal(((VgpuProfile *)g_ptr_array_index(c->profiles, i))->gpu_timeout_s, 10);
  vgpu_config_free(c);
  expect_error("[profile p]\ngpu-timeout=90000\n",
               "x.conf:2: bad value \"90000\" for gpu-timeout: gpu-timeout must be between 0");
  expect_error("[profile p]\n[instance a]\nprofile=p\ngpu-timeout=soon\n",
               "x.conf:4: bad value \"soon\" for gpu-timeout");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_default),
      cmocka_unit_test(test_default_is_honest),
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_example_file),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_overrides),
      cmocka_unit_test(test_daemon_keys),
      cmocka_unit_test(test_daemon_limits),
      cmocka_unit_test(test_errors_with_lines),
      cmocka_unit_test(test_too_many_instances),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_counts_and_shares),
      cmocka_unit_test(test_profile_limits_and_copy),
      cmocka_unit_test(test_instance_settings),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_every_error),
      cmocka_unit_test(test_runtime_dir),
      cmocka_unit_test(test_host_memory),
      cmocka_unit_test(test_worker_uid_range),
      cmocka_unit_test(test_gpu_timeout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
