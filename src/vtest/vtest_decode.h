/* vtest wire format: decode and validate one client command in place.
 *
 * The decoder is pure (no I/O, no allocation) so the fuzzer can drive it
 * directly.  It parses by command id, never trusting the header length for
 * the body size where Mesa is known to disagree with itself (see
 * docs/ARCHITECTURE.md, "vtest quirks"). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/resource.h"

enum {
  VTEST_CMD_GET_CAPS = 1,
  VTEST_CMD_RESOURCE_CREATE = 2,
  VTEST_CMD_RESOURCE_UNREF = 3,
  VTEST_CMD_TRANSFER_GET = 4,
  VTEST_CMD_TRANSFER_PUT = 5,
  VTEST_CMD_SUBMIT_CMD = 6,
  VTEST_CMD_RESOURCE_BUSY_WAIT = 7,
  VTEST_CMD_CREATE_RENDERER = 8,
  VTEST_CMD_GET_CAPS2 = 9,
  VTEST_CMD_PING_PROTOCOL_VERSION = 10,
  VTEST_CMD_PROTOCOL_VERSION = 11,
  VTEST_CMD_RESOURCE_CREATE2 = 12,
  VTEST_CMD_TRANSFER_GET2 = 13,
  VTEST_CMD_TRANSFER_PUT2 = 14,
  VTEST_CMD_GET_PARAM = 15,
  VTEST_CMD_GET_CAPSET = 16,
  VTEST_CMD_CONTEXT_INIT = 17,
  VTEST_CMD_RESOURCE_CREATE_BLOB = 18,
  VTEST_CMD_SYNC_CREATE = 19,
  VTEST_CMD_SYNC_UNREF = 20,
  VTEST_CMD_SYNC_READ = 21,
  VTEST_CMD_SYNC_WRITE = 22,
  VTEST_CMD_SYNC_WAIT = 23,
  VTEST_CMD_SUBMIT_CMD2 = 24,
  VTEST_CMD_MAX_KNOWN = 38, /* ids up to here exist in some protocol version */
};

#define VTEST_HDR_SIZE 8u
#define VTEST_BUSY_WAIT_FLAG_WAIT 1u
/* Highest protocol version this server speaks: 3 adds server-chosen
 * handles, blob resources, sync objects and SUBMIT_CMD2.  A renderer
 * without blobs gets 2 (see VtestSessionConfig.max_version). */
#define VTEST_PROTOCOL_VERSION 3u

#define VTEST_PARAM_MAX_TIMELINE_COUNT 1u
/* Rings a SUBMIT_CMD2 batch may name (the reference's count). */
#define VTEST_MAX_TIMELINES 64u

/* RESOURCE_CREATE_BLOB types and flags (virglrenderer.h's values). */
#define VTEST_BLOB_MEM_GUEST 1u
#define VTEST_BLOB_MEM_HOST3D 2u
#define VTEST_BLOB_MEM_HOST3D_GUEST 3u
#define VTEST_BLOB_FLAG_MAPPABLE 1u
#define VTEST_BLOB_FLAG_SHAREABLE 2u
#define VTEST_BLOB_FLAG_CROSS_DEVICE 4u
#define VTEST_BLOB_FLAGS_KNOWN 7u

#define VTEST_SYNC_WAIT_FLAG_ANY 1u
#define VTEST_SUBMIT2_FLAG_RING_IDX 1u
/* SUBMIT_CMD2: batch i's 8 dwords start at dword 1 + 8 i. */
#define VTEST_SUBMIT2_BATCH_DWORDS 8u

typedef struct VtestLimits {
  uint32_t max_name_bytes;     /* CREATE_RENDERER */
  uint32_t max_submit_bytes;   /* one SUBMIT_CMD */
  uint32_t max_transfer_bytes; /* data of a v0 TRANSFER_PUT or TRANSFER_GET */
  uint32_t max_wait_syncs;     /* syncs in one SYNC_WAIT or one SUBMIT_CMD2 batch */
} VtestLimits;

#define VTEST_DEFAULT_MAX_WAIT_SYNCS 256u

#define VTEST_DEFAULT_LIMITS                                                                       \
  ((VtestLimits){.max_name_bytes = 4096,                                                           \
                 .max_submit_bytes = 64u << 20,                                                    \
                 .max_transfer_bytes = 64u << 20,                                                  \
                 .max_wait_syncs = VTEST_DEFAULT_MAX_WAIT_SYNCS})

/* One SUBMIT_CMD2 batch, its ranges checked against the command. */
typedef struct VtestBatch {
  uint32_t flags;
  const uint8_t *cmd; /* cmd_size dwords, maybe unaligned */
  uint32_t cmd_size;
  const uint8_t *syncs; /* sync_count (id, value lo, value hi) triples */
  uint32_t sync_count;
  uint32_t ring_idx;
} VtestBatch;

typedef struct VtestTransfer {
  uint32_t handle;
  uint32_t level;
  uint32_t stride;       /* v0 only */
  uint32_t layer_stride; /* v0 only */
  VgpuBox box;
  uint32_t data_size;
  uint32_t offset;       /* v2 only: byte offset into the shm backing */
  const uint8_t *data;   /* v0 TRANSFER_PUT inline data */
} VtestTransfer;

typedef struct VtestCmd {
  uint32_t id;
  uint32_t len;  /* header LEN, as sent */
  size_t size;   /* bytes this command occupies in the stream */
  union {
    struct {
      const char *name; /* not NUL-terminated */
      uint32_t name_len;
    } create_renderer;
    struct {
      VgpuResourceDesc desc;
      uint32_t data_size; /* CREATE2 only */
    } create;
    uint32_t handle; /* RESOURCE_UNREF */
    VtestTransfer transfer;
    struct {
      const uint8_t *dw; /* ndw little-endian dwords, maybe unaligned */
      uint32_t ndw;
    } submit;
    struct {
      uint32_t handle;
      uint32_t flags;
    } busy_wait;
    uint32_t version; /* PROTOCOL_VERSION */
    uint32_t param;   /* GET_PARAM */
    struct {
      uint32_t id, version;
    } capset;           /* GET_CAPSET */
    uint32_t capset_id; /* CONTEXT_INIT */
    struct {
      uint32_t type, flags;
      uint64_t size, blob_id;
    } blob;
    struct {
      uint32_t id;
      uint64_t value;
    } sync; /* SYNC_CREATE (value), SYNC_UNREF/READ (id), SYNC_WRITE */
    struct {
      uint32_t flags, timeout_ms, count;
      const uint8_t *syncs; /* count (id, value lo, value hi) triples */
    } wait;
    struct {
      const uint8_t *dw; /* the whole body: batch count, batches, data */
      uint32_t batch_count;
    } submit2;
  } u;
} VtestCmd;

typedef enum {
  VTEST_DECODE_OK = 0,
  VTEST_DECODE_NEED_MORE = 1,
  VTEST_DECODE_INVALID = -1, /* hostile or malformed: end the session */
} VtestDecodeResult;

/* Decodes the command at the start of buf.  On NEED_MORE, *need (if not
 * NULL) is the total bytes required once that is known (else header size).
 * On INVALID, *why names the reason in a static string. */
VtestDecodeResult vtest_decode(const uint8_t *buf, size_t avail, const VtestLimits *lim,
                               VtestCmd *cmd, size_t *need, const char **why);

const char *vtest_cmd_name(uint32_t id);
/* Whether a command exists only from protocol version 3 on. */
bool vtest_cmd_is_v3(uint32_t id);
/* Batch i < batch_count of a decoded SUBMIT_CMD2 (ranges already checked). */
void vtest_submit2_batch(const VtestCmd *cmd, uint32_t i, VtestBatch *b);
/* Sync entry i of a list of (id, value lo, value hi) triples. */
void vtest_sync_entry(const uint8_t *list, uint32_t i, uint32_t *id, uint64_t *value);
