/* Ledger: limits never crossed, refusals charge nothing, reclaim returns
 * usage to what live slots hold, and the books stay exact across processes
 * killed with SIGKILL, even while holding the instance lock. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/ledger.h"

static VgpuLedger *l;
static int inst;
static const uint64_t lim[VGPU_RES_N_QUOTA] = {[VGPU_RES_VRAM] = 1000, [VGPU_RES_OBJECTS] = 3,
                                               [VGPU_RES_CONTEXTS] = 0};

static int setup(void **state) {
  l = vgpu_ledger_create(NULL);
  inst = vgpu_ledger_instance_add(l, "t", lim);
  return l && inst >= 0 ? 0 : -1;
}

static int teardown(void **state) {
  vgpu_ledger_free(l);
  return 0;
}

static uint64_t used(VgpuResKind k) {
  return atomic_load(&vgpu_ledger_instance(l, (uint32_t)inst)->used[k]);
}

static void test_reserve_up_to_limit(void **state) {
  int s = vgpu_ledger_slot_claim(l, (uint32_t)inst, 10, 0);
  assert_true(s >= 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, 600), 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, 400), 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, 1), -EDQUOT);
  assert_int_equal(used(VGPU_RES_VRAM), 1000);
  assert_int_equal(atomic_load(&vgpu_ledger_instance(l, (uint32_t)inst)->refusals), 1);
  /* Overflow is a refusal, not a wrap. */
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, UINT64_MAX), -EDQUOT);
  /* 0 = unlimited */
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_CONTEXTS, 1000000), 0);
  vgpu_ledger_release(l, (uint32_t)s, VGPU_RES_VRAM, 400);
  assert_int_equal(used(VGPU_RES_VRAM), 600);
  assert_int_equal(atomic_load(&vgpu_ledger_slot(l, (uint32_t)s)->peak_vram), 1000);
  assert_int_equal(vgpu_ledger_slot_reclaim(l, (uint32_t)s), 600);
  assert_int_equal(used(VGPU_RES_VRAM), 0);
  assert_int_equal(used(VGPU_RES_CONTEXTS), 0);
  assert_int_equal(atomic_load(&vgpu_ledger_instance(l, (uint32_t)inst)->clients), 0);
}

static void test_two_slots_share_the_limit(void **state) {
  int a = vgpu_ledger_slot_claim(l, (uint32_t)inst, 1, 0);
  int b = vgpu_ledger_slot_claim(l, (uint32_t)inst, 2, 0);
  assert_true(a >= 0 && b >= 0 && a != b);
  assert_int_equal(atomic_load(&vgpu_ledger_instance(l, (uint32_t)inst)->clients), 2);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)a, VGPU_RES_OBJECTS, 2), 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)b, VGPU_RES_OBJECTS, 2), -EDQUOT);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)b, VGPU_RES_OBJECTS, 1), 0);
  vgpu_ledger_slot_reclaim(l, (uint32_t)a);
  assert_int_equal(used(VGPU_RES_OBJECTS), 1); /* exactly what b holds */
  vgpu_ledger_slot_reclaim(l, (uint32_t)b);
  assert_int_equal(used(VGPU_RES_OBJECTS), 0);
}

static void test_shrink_below_use(void **state) {
  int s = vgpu_ledger_slot_claim(l, (uint32_t)inst, 1, 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, 800), 0);
  uint64_t smaller[VGPU_RES_N_QUOTA] = {[VGPU_RES_VRAM] = 500, [VGPU_RES_OBJECTS] = 3};
  vgpu_ledger_instance_set_limits(l, (uint32_t)inst, smaller);
  assert_int_equal(used(VGPU_RES_VRAM), 800); /* nothing taken away */
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, 1), -EDQUOT);
  vgpu_ledger_release(l, (uint32_t)s, VGPU_RES_VRAM, 400);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_VRAM, 100), 0);
  vgpu_ledger_slot_reclaim(l, (uint32_t)s);
  vgpu_ledger_instance_set_limits(l, (uint32_t)inst, lim);
}

static void test_counters_are_not_limited(void **state) {
  int s = vgpu_ledger_slot_claim(l, (uint32_t)inst, 1, 0);
  vgpu_ledger_count(l, (uint32_t)s, VGPU_RES_FRAMES, 5);
  vgpu_ledger_count(l, (uint32_t)s, VGPU_RES_FRAMES, 7);
  assert_int_equal(used(VGPU_RES_FRAMES), 12);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)s, VGPU_RES_FRAMES, 1), -EINVAL);
  vgpu_ledger_slot_reclaim(l, (uint32_t)s);
  assert_int_equal(used(VGPU_RES_FRAMES), 12); /* history, not a holding */
}

/* A worker killed with SIGKILL: the supervisor reclaims its slot. */
static void test_killed_process_reclaimed(void **state) {
  int s = vgpu_ledger_slot_claim(l, (uint32_t)inst, 1, 0);
  int p[2];
  assert_int_equal(pipe(p), 0);
  fflush(NULL); /* the child must not repeat buffered output */
  pid_t pid = fork();
  if (pid == 0) {
    VgpuLedger *mine = vgpu_ledger_map(dup(l->fd), NULL);
    if (!mine || vgpu_ledger_reserve(mine, (uint32_t)s, VGPU_RES_VRAM, 700) < 0)
      _exit(1);
    (void)write(p[1], "x", 1);
    pause();
    _exit(0);
  }
  char c;
  assert_int_equal(read(p[0], &c, 1), 1);
  assert_int_equal(used(VGPU_RES_VRAM), 700);
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(vgpu_ledger_slot_reclaim(l, (uint32_t)s), 700);
  assert_int_equal(used(VGPU_RES_VRAM), 0);
  close(p[0]);
  close(p[1]);
}

/* A process that dies holding the instance lock: the next holder recovers
 * (EOWNERDEAD) and recomputes totals from the live slots. */
static void test_death_holding_the_lock(void **state) {
  int keep = vgpu_ledger_slot_claim(l, (uint32_t)inst, 1, 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)keep, VGPU_RES_VRAM, 300), 0);
  fflush(NULL); /* the child must not repeat buffered output */
  pid_t pid = fork();
  if (pid == 0) {
    VgpuLedgerInstance *in = vgpu_ledger_instance(l, (uint32_t)inst);
    pthread_mutex_lock(&in->lock);
    atomic_fetch_add(&in->used[VGPU_RES_VRAM], 12345); /* half-done update */
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  assert_int_equal(vgpu_ledger_reserve(l, (uint32_t)keep, VGPU_RES_VRAM, 100), 0);
  assert_int_equal(used(VGPU_RES_VRAM), 400); /* 300 + 100, the torn 12345 gone */
  vgpu_ledger_slot_reclaim(l, (uint32_t)keep);
  assert_int_equal(used(VGPU_RES_VRAM), 0);
}

/* A reader holding the instance lock sees totals no reservation can move. */
static void test_reader_lock_holds_reservations(void **state) {
  int s = vgpu_ledger_slot_claim(l, (uint32_t)inst, 1, 0);
  vgpu_ledger_instance_lock(l, (uint32_t)inst);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    VgpuLedger *mine = vgpu_ledger_map(dup(l->fd), NULL);
    _exit(mine && vgpu_ledger_reserve(mine, (uint32_t)s, VGPU_RES_VRAM, 64) == 0 ? 0 : 1);
  }
  usleep(100 * 1000);
  assert_int_equal(used(VGPU_RES_VRAM), 0);
  assert_int_equal(atomic_load(&vgpu_ledger_slot(l, (uint32_t)s)->used[VGPU_RES_VRAM]), 0);
  vgpu_ledger_instance_unlock(l, (uint32_t)inst);
  int st;
  waitpid(pid, &st, 0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_int_equal(used(VGPU_RES_VRAM), 64);
  assert_int_equal(vgpu_ledger_slot_reclaim(l, (uint32_t)s), 64);
}

static void test_map_checks(void **state) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  GError *e = NULL;
  assert_null(vgpu_ledger_map(fd[0], &e));
  assert_non_null(e);
  g_error_free(e);
  close(fd[0]);
  close(fd[1]);
  assert_string_equal(vgpu_res_kind_name(VGPU_RES_VRAM), "vram");
}

static void test_instance_table_full(void **state) {
  int n = 0;
  for (int i = 0; i < VGPU_LEDGER_MAX_INSTANCES + 1; i++)
    if (vgpu_ledger_instance_add(l, "x", lim) >= 0)
      n++;
  assert_int_equal(n, VGPU_LEDGER_MAX_INSTANCES - 1); /* one is ours */
  assert_int_equal(vgpu_ledger_instance_add(l, "y", lim), -ENOSPC);
  for (int i = 0; i < VGPU_LEDGER_MAX_INSTANCES; i++)
    if (i != inst)
      vgpu_ledger_instance_remove(l, (uint32_t)i);
  assert_true(vgpu_ledger_instance_add(l, "z", lim) >= 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reserve_up_to_limit),
      cmocka_unit_test(test_two_slots_share_the_limit),
      cmocka_unit_test(test_shrink_below_use),
      cmocka_unit_test(test_counters_are_not_limited),
      cmocka_unit_test(test_killed_process_reclaimed),
      cmocka_unit_test(test_death_holding_the_lock),
      cmocka_unit_test(test_reader_lock_holds_reservations),
      cmocka_unit_test(test_map_checks),
      cmocka_unit_test(test_instance_table_full),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
