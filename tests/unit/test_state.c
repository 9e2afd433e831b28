/* The state file of run-time changes: its parser (every refusal with its
 * FILE:LINE), printing and reading back, the merge over a configuration
 * (GPU memory included), the atomic write and a corrupt file kept aside;
 * and vgpud.conf text printed from a configuration loading back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <glib/gstdio.h>

#include "daemon/config.h"
#include "daemon/state.h"

static const char conf[] = "[daemon]\n"
                           "renderer=null\n"
                           "[profile p]\n"
                           "vram=256M\n"
                           "max-clients=4\n"
                           "[profile big]\n"
                           "vram=1G\n"
                           "[instance a]\n"
                           "profile=p\n"
                           "max-clients=3\n"
                           "[instance b]\n"
                           "profile=p\n";

static VgpuConfig *load_conf(void) {
  g_autoptr(GError) e = NULL;
  VgpuConfig *c = vgpu_config_load_data(conf, -1, "t.conf", &e);
  if (!c)
    fail_msg("%s", e->message);
  return c;
}

static VgpuState *parse_ok(const char *text) {
  g_autoptr(GError) e = NULL;
  VgpuState *st = vgpu_state_parse(text, strlen(text), "s", &e);
  if (!st)
    fail_msg("%s", e->message);
  return st;
}

static void test_parse(void **unused) {
  (void)unused;
  g_autoptr(VgpuState) st = parse_ok("# comment\n"
                                     "[instance a]\n"
                                     "vram = 512M\n"
                                     "max-clients=2\n"
                                     "\n"
                                     "[created c]\n"
                                     "profile=big\n"
                                     "fps-cap=30\n"
                                     "[destroyed b]\n");
  assert_int_equal(st->entries->len, 3);
  VgpuStateEntry *a = vgpu_state_find(st, "a");
  assert_int_equal(a->kind, VGPU_STATE_SET);
  assert_string_equal(vgpu_kv_get(a->kv, "vram"), "512M");
  assert_string_equal(vgpu_kv_get(a->kv, "max-clients"), "2");
  VgpuStateEntry *c = vgpu_state_find(st, "c");
  assert_int_equal(c->kind, VGPU_STATE_CREATED);
  assert_string_equal(c->profile, "big");
  assert_int_equal(vgpu_state_find(st, "b")->kind, VGPU_STATE_DESTROYED);
  /* Printed and read back: the same text. */
  g_autofree char *text = vgpu_state_format(st);
  g_autoptr(VgpuState) again = parse_ok(text);
  g_autofree char *text2 = vgpu_state_format(again);
  assert_string_equal(text, text2);
  /* An empty file is an empty state. */
  g_autoptr(VgpuState) empty = parse_ok("");
  assert_int_equal(empty->entries->len, 0);
}

static void refused(const char *text, gsize len, const char *where, const char *why) {
  g_autoptr(GError) e = NULL;
  VgpuState *st = vgpu_state_parse(text, len, "st", &e);
  if (st)
    fail_msg("accepted: %s", text);
  if (!g_str_has_prefix(e->message, where) || !strstr(e->message, why))
    fail_msg("for %s: got \"%s\", want %s ... %s", text, e->message, where, why);
}
#define REFUSED(t, where, why) refused(t, sizeof(t) - 1, where, why)

static void test_refusals(void **unused) {
  (void)unused;
  REFUSED("[instance a]\nvram=1G\nbogus=1\n", "st:3:", "unknown key \"bogus\"");
  REFUSED("[instance a]\nvram=lots\n", "st:2:", "bad value \"lots\" for vram");
  REFUSED("\n[profile a]\n", "st:2:", "unknown entry [profile]");
  REFUSED("[instance]\n", "st:1:", "expected [instance NAME]");
  REFUSED("[instance a\n", "st:1:", "expected [instance NAME]");
  REFUSED("[instance a/b]\n", "st:1:", "invalid instance name");
  REFUSED("[instance a]\n[created a]\nprofile=p\n", "st:2:", "appears twice");
  REFUSED("[destroyed a]\nvram=1G\n", "st:2:", "takes no settings");
  REFUSED("[created a]\nvram=1G\n\n[instance b]\n", "st:1:", "needs a profile=");
  REFUSED("[created a]\nvram=1G\n", "st:1:", "needs a profile=");
  REFUSED("[created a]\nprofile=p\nprofile=q\n", "st:3:", "profile= given twice");
  REFUSED("[instance a]\nprofile=p\n", "st:2:", "profile= belongs to [created NAME]");
  REFUSED("[instance a]\nvram=1G\nvram=2G\n", "st:3:", "given twice");
  REFUSED("vram=1G\n", "st:1:", "before any");
  REFUSED("[instance a]\njunk\n", "st:2:", "expected KEY=VALUE");
  REFUSED("[instance a]\nvram=1\0G\n", "st:2:", "NUL byte");
  REFUSED("[instance a]\nvram=\xff\n", "st:2:", "not UTF-8");
  REFUSED("[instance a]\nsocket-mode=999\n", "st:2:", "octal file mode");
  g_autofree char *big = g_strnfill(VGPU_STATE_MAX_BYTES + 1, '#');
  refused(big, VGPU_STATE_MAX_BYTES + 1, "st:1:", "larger than");
  GString *many = g_string_new(NULL);
  for (int i = 0; i <= VGPU_STATE_MAX_ENTRIES; i++)
    g_string_append_printf(many, "[destroyed i%d]\n", i);
  refused(many->str, many->len, "st:129:", "more than 128 entries");
  g_string_free(many, TRUE);
}

static const VgpuInstanceConfig *merged(const VgpuStateMerge *m, const char *name,
                                        gboolean *created) {
  for (guint i = 0; i < m->instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(m->instances, i);
    if (g_str_equal(ic->name, name)) {
      if (created)
        *created = g_array_index(m->created, gboolean, i);
      return ic;
    }
  }
  return NULL;
}

static bool has_note(GPtrArray *a, const char *part) {
  for (guint i = 0; i < a->len; i++)
    if (strstr(g_ptr_array_index(a, i), part))
      return true;
  return false;
}

static void test_merge(void **unused) {
  (void)unused;
  g_autoptr(VgpuConfig) c = load_conf();
  g_autoptr(VgpuState) st = parse_ok("[instance a]\nvram=512M\n"
                                     "[created c]\nprofile=big\nmax-clients=5\n"
                                     "[destroyed b]\n");
  g_autoptr(VgpuStateMerge) m = vgpu_state_merge(c, st, 4ull << 30, 1000, 0, NULL);
  assert_int_equal(m->instances->len, 2);
  gboolean created = TRUE;
  const VgpuInstanceConfig *a = merged(m, "a", &created);
  assert_false(created);
  assert_int_equal(a->eff.vram, 512u << 20); /* the run-time setting */
  assert_int_equal(a->eff.max_clients, 3);   /* the file's, not overridden */
  assert_null(merged(m, "b", NULL));         /* destroyed stays destroyed */
  const VgpuInstanceConfig *cc = merged(m, "c", &created);
  assert_true(created);
  assert_int_equal(cc->eff.vram, 1u << 30);
  assert_int_equal(cc->eff.max_clients, 5);
  assert_true(has_note(m->overridden, "a: vram=512M (file: profile p)"));
  assert_true(has_note(m->overridden, "b: destroyed at run time"));
  assert_true(has_note(m->overridden, "c: created at run time from profile big"));
  assert_int_equal(m->not_applied->len, 0);

  /* 1200 MiB: a's raised vram does not fit beside b; c does not fit. */
  g_autoptr(VgpuState) st2 = parse_ok("[instance a]\nvram=1G\nmax-clients=7\n"
                                      "[created c]\nprofile=big\n"
                                      "[created d]\nprofile=gone\n");
  g_autoptr(VgpuStateMerge) m2 = vgpu_state_merge(c, st2, 1200ull << 20, 1000, 0, NULL);
  a = merged(m2, "a", NULL);
  assert_int_equal(a->eff.vram, 256u << 20); /* the file's stands */
  assert_int_equal(a->eff.max_clients, 7);   /* the rest applies */
  assert_non_null(merged(m2, "b", NULL));
  assert_null(merged(m2, "c", NULL));
  assert_null(merged(m2, "d", NULL));
  assert_true(has_note(m2->not_applied, "run-time vram=1G not applied"));
  assert_true(has_note(m2->not_applied, "c: vram 1 GiB does not fit"));
  assert_true(has_note(m2->not_applied, "d: not created: profile \"gone\""));
  /* Room taken outside the merge counts: with 1 GiB taken, a's raise
   * fits in 2.5 GiB only without it. */
  g_autoptr(VgpuStateMerge) m3 = vgpu_state_merge(c, st2, 2560ull << 20, 1000, 1ull << 30, NULL);
  assert_int_equal(merged(m3, "a", NULL)->eff.vram, 1u << 30);
  assert_null(merged(m3, "c", NULL));
  /* A kept (transient) name stands for the file's instance. */
  g_autoptr(GHashTable) keep = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_add(keep, (char *)"b");
  g_autoptr(VgpuStateMerge) m4 = vgpu_state_merge(c, st, 4ull << 30, 1000, 0, keep);
  assert_null(merged(m4, "b", NULL));

  /* A created instance stands for the file's of that name; when it
   * cannot be applied, the file's runs meanwhile. */
  g_autoptr(VgpuState) st3 = parse_ok("[created b]\nprofile=big\n");
  g_autoptr(VgpuStateMerge) m5 = vgpu_state_merge(c, st3, 4ull << 30, 1000, 0, NULL);
  assert_true(merged(m5, "b", &created) && created);
  assert_int_equal(merged(m5, "b", NULL)->eff.vram, 1u << 30);
  g_autoptr(VgpuStateMerge) m6 = vgpu_state_merge(c, st3, 1ull << 30, 1000, 0, NULL);
  assert_true(merged(m6, "b", &created) && !created);
  assert_int_equal(merged(m6, "b", NULL)->eff.vram, 256u << 20);
  assert_true(has_note(m6->not_applied, "b: the file's instance of that name runs meanwhile"));
}

static void test_diff(void **unused) {
  (void)unused;
  g_autoptr(VgpuConfig) c = load_conf();
  g_autoptr(VgpuInstanceConfig) a = vgpu_instance_config_copy(vgpu_config_find_instance(c, "a"));
  g_autoptr(VgpuInstanceConfig) b = vgpu_instance_config_copy(a);
  assert_null(vgpu_instance_config_diff(a, b));
  assert_true(vgpu_instance_config_set(b, "vram", "512M", NULL));
  assert_true(vgpu_instance_config_set(b, "socket-mode", "0660", NULL));
  g_autofree char *d = vgpu_instance_config_diff(a, b);
  assert_string_equal(d, "vram 256 MiB -> 512 MiB, socket-mode 0666 -> 0660");
  /* What was set is recorded as written, for dump-config. */
  assert_string_equal(vgpu_kv_get(b->kv, "vram"), "512M");
  assert_string_equal(vgpu_kv_get(b->kv, "max-clients"), "3");
}

static char *tmpdir(void) {
  g_autoptr(GError) e = NULL;
  char *d = g_dir_make_tmp("vgpu-state-XXXXXX", &e);
  if (!d)
    fail_msg("%s", e->message);
  return d;
}

static void test_save_load(void **unused) {
  (void)unused;
  g_autofree char *top = tmpdir();
  g_autofree char *dir = g_build_filename(top, "state", NULL);
  g_autofree char *path = g_build_filename(dir, VGPU_STATE_FILE, NULL);
  char *warning = NULL;
  bool ro = true;
  /* Nothing there yet: an empty state, nothing made. */
  g_autoptr(VgpuState) none = vgpu_state_load(dir, &warning, &ro);
  assert_int_equal(none->entries->len, 0);
  assert_null(warning);
  assert_false(ro);
  assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));

  g_autoptr(VgpuState) st = parse_ok("[instance a]\nvram=1G\n[destroyed b]\n");
  g_autoptr(GError) e = NULL;
  assert_true(vgpu_state_save(st, dir, &e));
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 07777, 0600);
  assert_int_equal(stat(dir, &sb), 0);
  assert_int_equal(sb.st_mode & 07777, 0700);
  g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
  assert_false(g_file_test(tmp, G_FILE_TEST_EXISTS));
  g_autoptr(VgpuState) back = vgpu_state_load(dir, &warning, &ro);
  assert_null(warning);
  assert_int_equal(back->entries->len, 2);
  assert_string_equal(vgpu_kv_get(vgpu_state_find(back, "a")->kv, "vram"), "1G");

  /* Corrupt: refused with FILE:LINE, moved aside byte for byte. */
  static const char bad[] = "[instance a]\nvram=1G\nvram=2G\n";
  assert_true(g_file_set_contents(path, bad, -1, NULL));
  g_autoptr(VgpuState) after = vgpu_state_load(dir, &warning, &ro);
  assert_int_equal(after->entries->len, 0);
  assert_false(ro);
  assert_non_null(warning);
  g_autofree char *where = g_strdup_printf("%s:3: key \"vram\" given twice", path);
  if (!g_str_has_prefix(warning, where))
    fail_msg("warning: %s", warning);
  const char *aside = strstr(warning, "kept aside as ");
  assert_non_null(aside);
  g_autofree char *aside_path = g_strndup(aside + 14, strcspn(aside + 14, ";"));
  g_autofree char *kept = NULL;
  assert_true(g_file_get_contents(aside_path, &kept, NULL, NULL));
  assert_string_equal(kept, bad);
  assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
  g_free(warning);
  /* Another one at once: kept beside the first, never over it. */
  assert_true(g_file_set_contents(path, "junk\n", -1, NULL));
  g_autoptr(VgpuState) again = vgpu_state_load(dir, &warning, &ro);
  assert_int_equal(again->entries->len, 0);
  assert_non_null(strstr(warning, ":1: expected KEY=VALUE"));
  aside = strstr(warning, "kept aside as ");
  assert_non_null(aside);
  g_autofree char *aside2 = g_strndup(aside + 14, strcspn(aside + 14, ";"));
  assert_string_not_equal(aside2, aside_path);
  g_free(kept);
  kept = NULL;
  assert_true(g_file_get_contents(aside_path, &kept, NULL, NULL));
  assert_string_equal(kept, bad);
  g_free(warning);
  g_unlink(aside2);
  g_unlink(aside_path);

  /* A symbolic link in its place is not followed, and kept aside. */
  assert_int_equal(symlink("/etc/passwd", path), 0);
  g_autoptr(VgpuState) linked = vgpu_state_load(dir, &warning, &ro);
  assert_int_equal(linked->entries->len, 0);
  assert_non_null(strstr(warning, ":0: cannot read it"));
  aside = strstr(warning, "kept aside as ");
  assert_non_null(aside);
  g_free(aside_path);
  aside_path = g_strndup(aside + 14, strcspn(aside + 14, ";"));
  g_free(warning);
  g_unlink(aside_path);
  g_rmdir(dir);
  g_rmdir(top);
}

/* vgpud.conf text printed from a loaded configuration (with one
 * instance's settings changed) loads into the same settings. */
static void test_config_format(void **unused) {
  (void)unused;
  g_autoptr(VgpuConfig) c = load_conf();
  g_autoptr(GPtrArray) ics =
      g_ptr_array_new_with_free_func((GDestroyNotify)vgpu_instance_config_free);
  for (guint i = 0; i < c->instances->len; i++)
    g_ptr_array_add(ics, vgpu_instance_config_copy(g_ptr_array_index(c->instances, i)));
  assert_true(vgpu_instance_config_set(g_ptr_array_index(ics, 1), "vram", "128M", NULL));
  g_autoptr(GPtrArray) notes = g_ptr_array_new();
  g_ptr_array_add(notes, NULL);
  g_ptr_array_add(notes, (char *)"changed");
  g_autofree char *text = vgpu_config_format(c, ics, notes, "# dump\n");
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuConfig) back = vgpu_config_load_data(text, -1, "dump", &e);
  if (!back)
    fail_msg("%s\n%s", e->message, text);
  assert_string_equal(back->renderer, "null");
  assert_int_equal(back->profiles->len, 2);
  assert_int_equal(back->instances->len, 2);
  assert_int_equal(vgpu_config_find_instance(back, "a")->eff.max_clients, 3);
  assert_int_equal(vgpu_config_find_instance(back, "b")->eff.vram, 128u << 20);
  assert_non_null(strstr(text, "# changed\n[instance b]\n"));
  /* The embedded configuration too. */
  g_autoptr(VgpuConfig) def = vgpu_config_load_default(NULL);
  g_autofree char *dtext = vgpu_config_format(def, def->instances, NULL, "");
  g_autoptr(VgpuConfig) dback = vgpu_config_load_data(dtext, -1, "d", &e);
  assert_non_null(dback);
  assert_int_equal(dback->profiles->len, def->profiles->len);
  assert_int_equal(vgpu_config_find_profile(dback, "large")->weight, 200);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),     cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_merge),     cmocka_unit_test(test_diff),
      cmocka_unit_test(test_save_load), cmocka_unit_test(test_config_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
