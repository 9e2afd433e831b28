/* The renderer probe's answer as vgpud reads it: what a well-formed answer
 * gives, and each way a worker could get it wrong (malformed JSON, wrong
 * types, missing members, values out of range, oversized or nested
 * answers), all refused with one line and nothing kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/probe.h"
#include "vtest/vtest_version.h"

static const char GOOD[] =
    "{\"renderer\":\"virgl\",\"description\":\"virgl (llvmpipe)\",\"vtest_protocols\":[0,2],"
    "\"capsets\":[{\"id\":1,\"version\":1,\"size\":308},{\"id\":2,\"version\":2,\"size\":1376}]}\n";

static void test_good(void **state) {
  (void)state;
  VgpuProbeAnswer a;
  g_autoptr(GError) e = NULL;
  assert_true(vgpu_probe_parse(GOOD, strlen(GOOD), &a, &e));
  assert_null(e);
  assert_string_equal(a.renderer, "virgl");
  assert_string_equal(a.description, "virgl (llvmpipe)");
  assert_int_equal(a.n_versions, 2);
  assert_int_equal(a.versions[0], 0);
  assert_int_equal(a.versions[1], 2);
  assert_int_equal(a.n_capsets, 2);
  assert_int_equal(a.capsets[0].id, 1);
  assert_int_equal(a.capsets[0].version, 1);
  assert_int_equal(a.capsets[0].size, 308);
  assert_int_equal(a.capsets[1].id, 2);
  assert_int_equal(a.capsets[1].version, 2);
  assert_int_equal(a.capsets[1].size, 1376);
  vgpu_probe_answer_clear(&a);

  /* Unknown members are ignored; no capsets is an answer; a description
   * with control characters or UTF-8 is kept as printable ASCII. */
  const char *other = "{\"renderer\":\"null\",\"description\":\"caf\xc3\xa9\\u001b[2J\","
                      "\"vtest_protocols\":[0,2,3],\"capsets\":[],\"extra\":{\"x\":[1]}}";
  assert_true(vgpu_probe_parse(other, strlen(other), &a, NULL));
  assert_string_equal(a.description, "caf??[2J");
  assert_int_equal(a.n_versions, 3);
  assert_int_equal(a.n_capsets, 0);
  vgpu_probe_answer_clear(&a);
}

/* Each refused, with a reason naming what was wrong, and *out empty. */
static void expect_refused(const char *text, size_t len, const char *reason) {
  VgpuProbeAnswer a;
  memset(&a, 0x5a, sizeof(a));
  g_autoptr(GError) e = NULL;
  assert_false(vgpu_probe_parse(text, len, &a, &e));
  assert_non_null(e);
  if (!strstr(e->message, reason))
    fail_msg("\"%.80s\": got \"%s\", expected \"%s\"", text, e->message, reason);
  assert_true(strlen(e->message) <= VGPU_PROBE_MAX_REASON);
  for (const char *p = e->message; *p; p++)
    assert_true(*p >= 0x20 && *p <= 0x7e); /* shown on terminals and in logs */
  assert_null(a.renderer);
  assert_null(a.description);
  assert_int_equal(a.n_versions, 0);
  assert_int_equal(a.n_capsets, 0);
}
#define REFUSED(text, reason) expect_refused(text, strlen(text), reason)

static void test_malformed(void **state) {
  (void)state;
  REFUSED("", "empty answer");
  REFUSED("probe: renderer: no EGL display\n", "not JSON");
  REFUSED("{\"renderer\":\"virgl\"", "not JSON");
  REFUSED("[1,2]", "not a JSON object");
  /* json-glib quotes the input in its message: an escape sequence there is
   * not passed on. */
  REFUSED("\x1b]2;owned\x07 {", "not JSON");
  g_autoptr(GString) token = g_string_new("{\"renderer\":");
  for (int i = 0; i < 1000; i++)
    g_string_append_c(token, 'x');
  REFUSED(token->str, "not JSON");
  REFUSED("\"virgl\"", "not a JSON object");
  expect_refused("{\"renderer\":\"vi\0rgl\"}", 20, "not UTF-8");
  REFUSED("{\"renderer\":\"\xff\"}", "not UTF-8");
  /* Deep nesting is refused before json-glib recurses into it. */
  g_autoptr(GString) deep = g_string_new("{\"x\":");
  for (int i = 0; i < 5000; i++)
    g_string_append_c(deep, '[');
  REFUSED(deep->str, "nests deeper");
  /* Brackets inside strings do not count. */
  const char *quoted = "{\"renderer\":\"null\",\"description\":\"[[[[[[[[[[[[\\\"[[[[\","
                       "\"vtest_protocols\":[0],\"capsets\":[]}";
  VgpuProbeAnswer a;
  assert_true(vgpu_probe_parse(quoted, strlen(quoted), &a, NULL));
  vgpu_probe_answer_clear(&a);
}

static void test_oversized(void **state) {
  (void)state;
  /* Over the limit: refused without being parsed. */
  size_t big = VGPU_PROBE_MAX_ANSWER + 1;
  g_autofree char *text = g_malloc(big);
  memset(text, ' ', big);
  memcpy(text, GOOD, strlen(GOOD));
  expect_refused(text, big, "over the");
  /* Within it but with too much of everything. */
  g_autoptr(GString) caps = g_string_new(
      "{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],\"capsets\":[");
  for (unsigned i = 1; i <= VGPU_PROBE_MAX_CAPSETS + 1; i++)
    g_string_append_printf(caps, "%s{\"id\":%u,\"version\":1,\"size\":8}", i > 1 ? "," : "", i);
  g_string_append(caps, "]}");
  REFUSED(caps->str, "\"capsets\" has 33 entries");
  g_autoptr(GString) vers = g_string_new(
      "{\"renderer\":\"virgl\",\"description\":\"d\",\"capsets\":[],\"vtest_protocols\":[");
  for (unsigned i = 0; i <= VGPU_PROBE_MAX_VERSIONS; i++)
    g_string_append_printf(vers, "%s%u", i ? "," : "", i);
  g_string_append(vers, "]}");
  REFUSED(vers->str, "\"vtest_protocols\" has 17 entries");
  g_autoptr(GString) desc = g_string_new("{\"renderer\":\"virgl\",\"description\":\"");
  for (unsigned i = 0; i <= VGPU_PROBE_MAX_DESCRIPTION; i++)
    g_string_append_c(desc, 'x');
  g_string_append(desc, "\",\"vtest_protocols\":[0],\"capsets\":[]}");
  REFUSED(desc->str, "\"description\" is over 256");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":1,\"version\":1,\"size\":1048577}]}",
          "\"size\" 1048577 is outside 1..1048576");
}

static void test_missing_and_wrong(void **state) {
  (void)state;
  REFUSED("{}", "no \"renderer\"");
  REFUSED("{\"renderer\":\"virgl\",\"vtest_protocols\":[0],\"capsets\":[]}", "no \"description\"");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"capsets\":[]}",
          "no \"vtest_protocols\"");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0]}",
          "no \"capsets\"");
  REFUSED("{\"renderer\":7,\"description\":\"d\",\"vtest_protocols\":[0],\"capsets\":[]}",
          "\"renderer\" is not a string");
  REFUSED("{\"renderer\":\"Virgl 1\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[]}",
          "\"renderer\" is not a name");
  REFUSED("{\"renderer\":\"\",\"description\":\"d\",\"vtest_protocols\":[0],\"capsets\":[]}",
          "\"renderer\" is not a name");
  REFUSED("{\"renderer\":\"virgl\",\"description\":null,\"vtest_protocols\":[0],\"capsets\":[]}",
          "\"description\" is not a string");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":{},\"capsets\":[]}",
          "\"vtest_protocols\" is not an array");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[],\"capsets\":[]}",
          "\"vtest_protocols\" has 0 entries");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0,\"2\"],"
          "\"capsets\":[]}",
          "entry 1 is not an integer");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[2.5],"
          "\"capsets\":[]}",
          "entry 0 is not an integer");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[2,2],"
          "\"capsets\":[]}",
          "entry 1 (2) is not a version above");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[-1],"
          "\"capsets\":[]}",
          "entry 0 (-1)");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[256],"
          "\"capsets\":[]}",
          "entry 0 (256)");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[1]}",
          "capset 0 is not an object");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":1,\"size\":8}]}",
          "capset 0 has no \"version\"");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":0,\"version\":1,\"size\":8}]}",
          "capset 0: \"id\" 0 is outside 1..255");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":1,\"version\":4294967296,\"size\":8}]}",
          "\"version\" 4294967296 is outside");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":1,\"version\":1,\"size\":0}]}",
          "\"size\" 0 is outside");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":1,\"version\":1,\"size\":\"8\"}]}",
          "\"size\" is not an integer");
  REFUSED("{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
          "\"capsets\":[{\"id\":2,\"version\":1,\"size\":8},{\"id\":1,\"version\":1,\"size\":8}]}",
          "capset 1: id 1 is not above");
}

/* The versions a worker reports come from the vtest server's own maximum. */
static void test_versions(void **state) {
  (void)state;
  uint32_t v[8];
  size_t n = vtest_protocol_versions(v, G_N_ELEMENTS(v));
  assert_int_equal(n, vtest_max_protocol_version());
  assert_int_equal(v[0], 0);
  for (size_t i = 1; i < n; i++)
    assert_int_equal(v[i], i + 1);
  assert_int_equal(v[n - 1], VTEST_PROTOCOL_VERSION);
  assert_int_equal(vtest_protocol_versions(v, 1), n); /* counts what did not fit */
}

/* What the renderer runs on: optional, printable ASCII, bounded; Mesa's
 * version taken out of GL_VERSION. */
static void test_versions_of_renderer(void **state) {
  (void)state;
  VgpuProbeAnswer a;
  g_autoptr(GError) e = NULL;
  const char *full =
      "{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0,2],\"capsets\":[],"
      "\"gl_renderer\":\"llvmpipe (LLVM 15.0.6, 256 bits)\","
      "\"gl_version\":\"4.5 (Core Profile) Mesa 22.3.6\",\"virglrenderer_version\":\"0.10.4\","
      "\"virglrenderer_library\":\"/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1.7.7\"}";
  assert_true(vgpu_probe_parse(full, strlen(full), &a, &e));
  assert_string_equal(a.gl_renderer, "llvmpipe (LLVM 15.0.6, 256 bits)");
  assert_string_equal(a.gl_version, "4.5 (Core Profile) Mesa 22.3.6");
  assert_string_equal(a.mesa_version, "22.3.6");
  assert_string_equal(a.virgl_version, "0.10.4");
  assert_string_equal(a.virgl_library, "/usr/lib/x86_64-linux-gnu/libvirglrenderer.so.1.7.7");
  vgpu_probe_answer_clear(&a);
  /* Absent: NULL (GOOD has none). */
  assert_true(vgpu_probe_parse(GOOD, strlen(GOOD), &a, NULL));
  assert_null(a.gl_renderer);
  assert_null(a.mesa_version);
  assert_null(a.virgl_library);
  vgpu_probe_answer_clear(&a);

  const char *pre = "{\"renderer\":\"virgl\",\"description\":\"d\",\"vtest_protocols\":[0],"
                    "\"capsets\":[],";
  g_autofree char *not_string = g_strconcat(pre, "\"gl_version\":7}", NULL);
  REFUSED(not_string, "\"gl_version\" is not a string");
  g_autofree char *empty = g_strconcat(pre, "\"gl_renderer\":\"\"}", NULL);
  REFUSED(empty, "\"gl_renderer\" is not 1..256 characters");
  g_autofree char *escape = g_strconcat(pre, "\"gl_renderer\":\"a\\u001b[2J\"}", NULL);
  REFUSED(escape, "\"gl_renderer\" is not printable ASCII");
  g_autofree char *utf8 = g_strconcat(pre, "\"virglrenderer_version\":\"caf\xc3\xa9\"}", NULL);
  REFUSED(utf8, "\"virglrenderer_version\" is not printable ASCII");
  g_autofree char *long_text = g_strnfill(257, 'x');
  g_autofree char *too_long = g_strconcat(pre, "\"gl_version\":\"", long_text, "\"}", NULL);
  REFUSED(too_long, "\"gl_version\" is not 1..256 characters");
  g_autofree char *relative = g_strconcat(pre, "\"virglrenderer_library\":\"lib.so\"}", NULL);
  REFUSED(relative, "\"virglrenderer_library\" is not an absolute path");

  const struct {
    const char *gl, *mesa;
  } m[] = {{"4.5 (Core Profile) Mesa 22.3.6", "22.3.6"},
           {"OpenGL ES 3.2 Mesa 25.0.7-2", "25.0.7-2"},
           {"4.6 (Compatibility Profile) Mesa 24.1.0-devel (git-1a2b3c)", "24.1.0-devel"},
           {"4.6.0 NVIDIA 535.104.05", NULL},
           {"4.5 NotMesa 1.0", NULL},
           {"4.5 Mesa x", NULL},
           {"Mesa 23.1", "23.1"},
           {"", NULL},
           {NULL, NULL}};
  for (size_t i = 0; i < G_N_ELEMENTS(m); i++) {
    g_autofree char *v = vgpu_probe_mesa_version(m[i].gl);
    if (m[i].mesa)
      assert_string_equal(v, m[i].mesa);
    else
      assert_null(v);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good),      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_oversized), cmocka_unit_test(test_missing_and_wrong),
      cmocka_unit_test(test_versions),  cmocka_unit_test(test_versions_of_renderer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
