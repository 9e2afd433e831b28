/* Logging: one line per event, always naming who it is about.
 *
 * Low layers return negative errno and do not log; daemons and workers log
 * through this module.  Lines go to stderr as "program[pid]: LEVEL tag: msg"
 * (the tag names the instance and tenant), or with journald's priority
 * prefix ("<4>...") when stderr is connected to the journal. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

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

/* Rate limit: every call site has a token bucket of its own (a burst of
 * VGPU_LOG_BURST lines, refilled at VGPU_LOG_RATE lines a second), so
 * nothing a client or local user can repeat (connections, refusals, bad
 * requests) floods the log.  Lines over the limit are counted, not
 * written; the site's next line that is written ends with
 * "[N similar messages suppressed]". */
#define VGPU_LOG_BURST 100
#define VGPU_LOG_RATE 20

typedef struct VgpuLogSite {
  double tokens;
  gint64 last_us; /* 0: never used */
  unsigned suppressed;
} VgpuLogSite;

/* Writes the line if the site's bucket allows (site NULL: always). */
void vgpu_log_site(VgpuLogSite *site, VgpuLogLevel level, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* The bucket alone: true when a line may be written now (and takes its
 * token); *suppressed_out (when given) receives and clears the count of
 * lines refused since the last one written.  now_us is a monotonic time;
 * exposed for tests. */
bool vgpu_log_site_admit(VgpuLogSite *site, gint64 now_us, unsigned *suppressed_out);
/* Lines refused by rate limits since start-up, all sites together. */
uint64_t vgpu_log_suppressed_total(void);

#define vgpu_log(level, ...)                                                                       \
  do {                                                                                             \
    static VgpuLogSite vgpu_log_site_;                                                             \
    vgpu_log_site(&vgpu_log_site_, (level), __VA_ARGS__);                                          \
  } while (0)

#define vgpu_error(...) vgpu_log(VGPU_LOG_ERROR, __VA_ARGS__)
#define vgpu_warn(...) vgpu_log(VGPU_LOG_WARN, __VA_ARGS__)
#define vgpu_info(...) vgpu_log(VGPU_LOG_INFO, __VA_ARGS__)
#define vgpu_debug(...)                                                        \
  do {                                                                         \
    if (vgpu_log_get_level() >= VGPU_LOG_DEBUG)                                \
      vgpu_log(VGPU_LOG_DEBUG, __VA_ARGS__);                                   \
  } while (0)
