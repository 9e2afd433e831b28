/* Configuration: the embedded default, overrides, every refusal with its
 * FILE:LINE, the size syntax, and run-time settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/config.h"

static void test_default(void **state) {
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_default(&e);
  assert_non_null(c);
  assert_string_equal(c->source, "<embedded>");
  assert_int_equal(c->instances->len, 2);
  const VgpuInstanceConfig *v0 = vgpu_config_find_instance(c, "vgpu0");
  const VgpuInstanceConfig *v1 = vgpu_config_find_instance(c, "vgpu1");
  assert_string_equal(v0->profile, "small");
  assert_string_equal(v1->profile, "medium");
  assert_int_equal(v0->eff.vram, 256u << 20);
  assert_int_equal(v1->eff.max_clients, 8);
  const VgpuProfile *large = vgpu_config_find_profile(c, "large");
  assert_int_equal(large->share, VGPU_SHARE_FIXED);
  assert_int_equal(large->weight, 200);
  assert_non_null(vgpu_config_find_profile(c, "tiny"));
  assert_null(c->runtime_dir);
  assert_true(c->sandbox);
  vgpu_config_free(c);
}

static void test_overrides(void **state) {
  const char *text = "[instance a]\nprofile=p\nvram=1.5G\nmax-clients=unlimited\n"
                     "socket-mode=0660\n\n[profile p]\nvram=64M\nmax-clients=3\n"
                     "gpu-share=fixed\nweight=300\n[daemon]\nidle-timeout=30\nsandbox=false\n";
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "t.conf", &e);
  assert_non_null(c);
  const VgpuInstanceConfig *a = vgpu_config_find_instance(c, "a");
  assert_int_equal(a->eff.vram, 3ull << 29);
  assert_int_equal(a->eff.max_clients, 0);
  assert_int_equal(a->eff.weight, 300);
  assert_int_equal(a->socket_mode, 0660);
  assert_int_equal(vgpu_config_find_profile(c, "p")->vram, 64u << 20);
  assert_int_equal(c->idle_timeout_s, 30);
  assert_false(c->sandbox);
  uint64_t limits[VGPU_RES_N_QUOTA];
  vgpu_profile_limits(&a->eff, limits);
  assert_int_equal(limits[VGPU_RES_VRAM], 3ull << 29);
  vgpu_config_free(c);
}

static void expect_error(const char *text, const char *message) {
  GError *e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "x.conf", &e);
  assert_null(c);
  assert_non_null(e);
  if (!strstr(e->message, message))
    fail_msg("expected \"%s\" in \"%s\"", message, e->message);
  g_error_free(e);
}

static void test_errors_with_lines(void **state) {
  expect_error("[profile p]\nvram=1M\n\n[instance a]\nprofile=p\nvrma=2\n",
               "x.conf:6: unknown key \"vrma\" in [instance a]");
  expect_error("[profile p]\nvram=12Q\n", "x.conf:2: bad value \"12Q\" for vram");
  expect_error("[daemon]\nfoo\n", "x.conf:2:");
  expect_error("[bogus]\n", "x.conf:1: unknown group [bogus]");
  expect_error("[instance a]\nprofile=none\n", "x.conf:2: unknown profile \"none\"");
  expect_error("[profile p]\n[instance a]\n", "x.conf:2: [instance a] needs a profile= key");
  expect_error("[profile p]\n[instance bad/name]\nprofile=p\n", "x.conf:2: invalid instance name");
  expect_error("[daemon]\nlog-level=loud\n", "x.conf:2: bad value \"loud\" for log-level");
  expect_error("[daemon]\nrenderer=vulkan\n", "bad value \"vulkan\" for renderer");
  expect_error("[profile p]\nweight=0\n", "x.conf:2: bad value \"0\" for weight");
  expect_error("[profile p]\nheads=17\n", "heads must be between 1 and 16");
  expect_error("[profile p]\ngpu-share=most\n", "not a share mode");
  expect_error("[profile p]\n[instance a]\nprofile=p\nsocket-mode=999\n", "x.conf:4:");
}

static void test_sizes(void **state) {
  struct {
    const char *s;
    uint64_t v;
  } ok[] = {{"0", 0},        {"4096", 4096},           {"64K", 65536},
            {"256M", 256u << 20}, {"1G", 1u << 30}, {"1.5G", 3ull << 29},
            {"512MiB", 512u << 20}, {"2 GB", 2ull << 30}, {"unlimited", 0},
            {"1T", 1ull << 40}};
  for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
    uint64_t v = 1;
    GError *e = NULL;
    assert_true(vgpu_parse_size(ok[i].s, &v, &e));
    assert_int_equal(v, ok[i].v);
  }
  const char *bad[] = {"", "abc", "-1", "12Q", "99999999999T", "1.2.3G", "M"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    uint64_t v;
    GError *e = NULL;
    if (vgpu_parse_size(bad[i], &v, &e))
      fail_msg("accepted \"%s\"", bad[i]);
    g_error_free(e);
  }
  char *s = vgpu_format_size(256u << 20, false);
  assert_string_equal(s, "256 MiB");
  g_free(s);
  s = vgpu_format_size(3ull << 29, false);
  assert_string_equal(s, "1.5 GiB");
  g_free(s);
  s = vgpu_format_size(512, false);
  assert_string_equal(s, "512 B");
  g_free(s);
  s = vgpu_format_size(0, true);
  assert_string_equal(s, "unlimited");
  g_free(s);
  uint64_t n;
  assert_true(vgpu_parse_count("12", &n, NULL) && n == 12);
  assert_false(vgpu_parse_count("-3", &n, NULL));
}

static void test_runtime_settings(void **state) {
  VgpuConfig *c = vgpu_config_load_default(NULL);
  VgpuInstanceConfig *ic = vgpu_instance_config_copy(vgpu_config_find_instance(c, "vgpu0"));
  GError *e = NULL;
  assert_true(vgpu_instance_config_set(ic, "vram", "1G", &e));
  assert_true(vgpu_instance_config_set(ic, "max-resources", "10", &e));
  assert_true(vgpu_instance_config_set(ic, "max-contexts", "2", &e));
  assert_true(vgpu_instance_config_set(ic, "max-clients", "1", &e));
  assert_true(vgpu_instance_config_set(ic, "gpu-share", "best-effort", &e));
  assert_true(vgpu_instance_config_set(ic, "fps-cap", "60", &e));
  assert_true(vgpu_instance_config_set(ic, "heads", "2", &e));
  assert_int_equal(ic->eff.vram, 1u << 30);
  assert_int_equal(ic->eff.max_resources, 10);
  assert_int_equal(ic->eff.fps_cap, 60);
  assert_false(vgpu_instance_config_set(ic, "vram", "lots", &e));
  g_clear_error(&e);
  assert_false(vgpu_instance_config_set(ic, "profile", "large", &e));
  g_clear_error(&e);
  assert_false(vgpu_instance_config_set(ic, "colour", "blue", &e));
  g_clear_error(&e);
  assert_true(vgpu_instance_name_valid("vgpu_0-a"));
  assert_false(vgpu_instance_name_valid("a b"));
  assert_false(vgpu_instance_name_valid(""));
  assert_false(vgpu_instance_name_valid("0123456789012345678901234567890123"));
  vgpu_instance_config_free(ic);
  vgpu_config_free(c);
  char *d = vgpu_default_runtime_dir();
  assert_true(g_path_is_absolute(d));
  g_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_default),           cmocka_unit_test(test_overrides),
      cmocka_unit_test(test_errors_with_lines), cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_runtime_settings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
