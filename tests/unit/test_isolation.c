/* Worker uids: ids of worker-uid-range that an account owns are never
 * handed to a worker, and a range with too few free ids is refused.  Uses
 * the system's own "nobody" (uid and gid 65534) as the account in the
 * range; the uid part needs root, as vgpud does to give workers uids. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "core/ledger.h"
#include "daemon/config.h"
#include "daemon/isolation.h"
#include "util/log.h"

#define ACCOUNT_ID 65534u

static VgpuConfig *config_with_range(uint32_t first, uint32_t last) {
  g_autofree char *text =
      g_strdup_printf("[daemon]\nworker-uid-range=%u-%u\n", (unsigned)first, (unsigned)last);
  g_autoptr(GError) e = NULL;
  VgpuConfig *c = vgpu_config_load_data(text, -1, "test.conf", &e);
  if (!c)
    fail_msg("config: %s", e->message);
  return c;
}

/* Exactly as many free ids as workers may run: every one is handed out,
 * the account's never, and one more is refused. */
static void test_account_ids_are_skipped(void **state) {
  (void)state;
  uint32_t first = ACCOUNT_ID - VGPU_LEDGER_MAX_SLOTS; /* the range holds one more */
  VgpuConfig *c = config_with_range(first, ACCOUNT_ID);
  g_autoptr(GError) e = NULL;
  VgpuIsolation *iso = vgpu_isolation_new(c, NULL, &e);
  assert_non_null(iso);
  VgpuWorkerIdentity *ids = g_new0(VgpuWorkerIdentity, VGPU_LEDGER_MAX_SLOTS);
  for (unsigned i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    if (!vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &ids[i], &e))
      fail_msg("worker %u: %s", i, e->message);
    assert_true(ids[i].own_uid);
    assert_true(ids[i].uid >= first && ids[i].uid < ACCOUNT_ID);
    assert_int_equal(ids[i].gid, ids[i].uid);
  }
  VgpuWorkerIdentity extra;
  assert_false(vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &extra, &e));
  assert_non_null(strstr(e->message, "owned by accounts"));
  g_clear_error(&e);
  /* A uid given back is handed out again. */
  uint32_t back = ids[7].uid;
  vgpu_isolation_worker_done(iso, &ids[7]);
  assert_true(vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &ids[7], &e));
  assert_int_equal(ids[7].uid, back);
  for (unsigned i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    vgpu_isolation_worker_done(iso, &ids[i]);
  g_free(ids);
  vgpu_isolation_free(iso);
  vgpu_config_free(c);
}

/* One id fewer: the range cannot serve every slot, and start-up says so. */
static void test_too_few_free_ids(void **state) {
  (void)state;
  VgpuConfig *c = config_with_range(ACCOUNT_ID - VGPU_LEDGER_MAX_SLOTS + 1, ACCOUNT_ID);
  g_autoptr(GError) e = NULL;
  assert_null(vgpu_isolation_new(c, NULL, &e));
  assert_non_null(e);
  assert_non_null(strstr(e->message, "ids no account owns"));
  vgpu_config_free(c);
}

/* An account added to the local files after start-up is found on the
 * next spawn (no NSS lookup there), and a reload builds the set anew: an
 * account gone since frees its id. */
static void test_local_account_found_and_reload(void **state) {
  (void)state;
  /* Room for every slot and one more; then the late account takes one. */
  uint32_t first = ACCOUNT_ID - VGPU_LEDGER_MAX_SLOTS - 1, late = first + 3;
  VgpuConfig *c = config_with_range(first, ACCOUNT_ID);
  g_autoptr(GError) e = NULL;
  VgpuIsolation *iso = vgpu_isolation_new(c, NULL, &e);
  assert_non_null(iso);
  g_autofree char *dir = g_dir_make_tmp("test-isolation-XXXXXX", NULL);
  g_autofree char *passwd = g_build_filename(dir, "passwd", NULL);
  g_autofree char *group = g_build_filename(dir, "group", NULL);
  assert_true(g_file_set_contents(passwd, "", 0, NULL));
  assert_true(g_file_set_contents(group, "", 0, NULL));
  vgpu_isolation_set_account_files(iso, passwd, group);
  VgpuWorkerIdentity *ids = g_new0(VgpuWorkerIdentity, VGPU_LEDGER_MAX_SLOTS + 1);
  assert_true(vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &ids[0], &e));
  assert_int_equal(ids[0].uid, first);
  g_autofree char *line = g_strdup_printf("late:x:%u:%u::/nonexistent:/bin/false\n", late, late);
  assert_true(g_file_set_contents(passwd, line, -1, NULL));
  for (unsigned i = 1; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    if (!vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &ids[i], &e))
      fail_msg("worker %u: %s", i, e->message);
    assert_int_not_equal(ids[i].uid, late);
    assert_int_not_equal(ids[i].uid, ACCOUNT_ID);
  }
  VgpuWorkerIdentity extra;
  assert_false(vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &extra, &e));
  g_clear_error(&e);
  for (unsigned i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    vgpu_isolation_worker_done(iso, &ids[i]);
  /* The account is gone: the reload gives its id out again. */
  assert_true(g_file_set_contents(passwd, "", 0, NULL));
  bool late_given = false;
  vgpu_isolation_reload(iso);
  for (unsigned i = 0; i <= VGPU_LEDGER_MAX_SLOTS; i++) {
    if (!vgpu_isolation_worker_prepare(iso, 1 << 20, NULL, &ids[i], &e))
      fail_msg("worker %u after reload: %s", i, e->message);
    assert_int_not_equal(ids[i].uid, ACCOUNT_ID);
    late_given |= ids[i].uid == late;
  }
  assert_true(late_given);
  for (unsigned i = 0; i <= VGPU_LEDGER_MAX_SLOTS; i++)
    vgpu_isolation_worker_done(iso, &ids[i]);
  g_free(ids);
  vgpu_isolation_free(iso);
  vgpu_config_free(c);
  g_unlink(passwd);
  g_unlink(group);
  g_rmdir(dir);
}

int main(void) {
  if (geteuid() != 0) {
    printf("SKIP: worker uids are only handed out by a vgpud running as root\n");
    return 77;
  }
  if (!getpwuid(ACCOUNT_ID) && !getgrgid(ACCOUNT_ID)) {
    printf("SKIP: no account owns id %u on this system\n", ACCOUNT_ID);
    return 77;
  }
  vgpu_log_init("test-isolation", VGPU_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_account_ids_are_skipped),
      cmocka_unit_test(test_too_few_free_ids),
      cmocka_unit_test(test_local_account_found_and_reload),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
