/* virtio-gpu command decoder: every command built the way the Linux guest
 * driver lays it out (little-endian, the kernel's struct sizes), the
 * structural checks on hostile requests, and the response builders. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio_gpu/vgpu_cmd.h"

#define ALLF                                                                                       \
  (VGPU_CMD_F_VIRGL | VGPU_CMD_F_EDID | VGPU_CMD_F_RESOURCE_UUID | VGPU_CMD_F_RESOURCE_BLOB |      \
   VGPU_CMD_F_CONTEXT_INIT)

/* A 3D device with two heads and the VIRGL and VIRGL2 capsets. */
static const VgpuCmdConfig full = {
    .features = ALLF, .num_scanouts = 2, .capset_mask = (1u << 1) | (1u << 2), .submit_max = 4096};
/* What QEMU's 2D reference offers: EDID only, one head, no capsets. */
static const VgpuCmdConfig plain = {
    .features = VGPU_CMD_F_EDID, .num_scanouts = 1, .capset_mask = 0, .submit_max = 4096};

typedef struct {
  uint8_t b[1u << 16];
  size_t n;
} Req;

static Req req;

static void p32(size_t off, uint32_t v) {
  for (int i = 0; i < 4; i++)
    req.b[off + i] = (uint8_t)(v >> (8 * i));
}

static void p64(size_t off, uint64_t v) {
  p32(off, (uint32_t)v);
  p32(off + 4, (uint32_t)(v >> 32));
}

/* Starts a request of the kernel struct's size with a zeroed header. */
static void start(uint32_t type, size_t size) {
  memset(req.b, 0, sizeof(req.b));
  p32(0, type);
  req.n = size;
}

static void rect(size_t off, uint32_t x, uint32_t y, uint32_t w, uint32_t h) {
  p32(off, x), p32(off + 4, y), p32(off + 8, w), p32(off + 12, h);
}

static VgpuCmd cmd;

static int dec(const VgpuCmdConfig *c, VgpuQueue q) {
  int rc = vgpu_cmd_decode(c, q, req.b, req.n, &cmd);
  if (rc == 0) {
    assert_int_equal(cmd.err, 0);
    assert_null(cmd.why);
    assert_non_null(cmd.info);
  } else {
    assert_int_equal(rc, -EINVAL);
    assert_non_null(cmd.why);
    assert_true(cmd.err >= VIRTIO_GPU_RESP_ERR_UNSPEC &&
                cmd.err <= VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  }
  return rc;
}

static void expect_ok(const VgpuCmdConfig *c, VgpuQueue q) {
  assert_int_equal(dec(c, q), 0);
}

static void expect_err(const VgpuCmdConfig *c, VgpuQueue q, uint32_t err) {
  assert_int_equal(dec(c, q), -EINVAL);
  assert_int_equal(cmd.err, err);
}

/* ---- the table --------------------------------------------------------- */
static const struct {
  uint32_t type;
  uint16_t size, elem;
  uint8_t queue;
  uint32_t resp_type;
  uint16_t resp_size;
} expected[] = {
    {0x0100, 24, 0, 0, 0x1101, 408},  {0x0101, 40, 0, 0, 0x1100, 24},
    {0x0102, 32, 0, 0, 0x1100, 24},   {0x0103, 48, 0, 0, 0x1100, 24},
    {0x0104, 48, 0, 0, 0x1100, 24},   {0x0105, 56, 0, 0, 0x1100, 24},
    {0x0106, 32, 16, 0, 0x1100, 24},  {0x0107, 32, 0, 0, 0x1100, 24},
    {0x0108, 32, 0, 0, 0x1102, 40},   {0x0109, 32, 0, 0, 0x1103, 24},
    {0x010a, 32, 0, 0, 0x1104, 1056}, {0x010b, 32, 0, 0, 0x1105, 40},
    {0x010c, 56, 16, 0, 0x1100, 24},  {0x010d, 96, 0, 0, 0x1100, 24},
    {0x0200, 96, 0, 0, 0x1100, 24},   {0x0201, 24, 0, 0, 0x1100, 24},
    {0x0202, 32, 0, 0, 0x1100, 24},   {0x0203, 32, 0, 0, 0x1100, 24},
    {0x0204, 72, 0, 0, 0x1100, 24},   {0x0205, 72, 0, 0, 0x1100, 24},
    {0x0206, 72, 0, 0, 0x1100, 24},   {0x0207, 32, 1, 0, 0x1100, 24},
    {0x0208, 40, 0, 0, 0x1106, 32},   {0x0209, 32, 0, 0, 0x1100, 24},
    {0x0300, 56, 0, 1, 0, 0},         {0x0301, 56, 0, 1, 0, 0},
};

static void test_table_covers_every_command(void **state) {
  (void)state;
  size_t n = sizeof(expected) / sizeof(expected[0]);
  assert_int_equal(vgpu_cmd_table_len, n);
  for (size_t i = 0; i < n; i++) {
    const VgpuCmdInfo *info = vgpu_cmd_lookup(expected[i].type);
    assert_non_null(info);
    assert_ptr_equal(info, &vgpu_cmd_table[i]); /* sorted, one row each */
    assert_non_null(info->name);
    assert_non_null(info->decode);
    assert_int_equal(info->size, expected[i].size);
    assert_int_equal(info->elem_size, expected[i].elem);
    assert_int_equal(info->queue, expected[i].queue);
    assert_int_equal(info->resp_type, expected[i].resp_type);
    assert_int_equal(info->resp_size, expected[i].resp_size);
    assert_int_equal(info->resp_var, expected[i].type == VIRTIO_GPU_CMD_GET_CAPSET);
    bool is3d = expected[i].type >= 0x0200 && expected[i].type < 0x0300;
    assert_int_equal(!!(info->features & VGPU_CMD_F_VIRGL), is3d);
  }
  assert_string_equal(vgpu_cmd_lookup(0x0207)->name, "SUBMIT_3D");
  assert_null(vgpu_cmd_lookup(0x010e));
  assert_null(vgpu_cmd_lookup(0x1100));
  assert_true(vgpu_cmd_lookup(0x010a)->features & VGPU_CMD_F_EDID);
  assert_true(vgpu_cmd_lookup(0x010c)->features & VGPU_CMD_F_RESOURCE_BLOB);
}

/* ---- header ------------------------------------------------------------ */
static void test_header_and_fence(void **state) {
  (void)state;
  start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 24);
  p32(4, VIRTIO_GPU_FLAG_FENCE | 0xf0); /* unknown flag bits dropped */
  p64(8, 0x1122334455667788ull);
  p32(16, 7);
  req.b[20] = 9; /* ring_idx without INFO_RING_IDX: ignored */
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.hdr.type, VIRTIO_GPU_CMD_GET_DISPLAY_INFO);
  assert_int_equal(cmd.hdr.flags, VIRTIO_GPU_FLAG_FENCE);
  assert_int_equal(cmd.hdr.fence_id, 0x1122334455667788ull);
  assert_int_equal(cmd.hdr.ctx_id, 7);
  assert_int_equal(cmd.hdr.ring_idx, 0);

  /* INFO_RING_IDX: with FENCE and CONTEXT_INIT, ring below 64. */
  p32(4, VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX);
  req.b[20] = 63;
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.hdr.ring_idx, 63);
  req.b[20] = 64;
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  req.b[20] = 1;
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_string_equal(cmd.why, "INFO_RING_IDX without the CONTEXT_INIT feature");
  p32(4, VIRTIO_GPU_FLAG_INFO_RING_IDX);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_string_equal(cmd.why, "INFO_RING_IDX without FENCE");
  assert_int_equal(cmd.hdr.flags, 0); /* the error response echoes no ring */
  assert_int_equal(cmd.hdr.ring_idx, 0);

  /* Shorter than a header: UNSPEC, and the type is still named. */
  for (size_t n = 0; n < 24; n++) {
    start(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, n);
    expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
  }
}

/* ---- 2D ---------------------------------------------------------------- */
static void test_2d_commands(void **state) {
  (void)state;
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  p32(24, 0);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.edid.scanout, 0);

  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, 40);
  p32(24, 1), p32(28, 2 /* B8G8R8X8 */), p32(32, 1024), p32(36, 768);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.create_2d.resource_id, 1);
  assert_int_equal(cmd.u.create_2d.format, 2);
  assert_int_equal(cmd.u.create_2d.width, 1024);
  assert_int_equal(cmd.u.create_2d.height, 768);

  start(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, 32 + 2 * 16);
  p32(24, 1), p32(28, 2);
  p64(32, 0x100000), p32(40, 0x1000);
  p64(48, 0x200000), p32(56, 0x2fe000);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.attach_backing.resource_id, 1);
  assert_int_equal(cmd.u.attach_backing.entries.nr, 2);
  assert_ptr_equal(cmd.u.attach_backing.entries.raw, req.b + 32);
  uint64_t addr;
  uint32_t len;
  vgpu_cmd_mem_entry(&cmd.u.attach_backing.entries, 1, &addr, &len);
  assert_int_equal(addr, 0x200000);
  assert_int_equal(len, 0x2fe000);

  start(VIRTIO_GPU_CMD_SET_SCANOUT, 48);
  rect(24, 0, 0, 1024, 768), p32(40, 0), p32(44, 1);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.set_scanout.r.w, 1024);
  assert_int_equal(cmd.u.set_scanout.r.h, 768);
  assert_int_equal(cmd.u.set_scanout.resource_id, 1);

  start(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, 56);
  rect(24, 8, 16, 8, 16), p64(40, 16 * 4096 + 32), p32(48, 1);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.transfer_2d.r.x, 8);
  assert_int_equal(cmd.u.transfer_2d.offset, 16 * 4096 + 32);
  assert_int_equal(cmd.u.transfer_2d.resource_id, 1);

  start(VIRTIO_GPU_CMD_RESOURCE_FLUSH, 48);
  rect(24, 8, 16, 8, 16), p32(40, 1);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.flush.r.h, 16);
  assert_int_equal(cmd.u.flush.resource_id, 1);

  uint32_t one_id[] = {VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, VIRTIO_GPU_CMD_RESOURCE_UNREF};
  for (unsigned i = 0; i < 2; i++) {
    start(one_id[i], 32);
    p32(24, 5);
    expect_ok(&plain, VGPU_QUEUE_CONTROL);
    assert_int_equal(cmd.u.resource.resource_id, 5);
  }

  start(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 32);
  p32(24, 1);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.capset_info.capset_index, 1);
  start(VIRTIO_GPU_CMD_GET_CAPSET, 32);
  p32(24, 2), p32(28, 2);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.capset.capset_id, 2);
  assert_int_equal(cmd.u.capset.capset_version, 2);

  start(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, 32);
  p32(24, 3);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
}

/* ---- 3D ---------------------------------------------------------------- */
static void test_3d_commands(void **state) {
  (void)state;
  start(VIRTIO_GPU_CMD_CTX_CREATE, 96);
  p32(16, 1), p32(24, 8), p32(28, 0);
  memcpy(req.b + 32, "glxgears", 8);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.hdr.ctx_id, 1);
  assert_int_equal(cmd.u.ctx_create.nlen, 8);
  assert_string_equal(cmd.u.ctx_create.debug_name, "glxgears");
  p32(28, 2); /* context_init: capset VIRGL2 */
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.ctx_create.context_init, 2);
  p32(24, 64);
  memset(req.b + 32, 'a', 64);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(strlen(cmd.u.ctx_create.debug_name), 64);

  start(VIRTIO_GPU_CMD_CTX_DESTROY, 24);
  p32(16, 1);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.hdr.ctx_id, 1);

  start(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 32);
  p32(16, 1), p32(24, 4);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.resource.resource_id, 4);
  p32(0, VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE);
  expect_ok(&full, VGPU_QUEUE_CONTROL);

  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, 72);
  p32(24, 4), p32(28, 2 /* TEXTURE_2D */), p32(32, 67), p32(36, 0x2 /* RENDER_TARGET */);
  p32(40, 256), p32(44, 128), p32(48, 1), p32(52, 1), p32(56, 0), p32(60, 0), p32(64, 1);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.create_3d.target, 2);
  assert_int_equal(cmd.u.create_3d.format, 67);
  assert_int_equal(cmd.u.create_3d.bind, 2);
  assert_int_equal(cmd.u.create_3d.width, 256);
  assert_int_equal(cmd.u.create_3d.height, 128);
  assert_int_equal(cmd.u.create_3d.flags, 1);

  uint32_t xfer[] = {VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D};
  for (unsigned i = 0; i < 2; i++) {
    start(xfer[i], 72);
    p32(24, 1), p32(28, 2), p32(32, 0), p32(36, 10), p32(40, 20), p32(44, 1);
    p64(48, 4096), p32(56, 4), p32(60, 0), p32(64, 1024), p32(68, 0);
    expect_ok(&full, VGPU_QUEUE_CONTROL);
    assert_int_equal(cmd.u.transfer_3d.box.w, 10);
    assert_int_equal(cmd.u.transfer_3d.box.d, 1);
    assert_int_equal(cmd.u.transfer_3d.offset, 4096);
    assert_int_equal(cmd.u.transfer_3d.resource_id, 4);
    assert_int_equal(cmd.u.transfer_3d.stride, 1024);
  }

  start(VIRTIO_GPU_CMD_SUBMIT_3D, 32 + 16);
  p32(16, 1), p32(24, 16);
  p32(32, 0x00010001);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.submit_3d.size, 16);
  assert_ptr_equal(cmd.u.submit_3d.data, req.b + 32);
  p32(24, 0);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.submit_3d.size, 0);
  assert_null(cmd.u.submit_3d.data);
}

static void test_blob_commands(void **state) {
  (void)state;
  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, 56 + 16);
  p32(24, 9), p32(28, 1 /* GUEST */), p32(32, 1 /* MAPPABLE */), p32(36, 1);
  p64(40, 0), p64(48, 0x10000);
  p64(56, 0x300000), p32(64, 0x10000);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.create_blob.blob_mem, 1);
  assert_int_equal(cmd.u.create_blob.size, 0x10000);
  assert_int_equal(cmd.u.create_blob.entries.nr, 1);
  assert_ptr_equal(cmd.u.create_blob.entries.raw, req.b + 56);

  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, 56);
  p32(24, 10), p32(28, 2 /* HOST3D */), p32(32, 3), p32(36, 0), p64(40, 77), p64(48, 4096);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.create_blob.blob_id, 77);
  assert_int_equal(cmd.u.create_blob.entries.nr, 0);
  VgpuCmdConfig noviril = full;
  noviril.features &= ~VGPU_CMD_F_VIRGL;
  expect_err(&noviril, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(36, 1); /* HOST3D memory with guest entries */
  req.n = 72;
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(36, 0), p32(28, 4); /* unknown memory type */
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(28, 2), p32(32, 8); /* unknown flag */
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(32, 1), p64(48, 0); /* empty */
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);

  start(VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, 96);
  rect(24, 0, 0, 640, 480), p32(40, 1), p32(44, 9), p32(48, 640), p32(52, 480), p32(56, 1);
  p32(64, 640 * 4);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.set_scanout_blob.scanout_id, 1);
  assert_int_equal(cmd.u.set_scanout_blob.strides[0], 2560);
  rect(24, 1, 0, 640, 480); /* one column past the framebuffer */
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  rect(24, 0, 0, 640, 480), p32(56, 5);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);

  start(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, 40);
  p32(24, 10), p64(32, 0x200000);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.map_blob.offset, 0x200000);
  assert_int_equal(cmd.info->resp_type, VIRTIO_GPU_RESP_OK_MAP_INFO);
  start(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, 32);
  p32(24, 10);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
}

static void test_cursor(void **state) {
  (void)state;
  uint32_t types[] = {VIRTIO_GPU_CMD_UPDATE_CURSOR, VIRTIO_GPU_CMD_MOVE_CURSOR};
  for (unsigned i = 0; i < 2; i++) {
    start(types[i], 56);
    p32(24, 0), p32(28, 100), p32(32, 200), p32(40, 3), p32(44, 4), p32(48, 5);
    expect_ok(&plain, VGPU_QUEUE_CURSOR);
    assert_int_equal(cmd.u.cursor.x, 100);
    assert_int_equal(cmd.u.cursor.y, 200);
    assert_int_equal(cmd.u.cursor.resource_id, 3);
    assert_int_equal(cmd.u.cursor.hot_x, 4);
    assert_int_equal(cmd.u.cursor.hot_y, 5);
    assert_int_equal(cmd.info->resp_size, 0);
    /* On the control queue: refused. */
    expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_string_equal(cmd.why, "cursor command on the control queue");
    p32(24, 1); /* head 1 of a one-head device */
    expect_err(&plain, VGPU_QUEUE_CURSOR, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
  }
  start(VIRTIO_GPU_CMD_RESOURCE_FLUSH, 48);
  expect_err(&plain, VGPU_QUEUE_CURSOR, VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_string_equal(cmd.why, "control command on the cursor queue");
}

/* ---- hostile requests --------------------------------------------------- */
static void test_short_and_long(void **state) {
  (void)state;
  for (size_t i = 0; i < vgpu_cmd_table_len; i++) {
    const VgpuCmdInfo *info = &vgpu_cmd_table[i];
    VgpuQueue q = (VgpuQueue)info->queue;
    start(info->type, info->size - 1);
    expect_err(&full, q, VIRTIO_GPU_RESP_ERR_UNSPEC);
    if (info->size > 24) /* a short header has no row yet */
      assert_ptr_equal(cmd.info, info);
    /* One byte too few is refused also when it is not the last field. */
    start(info->type, 24);
    if (info->size > 24)
      expect_err(&full, q, VIRTIO_GPU_RESP_ERR_UNSPEC);
  }
  /* Longer than the struct: accepted, extra bytes ignored (as QEMU). */
  start(VIRTIO_GPU_CMD_RESOURCE_UNREF, 32 + 100);
  p32(24, 5);
  memset(req.b + 32, 0xff, 100);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  assert_int_equal(cmd.u.resource.resource_id, 5);
}

static void test_unknown_and_features(void **state) {
  (void)state;
  uint32_t unknown[] = {0, 0x00ff, 0x010e, 0x020a, 0x0302, 0x1100, 0x1200, 0xffffffff};
  for (unsigned i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    start(unknown[i], 256);
    expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_null(cmd.info);
    assert_string_equal(cmd.why, "unknown command type");
  }
  /* Every 3D command without VIRGL: refused before its fields are read. */
  for (size_t i = 0; i < vgpu_cmd_table_len; i++) {
    const VgpuCmdInfo *info = &vgpu_cmd_table[i];
    if (!(info->features & VGPU_CMD_F_VIRGL))
      continue;
    start(info->type, 4096);
    VgpuCmdConfig c = full;
    c.features &= ~VGPU_CMD_F_VIRGL;
    expect_err(&c, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
    assert_string_equal(cmd.why, "command needs the VIRGL feature");
  }
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  VgpuCmdConfig noedid = plain;
  noedid.features = 0;
  expect_err(&noedid, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
  start(VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, 96);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_string_equal(cmd.why, "command needs the RESOURCE_BLOB feature");
}

/* The wraparound class: x + w (y + h, z + d) computed in 32 bits. */
static void test_rect_overflow(void **state) {
  (void)state;
  struct {
    uint32_t type;
    size_t size;
    size_t rect_at;
  } rc[] = {{VIRTIO_GPU_CMD_SET_SCANOUT, 48, 24},
            {VIRTIO_GPU_CMD_RESOURCE_FLUSH, 48, 24},
            {VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, 56, 24},
            {VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, 96, 24}};
  for (unsigned i = 0; i < 4; i++) {
    start(rc[i].type, rc[i].size);
    p32(44, 1);
    rect(24, 0xffffff00u, 0, 0x100, 1); /* exactly 2^32 */
    expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    rect(24, 0, 1, 1, 0xffffffffu);
    expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    rect(24, 0xffffff00u, 0, 0xff, 1); /* 2^32 - 1: fits, the device compares */
    if (rc[i].type != VIRTIO_GPU_CMD_SET_SCANOUT_BLOB)
      expect_ok(&full, VGPU_QUEUE_CONTROL);
  }
  for (unsigned axis = 0; axis < 3; axis++) {
    start(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 72);
    p32(24 + 4 * axis, 2), p32(36 + 4 * axis, 0xfffffffeu);
    expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    p32(24 + 4 * axis, 1);
    expect_ok(&full, VGPU_QUEUE_CONTROL);
  }
}

/* The CVE-2021-3544 class: counts from the guest sizing host work. */
static void test_entries_bounds(void **state) {
  (void)state;
  start(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, 32);
  p32(24, 1), p32(28, 0);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  /* nr whose 16 x nr wraps a 32-bit size, and the largest count. */
  uint32_t huge[] = {0x10000000u, 0x10000001u, 0xffffffffu, 16385};
  for (unsigned i = 0; i < 4; i++) {
    p32(28, huge[i]);
    req.n = sizeof(req.b);
    expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_string_equal(cmd.why, "more than 16384 backing entries");
  }
  /* 16384 entries need 262176 bytes; the 64 KiB request is too short. */
  p32(28, 16384);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
  assert_string_equal(cmd.why, "backing entries run past the request");
  /* The entries claimed must be there: 3 claimed, 2 present. */
  p32(28, 3);
  req.n = 32 + 2 * 16 + 15;
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_UNSPEC);
  req.n = 32 + 3 * 16;
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  /* addr + length wrapping 64 bits. */
  p64(32 + 16, 0xfffffffffffff000ull), p32(32 + 16 + 8, 0x1000);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(32 + 16 + 8, 0xfff);
  expect_ok(&plain, VGPU_QUEUE_CONTROL);
  /* 16384 fits when the bytes are there. */
  static uint8_t big[32 + 16384 * 16];
  memset(big, 0, sizeof(big));
  memcpy(big, req.b, 24);
  big[28] = 0x00, big[29] = 0x40; /* 16384 */
  assert_int_equal(vgpu_cmd_decode(&plain, VGPU_QUEUE_CONTROL, big, sizeof(big), &cmd), 0);
  assert_int_equal(cmd.u.attach_backing.entries.nr, 16384);
}

static void test_submit_bounds(void **state) {
  (void)state;
  start(VIRTIO_GPU_CMD_SUBMIT_3D, 32 + 64);
  p32(16, 1);
  p32(24, 68); /* four bytes beyond the request */
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_string_equal(cmd.why, "SUBMIT_3D size exceeds the request");
  p32(24, 0xfffffffcu);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(24, 62);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_string_equal(cmd.why, "SUBMIT_3D size not a multiple of 4");
  VgpuCmdConfig small = full;
  small.submit_max = 32;
  p32(24, 36);
  expect_err(&small, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  assert_string_equal(cmd.why, "SUBMIT_3D size over the cap");
  p32(24, 32);
  expect_ok(&small, VGPU_QUEUE_CONTROL);
}

static void test_ids_formats_names(void **state) {
  (void)state;
  /* Scanout ids: below the device's heads, never 16 or more. */
  start(VIRTIO_GPU_CMD_SET_SCANOUT, 48);
  p32(40, 2);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
  p32(40, 1);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
  VgpuCmdConfig many = full;
  many.num_scanouts = 1000;
  p32(40, 16);
  expect_err(&many, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);
  start(VIRTIO_GPU_CMD_GET_EDID, 32);
  p32(24, 1);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID);

  /* 2D formats: the eight known ones only. */
  uint32_t good[] = {1, 2, 3, 4, 67, 68, 121, 134};
  uint32_t bad[] = {0, 5, 66, 100, 135, 0xffffffff};
  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, 40);
  p32(24, 1), p32(32, 64), p32(36, 64);
  for (unsigned i = 0; i < 8; i++) {
    p32(28, good[i]);
    expect_ok(&plain, VGPU_QUEUE_CONTROL);
  }
  for (unsigned i = 0; i < 6; i++) {
    p32(28, bad[i]);
    expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
    assert_string_equal(cmd.why, "unknown 2D format");
  }
  p32(28, 1), p32(24, 0);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
  p32(24, 1), p32(32, 0);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);

  /* Capsets: index below the number offered, id among those offered. */
  start(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 32);
  p32(24, 2);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(24, 0);
  expect_err(&plain, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  start(VIRTIO_GPU_CMD_GET_CAPSET, 32);
  uint32_t bad_ids[] = {0, 3, 4, 31, 32, 0xffffffff};
  for (unsigned i = 0; i < 6; i++) {
    p32(24, bad_ids[i]);
    expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  }

  /* CTX_CREATE: nlen at most 64, ctx 0 refused, context_init known. */
  start(VIRTIO_GPU_CMD_CTX_CREATE, 96);
  p32(16, 1), p32(24, 65);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(24, 0xffffffff);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(24, 0), p32(16, 0);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
  p32(16, 1), p32(28, 0x100);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(28, 4); /* VENUS: not offered */
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  VgpuCmdConfig noinit = full;
  noinit.features &= ~VGPU_CMD_F_CONTEXT_INIT;
  p32(28, 1);
  expect_err(&noinit, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(28, 0);
  expect_ok(&noinit, VGPU_QUEUE_CONTROL);
  assert_string_equal(cmd.u.ctx_create.debug_name, "");

  /* RESOURCE_CREATE_3D: target, flags, empty sizes. */
  start(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, 72);
  p32(24, 1), p32(28, 9), p32(40, 1), p32(44, 1), p32(48, 1), p32(52, 1);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(28, 8), p32(64, 2);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(64, 0), p32(52, 0);
  expect_err(&full, VGPU_QUEUE_CONTROL, VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
  p32(52, 1);
  expect_ok(&full, VGPU_QUEUE_CONTROL);
}

/* ---- responses --------------------------------------------------------- */
static uint32_t g32(const uint8_t *b, size_t off) {
  return (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 |
         (uint32_t)b[off + 3] << 24;
}

static void test_responses(void **state) {
  (void)state;
  static uint8_t out[2048];
  VgpuCmdHdr h = {.type = 0x0207,
                  .flags = VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                  .fence_id = 0x100000005ull,
                  .ctx_id = 3,
                  .ring_idx = 2};
  memset(out, 0xaa, sizeof(out));
  assert_int_equal(vgpu_resp_hdr(&h, VIRTIO_GPU_RESP_OK_NODATA, out, 24), 24);
  assert_int_equal(g32(out, 0), 0x1100);
  assert_int_equal(g32(out, 4), 3);
  assert_int_equal(g32(out, 8), 5);
  assert_int_equal(g32(out, 12), 1);
  assert_int_equal(g32(out, 16), 3);
  assert_int_equal(out[20], 2);
  assert_int_equal(out[21] | out[22] | out[23], 0);
  assert_int_equal(out[24], 0xaa); /* nothing written past it */
  /* Without FENCE: no fence id echoed, ring_idx 0. */
  h.flags = 0;
  assert_int_equal(vgpu_resp_hdr(&h, VIRTIO_GPU_RESP_ERR_UNSPEC, out, 24), 24);
  assert_int_equal(g32(out, 0), 0x1200);
  assert_int_equal(g32(out, 4) | g32(out, 8) | g32(out, 12) | out[20], 0);
  assert_int_equal(vgpu_resp_hdr(&h, 0x1100, out, 23), -ENOSPC);

  /* DISPLAY_INFO: 408 bytes, unused heads zeroed. */
  memset(out, 0xaa, sizeof(out));
  VgpuDisplayMode m = {.r = {0, 0, 1024, 768}, .enabled = 1, .flags = 0};
  assert_int_equal(vgpu_resp_display_info(&h, &m, 1, out, sizeof(out)), 408);
  assert_int_equal(g32(out, 0), 0x1101);
  assert_int_equal(g32(out, 24 + 8), 1024);
  assert_int_equal(g32(out, 24 + 12), 768);
  assert_int_equal(g32(out, 24 + 16), 1);
  for (size_t i = 48; i < 408; i++)
    assert_int_equal(out[i], 0);
  assert_int_equal(out[408], 0xaa);
  assert_int_equal(vgpu_resp_display_info(&h, &m, 17, out, sizeof(out)), -EINVAL);
  assert_int_equal(vgpu_resp_display_info(&h, &m, 1, out, 407), -ENOSPC);

  /* CAPSET_INFO (the CVE-2021-3545 class): padding zeroed. */
  memset(out, 0xaa, sizeof(out));
  assert_int_equal(vgpu_resp_capset_info(&h, 2, 2, 1376, out, sizeof(out)), 40);
  assert_int_equal(g32(out, 0), 0x1102);
  assert_int_equal(g32(out, 24), 2);
  assert_int_equal(g32(out, 28), 2);
  assert_int_equal(g32(out, 32), 1376);
  assert_int_equal(g32(out, 36), 0);

  /* CAPSET (the CVE-2021-3546 class): max_size 0 and short buffers refused. */
  uint8_t *data = NULL;
  assert_int_equal(vgpu_resp_capset(&h, 0, out, sizeof(out), &data), -EINVAL);
  assert_int_equal(vgpu_resp_capset(&h, 308, out, 24 + 307, &data), -ENOSPC);
  assert_null(data);
  memset(out, 0xaa, sizeof(out));
  assert_int_equal(vgpu_resp_capset(&h, 308, out, sizeof(out), &data), 24 + 308);
  assert_ptr_equal(data, out + 24);
  assert_int_equal(g32(out, 0), 0x1103);
  assert_int_equal(data[307], 0);

  /* EDID: 1056 bytes, size field, the rest zeroed. */
  uint8_t edid[128];
  memset(edid, 0x5a, sizeof(edid));
  memset(out, 0xaa, sizeof(out));
  assert_int_equal(vgpu_resp_edid(&h, edid, sizeof(edid), out, sizeof(out)), 1056);
  assert_int_equal(g32(out, 0), 0x1104);
  assert_int_equal(g32(out, 24), 128);
  assert_int_equal(g32(out, 28), 0);
  assert_int_equal(out[32], 0x5a);
  assert_int_equal(out[32 + 127], 0x5a);
  assert_int_equal(out[32 + 128], 0);
  assert_int_equal(out[1055], 0);
  assert_int_equal(vgpu_resp_edid(&h, edid, 1025, out, sizeof(out)), -EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_table_covers_every_command),
      cmocka_unit_test(test_header_and_fence),
      cmocka_unit_test(test_2d_commands),
      cmocka_unit_test(test_3d_commands),
      cmocka_unit_test(test_blob_commands),
      cmocka_unit_test(test_cursor),
      cmocka_unit_test(test_short_and_long),
      cmocka_unit_test(test_unknown_and_features),
      cmocka_unit_test(test_rect_overflow),
      cmocka_unit_test(test_entries_bounds),
      cmocka_unit_test(test_submit_bounds),
      cmocka_unit_test(test_ids_formats_names),
      cmocka_unit_test(test_responses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
