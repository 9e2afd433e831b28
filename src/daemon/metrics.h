/* The metrics endpoint's text: Prometheus text exposition format 0.0.4,
 * per instance and per tenant (docs/man/vgpud.conf.5, metrics-listen). */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "daemon/supervisor.h"

/* Longest tenant_name label value, in bytes of the process name. */
#define VGPU_METRICS_NAME_MAX 64

/* The whole /metrics body (g_malloc'd). */
char *vgpu_metrics_text(VgpuSupervisor *s);

/* Appends v as a label value (without the quotes): backslash, double quote
 * and line feed escaped as the format wants, any other byte that is not
 * printable ASCII written as '?', at most max bytes of v read (NULL: ""). */
void vgpu_metrics_label_value(GString *out, const char *v, size_t max);
/* Appends ns as seconds with nine decimals, exactly. */
void vgpu_metrics_seconds(GString *out, uint64_t ns);
