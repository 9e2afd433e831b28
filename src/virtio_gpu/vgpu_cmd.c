/* virtio-gpu command decoder; see vgpu_cmd.h.
 *
 * Choices, after QEMU's reference back-end (contrib/vhost-user-gpu):
 * - A request shorter than its structure is ERR_UNSPEC (the reference's
 *   "fill the struct from the iovec or fail" answer).  A longer one is
 *   accepted and the extra bytes ignored, as the reference copies only
 *   sizeof(struct); the variable parts (backing entries, SUBMIT_3D's
 *   stream) must lie inside the request.
 * - A command the negotiated features do not cover, an unknown type, and a
 *   command on the wrong queue are ERR_UNSPEC, as the reference answers a
 *   type it does not handle.
 * - Header flags: only FENCE and INFO_RING_IDX are kept.  INFO_RING_IDX is
 *   honoured only with CONTEXT_INIT negotiated and together with FENCE (it
 *   names the ring a fence belongs to; Linux sets it only on fenced
 *   commands), and ring_idx must be below 64: otherwise INVALID_PARAMETER.
 *   Without INFO_RING_IDX the ring_idx byte is ignored and decoded as 0;
 *   after a header refusal the error response echoes FENCE but no ring.
 * - Everything below checks structure only: no id is looked up, no
 *   rectangle is compared to a resource, no address to guest memory.
 *
 * Which check covers which class of bug:
 * - Rectangle/box wraparound (x + w computed in 32 bits passing a bounds
 *   check, then indexing far outside the resource): rect_ok()/box_ok()
 *   refuse any x + w, y + h, z + d that wraps, so a device comparing the
 *   decoded sums in 32 bits cannot be fooled.
 * - CVE-2021-3544 class (allocations leaked or unbounded from guest
 *   counts): nr_entries is capped at 16384 and 16 x nr_entries must lie in
 *   the request, computed with overflow checks; the decoder itself
 *   allocates nothing, so it cannot leak.
 * - CVE-2021-3545 class (uninitialised response bytes reaching the guest):
 *   every response builder zeroes the whole response it writes.
 * - CVE-2021-3546 class (OOB write filling a capset reply sized from a
 *   capset with max_size 0): vgpu_resp_capset() refuses max_size 0 and a
 *   buffer smaller than 24 + max_size; GET_CAPSET of an id not offered is
 *   INVALID_PARAMETER. */
#include "virtio_gpu/vgpu_cmd.h"

#include <errno.h>
#include <string.h>

static uint32_t rd32(const uint8_t *p, size_t off) {
  return (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
         (uint32_t)p[off + 3] << 24;
}

static uint64_t rd64(const uint8_t *p, size_t off) {
  return (uint64_t)rd32(p, off) | (uint64_t)rd32(p, off + 4) << 32;
}

static void wr32(uint8_t *p, size_t off, uint32_t v) {
  p[off] = (uint8_t)v;
  p[off + 1] = (uint8_t)(v >> 8);
  p[off + 2] = (uint8_t)(v >> 16);
  p[off + 3] = (uint8_t)(v >> 24);
}

static void wr64(uint8_t *p, size_t off, uint64_t v) {
  wr32(p, off, (uint32_t)v);
  wr32(p, off + 4, (uint32_t)(v >> 32));
}

/* ---- wire offsets ------------------------------------------------------ */
/* Header. */
#define HDR_TYPE 0
#define HDR_FLAGS 4
#define HDR_FENCE_ID 8
#define HDR_CTX_ID 16
#define HDR_RING_IDX 20
/* A rectangle {x, y, w, h} right after the header. */
#define RECT 24
/* RESOURCE_CREATE_2D */
#define C2D_RESOURCE_ID 24
#define C2D_FORMAT 28
#define C2D_WIDTH 32
#define C2D_HEIGHT 36
#define C2D_SIZE 40
/* Commands with only a resource id (and padding). */
#define RES_RESOURCE_ID 24
#define RES_SIZE 32
/* SET_SCANOUT */
#define SS_SCANOUT_ID 40
#define SS_RESOURCE_ID 44
#define SS_SIZE 48
/* RESOURCE_FLUSH */
#define FL_RESOURCE_ID 40
#define FL_SIZE 48
/* TRANSFER_TO_HOST_2D */
#define T2D_OFFSET 40
#define T2D_RESOURCE_ID 48
#define T2D_SIZE 56
/* RESOURCE_ATTACH_BACKING, then nr_entries x {u64 addr, u32 length, u32 pad} */
#define AB_RESOURCE_ID 24
#define AB_NR_ENTRIES 28
#define AB_SIZE 32
#define ME_ADDR 0
#define ME_LENGTH 8
/* GET_CAPSET_INFO / GET_CAPSET */
#define CI_INDEX 24
#define CI_SIZE 32
#define CS_ID 24
#define CS_VERSION 28
#define CS_SIZE 32
/* GET_EDID */
#define ED_SCANOUT 24
#define ED_SIZE 32
/* RESOURCE_CREATE_BLOB, then nr_entries mem entries */
#define CB_RESOURCE_ID 24
#define CB_BLOB_MEM 28
#define CB_BLOB_FLAGS 32
#define CB_NR_ENTRIES 36
#define CB_BLOB_ID 40
#define CB_BLOB_SIZE 48
#define CB_SIZE 56
/* SET_SCANOUT_BLOB */
#define SB_SCANOUT_ID 40
#define SB_RESOURCE_ID 44
#define SB_WIDTH 48
#define SB_HEIGHT 52
#define SB_FORMAT 56
#define SB_STRIDES 64
#define SB_OFFSETS 80
#define SB_SIZE 96
/* CTX_CREATE */
#define CC_NLEN 24
#define CC_CONTEXT_INIT 28
#define CC_DEBUG_NAME 32
#define CC_SIZE 96
/* RESOURCE_CREATE_3D */
#define C3D_RESOURCE_ID 24
#define C3D_TARGET 28
#define C3D_FORMAT 32
#define C3D_BIND 36
#define C3D_WIDTH 40
#define C3D_HEIGHT 44
#define C3D_DEPTH 48
#define C3D_ARRAY_SIZE 52
#define C3D_LAST_LEVEL 56
#define C3D_NR_SAMPLES 60
#define C3D_FLAGS 64
#define C3D_SIZE 72
/* TRANSFER_TO/FROM_HOST_3D: box {x, y, z, w, h, d} at 24 */
#define T3D_BOX 24
#define T3D_OFFSET 48
#define T3D_RESOURCE_ID 56
#define T3D_LEVEL 60
#define T3D_STRIDE 64
#define T3D_LAYER_STRIDE 68
#define T3D_SIZE 72
/* SUBMIT_3D, then size bytes of virgl stream */
#define S3D_SIZE_FIELD 24
#define S3D_SIZE 32
/* RESOURCE_MAP_BLOB */
#define MB_RESOURCE_ID 24
#define MB_OFFSET 32
#define MB_SIZE 40
/* UPDATE_CURSOR / MOVE_CURSOR: pos {scanout_id, x, y, pad} at 24 */
#define CU_SCANOUT_ID 24
#define CU_X 28
#define CU_Y 32
#define CU_RESOURCE_ID 40
#define CU_HOT_X 44
#define CU_HOT_Y 48
#define CU_SIZE 56

/* Response offsets. */
#define RDI_MODES 24
#define RDI_MODE_SIZE 24
#define RCI_ID 24
#define RCI_MAX_VERSION 28
#define RCI_MAX_SIZE 32
#define RED_SIZE 24
#define RED_EDID 32

/* Blob memory types and flags. */
#define BLOB_MEM_GUEST 1u
#define BLOB_MEM_HOST3D 2u
#define BLOB_MEM_HOST3D_GUEST 3u
#define BLOB_FLAGS_KNOWN 0x7u      /* USE_MAPPABLE, USE_SHAREABLE, USE_CROSS_DEVICE */
#define CREATE_3D_FLAGS_KNOWN 0x1u /* Y_0_TOP */
#define PIPE_TARGETS 9u            /* BUFFER .. CUBE_ARRAY */
#define CONTEXT_INIT_CAPSET_MASK 0xffu

/* ---- structural checks ------------------------------------------------- */
static bool format_2d_ok(uint32_t f) {
  switch (f) {
  case 1:   /* B8G8R8A8_UNORM */
  case 2:   /* B8G8R8X8_UNORM */
  case 3:   /* A8R8G8B8_UNORM */
  case 4:   /* X8R8G8B8_UNORM */
  case 67:  /* R8G8B8A8_UNORM */
  case 68:  /* X8B8G8R8_UNORM */
  case 121: /* A8B8G8R8_UNORM */
  case 134: /* R8G8B8X8_UNORM */
    return true;
  default:
    return false;
  }
}

static bool add_ok(uint32_t a, uint32_t b) {
  uint32_t s;
  return !__builtin_add_overflow(a, b, &s);
}

static VgpuRect rd_rect(const uint8_t *p, size_t off) {
  return (VgpuRect){rd32(p, off), rd32(p, off + 4), rd32(p, off + 8), rd32(p, off + 12)};
}

static bool rect_ok(const VgpuRect *r) {
  return add_ok(r->x, r->w) && add_ok(r->y, r->h);
}

/* Reads the rectangle every rectangle-carrying command has at RECT; an
 * error code with *why = @wraps when its far corner wraps. */
static uint32_t rect_decode(const uint8_t *p, VgpuRect *r, const char *wraps, const char **why) {
  *r = rd_rect(p, RECT);
  if (rect_ok(r))
    return 0;
  *why = wraps;
  return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
}

/* Backing entries after a fixed part of fixed bytes: nr bounded, all
 * inside the request, each addr + length not wrapping. */
static uint32_t entries_decode(const uint8_t *p, size_t len, size_t fixed, uint32_t nr,
                               bool allow_zero, VgpuMemEntries *e, const char **why) {
  size_t bytes, end;
  if (nr == 0 && !allow_zero) {
    *why = "no backing entries";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (nr > VGPU_CMD_MAX_ENTRIES) {
    *why = "more than 16384 backing entries";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (__builtin_mul_overflow((size_t)nr, (size_t)VGPU_CMD_MEM_ENTRY_SIZE, &bytes) ||
      __builtin_add_overflow(fixed, bytes, &end) || end > len) {
    *why = "backing entries run past the request";
    return VIRTIO_GPU_RESP_ERR_UNSPEC;
  }
  for (uint32_t i = 0; i < nr; i++) {
    const uint8_t *m = p + fixed + (size_t)i * VGPU_CMD_MEM_ENTRY_SIZE;
    uint64_t addr = rd64(m, ME_ADDR), s;
    if (__builtin_add_overflow(addr, (uint64_t)rd32(m, ME_LENGTH), &s)) {
      *why = "backing entry address + length wraps";
      return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    }
  }
  e->raw = nr ? p + fixed : NULL;
  e->nr = nr;
  return 0;
}

static uint32_t scanout_check(const VgpuCmdConfig *cfg, uint32_t id, const char **why) {
  if (id >= cfg->num_scanouts || id >= VGPU_CMD_MAX_SCANOUTS) {
    *why = "scanout id out of range";
    return VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID;
  }
  return 0;
}

static uint32_t resource_nonzero(uint32_t id, const char **why) {
  if (id == 0) {
    *why = "resource id 0";
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  }
  return 0;
}

/* ---- per-command decoders ---------------------------------------------- */
#define UNUSED(x) (void)(x)

static uint32_t dec_nothing(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                            const char **why) {
  UNUSED(cfg), UNUSED(p), UNUSED(len), UNUSED(o), UNUSED(why);
  return 0;
}

static uint32_t dec_create_2d(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                              const char **why) {
  UNUSED(cfg), UNUSED(len);
  o->u.create_2d.resource_id = rd32(p, C2D_RESOURCE_ID);
  o->u.create_2d.format = rd32(p, C2D_FORMAT);
  o->u.create_2d.width = rd32(p, C2D_WIDTH);
  o->u.create_2d.height = rd32(p, C2D_HEIGHT);
  if (resource_nonzero(o->u.create_2d.resource_id, why))
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (!format_2d_ok(o->u.create_2d.format)) {
    *why = "unknown 2D format";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (o->u.create_2d.width == 0 || o->u.create_2d.height == 0) {
    *why = "empty 2D resource";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return 0;
}

static uint32_t dec_resource(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                             const char **why) {
  UNUSED(cfg), UNUSED(len), UNUSED(why);
  o->u.resource.resource_id = rd32(p, RES_RESOURCE_ID);
  return 0;
}

static uint32_t dec_set_scanout(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                                const char **why) {
  UNUSED(len);
  o->u.set_scanout.scanout_id = rd32(p, SS_SCANOUT_ID);
  o->u.set_scanout.resource_id = rd32(p, SS_RESOURCE_ID);
  uint32_t e = scanout_check(cfg, o->u.set_scanout.scanout_id, why);
  return e ? e : rect_decode(p, &o->u.set_scanout.r, "scanout rectangle wraps", why);
}

static uint32_t dec_flush(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                          const char **why) {
  UNUSED(cfg), UNUSED(len);
  o->u.flush.resource_id = rd32(p, FL_RESOURCE_ID);
  return rect_decode(p, &o->u.flush.r, "flush rectangle wraps", why);
}

static uint32_t dec_transfer_2d(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                                const char **why) {
  UNUSED(cfg), UNUSED(len);
  o->u.transfer_2d.offset = rd64(p, T2D_OFFSET);
  o->u.transfer_2d.resource_id = rd32(p, T2D_RESOURCE_ID);
  return rect_decode(p, &o->u.transfer_2d.r, "transfer rectangle wraps", why);
}

static uint32_t dec_attach_backing(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len,
                                   VgpuCmd *o, const char **why) {
  UNUSED(cfg);
  o->u.attach_backing.resource_id = rd32(p, AB_RESOURCE_ID);
  return entries_decode(p, len, AB_SIZE, rd32(p, AB_NR_ENTRIES), false,
                        &o->u.attach_backing.entries, why);
}

static uint32_t dec_capset_info(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                                const char **why) {
  UNUSED(len);
  o->u.capset_info.capset_index = rd32(p, CI_INDEX);
  if (o->u.capset_info.capset_index >= (uint32_t)__builtin_popcount(cfg->capset_mask)) {
    *why = "capset index out of range";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return 0;
}

static uint32_t dec_capset(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                           const char **why) {
  UNUSED(len);
  o->u.capset.capset_id = rd32(p, CS_ID);
  o->u.capset.capset_version = rd32(p, CS_VERSION);
  if (o->u.capset.capset_id >= 32 || !(cfg->capset_mask & (1u << o->u.capset.capset_id))) {
    *why = "capset id not offered";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return 0;
}

static uint32_t dec_edid(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                         const char **why) {
  UNUSED(len);
  o->u.edid.scanout = rd32(p, ED_SCANOUT);
  return scanout_check(cfg, o->u.edid.scanout, why);
}

static uint32_t dec_create_blob(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                                const char **why) {
  o->u.create_blob.resource_id = rd32(p, CB_RESOURCE_ID);
  o->u.create_blob.blob_mem = rd32(p, CB_BLOB_MEM);
  o->u.create_blob.blob_flags = rd32(p, CB_BLOB_FLAGS);
  o->u.create_blob.blob_id = rd64(p, CB_BLOB_ID);
  o->u.create_blob.size = rd64(p, CB_BLOB_SIZE);
  uint32_t nr = rd32(p, CB_NR_ENTRIES), mem = o->u.create_blob.blob_mem;
  if (resource_nonzero(o->u.create_blob.resource_id, why))
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (mem != BLOB_MEM_GUEST && mem != BLOB_MEM_HOST3D && mem != BLOB_MEM_HOST3D_GUEST) {
    *why = "unknown blob memory type";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (mem != BLOB_MEM_GUEST && !(cfg->features & VGPU_CMD_F_VIRGL)) {
    *why = "host3d blob without the VIRGL feature";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (o->u.create_blob.blob_flags & ~BLOB_FLAGS_KNOWN) {
    *why = "unknown blob flags";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (o->u.create_blob.size == 0) {
    *why = "empty blob";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (mem == BLOB_MEM_HOST3D && nr != 0) {
    *why = "host3d blob with guest backing entries";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return entries_decode(p, len, CB_SIZE, nr, mem == BLOB_MEM_HOST3D, &o->u.create_blob.entries,
                        why);
}

static uint32_t dec_set_scanout_blob(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len,
                                     VgpuCmd *o, const char **why) {
  UNUSED(len);
  __typeof__(o->u.set_scanout_blob) *s = &o->u.set_scanout_blob;
  s->scanout_id = rd32(p, SB_SCANOUT_ID);
  s->resource_id = rd32(p, SB_RESOURCE_ID);
  s->width = rd32(p, SB_WIDTH);
  s->height = rd32(p, SB_HEIGHT);
  s->format = rd32(p, SB_FORMAT);
  for (unsigned i = 0; i < 4; i++) {
    s->strides[i] = rd32(p, SB_STRIDES + 4 * i);
    s->offsets[i] = rd32(p, SB_OFFSETS + 4 * i);
  }
  uint32_t e = scanout_check(cfg, s->scanout_id, why);
  if (!e)
    e = rect_decode(p, &s->r, "scanout rectangle wraps", why);
  if (e)
    return e;
  if (s->resource_id == 0) /* disable: the rest is not used */
    return 0;
  if (!format_2d_ok(s->format)) {
    *why = "unknown scanout blob format";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  /* Both sizes are in the command: the rectangle must lie inside them. */
  if (s->r.x + s->r.w > s->width || s->r.y + s->r.h > s->height) {
    *why = "scanout rectangle outside the blob framebuffer";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return 0;
}

static uint32_t dec_ctx_create(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                               const char **why) {
  UNUSED(len);
  uint32_t nlen = rd32(p, CC_NLEN), init = rd32(p, CC_CONTEXT_INIT);
  o->u.ctx_create.nlen = nlen;
  o->u.ctx_create.context_init = init;
  if (o->hdr.ctx_id == 0) {
    *why = "context id 0";
    return VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
  }
  if (nlen > VGPU_CMD_DEBUG_NAME_MAX) {
    *why = "debug name longer than 64 bytes";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (init & ~CONTEXT_INIT_CAPSET_MASK) {
    *why = "unknown context_init bits";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (init != 0) {
    if (!(cfg->features & VGPU_CMD_F_CONTEXT_INIT)) {
      *why = "context_init without the CONTEXT_INIT feature";
      return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    }
    if (init >= 32 || !(cfg->capset_mask & (1u << init))) {
      *why = "context capset not offered";
      return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
    }
  }
  memcpy(o->u.ctx_create.debug_name, p + CC_DEBUG_NAME, nlen);
  o->u.ctx_create.debug_name[nlen] = '\0';
  return 0;
}

static uint32_t dec_create_3d(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                              const char **why) {
  UNUSED(cfg), UNUSED(len);
  __typeof__(o->u.create_3d) *c = &o->u.create_3d;
  c->resource_id = rd32(p, C3D_RESOURCE_ID);
  c->target = rd32(p, C3D_TARGET);
  c->format = rd32(p, C3D_FORMAT);
  c->bind = rd32(p, C3D_BIND);
  c->width = rd32(p, C3D_WIDTH);
  c->height = rd32(p, C3D_HEIGHT);
  c->depth = rd32(p, C3D_DEPTH);
  c->array_size = rd32(p, C3D_ARRAY_SIZE);
  c->last_level = rd32(p, C3D_LAST_LEVEL);
  c->nr_samples = rd32(p, C3D_NR_SAMPLES);
  c->flags = rd32(p, C3D_FLAGS);
  if (resource_nonzero(c->resource_id, why))
    return VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID;
  if (c->target >= PIPE_TARGETS) {
    *why = "unknown 3D resource target";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (c->flags & ~CREATE_3D_FLAGS_KNOWN) {
    *why = "unknown 3D resource flags";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (!c->width || !c->height || !c->depth || !c->array_size) {
    *why = "empty 3D resource";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return 0;
}

static uint32_t dec_transfer_3d(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                                const char **why) {
  UNUSED(cfg), UNUSED(len);
  __typeof__(o->u.transfer_3d) *t = &o->u.transfer_3d;
  t->box = (VgpuBox){rd32(p, T3D_BOX),      rd32(p, T3D_BOX + 4),  rd32(p, T3D_BOX + 8),
                     rd32(p, T3D_BOX + 12), rd32(p, T3D_BOX + 16), rd32(p, T3D_BOX + 20)};
  t->offset = rd64(p, T3D_OFFSET);
  t->resource_id = rd32(p, T3D_RESOURCE_ID);
  t->level = rd32(p, T3D_LEVEL);
  t->stride = rd32(p, T3D_STRIDE);
  t->layer_stride = rd32(p, T3D_LAYER_STRIDE);
  if (!add_ok(t->box.x, t->box.w) || !add_ok(t->box.y, t->box.h) || !add_ok(t->box.z, t->box.d)) {
    *why = "transfer box wraps";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  return 0;
}

static uint32_t dec_submit_3d(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                              const char **why) {
  uint32_t size = rd32(p, S3D_SIZE_FIELD);
  if (size > len - S3D_SIZE) { /* len >= S3D_SIZE here */
    *why = "SUBMIT_3D size exceeds the request";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (size > cfg->submit_max) {
    *why = "SUBMIT_3D size over the cap";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  if (size % 4) {
    *why = "SUBMIT_3D size not a multiple of 4";
    return VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  }
  o->u.submit_3d.data = size ? p + S3D_SIZE : NULL;
  o->u.submit_3d.size = size;
  return 0;
}

static uint32_t dec_map_blob(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                             const char **why) {
  UNUSED(cfg), UNUSED(len), UNUSED(why);
  o->u.map_blob.resource_id = rd32(p, MB_RESOURCE_ID);
  o->u.map_blob.offset = rd64(p, MB_OFFSET);
  return 0;
}

static uint32_t dec_cursor(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *o,
                           const char **why) {
  UNUSED(len);
  o->u.cursor.scanout_id = rd32(p, CU_SCANOUT_ID);
  o->u.cursor.x = rd32(p, CU_X);
  o->u.cursor.y = rd32(p, CU_Y);
  o->u.cursor.resource_id = rd32(p, CU_RESOURCE_ID);
  o->u.cursor.hot_x = rd32(p, CU_HOT_X);
  o->u.cursor.hot_y = rd32(p, CU_HOT_Y);
  return scanout_check(cfg, o->u.cursor.scanout_id, why);
}

/* ---- the dispatch table ------------------------------------------------ */
/* One row per command.  elem_size: 16 for the backing entries that follow
 * ATTACH_BACKING and CREATE_BLOB, 1 for SUBMIT_3D's byte stream.  MAP and
 * UNMAP_BLOB act on host3d blobs, so they need VIRGL as well as
 * RESOURCE_BLOB.  GET_CAPSET_INFO/GET_CAPSET need no feature bit: with no
 * capset offered (capset_mask 0) every index and id is refused. */
/* A control-queue row: command, request size, size of each variable
 * element (0: none), features required, success response and its size,
 * decoder. */
#define CONTROL_ROW(cmd, req_size, elem, feat, resp, rsize, dec)                                   \
  {                                                                                                \
    .type = VIRTIO_GPU_CMD_##cmd, .name = #cmd, .size = (req_size), .elem_size = (elem),           \
    .queue = VGPU_QUEUE_CONTROL, .features = (feat), .resp_type = VIRTIO_GPU_RESP_##resp,          \
    .resp_size = (rsize), .decode = (dec)                                                          \
  }
/* A cursor-queue row: no feature bit, no response. */
#define CURSOR_ROW(cmd, req_size, dec)                                                             \
  {                                                                                                \
    .type = VIRTIO_GPU_CMD_##cmd, .name = #cmd, .size = (req_size), .queue = VGPU_QUEUE_CURSOR,    \
    .decode = (dec)                                                                                \
  }

const VgpuCmdInfo vgpu_cmd_table[] = {
    CONTROL_ROW(GET_DISPLAY_INFO, VGPU_CMD_HDR_SIZE, 0, 0, OK_DISPLAY_INFO,
                VGPU_RESP_DISPLAY_INFO_SIZE, dec_nothing),
    CONTROL_ROW(RESOURCE_CREATE_2D, C2D_SIZE, 0, 0, OK_NODATA, VGPU_RESP_NODATA_SIZE,
                dec_create_2d),
    CONTROL_ROW(RESOURCE_UNREF, RES_SIZE, 0, 0, OK_NODATA, VGPU_RESP_NODATA_SIZE, dec_resource),
    CONTROL_ROW(SET_SCANOUT, SS_SIZE, 0, 0, OK_NODATA, VGPU_RESP_NODATA_SIZE, dec_set_scanout),
    CONTROL_ROW(RESOURCE_FLUSH, FL_SIZE, 0, 0, OK_NODATA, VGPU_RESP_NODATA_SIZE, dec_flush),
    CONTROL_ROW(TRANSFER_TO_HOST_2D, T2D_SIZE, 0, 0, OK_NODATA, VGPU_RESP_NODATA_SIZE,
                dec_transfer_2d),
    CONTROL_ROW(RESOURCE_ATTACH_BACKING, AB_SIZE, VGPU_CMD_MEM_ENTRY_SIZE, 0, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_attach_backing),
    CONTROL_ROW(RESOURCE_DETACH_BACKING, RES_SIZE, 0, 0, OK_NODATA, VGPU_RESP_NODATA_SIZE,
                dec_resource),
    CONTROL_ROW(GET_CAPSET_INFO, CI_SIZE, 0, 0, OK_CAPSET_INFO, VGPU_RESP_CAPSET_INFO_SIZE,
                dec_capset_info),
    {.type = VIRTIO_GPU_CMD_GET_CAPSET,
     .name = "GET_CAPSET",
     .size = CS_SIZE,
     .queue = VGPU_QUEUE_CONTROL,
     .features = 0,
     .resp_type = VIRTIO_GPU_RESP_OK_CAPSET,
     .resp_size = VGPU_CMD_HDR_SIZE,
     .resp_var = true, /* + the capset's max_size */
     .decode = dec_capset},
    CONTROL_ROW(GET_EDID, ED_SIZE, 0, VGPU_CMD_F_EDID, OK_EDID, VGPU_RESP_EDID_SIZE, dec_edid),
    CONTROL_ROW(RESOURCE_ASSIGN_UUID, RES_SIZE, 0, VGPU_CMD_F_RESOURCE_UUID, OK_RESOURCE_UUID,
                VGPU_RESP_UUID_SIZE, dec_resource),
    CONTROL_ROW(RESOURCE_CREATE_BLOB, CB_SIZE, VGPU_CMD_MEM_ENTRY_SIZE, VGPU_CMD_F_RESOURCE_BLOB,
                OK_NODATA, VGPU_RESP_NODATA_SIZE, dec_create_blob),
    CONTROL_ROW(SET_SCANOUT_BLOB, SB_SIZE, 0, VGPU_CMD_F_RESOURCE_BLOB, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_set_scanout_blob),
    CONTROL_ROW(CTX_CREATE, CC_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA, VGPU_RESP_NODATA_SIZE,
                dec_ctx_create),
    CONTROL_ROW(CTX_DESTROY, VGPU_CMD_HDR_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_nothing),
    CONTROL_ROW(CTX_ATTACH_RESOURCE, RES_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_resource),
    CONTROL_ROW(CTX_DETACH_RESOURCE, RES_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_resource),
    CONTROL_ROW(RESOURCE_CREATE_3D, C3D_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA, VGPU_RESP_NODATA_SIZE,
                dec_create_3d),
    CONTROL_ROW(TRANSFER_TO_HOST_3D, T3D_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_transfer_3d),
    CONTROL_ROW(TRANSFER_FROM_HOST_3D, T3D_SIZE, 0, VGPU_CMD_F_VIRGL, OK_NODATA,
                VGPU_RESP_NODATA_SIZE, dec_transfer_3d),
    CONTROL_ROW(SUBMIT_3D, S3D_SIZE, 1, VGPU_CMD_F_VIRGL, OK_NODATA, VGPU_RESP_NODATA_SIZE,
                dec_submit_3d),
    CONTROL_ROW(RESOURCE_MAP_BLOB, MB_SIZE, 0, VGPU_CMD_F_VIRGL | VGPU_CMD_F_RESOURCE_BLOB,
                OK_MAP_INFO, VGPU_RESP_MAP_INFO_SIZE, dec_map_blob),
    CONTROL_ROW(RESOURCE_UNMAP_BLOB, RES_SIZE, 0, VGPU_CMD_F_VIRGL | VGPU_CMD_F_RESOURCE_BLOB,
                OK_NODATA, VGPU_RESP_NODATA_SIZE, dec_resource),
    CURSOR_ROW(UPDATE_CURSOR, CU_SIZE, dec_cursor),
    CURSOR_ROW(MOVE_CURSOR, CU_SIZE, dec_cursor),
};
const size_t vgpu_cmd_table_len = sizeof(vgpu_cmd_table) / sizeof(vgpu_cmd_table[0]);

const VgpuCmdInfo *vgpu_cmd_lookup(uint32_t type) {
  for (size_t i = 0; i < vgpu_cmd_table_len; i++)
    if (vgpu_cmd_table[i].type == type)
      return &vgpu_cmd_table[i];
  return NULL;
}

static const char *feature_name(uint32_t missing) {
  if (missing & VGPU_CMD_F_VIRGL)
    return "command needs the VIRGL feature";
  if (missing & VGPU_CMD_F_EDID)
    return "command needs the EDID feature";
  if (missing & VGPU_CMD_F_RESOURCE_UUID)
    return "command needs the RESOURCE_UUID feature";
  return "command needs the RESOURCE_BLOB feature";
}

static int refuse(VgpuCmd *out, uint32_t err, const char *why) {
  out->err = err;
  out->why = why;
  return -EINVAL;
}

int vgpu_cmd_decode(const VgpuCmdConfig *cfg, VgpuQueue q, const uint8_t *buf, size_t len,
                    VgpuCmd *out) {
  memset(out, 0, sizeof(*out));
  if (len < VGPU_CMD_HDR_SIZE) {
    if (len >= HDR_FLAGS) /* enough for the type: name it in the reason */
      out->hdr.type = rd32(buf, HDR_TYPE);
    return refuse(out, VIRTIO_GPU_RESP_ERR_UNSPEC, "request shorter than the header");
  }
  VgpuCmdHdr *h = &out->hdr;
  uint32_t raw_flags = rd32(buf, HDR_FLAGS);
  h->type = rd32(buf, HDR_TYPE);
  h->flags = raw_flags & (VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
  h->fence_id = rd64(buf, HDR_FENCE_ID);
  h->ctx_id = rd32(buf, HDR_CTX_ID);
  if (h->flags & VIRTIO_GPU_FLAG_INFO_RING_IDX) {
    const char *bad = NULL;
    if (!(cfg->features & VGPU_CMD_F_CONTEXT_INIT))
      bad = "INFO_RING_IDX without the CONTEXT_INIT feature";
    else if (!(h->flags & VIRTIO_GPU_FLAG_FENCE))
      bad = "INFO_RING_IDX without FENCE";
    else if (buf[HDR_RING_IDX] >= VGPU_CMD_MAX_RINGS)
      bad = "ring_idx out of range";
    if (bad) { /* the error response echoes no ring */
      h->flags &= ~VIRTIO_GPU_FLAG_INFO_RING_IDX;
      return refuse(out, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER, bad);
    }
    h->ring_idx = buf[HDR_RING_IDX];
  }

  const VgpuCmdInfo *info = vgpu_cmd_lookup(h->type);
  if (!info)
    return refuse(out, VIRTIO_GPU_RESP_ERR_UNSPEC, "unknown command type");
  out->info = info;
  if (info->queue != q)
    return refuse(out, VIRTIO_GPU_RESP_ERR_UNSPEC,
                  q == VGPU_QUEUE_CONTROL ? "cursor command on the control queue"
                                          : "control command on the cursor queue");
  uint32_t missing = info->features & ~cfg->features;
  if (missing)
    return refuse(out, VIRTIO_GPU_RESP_ERR_UNSPEC, feature_name(missing));
  if (len < info->size)
    return refuse(out, VIRTIO_GPU_RESP_ERR_UNSPEC, "request shorter than its command");
  const char *why = NULL;
  uint32_t err = info->decode(cfg, buf, len, out, &why);
  if (err) {
    memset(&out->u, 0, sizeof(out->u));
    return refuse(out, err, why ? why : "invalid command");
  }
  return 0;
}

void vgpu_cmd_mem_entry(const VgpuMemEntries *e, uint32_t i, uint64_t *addr, uint32_t *length) {
  const uint8_t *m = e->raw + (size_t)i * VGPU_CMD_MEM_ENTRY_SIZE;
  *addr = rd64(m, ME_ADDR);
  *length = rd32(m, ME_LENGTH);
}

/* ---- responses --------------------------------------------------------- */
static int resp_start(const VgpuCmdHdr *req, uint32_t type, uint8_t *buf, size_t cap, size_t size) {
  if (cap < size)
    return -ENOSPC;
  memset(buf, 0, size);
  uint32_t flags = req->flags & VIRTIO_GPU_FLAG_FENCE;
  if (flags && (req->flags & VIRTIO_GPU_FLAG_INFO_RING_IDX) && req->ring_idx < VGPU_CMD_MAX_RINGS)
    flags |= VIRTIO_GPU_FLAG_INFO_RING_IDX;
  wr32(buf, HDR_TYPE, type);
  wr32(buf, HDR_FLAGS, flags);
  if (flags & VIRTIO_GPU_FLAG_FENCE) {
    wr64(buf, HDR_FENCE_ID, req->fence_id);
    if (flags & VIRTIO_GPU_FLAG_INFO_RING_IDX)
      buf[HDR_RING_IDX] = req->ring_idx;
  }
  wr32(buf, HDR_CTX_ID, req->ctx_id);
  return (int)size;
}

int vgpu_resp_hdr(const VgpuCmdHdr *req, uint32_t type, uint8_t *buf, size_t cap) {
  return resp_start(req, type, buf, cap, VGPU_CMD_HDR_SIZE);
}

int vgpu_resp_display_info(const VgpuCmdHdr *req, const VgpuDisplayMode *modes, size_t n,
                           uint8_t *buf, size_t cap) {
  if (n > VGPU_CMD_MAX_SCANOUTS)
    return -EINVAL;
  int rc = resp_start(req, VIRTIO_GPU_RESP_OK_DISPLAY_INFO, buf, cap, VGPU_RESP_DISPLAY_INFO_SIZE);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    size_t o = RDI_MODES + i * RDI_MODE_SIZE;
    wr32(buf, o, modes[i].r.x);
    wr32(buf, o + 4, modes[i].r.y);
    wr32(buf, o + 8, modes[i].r.w);
    wr32(buf, o + 12, modes[i].r.h);
    wr32(buf, o + 16, modes[i].enabled);
    wr32(buf, o + 20, modes[i].flags);
  }
  return rc;
}

int vgpu_resp_capset_info(const VgpuCmdHdr *req, uint32_t capset_id, uint32_t max_version,
                          uint32_t max_size, uint8_t *buf, size_t cap) {
  int rc = resp_start(req, VIRTIO_GPU_RESP_OK_CAPSET_INFO, buf, cap, VGPU_RESP_CAPSET_INFO_SIZE);
  if (rc < 0)
    return rc;
  wr32(buf, RCI_ID, capset_id);
  wr32(buf, RCI_MAX_VERSION, max_version);
  wr32(buf, RCI_MAX_SIZE, max_size);
  return rc;
}

int vgpu_resp_capset(const VgpuCmdHdr *req, uint32_t max_size, uint8_t *buf, size_t cap,
                     uint8_t **data) {
  size_t size;
  if (max_size == 0 || max_size > INT32_MAX - VGPU_CMD_HDR_SIZE)
    return -EINVAL;
  size = VGPU_CMD_HDR_SIZE + (size_t)max_size;
  int rc = resp_start(req, VIRTIO_GPU_RESP_OK_CAPSET, buf, cap, size);
  if (rc < 0)
    return rc;
  *data = buf + VGPU_CMD_HDR_SIZE;
  return rc;
}

int vgpu_resp_edid(const VgpuCmdHdr *req, const uint8_t *edid, size_t edid_len, uint8_t *buf,
                   size_t cap) {
  if (edid_len > VGPU_CMD_EDID_MAX)
    return -EINVAL;
  int rc = resp_start(req, VIRTIO_GPU_RESP_OK_EDID, buf, cap, VGPU_RESP_EDID_SIZE);
  if (rc < 0)
    return rc;
  wr32(buf, RED_SIZE, (uint32_t)edid_len);
  if (edid_len)
    memcpy(buf + RED_EDID, edid, edid_len);
  return rc;
}
