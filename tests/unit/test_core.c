/* The front-end-neutral worker core: the tenant's resource table and quota
 * charges with a front-end's refusal policy, the worker loop, and the guard
 * that ends a worker whose client left or whose GPU work ran too long. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/guard.h"
#include "core/ledger.h"
#include "core/loop.h"
#include "core/tenant.h"
#include "core/worker_exit.h"

/* ---- tenant --------------------------------------------------------------- */

typedef struct {
  VgpuLedger *ledger;
  int refusals;
  VgpuResKind refused_kind;
  char reason[256];
  int released;
  uint32_t released_handle;
} TFix;

static void on_refused(void *user, VgpuResKind kind, const char *reason) {
  TFix *f = user;
  f->refusals++;
  f->refused_kind = kind;
  g_strlcpy(f->reason, reason, sizeof(f->reason));
}

static void on_release(void *user, VgpuTenantResource *res, bool *keep_charge) {
  TFix *f = user;
  f->released++;
  f->released_handle = res->desc.handle;
  /* priv "pinned": the front-end keeps the charge. */
  *keep_charge = res->priv && strcmp(res->priv, "pinned") == 0;
  g_free(res->priv);
}

static VgpuTenant *tenant_new(TFix *f, uint64_t vram, uint64_t objects, uint64_t contexts) {
  memset(f, 0, sizeof(*f));
  uint64_t limits[VGPU_RES_N_QUOTA] = {
      [VGPU_RES_VRAM] = vram, [VGPU_RES_OBJECTS] = objects, [VGPU_RES_CONTEXTS] = contexts};
  f->ledger = vgpu_ledger_new_standalone(limits);
  VgpuTenantPolicy p = {.refused = on_refused, .release = on_release, .user = f};
  return vgpu_tenant_new(f->ledger, 0, &p);
}

static uint64_t used(TFix *f, VgpuResKind k) {
  return vgpu_ledger_used(f->ledger, k);
}

static VgpuResourceDesc desc(uint32_t handle) {
  return (VgpuResourceDesc){.handle = handle,
                            .target = 2,
                            .format = 1,
                            .width = 4,
                            .height = 4,
                            .depth = 1,
                            .array_size = 1};
}

static void test_tenant_books(void **state) {
  TFix f;
  VgpuTenant *t = tenant_new(&f, 1000, 2, 1);
  VgpuResourceDesc d1 = desc(1), d2 = desc(2), d3 = desc(3);
  VgpuTenantResource *r1 = vgpu_tenant_resource_add(t, &d1, 600, "resource 1");
  assert_non_null(r1);
  r1->priv = g_malloc0(16); /* released through the hook */
  assert_ptr_equal(vgpu_tenant_resource_get(t, 1), r1);
  assert_int_equal(used(&f, VGPU_RES_VRAM), 600);
  assert_int_equal(used(&f, VGPU_RES_OBJECTS), 1);

  /* VRAM refused: the policy hears it once, nothing stays charged. */
  assert_null(vgpu_tenant_resource_add(t, &d2, 500, "resource 2"));
  assert_int_equal(f.refusals, 1);
  assert_int_equal(f.refused_kind, VGPU_RES_VRAM);
  assert_non_null(strstr(f.reason, "resource 2 needs 500 B but VRAM limit 1000 B is reached"));
  assert_int_equal(used(&f, VGPU_RES_VRAM), 600);
  assert_int_equal(used(&f, VGPU_RES_OBJECTS), 1);
  assert_null(vgpu_tenant_resource_get(t, 2));

  /* Duplicates and handle 0 are the caller's errors: no refusal. */
  assert_null(vgpu_tenant_resource_add(t, &d1, 1, "again"));
  VgpuResourceDesc d0 = desc(0);
  assert_null(vgpu_tenant_resource_add(t, &d0, 1, "zero"));
  assert_int_equal(f.refusals, 1);

  /* Object limit. */
  assert_non_null(vgpu_tenant_resource_add(t, &d2, 100, "resource 2"));
  assert_null(vgpu_tenant_resource_add(t, &d3, 1, "resource 3"));
  assert_int_equal(f.refused_kind, VGPU_RES_OBJECTS);
  assert_non_null(strstr(f.reason, "resource 3 refused: resources limit 2 reached (2 in use)"));
  assert_int_equal(vgpu_tenant_resource_count(t), 2);
  assert_int_equal(vgpu_tenant_vram(t), 700);

  /* Forget: no hook (the front-end never finished creating it). */
  vgpu_tenant_resource_forget(t, 2);
  assert_int_equal(f.released, 0);
  assert_int_equal(used(&f, VGPU_RES_VRAM), 600);
  /* Remove: hook, then the charges. */
  assert_false(vgpu_tenant_resource_remove(t, 42));
  assert_true(vgpu_tenant_resource_remove(t, 1));
  assert_int_equal(f.released, 1);
  assert_int_equal(f.released_handle, 1);
  assert_int_equal(used(&f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(&f, VGPU_RES_OBJECTS), 0);
  /* Keep: out of the table, no hook, the charges stay with the caller. */
  assert_non_null(vgpu_tenant_resource_add(t, &d3, 250, "resource 3"));
  vgpu_tenant_resource_keep(t, 3);
  assert_null(vgpu_tenant_resource_get(t, 3));
  assert_int_equal(vgpu_tenant_vram(t), 0);
  assert_int_equal(f.released, 1);
  assert_int_equal(used(&f, VGPU_RES_VRAM), 250);
  assert_int_equal(used(&f, VGPU_RES_OBJECTS), 1);
  vgpu_tenant_uncharge(t, VGPU_RES_VRAM, 250);
  vgpu_tenant_uncharge(t, VGPU_RES_OBJECTS, 1);

  /* Contexts. */
  assert_true(vgpu_tenant_context_charge(t, "context"));
  assert_false(vgpu_tenant_context_charge(t, "second context"));
  assert_int_equal(f.refused_kind, VGPU_RES_CONTEXTS);
  assert_int_equal(vgpu_tenant_context_count(t), 1);
  assert_int_equal(used(&f, VGPU_RES_CONTEXTS), 1);

  /* Counters. */
  vgpu_tenant_count(t, VGPU_RES_FRAMES, 3);
  assert_int_equal(used(&f, VGPU_RES_FRAMES), 3);

  /* A release hook may keep the charge (memory that outlives the handle)
   * and release it later. */
  VgpuResourceDesc d4 = desc(4);
  VgpuTenantResource *r4 = vgpu_tenant_resource_add(t, &d4, 200, "resource 4");
  r4->priv = g_strdup("pinned");
  assert_true(vgpu_tenant_resource_remove(t, 4));
  assert_null(vgpu_tenant_resource_get(t, 4));
  assert_int_equal(vgpu_tenant_vram(t), 0);
  assert_int_equal(used(&f, VGPU_RES_VRAM), 200);
  assert_int_equal(used(&f, VGPU_RES_OBJECTS), 1);
  vgpu_tenant_uncharge(t, VGPU_RES_VRAM, 200);
  vgpu_tenant_uncharge(t, VGPU_RES_OBJECTS, 1);
  assert_int_equal(used(&f, VGPU_RES_VRAM), 0);
  assert_int_equal(f.released, 2);

  /* Teardown releases what is left, through the hook. */
  VgpuTenantResource *r3 = vgpu_tenant_resource_add(t, &d3, 300, "resource 3");
  r3->priv = g_malloc0(8);
  vgpu_tenant_free(t);
  assert_int_equal(f.released, 3);
  assert_int_equal(f.released_handle, 3);
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    assert_int_equal(used(&f, (VgpuResKind)k), 0);
  vgpu_tenant_free(NULL);
  vgpu_ledger_free(f.ledger);
}

/* Without a ledger (tests, fuzzing) nothing is refused. */
static void test_tenant_no_ledger(void **state) {
  VgpuTenant *t = vgpu_tenant_new(NULL, 0, NULL);
  VgpuResourceDesc d = desc(5);
  assert_non_null(vgpu_tenant_resource_add(t, &d, UINT64_MAX / 2, "big"));
  assert_true(vgpu_tenant_context_charge(t, "c"));
  vgpu_tenant_count(t, VGPU_RES_FRAMES, 1);
  vgpu_tenant_free(t);
}

/* ---- exit contract -------------------------------------------------------- */

static void test_exit_contract(void **state) {
  assert_false(vgpu_worker_exit_is_crash(VGPU_WORKER_EXIT_CLIENT_LEFT));
  assert_false(vgpu_worker_exit_is_crash(VGPU_WORKER_EXIT_VIOLATION));
  assert_false(vgpu_worker_exit_is_crash(VGPU_WORKER_EXIT_QUOTA));
  assert_false(vgpu_worker_exit_is_crash(VGPU_WORKER_EXIT_GPU_TIMEOUT));
  assert_true(vgpu_worker_exit_is_crash(VGPU_WORKER_EXIT_ERROR));
  assert_true(vgpu_worker_exit_is_crash(VGPU_WORKER_EXIT_RENDERER));
  assert_true(vgpu_worker_exit_is_crash(127));
  assert_string_equal(vgpu_worker_exit_name(0), "client left");
  assert_string_equal(vgpu_worker_exit_name(5), "gpu timeout");
  assert_null(vgpu_worker_exit_name(6));
  assert_null(vgpu_worker_exit_name(-1));
}

/* ---- loop ----------------------------------------------------------------- */

typedef struct {
  VgpuLoop *loop;
  int reads;
  int timers;
  char got[16];
  int other_id;
} LFix;

static void on_readable(void *user, int fd, short revents) {
  LFix *f = user;
  assert_true(revents & POLLIN);
  ssize_t n = read(fd, f->got, sizeof(f->got) - 1);
  assert_true(n > 0);
  f->got[n] = '\0';
  if (++f->reads == 2)
    vgpu_loop_quit(f->loop);
}

static void on_timer(void *user) {
  LFix *f = user;
  f->timers++;
  vgpu_loop_quit(f->loop);
}

static void test_loop(void **state) {
  int a[2], b[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
  LFix f = {.loop = vgpu_loop_new()};
  int ia = vgpu_loop_add(f.loop, a[0], POLLIN, on_readable, &f);
  int ib = vgpu_loop_add(f.loop, b[0], POLLIN, on_readable, &f);
  assert_true(ia >= 0 && ib >= 0 && ia != ib);
  /* Two fds served by one loop. */
  assert_int_equal(write(a[1], "x", 1), 1);
  assert_int_equal(write(b[1], "y", 1), 1);
  assert_int_equal(vgpu_loop_run(f.loop), 0);
  assert_int_equal(f.reads, 2);

  /* A removed watch is not served; the timer ends the run. */
  vgpu_loop_remove(f.loop, ib);
  assert_int_equal(write(b[1], "z", 1), 1);
  f.reads = 0;
  gint64 t0 = g_get_monotonic_time();
  vgpu_loop_set_timer(f.loop, t0 + 20000, on_timer, &f);
  assert_int_equal(vgpu_loop_run(f.loop), 0);
  assert_true(g_get_monotonic_time() - t0 >= 20000);
  assert_int_equal(f.timers, 1);
  assert_int_equal(f.reads, 0);

  /* events 0: only a hang-up wakes the loop. */
  vgpu_loop_modify(f.loop, ia, -1, 0);
  assert_int_equal(write(a[1], "w", 1), 1);
  vgpu_loop_set_timer(f.loop, g_get_monotonic_time() + 10000, on_timer, &f);
  assert_int_equal(vgpu_loop_run(f.loop), 0);
  assert_int_equal(f.timers, 2);
  assert_int_equal(f.reads, 0);

  /* Full. */
  VgpuLoop *l = vgpu_loop_new();
  for (int i = 0; i < VGPU_LOOP_MAX_WATCHES; i++)
    assert_true(vgpu_loop_add(l, a[0], POLLIN, on_readable, &f) >= 0);
  assert_int_equal(vgpu_loop_add(l, a[0], POLLIN, on_readable, &f), -ENOSPC);
  /* A loop told to quit before it runs returns at once. */
  vgpu_loop_quit(l);
  assert_int_equal(vgpu_loop_run(l), 0);
  vgpu_loop_free(l);
  vgpu_loop_free(f.loop);
  close(a[0]);
  close(a[1]);
  close(b[0]);
  close(b[1]);
}

/* ---- guard ---------------------------------------------------------------- */

typedef struct {
  GMutex lock;
  GCond cond;
  int timeouts, gone;
  double seconds;
} GFix;

static void on_expire(void *user, VgpuGuardCause cause, double seconds) {
  GFix *f = user;
  g_mutex_lock(&f->lock);
  if (cause == VGPU_GUARD_GPU_TIMEOUT)
    f->timeouts++;
  else
    f->gone++;
  f->seconds = seconds;
  g_cond_broadcast(&f->cond);
  g_mutex_unlock(&f->lock);
}

/* Waits (bounded) until *counter reaches want. */
static bool wait_count(GFix *f, int *counter, int want, int ms) {
  gint64 end = g_get_monotonic_time() + ms * 1000;
  g_mutex_lock(&f->lock);
  while (*counter < want && g_cond_wait_until(&f->cond, &f->lock, end))
    ;
  bool ok = *counter >= want;
  g_mutex_unlock(&f->lock);
  return ok;
}

static void test_guard_timeout(void **state) {
  GFix f = {0};
  g_autoptr(GError) e = NULL;
  VgpuGuard *g = vgpu_guard_start(-1, 1, on_expire, &f, &e);
  assert_non_null(g);
  /* Idle: nothing happens. */
  assert_false(wait_count(&f, &f.timeouts, 1, 1300));
  /* Busy for longer than the limit, but with progress every 0.3 s: still
   * nothing. */
  vgpu_guard_busy(g);
  for (int i = 0; i < 5; i++) {
    g_usleep(300000);
    vgpu_guard_progress(g, true);
  }
  assert_int_equal(f.timeouts, 0);
  /* No progress for a second: the guard fires. */
  assert_true(wait_count(&f, &f.timeouts, 1, 3000));
  assert_true(f.seconds >= 1.0);
  /* Done: busy no more, nothing further. */
  vgpu_guard_progress(g, false);
  assert_false(wait_count(&f, &f.timeouts, 2, 1300));
  vgpu_guard_stop(g);
}

static void test_guard_client_gone(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  GFix f = {0};
  g_autoptr(GError) e = NULL;
  VgpuGuard *g = vgpu_guard_start(sv[0], 0, on_expire, &f, &e);
  assert_non_null(g);
  /* Pending input is not a hang-up. */
  assert_int_equal(write(sv[1], "data", 4), 4);
  vgpu_guard_enter(g);
  assert_false(wait_count(&f, &f.gone, 1, 200));
  vgpu_guard_leave(g);
  /* A hang-up outside the renderer is the main loop's to see. */
  close(sv[1]);
  assert_false(wait_count(&f, &f.gone, 1, 300));
  /* A short renderer call with the client gone is left to the main thread
   * too. */
  vgpu_guard_enter(g);
  g_usleep(100000);
  vgpu_guard_leave(g);
  assert_false(wait_count(&f, &f.gone, 1, 600));
  /* Stuck inside the renderer with the client gone: the guard ends it. */
  vgpu_guard_enter(g);
  assert_true(wait_count(&f, &f.gone, 1, 3000));
  assert_true(f.seconds >= 0.5);
  vgpu_guard_leave(g);
  assert_int_equal(f.timeouts, 0);
  vgpu_guard_stop(g);
  close(sv[0]);

  /* A hang-up while stuck inside the renderer. */
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  GFix f2 = {0};
  g = vgpu_guard_start(sv[0], 0, on_expire, &f2, &e);
  vgpu_guard_enter(g);
  g_usleep(50000);
  close(sv[1]);
  assert_true(wait_count(&f2, &f2.gone, 1, 2000));
  vgpu_guard_stop(g);
  close(sv[0]);
  /* NULL guard: every call is a no-op. */
  vgpu_guard_enter(NULL);
  vgpu_guard_busy(NULL);
  vgpu_guard_progress(NULL, true);
  vgpu_guard_leave(NULL);
  vgpu_guard_stop(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tenant_books),  cmocka_unit_test(test_tenant_no_ledger),
      cmocka_unit_test(test_exit_contract), cmocka_unit_test(test_loop),
      cmocka_unit_test(test_guard_timeout), cmocka_unit_test(test_guard_client_gone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
