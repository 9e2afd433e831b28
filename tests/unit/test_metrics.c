/* The metrics endpoint: label escaping and number formatting, the
 * metrics-listen address forms, the /metrics text of a real supervisor,
 * and the HTTP routes served over a socket pair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <netinet/in.h>

#include "daemon/config.h"
#include "daemon/http.h"
#include "daemon/metrics.h"
#include "../support/scratch_daemon.h"
#include "util/fd.h"

static char *escaped(const char *v, size_t max) {
  GString *s = g_string_new(NULL);
  vgpu_metrics_label_value(s, v, max);
  return g_string_free(s, FALSE);
}

static void test_label_value(void **state) {
  g_autofree char *plain = escaped("glxgears", 64);
  assert_string_equal(plain, "glxgears");
  g_autofree char *hostile = escaped("a\"b\\c\nd", 64);
  assert_string_equal(hostile, "a\\\"b\\\\c\\nd");
  /* Control bytes and anything past ASCII become '?': the text stays UTF-8. */
  g_autofree char *ctl = escaped("x\ty\x7f\xc3\xa9\r", 64);
  assert_string_equal(ctl, "x?y????");
  /* At most max bytes of the value are read. */
  g_autofree char *cut = escaped("0123456789", 4);
  assert_string_equal(cut, "0123");
  g_autofree char *none = escaped(NULL, 4);
  assert_string_equal(none, "");
}

static void test_seconds(void **state) {
  GString *s = g_string_new(NULL);
  vgpu_metrics_seconds(s, 0);
  g_string_append_c(s, ' ');
  vgpu_metrics_seconds(s, 1500000001);
  g_string_append_c(s, ' ');
  vgpu_metrics_seconds(s, UINT64_MAX);
  assert_string_equal(s->str, "0.000000000 1.500000001 18446744073.709551615");
  g_string_free(s, TRUE);
}

static void test_address_parse(void **state) {
  struct sockaddr_storage ss;
  socklen_t len;
  assert_true(vgpu_http_address_parse("127.0.0.1:9633", &ss, &len, NULL));
  assert_int_equal(ss.ss_family, AF_INET);
  assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 9633);
  assert_true(vgpu_http_address_parse("[::1]:9633", &ss, &len, NULL));
  assert_int_equal(ss.ss_family, AF_INET6);
  assert_true(vgpu_http_address_parse("0.0.0.0:1", &ss, &len, NULL));
  assert_true(vgpu_http_address_parse("/run/vgpu-metrics.sock", &ss, &len, NULL));
  assert_int_equal(ss.ss_family, AF_UNIX);
  const char *bad[] = {"",
                       "9633",
                       ":9633",
                       "127.0.0.1",
                       "127.0.0.1:",
                       "127.0.0.1:0",
                       "127.0.0.1:65536",
                       "localhost:9633",
                       "::1:9633",
                       "[::1]",
                       "[::1:9633",
                       "[]:9633",
                       "[fe80::1%eth0]:9633",
                       "1.2.3.4:96x",
                       "relative/path",
                       "127.0.0.1:-1"};
  for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) e = NULL;
    assert_false(vgpu_http_address_parse(bad[i], NULL, NULL, &e));
    assert_non_null(e);
  }
  g_autofree char *long_path = g_strnfill(sizeof(((struct sockaddr_un *)0)->sun_path), 'a');
  long_path[0] = '/';
  assert_false(vgpu_http_address_parse(long_path, NULL, NULL, NULL));
}

static void test_config_key(void **state) {
  g_autoptr(GError) e = NULL;
  g_autoptr(VgpuConfig) c =
      vgpu_config_load_data("[daemon]\nmetrics-listen=[::1]:9633\n", -1, "t.conf", &e);
  assert_non_null(c);
  assert_string_equal(c->metrics_listen, "[::1]:9633");
  g_autoptr(VgpuConfig) off = vgpu_config_load_data("[daemon]\nlog-level=info\n", -1, "t.conf", &e);
  assert_non_null(off);
  assert_null(off->metrics_listen);
  VgpuConfig *bad = vgpu_config_load_data(
      "[daemon]\nlog-level=info\nmetrics-listen=localhost:9633\n", -1, "t.conf", &e);
  assert_null(bad);
  assert_non_null(strstr(e->message, "t.conf:3:"));
  assert_non_null(strstr(e->message, "metrics-listen"));
}

/* Every family of a supervisor with two instances, their labels. */
static void test_metrics_text(void **state) {
  ScratchDaemon *d = scratch_daemon_start("[profile p]\nvram=64M\nfps-cap=30\n"
                                          "[instance a]\nprofile=p\n"
                                          "[instance b]\nprofile=p\nvram=0\n[daemon]\novercommit=2.0\n");
  g_autofree char *t = vgpu_metrics_text(d->sup);
  const char *want[] = {
      "# TYPE vgpu_info gauge\nvgpu_info{version=\"",
      "# TYPE vgpu_gpu_memory_bytes gauge\nvgpu_gpu_memory_bytes ",
      "vgpu_instance_vram_limit_bytes{instance=\"a\",profile=\"p\"} 67108864\n",
      "vgpu_instance_vram_used_bytes{instance=\"b\",profile=\"p\"} 0\n",
      "vgpu_instance_fps_cap{instance=\"a\",profile=\"p\"} 30\n",
      "vgpu_instance_busy_seconds_total{instance=\"a\",profile=\"p\"} 0.000000000\n",
      "# TYPE vgpu_instance_frames_total counter\n",
      "vgpu_instance_sessions_ended_total{instance=\"b\",profile=\"p\"} 0\n",
      "# TYPE vgpu_tenant_frames_total counter\n",
  };
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++)
    if (!strstr(t, want[i]))
      fail_msg("missing %s in:\n%s", want[i], t);
  /* b is unlimited: no limit sample for it. */
  assert_null(strstr(t, "vgpu_instance_vram_limit_bytes{instance=\"b\""));
  /* Every line is a comment or a sample of the family announced last. */
  g_auto(GStrv) lines = g_strsplit(t, "\n", -1);
  const char *family = NULL;
  for (guint i = 0; lines[i] && lines[i][0]; i++) {
    if (g_str_has_prefix(lines[i], "# HELP ")) {
      family = lines[i] + 7;
    } else if (!g_str_has_prefix(lines[i], "# TYPE ")) {
      assert_non_null(family);
      size_t n = strcspn(family, " ");
      assert_true(strncmp(lines[i], family, n) == 0 && strchr("{ ", lines[i][n]));
    }
  }
  assert_true(scratch_daemon_stop(d));
}

/* One request over a socket pair; the answer until the server closes. */
static char *ask(VgpuHttp *h, const char *req) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
  assert_true(vgpu_http_add_connection(h, sv[1], NULL, 0));
  assert_int_equal(vgpu_write_all(sv[0], req, strlen(req)), 0);
  GString *out = g_string_new(NULL);
  for (int i = 0; i < 100000; i++) {
    vgpu_http_run(h);
    char buf[4096];
    ssize_t n = read(sv[0], buf, sizeof(buf));
    if (n == 0)
      break;
    if (n > 0)
      g_string_append_len(out, buf, n);
  }
  vgpu_close(sv[0]);
  return g_string_free(out, FALSE);
}

static char *metrics_stub(gpointer user) {
  return g_strdup("m 1\n");
}

static void test_routes(void **state) {
  VgpuHttp *h = vgpu_http_new(NULL, metrics_stub, NULL, NULL);
  assert_non_null(h);
  g_autofree char *m = ask(h, "GET /metrics HTTP/1.0\r\n\r\n");
  assert_true(g_str_has_prefix(m, "HTTP/1.1 200"));
  assert_non_null(strstr(m, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
  assert_true(g_str_has_suffix(m, "\r\n\r\nm 1\n"));
  g_autofree char *page = ask(h, "GET /dashboard HTTP/1.0\r\n\r\n");
  assert_true(g_str_has_prefix(page, "HTTP/1.1 200"));
  assert_non_null(strstr(page, "Content-Security-Policy: default-src 'self';"));
  assert_true(g_str_has_suffix(page, (const char *)vgpu_dashboard_html));
  g_autofree char *head = ask(h, "HEAD / HTTP/1.0\r\n\r\n");
  assert_true(g_str_has_prefix(head, "HTTP/1.1 200"));
  assert_true(g_str_has_suffix(head, "\r\n\r\n"));
  g_autofree char *missing = ask(h, "GET /etc/passwd HTTP/1.0\r\n\r\n");
  assert_true(g_str_has_prefix(missing, "HTTP/1.1 404"));
  g_autofree char *post = ask(h, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
  assert_true(g_str_has_prefix(post, "HTTP/1.1 405"));
  assert_non_null(strstr(post, "Allow: GET, HEAD\r\n"));
  /* A request line and headers beyond the memory limit: refused. */
  g_autofree char *pad = g_strnfill(2 * VGPU_HTTP_MEMORY_LIMIT, 'a');
  g_autofree char *big_req = g_strdup_printf("GET /metrics HTTP/1.0\r\nX: %s\r\n\r\n", pad);
  g_autofree char *big = ask(h, big_req);
  assert_true(g_str_has_prefix(big, "HTTP/1.1 431") || g_str_has_prefix(big, "HTTP/1.1 413"));
  assert_int_equal(vgpu_http_n_connections(h), 0);
  vgpu_http_free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_label_value),   cmocka_unit_test(test_seconds),
      cmocka_unit_test(test_address_parse), cmocka_unit_test(test_config_key),
      cmocka_unit_test(test_metrics_text),  cmocka_unit_test(test_routes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
