#include "worker/sandbox.h"

#include <errno.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "util/sanitize.h"
#include "vgpu-config.h"
#if HAVE_SECCOMP
#include <seccomp.h>
#endif

#if HAVE_SECCOMP
/* A deny list, not an allow list: Mesa's drivers (llvmpipe threads, the
 * JIT, DRM ioctls on real GPUs) use a wide and version-dependent set of
 * syscalls, and a missing one would break rendering in ways tenants cannot
 * diagnose.  What is listed here is never needed to render. */
static const int denied_syscalls[] = {
    SCMP_SYS(execve),        SCMP_SYS(execveat),
#if !VGPU_SANITIZED
    /* LeakSanitizer stops the world with ptrace at exit. */
    SCMP_SYS(ptrace),
#endif
    SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(mount),
    SCMP_SYS(umount2),       SCMP_SYS(pivot_root),      SCMP_SYS(chroot),
    SCMP_SYS(setns),         SCMP_SYS(unshare),         SCMP_SYS(kexec_load),
    SCMP_SYS(kexec_file_load), SCMP_SYS(init_module),   SCMP_SYS(finit_module),
    SCMP_SYS(delete_module), SCMP_SYS(bpf),             SCMP_SYS(perf_event_open),
    SCMP_SYS(keyctl),        SCMP_SYS(add_key),         SCMP_SYS(request_key),
    SCMP_SYS(reboot),        SCMP_SYS(swapon),          SCMP_SYS(swapoff),
    SCMP_SYS(userfaultfd),   SCMP_SYS(open_by_handle_at), SCMP_SYS(name_to_handle_at),
    SCMP_SYS(acct),          SCMP_SYS(settimeofday),    SCMP_SYS(clock_settime),
    SCMP_SYS(setuid),        SCMP_SYS(setgid),          SCMP_SYS(setreuid),
    SCMP_SYS(setregid),      SCMP_SYS(setresuid),       SCMP_SYS(setresgid),
    SCMP_SYS(fanotify_init), SCMP_SYS(quotactl),        SCMP_SYS(iopl),
    SCMP_SYS(ioperm),        SCMP_SYS(fsopen),          SCMP_SYS(fsmount),
    SCMP_SYS(move_mount),    SCMP_SYS(open_tree),
};
#endif

bool vgpu_sandbox_apply(bool *applied_filter, GError **error) {
  *applied_filter = false;
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "no_new_privs: %s",
                g_strerror(errno));
    return false;
  }
#if HAVE_SECCOMP
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "seccomp_init failed");
    return false;
  }
  int r = 0;
  for (size_t i = 0; i < G_N_ELEMENTS(denied_syscalls) && r == 0; i++)
    r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), denied_syscalls[i], 0);
  /* No new network endpoints: only AF_UNIX sockets stay possible. */
  if (r == 0)
    r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                         SCMP_A0(SCMP_CMP_NE, AF_UNIX));
  /* clone() that creates namespaces; threads and forks stay allowed.  clone3
   * passes its flags in memory a filter cannot read, so it answers ENOSYS and
   * glibc falls back to clone(). */
  static const unsigned long ns_flags[] = {0x00020000 /* NEWNS */,   0x02000000 /* NEWCGROUP */,
                                           0x04000000 /* NEWUTS */,  0x08000000 /* NEWIPC */,
                                           0x10000000 /* NEWUSER */, 0x20000000 /* NEWPID */,
                                           0x40000000 /* NEWNET */};
  for (size_t i = 0; i < G_N_ELEMENTS(ns_flags) && r == 0; i++)
    r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags[i], ns_flags[i]));
  if (r == 0)
    r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (r == 0)
    r = seccomp_load(ctx);
  seccomp_release(ctx);
  if (r < 0) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "installing the seccomp filter: %s",
                g_strerror(-r));
    return false;
  }
  *applied_filter = true;
#endif
  return true;
}
