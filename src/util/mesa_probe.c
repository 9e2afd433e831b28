#include "util/mesa_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fd.h"

/* Debian's multiarch directory names, where this build's architecture has
 * one; other layouts are covered by /usr/lib64 and /usr/lib. */
#if defined(__x86_64__) && defined(__ILP32__)
#define MULTIARCH "x86_64-linux-gnux32"
#elif defined(__x86_64__)
#define MULTIARCH "x86_64-linux-gnu"
#elif defined(__aarch64__)
#define MULTIARCH "aarch64-linux-gnu"
#elif defined(__i386__)
#define MULTIARCH "i386-linux-gnu"
#elif defined(__arm__) && defined(__ARM_PCS_VFP)
#define MULTIARCH "arm-linux-gnueabihf"
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MULTIARCH "powerpc64le-linux-gnu"
#elif defined(__s390x__)
#define MULTIARCH "s390x-linux-gnu"
#elif defined(__riscv) && __riscv_xlen == 64
#define MULTIARCH "riscv64-linux-gnu"
#endif

#ifdef MULTIARCH
static const char *const LIB_DIRS[] = {
    "/usr/lib/" MULTIARCH, "/lib/" MULTIARCH, "/usr/lib64", "/lib64", "/usr/lib", "/lib"};
static const char *const DRI_DIRS[] = {"/usr/lib/" MULTIARCH "/dri", "/usr/lib64/dri",
                                       "/usr/lib/dri"};
#else
static const char *const LIB_DIRS[] = {"/usr/lib64", "/lib64", "/usr/lib", "/lib"};
static const char *const DRI_DIRS[] = {"/usr/lib64/dri", "/usr/lib/dri"};
#endif

/* Larger files are not Mesa drivers (libgallium is ~45 MB). */
#define MAX_DRIVER_BYTES ((size_t)1 << 30)
#define ENV_NAME "VTEST_SOCKET_NAME"
#define GALLIUM_PREFIX "libgallium-"

/* A read-only mapping of a regular file, or NULL. */
typedef struct {
  const char *data;
  size_t len;
} Map;

static bool map_file(const char *path, Map *m) {
  vgpu_autofd int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
      (unsigned long long)st.st_size > MAX_DRIVER_BYTES)
    return false;
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED)
    return false;
  m->data = p;
  m->len = (size_t)st.st_size;
  return true;
}

static void unmap_file(Map *m) {
  if (m->data)
    munmap((void *)m->data, m->len);
  m->data = NULL;
}

/* The first NUL-delimited string "libgallium-*.so" in the file (a
 * DT_NEEDED name sits so in .dynstr), or NULL. */
static char *gallium_needed(const Map *m) {
  const char *p = m->data, *end = m->data + m->len;
  size_t plen = strlen(GALLIUM_PREFIX);
  while (p < end && (p = memmem(p, (size_t)(end - p), GALLIUM_PREFIX, plen))) {
    const char *nul = memchr(p, '\0', (size_t)(end - p));
    bool starts = p == m->data || p[-1] == '\0';
    if (starts && nul && nul - p > 3 && nul - p < 256 && memcmp(nul - 3, ".so", 3) == 0 &&
        !memchr(p, '/', (size_t)(nul - p)))
      return g_strndup(p, (size_t)(nul - p));
    p += plen;
  }
  return NULL;
}

static bool mentions_env(const Map *m) {
  return memmem(m->data, m->len, ENV_NAME, strlen(ENV_NAME)) != NULL;
}

/* sysroot + dir + name, where the file exists; else NULL. */
static char *find_in(const char *sysroot, GPtrArray *dirs, const char *name) {
  for (guint i = 0; i < dirs->len; i++) {
    g_autofree char *path = g_build_filename(sysroot, dirs->pdata[i], name, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      return g_steal_pointer(&path);
  }
  return NULL;
}

static void add_dirs(GPtrArray *dirs, const char *colon_list) {
  if (!colon_list)
    return;
  g_auto(GStrv) parts = g_strsplit(colon_list, ":", -1);
  for (char **p = parts; *p; p++)
    if (**p == '/') /* the loader ignores relative entries here too */
      g_ptr_array_add(dirs, g_strdup(*p));
}

/* Decides from path (a GLX library or a DRI driver): a file that names
 * VTEST_SOCKET_NAME reads it; one linked to libgallium is followed there.
 * Returns false when the file (or its libgallium) cannot be read. */
static bool decide(const char *sysroot, GPtrArray *lib_dirs, const char *path, bool follow_only,
                   VgpuMesaProbe *out) {
  Map m = {0};
  if (!map_file(path, &m))
    return false;
  g_autofree char *gallium = gallium_needed(&m);
  bool env = !gallium && mentions_env(&m);
  unmap_file(&m);
  if (gallium) {
    g_autofree char *gpath = find_in(sysroot, lib_dirs, gallium);
    if (!gpath || !map_file(gpath, &m))
      return false;
    env = mentions_env(&m);
    unmap_file(&m);
    out->driver = g_steal_pointer(&gpath);
  } else if (follow_only) {
    return false; /* a GLX library without libgallium: its DRI driver decides */
  } else {
    out->driver = g_strdup(path);
  }
  out->kind = env ? VGPU_MESA_SOCKET_ENV : VGPU_MESA_SOCKET_FIXED;
  return true;
}

void vgpu_mesa_probe(const char *sysroot, const char *ld_path, const char *drivers_path,
                     VgpuMesaProbe *out) {
  if (!sysroot || !*sysroot)
    sysroot = "/";
  *out = (VgpuMesaProbe){.kind = VGPU_MESA_NOT_FOUND};
  g_autoptr(GPtrArray) lib_dirs = g_ptr_array_new_with_free_func(g_free);
  add_dirs(lib_dirs, ld_path);
  for (size_t i = 0; i < G_N_ELEMENTS(LIB_DIRS); i++)
    g_ptr_array_add(lib_dirs, g_strdup(LIB_DIRS[i]));

  g_autofree char *glx = find_in(sysroot, lib_dirs, "libGLX_mesa.so.0");
  if (!glx)
    glx = find_in(sysroot, lib_dirs, "libGL.so.1");
  if (glx && decide(sysroot, lib_dirs, glx, true, out))
    return;

  g_autoptr(GPtrArray) dri_dirs = g_ptr_array_new_with_free_func(g_free);
  if (drivers_path && *drivers_path) {
    add_dirs(dri_dirs, drivers_path);
  } else {
    if (glx) {
      /* the dri directory beside the library, given without the sysroot */
      g_autofree char *dir = g_path_get_dirname(glx);
      const char *rel = dir + strlen(sysroot);
      if (!g_str_equal(sysroot, "/") && g_str_has_prefix(dir, sysroot))
        g_ptr_array_add(dri_dirs, g_build_filename("/", rel, "dri", NULL));
      else
        g_ptr_array_add(dri_dirs, g_build_filename(dir, "dri", NULL));
    }
    for (size_t i = 0; i < G_N_ELEMENTS(DRI_DIRS); i++)
      g_ptr_array_add(dri_dirs, g_strdup(DRI_DIRS[i]));
  }
  g_autofree char *dri = find_in(sysroot, dri_dirs, "swrast_dri.so");
  if (dri && decide(sysroot, lib_dirs, dri, false, out))
    return;

  GString *s = g_string_new(NULL);
  g_string_append_printf(s, "libGLX_mesa.so.0 or libGL.so.1 in ");
  for (guint i = 0; i < lib_dirs->len; i++)
    g_string_append_printf(s, "%s%s", i ? ":" : "", (char *)lib_dirs->pdata[i]);
  g_string_append(s, ", swrast_dri.so in ");
  for (guint i = 0; i < dri_dirs->len; i++)
    g_string_append_printf(s, "%s%s", i ? ":" : "", (char *)dri_dirs->pdata[i]);
  if (!g_str_equal(sysroot, "/"))
    g_string_append_printf(s, " (under %s)", sysroot);
  out->searched = g_string_free(s, FALSE);
}

void vgpu_mesa_probe_clear(VgpuMesaProbe *p) {
  g_clear_pointer(&p->driver, g_free);
  g_clear_pointer(&p->searched, g_free);
}
