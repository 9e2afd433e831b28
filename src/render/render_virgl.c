/* virglrenderer back-end.  virglrenderer is process-global (one init per
 * process, one resource namespace), which is why every tenant has its own
 * worker process and this back-end can be instantiated once. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "vgpu-config.h"
/* 0.10 declares context fences, the fence callback and USE_EXTERNAL_BLOB
 * only for callers that ask for its unstable interface; 1.x has them in
 * its stable one (meson checks which, by symbol). */
#if VGPU_VIRGL_NEEDS_UNSTABLE_APIS
#define VIRGL_RENDERER_UNSTABLE_APIS 1
#endif
#include <virgl/virglrenderer.h>

#include "render/renderer.h"
#include "util/log.h"

typedef struct {
  VgpuRenderer base;
  char *render_node;
  char description[160];
  char *gl_renderer, *gl_version; /* from its GL context, after init */
  char *library_path;             /* the libvirglrenderer file loaded */
  bool versions_known;            /* the three above were looked up */
  uint64_t fence_reported;        /* last 64-bit fence id passed to fence_cb */
  GHashTable *backed;             /* handles with an iovec attached */
} VirglRenderer;

/* virglrenderer.h only declares struct virgl_box; this is its layout in
 * virglrenderer (six 32-bit values), the same as VgpuBox. */
struct virgl_box {
  uint32_t x, y, z, w, h, d;
};
G_STATIC_ASSERT(sizeof(struct virgl_box) == sizeof(VgpuBox));

static VirglRenderer *the_renderer;

/* virglrenderer 0.10's fence ids are 32-bit: the low bits of ours.  Fences
 * complete in order, so the 64-bit id is the last one reported moved on
 * by the (wrapping) 32-bit distance. */
static void virgl_write_fence(void *cookie, uint32_t fence) {
  VirglRenderer *v = cookie;
  uint32_t delta = fence - (uint32_t)v->fence_reported;
  if (delta == 0 || delta > INT32_MAX)
    return; /* already reported, or older */
  v->fence_reported += delta;
  if (v->base.fence_cb)
    v->base.fence_cb(v->base.fence_user, v->fence_reported);
}

static int virgl_get_drm_fd(void *cookie) {
  VirglRenderer *v = cookie;
  if (!v->render_node)
    return -1;
  return open(v->render_node, O_RDWR | O_CLOEXEC);
}

#if HAVE_VIRGL_CALLBACKS_WRITE_CONTEXT_FENCE
static void virgl_write_context_fence(void *cookie, uint32_t ctx_id, uint32_t ring_idx,
                                      uint64_t fence_id) {
  VirglRenderer *v = cookie;
  if (v->base.ctx_fence_cb)
    v->base.ctx_fence_cb(v->base.fence_user, ctx_id, ring_idx, fence_id);
}
#endif

static struct virgl_renderer_callbacks virgl_cbs = {
#if HAVE_VIRGL_CALLBACKS_WRITE_CONTEXT_FENCE
    .version = 3, /* write_context_fence */
    .write_context_fence = virgl_write_context_fence,
#else
    .version = 2,
#endif
    .write_fence = virgl_write_fence,
    .get_drm_fd = virgl_get_drm_fd,
};

/* vtest protocol version 3 needs all of these. */
#define VIRGL_HAS_V3                                                                               \
  (HAVE_VIRGL_RENDERER_RESOURCE_CREATE_BLOB && HAVE_VIRGL_RENDERER_RESOURCE_EXPORT_BLOB &&         \
   HAVE_VIRGL_RENDERER_CONTEXT_CREATE_WITH_FLAGS && HAVE_VIRGL_RENDERER_CONTEXT_CREATE_FENCE &&    \
   HAVE_VIRGL_CALLBACKS_WRITE_CONTEXT_FENCE)

static void virgl_debug(const char *fmt, va_list ap) G_GNUC_PRINTF(1, 0);
static void virgl_debug(const char *fmt, va_list ap) {
  if (vgpu_log_get_level() < VGPU_LOG_DEBUG)
    return;
  char buf[512];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  g_strchomp(buf);
  vgpu_debug("virglrenderer: %s", buf);
}

static void virgl_destroy(VgpuRenderer *r) {
  VirglRenderer *v = (VirglRenderer *)r;
  virgl_renderer_cleanup(v);
  g_hash_table_unref(v->backed);
  g_free(v->render_node);
  g_free(v->gl_renderer);
  g_free(v->gl_version);
  g_free(v->library_path);
  g_free(v);
  the_renderer = NULL;
}

/* The capability sets of the one renderer this back-end starts, virgl's
 * (GL): ids 1 and 2.  A virglrenderer built with venus (Debian's 0.10.4
 * and 1.1.0 both are) also reports venus's set (id 4), yet refuses
 * contexts with it (EINVAL) unless initialised with VIRGL_RENDERER_VENUS,
 * which vgpu does not ask for: offering it would invite a CONTEXT_INIT
 * that cannot work. */
static bool virgl_capset_served(uint32_t set) {
  return set == 1 || set == 2;
}

static int virgl_get_capset(VgpuRenderer *r, uint32_t set, uint32_t *ver, uint32_t *size) {
  *ver = 0;
  *size = 0;
  if (!virgl_capset_served(set))
    return -EINVAL;
  virgl_renderer_get_cap_set(set, ver, size);
  return *size ? 0 : -EINVAL;
}

static int virgl_fill_capset(VgpuRenderer *r, uint32_t set, uint32_t ver, void *buf) {
  if (!virgl_capset_served(set))
    return -EINVAL;
  virgl_renderer_fill_caps(set, ver, buf);
  return 0;
}

static int virgl_context_create(VgpuRenderer *r, uint32_t ctx, uint32_t capset, const char *name) {
  int ret;
#if HAVE_VIRGL_RENDERER_CONTEXT_CREATE_WITH_FLAGS
  if (capset) {
    if (!virgl_capset_served(capset))
      return -EINVAL;
    ret = virgl_renderer_context_create_with_flags(ctx, capset, (uint32_t)strlen(name), name);
    return ret ? -ABS(ret) : 0;
  }
#else
  if (capset)
    return -ENOTSUP;
#endif
  ret = virgl_renderer_context_create(ctx, (uint32_t)strlen(name), name);
  return ret ? -ABS(ret) : 0;
}

#if VIRGL_HAS_V3
static int virgl_resource_create_blob(VgpuRenderer *r, const VgpuBlobArgs *a) {
  struct virgl_renderer_resource_create_blob_args args = {
      .res_handle = a->handle,
      .ctx_id = a->ctx_id,
      .blob_mem = a->blob_mem,
      .blob_flags = a->blob_flags,
      .blob_id = a->blob_id,
      .size = a->size,
      .iovecs = a->iov,
      .num_iovs = a->niov,
  };
  int ret = virgl_renderer_resource_create_blob(&args);
  if (ret)
    return -ABS(ret);
  /* Guest memory is ours, as with an attached backing. */
  if (a->niov)
    g_hash_table_add(((VirglRenderer *)r)->backed, GUINT_TO_POINTER(a->handle));
  return 0;
}

static int virgl_export_blob(VgpuRenderer *r, uint32_t handle, int *fd) {
  uint32_t type = 0;
  int out = -1;
  int ret = virgl_renderer_resource_export_blob(handle, &type, &out);
  if (ret)
    return -ABS(ret);
  if (type != VIRGL_RENDERER_BLOB_FD_TYPE_SHM && type != VIRGL_RENDERER_BLOB_FD_TYPE_DMABUF) {
    close(out);
    return -EINVAL;
  }
  /* The library's fd may lack close-on-exec. */
  if (fcntl(out, F_SETFD, FD_CLOEXEC) < 0) {
    int e = errno;
    close(out);
    return -e;
  }
  *fd = out;
  return 0;
}

static int virgl_context_create_fence(VgpuRenderer *r, uint32_t ctx, uint32_t ring,
                                      uint64_t fence_id) {
  int ret =
      virgl_renderer_context_create_fence(ctx, VIRGL_RENDERER_FENCE_FLAG_MERGEABLE, ring, fence_id);
  return ret ? -ABS(ret) : 0;
}
#endif

static void virgl_context_destroy(VgpuRenderer *r, uint32_t ctx) {
  virgl_renderer_context_destroy(ctx);
}

static int virgl_resource_create(VgpuRenderer *r, const VgpuResourceDesc *d, struct iovec *iov,
                                 unsigned niov) {
  struct virgl_renderer_resource_create_args a = {
      .handle = d->handle,
      .target = d->target,
      .format = d->format,
      .bind = d->bind,
      .width = d->width,
      .height = d->height,
      .depth = d->depth,
      .array_size = d->array_size,
      .last_level = d->last_level,
      .nr_samples = d->nr_samples,
      .flags = d->flags,
  };
  /* Created bare, then given its backing, the way virglrenderer's own
   * servers do: passing the iovec at creation is not equivalent for
   * transfers encoded inside command streams. */
  int ret = virgl_renderer_resource_create(&a, NULL, 0);
  if (ret)
    return -ABS(ret);
  if (niov) {
    ret = virgl_renderer_resource_attach_iov((int)d->handle, iov, (int)niov);
    if (ret) {
      virgl_renderer_resource_unref(d->handle);
      return -ABS(ret);
    }
    g_hash_table_add(((VirglRenderer *)r)->backed, GUINT_TO_POINTER(d->handle));
  }
  return 0;
}

static void virgl_resource_unref(VgpuRenderer *r, uint32_t handle) {
  /* The iovec is ours; take it back before the renderer forgets it. */
  g_hash_table_remove(((VirglRenderer *)r)->backed, GUINT_TO_POINTER(handle));
  virgl_renderer_resource_detach_iov((int)handle, NULL, NULL);
  virgl_renderer_resource_unref(handle);
}

static int virgl_ctx_attach(VgpuRenderer *r, uint32_t ctx, uint32_t handle) {
  virgl_renderer_ctx_attach_resource((int)ctx, (int)handle);
  return 0;
}

static void virgl_ctx_detach(VgpuRenderer *r, uint32_t ctx, uint32_t handle) {
  virgl_renderer_ctx_detach_resource((int)ctx, (int)handle);
}

static int virgl_transfer(VgpuRenderer *r, uint32_t ctx, uint32_t handle, VgpuTransferDir dir,
                          uint32_t level, uint32_t stride, uint32_t layer_stride,
                          const VgpuBox *box, uint64_t offset, struct iovec *iov, unsigned niov) {
  struct virgl_box b = {box->x, box->y, box->z, box->w, box->h, box->d};
  int ret;
  if (dir == VGPU_TRANSFER_FROM_HOST)
    ret = virgl_renderer_transfer_read_iov(handle, ctx, level, stride, layer_stride, &b, offset,
                                           iov, (int)niov);
  else
    ret = virgl_renderer_transfer_write_iov(handle, ctx, (int)level, stride, layer_stride, &b,
                                            offset, iov, niov);
  return ret ? -ABS(ret) : 0;
}

static int virgl_submit(VgpuRenderer *r, uint32_t ctx, const void *cmds, uint32_t ndw) {
  int ret = virgl_renderer_submit_cmd((void *)cmds, (int)ctx, (int)ndw);
  return ret ? -ABS(ret) : 0;
}

static int virgl_create_fence(VgpuRenderer *r, uint64_t fence_id) {
  int ret = virgl_renderer_create_fence((int)(uint32_t)fence_id, 0);
  return ret ? -ABS(ret) : 0;
}

static int virgl_get_poll_fd(VgpuRenderer *r) {
  return virgl_renderer_get_poll_fd();
}

static void virgl_poll(VgpuRenderer *r) {
  virgl_renderer_poll();
}

static int virgl_attach_backing(VgpuRenderer *r, uint32_t handle, struct iovec *iov,
                                unsigned niov) {
  if (niov == 0 || !iov)
    return -EINVAL;
  VirglRenderer *v = (VirglRenderer *)r;
  if (g_hash_table_contains(v->backed, GUINT_TO_POINTER(handle)))
    return -EBUSY;
  int ret = virgl_renderer_resource_attach_iov((int)handle, iov, (int)niov);
  if (ret)
    return -ABS(ret);
  g_hash_table_add(v->backed, GUINT_TO_POINTER(handle));
  return 0;
}

static void virgl_detach_backing(VgpuRenderer *r, uint32_t handle) {
  VirglRenderer *v = (VirglRenderer *)r;
  if (g_hash_table_remove(v->backed, GUINT_TO_POINTER(handle)))
    virgl_renderer_resource_detach_iov((int)handle, NULL, NULL);
}

static int virgl_resource_info(VgpuRenderer *r, uint32_t handle, VgpuResourceInfo *info) {
  struct virgl_renderer_resource_info vi;
  memset(&vi, 0, sizeof(vi));
  int ret = virgl_renderer_resource_get_info((int)handle, &vi);
  /* 0.10 fills the geometry, sets the handle, and then returns what
   * looking up a DRM fourcc gave (EINVAL on surfaceless EGL): the handle
   * tells whether the resource was found. */
  if (ret && vi.handle != handle)
    return -ABS(ret);
  *info = (VgpuResourceInfo){
      .format = vi.virgl_format,
      .width = vi.width,
      .height = vi.height,
      .depth = vi.depth,
      .stride = vi.stride,
      .has_backing = g_hash_table_contains(((VirglRenderer *)r)->backed, GUINT_TO_POINTER(handle))};
  return 0;
}

static int virgl_read_back(VgpuRenderer *r, uint32_t handle, const VgpuBox *box, void *dst,
                           size_t len, uint32_t stride) {
  int ret = vgpu_read_back_prepare(r, handle, box, len, stride);
  if (ret < 0)
    return ret;
  struct virgl_box b = {box->x, box->y, 0, box->w, box->h, 1};
  struct iovec iov = {.iov_base = dst, .iov_len = len};
  /* Context 0: the renderer's own, which sees every resource. */
  ret = virgl_renderer_transfer_read_iov(handle, 0, 0, stride, 0, &b, 0, &iov, 1);
  return ret ? -ABS(ret) : 0;
}

static const char *virgl_describe(VgpuRenderer *r) {
  return ((VirglRenderer *)r)->description;
}

/* GL_RENDERER and GL_VERSION of the context virglrenderer left current
 * after its initialisation, asked through the libEGL its libepoxy loaded
 * (RTLD_NOLOAD: nothing new is loaded); NULL when there is none. */
typedef const unsigned char *(*GetStringFn)(unsigned int name);
typedef void (*(*GetProcFn)(const char *name))(void);
#define VGPU_GL_RENDERER 0x1F01
#define VGPU_GL_VERSION 0x1F02

static void query_gl_strings(VirglRenderer *v) {
  void *egl = dlopen("libEGL.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!egl)
    return;
  GetProcFn get_proc = (GetProcFn)dlsym(egl, "eglGetProcAddress");
  GetStringFn get_string = get_proc ? (GetStringFn)get_proc("glGetString") : NULL;
  const unsigned char *r = get_string ? get_string(VGPU_GL_RENDERER) : NULL;
  const unsigned char *ver = get_string ? get_string(VGPU_GL_VERSION) : NULL;
  v->gl_renderer = r ? g_strndup((const char *)r, 200) : NULL;
  v->gl_version = ver ? g_strndup((const char *)ver, 200) : NULL;
  dlclose(egl); /* only drops the reference dlopen took */
}

/* The file the dynamic linker loaded virglrenderer from. */
static void find_library(VirglRenderer *v) {
  Dl_info info;
  if (!dladdr((void *)virgl_renderer_init, &info) || !info.dli_fname)
    return;
  char real[PATH_MAX];
  v->library_path = g_strdup(realpath(info.dli_fname, real) ? real : info.dli_fname);
}

static void virgl_versions(VgpuRenderer *r, VgpuRendererVersions *out) {
  VirglRenderer *v = (VirglRenderer *)r;
  /* Looked up once, when first asked (by the probe, on the thread that
   * initialised virglrenderer, before its sandbox). */
  if (!v->versions_known) {
    query_gl_strings(v);
    find_library(v);
    v->versions_known = true;
  }
  out->gl_renderer = v->gl_renderer;
  out->gl_version = v->gl_version;
  out->library_version = VGPU_VIRGL_VERSION;
  out->library_path = v->library_path;
}

static const VgpuRendererOps virgl_ops = {
    .name = "virgl",
    .destroy = virgl_destroy,
    .get_capset = virgl_get_capset,
    .fill_capset = virgl_fill_capset,
    .context_create = virgl_context_create,
    .context_destroy = virgl_context_destroy,
    .resource_create = virgl_resource_create,
    .resource_unref = virgl_resource_unref,
    .ctx_attach_resource = virgl_ctx_attach,
    .ctx_detach_resource = virgl_ctx_detach,
    .transfer = virgl_transfer,
    .submit = virgl_submit,
    .create_fence = virgl_create_fence,
    .get_poll_fd = virgl_get_poll_fd,
    .poll = virgl_poll,
    .attach_backing = virgl_attach_backing,
    .detach_backing = virgl_detach_backing,
    .resource_info = virgl_resource_info,
    .read_back = virgl_read_back,
    .describe = virgl_describe,
    .versions = virgl_versions,
#if VIRGL_HAS_V3
    .resource_create_blob = virgl_resource_create_blob,
    .export_blob = virgl_export_blob,
    .context_create_fence = virgl_context_create_fence,
#endif
};

VgpuRenderer *vgpu_renderer_virgl_new(const VgpuRendererConfig *cfg, VgpuFenceCallback cb,
                                      void *user, GError **error) {
  if (the_renderer) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                "virglrenderer is already initialised in this process");
    return NULL;
  }
  VirglRenderer *v = g_new0(VirglRenderer, 1);
  v->base.ops = &virgl_ops;
  v->base.fence_cb = cb;
  v->base.fence_user = user;
  v->backed = g_hash_table_new(g_direct_hash, g_direct_equal);
  int flags = VIRGL_RENDERER_USE_EGL;
#ifdef VIRGL_RENDERER_USE_EXTERNAL_BLOB
  /* Host blobs are handed to another process (the client) as fds.  As in
   * virgl_test_server, this also keeps ARB_buffer_storage out of the caps
   * (0.10 offers it only for memory it need not export): Mesa 24/25 then
   * maps no buffer persistently, and sends no blobs for it. */
  flags |= VIRGL_RENDERER_USE_EXTERNAL_BLOB;
#endif
  if (!cfg || cfg->use_thread_sync)
    flags |= VIRGL_RENDERER_THREAD_SYNC;
  if (cfg && cfg->render_node && *cfg->render_node) {
    v->render_node = g_strdup(cfg->render_node);
    g_snprintf(v->description, sizeof(v->description), "virglrenderer on %s", v->render_node);
  } else {
    flags |= VIRGL_RENDERER_USE_SURFACELESS;
    g_snprintf(v->description, sizeof(v->description),
               "virglrenderer on EGL surfaceless (software)");
  }
  virgl_set_debug_callback(virgl_debug);
  int ret = virgl_renderer_init(v, flags, &virgl_cbs);
  if (ret) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED,
                "virglrenderer initialisation failed (%s)", g_strerror(ABS(ret)));
    g_hash_table_unref(v->backed);
    g_free(v->render_node);
    g_free(v);
    return NULL;
  }
  the_renderer = v;
  return &v->base;
}
