/* GPU memory partitioning arithmetic: see gpumem.h. */
#include "core/gpumem.h"

#include <gio/gio.h>
#include <string.h>

#include "core/profile.h"

bool vgpu_overcommit_parse(const char *s, uint32_t *milli, GError **error) {
  uint64_t whole = 0, frac = 0;
  int digits = 0, frac_digits = 0;
  const char *p = s ? s : "";
  for (; *p >= '0' && *p <= '9'; p++, digits++)
    whole = digits < 6 ? whole * 10 + (uint64_t)(*p - '0') : 999999; /* out of range below */
  bool dot = *p == '.', finer = false;
  if (dot) {
    for (p++; *p >= '0' && *p <= '9'; p++) {
      if (frac_digits < 3)
        frac = frac * 10 + (uint64_t)(*p - '0'), frac_digits++;
      else if (*p != '0')
        finer = true; /* more precision than is kept */
      dot = false;    /* at least one digit after the point */
    }
  }
  if (!digits || *p || dot || finer) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "\"%s\" is not a ratio such as 1.0 or 1.5 (at most three decimals)", s ? s : "");
    return false;
  }
  for (int i = frac_digits; i < 3; i++)
    frac *= 10;
  uint64_t v = whole * 1000 + frac;
  if (v < VGPU_OVERCOMMIT_MIN || v > VGPU_OVERCOMMIT_MAX) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "overcommit must be between 1.0 and 16.0");
    return false;
  }
  *milli = (uint32_t)v;
  return true;
}

char *vgpu_overcommit_format(uint32_t milli) {
  uint32_t frac = milli % 1000;
  if (frac == 0)
    return g_strdup_printf("%u.0", milli / 1000);
  char buf[8];
  g_snprintf(buf, sizeof(buf), "%03u", frac);
  for (int i = 2; i > 0 && buf[i] == '0'; i--)
    buf[i] = '\0';
  return g_strdup_printf("%u.%s", milli / 1000, buf);
}

uint64_t vgpu_gpumem_capacity(uint64_t gpu_memory, uint32_t milli) {
  /* Split so that no product overflows before the check: gpu_memory =
   * q * 1000 + r. */
  uint64_t q = gpu_memory / 1000, r = gpu_memory % 1000, hi;
  if (__builtin_mul_overflow(q, (uint64_t)milli, &hi))
    return UINT64_MAX;
  return vgpu_gpumem_add(hi, r * milli / 1000);
}

uint64_t vgpu_gpumem_charge(uint64_t vram, uint64_t gpu_memory) {
  return vram ? vram : gpu_memory;
}

uint64_t vgpu_gpumem_add(uint64_t a, uint64_t b) {
  uint64_t s;
  return __builtin_add_overflow(a, b, &s) ? UINT64_MAX : s;
}

uint64_t vgpu_gpumem_free(uint64_t capacity, uint64_t assigned) {
  return assigned < capacity ? capacity - assigned : 0;
}

bool vgpu_gpumem_fits(uint64_t capacity, uint64_t assigned, uint64_t charge) {
  return charge <= vgpu_gpumem_free(capacity, assigned);
}

uint64_t vgpu_gpumem_available(uint64_t capacity, uint64_t assigned, uint64_t charge) {
  if (!charge)
    return G_MAXUINT32;
  return vgpu_gpumem_free(capacity, assigned) / charge;
}

char *vgpu_gpumem_refusal(const char *name, uint64_t vram, uint64_t gpu_memory, uint32_t milli,
                          uint64_t assigned) {
  uint64_t cap = vgpu_gpumem_capacity(gpu_memory, milli);
  g_autofree char *want = vgpu_format_size(vram, false);
  g_autofree char *all = vgpu_format_size(gpu_memory, false);
  g_autofree char *caps = vgpu_format_size(cap, false);
  g_autofree char *free_s = vgpu_format_size(vgpu_gpumem_free(cap, assigned), false);
  g_autofree char *oc = vgpu_overcommit_format(milli);
  g_autofree char *what = vram ? g_strdup_printf("vram %s", want)
                               : g_strdup_printf("vram unlimited (counted as all %s)", all);
  if (milli == 1000)
    return g_strdup_printf("%s: %s does not fit: %s of %s GPU memory free (overcommit %s)", name,
                           what, free_s, all, oc);
  return g_strdup_printf("%s: %s does not fit: %s of %s GPU memory free (%s x overcommit %s)", name,
                         what, free_s, caps, all, oc);
}
