/* Run-time changes kept across reloads and restarts (see state.h). */
#include "daemon/state.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/gpumem.h"
#include "core/ledger.h"
#include "util/fd.h"
#include "util/runtime_dir.h"

G_STATIC_ASSERT(VGPU_STATE_MAX_ENTRIES == 2 * VGPU_LEDGER_MAX_INSTANCES);

/* Settings per entry: far more than there are keys. */
#define STATE_MAX_KEYS 64

static const char *const kind_names[] = {"instance", "created", "destroyed"};

static void entry_free(VgpuStateEntry *e) {
  if (!e)
    return;
  g_free(e->name);
  g_free(e->profile);
  g_ptr_array_unref(e->kv);
  g_free(e);
}

VgpuState *vgpu_state_new(void) {
  VgpuState *st = g_new0(VgpuState, 1);
  st->entries = g_ptr_array_new_with_free_func((GDestroyNotify)entry_free);
  return st;
}

void vgpu_state_free(VgpuState *st) {
  if (!st)
    return;
  g_ptr_array_unref(st->entries);
  g_free(st);
}

VgpuStateEntry *vgpu_state_find(const VgpuState *st, const char *name) {
  for (guint i = 0; name && i < st->entries->len; i++) {
    VgpuStateEntry *e = g_ptr_array_index(st->entries, i);
    if (g_str_equal(e->name, name))
      return e;
  }
  return NULL;
}

bool vgpu_state_remove(VgpuState *st, const char *name) {
  VgpuStateEntry *e = vgpu_state_find(st, name);
  return e && g_ptr_array_remove(st->entries, e);
}

VgpuStateEntry *vgpu_state_entry(VgpuState *st, const char *name, VgpuStateKind kind) {
  VgpuStateEntry *e = vgpu_state_find(st, name);
  if (e && e->kind == kind)
    return e;
  if (!e) {
    e = g_new0(VgpuStateEntry, 1);
    e->name = g_strdup(name);
    g_ptr_array_add(st->entries, e);
  }
  e->kind = kind;
  g_clear_pointer(&e->profile, g_free);
  if (e->kv)
    g_ptr_array_unref(e->kv);
  e->kv = vgpu_kv_new();
  return e;
}

/* ---- text ----------------------------------------------------------------- */

static bool fail(GError **error, const char *source, guint line, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
static bool fail(GError **error, const char *source, guint line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s:%u: %s", source, line, msg);
  return false;
}

/* A setting as an instance takes it: the same check as vgpud.conf's and
 * vgpuctl set's, on a scratch instance. */
static bool check_setting(const char *key, const char *value, GError **error) {
  VgpuProfile p = {.name = (char *)"check"};
  g_autoptr(GError) e = NULL;
  VgpuInstanceConfig *ic = vgpu_instance_config_new("check", &p);
  bool ok = vgpu_instance_config_set(ic, key, value, &e);
  vgpu_instance_config_free(ic);
  if (ok)
    return true;
  if (g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_FOUND) ||
      g_error_matches(e, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED))
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "unknown key \"%s\"", key);
  else
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "bad value \"%s\" for %s: %s", value,
                key, e->message);
  return false;
}

static bool entry_done(const VgpuStateEntry *e, const char *source, guint header_line,
                       GError **error) {
  if (e && e->kind == VGPU_STATE_CREATED && !e->profile)
    return fail(error, source, header_line, "[created %s] needs a profile= line", e->name);
  return true;
}

VgpuState *vgpu_state_parse(const char *data, gsize len, const char *source, GError **error) {
  if (len > VGPU_STATE_MAX_BYTES) {
    fail(error, source, 1, "larger than %u bytes", (unsigned)VGPU_STATE_MAX_BYTES);
    return NULL;
  }
  g_autoptr(VgpuState) st = vgpu_state_new();
  VgpuStateEntry *cur = NULL;
  guint cur_line = 0, line = 0;
  gsize pos = 0;
  while (pos < len) {
    line++;
    const char *start = data + pos;
    const char *nl = memchr(start, '\n', len - pos);
    gsize n = nl ? (gsize)(nl - start) : len - pos;
    pos += n + (nl ? 1 : 0);
    if (memchr(start, '\0', n)) {
      fail(error, source, line, "a NUL byte");
      return NULL;
    }
    if (!g_utf8_validate(start, (gssize)n, NULL)) {
      fail(error, source, line, "not UTF-8 text");
      return NULL;
    }
    g_autofree char *text = g_strndup(start, n);
    char *l = g_strstrip(text);
    if (!*l || *l == '#')
      continue;
    if (*l == '[') {
      if (!entry_done(cur, source, cur_line, error))
        return NULL;
      size_t ll = strlen(l);
      char *sp = strchr(l, ' ');
      if (l[ll - 1] != ']' || !sp) {
        fail(error, source, line, "expected [instance NAME], [created NAME] or [destroyed NAME]");
        return NULL;
      }
      l[ll - 1] = '\0';
      *sp = '\0';
      const char *kind = l + 1, *name = sp + 1;
      int k = -1;
      for (int i = 0; i < (int)G_N_ELEMENTS(kind_names); i++)
        if (g_str_equal(kind, kind_names[i]))
          k = i;
      if (k < 0) {
        fail(error, source, line,
             "unknown entry [%s] (expected [instance NAME], [created NAME], [destroyed NAME])",
             kind);
        return NULL;
      }
      if (!vgpu_instance_name_valid(name)) {
        fail(error, source, line, "invalid instance name \"%s\" (1-31 letters, digits, - and _)",
             name);
        return NULL;
      }
      if (vgpu_state_find(st, name)) {
        fail(error, source, line, "instance \"%s\" appears twice", name);
        return NULL;
      }
      if (st->entries->len >= VGPU_STATE_MAX_ENTRIES) {
        fail(error, source, line, "more than %d entries", VGPU_STATE_MAX_ENTRIES);
        return NULL;
      }
      cur = vgpu_state_entry(st, name, (VgpuStateKind)k);
      cur_line = line;
      continue;
    }
    char *eq = strchr(l, '=');
    if (!eq || eq == l) {
      fail(error, source, line, "expected KEY=VALUE or a [...] header");
      return NULL;
    }
    if (!cur) {
      fail(error, source, line, "a setting before any [...] header");
      return NULL;
    }
    *eq = '\0';
    const char *key = g_strchomp(l), *value = g_strchug(eq + 1);
    if (cur->kind == VGPU_STATE_DESTROYED) {
      fail(error, source, line, "[destroyed %s] takes no settings", cur->name);
      return NULL;
    }
    if (g_str_equal(key, "profile")) {
      if (cur->kind != VGPU_STATE_CREATED) {
        fail(error, source, line, "profile= belongs to [created NAME] entries only");
        return NULL;
      }
      if (cur->profile) {
        fail(error, source, line, "profile= given twice");
        return NULL;
      }
      if (!vgpu_instance_name_valid(value)) {
        fail(error, source, line, "invalid profile name \"%s\"", value);
        return NULL;
      }
      cur->profile = g_strdup(value);
      continue;
    }
    if (vgpu_kv_get(cur->kv, key)) {
      fail(error, source, line, "key \"%s\" given twice in [%s %s]", key, kind_names[cur->kind],
           cur->name);
      return NULL;
    }
    if (vgpu_kv_len(cur->kv) >= STATE_MAX_KEYS) {
      fail(error, source, line, "more than %d settings in one entry", STATE_MAX_KEYS);
      return NULL;
    }
    g_autoptr(GError) e = NULL;
    if (!check_setting(key, value, &e)) {
      fail(error, source, line, "%s", e->message);
      return NULL;
    }
    vgpu_kv_set(cur->kv, key, value);
  }
  if (!entry_done(cur, source, cur_line, error))
    return NULL;
  return g_steal_pointer(&st);
}

char *vgpu_state_format(const VgpuState *st) {
  GString *out = g_string_new("# vgpud's run-time changes (vgpuctl create, set, destroy, reset),\n"
                              "# written by vgpud; see vgpud.conf(5), RUN-TIME CHANGES.\n");
  for (guint i = 0; i < st->entries->len; i++) {
    const VgpuStateEntry *e = g_ptr_array_index(st->entries, i);
    g_string_append_printf(out, "\n[%s %s]\n", kind_names[e->kind], e->name);
    if (e->profile)
      g_string_append_printf(out, "profile=%s\n", e->profile);
    for (guint k = 0; k < vgpu_kv_len(e->kv); k++)
      g_string_append_printf(out, "%s=%s\n", vgpu_kv_key(e->kv, k), vgpu_kv_value(e->kv, k));
  }
  return g_string_free(out, FALSE);
}

/* ---- file ----------------------------------------------------------------- */

/* Reads at most VGPU_STATE_MAX_BYTES + 1 bytes of a regular file; never
 * through a symbolic link.  Returns 0, -ENOENT for none, or -errno. */
static int read_state(const char *path, char **data, gsize *len) {
  vgpu_autofd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0)
    return -errno;
  struct stat stb;
  if (fstat(fd, &stb) < 0)
    return -errno;
  if (!S_ISREG(stb.st_mode))
    return -EINVAL;
  gsize cap = VGPU_STATE_MAX_BYTES + 1, got = 0;
  g_autofree char *buf = g_malloc(cap + 1);
  while (got < cap) {
    ssize_t n = read(fd, buf + got, cap - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break;
    got += (gsize)n;
  }
  buf[got] = '\0';
  *data = g_steal_pointer(&buf);
  *len = got;
  return 0;
}

VgpuState *vgpu_state_load(const char *dir, char **warning, bool *read_only) {
  *warning = NULL;
  *read_only = false;
  g_autofree char *path = g_build_filename(dir, VGPU_STATE_FILE, NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  int r = read_state(path, &data, &len);
  if (r == -ENOENT || r == -ENOTDIR)
    return vgpu_state_new();
  g_autoptr(GError) e = NULL;
  VgpuState *st = NULL;
  if (r == 0)
    st = vgpu_state_parse(data, len, path, &e);
  if (st)
    return st;
  g_autofree char *why = r == 0 ? g_strdup(e->message)
                                : g_strdup_printf("%s:0: cannot read it: %s", path,
                                                  r == -EINVAL  ? "not a regular file"
                                                  : r == -ELOOP ? "a symbolic link"
                                                                : g_strerror(-r));
  /* Never over an earlier one: vgpud.state.bad-SECONDS, else -SECONDS.N. */
  gint64 now = g_get_real_time() / G_USEC_PER_SEC;
  g_autofree char *aside = g_strdup_printf("%s.bad-%" G_GINT64_FORMAT, path, now);
  int moved = -1;
  for (int n = 1; n <= 100; n++) {
    moved = renameat2(AT_FDCWD, path, AT_FDCWD, aside, RENAME_NOREPLACE);
    if (moved == 0 || errno != EEXIST)
      break;
    g_free(aside);
    aside = g_strdup_printf("%s.bad-%" G_GINT64_FORMAT ".%d", path, now, n);
  }
  if (moved == 0) {
    *warning = g_strdup_printf("%s; kept aside as %s; starting from the configuration file alone",
                               why, aside);
  } else {
    *warning = g_strdup_printf("%s; cannot move it aside (%s): starting from the configuration "
                               "file alone, and run-time changes are not kept until it is removed",
                               why, g_strerror(errno));
    *read_only = true;
  }
  return vgpu_state_new();
}

static bool write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

bool vgpu_state_save(const VgpuState *st, const char *dir, GError **error) {
  g_autoptr(GError) e = NULL;
  vgpu_autofd int dfd = vgpu_private_dir_open(dir, 0700, NULL, &e);
  if (dfd < 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "state directory: %s", e->message);
    return false;
  }
  g_autofree char *text = vgpu_state_format(st);
  static const char tmp[] = VGPU_STATE_FILE ".tmp";
  (void)unlinkat(dfd, tmp, 0); /* a leftover of a crash, or anything planted there */
  vgpu_autofd int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 || fchmod(fd, 0600) < 0 || !write_all(fd, text, strlen(text)) || fsync(fd) < 0) {
    int err = errno;
    if (fd >= 0)
      (void)unlinkat(dfd, tmp, 0);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s/%s: %s", dir, tmp,
                g_strerror(err));
    return false;
  }
  if (renameat(dfd, tmp, dfd, VGPU_STATE_FILE) < 0) {
    int err = errno;
    (void)unlinkat(dfd, tmp, 0);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s/%s: %s", dir, VGPU_STATE_FILE,
                g_strerror(err));
    return false;
  }
  (void)fsync(dfd); /* the rename itself */
  return true;
}

/* ---- merge ---------------------------------------------------------------- */

void vgpu_state_merge_free(VgpuStateMerge *m) {
  if (!m)
    return;
  g_ptr_array_unref(m->instances);
  g_array_unref(m->created);
  g_ptr_array_unref(m->overridden);
  g_ptr_array_unref(m->not_applied);
  g_free(m);
}

static void merge_add(VgpuStateMerge *m, VgpuInstanceConfig *ic, gboolean created) {
  g_ptr_array_add(m->instances, ic);
  g_array_append_val(m->created, created);
}

/* ic with e's settings; a setting this version no longer takes is left
 * out and reported (parse checked them: only a new vgpud could refuse). */
static VgpuInstanceConfig *apply_entry(VgpuStateMerge *m, const VgpuInstanceConfig *base,
                                       const VgpuStateEntry *e, const char *skip_key) {
  VgpuInstanceConfig *ic = vgpu_instance_config_copy(base);
  for (guint k = 0; k < vgpu_kv_len(e->kv); k++) {
    const char *key = vgpu_kv_key(e->kv, k), *value = vgpu_kv_value(e->kv, k);
    g_autoptr(GError) err = NULL;
    if (skip_key && g_str_equal(key, skip_key))
      continue;
    if (!vgpu_instance_config_set(ic, key, value, &err))
      g_ptr_array_add(m->not_applied, g_strdup_printf("%s: %s=%s not applied: %s; kept in the "
                                                      "state file",
                                                      e->name, key, value, err->message));
  }
  return ic;
}

static char *describe_set(const VgpuInstanceConfig *file, const VgpuStateEntry *e) {
  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "%s:", e->name);
  for (guint k = 0; k < vgpu_kv_len(e->kv); k++) {
    const char *key = vgpu_kv_key(e->kv, k);
    const char *was = vgpu_kv_get(file->kv, key);
    g_string_append_printf(s, "%s %s=%s (file: %s%s)", k ? "," : "", key, vgpu_kv_value(e->kv, k),
                           was ? "" : "profile ", was ? was : file->profile);
  }
  if (!vgpu_kv_len(e->kv))
    g_string_append(s, " kept as the file has it");
  return g_string_free(s, FALSE);
}

/* A created instance that cannot be applied stands for the file's of the
 * same name, if any: that one runs meanwhile, where it fits. */
static void file_instead(VgpuStateMerge *m, const VgpuConfig *cfg, const char *name,
                         uint64_t gpu_memory, uint32_t milli, uint64_t cap, uint64_t *sum) {
  const VgpuInstanceConfig *file = vgpu_config_find_instance(cfg, name);
  if (!file || m->instances->len >= VGPU_LEDGER_MAX_INSTANCES)
    return;
  uint64_t charge = vgpu_gpumem_charge(file->eff.vram, gpu_memory);
  if (!vgpu_gpumem_fits(cap, *sum, charge)) {
    g_autofree char *why = vgpu_gpumem_refusal(name, file->eff.vram, gpu_memory, milli, *sum);
    g_ptr_array_add(
        m->not_applied,
        g_strdup_printf("%s; the file's instance of that name does not fit either", why));
    return;
  }
  *sum = vgpu_gpumem_add(*sum, charge);
  merge_add(m, vgpu_instance_config_copy(file), FALSE);
  g_ptr_array_add(m->not_applied,
                  g_strdup_printf("%s: the file's instance of that name runs meanwhile", name));
}

VgpuStateMerge *vgpu_state_merge(const VgpuConfig *cfg, const VgpuState *st, uint64_t gpu_memory,
                                 uint32_t milli, uint64_t taken, GHashTable *keep) {
  VgpuStateMerge *m = g_new0(VgpuStateMerge, 1);
  m->instances = g_ptr_array_new_with_free_func((GDestroyNotify)vgpu_instance_config_free);
  m->created = g_array_new(FALSE, FALSE, sizeof(gboolean));
  m->overridden = g_ptr_array_new_with_free_func(g_free);
  m->not_applied = g_ptr_array_new_with_free_func(g_free);
  uint64_t cap = vgpu_gpumem_capacity(gpu_memory, milli), sum = taken;

  /* The file's instances, each at the smaller of its two VRAM charges;
   * raised ones are tried below, in order, against what is left. */
  g_autoptr(GPtrArray) raised = g_ptr_array_new(); /* index into m->instances, as pointer */
  for (guint i = 0; i < cfg->instances->len; i++) {
    const VgpuInstanceConfig *file = g_ptr_array_index(cfg->instances, i);
    if (keep && g_hash_table_contains(keep, file->name)) {
      g_ptr_array_add(m->overridden, g_strdup_printf("%s: the transient instance of that name "
                                                     "stands for the file's",
                                                     file->name));
      continue;
    }
    const VgpuStateEntry *e = vgpu_state_find(st, file->name);
    const VgpuStateEntry *created = e && e->kind == VGPU_STATE_CREATED ? e : NULL;
    if (created)
      continue; /* the created one stands for it (below) */
    if (e && e->kind == VGPU_STATE_DESTROYED) {
      g_ptr_array_add(m->overridden,
                      g_strdup_printf("%s: destroyed at run time (vgpuctl reset %s brings it back)",
                                      file->name, file->name));
      continue;
    }
    VgpuInstanceConfig *ic = e ? apply_entry(m, file, e, NULL) : vgpu_instance_config_copy(file);
    if (e)
      g_ptr_array_add(m->overridden, describe_set(file, e));
    uint64_t base = vgpu_gpumem_charge(file->eff.vram, gpu_memory);
    uint64_t over = vgpu_gpumem_charge(ic->eff.vram, gpu_memory);
    sum = vgpu_gpumem_add(sum, MIN(base, over));
    if (over > base)
      g_ptr_array_add(raised, GUINT_TO_POINTER(m->instances->len));
    merge_add(m, ic, FALSE);
  }
  for (guint r = 0; r < raised->len; r++) {
    guint idx = GPOINTER_TO_UINT(g_ptr_array_index(raised, r));
    VgpuInstanceConfig *ic = g_ptr_array_index(m->instances, idx);
    const VgpuInstanceConfig *file = vgpu_config_find_instance(cfg, ic->name);
    uint64_t base = vgpu_gpumem_charge(file->eff.vram, gpu_memory);
    uint64_t over = vgpu_gpumem_charge(ic->eff.vram, gpu_memory);
    uint64_t others = sum - base; /* sum holds base: never below it */
    if (vgpu_gpumem_fits(cap, others, over)) {
      sum = vgpu_gpumem_add(others, over);
      continue;
    }
    const VgpuStateEntry *e = vgpu_state_find(st, ic->name);
    g_autofree char *why = vgpu_gpumem_refusal(ic->name, ic->eff.vram, gpu_memory, milli, others);
    g_ptr_array_add(m->not_applied,
                    g_strdup_printf("%s; run-time vram=%s not applied: the file's vram stands, the "
                                    "setting stays in the state file",
                                    why, vgpu_kv_get(e->kv, "vram")));
    g_ptr_array_index(m->instances, idx) = apply_entry(m, file, e, "vram");
    vgpu_instance_config_free(ic);
  }

  /* Created instances, in the order they were made. */
  for (guint i = 0; i < st->entries->len; i++) {
    const VgpuStateEntry *e = g_ptr_array_index(st->entries, i);
    if (e->kind == VGPU_STATE_SET && !vgpu_config_find_instance(cfg, e->name))
      g_ptr_array_add(m->not_applied,
                      g_strdup_printf("%s: run-time settings for an instance the file does not "
                                      "define; kept in the state file",
                                      e->name));
    if (e->kind != VGPU_STATE_CREATED)
      continue;
    if (keep && g_hash_table_contains(keep, e->name))
      continue;
    const VgpuProfile *p = vgpu_config_find_profile(cfg, e->profile);
    if (!p) {
      g_ptr_array_add(m->not_applied,
                      g_strdup_printf("%s: not created: profile \"%s\" is not in the "
                                      "configuration; kept in the state file",
                                      e->name, e->profile));
      file_instead(m, cfg, e->name, gpu_memory, milli, cap, &sum);
      continue;
    }
    if (m->instances->len >= VGPU_LEDGER_MAX_INSTANCES) {
      g_ptr_array_add(m->not_applied,
                      g_strdup_printf("%s: not created: at most %d instances; kept in the state "
                                      "file",
                                      e->name, VGPU_LEDGER_MAX_INSTANCES));
      continue;
    }
    g_autoptr(VgpuInstanceConfig) base = vgpu_instance_config_new(e->name, p);
    VgpuInstanceConfig *ic = apply_entry(m, base, e, NULL);
    uint64_t charge = vgpu_gpumem_charge(ic->eff.vram, gpu_memory);
    if (!vgpu_gpumem_fits(cap, sum, charge)) {
      g_autofree char *why = vgpu_gpumem_refusal(e->name, ic->eff.vram, gpu_memory, milli, sum);
      g_ptr_array_add(m->not_applied,
                      g_strdup_printf("%s; not created, kept in the state file", why));
      vgpu_instance_config_free(ic);
      file_instead(m, cfg, e->name, gpu_memory, milli, cap, &sum);
      continue;
    }
    sum = vgpu_gpumem_add(sum, charge);
    bool shadows = vgpu_config_find_instance(cfg, e->name) != NULL;
    g_autofree char *settings = NULL;
    if (vgpu_kv_len(e->kv)) {
      GString *s = g_string_new(", with");
      for (guint k = 0; k < vgpu_kv_len(e->kv); k++)
        g_string_append_printf(s, " %s=%s", vgpu_kv_key(e->kv, k), vgpu_kv_value(e->kv, k));
      settings = g_string_free(s, FALSE);
    }
    g_ptr_array_add(
        m->overridden,
        g_strdup_printf("%s: created at run time from profile %s%s%s", e->name, e->profile,
                        settings ? settings : "",
                        shadows ? " (the file's instance of that name is not used)" : ""));
    merge_add(m, ic, TRUE);
  }
  return m;
}

/* ---- differences ---------------------------------------------------------- */

static void diff_u64(GString *s, const char *key, uint64_t a, uint64_t b) {
  if (a != b)
    g_string_append_printf(s, "%s%s %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT,
                           s->len ? ", " : "", key, a, b);
}

static void diff_size(GString *s, const char *key, uint64_t a, uint64_t b, bool zero_unlimited) {
  if (a == b)
    return;
  g_autofree char *x = vgpu_format_size(a, zero_unlimited);
  g_autofree char *y = vgpu_format_size(b, zero_unlimited);
  g_string_append_printf(s, "%s%s %s -> %s", s->len ? ", " : "", key, x, y);
}

char *vgpu_instance_config_diff(const VgpuInstanceConfig *a, const VgpuInstanceConfig *b) {
  GString *s = g_string_new(NULL);
  const VgpuProfile *x = &a->eff, *y = &b->eff;
  if (g_strcmp0(a->profile, b->profile))
    g_string_append_printf(s, "profile %s -> %s", a->profile, b->profile);
  diff_size(s, "vram", x->vram, y->vram, true);
  diff_u64(s, "max-resources", x->max_resources, y->max_resources);
  diff_u64(s, "max-contexts", x->max_contexts, y->max_contexts);
  diff_u64(s, "max-clients", x->max_clients, y->max_clients);
  diff_u64(s, "max-clients-per-uid", vgpu_profile_clients_per_uid(x),
           vgpu_profile_clients_per_uid(y));
  diff_u64(s, "max-stream-objects", x->max_stream_objects, y->max_stream_objects);
  diff_u64(s, "max-syncs", x->max_syncs, y->max_syncs);
  if (x->share != y->share)
    g_string_append_printf(s, "%sgpu-share %s -> %s", s->len ? ", " : "",
                           vgpu_share_mode_name(x->share), vgpu_share_mode_name(y->share));
  diff_u64(s, "weight", x->weight, y->weight);
  diff_u64(s, "fps-cap", x->fps_cap, y->fps_cap);
  diff_u64(s, "heads", x->heads, y->heads);
  diff_size(s, "host-memory", x->host_memory, y->host_memory, false);
  diff_u64(s, "gpu-timeout", x->gpu_timeout_s, y->gpu_timeout_s);
  diff_u64(s, "render-threads", x->render_threads, y->render_threads);
  if (a->socket_mode != b->socket_mode)
    g_string_append_printf(s, "%ssocket-mode %04o -> %04o", s->len ? ", " : "", a->socket_mode,
                           b->socket_mode);
  if (!s->len) {
    g_string_free(s, TRUE);
    return NULL;
  }
  return g_string_free(s, FALSE);
}
