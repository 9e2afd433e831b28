/* util: fd helpers over real sockets and the log line format. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/fd.h"
#include "util/log.h"

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_write_read_large),
      cmocka_unit_test(test_fd_passing),
      cmocka_unit_test(test_autofd),
      cmocka_unit_test(test_log_lines),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
