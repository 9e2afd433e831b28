/* vtest decoder: framing by command id, the Mesa quirks it must accept, and
 * the limits it must enforce before anything is allocated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vtest/vtest_decode.h"

static const VtestLimits lim = {.max_name_bytes = 64,
                                .max_submit_bytes = 4096,
                                .max_transfer_bytes = 1024,
                                .max_wait_syncs = 4};

typedef struct {
  uint8_t b[8192];
  size_t n;
} Buf;

static void put32(Buf *b, uint32_t v) {
  memcpy(b->b + b->n, &v, 4);
  b->n += 4;
}

static void hdr(Buf *b, uint32_t len, uint32_t id) {
  put32(b, len);
  put32(b, id);
}

static VtestDecodeResult dec(const Buf *b, VtestCmd *c, size_t *need, const char **why) {
  return vtest_decode(b->b, b->n, &lim, c, need, why);
}

static void test_header_needs_more(void **state) {
  Buf b = {0};
  VtestCmd c;
  size_t need = 0;
  hdr(&b, 0, VTEST_CMD_PING_PROTOCOL_VERSION);
  assert_int_equal(vtest_decode(b.b, 7, &lim, &c, &need, NULL), VTEST_DECODE_NEED_MORE);
  assert_int_equal(need, 8);
  assert_int_equal(dec(&b, &c, &need, NULL), VTEST_DECODE_OK);
  assert_int_equal(c.size, 8);
  assert_int_equal(c.id, VTEST_CMD_PING_PROTOCOL_VERSION);
}

static void test_create_renderer_name_is_bytes(void **state) {
  Buf b = {0};
  VtestCmd c;
  size_t need;
  hdr(&b, 9, VTEST_CMD_CREATE_RENDERER);
  memcpy(b.b + b.n, "glxgears", 9);
  assert_int_equal(vtest_decode(b.b, b.n + 4, &lim, &c, &need, NULL), VTEST_DECODE_NEED_MORE);
  assert_int_equal(need, 17);
  b.n += 9;
  assert_int_equal(dec(&b, &c, &need, NULL), VTEST_DECODE_OK);
  assert_int_equal(c.size, 17);
  assert_int_equal(c.u.create_renderer.name_len, 9);
  assert_memory_equal(c.u.create_renderer.name, "glxgears", 9);
}

static void test_create_renderer_limits(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  hdr(&b, 65, VTEST_CMD_CREATE_RENDERER);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(why);
  b.n = 0;
  hdr(&b, 0, VTEST_CMD_CREATE_RENDERER);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
}

static void test_fixed_length_must_match(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  hdr(&b, 3, VTEST_CMD_RESOURCE_BUSY_WAIT);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "length"));
  b.n = 0;
  hdr(&b, 2, VTEST_CMD_RESOURCE_BUSY_WAIT);
  put32(&b, 5);
  put32(&b, 1);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_OK);
  assert_int_equal(c.u.busy_wait.handle, 5);
  assert_int_equal(c.u.busy_wait.flags, 1);
}

static void test_create2_fields(void **state) {
  Buf b = {0};
  VtestCmd c;
  hdr(&b, 11, VTEST_CMD_RESOURCE_CREATE2);
  uint32_t f[11] = {1, 2, 2, 138, 300, 300, 1, 1, 0, 0, 360000};
  for (int i = 0; i < 11; i++)
    put32(&b, f[i]);
  assert_int_equal(dec(&b, &c, NULL, NULL), VTEST_DECODE_OK);
  assert_int_equal(c.size, 52);
  assert_int_equal(c.u.create.desc.handle, 1);
  assert_int_equal(c.u.create.desc.bind, 138);
  assert_int_equal(c.u.create.desc.height, 300);
  assert_int_equal(c.u.create.data_size, 360000);
}

/* Mesa declares 10 + ceil(data_size/4) dwords for TRANSFER_PUT2 but sends
 * 10: the decoder must consume 48 bytes and leave the next command alone. */
static void test_put2_length_quirk(void **state) {
  Buf b = {0};
  VtestCmd c;
  hdr(&b, 10 + 16, VTEST_CMD_TRANSFER_PUT2);
  uint32_t f[10] = {3, 0, 0, 0, 0, 64, 1, 1, 64, 128};
  for (int i = 0; i < 10; i++)
    put32(&b, f[i]);
  hdr(&b, 0, VTEST_CMD_PING_PROTOCOL_VERSION);
  assert_int_equal(dec(&b, &c, NULL, NULL), VTEST_DECODE_OK);
  assert_int_equal(c.size, 48);
  assert_int_equal(c.u.transfer.handle, 3);
  assert_int_equal(c.u.transfer.box.w, 64);
  assert_int_equal(c.u.transfer.data_size, 64);
  assert_int_equal(c.u.transfer.offset, 128);
  assert_int_equal(vtest_decode(b.b + 48, b.n - 48, &lim, &c, NULL, NULL), VTEST_DECODE_OK);
  assert_int_equal(c.id, VTEST_CMD_PING_PROTOCOL_VERSION);
}

/* v0 TRANSFER_PUT: 11 dwords then exactly data_size bytes, unpadded. */
static void test_put_v0_unpadded(void **state) {
  Buf b = {0};
  VtestCmd c;
  size_t need;
  const char *why;
  hdr(&b, 11 + 2, VTEST_CMD_TRANSFER_PUT);
  uint32_t f[11] = {7, 0, 0, 0, 0, 0, 0, 5, 1, 1, 5};
  for (int i = 0; i < 11; i++)
    put32(&b, f[i]);
  memcpy(b.b + b.n, "abcde", 5);
  assert_int_equal(vtest_decode(b.b, b.n + 4, &lim, &c, &need, NULL), VTEST_DECODE_NEED_MORE);
  assert_int_equal(need, 8 + 44 + 5);
  b.n += 5;
  assert_int_equal(dec(&b, &c, NULL, NULL), VTEST_DECODE_OK);
  assert_int_equal(c.size, 57);
  assert_memory_equal(c.u.transfer.data, "abcde", 5);
  /* A LEN too small for the data it carries is refused. */
  memcpy(b.b, &(uint32_t){11}, 4);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  /* So is data beyond the transfer limit, before it is read. */
  b.n = 0;
  hdr(&b, 11 + 1000, VTEST_CMD_TRANSFER_PUT);
  for (int i = 0; i < 10; i++)
    put32(&b, 0);
  put32(&b, 4000);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
}

static void test_submit_limits(void **state) {
  Buf b = {0};
  VtestCmd c;
  size_t need;
  const char *why = NULL;
  hdr(&b, 1u << 30, VTEST_CMD_SUBMIT_CMD);
  assert_int_equal(dec(&b, &c, &need, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "submit limit"));
  b.n = 0;
  hdr(&b, 1024, VTEST_CMD_SUBMIT_CMD);
  assert_int_equal(dec(&b, &c, &need, &why), VTEST_DECODE_NEED_MORE);
  assert_int_equal(need, 8 + 4096);
  b.n = 8 + 4096;
  assert_int_equal(dec(&b, &c, &need, &why), VTEST_DECODE_OK);
  assert_int_equal(c.u.submit.ndw, 1024);
  assert_ptr_equal(c.u.submit.dw, b.b + 8);
}

static void test_unknown_and_unsupported(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  hdr(&b, 0, 999);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_string_equal(why, "unknown command id");
  b.n = 0;
  hdr(&b, 1, VTEST_CMD_GET_PARAM); /* protocol 3: decoded */
  put32(&b, 1);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_OK);
  assert_int_equal(c.u.param, 1);
  assert_true(vtest_cmd_is_v3(VTEST_CMD_GET_PARAM));
  assert_false(vtest_cmd_is_v3(VTEST_CMD_TRANSFER_PUT2));
  b.n = 0;
  hdr(&b, 0, 30); /* protocol 4: not offered */
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "version 4"));
  assert_string_equal(vtest_cmd_name(VTEST_CMD_TRANSFER_GET2), "TRANSFER_GET2");
  assert_string_equal(vtest_cmd_name(12345), "unknown");
}

static void test_blob_fields(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  hdr(&b, 6, VTEST_CMD_RESOURCE_CREATE_BLOB);
  uint32_t w[6] = {VTEST_BLOB_MEM_HOST3D, VTEST_BLOB_FLAG_MAPPABLE, 0x1000, 1, 7, 2};
  for (int i = 0; i < 6; i++)
    put32(&b, w[i]);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_OK);
  assert_int_equal(c.u.blob.type, 2);
  assert_int_equal(c.u.blob.flags, 1);
  assert_true(c.u.blob.size == 0x100001000ull);
  assert_true(c.u.blob.blob_id == 0x200000007ull);
  /* unknown type, unknown flag bit, size 0, wrong length */
  uint32_t *body = (uint32_t *)(b.b + 8);
  body[0] = 4;
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_string_equal(why, "unknown blob type");
  body[0] = 0;
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  body[0] = 1;
  body[1] = 8;
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_string_equal(why, "unknown blob flags");
  body[1] = 7;
  body[2] = body[3] = 0;
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_string_equal(why, "blob of size 0");
  ((uint32_t *)b.b)[0] = 5;
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  /* CONTEXT_INIT needs a capability set */
  b.n = 0;
  hdr(&b, 1, VTEST_CMD_CONTEXT_INIT);
  put32(&b, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
}

static void test_sync_wait_framing(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  size_t need;
  hdr(&b, 2 + 3 * 2, VTEST_CMD_SYNC_WAIT);
  put32(&b, VTEST_SYNC_WAIT_FLAG_ANY);
  put32(&b, 100);
  uint32_t e[6] = {1, 5, 0, 2, 0, 1};
  for (int i = 0; i < 6; i++)
    put32(&b, e[i]);
  assert_int_equal(vtest_decode(b.b, 20, &lim, &c, &need, &why), VTEST_DECODE_NEED_MORE);
  assert_int_equal(need, 8 + 32);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_OK);
  assert_int_equal(c.u.wait.count, 2);
  assert_int_equal(c.u.wait.timeout_ms, 100);
  uint32_t id;
  uint64_t v;
  vtest_sync_entry(c.u.wait.syncs, 1, &id, &v);
  assert_int_equal(id, 2);
  assert_true(v == 1ull << 32);
  /* LEN not 2 + 3 n, or under 2 */
  for (uint32_t len = 0; len < 8; len++) {
    if (len >= 2 && (len - 2) % 3 == 0)
      continue;
    ((uint32_t *)b.b)[0] = len;
    assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  }
  /* more syncs than allowed (4 here), refused before the body arrives */
  ((uint32_t *)b.b)[0] = 2 + 3 * 5;
  assert_int_equal(vtest_decode(b.b, 8, &lim, &c, &need, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "more syncs"));
  /* unknown flags */
  ((uint32_t *)b.b)[0] = 8;
  ((uint32_t *)b.b)[2] = 2;
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
}

/* One batch of `ndw`-dword SUBMIT_CMD2 with the given fields. */
static void submit2(Buf *b, uint32_t ndw, uint32_t nb, uint32_t flags, uint32_t cmd_off,
                    uint32_t cmd_size, uint32_t sync_off, uint32_t sync_count, uint32_t ring) {
  b->n = 0;
  hdr(b, ndw, VTEST_CMD_SUBMIT_CMD2);
  put32(b, nb);
  uint32_t f[8] = {flags, cmd_off, cmd_size, sync_off, sync_count, ring, 0, 0};
  for (int i = 0; i < 8; i++)
    put32(b, f[i]);
  while (b->n < 8 + 4 * (size_t)ndw)
    put32(b, 0);
}

static void test_submit2_bounds(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  submit2(&b, 14, 1, VTEST_SUBMIT2_FLAG_RING_IDX, 9, 2, 11, 1, 63);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_OK);
  assert_int_equal(c.u.submit2.batch_count, 1);
  VtestBatch bt;
  vtest_submit2_batch(&c, 0, &bt);
  assert_int_equal(bt.cmd_size, 2);
  assert_ptr_equal(bt.cmd, b.b + 8 + 36);
  assert_int_equal(bt.sync_count, 1);
  assert_ptr_equal(bt.syncs, b.b + 8 + 44);
  assert_int_equal(bt.ring_idx, 63);
  /* the batch table (stride 8) must fit: 2 batches need 17 dwords */
  submit2(&b, 14, 2, 0, 9, 2, 11, 1, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "batch table"));
  /* ranges: past the end, and wrapping in 32 bits */
  submit2(&b, 14, 1, 0, 9, 6, 11, 1, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  submit2(&b, 14, 1, 0, 0xffffffffu, 2, 11, 1, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  submit2(&b, 14, 1, 0, 9, 2, 12, 1, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "syncs outside"));
  submit2(&b, 14, 1, 0, 9, 2, 11, 0x55555556u, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  /* ring index, flags, no batch count */
  submit2(&b, 14, 1, 0, 9, 2, 11, 1, 64);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "ring index"));
  submit2(&b, 14, 1, 2, 9, 2, 11, 1, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  b.n = 0;
  hdr(&b, 0, VTEST_CMD_SUBMIT_CMD2);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  /* a count of 2^29 batches would wrap a 32-bit product */
  submit2(&b, 14, 1u << 29, 0, 9, 2, 11, 1, 0);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
}

static void test_transfer_get_limit(void **state) {
  Buf b = {0};
  VtestCmd c;
  const char *why = NULL;
  hdr(&b, 11, VTEST_CMD_TRANSFER_GET);
  for (int i = 0; i < 10; i++)
    put32(&b, 0);
  put32(&b, 1u << 20);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_needs_more),
      cmocka_unit_test(test_create_renderer_name_is_bytes),
      cmocka_unit_test(test_create_renderer_limits),
      cmocka_unit_test(test_fixed_length_must_match),
      cmocka_unit_test(test_create2_fields),
      cmocka_unit_test(test_put2_length_quirk),
      cmocka_unit_test(test_put_v0_unpadded),
      cmocka_unit_test(test_submit_limits),
      cmocka_unit_test(test_unknown_and_unsupported),
      cmocka_unit_test(test_transfer_get_limit),
      cmocka_unit_test(test_blob_fields),
      cmocka_unit_test(test_sync_wait_framing),
      cmocka_unit_test(test_submit2_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
