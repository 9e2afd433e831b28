/* The worker sandbox, applied in a child process: what it must refuse, and
 * what rendering still needs. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "vgpu-config.h"
#include "worker/sandbox.h"

static void *thread_main(void *arg) {
  return arg;
}

/* Runs in the child: returns 0, or the number of the first check that
 * failed, as the exit status. */
static int sandboxed_checks(void) {
  bool filtered = false;
  if (!vgpu_sandbox_apply(&filtered, NULL))
    return 1;
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
    return 2;
#if HAVE_SECCOMP
  if (!filtered)
    return 3;
  /* Refused: starting programs, namespaces, mounts, network sockets. */
  /* Were exec allowed, the child would exit 99: the test fails either way. */
  char *const argv[] = {"/bin/sh", "-c", "exit 99", NULL};
  if (execve(argv[0], argv, NULL) != -1 || errno != EPERM)
    return 4;
  if (unshare(CLONE_NEWNS) != -1 || errno != EPERM)
    return 5;
  if (socket(AF_INET, SOCK_STREAM, 0) != -1 || errno != EAFNOSUPPORT)
    return 6;
  if (setuid(0) != -1 || errno != EPERM)
    return 7;
#endif
  /* Still allowed: what Mesa and virglrenderer use. */
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
    return 10;
  void *p =
      mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) /* llvmpipe's JIT maps executable memory */
    return 11;
  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, NULL) != 0 || pthread_join(t, NULL) != 0)
    return 12;
  int fd = memfd_create("sandbox-test", MFD_CLOEXEC);
  if (fd < 0)
    return 13;
  pid_t pid = fork(); /* plain forks stay possible (no namespace flags) */
  if (pid == 0)
    _exit(0);
  int st;
  if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
    return 14;
  return 0;
}

static void test_sandbox_refuses_and_allows(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(sandboxed_checks());
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) != 0)
    fail_msg("sandboxed check %d failed", WEXITSTATUS(st));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sandbox_refuses_and_allows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
