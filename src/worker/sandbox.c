#include "worker/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "vgpu-config.h"
#if HAVE_SECCOMP
#include <seccomp.h>
#endif

bool vgpu_sandbox_have_filter(void) {
  return HAVE_SECCOMP;
}

/* VmData of this process in bytes (private writable mappings: what
 * RLIMIT_DATA counts), or 0 when it cannot be read. */
static uint64_t data_size_now(void) {
  FILE *f = fopen("/proc/self/status", "re");
  if (!f)
    return 0;
  char line[256];
  uint64_t kib = 0;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "VmData: %" SCNu64 " kB", &kib) == 1)
      break;
  fclose(f);
  return kib * 1024;
}

static bool apply_rlimits(uint64_t host_memory, VgpuSandboxState *state, GError **error) {
  if (host_memory == 0)
    return true;
  /* What is already mapped (the renderer's start, and in sanitizer builds
   * the shadow memory, terabytes of it) is not the tenant's: the cap counts
   * what the worker allocates from here on.  Soft and hard limits alike: a
   * process without CAP_SYS_RESOURCE cannot raise a hard limit again. */
  uint64_t base = data_size_now(), lim;
  if (__builtin_add_overflow(base, host_memory, &lim) || lim > (uint64_t)RLIM_INFINITY - 1)
    lim = (uint64_t)RLIM_INFINITY - 1;
  struct rlimit data = {.rlim_cur = (rlim_t)lim, .rlim_max = (rlim_t)lim};
  struct rlimit fsize = {.rlim_cur = (rlim_t)host_memory, .rlim_max = (rlim_t)host_memory};
  if (setrlimit(RLIMIT_DATA, &data) < 0 || setrlimit(RLIMIT_FSIZE, &fsize) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "host-memory rlimit: %s",
                g_strerror(errno));
    return false;
  }
  /* A file grown past RLIMIT_FSIZE (a memfd too) then fails with EFBIG
   * instead of ending the process with SIGXFSZ. */
  signal(SIGXFSZ, SIG_IGN);
  state->data_limit = lim;
  return true;
}

#if HAVE_SECCOMP
/* The allow-list: what Mesa (llvmpipe: threads, JIT memory), EGL
 * surfaceless, virglrenderer and the worker's own loop use once the
 * renderer is up, as recorded with strace -f on glxgears, glmark2 and the
 * piglit set through vgpud (and on Mesa 25's glxgears with virglrenderer
 * 1.1, `scripts/check-virgl1.sh --strace`: nothing beyond this list, no
 * call refused), plus their close relatives (the p/v variants
 * of read and write, other clocks and waits).  Anything else fails with
 * EPERM, so an unforeseen but harmless call costs a feature, not the
 * session; the calls in killed_syscalls end the worker at once. */
static const int allowed_syscalls[] = {
    /* I/O on fds it already has (client socket, ledger, render node) */
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(preadv),
    SCMP_SYS(pwritev),
    SCMP_SYS(close),
    SCMP_SYS(lseek),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(statx),
    SCMP_SYS(fstatfs),
    SCMP_SYS(statfs),
    SCMP_SYS(fcntl),
    SCMP_SYS(ioctl),
    SCMP_SYS(dup),
    SCMP_SYS(dup2),
    SCMP_SYS(dup3),
    SCMP_SYS(fsync),
    SCMP_SYS(fdatasync),
    SCMP_SYS(fadvise64),
    SCMP_SYS(flock),
    SCMP_SYS(sendmsg),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendto),
    SCMP_SYS(recvfrom),
    SCMP_SYS(shutdown),
    SCMP_SYS(getsockopt),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(select),
    SCMP_SYS(pselect6),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(eventfd2),
    SCMP_SYS(pipe2),
    /* looking at files it may read */
    SCMP_SYS(access),
    SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2),
    SCMP_SYS(readlink),
    SCMP_SYS(readlinkat),
    SCMP_SYS(getdents64),
    SCMP_SYS(getcwd),
    /* memory: the heap, JIT code, shared resources */
    SCMP_SYS(brk),
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mprotect),
    SCMP_SYS(mremap),
    SCMP_SYS(madvise),
    SCMP_SYS(mincore),
    SCMP_SYS(membarrier),
    SCMP_SYS(memfd_create),
    SCMP_SYS(ftruncate),
    SCMP_SYS(fallocate),
    /* threads, waits, time */
    SCMP_SYS(futex),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(get_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(set_tid_address),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    SCMP_SYS(sched_yield),
    SCMP_SYS(sched_getaffinity),
    SCMP_SYS(sched_setaffinity),
    SCMP_SYS(sched_getparam),
    SCMP_SYS(sched_setparam),
    SCMP_SYS(sched_getscheduler),
    SCMP_SYS(sched_setscheduler),
    SCMP_SYS(sched_get_priority_min),
    SCMP_SYS(sched_get_priority_max),
    SCMP_SYS(getpriority),
    SCMP_SYS(setpriority),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_getres),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(time),
    /* signals to itself (kill and tgkill: see below) */
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigtimedwait),
    SCMP_SYS(sigaltstack),
    /* identity and limits, read only */
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(getppid),
    SCMP_SYS(getuid),
    SCMP_SYS(geteuid),
    SCMP_SYS(getgid),
    SCMP_SYS(getegid),
    SCMP_SYS(getresuid),
    SCMP_SYS(getresgid),
    SCMP_SYS(getgroups),
    SCMP_SYS(getrlimit),
    SCMP_SYS(getrusage),
    SCMP_SYS(sysinfo),
    SCMP_SYS(uname),
    SCMP_SYS(getrandom),
    SCMP_SYS(capget),
    /* more filters can only take away */
    SCMP_SYS(seccomp),
};

/* Calls no renderer needs and that only an attacker makes: reaching other
 * processes, new programs, sockets, the kernel's administrative side. */
static const int killed_syscalls[] = {
    SCMP_SYS(execve),
    SCMP_SYS(execveat),
    SCMP_SYS(ptrace),
    SCMP_SYS(process_vm_readv),
    SCMP_SYS(process_vm_writev),
    SCMP_SYS(pidfd_open),
    SCMP_SYS(pidfd_getfd),
    SCMP_SYS(pidfd_send_signal),
    SCMP_SYS(tkill),
    SCMP_SYS(rt_sigqueueinfo),
    SCMP_SYS(rt_tgsigqueueinfo),
    SCMP_SYS(socket),
    SCMP_SYS(socketpair),
    SCMP_SYS(connect),
    SCMP_SYS(bind),
    SCMP_SYS(listen),
    SCMP_SYS(accept),
    SCMP_SYS(accept4),
    SCMP_SYS(mount),
    SCMP_SYS(umount2),
    SCMP_SYS(pivot_root),
    SCMP_SYS(chroot),
    SCMP_SYS(setns),
    SCMP_SYS(unshare),
    SCMP_SYS(bpf),
    SCMP_SYS(perf_event_open),
    SCMP_SYS(keyctl),
    SCMP_SYS(add_key),
    SCMP_SYS(request_key),
    SCMP_SYS(init_module),
    SCMP_SYS(finit_module),
    SCMP_SYS(delete_module),
    SCMP_SYS(kexec_load),
    SCMP_SYS(kexec_file_load),
    SCMP_SYS(open_by_handle_at),
    SCMP_SYS(name_to_handle_at),
    SCMP_SYS(userfaultfd),
    SCMP_SYS(fsopen),
    SCMP_SYS(fsmount),
    SCMP_SYS(move_mount),
    SCMP_SYS(open_tree),
    SCMP_SYS(io_uring_setup),
};

/* prctl options in use (thread names, reads); the rest fail with EPERM. */
static const unsigned long allowed_prctl[] = {
    PR_SET_NAME,       PR_GET_NAME,
    PR_GET_DUMPABLE,   PR_GET_NO_NEW_PRIVS,
    PR_CAPBSET_READ,   PR_GET_SECCOMP,
    PR_GET_TIMERSLACK, 0x53564d41 /* PR_SET_VMA: names anonymous memory */,
};

#define CLONE_THREAD_FLAG 0x00010000ul
#define O_TMPFILE_BITS 020000000ul

static int add_rules(scmp_filter_ctx ctx) {
  int r = 0;
  scmp_filter_ctx c = ctx;
  for (size_t i = 0; i < G_N_ELEMENTS(allowed_syscalls) && r == 0; i++)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, allowed_syscalls[i], 0);
  for (size_t i = 0; i < G_N_ELEMENTS(killed_syscalls) && r == 0; i++)
    r = seccomp_rule_add(c, SCMP_ACT_KILL_PROCESS, killed_syscalls[i], 0);
  for (size_t i = 0; i < G_N_ELEMENTS(allowed_prctl) && r == 0; i++)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                         SCMP_A0(SCMP_CMP_EQ, allowed_prctl[i]));
  /* Signals: to itself only (abort(), raise(), pthread_kill). */
  const uint64_t self = (uint64_t)getpid();
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_EQ, self));
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_KILL_PROCESS, SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_NE, self));
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_EQ, self));
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_KILL_PROCESS, SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_NE, self));
  /* Threads, never new processes.  clone3 passes its flags in memory a
   * filter cannot read: it answers ENOSYS and glibc falls back to clone. */
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD_FLAG, CLONE_THREAD_FLAG));
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  /* Opening existing files the uid may open; never creating one (no
   * O_CREAT, no O_TMPFILE), so nothing a worker leaves behind outlives it. */
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                         SCMP_A2(SCMP_CMP_MASKED_EQ, O_CREAT | O_TMPFILE_BITS, 0));
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(open), 1,
                         SCMP_A1(SCMP_CMP_MASKED_EQ, O_CREAT | O_TMPFILE_BITS, 0));
  /* prlimit64 to read its own limits (new_limit NULL), never to set them. */
  if (r == 0)
    r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 2, SCMP_A0(SCMP_CMP_EQ, 0),
                         SCMP_A2(SCMP_CMP_EQ, 0));
  return r;
}
#endif

bool vgpu_sandbox_apply(const VgpuSandboxConfig *cfg, VgpuSandboxState *state, GError **error) {
  *state = (VgpuSandboxState){0};
  if (!apply_rlimits(cfg->host_memory, state, error))
    return false;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "no_new_privs: %s",
                g_strerror(errno));
    return false;
  }
  if (!cfg->filter)
    return true;
#if HAVE_SECCOMP
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (!ctx) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "seccomp_init failed");
    return false;
  }
  /* Every thread: virglrenderer's and llvmpipe's already run. */
  int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  if (r == 0)
    r = add_rules(ctx);
  if (r == 0)
    r = seccomp_load(ctx);
  seccomp_release(ctx);
  if (r < 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "installing the seccomp filter: %s",
                g_strerror(-r));
    return false;
  }
  state->filtered = true;
#endif
  return true;
}
