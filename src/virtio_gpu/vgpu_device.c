/* The virtio-gpu device model; see vgpu_device.h.
 *
 * State: a table of resources (2D ones are pixman images the device owns,
 * 3D ones live in the renderer), their backing as the guest's entries
 * (guest addresses) plus a translation into host iovecs that is dropped
 * when the memory table changes, the scanouts, the renderer contexts, and
 * the responses waiting for a fence.
 *
 * Every request is decoded by vgpu_cmd_decode() first (structure: sizes,
 * wraparound, feature bits, scanout ids); this file checks what needs
 * state: ids, rectangles and boxes against the resource, transfer offsets
 * and strides against the backing, backing against guest memory, and the
 * tenant's quotas.  A 2D resource is charged as a 3D one of the same size
 * (target 2D, one level), so the books of both front-ends add up alike.
 *
 * Fences: the guest's fence ids are only echoed in responses; what the
 * renderer sees is the device's own counter, strictly increasing, so a
 * guest that repeats or rewinds its ids cannot break the renderer's rule
 * (each fence above the last).  With VIRGL negotiated, every FENCE-flagged
 * request (also one that failed) waits for its fence, so a guest that
 * signals "every fence up to N" on each response never sees a later fence
 * complete before an earlier one. */
#include "virtio_gpu/vgpu_device.h"

#include <errno.h>
#include <glib.h>
#include <pixman.h>
#include <string.h>

#include "core/virgl_stream.h"
#include "util/log.h"

/* Hard caps independent of quotas: what a guest can make the device hold. */
#define MAX_RESOURCES 65536u
#define MAX_CONTEXTS 1024u
#define MAX_PENDING 4096u                   /* deferred responses */
#define MAX_IOV (VGPU_CMD_MAX_ENTRIES * 4u) /* host pieces of one backing */
#define BACKING_MAX (UINT64_C(1) << 32)     /* bytes of one resource's backing */
#define CURSOR_SIZE 64u

typedef struct {
  uint64_t addr;
  uint32_t len;
} Entry;

typedef struct {
  uint32_t id;
  bool is_3d;
  VgpuResourceDesc desc; /* 2D: target 2D, format = the virtio format */
  uint64_t charge;       /* VRAM bytes charged */
  pixman_image_t *image; /* 2D only */
  /* Backing, as the guest gave it, and its host translation. */
  Entry *ents;
  uint32_t nents;
  uint64_t backing_len; /* 0: no backing */
  struct iovec *iov;    /* NULL: not translated (after a memory change) */
  unsigned niov;
  bool renderer_backed; /* 3D: iov handed to the renderer */
} Res;

typedef struct {
  uint32_t res_id; /* 0: disabled */
  VgpuRect r;      /* in the resource */
  uint32_t format;
  /* A 3D resource's frames are read back here (r.w x r.h, 4 bytes each). */
  uint8_t *rb;
  uint64_t rb_charge;
} Scanout;

/* A 3D context: its command streams' books. */
typedef struct {
  VgpuVirglTracker *stream;
  /* The renderer refused a stream: it runs nothing more in this context
   * (virglrenderer keeps a context in error), so neither do the books. */
  bool in_error;
} Context;

typedef struct {
  uint64_t fence; /* the device's id */
  uint64_t cookie;
  bool ctx_fence;
  uint32_t ctx_id, ring_idx;
  size_t len;
  uint8_t resp[];
} Pending;

struct VgpuDevice {
  VgpuDeviceConfig cfg;
  VgpuCmdConfig cmd_cfg;
  GHashTable *resources; /* id -> Res* */
  GHashTable *contexts;  /* ctx id -> Context* */
  Scanout scanouts[VGPU_CMD_MAX_SCANOUTS];
  /* What GET_DISPLAY_INFO reports, and each head's EDID from the display
   * (edid_len 0: one is built from the head's mode). */
  VgpuDisplayMode modes[VGPU_CMD_MAX_SCANOUTS];
  uint8_t edid[VGPU_CMD_MAX_SCANOUTS][VGPU_CMD_EDID_MAX];
  size_t edid_len[VGPU_CMD_MAX_SCANOUTS];
  GQueue pending; /* Pending*, in fence order */
  uint64_t next_fence;
  bool mem_stale; /* some 3D backing needs translating again */
  char *name;
};

/* ---- small helpers ----------------------------------------------------- */
static void bad(VgpuDevice *d, const char *cmd, const char *why) {
  vgpu_warn("%s: %s refused: %s", d->name, cmd, why);
}

static bool rect_inside(const VgpuRect *r, uint32_t w, uint32_t h) {
  /* decoded rectangles do not wrap */
  return r->x + r->w <= w && r->y + r->h <= h && r->x <= w && r->y <= h;
}

static pixman_format_code_t pixman_format(uint32_t f) {
  switch (f) { /* virtio formats name bytes in memory; pixman names words */
  case VGPU_FORMAT_B8G8R8A8_UNORM:
    return PIXMAN_a8r8g8b8;
  case VGPU_FORMAT_B8G8R8X8_UNORM:
    return PIXMAN_x8r8g8b8;
  case VGPU_FORMAT_A8R8G8B8_UNORM:
    return PIXMAN_b8g8r8a8;
  case VGPU_FORMAT_X8R8G8B8_UNORM:
    return PIXMAN_b8g8r8x8;
  case VGPU_FORMAT_R8G8B8A8_UNORM:
    return PIXMAN_a8b8g8r8;
  case VGPU_FORMAT_X8B8G8R8_UNORM:
    return PIXMAN_r8g8b8x8;
  case VGPU_FORMAT_A8B8G8R8_UNORM:
    return PIXMAN_r8g8b8a8;
  case VGPU_FORMAT_R8G8B8X8_UNORM:
    return PIXMAN_x8b8g8r8;
  default:
    return 0;
  }
}

/* Walks an iovec array by byte offset; forward seeks are cheap. */
typedef struct {
  const struct iovec *iov;
  unsigned n, i;
  uint64_t base; /* offset of iov[i] */
} IovCursor;

static bool iov_copy(IovCursor *c, uint64_t off, uint8_t *buf, size_t len, bool to_iov) {
  if (off < c->base)
    c->i = 0, c->base = 0;
  while (len) {
    while (c->i < c->n && off >= c->base + c->iov[c->i].iov_len)
      c->base += c->iov[c->i++].iov_len;
    if (c->i >= c->n)
      return false;
    size_t in = (size_t)(off - c->base);
    size_t chunk = MIN(len, c->iov[c->i].iov_len - in);
    uint8_t *p = (uint8_t *)c->iov[c->i].iov_base + in;
    if (to_iov)
      memcpy(p, buf, chunk);
    else
      memcpy(buf, p, chunk);
    off += chunk, buf += chunk, len -= chunk;
  }
  return true;
}

/* ---- backing ----------------------------------------------------------- */
/* Translates a resource's entries into host iovecs.  0, -EFAULT (outside
 * guest memory) or -ENOMEM. */
static int backing_map(VgpuDevice *d, Res *r) {
  if (r->iov || !r->backing_len)
    return 0;
  if (!d->cfg.mem.to_iov)
    return -EFAULT;
  unsigned cap = MAX(r->nents, 1u);
  for (;;) {
    struct iovec *iov = g_try_new(struct iovec, cap);
    if (!iov)
      return -ENOMEM;
    unsigned n = 0;
    int rc = 0;
    for (uint32_t i = 0; i < r->nents && rc == 0; i++)
      if (r->ents[i].len)
        rc = d->cfg.mem.to_iov(d->cfg.mem.user, r->ents[i].addr, r->ents[i].len, iov, cap, &n);
    if (rc == 0) {
      r->iov = iov;
      r->niov = n;
      return 0;
    }
    g_free(iov);
    if (rc != -E2BIG || cap >= MAX_IOV)
      return rc == -E2BIG ? -ENOMEM : -EFAULT;
    cap = MIN(cap * 2u, MAX_IOV);
  }
}

static void backing_drop(VgpuDevice *d, Res *r) {
  if (r->renderer_backed)
    d->cfg.renderer->ops->detach_backing(d->cfg.renderer, r->id);
  r->renderer_backed = false;
  g_clear_pointer(&r->iov, g_free);
  r->niov = 0;
}

/* A 3D resource's backing as the renderer needs it: translated and
 * attached.  0 or negative errno. */
static int backing_ready(VgpuDevice *d, Res *r) {
  int rc = backing_map(d, r);
  if (rc < 0 || !r->is_3d || r->renderer_backed || !r->iov)
    return rc;
  rc = d->cfg.renderer->ops->attach_backing(d->cfg.renderer, r->id, r->iov, r->niov);
  if (rc < 0)
    return rc;
  r->renderer_backed = true;
  return 0;
}

/* After a memory change, before the renderer runs anything that may read
 * backing (a command stream can copy from any resource's). */
static void backing_refresh_all(VgpuDevice *d) {
  if (!d->mem_stale)
    return;
  d->mem_stale = false;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, d->resources);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Res *r = v;
    if (r->is_3d && r->backing_len && backing_ready(d, r) < 0)
      vgpu_warn("%s: resource %u: backing outside the new guest memory table", d->name, r->id);
  }
}

/* ---- resources --------------------------------------------------------- */
static Res *res_get(VgpuDevice *d, uint32_t id) {
  return id ? g_hash_table_lookup(d->resources, GUINT_TO_POINTER(id)) : NULL;
}

static void scanout_disable(VgpuDevice *d, uint32_t i, bool tell) {
  Scanout *s = &d->scanouts[i];
  bool was = s->res_id != 0;
  g_clear_pointer(&s->rb, g_free);
  if (d->cfg.tenant && s->rb_charge)
    vgpu_tenant_uncharge(d->cfg.tenant, VGPU_RES_VRAM, s->rb_charge);
  memset(s, 0, sizeof(*s));
  if (was && tell && d->cfg.display.scanout)
    d->cfg.display.scanout(d->cfg.display.user, i, 0, 0);
}

static void res_free(VgpuDevice *d, Res *r, bool tell) {
  for (uint32_t i = 0; i < VGPU_CMD_MAX_SCANOUTS; i++)
    if (d->scanouts[i].res_id == r->id)
      scanout_disable(d, i, tell);
  if (r->is_3d) {
    backing_drop(d, r);
    d->cfg.renderer->ops->resource_unref(d->cfg.renderer, r->id);
  } else {
    g_clear_pointer(&r->iov, g_free);
  }
  if (r->image)
    pixman_image_unref(r->image);
  /* Command-stream objects of some context may keep a 3D resource's memory
   * alive: so does its charge, which one context's tracker takes over (the
   * others retire their references; see stream_hand_over). */
  VgpuVirglTracker *keeper = NULL;
  if (r->is_3d) {
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, d->contexts);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      VgpuVirglTracker *t = ((Context *)v)->stream;
      if (!vgpu_virgl_tracker_refers(t, r->id))
        continue;
      if (keeper)
        vgpu_virgl_tracker_resource_retire(t, r->id);
      else
        keeper = t;
    }
  }
  if (keeper) {
    if (d->cfg.tenant)
      vgpu_tenant_resource_keep(d->cfg.tenant, r->id);
    vgpu_virgl_tracker_resource_gone(keeper, r->id, r->charge);
  } else if (d->cfg.tenant) {
    vgpu_tenant_resource_forget(d->cfg.tenant, r->id);
  }
  g_free(r->ents);
  g_free(r);
}

/* Charges and enters a resource; the error code to answer on failure. */
static uint32_t res_add(VgpuDevice *d, const char *cmd, Res *r) {
  if (res_get(d, r->id)) {
    bad(d, cmd, "resource id in use");
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  }
  if (g_hash_table_size(d->resources) >= MAX_RESOURCES) {
    bad(d, cmd, "too many resources");
    return VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
  }
  /* A quota refusal is logged once, by the tenant's policy. */
  if (d->cfg.tenant && !vgpu_tenant_resource_add(d->cfg.tenant, &r->desc, r->charge, cmd))
    return VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY;
  g_hash_table_insert(d->resources, GUINT_TO_POINTER(r->id), r);
  return 0;
}

/* ---- EDID -------------------------------------------------------------- */
/* A 128-byte EDID 1.3 base block whose preferred (first detailed) timing
 * is the configured mode with reduced blanking at 60 Hz. */
static void edid_build(uint32_t w, uint32_t h, uint8_t e[128]) {
  memset(e, 0, 128);
  static const uint8_t hdr[8] = {0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0};
  memcpy(e, hdr, 8);
  uint16_t mfg = ('V' - '@') << 10 | ('G' - '@') << 5 | ('P' - '@');
  e[8] = mfg >> 8, e[9] = mfg & 0xff;
  e[10] = 0x01, e[11] = 0x00; /* product code */
  e[16] = 1, e[17] = 2024 - 1990;
  e[18] = 1, e[19] = 3; /* EDID 1.3 */
  e[20] = 0x80;         /* digital input */
  w = MIN(MAX(w, 1u), 4095u), h = MIN(MAX(h, 1u), 4095u);
  e[21] = (uint8_t)MIN(w * 254u / 9600u, 255u); /* cm at 96 dpi */
  e[22] = (uint8_t)MIN(h * 254u / 9600u, 255u);
  e[23] = 120;  /* gamma 2.2 */
  e[24] = 0x0a; /* RGB colour; preferred timing is the first detailed one */
  static const uint8_t chroma[10] = {0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54};
  memcpy(e + 25, chroma, 10);
  for (int i = 38; i < 54; i++)
    e[i] = 0x01; /* no standard timings */
  /* Detailed timing: CVT reduced blanking figures. */
  uint32_t hfp = 48, hs = 32, hb = 160, vfp = 3, vs = 5, vb = MAX(h / 20u, 12u);
  uint64_t clock = (uint64_t)(w + hb) * (h + vb) * 60u / 10000u; /* 10 kHz units */
  clock = MIN(MAX(clock, 1u), 0xffffu);
  uint8_t *t = e + 54;
  t[0] = clock & 0xff, t[1] = clock >> 8;
  t[2] = w & 0xff, t[3] = hb & 0xff, t[4] = (uint8_t)((w >> 8) << 4 | (hb >> 8));
  t[5] = h & 0xff, t[6] = vb & 0xff, t[7] = (uint8_t)((h >> 8) << 4 | (vb >> 8));
  t[8] = hfp & 0xff, t[9] = hs & 0xff, t[10] = (uint8_t)((vfp & 0xf) << 4 | (vs & 0xf));
  t[11] = (uint8_t)((hfp >> 8) << 6 | (hs >> 8) << 4 | (vfp >> 4) << 2 | (vs >> 4));
  t[12] = e[21] * 10 & 0xff, t[13] = e[22] * 10 & 0xff;
  t[14] = (uint8_t)(((e[21] * 10) >> 8) << 4 | ((e[22] * 10) >> 8));
  t[17] = 0x1e; /* digital separate sync, +hsync -vsync */
  /* Monitor name. */
  uint8_t *n = e + 72;
  n[3] = 0xfc;
  memcpy(n + 5, "vgpu\n       ", 13);
  /* Two dummy descriptors. */
  e[90 + 3] = 0x10, e[108 + 3] = 0x10;
  uint8_t sum = 0;
  for (int i = 0; i < 127; i++)
    sum += e[i];
  e[127] = (uint8_t)(0x100 - sum);
}

/* ---- responses ----------------------------------------------------------- */
typedef struct {
  VgpuDevice *d;
  const VgpuCmd *c;
  uint8_t *resp;
  size_t cap;
} Ctx;

static size_t resp_nodata(Ctx *x, uint32_t type) {
  int n = vgpu_resp_hdr(&x->c->hdr, type, x->resp, x->cap);
  return n > 0 ? (size_t)n : 0;
}

static size_t fail(Ctx *x, uint32_t err, const char *why) {
  bad(x->d, x->c->info ? x->c->info->name : "request", why);
  return resp_nodata(x, err);
}

/* ---- 2D commands ------------------------------------------------------- */
static size_t do_create_2d(Ctx *x) {
  VgpuDevice *d = x->d;
  const __typeof__(x->c->u.create_2d) *a = &x->c->u.create_2d;
  uint64_t stride, bytes;
  if (a->width > VGPU_RESOURCE_MAX_DIM || a->height > VGPU_RESOURCE_MAX_DIM ||
      __builtin_mul_overflow((uint64_t)a->width, 4u, &stride) ||
      __builtin_mul_overflow(stride, (uint64_t)a->height, &bytes))
    return fail(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, "2D resource too large");
  if (res_get(d, a->resource_id))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "resource id in use");
  Res *r = g_new0(Res, 1);
  r->id = a->resource_id;
  r->desc = (VgpuResourceDesc){.handle = r->id,
                               .target = VGPU_TARGET_2D,
                               .format = a->format,
                               .width = a->width,
                               .height = a->height,
                               .depth = 1,
                               .array_size = 1};
  r->charge = bytes;
  uint32_t err = res_add(d, x->c->info->name, r);
  if (err) {
    g_free(r);
    return resp_nodata(x, err);
  }
  r->image = pixman_image_create_bits(pixman_format(a->format), (int)a->width, (int)a->height, NULL,
                                      (int)stride);
  if (!r->image) {
    g_hash_table_remove(d->resources, GUINT_TO_POINTER(r->id));
    res_free(d, r, false);
    return fail(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, "no host memory for the image");
  }
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static size_t do_unref(Ctx *x) {
  Res *r = res_get(x->d, x->c->u.resource.resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  g_hash_table_remove(x->d->resources, GUINT_TO_POINTER(r->id));
  res_free(x->d, r, true);
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static size_t do_attach_backing(Ctx *x) {
  VgpuDevice *d = x->d;
  const VgpuMemEntries *e = &x->c->u.attach_backing.entries;
  Res *r = res_get(d, x->c->u.attach_backing.resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  if (r->backing_len)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "resource already has backing");
  uint64_t total = 0;
  for (uint32_t i = 0; i < e->nr; i++) {
    uint64_t a;
    uint32_t l;
    vgpu_cmd_mem_entry(e, i, &a, &l);
    if (__builtin_add_overflow(total, (uint64_t)l, &total) || total > BACKING_MAX)
      return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "backing larger than 4 GiB");
  }
  if (total == 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "empty backing");
  Entry *ents = g_try_new(Entry, e->nr);
  if (!ents)
    return fail(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, "no host memory for backing entries");
  for (uint32_t i = 0; i < e->nr; i++)
    vgpu_cmd_mem_entry(e, i, &ents[i].addr, &ents[i].len);
  r->ents = ents;
  r->nents = e->nr;
  r->backing_len = total;
  int rc = r->is_3d ? backing_ready(d, r) : backing_map(d, r);
  if (rc < 0) {
    backing_drop(d, r);
    g_clear_pointer(&r->ents, g_free);
    r->nents = 0;
    r->backing_len = 0;
    return fail(x, rc == -ENOMEM ? VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY : VIRTIO_GPU_RESP_ERR_UNSPEC,
                rc == -EFAULT ? "backing outside guest memory" : "backing not accepted");
  }
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static size_t do_detach_backing(Ctx *x) {
  Res *r = res_get(x->d, x->c->u.resource.resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  if (!r->backing_len) /* as the reference back-end answers */
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "resource has no backing");
  backing_drop(x->d, r);
  g_clear_pointer(&r->ents, g_free);
  r->nents = 0;
  r->backing_len = 0;
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

/* Copies rectangle @rc of a 2D resource between its image and its backing
 * (rows @stride bytes apart from @offset).  0, or an error code with *why. */
static uint32_t transfer_2d(VgpuDevice *d, Res *r, const VgpuRect *rc, uint64_t offset,
                            uint64_t stride, bool to_host, const char **why) {
  if (!rect_inside(rc, r->desc.width, r->desc.height)) {
    *why = "transfer rectangle outside the resource";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (!r->backing_len) { /* as the reference back-end answers */
    *why = "resource has no backing";
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  }
  if (rc->w == 0 || rc->h == 0)
    return 0;
  uint64_t row = (uint64_t)rc->w * 4u, last, end;
  if (__builtin_mul_overflow(stride, (uint64_t)(rc->h - 1), &last) ||
      __builtin_add_overflow(last, offset, &end) || __builtin_add_overflow(end, row, &end) ||
      end > r->backing_len) {
    *why = "transfer reads outside the backing";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (backing_map(d, r) < 0) {
    *why = "backing outside guest memory";
    return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  uint8_t *img = (uint8_t *)pixman_image_get_data(r->image);
  size_t istride = (size_t)pixman_image_get_stride(r->image);
  IovCursor cur = {.iov = r->iov, .n = r->niov};
  for (uint32_t y = 0; y < rc->h; y++) {
    uint8_t *p = img + (size_t)(rc->y + y) * istride + (size_t)rc->x * 4u;
    if (!iov_copy(&cur, offset + stride * y, p, (size_t)row, !to_host)) {
      *why = "backing shorter than its entries";
      return VIRTIO_GPU_RESP_ERR_UNSPEC;
    }
  }
  return 0;
}

static size_t do_transfer_2d(Ctx *x) {
  const __typeof__(x->c->u.transfer_2d) *t = &x->c->u.transfer_2d;
  Res *r = res_get(x->d, t->resource_id);
  if (!r || r->is_3d)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown 2D resource");
  const char *why = NULL;
  uint32_t err = transfer_2d(x->d, r, &t->r, t->offset, (uint64_t)r->desc.width * 4u, true, &why);
  return err ? fail(x, err, why) : resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

/* Scanout @i shows resource @r: where its pixels are for rectangle @rr (in
 * the resource), reading a 3D resource back first.  NULL on failure. */
static const uint8_t *scanout_pixels(VgpuDevice *d, uint32_t i, Res *r, const VgpuRect *rr,
                                     uint32_t *stride) {
  Scanout *s = &d->scanouts[i];
  if (!r->is_3d) {
    *stride = (uint32_t)pixman_image_get_stride(r->image);
    return (const uint8_t *)pixman_image_get_data(r->image) + (size_t)rr->y * *stride +
           (size_t)rr->x * 4u;
  }
  *stride = s->r.w * 4u;
  uint8_t *dst = s->rb + (size_t)(rr->y - s->r.y) * *stride + (size_t)(rr->x - s->r.x) * 4u;
  VgpuBox box = {rr->x, rr->y, 0, rr->w, rr->h, 1};
  size_t len = (size_t)(rr->h - 1) * *stride + (size_t)rr->w * 4u;
  if (d->cfg.renderer->ops->read_back(d->cfg.renderer, r->id, &box, dst, len, *stride) < 0)
    return NULL;
  return dst;
}

/* Sends rectangle @fr (in the resource) of every scanout showing @r;
 * returns how many were sent (frames). */
static unsigned flush_scanouts(VgpuDevice *d, Res *r, const VgpuRect *fr) {
  unsigned frames = 0;
  for (uint32_t i = 0; i < d->cfg.num_scanouts; i++) {
    Scanout *s = &d->scanouts[i];
    if (s->res_id != r->id)
      continue;
    uint32_t x1 = MAX(fr->x, s->r.x), y1 = MAX(fr->y, s->r.y);
    uint32_t x2 = MIN(fr->x + fr->w, s->r.x + s->r.w), y2 = MIN(fr->y + fr->h, s->r.y + s->r.h);
    if (x1 >= x2 || y1 >= y2)
      continue;
    VgpuRect rr = {x1, y1, x2 - x1, y2 - y1};
    uint32_t stride;
    const uint8_t *px = scanout_pixels(d, i, r, &rr, &stride);
    if (!px) {
      vgpu_warn("%s: scanout %u: read-back of resource %u failed", d->name, i, r->id);
      continue;
    }
    VgpuRect sr = {x1 - s->r.x, y1 - s->r.y, rr.w, rr.h};
    if (d->cfg.display.update)
      d->cfg.display.update(d->cfg.display.user, i, &sr, px, stride, s->format);
    if (d->cfg.tenant)
      vgpu_tenant_count(d->cfg.tenant, VGPU_RES_FRAMES, 1);
    frames++;
  }
  return frames;
}

static size_t do_flush(Ctx *x) {
  const __typeof__(x->c->u.flush) *f = &x->c->u.flush;
  Res *r = res_get(x->d, f->resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  if (!rect_inside(&f->r, r->desc.width, r->desc.height))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "flush rectangle outside the resource");
  uint64_t t0 = vgpu_throttle_now_ns();
  unsigned frames = flush_scanouts(x->d, r, &f->r);
  if (frames && x->d->cfg.tenant) {
    /* The read-back waited for rendering (GPU time); the flush of a
     * scanout is the frame boundary the frame-rate cap paces.  A hang-up
     * during the wait is the front-end's to notice. */
    VgpuThrottle *th = vgpu_tenant_throttle(x->d->cfg.tenant);
    vgpu_throttle_charge(th, vgpu_throttle_now_ns() - t0);
    vgpu_throttle_frame(th);
  }
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static bool format_4byte(uint32_t f) {
  return pixman_format(f) != 0;
}

static size_t do_set_scanout(Ctx *x) {
  VgpuDevice *d = x->d;
  const __typeof__(x->c->u.set_scanout) *a = &x->c->u.set_scanout;
  uint32_t i = a->scanout_id;
  if (i >= d->cfg.num_scanouts)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID, "scanout id out of range");
  if (a->resource_id == 0) {
    scanout_disable(d, i, true);
    return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
  }
  Res *r = res_get(d, a->resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  if (!rect_inside(&a->r, r->desc.width, r->desc.height))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "scanout rectangle outside the resource");
  if (a->r.w == 0 || a->r.h == 0) { /* shows nothing: as good as disabled */
    scanout_disable(d, i, true);
    return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
  }
  if (r->is_3d && (!format_4byte(r->desc.format) || r->desc.target == VGPU_TARGET_BUFFER))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "resource format cannot be shown");
  uint8_t *rb = NULL;
  uint64_t rb_bytes = 0;
  if (r->is_3d) {
    rb_bytes = (uint64_t)a->r.w * a->r.h * 4u; /* both <= 16384 */
    Scanout *s = &d->scanouts[i];
    if (s->rb && s->rb_charge == rb_bytes) { /* same size: keep the buffer */
      rb = g_steal_pointer(&s->rb);
      s->rb_charge = 0;
    } else {
      if (d->cfg.tenant &&
          !vgpu_tenant_charge(d->cfg.tenant, VGPU_RES_VRAM, rb_bytes, "scanout read-back buffer"))
        return resp_nodata(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY); /* the tenant logged it */
      rb = g_try_malloc0(rb_bytes);
      if (!rb) {
        if (d->cfg.tenant)
          vgpu_tenant_uncharge(d->cfg.tenant, VGPU_RES_VRAM, rb_bytes);
        return fail(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, "no host memory for the scanout");
      }
    }
  }
  scanout_disable(d, i, false);
  Scanout *s = &d->scanouts[i];
  s->res_id = r->id;
  s->r = a->r;
  s->format = r->desc.format;
  s->rb = rb;
  s->rb_charge = rb_bytes;
  if (d->cfg.display.scanout)
    d->cfg.display.scanout(d->cfg.display.user, i, a->r.w, a->r.h);
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static size_t do_display_info(Ctx *x) {
  VgpuDevice *d = x->d;
  if (d->cfg.display.modes_wanted)
    d->cfg.display.modes_wanted(d->cfg.display.user, -1);
  int n = vgpu_resp_display_info(&x->c->hdr, d->modes, d->cfg.num_scanouts, x->resp, x->cap);
  return n > 0 ? (size_t)n : fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "response buffer too small");
}

static size_t do_edid(Ctx *x) {
  VgpuDevice *d = x->d;
  uint32_t i = x->c->u.edid.scanout; /* decoded: < num_scanouts */
  if (d->cfg.display.modes_wanted)
    d->cfg.display.modes_wanted(d->cfg.display.user, (int32_t)i);
  int n;
  if (d->edid_len[i]) {
    n = vgpu_resp_edid(&x->c->hdr, d->edid[i], d->edid_len[i], x->resp, x->cap);
  } else {
    /* A disabled head still describes a monitor: the configured mode. */
    const VgpuDisplayMode *m = &d->modes[i];
    uint8_t e[128];
    edid_build(m->enabled ? m->r.w : d->cfg.width, m->enabled ? m->r.h : d->cfg.height, e);
    n = vgpu_resp_edid(&x->c->hdr, e, sizeof(e), x->resp, x->cap);
  }
  return n > 0 ? (size_t)n : fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "response buffer too small");
}

int vgpu_device_set_modes(VgpuDevice *d, const VgpuDisplayMode *modes, uint32_t n) {
  if (n > d->cfg.num_scanouts || (n > 0 && !modes))
    return -EINVAL;
  for (uint32_t i = 0; i < n; i++) {
    const VgpuDisplayMode *m = &modes[i];
    if (m->enabled > 1)
      return -EINVAL;
    if (m->enabled && (m->r.w == 0 || m->r.h == 0 || m->r.w > VGPU_DEVICE_MODE_MAX ||
                       m->r.h > VGPU_DEVICE_MODE_MAX || m->r.x > VGPU_DEVICE_MODE_MAX ||
                       m->r.y > VGPU_DEVICE_MODE_MAX))
      return -EINVAL;
  }
  int changed = 0;
  for (uint32_t i = 0; i < n; i++) {
    /* A disabled head reports zeros, as virtio-gpu devices do. */
    VgpuDisplayMode m = modes[i].enabled ? modes[i] : (VgpuDisplayMode){0};
    if (memcmp(&m, &d->modes[i], sizeof(m)) != 0)
      changed = 1;
    d->modes[i] = m;
  }
  return changed;
}

int vgpu_device_set_edid(VgpuDevice *d, uint32_t id, const uint8_t *edid, size_t len) {
  if (id >= d->cfg.num_scanouts || len > VGPU_CMD_EDID_MAX || len % 128 != 0 || (len && !edid))
    return -EINVAL;
  int changed = len != d->edid_len[id] || (len && memcmp(d->edid[id], edid, len) != 0);
  if (len)
    memcpy(d->edid[id], edid, len);
  d->edid_len[id] = len;
  return changed;
}

/* ---- 3D commands ------------------------------------------------------- */
static uint32_t capset_id_at(const VgpuDevice *d, uint32_t index) {
  for (uint32_t id = 0; id < 32; id++)
    if ((d->cmd_cfg.capset_mask & (1u << id)) && index-- == 0)
      return id;
  return 0;
}

static size_t do_capset_info(Ctx *x) {
  VgpuRenderer *rd = x->d->cfg.renderer;
  uint32_t id = capset_id_at(x->d, x->c->u.capset_info.capset_index), ver = 0, size = 0;
  if (!id || rd->ops->get_capset(rd, id, &ver, &size) < 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "capset not offered");
  int n = vgpu_resp_capset_info(&x->c->hdr, id, ver, size, x->resp, x->cap);
  return n > 0 ? (size_t)n : fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "response buffer too small");
}

/* The response is sized from the renderer's capset alone: the guest's
 * version picks what to fill, never how much (a guest-sized write was
 * CVE-2021-3546), and the builder zeroes it first, so no byte the
 * renderer does not write leaves uninitialised (CVE-2021-3545). */
static size_t do_capset(Ctx *x) {
  VgpuRenderer *rd = x->d->cfg.renderer;
  uint32_t id = x->c->u.capset.capset_id, ver = 0, size = 0;
  if (rd->ops->get_capset(rd, id, &ver, &size) < 0 || size == 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "capset not offered");
  if (x->c->u.capset.capset_version > ver)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "capset version above the maximum");
  uint8_t *data = NULL;
  int n = vgpu_resp_capset(&x->c->hdr, size, x->resp, x->cap, &data);
  if (n <= 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "capset larger than a response");
  if (rd->ops->fill_capset(rd, id, x->c->u.capset.capset_version, data) < 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "renderer refused the capset");
  return (size_t)n;
}

/* ---- command streams: charged and bounded (core/virgl_stream.c) --------- */
static bool stream_reserve(void *user, VgpuResKind kind, uint64_t amount, const char *what) {
  VgpuDevice *d = user;
  return !d->cfg.tenant || vgpu_tenant_charge(d->cfg.tenant, kind, amount, what);
}

static void stream_release(void *user, VgpuResKind kind, uint64_t amount) {
  VgpuDevice *d = user;
  if (d->cfg.tenant)
    vgpu_tenant_uncharge(d->cfg.tenant, kind, amount);
}

/* Only 3D resources reach the renderer: a 2D one is never held by an
 * object. */
static bool stream_has_resource(void *user, uint32_t handle) {
  Res *r = res_get(user, handle);
  return r && r->is_3d;
}

/* A context's last object holding a resource the guest unreferenced went
 * away: another context whose objects still hold it takes its charge. */
static bool stream_hand_over(void *user, uint32_t handle, uint64_t vram) {
  VgpuDevice *d = user;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, d->contexts);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (vgpu_virgl_tracker_take_over(((Context *)v)->stream, handle, vram))
      return true;
  return false;
}

static VgpuVirglTracker *stream_tracker_new(VgpuDevice *d) {
  VgpuVirglCharger ch = {.reserve = stream_reserve,
                         .release = stream_release,
                         .has_resource = stream_has_resource,
                         .hand_over = stream_hand_over,
                         .user = d};
  return vgpu_virgl_tracker_new(d->cfg.max_stream_objects, &ch);
}

static bool ctx_known(VgpuDevice *d, uint32_t ctx) {
  return ctx && g_hash_table_contains(d->contexts, GUINT_TO_POINTER(ctx));
}

static size_t do_ctx_create(Ctx *x) {
  VgpuDevice *d = x->d;
  uint32_t ctx = x->c->hdr.ctx_id;
  if (ctx_known(d, ctx))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID, "context id in use");
  if (g_hash_table_size(d->contexts) >= MAX_CONTEXTS)
    return fail(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, "too many contexts");
  if (d->cfg.tenant && !vgpu_tenant_context_charge(d->cfg.tenant, "CTX_CREATE"))
    return resp_nodata(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY); /* the tenant logged it */
  VgpuRenderer *rd = d->cfg.renderer;
  if (rd->ops->context_create(rd, ctx, x->c->u.ctx_create.context_init,
                              x->c->u.ctx_create.debug_name) < 0) {
    if (d->cfg.tenant)
      vgpu_tenant_context_release(d->cfg.tenant);
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "renderer refused the context");
  }
  Context *c = g_new0(Context, 1);
  c->stream = stream_tracker_new(d);
  g_hash_table_insert(d->contexts, GUINT_TO_POINTER(ctx), c);
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

/* @ctx is already out of the table: its tracker's charges go (or are
 * handed over to the contexts left). */
static void ctx_destroy(VgpuDevice *d, uint32_t ctx, Context *c) {
  d->cfg.renderer->ops->context_destroy(d->cfg.renderer, ctx);
  vgpu_virgl_tracker_free(c->stream);
  g_free(c);
  if (d->cfg.tenant)
    vgpu_tenant_context_release(d->cfg.tenant);
}

static size_t do_ctx_destroy(Ctx *x) {
  uint32_t ctx = x->c->hdr.ctx_id;
  if (!ctx_known(x->d, ctx))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID, "unknown context");
  Context *c = g_hash_table_lookup(x->d->contexts, GUINT_TO_POINTER(ctx));
  g_hash_table_remove(x->d->contexts, GUINT_TO_POINTER(ctx));
  ctx_destroy(x->d, ctx, c);
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

/* 2D resources stay in the device: attaching one to a context (the guest
 * kernel attaches every buffer a 3D client opens) succeeds and does
 * nothing. */
static size_t do_ctx_attach(Ctx *x, bool attach) {
  VgpuDevice *d = x->d;
  uint32_t ctx = x->c->hdr.ctx_id;
  if (!ctx_known(d, ctx))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID, "unknown context");
  Res *r = res_get(d, x->c->u.resource.resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  if (r->is_3d) {
    VgpuRenderer *rd = d->cfg.renderer;
    if (!attach)
      rd->ops->ctx_detach_resource(rd, ctx, r->id);
    else if (rd->ops->ctx_attach_resource(rd, ctx, r->id) < 0)
      return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "renderer refused the attachment");
  }
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static size_t do_create_3d(Ctx *x) {
  VgpuDevice *d = x->d;
  const __typeof__(x->c->u.create_3d) *a = &x->c->u.create_3d;
  VgpuResourceDesc desc = {.handle = a->resource_id,
                           .target = a->target,
                           .format = a->format,
                           .bind = a->bind,
                           .width = a->width,
                           .height = a->height,
                           .depth = a->depth,
                           .array_size = a->array_size,
                           .last_level = a->last_level,
                           .nr_samples = a->nr_samples,
                           .flags = a->flags};
  uint64_t bytes = 0;
  const char *why = NULL;
  if (vgpu_resource_size(&desc, &bytes, &why) < 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, why ? why : "invalid 3D resource");
  if (res_get(d, desc.handle))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "resource id in use");
  Res *r = g_new0(Res, 1);
  r->id = desc.handle;
  r->is_3d = true;
  r->desc = desc;
  r->charge = bytes;
  uint32_t err = res_add(d, x->c->info->name, r);
  if (err) {
    g_free(r);
    return resp_nodata(x, err);
  }
  VgpuRenderer *rd = d->cfg.renderer;
  if (rd->ops->resource_create(rd, &desc, NULL, 0) < 0) {
    g_hash_table_remove(d->resources, GUINT_TO_POINTER(r->id));
    if (d->cfg.tenant)
      vgpu_tenant_resource_forget(d->cfg.tenant, r->id);
    g_free(r);
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "renderer refused the resource");
  }
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

/* Bytes a 3D transfer touches in the backing, from @offset: rows of the
 * box's blocks @stride apart, layers @layer_stride apart (0: packed). */
static bool transfer_3d_span(const VgpuResourceDesc *desc, const VgpuBox *b, uint64_t offset,
                             uint64_t stride, uint64_t layer_stride, uint64_t *end) {
  VgpuFormatInfo fi;
  if (desc->target == VGPU_TARGET_BUFFER)
    fi = (VgpuFormatInfo){1, 1, 1};
  else if (!vgpu_format_info(desc->format, &fi) || !fi.block_w || !fi.block_h)
    return false;
  uint64_t row = ((uint64_t)b->w + fi.block_w - 1) / fi.block_w * fi.block_bytes;
  uint64_t rows = ((uint64_t)b->h + fi.block_h - 1) / fi.block_h, layers = b->d;
  if (desc->target == VGPU_TARGET_BUFFER || desc->target == VGPU_TARGET_1D)
    rows = 1;
  if (row == 0 || rows == 0 || layers == 0) {
    *end = offset;
    return true;
  }
  if (stride == 0)
    stride = row;
  if (layer_stride == 0 && __builtin_mul_overflow(stride, rows, &layer_stride))
    return false;
  uint64_t a, bb, s;
  return !__builtin_mul_overflow(layer_stride, layers - 1, &a) &&
         !__builtin_mul_overflow(stride, rows - 1, &bb) && !__builtin_add_overflow(a, bb, &s) &&
         !__builtin_add_overflow(s, row, &s) && !__builtin_add_overflow(s, offset, end);
}

static size_t do_transfer_3d(Ctx *x, bool to_host) {
  VgpuDevice *d = x->d;
  const __typeof__(x->c->u.transfer_3d) *t = &x->c->u.transfer_3d;
  Res *r = res_get(d, t->resource_id);
  if (!r)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "unknown resource");
  if (!r->is_3d) { /* a 2D resource: one level, one layer */
    if (t->level != 0 || t->box.z != 0 || t->box.d > 1)
      return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "box outside the 2D resource");
    VgpuRect rc = {t->box.x, t->box.y, t->box.w, t->box.h};
    const char *why = NULL;
    uint64_t stride = t->stride ? t->stride : (uint64_t)r->desc.width * 4u;
    uint32_t err = transfer_2d(d, r, &rc, t->offset, stride, to_host, &why);
    return err ? fail(x, err, why) : resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
  }
  const char *why = NULL;
  VgpuResourceBox rb = {t->box.x, t->box.y, t->box.z, t->box.w, t->box.h, t->box.d};
  if (vgpu_resource_check_box(&r->desc, t->level, &rb, &why) < 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, why ? why : "box outside the resource");
  if (!r->backing_len)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "resource has no backing");
  uint64_t end;
  if (!transfer_3d_span(&r->desc, &t->box, t->offset, t->stride, t->layer_stride, &end) ||
      end > r->backing_len)
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, "transfer outside the backing");
  if (backing_ready(d, r) < 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "backing outside guest memory");
  VgpuRenderer *rd = d->cfg.renderer;
  uint32_t ctx = ctx_known(d, x->c->hdr.ctx_id) ? x->c->hdr.ctx_id : 0;
  if (rd->ops->transfer(rd, ctx, r->id, to_host ? VGPU_TRANSFER_TO_HOST : VGPU_TRANSFER_FROM_HOST,
                        t->level, t->stride, t->layer_stride, &t->box, t->offset, NULL, 0) < 0)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "renderer refused the transfer");
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

static size_t do_submit(Ctx *x) {
  VgpuDevice *d = x->d;
  uint32_t ctx = x->c->hdr.ctx_id;
  if (!ctx_known(d, ctx))
    return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID, "unknown context");
  if (x->c->u.submit_3d.size == 0)
    return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
  /* Over its GPU share, the submission waits (a hang-up meanwhile is the
   * front-end's to notice: the stream still runs, in order). */
  VgpuThrottle *th = d->cfg.tenant ? vgpu_tenant_throttle(d->cfg.tenant) : NULL;
  vgpu_throttle_submit(th);
  /* The books first: what the stream makes is charged and bounded like a
   * vtest tenant's.  A refusal answers this request with an error and the
   * device goes on; the commands before the refused one were taken into
   * the books, and run (as the renderer itself runs a stream up to a bad
   * command), so the renderer holds exactly what is charged. */
  Context *c = g_hash_table_lookup(d->contexts, GUINT_TO_POINTER(ctx));
  if (c->in_error)
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC,
                "the renderer refused an earlier stream of this context");
  size_t ndw = x->c->u.submit_3d.size / 4u, applied = 0;
  g_autofree uint32_t *copy = NULL; /* the tracker reads whole dwords */
  const uint32_t *dw = (const uint32_t *)(const void *)x->c->u.submit_3d.data;
  if ((uintptr_t)dw % _Alignof(uint32_t))
    dw = copy = g_memdup2(x->c->u.submit_3d.data, ndw * 4u);
  g_autofree char *why = NULL;
  VgpuVirglResult res = vgpu_virgl_tracker_submit_part(c->stream, dw, ndw, &applied, &why);
  backing_refresh_all(d);
  VgpuRenderer *rd = d->cfg.renderer;
  if (res != VGPU_VIRGL_OK) {
    if (applied && rd->ops->submit(rd, ctx, dw, (uint32_t)applied) < 0) {
      c->in_error = true;
      vgpu_warn("%s: the renderer refused the commands before a refused one", d->name);
    }
    switch (res) {
    case VGPU_VIRGL_MALFORMED:
      return fail(x, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, why);
    case VGPU_VIRGL_BOUND:
      return fail(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY, why);
    default: /* the tenant logged the refusal */
      return resp_nodata(x, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
    }
  }
  uint64_t t0 = vgpu_throttle_now_ns();
  int sr = rd->ops->submit(rd, ctx, dw, (uint32_t)ndw);
  vgpu_throttle_charge(th, vgpu_throttle_now_ns() - t0);
  if (sr < 0) {
    /* The books took the whole stream, the renderer ran it up to the
     * command it refused; from here on it refuses the context's streams,
     * and so does the device, so the books change no more. */
    c->in_error = true;
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "renderer refused the command stream");
  }
  return resp_nodata(x, VIRTIO_GPU_RESP_OK_NODATA);
}

/* ---- cursor ------------------------------------------------------------ */
static void do_cursor(VgpuDevice *d, const VgpuCmd *c) {
  const __typeof__(c->u.cursor) *a = &c->u.cursor;
  const VgpuDisplayOps *o = &d->cfg.display;
  if (a->scanout_id >= d->cfg.num_scanouts) {
    bad(d, c->info->name, "scanout id out of range");
    return;
  }
  if (c->hdr.type == VIRTIO_GPU_CMD_MOVE_CURSOR) {
    if (o->cursor_move)
      o->cursor_move(o->user, a->scanout_id, a->x, a->y);
    return;
  }
  if (a->resource_id == 0) {
    if (o->cursor_update)
      o->cursor_update(o->user, a->scanout_id, a->x, a->y, a->hot_x, a->hot_y, NULL);
    return;
  }
  Res *r = res_get(d, a->resource_id);
  if (!r || r->desc.width != CURSOR_SIZE || r->desc.height != CURSOR_SIZE ||
      (r->is_3d && !format_4byte(r->desc.format))) {
    bad(d, c->info->name, "cursor resource unknown or not 64x64");
    return;
  }
  if (a->hot_x >= CURSOR_SIZE || a->hot_y >= CURSOR_SIZE) {
    bad(d, c->info->name, "cursor hot spot outside the image");
    return;
  }
  uint32_t buf[CURSOR_SIZE * CURSOR_SIZE];
  const uint32_t *px;
  if (r->is_3d) {
    VgpuBox box = {0, 0, 0, CURSOR_SIZE, CURSOR_SIZE, 1};
    if (d->cfg.renderer->ops->read_back(d->cfg.renderer, r->id, &box, buf, sizeof(buf),
                                        CURSOR_SIZE * 4u) < 0) {
      bad(d, c->info->name, "cursor read-back failed");
      return;
    }
    px = buf;
  } else {
    px = pixman_image_get_data(r->image); /* 64 x 4 bytes a row, no padding */
  }
  if (o->cursor_update)
    o->cursor_update(o->user, a->scanout_id, a->x, a->y, a->hot_x, a->hot_y, px);
}

/* ---- fences ------------------------------------------------------------ */
static void complete(VgpuDevice *d, Pending *p) {
  if (d->cfg.display.complete)
    d->cfg.display.complete(d->cfg.display.user, p->cookie, p->resp, p->len);
  g_free(p);
}

/* Defers the response in @resp behind a new fence; false if it cannot. */
static bool defer(VgpuDevice *d, const VgpuCmd *c, const uint8_t *resp, size_t len,
                  uint64_t cookie) {
  if (g_queue_get_length(&d->pending) >= MAX_PENDING)
    return false;
  VgpuRenderer *rd = d->cfg.renderer;
  uint64_t id = d->next_fence;
  bool ctxf = (c->hdr.flags & VIRTIO_GPU_FLAG_INFO_RING_IDX) && rd->ops->context_create_fence &&
              ctx_known(d, c->hdr.ctx_id);
  int rc = ctxf ? rd->ops->context_create_fence(rd, c->hdr.ctx_id, c->hdr.ring_idx, id)
                : rd->ops->create_fence(rd, id);
  if (rc < 0)
    return false;
  d->next_fence++;
  Pending *p = g_malloc(sizeof(*p) + len);
  *p = (Pending){.fence = id,
                 .cookie = cookie,
                 .ctx_fence = ctxf,
                 .ctx_id = c->hdr.ctx_id,
                 .ring_idx = c->hdr.ring_idx,
                 .len = len};
  memcpy(p->resp, resp, len);
  g_queue_push_tail(&d->pending, p);
  return true;
}

void vgpu_device_fence_retired(VgpuDevice *d, uint64_t fence) {
  for (GList *l = d->pending.head; l;) {
    GList *next = l->next;
    Pending *p = l->data;
    if (!p->ctx_fence && p->fence <= fence) {
      g_queue_delete_link(&d->pending, l);
      complete(d, p);
    }
    l = next;
  }
}

void vgpu_device_ctx_fence_retired(VgpuDevice *d, uint32_t ctx_id, uint32_t ring_idx,
                                   uint64_t fence) {
  for (GList *l = d->pending.head; l;) {
    GList *next = l->next;
    Pending *p = l->data;
    if (p->ctx_fence && p->ctx_id == ctx_id && p->ring_idx == ring_idx && p->fence <= fence) {
      g_queue_delete_link(&d->pending, l);
      complete(d, p);
    }
    l = next;
  }
}

/* ---- the entry points -------------------------------------------------- */
uint32_t vgpu_device_capset_mask(VgpuRenderer *r) {
  uint32_t mask = 0;
  for (uint32_t id = 1; r && id <= 2; id++) {
    uint32_t ver = 0, size = 0;
    if (r->ops->get_capset(r, id, &ver, &size) == 0 && size > 0 &&
        size <= VGPU_DEVICE_RESP_MAX - VGPU_CMD_HDR_SIZE)
      mask |= 1u << id;
  }
  return mask;
}

static bool features_ok(const VgpuDevice *d, uint32_t features) {
  return !(features & VGPU_CMD_F_VIRGL) || d->cfg.renderer;
}

static void features_apply(VgpuDevice *d, uint32_t features) {
  d->cfg.features = features;
  /* Blob resources and UUIDs are not implemented: never decoded. */
  d->cmd_cfg.features = features & (VGPU_CMD_F_VIRGL | VGPU_CMD_F_EDID | VGPU_CMD_F_CONTEXT_INIT);
  d->cmd_cfg.capset_mask =
      features & VGPU_CMD_F_VIRGL ? vgpu_device_capset_mask(d->cfg.renderer) : 0;
}

VgpuDevice *vgpu_device_new(const VgpuDeviceConfig *cfg) {
  if (!cfg || cfg->num_scanouts < 1 || cfg->num_scanouts > VGPU_CMD_MAX_SCANOUTS)
    return NULL;
  VgpuDevice *d = g_new0(VgpuDevice, 1);
  d->cfg = *cfg;
  if (!features_ok(d, cfg->features)) {
    g_free(d);
    return NULL;
  }
  d->name = g_strdup(cfg->log_name ? cfg->log_name : "virtio-gpu");
  d->cfg.log_name = d->name;
  features_apply(d, cfg->features);
  d->cmd_cfg.num_scanouts = cfg->num_scanouts;
  d->cmd_cfg.submit_max = cfg->submit_max;
  uint32_t w = MIN(MAX(cfg->width, 1u), VGPU_DEVICE_MODE_MAX);
  uint32_t h = MIN(MAX(cfg->height, 1u), VGPU_DEVICE_MODE_MAX);
  for (uint32_t i = 0; i < cfg->num_scanouts; i++)
    d->modes[i] = (VgpuDisplayMode){.r = {0, 0, w, h}, .enabled = 1};
  d->resources = g_hash_table_new(g_direct_hash, g_direct_equal);
  d->contexts = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_queue_init(&d->pending);
  d->next_fence = 1;
  return d;
}

int vgpu_device_set_features(VgpuDevice *d, uint32_t features) {
  if (!features_ok(d, features))
    return -EINVAL;
  features_apply(d, features);
  return 0;
}

static void drop_all(VgpuDevice *d, bool tell) {
  while (!g_queue_is_empty(&d->pending))
    g_free(g_queue_pop_head(&d->pending));
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, d->contexts);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    g_hash_table_iter_remove(&it);
    ctx_destroy(d, GPOINTER_TO_UINT(k), v);
  }
  g_hash_table_iter_init(&it, d->resources);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    g_hash_table_iter_remove(&it);
    res_free(d, v, tell);
  }
  for (uint32_t i = 0; i < VGPU_CMD_MAX_SCANOUTS; i++)
    scanout_disable(d, i, tell);
  d->mem_stale = false;
}

void vgpu_device_free(VgpuDevice *d) {
  if (!d)
    return;
  drop_all(d, false);
  g_hash_table_unref(d->resources);
  g_hash_table_unref(d->contexts);
  g_free(d->name);
  g_free(d);
}

void vgpu_device_reset(VgpuDevice *d) {
  drop_all(d, true); /* fence ids keep rising: the renderer needs them to */
}

void vgpu_device_mem_changed(VgpuDevice *d) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, d->resources);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Res *r = v;
    if (r->iov || r->renderer_backed) {
      backing_drop(d, r);
      if (r->is_3d)
        d->mem_stale = true;
    }
  }
}

int vgpu_device_refresh(VgpuDevice *d, uint32_t id) {
  if (id >= d->cfg.num_scanouts || !d->scanouts[id].res_id)
    return -ENOENT;
  Scanout *s = &d->scanouts[id];
  Res *r = res_get(d, s->res_id);
  if (!r)
    return -ENOENT;
  if (d->cfg.display.scanout)
    d->cfg.display.scanout(d->cfg.display.user, id, s->r.w, s->r.h);
  uint32_t stride;
  const uint8_t *px = scanout_pixels(d, id, r, &s->r, &stride);
  if (!px)
    return -EIO;
  VgpuRect sr = {0, 0, s->r.w, s->r.h};
  if (d->cfg.display.update)
    d->cfg.display.update(d->cfg.display.user, id, &sr, px, stride, s->format);
  return 0;
}

static size_t dispatch(Ctx *x) {
  switch (x->c->hdr.type) {
  case VIRTIO_GPU_CMD_GET_DISPLAY_INFO:
    return do_display_info(x);
  case VIRTIO_GPU_CMD_RESOURCE_CREATE_2D:
    return do_create_2d(x);
  case VIRTIO_GPU_CMD_RESOURCE_UNREF:
    return do_unref(x);
  case VIRTIO_GPU_CMD_SET_SCANOUT:
    return do_set_scanout(x);
  case VIRTIO_GPU_CMD_RESOURCE_FLUSH:
    return do_flush(x);
  case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D:
    return do_transfer_2d(x);
  case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING:
    return do_attach_backing(x);
  case VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING:
    return do_detach_backing(x);
  case VIRTIO_GPU_CMD_GET_CAPSET_INFO:
    return do_capset_info(x);
  case VIRTIO_GPU_CMD_GET_CAPSET:
    return do_capset(x);
  case VIRTIO_GPU_CMD_GET_EDID:
    return do_edid(x);
  case VIRTIO_GPU_CMD_CTX_CREATE:
    return do_ctx_create(x);
  case VIRTIO_GPU_CMD_CTX_DESTROY:
    return do_ctx_destroy(x);
  case VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE:
    return do_ctx_attach(x, true);
  case VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE:
    return do_ctx_attach(x, false);
  case VIRTIO_GPU_CMD_RESOURCE_CREATE_3D:
    return do_create_3d(x);
  case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D:
    return do_transfer_3d(x, true);
  case VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D:
    return do_transfer_3d(x, false);
  case VIRTIO_GPU_CMD_SUBMIT_3D:
    return do_submit(x);
  default: /* decoded but not implemented (the features are never offered) */
    return fail(x, VIRTIO_GPU_RESP_ERR_UNSPEC, "command not supported");
  }
}

size_t vgpu_device_handle(VgpuDevice *d, VgpuQueue q, const uint8_t *req, size_t len, uint8_t *resp,
                          size_t cap, uint64_t cookie) {
  VgpuCmd c;
  Ctx x = {.d = d, .c = &c, .resp = resp, .cap = cap};
  if (d->cfg.tenant) {
    vgpu_tenant_count(d->cfg.tenant, VGPU_RES_COMMANDS, 1);
    vgpu_tenant_count(d->cfg.tenant, VGPU_RES_BYTES_IN, len);
  }
  int rc = vgpu_cmd_decode(&d->cmd_cfg, q, req, len, &c);
  if (q == VGPU_QUEUE_CURSOR) {
    if (rc < 0)
      bad(d, c.info ? c.info->name : "cursor request", c.why);
    else
      do_cursor(d, &c);
    return 0;
  }
  size_t n;
  if (rc < 0) {
    bad(d, c.info ? c.info->name : "request", c.why);
    n = resp_nodata(&x, c.err);
  } else {
    n = dispatch(&x);
  }
  if (n == 0 || !(c.hdr.flags & VIRTIO_GPU_FLAG_FENCE) || !(d->cmd_cfg.features & VGPU_CMD_F_VIRGL))
    return n;
  if (defer(d, &c, resp, n, cookie))
    return VGPU_DEVICE_DEFERRED;
  bad(d, c.info ? c.info->name : "request", "fence not created");
  return resp_nodata(&x, VIRTIO_GPU_RESP_ERR_UNSPEC);
}
