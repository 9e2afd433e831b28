/* The null renderer: accepts everything valid, draws nothing, and signals
 * fences at once (through an eventfd, as virglrenderer's sync thread
 * does).  Unit tests and the fuzzer run sessions on it, so it still tracks
 * resources and contexts and refuses what virglrenderer would (unknown
 * handles, duplicate ids), which keeps those paths exercised.  A command
 * stream starting with VGPU_NULL_HANG_DW0/1 models a submission that never
 * completes: no fence signals after it. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "render/renderer.h"

typedef struct {
  VgpuResourceDesc desc;
  bool backing;
  uint32_t blob_mem; /* 0: not a blob */
  uint64_t blob_size;
} NullResource;

/* A context fence waiting for the next poll. */
typedef struct {
  uint32_t ctx, ring;
  uint64_t id;
} NullCtxFence;

typedef struct {
  VgpuRenderer base;
  GHashTable *resources; /* handle -> NullResource* */
  GHashTable *contexts;
  uint64_t last_fence;
  bool fence_pending;
  bool hung; /* a "never completes" stream was submitted */
  int event_fd;
  GArray *ctx_fences; /* NullCtxFence, signalled at the next poll */
} NullRenderer;

#define NULL_CAPS1_SIZE 308u
#define NULL_CAPS2_SIZE 1376u

static void null_destroy(VgpuRenderer *r) {
  NullRenderer *n = (NullRenderer *)r;
  g_hash_table_unref(n->resources);
  g_hash_table_unref(n->contexts);
  g_array_unref(n->ctx_fences);
  if (n->event_fd >= 0)
    close(n->event_fd);
  g_free(n);
}

static int null_get_capset(VgpuRenderer *r, uint32_t set, uint32_t *ver, uint32_t *size) {
  if (set != 1 && set != 2)
    return -EINVAL;
  *ver = set;
  *size = set == 1 ? NULL_CAPS1_SIZE : NULL_CAPS2_SIZE;
  return 0;
}

static int null_fill_capset(VgpuRenderer *r, uint32_t set, uint32_t ver, void *buf) {
  uint32_t ver_max, size;
  if (null_get_capset(r, set, &ver_max, &size) < 0 || ver > ver_max)
    return -EINVAL;
  memset(buf, 0, size);
  uint32_t max_version = set; /* first dword: caps version, like virgl */
  memcpy(buf, &max_version, 4);
  return 0;
}

static int null_context_create(VgpuRenderer *r, uint32_t ctx, uint32_t capset, const char *name) {
  NullRenderer *n = (NullRenderer *)r;
  if (ctx == 0)
    return -EINVAL;
  g_hash_table_add(n->contexts, GUINT_TO_POINTER(ctx));
  return 0;
}

static void null_context_destroy(VgpuRenderer *r, uint32_t ctx) {
  g_hash_table_remove(((NullRenderer *)r)->contexts, GUINT_TO_POINTER(ctx));
}

static int null_resource_create(VgpuRenderer *r, const VgpuResourceDesc *d, struct iovec *iov,
                                unsigned niov) {
  NullRenderer *n = (NullRenderer *)r;
  if (d->handle == 0 || g_hash_table_contains(n->resources, GUINT_TO_POINTER(d->handle)))
    return -EINVAL;
  NullResource *res = g_new0(NullResource, 1);
  res->desc = *d;
  res->backing = niov > 0;
  g_hash_table_insert(n->resources, GUINT_TO_POINTER(d->handle), res);
  return 0;
}

static NullResource *null_lookup(VgpuRenderer *r, uint32_t handle) {
  return g_hash_table_lookup(((NullRenderer *)r)->resources, GUINT_TO_POINTER(handle));
}

static int null_attach_backing(VgpuRenderer *r, uint32_t handle, struct iovec *iov, unsigned niov) {
  NullResource *res = null_lookup(r, handle);
  if (!res || niov == 0 || !iov)
    return -EINVAL;
  if (res->backing)
    return -EBUSY;
  res->backing = true;
  return 0;
}

static void null_detach_backing(VgpuRenderer *r, uint32_t handle) {
  NullResource *res = null_lookup(r, handle);
  if (res)
    res->backing = false;
}

static int null_resource_info(VgpuRenderer *r, uint32_t handle, VgpuResourceInfo *info) {
  NullResource *res = null_lookup(r, handle);
  if (!res)
    return -EINVAL;
  VgpuFormatInfo fi = {0};
  uint64_t stride = 0;
  if (vgpu_format_info(res->desc.format, &fi) && fi.block_w)
    stride = (uint64_t)(res->desc.width + fi.block_w - 1) / fi.block_w * fi.block_bytes;
  *info = (VgpuResourceInfo){.format = res->desc.format,
                             .width = res->desc.width,
                             .height = res->desc.height,
                             .depth = res->desc.depth,
                             .stride = (uint32_t)MIN(stride, (uint64_t)UINT32_MAX),
                             .has_backing = res->backing};
  return 0;
}

static int null_read_back(VgpuRenderer *r, uint32_t handle, const VgpuBox *box, void *dst,
                          size_t len, uint32_t stride) {
  int ret = vgpu_read_back_prepare(r, handle, box, len, stride);
  if (ret < 0)
    return ret;
  memset(dst, 0, len); /* draws nothing: every pixel is 0 */
  return 0;
}

static void null_resource_unref(VgpuRenderer *r, uint32_t handle) {
  g_hash_table_remove(((NullRenderer *)r)->resources, GUINT_TO_POINTER(handle));
}

static int null_ctx_attach(VgpuRenderer *r, uint32_t ctx, uint32_t handle) {
  NullRenderer *n = (NullRenderer *)r;
  return g_hash_table_contains(n->resources, GUINT_TO_POINTER(handle)) ? 0 : -EINVAL;
}

static void null_ctx_detach(VgpuRenderer *r, uint32_t ctx, uint32_t handle) {}

static int null_transfer(VgpuRenderer *r, uint32_t ctx, uint32_t handle, VgpuTransferDir dir,
                         uint32_t level, uint32_t stride, uint32_t layer_stride,
                         const VgpuBox *box, uint64_t offset, struct iovec *iov, unsigned niov) {
  NullResource *res = null_lookup(r, handle);
  if (!res)
    return -EINVAL;
  /* iov NULL means the attached backing, which must exist. */
  if (!iov && !res->backing)
    return -EINVAL;
  if (dir == VGPU_TRANSFER_FROM_HOST && iov)
    for (unsigned i = 0; i < niov; i++)
      if (iov[i].iov_len)
        memset(iov[i].iov_base, 0, iov[i].iov_len);
  return 0;
}

static int null_submit(VgpuRenderer *r, uint32_t ctx, const void *cmds, uint32_t ndw) {
  NullRenderer *n = (NullRenderer *)r;
  if (!g_hash_table_contains(n->contexts, GUINT_TO_POINTER(ctx)))
    return -EINVAL;
  if (ndw >= 2) {
    uint32_t dw[2];
    memcpy(dw, cmds, sizeof(dw));
    if (dw[0] == VGPU_NULL_HANG_DW0 && dw[1] == VGPU_NULL_HANG_DW1)
      n->hung = true;
  }
  return 0;
}

static int null_create_fence(VgpuRenderer *r, uint64_t fence_id) {
  NullRenderer *n = (NullRenderer *)r;
  if (n->hung)
    return 0; /* never signals */
  n->last_fence = fence_id;
  n->fence_pending = true;
  if (n->event_fd >= 0) {
    uint64_t one = 1;
    (void)!write(n->event_fd, &one, sizeof(one));
  }
  return 0;
}

static int null_create_blob(VgpuRenderer *r, const VgpuBlobArgs *a) {
  NullRenderer *n = (NullRenderer *)r;
  if (a->handle == 0 || g_hash_table_contains(n->resources, GUINT_TO_POINTER(a->handle)) ||
      !g_hash_table_contains(n->contexts, GUINT_TO_POINTER(a->ctx_id)) || a->size == 0)
    return -EINVAL;
  /* Guest memory comes with the blob; host memory must not. */
  if ((a->blob_mem == 2) != (a->niov == 0))
    return -EINVAL;
  NullResource *res = g_new0(NullResource, 1);
  res->desc.handle = a->handle;
  res->desc.width = (uint32_t)MIN(a->size, (uint64_t)UINT32_MAX);
  res->desc.height = res->desc.depth = res->desc.array_size = 1;
  res->backing = a->niov > 0;
  res->blob_mem = a->blob_mem;
  res->blob_size = a->size;
  g_hash_table_insert(n->resources, GUINT_TO_POINTER(a->handle), res);
  return 0;
}

/* Host memory of a blob: a fresh memfd of its size, as virglrenderer
 * hands out shared memory. */
static int null_export_blob(VgpuRenderer *r, uint32_t handle, int *fd) {
  NullResource *res = null_lookup(r, handle);
  if (!res || res->blob_mem != 2)
    return -EINVAL;
  int f = memfd_create("vgpu-null-blob", MFD_CLOEXEC);
  if (f < 0)
    return -errno;
  if (ftruncate(f, (off_t)res->blob_size) < 0) {
    int e = errno;
    close(f);
    return -e;
  }
  *fd = f;
  return 0;
}

static int null_context_create_fence(VgpuRenderer *r, uint32_t ctx, uint32_t ring,
                                     uint64_t fence_id) {
  NullRenderer *n = (NullRenderer *)r;
  if (!g_hash_table_contains(n->contexts, GUINT_TO_POINTER(ctx)))
    return -EINVAL;
  if (n->hung)
    return 0; /* never signals */
  NullCtxFence f = {ctx, ring, fence_id};
  g_array_append_val(n->ctx_fences, f);
  if (n->event_fd >= 0) {
    uint64_t one = 1;
    (void)!write(n->event_fd, &one, sizeof(one));
  }
  return 0;
}

static int null_get_poll_fd(VgpuRenderer *r) {
  return ((NullRenderer *)r)->event_fd;
}

static void null_poll(VgpuRenderer *r) {
  NullRenderer *n = (NullRenderer *)r;
  if (n->event_fd >= 0) {
    uint64_t v;
    (void)!read(n->event_fd, &v, sizeof(v));
  }
  if (n->fence_pending && r->fence_cb) {
    n->fence_pending = false;
    r->fence_cb(r->fence_user, n->last_fence);
  }
  /* The callback may create fences: take the list first. */
  g_autoptr(GArray) done = n->ctx_fences;
  n->ctx_fences = g_array_new(FALSE, FALSE, sizeof(NullCtxFence));
  for (guint i = 0; i < done->len; i++) {
    NullCtxFence *f = &g_array_index(done, NullCtxFence, i);
    if (r->ctx_fence_cb)
      r->ctx_fence_cb(r->fence_user, f->ctx, f->ring, f->id);
  }
}

static const char *null_describe(VgpuRenderer *r) {
  return "null (no rendering)";
}

static const VgpuRendererOps null_ops = {
    .name = "null",
    .destroy = null_destroy,
    .get_capset = null_get_capset,
    .fill_capset = null_fill_capset,
    .context_create = null_context_create,
    .context_destroy = null_context_destroy,
    .resource_create = null_resource_create,
    .resource_unref = null_resource_unref,
    .ctx_attach_resource = null_ctx_attach,
    .ctx_detach_resource = null_ctx_detach,
    .transfer = null_transfer,
    .submit = null_submit,
    .create_fence = null_create_fence,
    .get_poll_fd = null_get_poll_fd,
    .poll = null_poll,
    .attach_backing = null_attach_backing,
    .detach_backing = null_detach_backing,
    .resource_info = null_resource_info,
    .read_back = null_read_back,
    .describe = null_describe,
    .resource_create_blob = null_create_blob,
    .export_blob = null_export_blob,
    .context_create_fence = null_context_create_fence,
};

VgpuRenderer *vgpu_renderer_null_new(VgpuFenceCallback cb, void *user) {
  NullRenderer *n = g_new0(NullRenderer, 1);
  n->base.ops = &null_ops;
  n->base.fence_cb = cb;
  n->base.fence_user = user;
  n->resources = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  n->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  n->contexts = g_hash_table_new(g_direct_hash, g_direct_equal);
  n->ctx_fences = g_array_new(FALSE, FALSE, sizeof(NullCtxFence));
  return &n->base;
}
