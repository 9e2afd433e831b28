/* The supervisor: instances, their listening sockets, one worker process
 * per client, and the book that keeps their quotas (core/ledger.h).  It
 * never reads client bytes, and reads what workers write only through the
 * book's validation. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/types.h>

#include "core/ledger.h"
#include "daemon/config.h"
#include "daemon/isolation.h"
#include "daemon/probe.h"
#include "daemon/session_end.h"

typedef struct VgpuSupervisor VgpuSupervisor;

/* Instances and their workers are the supervisor's own; other modules
 * (the control server) see them only through the accessors below. */
typedef struct VgpuInstance VgpuInstance;

/* What a tenant is: a local process speaking vtest on DIR/NAME/vtest.sock,
 * or a virtual machine's QEMU speaking vhost-user-gpu (on
 * DIR/NAME/vhost-user.sock, or handed over by vgpu-vhost-gpu). */
typedef enum {
  VGPU_TENANT_VTEST,
  VGPU_TENANT_VM,
} VgpuTenantKind;

/* "vtest" or "vm". */
const char *vgpu_tenant_kind_name(VgpuTenantKind kind);

/* One connected tenant, as the control server reports it (a copy). */
typedef struct VgpuTenantInfo {
  pid_t worker_pid;
  pid_t client_pid;
  uid_t client_uid;
  int slot;
  VgpuTenantKind kind;
  char client_name[16]; /* the process's name (comm); "" when unknown */
  uint32_t share_ppm; /* its share of one GPU's wall time (0: unthrottled) */
  /* GPU busy over about the last second, tenths of a percent of one GPU's
   * wall time, 0..1000 (core/sched.h, "utilisation"). */
  uint32_t busy_permille;
  bool active;        /* did GPU work lately */
} VgpuTenantInfo;

/* Called once when a worker started by vgpu_supervisor_attach_vm() ends:
 * its wait status and the sentence vgpud logged about it. */
typedef void (*VgpuWorkerEndFunc)(int status, const char *why, gpointer user);

/* Told of each configuration reload, whatever asked for it (SIGHUP or
 * the control socket): once as it starts (done false) and once as it ends
 * (done true; ok, and when !ok the refusal, one "FILE:LINE: reason" a
 * line).  vgpud passes these on to systemd (sd_notify). */
typedef void (*VgpuReloadFunc)(bool done, bool ok, const char *why, gpointer user);

typedef struct VgpuSupervisorOptions {
  char *runtime_dir;
  char *config_path; /* NULL: embedded default */
  VgpuReloadFunc on_reload; /* may be NULL */
  gpointer on_reload_data;
  /* Where run-time changes are kept (DIR/vgpud.state, daemon/state.h);
   * NULL: they last until vgpud stops (reloads keep them). */
  char *state_dir;
} VgpuSupervisorOptions;

/* What a reload (or a reset) did, as sentences (char*). */
typedef struct VgpuReloadReport {
  GPtrArray *changed;     /* instances added, removed or with new limits */
  GPtrArray *overridden;  /* run-time changes left in force */
  GPtrArray *not_applied; /* run-time changes that could not be applied, and why */
  char *not_added;        /* "NAME: reason; ..." for instances that could not be made, or NULL */
  guint added, removed, changed_limits; /* instances */
} VgpuReloadReport;
void vgpu_reload_report_free(VgpuReloadReport *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuReloadReport, vgpu_reload_report_free)

/* Takes @cfg when it succeeds; on failure (NULL) the caller keeps it. */
VgpuSupervisor *vgpu_supervisor_new(VgpuConfig *cfg, const VgpuSupervisorOptions *opt,
                                    GError **error);
/* Creates instance sockets and the control socket. */
bool vgpu_supervisor_start(VgpuSupervisor *s, GError **error);
/* Stops accepting, ends workers (SIGTERM, then SIGKILL after 3 s), removes
 * sockets and directories. */
void vgpu_supervisor_stop(VgpuSupervisor *s);
void vgpu_supervisor_free(VgpuSupervisor *s);

/* Re-reads the configuration and applies it under the run-time changes
 * (daemon/state.h); on error nothing changes.  An instance that cannot be
 * created (no ledger room, its socket cannot be made) is left out and the
 * rest applied.  *report (when given) says what happened. */
bool vgpu_supervisor_reload(VgpuSupervisor *s, VgpuReloadReport **report, GError **error);
/* Drops run-time changes of instance `name`: the given setting keys (NULL
 * or empty: all of them; a destroyed instance of the file comes back) and
 * applies the result as a reload does, without re-reading the file. */
bool vgpu_supervisor_reset(VgpuSupervisor *s, const char *name, const char *const *keys,
                           VgpuReloadReport **report, GError **error);
/* The live instances as vgpud.conf text (vgpuctl dump-config). */
char *vgpu_supervisor_dump_config(VgpuSupervisor *s);
/* Why the last create, set, destroy or reset is in force but not kept on
 * disk (the state file could not be written), or NULL when it was kept. */
const char *vgpu_supervisor_state_error(VgpuSupervisor *s);

/* For the control server. */

const VgpuConfig *vgpu_supervisor_config(VgpuSupervisor *s);
VgpuBook *vgpu_supervisor_book(VgpuSupervisor *s);
const char *vgpu_supervisor_runtime_dir(VgpuSupervisor *s);
/* The render node workers render on (NULL: none, EGL surfaceless, which
 * is llvmpipe) and its kernel driver from sysfs (NULL when unknown). */
void vgpu_supervisor_render_device(VgpuSupervisor *s, const char **node, const char **driver);
const char *vgpu_supervisor_config_source(VgpuSupervisor *s);
/* The CPU capacity that is the whole GPU on llvmpipe, thousandths of a
 * CPU: the measured figure now and the nominal one it stays within.
 * False when workers are charged wall time (not llvmpipe). */
bool vgpu_supervisor_cpu_capacity(VgpuSupervisor *s, uint32_t *measured, uint32_t *nominal);
gint64 vgpu_supervisor_started_us(VgpuSupervisor *s);
/* Sorted by name; includes draining instances. */
GPtrArray *vgpu_supervisor_instances(VgpuSupervisor *s);
VgpuInstance *vgpu_supervisor_find(VgpuSupervisor *s, const char *name);
/* transient: not kept in the state file (gone when vgpud stops). */
VgpuInstance *vgpu_supervisor_create_instance(VgpuSupervisor *s, const char *name,
                                              const char *profile, bool transient, GError **error);
bool vgpu_supervisor_destroy_instance(VgpuSupervisor *s, const char *name, bool force,
                                      GError **error);
/* A VM connection handed over by a caller (vgpu-vhost-gpu): fd is a
 * connected socket whose peer is QEMU (owned: closed in every case).  name
 * NULL picks [daemon] vm-instance, else the first instance by name.  The
 * instance's admission limits apply to the peer's uid as to any tenant.
 * virgl asks for 3D (refused when the renderer is null).  render_node (may
 * be NULL) is the node the caller was told to use: refused unless it is
 * the device vgpud's workers render on.  Returns the
 * worker's pid and sets *instance (when given) to the instance's name, or
 * returns 0 with the reason.  end (when not NULL) is called once when the
 * worker ends, unless vgpu_supervisor_forget_end() came first. */
pid_t vgpu_supervisor_attach_vm(VgpuSupervisor *s, const char *name, int fd, bool virgl,
                                const char *render_node, VgpuWorkerEndFunc end, gpointer user,
                                char **instance, GError **error);
/* The caller of attach_vm no longer wants to hear of worker_pid's end; when
 * kill is true the worker is sent SIGTERM (the caller that stood for it
 * went away). */
void vgpu_supervisor_forget_end(VgpuSupervisor *s, pid_t worker_pid, bool kill);

/* Screenshots.  A VM tenant's worker is asked for head @head's image and
 * has VGPU_SHOT_TIMEOUT_MS to answer; @done is called once, from the main
 * loop, with the checked image (its fd is the callee's to dup: it is
 * closed after the call) or a sentence saying why not. */
#define VGPU_SHOT_TIMEOUT_MS 2000
#define VGPU_SHOT_MAX_HEADS 16
typedef struct VgpuShot {
  int fd; /* sealed memfd, stride * height bytes */
  uint32_t width, height, stride, format, head;
  pid_t worker_pid;
} VgpuShot;
typedef void (*VgpuShotDoneFunc)(const VgpuShot *shot, const char *error, gpointer user);
/* Picks the instance's VM tenant (the only one the caller may see, or the
 * one whose worker or QEMU pid is @tenant when not 0; non-admins see their
 * own uid's only) and asks it.  Returns the request's id, or 0 with the
 * reason (no such instance, no VM tenant, several and no @tenant). */
guint vgpu_supervisor_screenshot(VgpuSupervisor *s, const char *name, uint32_t head, pid_t tenant,
                                 uid_t uid, bool admin, VgpuShotDoneFunc done, gpointer user,
                                 GError **error);
/* The caller left: @done will not be called. */
void vgpu_supervisor_screenshot_cancel(VgpuSupervisor *s, guint id);

/* GPU memory partitioning ([daemon] gpu-memory, overcommit): the figure
 * in force, the overcommit (thousandths) and what the instances' VRAM
 * limits take of it (draining instances included; vram=0 counts as all of
 * gpu_memory).  Creating, resizing and reloading beyond gpu_memory x
 * overcommit is refused (core/gpumem.h). */
void vgpu_supervisor_gpu_memory(VgpuSupervisor *s, uint64_t *gpu_memory, uint32_t *milli,
                                uint64_t *assigned);
/* vgpud --check-config: whether cfg's instances fit the GPU memory it
 * names on this host; *summary says how much and from where. */
bool vgpu_supervisor_check_gpu_memory(const VgpuConfig *cfg, char **summary, GError **error);

/* Applies key=value settings atomically (all or none). */
bool vgpu_supervisor_set(VgpuSupervisor *s, const char *name, GHashTable *settings, GError **error);

/* Sessions whose client was process `who` or one of its descendants (its
 * parents when it connected), that uid may see (all for an admin): the
 * ended ones (VgpuSessionEnd, oldest first) and in *live how many still
 * run. */
GArray *vgpu_supervisor_session_ends(VgpuSupervisor *s, const VgpuProcRef *who, uid_t uid,
                                     bool admin, guint *live);

/* Accessors of one instance (valid until the next main-loop iteration that
 * may remove it). */
const char *vgpu_instance_name(const VgpuInstance *in);
const VgpuInstanceConfig *vgpu_instance_config(const VgpuInstance *in);
const char *vgpu_instance_socket_path(const VgpuInstance *in);
/* DIR/NAME/vhost-user.sock: where QEMU connects a vhost-user-gpu device. */
const char *vgpu_instance_vm_socket_path(const VgpuInstance *in);
bool vgpu_instance_is_runtime(const VgpuInstance *in);   /* created with vgpuctl create */
bool vgpu_instance_is_transient(const VgpuInstance *in); /* create --transient */
bool vgpu_instance_is_draining(const VgpuInstance *in);
uint32_t vgpu_instance_ledger_index(const VgpuInstance *in);
guint vgpu_instance_n_tenants(const VgpuInstance *in);
/* Of those, the virtual machines. */
guint vgpu_instance_n_vm_tenants(const VgpuInstance *in);
/* Sessions of its workers that vgpud's side ended (a quota, a violation,
 * a GPU timeout, a crash...: not the client leaving), since it was made. */
uint64_t vgpu_instance_sessions_ended(const VgpuInstance *in);
/* The renderer its new workers start ([daemon] renderer) and the probe of
 * what they offer (NULL before the supervisor has started). */
const char *vgpu_instance_renderer(const VgpuInstance *in);
const VgpuProbe *vgpu_instance_probe(const VgpuInstance *in);
/* The instance's current share of one GPU's wall time in ppm (0:
 * best-effort), and how many of its tenants did GPU work lately. */
uint32_t vgpu_instance_share_ppm(const VgpuInstance *in);
guint vgpu_instance_active_tenants(const VgpuInstance *in);
/* VgpuTenantInfo of each connected tenant, in slot order. */
GArray *vgpu_instance_tenants(const VgpuInstance *in);
