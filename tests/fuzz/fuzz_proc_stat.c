/* libFuzzer target for /proc/PID/stat text as vgpud reads it about a
 * client and its parents, and about its workers' CPU time (the command
 * name in it is the process's to choose): a parse either fails or gives a
 * parent pid that fits pid_t; for /proc/stat's per-CPU lines; and for a
 * thread's schedstat line. */
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
  uint64_t ticks = 0;
  (void)vgpu_proc_stat_cpu((const char *)data, size, &ticks);
  unsigned n = 0;
  cpu_set_t mask;
  CPU_ZERO(&mask);
  CPU_SET(1, &mask);
  if (!vgpu_proc_stat_idle((const char *)data, size, &mask, &ticks, &n) && n != 0)
    abort(); /* no well-formed line: none counted */
  (void)vgpu_proc_schedstat((const char *)data, size, &ticks, &start);
  return 0;
}
