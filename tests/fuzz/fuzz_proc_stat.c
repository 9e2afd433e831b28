/* libFuzzer target for /proc/PID/stat text as vgpud reads it about a
 * client and its parents (the command name in it is the client's to
 * choose): a parse either fails or gives a parent pid that fits pid_t. */
#include <stdint.h>
#include <stdlib.h>

#include <glib.h>

#include "fuzz_glib.h"
#include "util/proc_stat.h"

VGPU_FUZZ_GLIB_TARGET("fuzz-proc-stat")

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pid_t ppid = -1;
  uint64_t start = 0;
  if (vgpu_proc_stat_parse((const char *)data, size, &ppid, &start) && ppid < 0)
    abort();
  return 0;
}
