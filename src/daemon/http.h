/* vgpud's HTTP listener ([daemon] metrics-listen): reads only, served by
 * libmicrohttpd from the GLib main loop of the supervisor (no thread of
 * its own).  Routes: GET/HEAD /metrics (the text the metrics callback
 * returns), / and /dashboard (the page compiled in from
 * data/dashboard.html); any other method 405, any other path 404.
 *
 * Bounds: VGPU_HTTP_MAX_CONNECTIONS open connections in all and
 * VGPU_HTTP_MAX_PER_IP from one IP address (TCP), VGPU_HTTP_MEMORY_LIMIT
 * bytes of request (line and headers) per connection (more is answered 431
 * or 414 and closed), a connection that makes no progress for
 * VGPU_HTTP_TIMEOUT_S seconds is closed, and so is one still open after
 * VGPU_HTTP_DEADLINE_S (a client that trickles its request or reads the
 * answer slowly).  Accepting goes through
 * daemon/listener.c, so running out of fds sheds connections instead of
 * spinning. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <sys/socket.h>

#define VGPU_HTTP_MAX_CONNECTIONS 64
#define VGPU_HTTP_MAX_PER_IP 8
#define VGPU_HTTP_MEMORY_LIMIT (16 * 1024)
#define VGPU_HTTP_TIMEOUT_S 5
#define VGPU_HTTP_DEADLINE_S 10

/* Parses a metrics-listen value: IPV4:PORT, [IPV6]:PORT (numeric
 * addresses, port 1..65535) or an absolute path (a Unix socket, shorter
 * than a socket address holds).  Fills *addr and *len when given. */
bool vgpu_http_address_parse(const char *text, struct sockaddr_storage *addr, socklen_t *len,
                             GError **error);

/* Returns the body of /metrics (g_malloc'd, owned by the caller). */
typedef char *(*VgpuHttpMetricsFunc)(gpointer user);

typedef struct VgpuHttp VgpuHttp;

/* Listens on address (see vgpu_http_address_parse; a Unix socket is made
 * with mode 0666, a stale socket there replaced) and serves it from the
 * default main context.  address NULL: no listening socket, connections
 * come only through vgpu_http_add_connection (fuzzing, tests). */
VgpuHttp *vgpu_http_new(const char *address, VgpuHttpMetricsFunc metrics, gpointer user,
                        GError **error);
void vgpu_http_free(VgpuHttp *h);
/* The address it listens on, as configured (NULL: none). */
const char *vgpu_http_address(const VgpuHttp *h);
/* Serves a connected socket (owned: closed in every case), as if it had
 * been accepted; addr is its peer (may be NULL). */
bool vgpu_http_add_connection(VgpuHttp *h, int fd, const struct sockaddr *addr, socklen_t len);
/* Lets the server do what is ready now (the main loop does this by itself). */
void vgpu_http_run(VgpuHttp *h);
/* Connections open now. */
guint vgpu_http_n_connections(const VgpuHttp *h);

/* The bytes of data/dashboard.html. */
extern const unsigned char vgpu_dashboard_html[];
extern const size_t vgpu_dashboard_html_len;
