#include "daemon/isolation.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "core/ledger.h"
#include "core/profile.h"
#include "util/fd.h"
#include "util/log.h"
#include "vgpu-config.h"

struct VgpuIsolation {
  bool own_uids; /* vgpud is root: workers get uids of their own */
  uint32_t first, last;
  uint32_t next;      /* round robin: a uid just freed is the last one reused */
  GHashTable *in_use; /* uid -> 1 */
  GHashTable *taken;  /* ids of the range an account owns: never given out */
  /* The local account files, read again on a spawn once changed. */
  const char *passwd_path, *group_path;
  struct stat passwd_seen, group_seen;
  bool render_group;
  gid_t render_gid;
  VgpuMemCap memcap;
  char *cgroup_workers;     /* <vgpud's cgroup>/workers, with cgroups */
  bool cgroup_workers_made; /* made at the first worker that needs it */
};

bool vgpu_uid_range_parse(const char *s, uint32_t *first, uint32_t *last) {
  if (!s)
    return false;
  g_auto(GStrv) parts = g_strsplit(s, "-", 3);
  guint64 a, b;
  if (g_strv_length(parts) != 2 ||
      !g_ascii_string_to_unsigned(parts[0], 10, 1, G_MAXINT32 - 1, &a, NULL) ||
      !g_ascii_string_to_unsigned(parts[1], 10, 1, G_MAXINT32 - 1, &b, NULL) || a > b)
    return false;
  *first = (uint32_t)a;
  *last = (uint32_t)b;
  return true;
}

/* ---- start-up checks ------------------------------------------------------ */

static bool in_range(const VgpuIsolation *iso, uint64_t id) {
  return id >= iso->first && id <= iso->last;
}

static bool take(VgpuIsolation *iso, uint32_t id) {
  return in_range(iso, id) && g_hash_table_add(iso->taken, GUINT_TO_POINTER((guint)id));
}

static bool same_file(const struct stat *a, const struct stat *b) {
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
         a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Sets aside the ids of the range that a local account file (group:
 * /etc/group's format, else /etc/passwd's) gives out, once it has changed
 * since it was last read (*seen): a stat(), and a read of a local file
 * when it changed, never a lookup through NSS, so a spawn never waits on
 * a network directory.  Logs each id newly set aside when @say. */
static void scan_local_file(VgpuIsolation *iso, const char *path, struct stat *seen, bool group,
                            bool say) {
  struct stat st;
  if (stat(path, &st) < 0 || same_file(&st, seen))
    return;
  *seen = st;
  FILE *f = fopen(path, "re");
  if (!f)
    return;
  for (;;) {
    uint32_t id;
    const char *name;
    if (group) {
      struct group *gr = fgetgrent(f);
      if (!gr)
        break;
      id = gr->gr_gid;
      name = gr->gr_name;
    } else {
      struct passwd *pw = fgetpwent(f);
      if (!pw)
        break;
      id = pw->pw_uid;
      name = pw->pw_name;
    }
    if (take(iso, id) && say)
      vgpu_warn("isolation: id %u of worker-uid-range now belongs to %s %s; it is never given "
                "to a worker",
                id, group ? "group" : "user", name);
  }
  fclose(f);
}

static void scan_local_files(VgpuIsolation *iso, bool say) {
  scan_local_file(iso, iso->passwd_path, &iso->passwd_seen, false, say);
  scan_local_file(iso, iso->group_path, &iso->group_seen, true, say);
}

/* Ids of the range that users or groups own are set aside, never given
 * to a worker (a worker's uid and gid are the same id), as systemd does
 * for its dynamic users: Debian, for one, gives packages such as
 * libvirt's fixed ids from 64000-64999, inside systemd's range.  The set
 * is built anew here, at start-up and on each reload: the system's
 * databases are listed through NSS (getpwent, getgrent) only then, never
 * on a spawn.  Returns the number of ids no account owns. */
static uint64_t collect_accounts(VgpuIsolation *iso) {
  g_autofree char *example = NULL;
  g_hash_table_remove_all(iso->taken);
  setpwent();
  for (struct passwd *pw; (pw = getpwent());)
    if (take(iso, pw->pw_uid) && !example)
      example = g_strdup_printf("user %s, uid %u", pw->pw_name, (unsigned)pw->pw_uid);
  endpwent();
  setgrent();
  for (struct group *gr; (gr = getgrent());)
    if (take(iso, gr->gr_gid) && !example)
      example = g_strdup_printf("group %s, gid %u", gr->gr_name, (unsigned)gr->gr_gid);
  endgrent();
  /* The local files too, whatever NSS lists, and their state noted for
   * the spawns to come. */
  iso->passwd_seen = (struct stat){0};
  iso->group_seen = (struct stat){0};
  scan_local_files(iso, false);
  uint64_t n = (uint64_t)iso->last - iso->first + 1, taken = g_hash_table_size(iso->taken);
  if (taken)
    vgpu_info("isolation: %" G_GUINT64_FORMAT " ids of worker-uid-range belong to accounts (%s%s) "
              "and are never given to a worker",
              taken, example ? example : "in the local account files", taken > 1 ? ", ..." : "");
  return n - taken;
}

/* Refuses a range with fewer free ids than workers may run at once. */
static bool enough_free_ids(const VgpuIsolation *iso, uint64_t free_ids, GError **error) {
  if (free_ids >= VGPU_LEDGER_MAX_SLOTS)
    return true;
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
              "worker-uid-range %u-%u has %" G_GUINT64_FORMAT " ids no account owns, fewer "
              "than the %u workers that may run at once: choose a larger range",
              iso->first, iso->last, free_ids, VGPU_LEDGER_MAX_SLOTS);
  return false;
}

/* /etc/subuid and /etc/subgid lines "name:first:count": a user who owns
 * subordinate ids in the range could become a worker's uid in a user
 * namespace of their own. */
static bool check_subids(const VgpuIsolation *iso, const char *path, GError **error) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return true; /* none assigned */
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    g_auto(GStrv) f = g_strsplit(lines[i], ":", 4);
    guint64 start, count;
    if (g_strv_length(f) != 3 ||
        !g_ascii_string_to_unsigned(f[1], 10, 0, G_MAXUINT32, &start, NULL) ||
        !g_ascii_string_to_unsigned(f[2], 10, 1, G_MAXUINT32, &count, NULL))
      continue;
    if (start <= iso->last && start + count - 1 >= iso->first) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                  "worker-uid-range %u-%u overlaps %s's subordinate ids %" G_GUINT64_FORMAT
                  "-%" G_GUINT64_FORMAT " in %s",
                  iso->first, iso->last, f[0], start, start + count - 1, path);
      return false;
    }
  }
  return true;
}

/* ---- cgroup v2 ------------------------------------------------------------ */

static bool write_file(const char *dir, const char *name, const char *text) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  vgpu_autofd int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return false;
  return vgpu_write_all(fd, text, strlen(text)) == 0;
}

/* The cgroup2 mount point, from /proc/self/mountinfo. */
static char *cgroup2_mount(void) {
  g_autofree char *info = NULL;
  if (!g_file_get_contents("/proc/self/mountinfo", &info, NULL, NULL))
    return NULL;
  g_auto(GStrv) lines = g_strsplit(info, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    const char *sep = strstr(lines[i], " - ");
    g_auto(GStrv) f = g_strsplit(lines[i], " ", 6);
    if (sep && g_str_has_prefix(sep, " - cgroup2 ") && g_strv_length(f) >= 5)
      return g_strdup(f[4]);
  }
  return NULL;
}

/* Sets iso->memcap to cgroups when vgpud's cgroup (v2) has the memory
 * controller and is delegated to it (systemd's Delegate=yes marks it with
 * the trusted.delegate or user.delegate attribute); *why says otherwise
 * why not.  Moves vgpud into <cg>/daemon, since a cgroup with processes
 * cannot hand controllers to its children.  <cg>/workers, where workers
 * go when CPU cgroups do not place them under their instance's group
 * (daemon/cgroup.c) and the renderer probe always, is made at the first
 * such worker and removed at exit. */
static void cgroup_setup(VgpuIsolation *iso, char **why) {
  g_autofree char *mnt = cgroup2_mount();
  g_autofree char *self = NULL;
  if (!mnt) {
    *why = g_strdup("no cgroup v2 hierarchy is mounted");
    return;
  }
  g_autofree char *cgs = NULL;
  if (g_file_get_contents("/proc/self/cgroup", &cgs, NULL, NULL)) {
    g_auto(GStrv) lines = g_strsplit(cgs, "\n", -1);
    for (int i = 0; lines[i] && !self; i++)
      if (g_str_has_prefix(lines[i], "0::"))
        self = g_strdup(lines[i] + 3);
  }
  if (!self) {
    *why = g_strdup("vgpud is in no cgroup v2");
    return;
  }
  g_autofree char *dir = g_build_filename(mnt, self, NULL);
  g_autofree char *path = g_build_filename(dir, "cgroup.controllers", NULL);
  g_autofree char *ctrl = NULL;
  g_file_get_contents(path, &ctrl, NULL, NULL);
  g_auto(GStrv) names = g_strsplit_set(ctrl ? g_strstrip(ctrl) : "", " ", -1);
  if (!g_strv_contains((const char *const *)names, "memory")) {
    *why = g_strdup_printf("the memory controller is not available in %s", dir);
    return;
  }
  char v[8];
  bool delegated = getxattr(dir, "trusted.delegate", v, sizeof(v)) > 0 ||
                   getxattr(dir, "user.delegate", v, sizeof(v)) > 0;
  if (!delegated || access(dir, W_OK) < 0) {
    *why = g_strdup_printf("%s is not delegated to vgpud (systemd: Delegate=yes)", dir);
    return;
  }
  g_autofree char *daemon = g_build_filename(dir, "daemon", NULL);
  g_autofree char *workers = g_build_filename(dir, "workers", NULL);
  if ((mkdir(daemon, 0755) < 0 && errno != EEXIST) || !write_file(daemon, "cgroup.procs", "0") ||
      !write_file(dir, "cgroup.subtree_control", "+memory")) {
    *why = g_strdup_printf("setting up %s: %s", dir, g_strerror(errno));
    return;
  }
  iso->cgroup_workers = g_steal_pointer(&workers);
  iso->memcap = VGPU_MEMCAP_CGROUP;
}

/* ---- public --------------------------------------------------------------- */

VgpuIsolation *vgpu_isolation_new(const VgpuConfig *cfg, const char *render_node, GError **error) {
  g_autofree VgpuIsolation *iso = g_new0(VgpuIsolation, 1);
  iso->first = cfg->worker_uid_first;
  iso->last = cfg->worker_uid_last;
  iso->next = iso->first;
  iso->own_uids = geteuid() == 0;
  iso->in_use = g_hash_table_new(g_direct_hash, g_direct_equal);
  iso->taken = g_hash_table_new(g_direct_hash, g_direct_equal);
  iso->passwd_path = "/etc/passwd";
  iso->group_path = "/etc/group";
  if (iso->own_uids) {
    if (!enough_free_ids(iso, collect_accounts(iso), error) ||
        !check_subids(iso, "/etc/subuid", error) || !check_subids(iso, "/etc/subgid", error)) {
      vgpu_isolation_free(g_steal_pointer(&iso));
      return NULL;
    }
    vgpu_info("isolation: each worker runs as a uid and gid of its own from %u-%u, without "
              "supplementary groups or capabilities (bounding set emptied), with no_new_privs",
              iso->first, iso->last);
    struct stat st;
    if (render_node && stat(render_node, &st) == 0 &&
        (st.st_mode & (S_IROTH | S_IWOTH)) != (S_IROTH | S_IWOTH)) {
      iso->render_group = true;
      iso->render_gid = st.st_gid;
      vgpu_info("isolation: workers keep group %u to open %s", (unsigned)st.st_gid, render_node);
    }
  } else {
    vgpu_info("isolation: vgpud is not root (uid %u): workers run as uid %u like vgpud, with "
              "no_new_privs; no uid of their own, so they can signal and inspect each other and "
              "vgpud",
              (unsigned)geteuid(), (unsigned)geteuid());
  }
  if (!cfg->sandbox)
    vgpu_warn("isolation: sandbox=false: workers run without a system-call filter");
  else if (!HAVE_SECCOMP)
    vgpu_warn("isolation: built without libseccomp: workers run without a system-call filter");
  else
    vgpu_info("isolation: workers install a seccomp allow-list once their renderer is up");
  g_autofree char *why = NULL;
  cgroup_setup(iso, &why);
  if (iso->memcap == VGPU_MEMCAP_CGROUP) {
    g_autofree char *below = g_path_get_dirname(iso->cgroup_workers);
    vgpu_info("isolation: host-memory cap: cgroup v2 memory.max in each worker's own cgroup "
              "below %s",
              below);
  } else
    vgpu_info("isolation: host-memory cap: RLIMIT_DATA set by each worker once its renderer is "
              "up (no cgroup: %s)",
              why);
  return g_steal_pointer(&iso);
}

void vgpu_isolation_free(VgpuIsolation *iso) {
  if (!iso)
    return;
  if (iso->in_use)
    g_hash_table_unref(iso->in_use);
  if (iso->taken)
    g_hash_table_unref(iso->taken);
  /* Empty once every worker (the renderer probe among them) is reaped;
   * one still running keeps it, and the next vgpud reuses it. */
  if (iso->cgroup_workers_made && rmdir(iso->cgroup_workers) < 0 && errno != ENOENT)
    vgpu_warn("removing %s: %s", iso->cgroup_workers, g_strerror(errno));
  g_free(iso->cgroup_workers);
  g_free(iso);
}

void vgpu_isolation_reload(VgpuIsolation *iso) {
  if (!iso->own_uids)
    return;
  g_autoptr(GError) e = NULL;
  if (!enough_free_ids(iso, collect_accounts(iso), &e))
    vgpu_warn("isolation: %s", e->message);
}

void vgpu_isolation_set_account_files(VgpuIsolation *iso, const char *passwd, const char *group) {
  iso->passwd_path = passwd;
  iso->group_path = group;
  iso->passwd_seen = (struct stat){0};
  iso->group_seen = (struct stat){0};
}

VgpuMemCap vgpu_isolation_memcap(const VgpuIsolation *iso) {
  return iso->memcap;
}

bool vgpu_isolation_worker_prepare(VgpuIsolation *iso, uint64_t host_memory,
                                   const char *cgroup_parent, VgpuWorkerIdentity *id,
                                   GError **error) {
  *id = (VgpuWorkerIdentity){.cgroup_procs_fd = -1};
  if (iso->own_uids) {
    /* The next id neither a worker nor an account holds.  An account
     * made since start-up in the local files is found here; one only a
     * network directory holds, at the next reload. */
    scan_local_files(iso, true);
    uint64_t n = (uint64_t)iso->last - iso->first + 1;
    bool found = false;
    for (uint64_t tries = 0; !found && tries < n; tries++) {
      gpointer key = GUINT_TO_POINTER(iso->next);
      found = !g_hash_table_contains(iso->in_use, key) && !g_hash_table_contains(iso->taken, key);
      if (!found)
        iso->next = iso->next >= iso->last ? iso->first : iso->next + 1;
    }
    if (!found) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                  "all %" G_GUINT64_FORMAT " worker uids (%u-%u) are in use or owned by accounts",
                  n, iso->first, iso->last);
      return false;
    }
    id->own_uid = true;
    id->uid = iso->next;
    id->gid = iso->next;
    iso->next = iso->next >= iso->last ? iso->first : iso->next + 1;
    if (iso->render_group) {
      id->groups[0] = iso->render_gid;
      id->n_groups = 1;
    }
  }
  bool memcg = iso->memcap == VGPU_MEMCAP_CGROUP;
  if (memcg && !cgroup_parent && !iso->cgroup_workers_made) {
    if ((mkdir(iso->cgroup_workers, 0755) < 0 && errno != EEXIST) ||
        !write_file(iso->cgroup_workers, "cgroup.subtree_control", "+memory")) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "setting up %s: %s",
                  iso->cgroup_workers, g_strerror(errno));
      return false;
    }
    iso->cgroup_workers_made = true;
  }
  if (memcg || cgroup_parent) {
    static guint64 serial;
    g_autofree char *dir = g_strdup_printf(
        "%s/w%" G_GUINT64_FORMAT, cgroup_parent ? cgroup_parent : iso->cgroup_workers, ++serial);
    g_autofree char *max = g_strdup_printf("%" G_GUINT64_FORMAT, host_memory);
    /* A w<N> left behind by an earlier vgpud that did not stop cleanly is
     * empty (its workers died with it): removed and made anew. */
    if (mkdir(dir, 0755) < 0 && (errno != EEXIST || rmdir(dir) < 0 || mkdir(dir, 0755) < 0)) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                  "creating the worker cgroup %s: %s", dir, g_strerror(errno));
      return false;
    }
    if (memcg && !write_file(dir, "memory.max", max)) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                  "creating the worker cgroup %s: %s", dir, g_strerror(errno));
      (void)rmdir(dir);
      return false;
    }
    if (memcg)
      (void)write_file(dir, "memory.swap.max", "0"); /* absent without swap accounting */
    g_autofree char *procs = g_build_filename(dir, "cgroup.procs", NULL);
    id->cgroup_procs_fd = open(procs, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (id->cgroup_procs_fd < 0) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "opening %s: %s", procs,
                  g_strerror(errno));
      (void)rmdir(dir);
      return false;
    }
    id->cgroup_dir = g_steal_pointer(&dir);
  }
  if (id->own_uid)
    g_hash_table_add(iso->in_use, GUINT_TO_POINTER(id->uid));
  return true;
}

void vgpu_isolation_worker_spawned(VgpuWorkerIdentity *id) {
  if (id->cgroup_procs_fd >= 0)
    vgpu_close(id->cgroup_procs_fd);
  id->cgroup_procs_fd = -1;
}

bool vgpu_isolation_worker_done(VgpuIsolation *iso, VgpuWorkerIdentity *id) {
  vgpu_isolation_worker_spawned(id);
  if (id->own_uid)
    g_hash_table_remove(iso->in_use, GUINT_TO_POINTER(id->uid));
  id->own_uid = false;
  bool oom = false;
  if (id->cgroup_dir) {
    g_autofree char *path = g_build_filename(id->cgroup_dir, "memory.events", NULL);
    g_autofree char *ev = NULL;
    if (g_file_get_contents(path, &ev, NULL, NULL)) {
      const char *k = strstr(ev, "oom_kill ");
      oom = k && g_ascii_strtoull(k + strlen("oom_kill "), NULL, 10) > 0;
    }
    if (rmdir(id->cgroup_dir) < 0)
      vgpu_warn("removing %s: %s", id->cgroup_dir, g_strerror(errno));
    g_clear_pointer(&id->cgroup_dir, g_free);
  }
  return oom;
}

/* ---- in the child --------------------------------------------------------- */

static G_NORETURN void child_fail(const char *what) {
  int e = errno;
  char buf[160];
  /* snprintf is not on the async-signal-safe list; string copies are. */
  size_t n = 0;
  const char *parts[] = {"vgpu-worker: dropping privileges: ", what, ": ", strerrordesc_np(e),
                         "\n"};
  for (size_t i = 0; i < G_N_ELEMENTS(parts); i++)
    for (const char *p = parts[i] ? parts[i] : "?"; *p && n < sizeof(buf); p++)
      buf[n++] = *p;
  (void)!write(2, buf, n);
  _exit(1);
}

void vgpu_isolation_child_setup(gpointer user_data) {
  const VgpuWorkerIdentity *id = user_data;
  /* Its own process group (no signals sent to vgpud's, such as a
   * terminal's ^C) and no controlling terminal (TIOCSTI on a terminal that
   * is not the caller's controlling one needs CAP_SYS_ADMIN).  Not a
   * session of its own: that would also give each worker a scheduler
   * autogroup of its own, so that N busy tenants took N/(N+1) of the CPU
   * from the local clients that feed them (four tenants ran 10% slower
   * for it).  How tenants share the CPU is for the scheduler to decide on
   * purpose, not a side effect of the sandbox. */
  if (setpgid(0, 0) < 0)
    child_fail("setpgid");
  int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (tty >= 0) {
    int r = ioctl(tty, TIOCNOTTY);
    close(tty);
    if (r < 0)
      child_fail("giving up the controlling terminal");
  }
  if (id->cgroup_procs_fd >= 0 && write(id->cgroup_procs_fd, "0", 1) != 1)
    child_fail("joining its cgroup");
  if (id->own_uid) {
    if (setgroups((size_t)id->n_groups, id->groups) < 0)
      child_fail("setgroups");
    if (setresgid(id->gid, id->gid, id->gid) < 0)
      child_fail("setresgid");
    /* The bounding set needs CAP_SETPCAP, so it goes before the uid. */
    for (int cap = 0; cap < 64; cap++)
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
        child_fail("emptying the capability bounding set");
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    child_fail("clearing ambient capabilities");
  if (id->own_uid) {
    /* All three uids non-zero: the kernel clears the permitted and
     * effective sets (no SECBIT_KEEP_CAPS). */
    if (setresuid(id->uid, id->uid, id->uid) < 0)
      child_fail("setresuid");
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) < 0 || r != id->uid || e != id->uid || s != id->uid ||
        setresuid(0, 0, 0) == 0)
      child_fail("uid did not change for good");
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    child_fail("no_new_privs");
}
