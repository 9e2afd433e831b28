/* The virtio-gpu device model against fake guest memory (a buffer whose
 * guest addresses start at GPA_BASE, split into host pieces at every
 * 64 KiB so backing spans several iovecs), a recording display and the
 * null renderer: a full 2D sequence whose flushed pixels are the guest's,
 * every validation a hostile guest can hit, the quota refusal the guest
 * survives, fences, and named regression tests for the CVE-2021-3544,
 * -3545 and -3546 classes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/ledger.h"
#include "core/tenant.h"
#include "render/renderer.h"
#include "virtio_gpu/vgpu_device.h"

#define GPA_BASE 0x100000u
#define MEM_SIZE (8u << 20)
#define PIECE 65536u
#define MODE_W 320u
#define MODE_H 200u

typedef struct {
  uint8_t *mem; /* guest memory */
  VgpuDevice *dev;
  VgpuRenderer *r;
  VgpuLedger *ledger;
  VgpuTenant *tenant;
  int refusals;
  /* recorded display */
  uint32_t sc_w[VGPU_CMD_MAX_SCANOUTS], sc_h[VGPU_CMD_MAX_SCANOUTS];
  int scanout_calls;
  uint8_t fb[2][MODE_W * MODE_H * 4]; /* what each screen shows */
  int updates;
  VgpuRect last_update;
  uint32_t last_format;
  int cursor_updates, cursor_moves;
  bool cursor_hidden;
  uint32_t cursor_px[64 * 64];
  uint32_t cursor_x, cursor_y;
  int completions;
  int wanted_calls;
  int32_t wanted_last;
  VgpuDisplayMode wanted_apply; /* applied to head 0 by modes_wanted when enabled */
  uint64_t cookies[64];
  uint8_t completed[64][512];
  /* request and response */
  uint8_t req[1u << 20];
  size_t n;
  uint8_t resp[VGPU_DEVICE_RESP_MAX + 64];
  size_t rlen;
} Fix;

static Fix *F;

/* Bound on stream objects for the next fixture (0: the default). */
static uint32_t fix_max_stream_objects;

/* The renderer's submissions, counted under the null renderer. */
static VgpuRendererOps counting_ops;
static int (*real_submit)(VgpuRenderer *r, uint32_t ctx, const void *cmds, uint32_t ndw);
static int submits;
static uint32_t last_submit_ndw;
#define RENDERER_REFUSES 0x00000063u /* a command the renderer refuses here */
static int counting_submit(VgpuRenderer *r, uint32_t ctx, const void *cmds, uint32_t ndw) {
  submits++;
  last_submit_ndw = ndw;
  uint32_t dw0;
  memcpy(&dw0, cmds, sizeof(dw0));
  if (dw0 == RENDERER_REFUSES)
    return -EINVAL;
  return real_submit(r, ctx, cmds, ndw);
}

/* ---- fakes ------------------------------------------------------------- */
static int to_iov(void *user, uint64_t gpa, uint64_t len, struct iovec *iov, unsigned max,
                  unsigned *n) {
  Fix *f = user;
  if (gpa < GPA_BASE || gpa - GPA_BASE > MEM_SIZE || len > MEM_SIZE - (gpa - GPA_BASE))
    return -EFAULT;
  uint64_t off = gpa - GPA_BASE;
  while (len) {
    uint64_t chunk = MIN(len, PIECE - off % PIECE);
    if (*n >= max)
      return -E2BIG;
    iov[*n].iov_base = f->mem + off;
    iov[*n].iov_len = chunk;
    (*n)++;
    off += chunk, len -= chunk;
  }
  return 0;
}

static void d_scanout(void *user, uint32_t id, uint32_t w, uint32_t h) {
  Fix *f = user;
  assert_true(id < 2);
  f->sc_w[id] = w, f->sc_h[id] = h;
  f->scanout_calls++;
}

static void d_update(void *user, uint32_t id, const VgpuRect *r, const void *pixels,
                     uint32_t stride, uint32_t format) {
  Fix *f = user;
  assert_true(id < 2);
  assert_true(r->x + r->w <= f->sc_w[id] && r->y + r->h <= f->sc_h[id]);
  assert_true(r->x + r->w <= MODE_W && r->y + r->h <= MODE_H);
  for (uint32_t y = 0; y < r->h; y++)
    memcpy(f->fb[id] + ((size_t)(r->y + y) * MODE_W + r->x) * 4,
           (const uint8_t *)pixels + (size_t)y * stride, (size_t)r->w * 4);
  f->updates++;
  f->last_update = *r;
  f->last_format = format;
}

static void d_cursor_update(void *user, uint32_t scanout, uint32_t x, uint32_t y, uint32_t hx,
                            uint32_t hy, const uint32_t *pixels) {
  Fix *f = user;
  f->cursor_updates++;
  f->cursor_hidden = pixels == NULL;
  f->cursor_x = x, f->cursor_y = y;
  if (pixels)
    memcpy(f->cursor_px, pixels, sizeof(f->cursor_px));
}

static void d_cursor_move(void *user, uint32_t scanout, uint32_t x, uint32_t y) {
  Fix *f = user;
  f->cursor_moves++;
  f->cursor_x = x, f->cursor_y = y;
}

static void d_complete(void *user, uint64_t cookie, const void *resp, size_t len) {
  Fix *f = user;
  assert_true(len <= sizeof(f->completed[0]));
  f->cookies[f->completions % 64] = cookie;
  memcpy(f->completed[f->completions % 64], resp, len);
  f->completions++;
}

/* The adapter's hook: records the call and hands in a mode the way the
 * vhost-user front-end does with what QEMU answered. */
static void d_modes_wanted(void *user, int32_t scanout) {
  Fix *f = user;
  f->wanted_calls++;
  f->wanted_last = scanout;
  if (f->wanted_apply.enabled)
    assert_true(vgpu_device_set_modes(f->dev, &f->wanted_apply, 1) >= 0);
}

static void on_fence(void *user, uint64_t fence) {
  vgpu_device_fence_retired(((Fix *)user)->dev, fence);
}

static void on_ctx_fence(void *user, uint32_t ctx, uint32_t ring, uint64_t fence) {
  vgpu_device_ctx_fence_retired(((Fix *)user)->dev, ctx, ring, fence);
}

static void on_refused(void *user, VgpuResKind kind, const char *reason) {
  ((Fix *)user)->refusals++;
}

/* A device with @features; a renderer when VIRGL is among them; a tenant
 * on a standalone ledger with @vram bytes (0: unlimited). */
static Fix *fix_new_limits(uint32_t features, uint64_t vram, uint64_t objects, uint64_t contexts) {
  Fix *f = g_new0(Fix, 1);
  F = f;
  f->mem = g_malloc0(MEM_SIZE);
  uint64_t limits[VGPU_RES_N_QUOTA] = {
      [VGPU_RES_VRAM] = vram, [VGPU_RES_OBJECTS] = objects, [VGPU_RES_CONTEXTS] = contexts};
  f->ledger = vgpu_ledger_new_standalone(limits);
  VgpuTenantPolicy p = {.refused = on_refused, .user = f};
  f->tenant = vgpu_tenant_new(f->ledger, 0, &p);
  if (features & VGPU_CMD_F_VIRGL) {
    f->r = vgpu_renderer_null_new(on_fence, f);
    f->r->ctx_fence_cb = on_ctx_fence;
    counting_ops = *f->r->ops;
    real_submit = counting_ops.submit;
    counting_ops.submit = counting_submit;
    f->r->ops = &counting_ops;
    submits = 0;
  }
  VgpuDeviceConfig cfg = {.num_scanouts = 2,
                          .width = MODE_W,
                          .height = MODE_H,
                          .features = features,
                          .submit_max = 4096,
                          .max_stream_objects = fix_max_stream_objects,
                          .renderer = f->r,
                          .tenant = f->tenant,
                          .mem = {.to_iov = to_iov, .user = f},
                          .display = {.scanout = d_scanout,
                                      .update = d_update,
                                      .cursor_update = d_cursor_update,
                                      .cursor_move = d_cursor_move,
                                      .complete = d_complete,
                                      .modes_wanted = d_modes_wanted,
                                      .user = f},
                          .log_name = "test-vm"};
  f->dev = vgpu_device_new(&cfg);
  assert_non_null(f->dev);
  return f;
}

static Fix *fix_new(uint32_t features, uint64_t vram) {
  return fix_new_limits(features, vram, 0, 0);
}

static uint64_t used(Fix *f, VgpuResKind k) {
  return vgpu_ledger_used(f->ledger, k);
}

/* Frees the device and checks the books are back to zero. */
static void fix_free(Fix *f) {
  vgpu_device_free(f->dev);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 0);
  assert_int_equal(vgpu_tenant_resource_count(f->tenant), 0);
  vgpu_tenant_free(f->tenant);
  vgpu_ledger_free(f->ledger);
  vgpu_renderer_free(f->r);
  g_free(f->mem);
  g_free(f);
}

/* ---- request building -------------------------------------------------- */
static void p32(size_t off, uint32_t v) {
  for (int i = 0; i < 4; i++)
    F->req[off + i] = (uint8_t)(v >> (8 * i));
}

static void p64(size_t off, uint64_t v) {
  p32(off, (uint32_t)v);
  p32(off + 4, (uint32_t)(v >> 32));
}

static uint32_t r32(const uint8_t *p, size_t off) {
  return (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
         (uint32_t)p[off + 3] << 24;
}

static uint64_t r64(const uint8_t *p, size_t off) {
  return r32(p, off) | (uint64_t)r32(p, off + 4) << 32;
}

static void start(uint32_t type, size_t size) {
  memset(F->req, 0, 4096);
  p32(0, type);
  F->n = size;
}

static void rect(size_t off, uint32_t x, uint32_t y, uint32_t w, uint32_t h) {
  p32(off, x), p32(off + 4, y), p32(off + 8, w), p32(off + 12, h);
}

/* Sends the request on the control queue; returns the response type (0
 * when deferred). */
static uint32_t send_cookie(uint64_t cookie) {
  memset(F->resp, 0xaa, sizeof(F->resp));
  F->rlen = vgpu_device_handle(F->dev, VGPU_QUEUE_CONTROL, F->req, F->n, F->resp,
                               VGPU_DEVICE_RESP_MAX, cookie);
  if (F->rlen == VGPU_DEVICE_DEFERRED)
    return 0;
  assert_true(F->rlen >= 24 && F->rlen <= VGPU_DEVICE_RESP_MAX);
  assert_int_equal(F->resp[F->rlen], 0xaa); /* nothing written past it */
  return r32(F->resp, 0);
}

static uint32_t send(void) {
  return send_cookie(0);
}

static void send_cursor(void) {
  size_t n =
      vgpu_device_handle(F->dev, VGPU_QUEUE_CURSOR, F->req, F->n, F->resp, VGPU_DEVICE_RESP_MAX, 0);
  assert_int_equal(n, 0);
}

static uint32_t create_2d(uint32_t id, uint32_t format, uint32_t w, uint32_t h) {
  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, 40);
  p32(24, id), p32(28, format), p32(32, w), p32(36, h);
  return send();
}

/* Backing of @n entries, @len bytes each, @gap bytes apart, from @gpa. */
static uint32_t attach(uint32_t id, uint64_t gpa, uint32_t n, uint32_t len, uint32_t gap) {
  start(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, 32 + 16 * (size_t)n);
  p32(24, id), p32(28, n);
  for (uint32_t i = 0; i < n; i++) {
    p64(32 + 16 * (size_t)i, gpa + (uint64_t)i * (len + gap));
    p32(32 + 16 * (size_t)i + 8, len);
  }
  return send();
}

static uint32_t transfer_2d(uint32_t id, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                            uint64_t offset) {
  start(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, 56);
  rect(24, x, y, w, h);
  p64(40, offset), p32(48, id);
  return send();
}

static uint32_t set_scanout(uint32_t sc, uint32_t id, uint32_t x, uint32_t y, uint32_t w,
                            uint32_t h) {
  start(VIRTIO_GPU_CMD_SET_SCANOUT, 48);
  rect(24, x, y, w, h);
  p32(40, sc), p32(44, id);
  return send();
}

static uint32_t flush(uint32_t id, uint32_t x, uint32_t y, uint32_t w, uint32_t h) {
  start(VIRTIO_GPU_CMD_RESOURCE_FLUSH, 48);
  rect(24, x, y, w, h);
  p32(40, id);
  return send();
}

static uint32_t simple(uint32_t type, uint32_t id) {
  start(type, 32);
  p32(24, id);
  return send();
}

/* Guest byte for pixel (x, y) of a resource of width w at backing offset. */
static uint8_t pat(uint32_t seed, size_t i) {
  return (uint8_t)(i * 7 + seed * 13 + (i >> 9));
}

/* Writes the pattern into a backing laid out as @n entries of @len bytes
 * @gap apart from @gpa, as the logical byte stream the entries form. */
static void fill_backing(uint64_t gpa, uint32_t n, uint32_t len, uint32_t gap, uint32_t seed) {
  size_t k = 0;
  for (uint32_t e = 0; e < n; e++)
    for (uint32_t b = 0; b < len; b++, k++)
      F->mem[gpa - GPA_BASE + (uint64_t)e * (len + gap) + b] = pat(seed, k);
}

#define OK VIRTIO_GPU_RESP_OK_NODATA

/* ---- 2D ---------------------------------------------------------------- */
static void test_display_info(void **state) {
  Fix *f = fix_new(0, 0);
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
  assert_int_equal(f->rlen, VGPU_RESP_DISPLAY_INFO_SIZE);
  for (uint32_t i = 0; i < 16; i++) {
    const uint8_t *m = f->resp + 24 + 24 * i;
    assert_int_equal(r32(m, 8), i < 2 ? MODE_W : 0);
    assert_int_equal(r32(m, 12), i < 2 ? MODE_H : 0);
    assert_int_equal(r32(m, 16), i < 2 ? 1 : 0);
  }
  fix_free(f);
}

/* The whole 2D path: what the guest wrote is what the screen shows. */
static void test_2d_sequence_pixels(void **state) {
  Fix *f = fix_new(0, 0);
  const uint32_t w = MODE_W, h = MODE_H, stride = w * 4, bytes = stride * h;
  /* 5 entries with holes between them, each crossing host pieces */
  const uint32_t n = 5, len = bytes / n, gap = 4096;
  assert_int_equal(bytes % n, 0);
  assert_int_equal(create_2d(1, VGPU_FORMAT_B8G8R8X8_UNORM, w, h), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), bytes);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 1);
  fill_backing(GPA_BASE + 100, n, len, gap, 1);
  assert_int_equal(attach(1, GPA_BASE + 100, n, len, gap), OK);
  assert_int_equal(transfer_2d(1, 0, 0, w, h, 0), OK);
  assert_int_equal(set_scanout(0, 1, 0, 0, w, h), OK);
  assert_int_equal(f->sc_w[0], w);
  assert_int_equal(f->sc_h[0], h);
  assert_int_equal(flush(1, 0, 0, w, h), OK);
  assert_int_equal(f->updates, 1);
  assert_int_equal(f->last_format, VGPU_FORMAT_B8G8R8X8_UNORM);
  for (size_t i = 0; i < bytes; i++)
    if (f->fb[0][i] != pat(1, i))
      fail_msg("pixel byte %zu differs", i);

  /* A partial update as the Linux driver sends it: offset of its corner. */
  fill_backing(GPA_BASE + 100, n, len, gap, 2);
  const uint32_t x = 17, y = 33, rw = 101, rh = 45;
  assert_int_equal(transfer_2d(1, x, y, rw, rh, (uint64_t)y * stride + x * 4), OK);
  assert_int_equal(flush(1, x, y, rw, rh), OK);
  assert_int_equal(f->updates, 2);
  assert_int_equal(f->last_update.x, x);
  assert_int_equal(f->last_update.w, rw);
  for (uint32_t yy = 0; yy < h; yy++)
    for (uint32_t b = 0; b < stride; b++) {
      size_t i = (size_t)yy * stride + b;
      bool in = yy >= y && yy < y + rh && b >= x * 4 && b < (x + rw) * 4;
      if (f->fb[0][i] != pat(in ? 2 : 1, i))
        fail_msg("pixel byte %zu (inside %d) differs", i, in);
    }

  /* A scanout showing part of the resource gets that part, at its origin;
   * a flush outside it sends nothing. */
  assert_int_equal(set_scanout(1, 1, 10, 20, 50, 40), OK);
  assert_int_equal(flush(1, 0, 0, 30, 30), OK); /* hits both */
  assert_int_equal(f->updates, 4);
  assert_int_equal(f->last_update.x, 0);
  assert_int_equal(f->last_update.y, 0);
  assert_int_equal(f->last_update.w, 20);
  assert_int_equal(f->last_update.h, 10);
  assert_memory_equal(f->fb[1], f->fb[0] + (20 * MODE_W + 10) * 4, 20 * 4);
  assert_int_equal(flush(1, 200, 150, 10, 10), OK);
  assert_int_equal(f->updates, 5); /* scanout 0 only */

  /* refresh redraws; disabled scanouts have nothing */
  assert_int_equal(vgpu_device_refresh(f->dev, 1), 0);
  assert_int_equal(f->updates, 6);
  assert_int_equal(set_scanout(1, 0, 0, 0, 0, 0), OK);
  assert_int_equal(f->sc_w[1], 0);
  assert_int_equal(vgpu_device_refresh(f->dev, 1), -ENOENT);
  assert_int_equal(vgpu_device_refresh(f->dev, 7), -ENOENT);

  /* detach, unref: the scanout showing it goes dark, books are zero */
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 1), OK);
  assert_int_equal(transfer_2d(1, 0, 0, w, h, 0), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 1), OK);
  assert_int_equal(f->sc_w[0], 0);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
  fix_free(f);
}

static void test_2d_validation(void **state) {
  Fix *f = fix_new(0, 0);
  const uint32_t w = 64, h = 32, stride = w * 4;
  assert_int_equal(create_2d(1, VGPU_FORMAT_B8G8R8A8_UNORM, w, h), OK);
  /* duplicate id, bad format, id 0 */
  assert_int_equal(create_2d(1, VGPU_FORMAT_B8G8R8A8_UNORM, 4, 4),
                   VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(create_2d(2, 99, 4, 4), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(create_2d(0, 1, 4, 4), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  /* transfer without backing */
  assert_int_equal(transfer_2d(1, 0, 0, w, h, 0), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  /* backing outside guest memory: below it, running past its end, wrapping */
  assert_int_equal(attach(1, 0x1000, 1, 4096, 0), VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_int_equal(attach(1, GPA_BASE + MEM_SIZE - 100, 1, 4096, 0), VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_int_equal(attach(1, UINT64_MAX - 10, 1, 4096, 0), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* too many entries for one request */
  assert_int_equal(attach(1, GPA_BASE, VGPU_CMD_MAX_ENTRIES + 1, 16, 0),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* as many as allowed is fine (and splits into many host pieces) */
  assert_int_equal(attach(1, GPA_BASE, VGPU_CMD_MAX_ENTRIES, 512, 0), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 1), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 1),
                   VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  /* a short backing: half the resource */
  assert_int_equal(attach(1, GPA_BASE, 1, stride * h / 2, 0), OK);
  assert_int_equal(attach(1, GPA_BASE, 1, 4096, 0), VIRTIO_GPU_RESP_ERR_UNSPEC); /* twice */
  assert_int_equal(transfer_2d(1, 0, 0, w, h / 2, 0), OK);
  assert_int_equal(transfer_2d(1, 0, 0, w, h / 2 + 1, 0), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(transfer_2d(1, 0, 0, w, 1, stride * h / 2 - stride + 1),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* rectangles outside the resource */
  assert_int_equal(transfer_2d(1, 1, 0, w, 1, 0), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(transfer_2d(1, 0, h, 1, 1, 0), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(transfer_2d(1, 0xfffffff0u, 0, 0x20, 1, 0),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER); /* wraps */
  assert_int_equal(flush(1, 0, 0, w + 1, h), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(set_scanout(0, 1, 0, 1, w, h), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(set_scanout(0, 1, 0, 0, 0, h), OK); /* empty: disabled */
  assert_int_equal(f->sc_w[0], 0);
  assert_int_equal(vgpu_device_refresh(f->dev, 0), -ENOENT);
  /* transfer offset and stride arithmetic that overflows 64 bits */
  assert_int_equal(transfer_2d(1, 0, 0, w, 2, UINT64_MAX - stride),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(transfer_2d(1, 0, 0, 1, 1, UINT64_MAX), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* bad ids */
  assert_int_equal(transfer_2d(9, 0, 0, 1, 1, 0), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(flush(9, 0, 0, 1, 1), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(set_scanout(0, 9, 0, 0, 1, 1), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 9),
                   VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 9),
                   VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(attach(9, GPA_BASE, 1, 4096, 0), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  /* bad scanout (the device has two) */
  assert_int_equal(set_scanout(2, 1, 0, 0, 1, 1), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
  assert_int_equal(set_scanout(16, 0, 0, 0, 0, 0), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
  /* 3D commands without VIRGL, EDID without its feature, garbage */
  start(VIRTIO_GPU_CMD_CTX_CREATE, 96);
  p32(16, 1);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_UNSPEC);
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_UNSPEC);
  start(0x7777, 24);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_UNSPEC);
  start(VIRTIO_GPU_CMD_RESOURCE_FLUSH, 30); /* short */
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_UNSPEC);
  /* after all that the resource still works */
  assert_int_equal(set_scanout(0, 1, 0, 0, w, h), OK);
  assert_int_equal(flush(1, 0, 0, w, h), OK);
  assert_int_equal(f->updates, 1);
  fix_free(f);
}

/* width * height * 4 beyond 32 (and 64) bits, and sizes past the caps:
 * refused before anything is charged or allocated. */
static void test_2d_size_overflow(void **state) {
  Fix *f = fix_new(0, 0);
  assert_int_equal(create_2d(1, 1, 0x10000, 0x10000), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(create_2d(1, 1, 0x40000000, 4), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(create_2d(1, 1, UINT32_MAX, UINT32_MAX), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(create_2d(1, 1, 16385, 1), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
  assert_int_equal(create_2d(1, 1, 16384, 1), OK);
  fix_free(f);
}

/* A resource beyond the instance's VRAM: the guest's allocation fails with
 * OUT_OF_MEMORY, the device keeps working. */
static void test_vram_limit_out_of_memory(void **state) {
  Fix *f = fix_new(0, 1u << 20);
  assert_int_equal(create_2d(1, 1, 256, 256), OK); /* 256 KiB */
  assert_int_equal(create_2d(2, 1, 1024, 1024), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(f->refusals, 1);
  assert_int_equal(used(f, VGPU_RES_VRAM), 256 * 256 * 4);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 1);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 2),
                   VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  /* still working: more small resources, a scanout, display info */
  assert_int_equal(create_2d(2, 1, 256, 256), OK);
  assert_int_equal(set_scanout(0, 2, 0, 0, 256, 200), OK);
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 1), OK);
  assert_int_equal(create_2d(3, 1, 512, 256), OK); /* fits again */
  fix_free(f);
}

static void test_cursor(void **state) {
  Fix *f = fix_new(0, 0);
  assert_int_equal(create_2d(5, VGPU_FORMAT_B8G8R8A8_UNORM, 64, 64), OK);
  fill_backing(GPA_BASE, 1, 64 * 64 * 4, 0, 3);
  assert_int_equal(attach(5, GPA_BASE, 1, 64 * 64 * 4, 0), OK);
  assert_int_equal(transfer_2d(5, 0, 0, 64, 64, 0), OK);
  start(VIRTIO_GPU_CMD_UPDATE_CURSOR, 56);
  p32(24, 1), p32(28, 40), p32(32, 50), p32(40, 5), p32(44, 3), p32(48, 4);
  send_cursor();
  assert_int_equal(f->cursor_updates, 1);
  assert_false(f->cursor_hidden);
  assert_int_equal(f->cursor_x, 40);
  for (size_t i = 0; i < sizeof(f->cursor_px); i++)
    assert_int_equal(((uint8_t *)f->cursor_px)[i], pat(3, i));
  start(VIRTIO_GPU_CMD_MOVE_CURSOR, 56);
  p32(24, 1), p32(28, 7), p32(32, 8);
  send_cursor();
  assert_int_equal(f->cursor_moves, 1);
  assert_int_equal(f->cursor_y, 8);
  start(VIRTIO_GPU_CMD_UPDATE_CURSOR, 56); /* resource 0: hidden */
  send_cursor();
  assert_int_equal(f->cursor_updates, 2);
  assert_true(f->cursor_hidden);
  /* not 64x64, unknown, bad scanout, hot spot outside, control command on
   * the cursor queue: nothing reaches the display */
  assert_int_equal(create_2d(6, 1, 32, 32), OK);
  uint32_t bad[][3] = {{0, 6, 0}, {0, 77, 0}, {2, 5, 0}, {0, 5, 64}};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    start(VIRTIO_GPU_CMD_UPDATE_CURSOR, 56);
    p32(24, bad[i][0]), p32(40, bad[i][1]), p32(44, bad[i][2]);
    send_cursor();
  }
  start(VIRTIO_GPU_CMD_RESOURCE_UNREF, 32);
  p32(24, 5);
  send_cursor();
  assert_int_equal(f->cursor_updates, 2);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 5), OK); /* still there */
  fix_free(f);
}

static void test_edid(void **state) {
  Fix *f = fix_new(VGPU_CMD_F_EDID, 0);
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  p32(24, 1);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_EDID);
  assert_int_equal(f->rlen, VGPU_RESP_EDID_SIZE);
  assert_int_equal(r32(f->resp, 24), 128);
  const uint8_t *e = f->resp + 32;
  static const uint8_t hdr[8] = {0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0};
  assert_memory_equal(e, hdr, 8);
  assert_int_equal(e[18], 1);
  assert_int_equal(e[19], 3);
  uint8_t sum = 0;
  for (int i = 0; i < 128; i++)
    sum += e[i];
  assert_int_equal(sum, 0);
  /* the preferred timing is the configured mode */
  const uint8_t *t = e + 54;
  assert_true(t[0] | t[1]);
  assert_int_equal(t[2] | (t[4] >> 4) << 8, MODE_W);
  assert_int_equal(t[5] | (t[7] >> 4) << 8, MODE_H);
  for (size_t i = 32 + 128; i < VGPU_RESP_EDID_SIZE; i++)
    assert_int_equal(f->resp[i], 0);
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  p32(24, 2);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
  fix_free(f);
}

static void expect_mode(Fix *f, uint32_t i, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                        uint32_t en) {
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
  const uint8_t *m = f->resp + 24 + 24 * i;
  assert_int_equal(r32(m, 0), x);
  assert_int_equal(r32(m, 4), y);
  assert_int_equal(r32(m, 8), w);
  assert_int_equal(r32(m, 12), h);
  assert_int_equal(r32(m, 16), en);
}

/* The EDID's preferred timing (first detailed descriptor) for scanout @i. */
static void expect_edid_mode(Fix *f, uint32_t i, uint32_t w, uint32_t h) {
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  p32(24, i);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_EDID);
  assert_int_equal(r32(f->resp, 24), 128);
  const uint8_t *t = f->resp + 32 + 54;
  assert_int_equal(t[2] | (t[4] >> 4) << 8, w);
  assert_int_equal(t[5] | (t[7] >> 4) << 8, h);
}

/* The display's modes (QEMU's, through the front-end) replace the
 * configured one, after validation; EDID follows them unless the display
 * gave its own. */
static void test_set_modes(void **state) {
  Fix *f = fix_new(VGPU_CMD_F_EDID, 0);
  VgpuDisplayMode m[3] = {{.r = {0, 0, 1024, 768}, .enabled = 1}, {.r = {5, 6, 7, 8}}};
  /* refused: more heads than scanouts, zero or huge sizes, odd enabled */
  assert_int_equal(vgpu_device_set_modes(f->dev, m, 3), -EINVAL);
  VgpuDisplayMode bad[] = {
      {.r = {0, 0, 0, 768}, .enabled = 1},        {.r = {0, 0, 1024, 0}, .enabled = 1},
      {.r = {0, 0, 16385, 768}, .enabled = 1},    {.r = {0, 0, 1024, 16385}, .enabled = 1},
      {.r = {16385, 0, 1024, 768}, .enabled = 1}, {.r = {0, 0x80000000u, 8, 8}, .enabled = 1},
      {.r = {0, 0, 1024, 768}, .enabled = 2},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    VgpuDisplayMode two[2] = {m[0], bad[i]};
    assert_int_equal(vgpu_device_set_modes(f->dev, two, 2), -EINVAL);
  }
  assert_int_equal(vgpu_device_set_modes(f->dev, NULL, 1), -EINVAL);
  expect_mode(f, 0, 0, 0, MODE_W, MODE_H, 1); /* nothing changed */
  expect_mode(f, 1, 0, 0, MODE_W, MODE_H, 1);
  assert_int_equal(f->wanted_last, -1);
  /* accepted: head 0 1024x768, head 1 off (reported as zeros) */
  assert_int_equal(vgpu_device_set_modes(f->dev, m, 2), 1);
  assert_int_equal(vgpu_device_set_modes(f->dev, m, 2), 0);
  expect_mode(f, 0, 0, 0, 1024, 768, 1);
  expect_mode(f, 1, 0, 0, 0, 0, 0);
  expect_mode(f, 2, 0, 0, 0, 0, 0);
  /* the largest mode is fine */
  VgpuDisplayMode big = {.r = {16384, 16384, 16384, 16384}, .enabled = 1};
  assert_int_equal(vgpu_device_set_modes(f->dev, &big, 1), 1);
  expect_mode(f, 0, 16384, 16384, 16384, 16384, 1);
  assert_int_equal(vgpu_device_set_modes(f->dev, m, 1), 1);
  /* built EDIDs follow the mode; a disabled head keeps the configured one */
  int calls = f->wanted_calls;
  expect_edid_mode(f, 0, 1024, 768);
  assert_int_equal(f->wanted_calls, calls + 1);
  assert_int_equal(f->wanted_last, 0);
  expect_edid_mode(f, 1, MODE_W, MODE_H);
  assert_int_equal(f->wanted_last, 1);
  /* the display's own EDID blob, validated */
  uint8_t blob[256];
  for (size_t i = 0; i < sizeof(blob); i++)
    blob[i] = (uint8_t)(i * 7 + 1);
  assert_int_equal(vgpu_device_set_edid(f->dev, 0, blob, 100), -EINVAL);
  assert_int_equal(vgpu_device_set_edid(f->dev, 0, blob, 1152), -EINVAL);
  assert_int_equal(vgpu_device_set_edid(f->dev, 2, blob, 128), -EINVAL);
  assert_int_equal(vgpu_device_set_edid(f->dev, 0, NULL, 128), -EINVAL);
  assert_int_equal(vgpu_device_set_edid(f->dev, 0, blob, 256), 1);
  assert_int_equal(vgpu_device_set_edid(f->dev, 0, blob, 256), 0);
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_EDID);
  assert_int_equal(r32(f->resp, 24), 256);
  assert_memory_equal(f->resp + 32, blob, 256);
  for (size_t i = 32 + 256; i < VGPU_RESP_EDID_SIZE; i++)
    assert_int_equal(f->resp[i], 0);
  assert_int_equal(vgpu_device_set_edid(f->dev, 0, NULL, 0), 1);
  expect_edid_mode(f, 0, 1024, 768);
  /* modes are the display's: a device reset keeps them */
  vgpu_device_reset(f->dev);
  expect_mode(f, 0, 0, 0, 1024, 768, 1);
  /* the hook may hand in modes before the answer is built */
  f->wanted_apply = (VgpuDisplayMode){.r = {0, 0, 800, 600}, .enabled = 1};
  expect_mode(f, 0, 0, 0, 800, 600, 1);
  f->wanted_apply = (VgpuDisplayMode){.r = {0, 0, 640, 480}, .enabled = 1};
  expect_edid_mode(f, 0, 640, 480);
  fix_free(f);
}

/* The memory table changes: backing is translated again from the guest
 * addresses, so the transfer reads the new mapping. */
static void test_mem_changed(void **state) {
  Fix *f = fix_new(0, 0);
  assert_int_equal(create_2d(1, 1, 16, 16), OK);
  fill_backing(GPA_BASE + 8192, 1, 1024, 0, 4);
  assert_int_equal(attach(1, GPA_BASE + 8192, 1, 1024, 0), OK);
  /* the guest's memory moves to other host pages (the old ones are freed,
   * so a stale translation is a use-after-free ASan reports) */
  fill_backing(GPA_BASE + 8192, 1, 1024, 0, 5);
  uint8_t *moved = g_malloc(MEM_SIZE);
  memcpy(moved, f->mem, MEM_SIZE);
  g_free(f->mem);
  f->mem = moved;
  vgpu_device_mem_changed(f->dev);
  assert_int_equal(transfer_2d(1, 0, 0, 16, 16, 0), OK);
  assert_int_equal(set_scanout(0, 1, 0, 0, 16, 16), OK);
  assert_int_equal(flush(1, 0, 0, 16, 16), OK);
  for (size_t y = 0; y < 16; y++)
    for (size_t b = 0; b < 64; b++)
      assert_int_equal(f->fb[0][y * MODE_W * 4 + b], pat(5, y * 64 + b));
  fix_free(f);
}

static void test_reset(void **state) {
  Fix *f = fix_new(0, 0);
  assert_int_equal(create_2d(1, 1, 64, 64), OK);
  assert_int_equal(attach(1, GPA_BASE, 1, 64 * 64 * 4, 0), OK);
  assert_int_equal(set_scanout(0, 1, 0, 0, 64, 64), OK);
  assert_int_equal(create_2d(2, 1, 64, 64), OK);
  vgpu_device_reset(f->dev);
  assert_int_equal(f->sc_w[0], 0);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
  assert_int_equal(flush(1, 0, 0, 1, 1), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(create_2d(1, 1, 64, 64), OK); /* the id is free again */
  fix_free(f);
}

/* ---- 3D ---------------------------------------------------------------- */
#define F3D (VGPU_CMD_F_VIRGL | VGPU_CMD_F_EDID | VGPU_CMD_F_CONTEXT_INIT)

static uint32_t ctx_create(uint32_t ctx) {
  start(VIRTIO_GPU_CMD_CTX_CREATE, 96);
  p32(16, ctx);
  p32(24, 4);
  memcpy(F->req + 32, "test", 4);
  return send();
}

static uint32_t create_3d(uint32_t id, uint32_t target, uint32_t format, uint32_t w, uint32_t h,
                          uint32_t depth, uint32_t array, uint32_t last_level) {
  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, 72);
  p32(24, id), p32(28, target), p32(32, format), p32(36, 1u << 1);
  p32(40, w), p32(44, h), p32(48, depth), p32(52, array), p32(56, last_level);
  return send();
}

static uint32_t transfer_3d(uint32_t type, uint32_t ctx, uint32_t id, uint32_t x, uint32_t y,
                            uint32_t z, uint32_t w, uint32_t h, uint32_t d, uint64_t offset,
                            uint32_t level, uint32_t stride) {
  start(type, 72);
  p32(16, ctx);
  p32(24, x), p32(28, y), p32(32, z), p32(36, w), p32(40, h), p32(44, d);
  p64(48, offset), p32(56, id), p32(60, level), p32(64, stride);
  return send();
}

static uint32_t submit(uint32_t ctx, uint32_t flags, uint64_t fence, const uint32_t *dw,
                       uint32_t ndw, uint64_t cookie) {
  start(VIRTIO_GPU_CMD_SUBMIT_3D, 32 + 4 * (size_t)ndw);
  p32(4, flags), p64(8, fence), p32(16, ctx);
  p32(24, 4 * ndw);
  for (uint32_t i = 0; i < ndw; i++)
    p32(32 + 4 * (size_t)i, dw[i]);
  return send_cookie(cookie);
}

static void test_3d_flow(void **state) {
  Fix *f = fix_new(F3D, 0);
  assert_int_equal(ctx_create(1), OK);
  assert_int_equal(ctx_create(1), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 1);
  /* 64x32 B8G8R8X8 render target, 2 levels */
  assert_int_equal(create_3d(10, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 1), OK);
  assert_true(used(f, VGPU_RES_VRAM) >= 64 * 32 * 4);
  assert_int_equal(create_3d(10, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 0),
                   VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(create_3d(11, VGPU_TARGET_2D, 9999, 64, 32, 1, 1, 0),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(create_3d(11, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 20),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* transfers need backing */
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 64, 32, 1, 0, 0, 256),
      VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_int_equal(attach(10, GPA_BASE, 2, 64 * 32 * 4, 0), OK);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 64, 32, 1, 0, 0, 256), OK);
  assert_int_equal(transfer_3d(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, 1, 10, 0, 0, 0, 32, 16, 1,
                               64 * 32 * 4, 1, 128),
                   OK);
  /* boxes outside the level, levels past last_level, layers */
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 1, 0, 0, 64, 32, 1, 0, 0, 256),
      VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 33, 16, 1, 0, 1, 128),
      VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 1, 1, 1, 0, 2, 4),
      VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 1, 1, 2, 0, 0, 4),
      VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* offsets and strides reaching past the backing, or wrapping */
  assert_int_equal(transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 64, 32, 1,
                               64 * 32 * 4 * 2 - 100, 0, 256),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 64, 32, 1, 0, 0, 0xffffffffu),
      VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 10, 0, 0, 0, 64, 32, 1,
                               UINT64_MAX - 8, 0, 256),
                   VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 99, 0, 0, 0, 1, 1, 1, 0, 0, 4),
      VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  /* contexts and attachments */
  assert_int_equal(simple(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 10),
                   VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID); /* ctx 0 */
  start(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 32);
  p32(16, 1), p32(24, 10);
  assert_int_equal(send(), OK);
  p32(24, 98);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  assert_int_equal(create_2d(12, 1, 8, 8), OK); /* a 2D one: accepted, stays in the device */
  start(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 32);
  p32(16, 1), p32(24, 12);
  assert_int_equal(send(), OK);
  start(VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE, 32);
  p32(16, 1), p32(24, 10);
  assert_int_equal(send(), OK);
  /* submissions */
  uint32_t nop[2] = {0x00010000u, 0};
  assert_int_equal(submit(1, 0, 0, nop, 2, 0), OK);
  assert_int_equal(submit(7, 0, 0, nop, 2, 0), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  static uint32_t big[1025];
  assert_int_equal(submit(1, 0, 0, big, 1025, 0), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* a 3D scanout: flushed through a read-back into the scanout's buffer
   * (the null renderer draws nothing: zeros) */
  memset(f->fb[0], 0x55, sizeof(f->fb[0]));
  assert_int_equal(set_scanout(0, 10, 0, 0, 64, 32), OK);
  uint64_t vram_with_scanout = used(f, VGPU_RES_VRAM);
  assert_int_equal(flush(10, 0, 0, 64, 32), OK);
  assert_int_equal(f->updates, 1);
  assert_int_equal(f->last_format, 2);
  for (uint32_t y = 0; y < 32; y++)
    for (uint32_t b = 0; b < 256; b++)
      assert_int_equal(f->fb[0][y * MODE_W * 4 + b], 0);
  assert_int_equal(f->fb[0][32 * MODE_W * 4], 0x55);
  assert_int_equal(vgpu_device_refresh(f->dev, 0), 0);
  assert_int_equal(f->updates, 2);
  /* a buffer cannot be shown */
  assert_int_equal(create_3d(13, VGPU_TARGET_BUFFER, 64, 4096, 1, 1, 1, 0), OK);
  assert_int_equal(set_scanout(1, 13, 0, 0, 64, 1), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* unref releases the scanout's buffer too */
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 10), OK);
  assert_true(used(f, VGPU_RES_VRAM) < vram_with_scanout);
  assert_int_equal(f->sc_w[0], 0);
  start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
  p32(16, 1);
  assert_int_equal(send(), OK);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 0);
  fix_free(f);
}

/* Object and context quotas: refused with OUT_OF_MEMORY, nothing
 * charged, the device goes on; a 3D scanout's read-back buffer is VRAM. */
static void test_3d_quotas(void **state) {
  Fix *f = fix_new_limits(F3D, 64u << 10, 2, 1);
  assert_int_equal(ctx_create(1), OK);
  assert_int_equal(ctx_create(2), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 1);
  assert_int_equal(create_3d(1, VGPU_TARGET_2D, 2, 64, 64, 1, 1, 0), OK); /* 16 KiB */
  assert_int_equal(create_2d(2, 1, 8, 8), OK);
  assert_int_equal(create_2d(3, 1, 8, 8), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY); /* objects */
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 2), OK);
  assert_int_equal(create_3d(3, VGPU_TARGET_2D, 2, 128, 128, 1, 1, 0),
                   VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY); /* 64 KiB: over VRAM */
  assert_int_equal(f->refusals, 3);
  uint64_t before = used(f, VGPU_RES_VRAM);
  assert_int_equal(set_scanout(0, 1, 0, 0, 64, 64), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), before + 64 * 64 * 4);
  assert_int_equal(set_scanout(0, 0, 0, 0, 0, 0), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), before);
  start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
  p32(16, 1);
  assert_int_equal(send(), OK);
  assert_int_equal(ctx_create(2), OK);
  fix_free(f);
}

/* A fenced command completes only after its fence retires; guest fence
 * ids that repeat or go backwards change nothing. */
static void test_fence_deferred(void **state) {
  Fix *f = fix_new(F3D, 0);
  assert_int_equal(ctx_create(1), OK);
  uint32_t nop[2] = {0x00010000u, 0};
  assert_int_equal(submit(1, VIRTIO_GPU_FLAG_FENCE, 100, nop, 2, 11), 0);
  assert_int_equal(submit(1, VIRTIO_GPU_FLAG_FENCE, 5, nop, 2, 12), 0);
  assert_int_equal(submit(1, VIRTIO_GPU_FLAG_FENCE, 5, nop, 2, 13), 0);
  /* an error with a fence waits its turn too */
  assert_int_equal(submit(9, VIRTIO_GPU_FLAG_FENCE, 6, nop, 2, 14), 0);
  assert_int_equal(f->completions, 0);
  f->r->ops->poll(f->r);
  assert_int_equal(f->completions, 4);
  uint64_t want_cookie[4] = {11, 12, 13, 14}, want_fence[4] = {100, 5, 5, 6};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(f->cookies[i], want_cookie[i]);
    assert_int_equal(r32(f->completed[i], 0), i < 3 ? OK : VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
    assert_int_equal(r32(f->completed[i], 4) & VIRTIO_GPU_FLAG_FENCE, VIRTIO_GPU_FLAG_FENCE);
    assert_int_equal(r64(f->completed[i], 8), want_fence[i]);
  }
  /* context fences on a ring (INFO_RING_IDX) */
  assert_int_equal(submit(1, VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX, 7, nop, 2, 15),
                   0);
  assert_int_equal(f->completions, 4);
  f->r->ops->poll(f->r);
  assert_int_equal(f->completions, 5);
  assert_int_equal(f->cookies[4], 15);
  assert_int_equal(r32(f->completed[4], 4), VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
  /* a submission that never completes: its fence never retires, and
   * reset drops the response instead of completing it */
  uint32_t hang[2] = {VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1};
  assert_int_equal(submit(1, 0, 0, hang, 2, 0), OK);
  assert_int_equal(submit(1, VIRTIO_GPU_FLAG_FENCE, 8, nop, 2, 16), 0);
  f->r->ops->poll(f->r);
  assert_int_equal(f->completions, 5);
  vgpu_device_reset(f->dev);
  f->r->ops->poll(f->r);
  vgpu_device_fence_retired(f->dev, UINT64_MAX);
  assert_int_equal(f->completions, 5);
  fix_free(f);
}

/* Without a renderer, a fenced request is answered at once. */
static void test_fence_2d_immediate(void **state) {
  Fix *f = fix_new(0, 0);
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  p32(4, VIRTIO_GPU_FLAG_FENCE), p64(8, 42);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
  assert_int_equal(r64(f->resp, 8), 42);
  /* VIRGL cannot be turned on without a renderer */
  assert_int_equal(vgpu_device_set_features(f->dev, VGPU_CMD_F_VIRGL), -EINVAL);
  assert_int_equal(ctx_create(1), VIRTIO_GPU_RESP_ERR_UNSPEC);
  fix_free(f);
}

/* Features negotiated after creation: 3D commands, capsets and deferred
 * fences appear with VIRGL; resources made before stay. */
static void test_set_features(void **state) {
  Fix *f = fix_new(F3D, 0);
  assert_int_equal(vgpu_device_set_features(f->dev, 0), 0);
  assert_int_equal(create_2d(1, 1, 8, 8), OK);
  assert_int_equal(ctx_create(1), VIRTIO_GPU_RESP_ERR_UNSPEC);
  start(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 32);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  p32(4, VIRTIO_GPU_FLAG_FENCE);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_DISPLAY_INFO); /* at once */
  assert_int_equal(vgpu_device_set_features(f->dev, F3D), 0);
  assert_int_equal(ctx_create(1), OK);
  start(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 32);
  p32(24, 1);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_CAPSET_INFO);
  assert_int_equal(r32(f->resp, 24), 2);
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  p32(4, VIRTIO_GPU_FLAG_FENCE);
  assert_int_equal(send(), 0); /* deferred */
  f->r->ops->poll(f->r);
  assert_int_equal(f->completions, 1);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 1), OK);
  fix_free(f);
}

#if HAVE_VIRGL
/* With virglrenderer on llvmpipe: what the guest transferred into a 3D
 * resource reaches the display when it is flushed on a scanout, through
 * the device's read-back (no dmabuf anywhere). */
static void test_3d_scanout_virgl(void **state) {
  Fix *f = fix_new(0, 0);
  vgpu_device_free(f->dev);
  VgpuRendererConfig rc = {.render_node = NULL, .use_thread_sync = true};
  g_autoptr(GError) e = NULL;
  f->r = vgpu_renderer_virgl_new(&rc, on_fence, f, &e);
  if (!f->r)
    fail_msg("virglrenderer on EGL surfaceless: %s", e->message);
  VgpuDeviceConfig cfg = {.num_scanouts = 2,
                          .width = MODE_W,
                          .height = MODE_H,
                          .features = F3D,
                          .submit_max = 4096,
                          .renderer = f->r,
                          .tenant = f->tenant,
                          .mem = {.to_iov = to_iov, .user = f},
                          .display = {.scanout = d_scanout, .update = d_update, .user = f}};
  f->dev = vgpu_device_new(&cfg);
  assert_non_null(f->dev);
  const uint32_t w = 96, h = 48, bytes = w * h * 4;
  assert_int_equal(ctx_create(1), OK);
  assert_int_equal(create_3d(7, VGPU_TARGET_2D, VGPU_FORMAT_B8G8R8A8_UNORM, w, h, 1, 1, 0), OK);
  fill_backing(GPA_BASE, 3, bytes / 3, 8192, 6);
  assert_int_equal(attach(7, GPA_BASE, 3, bytes / 3, 8192), OK);
  start(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 32); /* the renderer transfers in the guest's context */
  p32(16, 1), p32(24, 7);
  assert_int_equal(send(), OK);
  assert_int_equal(
      transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 1, 7, 0, 0, 0, w, h, 1, 0, 0, w * 4), OK);
  assert_int_equal(set_scanout(0, 7, 0, 0, w, h), OK);
  assert_int_equal(flush(7, 0, 0, w, h), OK);
  assert_int_equal(f->updates, 1);
  for (uint32_t y = 0; y < h; y++)
    for (uint32_t b = 0; b < w * 4; b++)
      if (f->fb[0][(size_t)y * MODE_W * 4 + b] != pat(6, (size_t)y * w * 4 + b))
        fail_msg("scanout byte (%u, %u) differs", y, b);
  /* a partial flush sends only its part, at the scanout's coordinates */
  assert_int_equal(flush(7, 10, 5, 20, 7), OK);
  assert_int_equal(f->updates, 2);
  assert_int_equal(f->last_update.x, 10);
  assert_int_equal(f->last_update.h, 7);
  fix_free(f);
}
#endif

/* ---- CVE classes ------------------------------------------------------- */
/* CVE-2021-3544: memory leaked by the back-end's command handlers.  Every
 * command, good and bad, many times over: LeakSanitizer sees nothing left
 * and the tenant's books return to zero. */
static void test_cve_2021_3544_no_leaks(void **state) {
  Fix *f = fix_new(F3D, 0);
  uint32_t nop[2] = {0x00010000u, 0};
  for (int i = 0; i < 300; i++) {
    assert_int_equal(create_2d(1, 1, 64, 64), OK);
    assert_int_equal(attach(1, GPA_BASE, 4, 4096, 0), OK);
    assert_int_equal(attach(1, GPA_BASE, 4, 4096, 0), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_int_equal(attach(1, 0, 4, 4096, 0), VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_int_equal(transfer_2d(1, 0, 0, 64, 64, 0), OK);
    assert_int_equal(set_scanout(0, 1, 0, 0, 64, 64), OK);
    assert_int_equal(flush(1, 0, 0, 64, 64), OK);
    start(VIRTIO_GPU_CMD_UPDATE_CURSOR, 56);
    send_cursor();
    assert_int_equal(ctx_create(3), OK);
    assert_int_equal(create_3d(2, VGPU_TARGET_2D, 2, 64, 64, 1, 1, 0), OK);
    assert_int_equal(attach(2, GPA_BASE, 1, 64 * 64 * 4, 0), OK);
    assert_int_equal(set_scanout(1, 2, 0, 0, 64, 64), OK);
    assert_int_equal(flush(2, 0, 0, 64, 64), OK);
    assert_int_equal(
        transfer_3d(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 3, 2, 0, 0, 0, 64, 64, 1, 0, 0, 256), OK);
    assert_int_equal(submit(3, VIRTIO_GPU_FLAG_FENCE, (uint64_t)i, nop, 2, 1), 0);
    start(VIRTIO_GPU_CMD_GET_CAPSET, 32);
    p32(24, 2), p32(28, 2);
    assert_int_equal(send(), VIRTIO_GPU_RESP_OK_CAPSET);
    start(VIRTIO_GPU_CMD_GET_EDID, 32);
    assert_int_equal(send(), VIRTIO_GPU_RESP_OK_EDID);
    if (i == 299)
      break;     /* the device is freed with all of them live */
    if (i % 2) { /* half the time a reset drops them */
      vgpu_device_reset(f->dev);
    } else {
      f->r->ops->poll(f->r);
      assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 1), OK);
      assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 1), OK);
      assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 2), OK);
      start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
      p32(16, 3);
      assert_int_equal(send(), OK);
    }
    assert_int_equal(used(f, VGPU_RES_VRAM), 0);
    assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
    assert_int_equal(used(f, VGPU_RES_CONTEXTS), 0);
  }
  fix_free(f); /* with resources, a context, a deferred response live */
}

/* A renderer whose fill writes only the first 16 bytes of the capset it
 * reports, and whose VIRGL2 capset is 0 bytes (not offered). */
static int short_fill(VgpuRenderer *r, uint32_t set, uint32_t ver, void *buf) {
  memset(buf, 0x5a, 16);
  return 0;
}

static int sizes(VgpuRenderer *r, uint32_t set, uint32_t *ver, uint32_t *size) {
  if (set != 1 && set != 2)
    return -EINVAL;
  *ver = 1;
  *size = set == 1 ? 300 : 0;
  return 0;
}

static VgpuRendererOps patched;

static Fix *capset_fix(void) {
  Fix *f = fix_new(F3D, 0);
  vgpu_device_free(f->dev);
  patched = *f->r->ops;
  patched.fill_capset = short_fill;
  patched.get_capset = sizes;
  f->r->ops = &patched;
  VgpuDeviceConfig cfg = {.num_scanouts = 1,
                          .width = MODE_W,
                          .height = MODE_H,
                          .features = F3D,
                          .submit_max = 4096,
                          .renderer = f->r,
                          .tenant = f->tenant,
                          .mem = {.to_iov = to_iov, .user = f},
                          .display = {.complete = d_complete, .user = f}};
  f->dev = vgpu_device_new(&cfg);
  return f;
}

/* CVE-2021-3545: no uninitialised byte in a GET_CAPSET response. */
static void test_cve_2021_3545_capset_zeroed(void **state) {
  Fix *f = capset_fix();
  assert_int_equal(vgpu_device_capset_mask(f->r), 1u << 1);
  start(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 32);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_CAPSET_INFO);
  assert_int_equal(r32(f->resp, 24), 1);
  assert_int_equal(r32(f->resp, 32), 300);
  start(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 32);
  p32(24, 1);
  assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  start(VIRTIO_GPU_CMD_GET_CAPSET, 32);
  p32(24, 1), p32(28, 1);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_CAPSET);
  assert_int_equal(f->rlen, 24 + 300);
  for (size_t i = 0; i < 16; i++)
    assert_int_equal(f->resp[24 + i], 0x5a);
  for (size_t i = 24 + 16; i < f->rlen; i++)
    if (f->resp[i] != 0)
      fail_msg("response byte %zu not zeroed", i);
  /* the header's reserved bytes are zero too */
  for (size_t i = 20; i < 24; i++)
    assert_int_equal(f->resp[i], 0);
  fix_free(f);
}

/* CVE-2021-3546: the size written is the renderer's, never the guest's:
 * versions, unknown ids and 0-byte capsets are refused without writing a
 * payload, and nothing lands past the response. */
static void test_cve_2021_3546_capset_bounds(void **state) {
  Fix *f = capset_fix();
  uint32_t cases[][2] = {{1, 2}, {1, UINT32_MAX}, {2, 1}, {3, 1}, {0, 0}, {31, 0}, {UINT32_MAX, 1}};
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    start(VIRTIO_GPU_CMD_GET_CAPSET, 32);
    p32(24, cases[i][0]), p32(28, cases[i][1]);
    assert_int_equal(send(), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_int_equal(f->rlen, 24);
    assert_int_equal(f->resp[24], 0xaa);
  }
  /* a longer request changes nothing about the size */
  start(VIRTIO_GPU_CMD_GET_CAPSET, 4096);
  p32(24, 1), p32(28, 0);
  memset(F->req + 32, 0xff, 4096 - 32);
  assert_int_equal(send(), VIRTIO_GPU_RESP_OK_CAPSET);
  assert_int_equal(f->rlen, 24 + 300);
  /* a response buffer too small for the capset is an error, not a write */
  uint8_t small[64];
  memset(small, 0xcc, sizeof(small));
  start(VIRTIO_GPU_CMD_GET_CAPSET, 32);
  p32(24, 1), p32(28, 1);
  size_t n = vgpu_device_handle(f->dev, VGPU_QUEUE_CONTROL, F->req, F->n, small, 40, 0);
  assert_int_equal(n, 24);
  assert_int_equal(r32(small, 0), VIRTIO_GPU_RESP_ERR_UNSPEC);
  for (size_t i = 40; i < sizeof(small); i++)
    assert_int_equal(small[i], 0xcc);
  fix_free(f);
}

/* ---- command streams: charged and bounded like a vtest tenant's -------- */
#define CMD0(cmd, obj, len) ((uint32_t)(cmd) | ((uint32_t)(obj) << 8) | ((uint32_t)(len) << 16))
#define SUBMIT(ctx, ...)                                                                           \
  submit(ctx, 0, 0, (const uint32_t[]){__VA_ARGS__}, sizeof((const uint32_t[]){__VA_ARGS__}) / 4, 0)
#define SAMPLER_STATE(h) CMD0(1, 7, 9), h, 0, 0, 0, 0, 0, 0, 0, 0
#define VIEW(h, res) CMD0(1, 6, 6), h, res, 2, 0, 0, 0
#define DESTROY(h) CMD0(3, 0, 1), h

/* Sub-contexts beyond the contexts quota, objects beyond the bound and
 * malformed framing are answered with errors; the stream does not reach
 * the renderer (only the commands before the refused one do) and the
 * device goes on. */
static void test_stream_quotas(void **state) {
  fix_max_stream_objects = 4;
  Fix *f = fix_new_limits(F3D, 0, 0, 2);
  fix_max_stream_objects = 0;
  assert_int_equal(ctx_create(1), OK);
  assert_int_equal(SUBMIT(1, CMD0(29, 0, 1), 1), OK); /* sub-context 1: the 2nd context */
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 2);
  assert_int_equal(submits, 1);
  assert_int_equal(SUBMIT(1, CMD0(29, 0, 1), 2), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(submits, 1);
  assert_int_equal(f->refusals, 1);
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 2);
  assert_int_equal(ctx_create(2), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(SUBMIT(1, CMD0(0, 0, 0)), OK); /* the device goes on */
  assert_int_equal(submits, 2);
  /* objects: four fit, a fifth does not */
  assert_int_equal(SUBMIT(1, SAMPLER_STATE(1), SAMPLER_STATE(2), SAMPLER_STATE(3)), OK);
  assert_int_equal(SUBMIT(1, SAMPLER_STATE(4)), OK);
  assert_int_equal(submits, 4);
  assert_int_equal(SUBMIT(1, SAMPLER_STATE(5)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(submits, 4);
  /* a destroy makes room; what comes before a refusal runs, the rest not */
  assert_int_equal(SUBMIT(1, DESTROY(1), SAMPLER_STATE(5), SAMPLER_STATE(6), CMD0(0, 0, 0)),
                   VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
  assert_int_equal(submits, 5);
  assert_int_equal(last_submit_ndw, 2 + 10);
  /* malformed framing: a command longer than the stream */
  assert_int_equal(SUBMIT(1, CMD0(0, 0, 5), 1), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_int_equal(submits, 5);
  /* the context goes, its sub-context with it */
  start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
  p32(16, 1);
  assert_int_equal(send(), OK);
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 0);
  assert_int_equal(ctx_create(2), OK);
  assert_int_equal(SUBMIT(2, SAMPLER_STATE(1), SAMPLER_STATE(2), SAMPLER_STATE(3)), OK);
  fix_free(f);
}

/* A stream the renderer refuses leaves its context in error (virglrenderer
 * runs nothing more there): later streams are refused before the books,
 * so a destroy the renderer never runs releases nothing. */
static void test_stream_renderer_refusal(void **state) {
  Fix *f = fix_new(F3D, 0);
  assert_int_equal(ctx_create(1), OK);
  assert_int_equal(ctx_create(2), OK);
  assert_int_equal(create_3d(10, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 0), OK);
  uint64_t v = used(f, VGPU_RES_VRAM);
  assert_int_equal(SUBMIT(1, VIEW(20, 10)), OK);
  assert_int_equal(SUBMIT(1, RENDERER_REFUSES), VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_int_equal(submits, 2);
  assert_int_equal(SUBMIT(1, DESTROY(20)), VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_int_equal(submits, 2);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 10), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), v);    /* the view still holds it */
  assert_int_equal(SUBMIT(2, CMD0(0, 0, 0)), OK); /* other contexts go on */
  start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
  p32(16, 1);
  assert_int_equal(send(), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  fix_free(f);
}

/* A sampler view keeps an unreferenced 3D resource's VRAM charged until
 * the view is destroyed, or its context; with two contexts the charge
 * passes to the one still holding it.  A 2D resource never reaches the
 * renderer: it is released at once. */
static void test_stream_view_keeps_resource(void **state) {
  Fix *f = fix_new(F3D, 0);
  assert_int_equal(ctx_create(1), OK);
  assert_int_equal(create_3d(10, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 0), OK);
  uint64_t v = used(f, VGPU_RES_VRAM);
  assert_true(v >= 64 * 32 * 4);
  assert_int_equal(SUBMIT(1, VIEW(20, 10)), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 10), OK);
  assert_int_equal(vgpu_tenant_resource_count(f->tenant), 0);
  assert_int_equal(used(f, VGPU_RES_VRAM), v);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 1);
  /* a new resource under the same id is another one */
  assert_int_equal(create_3d(10, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 0), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 10), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), v);
  assert_int_equal(SUBMIT(1, DESTROY(20)), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
  /* 2D */
  assert_int_equal(create_2d(12, 1, 8, 8), OK);
  assert_int_equal(SUBMIT(1, VIEW(21, 12)), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 12), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  /* two contexts hold it: the charge lasts until both let go */
  assert_int_equal(ctx_create(2), OK);
  assert_int_equal(create_3d(13, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 0), OK);
  assert_int_equal(SUBMIT(1, VIEW(22, 13)), OK);
  assert_int_equal(SUBMIT(2, VIEW(22, 13)), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 13), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), v);
  start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
  p32(16, 1);
  assert_int_equal(send(), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), v);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 1);
  assert_int_equal(SUBMIT(2, DESTROY(22)), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
  /* still held when the device goes: fix_free checks the books are zero */
  assert_int_equal(create_3d(14, VGPU_TARGET_2D, 2, 64, 32, 1, 1, 0), OK);
  assert_int_equal(SUBMIT(2, VIEW(23, 14), CMD0(29, 0, 1), 5), OK);
  assert_int_equal(simple(VIRTIO_GPU_CMD_RESOURCE_UNREF, 14), OK);
  assert_int_equal(used(f, VGPU_RES_VRAM), v);
  fix_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_display_info),
    cmocka_unit_test(test_2d_sequence_pixels),
    cmocka_unit_test(test_2d_validation),
    cmocka_unit_test(test_2d_size_overflow),
    cmocka_unit_test(test_vram_limit_out_of_memory),
    cmocka_unit_test(test_cursor),
    cmocka_unit_test(test_edid),
    cmocka_unit_test(test_set_modes),
    cmocka_unit_test(test_mem_changed),
    cmocka_unit_test(test_reset),
    cmocka_unit_test(test_3d_flow),
    cmocka_unit_test(test_3d_quotas),
    cmocka_unit_test(test_fence_deferred),
    cmocka_unit_test(test_fence_2d_immediate),
    cmocka_unit_test(test_set_features),
    cmocka_unit_test(test_stream_quotas),
    cmocka_unit_test(test_stream_view_keeps_resource),
    cmocka_unit_test(test_stream_renderer_refusal),
#if HAVE_VIRGL
    cmocka_unit_test(test_3d_scanout_virgl),
#endif
    cmocka_unit_test(test_cve_2021_3544_no_leaks),
    cmocka_unit_test(test_cve_2021_3545_capset_zeroed),
    cmocka_unit_test(test_cve_2021_3546_capset_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
