#include "daemon/cpu_capacity.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cgroup.h"
#include "util/proc_stat.h"
#include "util/small_file.h"

/* A decimal number that fills the whole of text (spaces around allowed). */
static bool parse_u64(const char *text, uint64_t *out) {
  if (!text)
    return false;
  g_autofree char *s = g_strstrip(g_strdup(text));
  return *s && g_ascii_string_to_unsigned(s, 10, 0, UINT64_MAX, out, NULL);
}

/* quota / period CPUs in thousandths; 0 when not a ceiling. */
static uint32_t milli_of(uint64_t quota, uint64_t period) {
  if (quota == 0 || period == 0)
    return 0;
  unsigned __int128 m = (unsigned __int128)quota * 1000u / period;
  if (m == 0)
    return 1;
  return m > UINT32_MAX ? UINT32_MAX : (uint32_t)m;
}

uint32_t vgpu_cpu_max_milli(const char *text) {
  if (!text)
    return 0;
  g_autofree char *copy = g_strstrip(g_strdup(text));
  g_auto(GStrv) f = g_strsplit_set(copy, " \t", -1);
  uint64_t quota = 0, period = 0;
  if (g_strv_length(f) != 2 || g_str_equal(f[0], "max") || !parse_u64(f[0], &quota) ||
      !parse_u64(f[1], &period))
    return 0;
  return milli_of(quota, period);
}

uint32_t vgpu_cpu_cfs_milli(const char *quota_text, const char *period_text) {
  uint64_t quota = 0, period = 0;
  /* -1 (no quota) does not parse as unsigned: none. */
  if (!parse_u64(quota_text, &quota) || !parse_u64(period_text, &period))
    return 0;
  return milli_of(quota, period);
}

/* The lowest ceiling from dir up to mnt (both absolute, dir below or at
 * mnt), 0 when none; *where says which directory set it. */
static uint32_t lowest_ceiling(const char *mnt, const char *dir, bool v2, char **where) {
  uint32_t low = 0;
  g_autofree char *d = g_strdup(dir);
  for (int depth = 0; depth < 64; depth++) {
    uint32_t m = 0;
    if (v2) {
      g_autofree char *t = vgpu_read_small(d, "cpu.max", VGPU_SMALL_FILE_MAX);
      m = vgpu_cpu_max_milli(t);
    } else {
      g_autofree char *q = vgpu_read_small(d, "cpu.cfs_quota_us", VGPU_SMALL_FILE_MAX);
      g_autofree char *p = vgpu_read_small(d, "cpu.cfs_period_us", VGPU_SMALL_FILE_MAX);
      m = vgpu_cpu_cfs_milli(q, p);
    }
    if (m && (!low || m < low)) {
      low = m;
      g_free(*where);
      *where = g_strdup(d);
    }
    if (g_str_equal(d, mnt) || g_str_equal(d, "/"))
      break;
    char *up = g_path_get_dirname(d);
    g_free(d);
    d = up;
  }
  return low;
}

uint32_t vgpu_cpu_capacity_milli(char **desc) {
  unsigned cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    cpus = (unsigned)CPU_COUNT(&set);
  if (cpus == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpus = n > 0 ? (unsigned)n : 1u;
  }
  uint64_t milli = (uint64_t)cpus * 1000u;
  g_autofree char *mountinfo = NULL, *self = NULL, *where = NULL;
  (void)g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL);
  (void)g_file_get_contents("/proc/self/cgroup", &self, NULL, NULL);
  uint32_t ceiling = 0;
  for (int v2 = 1; v2 >= 0 && !ceiling; v2--) {
    g_autofree char *mnt = vgpu_cgroup_mount_point(mountinfo, v2 ? NULL : "cpu");
    g_autofree char *path = vgpu_cgroup_self_path(self, v2 ? NULL : "cpu");
    if (!mnt || !path)
      continue;
    g_autofree char *dir = g_build_filename(mnt, path, NULL);
    g_autofree char *canon = g_canonicalize_filename(dir, NULL);
    ceiling = lowest_ceiling(mnt, canon, v2, &where);
  }
  g_autofree char *limit = ceiling ? g_strdup_printf("%u.%03u CPUs by the CPU ceiling of %s",
                                                     ceiling / 1000, ceiling % 1000, where)
                                   : g_strdup("no cgroup CPU ceiling above vgpud");
  if (ceiling && ceiling < milli)
    milli = ceiling;
  milli = MAX(milli, (uint64_t)VGPU_CPU_CAPACITY_MIN_MILLI);
  if (desc)
    *desc = g_strdup_printf("%u.%02u CPUs (affinity: %u CPU%s; %s)", (unsigned)(milli / 1000),
                            (unsigned)(milli % 1000 / 10), cpus, cpus == 1 ? "" : "s", limit);
  return (uint32_t)MIN(milli, (uint64_t)UINT32_MAX);
}

void vgpu_cpu_affinity(cpu_set_t *set) {
  CPU_ZERO(set);
  if (sched_getaffinity(0, sizeof(*set), set) == 0 && CPU_COUNT(set) > 0)
    return;
  for (int i = 0; i < CPU_SETSIZE; i++)
    CPU_SET(i, set);
}

/* Clock ticks (USER_HZ) to ns. */
static uint64_t ticks_ns(uint64_t ticks) {
  static uint64_t per_tick;
  if (!per_tick) {
    long hz = sysconf(_SC_CLK_TCK);
    per_tick = hz > 0 && hz <= 1000000000 ? 1000000000ull / (uint64_t)hz : 10000000ull;
  }
  return ticks > UINT64_MAX / per_tick ? UINT64_MAX : ticks * per_tick;
}

bool vgpu_cpu_idle_ns(const cpu_set_t *set, uint64_t *ns) {
  /* The cpuN lines come first; the interrupt counts after them make the
   * file long on a host with many CPUs and interrupts. */
  g_autofree char *text = vgpu_read_small("/proc", "stat", (size_t)4 * 1024 * 1024);
  uint64_t ticks = 0;
  unsigned n = 0;
  if (!text || !vgpu_proc_stat_idle(text, strlen(text), set, &ticks, &n) || n == 0)
    return false;
  *ns = ticks_ns(ticks);
  return true;
}

bool vgpu_proc_cpu_ns(pid_t pid, uint64_t *ns) {
  char path[32], buf[1024];
  g_snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  ssize_t len = vgpu_read_small_into(AT_FDCWD, path, buf, sizeof(buf));
  uint64_t ticks = 0;
  if (len <= 0 || !vgpu_proc_stat_cpu(buf, (size_t)len, &ticks))
    return false;
  *ns = ticks_ns(ticks);
  return true;
}

bool vgpu_proc_sched_ns(pid_t pid, uint64_t *run_ns, uint64_t *delay_ns) {
  char path[32];
  g_snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (dfd < 0)
    return false;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return false;
  }
  uint64_t run_sum = 0, delay_sum = 0;
  unsigned threads = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    char rel[64], buf[128];
    g_snprintf(rel, sizeof(rel), "%s/schedstat", e->d_name);
    uint64_t run = 0, delay = 0;
    ssize_t len = vgpu_read_small_into(dirfd(d), rel, buf, sizeof(buf));
    /* A thread that ended meanwhile has nothing to add. */
    if (len > 0 && vgpu_proc_schedstat(buf, (size_t)len, &run, &delay)) {
      run_sum = run > UINT64_MAX - run_sum ? UINT64_MAX : run_sum + run;
      delay_sum = delay > UINT64_MAX - delay_sum ? UINT64_MAX : delay_sum + delay;
      threads++;
    }
  }
  closedir(d);
  *run_ns = run_sum;
  *delay_ns = delay_sum;
  return threads > 0;
}
