/* GPU memory partitioning: the fit arithmetic (overflow-safe), the
 * overcommit ratio, the [daemon] keys, MemTotal, and the check of a whole
 * configuration with its refusal message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/gpumem.h"
#include "daemon/config.h"
#include "daemon/gpu_memory.h"

#define GiB (1ull << 30)
#define MiB (1ull << 20)

static void test_overcommit_parse(void **state) {
  (void)state;
  static const struct {
    const char *s;
    uint32_t milli;
  } good[] = {{"1", 1000},   {"1.0", 1000},     {"1.5", 1500},  {"2.25", 2250},  {"1.125", 1125},
              {"16", 16000}, {"16.000", 16000}, {"3.10", 3100}, {"1.0000", 1000}};
  for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
    uint32_t m = 0;
    g_autoptr(GError) e = NULL;
    assert_true(vgpu_overcommit_parse(good[i].s, &m, &e));
    assert_int_equal(m, good[i].milli);
  }
  static const char *const bad[] = {"",       "0.5", "0.999", "16.001", "17",
                                    "1.0001", "-1",  "1e3",   "1.",     ".5",
                                    "1,5",    "x",   " 1",    "1 ",     "99999999999999999999",
                                    "1.5x",   NULL};
  for (size_t i = 0; bad[i]; i++) {
    uint32_t m = 77;
    g_autoptr(GError) e = NULL;
    assert_false(vgpu_overcommit_parse(bad[i], &m, &e));
    assert_non_null(e);
    assert_int_equal(m, 77);
  }
  assert_false(vgpu_overcommit_parse(NULL, &(uint32_t){0}, NULL));
  g_autofree char *a = vgpu_overcommit_format(1000);
  g_autofree char *b = vgpu_overcommit_format(1500);
  g_autofree char *c = vgpu_overcommit_format(2250);
  g_autofree char *d = vgpu_overcommit_format(1125);
  g_autofree char *f = vgpu_overcommit_format(16000);
  assert_string_equal(a, "1.0");
  assert_string_equal(b, "1.5");
  assert_string_equal(c, "2.25");
  assert_string_equal(d, "1.125");
  assert_string_equal(f, "16.0");
}

static void test_arithmetic(void **state) {
  (void)state;
  /* Capacity: exact for ordinary figures, saturating at the top. */
  assert_true(vgpu_gpumem_capacity(4 * GiB, 1000) == 4 * GiB);
  assert_true(vgpu_gpumem_capacity(4 * GiB, 1500) == 6 * GiB);
  assert_true(vgpu_gpumem_capacity(1001, 1001) == 1002); /* 1002.001, rounded down */
  assert_true(vgpu_gpumem_capacity(999, 16000) == 15984);
  assert_true(vgpu_gpumem_capacity(UINT64_MAX, 1000) ==
              UINT64_MAX - UINT64_MAX % 1000 + UINT64_MAX % 1000);
  assert_true(vgpu_gpumem_capacity(UINT64_MAX, 16000) == UINT64_MAX);
  assert_true(vgpu_gpumem_capacity(UINT64_MAX / 2, 2000) >= UINT64_MAX - 1);
  assert_true(vgpu_gpumem_capacity((uint64_t)G_MAXINT64, 16000) == UINT64_MAX);
  /* Unlimited counts as the whole memory. */
  assert_true(vgpu_gpumem_charge(0, 8 * GiB) == 8 * GiB);
  assert_true(vgpu_gpumem_charge(256 * MiB, 8 * GiB) == 256 * MiB);
  /* Sums saturate: limits near UINT64_MAX never wrap into fitting. */
  assert_true(vgpu_gpumem_add(UINT64_MAX - 1, 2) == UINT64_MAX);
  assert_true(vgpu_gpumem_add(UINT64_MAX, UINT64_MAX) == UINT64_MAX);
  assert_true(vgpu_gpumem_add(1, 2) == 3);
  assert_false(vgpu_gpumem_fits(16 * GiB, 8 * GiB, UINT64_MAX));
  assert_false(vgpu_gpumem_fits(UINT64_MAX, 1, UINT64_MAX));
  assert_true(vgpu_gpumem_fits(UINT64_MAX, 0, UINT64_MAX));
  assert_true(vgpu_gpumem_fits(4 * GiB, 3 * GiB, GiB));
  assert_false(vgpu_gpumem_fits(4 * GiB, 3 * GiB, GiB + 1));
  assert_false(vgpu_gpumem_fits(4 * GiB, 5 * GiB, 0 + 1));
  assert_true(vgpu_gpumem_free(4 * GiB, 5 * GiB) == 0);
  assert_true(vgpu_gpumem_free(4 * GiB, GiB) == 3 * GiB);
  /* available_instances. */
  assert_true(vgpu_gpumem_available(4 * GiB, GiB, GiB) == 3);
  assert_true(vgpu_gpumem_available(4 * GiB, GiB, 2 * GiB) == 1);
  assert_true(vgpu_gpumem_available(4 * GiB, GiB, 4 * GiB) == 0);
  assert_true(vgpu_gpumem_available(4 * GiB, 8 * GiB, MiB) == 0);
  assert_true(vgpu_gpumem_available(UINT64_MAX, 0, 1) == UINT64_MAX);
  assert_true(vgpu_gpumem_available(UINT64_MAX, UINT64_MAX, 1) == 0);
}

static void test_refusal(void **state) {
  (void)state;
  /* 11.6 GiB, half of a 23.2 GiB host. */
  uint64_t gm = 12455405158ull;
  g_autofree char *a = vgpu_gpumem_refusal("vgpu2", 4 * GiB, gm, 1000, gm - 5 * GiB / 2);
  assert_string_equal(
      a, "vgpu2: vram 4 GiB does not fit: 2.5 GiB of 11.6 GiB GPU memory free (overcommit 1.0)");
  g_autofree char *b = vgpu_gpumem_refusal("t", 0, 2 * GiB, 1500, GiB);
  assert_string_equal(b, "t: vram unlimited (counted as all 2 GiB) does not fit: 2 GiB of 3 GiB "
                         "GPU memory free (2 GiB x overcommit 1.5)");
  g_autofree char *c = vgpu_gpumem_refusal("x", 1000ull << 40, 16 * GiB, 1000, UINT64_MAX);
  assert_string_equal(c, "x: vram 1000 TiB does not fit: 0 B of 16 GiB GPU memory free "
                         "(overcommit 1.0)");
}

static VgpuConfig *load(const char *text, GError **e) {
  return vgpu_config_load_data(text, -1, "t.conf", e);
}

static void test_config_keys(void **state) {
  (void)state;
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuConfig) d = vgpu_config_load_default(&e);
  assert_non_null(d);
  assert_true(d->gpu_memory == 0); /* auto */
  assert_int_equal(d->overcommit_milli, 1000);
  g_autoptr(VgpuConfig) c = load("[daemon]\ngpu-memory=6G\novercommit=1.25\n", &e);
  assert_non_null(c);
  assert_true(c->gpu_memory == 6 * GiB);
  assert_int_equal(c->overcommit_milli, 1250);
  g_autoptr(VgpuConfig) a = load("[daemon]\ngpu-memory=auto\n", &e);
  assert_non_null(a);
  assert_true(a->gpu_memory == 0);
  static const struct {
    const char *text, *msg;
  } bad[] = {
      {"[daemon]\ngpu-memory=0\n", "t.conf:2: bad value \"0\" for gpu-memory: auto or a size"},
      {"[daemon]\ngpu-memory=unlimited\n", "t.conf:2: bad value \"unlimited\" for gpu-memory"},
      {"[daemon]\n\ngpu-memory=12Q\n", "t.conf:3: bad value \"12Q\" for gpu-memory"},
      {"[daemon]\ngpu-memory=9E\n", "t.conf:2: bad value \"9E\" for gpu-memory"},
      {"[daemon]\novercommit=0.5\n",
       "t.conf:2: bad value \"0.5\" for overcommit: overcommit must be between 1.0 and 16.0"},
      {"[daemon]\novercommit=lots\n", "t.conf:2: bad value \"lots\" for overcommit"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) be = NULL;
    VgpuConfig *x = load(bad[i].text, &be);
    assert_null(x);
    if (!g_str_has_prefix(be->message, bad[i].msg))
      fail_msg("%s: got \"%s\"", bad[i].text, be->message);
  }
}

static void test_meminfo(void **state) {
  (void)state;
  uint64_t b = 0;
  assert_true(vgpu_meminfo_total("MemTotal:       24343036 kB\nMemFree: 1 kB\n", &b));
  assert_true(b == 24343036ull * 1024);
  assert_true(vgpu_meminfo_total("Foo: 1 kB\nMemTotal: 4194304 kB\n", &b));
  assert_true(b == 4 * GiB);
  assert_false(vgpu_meminfo_total("XMemTotal: 5 kB\n", &b));
  assert_false(vgpu_meminfo_total("MemTotal: kB\n", &b));
  assert_false(vgpu_meminfo_total("MemTotal: 0 kB\n", &b));
  assert_false(vgpu_meminfo_total("MemTotal: 99999999999999999999 kB\n", &b));
  assert_false(vgpu_meminfo_total("MemTotal: 5 MB\n", &b));
  assert_false(vgpu_meminfo_total("", &b));
  assert_false(vgpu_meminfo_total(NULL, &b));
}

/* The built-in configuration on small hosts with the 50% rule. */
static void test_default_fits(void **state) {
  (void)state;
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuConfig) d = vgpu_config_load_default(&e);
  uint64_t assigned = 0;
  uint64_t half_4g = 4 * GiB / 100 * VGPU_GPU_MEMORY_HOST_PERCENT;
  assert_true(vgpu_gpu_memory_check(d->instances, half_4g, 1000, &assigned, &e));
  assert_true(assigned == 1280 * MiB);
  /* On a 2 GiB host it does not: a clear refusal naming the instance. */
  uint64_t half_2g = 2 * GiB / 100 * VGPU_GPU_MEMORY_HOST_PERCENT;
  assert_false(vgpu_gpu_memory_check(d->instances, half_2g, 1000, NULL, &e));
  assert_true(g_str_has_prefix(e->message,
                               "vgpu1: vram 1 GiB does not fit: 768 MiB of 1 GiB GPU memory free"));
}

static void test_check(void **state) {
  (void)state;
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuConfig) c = load("[profile p]\nvram=1G\n"
                                 "[instance a]\nprofile=p\n"
                                 "[instance b]\nprofile=p\nvram=unlimited\n"
                                 "[instance c]\nprofile=p\nvram=7340032T\n",
                                 &e);
  if (!c)
    fail_msg("%s", e->message);
  /* b counts as all of it: with 4 GiB and overcommit 2.0, a + b fit... */
  g_autoptr(GPtrArray) ab = g_ptr_array_new();
  g_ptr_array_add(ab, g_ptr_array_index(c->instances, 0));
  g_ptr_array_add(ab, g_ptr_array_index(c->instances, 1));
  uint64_t assigned = 0;
  assert_true(vgpu_gpu_memory_check(ab, 4 * GiB, 2000, &assigned, &e));
  assert_true(assigned == 5 * GiB);
  /* ...not at 1.0; and c's 7 EiB never fits, even at 16.0 on 8 EiB - 1. */
  assert_false(vgpu_gpu_memory_check(ab, 4 * GiB, 1000, NULL, &e));
  assert_string_equal(e->message, "b: vram unlimited (counted as all 4 GiB) does not fit: 3 GiB "
                                  "of 4 GiB GPU memory free (overcommit 1.0)");
  g_clear_error(&e);
  assert_false(vgpu_gpu_memory_check(c->instances, 4 * GiB, 16000, NULL, &e));
  assert_true(g_str_has_prefix(e->message, "c: vram 7 EiB does not fit"));
  g_clear_error(&e);
  /* At the top of the range: b alone takes all of 8 EiB, and a beside it
   * does not fit; at 16.0 the capacity saturates at 2^64 - 1, where the
   * three (about 15 EiB) fit. */
  assert_false(vgpu_gpu_memory_check(c->instances, (uint64_t)G_MAXINT64, 1000, NULL, &e));
  assert_true(
      g_str_has_prefix(e->message, "b: vram unlimited (counted as all 8 EiB) does not fit"));
  g_clear_error(&e);
  assert_true(vgpu_gpu_memory_check(c->instances, (uint64_t)G_MAXINT64, 16000, &assigned, &e));
  g_autoptr(GPtrArray) none = g_ptr_array_new();
  assert_true(vgpu_gpu_memory_check(none, 1, 1000, &assigned, &e));
  assert_true(assigned == 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_overcommit_parse),
      cmocka_unit_test(test_arithmetic),
      cmocka_unit_test(test_refusal),
      cmocka_unit_test(test_config_keys),
      cmocka_unit_test(test_meminfo),
      cmocka_unit_test(test_default_fits),
      cmocka_unit_test(test_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
