/* Run-time changes that outlast a reload and a restart: what `vgpuctl
 * create`, `set` and `destroy` did, kept in STATE-DIR/vgpud.state.
 *
 * The file is vgpud's own, written atomically (a temporary file, fsync,
 * rename; mode 0600), but read as untrusted input: vgpu_state_parse checks
 * every line and refuses the whole file with "FILE:LINE: reason".  Its
 * text (vgpud.conf(5), "RUN-TIME CHANGES"):
 *
 *   [instance NAME]     settings over the configuration file's instance
 *   KEY=VALUE           (any key `vgpuctl set` takes)
 *   [created NAME]      an instance made with vgpuctl create
 *   profile=PROFILE
 *   KEY=VALUE
 *   [destroyed NAME]    a configuration file's instance removed
 *
 * The configuration file gives the defaults, these entries override them
 * (vgpu_state_merge). */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/config.h"

#define VGPU_STATE_FILE "vgpud.state"
/* Larger files are refused (far above 128 entries of every key). */
#define VGPU_STATE_MAX_BYTES (256 * 1024)
/* Entries: every instance the ledger holds, and as many destroyed. */
#define VGPU_STATE_MAX_ENTRIES (2 * 64)

typedef enum {
  VGPU_STATE_SET,       /* [instance NAME]: settings over the file's */
  VGPU_STATE_CREATED,   /* [created NAME] */
  VGPU_STATE_DESTROYED, /* [destroyed NAME] */
} VgpuStateKind;

typedef struct VgpuStateEntry {
  char *name;
  VgpuStateKind kind;
  char *profile; /* VGPU_STATE_CREATED only */
  GPtrArray *kv; /* settings as written (config.h's vgpu_kv_*) */
} VgpuStateEntry;

typedef struct VgpuState {
  GPtrArray *entries; /* VgpuStateEntry*, in the order they were made */
} VgpuState;

VgpuState *vgpu_state_new(void);
void vgpu_state_free(VgpuState *st);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuState, vgpu_state_free)

VgpuStateEntry *vgpu_state_find(const VgpuState *st, const char *name);
/* Removes name's entry; whether there was one. */
bool vgpu_state_remove(VgpuState *st, const char *name);
/* name's entry, made (empty, of `kind`) or turned into `kind` (its
 * settings dropped) when it is of another kind. */
VgpuStateEntry *vgpu_state_entry(VgpuState *st, const char *name, VgpuStateKind kind);

/* Parses state text; NULL with "SOURCE:LINE: reason" on the first fault. */
VgpuState *vgpu_state_parse(const char *data, gsize len, const char *source, GError **error);
/* The text vgpu_state_parse reads back into the same entries. */
char *vgpu_state_format(const VgpuState *st);

/* Reads DIR/vgpud.state.  A missing file (or directory) is an empty state.
 * A file that cannot be read or parsed is renamed aside
 * (vgpud.state.bad-SECONDS) and an empty state returned, *warning saying
 * what and where; when even the rename fails *read_only is set: the caller
 * must not write over it. */
VgpuState *vgpu_state_load(const char *dir, char **warning, bool *read_only);
/* Writes DIR/vgpud.state atomically (DIR made 0700 when missing). */
bool vgpu_state_save(const VgpuState *st, const char *dir, GError **error);

/* What vgpud runs from a configuration and a state. */
typedef struct VgpuStateMerge {
  GPtrArray *instances;   /* VgpuInstanceConfig* (owned): the file's, then created ones */
  GArray *created;        /* gboolean per instance: from a [created] entry */
  GPtrArray *overridden;  /* char*: each run-time change in force, one sentence */
  GPtrArray *not_applied; /* char*: each one that could not be, and why */
} VgpuStateMerge;

void vgpu_state_merge_free(VgpuStateMerge *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuStateMerge, vgpu_state_merge_free)

/* cfg's instances with st's entries applied, then st's created instances,
 * within the GPU memory (gpu_memory x milli, of which `taken` is held by
 * instances outside the merge).  A raised vram that does not fit leaves
 * the file's; a created instance that does not fit, or whose profile is
 * gone, is left out; both are reported in not_applied and stay in st.
 * Names in `keep` (may be NULL) are the caller's own (transient
 * instances): the file's instance of that name is not used. */
VgpuStateMerge *vgpu_state_merge(const VgpuConfig *cfg, const VgpuState *st, uint64_t gpu_memory,
                                 uint32_t milli, uint64_t taken, GHashTable *keep);

/* "vram 256 MiB -> 512 MiB, max-clients 4 -> 2", or NULL when a and b
 * set the same limits. */
char *vgpu_instance_config_diff(const VgpuInstanceConfig *a, const VgpuInstanceConfig *b);
