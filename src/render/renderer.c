#include "render/renderer.h"


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
