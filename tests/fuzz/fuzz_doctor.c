/* libFuzzer target for what `vgpuctl doctor` parses out of a host's files:
 * any bytes as dpkg's status file, /proc/interrupts, /proc/meminfo (and
 * /proc/self/status), a vhost-user descriptor and a version string.  Each
 * parser returns within its bounds or refuses; GLib criticals are fatal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "cli/doctor.h"
#include "fuzz_glib.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-doctor")

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;

  char *v = vgpu_doctor_dpkg_version(buf, size, "libgl1-mesa-dri");
  if (v && strlen(v) > 128)
    abort();
  g_free(v);

  static const char *const drivers[] = {"amdgpu", "i915", NULL};
  guint irqs[4], ncpus = 0;
  guint n = vgpu_doctor_parse_interrupts(buf, size, drivers, irqs, G_N_ELEMENTS(irqs), &ncpus);
  if (n > G_N_ELEMENTS(irqs))
    abort();
  for (guint i = 0; i < n; i++)
    if (irqs[i] > (1u << 20))
      abort();

  gint64 f = vgpu_doctor_meminfo_field(buf, size, "HugePages_Total");
  if (f < -1)
    abort();

  char *why = NULL;
  char *bin = vgpu_doctor_descriptor_binary(buf, size, &why);
  if ((bin == NULL) == (why == NULL) || (bin && bin[0] != '/'))
    abort();
  g_free(bin);
  g_free(why);

  char *s = g_strndup(buf, size);
  guint ver[3];
  (void)vgpu_doctor_parse_version(s, ver);
  g_free(s);
  return 0;
}
