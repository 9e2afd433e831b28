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

/* ---- transfer and copy boxes, by gallium's rules ------------------------ */

static int box(VgpuResourceDesc d, uint32_t level, uint32_t x, uint32_t y, uint32_t z, uint32_t w,
               uint32_t h, uint32_t dd, const char **why) {
  uint64_t bytes;
  if (vgpu_resource_size(&d, &bytes, why) < 0)
    fail_msg("the description itself is refused: %s", *why);
  *why = NULL;
  int r = vgpu_resource_check_box(&d, level, &(VgpuResourceBox){x, y, z, w, h, dd}, why);
  if (r == 0)
    assert_null(*why);
  else
    assert_non_null(*why);
  return r;
}

#define ACCEPTED(d, l, x, y, z, w, h, dd)                                                          \
  do {                                                                                             \
    const char *why_;                                                                              \
    int r_ = box(d, l, x, y, z, w, h, dd, &why_);                                                  \
    if (r_ != 0)                                                                                   \
      fail_msg("box %u,%u,%u %ux%ux%u level %u refused: %s", x, y, z, w, h, dd, l, why_);          \
  } while (0)
#define REFUSED(d, l, x, y, z, w, h, dd)                                                           \
  do {                                                                                             \
    const char *why_;                                                                              \
    if (box(d, l, x, y, z, w, h, dd, &why_) != -EINVAL)                                            \
      fail_msg("box %u,%u,%u %ux%ux%u level %u accepted", x, y, z, w, h, dd, l);                   \
  } while (0)

/* For a level of extent w x h x layers: the whole level, each last texel
 * and layer alone, and one past on every axis and at every origin. */
static void edges(VgpuResourceDesc d, uint32_t l, uint32_t w, uint32_t h, uint32_t layers) {
  uint32_t ew, eh, el;
  assert_int_equal(vgpu_resource_level_extent(&d, l, &ew, &eh, &el), 0);
  assert_int_equal(ew, w);
  assert_int_equal(eh, h);
  assert_int_equal(el, layers);
  ACCEPTED(d, l, 0, 0, 0, w, h, layers);
  ACCEPTED(d, l, w - 1, h - 1, layers - 1, 1, 1, 1);
  ACCEPTED(d, l, w, h, layers, 0, 0, 0); /* empty, at the end */
  REFUSED(d, l, 0, 0, 0, w + 1, h, layers);
  REFUSED(d, l, 0, 0, 0, w, h + 1, layers);
  REFUSED(d, l, 0, 0, 0, w, h, layers + 1);
  REFUSED(d, l, w, 0, 0, 1, 1, 1);
  REFUSED(d, l, 0, h, 0, 1, 1, 1);
  REFUSED(d, l, 0, 0, layers, 1, 1, 1);
  REFUSED(d, l, w + 1, 0, 0, 0, 1, 1);
  REFUSED(d, l, 0, h + 1, 0, 1, 0, 1);
  REFUSED(d, l, 0, 0, layers + 1, 1, 1, 0);
  /* origin + extent wraps in 32 bits: still refused */
  REFUSED(d, l, UINT32_MAX, 0, 0, 2, 1, 1);
  REFUSED(d, l, 1, 0, 0, UINT32_MAX, 1, 1);
  REFUSED(d, l, 0, UINT32_MAX, 0, 1, 2, 1);
  REFUSED(d, l, 0, 0, UINT32_MAX, 1, 1, 2);
  REFUSED(d, l, 0, 0, 1, 1, 1, UINT32_MAX);
  REFUSED(d, l, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX);
}

static void test_box_buffer(void **state) {
  /* x and width count bytes (R8); one row, one layer */
  VgpuResourceDesc b = tex(VGPU_TARGET_BUFFER, 64, 4096, 1, 1, 1, 0, 0);
  edges(b, 0, 4096, 1, 1);
  VgpuResourceDesc fence = tex(VGPU_TARGET_BUFFER, 64, 8, 1, 1, 0, 0, 0); /* array_size 0 */
  edges(fence, 0, 8, 1, 1);
  const char *why;
  assert_int_equal(box(b, 1, 0, 0, 0, 1, 1, 1, &why), -EINVAL);
  assert_string_equal(why, "mip level out of range");
  assert_int_equal(box(b, 0, 4000, 0, 0, 97, 1, 1, &why), -EINVAL);
  assert_string_equal(why, "box passes the end of the buffer");
}

static void test_box_1d(void **state) {
  VgpuResourceDesc d = tex(VGPU_TARGET_1D, 67, 64, 1, 1, 1, 6, 0);
  for (uint32_t l = 0; l <= 6; l++)
    edges(d, l, 64 >> l, 1, 1);
  const char *why;
  assert_int_equal(box(d, 0, 0, 0, 1, 1, 1, 1, &why), -EINVAL);
  assert_string_equal(why, "box has depth on a target without layers");
}

/* The case Mesa's arb_copy_image and layered-rendering tests send: a 1D
 * array's layer is z (32x1x1 at 0,0,1), y stays 0. */
static void test_box_1d_array(void **state) {
  VgpuResourceDesc d = tex(VGPU_TARGET_1D_ARRAY, 67, 32, 1, 1, 12, 5, 0);
  for (uint32_t l = 0; l <= 5; l++)
    edges(d, l, 32 >> l, 1, 12); /* layers do not shrink with the level */
  ACCEPTED(d, 0, 0, 0, 1, 32, 1, 1);
  ACCEPTED(d, 3, 0, 0, 11, 4, 1, 1);
  const char *why;
  assert_int_equal(box(d, 0, 0, 1, 0, 32, 1, 1, &why), -EINVAL); /* layers are not in y */
  assert_string_equal(why, "box passes the level's height");
  assert_int_equal(box(d, 0, 0, 0, 12, 32, 1, 1, &why), -EINVAL);
  assert_string_equal(why, "box passes the last array layer");
  edges(tex(VGPU_TARGET_1D_ARRAY, 67, 32, 1, 1, 1, 0, 0), 0, 32, 1, 1);
}

static void test_box_2d_rect(void **state) {
  VgpuResourceDesc d = tex(VGPU_TARGET_2D, 67, 64, 16, 1, 1, 6, 0);
  uint32_t h[] = {16, 8, 4, 2, 1, 1, 1};
  for (uint32_t l = 0; l <= 6; l++)
    edges(d, l, 64 >> l, h[l], 1);
  edges(tex(VGPU_TARGET_RECT, 67, 300, 200, 1, 1, 0, 0), 0, 300, 200, 1);
  edges(tex(VGPU_TARGET_2D, 67, 100, 100, 1, 1, 0, 4), 0, 100, 100, 1); /* MSAA */
  /* block-compressed: the box counts pixels */
  edges(tex(VGPU_TARGET_2D, 105, 10, 10, 1, 1, 0, 0), 0, 10, 10, 1);
}

static void test_box_2d_array(void **state) {
  VgpuResourceDesc d = tex(VGPU_TARGET_2D_ARRAY, 67, 32, 32, 1, 10, 5, 0);
  for (uint32_t l = 0; l <= 5; l++)
    edges(d, l, 32 >> l, 32 >> l, 10);
  ACCEPTED(d, 5, 0, 0, 4, 1, 1, 6);
  edges(tex(VGPU_TARGET_2D_ARRAY, 67, 8, 8, 1, 2048, 0, 0), 0, 8, 8, 2048);
}

static void test_box_cube(void **state) {
  VgpuResourceDesc d = tex(VGPU_TARGET_CUBE, 67, 32, 32, 1, 6, 5, 0);
  for (uint32_t l = 0; l <= 5; l++)
    edges(d, l, 32 >> l, 32 >> l, 6); /* z is the face */
  const char *why;
  assert_int_equal(box(d, 0, 0, 0, 5, 32, 32, 2, &why), -EINVAL);
  assert_string_equal(why, "box passes the last cube face");
}

static void test_box_cube_array(void **state) {
  /* 5 cubes: z counts 30 faces */
  VgpuResourceDesc d = tex(VGPU_TARGET_CUBE_ARRAY, 67, 16, 16, 1, 30, 4, 0);
  for (uint32_t l = 0; l <= 4; l++)
    edges(d, l, 16 >> l, 16 >> l, 30);
  ACCEPTED(d, 0, 0, 0, 24, 16, 16, 6); /* the last cube */
  REFUSED(d, 0, 0, 0, 25, 16, 16, 6);
}

static void test_box_3d(void **state) {
  /* depth shrinks with the level, unlike layers */
  VgpuResourceDesc d = tex(VGPU_TARGET_3D, 67, 32, 16, 8, 1, 5, 0);
  uint32_t w[] = {32, 16, 8, 4, 2, 1}, h[] = {16, 8, 4, 2, 1, 1}, dd[] = {8, 4, 2, 1, 1, 1};
  for (uint32_t l = 0; l <= 5; l++)
    edges(d, l, w[l], h[l], dd[l]);
  const char *why;
  assert_int_equal(box(d, 1, 0, 0, 0, 16, 8, 5, &why), -EINVAL);
  assert_string_equal(why, "box passes the level's depth");
  ACCEPTED(d, 0, 0, 0, 7, 32, 16, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_what_glxgears_creates),
      cmocka_unit_test(test_mipmaps_layers_samples),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_largest_fits_in_64_bits),
      cmocka_unit_test(test_level_layout),
      cmocka_unit_test(test_box_buffer),
      cmocka_unit_test(test_box_1d),
      cmocka_unit_test(test_box_1d_array),
      cmocka_unit_test(test_box_2d_rect),
      cmocka_unit_test(test_box_2d_array),
      cmocka_unit_test(test_box_cube),
      cmocka_unit_test(test_box_cube_array),
      cmocka_unit_test(test_box_3d),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
