/* The control socket: DIR/control.sock, one JSON object per line each way
 * (protocol in docs/ARCHITECTURE.md).
 *
 * Commands and whether they need an admin are in one table
 * (vgpu_control_commands); the server dispatches through it and the fuzz
 * target's oracle reads it.  Admin: uid 0, members of [daemon]
 * admin-group, and, only when vgpud itself is not root, vgpud's own uid
 * (vgpu_control_is_admin).  Connections are served without blocking, with
 * bounded input and output per connection, caps on connections in all and
 * per uid, and an idle timeout. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct VgpuSupervisor VgpuSupervisor;
typedef struct VgpuControl VgpuControl;

/* Longest request line (newline excluded); a longer one ends its
 * connection with an error reply. */
#define VGPU_CONTROL_MAX_REQUEST (16 * 1024)
/* Replies queued for a client that is not reading them: once this much
 * is waiting (one reply may pass it), no more of its requests are read.
 * A connection whose socket takes none of its waiting replies for
 * VGPU_CONTROL_STALL_S seconds is closed. */
#define VGPU_CONTROL_MAX_QUEUE (64 * 1024)
#define VGPU_CONTROL_STALL_S 2

typedef struct VgpuControlRequest VgpuControlRequest;
/* Returns the reply line (no newline). */
typedef char *(*VgpuControlHandler)(VgpuControlRequest *r);

typedef struct VgpuControlCommand {
  const char *name;
  VgpuControlHandler handler;
  bool admin;         /* refused to callers that are not admins */
  const char *fields; /* request members read besides "command", space separated */
} VgpuControlCommand;

/* The command table; *n receives its length. */
const VgpuControlCommand *vgpu_control_commands(size_t *n);
/* The entry for name, or NULL. */
const VgpuControlCommand *vgpu_control_command_find(const char *name);

/* The admin rule.  daemon_uid is vgpud's effective uid; admin_gid the
 * admin group's gid or (gid_t)-1 for none; groups the caller's
 * supplementary groups. */
bool vgpu_control_is_admin(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups,
                           uid_t daemon_uid, gid_t admin_gid);

VgpuControl *vgpu_control_new(VgpuSupervisor *s, GError **error);
void vgpu_control_free(VgpuControl *c);
/* Open connections now. */
guint vgpu_control_n_connections(VgpuControl *c);

/* Executes one request line for a caller and returns the response line (no
 * newline).  Tenants' pids, uids and usage are shown only to admins and
 * to the tenant's own uid.  Exposed for tests. */
char *vgpu_control_handle(VgpuSupervisor *s, const char *line, uid_t uid, bool admin);
