#include "scratch_daemon.h"

#include <glib.h>
#include <glib/gstdio.h>

#include "daemon/config.h"

ScratchDaemon *scratch_daemon_start(const char *config_text) {
  g_autoptr(GError) e = NULL;
  ScratchDaemon *d = g_new0(ScratchDaemon, 1);
  d->dir = g_dir_make_tmp("vgpu-scratch-XXXXXX", &e);
  if (!d->dir)
    g_error("scratch daemon: %s", e->message);
  d->conf = g_build_filename(d->dir, "vgpud.conf", NULL);
  d->run = g_build_filename(d->dir, "run", NULL);
  VgpuConfig *cfg = NULL;
  if (g_file_set_contents(d->conf, config_text, -1, &e))
    cfg = vgpu_config_load_file(d->conf, &e);
  g_setenv("VGPU_WORKER", "/bin/true", TRUE); /* must exist; never started */
  VgpuSupervisorOptions opt = {.runtime_dir = d->run, .config_path = d->conf};
  d->sup = cfg ? vgpu_supervisor_new(cfg, &opt, &e) : NULL;
  if (!d->sup || !vgpu_supervisor_start(d->sup, &e))
    g_error("scratch daemon: cannot start a supervisor: %s", e ? e->message : "?");
  return d;
}

bool scratch_daemon_stop(ScratchDaemon *d) {
  vgpu_supervisor_stop(d->sup); /* removes the instances' sockets and directories */
  vgpu_supervisor_free(d->sup);
  g_autofree char *ctl = g_build_filename(d->run, "control.sock", NULL);
  g_unlink(ctl);
  g_rmdir(d->run);
  g_unlink(d->conf);
  bool empty = g_rmdir(d->dir) == 0;
  g_free(d->dir);
  g_free(d->conf);
  g_free(d->run);
  g_free(d);
  return empty;
}
