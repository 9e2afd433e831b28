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

typedef enum {
  VGPU_TRANSFER_TO_HOST = 0,   /* client memory -> GPU object (put/write) */
  VGPU_TRANSFER_FROM_HOST = 1, /* GPU object -> client memory (get/read) */
} VgpuTransferDir;

/* Called from inside poll(): every fence id <= `fence` has signalled.
 * Fence ids are 64-bit; each must be above the last one reported and less
 * than 2^31 beyond it.  A back-end whose library has 32-bit ids
 * (virglrenderer 0.10) passes the low 32 bits down and extends what it
 * gets back from the last id reported, which that rule makes exact. */
typedef void (*VgpuFenceCallback)(void *user, uint64_t fence);
/* Called from inside poll(): a context fence has retired.  Context fences
 * are mergeable: every fence created earlier on the same ring has retired
 * too, whether or not it is reported. */
typedef void (*VgpuCtxFenceCallback)(void *user, uint32_t ctx_id, uint32_t ring_idx,
                                     uint64_t fence_id);

/* A blob resource (virtio-gpu / vtest RESOURCE_CREATE_BLOB). */
typedef struct VgpuBlobArgs {
  uint32_t handle;
  uint32_t ctx_id;
  uint32_t blob_mem;   /* VTEST_BLOB_MEM_*: 1 guest, 2 host3d, 3 host3d+guest */
  uint32_t blob_flags; /* mappable 1, shareable 2, cross-device 4 */
  uint64_t blob_id;    /* host3d: the pipe resource a command stream made */
  uint64_t size;
  struct iovec *iov; /* guest memory, must outlive the resource */
  unsigned niov;
} VgpuBlobArgs;

/* What the renderer knows of a resource (virtio-gpu's RESOURCE_INFO, a
 * scanout's geometry). */
typedef struct VgpuResourceInfo {
  uint32_t format; /* virgl_formats */
  uint32_t width, height, depth;
  uint32_t stride; /* bytes per row of level 0 as the renderer holds it; 0 if unknown */
  bool has_backing;
} VgpuResourceInfo;

/* The null back-end's model of a submission that never completes: a
 * command stream whose first two dwords are these makes every fence
 * created after it stay unsignalled (tests of hang-up and GPU timeout).
 * They are a well-formed virgl command (NOP with one dword, "HANG"), so
 * the worker's stream checks pass them on like any other stream. */
#define VGPU_NULL_HANG_DW0 0x00010000u /* VIRGL_CCMD_NOP, length 1 */
#define VGPU_NULL_HANG_DW1 0x474e4148u /* "HANG" */

/* What a renderer runs on; any member may be NULL (not known). */
typedef struct VgpuRendererVersions {
  const char *gl_renderer;     /* GL_RENDERER of its GL context: the device */
  const char *gl_version;      /* GL_VERSION: "4.5 (Core Profile) Mesa 22.3.6" */
  const char *library_version; /* the virglrenderer it was built against */
  const char *library_path;    /* the virglrenderer library file loaded */
} VgpuRendererVersions;

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
  int (*create_fence)(VgpuRenderer *r, uint64_t fence_id);
  /* fd that becomes readable when poll() has work; -1 if none. */
  int (*get_poll_fd)(VgpuRenderer *r);
  void (*poll)(VgpuRenderer *r);
  /* Backing after creation (virtio-gpu ATTACH_BACKING / DETACH_BACKING):
   * attach fails with -EBUSY when the resource has one; the iovec array
   * must stay valid until it is detached or the resource unreferenced.
   * Detach gives it back (a no-op without one). */
  int (*attach_backing)(VgpuRenderer *r, uint32_t handle, struct iovec *iov, unsigned niov);
  void (*detach_backing)(VgpuRenderer *r, uint32_t handle);
  int (*resource_info)(VgpuRenderer *r, uint32_t handle, VgpuResourceInfo *info);
  /* Copies box (level 0, one layer) of a resource into dst, rows `stride`
   * bytes apart, whatever its backing: the read-back of a scanout.  dst
   * must hold (box->h - 1) * stride + box->w * bytes-per-pixel bytes;
   * -EINVAL for a box outside the resource or a stride too small. */
  int (*read_back)(VgpuRenderer *r, uint32_t handle, const VgpuBox *box, void *dst, size_t len,
                   uint32_t stride);
  /* GL_RENDERER-like description for operators. */
  const char *(*describe)(VgpuRenderer *r);
  /* Optional (NULL where the library lacks them; vtest then offers
   * protocol version 2 only). */
  int (*resource_create_blob)(VgpuRenderer *r, const VgpuBlobArgs *args);
  /* A new fd (O_CLOEXEC) mapping a host3d blob's memory: shared memory or
   * a dma-buf, -EINVAL for any other kind. */
  int (*export_blob)(VgpuRenderer *r, uint32_t handle, int *fd);
  /* A mergeable fence on one ring of a context; ctx_fence_cb reports it. */
  int (*context_create_fence)(VgpuRenderer *r, uint32_t ctx_id, uint32_t ring_idx,
                              uint64_t fence_id);
  /* Optional: what the renderer runs on, for `vgpuctl status`. */
  void (*versions)(VgpuRenderer *r, VgpuRendererVersions *out);
} VgpuRendererOps;

struct VgpuRenderer {
  const VgpuRendererOps *ops;
  VgpuFenceCallback fence_cb;
  void *fence_user;
  VgpuCtxFenceCallback ctx_fence_cb; /* same user as fence_cb */
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
/* For back-ends' read_back: looks the resource up (resource_info) and
 * checks the request against its geometry: the box in level 0, stride at
 * least a row, len enough for every row.  0, -EINVAL or resource_info's
 * error. */
int vgpu_read_back_prepare(VgpuRenderer *r, uint32_t handle, const VgpuBox *box, size_t len,
                           uint32_t stride);
/* By name ("virgl", "null"). */
VgpuRenderer *vgpu_renderer_new(const char *name, const VgpuRendererConfig *cfg,
                                VgpuFenceCallback cb, void *user, GError **error);

static inline void vgpu_renderer_free(VgpuRenderer *r) {
  if (r)
    r->ops->destroy(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuRenderer, vgpu_renderer_free)
