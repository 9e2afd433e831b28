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
  VTEST_CMD_MAX_KNOWN = 38, /* ids up to here exist in some protocol version */
};

#define VTEST_HDR_SIZE 8u
#define VTEST_BUSY_WAIT_FLAG_WAIT 1u
/* Highest protocol version this server speaks (v3 adds server-chosen
 * handles, blobs and syncs, which no Mesa client in Debian 12 uses). */
#define VTEST_PROTOCOL_VERSION 2u

typedef struct VtestLimits {
  uint32_t max_name_bytes;     /* CREATE_RENDERER */
  uint32_t max_submit_bytes;   /* one SUBMIT_CMD */
  uint32_t max_transfer_bytes; /* data of a v0 TRANSFER_PUT or TRANSFER_GET */
} VtestLimits;

#define VTEST_DEFAULT_LIMITS                                                   \
  ((VtestLimits){.max_name_bytes = 4096,                                       \
                 .max_submit_bytes = 64u << 20,                                \
                 .max_transfer_bytes = 64u << 20})

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
    uint32_t handle;  /* RESOURCE_UNREF */
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
