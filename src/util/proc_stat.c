#include "util/proc_stat.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

bool vgpu_proc_stat_parse(const char *text, size_t len, pid_t *ppid, uint64_t *start) {
  const char *close = NULL;
  for (size_t i = 0; i < len; i++)
    if (text[i] == ')')
      close = text + i;
  if (!close)
    return false;
  /* After ") ": field 3 (state), 4 (ppid), ... 22 (starttime). */
  const char *p = close + 1, *end = text + len;
  guint64 field_ppid = 0, field_start = 0;
  for (int field = 3; field <= 22; field++) {
    while (p < end && *p == ' ')
      p++;
    const char *tok = p;
    while (p < end && *p != ' ' && *p != '\n')
      p++;
    if (p == tok)
      return false;
    if (field == 4 || field == 22) {
      char num[24];
      size_t n = (size_t)(p - tok);
      if (n >= sizeof(num))
        return false;
      memcpy(num, tok, n);
      num[n] = '\0';
      guint64 v;
      if (!g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64, &v, NULL))
        return false;
      if (field == 4)
        field_ppid = v;
      else
        field_start = v;
    }
  }
  if (field_ppid > G_MAXINT32)
    return false;
  *ppid = (pid_t)field_ppid;
  *start = field_start;
  return true;
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
