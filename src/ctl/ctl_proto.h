/* Client side of the control protocol (docs/ARCHITECTURE.md, "Control
 * protocol"): one JSON object per line each way over DIR/control.sock, one
 * request per connection. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

/* Replies carry whole instance tables; anything longer is not vgpud. */
#define VGPU_CTL_MAX_REPLY (4u << 20)
#define VGPU_CTL_TIMEOUT_MS 10000

typedef struct VgpuCtl VgpuCtl;

/* CONNECT and TIMEOUT mean vgpud cannot be reached or does not answer,
 * PROTOCOL a reply that is not the contract's, REFUSED carries the daemon's
 * own reason, USAGE a request the client will not build (bad KEY=VALUE). */
#define VGPU_CTL_ERROR (vgpu_ctl_error_quark())
GQuark vgpu_ctl_error_quark(void);
typedef enum {
  VGPU_CTL_ERROR_CONNECT,
  VGPU_CTL_ERROR_PROTOCOL,
  VGPU_CTL_ERROR_REFUSED,
  VGPU_CTL_ERROR_TIMEOUT,
  VGPU_CTL_ERROR_USAGE,
} VgpuCtlError;

/* Connects to runtime_dir/control.sock. */
VgpuCtl *vgpu_ctl_connect(const char *runtime_dir, GError **error);
/* Connects to an explicit socket path. */
VgpuCtl *vgpu_ctl_connect_path(const char *path, GError **error);
void vgpu_ctl_free(VgpuCtl *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuCtl, vgpu_ctl_free)

/* Sends `request` (not consumed) and returns the reply object (a new
 * reference).  A reply with "ok": false becomes VGPU_CTL_ERROR_REFUSED with
 * the daemon's text as the message.  timeout_ms < 0 waits for ever. */
JsonObject *vgpu_ctl_call(VgpuCtl *c, JsonObject *request, int timeout_ms, GError **error);
/* As vgpu_ctl_call(), and *fd receives the fd vgpud passed with the reply
 * (SCM_RIGHTS; the caller's to close), or -1. */
JsonObject *vgpu_ctl_call_fd(VgpuCtl *c, JsonObject *request, int timeout_ms, int *fd,
                             GError **error);
/* Connect, call, close: what a one-shot tool wants. */
JsonObject *vgpu_ctl_transact(const char *runtime_dir, JsonObject *request, int timeout_ms,
                              GError **error);

/* ---- requests ------------------------------------------------------------ */

/* {"command": cmd} plus "name" when not NULL. */
JsonObject *vgpu_ctl_request(const char *cmd, const char *name);
JsonObject *vgpu_ctl_request_create(const char *name, const char *profile);
JsonObject *vgpu_ctl_request_destroy(const char *name, bool force);
/* `assignments` are "KEY=VALUE" strings (NULL-terminated); the values stay
 * strings, the daemon parses them.  NULL with VGPU_CTL_ERROR_USAGE for an
 * empty list, a missing '=' or key, or a key given twice. */
JsonObject *vgpu_ctl_request_set(const char *name, const char *const *assignments, GError **error);
/* The request as it goes on the wire: compact JSON and one '\n'. */
char *vgpu_ctl_encode(JsonObject *request);

/* ---- replies ------------------------------------------------------------- */

/* Reads one '\n'-terminated line (returned without it) of at most max
 * bytes; NULL with an error on EOF, timeout, an oversize line or a NUL. */
char *vgpu_ctl_read_line(int fd, size_t max, int timeout_ms, GError **error);
/* Parses a reply line into its object, applying the "ok" rule above. */
JsonObject *vgpu_ctl_parse_reply(const char *line, GError **error);

/* Lenient readers for reply members: a daemon of another version may add or
 * drop fields, and a missing or mistyped one must not crash the tool.
 * Numbers below zero read as 0; strings that are absent read as fallback. */
uint64_t vgpu_ctl_get_u64(JsonObject *o, const char *key);
const char *vgpu_ctl_get_str(JsonObject *o, const char *key, const char *fallback);
JsonObject *vgpu_ctl_get_object(JsonObject *o, const char *key);
JsonArray *vgpu_ctl_get_array(JsonObject *o, const char *key);
/* Element i of an array when it is an object, else NULL. */
JsonObject *vgpu_ctl_array_object(JsonArray *a, guint i);
