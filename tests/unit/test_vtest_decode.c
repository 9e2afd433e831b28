/* vtest decoder: framing by command id, the Mesa quirks it must accept, and
 * the limits it must enforce before anything is allocated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vtest/vtest_decode.h"

static const VtestLimits lim = {.max_name_bytes = 64, .max_submit_bytes = 4096,
                                .max_transfer_bytes = 1024};

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
  hdr(&b, 1, 15); /* GET_PARAM, protocol 3 */
  put32(&b, 1);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_non_null(strstr(why, "version 3"));
  b.n = 0;
  hdr(&b, 0, 30);
  assert_int_equal(dec(&b, &c, NULL, &why), VTEST_DECODE_INVALID);
  assert_string_equal(vtest_cmd_name(VTEST_CMD_TRANSFER_GET2), "TRANSFER_GET2");
  assert_string_equal(vtest_cmd_name(12345), "unknown");
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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
