/* The ledger: per-instance limits and usage, in one shared-memory segment.
 *
 * The supervisor creates it (a sealed-size memfd) and hands it to every
 * worker.  Each worker owns one slot and charges it through
 * vgpu_ledger_reserve(), which raises the slot and the instance total
 * together, never past the instance limit.  When a
 * worker dies the supervisor subtracts the slot from its instance, so the
 * instance total is always the sum of its live slots.  Reservations take a
 * robust mutex per instance (see VgpuLedgerInstance.lock); pure counters
 * (frames, commands) are lock-free atomics.  Limits live in the
 * segment too, so a resize is seen by every worker on its next reservation. */
#pragma once

#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define VGPU_LEDGER_MAGIC 0x5247444c55504756ull /* "VGPULDGR" */
#define VGPU_LEDGER_VERSION 1
#define VGPU_LEDGER_MAX_INSTANCES 64
#define VGPU_LEDGER_MAX_SLOTS 512
#define VGPU_NAME_MAX 32

typedef enum {
  VGPU_RES_VRAM = 0,   /* bytes */
  VGPU_RES_OBJECTS,    /* resources */
  VGPU_RES_CONTEXTS,   /* renderer contexts */
  VGPU_RES_N_QUOTA,    /* kinds below are counters, never limited */
  VGPU_RES_FRAMES = VGPU_RES_N_QUOTA,
  VGPU_RES_COMMANDS,
  VGPU_RES_BYTES_IN,
  VGPU_RES_BUSY_NS,
  VGPU_RES_N,
} VgpuResKind;

const char *vgpu_res_kind_name(VgpuResKind kind);

typedef struct VgpuLedgerInstance {
  /* Robust process-shared mutex guarding limit checks and the quota kinds of
   * `used` here and in this instance's slots.  A worker killed while holding
   * it leaves EOWNERDEAD; the next holder recomputes the totals from the
   * slots, so the books stay exact even across kill -9. */
  pthread_mutex_t lock;
  _Atomic uint32_t in_use;
  uint32_t index;
  char name[VGPU_NAME_MAX];
  _Atomic uint64_t limit[VGPU_RES_N_QUOTA]; /* 0 = unlimited */
  _Atomic uint64_t used[VGPU_RES_N];
  _Atomic uint64_t clients;     /* live workers */
  _Atomic uint64_t refusals;    /* quota refusals since creation */
  _Atomic uint64_t worker_crashes;
} VgpuLedgerInstance;

typedef enum {
  VGPU_SLOT_FREE = 0,
  VGPU_SLOT_ACTIVE = 1,
} VgpuSlotState;

typedef struct VgpuLedgerSlot {
  _Atomic uint32_t state;
  uint32_t instance;
  int32_t worker_pid;
  int32_t client_pid;
  uint32_t client_uid;
  uint32_t pad;
  uint64_t started_ns; /* CLOCK_MONOTONIC */
  _Atomic uint64_t used[VGPU_RES_N];
  _Atomic uint64_t peak_vram;
} VgpuLedgerSlot;

typedef struct VgpuLedgerHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t max_instances;
  uint32_t max_slots;
  uint32_t pad;
  VgpuLedgerInstance instances[VGPU_LEDGER_MAX_INSTANCES];
  VgpuLedgerSlot slots[VGPU_LEDGER_MAX_SLOTS];
} VgpuLedgerHeader;

typedef struct VgpuLedger {
  VgpuLedgerHeader *hdr;
  size_t size;
  int fd;
} VgpuLedger;

/* Supervisor side. */
VgpuLedger *vgpu_ledger_create(GError **error);
/* Worker side: maps an inherited ledger fd and checks magic and size. */
VgpuLedger *vgpu_ledger_map(int fd, GError **error);
void vgpu_ledger_free(VgpuLedger *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuLedger, vgpu_ledger_free)

/* Claims a free instance record; returns its index or -ENOSPC. */
int vgpu_ledger_instance_add(VgpuLedger *l, const char *name,
                             const uint64_t limits[VGPU_RES_N_QUOTA]);
void vgpu_ledger_instance_set_limits(VgpuLedger *l, uint32_t inst,
                                     const uint64_t limits[VGPU_RES_N_QUOTA]);
/* Frees the record; callers make sure no slot still refers to it. */
void vgpu_ledger_instance_remove(VgpuLedger *l, uint32_t inst);
VgpuLedgerInstance *vgpu_ledger_instance(VgpuLedger *l, uint32_t inst);
/* Holds the instance lock so a reader sees the instance totals and its
 * slots' quota kinds agree (reservations are held for a few instructions). */
void vgpu_ledger_instance_lock(VgpuLedger *l, uint32_t inst);
void vgpu_ledger_instance_unlock(VgpuLedger *l, uint32_t inst);

/* Claims a slot for a new worker of `inst`; returns slot index or -ENOSPC. */
int vgpu_ledger_slot_claim(VgpuLedger *l, uint32_t inst, pid_t client_pid, uid_t client_uid);
void vgpu_ledger_slot_set_worker(VgpuLedger *l, uint32_t slot, pid_t worker_pid);
/* Subtracts what the slot still holds from its instance and frees it.
 * Returns the VRAM bytes that were reclaimed. */
uint64_t vgpu_ledger_slot_reclaim(VgpuLedger *l, uint32_t slot);
VgpuLedgerSlot *vgpu_ledger_slot(VgpuLedger *l, uint32_t slot);

/* Worker side.  Returns 0 or -EDQUOT when the instance limit would be
 * crossed (nothing is charged then). */
int vgpu_ledger_reserve(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount);
void vgpu_ledger_release(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount);
/* Adds to a counter kind (frames, commands, bytes, busy time). */
void vgpu_ledger_count(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount);
