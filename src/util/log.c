#include "util/log.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


static struct {
  char program[32];
  char tag[128];
  VgpuLogLevel level;
  bool journal;
} log_state = {"vgpu", "", VGPU_LOG_INFO, false};

static const char *const level_names[] = {"error", "warning", "info", "debug"};

/* stderr is the journal when JOURNAL_STREAM names the same device:inode. */
static bool stderr_is_journal(void) {
  const char *js = getenv("JOURNAL_STREAM");
  struct stat st;
  unsigned long dev, ino;
  if (!js || sscanf(js, "%lu:%lu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
    return false;
  return st.st_dev == dev && st.st_ino == ino;
}

void vgpu_log_init(const char *program, VgpuLogLevel level) {
  g_strlcpy(log_state.program, program, sizeof(log_state.program));
  log_state.level = level;
  log_state.journal = stderr_is_journal();
}

void vgpu_log_set_level(VgpuLogLevel level) { log_state.level = level; }
VgpuLogLevel vgpu_log_get_level(void) { return log_state.level; }

void vgpu_log_set_tag(const char *tag) {
  g_strlcpy(log_state.tag, tag ? tag : "", sizeof(log_state.tag));
}

bool vgpu_log_level_parse(const char *s, VgpuLogLevel *out) {
  static const struct {
    const char *name;
    VgpuLogLevel level;
  } names[] = {{"error", VGPU_LOG_ERROR}, {"warning", VGPU_LOG_WARN},
               {"warn", VGPU_LOG_WARN},   {"info", VGPU_LOG_INFO},
               {"debug", VGPU_LOG_DEBUG}};
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    if (g_ascii_strcasecmp(s, names[i].name) == 0) {
      *out = names[i].level;
      return true;
    }
  }
  return false;
}

const char *vgpu_log_level_name(VgpuLogLevel level) {
  return (unsigned)level < G_N_ELEMENTS(level_names) ? level_names[level] : "?";
}

static GMutex site_lock; /* renderer threads may log too */
static uint64_t suppressed_total;

bool vgpu_log_site_admit(VgpuLogSite *site, gint64 now_us, unsigned *suppressed_out) {
  g_mutex_lock(&site_lock);
  if (site->last_us == 0 || now_us < site->last_us) {
    site->tokens = VGPU_LOG_BURST;
  } else {
    double add = (double)(now_us - site->last_us) * VGPU_LOG_RATE / 1e6;
    site->tokens = MIN(site->tokens + add, (double)VGPU_LOG_BURST);
  }
  site->last_us = now_us;
  bool ok = site->tokens >= 1.0;
  if (ok) {
    site->tokens -= 1.0;
    if (suppressed_out)
      *suppressed_out = site->suppressed;
    site->suppressed = 0;
  } else {
    if (site->suppressed < UINT_MAX)
      site->suppressed++;
    suppressed_total++;
  }
  g_mutex_unlock(&site_lock);
  return ok;
}

uint64_t vgpu_log_suppressed_total(void) {
  g_mutex_lock(&site_lock);
  uint64_t n = suppressed_total;
  g_mutex_unlock(&site_lock);
  return n;
}

void vgpu_log_site(VgpuLogSite *site, VgpuLogLevel level, const char *fmt, ...) {
  if (level > log_state.level)
    return;
  unsigned suppressed = 0;
  if (site && !vgpu_log_site_admit(site, g_get_monotonic_time(), &suppressed))
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (suppressed && n >= 0 && (size_t)n < sizeof(msg))
    snprintf(msg + n, sizeof(msg) - (size_t)n, " [%u similar messages suppressed]", suppressed);
  if (log_state.journal) {
    /* journald reads a "<priority>" prefix on stream lines and adds its own
     * time stamp and the program name; no libsystemd needed, so workers
     * stay small. */
    static const int prio[] = {3, 4, 6, 7};
    fprintf(stderr, "<%d>%s%s%s\n", prio[level], log_state.tag, log_state.tag[0] ? ": " : "",
            msg);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  /* One fprintf so concurrent workers sharing stderr do not interleave lines. */
  fprintf(stderr, "%02d:%02d:%02d.%03ld %s[%d]: %s %s%s%s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
          ts.tv_nsec / 1000000, log_state.program, (int)getpid(), level_names[level],
          log_state.tag, log_state.tag[0] ? ": " : "", msg);
}
