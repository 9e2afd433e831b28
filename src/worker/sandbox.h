/* Worker sandbox: what a tenant's renderer process may not do even if a
 * GPU-driver bug hands the tenant control of it. */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* Sets no_new_privs and installs a seccomp filter that refuses (EPERM)
 * process creation by exec, debugging other processes, namespaces, mounts,
 * module and kernel-key operations, network sockets and similar.  Applied
 * after the renderer is initialised.  Without libseccomp only no_new_privs
 * is set and *applied_filter is false. */
bool vgpu_sandbox_apply(bool *applied_filter, GError **error);
