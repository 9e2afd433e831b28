/* A GPU resource as tenants describe it (vtest RESOURCE_CREATE*, virtio-gpu
 * RESOURCE_CREATE_3D), and the byte size we charge for it against the VRAM
 * quota.  Pure functions, no I/O. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* pipe_texture_target values used by virgl */
enum {
  VGPU_TARGET_BUFFER = 0,
  VGPU_TARGET_1D = 1,
  VGPU_TARGET_2D = 2,
  VGPU_TARGET_3D = 3,
  VGPU_TARGET_CUBE = 4,
  VGPU_TARGET_RECT = 5,
  VGPU_TARGET_1D_ARRAY = 6,
  VGPU_TARGET_2D_ARRAY = 7,
  VGPU_TARGET_CUBE_ARRAY = 8,
  VGPU_TARGET_MAX = 8,
};

/* virgl bind flags we look at */
enum {
  VGPU_BIND_DISPLAY_TARGET = 1u << 7,
  VGPU_BIND_CUSTOM = 1u << 17,
};

typedef struct VgpuResourceDesc {
  uint32_t handle;
  uint32_t target;
  uint32_t format; /* virgl_formats */
  uint32_t bind;
  uint32_t width;
  uint32_t height;
  uint32_t depth;
  uint32_t array_size;
  uint32_t last_level;
  uint32_t nr_samples;
  uint32_t flags;
} VgpuResourceDesc;

/* A region of one mip level: x, y, z and its width, height, depth (for
 * array targets the layers are in z, except 1D arrays: in y). */
typedef struct VgpuBox {
  uint32_t x, y, z, w, h, d;
} VgpuBox;

/* Format block geometry: bytes per block and block width/height in pixels.
 * Returns false for a format id we do not know. */
typedef struct VgpuFormatInfo {
  uint8_t block_bytes;
  uint8_t block_w;
  uint8_t block_h;
} VgpuFormatInfo;

bool vgpu_format_info(uint32_t virgl_format, VgpuFormatInfo *out);

/* Hard sanity caps independent of any quota (a tenant may lower them). */
#define VGPU_RESOURCE_MAX_DIM 16384u
#define VGPU_RESOURCE_MAX_DEPTH 2048u
#define VGPU_RESOURCE_MAX_LAYERS 2048u
#define VGPU_RESOURCE_MAX_SAMPLES 32u

/* Validates the description (target, format, dimensions, levels, samples)
 * and computes the bytes of all mip levels, layers and samples with overflow
 * checks.  Returns 0, -EINVAL (malformed) or -EOVERFLOW. */
int vgpu_resource_size(const VgpuResourceDesc *d, uint64_t *bytes, const char **why);

/* A region of one mip level as virgl addresses it (gallium's pipe_box with
 * unsigned fields): x/y/z origin and w/h/d extent. */
typedef struct VgpuResourceBox {
  uint32_t x, y, z, w, h, d;
} VgpuResourceBox;

/* What a box may address in one mip level, by gallium's rules: w in
 * pixels (bytes for a buffer), h in rows (1 for buffers and 1D targets),
 * and layers along z: the level's depth for 3D, the 6 faces of a cube, the
 * array size of 1D, 2D and cube arrays (a cube array counts faces), and 1
 * for every other target.  Mip levels shrink w, h and a 3D depth, never
 * array layers.  Returns 0 or -EINVAL for a level past last_level. */
int vgpu_resource_level_extent(const VgpuResourceDesc *d, uint32_t level, uint32_t *w, uint32_t *h,
                               uint32_t *layers);

/* Checks a transfer or copy box against a validated description: the
 * level exists and x+w, y+h and z+d stay within the level's extent (see
 * above; computed without overflow).  An empty box is accepted where its
 * origin lies within the extent or on its end.  Returns 0, or -EINVAL with
 * *why set. */
int vgpu_resource_check_box(const VgpuResourceDesc *d, uint32_t level, const VgpuResourceBox *box,
                            const char **why);

/* Size in bytes of one mip level's row and image, for transfer box checks. */
int vgpu_resource_level_layout(const VgpuResourceDesc *d, uint32_t level, uint64_t *row_bytes,
                               uint64_t *image_bytes, uint32_t *level_w, uint32_t *level_h,
                               uint32_t *level_d);
