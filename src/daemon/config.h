/* vgpud configuration: a GKeyFile (vgpud.conf(5)) or the embedded default.
 * Groups: [daemon], [profile NAME], [instance NAME].  Loading fails on any
 * unknown group or key or bad value; the error's message then names every
 * error of the file, one "FILE:LINE: reason" a line in line order (at most
 * VGPU_CONFIG_MAX_ERRORS of them). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/profile.h"
#include "util/log.h"
#include "util/runtime_dir.h" /* vgpu_instance_name_valid, runtime dir default */

/* The most errors of one file that are reported. */
#define VGPU_CONFIG_MAX_ERRORS 50

/* Longest idle-timeout: the worker waits in int milliseconds (INT_MAX / 1000). */
#define VGPU_IDLE_TIMEOUT_MAX 2147483

typedef struct VgpuInstanceConfig {
  char *name;    /* [a-zA-Z0-9_-]{1,31} */
  char *profile; /* name of a profile in the same config */
  /* Effective settings: the profile's, overridden by keys in the group. */
  VgpuProfile eff;   /* eff.name is the profile name */
  guint socket_mode; /* default 0666 */
  /* The keys set on top of the profile, as written (key, value, key,
   * value, ...; each key once, in the order first set): what
   * vgpu_instance_config_set accepted.  vgpuctl dump-config prints them. */
  GPtrArray *kv;
} VgpuInstanceConfig;

typedef struct VgpuConfig {
  char *source;      /* file path or "<embedded>" */
  char *runtime_dir; /* NULL: the default (see vgpu_default_runtime_dir) */
  char *state_dir;   /* NULL: the default (see vgpu_default_state_dir) */
  VgpuLogLevel log_level;
  char *renderer;            /* "virgl" (default) or "null" */
  char *render_node;         /* NULL or "auto": first /dev/dri/renderD*, else surfaceless */
  char *worker_path;         /* NULL: vgpu-worker beside vgpud, then VGPU_LIBEXECDIR */
  guint idle_timeout_s;      /* 0 = none, at most VGPU_IDLE_TIMEOUT_MAX */
  uint32_t max_submit_bytes; /* per SUBMIT_CMD */
  bool sandbox;              /* seccomp in workers (default true) */
  bool shader_cache;         /* a private shader cache per worker (default true) */
  bool cgroups;              /* cgroups=auto (default) or off: CPU cgroups per instance */
  uint32_t worker_uid_first, worker_uid_last; /* worker-uid-range */
  /* The first command header must arrive within this (default 10; 0: none). */
  guint header_timeout_s;
  /* A renderer probe (vgpu-worker --probe) is killed when it has not
   * answered within this (default 10, 1..600). */
  guint probe_timeout_s;
  /* Idle control connections are closed after this (default 30; 0: never). */
  guint control_timeout_s;
  /* Open control connections of non-admins in all (default 64), per uid (8). */
  guint max_control_conns;
  guint max_control_conns_per_uid;
  char *admin_group; /* its members may use admin commands; NULL: none */
  /* GPU memory the instances' VRAM limits are cut from (gpu-memory):
   * 0 = auto (what the render node reports, else VGPU_GPU_MEMORY_HOST_PERCENT
   * of host RAM); overcommit in thousandths (1000 = 1.0). */
  uint64_t gpu_memory;
  uint32_t overcommit_milli;
  char *vm_instance; /* where vgpu-vhost-gpu lands without --instance; NULL: first */
  /* metrics-listen: IPV4:PORT, [IPV6]:PORT or an absolute Unix socket
   * path where /metrics and the dashboard are served; NULL: off. */
  char *metrics_listen;
  GPtrArray *profiles; /* VgpuProfile* */
  /* The [daemon] keys and each profile's keys as written (key, value,
   * ...), for vgpuctl dump-config: profile_kv[i] belongs to profiles[i]. */
  GPtrArray *daemon_kv;
  GPtrArray *profile_kv; /* GPtrArray* */
  GPtrArray *instances;  /* VgpuInstanceConfig* */
} VgpuConfig;

VgpuConfig *vgpu_config_load_file(const char *path, GError **error);
VgpuConfig *vgpu_config_load_data(const char *data, gssize len, const char *source, GError **error);
VgpuConfig *vgpu_config_load_default(GError **error);
const char *vgpu_config_default_text(void);
void vgpu_config_free(VgpuConfig *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuConfig, vgpu_config_free)

const VgpuProfile *vgpu_config_find_profile(const VgpuConfig *c, const char *name);
const VgpuInstanceConfig *vgpu_config_find_instance(const VgpuConfig *c, const char *name);

/* A new instance config from a profile (vgpuctl create). */
VgpuInstanceConfig *vgpu_instance_config_new(const char *name, const VgpuProfile *p);
VgpuInstanceConfig *vgpu_instance_config_copy(const VgpuInstanceConfig *ic);
void vgpu_instance_config_free(VgpuInstanceConfig *ic);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuInstanceConfig, vgpu_instance_config_free)
/* One `key=value` as in an [instance] group ("vram", "max-resources",
 * "max-contexts", "max-stream-objects", "max-clients", "fps-cap", "gpu-share",
 * "weight", "heads", "gpu-timeout", "render-threads", "socket-mode").  Used by the loader and by
 * `vgpuctl set`. */
bool vgpu_instance_config_set(VgpuInstanceConfig *ic, const char *key, const char *value,
                              GError **error);

/* Ordered key/value lists (GPtrArray of g_free'd strings: key, value, ...). */
GPtrArray *vgpu_kv_new(void);
GPtrArray *vgpu_kv_copy(const GPtrArray *kv);
/* Replaces key's value, or appends key=value. */
void vgpu_kv_set(GPtrArray *kv, const char *key, const char *value);
const char *vgpu_kv_get(const GPtrArray *kv, const char *key);
/* Whether key was there. */
bool vgpu_kv_remove(GPtrArray *kv, const char *key);
#define vgpu_kv_len(kv) ((kv) ? (kv)->len / 2 : 0)
#define vgpu_kv_key(kv, i) ((const char *)g_ptr_array_index((kv), 2 * (i)))
#define vgpu_kv_value(kv, i) ((const char *)g_ptr_array_index((kv), 2 * (i) + 1))

/* Where run-time changes are kept when neither --state-dir nor [daemon]
 * state-dir says: /var/lib/vgpu for root, else $XDG_STATE_HOME/vgpu
 * (~/.local/state/vgpu). */
char *vgpu_default_state_dir(void);

/* The configuration `c` as vgpud.conf text, with `instances`
 * (VgpuInstanceConfig*, each with a comment line or NULL in `notes` at the
 * same index; notes may be NULL) in place of c's own.  Values are printed
 * as they were written, so the text loads into the same settings. */
char *vgpu_config_format(const VgpuConfig *c, GPtrArray *instances, GPtrArray *notes,
                         const char *header);
