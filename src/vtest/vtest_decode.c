/* vtest decoder: turns bytes at the head of the input buffer into one
 * validated VtestCmd, without copying.
 *
 * Body sizes come from a per-command table, not from the header LEN,
 * because Mesa's LEN is not a byte count for every command:
 *  - CREATE_RENDERER's LEN counts bytes (the name, NUL included);
 *  - TRANSFER_PUT2 declares 10 + ceil(data_size/4) dwords but sends 10;
 *  - v0 TRANSFER_PUT declares padded dwords but sends 44 + data_size bytes.
 * Fixed-size commands must carry their exact LEN; anything else is either a
 * broken or a hostile client and ends the session. */
#include "vtest/vtest_decode.h"

#include <glib.h>
#include <string.h>

enum body_kind {
  BODY_FIXED,  /* exactly `dwords` dwords, LEN must equal it */
  BODY_NAME,   /* LEN bytes */
  BODY_DWORDS, /* LEN dwords */
  BODY_PUT_V0, /* 11 dwords + data_size bytes */
  BODY_PUT_V2, /* 10 dwords, LEN may be larger */
  BODY_WAIT,   /* LEN dwords = 2 + 3 n */
};

typedef struct {
  const char *name;
  enum body_kind kind;
  uint32_t dwords;
} CmdInfo;

static const CmdInfo cmd_table[] = {
    [VTEST_CMD_GET_CAPS] = {"GET_CAPS", BODY_FIXED, 0},
    [VTEST_CMD_RESOURCE_CREATE] = {"RESOURCE_CREATE", BODY_FIXED, 10},
    [VTEST_CMD_RESOURCE_UNREF] = {"RESOURCE_UNREF", BODY_FIXED, 1},
    [VTEST_CMD_TRANSFER_GET] = {"TRANSFER_GET", BODY_FIXED, 11},
    [VTEST_CMD_TRANSFER_PUT] = {"TRANSFER_PUT", BODY_PUT_V0, 11},
    [VTEST_CMD_SUBMIT_CMD] = {"SUBMIT_CMD", BODY_DWORDS, 0},
    [VTEST_CMD_RESOURCE_BUSY_WAIT] = {"RESOURCE_BUSY_WAIT", BODY_FIXED, 2},
    [VTEST_CMD_CREATE_RENDERER] = {"CREATE_RENDERER", BODY_NAME, 0},
    [VTEST_CMD_GET_CAPS2] = {"GET_CAPS2", BODY_FIXED, 0},
    [VTEST_CMD_PING_PROTOCOL_VERSION] = {"PING_PROTOCOL_VERSION", BODY_FIXED, 0},
    [VTEST_CMD_PROTOCOL_VERSION] = {"PROTOCOL_VERSION", BODY_FIXED, 1},
    [VTEST_CMD_RESOURCE_CREATE2] = {"RESOURCE_CREATE2", BODY_FIXED, 11},
    [VTEST_CMD_TRANSFER_GET2] = {"TRANSFER_GET2", BODY_FIXED, 10},
    [VTEST_CMD_TRANSFER_PUT2] = {"TRANSFER_PUT2", BODY_PUT_V2, 10},
    [VTEST_CMD_GET_PARAM] = {"GET_PARAM", BODY_FIXED, 1},
    [VTEST_CMD_GET_CAPSET] = {"GET_CAPSET", BODY_FIXED, 2},
    [VTEST_CMD_CONTEXT_INIT] = {"CONTEXT_INIT", BODY_FIXED, 1},
    [VTEST_CMD_RESOURCE_CREATE_BLOB] = {"RESOURCE_CREATE_BLOB", BODY_FIXED, 6},
    [VTEST_CMD_SYNC_CREATE] = {"SYNC_CREATE", BODY_FIXED, 2},
    [VTEST_CMD_SYNC_UNREF] = {"SYNC_UNREF", BODY_FIXED, 1},
    [VTEST_CMD_SYNC_READ] = {"SYNC_READ", BODY_FIXED, 1},
    [VTEST_CMD_SYNC_WRITE] = {"SYNC_WRITE", BODY_FIXED, 3},
    [VTEST_CMD_SYNC_WAIT] = {"SYNC_WAIT", BODY_WAIT, 2},
    [VTEST_CMD_SUBMIT_CMD2] = {"SUBMIT_CMD2", BODY_DWORDS, 0},
};

const char *vtest_cmd_name(uint32_t id) {
  if (id < G_N_ELEMENTS(cmd_table) && cmd_table[id].name)
    return cmd_table[id].name;
  return id <= VTEST_CMD_MAX_KNOWN ? "v4-command" : "unknown";
}

static inline uint32_t rd32(const uint8_t *p, size_t i) {
  uint32_t v;
  memcpy(&v, p + 4 * i, 4);
  return GUINT32_FROM_LE(v);
}

static inline uint64_t rd64(const uint8_t *p, size_t i) {
  return (uint64_t)rd32(p, i) | (uint64_t)rd32(p, i + 1) << 32;
}

bool vtest_cmd_is_v3(uint32_t id) {
  return id >= VTEST_CMD_GET_PARAM && id <= VTEST_CMD_SUBMIT_CMD2;
}

void vtest_sync_entry(const uint8_t *list, uint32_t i, uint32_t *id, uint64_t *value) {
  *id = rd32(list, 3 * (size_t)i);
  *value = rd64(list, 3 * (size_t)i + 1);
}

void vtest_submit2_batch(const VtestCmd *cmd, uint32_t i, VtestBatch *b) {
  const uint8_t *dw = cmd->u.submit2.dw;
  size_t at = 1 + (size_t)VTEST_SUBMIT2_BATCH_DWORDS * i;
  b->flags = rd32(dw, at);
  b->cmd = dw + 4 * (size_t)rd32(dw, at + 1);
  b->cmd_size = rd32(dw, at + 2);
  b->syncs = dw + 4 * (size_t)rd32(dw, at + 3);
  b->sync_count = rd32(dw, at + 4);
  b->ring_idx = rd32(dw, at + 5);
}

/* Every batch must lie inside the command: stride 8 dwords (the last two
 * are unused before version 4), ranges added in 64 bits. */
static const char *check_submit2(const uint8_t *body, uint32_t ndw, const VtestLimits *lim) {
  if (ndw < 1)
    return "SUBMIT_CMD2 without a batch count";
  uint32_t n = rd32(body, 0);
  if ((uint64_t)n * VTEST_SUBMIT2_BATCH_DWORDS + 1 > ndw)
    return "SUBMIT_CMD2 batch table runs past the command";
  for (uint32_t i = 0; i < n; i++) {
    size_t at = 1 + (size_t)VTEST_SUBMIT2_BATCH_DWORDS * i;
    uint32_t flags = rd32(body, at);
    uint64_t cmd_off = rd32(body, at + 1), cmd_size = rd32(body, at + 2);
    uint64_t sync_off = rd32(body, at + 3), sync_count = rd32(body, at + 4);
    uint32_t ring = rd32(body, at + 5);
    if (flags & ~VTEST_SUBMIT2_FLAG_RING_IDX)
      return "SUBMIT_CMD2 batch with unknown flags";
    if (cmd_off + cmd_size > ndw)
      return "SUBMIT_CMD2 batch commands outside the command";
    if (sync_count > lim->max_wait_syncs)
      return "SUBMIT_CMD2 batch with more syncs than allowed";
    if (sync_off + 3 * sync_count > ndw)
      return "SUBMIT_CMD2 batch syncs outside the command";
    if (ring >= VTEST_MAX_TIMELINES)
      return "SUBMIT_CMD2 ring index out of range";
  }
  return NULL;
}

static void decode_create(const uint8_t *b, VtestCmd *cmd, bool v2) {
  VgpuResourceDesc *d = &cmd->u.create.desc;
  memset(d, 0, sizeof(*d));
  d->handle = rd32(b, 0);
  d->target = rd32(b, 1);
  d->format = rd32(b, 2);
  d->bind = rd32(b, 3);
  d->width = rd32(b, 4);
  d->height = rd32(b, 5);
  d->depth = rd32(b, 6);
  d->array_size = rd32(b, 7);
  d->last_level = rd32(b, 8);
  d->nr_samples = rd32(b, 9);
  cmd->u.create.data_size = v2 ? rd32(b, 10) : 0;
}

static void decode_transfer_v0(const uint8_t *b, VtestTransfer *t) {
  t->handle = rd32(b, 0);
  t->level = rd32(b, 1);
  t->stride = rd32(b, 2);
  t->layer_stride = rd32(b, 3);
  t->box = (VgpuBox){rd32(b, 4), rd32(b, 5), rd32(b, 6), rd32(b, 7), rd32(b, 8), rd32(b, 9)};
  t->data_size = rd32(b, 10);
  t->offset = 0;
  t->data = NULL;
}

static void decode_transfer_v2(const uint8_t *b, VtestTransfer *t) {
  t->handle = rd32(b, 0);
  t->level = rd32(b, 1);
  t->stride = 0;
  t->layer_stride = 0;
  t->box = (VgpuBox){rd32(b, 2), rd32(b, 3), rd32(b, 4), rd32(b, 5), rd32(b, 6), rd32(b, 7)};
  t->data_size = rd32(b, 8);
  t->offset = rd32(b, 9);
  t->data = NULL;
}

#define INVALID(reason)                                                        \
  do {                                                                         \
    *why = (reason);                                                           \
    return VTEST_DECODE_INVALID;                                               \
  } while (0)

VtestDecodeResult vtest_decode(const uint8_t *buf, size_t avail, const VtestLimits *lim,
                               VtestCmd *cmd, size_t *need, const char **why) {
  static const char *unused;
  if (!why)
    why = &unused;
  if (need)
    *need = VTEST_HDR_SIZE;
  if (avail < VTEST_HDR_SIZE)
    return VTEST_DECODE_NEED_MORE;

  memset(cmd, 0, sizeof(*cmd));
  cmd->len = rd32(buf, 0);
  cmd->id = rd32(buf, 1);
  if (cmd->id >= G_N_ELEMENTS(cmd_table) || !cmd_table[cmd->id].name)
    INVALID(cmd->id <= VTEST_CMD_MAX_KNOWN ? "command needs protocol version 4"
                                           : "unknown command id");
  const CmdInfo *info = &cmd_table[cmd->id];
  const uint8_t *body = buf + VTEST_HDR_SIZE;
  uint64_t body_bytes; /* 64-bit: LEN * 4 cannot overflow */

  switch (info->kind) {
  case BODY_FIXED:
    if (cmd->len != info->dwords)
      INVALID("length does not match the command's fixed size");
    body_bytes = (uint64_t)info->dwords * 4;
    break;
  case BODY_NAME:
    if (cmd->len == 0 || cmd->len > lim->max_name_bytes)
      INVALID("renderer name length out of range");
    body_bytes = cmd->len;
    break;
  case BODY_DWORDS:
    body_bytes = (uint64_t)cmd->len * 4;
    if (body_bytes > lim->max_submit_bytes)
      INVALID("command stream larger than the submit limit");
    break;
  case BODY_WAIT:
    if (cmd->len < 2 || (cmd->len - 2) % 3 != 0)
      INVALID("SYNC_WAIT length is not 2 + 3 n dwords");
    if ((cmd->len - 2) / 3 > lim->max_wait_syncs)
      INVALID("SYNC_WAIT on more syncs than allowed");
    body_bytes = (uint64_t)cmd->len * 4;
    break;
  case BODY_PUT_V2: {
    /* LEN = 10 + ceil(data_size / 4), but only the 10 dwords follow. */
    if (cmd->len < info->dwords)
      INVALID("TRANSFER_PUT2 shorter than its header");
    body_bytes = (uint64_t)info->dwords * 4;
    break;
  }
  case BODY_PUT_V0: {
    if (cmd->len < info->dwords)
      INVALID("TRANSFER_PUT shorter than its header");
    if (avail < VTEST_HDR_SIZE + 44u) {
      if (need)
        *need = VTEST_HDR_SIZE + 44u;
      return VTEST_DECODE_NEED_MORE;
    }
    uint32_t ds = rd32(body, 10);
    if (ds > lim->max_transfer_bytes)
      INVALID("inline transfer larger than the transfer limit");
    /* Declared dwords must cover the data it really sends. */
    if ((uint64_t)cmd->len * 4 < 44u + (uint64_t)ds)
      INVALID("TRANSFER_PUT length smaller than its data");
    body_bytes = 44u + (uint64_t)ds;
    break;
  }
  default:
    INVALID("internal: bad table entry");
  }

  uint64_t total = VTEST_HDR_SIZE + body_bytes;
  if (avail < total) {
    if (need)
      *need = (size_t)total;
    return VTEST_DECODE_NEED_MORE;
  }
  cmd->size = (size_t)total;

  switch (cmd->id) {
  case VTEST_CMD_CREATE_RENDERER:
    cmd->u.create_renderer.name = (const char *)body;
    cmd->u.create_renderer.name_len = cmd->len;
    break;
  case VTEST_CMD_RESOURCE_CREATE:
    decode_create(body, cmd, false);
    break;
  case VTEST_CMD_RESOURCE_CREATE2:
    decode_create(body, cmd, true);
    break;
  case VTEST_CMD_RESOURCE_UNREF:
    cmd->u.handle = rd32(body, 0);
    break;
  case VTEST_CMD_TRANSFER_GET:
    decode_transfer_v0(body, &cmd->u.transfer);
    if (cmd->u.transfer.data_size > lim->max_transfer_bytes)
      INVALID("read-back larger than the transfer limit");
    break;
  case VTEST_CMD_TRANSFER_PUT:
    decode_transfer_v0(body, &cmd->u.transfer);
    cmd->u.transfer.data = body + 44;
    break;
  case VTEST_CMD_TRANSFER_GET2:
  case VTEST_CMD_TRANSFER_PUT2:
    decode_transfer_v2(body, &cmd->u.transfer);
    break;
  case VTEST_CMD_SUBMIT_CMD:
    cmd->u.submit.dw = body;
    cmd->u.submit.ndw = cmd->len;
    break;
  case VTEST_CMD_RESOURCE_BUSY_WAIT:
    cmd->u.busy_wait.handle = rd32(body, 0);
    cmd->u.busy_wait.flags = rd32(body, 1);
    break;
  case VTEST_CMD_PROTOCOL_VERSION:
    cmd->u.version = rd32(body, 0);
    break;
  case VTEST_CMD_GET_PARAM:
    cmd->u.param = rd32(body, 0);
    break;
  case VTEST_CMD_GET_CAPSET:
    cmd->u.capset.id = rd32(body, 0);
    cmd->u.capset.version = rd32(body, 1);
    break;
  case VTEST_CMD_CONTEXT_INIT:
    cmd->u.capset_id = rd32(body, 0);
    if (cmd->u.capset_id == 0)
      INVALID("CONTEXT_INIT with capability set 0");
    break;
  case VTEST_CMD_RESOURCE_CREATE_BLOB:
    cmd->u.blob.type = rd32(body, 0);
    cmd->u.blob.flags = rd32(body, 1);
    cmd->u.blob.size = rd64(body, 2);
    cmd->u.blob.blob_id = rd64(body, 4);
    if (cmd->u.blob.type != VTEST_BLOB_MEM_GUEST && cmd->u.blob.type != VTEST_BLOB_MEM_HOST3D &&
        cmd->u.blob.type != VTEST_BLOB_MEM_HOST3D_GUEST)
      INVALID("unknown blob type");
    if (cmd->u.blob.flags & ~VTEST_BLOB_FLAGS_KNOWN)
      INVALID("unknown blob flags");
    if (cmd->u.blob.size == 0)
      INVALID("blob of size 0");
    break;
  case VTEST_CMD_SYNC_CREATE:
    cmd->u.sync.value = rd64(body, 0);
    break;
  case VTEST_CMD_SYNC_UNREF:
  case VTEST_CMD_SYNC_READ:
    cmd->u.sync.id = rd32(body, 0);
    break;
  case VTEST_CMD_SYNC_WRITE:
    cmd->u.sync.id = rd32(body, 0);
    cmd->u.sync.value = rd64(body, 1);
    break;
  case VTEST_CMD_SYNC_WAIT:
    cmd->u.wait.flags = rd32(body, 0);
    cmd->u.wait.timeout_ms = rd32(body, 1);
    cmd->u.wait.count = (cmd->len - 2) / 3;
    cmd->u.wait.syncs = body + 8;
    if (cmd->u.wait.flags & ~VTEST_SYNC_WAIT_FLAG_ANY)
      INVALID("SYNC_WAIT with unknown flags");
    break;
  case VTEST_CMD_SUBMIT_CMD2: {
    const char *bad = check_submit2(body, cmd->len, lim);
    if (bad)
      INVALID(bad);
    cmd->u.submit2.dw = body;
    cmd->u.submit2.batch_count = rd32(body, 0);
    break;
  }
  default:
    break;
  }
  return VTEST_DECODE_OK;
}
