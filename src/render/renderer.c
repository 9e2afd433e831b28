#include "render/renderer.h"

#include <errno.h>

VgpuRenderer *vgpu_renderer_new(const char *name, const VgpuRendererConfig *cfg,
                                VgpuFenceCallback cb, void *user, GError **error) {
  if (g_strcmp0(name, "null") == 0)
    return vgpu_renderer_null_new(cb, user);
#if HAVE_VIRGL
  if (name == NULL || g_strcmp0(name, "virgl") == 0)
    return vgpu_renderer_virgl_new(cfg, cb, user, error);
#endif
  g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
              "unknown renderer \"%s\" (built-in: %s)", name ? name : "(default)",
              HAVE_VIRGL ? "virgl, null" : "null");
  return NULL;
}

int vgpu_read_back_prepare(VgpuRenderer *r, uint32_t handle, const VgpuBox *box, size_t len,
                           uint32_t stride) {
  VgpuResourceInfo info;
  int ret = r->ops->resource_info(r, handle, &info);
  if (ret < 0)
    return ret;
  VgpuFormatInfo fi;
  if (!vgpu_format_info(info.format, &fi) || fi.block_w != 1 || fi.block_h != 1)
    return -EINVAL; /* scanouts are plain pixel formats */
  if (box->w == 0 || box->h == 0 || box->d != 1 || box->z != 0 ||
      (uint64_t)box->x + box->w > info.width || (uint64_t)box->y + box->h > info.height)
    return -EINVAL;
  uint64_t row = (uint64_t)box->w * fi.block_bytes;
  if (stride < row || (uint64_t)(box->h - 1) * stride + row > len)
    return -EINVAL;
  return 0;
}
