/* libFuzzer target for the renderer probe's answer: any bytes as what a
 * `vgpu-worker --probe` wrote.  An answer is either refused with one line
 * and nothing kept, or accepted within every bound the parser promises;
 * GLib criticals and warnings are fatal, so a member of the wrong kind
 * that reaches a json-glib accessor shows up as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "daemon/probe.h"
#include "fuzz_glib.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-probe")

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  VgpuProbeAnswer a;
  GError *error = NULL;
  if (!vgpu_probe_parse((const char *)data, size, &a, &error)) {
    if (!error || !*error->message || strlen(error->message) > VGPU_PROBE_MAX_REASON ||
        a.renderer || a.description || a.n_versions || a.n_capsets || a.gl_renderer ||
        a.gl_version || a.mesa_version || a.virgl_version || a.virgl_library)
      abort();
    for (const char *p = error->message; *p; p++)
      if (*p < 0x20 || *p > 0x7e)
        abort(); /* the reason is logged and shown as it is */
    g_error_free(error);
    return 0;
  }
  if (error || !a.renderer || !*a.renderer || strlen(a.renderer) > VGPU_PROBE_MAX_NAME ||
      !a.description || strlen(a.description) > VGPU_PROBE_MAX_DESCRIPTION || a.n_versions == 0 ||
      a.n_versions > VGPU_PROBE_MAX_VERSIONS || a.n_capsets > VGPU_PROBE_MAX_CAPSETS)
    abort();
  for (const char *p = a.description; *p; p++)
    if (*p < 0x20 || *p > 0x7e)
      abort();
  for (guint i = 1; i < a.n_versions; i++)
    if (a.versions[i] <= a.versions[i - 1] || a.versions[i] > 255)
      abort();
  for (guint i = 0; i < a.n_capsets; i++)
    if (a.capsets[i].id == 0 || a.capsets[i].id > VGPU_PROBE_MAX_CAPSET_ID ||
        a.capsets[i].size == 0 || a.capsets[i].size > VGPU_PROBE_MAX_CAPSET_SIZE ||
        (i && a.capsets[i].id <= a.capsets[i - 1].id))
      abort();
  /* The optional texts: printable ASCII, 1..VGPU_PROBE_MAX_TEXT; the
   * library an absolute path; Mesa's version only out of a GL version. */
  const char *texts[] = {a.gl_renderer, a.gl_version, a.virgl_version, a.virgl_library,
                         a.mesa_version};
  for (size_t i = 0; i < G_N_ELEMENTS(texts); i++) {
    if (!texts[i])
      continue;
    size_t n = strlen(texts[i]);
    if (n == 0 || n > VGPU_PROBE_MAX_TEXT)
      abort();
    for (const char *p = texts[i]; *p; p++)
      if (*p < 0x20 || *p > 0x7e)
        abort();
  }
  if ((a.virgl_library && a.virgl_library[0] != '/') || (a.mesa_version && !a.gl_version))
    abort();
  vgpu_probe_answer_clear(&a);
  return 0;
}
