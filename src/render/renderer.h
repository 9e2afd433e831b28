/* Renderer back-end interface: a small table of function pointers, so the
 * vtest front-end (and later the virtio-gpu device model) talk to
 * virglrenderer, or to the `null` back-end in tests, the same way.
 *
 * One renderer per worker process: virglrenderer keeps process-global state
 * and a process-global resource namespace.  Handles are the tenant's own,
 * validated by the caller before they get here. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/resource.h"

typedef struct VgpuRenderer VgpuRenderer;

typedef struct VgpuBox {
  uint32_t x, y, z, w, h, d;
} VgpuBox;

typedef enum {
  VGPU_TRANSFER_TO_HOST = 0,   /* client memory -> GPU object (put/write) */
  VGPU_TRANSFER_FROM_HOST = 1, /* GPU object -> client memory (get/read) */
} VgpuTransferDir;

/* Called from inside poll(): every fence id <= `fence` has signalled. */
typedef void (*VgpuFenceCallback)(void *user, uint32_t fence);

typedef struct VgpuRendererOps {
  const char *name;
  void (*destroy)(VgpuRenderer *r);
  /* Capability sets: size query (buf NULL) and fill. */
  int (*get_capset)(VgpuRenderer *r, uint32_t set, uint32_t *max_version, uint32_t *max_size);
  int (*fill_capset)(VgpuRenderer *r, uint32_t set, uint32_t version, void *buf);
  int (*context_create)(VgpuRenderer *r, uint32_t ctx_id, uint32_t capset, const char *name);
  void (*context_destroy)(VgpuRenderer *r, uint32_t ctx_id);
  int (*resource_create)(VgpuRenderer *r, const VgpuResourceDesc *d, struct iovec *iov,
                         unsigned niov);
  void (*resource_unref)(VgpuRenderer *r, uint32_t handle);
  int (*ctx_attach_resource)(VgpuRenderer *r, uint32_t ctx_id, uint32_t handle);
  void (*ctx_detach_resource)(VgpuRenderer *r, uint32_t ctx_id, uint32_t handle);
  /* iov NULL: the resource's attached backing. */
  int (*transfer)(VgpuRenderer *r, uint32_t ctx_id, uint32_t handle, VgpuTransferDir dir,
                  uint32_t level, uint32_t stride, uint32_t layer_stride, const VgpuBox *box,
                  uint64_t offset, struct iovec *iov, unsigned niov);
  int (*submit)(VgpuRenderer *r, uint32_t ctx_id, const void *cmds, uint32_t ndw);
  int (*create_fence)(VgpuRenderer *r, uint32_t fence_id);
  /* fd that becomes readable when poll() has work; -1 if none. */
  int (*get_poll_fd)(VgpuRenderer *r);
  void (*poll)(VgpuRenderer *r);
  /* GL_RENDERER-like description for operators. */
  const char *(*describe)(VgpuRenderer *r);
} VgpuRendererOps;

struct VgpuRenderer {
  const VgpuRendererOps *ops;
  VgpuFenceCallback fence_cb;
  void *fence_user;
};

typedef struct VgpuRendererConfig {
  const char *render_node; /* NULL: pick one, or surfaceless llvmpipe */
  bool use_thread_sync;    /* fences signalled through a poll fd */
} VgpuRendererConfig;

VgpuRenderer *vgpu_renderer_null_new(VgpuFenceCallback cb, void *user);
#include "vgpu-config.h"
#if HAVE_VIRGL
VgpuRenderer *vgpu_renderer_virgl_new(const VgpuRendererConfig *cfg, VgpuFenceCallback cb,
                                      void *user, GError **error);
#endif
/* By name ("virgl", "null"). */
VgpuRenderer *vgpu_renderer_new(const char *name, const VgpuRendererConfig *cfg,
                                VgpuFenceCallback cb, void *user, GError **error);

static inline void vgpu_renderer_free(VgpuRenderer *r) {
  if (r)
    r->ops->destroy(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuRenderer, vgpu_renderer_free)
