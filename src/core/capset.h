/* Capability set ids (virtio-gpu's VIRTIO_GPU_CAPSET_*, which vtest's
 * GET_CAPSET and virglrenderer's virgl_renderer_get_cap_set share) and the
 * names operators see them under. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct VgpuCapsetName {
  uint32_t id;
  const char *name;
} VgpuCapsetName;

static const VgpuCapsetName vgpu_capset_names[] = {
    {1, "virgl"},           {2, "virgl2"},         {3, "gfxstream-vulkan"},
    {4, "venus"},           {5, "cross-domain"},   {6, "drm"},
    {7, "gfxstream-magma"}, {8, "gfxstream-gles"}, {9, "gfxstream-composer"},
};

#define VGPU_CAPSET_N_KNOWN (sizeof(vgpu_capset_names) / sizeof(vgpu_capset_names[0]))

/* The name of a known id, else NULL. */
static inline const char *vgpu_capset_name(uint32_t id) {
  for (size_t i = 0; i < VGPU_CAPSET_N_KNOWN; i++)
    if (vgpu_capset_names[i].id == id)
      return vgpu_capset_names[i].name;
  return NULL;
}
