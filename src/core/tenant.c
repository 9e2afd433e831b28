/* A tenant's resource table and quota charges (see tenant.h). */
#include "core/tenant.h"

#include "core/profile.h"

struct VgpuTenant {
  VgpuLedger *ledger;
  uint32_t slot;
  VgpuTenantPolicy policy;
  GHashTable *resources; /* handle -> VgpuTenantResource* */
  uint64_t vram;         /* charged for live resources */
  uint32_t contexts;
  VgpuThrottle *throttle;
};

VgpuTenant *vgpu_tenant_new(VgpuLedger *ledger, uint32_t slot, const VgpuTenantPolicy *policy) {
  VgpuTenant *t = g_new0(VgpuTenant, 1);
  t->ledger = ledger;
  t->slot = slot;
  if (policy)
    t->policy = *policy;
  t->resources = g_hash_table_new(g_direct_hash, g_direct_equal);
  t->throttle = vgpu_throttle_new(ledger);
  return t;
}

static void release(VgpuTenant *t, VgpuTenantResource *res, bool hook, bool keep) {
  if (hook && t->policy.release)
    t->policy.release(t->policy.user, res, &keep);
  if (!keep) {
    vgpu_tenant_uncharge(t, VGPU_RES_VRAM, res->charge);
    vgpu_tenant_uncharge(t, VGPU_RES_OBJECTS, 1);
  }
  t->vram -= res->charge;
  g_free(res);
}

void vgpu_tenant_free(VgpuTenant *t) {
  if (!t)
    return;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, t->resources);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    g_hash_table_iter_remove(&it);
    release(t, v, true, false);
  }
  g_hash_table_unref(t->resources);
  vgpu_tenant_uncharge(t, VGPU_RES_CONTEXTS, t->contexts);
  vgpu_throttle_free(t->throttle);
  g_free(t);
}

VgpuThrottle *vgpu_tenant_throttle(VgpuTenant *t) {
  return t->throttle;
}

/* One sentence for a refusal: what was asked, the limit, what is in use. */
static char *refusal_reason(VgpuTenant *t, VgpuResKind kind, uint64_t amount, const char *what) {
  uint64_t limit, used;
  vgpu_ledger_describe(t->ledger, kind, &limit, &used);
  if (kind == VGPU_RES_VRAM) {
    g_autofree char *a = vgpu_format_size(amount, false);
    g_autofree char *u = vgpu_format_size(used, false);
    g_autofree char *l = vgpu_format_size(limit, true);
    return g_strdup_printf("%s needs %s but VRAM limit %s is reached (%s in use)", what, a, l, u);
  }
  return g_strdup_printf("%s refused: %s limit %" G_GUINT64_FORMAT " reached (%" G_GUINT64_FORMAT
                         " in use)",
                         what, vgpu_res_kind_name(kind), limit, used);
}

bool vgpu_tenant_charge(VgpuTenant *t, VgpuResKind kind, uint64_t amount, const char *what) {
  if (!t->ledger || amount == 0)
    return true;
  if (vgpu_ledger_reserve(t->ledger, t->slot, kind, amount) >= 0)
    return true;
  if (t->policy.refused) {
    g_autofree char *why = refusal_reason(t, kind, amount, what);
    t->policy.refused(t->policy.user, kind, why);
  }
  return false;
}

void vgpu_tenant_uncharge(VgpuTenant *t, VgpuResKind kind, uint64_t amount) {
  if (t->ledger && amount)
    vgpu_ledger_release(t->ledger, t->slot, kind, amount);
}

void vgpu_tenant_count(VgpuTenant *t, VgpuResKind kind, uint64_t amount) {
  if (t->ledger)
    vgpu_ledger_count(t->ledger, t->slot, kind, amount);
}

bool vgpu_tenant_context_charge(VgpuTenant *t, const char *what) {
  if (!vgpu_tenant_charge(t, VGPU_RES_CONTEXTS, 1, what))
    return false;
  t->contexts++;
  return true;
}

void vgpu_tenant_context_release(VgpuTenant *t) {
  if (t->contexts == 0)
    return;
  t->contexts--;
  vgpu_tenant_uncharge(t, VGPU_RES_CONTEXTS, 1);
}

uint32_t vgpu_tenant_context_count(const VgpuTenant *t) {
  return t->contexts;
}

VgpuTenantResource *vgpu_tenant_resource_add(VgpuTenant *t, const VgpuResourceDesc *d,
                                             uint64_t vram, const char *what) {
  if (d->handle == 0 || g_hash_table_contains(t->resources, GUINT_TO_POINTER(d->handle)))
    return NULL;
  if (!vgpu_tenant_charge(t, VGPU_RES_OBJECTS, 1, what))
    return NULL;
  if (!vgpu_tenant_charge(t, VGPU_RES_VRAM, vram, what)) {
    vgpu_tenant_uncharge(t, VGPU_RES_OBJECTS, 1);
    return NULL;
  }
  VgpuTenantResource *res = g_new0(VgpuTenantResource, 1);
  res->desc = *d;
  res->charge = vram;
  t->vram += vram;
  g_hash_table_insert(t->resources, GUINT_TO_POINTER(d->handle), res);
  return res;
}

VgpuTenantResource *vgpu_tenant_resource_get(const VgpuTenant *t, uint32_t handle) {
  return g_hash_table_lookup(t->resources, GUINT_TO_POINTER(handle));
}

static bool take(VgpuTenant *t, uint32_t handle, bool hook, bool keep) {
  VgpuTenantResource *res = vgpu_tenant_resource_get(t, handle);
  if (!res)
    return false;
  g_hash_table_remove(t->resources, GUINT_TO_POINTER(handle));
  release(t, res, hook, keep);
  return true;
}

void vgpu_tenant_resource_forget(VgpuTenant *t, uint32_t handle) {
  take(t, handle, false, false);
}

void vgpu_tenant_resource_keep(VgpuTenant *t, uint32_t handle) {
  take(t, handle, false, true);
}

bool vgpu_tenant_resource_remove(VgpuTenant *t, uint32_t handle) {
  return take(t, handle, true, false);
}

guint vgpu_tenant_resource_count(const VgpuTenant *t) {
  return g_hash_table_size(t->resources);
}

uint64_t vgpu_tenant_vram(const VgpuTenant *t) {
  return t->vram;
}
