/* vgpu-vhost-gpu: a vhost-user-gpu back-end program with the command line
 * of QEMU's reference one, for QEMU and libvirt, that serves every VM on a
 * vGPU instance of vgpud.
 *
 * It gets QEMU's connection (accepted on --socket-path, or already
 * connected: --fd, as libvirt passes it), hands it to vgpud over the
 * control socket (the attach-vm command, the socket passed with
 * SCM_RIGHTS), and then waits: vgpud keeps that control connection open
 * while the VM's worker runs and writes one last line when it ends.  This
 * process therefore lives exactly as long as the VM's worker, which is what
 * libvirt watches; if it is killed, vgpud ends the worker.  It never reads
 * a byte of what QEMU sends.
 *
 * Its messages are lines on standard error and, when that is /dev/null or
 * closed (libvirt starts back-ends so), also syslog's (daemon facility).
 *
 * Exit status: 0 when the worker ended cleanly (QEMU hung up), 1 when it
 * did not or when the VM could not be attached, 2 for a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glob.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/ctl_proto.h"
#include "util/fd.h"
#include "util/runtime_dir.h"
#include "vgpu-config.h"

#define PROG "vgpu-vhost-gpu"
#define EXIT_USAGE 2

/* Whether standard error goes nowhere: closed, or /dev/null, which is where
 * libvirt leaves a back-end it starts. */
static bool stderr_unseen(void) {
  struct stat st;
  if (fstat(STDERR_FILENO, &st) < 0)
    return true;
  return S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
}

static bool use_syslog;

/* One line on standard error, and in syslog when nobody reads that. */
static void say(int prio, const char *fmt, va_list ap) G_GNUC_PRINTF(2, 0);
static void say(int prio, const char *fmt, va_list ap) {
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  fprintf(stderr, PROG ": %s\n", msg);
  if (use_syslog)
    syslog(prio, "%s", msg);
}

static void info(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void info(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(LOG_INFO, fmt, ap);
  va_end(ap);
}

static int fail(int code, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  say(LOG_ERR, fmt, ap);
  va_end(ap);
  return code;
}

/* Whether this host has a DRM render node (a character device). */
static bool have_render_node(void) {
  glob_t g;
  bool found = false;
  if (glob("/dev/dri/renderD*", 0, NULL, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc && !found; i++) {
      struct stat st;
      found = stat(g.gl_pathv[i], &st) == 0 && S_ISCHR(st.st_mode);
    }
    globfree(&g);
  }
  return found;
}

/* What QEMU's vhost-user specification asks of a GPU back-end: its type
 * and the optional command-line features it takes.  render-node only where
 * there is one: libvirt looks for /dev/dri when it is offered. */
static void print_capabilities(void) {
  g_autoptr(GString) f = g_string_new(NULL);
  if (HAVE_VIRGL)
    g_string_append(f, "\n    \"virgl\"");
  if (have_render_node())
    g_string_append_printf(f, "%s\n    \"render-node\"", f->len ? "," : "");
  printf("{\n  \"type\": \"gpu\",\n  \"features\": [%s%s]\n}\n", f->str, f->len ? "\n  " : "");
}

/* Accepts QEMU's one connection on a new socket at path, then removes the
 * socket file. */
static int accept_one(const char *path) {
  int lfd = vgpu_listen_unix(path, 0600, 1);
  if (lfd < 0) {
    fail(1, "cannot listen on %s: %s", path, g_strerror(-lfd));
    return -1;
  }
  int c = -1;
  for (;;) {
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, -1) < 0 && errno != EINTR)
      break;
    c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c >= 0 || (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED))
      break;
  }
  int err = errno;
  (void)unlink(path);
  vgpu_close(lfd);
  if (c < 0) {
    fail(1, "accepting on %s: %s", path, g_strerror(err));
    return -1;
  }
  return c;
}

/* The control socket: --runtime-dir, else where a client finds vgpud
 * (vgpu_client_runtime_dir(): the system vgpud's /run/vgpu when the user
 * has none of their own): QEMU and its back-ends often run as a user of
 * their own. */
static char *control_path(const char *runtime_dir) {
  if (runtime_dir)
    return g_build_filename(runtime_dir, "control.sock", NULL);
  g_autofree char *dir = vgpu_client_runtime_dir();
  return g_build_filename(dir, "control.sock", NULL);
}

/* A connection to vgpud's control socket, or -1 with one line said. */
static int connect_ctl(const char *path) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(a.sun_path)) {
    fail(1, "control socket path %s is too long", path);
    return -1;
  }
  memcpy(a.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
    return fd;
  int err = errno;
  if (fd >= 0)
    close(fd);
  if (err == EACCES || err == EPERM)
    fail(1, "cannot reach vgpud at %s: %s", path, g_strerror(err));
  else
    fail(1, "vgpud is not running (no answer at %s: %s)", path, g_strerror(err));
  return -1;
}

/* Sends the request line with fd attached to its first byte. */
static bool send_with_fd(int sock, const char *line, int fd) {
  size_t len = strlen(line), off = 0;
  VgpuFdControl ctrl;
  while (off < len) {
    struct iovec iov = {.iov_base = (char *)line + off, .iov_len = len - off};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (off == 0)
      vgpu_msg_set_fd(&m, &ctrl, fd);
    ssize_t n = sendmsg(sock, &m, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    off += (size_t)n;
  }
  return true;
}

int main(int argc, char **argv) {
  gboolean caps = FALSE, virgl = FALSE, version = FALSE;
  gint fd_num = -1;
  g_autofree char *socket_path = NULL, *render_node = NULL, *instance = NULL, *runtime_dir = NULL;
  /* QEMU's reference back-end's options (short ones included), then ours. */
  GOptionEntry entries[] = {
      {"print-capabilities", 'c', 0, G_OPTION_ARG_NONE, &caps,
       "Print the back-end's capabilities (JSON) and exit", NULL},
      {"socket-path", 's', 0, G_OPTION_ARG_FILENAME, &socket_path,
       "Listen on PATH and serve the one QEMU that connects", "PATH"},
      {"fd", 'f', 0, G_OPTION_ARG_INT, &fd_num, "Serve the already connected socket FD", "FD"},
      {"virgl", 'v', 0, G_OPTION_ARG_NONE, &virgl, "Offer 3D (virgl) to the guest", NULL},
      {"render-node", 'r', 0, G_OPTION_ARG_FILENAME, &render_node,
       "The render node to use; must be the one vgpud's workers render on", "PATH"},
      {"instance", 'i', 0, G_OPTION_ARG_STRING, &instance,
       "The vGPU instance to land on (default: vgpud's [daemon] vm-instance, else its first)",
       "NAME"},
      {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "vgpud's runtime directory (default: $VGPU_RUNTIME_DIR, the built-in one, /run/vgpu)",
       "DIR"},
      {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL},
      {NULL},
  };
  if (stderr_unseen()) {
    use_syslog = true;
    openlog(PROG, LOG_PID, LOG_DAEMON);
  }
  g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, "Serve a QEMU vhost-user-gpu device on a vGPU instance of "
                                    "vgpud; stays alive while the VM's worker runs.");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) e = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &e))
    return fail(EXIT_USAGE, "%s (see --help)", e->message);
  if (argc > 1)
    return fail(EXIT_USAGE, "unexpected argument \"%s\" (see --help)", argv[1]);
  if (version) {
    printf(PROG " " VGPU_VERSION "\n");
    return 0;
  }
  if (caps) {
    print_capabilities();
    return 0;
  }
  if ((fd_num >= 0) == (socket_path != NULL))
    return fail(EXIT_USAGE, "give exactly one of --socket-path=PATH and --fd=FD");
  if (instance && !vgpu_instance_name_valid(instance))
    return fail(EXIT_USAGE, "invalid instance name \"%s\" (1-31 letters, digits, - and _)",
                instance);
  if (render_node) {
    struct stat st;
    if (stat(render_node, &st) < 0 || !S_ISCHR(st.st_mode))
      return fail(1, "render node %s not usable: %s", render_node,
                  errno && stat(render_node, &st) < 0 ? g_strerror(errno)
                                                      : "not a character device");
  }
  if (fd_num >= 0) {
    int fl = fcntl(fd_num, F_GETFD);
    if (fl < 0)
      return fail(EXIT_USAGE, "--fd=%d: %s", fd_num, g_strerror(errno));
    (void)fcntl(fd_num, F_SETFD, fl | FD_CLOEXEC);
  }

  /* vgpud first: without it there is nothing to serve the VM with. */
  g_autofree char *ctl_path = control_path(runtime_dir);
  {
    /* Only a look: QEMU may connect long after, and vgpud closes idle
     * control connections. */
    vgpu_autofd int probe = connect_ctl(ctl_path);
    if (probe < 0)
      return 1;
  }
  vgpu_autofd int vm = fd_num >= 0 ? fd_num : accept_one(socket_path);
  if (vm < 0)
    return 1;
  vgpu_autofd int ctl = connect_ctl(ctl_path);
  if (ctl < 0)
    return 1;
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "command");
  json_builder_add_string_value(b, "attach-vm");
  if (instance) {
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, instance);
  }
  json_builder_set_member_name(b, "virgl");
  json_builder_add_boolean_value(b, virgl);
  if (render_node) {
    json_builder_set_member_name(b, "render_node");
    json_builder_add_string_value(b, render_node);
  }
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *req = json_to_string(root, FALSE);
  g_autofree char *line = g_strconcat(req, "\n", NULL);
  if (!send_with_fd(ctl, line, vm))
    return fail(1, "cannot send the VM's connection to vgpud: %s", g_strerror(errno));
  /* The worker holds QEMU's connection now; ours would keep it open after
   * the worker ends. */
  vgpu_close(vgpu_steal_fd(&vm));

  g_autofree char *first = vgpu_ctl_read_line(ctl, VGPU_CTL_MAX_REPLY, VGPU_CTL_TIMEOUT_MS, &e);
  g_autoptr(JsonObject) reply = first ? vgpu_ctl_parse_reply(first, &e) : NULL;
  if (!reply)
    return fail(1, "%s", e->message);
  info("VM attached to instance %s (worker pid %" G_GUINT64_FORMAT ")",
       vgpu_ctl_get_str(reply, "instance", "?"), vgpu_ctl_get_u64(reply, "worker_pid"));

  /* Until the worker ends: vgpud's last line. */
  g_autofree char *last = vgpu_ctl_read_line(ctl, VGPU_CTL_MAX_REPLY, -1, &e);
  if (!last)
    return fail(1, "lost vgpud before the VM's worker ended (%s)", e->message);
  g_autoptr(JsonObject) end = vgpu_ctl_parse_reply(last, &e);
  if (!end)
    return fail(1, "%s", e->message);
  JsonNode *clean = json_object_get_member(end, "clean");
  bool ok = clean && JSON_NODE_HOLDS_VALUE(clean) &&
            json_node_get_value_type(clean) == G_TYPE_BOOLEAN && json_node_get_boolean(clean);
  if (!ok)
    return fail(1, "the VM's worker ended: %s", vgpu_ctl_get_str(end, "reason", "no reason given"));
  info("the VM's worker ended: %s", vgpu_ctl_get_str(end, "reason", "-"));
  return 0;
}
