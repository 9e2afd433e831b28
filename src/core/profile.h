/* Profiles: the shapes vGPU instances are cut from, and the value syntax
 * shared by the configuration file and `vgpuctl set`.  No I/O. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ledger.h"

typedef enum {
  VGPU_SHARE_BEST_EFFORT = 0,
  VGPU_SHARE_EQUAL = 1,
  VGPU_SHARE_FIXED = 2,
} VgpuShareMode;

typedef struct VgpuProfile {
  char *name;
  char *description;
  uint64_t vram;          /* bytes, 0 = unlimited */
  uint64_t max_resources; /* 0 = unlimited */
  uint64_t max_contexts;
  uint64_t max_clients;
  /* Live objects (shaders, states, views, surfaces, queries...) a client's
   * command streams may hold; VGPU_VIRGL_MIN/MAX_MAX_OBJECTS bound it. */
  uint32_t max_stream_objects;
  /* Sync objects (vtest protocol 3) a client may hold at once. */
  uint32_t max_syncs;
  VgpuShareMode share;
  uint32_t weight;  /* fixed-share weight, 1..10000 */
  uint32_t fps_cap; /* 0 = none */
  uint32_t heads;   /* display heads, 1..16 */
  uint64_t host_memory; /* bytes each worker may allocate, 64 MiB..1 TiB */
  /* Clients one uid may have connected at once; when not set, half of
   * max_clients rounded up (see vgpu_profile_clients_per_uid). */
  uint64_t max_clients_per_uid; /* 0 = unlimited */
  bool max_clients_per_uid_set;
  uint32_t gpu_timeout_s; /* a submission's longest run, 0 = none */
  /* llvmpipe's rendering threads per worker (LP_NUM_THREADS); 0 = Mesa's
   * default, one per CPU. */
  uint32_t render_threads;
} VgpuProfile;

#define VGPU_RENDER_THREADS_MAX 64u

#define VGPU_MAX_SYNCS_DEFAULT 1024u
#define VGPU_MAX_SYNCS_MIN 16u
#define VGPU_MAX_SYNCS_MAX (1u << 20)
#define VGPU_HOST_MEMORY_DEFAULT (2ull << 30)
#define VGPU_HOST_MEMORY_MIN (64ull << 20)
#define VGPU_HOST_MEMORY_MAX (1ull << 40)

/* gpu-timeout: default and largest value (seconds). */
#define VGPU_GPU_TIMEOUT_DEFAULT_S 10u
#define VGPU_GPU_TIMEOUT_MAX_S 86400u

VgpuProfile *vgpu_profile_copy(const VgpuProfile *p);
void vgpu_profile_free(VgpuProfile *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuProfile, vgpu_profile_free)

/* "0", "4096", "64K", "256M", "1G", "1.5G", "512MiB", "unlimited"
 * (binary units; "unlimited" and "0" both mean no limit). */
bool vgpu_parse_size(const char *s, uint64_t *out, GError **error);
/* Non-negative integer, or "unlimited" (0). */
bool vgpu_parse_count(const char *s, uint64_t *out, GError **error);
/* "256 MiB", "1.5 GiB", "512 B"; 0 -> "unlimited" when zero_is_unlimited. */
char *vgpu_format_size(uint64_t bytes, bool zero_is_unlimited);
const char *vgpu_share_mode_name(VgpuShareMode m);
bool vgpu_share_mode_parse(const char *s, VgpuShareMode *out);
/* The effective per-uid client limit (0 = none). */
uint64_t vgpu_profile_clients_per_uid(const VgpuProfile *p);
/* Fills ledger limits (VGPU_RES_VRAM, _OBJECTS, _CONTEXTS). */
void vgpu_profile_limits(const VgpuProfile *p, uint64_t limits[VGPU_RES_N_QUOTA]);
