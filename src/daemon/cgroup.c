#include "daemon/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "util/fd.h"
#include "util/log.h"
#include "util/runtime_dir.h"
#include "util/small_file.h"

/* What was last written to an instance's group, to log only changes. */
typedef struct {
  char *dir;
  uint32_t weight;
  uint64_t quota_us;
  bool written;
} Group;

struct VgpuCgroups {
  VgpuCgroupsMode mode;
  char *desc;
  char *own;  /* vgpud's cgroup directory in the hierarchy used */
  char *home; /* v2: <own>/daemon, v1: <own>: where stray processes go */
  char *tree; /* v2: <own>/instances, v1: <own>/vgpu[-HASH] */
  unsigned n_cpus;
  GHashTable *groups; /* instance name -> Group* */
  GHashTable *leaves; /* v1: pid -> its cgroup directory */
  GPtrArray *retry;   /* worker cgroups whose rmdir failed: tried again */
  guint retry_timer;
};

/* ---- pure functions ------------------------------------------------------- */

static bool list_has(const char *list, const char *name, const char *seps) {
  g_auto(GStrv) parts = g_strsplit_set(list, seps, -1);
  return g_strv_contains((const char *const *)parts, name);
}

char *vgpu_cgroup_self_path(const char *text, const char *controller) {
  if (!text)
    return NULL;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    /* "ID:CONTROLLERS:PATH"; the path may itself hold colons. */
    g_auto(GStrv) f = g_strsplit(lines[i], ":", 3);
    if (g_strv_length(f) != 3 || f[2][0] != '/')
      continue;
    bool v2 = g_str_equal(f[0], "0") && f[1][0] == '\0';
    if (controller ? (!v2 && list_has(f[1], controller, ",")) : v2)
      return g_strdup(f[2]);
  }
  return NULL;
}

char *vgpu_cgroup_mount_point(const char *text, const char *controller) {
  if (!text)
    return NULL;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    /* "ID PARENT MAJ:MIN ROOT MOUNT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER" */
    const char *sep = strstr(lines[i], " - ");
    if (!sep)
      continue;
    g_auto(GStrv) f = g_strsplit(lines[i], " ", 6);
    g_auto(GStrv) tail = g_strsplit(sep + 3, " ", 3);
    if (g_strv_length(f) < 5 || g_strv_length(tail) < 3 || !g_str_equal(f[3], "/"))
      continue;
    if (controller ? (g_str_equal(tail[0], "cgroup") && list_has(tail[2], controller, ","))
                   : g_str_equal(tail[0], "cgroup2"))
      return g_strdup(f[4]);
  }
  return NULL;
}

uint32_t vgpu_cgroup_cpu_weight(const VgpuProfile *p) {
  if (p->share != VGPU_SHARE_FIXED)
    return 100;
  return CLAMP(p->weight, 1u, 10000u);
}

uint64_t vgpu_cgroup_v1_shares(uint32_t weight) {
  uint64_t s = ((uint64_t)weight * 1024 + 50) / 100;
  return CLAMP(s, 2u, 262144u);
}

uint64_t vgpu_cgroup_quota_us(uint32_t weight, uint64_t total, unsigned n_cpus,
                              uint64_t period_us) {
  if (total == 0 || n_cpus == 0 || weight > total)
    return 0;
  /* weight <= 10000, n_cpus < 2^32, period <= 10^6: no overflow, but
   * checked all the same. */
  uint64_t num;
  if (__builtin_mul_overflow((uint64_t)weight, (uint64_t)n_cpus, &num) ||
      __builtin_mul_overflow(num, period_us, &num))
    return 0;
  uint64_t q = num / total;
  return MAX(q, (uint64_t)VGPU_CGROUP_MIN_QUOTA_US);
}

uint64_t vgpu_cgroup_weight_total(const VgpuInstanceConfig *const *instances, guint n) {
  uint64_t t = 0;
  for (guint i = 0; i < n; i++)
    if (instances[i]->eff.share != VGPU_SHARE_BEST_EFFORT)
      t += instances[i]->eff.weight;
  return t;
}

/* ---- files ---------------------------------------------------------------- */

static int write_file(const char *dir, const char *name, const char *text) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  vgpu_autofd int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return -errno;
  return vgpu_write_all(fd, text, strlen(text));
}

/* cgroup.procs never holds more: one line of at most 7 digits and a
 * newline for each of the 4194304 pids the kernel can hand out. */
#define PROCS_MAX ((size_t)8 << 22)

/* Moves the processes of dir (and of its descendants) to @home and
 * removes the directories.  Returns the number of processes moved; *busy
 * is set when a directory could not be removed. */
static guint empty_and_remove(const char *dir, const char *home, bool *busy) {
  guint moved = 0;
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  if (!d)
    return 0;
  for (const char *e; (e = g_dir_read_name(d));) {
    g_autofree char *sub = g_build_filename(dir, e, NULL);
    struct stat st;
    if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
      moved += empty_and_remove(sub, home, busy);
  }
  g_autofree char *procs = vgpu_read_small(dir, "cgroup.procs", PROCS_MAX);
  g_auto(GStrv) pids = g_strsplit(procs ? procs : "", "\n", -1);
  for (int i = 0; pids[i]; i++)
    if (*pids[i] && write_file(home, "cgroup.procs", pids[i]) == 0)
      moved++;
  if (rmdir(dir) < 0 && errno != ENOENT)
    *busy = true;
  return moved;
}

/* Enables whichever of cpu and memory dir's parent hands down in dir's
 * subtree, so its children get them too. */
static int enable_controllers(const char *dir) {
  g_autofree char *have = vgpu_read_small(dir, "cgroup.controllers", VGPU_SMALL_FILE_MAX);
  if (!have)
    return -errno;
  g_strstrip(have);
  if (!list_has(have, "cpu", " "))
    return -EOPNOTSUPP;
  int r = write_file(dir, "cgroup.subtree_control", "+cpu");
  if (r == 0 && list_has(have, "memory", " "))
    r = write_file(dir, "cgroup.subtree_control", "+memory");
  return r;
}

static int make_dir(const char *dir) {
  if (mkdir(dir, 0755) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* A tree left by a vgpud that did not stop cleanly: its workers are gone
 * or orphaned; those still there are moved to @home first. */
static void clean_stale(const char *tree, const char *home) {
  if (!g_file_test(tree, G_FILE_TEST_IS_DIR))
    return;
  bool busy = false;
  guint moved = empty_and_remove(tree, home, &busy);
  if (busy)
    vgpu_warn("cgroup: %s was left by an earlier vgpud and cannot be removed; reusing it", tree);
  else
    vgpu_info("cgroup: removed %s, left by an earlier vgpud (%u process(es) moved out)", tree,
              moved);
}

/* ---- set-up --------------------------------------------------------------- */

static bool delegated(const char *dir) {
  char v[8];
  return getxattr(dir, "trusted.delegate", v, sizeof(v)) > 0 ||
         getxattr(dir, "user.delegate", v, sizeof(v)) > 0;
}

/* cgroup v2: true when set up, else *why says why not. */
static bool setup_v2(VgpuCgroups *cg, const char *mountinfo, const char *self, char **why) {
  g_autofree char *mnt = vgpu_cgroup_mount_point(mountinfo, NULL);
  g_autofree char *path = vgpu_cgroup_self_path(self, NULL);
  if (!mnt || !path) {
    *why = g_strdup(!mnt ? "no cgroup2 mount" : "vgpud is in no cgroup v2");
    return false;
  }
  g_autofree char *own = g_build_filename(mnt, path, NULL);
  /* The host-memory cap (daemon/isolation.c) is set up first and may
   * have moved vgpud into <own>/daemon already: the delegated cgroup is
   * then the parent. */
  g_autofree char *base = g_path_get_basename(own);
  g_autofree char *parent = g_path_get_dirname(own);
  if (g_str_equal(base, "daemon") && !delegated(own) && delegated(parent)) {
    g_free(own);
    own = g_steal_pointer(&parent);
  }
  g_autofree char *have = vgpu_read_small(own, "cgroup.controllers", VGPU_SMALL_FILE_MAX);
  if (!have || !list_has(g_strstrip(have), "cpu", " ")) {
    *why = g_strdup_printf("no cpu controller in %s/cgroup.controllers", own);
    return false;
  }
  if (!delegated(own) || access(own, W_OK) < 0) {
    *why = g_strdup_printf("%s is not delegated to vgpud (systemd: Delegate=yes)", own);
    return false;
  }
  /* No process may sit in a cgroup that hands controllers down. */
  g_autofree char *home = g_build_filename(own, "daemon", NULL);
  g_autofree char *tree = g_build_filename(own, "instances", NULL);
  int r = make_dir(home);
  if (r == 0)
    r = write_file(home, "cgroup.procs", "0");
  if (r == 0)
    r = write_file(own, "cgroup.subtree_control", "+cpu");
  if (r == 0)
    clean_stale(tree, home);
  if (r == 0)
    r = make_dir(tree);
  if (r == 0)
    r = enable_controllers(tree);
  if (r < 0) {
    *why = g_strdup_printf("setting up %s: %s", tree, g_strerror(-r));
    return false;
  }
  cg->own = g_steal_pointer(&own);
  cg->home = g_steal_pointer(&home);
  cg->tree = g_steal_pointer(&tree);
  return true;
}

static bool setup_v1(VgpuCgroups *cg, const char *mountinfo, const char *self,
                     const char *runtime_dir, char **why) {
  g_autofree char *mnt = vgpu_cgroup_mount_point(mountinfo, "cpu");
  g_autofree char *path = vgpu_cgroup_self_path(self, "cpu");
  if (!mnt || !path) {
    *why = g_strdup("no cgroup v1 cpu hierarchy");
    return false;
  }
  g_autofree char *own = g_build_filename(mnt, path, NULL);
  g_autofree char *shares = g_build_filename(own, "cpu.shares", NULL);
  g_autofree char *quota = g_build_filename(own, "cpu.cfs_quota_us", NULL);
  if (access(own, W_OK) < 0 || access(shares, F_OK) < 0) {
    *why = g_strdup_printf("%s is not writable or has no cpu.shares", own);
    return false;
  }
  if (access(quota, F_OK) < 0) {
    *why =
        g_strdup_printf("%s has no cpu.cfs_quota_us (kernel without CFS bandwidth control)", own);
    return false;
  }
  /* Two vgpuds (their runtime directories differ) never share a tree. */
  g_autofree char *def = vgpu_builtin_runtime_dir();
  g_autofree char *name = g_strcmp0(def, runtime_dir) == 0 || !runtime_dir
                              ? g_strdup("vgpu")
                              : g_strdup_printf("vgpu-%08x", g_str_hash(runtime_dir));
  g_autofree char *tree = g_build_filename(own, name, NULL);
  clean_stale(tree, own);
  int r = make_dir(tree);
  if (r < 0) {
    *why = g_strdup_printf("creating %s: %s", tree, g_strerror(-r));
    return false;
  }
  cg->own = g_steal_pointer(&own);
  cg->home = g_strdup(cg->own);
  cg->tree = g_steal_pointer(&tree);
  return true;
}

static void group_free(gpointer p) {
  Group *g = p;
  g_free(g->dir);
  g_free(g);
}

VgpuCgroups *vgpu_cgroups_new(bool enabled, const char *runtime_dir) {
  VgpuCgroups *cg = g_new0(VgpuCgroups, 1);
  cg->groups = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, group_free);
  cg->leaves = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  cg->retry = g_ptr_array_new_with_free_func(g_free);
  cg->n_cpus = MAX(g_get_num_processors(), 1u);
  if (!enabled) {
    cg->desc = g_strdup("cgroup: off (cgroups=off in [daemon])");
    return cg;
  }
  g_autofree char *mountinfo = NULL, *self = NULL;
  (void)g_file_get_contents("/proc/self/mountinfo", &mountinfo, NULL, NULL);
  (void)g_file_get_contents("/proc/self/cgroup", &self, NULL, NULL);
  g_autofree char *why2 = NULL, *why1 = NULL;
  if (geteuid() != 0) {
    cg->desc = g_strdup("cgroup: off (vgpud is not root: workers run as its uid and could "
                        "change their own cgroup)");
    return cg;
  }
  if (setup_v2(cg, mountinfo, self, &why2)) {
    cg->mode = VGPU_CGROUPS_V2;
    cg->desc = g_strdup_printf("cgroup v2 cpu at %s (cpu.weight, cpu.max for fixed shares; one "
                               "cgroup per worker)",
                               cg->tree);
  } else if (setup_v1(cg, mountinfo, self, runtime_dir, &why1)) {
    cg->mode = VGPU_CGROUPS_V1;
    cg->desc = g_strdup_printf("cgroup v1 cpu at %s (cpu.shares, cfs quota for fixed shares; one "
                               "cgroup per worker)",
                               cg->tree);
  } else {
    cg->desc =
        g_strdup_printf("cgroup: off (no writable cpu controller: v2: %s; v1: %s)", why2, why1);
  }
  return cg;
}

void vgpu_cgroups_free(VgpuCgroups *cg) {
  if (!cg)
    return;
  if (cg->retry_timer)
    g_source_remove(cg->retry_timer);
  if (cg->tree) {
    bool busy = false;
    guint moved = empty_and_remove(cg->tree, cg->home, &busy);
    if (busy || moved)
      vgpu_warn("cgroup: %s: %u process(es) moved out%s", cg->tree, moved,
                busy ? ", some directories still busy" : "");
  }
  g_hash_table_unref(cg->groups);
  g_hash_table_unref(cg->leaves);
  g_ptr_array_unref(cg->retry);
  g_free(cg->desc);
  g_free(cg->own);
  g_free(cg->home);
  g_free(cg->tree);
  g_free(cg);
}

VgpuCgroupsMode vgpu_cgroups_mode(const VgpuCgroups *cg) {
  return cg->mode;
}

const char *vgpu_cgroups_describe(const VgpuCgroups *cg) {
  return cg->desc;
}

/* ---- groups --------------------------------------------------------------- */

static Group *group_get(VgpuCgroups *cg, const char *name) {
  Group *g = g_hash_table_lookup(cg->groups, name);
  if (g)
    return g;
  if (!vgpu_instance_name_valid(name))
    return NULL;
  g_autofree char *dir = g_build_filename(cg->tree, name, NULL);
  int r = make_dir(dir);
  if (r == 0 && cg->mode == VGPU_CGROUPS_V2)
    r = enable_controllers(dir);
  if (r < 0) {
    vgpu_warn("cgroup: %s: cannot create %s: %s", name, dir, g_strerror(-r));
    return NULL;
  }
  g = g_new0(Group, 1);
  g->dir = g_steal_pointer(&dir);
  g_hash_table_insert(cg->groups, g_strdup(name), g);
  return g;
}

/* The burst of a ceiling (VGPU_CGROUP_PERIOD_US): the kernel refuses one
 * above the quota, so it is cleared before the quota changes and set
 * after.  Kernels before 5.14 have no burst file: nothing to write. */
static int burst_write(Group *g, const char *name, uint64_t burst) {
  char b[32];
  g_snprintf(b, sizeof(b), "%" G_GUINT64_FORMAT, burst);
  int r = write_file(g->dir, name, b);
  return r == -ENOENT ? 0 : r;
}

static int group_write(VgpuCgroups *cg, Group *g, uint32_t weight, uint64_t quota) {
  char w[32], q[48];
  bool v2 = cg->mode == VGPU_CGROUPS_V2;
  const char *burst = v2 ? "cpu.max.burst" : "cpu.cfs_burst_us";
  int r = burst_write(g, burst, 0);
  if (r < 0)
    return r;
  if (v2) {
    g_snprintf(w, sizeof(w), "%u", weight);
    if (quota)
      g_snprintf(q, sizeof(q), "%" G_GUINT64_FORMAT " %u", quota, VGPU_CGROUP_PERIOD_US);
    else
      g_snprintf(q, sizeof(q), "max %u", VGPU_CGROUP_PERIOD_US);
    r = write_file(g->dir, "cpu.weight", w);
    if (r == 0)
      r = write_file(g->dir, "cpu.max", q);
  } else {
    g_snprintf(w, sizeof(w), "%" G_GUINT64_FORMAT, vgpu_cgroup_v1_shares(weight));
    g_snprintf(q, sizeof(q), quota ? "%" G_GUINT64_FORMAT : "-1", quota);
    char p[16];
    g_snprintf(p, sizeof(p), "%u", VGPU_CGROUP_PERIOD_US);
    r = write_file(g->dir, "cpu.shares", w);
    if (r == 0)
      r = write_file(g->dir, "cpu.cfs_period_us", p);
    if (r == 0)
      r = write_file(g->dir, "cpu.cfs_quota_us", q);
  }
  return r < 0 || !quota ? r : burst_write(g, burst, quota);
}

static void retry_rmdirs(VgpuCgroups *cg) {
  for (guint i = cg->retry->len; i-- > 0;) {
    const char *dir = g_ptr_array_index(cg->retry, i);
    if (rmdir(dir) == 0 || errno == ENOENT)
      g_ptr_array_remove_index_fast(cg->retry, i);
  }
}

static gboolean on_retry(gpointer user) {
  VgpuCgroups *cg = user;
  retry_rmdirs(cg);
  if (cg->retry->len)
    return G_SOURCE_CONTINUE;
  cg->retry_timer = 0;
  return G_SOURCE_REMOVE;
}

/* rmdir now, or once a second until the kernel lets go of it. */
static void remove_later(VgpuCgroups *cg, const char *dir) {
  if (rmdir(dir) == 0 || errno == ENOENT)
    return;
  if (errno != EBUSY) {
    vgpu_warn("cgroup: removing %s: %s", dir, g_strerror(errno));
    return;
  }
  g_ptr_array_add(cg->retry, g_strdup(dir));
  if (!cg->retry_timer)
    cg->retry_timer = g_timeout_add_seconds(1, on_retry, cg);
}

void vgpu_cgroups_apply(VgpuCgroups *cg, const VgpuInstanceConfig *const *instances, guint n) {
  if (cg->mode == VGPU_CGROUPS_OFF)
    return;
  retry_rmdirs(cg);
  uint64_t total = vgpu_cgroup_weight_total(instances, n);
  for (guint i = 0; i < n; i++) {
    const VgpuInstanceConfig *ic = instances[i];
    Group *g = group_get(cg, ic->name);
    if (!g)
      continue;
    uint32_t weight = vgpu_cgroup_cpu_weight(&ic->eff);
    uint64_t quota =
        ic->eff.share == VGPU_SHARE_FIXED
            ? vgpu_cgroup_quota_us(ic->eff.weight, total, cg->n_cpus, VGPU_CGROUP_PERIOD_US)
            : 0;
    if (g->written && g->weight == weight && g->quota_us == quota)
      continue;
    int r = group_write(cg, g, weight, quota);
    if (r < 0) {
      vgpu_warn("cgroup: %s: cannot set its CPU weight in %s: %s", ic->name, g->dir,
                g_strerror(-r));
      continue;
    }
    g->written = true;
    g->weight = weight;
    g->quota_us = quota;
    if (quota)
      vgpu_info("cgroup: %s: CPU weight %u, at most %.2f CPUs (%s)", ic->name, weight,
                (double)quota / VGPU_CGROUP_PERIOD_US, vgpu_share_mode_name(ic->eff.share));
    else
      vgpu_info("cgroup: %s: CPU weight %u, no ceiling (%s)", ic->name, weight,
                vgpu_share_mode_name(ic->eff.share));
  }
  /* Groups of instances that are gone: removed once their workers are. */
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, cg->groups);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    bool live = false;
    for (guint i = 0; i < n && !live; i++)
      live = g_str_equal(instances[i]->name, k);
    if (live)
      continue;
    Group *g = v;
    bool busy = false;
    /* Only empty worker cgroups are removed (home is never written to:
     * a leaf with processes keeps them and stays). */
    g_autoptr(GDir) d = g_dir_open(g->dir, 0, NULL);
    for (const char *e; d && (e = g_dir_read_name(d));) {
      g_autofree char *sub = g_build_filename(g->dir, e, NULL);
      struct stat st;
      if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode) && rmdir(sub) < 0 && errno != ENOENT)
        busy = true;
    }
    if (!busy && (rmdir(g->dir) == 0 || errno == ENOENT))
      g_hash_table_iter_remove(&it);
  }
}

const char *vgpu_cgroups_worker_parent(VgpuCgroups *cg, const char *name) {
  if (cg->mode != VGPU_CGROUPS_V2)
    return NULL;
  Group *g = group_get(cg, name);
  return g ? g->dir : NULL;
}

/* cgroup v1: vgpud's cgroup is the host's root one here, where every
 * process weighs 1024.  Moving the workers into one tree would make all of
 * them together weigh as much as one process against the clients that feed
 * them and the rest of the host; the tree weighs what its workers did as
 * processes instead, and the instances split that by their weights. */
static void tree_weigh(VgpuCgroups *cg) {
  uint64_t n = MAX(g_hash_table_size(cg->leaves), 1u);
  char w[32];
  g_snprintf(w, sizeof(w), "%" G_GUINT64_FORMAT, MIN(n * 1024, (uint64_t)262144));
  int r = write_file(cg->tree, "cpu.shares", w);
  if (r < 0)
    vgpu_warn("cgroup: cannot set %s/cpu.shares: %s", cg->tree, g_strerror(-r));
}

void vgpu_cgroups_attach_worker(VgpuCgroups *cg, const char *name, pid_t pid) {
  if (cg->mode != VGPU_CGROUPS_V1 || pid <= 0)
    return;
  Group *g = group_get(cg, name);
  if (!g)
    return;
  g_autofree char *dir = g_strdup_printf("%s/w%d", g->dir, (int)pid);
  char p[16];
  g_snprintf(p, sizeof(p), "%d", (int)pid);
  int r = make_dir(dir);
  if (r == 0)
    r = write_file(dir, "cgroup.procs", p);
  if (r < 0) {
    /* ESRCH: it has ended already; its exit is handled as any other. */
    if (r != -ESRCH)
      vgpu_warn("cgroup: %s: worker %d stays outside its instance's cgroup: %s: %s", name, (int)pid,
                dir, g_strerror(-r));
    (void)rmdir(dir);
    return;
  }
  g_hash_table_insert(cg->leaves, GINT_TO_POINTER(pid), g_steal_pointer(&dir));
  tree_weigh(cg);
}

void vgpu_cgroups_worker_gone(VgpuCgroups *cg, pid_t pid) {
  char *dir = NULL;
  if (!g_hash_table_steal_extended(cg->leaves, GINT_TO_POINTER(pid), NULL, (gpointer *)&dir))
    return;
  remove_later(cg, dir);
  g_free(dir);
  tree_weigh(cg);
}
