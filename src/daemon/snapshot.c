/* One reading of an instance's usage and its tenants: see snapshot.h. */
#include "daemon/snapshot.h"

#include <string.h>

void vgpu_instance_snapshot(VgpuSupervisor *s, VgpuInstance *in, bool tenants,
                            VgpuInstanceSnapshot *out) {
  VgpuBook *book = vgpu_supervisor_book(s);
  memset(out, 0, sizeof(*out));
  vgpu_book_freeze(book);
  vgpu_book_instance_usage(book, vgpu_instance_ledger_index(in), &out->usage);
  out->clients = vgpu_instance_n_tenants(in);
  out->vm_clients = vgpu_instance_n_vm_tenants(in);
  out->sessions_ended = vgpu_instance_sessions_ended(in);
  g_autoptr(GArray) ts = vgpu_instance_tenants(in);
  for (guint i = 0; i < ts->len; i++) /* each <= 1000, and slots are few */
    out->busy_permille += g_array_index(ts, VgpuTenantInfo, i).busy_permille;
  if (tenants) {
    out->tenants = g_array_sized_new(FALSE, TRUE, sizeof(VgpuTenantSnapshot), ts->len);
    for (guint i = 0; i < ts->len; i++) {
      VgpuTenantSnapshot t = {.info = g_array_index(ts, VgpuTenantInfo, i)};
      if (!vgpu_book_worker_usage(book, (uint32_t)t.info.slot, &t.usage))
        continue;
      g_array_append_val(out->tenants, t);
    }
  }
  vgpu_book_thaw(book);
}

void vgpu_instance_snapshot_clear(VgpuInstanceSnapshot *snap) {
  if (snap->tenants)
    g_array_unref(snap->tenants);
  snap->tenants = NULL;
}
