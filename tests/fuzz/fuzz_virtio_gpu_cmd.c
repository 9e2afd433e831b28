/* libFuzzer target for the virtio-gpu command decoder.  Input: one config
 * byte, then the bytes of one request.  The config byte picks the number
 * of scanouts (low 4 bits + 1), the capsets offered (bits 4-5: none,
 * VIRGL, VIRGL+VIRGL2, VIRGL+VIRGL2+VENUS) and the SUBMIT_3D cap (bits
 * 6-7); the request is then decoded on both queues under all 32
 * combinations of the five feature bits, from a buffer of exactly its size
 * so ASan sees any read past it.  Checks: every refusal has a reason and
 * an error code; a decoded command matches its table row (type, queue,
 * features, size); no decoded rectangle or box wraps; the variable parts
 * lie inside the request; scanout ids are in range; the response sizes the
 * builders produce match the table. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio_gpu/vgpu_cmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok) {
  if (!ok)
    abort();
}

static bool wraps(uint32_t a, uint32_t b) {
  uint32_t s;
  return __builtin_add_overflow(a, b, &s);
}

static bool rect_ok(const VgpuRect *r) {
  return !wraps(r->x, r->w) && !wraps(r->y, r->h);
}

static bool inside(const uint8_t *p, size_t n, const uint8_t *buf, size_t len) {
  return p >= buf && (size_t)(p - buf) <= len && n <= len - (size_t)(p - buf);
}

static void check_entries(const VgpuMemEntries *e, const uint8_t *buf, size_t len, size_t fixed) {
  check(e->nr <= VGPU_CMD_MAX_ENTRIES);
  if (e->nr == 0) {
    check(e->raw == NULL);
    return;
  }
  check(e->raw == buf + fixed);
  check(inside(e->raw, (size_t)e->nr * VGPU_CMD_MEM_ENTRY_SIZE, buf, len));
  for (uint32_t i = 0; i < e->nr; i++) {
    uint64_t addr, s;
    uint32_t l;
    vgpu_cmd_mem_entry(e, i, &addr, &l);
    check(!__builtin_add_overflow(addr, (uint64_t)l, &s));
  }
}

static uint8_t resp[4096];

static void check_ok(const VgpuCmdConfig *cfg, VgpuQueue q, const uint8_t *buf, size_t len,
                     const VgpuCmd *c) {
  const VgpuCmdInfo *info = c->info;
  check(info && info == vgpu_cmd_lookup(c->hdr.type) && info->queue == q);
  check((info->features & ~cfg->features) == 0);
  check(len >= info->size);
  check((c->hdr.flags & ~(VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX)) == 0);
  check(c->hdr.ring_idx < VGPU_CMD_MAX_RINGS);
  if (!(c->hdr.flags & VIRTIO_GPU_FLAG_INFO_RING_IDX))
    check(c->hdr.ring_idx == 0);

  /* Response layout from the table. */
  if (q == VGPU_QUEUE_CURSOR) {
    check(info->resp_type == 0 && info->resp_size == 0);
  } else {
    check(info->resp_type >= VIRTIO_GPU_RESP_OK_NODATA &&
          info->resp_type <= VIRTIO_GPU_RESP_OK_MAP_INFO);
    check(vgpu_resp_hdr(&c->hdr, info->resp_type, resp, sizeof(resp)) == VGPU_CMD_HDR_SIZE);
    switch (info->resp_type) {
    case VIRTIO_GPU_RESP_OK_NODATA:
    case VIRTIO_GPU_RESP_OK_CAPSET:
      check(info->resp_size == VGPU_CMD_HDR_SIZE);
      break;
    case VIRTIO_GPU_RESP_OK_DISPLAY_INFO:
      check(vgpu_resp_display_info(&c->hdr, NULL, 0, resp, sizeof(resp)) == info->resp_size);
      break;
    case VIRTIO_GPU_RESP_OK_CAPSET_INFO:
      check(vgpu_resp_capset_info(&c->hdr, 1, 1, 308, resp, sizeof(resp)) == info->resp_size);
      break;
    case VIRTIO_GPU_RESP_OK_EDID:
      check(vgpu_resp_edid(&c->hdr, NULL, 0, resp, sizeof(resp)) == info->resp_size);
      break;
    }
    check(info->resp_var == (info->resp_type == VIRTIO_GPU_RESP_OK_CAPSET));
  }

  switch (c->hdr.type) {
  case VIRTIO_GPU_CMD_SET_SCANOUT:
    check(rect_ok(&c->u.set_scanout.r));
    check(c->u.set_scanout.scanout_id < cfg->num_scanouts);
    break;
  case VIRTIO_GPU_CMD_RESOURCE_FLUSH:
    check(rect_ok(&c->u.flush.r));
    break;
  case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D:
    check(rect_ok(&c->u.transfer_2d.r));
    break;
  case VIRTIO_GPU_CMD_SET_SCANOUT_BLOB:
    check(rect_ok(&c->u.set_scanout_blob.r));
    check(c->u.set_scanout_blob.scanout_id < cfg->num_scanouts);
    break;
  case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D:
  case VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D: {
    const VgpuBox *b = &c->u.transfer_3d.box;
    check(!wraps(b->x, b->w) && !wraps(b->y, b->h) && !wraps(b->z, b->d));
    break;
  }
  case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING:
    check(c->u.attach_backing.entries.nr > 0);
    check_entries(&c->u.attach_backing.entries, buf, len, info->size);
    break;
  case VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB:
    check_entries(&c->u.create_blob.entries, buf, len, info->size);
    break;
  case VIRTIO_GPU_CMD_SUBMIT_3D:
    check(c->u.submit_3d.size <= cfg->submit_max && c->u.submit_3d.size % 4 == 0);
    if (c->u.submit_3d.size)
      check(c->u.submit_3d.data == buf + info->size &&
            inside(c->u.submit_3d.data, c->u.submit_3d.size, buf, len));
    break;
  case VIRTIO_GPU_CMD_CTX_CREATE:
    check(c->u.ctx_create.nlen <= VGPU_CMD_DEBUG_NAME_MAX);
    check(strlen(c->u.ctx_create.debug_name) <= c->u.ctx_create.nlen);
    check(c->hdr.ctx_id != 0);
    break;
  case VIRTIO_GPU_CMD_GET_EDID:
    check(c->u.edid.scanout < cfg->num_scanouts);
    break;
  case VIRTIO_GPU_CMD_GET_CAPSET:
    check(c->u.capset.capset_id < 32 && (cfg->capset_mask >> c->u.capset.capset_id & 1));
    break;
  case VIRTIO_GPU_CMD_RESOURCE_CREATE_2D:
    check(c->u.create_2d.resource_id && c->u.create_2d.width && c->u.create_2d.height);
    break;
  case VIRTIO_GPU_CMD_UPDATE_CURSOR:
  case VIRTIO_GPU_CMD_MOVE_CURSOR:
    check(c->u.cursor.scanout_id < cfg->num_scanouts);
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint32_t capsets[4] = {0, 1u << 1, (1u << 1) | (1u << 2),
                                      (1u << 1) | (1u << 2) | (1u << 4)};
  static const uint32_t caps[4] = {0, 64, 4096, 1u << 20};
  if (size < 1)
    return 0;
  VgpuCmdConfig cfg = {.num_scanouts = 1u + (data[0] & 15u),
                       .capset_mask = capsets[(data[0] >> 4) & 3],
                       .submit_max = caps[data[0] >> 6]};
  size_t len = size - 1;
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf)
    return 0;
  memcpy(buf, data + 1, len);
  for (uint32_t f = 0; f < 32; f++) {
    cfg.features = f;
    for (int q = 0; q < 2; q++) {
      VgpuCmd c;
      int rc = vgpu_cmd_decode(&cfg, (VgpuQueue)q, buf, len, &c);
      if (rc != 0) {
        check(rc == -EINVAL && c.why != NULL && c.why[0] != '\0');
        check(c.err >= VIRTIO_GPU_RESP_ERR_UNSPEC &&
              c.err <= VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        /* An error response can always be built, echoing the fence. */
        check(vgpu_resp_hdr(&c.hdr, c.err, resp, sizeof(resp)) == VGPU_CMD_HDR_SIZE);
        check(c.hdr.ring_idx < VGPU_CMD_MAX_RINGS);
        if (resp[4] & VIRTIO_GPU_FLAG_INFO_RING_IDX) /* only with FENCE */
          check(resp[4] & VIRTIO_GPU_FLAG_FENCE);
      } else {
        check(c.err == 0 && c.why == NULL);
        check_ok(&cfg, (VgpuQueue)q, buf, len, &c);
      }
    }
  }
  free(buf);
  return 0;
}
