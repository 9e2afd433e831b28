/* vgpu-run: runs an unmodified GL program on a vGPU instance.
 *
 * Newer Mesa reads VTEST_SOCKET_NAME; Mesa 22.3 (Debian 12) has the vtest
 * socket path /tmp/.virgl_test compiled in.  So the program runs in a
 * private mount namespace in which that path is bind-mounted to the
 * instance's socket; the rest of the file system, /tmp included, is shared
 * as usual. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"

#define MESA_VTEST_PATH "/tmp/.virgl_test"

static int die(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("vgpu-run: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 125; /* like env(1): the command itself never ran */
}

static bool write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text);
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

int main(int argc, char **argv) {
  g_autofree char *instance = NULL, *socket_path = NULL, *runtime_dir = NULL;
  gboolean verbose = FALSE, version = FALSE;
  g_auto(GStrv) command = NULL;
  GOptionEntry entries[] = {
      {"instance", 'i', 0, G_OPTION_ARG_STRING, &instance,
       "vGPU instance (default: $VGPU_INSTANCE or vgpu0)", "NAME"},
      {"socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path,
       "Use this vtest socket instead of an instance's", "PATH"},
      {"runtime-dir", 'r', 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "vgpud's runtime directory (default: $VGPU_RUNTIME_DIR, then vgpud's default)", "DIR"},
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
  if (!command || !command[0]) {
    fprintf(stderr, "vgpu-run: no command given (usage: vgpu-run [--instance NAME] -- COMMAND)\n");
    return 2;
  }

  if (!socket_path) {
    if (!instance)
      instance = g_strdup(g_getenv("VGPU_INSTANCE") ? g_getenv("VGPU_INSTANCE") : "vgpu0");
    if (!runtime_dir)
      runtime_dir = g_getenv("VGPU_RUNTIME_DIR") ? g_strdup(g_getenv("VGPU_RUNTIME_DIR"))
                                                 : vgpu_default_runtime_dir();
    socket_path = g_build_filename(runtime_dir, instance, "vtest.sock", NULL);
  }
  /* stat() rather than a trial connect(): a connection would make vgpud
   * start a worker only to see it hang up. */
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

  g_setenv("GALLIUM_DRIVER", "virpipe", TRUE);
  g_setenv("VTEST_SOCKET_NAME", socket_path, TRUE);
  /* GALLIUM_DRIVER only steers Mesa's software loader.  Under Xvfb that is
   * the only one, but an X server with a hardware DRI driver would get that
   * driver instead of virpipe without this. */
  g_setenv("LIBGL_ALWAYS_SOFTWARE", "1", TRUE);

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
  /* A bind mount needs something to cover; an existing socket or file is
   * fine, otherwise leave an empty file there (it is harmless). */
  if (lstat(MESA_VTEST_PATH, &st) < 0) {
    int fd = open(MESA_VTEST_PATH, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST)
      return die("cannot create %s: %s", MESA_VTEST_PATH, g_strerror(errno));
    if (fd >= 0)
      close(fd);
  }
  if (mount(socket_path, MESA_VTEST_PATH, NULL, MS_BIND, NULL) < 0)
    return die("cannot bind %s to %s: %s", socket_path, MESA_VTEST_PATH, g_strerror(errno));
  if (verbose)
    fprintf(stderr, "vgpu-run: %s -> %s, GALLIUM_DRIVER=virpipe\n", MESA_VTEST_PATH,
            socket_path);
  execvp(command[0], command);
  int exec_errno = errno;
  die("cannot run %s: %s", command[0], g_strerror(exec_errno));
  return exec_errno == ENOENT ? 127 : 126; /* as env(1) and the shells */
}
