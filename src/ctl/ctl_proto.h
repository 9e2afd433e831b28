/* Client side of the control protocol (docs/ARCHITECTURE.md): one JSON
 * object per line each way over DIR/control.sock. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

#define VGPU_CTL_MAX_REPLY (4u << 20)

typedef struct VgpuCtl VgpuCtl;

/* Error domain: VGPU_CTL_ERROR_CONNECT means vgpud is not reachable,
 * VGPU_CTL_ERROR_REFUSED carries the daemon's own reason. */
#define VGPU_CTL_ERROR (vgpu_ctl_error_quark())
GQuark vgpu_ctl_error_quark(void);
typedef enum {
  VGPU_CTL_ERROR_CONNECT,
  VGPU_CTL_ERROR_PROTOCOL,
  VGPU_CTL_ERROR_REFUSED,
} VgpuCtlError;

VgpuCtl *vgpu_ctl_connect(const char *runtime_dir, GError **error);
/* Connects to an explicit socket path (tests). */
VgpuCtl *vgpu_ctl_connect_path(const char *path, GError **error);
void vgpu_ctl_free(VgpuCtl *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuCtl, vgpu_ctl_free)

/* Sends `request` and returns the reply object (a new reference).  A reply
 * with "ok": false becomes VGPU_CTL_ERROR_REFUSED with the daemon's text. */
JsonObject *vgpu_ctl_call(VgpuCtl *c, JsonObject *request, int timeout_ms, GError **error);

/* {"command": cmd} plus "name" when not NULL. */
JsonObject *vgpu_ctl_request(const char *cmd, const char *name);

/* Reads one '\n'-terminated line of at most max bytes; NULL with an error
 * on EOF, timeout or an oversize line.  Exposed for tests. */
char *vgpu_ctl_read_line(int fd, size_t max, int timeout_ms, GError **error);
/* Parses a reply line into its object, applying the "ok" rule above. */
JsonObject *vgpu_ctl_parse_reply(const char *line, GError **error);
