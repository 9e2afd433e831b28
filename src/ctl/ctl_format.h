/* Human output for vgpuctl: aligned tables, units, and one view per read
 * command.  Everything returns a new string and touches no terminal, so the
 * output is unit-tested without a daemon. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdint.h>

typedef struct VgpuTable VgpuTable;

VgpuTable *vgpu_table_new(const char *const *headers);
/* Adds a row; cells are copied; NULL-terminated; missing cells are blank. */
void vgpu_table_add(VgpuTable *t, ...) G_GNUC_NULL_TERMINATED;
/* Adds a row from an array of ncols cells (NULL cells are blank). */
void vgpu_table_add_row(VgpuTable *t, const char *const *cells);
guint vgpu_table_rows(const VgpuTable *t); /* not counting the header */
/* Columns padded to their widest cell (counted in characters), two spaces
 * apart, no trailing blanks, one '\n' per line. */
char *vgpu_table_render(const VgpuTable *t);
void vgpu_table_free(VgpuTable *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuTable, vgpu_table_free)

/* "2.2 MiB / 256 MiB (<1%)", "192 MiB / 256 MiB (75%)", "0 B / unlimited" */
char *vgpu_format_usage_bytes(uint64_t used, uint64_t limit);
/* "12/4096", "3/unlimited" */
char *vgpu_format_usage_count(uint64_t used, uint64_t limit);
/* A count limit alone: "4096", or "unlimited" for 0. */
char *vgpu_format_limit(uint64_t limit);
/* "45s", "12m03s", "1h02m", "2d04h" */
char *vgpu_format_uptime(uint64_t seconds);
/* Events per second between two counter readings: "59.8", or "-" when
 * there is no earlier reading, no time passed or the counter went back. */
char *vgpu_format_rate(uint64_t before, uint64_t after, double seconds);

/* ---- views of daemon replies (see docs/ARCHITECTURE.md) ------------------ */

/* `list`: one row per instance; a hint line when there are none. */
char *vgpu_format_list(JsonArray *instances);
/* `show`: the instance summary, a blank line, then the tenants table. */
char *vgpu_format_show(JsonObject *instance);
/* `profiles` */
char *vgpu_format_profiles(JsonArray *profiles);
/* `status`: the daemon object, then per instance (instances may be NULL)
 * the renderer its workers run, the vtest protocol versions and the
 * capability sets it offers, or "probing" / "unknown (reason)". */
char *vgpu_format_status(JsonObject *daemon, JsonArray *instances);

/* `top`: remembers each instance's frame counter between screens so that
 * frames per second come from deltas.  The clock is passed in (monotonic
 * microseconds) to keep the function deterministic. */
typedef struct VgpuTop VgpuTop;
VgpuTop *vgpu_top_new(void);
void vgpu_top_free(VgpuTop *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuTop, vgpu_top_free)
/* Updates the remembered counters and returns the table. */
char *vgpu_top_screen(VgpuTop *t, JsonArray *instances, gint64 now_us);
/* Frames per second of `name` on the last screen, or -1 when it had no
 * earlier reading. */
double vgpu_top_fps(const VgpuTop *t, const char *name);
