/* vgpuctl doctor (see doctor.h and vgpuctl(1)). */
#include "cli/doctor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <json-glib/json-glib.h>
#include <linux/kvm.h>

#include "vgpu-config.h"

/* The installed data directory (src/cli/meson.build); the fuzz target
 * compiles this file without it. */
#ifndef VGPU_DATADIR
#define VGPU_DATADIR "/usr/local/share"
#endif

/* Bounds on what is read: sysfs and proc files are small; dpkg's status
 * file is about 1 MiB on a desktop. */
#define SMALL_FILE (64 * 1024)
#define DPKG_FILE (32 * 1024 * 1024)
#define MAX_ENTRIES 4096 /* directory entries looked at per directory */
#define MAX_GPU_IRQS 64

typedef enum { PASS, WARN, FAIL } Status;
static const char *const status_names[] = {"PASS", "WARN", "FAIL"};

typedef struct {
  const char *name;
  Status status;
  char *found;
  char *fix; /* NULL for PASS */
} Check;

typedef struct {
  const char *root;
  bool live; /* root is this machine's "/" */
  GArray *checks;
  /* What later checks use from earlier ones. */
  GPtrArray *gpu_drivers; /* of the render nodes */
  bool kvm_usable;        /* probed, or present where it cannot be probed */
  bool kvm_probed;
} Doctor;

static void add(Doctor *d, const char *name, Status s, char *found, const char *fix_fmt, ...)
    G_GNUC_PRINTF(5, 6);
/* Takes `found`. */
static void add(Doctor *d, const char *name, Status s, char *found, const char *fix_fmt, ...) {
  Check c = {.name = name, .status = s, .found = found};
  if (s != PASS && fix_fmt) {
    va_list ap;
    va_start(ap, fix_fmt);
    c.fix = g_strdup_vprintf(fix_fmt, ap);
    va_end(ap);
  }
  g_array_append_val(d->checks, c);
}

/* ---- bounded reading ----------------------------------------------------- */

static char *path_in(const Doctor *d, const char *rel) {
  return g_build_filename(d->root, rel, NULL);
}

/* Up to `max` bytes of the regular file ROOT/rel, NUL-terminated (a NUL
 * inside is kept: parsers take the length).  NULL when absent, not a
 * regular file or unreadable.  O_NONBLOCK: a FIFO in a tree never blocks. */
static char *read_file(const Doctor *d, const char *rel, gsize max, gsize *len) {
  g_autofree char *p = path_in(d, rel);
  int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return NULL;
  }
  gsize cap = 4096, n = 0;
  char *buf = g_malloc(cap + 1);
  for (;;) {
    if (n == cap) {
      if (cap >= max)
        break;
      cap = MIN(cap * 2, max);
      buf = g_realloc(buf, cap + 1);
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    n += (gsize)r;
  }
  close(fd);
  buf[n] = '\0';
  if (len)
    *len = n;
  return buf;
}

/* The first line of a small file, stripped; NULL when unreadable. */
static char *read_line(const Doctor *d, const char *rel) {
  gsize n = 0;
  char *s = read_file(d, rel, 4096, &n);
  if (!s)
    return NULL;
  s[strcspn(s, "\n")] = '\0';
  return g_strstrip(s);
}

static bool exists(const Doctor *d, const char *rel) {
  g_autofree char *p = path_in(d, rel);
  return access(p, F_OK) == 0;
}

static bool is_dir(const Doctor *d, const char *rel) {
  g_autofree char *p = path_in(d, rel);
  return g_file_test(p, G_FILE_TEST_IS_DIR);
}

static int cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names in ROOT/rel (at most MAX_ENTRIES), or an empty array. */
static GPtrArray *list_dir(const Doctor *d, const char *rel) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *p = path_in(d, rel);
  g_autoptr(GDir) dir = g_dir_open(p, 0, NULL);
  const char *e;
  while (dir && a->len < MAX_ENTRIES && (e = g_dir_read_name(dir)))
    g_ptr_array_add(a, g_strdup(e));
  g_ptr_array_sort(a, cmp_names);
  return a;
}

/* The last component of the symbolic link ROOT/rel points to. */
static char *link_base(const Doctor *d, const char *rel) {
  g_autofree char *p = path_in(d, rel);
  char buf[PATH_MAX];
  ssize_t n = readlink(p, buf, sizeof(buf) - 1);
  if (n <= 0)
    return NULL;
  buf[n] = '\0';
  char *b = g_path_get_basename(buf);
  if (!*b || g_str_equal(b, ".") || g_str_equal(b, "/")) {
    g_free(b);
    return NULL;
  }
  return b;
}

/* Something read from a file, fit for one line of output. */
static char *printable(const char *s, gsize max) {
  GString *o = g_string_new(NULL);
  for (gsize i = 0; s[i] && i < max; i++)
    g_string_append_c(o, g_ascii_isprint(s[i]) ? s[i] : '?');
  return g_string_free(o, FALSE);
}

/* ---- parsers --------------------------------------------------------------- */

bool vgpu_doctor_parse_version(const char *s, guint v[3]) {
  v[0] = v[1] = v[2] = 0;
  if (!s)
    return false;
  const char *colon = strchr(s, ':');
  if (colon) {
    const char *q = s;
    while (g_ascii_isdigit(*q))
      q++;
    if (q == colon && q != s)
      s = colon + 1;
  }
  for (int i = 0; i < 3; i++) {
    if (!g_ascii_isdigit(*s))
      return i > 0;
    guint64 x = 0;
    while (g_ascii_isdigit(*s)) {
      x = x * 10 + (guint64)(*s - '0');
      if (x > G_MAXUINT32)
        return false;
      s++;
    }
    v[i] = (guint)x;
    if (*s != '.')
      return true;
    s++;
  }
  return true;
}

static int version_cmp(const guint a[3], const guint b[3]) {
  for (int i = 0; i < 3; i++)
    if (a[i] != b[i])
      return a[i] < b[i] ? -1 : 1;
  return 0;
}

static bool version_at_least(const char *have, const char *min) {
  guint a[3], b[3];
  return vgpu_doctor_parse_version(have, a) && vgpu_doctor_parse_version(min, b) &&
         version_cmp(a, b) >= 0;
}

/* The value of "Field: value" when `line` (len bytes) is that field. */
static const char *field_value(const char *line, gsize len, const char *field, gsize *vlen) {
  gsize f = strlen(field);
  if (len <= f || memcmp(line, field, f) != 0 || line[f] != ':')
    return NULL;
  const char *v = line + f + 1;
  const char *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
    end--;
  *vlen = (gsize)(end - v);
  return v;
}

char *vgpu_doctor_dpkg_version(const char *buf, gsize len, const char *package) {
  const char *p = buf, *end = buf + len;
  bool match = false, installed = false;
  const char *ver = NULL;
  gsize verlen = 0;
  while (p <= end) {
    const char *nl = memchr(p, '\n', (gsize)(end - p));
    const char *le = nl ? nl : end;
    gsize n = (gsize)(le - p);
    const char *v;
    gsize vl;
    if (n == 0 || (n == 1 && *p == '\r')) { /* end of a record */
      if (match && installed && ver)
        return g_strndup(ver, MIN(verlen, 128));
      match = installed = false;
      ver = NULL;
    } else if ((v = field_value(p, n, "Package", &vl))) {
      if (match && installed && ver) /* a record without a blank line after it */
        return g_strndup(ver, MIN(verlen, 128));
      match = vl == strlen(package) && memcmp(v, package, vl) == 0;
      installed = false;
      ver = NULL;
    } else if ((v = field_value(p, n, "Status", &vl))) {
      installed = vl >= 9 && memcmp(v + vl - 9, "installed", 9) == 0 &&
                  !(vl >= 11 && memcmp(v + vl - 11, "not-installed", 11) == 0);
    } else if ((v = field_value(p, n, "Version", &vl))) {
      ver = v;
      verlen = vl;
    }
    if (!nl)
      break;
    p = nl + 1;
  }
  if (match && installed && ver)
    return g_strndup(ver, MIN(verlen, 128));
  return NULL;
}

guint vgpu_doctor_parse_interrupts(const char *buf, gsize len, const char *const *drivers,
                                   guint *irqs, guint max, guint *ncpus) {
  g_autofree char *s = g_strndup(buf, len);
  g_auto(GStrv) lines = g_strsplit(s, "\n", -1);
  guint found = 0;
  *ncpus = 0;
  for (guint i = 0; lines[i]; i++) {
    /* Split in place into its words (a host with many CPUs has as many
     * count columns). */
    g_auto(GStrv) words = g_strsplit_set(lines[i], " \t", -1);
    guint ntok = 0;
    for (guint k = 0; words[k]; k++) {
      if (*words[k])
        words[ntok++] = words[k];
      else
        g_free(words[k]);
    }
    words[ntok] = NULL;
    if (ntok == 0)
      continue;
    if (i == 0 && g_str_has_prefix(words[0], "CPU")) {
      for (guint k = 0; k < ntok; k++)
        if (g_str_has_prefix(words[k], "CPU"))
          (*ncpus)++;
      continue;
    }
    /* "N:" lines only: NMI, LOC, ERR and the like are not device IRQs. */
    guint64 irq;
    gsize wl = strlen(words[0]);
    if (wl < 2 || words[0][wl - 1] != ':')
      continue;
    g_autofree char *num = g_strndup(words[0], wl - 1);
    if (!g_ascii_string_to_unsigned(num, 10, 0, 1u << 20, &irq, NULL))
      continue;
    /* The device name is after the per-CPU counts and the chip columns. */
    bool hit = false;
    for (guint k = 1 + *ncpus; k < ntok && !hit; k++)
      for (guint j = 0; drivers && drivers[j] && !hit; j++)
        hit = g_str_equal(words[k], drivers[j]) ||
              (g_str_has_prefix(words[k], drivers[j]) && words[k][strlen(drivers[j])] == ':');
    if (hit && found < max)
      irqs[found++] = (guint)irq;
  }
  return found;
}

gint64 vgpu_doctor_meminfo_field(const char *buf, gsize len, const char *field) {
  const char *p = buf, *end = buf + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (gsize)(end - p));
    const char *le = nl ? nl : end;
    const char *v;
    gsize vl;
    if ((v = field_value(p, (gsize)(le - p), field, &vl))) {
      g_autofree char *s = g_strndup(v, vl);
      char *sp = strchr(s, ' ');
      if (sp)
        *sp = '\0';
      guint64 x;
      if (g_ascii_string_to_unsigned(s, 10, 0, G_MAXINT64, &x, NULL))
        return (gint64)x;
      return -1;
    }
    if (!nl)
      break;
    p = nl + 1;
  }
  return -1;
}

char *vgpu_doctor_descriptor_binary(const char *buf, gsize len, char **why) {
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  g_autoptr(GError) e = NULL;
  if (len > G_MAXSSIZE || !json_parser_load_from_data(parser, buf, (gssize)len, &e)) {
    *why = g_strdup_printf("not valid JSON (%s)", e ? e->message : "too large");
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    *why = g_strdup("not a JSON object");
    return NULL;
  }
  JsonNode *b = json_object_get_member(json_node_get_object(root), "binary");
  if (!b || !JSON_NODE_HOLDS_VALUE(b) || json_node_get_value_type(b) != G_TYPE_STRING ||
      !json_node_get_string(b) || json_node_get_string(b)[0] != '/') {
    *why = g_strdup("no absolute \"binary\" path");
    return NULL;
  }
  const char *s = json_node_get_string(b);
  if (strlen(s) >= PATH_MAX) {
    *why = g_strdup("\"binary\" path too long");
    return NULL;
  }
  return g_strdup(s);
}

/* ---- checks ----------------------------------------------------------------- */

static bool is_render_node(const char *name) {
  if (!g_str_has_prefix(name, "renderD") || !name[7])
    return false;
  for (const char *p = name + 7; *p; p++)
    if (!g_ascii_isdigit(*p))
      return false;
  return true;
}

static void check_render_node(Doctor *d) {
  g_autoptr(GPtrArray) names = list_dir(d, "dev/dri");
  GString *found = g_string_new(NULL);
  guint n = 0;
  for (guint i = 0; i < names->len; i++) {
    const char *name = g_ptr_array_index(names, i);
    g_autofree char *node = g_strdup_printf("dev/dri/%s", name);
    if (!is_render_node(name) || is_dir(d, node))
      continue;
    g_autofree char *rel = g_strdup_printf("sys/class/drm/%s/device/driver", name);
    g_autofree char *drv = link_base(d, rel);
    g_autofree char *shown = drv ? printable(drv, 64) : NULL;
    g_string_append_printf(found, "%s/dev/dri/%s (%s)", n ? ", " : "", name,
                           shown ? shown : "driver unknown");
    if (shown && !g_ptr_array_find_with_equal_func(d->gpu_drivers, shown, g_str_equal, NULL))
      g_ptr_array_add(d->gpu_drivers, g_strdup(shown));
    n++;
  }
  if (n) {
    add(d, "render-node", PASS, g_string_free(found, FALSE), NULL);
    return;
  }
  g_string_free(found, TRUE);
  add(d, "render-node", WARN,
      g_strdup("no render node in /dev/dri: no GPU, Mesa renders with llvmpipe (software)"),
      "install a GPU and load its kernel driver (amdgpu, i915, xe, nouveau, virtio_gpu); "
      "llvmpipe works but every tenant shares the CPUs");
}

/* Version of the first of `packages` dpkg records installed. */
static char *dpkg_version(const Doctor *d, const char *const *packages, const char **which,
                          bool *have_status) {
  gsize len = 0;
  g_autofree char *st = read_file(d, "var/lib/dpkg/status", DPKG_FILE, &len);
  *have_status = st != NULL;
  if (!st)
    return NULL;
  for (guint i = 0; packages[i]; i++) {
    char *v = vgpu_doctor_dpkg_version(st, len, packages[i]);
    if (v) {
      *which = packages[i];
      return v;
    }
  }
  return NULL;
}

static void check_package(Doctor *d, const char *name, const char *what,
                          const char *const *packages, const char *min, const char *install) {
  const char *pkg = NULL;
  bool have_status = false;
  g_autofree char *ver = dpkg_version(d, packages, &pkg, &have_status);
  if (!have_status) {
    add(d, name, WARN, g_strdup_printf("%s version unknown: no dpkg status file", what),
        "install %s >= %s (known good); on a non-Debian host check its version by hand", what, min);
    return;
  }
  if (!ver) {
    add(d, name, FAIL, g_strdup_printf("%s is not installed (dpkg)", what),
        "apt install %s (>= %s)", install, min);
    return;
  }
  g_autofree char *shown = printable(ver, 64);
  guint parsed[3];
  if (!vgpu_doctor_parse_version(ver, parsed)) {
    add(d, name, FAIL, g_strdup_printf("%s version \"%s\" (%s) not understood", what, shown, pkg),
        "reinstall %s (apt install --reinstall %s)", what, install);
    return;
  }
  if (!version_at_least(ver, min)) {
    add(d, name, FAIL,
        g_strdup_printf("%s %s (%s), older than the known-good %s", what, shown, pkg, min),
        "upgrade %s to %s or later (apt install %s)", what, min, install);
    return;
  }
  add(d, name, PASS, g_strdup_printf("%s %s (%s) >= %s", what, shown, pkg, min), NULL);
}

static void check_mesa(Doctor *d) {
  static const char *const pkgs[] = {"libgl1-mesa-dri", "mesa-libgallium", "libglx-mesa0",
                                     "libegl-mesa0", NULL};
  check_package(d, "mesa", "Mesa", pkgs, VGPU_DOCTOR_MESA_MIN, "libgl1-mesa-dri");
}

static void check_virgl(Doctor *d) {
  static const char *const pkgs[] = {"libvirglrenderer1", NULL};
  check_package(d, "virglrenderer", "virglrenderer", pkgs, VGPU_DOCTOR_VIRGL_MIN,
                "libvirglrenderer1");
}

#if defined(__x86_64__) || defined(__i386__)
static void on_alarm(int sig) {
  (void)sig;
}

/* Runs one HLT instruction in real mode: a guest that starts.  NULL when
 * it did, else why not. */
static char *kvm_run_hlt(int kvm, int vm, int vcpu) {
  int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (size <= 0)
    return g_strdup_printf("KVM_GET_VCPU_MMAP_SIZE: %s", g_strerror(errno));
  void *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED)
    return g_strdup_printf("mmap: %s", g_strerror(errno));
  ((unsigned char *)mem)[0] = 0xf4; /* hlt */
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = 4096, .userspace_addr = (guintptr)mem};
  char *why = NULL;
  struct kvm_run *run = MAP_FAILED;
  struct kvm_sregs sregs;
  struct kvm_regs regs = {.rip = 0, .rflags = 2};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    why = g_strdup_printf("KVM_SET_USER_MEMORY_REGION: %s", g_strerror(errno));
    goto out;
  }
  run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) {
    why = g_strdup_printf("mmap of the vCPU: %s", g_strerror(errno));
    goto out;
  }
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) {
    why = g_strdup_printf("KVM_GET_SREGS: %s", g_strerror(errno));
    goto out;
  }
  sregs.cs.base = 0;
  sregs.cs.selector = 0;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0) {
    why = g_strdup_printf("setting the vCPU's registers: %s", g_strerror(errno));
    goto out;
  }
  /* A guest that never exits is stopped by SIGALRM after 2 s (no
   * SA_RESTART: KVM_RUN returns EINTR). */
  struct sigaction sa = {.sa_handler = on_alarm}, old;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, &old);
  struct itimerval t = {.it_value = {.tv_sec = 2}}, off = {0};
  setitimer(ITIMER_REAL, &t, NULL);
  int r = ioctl(vcpu, KVM_RUN, 0);
  int err = errno;
  setitimer(ITIMER_REAL, &off, NULL);
  sigaction(SIGALRM, &old, NULL);
  if (r < 0)
    why = err == EINTR ? g_strdup("KVM_RUN: the guest did not reach its first HLT within 2 s")
                       : g_strdup_printf("KVM_RUN: %s", g_strerror(err));
  else if (run->exit_reason != KVM_EXIT_HLT)
    why = g_strdup_printf("KVM_RUN: the guest exited with reason %u instead of HLT",
                          run->exit_reason);
out:
  if (run != MAP_FAILED)
    munmap(run, (size_t)size);
  munmap(mem, 4096);
  return why;
}
#endif

static void check_kvm(Doctor *d) {
  if (!exists(d, "dev/kvm")) {
    add(d, "kvm", WARN, g_strdup("no /dev/kvm: VMs run under TCG (slow)"),
        "enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd (modprobe kvm_intel)");
    return;
  }
  if (!d->live) {
    d->kvm_usable = true;
    add(d, "kvm", PASS, g_strdup("/dev/kvm present (not opened: --root is not /)"), NULL);
    return;
  }
  d->kvm_probed = true;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    int err = errno;
    if (err == EACCES || err == EPERM)
      add(d, "kvm", WARN, g_strdup_printf("/dev/kvm: %s for uid %u", g_strerror(err), getuid()),
          "add the user that runs QEMU to group kvm (usermod -aG kvm USER)");
    else
      add(d, "kvm", WARN, g_strdup_printf("/dev/kvm cannot be opened: %s", g_strerror(err)),
          "load kvm_intel or kvm_amd and check dmesg");
    return;
  }
  int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) {
    add(d, "kvm", WARN,
        g_strdup_printf("KVM_GET_API_VERSION answered %d, not %d", api, KVM_API_VERSION),
        "use a kernel whose KVM speaks API %d", KVM_API_VERSION);
    close(kvm);
    return;
  }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) {
    add(d, "kvm", WARN, g_strdup_printf("KVM_CREATE_VM failed: %s", g_strerror(errno)),
        "check dmesg; with nested virtualisation enable it on the outer host");
    close(kvm);
    return;
  }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) {
    add(d, "kvm", WARN,
        g_strdup_printf("KVM_CREATE_VM worked, KVM_CREATE_VCPU failed: %s: no guest can start",
                        g_strerror(errno)),
        "check dmesg; with nested virtualisation enable it on the outer host");
    close(vm);
    close(kvm);
    return;
  }
  const char *probe = "KVM_CREATE_VM + KVM_CREATE_VCPU";
  char *why = NULL;
#if defined(__x86_64__) || defined(__i386__)
  probe = "KVM_CREATE_VM + KVM_CREATE_VCPU + KVM_RUN to a HLT";
  why = kvm_run_hlt(kvm, vm, vcpu);
#endif
  close(vcpu);
  close(vm);
  close(kvm);
  if (why) {
    add(d, "kvm", WARN, g_strdup_printf("/dev/kvm opens but a guest cannot start: %s", why),
        "check dmesg and the hypervisor under this host (nested virtualisation); "
        "until then run VMs under TCG (QEMU >= %s)",
        VGPU_DOCTOR_QEMU_MIN_TCG);
    g_free(why);
    return;
  }
  d->kvm_usable = true;
  add(d, "kvm", PASS, g_strdup_printf("usable: API %d, %s succeeded", api, probe), NULL);
}

/* `qemu-system-x86_64 --version` of the one in PATH (this machine only). */
static char *qemu_version_from_binary(void) {
  g_autofree char *prog = g_find_program_in_path("qemu-system-x86_64");
  if (!prog)
    return NULL;
  char *argv[] = {prog, (char *)"--version", NULL};
  g_autofree char *out = NULL;
  int status = 0;
  if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &status,
                    NULL) ||
      !g_spawn_check_wait_status(status, NULL) || !out)
    return NULL;
  const char *v = strstr(out, "version ");
  if (!v)
    return NULL;
  v += strlen("version ");
  gsize n = strcspn(v, " \n(");
  return g_strndup(v, MIN(n, 64));
}

static void check_qemu(Doctor *d) {
  static const char *const pkgs[] = {"qemu-system-x86", NULL};
  const char *pkg = NULL;
  bool have_status = false;
  g_autofree char *ver = dpkg_version(d, pkgs, &pkg, &have_status);
  const char *source = "dpkg";
  guint parsed[3];
  if (ver && !vgpu_doctor_parse_version(ver, parsed)) {
    g_autofree char *bad = printable(ver, 64);
    add(d, "qemu", FAIL, g_strdup_printf("QEMU version \"%s\" (dpkg) not understood", bad),
        "reinstall QEMU (apt install --reinstall qemu-system-x86)");
    return;
  }
  if (!ver && d->live && (ver = qemu_version_from_binary()))
    source = "qemu-system-x86_64 --version";
  if (!ver) {
    add(d, "qemu", WARN,
        g_strdup("QEMU not found: the VM path (vgpu-vhost-gpu) is unavailable; vtest clients "
                 "are unaffected"),
        "apt install qemu-system-x86 (>= %s, from bookworm-backports on Debian 12)",
        VGPU_DOCTOR_QEMU_MIN_TCG);
    return;
  }
  g_autofree char *shown = printable(ver, 64);
  const char *kvm =
      d->kvm_usable ? (d->kvm_probed ? "KVM usable" : "KVM assumed usable") : "KVM not usable";
  if (version_at_least(ver, VGPU_DOCTOR_QEMU_MIN_TCG)) {
    add(d, "qemu", PASS,
        g_strdup_printf("QEMU %s (%s) >= %s: vhost-user-gpu with or without KVM", shown, source,
                        VGPU_DOCTOR_QEMU_MIN_TCG),
        NULL);
  } else if (d->kvm_usable && version_at_least(ver, VGPU_DOCTOR_QEMU_MIN_KVM)) {
    add(d, "qemu", PASS,
        g_strdup_printf("QEMU %s (%s) >= %s with %s; without KVM it would need >= %s", shown,
                        source, VGPU_DOCTOR_QEMU_MIN_KVM, kvm, VGPU_DOCTOR_QEMU_MIN_TCG),
        NULL);
  } else if (version_at_least(ver, VGPU_DOCTOR_QEMU_MIN_KVM)) {
    add(d, "qemu", FAIL,
        g_strdup_printf("QEMU %s (%s), %s: it refuses vhost-user-gpu without KVM "
                        "(\"requires kvm\")",
                        shown, source, kvm),
        "install QEMU >= %s (Debian 12: apt install -t bookworm-backports qemu-system-x86 "
        "qemu-system-gui), or make /dev/kvm usable",
        VGPU_DOCTOR_QEMU_MIN_TCG);
  } else {
    add(d, "qemu", FAIL,
        g_strdup_printf("QEMU %s (%s), older than the known-good %s (with KVM) and %s (without)",
                        shown, source, VGPU_DOCTOR_QEMU_MIN_KVM, VGPU_DOCTOR_QEMU_MIN_TCG),
        "install QEMU >= %s (Debian 12: apt install -t bookworm-backports qemu-system-x86 "
        "qemu-system-gui)",
        VGPU_DOCTOR_QEMU_MIN_TCG);
  }
}

static void check_userns(Doctor *d) {
  g_autofree char *clone = read_line(d, "proc/sys/kernel/unprivileged_userns_clone");
  g_autofree char *max = read_line(d, "proc/sys/user/max_user_namespaces");
  guint64 m = 0;
  bool max_ok = max && g_ascii_string_to_unsigned(max, 10, 0, G_MAXUINT32, &m, NULL);
  if (max && !max_ok && !clone) {
    g_autofree char *m_shown = printable(max, 32);
    add(d, "userns", WARN,
        g_strdup_printf("/proc/sys/user/max_user_namespaces reads \"%s\", not a count", m_shown),
        "sysctl -w user.max_user_namespaces=15000 (persist in /etc/sysctl.d/)");
    return;
  }
  if (!max_ok && !clone) {
    add(d, "userns", WARN,
        g_strdup("no /proc/sys/user/max_user_namespaces: the kernel has no user namespaces"),
        "use a kernel built with CONFIG_USER_NS=y");
    return;
  }
  g_autofree char *shown_max = max ? printable(max, 32) : g_strdup("absent");
  if (clone && !g_str_equal(clone, "1")) {
    g_autofree char *c = printable(clone, 32);
    add(d, "userns", WARN,
        g_strdup_printf("unprivileged user namespaces off (unprivileged_userns_clone=%s)", c),
        "sysctl -w kernel.unprivileged_userns_clone=1 (persist in /etc/sysctl.d/)");
    return;
  }
  if (!max_ok || m == 0) {
    add(d, "userns", WARN,
        g_strdup_printf("unprivileged user namespaces off (max_user_namespaces=%s)", shown_max),
        "sysctl -w user.max_user_namespaces=15000 (persist in /etc/sysctl.d/)");
    return;
  }
  add(d, "userns", PASS,
      g_strdup_printf("unprivileged user namespaces on (max_user_namespaces=%s%s)", shown_max,
                      clone ? ", unprivileged_userns_clone=1" : ""),
      NULL);
}

static void check_seccomp(Doctor *d) {
  gsize len = 0;
  g_autofree char *st = read_file(d, "proc/self/status", SMALL_FILE, &len);
  gint64 mode = st ? vgpu_doctor_meminfo_field(st, len, "Seccomp") : -1;
  g_autofree char *actions = read_line(d, "proc/sys/kernel/seccomp/actions_avail");
  if (mode < 0 && !actions) {
    add(d, "seccomp", FAIL,
        g_strdup("the kernel offers no seccomp (no Seccomp: in /proc/self/status, no "
                 "actions_avail): workers would run without a system-call filter"),
        "use a kernel built with CONFIG_SECCOMP_FILTER=y");
    return;
  }
  g_autofree char *shown = actions ? printable(actions, 120) : NULL;
  if (actions) {
    g_auto(GStrv) acts = g_strsplit(actions, " ", -1);
    if (!g_strv_contains((const char *const *)acts, "kill_process")) {
      add(d, "seccomp", WARN, g_strdup_printf("seccomp without kill_process (actions: %s)", shown),
          "use Linux 4.14 or later: vgpud's filter ends a worker with SECCOMP_RET_KILL_PROCESS");
      return;
    }
  }
#if !HAVE_SECCOMP
  add(d, "seccomp", WARN,
      g_strdup("the kernel has seccomp, but this vgpu was built without libseccomp: workers "
               "run unfiltered"),
      "apt install libseccomp-dev, then rebuild and reinstall vgpu");
#else
  add(d, "seccomp", PASS,
      shown ? g_strdup_printf("seccomp filters available (actions: %s)", shown)
            : g_strdup("seccomp filters available"),
      NULL);
#endif
}

static bool word_in(const char *list, const char *word) {
  g_auto(GStrv) w = g_strsplit_set(list, " \t\n", -1);
  return g_strv_contains((const char *const *)w, word);
}

static void check_cgroup(Doctor *d) {
  g_autofree char *ctl = read_line(d, "sys/fs/cgroup/cgroup.controllers");
  if (!ctl) {
    if (exists(d, "sys/fs/cgroup/unified/cgroup.controllers"))
      add(d, "cgroup", WARN,
          g_strdup("hybrid cgroup v1/v2: the controllers are in v1, so vgpud caps worker "
                   "memory with RLIMIT_DATA instead of a cgroup's memory.max"),
          "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only)");
    else
      add(d, "cgroup", WARN,
          g_strdup("no cgroup v2 at /sys/fs/cgroup: vgpud caps worker memory with RLIMIT_DATA "
                   "instead of a cgroup's memory.max"),
          "mount cgroup2 at /sys/fs/cgroup (systemd: systemd.unified_cgroup_hierarchy=1)");
    return;
  }
  g_autofree char *shown = printable(ctl, 120);
  const char *missing = !word_in(ctl, "cpu") ? "cpu" : !word_in(ctl, "memory") ? "memory" : NULL;
  if (missing) {
    add(d, "cgroup", WARN,
        g_strdup_printf("cgroup v2 without the %s controller (controllers: %s)", missing, shown),
        "enable the %s controller in the kernel (CONFIG_CGROUP_SCHED / CONFIG_MEMCG) and do not "
        "bind it to cgroup v1",
        missing);
    return;
  }
  g_autofree char *sub = read_line(d, "sys/fs/cgroup/cgroup.subtree_control");
  if (!sub || !word_in(sub, "cpu") || !word_in(sub, "memory")) {
    add(d, "cgroup", WARN,
        g_strdup_printf("cgroup v2 (controllers: %s), but cpu and memory are not both enabled "
                        "for subtrees",
                        shown),
        "echo '+cpu +memory' > /sys/fs/cgroup/cgroup.subtree_control (systemd does this for a "
        "unit with Delegate=yes, as vgpud.service has)");
    return;
  }
  add(d, "cgroup", PASS,
      g_strdup_printf("cgroup v2; cpu and memory can be delegated to subtrees (controllers: %s)",
                      shown),
      NULL);
}

static void check_iommu(Doctor *d) {
  g_autoptr(GPtrArray) groups = list_dir(d, "sys/kernel/iommu_groups");
  g_autofree char *cmd = read_line(d, "proc/cmdline");
  bool on_cmdline = cmd && (strstr(cmd, "intel_iommu=on") || strstr(cmd, "amd_iommu=on") ||
                            strstr(cmd, "iommu=pt"));
  if (groups->len) {
    add(d, "iommu", PASS,
        g_strdup_printf("IOMMU on: %u groups%s", groups->len,
                        on_cmdline ? " (enabled on the kernel command line)" : ""),
        NULL);
    return;
  }
  add(d, "iommu", WARN,
      g_strdup_printf("no IOMMU groups%s: no device passthrough, SR-IOV VFs or mediated devices "
                      "for VMs",
                      on_cmdline ? " although the kernel command line asks for an IOMMU" : ""),
      "enable VT-d/AMD-Vi in the firmware and add intel_iommu=on (or amd_iommu=on) iommu=pt "
      "to the kernel command line");
}

static void check_vfio(Doctor *d) {
  gsize len = 0;
  g_autofree char *mods = read_file(d, "proc/modules", 1024 * 1024, &len);
  const char *need[] = {"vfio", "vfio_pci"};
  GString *missing = g_string_new(NULL);
  for (guint i = 0; i < G_N_ELEMENTS(need); i++) {
    g_autofree char *rel = g_strdup_printf("sys/module/%s", need[i]);
    g_autofree char *line = g_strdup_printf("%s ", need[i]);
    g_autofree char *nl_line = g_strdup_printf("\n%s", line);
    bool loaded =
        is_dir(d, rel) || (mods && (g_str_has_prefix(mods, line) || strstr(mods, nl_line)));
    if (!loaded)
      g_string_append_printf(missing, "%s%s", missing->len ? ", " : "", need[i]);
  }
  if (missing->len) {
    add(d, "vfio", WARN, g_strdup_printf("VFIO modules not loaded: %s", missing->str),
        "modprobe vfio-pci (persist: echo vfio-pci > /etc/modules-load.d/vfio.conf)");
  } else {
    add(d, "vfio", PASS, g_strdup("vfio and vfio_pci loaded"), NULL);
  }
  g_string_free(missing, TRUE);
}

static void check_gpu_partitioning(Doctor *d) {
  g_autoptr(GPtrArray) devs = list_dir(d, "sys/bus/pci/devices");
  GString *capable = g_string_new(NULL);
  guint gpus = 0;
  for (guint i = 0; i < devs->len; i++) {
    const char *dev = g_ptr_array_index(devs, i);
    g_autofree char *rel = g_strdup_printf("sys/bus/pci/devices/%s/class", dev);
    g_autofree char *cls = read_line(d, rel);
    guint64 c;
    if (!cls || !g_str_has_prefix(cls, "0x") ||
        !g_ascii_string_to_unsigned(cls + 2, 16, 0, 0xffffff, &c, NULL) || (c >> 16) != 0x03)
      continue;
    gpus++;
    g_autofree char *shown = printable(dev, 32);
    g_autofree char *vf_rel = g_strdup_printf("sys/bus/pci/devices/%s/sriov_totalvfs", dev);
    g_autofree char *vfs = read_line(d, vf_rel);
    guint64 nvf = 0;
    if (vfs && g_ascii_string_to_unsigned(vfs, 10, 1, 65535, &nvf, NULL))
      g_string_append_printf(capable, "%s%s SR-IOV (%" G_GUINT64_FORMAT " VFs)",
                             capable->len ? ", " : "", shown, nvf);
    g_autofree char *mdev_rel = g_strdup_printf("sys/bus/pci/devices/%s/mdev_supported_types", dev);
    g_autoptr(GPtrArray) types = list_dir(d, mdev_rel);
    if (types->len)
      g_string_append_printf(capable, "%s%s mdev (%u type%s)", capable->len ? ", " : "", shown,
                             types->len, types->len == 1 ? "" : "s");
  }
  if (capable->len) {
    add(d, "gpu-partitioning", PASS, g_string_free(capable, FALSE), NULL);
    return;
  }
  g_string_free(capable, TRUE);
  if (!gpus)
    add(d, "gpu-partitioning", WARN,
        g_strdup("no display-class PCI device: no SR-IOV or mediated-device GPU"),
        "none needed for vgpud's own sharing; hardware partitioning needs an SR-IOV or mdev "
        "capable GPU and its driver");
  else
    add(d, "gpu-partitioning", WARN,
        g_strdup_printf("%u display-class PCI device%s, none SR-IOV (sriov_totalvfs) or "
                        "mediated-device (mdev_supported_types) capable",
                        gpus, gpus == 1 ? "" : "s"),
        "none needed for vgpud's own sharing; hardware partitioning needs an SR-IOV or mdev "
        "capable GPU and a driver that enables it (e.g. i915 or xe with SR-IOV, AMD MxGPU)");
}

static void check_hugepages(Doctor *d) {
  gsize len = 0;
  g_autofree char *mi = read_file(d, "proc/meminfo", SMALL_FILE, &len);
  gint64 total = mi ? vgpu_doctor_meminfo_field(mi, len, "HugePages_Total") : -1;
  gint64 size = mi ? vgpu_doctor_meminfo_field(mi, len, "Hugepagesize") : -1;
  /* Every size the kernel offers, from sysfs. */
  g_autoptr(GPtrArray) sizes = list_dir(d, "sys/kernel/mm/hugepages");
  GString *more = g_string_new(NULL);
  guint64 sys_total = 0;
  for (guint i = 0; i < sizes->len; i++) {
    const char *s = g_ptr_array_index(sizes, i);
    if (!g_str_has_prefix(s, "hugepages-"))
      continue;
    g_autofree char *rel = g_strdup_printf("sys/kernel/mm/hugepages/%s/nr_hugepages", s);
    g_autofree char *nr = read_line(d, rel);
    guint64 n;
    if (!nr || !g_ascii_string_to_unsigned(nr, 10, 0, G_MAXUINT32, &n, NULL) || n == 0)
      continue;
    g_autofree char *shown = printable(s + strlen("hugepages-"), 24);
    g_string_append_printf(more, "%s%" G_GUINT64_FORMAT " x %s", more->len ? ", " : "", n, shown);
    sys_total += n;
  }
  if (total > 0 || sys_total > 0) {
    char *found = more->len ? g_strdup_printf("hugepages reserved: %s", more->str)
                            : g_strdup_printf("hugepages reserved: %" G_GINT64_FORMAT
                                              " x %" G_GINT64_FORMAT " kB",
                                              total, size);
    add(d, "hugepages", PASS, found, NULL);
  } else if (total < 0 && !sizes->len) {
    add(d, "hugepages", WARN, g_strdup("hugepages unknown: no HugePages_Total in /proc/meminfo"),
        "use a kernel with CONFIG_HUGETLBFS=y");
  } else {
    add(d, "hugepages", WARN, g_strdup("no hugepages reserved: VM memory uses 4 KiB pages"),
        "sysctl -w vm.nr_hugepages=N (N x %" G_GINT64_FORMAT
        " kB for the guests' memory; persist in "
        "/etc/sysctl.d/) and give domains <memoryBacking><hugepages/></memoryBacking>",
        size > 0 ? size : 2048);
  }
  g_string_free(more, TRUE);
}

static void check_irq_affinity(Doctor *d) {
  if (!d->gpu_drivers->len) {
    add(d, "gpu-irq-affinity", PASS, g_strdup("no GPU driver bound: no GPU interrupts to place"),
        NULL);
    return;
  }
  g_ptr_array_add(d->gpu_drivers, NULL);
  const char *const *drivers = (const char *const *)d->gpu_drivers->pdata;
  g_autofree char *names = g_strjoinv(", ", (char **)d->gpu_drivers->pdata);
  gsize len = 0;
  g_autofree char *intr = read_file(d, "proc/interrupts", 4 * 1024 * 1024, &len);
  guint irqs[MAX_GPU_IRQS], ncpus = 0;
  guint n = intr ? vgpu_doctor_parse_interrupts(intr, len, drivers, irqs, MAX_GPU_IRQS, &ncpus) : 0;
  g_ptr_array_remove_index(d->gpu_drivers, d->gpu_drivers->len - 1);
  if (!n) {
    add(d, "gpu-irq-affinity", PASS,
        g_strdup_printf("no interrupt line of %s in /proc/interrupts", names), NULL);
    return;
  }
  GString *found = g_string_new(NULL);
  bool all_cpu0 = true;
  for (guint i = 0; i < n; i++) {
    g_autofree char *rel = g_strdup_printf("proc/irq/%u/smp_affinity_list", irqs[i]);
    g_autofree char *aff = read_line(d, rel);
    g_autofree char *shown = aff ? printable(aff, 64) : g_strdup("unknown");
    if (!aff || !g_str_equal(aff, "0"))
      all_cpu0 = false;
    if (i < 8)
      g_string_append_printf(found, "%sirq %u -> CPUs %s", i ? ", " : "", irqs[i], shown);
  }
  if (n > 8)
    g_string_append_printf(found, " and %u more", n - 8);
  char *f = g_strdup_printf("%s (%s; %u CPUs)", found->str, names, ncpus);
  g_string_free(found, TRUE);
  if (all_cpu0 && ncpus >= 4)
    add(d, "gpu-irq-affinity", WARN, f,
        "spread them: run irqbalance, or echo 1-%u > /proc/irq/N/smp_affinity_list", ncpus - 1);
  else
    add(d, "gpu-irq-affinity", PASS, f, NULL);
}

static void check_descriptor(Doctor *d) {
  const char *dirs[] = {"usr/share/qemu/vhost-user", "etc/qemu/vhost-user",
                        VGPU_DATADIR "/qemu/vhost-user"};
  GString *ok = g_string_new(NULL), *bad = g_string_new(NULL);
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < G_N_ELEMENTS(dirs); i++) {
    const char *dir = dirs[i];
    while (*dir == '/')
      dir++;
    if (!g_hash_table_add(seen, g_strdup(dir)))
      continue;
    g_autoptr(GPtrArray) files = list_dir(d, dir);
    for (guint k = 0; k < files->len; k++) {
      const char *f = g_ptr_array_index(files, k);
      if (!strstr(f, "vgpu") || !g_str_has_suffix(f, ".json"))
        continue;
      g_autofree char *rel = g_build_filename(dir, f, NULL);
      g_autofree char *shown = printable(rel, 200);
      gsize len = 0;
      g_autofree char *text = read_file(d, rel, SMALL_FILE, &len);
      g_autofree char *why = NULL, *bin = NULL;
      if (!text)
        why = g_strdup("unreadable");
      else
        bin = vgpu_doctor_descriptor_binary(text, len, &why);
      if (bin) {
        g_autofree char *bp = path_in(d, bin);
        g_autofree char *bshown = printable(bin, 200);
        struct stat st;
        if (stat(bp, &st) < 0 || !S_ISREG(st.st_mode))
          why = g_strdup_printf("its binary %s does not exist", bshown);
        else if (!(st.st_mode & 0111))
          why = g_strdup_printf("its binary %s is not executable", bshown);
        else
          g_string_append_printf(ok, "%s/%s -> %s", ok->len ? ", " : "", shown, bshown);
      }
      if (why) {
        g_autofree char *why_shown = printable(why, 200);
        g_string_append_printf(bad, "%s/%s: %s", bad->len ? "; " : "", shown, why_shown);
      }
    }
  }
  if (bad->len) {
    add(d, "libvirt-descriptor", FAIL, g_strdup(bad->str),
        "reinstall vgpu (meson install -C build) or remove the stale descriptor");
  } else if (ok->len) {
    add(d, "libvirt-descriptor", PASS, g_strdup(ok->str), NULL);
  } else {
    add(d, "libvirt-descriptor", WARN,
        g_strdup("no *vgpu*.json in /usr/share, /etc or " VGPU_DATADIR
                 " qemu/vhost-user: libvirt cannot find vgpu-vhost-gpu"),
        "meson install -C build (installs " VGPU_DATADIR
        "/qemu/vhost-user/40-vgpu-vhost-gpu.json)");
  }
  g_string_free(ok, TRUE);
  g_string_free(bad, TRUE);
}

/* ---- output ------------------------------------------------------------------ */

static void print_json(const Doctor *d, const guint counts[3]) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "checks");
  json_builder_begin_array(b);
  for (guint i = 0; i < d->checks->len; i++) {
    const Check *c = &g_array_index(d->checks, Check, i);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, c->name);
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, status_names[c->status]);
    json_builder_set_member_name(b, "found");
    json_builder_add_string_value(b, c->found);
    json_builder_set_member_name(b, "fix");
    if (c->fix)
      json_builder_add_string_value(b, c->fix);
    else
      json_builder_add_null_value(b);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  const char *keys[] = {"pass", "warn", "fail"};
  for (int s = 0; s < 3; s++) {
    json_builder_set_member_name(b, keys[s]);
    json_builder_add_int_value(b, counts[s]);
  }
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autoptr(JsonGenerator) g = json_generator_new();
  json_generator_set_pretty(g, TRUE);
  json_generator_set_indent(g, 2);
  json_generator_set_root(g, root);
  g_autofree char *s = json_generator_to_data(g, NULL);
  puts(s);
}

int vgpu_doctor_run(const char *root, bool json) {
  g_autofree char *real = realpath(root, NULL);
  Doctor d = {
      .root = root,
      .live = real && g_str_equal(real, "/"),
      .checks = g_array_new(FALSE, FALSE, sizeof(Check)),
      .gpu_drivers = g_ptr_array_new_with_free_func(g_free),
  };
  check_render_node(&d);
  check_mesa(&d);
  check_virgl(&d);
  check_kvm(&d);
  check_qemu(&d);
  check_userns(&d);
  check_seccomp(&d);
  check_cgroup(&d);
  check_iommu(&d);
  check_vfio(&d);
  check_gpu_partitioning(&d);
  check_hugepages(&d);
  check_irq_affinity(&d);
  check_descriptor(&d);

  guint counts[3] = {0};
  for (guint i = 0; i < d.checks->len; i++)
    counts[g_array_index(d.checks, Check, i).status]++;
  if (json) {
    print_json(&d, counts);
  } else {
    for (guint i = 0; i < d.checks->len; i++) {
      const Check *c = &g_array_index(d.checks, Check, i);
      printf("%s  %-18s %s", status_names[c->status], c->name, c->found);
      if (c->fix)
        printf("; fix: %s", c->fix);
      putchar('\n');
    }
    printf("%u pass, %u warn, %u fail%s\n", counts[PASS], counts[WARN], counts[FAIL],
           d.live ? "" : " (files under --root; /dev/kvm not probed)");
  }
  for (guint i = 0; i < d.checks->len; i++) {
    Check *c = &g_array_index(d.checks, Check, i);
    g_free(c->found);
    g_free(c->fix);
  }
  g_array_free(d.checks, TRUE);
  g_ptr_array_free(d.gpu_drivers, TRUE);
  return counts[FAIL] ? 1 : 0;
}
