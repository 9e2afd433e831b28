/* CPU cgroups: reading /proc/self/cgroup and /proc/self/mountinfo, and the
 * weight and ceiling arithmetic an instance's group is written from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <glib.h>

#include "daemon/cgroup.h"
#include "daemon/config.h"
#include "daemon/cpu_capacity.h"

static void test_self_path(void **state) {
  (void)state;
  /* A hybrid host: v1 controllers and the v2 (unified) line. */
  const char *hybrid = "12:pids:/system.slice/vgpud.service\n"
                       "5:cpu,cpuacct:/system.slice/vgpud.service\n"
                       "4:cpuset:/\n"
                       "1:name=systemd:/system.slice/vgpud.service\n"
                       "0::/system.slice/vgpud.service\n";
  g_autofree char *v1 = vgpu_cgroup_self_path(hybrid, "cpu");
  g_autofree char *v2 = vgpu_cgroup_self_path(hybrid, NULL);
  g_autofree char *cpuset = vgpu_cgroup_self_path(hybrid, "cpuset");
  g_autofree char *mem = vgpu_cgroup_self_path(hybrid, "memory");
  assert_string_equal(v1, "/system.slice/vgpud.service");
  assert_string_equal(v2, "/system.slice/vgpud.service");
  assert_string_equal(cpuset, "/");
  assert_null(mem);
  /* "cpu" is not "cpuset" nor "cpuacct" alone. */
  g_autofree char *only_set = vgpu_cgroup_self_path("4:cpuset:/a\n3:cpuacct:/b\n", "cpu");
  assert_null(only_set);
  /* Pure v2, a path with a colon, no trailing newline. */
  g_autofree char *pure = vgpu_cgroup_self_path("0::/user.slice/a:b.scope", NULL);
  assert_string_equal(pure, "/user.slice/a:b.scope");
  g_autofree char *none = vgpu_cgroup_self_path("0::/x\n", "cpu");
  assert_null(none);
  /* Garbage and empty input. */
  assert_null(vgpu_cgroup_self_path("", NULL));
  assert_null(vgpu_cgroup_self_path(NULL, NULL));
  assert_null(vgpu_cgroup_self_path("0::relative\nfoo\n::\n", NULL));
}

static void test_mount_point(void **state) {
  (void)state;
  const char *mi =
      "25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
      "31 25 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755\n"
      "32 31 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
      "36 31 0:31 / /sys/fs/cgroup/cpuset rw shared:15 - cgroup cgroup rw,cpuset\n"
      "37 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw shared:16 - cgroup cgroup rw,cpu,cpuacct\n"
      "38 31 0:33 /sub /mnt/bind rw - cgroup cgroup rw,memory\n";
  g_autofree char *v2 = vgpu_cgroup_mount_point(mi, NULL);
  g_autofree char *cpu = vgpu_cgroup_mount_point(mi, "cpu");
  g_autofree char *cpuset = vgpu_cgroup_mount_point(mi, "cpuset");
  g_autofree char *mem = vgpu_cgroup_mount_point(mi, "memory"); /* not its root: skipped */
  assert_string_equal(v2, "/sys/fs/cgroup/unified");
  assert_string_equal(cpu, "/sys/fs/cgroup/cpu,cpuacct");
  assert_string_equal(cpuset, "/sys/fs/cgroup/cpuset");
  assert_null(mem);
  assert_null(vgpu_cgroup_mount_point("1 2 3\n - \n", NULL));
  assert_null(vgpu_cgroup_mount_point(NULL, "cpu"));
}

static VgpuInstanceConfig *inst(const char *name, VgpuShareMode share, uint32_t weight) {
  VgpuProfile p = {.name = (char *)"p", .share = share, .weight = weight, .heads = 1};
  return vgpu_instance_config_new(name, &p);
}

static void test_weights(void **state) {
  (void)state;
  VgpuProfile p = {.share = VGPU_SHARE_EQUAL, .weight = 300};
  assert_int_equal(vgpu_cgroup_cpu_weight(&p), 100); /* equal: every instance alike */
  p.share = VGPU_SHARE_BEST_EFFORT;
  assert_int_equal(vgpu_cgroup_cpu_weight(&p), 100);
  p.share = VGPU_SHARE_FIXED;
  assert_int_equal(vgpu_cgroup_cpu_weight(&p), 300);
  p.weight = 0; /* never accepted by the parser, clamped all the same */
  assert_int_equal(vgpu_cgroup_cpu_weight(&p), 1);
  p.weight = 20000;
  assert_int_equal(vgpu_cgroup_cpu_weight(&p), 10000);
  /* v1: x 1024 / 100, rounded, within 2..262144 */
  assert_int_equal(vgpu_cgroup_v1_shares(100), 1024);
  assert_int_equal(vgpu_cgroup_v1_shares(300), 3072);
  assert_int_equal(vgpu_cgroup_v1_shares(1), 10);
  assert_int_equal(vgpu_cgroup_v1_shares(10000), 102400);
  assert_int_equal(vgpu_cgroup_v1_shares(0), 2);
}

static void test_quota(void **state) {
  (void)state;
  /* 1:3 on two CPUs: a quarter and three quarters of 200 ms per 100 ms. */
  assert_int_equal(vgpu_cgroup_quota_us(100, 400, 2, 100000), 50000);
  assert_int_equal(vgpu_cgroup_quota_us(300, 400, 2, 100000), 150000);
  /* Alone: all CPUs. */
  assert_int_equal(vgpu_cgroup_quota_us(100, 100, 2, 100000), 200000);
  /* Tiny shares meet the kernel's 1 ms floor. */
  assert_int_equal(vgpu_cgroup_quota_us(1, 10000000, 1, 100000), 1000);
  /* No total, no CPUs, a weight beyond the total: no ceiling. */
  assert_int_equal(vgpu_cgroup_quota_us(100, 0, 2, 100000), 0);
  assert_int_equal(vgpu_cgroup_quota_us(100, 400, 0, 100000), 0);
  assert_int_equal(vgpu_cgroup_quota_us(500, 400, 2, 100000), 0);
  /* Overflow: refused rather than wrapped. */
  assert_int_equal(vgpu_cgroup_quota_us(10000, 20000, 4096, UINT64_MAX / 2), 0);

  VgpuInstanceConfig *a = inst("a", VGPU_SHARE_FIXED, 100);
  VgpuInstanceConfig *b = inst("b", VGPU_SHARE_FIXED, 300);
  VgpuInstanceConfig *c = inst("c", VGPU_SHARE_BEST_EFFORT, 5000);
  VgpuInstanceConfig *d = inst("d", VGPU_SHARE_EQUAL, 100);
  const VgpuInstanceConfig *all[] = {a, b, c, d};
  /* best-effort instances are left out of the denominator */
  assert_int_equal(vgpu_cgroup_weight_total(all, 4), 500);
  assert_int_equal(vgpu_cgroup_weight_total(all, 2), 400);
  assert_int_equal(vgpu_cgroup_weight_total(all, 0), 0);
  vgpu_instance_config_free(a);
  vgpu_instance_config_free(b);
  vgpu_instance_config_free(c);
  vgpu_instance_config_free(d);
}

/* Turned off by configuration: off, with the reason, and every call a
 * no-op. */
static void test_off(void **state) {
  (void)state;
  VgpuCgroups *cg = vgpu_cgroups_new(false, "/nonexistent/run");
  assert_int_equal(vgpu_cgroups_mode(cg), VGPU_CGROUPS_OFF);
  assert_non_null(strstr(vgpu_cgroups_describe(cg), "cgroups=off"));
  assert_null(vgpu_cgroups_worker_parent(cg, "vgpu0"));
  vgpu_cgroups_attach_worker(cg, "vgpu0", 1);
  vgpu_cgroups_worker_gone(cg, 1);
  vgpu_cgroups_apply(cg, NULL, 0);
  vgpu_cgroups_free(cg);
}

static void test_config_keys(void **state) {
  (void)state;
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuConfig) c = vgpu_config_load_data(
      "[daemon]\ncgroups=off\n[profile p]\nrender-threads=4\n[profile q]\nrender-threads=auto\n"
      "[instance i]\nprofile=p\nrender-threads=2\n",
      -1, "t.conf", &e);
  assert_non_null(c);
  assert_false(c->cgroups);
  assert_int_equal(vgpu_config_find_profile(c, "p")->render_threads, 4);
  assert_int_equal(vgpu_config_find_profile(c, "q")->render_threads, 0);
  assert_int_equal(vgpu_config_find_instance(c, "i")->eff.render_threads, 2);
  g_autoptr(VgpuConfig) d = vgpu_config_load_data("[daemon]\n", -1, "t.conf", &e);
  assert_true(d->cgroups);
  const char *bad[] = {"[daemon]\ncgroups=yes\n", "[profile p]\nrender-threads=65\n",
                       "[profile p]\nrender-threads=-1\n", "[profile p]\nrender-threads=x\n"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_clear_error(&e);
    VgpuConfig *x = vgpu_config_load_data(bad[i], -1, "t.conf", &e);
    assert_null(x);
    assert_non_null(e);
  }
}

/* The CPU capacity that is the whole GPU on llvmpipe: ceilings parsed from
 * cgroup files, and the figure for this process. */
static void test_cpu_capacity(void **state) {
  (void)state;
  assert_int_equal(vgpu_cpu_max_milli("max 100000\n"), 0);
  assert_int_equal(vgpu_cpu_max_milli("150000 100000\n"), 1500);
  assert_int_equal(vgpu_cpu_max_milli("50000 100000"), 500);
  assert_int_equal(vgpu_cpu_max_milli("400000 100000\n"), 4000);
  /* Below a thousandth: still a ceiling, not "none". */
  assert_int_equal(vgpu_cpu_max_milli("1 1000000\n"), 1);
  /* Not a ceiling: garbage, one field, three, a period of 0, negatives. */
  assert_int_equal(vgpu_cpu_max_milli(NULL), 0);
  assert_int_equal(vgpu_cpu_max_milli(""), 0);
  assert_int_equal(vgpu_cpu_max_milli("100000"), 0);
  assert_int_equal(vgpu_cpu_max_milli("1 2 3"), 0);
  assert_int_equal(vgpu_cpu_max_milli("100000 0"), 0);
  assert_int_equal(vgpu_cpu_max_milli("-5 100000"), 0);
  assert_int_equal(vgpu_cpu_max_milli("12x 100000"), 0);
  /* Huge quotas do not wrap. */
  assert_int_equal(vgpu_cpu_max_milli("18446744073709551615 1"), UINT32_MAX);
  assert_int_equal(vgpu_cpu_cfs_milli("-1\n", "100000\n"), 0);
  assert_int_equal(vgpu_cpu_cfs_milli("200000\n", "100000\n"), 2000);
  assert_int_equal(vgpu_cpu_cfs_milli("25000\n", "100000\n"), 250);
  assert_int_equal(vgpu_cpu_cfs_milli(NULL, "100000"), 0);
  assert_int_equal(vgpu_cpu_cfs_milli("100000", "0"), 0);
  /* This process: at least the floor, at most its CPUs, and said why. */
  g_autofree char *desc = NULL;
  uint32_t m = vgpu_cpu_capacity_milli(&desc);
  assert_non_null(desc);
  assert_true(m >= VGPU_CPU_CAPACITY_MIN_MILLI);
  assert_true(m <= g_get_num_processors() * 1000u);
  assert_non_null(strstr(desc, "affinity"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_self_path),    cmocka_unit_test(test_mount_point),
      cmocka_unit_test(test_weights),      cmocka_unit_test(test_quota),
      cmocka_unit_test(test_off),          cmocka_unit_test(test_config_keys),
      cmocka_unit_test(test_cpu_capacity),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
