/* Worker sandbox: what a tenant's renderer process may not do even if a
 * GPU-driver bug hands the tenant control of it.
 *
 * Two halves.  vgpud drops the worker's identity before exec (its own uid
 * and gid, no groups, no capabilities: src/daemon/isolation.c).  The
 * worker itself, once its renderer is initialised, calls
 * vgpu_sandbox_apply(): the host-memory rlimit, no_new_privs and a seccomp
 * allow-list.  The test-only hijacked worker calls the same function. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct VgpuSandboxConfig {
  /* Bytes this worker may still allocate (RLIMIT_DATA is set to its data
   * size now plus this, RLIMIT_FSIZE to this); 0: no rlimit (the cap is a
   * cgroup's, or there is none). */
  uint64_t host_memory;
  /* false: no_new_privs and the rlimit only (sandbox=false). */
  bool filter;
} VgpuSandboxConfig;

typedef struct VgpuSandboxState {
  bool filtered;       /* the seccomp allow-list is installed */
  uint64_t data_limit; /* RLIMIT_DATA set, 0 if none */
} VgpuSandboxState;

/* Applies the worker half of the sandbox to the calling process (all its
 * threads: call it while it has one, or before it starts any that must be
 * covered; seccomp filters are inherited by threads created later, and
 * TSYNC covers the ones already there).  Without libseccomp the filter is
 * skipped and state->filtered is false. */
bool vgpu_sandbox_apply(const VgpuSandboxConfig *cfg, VgpuSandboxState *state, GError **error);

/* True when this build has the seccomp filter. */
bool vgpu_sandbox_have_filter(void);
