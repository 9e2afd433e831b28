/* virtio-gpu command decoder: the bytes of one control-queue or cursor-queue
 * request in, a typed and structurally validated command (or an error
 * response code with a reason) out.  Pure: no I/O, no allocation, no
 * renderer, no device state.  Ids, resource bounds, backing against guest
 * memory and quotas are the device model's to check (docs/ARCHITECTURE.md,
 * "virtio-gpu command decoder").
 *
 * Wire layouts: little-endian, packed, as in the virtio specification and
 * the Linux guest driver; offsets are named per command in vgpu_cmd.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/resource.h"

/* Command types. */
enum {
  VIRTIO_GPU_CMD_GET_DISPLAY_INFO = 0x0100,
  VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
  VIRTIO_GPU_CMD_RESOURCE_UNREF,
  VIRTIO_GPU_CMD_SET_SCANOUT,
  VIRTIO_GPU_CMD_RESOURCE_FLUSH,
  VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
  VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
  VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
  VIRTIO_GPU_CMD_GET_CAPSET_INFO,
  VIRTIO_GPU_CMD_GET_CAPSET,
  VIRTIO_GPU_CMD_GET_EDID,
  VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID,
  VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB,
  VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,

  VIRTIO_GPU_CMD_CTX_CREATE = 0x0200,
  VIRTIO_GPU_CMD_CTX_DESTROY,
  VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE,
  VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE,
  VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
  VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D,
  VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D,
  VIRTIO_GPU_CMD_SUBMIT_3D,
  VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB,
  VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB,

  VIRTIO_GPU_CMD_UPDATE_CURSOR = 0x0300,
  VIRTIO_GPU_CMD_MOVE_CURSOR,
};

/* Response types. */
enum {
  VIRTIO_GPU_RESP_OK_NODATA = 0x1100,
  VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
  VIRTIO_GPU_RESP_OK_CAPSET_INFO,
  VIRTIO_GPU_RESP_OK_CAPSET,
  VIRTIO_GPU_RESP_OK_EDID,
  VIRTIO_GPU_RESP_OK_RESOURCE_UUID,
  VIRTIO_GPU_RESP_OK_MAP_INFO,

  VIRTIO_GPU_RESP_ERR_UNSPEC = 0x1200,
  VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
  VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID,
  VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID,
  VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID,
  VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
};

#define VIRTIO_GPU_FLAG_FENCE 0x1u
#define VIRTIO_GPU_FLAG_INFO_RING_IDX 0x2u

/* Device feature bits (virtio-gpu feature numbers, as a mask here). */
#define VGPU_CMD_F_VIRGL (1u << 0)
#define VGPU_CMD_F_EDID (1u << 1)
#define VGPU_CMD_F_RESOURCE_UUID (1u << 2)
#define VGPU_CMD_F_RESOURCE_BLOB (1u << 3)
#define VGPU_CMD_F_CONTEXT_INIT (1u << 4)

#define VGPU_CMD_HDR_SIZE 24u
#define VGPU_CMD_MAX_SCANOUTS 16u
#define VGPU_CMD_MAX_ENTRIES 16384u /* backing entries per request */
#define VGPU_CMD_MAX_RINGS 64u      /* ring_idx limit (Linux's maximum) */
#define VGPU_CMD_DEBUG_NAME_MAX 64u
#define VGPU_CMD_MEM_ENTRY_SIZE 16u
#define VGPU_CMD_EDID_MAX 1024u

/* Response sizes. */
#define VGPU_RESP_NODATA_SIZE 24u
#define VGPU_RESP_DISPLAY_INFO_SIZE 408u /* 24 + 16 x 24 */
#define VGPU_RESP_CAPSET_INFO_SIZE 40u
#define VGPU_RESP_EDID_SIZE 1056u /* 24 + 8 + 1024 */
#define VGPU_RESP_UUID_SIZE 40u
#define VGPU_RESP_MAP_INFO_SIZE 32u

typedef enum { VGPU_QUEUE_CONTROL = 0, VGPU_QUEUE_CURSOR = 1 } VgpuQueue;

/* What the device offers; the decoder refuses what it did not. */
typedef struct VgpuCmdConfig {
  uint32_t features;     /* VGPU_CMD_F_* negotiated */
  uint32_t num_scanouts; /* 1..16: scanout ids must be below it */
  uint32_t capset_mask;  /* bit n set: capset id n is offered */
  uint32_t submit_max;   /* cap on SUBMIT_3D's size in bytes */
} VgpuCmdConfig;

typedef struct VgpuCmdHdr {
  uint32_t type;
  uint32_t flags; /* FENCE and INFO_RING_IDX only; other bits dropped */
  uint64_t fence_id;
  uint32_t ctx_id;
  uint8_t ring_idx; /* 0 unless INFO_RING_IDX is set */
} VgpuCmdHdr;

typedef struct VgpuRect {
  uint32_t x, y, w, h; /* x + w and y + h do not wrap in 32 bits */
} VgpuRect;

/* Boxes are core/resource.h's VgpuBox; decoded ones have x + w, y + h and
 * z + d that do not wrap. */

/* Decoded variable part: points into the caller's request buffer. */
typedef struct VgpuMemEntries {
  const uint8_t *raw; /* nr x 16 bytes: u64 addr, u32 length, u32 pad */
  uint32_t nr;        /* 1..VGPU_CMD_MAX_ENTRIES for ATTACH_BACKING */
} VgpuMemEntries;

typedef struct VgpuCmdInfo VgpuCmdInfo;

typedef struct VgpuCmd {
  const VgpuCmdInfo *info; /* the table row; NULL for an unknown type */
  VgpuCmdHdr hdr;          /* filled as far as the bytes go, also on error */
  uint32_t err;            /* 0, or VIRTIO_GPU_RESP_ERR_* to answer */
  const char *why;         /* static reason when err != 0 */
  union {
    struct {
      uint32_t resource_id, format, width, height;
    } create_2d;
    struct {
      uint32_t resource_id;
    } resource; /* UNREF, DETACH_BACKING, ASSIGN_UUID,
                   CTX_ATTACH/DETACH, UNMAP_BLOB */
    struct {
      VgpuRect r;
      uint32_t scanout_id, resource_id;
    } set_scanout;
    struct {
      VgpuRect r;
      uint32_t resource_id;
    } flush;
    struct {
      VgpuRect r;
      uint64_t offset;
      uint32_t resource_id;
    } transfer_2d;
    struct {
      uint32_t resource_id;
      VgpuMemEntries entries;
    } attach_backing;
    struct {
      uint32_t capset_index;
    } capset_info;
    struct {
      uint32_t capset_id, capset_version;
    } capset;
    struct {
      uint32_t scanout;
    } edid;
    struct {
      uint32_t resource_id, blob_mem, blob_flags;
      uint64_t blob_id, size;
      VgpuMemEntries entries;
    } create_blob;
    struct {
      VgpuRect r;
      uint32_t scanout_id, resource_id, width, height, format;
      uint32_t strides[4], offsets[4];
    } set_scanout_blob;
    struct {
      uint32_t nlen, context_init;
      char debug_name[VGPU_CMD_DEBUG_NAME_MAX + 1]; /* NUL-terminated copy */
    } ctx_create;
    struct {
      uint32_t resource_id, target, format, bind, width, height, depth;
      uint32_t array_size, last_level, nr_samples, flags;
    } create_3d;
    struct {
      VgpuBox box;
      uint64_t offset;
      uint32_t resource_id, level, stride, layer_stride;
    } transfer_3d;
    struct {
      const uint8_t *data;
      uint32_t size;
    } submit_3d; /* data inside the request */
    struct {
      uint32_t resource_id;
      uint64_t offset;
    } map_blob;
    struct {
      uint32_t scanout_id, x, y, resource_id, hot_x, hot_y;
    } cursor;
  } u;
} VgpuCmd;

/* One row of the dispatch table. */
struct VgpuCmdInfo {
  uint32_t type;
  const char *name;
  uint16_t size;      /* bytes the request must hold (header included) */
  uint16_t elem_size; /* size of each variable element, 0 if none */
  uint8_t queue;      /* VgpuQueue */
  uint32_t features;  /* VGPU_CMD_F_* all required */
  uint32_t resp_type; /* success response; 0 on the cursor queue */
  uint16_t resp_size; /* its size; 0 = no response payload (cursor) */
  bool resp_var;      /* resp_size + the capset's max_size (GET_CAPSET) */
  /* Field decoder and structural checks: 0, or an error code with *why. */
  uint32_t (*decode)(const VgpuCmdConfig *cfg, const uint8_t *p, size_t len, VgpuCmd *out,
                     const char **why);
};

/* The table, one row per command, sorted by type. */
extern const VgpuCmdInfo vgpu_cmd_table[];
extern const size_t vgpu_cmd_table_len;

/* The row for a type, or NULL. */
const VgpuCmdInfo *vgpu_cmd_lookup(uint32_t type);

/* Decodes one request of len bytes that arrived on queue q.  Returns 0 with
 * out filled, or -EINVAL with out->err set to the response code to answer
 * and out->why to a static reason; out->hdr holds what the header said (as
 * far as it arrived) so an error response can echo the fence. */
int vgpu_cmd_decode(const VgpuCmdConfig *cfg, VgpuQueue q, const uint8_t *buf, size_t len,
                    VgpuCmd *out);

/* Entry i (< entries->nr) of a backing list. */
void vgpu_cmd_mem_entry(const VgpuMemEntries *e, uint32_t i, uint64_t *addr, uint32_t *length);

/* Response builders.  Each zeroes the whole response it writes, copies
 * FENCE (and INFO_RING_IDX with ring_idx) from the request header with
 * fence_id and ctx_id, and returns the number of bytes written, or -ENOSPC
 * when cap is too small (nothing is written then). */
int vgpu_resp_hdr(const VgpuCmdHdr *req, uint32_t type, uint8_t *buf, size_t cap);

typedef struct VgpuDisplayMode {
  VgpuRect r;
  uint32_t enabled, flags;
} VgpuDisplayMode;

/* n modes (at most 16; more is -EINVAL), the rest of the 16 zeroed. */
int vgpu_resp_display_info(const VgpuCmdHdr *req, const VgpuDisplayMode *modes, size_t n,
                           uint8_t *buf, size_t cap);
int vgpu_resp_capset_info(const VgpuCmdHdr *req, uint32_t capset_id, uint32_t max_version,
                          uint32_t max_size, uint8_t *buf, size_t cap);
/* Header of an OK_CAPSET of max_size payload bytes; *data points at the
 * zeroed payload for the caller to fill.  max_size 0 is -EINVAL: a capset
 * with no data is not answered. */
int vgpu_resp_capset(const VgpuCmdHdr *req, uint32_t max_size, uint8_t *buf, size_t cap,
                     uint8_t **data);
/* edid_len at most 1024 (else -EINVAL). */
int vgpu_resp_edid(const VgpuCmdHdr *req, const uint8_t *edid, size_t edid_len, uint8_t *buf,
                   size_t cap);
