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
  BODY_FIXED,      /* exactly `dwords` dwords, LEN must equal it */
  BODY_NAME,       /* LEN bytes */
  BODY_DWORDS,     /* LEN dwords */
  BODY_PUT_V0,     /* 11 dwords + data_size bytes */
  BODY_PUT_V2,     /* 10 dwords, LEN may be larger */
  BODY_UNSUPPORTED /* needs a protocol version we do not offer */
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
    [15] = {"GET_PARAM", BODY_UNSUPPORTED, 0},
    [16] = {"GET_CAPSET", BODY_UNSUPPORTED, 0},
    [17] = {"CONTEXT_INIT", BODY_UNSUPPORTED, 0},
    [18] = {"RESOURCE_CREATE_BLOB", BODY_UNSUPPORTED, 0},
    [19] = {"SYNC_CREATE", BODY_UNSUPPORTED, 0},
    [20] = {"SYNC_UNREF", BODY_UNSUPPORTED, 0},
    [21] = {"SYNC_READ", BODY_UNSUPPORTED, 0},
    [22] = {"SYNC_WRITE", BODY_UNSUPPORTED, 0},
    [23] = {"SYNC_WAIT", BODY_UNSUPPORTED, 0},
    [24] = {"SUBMIT_CMD2", BODY_UNSUPPORTED, 0},
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
  case BODY_UNSUPPORTED:
    INVALID("command needs protocol version 3, which this server does not offer");
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
  default:
    break;
  }
  return VTEST_DECODE_OK;
}
