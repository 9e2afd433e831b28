/* Logging: one line per event, always naming who it is about.
 *
 * Low layers return negative errno and do not log; daemons and workers log
 * through this module.  Lines go to stderr as "program[pid]: LEVEL tag: msg"
 * (the tag names the instance and tenant), or with journald's priority
 * prefix ("<4>...") when stderr is connected to the journal. */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef enum {
  VGPU_LOG_ERROR = 0,
  VGPU_LOG_WARN = 1,
  VGPU_LOG_INFO = 2,
  VGPU_LOG_DEBUG = 3,
} VgpuLogLevel;

void vgpu_log_init(const char *program, VgpuLogLevel level);
void vgpu_log_set_level(VgpuLogLevel level);
VgpuLogLevel vgpu_log_get_level(void);
/* Tag prefixed to every line of this process, e.g. "vgpu0 client=1234". */
void vgpu_log_set_tag(const char *tag);
bool vgpu_log_level_parse(const char *s, VgpuLogLevel *out);
const char *vgpu_log_level_name(VgpuLogLevel level);

void vgpu_log(VgpuLogLevel level, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

#define vgpu_error(...) vgpu_log(VGPU_LOG_ERROR, __VA_ARGS__)
#define vgpu_warn(...) vgpu_log(VGPU_LOG_WARN, __VA_ARGS__)
#define vgpu_info(...) vgpu_log(VGPU_LOG_INFO, __VA_ARGS__)
#define vgpu_debug(...)                                                        \
  do {                                                                         \
    if (vgpu_log_get_level() >= VGPU_LOG_DEBUG)                                \
      vgpu_log(VGPU_LOG_DEBUG, __VA_ARGS__);                                   \
  } while (0)
