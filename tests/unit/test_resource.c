/* Resource sizes charged against VRAM: what Mesa really creates, every
 * refusal path, and overflow. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/resource.h"

static VgpuResourceDesc tex(uint32_t target, uint32_t fmt, uint32_t w, uint32_t h, uint32_t d,
                            uint32_t layers, uint32_t last_level, uint32_t samples) {
  return (VgpuResourceDesc){.handle = 1, .target = target, .format = fmt, .width = w, .height = h,
                            .depth = d, .array_size = layers, .last_level = last_level,
                            .nr_samples = samples};
}

static uint64_t size_of(VgpuResourceDesc d) {
  uint64_t b = 0;
  const char *why = NULL;
  int r = vgpu_resource_size(&d, &b, &why);
  if (r < 0)
    fail_msg("refused: %s", why);
  return b;
}

static int refusal(VgpuResourceDesc d, const char **why) {
  uint64_t b;
  return vgpu_resource_size(&d, &b, why);
}

static void test_what_glxgears_creates(void **state) {
  /* From a Mesa 22.3 trace: display target, depth buffer, vertex buffers,
   * the 8-byte fence buffer (array_size 0). */
  assert_int_equal(size_of(tex(2, 2, 300, 300, 1, 1, 0, 0)), 360000);
  assert_int_equal(size_of(tex(2, 17, 300, 300, 1, 1, 0, 0)), 360000);
  assert_int_equal(size_of(tex(0, 64, 1048576, 1, 1, 1, 0, 0)), 1048576);
  assert_int_equal(size_of(tex(0, 64, 8, 1, 1, 0, 0, 0)), 8);
}

static void test_mipmaps_layers_samples(void **state) {
  /* 64x64 RGBA8 with all 7 levels: 4 * (4096+1024+256+64+16+4+1) */
  assert_int_equal(size_of(tex(2, 67, 64, 64, 1, 1, 6, 0)), 4 * 5461);
  assert_int_equal(size_of(tex(4, 67, 16, 16, 1, 6, 0, 0)), 6 * 1024);     /* cube */
  assert_int_equal(size_of(tex(7, 67, 16, 16, 1, 10, 0, 0)), 10 * 1024);   /* 2D array */
  assert_int_equal(size_of(tex(3, 67, 16, 16, 16, 1, 1, 0)), 4 * (4096 + 512)); /* 3D */
  assert_int_equal(size_of(tex(2, 67, 100, 100, 1, 1, 0, 4)), 4 * 40000); /* MSAA */
  /* DXT1: 8 bytes per 4x4 block, partial blocks round up */
  assert_int_equal(size_of(tex(2, 105, 10, 10, 1, 1, 0, 0)), 3 * 3 * 8);
  assert_int_equal(size_of(tex(2, 279, 8, 8, 1, 1, 0, 0)), 4 * 16); /* ASTC 4x4 */
}

static void test_refusals(void **state) {
  const char *why = NULL;
  assert_int_equal(refusal(tex(9, 67, 8, 8, 1, 1, 0, 0), &why), -EINVAL);
  assert_string_equal(why, "unknown target");
  assert_int_equal(refusal(tex(2, 9999, 8, 8, 1, 1, 0, 0), &why), -EINVAL);
  assert_string_equal(why, "unknown format");
  assert_int_equal(refusal(tex(2, 73, 8, 8, 1, 1, 0, 0), &why), -EINVAL); /* unassigned id */
  assert_int_equal(refusal(tex(2, 67, 0, 8, 1, 1, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(2, 67, 8, 8, 1, 1, 4, 0), &why), -EINVAL);
  assert_string_equal(why, "more mip levels than the size allows");
  assert_int_equal(refusal(tex(2, 67, 8, 8, 2, 1, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(0, 64, 8, 2, 1, 1, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(1, 67, 8, 2, 1, 1, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(4, 67, 8, 8, 1, 5, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(8, 67, 8, 8, 1, 7, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(2, 67, 8, 8, 1, 1, 0, 64), &why), -EINVAL);
  assert_int_equal(refusal(tex(2, 67, 20000, 8, 1, 1, 0, 0), &why), -EINVAL);
  assert_int_equal(refusal(tex(7, 67, 8, 8, 1, 4096, 0, 0), &why), -EINVAL);
}

static void test_largest_fits_in_64_bits(void **state) {
  /* 16384^2 x 2048 layers x 32 samples x 32 bytes = 2^49: large, no overflow */
  uint64_t b = size_of(tex(7, 27, 16384, 16384, 1, 2048, 0, 32));
  assert_true(b == (1ull << 49));
  uint64_t b2 = size_of(tex(3, 27, 16384, 16384, 2048, 1, 14, 32));
  assert_true(b2 > (1ull << 49));
}

static void test_level_layout(void **state) {
  VgpuResourceDesc d = tex(2, 67, 300, 200, 1, 1, 3, 0);
  uint64_t row, img;
  uint32_t w, h, dd;
  assert_int_equal(vgpu_resource_level_layout(&d, 0, &row, &img, &w, &h, &dd), 0);
  assert_int_equal(row, 1200);
  assert_int_equal(img, 240000);
  assert_int_equal(vgpu_resource_level_layout(&d, 3, &row, &img, &w, &h, &dd), 0);
  assert_int_equal(w, 37);
  assert_int_equal(h, 25);
  assert_int_equal(dd, 1);
  assert_int_equal(vgpu_resource_level_layout(&d, 4, &row, &img, &w, &h, &dd), -EINVAL);
  VgpuFormatInfo fi;
  assert_true(vgpu_format_info(105, &fi));
  assert_int_equal(fi.block_w, 4);
  assert_int_equal(fi.block_bytes, 8);
  assert_false(vgpu_format_info(0, &fi));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_what_glxgears_creates), cmocka_unit_test(test_mipmaps_layers_samples),
      cmocka_unit_test(test_refusals),              cmocka_unit_test(test_largest_fits_in_64_bits),
      cmocka_unit_test(test_level_layout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
