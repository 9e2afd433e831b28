/* Human output for vgpuctl: aligned tables and units.  Pure functions, so
 * they are unit-tested without a daemon. */
#pragma once

#include <glib.h>
#include <stdint.h>

typedef struct VgpuTable VgpuTable;

VgpuTable *vgpu_table_new(const char *const *headers);
/* Adds a row; cells are copied; NULL-terminated. */
void vgpu_table_add(VgpuTable *t, ...) G_GNUC_NULL_TERMINATED;
/* Columns padded to their widest cell, two spaces apart, no trailing blanks. */
char *vgpu_table_render(const VgpuTable *t);
void vgpu_table_free(VgpuTable *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuTable, vgpu_table_free)

/* "2.2 MiB / 256 MiB (1%)", "0 B / unlimited" */
char *vgpu_format_usage_bytes(uint64_t used, uint64_t limit);
/* "12/4096", "3/unlimited" */
char *vgpu_format_usage_count(uint64_t used, uint64_t limit);
/* "45s", "12m03s", "3h02m", "2d04h" */
char *vgpu_format_uptime(uint64_t seconds);
