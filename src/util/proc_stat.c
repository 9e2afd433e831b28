#include "util/proc_stat.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Fields 3..last of /proc/PID/stat (after the command name): the
 * numbers of the fields named in want[] (ascending, 4 or more) into
 * out[]. */
static bool stat_fields(const char *text, size_t len, const int *want, size_t n, uint64_t *out) {
  const char *close = NULL;
  for (size_t i = 0; i < len; i++)
    if (text[i] == ')')
      close = text + i;
  if (!close || n == 0)
    return false;
  const char *p = close + 1, *end = text + len;
  size_t k = 0;
  for (int field = 3; k < n; field++) {
    while (p < end && *p == ' ')
      p++;
    const char *tok = p;
    while (p < end && *p != ' ' && *p != '\n')
      p++;
    if (p == tok)
      return false;
    if (field == want[k]) {
      char num[24];
      size_t l = (size_t)(p - tok);
      if (l >= sizeof(num))
        return false;
      memcpy(num, tok, l);
      num[l] = '\0';
      if (!g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64, &out[k], NULL))
        return false;
      k++;
    }
  }
  return true;
}

bool vgpu_proc_stat_parse(const char *text, size_t len, pid_t *ppid, uint64_t *start) {
  /* Field 4 (ppid), 22 (starttime). */
  static const int want[] = {4, 22};
  uint64_t v[2];
  if (!stat_fields(text, len, want, 2, v) || v[0] > G_MAXINT32)
    return false;
  *ppid = (pid_t)v[0];
  *start = v[1];
  return true;
}

bool vgpu_proc_stat_cpu(const char *text, size_t len, uint64_t *ticks) {
  /* Field 14 (utime), 15 (stime). */
  static const int want[] = {14, 15};
  uint64_t v[2];
  if (!stat_fields(text, len, want, 2, v) || v[0] > UINT64_MAX - v[1])
    return false;
  *ticks = v[0] + v[1];
  return true;
}

bool vgpu_proc_schedstat(const char *text, size_t len, uint64_t *run_ns, uint64_t *delay_ns) {
  /* Three decimal numbers separated by single spaces, a newline at most
   * after them. */
  uint64_t v[3];
  size_t p = 0;
  for (int k = 0; k < 3; k++) {
    if (k > 0) {
      if (p >= len || text[p] != ' ')
        return false;
      p++;
    }
    char num[24];
    size_t l = 0;
    while (p < len && text[p] >= '0' && text[p] <= '9') {
      if (l + 1 >= sizeof(num))
        return false;
      num[l++] = text[p++];
    }
    num[l] = '\0';
    if (l == 0 || !g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64, &v[k], NULL))
      return false;
  }
  if (p < len && !(text[p] == '\n' && p + 1 == len))
    return false;
  *run_ns = v[0];
  *delay_ns = v[1];
  return true;
}

bool vgpu_proc_stat_idle(const char *text, size_t len, const cpu_set_t *mask, uint64_t *ticks,
                         unsigned *ncpus) {
  const char *p = text, *end = text + len;
  uint64_t sum = 0;
  unsigned n = 0;
  bool any = false;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    size_t l = (size_t)(line_end - p);
    /* "cpuN user nice system idle iowait ...": the first four numbers
     * after the name are user, nice, system, idle; the fifth iowait. */
    if (l > 3 && memcmp(p, "cpu", 3) == 0 && g_ascii_isdigit(p[3]) && l < 512) {
      char line[512];
      memcpy(line, p, l);
      line[l] = '\0';
      g_auto(GStrv) f = g_strsplit_set(line, " ", -1);
      guint64 cpu = 0, v[5] = {0};
      guint got = 0;
      bool ok = g_ascii_string_to_unsigned(f[0] + 3, 10, 0, CPU_SETSIZE - 1, &cpu, NULL);
      for (guint i = 1; ok && f[i] && got < 5; i++) {
        if (!*f[i])
          continue; /* runs of spaces */
        ok = g_ascii_string_to_unsigned(f[i], 10, 0, G_MAXUINT64, &v[got], NULL);
        got++;
      }
      if (ok && got == 5) {
        any = true;
        if (!mask || CPU_ISSET((int)cpu, mask)) {
          /* Saturating: a sum past 2^64 ticks is no real reading. */
          uint64_t idle = v[3] > UINT64_MAX - v[4] ? UINT64_MAX : v[3] + v[4];
          sum = idle > UINT64_MAX - sum ? UINT64_MAX : sum + idle;
          n++;
        }
      }
    }
    p = eol ? eol + 1 : end;
  }
  *ticks = sum;
  *ncpus = n;
  return any;
}

guint vgpu_proc_ancestry(pid_t pid, VgpuProcRef *out, guint max) {
  guint n = 0;
  while (pid > 0 && n < max) {
    char path[32], buf[1024];
    g_snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
      break;
    ssize_t len;
    do
      len = read(fd, buf, sizeof(buf) - 1);
    while (len < 0 && errno == EINTR);
    close(fd);
    pid_t ppid;
    uint64_t start;
    if (len <= 0 || !vgpu_proc_stat_parse(buf, (size_t)len, &ppid, &start))
      break;
    out[n].pid = pid;
    out[n].start = start;
    n++;
    if (pid == 1)
      break;
    pid = ppid;
  }
  return n;
}
