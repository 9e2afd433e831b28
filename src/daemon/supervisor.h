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

typedef struct VgpuSupervisor VgpuSupervisor;

typedef struct VgpuWorker {
  struct VgpuInstance *inst;
  GPid pid;
  int slot;
  pid_t client_pid;
  uid_t client_uid;
  guint watch;
  VgpuWorkerIdentity id; /* the uid it runs as, its cgroup */
  guint ledger_watch;    /* the worker's ledger request socket */
} VgpuWorker;

typedef struct VgpuInstance {
  VgpuSupervisor *sup;
  VgpuInstanceConfig *cfg;
  int ledger_index;
  int listen_fd;
  guint listen_watch;
  char *dir;
  char *socket_path;
  bool runtime_origin; /* created with vgpuctl create */
  bool draining;       /* removed: no new clients, freed when empty */
  GHashTable *workers; /* pid -> VgpuWorker* */
} VgpuInstance;

typedef struct VgpuSupervisorOptions {
  char *runtime_dir;
  char *config_path; /* NULL: embedded default */
} VgpuSupervisorOptions;

VgpuSupervisor *vgpu_supervisor_new(VgpuConfig *cfg, const VgpuSupervisorOptions *opt,
                                    GError **error);
/* Creates instance sockets and the control socket. */
bool vgpu_supervisor_start(VgpuSupervisor *s, GError **error);
/* Stops accepting, ends workers (SIGTERM, then SIGKILL after 3 s), removes
 * sockets and directories. */
void vgpu_supervisor_stop(VgpuSupervisor *s);
void vgpu_supervisor_free(VgpuSupervisor *s);

/* Re-reads the configuration; on error nothing changes.  An instance the
 * new configuration adds but that cannot be created (no ledger room, its
 * socket cannot be made) is left out and the rest applied: *not_added
 * (when given) is then set to "NAME: reason; ..." and NULL otherwise. */
bool vgpu_supervisor_reload(VgpuSupervisor *s, char **not_added, GError **error);

/* For the control server. */
const VgpuConfig *vgpu_supervisor_config(VgpuSupervisor *s);
VgpuBook *vgpu_supervisor_book(VgpuSupervisor *s);
const char *vgpu_supervisor_runtime_dir(VgpuSupervisor *s);
const char *vgpu_supervisor_config_source(VgpuSupervisor *s);
gint64 vgpu_supervisor_started_us(VgpuSupervisor *s);
/* Sorted by name; includes draining instances. */
GPtrArray *vgpu_supervisor_instances(VgpuSupervisor *s);
VgpuInstance *vgpu_supervisor_find(VgpuSupervisor *s, const char *name);
VgpuInstance *vgpu_supervisor_create_instance(VgpuSupervisor *s, const char *name,
                                              const char *profile, GError **error);
bool vgpu_supervisor_destroy_instance(VgpuSupervisor *s, const char *name, bool force,
                                      GError **error);
/* Applies key=value settings atomically (all or none). */
bool vgpu_supervisor_set(VgpuSupervisor *s, const char *name, GHashTable *settings,
                         GError **error);
