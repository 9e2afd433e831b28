/* The worker sandbox, applied in child processes exactly as a worker gets
 * it: vgpud's privilege drop (when the test runs as root: a worker uid, no
 * groups, no capabilities) and then the worker's own half (host-memory
 * rlimit, no_new_privs, seccomp allow-list).  Each check runs in a child
 * of its own, since the calls an attacker makes end the process. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "daemon/isolation.h"
#include "vgpu-config.h"
#include "worker/sandbox.h"

#define HOST_MEMORY (256ull << 20)

/* A uid of the default worker range, as vgpud would hand out. */
#define TEST_UID (VGPU_WORKER_UID_FIRST + 7)

static pid_t parent;

static void *thread_main(void *arg) {
  return arg;
}

/* vgpud's half (only as root), then the worker's. */
static void enter_sandbox(void) {
  if (geteuid() == 0) {
    VgpuWorkerIdentity id = {
        .own_uid = true, .uid = TEST_UID, .gid = TEST_UID, .cgroup_procs_fd = -1};
    vgpu_isolation_child_setup(&id);
  }
  VgpuSandboxConfig cfg = {.host_memory = HOST_MEMORY, .filter = true};
  VgpuSandboxState st;
  if (!vgpu_sandbox_apply(&cfg, &st, NULL) || !st.filtered || st.data_limit == 0)
    _exit(90);
}

typedef int (*Check)(void);

/* Runs check in a sandboxed child; returns its wait status. */
static int run_sandboxed(Check check) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    enter_sandbox();
    _exit(check());
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return st;
}

static void expect_killed(Check check, const char *what) {
  int st = run_sandboxed(check);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
    fail_msg("%s: expected the filter to end the process (SIGSYS), got status 0x%x", what, st);
}

static void expect_exit0(Check check, const char *what) {
  int st = run_sandboxed(check);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail_msg("%s: expected exit 0, got status 0x%x (exit %d)", what, st,
             WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

/* ---- refused: the process ends ------------------------------------------ */

static int do_socket(void) {
  return socket(AF_UNIX, SOCK_STREAM, 0) >= 0 ? 0 : 1;
}
static int do_kill_other(void) {
  return kill(parent, 0) == 0 ? 0 : 1;
}
static int do_execve(void) {
  /* Were exec allowed, the child would exit 0 and the check fail. */
  char *const argv[] = {"/bin/true", NULL};
  execve(argv[0], argv, NULL);
  return 1;
}
static int do_ptrace(void) {
  return ptrace(PTRACE_ATTACH, parent, NULL, NULL) == 0 ? 0 : 1;
}
static int do_unshare(void) {
  return unshare(CLONE_NEWUSER) == 0 ? 0 : 1;
}
static int do_pidfd_open(void) {
  return syscall(SYS_pidfd_open, parent, 0) >= 0 ? 0 : 1;
}

static void test_refused_calls_end_the_worker(void **state) {
  (void)state;
  expect_killed(do_socket, "socket()");
  expect_killed(do_kill_other, "kill() of another pid");
  expect_killed(do_execve, "execve()");
  expect_killed(do_ptrace, "ptrace()");
  expect_killed(do_pidfd_open, "pidfd_open()");
  expect_killed(do_unshare, "unshare()");
}

/* ---- refused: the call fails, the process goes on ----------------------- */

static int do_refusals(void) {
  /* /proc/1/mem: the uid (not the filter) keeps it closed. */
  if (open("/proc/1/mem", O_RDWR | O_CLOEXEC) >= 0)
    return 1;
  if (open("/proc/1/environ", O_RDONLY | O_CLOEXEC) >= 0)
    return 2;
  /* No file is ever created (EPERM from the filter). */
  if (open("/tmp/vgpu-sandbox-test", O_WRONLY | O_CREAT | O_CLOEXEC, 0600) >= 0 || errno != EPERM)
    return 3;
  if (open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) >= 0 || errno != EPERM)
    return 4;
  /* No new process or directory; no way back to root. */
  pid_t pid = fork();
  if (pid == 0)
    _exit(0);
  if (pid >= 0 || errno != EPERM)
    return 5;
  if (mkdir("/tmp/vgpu-sandbox-test.d", 0700) != -1 || errno != EPERM)
    return 6;
  if (setuid(0) != -1 || errno != EPERM)
    return 7;
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != -1 || errno != EPERM)
    return 8;
  struct rlimit big = {RLIM_INFINITY, RLIM_INFINITY};
  if (setrlimit(RLIMIT_DATA, &big) != -1)
    return 9;
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
    return 10;
  if (geteuid() == 0 || getegid() == 0)
    return 11;
  return 0;
}

static void test_refused_calls_fail(void **state) {
  (void)state;
  expect_exit0(do_refusals, "refusals");
}

/* ---- still allowed: what Mesa and virglrenderer use --------------------- */

static int do_allowed(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, thread_main, NULL) != 0 || pthread_join(t, NULL) != 0)
    return 1;
  void *p =
      mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) /* llvmpipe's JIT maps executable memory */
    return 2;
  if (mprotect(p, 1 << 16, PROT_READ | PROT_EXEC) != 0)
    return 3;
  int fd = memfd_create("sandbox-test", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 1 << 20) != 0)
    return 4;
  void *q = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (q == MAP_FAILED)
    return 5;
  if (kill(getpid(), 0) != 0) /* signals to itself */
    return 6;
  if (open("/proc/self/status", O_RDONLY | O_CLOEXEC) < 0) /* reading what the uid may */
    return 7;
  return 0;
}

static void test_rendering_calls_allowed(void **state) {
  (void)state;
  expect_exit0(do_allowed, "allowed calls");
}

/* ---- host memory -------------------------------------------------------- */

static int do_memory(void) {
  /* Half the cap is fine; the cap and more is not (ENOMEM, no crash). */
  void *p = mmap(NULL, HOST_MEMORY / 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return 1;
  void *q = mmap(NULL, HOST_MEMORY, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q != MAP_FAILED || errno != ENOMEM)
    return 2;
  /* A memfd cannot grow past the cap either (RLIMIT_FSIZE). */
  int fd = memfd_create("big", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)HOST_MEMORY + 4096) == 0 || errno != EFBIG)
    return 3;
  return 0;
}

static void test_host_memory_cap(void **state) {
  (void)state;
  expect_exit0(do_memory, "host-memory cap");
}

int main(void) {
  if (!vgpu_sandbox_have_filter()) {
    printf("SKIP: built without libseccomp: workers have no system-call filter to test\n");
    return 77;
  }
  parent = getpid();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refused_calls_end_the_worker),
      cmocka_unit_test(test_refused_calls_fail),
      cmocka_unit_test(test_rendering_calls_allowed),
      cmocka_unit_test(test_host_memory_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
