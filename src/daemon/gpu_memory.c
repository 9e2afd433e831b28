/* GPU memory: where the figure comes from, and the fit of a whole set of
 * instances (start-up, reload). */
#include "daemon/gpu_memory.h"

#include <gio/gio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "core/gpumem.h"
#include "core/profile.h"
#include "util/small_file.h"

bool vgpu_meminfo_total(const char *text, uint64_t *bytes) {
  const char *p = text ? strstr(text, "MemTotal:") : NULL;
  if (!p || (p != text && p[-1] != '\n'))
    return false;
  p += strlen("MemTotal:");
  while (*p == ' ' || *p == '\t')
    p++;
  char *end = NULL;
  guint64 kib = g_ascii_strtoull(p, &end, 10);
  if (end == p || !g_str_has_prefix(end, " kB") || kib == 0 || kib > UINT64_MAX / 1024)
    return false;
  *bytes = kib * 1024;
  return true;
}

/* The render node's VRAM as its driver reports it in sysfs, found through
 * the device number (so that a /dev/dri/by-path link works too). */
static bool render_node_vram(const char *node, uint64_t *bytes) {
  struct stat st;
  if (!node || stat(node, &st) < 0 || !S_ISCHR(st.st_mode))
    return false;
  g_autofree char *path = g_strdup_printf("/sys/dev/char/%u:%u/device/mem_info_vram_total",
                                          major(st.st_rdev), minor(st.st_rdev));
  g_autofree char *text = vgpu_read_small(NULL, path, VGPU_SMALL_FILE_MAX);
  if (!text)
    return false;
  char *end = NULL;
  guint64 v = g_ascii_strtoull(g_strstrip(text), &end, 10);
  if (end == text || *end || v == 0 || v > (uint64_t)G_MAXINT64)
    return false;
  *bytes = v;
  return true;
}

uint64_t vgpu_gpu_memory_resolve(const VgpuConfig *cfg, const char *render_node, char **source) {
  if (cfg->gpu_memory) {
    *source = g_strdup("gpu-memory in the configuration");
    return cfg->gpu_memory;
  }
  uint64_t v;
  if (render_node_vram(render_node, &v)) {
    *source = g_strdup_printf("auto: VRAM of %s as its driver reports it", render_node);
    return v;
  }
  g_autofree char *mi = vgpu_read_small(NULL, "/proc/meminfo", VGPU_SMALL_FILE_MAX);
  uint64_t host;
  if (!mi || !vgpu_meminfo_total(mi, &host)) {
    *source = g_strdup("auto: neither the GPU nor /proc/meminfo says how much memory there is; "
                       "set gpu-memory");
    return 0;
  }
  g_autofree char *hs = vgpu_format_size(host, false);
  if (render_node)
    *source = g_strdup_printf("auto: %u%% of host RAM (%s): the driver of %s reports no VRAM "
                              "size in sysfs",
                              VGPU_GPU_MEMORY_HOST_PERCENT, hs, render_node);
  else
    *source = g_strdup_printf("auto: %u%% of host RAM (%s): llvmpipe renders in host memory",
                              VGPU_GPU_MEMORY_HOST_PERCENT, hs);
  return host / 100 * VGPU_GPU_MEMORY_HOST_PERCENT;
}

bool vgpu_gpu_memory_check(GPtrArray *instances, uint64_t gpu_memory, uint32_t milli,
                           uint64_t *assigned, GError **error) {
  uint64_t cap = vgpu_gpumem_capacity(gpu_memory, milli), sum = 0;
  for (guint i = 0; i < instances->len; i++) {
    const VgpuInstanceConfig *ic = g_ptr_array_index(instances, i);
    uint64_t charge = vgpu_gpumem_charge(ic->eff.vram, gpu_memory);
    if (!vgpu_gpumem_fits(cap, sum, charge)) {
      g_autofree char *msg = vgpu_gpumem_refusal(ic->name, ic->eff.vram, gpu_memory, milli, sum);
      g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE, msg);
      return false;
    }
    sum = vgpu_gpumem_add(sum, charge);
  }
  if (assigned)
    *assigned = sum;
  return true;
}
