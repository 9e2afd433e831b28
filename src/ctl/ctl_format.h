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

/* GPU busy: "37.5%", "<0.1%" for a trace, "-" when negative (no figure). */
char *vgpu_format_busy(double percent);

/* ---- views of daemon replies (see docs/ARCHITECTURE.md) ------------------ */

/* `list`: one row per instance (GPU BUSY: the instance's busy_percent,
 * "-" from a daemon without it); a hint line when there are none. */
char *vgpu_format_list(JsonArray *instances);
/* The GPU memory line of a `list` reply (or `status`'s daemon object):
 * "GPU memory 11.6 GiB, overcommit 1.0: 1.3 GiB assigned, 10.3 GiB
 * free\n"; "" when the reply has no "gpu_memory". */
char *vgpu_format_gpu_memory(JsonObject *reply);
/* `show`: the instance summary (with its GPU busy % when the daemon
 * gives one), a blank line, then the tenants table (process name and GPU
 * busy % per tenant). */
char *vgpu_format_show(JsonObject *instance);
/* One line per limit the instance's tenants hold more than (its
 * "over_limit"), each ending in a newline; "" when none. */
char *vgpu_format_over_limit(JsonObject *instance);
/* `profiles` */
char *vgpu_format_profiles(JsonArray *profiles);
/* `status`: the daemon object, then per instance (instances may be NULL)
 * the renderer its workers run, the vtest protocol versions and the
 * capability sets it offers, or "probing" / "unknown (reason)". */
char *vgpu_format_status(JsonObject *daemon, JsonArray *instances);

/* `top`: remembers each instance's and each tenant's counters between
 * screens so that rates come from deltas over the time between two
 * screens.  The clock is passed in (monotonic microseconds) to keep the
 * function deterministic. */
typedef struct VgpuTop VgpuTop;
VgpuTop *vgpu_top_new(void);
void vgpu_top_free(VgpuTop *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuTop, vgpu_top_free)
/* instances: `show` instance objects (a `list` one has no "tenants").
 * Updates the remembered counters, writes the rates into the objects
 * (null where there is no earlier reading or a counter went back):
 *   instance "frames_per_s", "busy_percent" (its usage busy_ns, tenants
 *            gone meanwhile included, per second of wall time x 100);
 *   tenant   "frames_per_s", "busy_percent" (busy_ns per second of wall
 *            time x 100), "throttled_percent" (throttled_ns likewise; null
 *            when the daemon does not report it), "share_percent"
 *            (share_ppm / 10^4; null when absent or 0: best-effort),
 * busy_percent is vgpud's own (over its last second) on the first screen,
 * where there is no earlier reading, and null only when vgpud gives none.
 * Returns the screen: the instance table, then one row per tenant. */
char *vgpu_top_screen(VgpuTop *t, JsonArray *instances, gint64 now_us);
/* Frames per second of `name` on the last screen, or -1 when it had no
 * earlier reading. */
double vgpu_top_fps(const VgpuTop *t, const char *name);
/* Seconds between the last two screens (0 after the first). */
double vgpu_top_elapsed(const VgpuTop *t);
