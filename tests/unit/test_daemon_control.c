/* The daemon's control server and supervisor without sockets to clients:
 * request lines go straight to vgpu_control_handle() of a real supervisor
 * on a scratch runtime directory.  Read commands for anyone, admin
 * commands only for root, run-time create/set/destroy with their files on
 * disk, atomic settings, refusals of malformed requests, and a reload that
 * cannot add an instance.  Then the same server on its real sockets,
 * driven by this process's main loop: clients that never read, oversize
 * and unfinished requests, connection caps, idle timeouts, fds running
 * out, the per-uid client limit and who sees which tenant. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/supervisor.h"
#include "daemon/listener.h"
#include "util/fd.h"
#include "util/log.h"

#include "../support/scratch_daemon.h"

#define ROOT 0
#define NOBODY 65534

typedef ScratchDaemon Fixture;

static const char CONFIG[] = "[daemon]\nlog-level=error\n\n"
                             "[profile p]\nvram=256M\nmax-clients=4\n\n"
                             "[profile q]\nvram=1G\n\n"
                             "[instance vgpu0]\nprofile=p\n";

static int setup(void **state) {
  *state = scratch_daemon_start(CONFIG);
  return 0;
}

static int teardown(void **state) {
  assert_true(scratch_daemon_stop(*state)); /* nothing else left behind */
  return 0;
}

/* Sends one request line; returns the reply object (owned by *parser). */
static JsonObject *ask(Fixture *f, uid_t uid, const char *line, JsonParser **parser) {
  g_autofree char *reply = vgpu_control_handle(f->sup, line, uid, uid == ROOT);
  assert_non_null(reply);
  assert_null(strchr(reply, '\n'));
  *parser = json_parser_new();
  assert_true(json_parser_load_from_data(*parser, reply, -1, NULL));
  JsonNode *root = json_parser_get_root(*parser);
  assert_true(JSON_NODE_HOLDS_OBJECT(root));
  return json_node_get_object(root);
}

static void expect_ok(Fixture *f, uid_t uid, const char *line) {
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, uid, line, &p);
  if (!json_object_get_boolean_member(o, "ok"))
    fail_msg("%s refused: %s", line, json_object_get_string_member(o, "error"));
}

static void expect_error(Fixture *f, uid_t uid, const char *line, const char *what) {
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, uid, line, &p);
  assert_false(json_object_get_boolean_member(o, "ok"));
  const char *err = json_object_get_string_member(o, "error");
  if (!strstr(err, what))
    fail_msg("%s: error \"%s\" does not say \"%s\"", line, err, what);
}

static uint64_t limit_of(Fixture *f, const char *name, const char *kind) {
  g_autofree char *line = g_strdup_printf("{\"command\":\"show\",\"name\":\"%s\"}", name);
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, NOBODY, line, &p);
  assert_true(json_object_get_boolean_member(o, "ok"));
  JsonObject *in = json_object_get_object_member(o, "instance");
  return (uint64_t)json_object_get_int_member(json_object_get_object_member(in, "limits"), kind);
}

static bool socket_exists(Fixture *f, const char *name) {
  g_autofree char *path = g_build_filename(f->run, name, "vtest.sock", NULL);
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

static void test_read_commands_for_anyone(void **state) {
  Fixture *f = *state;
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, NOBODY, "{\"command\":\"list\"}", &p);
  JsonArray *all = json_object_get_array_member(o, "instances");
  assert_int_equal(json_array_get_length(all), 1);
  JsonObject *in = json_array_get_object_element(all, 0);
  assert_string_equal(json_object_get_string_member(in, "name"), "vgpu0");
  assert_string_equal(json_object_get_string_member(in, "state"), "active");
  assert_int_equal(limit_of(f, "vgpu0", "vram"), 256u << 20);
  assert_int_equal(limit_of(f, "vgpu0", "clients"), 4);
  expect_ok(f, NOBODY, "{\"command\":\"profiles\"}");
  expect_ok(f, NOBODY, "{\"command\":\"status\"}");
  expect_error(f, NOBODY, "{\"command\":\"show\",\"name\":\"nope\"}", "no instance \"nope\"");
}

static void test_admin_commands_need_root(void **state) {
  Fixture *f = *state;
  const char *lines[] = {"{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"p\"}",
                         "{\"command\":\"destroy\",\"name\":\"vgpu0\"}",
                         "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{\"vram\":\"1M\"}}",
                         "{\"command\":\"reload\"}"};
  for (size_t i = 0; i < G_N_ELEMENTS(lines); i++)
    expect_error(f, NOBODY, lines[i], "permission denied");
  assert_false(socket_exists(f, "t1"));
  assert_true(socket_exists(f, "vgpu0"));
  assert_int_equal(limit_of(f, "vgpu0", "vram"), 256u << 20);
}

static void test_create_set_destroy(void **state) {
  Fixture *f = *state;
  expect_ok(f, ROOT, "{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"q\"}");
  assert_true(socket_exists(f, "t1"));
  assert_int_equal(limit_of(f, "t1", "vram"), 1u << 30);
  expect_error(f, ROOT, "{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"q\"}",
               "already exists");
  expect_error(f, ROOT, "{\"command\":\"create\",\"name\":\"../x\",\"profile\":\"q\"}",
               "invalid instance name");
  expect_error(f, ROOT, "{\"command\":\"create\",\"name\":\"t2\"}", "unknown profile");

  expect_ok(f, ROOT, "{\"command\":\"set\",\"name\":\"t1\",\"settings\":{\"vram\":\"2G\"}}");
  assert_int_equal(limit_of(f, "t1", "vram"), 2ull << 30);
  /* All settings or none: one bad key leaves vram as it was. */
  expect_error(
      f, ROOT,
      "{\"command\":\"set\",\"name\":\"t1\",\"settings\":{\"vram\":\"3G\",\"vrma\":\"1\"}}",
      "vrma");
  assert_int_equal(limit_of(f, "t1", "vram"), 2ull << 30);

  expect_ok(f, ROOT, "{\"command\":\"destroy\",\"name\":\"t1\"}");
  assert_false(socket_exists(f, "t1"));
  expect_error(f, ROOT, "{\"command\":\"destroy\",\"name\":\"t1\"}", "no instance");
}

static void test_malformed_requests(void **state) {
  Fixture *f = *state;
  expect_error(f, ROOT, "not json", "bad request");
  expect_error(f, ROOT, "[1,2]", "expected a JSON object");
  expect_error(f, ROOT, "{}", "missing \"command\"");
  expect_error(f, ROOT, "{\"command\":\"frobnicate\"}", "unknown command");
  expect_error(f, ROOT, "{\"command\":{}}", "\"command\" must be a string");
  expect_error(f, ROOT, "{\"command\":\"show\",\"name\":null}", "\"name\" must be a string");
  expect_error(f, ROOT, "{\"command\":\"destroy\",\"name\":\"vgpu0\",\"force\":1}",
               "\"force\" must be true or false");
  expect_error(f, ROOT, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":\"vram=1G\"}",
               "\"settings\" must be an object");
  expect_error(f, ROOT, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{}}", "non-empty");
  expect_error(f, ROOT, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{\"vram\":5}}",
               "must be a string");
  /* Unknown members are ignored. */
  expect_ok(f, NOBODY, "{\"command\":\"list\",\"extra\":[1]}");
  assert_true(socket_exists(f, "vgpu0"));
}

static void test_reload_that_cannot_add_an_instance(void **state) {
  Fixture *f = *state;
  /* A file where the new instance's directory would go. */
  g_autofree char *blocker = g_build_filename(f->run, "blocked", NULL);
  assert_true(g_file_set_contents(blocker, "", 0, NULL));
  g_autofree char *next =
      g_strconcat(CONFIG, "\n[instance vgpu1]\nprofile=q\n\n[instance blocked]\nprofile=p\n", NULL);
  assert_true(g_file_set_contents(f->conf, next, -1, NULL));
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, ROOT, "{\"command\":\"reload\"}", &p);
  assert_true(json_object_get_boolean_member(o, "ok"));
  const char *warning = json_object_get_string_member_with_default(o, "warning", NULL);
  assert_non_null(warning);
  assert_non_null(strstr(warning, "/run/blocked is not a directory"));
  assert_true(socket_exists(f, "vgpu1")); /* the rest applied */
  expect_error(f, NOBODY, "{\"command\":\"show\",\"name\":\"blocked\"}", "no instance");
  g_unlink(blocker);

  /* A broken file changes nothing. */
  assert_true(g_file_set_contents(f->conf, "[profile p]\nvram=12Q\n", -1, NULL));
  expect_error(f, ROOT, "{\"command\":\"reload\"}", "configuration unchanged");
  assert_true(socket_exists(f, "vgpu1"));
}

/* ---- the command table and the admin rule -------------------------------- */

static void test_command_table(void **state) {
  (void)state;
  size_t n;
  const VgpuControlCommand *t = vgpu_control_commands(&n);
  const char *admin[] = {"create", "destroy", "set", "reload", "reset", "dump-config", "attach-vm"};
  /* screenshot: anyone, of their own VMs only (admins: any VM);
   * session-end: anyone, of their own uid's sessions only. */
  const char *read[] = {"status", "list", "show", "profiles", "screenshot", "session-end"};
  assert_int_equal(n, G_N_ELEMENTS(admin) + G_N_ELEMENTS(read));
  for (size_t i = 0; i < G_N_ELEMENTS(admin); i++)
    assert_true(vgpu_control_command_find(admin[i])->admin);
  for (size_t i = 0; i < G_N_ELEMENTS(read); i++)
    assert_false(vgpu_control_command_find(read[i])->admin);
  for (size_t i = 0; i < n; i++)
    assert_ptr_equal(vgpu_control_command_find(t[i].name), &t[i]);
  assert_null(vgpu_control_command_find("frobnicate"));
  assert_null(vgpu_control_command_find(NULL));
}

static void test_admin_rule(void **state) {
  (void)state;
  const gid_t none = (gid_t)-1, wheel = 4242;
  const gid_t groups[] = {100, wheel};
  /* vgpud as root: root only, or the admin group; never a worker's uid. */
  assert_true(vgpu_control_is_admin(0, 0, NULL, 0, 0, none));
  assert_false(vgpu_control_is_admin(1000, 1000, NULL, 0, 0, none));
  assert_false(vgpu_control_is_admin(61000, 61000, NULL, 0, 0, none));
  assert_false(vgpu_control_is_admin(1000, 1000, groups, 1, 0, wheel));
  assert_true(vgpu_control_is_admin(1000, 1000, groups, 2, 0, wheel));
  assert_true(vgpu_control_is_admin(1000, wheel, NULL, 0, 0, wheel));
  assert_false(vgpu_control_is_admin(1000, 1000, groups, 2, 0, none));
  /* vgpud as a user: that user's own daemon; other users are not admins. */
  assert_true(vgpu_control_is_admin(1000, 1000, NULL, 0, 1000, none));
  assert_false(vgpu_control_is_admin(1001, 1001, NULL, 0, 1000, none));
  assert_true(vgpu_control_is_admin(0, 0, NULL, 0, 1000, none));
}

/* ---- on the sockets ------------------------------------------------------ */

typedef struct {
  ScratchDaemon *d;
  char *tmp, *worker, *ctl;
} Sock;

static gboolean tick(gpointer p) {
  (void)p;
  return G_SOURCE_CONTINUE;
}

static gboolean expire(gpointer p) {
  *(bool *)p = true;
  return G_SOURCE_REMOVE;
}

/* Runs the main loop (vgpud's side) until cond(data) holds or timeout_ms
 * pass; returns cond(data).  The 5 ms tick only lets conditions that the
 * loop does not see (a client socket, a child) be looked at again. */
static bool loop_until(bool (*cond)(void *), void *data, int timeout_ms) {
  bool expired = false;
  guint t = g_timeout_add((guint)timeout_ms, expire, &expired);
  guint k = g_timeout_add(5, tick, NULL);
  while (!cond(data) && !expired)
    g_main_context_iteration(NULL, TRUE);
  if (!expired)
    g_source_remove(t);
  g_source_remove(k);
  return cond(data);
}

static bool never(void *p) {
  (void)p;
  return false;
}

static int sock_setup(void **state) {
  Sock *s = g_new0(Sock, 1);
  s->tmp = g_dir_make_tmp("vgpu-ctl-XXXXXX", NULL);
  assert_non_null(s->tmp);
  chmod(s->tmp, 0755);
  /* A stand-in worker that holds its client until it is stopped. */
  s->worker = g_build_filename(s->tmp, "worker", NULL);
  assert_true(g_file_set_contents(s->worker, "#!/bin/sh\nexec sleep 60\n", -1, NULL));
  chmod(s->worker, 0755);
  g_autofree char *conf = g_strdup_printf("[daemon]\nlog-level=error\nworker=%s\n\n"
                                          "[profile p]\nvram=256M\nmax-clients=4\n\n"
                                          "[instance vgpu0]\nprofile=p\n",
                                          s->worker);
  s->d = scratch_daemon_start(conf);
  chmod(s->d->dir, 0755); /* other uids connect too */
  s->ctl = g_build_filename(s->d->run, "control.sock", NULL);
  alarm(120); /* a server that blocks ends the test */
  *state = s;
  return 0;
}

static int sock_teardown(void **state) {
  Sock *s = *state;
  alarm(0);
  assert_true(scratch_daemon_stop(s->d));
  g_unlink(s->worker);
  g_rmdir(s->tmp);
  g_free(s->worker);
  g_free(s->tmp);
  g_free(s->ctl);
  g_free(s);
  return 0;
}

static int connect_to(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    return -e;
  }
  return fd;
}

/* A client's view of its connection, read without blocking. */
typedef struct {
  int fd;
  GString *got;
  bool eof;
} Peer;

static void peer_read(Peer *p) {
  char buf[65536];
  while (!p->eof) {
    ssize_t n = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0)
      g_string_append_len(p->got, buf, n);
    else if (n == 0 || (errno != EAGAIN && errno != EINTR))
      p->eof = true;
    else
      break;
  }
}

static bool peer_has_line(void *data) {
  Peer *p = data;
  peer_read(p);
  return memchr(p->got->str, '\n', p->got->len) != NULL;
}

static bool peer_closed(void *data) {
  Peer *p = data;
  peer_read(p);
  return p->eof;
}

/* Runs one request on a fresh connection; returns the reply line. */
static char *request(Sock *s, const char *line, gint64 *took_us) {
  Peer p = {connect_to(s->ctl), g_string_new(NULL), false};
  assert_true(p.fd >= 0);
  gint64 t0 = g_get_monotonic_time();
  g_autofree char *l = g_strconcat(line, "\n", NULL);
  assert_int_equal(write(p.fd, l, strlen(l)), (ssize_t)strlen(l));
  assert_true(loop_until(peer_has_line, &p, 10000));
  if (took_us)
    *took_us = g_get_monotonic_time() - t0;
  close(p.fd);
  return g_string_free(p.got, FALSE);
}

static uint64_t status_u64(Sock *s, const char *key) {
  g_autofree char *r = request(s, "{\"command\":\"status\"}", NULL);
  g_autoptr(JsonParser) jp = json_parser_new();
  assert_true(json_parser_load_from_data(jp, r, -1, NULL));
  JsonObject *d =
      json_object_get_object_member(json_node_get_object(json_parser_get_root(jp)), "daemon");
  return (uint64_t)json_object_get_int_member(d, key);
}

/* A client that pipelines requests and never reads its replies: the
 * server keeps serving others, and closes that connection once its queue
 * is full. */
static void test_reader_that_never_reads(void **state) {
  Sock *s = *state;
  Peer greedy = {connect_to(s->ctl), g_string_new(NULL), false};
  assert_true(greedy.fd >= 0);
  vgpu_set_nonblock(greedy.fd, true);
  static const char req[] = "{\"command\":\"list\"}\n";
  int sent = 0;
  for (int i = 0; i < 10000; i++) {
    ssize_t n = send(greedy.fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
      g_main_context_iteration(NULL, FALSE); /* the server reads some */
      i--;
      if (!greedy.eof) {
        struct pollfd pfd = {greedy.fd, POLLOUT | POLLRDHUP, 0};
        if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
          break; /* closed by the server */
      }
      continue;
    }
    if (n < 0)
      break; /* closed by the server */
    assert_int_equal(n, sizeof(req) - 1);
    sent++;
    if (sent % 64 == 0)
      g_main_context_iteration(NULL, FALSE);
  }
  /* Another client is answered meanwhile. */
  gint64 took;
  g_autofree char *r = request(s, "{\"command\":\"list\"}", &took);
  assert_non_null(strstr(r, "\"ok\":true"));
  assert_true(took < G_USEC_PER_SEC);
  /* The greedy connection ends (its unread replies are dropped). */
  assert_true(loop_until(peer_closed, &greedy, 10000));
  print_message("never-reading client: %d requests sent before the close, %zu reply bytes left "
                "for it; another client's list took %.1f ms\n",
                sent, greedy.got->len, took / 1000.0);
  assert_true(greedy.got->len < 4u << 20);
  close(greedy.fd);
  g_string_free(greedy.got, TRUE);
}

/* Open control connections other than the one asking. */
static bool conns_are(void *data) {
  void **a = data;
  return status_u64(a[0], "control_connections") == GPOINTER_TO_UINT(a[1]) + 1;
}

/* A line over the limit ends its connection with an error; unfinished
 * lines cost at most the limit each. */
static void test_oversize_and_unfinished(void **state) {
  Sock *s = *state;
  Peer big = {connect_to(s->ctl), g_string_new(NULL), false};
  vgpu_set_nonblock(big.fd, true);
  char chunk[4096];
  memset(chunk, 'x', sizeof(chunk));
  size_t sent = 0;
  while (sent < 2 * VGPU_CONTROL_MAX_REQUEST) {
    ssize_t n = send(big.fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
    if (n > 0)
      sent += (size_t)n;
    else if (n < 0 && errno == EAGAIN)
      g_main_context_iteration(NULL, FALSE);
    else
      break;
  }
  assert_true(loop_until(peer_closed, &big, 10000));
  assert_non_null(strstr(big.got->str, "request longer than 16384 bytes"));
  close(big.fd);
  g_string_free(big.got, TRUE);

  /* 8 unfinished lines just under the limit (root has no connection cap;
   * the integration test measures 1000 of them as another user). */
  int fds[8];
  for (int i = 0; i < 8; i++) {
    fds[i] = connect_to(s->ctl);
    assert_true(fds[i] >= 0);
    for (size_t left = VGPU_CONTROL_MAX_REQUEST - 16; left > 0;) {
      ssize_t n = write(fds[i], chunk, MIN(left, sizeof(chunk)));
      assert_true(n > 0);
      left -= (size_t)n;
      g_main_context_iteration(NULL, FALSE);
    }
  }
  void *args[] = {s, GUINT_TO_POINTER(8)};
  assert_true(loop_until(conns_are, args, 10000)); /* still open: under the limit */
  for (int i = 0; i < 8; i++)
    close(fds[i]);
  void *none[] = {s, GUINT_TO_POINTER(0)};
  assert_true(loop_until(conns_are, none, 10000));
}

static void set_control_timeout(Sock *s, const char *value) {
  g_autofree char *conf = NULL;
  assert_true(g_file_get_contents(s->d->conf, &conf, NULL, NULL));
  g_autofree char *key = g_strdup_printf("[daemon]\ncontrol-timeout=%s\n", value);
  g_autoptr(GString) t = g_string_new(conf);
  g_string_replace(t, "[daemon]\n", key, 1);
  assert_true(g_file_set_contents(s->d->conf, t->str, -1, NULL));
  g_autofree char *r = vgpu_control_handle(s->d->sup, "{\"command\":\"reload\"}", 0, true);
  assert_non_null(strstr(r, "\"ok\":true"));
}

static void test_idle_timeout(void **state) {
  Sock *s = *state;
  set_control_timeout(s, "1");
  Peer idle = {connect_to(s->ctl), g_string_new(NULL), false};
  Peer half = {connect_to(s->ctl), g_string_new(NULL), false};
  assert_int_equal(write(half.fd, "{\"comm", 6), 6); /* never finished */
  gint64 t0 = g_get_monotonic_time();
  assert_true(loop_until(peer_closed, &idle, 10000));
  assert_true(loop_until(peer_closed, &half, 10000));
  gint64 took = g_get_monotonic_time() - t0;
  assert_true(took >= 900 * 1000 && took < 5 * G_USEC_PER_SEC);
  assert_int_equal(idle.got->len, 0);
  close(idle.fd);
  close(half.fd);
  g_string_free(idle.got, TRUE);
  g_string_free(half.got, TRUE);
}

/* Runs fn in a child as uid 65534; returns its exit status once it has
 * ended, the parent's main loop serving meanwhile. */
typedef struct {
  pid_t pid;
  int status;
  bool done;
} Child;

static bool child_done(void *data) {
  Child *c = data;
  if (!c->done && waitpid(c->pid, &c->status, WNOHANG) == c->pid)
    c->done = true;
  return c->done;
}

static int as_nobody(Sock *s, int (*fn)(Sock *s)) {
  Child c = {fork(), 0, false};
  assert_true(c.pid >= 0);
  if (c.pid == 0) {
    if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
      _exit(99);
    _exit(fn(s));
  }
  assert_true(loop_until(child_done, &c, 60000));
  assert_true(WIFEXITED(c.status));
  return WEXITSTATUS(c.status);
}

/* Opens 12 connections, holding them; returns how many were refused. */
static int open_twelve(Sock *s) {
  int refused = 0, fds[12];
  for (int i = 0; i < 12; i++) {
    fds[i] = connect_to(s->ctl);
    if (fds[i] < 0)
      return 100;
    struct pollfd pfd = {fds[i], POLLIN, 0};
    char buf[512] = "";
    /* A refusal is an error line and the end, at once; an accepted
     * connection stays silent. */
    if (poll(&pfd, 1, 300) == 1 && recv(fds[i], buf, sizeof(buf) - 1, 0) > 0 &&
        strstr(buf, "too many control connections"))
      refused++;
  }
  return refused;
}

static bool nothing(void *p) {
  (void)p;
  return false;
}

static void test_connection_caps(void **state) {
  Sock *s = *state;
  if (getuid() != 0)
    skip();
  /* Default: 8 per uid. */
  assert_int_equal(as_nobody(s, open_twelve), 4);
  /* Root is never refused, and the nobody connections are gone. */
  void *none[] = {s, GUINT_TO_POINTER(0)};
  assert_true(loop_until(conns_are, none, 10000));
  (void)nothing;
}

/* ---- fds run out ---------------------------------------------------------- */

static int hold_fifty(Sock *s) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  int n = 0;
  for (int i = 0; i < 50; i++)
    n += connect_to(s->ctl) >= 0;
  /* Let the parent see them all, then hold them for a while. */
  char c;
  return n == 50 && read(3, &c, 1) == 1 ? 0 : 1;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static bool has_tenant(void *data) {
  Sock *s = data;
  VgpuInstance *in = vgpu_supervisor_find(s->d->sup, "vgpu0");
  return vgpu_instance_n_tenants(in) == 1;
}

static void test_fds_run_out(void **state) {
  Sock *s = *state;
  int go[2];
  assert_int_equal(pipe(go), 0);
  struct rlimit saved;
  getrlimit(RLIMIT_NOFILE, &saved);
  int used = vgpu_count_fds();
  struct rlimit low = {(rlim_t)used + 8, saved.rlim_max};
  guint64 shed0 = vgpu_listener_shed_total();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(go[0], 3);
    _exit(hold_fifty(s));
  }
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  /* The flood: serve it, then a second with it all held; the loop must
   * sleep, not spin. */
  loop_until(never, NULL, 1500);
  double c0 = cpu_s();
  gint64 t0 = g_get_monotonic_time();
  loop_until(never, NULL, 1000);
  double cpu = cpu_s() - c0, wall = (double)(g_get_monotonic_time() - t0) / 1e6;
  guint64 shed = vgpu_listener_shed_total() - shed0;
  print_message("fds run out: %" G_GUINT64_FORMAT " connections shed; %.2f s CPU in %.2f s with "
                "the flood held\n",
                shed, cpu, wall);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
  assert_true(shed > 0);
  assert_true(cpu < 0.3 * wall);
  assert_int_equal(write(go[1], "x", 1), 1);
  Child c = {pid, 0, false};
  assert_true(loop_until(child_done, &c, 20000));
  assert_true(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0);
  close(go[0]);
  close(go[1]);
  /* Afterwards instances accept again. */
  g_autofree char *vt = g_build_filename(s->d->run, "vgpu0", "vtest.sock", NULL);
  int fd = connect_to(vt);
  assert_true(fd >= 0);
  assert_true(loop_until(has_tenant, s, 10000));
  close(fd);
}

/* ---- tenants: the per-uid limit and who sees them ------------------------- */

static bool tenants_are(void *data) {
  void **a = data;
  VgpuInstance *in = vgpu_supervisor_find(((Sock *)a[0])->d->sup, "vgpu0");
  return vgpu_instance_n_tenants(in) == GPOINTER_TO_UINT(a[1]);
}

static void test_tenants_per_uid(void **state) {
  Sock *s = *state;
  g_autofree char *vt = g_build_filename(s->d->run, "vgpu0", "vtest.sock", NULL);
  /* max-clients=4: 2 per uid by default; the third is refused before a
   * worker starts, and counted. */
  Peer c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = (Peer){connect_to(vt), g_string_new(NULL), false};
    assert_true(c[i].fd >= 0);
  }
  void *two[] = {s, GUINT_TO_POINTER(2)};
  assert_true(loop_until(peer_closed, &c[2], 10000));
  assert_true(loop_until(tenants_are, two, 10000));
  g_autoptr(JsonParser) p = NULL;
  Fixture f = *s->d;
  JsonObject *o = ask(&f, NOBODY, "{\"command\":\"show\",\"name\":\"vgpu0\"}", &p);
  JsonObject *in = json_object_get_object_member(o, "instance");
  assert_int_equal(
      json_object_get_int_member(json_object_get_object_member(in, "limits"), "clients_per_uid"),
      2);
  assert_int_equal(
      json_object_get_int_member(json_object_get_object_member(in, "usage"), "refusals"), 1);
  assert_int_equal(
      json_object_get_int_member(json_object_get_object_member(in, "usage"), "clients"), 2);
  /* Another uid sees the count, not the tenants. */
  assert_int_equal(json_array_get_length(json_object_get_array_member(in, "tenants")), 0);
  assert_int_equal(json_object_get_int_member(in, "tenants_hidden"), 2);
  g_autofree char *text =
      vgpu_control_handle(s->d->sup, "{\"command\":\"show\",\"name\":\"vgpu0\"}", NOBODY, false);
  assert_null(strstr(text, "client_pid"));
  assert_null(strstr(text, "worker_pid"));
  /* The tenants' own uid (not an admin here) and an admin see them. */
  g_autofree char *own =
      vgpu_control_handle(s->d->sup, "{\"command\":\"show\",\"name\":\"vgpu0\"}", getuid(), false);
  assert_non_null(strstr(own, "\"client_pid\""));
  assert_non_null(strstr(own, "\"tenants_hidden\":0"));
  g_autofree char *adm =
      vgpu_control_handle(s->d->sup, "{\"command\":\"show\",\"name\":\"vgpu0\"}", 4321, true);
  assert_non_null(strstr(adm, "\"client_pid\""));
  /* An explicit per-uid limit. */
  expect_ok(
      &f, ROOT,
      "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{\"max-clients-per-uid\":\"3\"}}");
  Peer d = {connect_to(vt), g_string_new(NULL), false};
  void *three[] = {s, GUINT_TO_POINTER(3)};
  assert_true(loop_until(tenants_are, three, 10000));
  for (int i = 0; i < 3; i++) {
    close(c[i].fd);
    g_string_free(c[i].got, TRUE);
  }
  close(d.fd);
  g_string_free(d.got, TRUE);
}

/* ---- the log's rate limit -------------------------------------------------- */

static void test_log_rate_limit(void **state) {
  (void)state;
  VgpuLogSite site = {0};
  gint64 t = 1000000;
  unsigned suppressed = 0, reported = 0;
  int written = 0;
  /* 10,000 lines within one second: the burst and a second's refill;
   * each line written reports how many were left out before it. */
  for (int i = 0; i < 10000; i++) {
    if (vgpu_log_site_admit(&site, t + i * 100, &suppressed)) {
      written++;
      reported += suppressed;
    }
  }
  assert_true(written >= VGPU_LOG_BURST && written <= VGPU_LOG_BURST + VGPU_LOG_RATE + 1);
  /* Later, the next line carries the count of the rest. */
  assert_true(vgpu_log_site_admit(&site, t + 10 * G_USEC_PER_SEC, &suppressed));
  assert_int_equal(reported + suppressed, 10000 - written);
  /* And lines at the sustained rate all pass. */
  int passed = 0;
  for (int i = 0; i < 1000; i++)
    passed += vgpu_log_site_admit(
        &site, t + 20 * G_USEC_PER_SEC + i * (G_USEC_PER_SEC / VGPU_LOG_RATE), NULL);
  assert_int_equal(passed, 1000);
}

int main(void) {
  vgpu_log_init("test-daemon-control", VGPU_LOG_ERROR);
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_read_commands_for_anyone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_admin_commands_need_root, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_set_destroy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reload_that_cannot_add_an_instance, setup, teardown),
      cmocka_unit_test(test_command_table),
      cmocka_unit_test(test_admin_rule),
      cmocka_unit_test_setup_teardown(test_reader_that_never_reads, sock_setup, sock_teardown),
      cmocka_unit_test_setup_teardown(test_oversize_and_unfinished, sock_setup, sock_teardown),
      cmocka_unit_test_setup_teardown(test_idle_timeout, sock_setup, sock_teardown),
      cmocka_unit_test_setup_teardown(test_connection_caps, sock_setup, sock_teardown),
      cmocka_unit_test_setup_teardown(test_fds_run_out, sock_setup, sock_teardown),
      cmocka_unit_test_setup_teardown(test_tenants_per_uid, sock_setup, sock_teardown),
      cmocka_unit_test(test_log_rate_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
