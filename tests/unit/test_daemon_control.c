/* The daemon's control server and supervisor without sockets to clients:
 * request lines go straight to vgpu_control_handle() of a real supervisor
 * on a scratch runtime directory.  Read commands for anyone, admin
 * commands only for root, run-time create/set/destroy with their files on
 * disk, atomic settings, refusals of malformed requests, and a reload that
 * cannot add an instance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/supervisor.h"
#include "util/log.h"

#include "../support/scratch_daemon.h"

#define ROOT 0
#define NOBODY 65534

typedef ScratchDaemon Fixture;

static const char CONFIG[] = "[daemon]\nlog-level=error\n\n"
                             "[profile p]\nvram=256M\nmax-clients=4\n\n"
                             "[profile q]\nvram=1G\n\n"
                             "[instance vgpu0]\nprofile=p\n";

static int setup(void **state) {
  *state = scratch_daemon_start(CONFIG);
  return 0;
}

static int teardown(void **state) {
  assert_true(scratch_daemon_stop(*state)); /* nothing else left behind */
  return 0;
}

/* Sends one request line; returns the reply object (owned by *parser). */
static JsonObject *ask(Fixture *f, uid_t uid, const char *line, JsonParser **parser) {
  g_autofree char *reply = vgpu_control_handle(f->sup, line, uid);
  assert_non_null(reply);
  assert_null(strchr(reply, '\n'));
  *parser = json_parser_new();
  assert_true(json_parser_load_from_data(*parser, reply, -1, NULL));
  JsonNode *root = json_parser_get_root(*parser);
  assert_true(JSON_NODE_HOLDS_OBJECT(root));
  return json_node_get_object(root);
}

static void expect_ok(Fixture *f, uid_t uid, const char *line) {
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, uid, line, &p);
  if (!json_object_get_boolean_member(o, "ok"))
    fail_msg("%s refused: %s", line, json_object_get_string_member(o, "error"));
}

static void expect_error(Fixture *f, uid_t uid, const char *line, const char *what) {
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, uid, line, &p);
  assert_false(json_object_get_boolean_member(o, "ok"));
  const char *err = json_object_get_string_member(o, "error");
  if (!strstr(err, what))
    fail_msg("%s: error \"%s\" does not say \"%s\"", line, err, what);
}

static uint64_t limit_of(Fixture *f, const char *name, const char *kind) {
  g_autofree char *line = g_strdup_printf("{\"command\":\"show\",\"name\":\"%s\"}", name);
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, NOBODY, line, &p);
  assert_true(json_object_get_boolean_member(o, "ok"));
  JsonObject *in = json_object_get_object_member(o, "instance");
  return (uint64_t)json_object_get_int_member(json_object_get_object_member(in, "limits"), kind);
}

static bool socket_exists(Fixture *f, const char *name) {
  g_autofree char *path = g_build_filename(f->run, name, "vtest.sock", NULL);
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

static void test_read_commands_for_anyone(void **state) {
  Fixture *f = *state;
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, NOBODY, "{\"command\":\"list\"}", &p);
  JsonArray *all = json_object_get_array_member(o, "instances");
  assert_int_equal(json_array_get_length(all), 1);
  JsonObject *in = json_array_get_object_element(all, 0);
  assert_string_equal(json_object_get_string_member(in, "name"), "vgpu0");
  assert_string_equal(json_object_get_string_member(in, "state"), "active");
  assert_int_equal(limit_of(f, "vgpu0", "vram"), 256u << 20);
  assert_int_equal(limit_of(f, "vgpu0", "clients"), 4);
  expect_ok(f, NOBODY, "{\"command\":\"profiles\"}");
  expect_ok(f, NOBODY, "{\"command\":\"status\"}");
  expect_error(f, NOBODY, "{\"command\":\"show\",\"name\":\"nope\"}", "no instance \"nope\"");
}

static void test_admin_commands_need_root(void **state) {
  Fixture *f = *state;
  const char *lines[] = {"{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"p\"}",
                         "{\"command\":\"destroy\",\"name\":\"vgpu0\"}",
                         "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{\"vram\":\"1M\"}}",
                         "{\"command\":\"reload\"}"};
  for (size_t i = 0; i < G_N_ELEMENTS(lines); i++)
    expect_error(f, NOBODY, lines[i], "permission denied");
  assert_false(socket_exists(f, "t1"));
  assert_true(socket_exists(f, "vgpu0"));
  assert_int_equal(limit_of(f, "vgpu0", "vram"), 256u << 20);
}

static void test_create_set_destroy(void **state) {
  Fixture *f = *state;
  expect_ok(f, ROOT, "{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"q\"}");
  assert_true(socket_exists(f, "t1"));
  assert_int_equal(limit_of(f, "t1", "vram"), 1u << 30);
  expect_error(f, ROOT, "{\"command\":\"create\",\"name\":\"t1\",\"profile\":\"q\"}",
               "already exists");
  expect_error(f, ROOT, "{\"command\":\"create\",\"name\":\"../x\",\"profile\":\"q\"}",
               "invalid instance name");
  expect_error(f, ROOT, "{\"command\":\"create\",\"name\":\"t2\"}", "unknown profile");

  expect_ok(f, ROOT, "{\"command\":\"set\",\"name\":\"t1\",\"settings\":{\"vram\":\"2G\"}}");
  assert_int_equal(limit_of(f, "t1", "vram"), 2ull << 30);
  /* All settings or none: one bad key leaves vram as it was. */
  expect_error(
      f, ROOT,
      "{\"command\":\"set\",\"name\":\"t1\",\"settings\":{\"vram\":\"3G\",\"vrma\":\"1\"}}",
      "vrma");
  assert_int_equal(limit_of(f, "t1", "vram"), 2ull << 30);

  expect_ok(f, ROOT, "{\"command\":\"destroy\",\"name\":\"t1\"}");
  assert_false(socket_exists(f, "t1"));
  expect_error(f, ROOT, "{\"command\":\"destroy\",\"name\":\"t1\"}", "no instance");
}

static void test_malformed_requests(void **state) {
  Fixture *f = *state;
  expect_error(f, ROOT, "not json", "bad request");
  expect_error(f, ROOT, "[1,2]", "expected a JSON object");
  expect_error(f, ROOT, "{}", "missing \"command\"");
  expect_error(f, ROOT, "{\"command\":\"frobnicate\"}", "unknown command");
  expect_error(f, ROOT, "{\"command\":{}}", "\"command\" must be a string");
  expect_error(f, ROOT, "{\"command\":\"show\",\"name\":null}", "\"name\" must be a string");
  expect_error(f, ROOT, "{\"command\":\"destroy\",\"name\":\"vgpu0\",\"force\":1}",
               "\"force\" must be true or false");
  expect_error(f, ROOT, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":\"vram=1G\"}",
               "\"settings\" must be an object");
  expect_error(f, ROOT, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{}}", "non-empty");
  expect_error(f, ROOT, "{\"command\":\"set\",\"name\":\"vgpu0\",\"settings\":{\"vram\":5}}",
               "must be a string");
  /* Unknown members are ignored. */
  expect_ok(f, NOBODY, "{\"command\":\"list\",\"extra\":[1]}");
  assert_true(socket_exists(f, "vgpu0"));
}

static void test_reload_that_cannot_add_an_instance(void **state) {
  Fixture *f = *state;
  /* A file where the new instance's directory would go. */
  g_autofree char *blocker = g_build_filename(f->run, "blocked", NULL);
  assert_true(g_file_set_contents(blocker, "", 0, NULL));
  g_autofree char *next =
      g_strconcat(CONFIG, "\n[instance vgpu1]\nprofile=q\n\n[instance blocked]\nprofile=p\n", NULL);
  assert_true(g_file_set_contents(f->conf, next, -1, NULL));
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = ask(f, ROOT, "{\"command\":\"reload\"}", &p);
  assert_true(json_object_get_boolean_member(o, "ok"));
  const char *warning = json_object_get_string_member_with_default(o, "warning", NULL);
  assert_non_null(warning);
  assert_non_null(strstr(warning, "/run/blocked is not a directory"));
  assert_true(socket_exists(f, "vgpu1")); /* the rest applied */
  expect_error(f, NOBODY, "{\"command\":\"show\",\"name\":\"blocked\"}", "no instance");
  g_unlink(blocker);

  /* A broken file changes nothing. */
  assert_true(g_file_set_contents(f->conf, "[profile p]\nvram=12Q\n", -1, NULL));
  expect_error(f, ROOT, "{\"command\":\"reload\"}", "configuration unchanged");
  assert_true(socket_exists(f, "vgpu1"));
}

int main(void) {
  vgpu_log_init("test-daemon-control", VGPU_LOG_ERROR);
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_read_commands_for_anyone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_admin_commands_need_root, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_set_destroy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reload_that_cannot_add_an_instance, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
