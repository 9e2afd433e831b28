/* util: fd helpers over real sockets, the log line format, the
 * runtime-directory checks against hostile files, and the bounded reader
 * of small files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/fd.h"
#include "util/log.h"
#include "util/runtime_dir.h"
#include "util/small_file.h"

static void test_write_read_large(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  size_t n = 4u << 20;
  uint8_t *out = g_malloc(n), *in = g_malloc(n);
  for (size_t i = 0; i < n; i++)
    out[i] = (uint8_t)(i * 7);
  fflush(NULL); /* the child must not repeat buffered output */
  pid_t pid = fork();
  if (pid == 0)
    _exit(vgpu_write_all(sv[0], out, n) == 0 ? 0 : 1);
  close(sv[0]);
  assert_int_equal(vgpu_read_all(sv[1], in, n), 0);
  assert_memory_equal(in, out, n);
  int st;
  waitpid(pid, &st, 0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_int_equal(vgpu_read_all(sv[1], in, 1), -EPIPE);
  close(sv[1]);
  g_free(out);
  g_free(in);
}

static void test_fd_passing(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  int before = vgpu_count_fds();
  int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_int_equal(vgpu_send_fd(sv[0], f), 0);
  int got = -1;
  assert_int_equal(vgpu_recv_fds(sv[1], &got, 1), 1);
  assert_true(got >= 0 && got != f);
  close(got);
  /* Four fds offered, room for one: the extra ones are closed, not leaked. */
  int four[4] = {f, f, f, f};
  char byte = 0;
  struct iovec iov = {&byte, 1};
  char ctl[CMSG_SPACE(sizeof(four))];
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                     .msg_controllen = sizeof(ctl)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(four));
  memcpy(CMSG_DATA(c), four, sizeof(four));
  assert_int_equal(sendmsg(sv[0], &m, 0), 1);
  assert_int_equal(vgpu_recv_fds(sv[1], &got, 1), 1);
  close(got);
  close(f);
  assert_int_equal(vgpu_count_fds(), before);
  pid_t pid;
  uid_t uid;
  assert_int_equal(vgpu_peer_cred(sv[1], &pid, &uid, NULL), 0);
  assert_int_equal(pid, getpid());
  assert_int_equal(uid, getuid());
  close(sv[0]);
  close(sv[1]);
}

/* Sends len bytes with n copies of fd in one SCM_RIGHTS message. */
static void send_with_fds(int sock, const void *data, size_t len, int fd, size_t n) {
  int fds[32];
  assert_true(n <= G_N_ELEMENTS(fds));
  for (size_t i = 0; i < n; i++)
    fds[i] = fd;
  struct iovec iov = {(void *)data, len};
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE(sizeof(fds))];
  } ctl;
  memset(&ctl, 0, sizeof(ctl));
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (n > 0) {
    m.msg_control = ctl.b;
    m.msg_controllen = CMSG_SPACE(n * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
  }
  assert_int_equal(sendmsg(sock, &m, 0), (ssize_t)len);
}

static void test_recvmsg_fds(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  int before = vgpu_count_fds();
  int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
  char buf[16];
  int got[2] = {-1, -1};
  size_t n_got = 99;
  /* Nothing queued: -EAGAIN, no fds. */
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, sizeof(buf), MSG_DONTWAIT, got, 2, &n_got),
                   -EAGAIN);
  assert_int_equal(n_got, 0);
  /* No fd with the data. */
  send_with_fds(sv[0], "abc", 3, -1, 0);
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, sizeof(buf), 0, got, 2, &n_got), 3);
  assert_int_equal(n_got, 0);
  assert_memory_equal(buf, "abc", 3);
  /* Three fds, room for two: two kept, close-on-exec, the third closed. */
  send_with_fds(sv[0], "hello", 5, f, 3);
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, sizeof(buf), 0, got, 2, &n_got), 5);
  assert_int_equal(n_got, 2);
  assert_int_equal(vgpu_count_fds(), before + 3);
  for (int i = 0; i < 2; i++) {
    assert_true(got[i] >= 0 && got[i] != f);
    assert_true(fcntl(got[i], F_GETFD) & FD_CLOEXEC);
    close(got[i]);
  }
  /* No room at all (and no array): every fd closed, the data still read. */
  send_with_fds(sv[0], "xy", 2, f, 4);
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, sizeof(buf), 0, NULL, 0, &n_got), 2);
  assert_int_equal(n_got, 0);
  assert_int_equal(vgpu_count_fds(), before + 1);
  /* More fds than the control buffer holds: the message is refused and
   * every fd that arrived is closed. */
  send_with_fds(sv[0], "big", 3, f, VGPU_RECV_FDS_MAX + 4);
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, sizeof(buf), 0, got, 2, &n_got), -EMSGSIZE);
  assert_int_equal(n_got, 0);
  assert_int_equal(vgpu_count_fds(), before + 1);
  /* flags pass through: MSG_TRUNC gives the whole record's length. */
  send_with_fds(sv[0], "0123456789", 10, f, 1);
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, 4, MSG_TRUNC, got, 1, &n_got), 10);
  assert_int_equal(n_got, 1);
  close(got[0]);
  /* End of file: 0. */
  close(sv[0]);
  assert_int_equal(vgpu_recvmsg_fds(sv[1], buf, sizeof(buf), 0, got, 2, &n_got), 0);
  assert_int_equal(n_got, 0);
  close(f);
  close(sv[1]);
  assert_int_equal(vgpu_count_fds(), before - 2);
}

static void test_autofd(void **state) {
  int before = vgpu_count_fds();
  {
    vgpu_autofd int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(f >= 0);
    assert_int_equal(vgpu_count_fds(), before + 1);
  }
  assert_int_equal(vgpu_count_fds(), before);
  int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int copy = f;
  assert_int_equal(vgpu_steal_fd(&f), copy);
  assert_int_equal(f, -1);
  close(copy);
}

static void test_log_lines(void **state) {
  VgpuLogLevel l;
  assert_true(vgpu_log_level_parse("WARNING", &l) && l == VGPU_LOG_WARN);
  assert_true(vgpu_log_level_parse("debug", &l) && l == VGPU_LOG_DEBUG);
  assert_false(vgpu_log_level_parse("loud", &l));
  assert_string_equal(vgpu_log_level_name(VGPU_LOG_ERROR), "error");

  int p[2];
  assert_int_equal(pipe(p), 0);
  int saved = dup(STDERR_FILENO);
  dup2(p[1], STDERR_FILENO);
  vgpu_log_init("test", VGPU_LOG_INFO);
  vgpu_log_set_tag("vgpu0 client 42");
  vgpu_warn("refused: %s", "limit");
  vgpu_debug("hidden at info");
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(p[1]);
  char buf[512] = "";
  ssize_t n = read(p[0], buf, sizeof(buf) - 1);
  assert_true(n > 0);
  buf[n] = 0;
  assert_non_null(strstr(buf, "test["));
  assert_non_null(strstr(buf, "warning vgpu0 client 42: refused: limit\n"));
  assert_null(strstr(buf, "hidden"));
  close(p[0]);
  close(saved);
}

static char *scratch_dir(void) {
  char *d = g_strdup("/tmp/vgpu-test-util-XXXXXX");
  assert_non_null(g_mkdtemp(d));
  return d;
}

static void rm_rf(const char *d) {
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", d);
  assert_int_equal(system(cmd), 0);
}

static char *read_text(const char *path) {
  char *t = NULL;
  g_file_get_contents(path, &t, NULL, NULL);
  return t;
}

/* The socket file is born with the requested mode whatever the umask, and
 * nothing but a stale socket is ever removed to make room for it. */
static void test_listen_unix_files(void **state) {
  g_autofree char *d = scratch_dir();
  g_autofree char *sock = g_build_filename(d, "s", NULL);
  g_autofree char *victim = g_build_filename(d, "victim", NULL);
  assert_true(g_file_set_contents(victim, "keep", -1, NULL));
  mode_t old = umask(077);
  int fd = vgpu_listen_unix(sock, 0666, 4);
  umask(old);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(lstat(sock, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0666);
  assert_int_equal(umask(old), old); /* the umask is restored */
  /* A stale socket is replaced, with the new mode. */
  close(fd);
  fd = vgpu_listen_unix(sock, 0600, 4);
  assert_true(fd >= 0);
  assert_int_equal(lstat(sock, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
  close(fd);
  /* A symbolic link or a regular file there is refused and left alone. */
  assert_int_equal(unlink(sock), 0);
  assert_int_equal(symlink(victim, sock), 0);
  assert_int_equal(vgpu_listen_unix(sock, 0666, 4), -EEXIST);
  assert_int_equal(lstat(sock, &st), 0);
  assert_true(S_ISLNK(st.st_mode));
  assert_int_equal(lstat(victim, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0644 & ~old);
  g_autofree char *t = read_text(victim);
  assert_string_equal(t, "keep");
  assert_int_equal(vgpu_listen_unix(victim, 0666, 4), -EEXIST);
  assert_int_equal(vgpu_listen_unix(sock, 01777, 4), -EINVAL);
  rm_rf(d);
}

static void test_private_dir(void **state) {
  g_autofree char *d = scratch_dir();
  /* Made with parents, and reported as made; found again as it is. */
  g_autofree char *rd = g_build_filename(d, "a", "b", NULL);
  bool created = false;
  int fd = vgpu_private_dir_open(rd, 0755, &created, NULL);
  assert_true(fd >= 0 && created);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_true(S_ISDIR(st.st_mode) && st.st_uid == geteuid());
  close(fd);
  fd = vgpu_private_dir_open(rd, 0755, &created, NULL);
  assert_true(fd >= 0 && !created);
  close(fd);

  /* Writable by others: refused, naming the path, owner and mode. */
  g_autoptr(GError) e = NULL;
  assert_int_equal(chmod(rd, 0777), 0);
  assert_int_equal(vgpu_private_dir_open(rd, 0755, NULL, &e), -1);
  g_autofree char *want =
      g_strdup_printf("%s is owned by uid %u with mode 0777", rd, (unsigned)geteuid());
  assert_non_null(strstr(e->message, want));
  g_clear_error(&e);
  /* A parent others may write, without the sticky bit. */
  assert_int_equal(chmod(rd, 0755), 0);
  g_autofree char *pa = g_build_filename(d, "a", NULL);
  assert_int_equal(chmod(pa, 0777), 0);
  assert_int_equal(vgpu_private_dir_open(rd, 0755, NULL, &e), -1);
  assert_non_null(strstr(e->message, "a parent of"));
  g_clear_error(&e);
  assert_int_equal(chmod(pa, 01777), 0); /* sticky, like /tmp: fine */
  fd = vgpu_private_dir_open(rd, 0755, NULL, &e);
  assert_true(fd >= 0);
  close(fd);

  /* A symbolic link, last or on the way, is never followed. */
  g_autofree char *link = g_build_filename(d, "link", NULL);
  assert_int_equal(symlink(pa, link), 0);
  assert_int_equal(vgpu_private_dir_open(link, 0755, NULL, &e), -1);
  assert_non_null(strstr(e->message, "is a symbolic link"));
  g_clear_error(&e);
  g_autofree char *through = g_build_filename(link, "b", NULL);
  assert_int_equal(vgpu_private_dir_open(through, 0755, NULL, &e), -1);
  assert_non_null(strstr(e->message, "is a symbolic link"));
  g_clear_error(&e);
  g_autofree char *dots = g_build_filename(d, "a", "..", "a", NULL);
  assert_int_equal(vgpu_private_dir_open(dots, 0755, NULL, &e), -1);
  g_clear_error(&e);
  assert_int_equal(vgpu_private_dir_open("relative", 0755, NULL, &e), -1);
  g_clear_error(&e);

  /* Another user's directory (as root, one can be made). */
  if (geteuid() == 0) {
    assert_int_equal(chown(rd, 65534, 65534), 0);
    assert_int_equal(vgpu_private_dir_open(rd, 0755, NULL, &e), -1);
    assert_non_null(strstr(e->message, "owned by uid 65534 with mode 0755"));
    g_clear_error(&e);
  } else {
    print_message("not root: the foreign-owner case is covered by the files integration test\n");
  }
  rm_rf(d);
}

static void test_private_file(void **state) {
  g_autofree char *d = scratch_dir();
  g_autofree char *victim = g_build_filename(d, "victim", NULL);
  assert_true(g_file_set_contents(victim, "keep", -1, NULL));
  int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(dfd >= 0);
  g_autoptr(GError) e = NULL;
  /* Created, then opened again. */
  int fd = vgpu_private_file_open(dfd, "f", "D/f", O_RDWR, 0640, &e);
  assert_true(fd >= 0);
  assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  close(fd);
  fd = vgpu_private_file_open(dfd, "f", "D/f", O_WRONLY | O_APPEND, 0640, &e);
  assert_true(fd >= 0);
  close(fd);
  /* A symbolic link, a second name of another file, a FIFO: refused
   * (the FIFO without hanging), the victim untouched. */
  assert_int_equal(symlinkat(victim, dfd, "sym"), 0);
  assert_int_equal(vgpu_private_file_open(dfd, "sym", "D/sym", O_RDWR, 0644, &e), -1);
  assert_non_null(strstr(e->message, "D/sym is a symbolic link"));
  g_clear_error(&e);
  assert_int_equal(linkat(AT_FDCWD, victim, dfd, "hard", 0), 0);
  assert_int_equal(vgpu_private_file_open(dfd, "hard", "D/hard", O_RDWR, 0644, &e), -1);
  assert_non_null(strstr(e->message, "hard links"));
  g_clear_error(&e);
  assert_int_equal(mkfifoat(dfd, "fifo", 0600), 0);
  assert_int_equal(vgpu_private_file_open(dfd, "fifo", "D/fifo", O_WRONLY, 0644, &e), -1);
  g_clear_error(&e);
  g_autofree char *t = read_text(victim);
  assert_string_equal(t, "keep");
  close(dfd);
  rm_rf(d);
}

/* vgpu_remove_tree_at: a tree with files, directories and links to
 * things outside it goes, the outside stays; keep_top keeps the
 * directory itself; a missing one is success; a directory nested deeper
 * than it enters is left, with ELOOP. */
static void test_remove_tree(void **state) {
  g_autofree char *d = scratch_dir();
  g_autofree char *outside = g_build_filename(d, "outside", NULL);
  g_autofree char *victim = g_build_filename(outside, "victim", NULL);
  assert_int_equal(mkdir(outside, 0700), 0);
  assert_true(g_file_set_contents(victim, "keep", -1, NULL));
  int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(dfd >= 0);
  assert_int_equal(mkdirat(dfd, "t", 0700), 0);
  assert_int_equal(mkdirat(dfd, "t/a", 0700), 0);
  assert_int_equal(mkdirat(dfd, "t/a/b", 0700), 0);
  g_autofree char *f1 = g_build_filename(d, "t/a/b/f", NULL);
  g_autofree char *f2 = g_build_filename(d, "t/g", NULL);
  assert_true(g_file_set_contents(f1, "x", -1, NULL));
  assert_true(g_file_set_contents(f2, "y", -1, NULL));
  assert_int_equal(symlinkat(outside, dfd, "t/dirlink"), 0);
  assert_int_equal(symlinkat(victim, dfd, "t/a/filelink"), 0);
  assert_int_equal(vgpu_remove_tree_at(dfd, "t", true), 0);
  struct stat st;
  assert_int_equal(fstatat(dfd, "t", &st, AT_SYMLINK_NOFOLLOW), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_nlink, 2); /* nothing left below it */
  assert_int_equal(fstatat(dfd, "t/g", &st, 0), -1);
  g_autofree char *t = read_text(victim);
  assert_string_equal(t, "keep");
  assert_int_equal(vgpu_remove_tree_at(dfd, "t", false), 0);
  assert_int_equal(fstatat(dfd, "t", &st, AT_SYMLINK_NOFOLLOW), -1);
  assert_int_equal(vgpu_remove_tree_at(dfd, "t", false), 0); /* already gone */
  /* The top itself a link: not entered, refused. */
  assert_int_equal(symlinkat(outside, dfd, "top"), 0);
  assert_int_equal(vgpu_remove_tree_at(dfd, "top", false), -ENOTDIR);
  assert_int_equal(unlinkat(dfd, "top", 0), 0);
  /* 20 levels: the deepest are left alone, and said so. */
  g_autoptr(GString) deep = g_string_new("deep");
  assert_int_equal(mkdirat(dfd, deep->str, 0700), 0);
  for (int i = 0; i < 20; i++) {
    g_string_append(deep, "/x");
    assert_int_equal(mkdirat(dfd, deep->str, 0700), 0);
  }
  assert_int_equal(vgpu_remove_tree_at(dfd, "deep", false), -ELOOP);
  assert_int_equal(fstatat(dfd, "deep", &st, AT_SYMLINK_NOFOLLOW), 0);
  g_autofree char *t2 = read_text(victim);
  assert_string_equal(t2, "keep");
  close(dfd);
  rm_rf(d);
}

static void test_runtime_dir_names(void **state) {
  assert_true(vgpu_instance_name_valid("vgpu0"));
  assert_true(vgpu_instance_name_valid("a-b_C9"));
  assert_false(vgpu_instance_name_valid(""));
  assert_false(vgpu_instance_name_valid(NULL));
  assert_false(vgpu_instance_name_valid(".."));
  assert_false(vgpu_instance_name_valid("a/b"));
  assert_true(vgpu_instance_name_valid("abcdefghijklmnopqrstuvwxyz01234"));   /* 31 */
  assert_false(vgpu_instance_name_valid("abcdefghijklmnopqrstuvwxyz012345")); /* 32 */
  g_setenv("VGPU_RUNTIME_DIR", "/somewhere/else", TRUE);
  g_autofree char *a = vgpu_default_runtime_dir();
  assert_string_equal(a, "/somewhere/else");
  g_unsetenv("VGPU_RUNTIME_DIR");
  g_autofree char *b = vgpu_default_runtime_dir();
  g_autofree char *c = vgpu_builtin_runtime_dir();
  assert_string_equal(b, c);
  if (geteuid() == 0)
    assert_string_equal(c, "/run/vgpu");
}

/* A bound AF_UNIX socket at dir/control.sock (nobody needs to listen:
 * clients look for the socket file). */
static void make_control_socket(const char *dir) {
  g_autofree char *path = g_build_filename(dir, "control.sock", NULL);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  assert_true(strlen(path) < sizeof(a.sun_path));
  memcpy(a.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  close(fd);
}

/* A client goes to $VGPU_RUNTIME_DIR, else its own vgpud's directory, else
 * the system vgpud's, else its own (so that errors name it). */
static void test_client_runtime_dir(void **state) {
  (void)state;
  g_autofree char *tmp = g_dir_make_tmp("vgpu-client-XXXXXX", NULL);
  assert_non_null(tmp);
  g_autofree char *own = g_build_filename(tmp, "own", NULL);
  g_autofree char *sys = g_build_filename(tmp, "system", NULL);
  assert_int_equal(mkdir(own, 0700), 0);
  assert_int_equal(mkdir(sys, 0755), 0);
  g_autofree char *a = vgpu_client_runtime_dir_pick(NULL, own, sys);
  assert_string_equal(a, own); /* neither has a vgpud */
  make_control_socket(sys);
  g_autofree char *b = vgpu_client_runtime_dir_pick(NULL, own, sys);
  assert_string_equal(b, sys); /* only the system one */
  g_autofree char *c = vgpu_client_runtime_dir_pick("", own, sys);
  assert_string_equal(c, sys); /* an empty variable is no setting */
  g_autofree char *d = vgpu_client_runtime_dir_pick("/x/y", own, sys);
  assert_string_equal(d, "/x/y"); /* the variable always wins */
  /* A regular file named control.sock is no vgpud. */
  g_autofree char *fake = g_build_filename(own, "control.sock", NULL);
  assert_true(g_file_set_contents(fake, "", 0, NULL));
  g_autofree char *e = vgpu_client_runtime_dir_pick(NULL, own, sys);
  assert_string_equal(e, sys);
  assert_int_equal(unlink(fake), 0);
  make_control_socket(own);
  g_autofree char *f = vgpu_client_runtime_dir_pick(NULL, own, sys);
  assert_string_equal(f, own); /* the user's own vgpud first */
  g_autofree char *p1 = g_build_filename(own, "control.sock", NULL);
  g_autofree char *p2 = g_build_filename(sys, "control.sock", NULL);
  unlink(p1);
  unlink(p2);
  rmdir(own);
  rmdir(sys);
  rmdir(tmp);
}

/* The whole file up to its ceiling, from dir/name or from a path alone;
 * one byte over the ceiling is refused whole, never cut. */
static void test_read_small(void **state) {
  (void)state;
  g_autofree char *tmp = g_dir_make_tmp("vgpu-small-XXXXXX", NULL);
  assert_non_null(tmp);
  g_autofree char *path = g_build_filename(tmp, "f", NULL);
  /* Larger than the first buffer, so the reader has to grow it. */
  size_t n = 10000;
  g_autofree char *want = g_malloc(n);
  for (size_t i = 0; i < n; i++)
    want[i] = (char)('a' + i % 26);
  assert_true(g_file_set_contents(path, want, (gssize)n, NULL));

  g_autofree char *a = vgpu_read_small(tmp, "f", n);
  assert_non_null(a);
  assert_memory_equal(a, want, n);
  assert_int_equal(a[n], '\0');
  g_autofree char *b = vgpu_read_small(NULL, path, n + 1);
  assert_non_null(b);
  assert_memory_equal(b, want, n);
  assert_int_equal(strlen(b), n);

  errno = 0;
  assert_null(vgpu_read_small(tmp, "f", n - 1));
  assert_int_equal(errno, EFBIG);
  errno = 0;
  assert_null(vgpu_read_small(NULL, path, 0));
  assert_int_equal(errno, EFBIG);
  errno = 0;
  assert_null(vgpu_read_small(tmp, "missing", 100));
  assert_int_equal(errno, ENOENT);

  /* An empty file is an empty string, not a failure. */
  assert_true(g_file_set_contents(path, "", 0, NULL));
  g_autofree char *c = vgpu_read_small(tmp, "f", 0);
  assert_non_null(c);
  assert_string_equal(c, "");

  /* procfs gives no size in stat(): the text is read to its end. */
  g_autofree char *st = vgpu_read_small("/proc/self", "status", VGPU_SMALL_FILE_MAX);
  assert_non_null(st);
  assert_true(g_str_has_prefix(st, "Name:\t"));
  assert_non_null(strstr(st, "\nUid:\t"));

  unlink(path);
  rmdir(tmp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_read_large),  cmocka_unit_test(test_fd_passing),
      cmocka_unit_test(test_recvmsg_fds),       cmocka_unit_test(test_autofd),
      cmocka_unit_test(test_log_lines),         cmocka_unit_test(test_listen_unix_files),
      cmocka_unit_test(test_private_dir),       cmocka_unit_test(test_private_file),
      cmocka_unit_test(test_runtime_dir_names), cmocka_unit_test(test_client_runtime_dir),
      cmocka_unit_test(test_read_small),        cmocka_unit_test(test_remove_tree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
