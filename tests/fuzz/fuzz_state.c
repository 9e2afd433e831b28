/* libFuzzer target for the state file parser (STATE-DIR/vgpud.state):
 * any bytes are either parsed or refused with "fuzz.state:LINE: reason".
 * What parses is printed back and must parse again into the same text,
 * and merging it over the built-in configuration must not fail. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "daemon/config.h"
#include "daemon/state.h"
#include "fuzz_glib.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-state")

static VgpuConfig *base;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!base)
    base = vgpu_config_load_default(NULL);
  GError *error = NULL;
  VgpuState *st = vgpu_state_parse((const char *)data, size, "fuzz.state", &error);
  if (!st) {
    if (!error || !g_str_has_prefix(error->message, "fuzz.state:"))
      abort(); /* every refusal names the file and a line */
    g_error_free(error);
    return 0;
  }
  if (error)
    abort();
  char *text = vgpu_state_format(st);
  VgpuState *again = vgpu_state_parse(text, strlen(text), "again", NULL);
  if (!again)
    abort(); /* vgpud must read back what it writes */
  char *text2 = vgpu_state_format(again);
  if (strcmp(text, text2) != 0)
    abort();
  VgpuStateMerge *m = vgpu_state_merge(base, st, 1ull << 30, 1000, 0, NULL);
  for (guint i = 0; i < m->instances->len; i++)
    if (!vgpu_instance_name_valid(((VgpuInstanceConfig *)g_ptr_array_index(m->instances, i))->name))
      abort();
  vgpu_state_merge_free(m);
  g_free(text);
  g_free(text2);
  vgpu_state_free(again);
  vgpu_state_free(st);
  return 0;
}
