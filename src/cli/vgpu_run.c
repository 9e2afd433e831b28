/* vgpu-run: runs an unmodified GL program on a vGPU instance.
 *
 * Mesa 24 and later read the vtest socket's path from VTEST_SOCKET_NAME:
 * the program gets the instance's socket there and runs as it is.  Mesa
 * 22.3 (Debian 12) has /tmp/.virgl_test compiled in: the program then runs
 * in a private mount namespace in which that path is the instance's
 * socket.  Which of the two is decided from the Mesa driver the program
 * would load (util/mesa_probe.h), unless --namespace says.  Nothing is ever
 * created, replaced or followed at that path in the shared /tmp, which any
 * user can write:
 *
 *  - where /tmp/.virgl_test already exists as a regular file or socket
 *    owned by root or by the caller (no one else can remove or replace it
 *    in the sticky /tmp), the socket is bind-mounted over that very file,
 *    found without following a symbolic link;
 *  - otherwise (missing, a symbolic link, a directory, a file of another
 *    user) the program gets a private tmpfs on /tmp that holds the socket
 *    at Mesa's path and, bind-mounted, every entry the shared /tmp had at
 *    start: work in existing directories is shared as usual, but new names
 *    made directly in /tmp stay private to the program and vanish with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl/ctl_proto.h"
#include "util/fd.h"
#include "util/mesa_probe.h"
#include "util/proc_stat.h"
#include "util/runtime_dir.h"

/* vgpu-run's own exit statuses (vgpu-run(1), EXIT STATUS). */
enum {
  EXIT_USAGE = 2,
  EXIT_ENDED_BY_VGPUD = 122, /* the program ran; vgpud ended a session of it */
  EXIT_NOT_RUN = 125,        /* like env(1): the command itself never ran */
};

#define MESA_VTEST_DIR "/tmp"
#define MESA_VTEST_NAME ".virgl_test"
#define MESA_VTEST_PATH MESA_VTEST_DIR "/" MESA_VTEST_NAME

static int die(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("vgpu-run: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return EXIT_NOT_RUN;
}

static bool write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text);
}

static const char *proc_fd(char buf[32], int fd) {
  g_snprintf(buf, 32, "/proc/self/fd/%d", fd);
  return buf;
}

/* Whether an existing /tmp/.virgl_test is one that only root or the caller
 * can remove or replace (it is then covered in place, else a private /tmp
 * is made).  Asked before entering a user namespace, where root's files
 * would show another owner; *st identifies the file for a second look
 * from inside, where it is opened again (a mount needs paths of the new
 * namespace). */
static bool placeholder_fit(struct stat *st) {
  if (lstat(MESA_VTEST_PATH, st) < 0)
    return false;
  return (S_ISREG(st->st_mode) || S_ISSOCK(st->st_mode)) &&
         (st->st_uid == 0 || st->st_uid == getuid());
}

/* The file placeholder_fit() approved, opened without following a
 * symbolic link; -1 when the name now stands for something else. */
static int open_placeholder(const struct stat *want) {
  int fd = open(MESA_VTEST_PATH, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0)
    return -1;
  if (fstat(fd, &st) == 0 && st.st_dev == want->st_dev && st.st_ino == want->st_ino &&
      (st.st_mode & S_IFMT) == (want->st_mode & S_IFMT))
    return fd;
  close(fd);
  return -1;
}

/* Mounts a private tmpfs on /tmp and shows in it, bind-mounted, every entry
 * the shared /tmp (open as shared_fd) has now, except Mesa's name;
 * symbolic links are copied, not followed.  Returns the number of entries
 * shown, or -errno when the tmpfs cannot be mounted. */
static int private_tmp(int shared_fd, bool verbose) {
  struct stat st;
  if (fstat(shared_fd, &st) < 0)
    return -errno;
  char opts[32];
  g_snprintf(opts, sizeof(opts), "mode=%o", (unsigned)(st.st_mode & 07777));
  if (mount("tmpfs", MESA_VTEST_DIR, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
    return -errno;
  vgpu_autofd int priv = open(MESA_VTEST_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (priv < 0)
    return -errno;
  int list_fd = dup(shared_fd);
  DIR *d = list_fd >= 0 ? fdopendir(list_fd) : NULL;
  if (!d) {
    if (list_fd >= 0)
      close(list_fd);
    return -errno;
  }
  int shown = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    if (g_str_equal(n, ".") || g_str_equal(n, "..") || g_str_equal(n, MESA_VTEST_NAME))
      continue;
    vgpu_autofd int src = openat(shared_fd, n, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (src < 0 || fstat(src, &st) < 0)
      continue; /* gone meanwhile */
    bool ok;
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t len = readlinkat(src, "", target, sizeof(target) - 1);
      if (len >= 0)
        target[len] = '\0';
      ok = len >= 0 && symlinkat(target, priv, n) == 0;
    } else {
      /* A mount point of the same kind, then the entry itself on it. */
      int made = S_ISDIR(st.st_mode) ? mkdirat(priv, n, 0700) : mknodat(priv, n, S_IFREG | 0600, 0);
      char from[32];
      g_autofree char *to = g_build_filename(MESA_VTEST_DIR, n, NULL);
      ok = made == 0 && mount(proc_fd(from, src), to, NULL, MS_BIND | MS_REC, NULL) == 0;
    }
    if (ok)
      shown++;
    else if (verbose)
      fprintf(stderr, "vgpu-run: /tmp/%s not shown in the private /tmp: %s\n", n,
              g_strerror(errno));
  }
  closedir(d);
  return shown;
}

/* Root gets a mount namespace directly; other users go through a user
 * namespace in which they are root, mapped to themselves outside. */
static int enter_namespace(void) {
  if (geteuid() == 0)
    return unshare(CLONE_NEWNS) < 0 ? -errno : 0;
  uid_t uid = geteuid();
  gid_t gid = getegid();
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
    return -errno;
  char map[64];
  g_snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
  if (!write_file("/proc/self/uid_map", map))
    return -errno;
  (void)write_file("/proc/self/setgroups", "deny");
  g_snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
  if (!write_file("/proc/self/gid_map", map))
    return -errno;
  return 0;
}

/* Whether the program needs the namespace: from --namespace, else from
 * its Mesa.  Says why under --verbose. */
static bool want_namespace(const char *mode, const char *mesa_root, bool verbose) {
  if (g_str_equal(mode, "always") || g_str_equal(mode, "never")) {
    if (verbose)
      fprintf(stderr, "vgpu-run: --namespace=%s: %s\n", mode,
              g_str_equal(mode, "always") ? "private mount namespace"
                                          : "no mount namespace, VTEST_SOCKET_NAME only");
    return g_str_equal(mode, "always");
  }
  VgpuMesaProbe probe;
  vgpu_mesa_probe(mesa_root, g_getenv("LD_LIBRARY_PATH"), g_getenv("LIBGL_DRIVERS_PATH"), &probe);
  bool ns = probe.kind != VGPU_MESA_SOCKET_ENV;
  if (verbose) {
    if (probe.kind == VGPU_MESA_SOCKET_ENV)
      fprintf(stderr, "vgpu-run: Mesa driver %s reads VTEST_SOCKET_NAME: no mount namespace\n",
              probe.driver);
    else if (probe.kind == VGPU_MESA_SOCKET_FIXED)
      fprintf(stderr,
              "vgpu-run: Mesa driver %s does not read VTEST_SOCKET_NAME: private mount "
              "namespace for %s\n",
              probe.driver, MESA_VTEST_PATH);
    else
      fprintf(stderr,
              "vgpu-run: no Mesa driver found (looked for %s): private mount namespace, "
              "which every Mesa can use\n",
              probe.searched);
  }
  vgpu_mesa_probe_clear(&probe);
  return ns;
}

/* Replaces this process with the command; returns only on failure. */
static int run_command(char **command) {
  execvp(command[0], command);
  int exec_errno = errno;
  die("cannot run %s: %s", command[0], g_strerror(exec_errno));
  return exec_errno == ENOENT ? 127 : 126; /* as env(1) and the shells */
}

static int check_vgpud(const char *runtime_dir, const char *instance);
static int supervise(pid_t child, const char *runtime_dir, const VgpuProcRef *self, bool verbose);
static int start_command(char **command, const char *socket_path, const char *ns_mode,
                         const char *mesa_root, bool verbose);

int main(int argc, char **argv) {
  g_autofree char *instance = NULL, *socket_path = NULL, *runtime_dir = NULL;
  g_autofree char *ns_mode = NULL, *mesa_root = NULL;
  gboolean verbose = FALSE, version = FALSE;
  g_auto(GStrv) command = NULL;
  GOptionEntry entries[] = {
      {"instance", 'i', 0, G_OPTION_ARG_STRING, &instance,
       "vGPU instance (default: $VGPU_INSTANCE or vgpu0)", "NAME"},
      {"socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path,
       "Use this vtest socket instead of an instance's", "PATH"},
      {"runtime-dir", 'r', 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "vgpud's runtime directory (default: $VGPU_RUNTIME_DIR, then vgpud's default, then "
       "/run/vgpu when that has no vgpud)",
       "DIR"},
      {"namespace", 'n', 0, G_OPTION_ARG_STRING, &ns_mode,
       "Private mount namespace for Mesa's fixed socket path: auto (default: when the "
       "program's Mesa does not read VTEST_SOCKET_NAME), always or never",
       "auto|always|never"},
      {"mesa-root", 0, 0, G_OPTION_ARG_FILENAME, &mesa_root,
       "Look for the program's Mesa under DIR (for a program that runs chrooted there)", "DIR"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Say what is being set up", NULL},
      {"version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL},
      {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &command, NULL, "-- COMMAND [ARG...]"},
      {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, "Run an unmodified OpenGL program on a vGPU instance.");
  g_option_context_set_description(
      ctx, "Example: vgpu-run --instance vgpu1 -- glxgears -info\nSee vgpu-run(1).");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) error = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
    fprintf(stderr, "vgpu-run: %s (try --help)\n", error->message);
    return 2;
  }
  if (version) {
    printf("vgpu-run %s\n", VGPU_VERSION);
    return 0;
  }
  if (!ns_mode)
    ns_mode = g_strdup("auto");
  if (!g_str_equal(ns_mode, "auto") && !g_str_equal(ns_mode, "always") &&
      !g_str_equal(ns_mode, "never")) {
    fprintf(stderr, "vgpu-run: --namespace takes auto, always or never, not '%s' (try --help)\n",
            ns_mode);
    return 2;
  }
  if (mesa_root && !g_file_test(mesa_root, G_FILE_TEST_IS_DIR)) {
    fprintf(stderr, "vgpu-run: --mesa-root %s: not a directory\n", mesa_root);
    return 2;
  }
  if (!command || !command[0]) {
    fprintf(stderr, "vgpu-run: no command given (usage: vgpu-run [--instance NAME] -- COMMAND)\n");
    return 2;
  }

  if (!socket_path) {
    if (!instance)
      instance = g_strdup(g_getenv("VGPU_INSTANCE") ? g_getenv("VGPU_INSTANCE") : "vgpu0");
    if (!vgpu_instance_name_valid(instance))
      return die("invalid instance name '%s' (1-31 letters, digits, - and _)", instance);
    if (!runtime_dir)
      runtime_dir = vgpu_client_runtime_dir();
    socket_path = g_build_filename(runtime_dir, instance, "vtest.sock", NULL);
  }
  /* vgpud is asked once, on its control socket, before anything starts:
   * a connection to the instance's socket would make vgpud start a worker
   * only to see it hang up. */
  if (instance) {
    int r = check_vgpud(runtime_dir, instance);
    if (r)
      return r;
  }
  struct stat st;
  int stat_errno = stat(socket_path, &st) < 0 ? errno : 0;
  if (stat_errno || !S_ISSOCK(st.st_mode)) {
    if (instance)
      return die("no vGPU instance '%s' at %s: is vgpud running? (vgpuctl list shows instances)",
                 instance, socket_path);
    return die("%s: %s", socket_path,
               stat_errno ? g_strerror(stat_errno) : "not a socket (a vtest socket is needed)");
  }
  /* Connecting needs write permission; without it Mesa only reports a lost
   * connection, so say what is wrong here. */
  if (access(socket_path, W_OK) < 0)
    return die("no permission to connect to %s (owner uid %u, mode %04o)", socket_path,
               (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));

  /* The program runs as a child: once it ends, vgpud is asked why its
   * sessions ended.  Orphans of the program become vgpu-run's children
   * (subreaper), so a client started through a shell or `timeout` is
   * still the program's descendant when it connects. */
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  VgpuProcRef self = {0};
  vgpu_proc_ancestry(getpid(), &self, 1);
  fflush(NULL);
  pid_t child = fork();
  if (child < 0)
    return die("cannot start %s: %s", command[0], g_strerror(errno));
  if (child > 0)
    return supervise(child, instance ? runtime_dir : NULL, &self, verbose);
  prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
  if (getppid() != self.pid)
    _exit(EXIT_NOT_RUN); /* vgpu-run already gone */
  _exit(start_command(command, socket_path, ns_mode, mesa_root, verbose));
}

/* The child: environment, namespace, exec.  Returns only on failure, with
 * vgpu-run's status. */
static int start_command(char **command, const char *socket_path, const char *ns_mode,
                         const char *mesa_root, bool verbose) {
  struct stat st;
  g_setenv("GALLIUM_DRIVER", "virpipe", TRUE);
  g_setenv("VTEST_SOCKET_NAME", socket_path, TRUE);
  /* GALLIUM_DRIVER only steers Mesa's software loader.  Under Xvfb that is
   * the only one, but an X server with a hardware DRI driver would get that
   * driver instead of virpipe without this. */
  g_setenv("LIBGL_ALWAYS_SOFTWARE", "1", TRUE);

  if (!want_namespace(ns_mode, mesa_root, verbose)) {
    if (verbose)
      fprintf(stderr, "vgpu-run: VTEST_SOCKET_NAME=%s, GALLIUM_DRIVER=virpipe\n", socket_path);
    return run_command(command);
  }

  struct stat cover_st;
  bool cover = placeholder_fit(&cover_st);

  int r = enter_namespace();
  if (r == -EPERM && geteuid() == 0)
    return die("cannot create a private mount namespace: not permitted even as root (a "
               "container without CAP_SYS_ADMIN?)");
  if (r == -EPERM || r == -EINVAL || r == -ENOSPC)
    return die("cannot create a private mount namespace: unprivileged user namespaces are "
               "disabled here (sysctl kernel.unprivileged_userns_clone or "
               "user.max_user_namespaces); run as root");
  if (r < 0)
    return die("cannot create a private mount namespace: %s", g_strerror(-r));
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    return die("cannot make the mount namespace private: %s", g_strerror(errno));
  /* Opened inside the namespace (a bind mount takes its source and target
   * from the caller's own namespace): the socket first, as its path may
   * lie under /tmp, then either the approved placeholder or the shared
   * /tmp to mirror. */
  vgpu_autofd int sock_fd = open(socket_path, O_PATH | O_CLOEXEC);
  if (sock_fd < 0 || fstat(sock_fd, &st) < 0 || !S_ISSOCK(st.st_mode))
    return die("%s: %s", socket_path, sock_fd < 0 ? g_strerror(errno) : "not a socket");
  vgpu_autofd int cover_fd = cover ? open_placeholder(&cover_st) : -1;
  vgpu_autofd int shared_tmp = -1;
  if (cover_fd < 0) {
    shared_tmp = open(MESA_VTEST_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (shared_tmp < 0)
      return die("cannot open %s: %s", MESA_VTEST_DIR, g_strerror(errno));
  }
  char from[32], to[32];
  if (cover_fd >= 0) {
    /* The very file checked above, whatever its name points to now. */
    if (mount(proc_fd(from, sock_fd), proc_fd(to, cover_fd), NULL, MS_BIND, NULL) < 0)
      return die("cannot bind %s to %s: %s", socket_path, MESA_VTEST_PATH, g_strerror(errno));
    if (verbose)
      fprintf(stderr,
              "vgpu-run: %s -> %s (bound over the existing file), "
              "GALLIUM_DRIVER=virpipe\n",
              MESA_VTEST_PATH, socket_path);
  } else {
    int shown = private_tmp(shared_tmp, verbose);
    if (shown < 0)
      return die("cannot mount a private %s: %s", MESA_VTEST_DIR, g_strerror(-shown));
    int fd = open(MESA_VTEST_PATH, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
      return die("cannot create %s in the private %s: %s", MESA_VTEST_PATH, MESA_VTEST_DIR,
                 g_strerror(errno));
    close(fd);
    if (mount(proc_fd(from, sock_fd), MESA_VTEST_PATH, NULL, MS_BIND, NULL) < 0)
      return die("cannot bind %s to %s: %s", socket_path, MESA_VTEST_PATH, g_strerror(errno));
    if (verbose)
      fprintf(stderr,
              "vgpu-run: %s -> %s in a private %s (%d entries of the shared one shown), "
              "GALLIUM_DRIVER=virpipe\n",
              MESA_VTEST_PATH, socket_path, MESA_VTEST_DIR, shown);
  }
  return run_command(command);
}

/* Whether vgpud runs and has the instance; 0, or vgpu-run's status with
 * the reason printed.  A control socket nobody listens on (vgpud died
 * and left it) is "not running"; a socket vgpu-run may not use falls
 * through to the checks of the instance's socket. */
static int check_vgpud(const char *runtime_dir, const char *instance) {
  g_autofree char *ctl_path = g_build_filename(runtime_dir, "control.sock", NULL);
  struct stat st;
  bool have = stat(ctl_path, &st) == 0 && S_ISSOCK(st.st_mode);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (fd < 0 || strlen(ctl_path) >= sizeof(a.sun_path)) {
    if (fd >= 0)
      close(fd);
    return 0;
  }
  memcpy(a.sun_path, ctl_path, strlen(ctl_path));
  int r = connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ? errno : 0;
  close(fd);
  if (r == ECONNREFUSED || (r == ENOENT && !have)) {
    if (r == ECONNREFUSED)
      return die("vgpud is not running: nothing listens on %s (a stale socket of a vgpud that "
                 "ended; runtime dir %s)",
                 ctl_path, runtime_dir);
    return die("vgpud is not running: no %s (runtime dir %s; start vgpud, or give its "
               "--runtime-dir)",
               ctl_path, runtime_dir);
  }
  if (r)
    return 0; /* e.g. no permission: the instance's socket says more */
  g_autoptr(GError) e = NULL;
  g_autoptr(JsonObject) req = vgpu_ctl_request("list", NULL);
  g_autoptr(JsonObject) reply = vgpu_ctl_transact(runtime_dir, req, VGPU_CTL_TIMEOUT_MS, &e);
  if (!reply)
    return die("vgpud at %s does not answer: %s", ctl_path, e->message);
  JsonArray *all = vgpu_ctl_get_array(reply, "instances");
  g_autoptr(GString) names = g_string_new(NULL);
  for (guint i = 0; all && i < json_array_get_length(all); i++) {
    JsonObject *o = vgpu_ctl_array_object(all, i);
    const char *name = o ? vgpu_ctl_get_str(o, "name", NULL) : NULL;
    if (!name)
      continue;
    if (g_str_equal(name, instance))
      return 0;
    g_string_append_printf(names, "%s%s", names->len ? ", " : "", name);
  }
  return die("no vGPU instance '%s' in vgpud (runtime dir %s); instances: %s", instance,
             runtime_dir, names->len ? names->str : "none");
}

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig) {
  if (child_pid > 0)
    kill(child_pid, sig);
}

/* Waits for the program (reaping orphans meanwhile), then asks vgpud why
 * its sessions ended.  Returns vgpu-run's exit status. */
static int supervise(pid_t child, const char *runtime_dir, const VgpuProcRef *self, bool verbose) {
  child_pid = child;
  /* Keyboard signals reach the program from the terminal itself; vgpu-run
   * stays to report.  Signals sent to vgpu-run alone are passed on. */
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  struct sigaction sa = {.sa_handler = forward_signal, .sa_flags = SA_RESTART};
  sigemptyset(&sa.sa_mask);
  int fwd[] = {SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGCONT, SIGWINCH};
  for (size_t i = 0; i < G_N_ELEMENTS(fwd); i++)
    sigaction(fwd[i], &sa, NULL);
  int status = 0;
  for (;;) {
    pid_t p = waitpid(-1, &status, 0);
    if (p == child)
      break;
    if (p < 0 && errno != EINTR)
      return die("waiting for the program: %s", g_strerror(errno));
  }
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (!runtime_dir || self->pid <= 0 || rc == EXIT_NOT_RUN)
    return rc;
  /* The program's sessions may not all have ended yet in vgpud: a worker's
   * exit reaches vgpud a moment after the client's.  Asked again while any
   * still runs, for at most two seconds. */
  g_autoptr(JsonObject) reply = NULL;
  for (int tries = 0; tries < 100; tries++) {
    g_autoptr(JsonObject) req = vgpu_ctl_request("session-end", NULL);
    json_object_set_int_member(req, "pid", self->pid);
    json_object_set_int_member(req, "start", (gint64)self->start);
    g_autoptr(GError) e = NULL;
    g_clear_pointer(&reply, json_object_unref);
    reply = vgpu_ctl_transact(runtime_dir, req, VGPU_CTL_TIMEOUT_MS, &e);
    if (!reply) {
      if (verbose)
        fprintf(stderr, "vgpu-run: cannot ask vgpud how the session ended: %s\n", e->message);
      return rc;
    }
    if (vgpu_ctl_get_u64(reply, "live") == 0)
      break;
    g_usleep(20000);
  }
  JsonArray *ends = vgpu_ctl_get_array(reply, "sessions");
  bool ended = false;
  for (guint i = 0; ends && i < json_array_get_length(ends); i++) {
    JsonObject *o = vgpu_ctl_array_object(ends, i);
    if (!o)
      continue;
    JsonNode *by = json_object_get_member(o, "by_vgpud");
    bool by_vgpud = by && JSON_NODE_HOLDS_VALUE(by) &&
                    json_node_get_value_type(by) == G_TYPE_BOOLEAN && json_node_get_boolean(by);
    const char *reason = vgpu_ctl_get_str(o, "reason", "no reason given");
    if (by_vgpud) {
      fprintf(stderr, "vgpu-run: session ended by vgpud: %s\n", reason);
      ended = true;
    } else if (verbose) {
      fprintf(stderr, "vgpu-run: session ended: %s\n", reason);
    }
  }
  return ended ? EXIT_ENDED_BY_VGPUD : rc;
}
