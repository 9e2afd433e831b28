/* One tenant's books inside its worker, whatever the front-end (vtest now,
 * virtio-gpu later): the resource handle table, and every charge against
 * the instance's quotas in the ledger, released when a resource is
 * unreferenced, a context destroyed, or the tenant torn down.
 *
 * What a refusal does is the front-end's choice, through its policy hook:
 * vtest ends the session; a virtio-gpu device answers the command with an
 * error and keeps running.  The tenant only reports the refusal (once, with
 * a sentence) and leaves the books as they were before the request.
 *
 * No I/O and no renderer calls: a front-end releases what it attached to a
 * resource (renderer object, backing) in its release hook. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/ledger.h"
#include "core/resource.h"
#include "core/throttle.h"

typedef struct VgpuTenant VgpuTenant;

typedef struct VgpuTenantResource {
  VgpuResourceDesc desc;
  uint64_t charge; /* VRAM bytes charged for it */
  void *priv;      /* the front-end's (backing, mapping) */
} VgpuTenantResource;

typedef struct VgpuTenantPolicy {
  /* A quota refused `what`; reason is one sentence naming amount, limit and
   * use.  Called once per refused request. */
  void (*refused)(void *user, VgpuResKind kind, const char *reason);
  /* A resource leaves the table (unref or teardown): release what the
   * front-end attached to it.  Its charges (res->charge bytes of VRAM and
   * one object) are released after this, unless the hook sets
   * *keep_charge: then the front-end has taken them over (memory that
   * outlives the handle, such as a texture still bound by command-stream
   * objects) and releases them later with vgpu_tenant_uncharge(). */
  void (*release)(void *user, VgpuTenantResource *res, bool *keep_charge);
  void *user;
} VgpuTenantPolicy;

/* ledger NULL: nothing is charged or counted (tests, fuzzing). */
VgpuTenant *vgpu_tenant_new(VgpuLedger *ledger, uint32_t slot, const VgpuTenantPolicy *policy);
/* Releases every resource (through the release hook) and every charge. */
void vgpu_tenant_free(VgpuTenant *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuTenant, vgpu_tenant_free)

/* Charges `amount` of a quota kind; on refusal calls the policy's refused
 * hook and returns false with nothing charged.  amount 0 always succeeds. */
bool vgpu_tenant_charge(VgpuTenant *t, VgpuResKind kind, uint64_t amount, const char *what);
void vgpu_tenant_uncharge(VgpuTenant *t, VgpuResKind kind, uint64_t amount);
/* Adds to a counter kind (frames, commands, bytes, busy time). */
void vgpu_tenant_count(VgpuTenant *t, VgpuResKind kind, uint64_t amount);

/* The tenant's GPU-time scheduling (core/throttle.h); never NULL.  The
 * front-end sets what a wait watches with vgpu_throttle_watch(). */
VgpuThrottle *vgpu_tenant_throttle(VgpuTenant *t);

/* Contexts: one charge of VGPU_RES_CONTEXTS each. */
bool vgpu_tenant_context_charge(VgpuTenant *t, const char *what);
void vgpu_tenant_context_release(VgpuTenant *t);
uint32_t vgpu_tenant_context_count(const VgpuTenant *t);

/* Charges one object and `vram` bytes for a new resource and enters it in
 * the table.  The handle must be non-zero and free (callers validate
 * first: a duplicate is an error of theirs, returned as NULL without a
 * refusal).  NULL on refusal, with nothing charged. */
VgpuTenantResource *vgpu_tenant_resource_add(VgpuTenant *t, const VgpuResourceDesc *d,
                                             uint64_t vram, const char *what);
VgpuTenantResource *vgpu_tenant_resource_get(const VgpuTenant *t, uint32_t handle);
/* Takes a resource out of the table without the release hook and releases
 * its charges (a creation the renderer refused after add). */
void vgpu_tenant_resource_forget(VgpuTenant *t, uint32_t handle);
/* Takes a resource out of the table without the release hook and keeps
 * its charges (res->charge bytes of VRAM and one object): the caller has
 * taken them over (memory that outlives the handle) and releases them
 * later with vgpu_tenant_uncharge(). */
void vgpu_tenant_resource_keep(VgpuTenant *t, uint32_t handle);
/* Releases (hook, then charges).  False if the handle is unknown. */
bool vgpu_tenant_resource_remove(VgpuTenant *t, uint32_t handle);
guint vgpu_tenant_resource_count(const VgpuTenant *t);
/* VRAM charged for the resources in the table. */
uint64_t vgpu_tenant_vram(const VgpuTenant *t);
