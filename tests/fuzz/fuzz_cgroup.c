/* libFuzzer target for the readers of /proc/self/cgroup and
 * /proc/self/mountinfo (daemon/cgroup.c): any text, read as both.  A path
 * found is absolute (a cgroup path) or names no controller line it was not
 * asked for; nothing may crash or read past the text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "daemon/cgroup.h"
#include "fuzz_glib.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-cgroup")

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = g_strndup((const char *)data, size); /* stops at a NUL, as a file read does */
  static const char *const controllers[] = {NULL, "cpu", "memory", ""};
  for (size_t i = 0; i < G_N_ELEMENTS(controllers); i++) {
    char *self = vgpu_cgroup_self_path(text, controllers[i]);
    if (self && self[0] != '/')
      abort();
    g_free(self);
    char *mnt = vgpu_cgroup_mount_point(text, controllers[i]);
    if (mnt && !strstr(text, mnt))
      abort();
    g_free(mnt);
  }
  g_free(text);
  return 0;
}
