/* The null renderer: accepts everything valid, draws nothing, and signals
 * fences at once.  Unit tests and the fuzzer run sessions on it, so it
 * still tracks resources and contexts and refuses what virglrenderer would
 * (unknown handles, duplicate ids), which keeps those paths exercised. */
#include <errno.h>
#include <string.h>

#include "render/renderer.h"

typedef struct {
  VgpuRenderer base;
  GHashTable *resources; /* handle -> niov */
  GHashTable *contexts;
  uint32_t last_fence;
  bool fence_pending;
} NullRenderer;

#define NULL_CAPS1_SIZE 308u
#define NULL_CAPS2_SIZE 1376u

static void null_destroy(VgpuRenderer *r) {
  NullRenderer *n = (NullRenderer *)r;
  g_hash_table_unref(n->resources);
  g_hash_table_unref(n->contexts);
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
  g_hash_table_insert(n->resources, GUINT_TO_POINTER(d->handle), GUINT_TO_POINTER(niov + 1));
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
  NullRenderer *n = (NullRenderer *)r;
  gpointer v = g_hash_table_lookup(n->resources, GUINT_TO_POINTER(handle));
  if (!v)
    return -EINVAL;
  /* iov NULL means the attached backing, which must exist. */
  if (!iov && GPOINTER_TO_UINT(v) == 1)
    return -EINVAL;
  if (dir == VGPU_TRANSFER_FROM_HOST && iov)
    for (unsigned i = 0; i < niov; i++)
      if (iov[i].iov_len)
        memset(iov[i].iov_base, 0, iov[i].iov_len);
  return 0;
}

static int null_submit(VgpuRenderer *r, uint32_t ctx, const void *cmds, uint32_t ndw) {
  NullRenderer *n = (NullRenderer *)r;
  return g_hash_table_contains(n->contexts, GUINT_TO_POINTER(ctx)) ? 0 : -EINVAL;
}

static int null_create_fence(VgpuRenderer *r, uint32_t fence_id) {
  NullRenderer *n = (NullRenderer *)r;
  n->last_fence = fence_id;
  n->fence_pending = true;
  return 0;
}

static int null_get_poll_fd(VgpuRenderer *r) {
  return -1;
}

static void null_poll(VgpuRenderer *r) {
  NullRenderer *n = (NullRenderer *)r;
  if (n->fence_pending && r->fence_cb) {
    n->fence_pending = false;
    r->fence_cb(r->fence_user, n->last_fence);
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
    .describe = null_describe,
};

VgpuRenderer *vgpu_renderer_null_new(VgpuFenceCallback cb, void *user) {
  NullRenderer *n = g_new0(NullRenderer, 1);
  n->base.ops = &null_ops;
  n->base.fence_cb = cb;
  n->base.fence_user = user;
  n->resources = g_hash_table_new(g_direct_hash, g_direct_equal);
  n->contexts = g_hash_table_new(g_direct_hash, g_direct_equal);
  return &n->base;
}
