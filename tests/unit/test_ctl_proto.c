/* Control client: framing, replies and errors, and the human formatting. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl/ctl_format.h"
#include "ctl/ctl_proto.h"

static void test_read_line_across_writes(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal(write(sv[0], "{\"ok\":", 6), 6);
  assert_int_equal(write(sv[0], "true}\nnext", 10), 10);
  GError *e = NULL;
  char *line = vgpu_ctl_read_line(sv[1], 1024, 1000, &e);
  assert_string_equal(line, "{\"ok\":true}");
  g_free(line);
  /* No newline in time: a timeout error, not a hang. */
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 100, &e));
  assert_non_null(strstr(e->message, "no reply"));
  g_clear_error(&e);
  /* Oversize lines are refused. */
  char big[4096];
  memset(big, 'x', sizeof(big));
  assert_int_equal(write(sv[0], big, sizeof(big)), (ssize_t)sizeof(big));
  assert_null(vgpu_ctl_read_line(sv[1], 1024, 1000, &e));
  assert_non_null(strstr(e->message, "longer than"));
  g_clear_error(&e);
  close(sv[0]);
  assert_null(vgpu_ctl_read_line(sv[1], 1 << 20, 1000, &e));
  assert_non_null(strstr(e->message, "closed"));
  g_clear_error(&e);
  close(sv[1]);
}

static void test_parse_reply(void **state) {
  GError *e = NULL;
  JsonObject *o = vgpu_ctl_parse_reply("{\"ok\":true,\"instances\":[]}", &e);
  assert_non_null(o);
  assert_true(json_object_has_member(o, "instances"));
  json_object_unref(o);
  assert_null(vgpu_ctl_parse_reply("{\"ok\":false,\"error\":\"no instance \\\"x\\\"\"}", &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_REFUSED));
  assert_string_equal(e->message, "no instance \"x\"");
  g_clear_error(&e);
  assert_null(vgpu_ctl_parse_reply("not json", &e));
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL));
  g_clear_error(&e);
  assert_null(vgpu_ctl_parse_reply("[1,2]", &e));
  g_clear_error(&e);
}

/* vgpu_ctl_call against a peer that answers like vgpud. */
static void test_call(void **state) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  fflush(NULL); /* the child must not repeat buffered output */
  pid_t pid = fork();
  if (pid == 0) {
    char buf[256];
    ssize_t n = read(sv[1], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
    const char *reply = strstr(buf, "\"command\":\"show\"") && strstr(buf, "\"name\":\"vgpu0\"")
                            ? "{\"ok\":true,\"instance\":{\"name\":\"vgpu0\"}}\n"
                            : "{\"ok\":false,\"error\":\"bad\"}\n";
    _exit(write(sv[1], reply, strlen(reply)) > 0 ? 0 : 1);
  }
  close(sv[1]);
  GError *e = NULL;
  /* Wrap the connected socket the way vgpu_ctl_connect would. */
  char tmpl[] = "/tmp/vgpu-ctl-test-XXXXXX";
  assert_non_null(g_mkdtemp(tmpl));
  assert_null(vgpu_ctl_connect(tmpl, &e)); /* nobody listens there */
  assert_true(g_error_matches(e, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT));
  assert_non_null(strstr(e->message, "is vgpud running?"));
  g_clear_error(&e);
  rmdir(tmpl);
  JsonObject *req = vgpu_ctl_request("show", "vgpu0");
  g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, req);
  g_autofree char *text = json_to_string(n, FALSE);
  assert_non_null(strstr(text, "\"command\":\"show\""));
  /* One write: the peer answers after its first read and hangs up. */
  g_autofree char *line_out = g_strconcat(text, "\n", NULL);
  assert_int_equal(write(sv[0], line_out, strlen(line_out)), (ssize_t)strlen(line_out));
  char *line = vgpu_ctl_read_line(sv[0], 4096, 2000, &e);
  assert_non_null(line);
  JsonObject *o = vgpu_ctl_parse_reply(line, &e);
  assert_non_null(o);
  assert_string_equal(json_object_get_string_member(json_object_get_object_member(o, "instance"),
                                                    "name"),
                      "vgpu0");
  json_object_unref(o);
  json_object_unref(req);
  g_free(line);
  close(sv[0]);
}

static void test_table(void **state) {
  static const char *const h[] = {"NAME", "VRAM", "FRAMES", NULL};
  VgpuTable *t = vgpu_table_new(h);
  vgpu_table_add(t, "vgpu0", "2.2 MiB / 256 MiB (0%)", "7462", NULL);
  vgpu_table_add(t, "a-much-longer-name", "0 B / 1 GiB (0%)", "0", NULL);
  vgpu_table_add(t, "short", NULL); /* missing cells are blank */
  char *s = vgpu_table_render(t);
  assert_string_equal(s, "NAME                VRAM                    FRAMES\n"
                         "vgpu0               2.2 MiB / 256 MiB (0%)  7462\n"
                         "a-much-longer-name  0 B / 1 GiB (0%)        0\n"
                         "short\n");
  g_free(s);
  vgpu_table_free(t);
}

static void test_units(void **state) {
  char *s = vgpu_format_usage_bytes(2306867, 256u << 20);
  assert_string_equal(s, "2.2 MiB / 256 MiB (0%)");
  g_free(s);
  s = vgpu_format_usage_bytes(192u << 20, 256u << 20);
  assert_string_equal(s, "192 MiB / 256 MiB (75%)");
  g_free(s);
  s = vgpu_format_usage_bytes(5, 0);
  assert_string_equal(s, "5 B / unlimited");
  g_free(s);
  s = vgpu_format_usage_count(3, 0);
  assert_string_equal(s, "3/unlimited");
  g_free(s);
  s = vgpu_format_usage_count(12, 4096);
  assert_string_equal(s, "12/4096");
  g_free(s);
  const struct {
    uint64_t s;
    const char *t;
  } up[] = {{45, "45s"}, {723, "12m03s"}, {10920, "3h02m"}, {187200, "2d04h"}};
  for (size_t i = 0; i < G_N_ELEMENTS(up); i++) {
    s = vgpu_format_uptime(up[i].s);
    assert_string_equal(s, up[i].t);
    g_free(s);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_read_line_across_writes), cmocka_unit_test(test_parse_reply),
      cmocka_unit_test(test_call),                    cmocka_unit_test(test_table),
      cmocka_unit_test(test_units),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
