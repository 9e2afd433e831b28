/* A real supervisor on a scratch directory, for unit tests and fuzzers that
 * drive the control server without sockets: the configuration text is
 * written to DIR/vgpud.conf (so "reload" re-reads it), the runtime
 * directory is DIR/run, and no worker is ever started (nothing connects). */
#pragma once

#include <stdbool.h>

#include "daemon/supervisor.h"

typedef struct {
  char *dir, *conf, *run;
  VgpuSupervisor *sup;
} ScratchDaemon;

/* Aborts (g_error) with the reason when the supervisor cannot start. */
ScratchDaemon *scratch_daemon_start(const char *config_text);
/* Stops the supervisor and removes what it and scratch_daemon_start made;
 * false when something else was left in the directory. */
bool scratch_daemon_stop(ScratchDaemon *d);
