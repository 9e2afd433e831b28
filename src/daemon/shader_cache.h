/* Private shader caches: one directory per worker for Mesa's shader cache.
 *
 * A worker compiles each shader program of its tenant once and keeps the
 * result for the rest of its session (a VM that starts the same program
 * again, a client that makes a second context).  The cache is the
 * worker's alone:
 *
 *   DIR/shader-cache        root's, 0711: nobody else may list it
 *   DIR/shader-cache/UID    the worker's uid's, 0700, made empty before
 *                           the worker starts and removed when it ends
 *
 * The worker points Mesa's single-file cache there, and once its renderer
 * is up (Mesa has opened its files) removes everything in it, before its
 * sandbox and before it reads a command.  The cache then lives only in
 * files the worker holds open: no other process can open them, nothing
 * is read from a file another tenant wrote, and it ends with the worker.
 *
 * Only where workers have uids of their own (vgpud is root): workers that
 * share vgpud's uid could open each other's directories while Mesa sets
 * them up, so there the cache stays off (MESA_SHADER_CACHE_DISABLE). */
#pragma once

#include <glib.h>
#include <sys/types.h>

typedef struct VgpuShaderCache VgpuShaderCache;

/* Makes DIR/shader-cache (removing what an earlier vgpud left there).
 * NULL with error when it cannot be made. */
VgpuShaderCache *vgpu_shader_cache_new(const char *runtime_dir, GError **error);
/* Removes DIR/shader-cache with what is left in it. */
void vgpu_shader_cache_free(VgpuShaderCache *c);
/* Makes the empty directory of the worker that will run as uid (what a
 * worker of the same uid left is removed first); returns its path. */
char *vgpu_shader_cache_make(VgpuShaderCache *c, uid_t uid, GError **error);
/* Removes uid's directory (its worker has ended). */
void vgpu_shader_cache_remove(VgpuShaderCache *c, uid_t uid);
const char *vgpu_shader_cache_path(const VgpuShaderCache *c);
