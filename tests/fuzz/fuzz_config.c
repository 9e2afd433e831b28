/* libFuzzer target for the configuration loader: any bytes as a vgpud.conf.
 * A file is either loaded or refused with a message that names the source
 * and a line; GLib criticals and warnings are fatal here, so a value that
 * slips past validation into GLib's own checks shows up as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "daemon/config.h"
#include "fuzz_glib.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-config")

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  GError *error = NULL;
  VgpuConfig *c = vgpu_config_load_data((const char *)data, (gssize)size, "fuzz.conf", &error);
  if (c) {
    if (error)
      abort(); /* loaded and failed at once */
    /* Whatever loads names instances that exist under valid names. */
    for (guint i = 0; i < c->instances->len; i++) {
      const VgpuInstanceConfig *ic = g_ptr_array_index(c->instances, i);
      if (!vgpu_instance_name_valid(ic->name) || vgpu_config_find_instance(c, ic->name) != ic)
        abort();
    }
    vgpu_config_free(c);
  } else {
    if (!error || !g_str_has_prefix(error->message, "fuzz.conf"))
      abort(); /* every refusal names the file (and a line where it has one) */
    g_error_free(error);
  }
  return 0;
}
