/* libFuzzer target for the virtio-gpu device model: request sequences
 * against one device with fake guest memory, the null renderer and a
 * tenant on a standalone ledger with small quotas.
 *
 * Input: one config byte (bit 0 VIRGL, bit 1 EDID, bit 2 CONTEXT_INIT,
 * bits 4-7 the number of scanouts - 1), then records of one op byte, a
 * 16-bit little-endian length and that many bytes:
 *   op % 8 = 0, 7: a control-queue request; 1: a cursor-queue request;
 *   2: the renderer's poll (fences retire); 3: the memory table changes
 *   (guest memory moves to new host pages, the old ones freed, so a stale
 *   translation is a use-after-free); 4: device reset (no bytes), or the
 *   features of the first byte (bits as in the config byte) negotiated
 *   again; 5: refresh of the
 *   scanout in the first byte; 6: a write into guest memory (u32 offset,
 *   then the bytes).
 * Checks: every response is a whole header or more and no longer than the
 * buffer; display updates lie inside the scanout the device announced and
 * every pixel byte they name is readable; deferred responses complete at
 * most once; after vgpu_device_free the ledger holds nothing (command
 * streams are bounded to 16 objects per context, so the fuzzer reaches the
 * bound too).  GLib criticals and warnings are fatal. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/ledger.h"
#include "core/tenant.h"
#include "fuzz_glib.h"
#include "render/renderer.h"
#include "virtio_gpu/vgpu_device.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-virtio_gpu_device")

#define GPA_BASE 0x10000u
#define MEM_SIZE (256u << 10)
#define PIECE 4096u

typedef struct {
  uint8_t *mem;
  VgpuDevice *dev;
  uint32_t w[VGPU_CMD_MAX_SCANOUTS], h[VGPU_CMD_MAX_SCANOUTS];
  uint32_t num_scanouts;
  uint64_t deferred, completed;
  volatile uint8_t sink;
} Fz;

static void check(bool ok) {
  if (!ok)
    abort();
}

static int to_iov(void *user, uint64_t gpa, uint64_t len, struct iovec *iov, unsigned max,
                  unsigned *n) {
  Fz *z = user;
  if (gpa < GPA_BASE || gpa - GPA_BASE > MEM_SIZE || len > MEM_SIZE - (gpa - GPA_BASE))
    return -EFAULT;
  uint64_t off = gpa - GPA_BASE;
  while (len) {
    uint64_t chunk = len < PIECE - off % PIECE ? len : PIECE - off % PIECE;
    if (*n >= max)
      return -E2BIG;
    iov[*n].iov_base = z->mem + off;
    iov[*n].iov_len = chunk;
    (*n)++;
    off += chunk, len -= chunk;
  }
  return 0;
}

static void d_scanout(void *user, uint32_t id, uint32_t w, uint32_t h) {
  Fz *z = user;
  check(id < z->num_scanouts);
  z->w[id] = w, z->h[id] = h;
}

static void d_update(void *user, uint32_t id, const VgpuRect *r, const void *pixels,
                     uint32_t stride, uint32_t format) {
  Fz *z = user;
  check(id < z->num_scanouts && r->w && r->h);
  check(r->x + r->w <= z->w[id] && r->y + r->h <= z->h[id]);
  check(stride >= r->w * 4u);
  const uint8_t *p = pixels;
  uint8_t s = 0;
  for (uint32_t y = 0; y < r->h; y++) /* ASan checks every byte named */
    s ^= p[(size_t)y * stride] ^ p[(size_t)y * stride + r->w * 4u - 1];
  z->sink = s;
}

static void d_cursor_update(void *user, uint32_t scanout, uint32_t x, uint32_t y, uint32_t hx,
                            uint32_t hy, const uint32_t *pixels) {
  Fz *z = user;
  check(scanout < z->num_scanouts);
  if (pixels)
    z->sink = (uint8_t)(pixels[0] ^ pixels[64 * 64 - 1]);
}

static void d_cursor_move(void *user, uint32_t scanout, uint32_t x, uint32_t y) {
  check(scanout < ((Fz *)user)->num_scanouts);
}

static void d_complete(void *user, uint64_t cookie, const void *resp, size_t len) {
  Fz *z = user;
  check(len >= VGPU_CMD_HDR_SIZE && len <= VGPU_DEVICE_RESP_MAX);
  check(cookie >= 1 && cookie <= z->deferred); /* one we deferred */
  z->completed++;
  check(z->completed <= z->deferred);
}

static void on_fence(void *user, uint64_t fence) {
  vgpu_device_fence_retired(((Fz *)user)->dev, fence);
}

static void on_ctx_fence(void *user, uint32_t ctx, uint32_t ring, uint64_t fence) {
  vgpu_device_ctx_fence_retired(((Fz *)user)->dev, ctx, ring, fence);
}

static uint8_t resp[VGPU_DEVICE_RESP_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t cfgb = data[0];
  Fz z = {.mem = calloc(1, MEM_SIZE), .num_scanouts = (cfgb >> 4) + 1u};
  uint64_t limits[VGPU_RES_N_QUOTA] = {
      [VGPU_RES_VRAM] = 4u << 20, [VGPU_RES_OBJECTS] = 32, [VGPU_RES_CONTEXTS] = 4};
  VgpuLedger *ledger = vgpu_ledger_new_standalone(limits);
  VgpuTenant *tenant = vgpu_tenant_new(ledger, 0, NULL);
  uint32_t features = (cfgb & 1 ? VGPU_CMD_F_VIRGL : 0) | (cfgb & 2 ? VGPU_CMD_F_EDID : 0) |
                      (cfgb & 4 ? VGPU_CMD_F_CONTEXT_INIT : 0);
  VgpuRenderer *r = NULL;
  if (features & VGPU_CMD_F_VIRGL) {
    r = vgpu_renderer_null_new(on_fence, &z);
    r->ctx_fence_cb = on_ctx_fence;
  }
  VgpuDeviceConfig cfg = {.num_scanouts = z.num_scanouts,
                          .width = 640,
                          .height = 480,
                          .features = features,
                          .submit_max = 4096,
                          .max_stream_objects = 16,
                          .renderer = r,
                          .tenant = tenant,
                          .mem = {.to_iov = to_iov, .user = &z},
                          .display = {.scanout = d_scanout,
                                      .update = d_update,
                                      .cursor_update = d_cursor_update,
                                      .cursor_move = d_cursor_move,
                                      .complete = d_complete,
                                      .user = &z},
                          .log_name = "fuzz"};
  z.dev = vgpu_device_new(&cfg);
  check(z.dev != NULL);

  size_t pos = 1;
  while (pos + 3 <= size) {
    uint8_t op = data[pos] % 8;
    size_t len = (size_t)data[pos + 1] | (size_t)data[pos + 2] << 8;
    pos += 3;
    if (len > size - pos)
      len = size - pos;
    const uint8_t *p = data + pos;
    pos += len;
    /* an exact-size copy, so ASan sees any read past the request */
    uint8_t *req = malloc(len ? len : 1);
    memcpy(req, p, len);
    switch (op) {
    case 0:
    case 7: {
      uint64_t cookie = z.deferred + 1;
      size_t n =
          vgpu_device_handle(z.dev, VGPU_QUEUE_CONTROL, req, len, resp, sizeof(resp), cookie);
      if (n == VGPU_DEVICE_DEFERRED)
        z.deferred++;
      else
        check(n >= VGPU_CMD_HDR_SIZE && n <= sizeof(resp));
      break;
    }
    case 1:
      check(vgpu_device_handle(z.dev, VGPU_QUEUE_CURSOR, req, len, resp, sizeof(resp), 0) == 0);
      break;
    case 2:
      if (r)
        r->ops->poll(r);
      break;
    case 3: {
      uint8_t *moved = malloc(MEM_SIZE);
      memcpy(moved, z.mem, MEM_SIZE);
      free(z.mem);
      z.mem = moved;
      vgpu_device_mem_changed(z.dev);
      break;
    }
    case 4: /* no bytes: reset; else features negotiated again */
      if (len == 0)
        vgpu_device_reset(z.dev);
      else
        check(vgpu_device_set_features(z.dev, (req[0] & 1 ? VGPU_CMD_F_VIRGL : 0) |
                                                  (req[0] & 2 ? VGPU_CMD_F_EDID : 0) |
                                                  (req[0] & 4 ? VGPU_CMD_F_CONTEXT_INIT : 0)) ==
              ((req[0] & 1) && !r ? -EINVAL : 0));
      break;
    case 5: {
      int rc = vgpu_device_refresh(z.dev, len ? req[0] : 0);
      check(rc == 0 || rc == -ENOENT || rc == -EIO);
      break;
    }
    case 6:
      if (len >= 4) {
        uint32_t off = (uint32_t)req[0] | (uint32_t)req[1] << 8 | (uint32_t)req[2] << 16;
        if (off < MEM_SIZE)
          memcpy(z.mem + off, req + 4, len - 4 < MEM_SIZE - off ? len - 4 : MEM_SIZE - off);
      }
      break;
    }
    free(req);
  }

  vgpu_device_free(z.dev);
  /* the books balance: everything the device charged came back */
  check(vgpu_ledger_used(ledger, VGPU_RES_VRAM) == 0);
  check(vgpu_ledger_used(ledger, VGPU_RES_OBJECTS) == 0);
  check(vgpu_ledger_used(ledger, VGPU_RES_CONTEXTS) == 0);
  check(vgpu_tenant_resource_count(tenant) == 0);
  vgpu_tenant_free(tenant);
  vgpu_ledger_free(ledger);
  vgpu_renderer_free(r);
  free(z.mem);
  return 0;
}
