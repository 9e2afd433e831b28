/* [daemon] gpu-memory and overcommit: what the GPU memory is, found once
 * per (re)load, and whether a set of instances fits it (core/gpumem.h has
 * the arithmetic). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/config.h"

/* The GPU memory cfg->gpu_memory names.  auto: the render node's VRAM
 * where its kernel driver reports it in sysfs (amdgpu's
 * mem_info_vram_total), else VGPU_GPU_MEMORY_HOST_PERCENT of MemTotal in
 * /proc/meminfo (llvmpipe renders in host memory, as does a GPU without
 * VRAM of its own; a driver that does not report its VRAM there is taken
 * for one, and the log says so: set gpu-memory for it).  *source: a
 * sentence for the log.  0 only when nothing could be read (then *source
 * says so). */
uint64_t vgpu_gpu_memory_resolve(const VgpuConfig *cfg, const char *render_node, char **source);

/* MemTotal of /proc/meminfo text, in bytes. */
bool vgpu_meminfo_total(const char *text, uint64_t *bytes);

/* Adds up the VRAM charges of `instances` (const VgpuInstanceConfig*) in
 * order; the first that does not fit is refused with
 * vgpu_gpumem_refusal's message.  *assigned: the total (when true). */
bool vgpu_gpu_memory_check(GPtrArray *instances, uint64_t gpu_memory, uint32_t milli,
                           uint64_t *assigned, GError **error);
