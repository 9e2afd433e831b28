/* libFuzzer target for vgpud's HTTP listener: the bytes are what a client
 * sends on one connection.  They go into one end of a socket pair whose
 * other end is served exactly as an accepted connection is (the same
 * libmicrohttpd set-up, limits and request handler as metrics-listen);
 * the server runs until it closes the connection, and what it answers is
 * read and checked to start like an HTTP response. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include "daemon/http.h"
#include "fuzz_glib.h"
#include "util/fd.h"

static VgpuHttp *server;

static char *metrics(gpointer user) {
  return g_strdup("# HELP vgpu_instance_clients Connected tenants.\n"
                  "# TYPE vgpu_instance_clients gauge\n"
                  "vgpu_instance_clients{instance=\"vgpu0\",profile=\"small\"} 1\n");
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  vgpu_fuzz_glib_init("fuzz-http");
  server = vgpu_http_new(NULL, metrics, NULL, NULL);
  if (!server)
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 256 * 1024)
    return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
    abort();
  int buf = 1024 * 1024;
  (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  (void)setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  size_t off = 0;
  if (!vgpu_http_add_connection(server, sv[1], NULL, 0)) {
    vgpu_close(sv[0]);
    return 0;
  }
  GString *answer = g_string_new(NULL);
  bool shut = false;
  /* Until the server closes its end (it does at the end of the input at
   * the latest), bounded. */
  for (int round = 0; round < 10000; round++) {
    if (off < size) {
      ssize_t n = write(sv[0], data + off, size - off);
      if (n > 0)
        off += (size_t)n;
      else if (n < 0 && errno != EAGAIN)
        off = size; /* the server closed: nothing more goes */
    }
    if (off == size && !shut) {
      shutdown(sv[0], SHUT_WR);
      shut = true;
    }
    vgpu_http_run(server);
    char rd[65536];
    ssize_t n = read(sv[0], rd, sizeof(rd));
    if (n > 0 && answer->len < 4096)
      g_string_append_len(answer, rd, MIN((size_t)n, 4096 - answer->len));
    if (n == 0 || (n < 0 && errno != EAGAIN))
      break;
    if (vgpu_http_n_connections(server) == 0 && n < 0)
      break;
  }
  /* Whatever came back is an HTTP response. */
  if (answer->len >= 5 && memcmp(answer->str, "HTTP/", 5) != 0)
    abort();
  g_string_free(answer, TRUE);
  vgpu_close(sv[0]);
  /* The connection is gone: the server holds nothing after it. */
  for (int i = 0; i < 100 && vgpu_http_n_connections(server) > 0; i++)
    vgpu_http_run(server);
  return 0;
}
