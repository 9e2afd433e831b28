/* Session ends: /proc/PID/stat parsing, the reasons vgpud composes from a
 * worker's status and the book's refusal, the ring and who may read it. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/worker_exit.h"
#include "daemon/session_end.h"
#include "util/proc_stat.h"

static void test_proc_stat_parse(void **state) {
  pid_t ppid = 0;
  uint64_t start = 0;
  const char *plain = "42 (glxgears) S 7 42 42 0 -1 4194304 100 0 0 0 1 2 0 0 20 0 3 0 "
                      "123456 1000 10 18446744073709551615\n";
  assert_true(vgpu_proc_stat_parse(plain, strlen(plain), &ppid, &start));
  assert_int_equal(ppid, 7);
  assert_int_equal(start, 123456);
  /* A command name made to look like fields: skipped to the last ')'. */
  const char *tricky = "43 (a) 1 2 (x) y) R 9 43 43 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 777 0\n";
  assert_true(vgpu_proc_stat_parse(tricky, strlen(tricky), &ppid, &start));
  assert_int_equal(ppid, 9);
  assert_int_equal(start, 777);
  static const char negative[] = "42 (x) S -7 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19";
  const char *bad[] = {"", "42 glxgears S 7", "42 (x) S 7 1 2", negative};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
    assert_false(vgpu_proc_stat_parse(bad[i], strlen(bad[i]), &ppid, &start));

  /* utime + stime (fields 14 and 15): the process's CPU time in ticks. */
  uint64_t ticks = 0;
  assert_true(vgpu_proc_stat_cpu(plain, strlen(plain), &ticks));
  assert_int_equal(ticks, 3);
  const char *busy = "9 (vgpu-worker) R 1 9 9 0 -1 0 0 0 0 0 1500 250 0 0 20 0 9 0 5 0\n";
  assert_true(vgpu_proc_stat_cpu(busy, strlen(busy), &ticks));
  assert_int_equal(ticks, 1750);
  static const char overflow[] =
      "9 (w) R 1 9 9 0 -1 0 0 0 0 0 18446744073709551615 1 0 0 20 0 9 0 5 0\n";
  const char *bad_cpu[] = {"", "9 (w) R 1 9 9 0 -1 0 0 0 0 0 15",
                           "9 (w) R 1 9 9 0 -1 0 0 0 0 0 x 2", overflow};
  for (size_t i = 0; i < G_N_ELEMENTS(bad_cpu); i++)
    assert_false(vgpu_proc_stat_cpu(bad_cpu[i], strlen(bad_cpu[i]), &ticks));

  /* /proc/stat: idle + iowait of the CPUs in the mask. */
  const char *stat = "cpu  900 0 300 5000 70 0 5 0 0 0\n"
                     "cpu0 400 0 100 2000 30 0 2 0 0 0\n"
                     "cpu1 500 0 200 3000 40 0 3 0 0 0\n"
                     "cpu3 1 0 1 100000 1 0 0 0 0 0\n"
                     "intr 12345 1 2 3\nctxt 99\n";
  unsigned ncpus = 0;
  assert_true(vgpu_proc_stat_idle(stat, strlen(stat), NULL, &ticks, &ncpus));
  assert_int_equal(ticks, 2030 + 3040 + 100001);
  assert_int_equal(ncpus, 3);
  cpu_set_t mask;
  CPU_ZERO(&mask);
  CPU_SET(1, &mask);
  CPU_SET(2, &mask); /* offline: no line, not counted */
  assert_true(vgpu_proc_stat_idle(stat, strlen(stat), &mask, &ticks, &ncpus));
  assert_int_equal(ticks, 3040);
  assert_int_equal(ncpus, 1);
  /* Lines that are not well-formed are skipped; none at all: false. */
  const char *odd = "cpu0 1 2 3\ncpu1 1 2 3 x 5\ncpux 1 2 3 4 5\ncpu2  7 0 0 8  9\n";
  assert_true(vgpu_proc_stat_idle(odd, strlen(odd), NULL, &ticks, &ncpus));
  assert_int_equal(ticks, 17);
  assert_int_equal(ncpus, 1);
  const char *none = "cpu 1 2 3 4 5\nintr 1\n";
  assert_false(vgpu_proc_stat_idle(none, strlen(none), NULL, &ticks, &ncpus));
  assert_false(vgpu_proc_stat_idle("", 0, NULL, &ticks, &ncpus));
  /* Counts past 2^64 saturate. */
  const char *huge = "cpu0 0 0 0 18446744073709551615 5\ncpu1 0 0 0 3 4\n";
  assert_true(vgpu_proc_stat_idle(huge, strlen(huge), NULL, &ticks, &ncpus));
  assert_int_equal(ticks, UINT64_MAX);

  /* schedstat: the run delay, the second of three numbers. */
  uint64_t run = 0, delay = 0;
  const char *ss = "123456789 9876543 42\n";
  assert_true(vgpu_proc_schedstat(ss, strlen(ss), &run, &delay));
  assert_int_equal(run, 123456789);
  assert_int_equal(delay, 9876543);
  assert_true(vgpu_proc_schedstat("1 2 3", 5, &run, &delay));
  assert_int_equal(run, 1);
  assert_int_equal(delay, 2);
  const char *bad_ss[] = {"", "1 2", "1 2 3 4", "1  2 3", " 1 2 3", "1 -2 3", "1 2 3\n\n",
                          "1 2 3x", "1 18446744073709551616 3", "1 2 3\nx"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad_ss); i++)
    assert_false(vgpu_proc_schedstat(bad_ss[i], strlen(bad_ss[i]), &run, &delay));
  /* Not NUL-terminated: only len bytes are read. */
  assert_true(vgpu_proc_schedstat("7 8 9999", 5, &run, &delay));
  assert_int_equal(run, 7);
  assert_int_equal(delay, 8);

  /* This process: itself, then its parent. */
  VgpuProcRef chain[4];
  guint n = vgpu_proc_ancestry(getpid(), chain, 4);
  assert_true(n >= 2);
  assert_int_equal(chain[0].pid, getpid());
  assert_int_equal(chain[1].pid, getppid());
  assert_true(chain[0].start >= chain[1].start);
}

static VgpuSessionEnd ended(int status, const VgpuBookRefusal *r) {
  VgpuSessionEnd e = {0};
  g_strlcpy(e.instance, "vgpu0", sizeof(e.instance));
  vgpu_session_end_compose(&e, status, "crashed by SIGSEGV", r, 5);
  return e;
}

static void test_compose(void **state) {
  VgpuBookRefusal r = {
      .valid = true, .kind = VGPU_RES_VRAM, .want = 300u << 20, .limit = 256u << 20, .others = 0};
  VgpuSessionEnd e = ended(VGPU_WORKER_EXIT_QUOTA << 8, &r);
  assert_true(e.by_vgpud);
  assert_string_equal(e.cause, "quota");
  assert_string_equal(e.reason, "VRAM limit 256 MiB reached on instance vgpu0 (the session "
                                "asked for 300 MiB in all, other tenants held 0 B)");
  r = (VgpuBookRefusal){
      .valid = true, .kind = VGPU_RES_CONTEXTS, .want = 17, .limit = 16, .others = 4};
  e = ended(VGPU_WORKER_EXIT_QUOTA << 8, &r);
  assert_string_equal(e.reason, "context limit 16 reached on instance vgpu0 (the session asked "
                                "for 17 in all, other tenants held 4)");
  /* A quota exit without a refusal in the book: a per-session limit. */
  e = ended(VGPU_WORKER_EXIT_QUOTA << 8, NULL);
  assert_true(g_str_has_prefix(e.reason, "a per-session limit reached on instance vgpu0"));
  e = ended(0, NULL);
  assert_false(e.by_vgpud);
  assert_string_equal(e.cause, "client-left");
  e = ended(VGPU_WORKER_EXIT_GPU_TIMEOUT << 8, NULL);
  assert_string_equal(e.reason,
                      "GPU timeout on instance vgpu0: submitted work ran past gpu-timeout 5 s");
  e = ended(VGPU_WORKER_EXIT_VIOLATION << 8, NULL);
  assert_string_equal(e.cause, "violation");
  e = ended(SIGSEGV, NULL);
  assert_string_equal(e.cause, "crash");
  assert_string_equal(e.reason, "worker crashed by SIGSEGV on instance vgpu0");
  e = ended(SIGTERM, NULL);
  assert_string_equal(e.cause, "stopped");
  e = ended(77 << 8, NULL);
  assert_string_equal(e.cause, "crash");
}

static void test_ring(void **state) {
  VgpuSessionRing *r = vgpu_session_ring_new();
  VgpuProcRef runner = {.pid = 100, .start = 5000};
  for (int i = 0; i < VGPU_SESSION_END_RING + 10; i++) {
    VgpuSessionEnd e = {.client_pid = 1000 + i, .client_uid = i % 2 ? 1001 : 1002, .n_chain = 3};
    e.chain[0] = (VgpuProcRef){1000 + i, 6000};
    e.chain[1] = (VgpuProcRef){i % 2 ? 100 : 200, 5000}; /* odd ones: runner's */
    e.chain[2] = (VgpuProcRef){1, 1};
    g_snprintf(e.reason, sizeof(e.reason), "end %d", i);
    vgpu_session_ring_add(r, &e);
  }
  /* Only the last VGPU_SESSION_END_RING, oldest first; the caller's own uid. */
  g_autoptr(GArray) mine = vgpu_session_ring_find(r, &runner, 1001, false);
  assert_int_equal(mine->len, VGPU_SESSION_END_RING / 2);
  assert_string_equal(g_array_index(mine, VgpuSessionEnd, 0).reason, "end 11");
  assert_string_equal(g_array_index(mine, VgpuSessionEnd, mine->len - 1).reason, "end 73");
  /* Another uid sees none of them; an admin all; a reused pid (another
   * start time) none. */
  g_autoptr(GArray) other = vgpu_session_ring_find(r, &runner, 1002, false);
  assert_int_equal(other->len, 0);
  g_autoptr(GArray) admin = vgpu_session_ring_find(r, &runner, 0, true);
  assert_int_equal(admin->len, VGPU_SESSION_END_RING / 2);
  VgpuProcRef reused = {.pid = 100, .start = 9999};
  g_autoptr(GArray) none = vgpu_session_ring_find(r, &reused, 1001, false);
  assert_int_equal(none->len, 0);
  vgpu_session_ring_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_proc_stat_parse),
      cmocka_unit_test(test_compose),
      cmocka_unit_test(test_ring),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
