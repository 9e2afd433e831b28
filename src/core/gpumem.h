/* GPU memory partitioning: the arithmetic.  The instances' VRAM limits
 * together may not exceed [daemon] gpu-memory x overcommit (the capacity).
 * An instance with unlimited VRAM (vram=0) is charged the whole
 * gpu-memory: it may use all of it.  Every sum saturates at UINT64_MAX
 * instead of wrapping, so no set of limits can appear to fit by
 * overflowing.  No I/O. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* overcommit is kept in thousandths: 1000 (1.0) .. 16000 (16.0). */
#define VGPU_OVERCOMMIT_MIN 1000u
#define VGPU_OVERCOMMIT_MAX 16000u
#define VGPU_OVERCOMMIT_DEFAULT 1000u

/* What gpu-memory=auto takes on a renderer without its own memory
 * (llvmpipe, or a render node that reports none): this percentage of the
 * host's RAM. */
#define VGPU_GPU_MEMORY_HOST_PERCENT 50u

/* "1", "1.5", "2.25", "16.0" (at most three decimals) -> thousandths in
 * VGPU_OVERCOMMIT_MIN..MAX. */
bool vgpu_overcommit_parse(const char *s, uint32_t *milli, GError **error);
/* "1.0", "1.5", "2.25" */
char *vgpu_overcommit_format(uint32_t milli);

/* gpu_memory x milli / 1000, saturating. */
uint64_t vgpu_gpumem_capacity(uint64_t gpu_memory, uint32_t milli);
/* What an instance with this VRAM limit counts against the capacity. */
uint64_t vgpu_gpumem_charge(uint64_t vram, uint64_t gpu_memory);
/* a + b, saturating. */
uint64_t vgpu_gpumem_add(uint64_t a, uint64_t b);
/* capacity - assigned, or 0 when assigned is beyond it. */
uint64_t vgpu_gpumem_free(uint64_t capacity, uint64_t assigned);
/* Whether charge more fits beside `assigned`. */
bool vgpu_gpumem_fits(uint64_t capacity, uint64_t assigned, uint64_t charge);
/* How many more instances charged `charge` each fit (charge 0: G_MAXUINT32,
 * never the case with vgpu_gpumem_charge and gpu_memory > 0). */
uint64_t vgpu_gpumem_available(uint64_t capacity, uint64_t assigned, uint64_t charge);

/* The refusal: "vgpu2: vram 4 GiB does not fit: 2.5 GiB of 11.6 GiB GPU
 * memory free (overcommit 1.0)".  `assigned` does not include the
 * instance itself. */
char *vgpu_gpumem_refusal(const char *name, uint64_t vram, uint64_t gpu_memory, uint32_t milli,
                          uint64_t assigned);
