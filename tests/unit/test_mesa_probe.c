/* util/mesa_probe: which socket a client's Mesa uses, decided from fake
 * driver trees laid out as Mesa 22.3, 23 and 25 install themselves. */
#include <glib.h>
#include <glib/gstdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/mesa_probe.h"

/* A file at root/rel holding bytes (NULs included). */
static void put(const char *root, const char *rel, const char *bytes, size_t len) {
  g_autofree char *path = g_build_filename(root, rel, NULL);
  g_autofree char *dir = g_path_get_dirname(path);
  assert_int_equal(g_mkdir_with_parents(dir, 0755), 0);
  assert_true(g_file_set_contents(path, bytes, (gssize)len, NULL));
}
#define PUT(root, rel, lit) put(root, rel, lit, sizeof(lit) - 1)

static char *new_root(void) {
  char *root = g_dir_make_tmp("vgpu-mesa-probe-XXXXXX", NULL);
  assert_non_null(root);
  return root;
}

static void rm_tree(const char *root) {
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
}

static void assert_probe(const char *root, const char *ld, const char *dri, VgpuMesaSocket kind,
                         const char *driver_rel) {
  VgpuMesaProbe p;
  vgpu_mesa_probe(root, ld, dri, &p);
  assert_int_equal(p.kind, kind);
  if (driver_rel) {
    g_autofree char *want = g_build_filename(root, driver_rel, NULL);
    assert_string_equal(p.driver, want);
    assert_null(p.searched);
  } else {
    assert_null(p.driver);
    assert_non_null(p.searched);
    assert_non_null(strstr(p.searched, "swrast_dri.so"));
    assert_non_null(strstr(p.searched, root));
  }
  vgpu_mesa_probe_clear(&p);
  assert_null(p.driver);
}

/* Mesa 25: libGLX_mesa is linked to libgallium, which reads the variable;
 * the DRI stub beside it is not asked. */
static void test_mesa25(void **state) {
  (void)state;
  g_autofree char *r = new_root();
  PUT(r, "usr/lib/libGLX_mesa.so.0", "\177ELF\0libX11.so.6\0libgallium-25.0.7.so\0libc.so.6\0");
  PUT(r, "usr/lib/libgallium-25.0.7.so", "\177ELF\0/tmp/.virgl_test\0VTEST_SOCKET_NAME\0");
  PUT(r, "usr/lib/dri/swrast_dri.so", "\177ELF\0libgbm.so.1\0");
  assert_probe(r, NULL, NULL, VGPU_MESA_SOCKET_ENV, "usr/lib/libgallium-25.0.7.so");
  /* LIBGL_DRIVERS_PATH does not matter to a GLX library that links its
   * driver */
  assert_probe(r, NULL, "/nowhere", VGPU_MESA_SOCKET_ENV, "usr/lib/libgallium-25.0.7.so");
  rm_tree(r);
}

/* Mesa 22.3: the megadriver swrast_dri.so has the path compiled in. */
static void test_mesa22(void **state) {
  (void)state;
  g_autofree char *r = new_root();
  PUT(r, "usr/lib/libGLX_mesa.so.0", "\177ELF\0libX11.so.6\0libglapi.so.0\0");
  PUT(r, "usr/lib/dri/swrast_dri.so", "\177ELF\0/tmp/.virgl_test\0VTEST_SOCKET\0");
  assert_probe(r, NULL, NULL, VGPU_MESA_SOCKET_FIXED, "usr/lib/dri/swrast_dri.so");
  /* LIBGL_DRIVERS_PATH steers the loader to another build that reads the
   * variable; relative entries are ignored, as by the loader */
  PUT(r, "opt/mesa/dri/swrast_dri.so", "\177ELF\0VTEST_SOCKET_NAME\0");
  assert_probe(r, NULL, "relative/dri:/opt/mesa/dri", VGPU_MESA_SOCKET_ENV,
               "opt/mesa/dri/swrast_dri.so");
  /* a path without that driver: nothing is found there */
  assert_probe(r, NULL, "/opt/none", VGPU_MESA_NOT_FOUND, NULL);
  rm_tree(r);
}

/* LD_LIBRARY_PATH comes before the system directories, for the GLX
 * library and for the libgallium it names. */
static void test_ld_library_path(void **state) {
  (void)state;
  g_autofree char *r = new_root();
  PUT(r, "usr/lib/libGLX_mesa.so.0", "\177ELF\0libglapi.so.0\0");
  PUT(r, "usr/lib/dri/swrast_dri.so", "\177ELF\0/tmp/.virgl_test\0");
  PUT(r, "opt/new/libGLX_mesa.so.0", "\177ELF\0libgallium-26.so\0");
  PUT(r, "opt/new/libgallium-26.so", "\177ELF\0VTEST_SOCKET_NAME\0");
  assert_probe(r, NULL, NULL, VGPU_MESA_SOCKET_FIXED, "usr/lib/dri/swrast_dri.so");
  assert_probe(r, "/opt/new", NULL, VGPU_MESA_SOCKET_ENV, "opt/new/libgallium-26.so");
  rm_tree(r);
}

/* A libgallium named but absent, or a name that is not a whole string of
 * the string table, leads to the DRI driver; nothing at all is reported
 * as not found, with where the loader was looked for. */
static void test_fallbacks(void **state) {
  (void)state;
  g_autofree char *r = new_root();
  assert_probe(r, NULL, NULL, VGPU_MESA_NOT_FOUND, NULL);
  PUT(r, "usr/lib/libGL.so.1", "\177ELF\0libgallium-9.so\0xlibgallium-8.so\0");
  assert_probe(r, NULL, NULL, VGPU_MESA_NOT_FOUND, NULL);
  PUT(r, "usr/lib/libgallium-8.so", "VTEST_SOCKET_NAME");
  assert_probe(r, NULL, NULL, VGPU_MESA_NOT_FOUND, NULL);
  PUT(r, "usr/lib/dri/swrast_dri.so", "\177ELF\0VTEST_SOCKET_NAME\0");
  assert_probe(r, NULL, NULL, VGPU_MESA_SOCKET_ENV, "usr/lib/dri/swrast_dri.so");
  /* an empty or unreadable driver counts as absent */
  PUT(r, "usr/lib/dri/swrast_dri.so", "");
  assert_probe(r, NULL, NULL, VGPU_MESA_NOT_FOUND, NULL);
  rm_tree(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mesa25),
      cmocka_unit_test(test_mesa22),
      cmocka_unit_test(test_ld_library_path),
      cmocka_unit_test(test_fallbacks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
