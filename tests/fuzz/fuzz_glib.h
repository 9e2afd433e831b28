/* What every fuzz target over GLib-based code shares: the two libFuzzer
 * entry points' prototypes and one set-up that makes GLib criticals and
 * warnings fatal (a value that slips past validation into GLib's own
 * checks shows up as a crash) and keeps the project's log to errors. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static inline void vgpu_fuzz_glib_init(const char *name) {
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  vgpu_log_init(name, VGPU_LOG_ERROR);
}

/* Defines LLVMFuzzerInitialize for a target that needs nothing more. */
#define VGPU_FUZZ_GLIB_TARGET(name)                                                                \
  int LLVMFuzzerInitialize(int *argc, char ***argv) {                                              \
    (void)argc;                                                                                    \
    (void)argv;                                                                                    \
    vgpu_fuzz_glib_init(name);                                                                     \
    return 0;                                                                                      \
  }
