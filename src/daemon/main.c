/* vgpud: the vGPU supervisor daemon (see vgpud(8)). */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"
#include "daemon/supervisor.h"
#include "util/fd.h"
#include "util/log.h"
#include "util/runtime_dir.h"
#include "vgpu-config.h"
#if HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

typedef struct {
  char *config;
  char *runtime_dir;
  char *state_dir;
  gboolean foreground;
  char *log_level;
  gboolean check_config;
  gboolean print_default;
  gboolean version;
} Options;

typedef struct {
  GMainLoop *loop;
  VgpuSupervisor *sup;
  char *refused; /* the last reload's refusal, for STATUS=; NULL after one that worked */
  char *status;  /* the STATUS= last sent */
} Daemon;

/* Prints a message of one or more lines (a configuration's errors, one
 * "FILE:LINE: reason" a line) with "vgpud: " before each. */
static void print_error(const char *prefix, const char *msg) {
  g_auto(GStrv) lines = g_strsplit(msg, "\n", -1);
  for (int i = 0; lines[i]; i++)
    fprintf(stderr, "vgpud: %s%s\n", prefix, lines[i]);
}

#if HAVE_SYSTEMD
/* systemd's STATUS=: "N instances, M tenants", and the refusal of the last
 * reload while the running configuration is an older one.  Sent when it
 * changed. */
static void notify_status(Daemon *d, bool force) {
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(d->sup);
  guint tenants = 0;
  for (guint i = 0; i < all->len; i++)
    tenants += vgpu_instance_n_tenants(g_ptr_array_index(all, i));
  g_autofree char *status =
      g_strdup_printf("%u instance%s, %u tenant%s%s%s", all->len, all->len == 1 ? "" : "s", tenants,
                      tenants == 1 ? "" : "s", d->refused ? "; reload refused: " : "",
                      d->refused ? d->refused : "");
  if (!force && !g_strcmp0(status, d->status))
    return;
  g_free(d->status);
  d->status = g_steal_pointer(&status);
  sd_notifyf(0, "STATUS=%s", d->status);
}

static gboolean on_status_tick(gpointer user) {
  notify_status(user, false);
  return G_SOURCE_CONTINUE;
}
#endif

/* RELOADING=1 as a reload starts, READY=1 and the outcome in STATUS= as it
 * ends, whether it worked or not (the old configuration still runs). */
static void on_reload(bool done, bool ok, const char *why, gpointer user) {
  Daemon *d = user;
  if (!done) {
#if HAVE_SYSTEMD
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" G_GINT64_FORMAT "\nSTATUS=reloading",
               g_get_monotonic_time());
#endif
    return;
  }
  g_clear_pointer(&d->refused, g_free);
  if (!ok && why) {
    /* The first error, and how many more the log names. */
    g_auto(GStrv) lines = g_strsplit(why, "\n", -1);
    guint n = g_strv_length(lines);
    d->refused = n > 1 ? g_strdup_printf("%s (and %u more)", lines[0], n - 1) : g_strdup(lines[0]);
  }
#if HAVE_SYSTEMD
  if (d->sup)
    notify_status(d, true);
  sd_notify(0, "READY=1");
#endif
}

static gboolean on_term(gpointer user) {
  Daemon *d = user;
  vgpu_info("shutting down");
  g_main_loop_quit(d->loop);
  return G_SOURCE_CONTINUE;
}

static gboolean on_hup(gpointer user) {
  Daemon *d = user;
  g_autoptr(GError) e = NULL;
  /* Instances that could not be added are logged by the supervisor. */
  if (!vgpu_supervisor_reload(d->sup, NULL, &e)) {
    g_auto(GStrv) lines = g_strsplit(e->message, "\n", -1);
    for (int i = 0; lines[i]; i++)
      vgpu_error("reload failed, keeping the running configuration: %s", lines[i]);
  }
  return G_SOURCE_CONTINUE;
}

/* Holds DIR/vgpud.pid locked for the daemon's lifetime.  The file is
 * opened in the checked runtime directory and never through a symbolic
 * link. */
static int take_pidfile(int dirfd, const char *path, GError **error) {
  int fd = vgpu_private_file_open(dirfd, "vgpud.pid", path, O_RDWR, 0644, error);
  if (fd < 0)
    return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    g_strchomp(buf);
    g_autofree char *dir = g_path_get_dirname(path);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_BUSY, "another vgpud (pid %s) is using %s",
                *buf ? buf : "?", dir);
    vgpu_close(fd);
    return -1;
  }
  return fd;
}

static void write_pid(int fd) {
  char buf[32];
  int n = g_snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
  if (ftruncate(fd, 0) == 0)
    (void)pwrite(fd, buf, (size_t)n, 0);
}

/* Detaches: the parent exits once the child reports (through a pipe) that
 * its sockets are listening, so `vgpud && vgpuctl list` works. */
static int daemonize(int log, int *ready_fd) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return -errno;
  pid_t pid = fork();
  if (pid < 0)
    return -errno;
  if (pid > 0) {
    close(p[1]);
    char c = 1;
    ssize_t n = read(p[0], &c, 1);
    _exit(n == 1 && c == 0 ? 0 : 1);
  }
  close(p[0]);
  setsid();
  int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (nul >= 0) {
    dup2(nul, STDIN_FILENO);
    dup2(nul, STDOUT_FILENO);
  }
  dup2(log, STDERR_FILENO);
  if (nul > 2)
    close(nul);
  if (log > 2)
    close(log);
  *ready_fd = p[1];
  return 0;
}

/* For the exits before the supervisor owns the configuration. */
static int fail_early(Options *o, VgpuConfig *cfg, int rc) {
  vgpu_config_free(cfg);
  g_free(o->config);
  g_free(o->runtime_dir);
  g_free(o->state_dir);
  g_free(o->log_level);
  return rc;
}

static void report_ready(int ready_fd, bool ok) {
  if (ready_fd >= 0) {
    char c = ok ? 0 : 1;
    (void)write(ready_fd, &c, 1);
    close(ready_fd);
  }
}

int main(int argc, char **argv) {
  Options o = {0};
  GOptionEntry entries[] = {
      {"config", 'c', 0, G_OPTION_ARG_FILENAME, &o.config,
       "Configuration file (default: the embedded configuration)", "FILE"},
      {"runtime-dir", 'r', 0, G_OPTION_ARG_FILENAME, &o.runtime_dir,
       "Sockets and pid file (default: $VGPU_RUNTIME_DIR, the configuration's runtime-dir, "
       "/run/vgpu for root, else $XDG_RUNTIME_DIR/vgpu or /tmp/vgpu-UID)",
       "DIR"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &o.state_dir,
       "Where run-time changes are kept (default: the configuration's state-dir, /var/lib/vgpu "
       "for root, else $XDG_STATE_HOME/vgpu)",
       "DIR"},
      {"foreground", 'f', 0, G_OPTION_ARG_NONE, &o.foreground,
       "Stay in the foreground and log to stderr", NULL},
      {"log-level", 'l', 0, G_OPTION_ARG_STRING, &o.log_level, "error, warning, info or debug",
       "LEVEL"},
      {"check-config", 0, 0, G_OPTION_ARG_NONE, &o.check_config,
       "Load the configuration, print a summary and exit", NULL},
      {"print-default-config", 0, 0, G_OPTION_ARG_NONE, &o.print_default,
       "Print the embedded configuration and exit", NULL},
      {"version", 'V', 0, G_OPTION_ARG_NONE, &o.version, "Print the version and exit", NULL},
      {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) octx = g_option_context_new("- multi-tenant virtual GPU daemon");
  g_option_context_set_description(
      octx, "Serves vGPU instances to Mesa virpipe clients (vtest). See vgpud(8), vgpud.conf(5).\n"
            "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration.");
  g_option_context_add_main_entries(octx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(octx, &argc, &argv, &error)) {
    fprintf(stderr, "vgpud: %s (try --help)\n", error->message);
    return 2;
  }
  if (o.version) {
    printf("vgpud %s\n", VGPU_VERSION);
    return 0;
  }
  if (o.print_default) {
    fputs(vgpu_config_default_text(), stdout);
    return 0;
  }
  vgpu_log_init("vgpud", VGPU_LOG_INFO);
  VgpuConfig *cfg = o.config ? vgpu_config_load_file(o.config, &error)
                             : vgpu_config_load_default(&error);
  if (!cfg) {
    print_error("", error->message);
    return fail_early(&o, NULL, 1);
  }
  VgpuLogLevel level = cfg->log_level;
  if (o.log_level && !vgpu_log_level_parse(o.log_level, &level)) {
    fprintf(stderr, "vgpud: bad --log-level \"%s\" (error, warning, info, debug)\n", o.log_level);
    return 2;
  }
  vgpu_log_set_level(level);
  if (o.check_config) {
    /* The instances must also fit this host's GPU memory. */
    g_autofree char *gpu_memory = NULL;
    if (!vgpu_supervisor_check_gpu_memory(cfg, &gpu_memory, &error)) {
      fprintf(stderr, "vgpud: %s: %s\n", cfg->source, error->message);
      return fail_early(&o, cfg, 1);
    }
    printf("%s: OK, %u profile(s), %u instance(s)\n", cfg->source, cfg->profiles->len,
           cfg->instances->len);
    printf("  %s\n", gpu_memory);
    for (guint i = 0; i < cfg->instances->len; i++) {
      VgpuInstanceConfig *ic = g_ptr_array_index(cfg->instances, i);
      printf("  %s: profile %s\n", ic->name, ic->profile);
    }
    return fail_early(&o, cfg, 0);
  }

  /* --runtime-dir, then $VGPU_RUNTIME_DIR (as vgpuctl and vgpu-run), then
   * the configuration's runtime-dir, then the built-in default. */
  const char *env_dir = g_getenv("VGPU_RUNTIME_DIR");
  const char *chosen = o.runtime_dir         ? o.runtime_dir
                       : env_dir && *env_dir ? env_dir
                                             : cfg->runtime_dir;
  g_autofree char *dir =
      chosen ? g_canonicalize_filename(chosen, NULL) : vgpu_builtin_runtime_dir();
  if (strlen(dir) > VGPU_RUNTIME_DIR_MAX) {
    fprintf(
        stderr,
        "vgpud: runtime directory %s is longer than %d bytes (DIR/NAME/vhost-user.sock must fit a "
        "socket address)\n",
        dir, VGPU_RUNTIME_DIR_MAX);
    return fail_early(&o, cfg, 1);
  }
  /* Only a directory no other user can change: see vgpu_private_dir_open(). */
  bool created_dir = false;
  vgpu_autofd int dirfd = vgpu_private_dir_open(dir, 0755, &created_dir, &error);
  if (dirfd < 0) {
    fprintf(stderr, "vgpud: runtime directory: %s\n", error->message);
    return fail_early(&o, cfg, 1);
  }
  g_autofree char *pidpath = g_build_filename(dir, "vgpud.pid", NULL);
  int pidfd = take_pidfile(dirfd, pidpath, &error);
  if (pidfd < 0) {
    fprintf(stderr, "vgpud: %s\n", error->message);
    if (created_dir)
      (void)rmdir(dir);
    return fail_early(&o, cfg, 1);
  }
  int ready_fd = -1;
  if (!o.foreground) {
    g_autofree char *logfile = g_build_filename(dir, "vgpud.log", NULL);
    int log =
        vgpu_private_file_open(dirfd, "vgpud.log", logfile, O_WRONLY | O_APPEND, 0640, &error);
    int r = log < 0 ? -1 : daemonize(log, &ready_fd);
    if (r < 0) {
      if (log < 0)
        fprintf(stderr, "vgpud: log file: %s\n", error->message);
      else
        fprintf(stderr, "vgpud: cannot detach: %s\n", g_strerror(-r));
      (void)unlinkat(dirfd, "vgpud.pid", 0);
      if (created_dir)
        (void)rmdir(dir);
      return fail_early(&o, cfg, 1);
    }
  }
  write_pid(pidfd);
  signal(SIGPIPE, SIG_IGN);

  /* --state-dir, then the configuration's state-dir, then the default. */
  g_autofree char *state_dir = o.state_dir      ? g_canonicalize_filename(o.state_dir, NULL)
                               : cfg->state_dir ? g_strdup(cfg->state_dir)
                                                : vgpu_default_state_dir();
  Daemon d = {0};
  VgpuSupervisorOptions sopt = {
      .runtime_dir = dir,
      .config_path = o.config,
      .state_dir = state_dir,
      .on_reload = on_reload,
      .on_reload_data = &d};
  d.sup = vgpu_supervisor_new(cfg, &sopt, &error);
  if (!d.sup || !vgpu_supervisor_start(d.sup, &error)) {
    vgpu_error("cannot start: %s", error->message);
    if (o.foreground)
      fprintf(stderr, "vgpud: %s\n", error->message);
    report_ready(ready_fd, false);
    if (d.sup)
      vgpu_supervisor_stop(d.sup);
    else
      vgpu_config_free(cfg); /* not handed over */
    vgpu_supervisor_free(d.sup);
    (void)unlinkat(dirfd, "vgpud.pid", 0);
    return fail_early(&o, NULL, 1);
  }
  d.loop = g_main_loop_new(NULL, FALSE);
  g_unix_signal_add(SIGTERM, on_term, &d);
  g_unix_signal_add(SIGINT, on_term, &d);
  g_unix_signal_add(SIGHUP, on_hup, &d);
  vgpu_info("vgpud %s ready: runtime dir %s, configuration %s, run-time changes kept in %s",
            VGPU_VERSION, dir, vgpu_supervisor_config_source(d.sup), state_dir);
  report_ready(ready_fd, true);
#if HAVE_SYSTEMD
  guint status_timer = 0;
  if (g_getenv("NOTIFY_SOCKET")) {
    notify_status(&d, true);
    status_timer = g_timeout_add_seconds(5, on_status_tick, &d);
  }
  sd_notify(0, "READY=1");
#endif
  g_main_loop_run(d.loop);
#if HAVE_SYSTEMD
  if (status_timer)
    g_source_remove(status_timer);
#endif
#if HAVE_SYSTEMD
  sd_notify(0, "STOPPING=1");
#endif
  vgpu_supervisor_stop(d.sup);
  vgpu_supervisor_free(d.sup);
  g_main_loop_unref(d.loop);
  (void)unlinkat(dirfd, "vgpud.pid", 0);
  vgpu_close(pidfd);
  if (created_dir)
    (void)rmdir(dir);
  vgpu_info("stopped");
  g_free(d.refused);
  g_free(d.status);
  g_free(o.config);
  g_free(o.runtime_dir);
  g_free(o.state_dir);
  g_free(o.log_level);
  return 0;
}
