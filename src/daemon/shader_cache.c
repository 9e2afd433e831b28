#include "daemon/shader_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fd.h"
#include "util/log.h"
#include "util/runtime_dir.h"

#define VGPU_SHADER_CACHE_NAME "shader-cache"

struct VgpuShaderCache {
  int dirfd; /* DIR/shader-cache */
  int parentfd;
  char *path;
};

VgpuShaderCache *vgpu_shader_cache_new(const char *runtime_dir, GError **error) {
  vgpu_autofd int parent = open(runtime_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  g_autofree char *path = g_build_filename(runtime_dir, VGPU_SHADER_CACHE_NAME, NULL);
  int r = parent < 0 ? -errno : vgpu_remove_tree_at(parent, VGPU_SHADER_CACHE_NAME, false);
  if (r == 0 && mkdirat(parent, VGPU_SHADER_CACHE_NAME, 0700) < 0)
    r = -errno;
  vgpu_autofd int fd =
      r < 0 ? -1 : openat(parent, VGPU_SHADER_CACHE_NAME, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  /* 0711 whatever the umask: workers may pass through to their own
   * directory, nobody but root may list it. */
  if (r == 0 && (fd < 0 || fchmod(fd, 0711) < 0))
    r = -errno;
  if (r < 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-r), "making %s: %s", path,
                g_strerror(-r));
    return NULL;
  }
  VgpuShaderCache *c = g_new0(VgpuShaderCache, 1);
  c->dirfd = vgpu_steal_fd(&fd);
  c->parentfd = vgpu_steal_fd(&parent);
  c->path = g_steal_pointer(&path);
  return c;
}

void vgpu_shader_cache_free(VgpuShaderCache *c) {
  if (!c)
    return;
  int r = vgpu_remove_tree_at(c->parentfd, VGPU_SHADER_CACHE_NAME, false);
  if (r < 0)
    vgpu_warn("removing %s: %s", c->path, g_strerror(-r));
  vgpu_close(c->dirfd);
  vgpu_close(c->parentfd);
  g_free(c->path);
  g_free(c);
}

const char *vgpu_shader_cache_path(const VgpuShaderCache *c) {
  return c->path;
}

char *vgpu_shader_cache_make(VgpuShaderCache *c, uid_t uid, GError **error) {
  char name[16];
  g_snprintf(name, sizeof(name), "%u", (unsigned)uid);
  g_autofree char *path = g_build_filename(c->path, name, NULL);
  int r = vgpu_remove_tree_at(c->dirfd, name, false);
  if (r == 0 && mkdirat(c->dirfd, name, 0700) < 0)
    r = -errno;
  /* Owned by the worker's uid before anything can be put in it; then
   * 0700 whatever the umask. */
  if (r == 0 && (fchownat(c->dirfd, name, uid, (gid_t)uid, AT_SYMLINK_NOFOLLOW) < 0 ||
                 fchmodat(c->dirfd, name, 0700, 0) < 0))
    r = -errno;
  if (r < 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-r), "making %s: %s", path,
                g_strerror(-r));
    (void)vgpu_remove_tree_at(c->dirfd, name, false);
    return NULL;
  }
  return g_steal_pointer(&path);
}

void vgpu_shader_cache_remove(VgpuShaderCache *c, uid_t uid) {
  char name[16];
  g_snprintf(name, sizeof(name), "%u", (unsigned)uid);
  int r = vgpu_remove_tree_at(c->dirfd, name, false);
  if (r < 0)
    vgpu_warn("removing %s/%s: %s", c->path, name, g_strerror(-r));
}
