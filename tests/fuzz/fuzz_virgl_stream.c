/* libFuzzer target for the virgl command stream scanner and the object
 * books (core/virgl_stream.c).  An input is a series of operations, each
 * one byte then its operands:
 *   0 LEN  dwords   a command stream of LEN (one byte) dwords
 *   1 H             the tenant creates resource H (one byte)
 *   2 H             the tenant lets resource H go
 *   3 B             a blob claims the pipe resource streams made for blob
 *                   id B (one byte), and its charge goes with it
 * Checks beyond ASan/UBSan: the scanner never walks past the stream and
 * always says why it refuses; nothing is given back that was not taken;
 * the limits hold; when the tracker goes, everything it charged is back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/virgl_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  uint64_t used[VGPU_RES_N_QUOTA];
  uint64_t limit[VGPU_RES_N_QUOTA];
  uint8_t held[256];
} Books;

static bool b_reserve(void *user, VgpuResKind k, uint64_t amount, const char *what) {
  Books *b = user;
  if (!what || !*what)
    abort();
  if (b->used[k] + amount > b->limit[k])
    return false;
  b->used[k] += amount;
  return true;
}

static void b_release(void *user, VgpuResKind k, uint64_t amount) {
  Books *b = user;
  if (b->used[k] < amount)
    abort(); /* gives back more than it took */
  b->used[k] -= amount;
}

static bool b_has(void *user, uint32_t handle) {
  Books *b = user;
  return handle < 256 && b->held[handle];
}

static void scan_only(const uint32_t *dw, size_t n) {
  size_t off = 0;
  for (;;) {
    VgpuVirglEvent ev;
    const char *why = NULL;
    size_t before = off;
    int r = vgpu_virgl_next(dw, n, &off, &ev, &why);
    if (r <= 0) {
      if (r < 0 && !why)
        abort();
      return;
    }
    if (off <= before || off > n)
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Books b = {
      .limit = {[VGPU_RES_VRAM] = 64u << 20, [VGPU_RES_OBJECTS] = 1000, [VGPU_RES_CONTEXTS] = 4}};
  VgpuVirglCharger ch = {b_reserve, b_release, b_has, &b};
  VgpuVirglTracker *t = vgpu_virgl_tracker_new(VGPU_VIRGL_MIN_MAX_OBJECTS, &ch);
  size_t i = 0;
  while (i < size) {
    uint8_t op = data[i++] % 4;
    if (op == 0) {
      if (i >= size)
        break;
      size_t n = data[i++];
      n = MIN(n, (size - i) / 4);
      uint32_t *dw = g_new0(uint32_t, n + 1);
      memcpy(dw, data + i, n * 4);
      i += n * 4;
      scan_only(dw, n);
      char *why = NULL;
      VgpuVirglResult r = vgpu_virgl_tracker_submit(t, dw, n, &why);
      if ((r == VGPU_VIRGL_MALFORMED || r == VGPU_VIRGL_BOUND) != (why != NULL))
        abort();
      g_free(why);
      g_free(dw);
      if (vgpu_virgl_tracker_objects(t) > VGPU_VIRGL_MIN_MAX_OBJECTS)
        abort();
      if (r != VGPU_VIRGL_OK)
        break; /* the session would end here */
    } else if (op == 3) {
      if (i >= size)
        break;
      VgpuResourceDesc d;
      uint64_t vram = 0, before = b.used[VGPU_RES_VRAM];
      uint32_t pending = vgpu_virgl_tracker_blobs(t);
      if (vgpu_virgl_tracker_blob_take(t, data[i++], &d, &vram) &&
          (b.used[VGPU_RES_VRAM] != before - vram || vgpu_virgl_tracker_blobs(t) != pending - 1))
        abort(); /* the claim hands over exactly the resource's charge */
    } else {
      if (i >= size)
        break;
      uint8_t h = data[i++];
      if (op == 1 && !b.held[h] && b.used[VGPU_RES_OBJECTS] < b.limit[VGPU_RES_OBJECTS]) {
        b.held[h] = 1;
        b.used[VGPU_RES_VRAM] += 4096;
        b.used[VGPU_RES_OBJECTS] += 1;
      } else if (op == 2 && b.held[h]) {
        b.held[h] = 0;
        vgpu_virgl_tracker_resource_gone(t, h, 4096);
      }
    }
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
      if (b.used[k] > b.limit[k] + (k == VGPU_RES_VRAM ? 256u * 4096u : 256u))
        abort();
  }
  vgpu_virgl_tracker_free(t);
  /* Only what the tenant still holds may remain. */
  uint64_t held = 0;
  for (int h = 0; h < 256; h++)
    held += b.held[h];
  if (b.used[VGPU_RES_CONTEXTS] != 0 || b.used[VGPU_RES_OBJECTS] != held ||
      b.used[VGPU_RES_VRAM] != held * 4096)
    abort();
  return 0;
}
