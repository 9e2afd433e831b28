/* The control socket: DIR/control.sock, one JSON object per line each way
 * (protocol in docs/ARCHITECTURE.md).  Admin commands need uid 0 or the
 * daemon's own uid, checked with SO_PEERCRED. */
#pragma once

#include <glib.h>

typedef struct VgpuSupervisor VgpuSupervisor;
typedef struct VgpuControl VgpuControl;

VgpuControl *vgpu_control_new(VgpuSupervisor *s, GError **error);
void vgpu_control_free(VgpuControl *c);

/* Executes one request line and returns the response line (no newline).
 * uid is the peer's; exposed for tests. */
char *vgpu_control_handle(VgpuSupervisor *s, const char *line, uid_t uid);
