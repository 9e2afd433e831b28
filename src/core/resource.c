/* Resource sizes for the VRAM quota: virgl format geometry and the bytes of
 * every level, layer and sample, computed with overflow checks. */
#include "core/resource.h"

#include <errno.h>
#include <glib.h>

/* Bytes per block for each virgl format id (src/virgl_hw.h numbering); 0
 * marks ids that are unassigned.  Block size is 1x1 unless listed in
 * block_dims below. */
static const uint8_t fmt_bytes[] = {
    /* 0-15 */ 0, 4, 4, 4, 4, 2, 2, 2, 4, 1, 1, 1, 2, 2, 4, 4,
    /* 16-31 */ 2, 4, 4, 4, 4, 4, 4, 1, 8, 16, 24, 32, 4, 8, 12, 16,
    /* 32-47 */ 4, 8, 12, 16, 4, 8, 12, 16, 4, 8, 12, 16, 4, 8, 12, 16,
    /* 48-63 */ 2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8, 2, 4, 6, 8,
    /* 64-79 */ 1, 2, 3, 4, 4, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0,
    /* 80-95 */ 0, 0, 1, 2, 3, 4, 0, 4, 8, 12, 16, 2, 4, 6, 8, 1,
    /* 96-111 */ 2, 3, 4, 4, 4, 4, 4, 4, 4, 8, 8, 16, 16, 8, 8, 16,
    /* 112-127 */ 16, 8, 8, 16, 16, 4, 4, 4, 2, 4, 2, 4, 4, 4, 8, 1,
    /* 128-143 */ 4, 4, 1, 4, 4, 2, 4, 2, 4, 4, 8, 1, 4, 2, 2, 8,
    /* 144-159 */ 8, 16, 16, 1, 1, 2, 1, 2, 2, 4, 2, 2, 2, 4, 2, 4,
    /* 160-175 */ 4, 8, 4, 2, 2, 2, 2, 2, 1, 1, 2, 2, 4, 4, 4, 4,
    /* 176-191 */ 4, 1, 2, 3, 4, 1, 2, 3, 4, 2, 4, 6, 8, 2, 4, 6,
    /* 192-207 */ 8, 4, 8, 12, 16, 4, 8, 12, 16, 1, 1, 1, 2, 1, 1, 1,
    /* 208-223 */ 2, 2, 2, 2, 4, 2, 2, 2, 4, 4, 4, 4, 8, 4, 4, 4,
    /* 224-239 */ 8, 4, 8, 4, 4, 4, 4, 4, 4, 4, 8, 8, 8, 8, 8, 16,
    /* 240-255 */ 16, 16, 2, 4, 4, 4, 8, 2, 2, 4, 4, 8, 8, 4, 2, 16,
    /* 256-271 */ 16, 16, 16, 0, 0, 0, 0, 2, 2, 4, 4, 4, 4, 8, 8, 8,
    /* 272-287 */ 8, 16, 16, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    /* 288-303 */ 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    /* 304-319 */ 16, 16, 16, 0, 4, 0, 0, 2, 1, 2, 4, 4, 4, 3, 1, 2,
    /* 320-335 */ 2, 2, 1, 3, 2, 2, 1, 4, 4, 4, 2, 2, 2, 2, 4, 4,
    /* 336-351 */ 4, 4, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 16, 16, 16, 16,
    /* 352-367 */ 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
    /* 368-383 */ 8, 16, 16, 4, 4, 4, 4, 1, 2, 2, 2, 4, 4, 4, 4, 4,
    /* 384-399 */ 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 16, 16, 4, 4, 2,
    /* 400-415 */ 2, 2, 4, 4, 4, 1, 2, 2, 2, 2, 2, 2, 32, 32, 24, 24,
    /* 416-431 */ 16, 16, 8, 8, 2, 2, 4, 2, 2, 3, 4, 2, 2, 4, 4, 4,
    /* 432-447 */ 4, 2, 4, 4, 6, 8, 8, 8, 4, 8, 8, 2, 4, 3, 4, 4,
    /* 448-463 */ 4, 4, 2, 4, 2, 4, 2, 2, 2, 16, 16, 16, 16, 16, 16, 16,
    /* 464-480 */ 16, 16, 16, 16, 16, 16, 16, 4, 4, 4, 4, 4, 4, 6, 4, 4, 6,
};

typedef struct {
  uint16_t first, last;
  uint8_t w, h;
} BlockDims;

/* Formats whose block covers more than one pixel. */
static const BlockDims block_dims[] = {
    {14, 15, 2, 1},    /* UYVY, YUYV */
    {105, 116, 4, 4},  /* DXT, RGTC */
    {117, 118, 2, 1},  /* R8G8_B8G8, G8R8_G8B8 */
    {143, 146, 4, 4},  /* LATC */
    {226, 226, 4, 4},  /* ETC1 */
    {227, 228, 2, 1},
    {255, 258, 4, 4},  /* BPTC */
    {269, 278, 4, 4},  /* ETC2 */
    {368, 370, 4, 4},  /* ATC */
    {384, 384, 2, 1},
    {394, 394, 2, 1},
    {395, 396, 8, 4},  /* FXT1 */
    {398, 398, 2, 1},
    {422, 422, 2, 1},
    {426, 426, 2, 1},
};

/* ASTC 2D block footprints for 279..306 and 457..470 (same order). */
static const uint8_t astc_dims[14][2] = {{4, 4}, {5, 4},  {5, 5},  {6, 5},   {6, 6},
                                         {8, 5}, {8, 6},  {8, 8},  {10, 5},  {10, 6},
                                         {10, 8}, {10, 10}, {12, 10}, {12, 12}};

bool vgpu_format_info(uint32_t f, VgpuFormatInfo *out) {
  if (f >= G_N_ELEMENTS(fmt_bytes) || fmt_bytes[f] == 0)
    return false;
  out->block_bytes = fmt_bytes[f];
  out->block_w = 1;
  out->block_h = 1;
  for (size_t i = 0; i < G_N_ELEMENTS(block_dims); i++) {
    if (f >= block_dims[i].first && f <= block_dims[i].last) {
      out->block_w = block_dims[i].w;
      out->block_h = block_dims[i].h;
    }
  }
  uint32_t astc = UINT32_MAX;
  if (f >= 279 && f <= 306)
    astc = (f - 279) % 14;
  else if (f >= 457 && f <= 470)
    astc = f - 457;
  if (astc != UINT32_MAX) {
    out->block_w = astc_dims[astc][0];
    out->block_h = astc_dims[astc][1];
  }
  /* 3D ASTC (348..367): charge as 4x4 2D blocks per slice, an over-estimate. */
  if (f >= 348 && f <= 367) {
    out->block_w = 3;
    out->block_h = 3;
  }
  return true;
}

static uint32_t minify(uint32_t v, uint32_t level) {
  uint32_t r = level < 32 ? v >> level : 0;
  return r ? r : 1;
}

static uint32_t max_levels(uint32_t w, uint32_t h, uint32_t d) {
  uint32_t m = MAX(MAX(w, h), d), n = 1;
  while (m > 1) {
    m >>= 1;
    n++;
  }
  return n;
}

#define REFUSE(code, text)                                                     \
  do {                                                                         \
    if (why)                                                                   \
      *why = (text);                                                           \
    return (code);                                                             \
  } while (0)

static int validate(const VgpuResourceDesc *d, const char **why) {
  VgpuFormatInfo fi;
  if (d->target > VGPU_TARGET_MAX)
    REFUSE(-EINVAL, "unknown target");
  if (!vgpu_format_info(d->format, &fi))
    REFUSE(-EINVAL, "unknown format");
  if (d->width == 0 || d->width > VGPU_RESOURCE_MAX_DIM * (d->target == VGPU_TARGET_BUFFER ? 65536u : 1u))
    REFUSE(-EINVAL, "width out of range");
  if (d->height == 0 || d->height > VGPU_RESOURCE_MAX_DIM)
    REFUSE(-EINVAL, "height out of range");
  if (d->depth == 0 || d->depth > VGPU_RESOURCE_MAX_DEPTH)
    REFUSE(-EINVAL, "depth out of range");
  if (d->array_size > VGPU_RESOURCE_MAX_LAYERS)
    REFUSE(-EINVAL, "too many array layers");
  if (d->nr_samples > VGPU_RESOURCE_MAX_SAMPLES)
    REFUSE(-EINVAL, "too many samples");
  switch (d->target) {
  case VGPU_TARGET_BUFFER:
    if (d->height != 1 || d->depth != 1 || d->last_level != 0 || d->array_size > 1)
      REFUSE(-EINVAL, "a buffer has one row, one layer and no mip levels");
    break;
  case VGPU_TARGET_1D:
  case VGPU_TARGET_1D_ARRAY:
    if (d->height != 1 || d->depth != 1)
      REFUSE(-EINVAL, "a 1D texture has height and depth 1");
    break;
  case VGPU_TARGET_3D:
    if (d->array_size > 1)
      REFUSE(-EINVAL, "a 3D texture has no array layers");
    break;
  default:
    if (d->depth != 1)
      REFUSE(-EINVAL, "only 3D textures have depth");
    break;
  }
  if (d->target == VGPU_TARGET_CUBE && d->array_size != 6 && d->array_size > 1)
    REFUSE(-EINVAL, "a cube map has 6 faces");
  if (d->target == VGPU_TARGET_CUBE_ARRAY && d->array_size % 6 != 0)
    REFUSE(-EINVAL, "a cube map array has a multiple of 6 faces");
  uint32_t depth_for_levels = d->target == VGPU_TARGET_3D ? d->depth : 1;
  if (d->last_level >= max_levels(d->width, d->height, depth_for_levels))
    REFUSE(-EINVAL, "more mip levels than the size allows");
  return 0;
}

int vgpu_resource_level_layout(const VgpuResourceDesc *d, uint32_t level, uint64_t *row_bytes,
                               uint64_t *image_bytes, uint32_t *lw, uint32_t *lh, uint32_t *ld) {
  VgpuFormatInfo fi;
  if (level > d->last_level || !vgpu_format_info(d->format, &fi))
    return -EINVAL;
  *lw = minify(d->width, level);
  *lh = minify(d->height, level);
  *ld = d->target == VGPU_TARGET_3D ? minify(d->depth, level) : 1;
  uint64_t bw = ((uint64_t)*lw + fi.block_w - 1) / fi.block_w;
  uint64_t bh = ((uint64_t)*lh + fi.block_h - 1) / fi.block_h;
  *row_bytes = bw * fi.block_bytes;
  *image_bytes = *row_bytes * bh; /* < 2^32 * 2^14 * 32: fits */
  return 0;
}

int vgpu_resource_size(const VgpuResourceDesc *d, uint64_t *bytes, const char **why) {
  int r = validate(d, why);
  if (r < 0)
    return r;
  uint64_t total = 0;
  for (uint32_t l = 0; l <= d->last_level; l++) {
    uint64_t row, img, level_bytes;
    uint32_t lw, lh, ld;
    vgpu_resource_level_layout(d, l, &row, &img, &lw, &lh, &ld);
    if (__builtin_mul_overflow(img, (uint64_t)ld, &level_bytes) ||
        __builtin_add_overflow(total, level_bytes, &total))
      REFUSE(-EOVERFLOW, "size overflows");
  }
  uint64_t layers = MAX(d->array_size, 1u), samples = MAX(d->nr_samples, 1u);
  if (__builtin_mul_overflow(total, layers, &total) ||
      __builtin_mul_overflow(total, samples, &total))
    REFUSE(-EOVERFLOW, "size overflows");
  *bytes = total;
  return 0;
}

int vgpu_resource_level_extent(const VgpuResourceDesc *d, uint32_t level, uint32_t *w, uint32_t *h,
                               uint32_t *layers) {
  if (level > d->last_level)
    return -EINVAL;
  *w = minify(d->width, level);
  *h = minify(d->height, level);
  switch (d->target) {
  case VGPU_TARGET_3D:
    *layers = minify(d->depth, level);
    break;
  case VGPU_TARGET_CUBE:
    *layers = 6;
    break;
  case VGPU_TARGET_CUBE_ARRAY:
    *layers = MAX(d->array_size, 6u);
    break;
  case VGPU_TARGET_1D_ARRAY:
  case VGPU_TARGET_2D_ARRAY:
    *layers = MAX(d->array_size, 1u);
    break;
  default: /* buffer, 1D, 2D, rect */
    *layers = 1;
    break;
  }
  return 0;
}

int vgpu_resource_check_box(const VgpuResourceDesc *d, uint32_t level, const VgpuResourceBox *b,
                            const char **why) {
  uint32_t w, h, layers;
  if (vgpu_resource_level_extent(d, level, &w, &h, &layers) < 0)
    REFUSE(-EINVAL, "mip level out of range");
  /* 64-bit sums: no 32-bit origin plus extent wraps around. */
  if ((uint64_t)b->x + b->w > w)
    REFUSE(-EINVAL, d->target == VGPU_TARGET_BUFFER ? "box passes the end of the buffer"
                                                    : "box passes the level's width");
  if ((uint64_t)b->y + b->h > h)
    REFUSE(-EINVAL, "box passes the level's height");
  if ((uint64_t)b->z + b->d > layers)
    REFUSE(-EINVAL, d->target == VGPU_TARGET_3D ? "box passes the level's depth"
                    : d->target == VGPU_TARGET_CUBE || d->target == VGPU_TARGET_CUBE_ARRAY
                        ? "box passes the last cube face"
                    : d->target == VGPU_TARGET_1D_ARRAY || d->target == VGPU_TARGET_2D_ARRAY
                        ? "box passes the last array layer"
                        : "box has depth on a target without layers");
  return 0;
}
