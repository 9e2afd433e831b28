#include "ctl/ctl_format.h"

#include <stdarg.h>
#include <string.h>

#include "core/profile.h"

struct VgpuTable {
  guint ncols;
  GPtrArray *rows; /* GStrv each, first is the header */
};

VgpuTable *vgpu_table_new(const char *const *headers) {
  VgpuTable *t = g_new0(VgpuTable, 1);
  t->ncols = g_strv_length((char **)headers);
  t->rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
  g_ptr_array_add(t->rows, g_strdupv((char **)headers));
  return t;
}

void vgpu_table_add(VgpuTable *t, ...) {
  char **row = g_new0(char *, t->ncols + 1);
  va_list ap;
  va_start(ap, t);
  for (guint i = 0; i < t->ncols; i++) {
    const char *cell = va_arg(ap, const char *);
    if (!cell) {
      for (; i < t->ncols; i++)
        row[i] = g_strdup("");
      break;
    }
    row[i] = g_strdup(cell);
  }
  va_end(ap);
  g_ptr_array_add(t->rows, row);
}

char *vgpu_table_render(const VgpuTable *t) {
  g_autofree gsize *w = g_new0(gsize, t->ncols);
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = g_ptr_array_index(t->rows, r);
    for (guint c = 0; c < t->ncols; c++)
      w[c] = MAX(w[c], (gsize)g_utf8_strlen(row[c], -1));
  }
  GString *out = g_string_new(NULL);
  for (guint r = 0; r < t->rows->len; r++) {
    char **row = g_ptr_array_index(t->rows, r);
    gsize start = out->len;
    for (guint c = 0; c < t->ncols; c++) {
      g_string_append(out, row[c]);
      if (c + 1 < t->ncols)
        for (gsize pad = (gsize)g_utf8_strlen(row[c], -1); pad < w[c] + 2; pad++)
          g_string_append_c(out, ' ');
    }
    while (out->len > start && out->str[out->len - 1] == ' ')
      g_string_truncate(out, out->len - 1);
    g_string_append_c(out, '\n');
  }
  return g_string_free(out, FALSE);
}

void vgpu_table_free(VgpuTable *t) {
  if (!t)
    return;
  g_ptr_array_unref(t->rows);
  g_free(t);
}

char *vgpu_format_usage_bytes(uint64_t used, uint64_t limit) {
  g_autofree char *u = vgpu_format_size(used, false);
  g_autofree char *l = vgpu_format_size(limit, true);
  if (!limit)
    return g_strdup_printf("%s / %s", u, l);
  return g_strdup_printf("%s / %s (%u%%)", u, l,
                         (unsigned)MIN(used / (limit / 100 ? limit / 100 : 1), 999u));
}

char *vgpu_format_usage_count(uint64_t used, uint64_t limit) {
  if (!limit)
    return g_strdup_printf("%" G_GUINT64_FORMAT "/unlimited", used);
  return g_strdup_printf("%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT, used, limit);
}

char *vgpu_format_uptime(uint64_t s) {
  if (s < 60)
    return g_strdup_printf("%us", (unsigned)s);
  if (s < 3600)
    return g_strdup_printf("%um%02us", (unsigned)(s / 60), (unsigned)(s % 60));
  if (s < 86400)
    return g_strdup_printf("%uh%02um", (unsigned)(s / 3600), (unsigned)(s % 3600 / 60));
  return g_strdup_printf("%ud%02uh", (unsigned)(s / 86400), (unsigned)(s % 86400 / 3600));
}
