/* Profiles and the value syntax (sizes, counts, share modes) shared by the
 * configuration file and `vgpuctl set`. */
#include "core/profile.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

VgpuProfile *vgpu_profile_copy(const VgpuProfile *p) {
  VgpuProfile *c = g_new(VgpuProfile, 1);
  *c = *p;
  c->name = g_strdup(p->name);
  c->description = g_strdup(p->description);
  return c;
}

void vgpu_profile_free(VgpuProfile *p) {
  if (!p)
    return;
  g_free(p->name);
  g_free(p->description);
  g_free(p);
}

static bool is_unlimited(const char *s) {
  return g_ascii_strcasecmp(s, "unlimited") == 0 || g_ascii_strcasecmp(s, "none") == 0;
}

bool vgpu_parse_size(const char *s, uint64_t *out, GError **error) {
  if (!s || !*s) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "empty size");
    return false;
  }
  if (is_unlimited(s)) {
    *out = 0;
    return true;
  }
  /* Digits with at most one decimal point, then an optional binary unit.
   * Fraction digits past the sixth are ignored: with frac_div <= 1e6 < 2^20
   * and a unit of at most 2^40, frac * unit stays below 2^60, so the
   * fractional part is computed exactly in integers. */
  g_autofree char *unit = NULL;
  const char *p = s;
  uint64_t whole = 0, frac = 0, frac_div = 1;
  bool digits = false, dot = false, nonzero = false;
  for (; *p; p++) {
    if (g_ascii_isdigit(*p)) {
      digits = true;
      nonzero = nonzero || *p != '0';
      if (!dot) {
        if (__builtin_mul_overflow(whole, 10, &whole) ||
            __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
          goto overflow;
      } else if (frac_div < 1000000u) {
        frac = frac * 10 + (uint64_t)(*p - '0');
        frac_div *= 10;
      }
    } else if (*p == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (!digits)
    goto bad;
  static const struct {
    const char *suffix;
    unsigned shift;
  } units[] = {{"", 0},     {"b", 0},   {"k", 10},   {"kb", 10}, {"kib", 10},
               {"m", 20},   {"mb", 20}, {"mib", 20}, {"g", 30},  {"gb", 30},
               {"gib", 30}, {"t", 40},  {"tb", 40},  {"tib", 40}};
  unit = g_ascii_strdown(p, -1);
  g_strstrip(unit);
  for (size_t i = 0; i < G_N_ELEMENTS(units); i++) {
    if (strcmp(unit, units[i].suffix) != 0)
      continue;
    uint64_t mult = 1ull << units[i].shift, v;
    if (__builtin_mul_overflow(whole, mult, &v) ||
        __builtin_add_overflow(v, frac * mult / frac_div, &v))
      goto overflow;
    /* 0 means unlimited: "0.1B" must not silently lift the limit. */
    if (v == 0 && nonzero) {
      g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "size \"%s\" is less than one byte", s);
      return false;
    }
    *out = v;
    return true;
  }
bad:
  g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
              "\"%s\" is not a size (examples: 4096, 64K, 256M, 1.5G, unlimited)", s);
  return false;
overflow:
  g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "size \"%s\" is too large", s);
  return false;
}

bool vgpu_parse_count(const char *s, uint64_t *out, GError **error) {
  if (s && is_unlimited(s)) {
    *out = 0;
    return true;
  }
  guint64 v;
  g_autoptr(GError) e = NULL;
  if (!s || !g_ascii_string_to_unsigned(s, 10, 0, G_MAXUINT32, &v, &e)) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "\"%s\" is not a count (a whole number, or unlimited)", s ? s : "");
    return false;
  }
  *out = v;
  return true;
}

char *vgpu_format_size(uint64_t bytes, bool zero_is_unlimited) {
  if (bytes == 0 && zero_is_unlimited)
    return g_strdup("unlimited");
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024)
    return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
  double v = (double)bytes;
  size_t u = 0;
  /* 1023.97 KiB would print as "1024.0 KiB": move up once the rounded
   * figure reaches 1024. */
  while (v >= 1023.95 && u + 1 < G_N_ELEMENTS(units)) {
    v /= 1024.0;
    u++;
  }
  /* "256 MiB" when whole, else one decimal: "1.5 GiB". */
  if (fabs(v - round(v)) < 0.05)
    return g_strdup_printf("%.0f %s", round(v), units[u]);
  return g_strdup_printf("%.1f %s", v, units[u]);
}

const char *vgpu_share_mode_name(VgpuShareMode m) {
  switch (m) {
  case VGPU_SHARE_BEST_EFFORT:
    return "best-effort";
  case VGPU_SHARE_EQUAL:
    return "equal";
  case VGPU_SHARE_FIXED:
    return "fixed";
  }
  return "?";
}

bool vgpu_share_mode_parse(const char *s, VgpuShareMode *out) {
  for (int m = VGPU_SHARE_BEST_EFFORT; m <= VGPU_SHARE_FIXED; m++) {
    if (g_strcmp0(s, vgpu_share_mode_name((VgpuShareMode)m)) == 0) {
      *out = (VgpuShareMode)m;
      return true;
    }
  }
  return false;
}

void vgpu_profile_limits(const VgpuProfile *p, uint64_t limits[VGPU_RES_N_QUOTA]) {
  limits[VGPU_RES_VRAM] = p->vram;
  limits[VGPU_RES_OBJECTS] = p->max_resources;
  limits[VGPU_RES_CONTEXTS] = p->max_contexts;
}

uint64_t vgpu_profile_clients_per_uid(const VgpuProfile *p) {
  if (p->max_clients_per_uid_set)
    return p->max_clients_per_uid;
  return p->max_clients ? p->max_clients / 2 + p->max_clients % 2 : 0;
}
