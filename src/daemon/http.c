/* vgpud's HTTP listener: see http.h.  libmicrohttpd runs without threads
 * (MHD_USE_EPOLL, no listening socket of its own): its epoll fd is watched
 * by a GLib source and MHD_run() is called when it is readable or when the
 * timeout MHD asks for is due.  Connections are accepted by a VgpuListener
 * and handed over with MHD_add_connection(), the same path the fuzz target
 * takes. */
#include "daemon/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/listener.h"
#include "util/fd.h"
#include "util/log.h"

struct VgpuHttp {
  char *address;   /* as configured; NULL: none */
  char *unix_path; /* a Unix socket's path, removed at the end */
  int fd;          /* listening socket; -1: none */
  VgpuListener *listener;
  struct MHD_Daemon *mhd;
  guint io_watch;
  guint timer;
  guint open;
  GHashTable *conns; /* Conn* of the open connections */
  guint deadline_timer;
  VgpuHttpMetricsFunc metrics;
  gpointer user;
};

#define CSP                                                                                        \
  "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; "      \
  "img-src 'self' data:"

static GQuark http_error_quark(void) {
  return g_quark_from_static_string("vgpu-http-error");
}

bool vgpu_http_address_parse(const char *text, struct sockaddr_storage *addr, socklen_t *len,
                             GError **error) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  socklen_t sl = 0;
  if (!text || !*text) {
    g_set_error(error, http_error_quark(), 1,
                "empty address (IPV4:PORT, [IPV6]:PORT or an "
                "absolute Unix socket path)");
    return false;
  }
  if (text[0] == '/') {
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    if (strlen(text) >= sizeof(un->sun_path)) {
      g_set_error(error, http_error_quark(), 1, "Unix socket path longer than %zu bytes",
                  sizeof(un->sun_path) - 1);
      return false;
    }
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, text);
    sl = sizeof(*un);
  } else {
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text) {
      g_set_error(error, http_error_quark(), 1,
                  "\"%s\": expected IPV4:PORT, [IPV6]:PORT or an absolute Unix socket path", text);
      return false;
    }
    g_autofree char *host = g_strndup(text, (gsize)(colon - text));
    const char *port_s = colon + 1;
    guint64 port = 0;
    if (!*port_s || !g_ascii_string_to_unsigned(port_s, 10, 1, 65535, &port, NULL)) {
      g_set_error(error, http_error_quark(), 1, "\"%s\": port must be a number from 1 to 65535",
                  text);
      return false;
    }
    if (host[0] == '[') {
      size_t hl = strlen(host);
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
      if (hl < 3 || host[hl - 1] != ']') {
        g_set_error(error, http_error_quark(), 1,
                    "\"%s\": an IPv6 address goes in brackets, "
                    "e.g. [::1]:9633",
                    text);
        return false;
      }
      host[hl - 1] = '\0';
      if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1) {
        g_set_error(error, http_error_quark(), 1, "\"%s\": \"%s\" is not a numeric IPv6 address",
                    text, host + 1);
        return false;
      }
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons((uint16_t)port);
      sl = sizeof(*in6);
    } else {
      struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
      if (inet_pton(AF_INET, host, &in4->sin_addr) != 1) {
        g_set_error(error, http_error_quark(), 1,
                    "\"%s\": \"%s\" is not a numeric IPv4 address (IPv6 goes in brackets)", text,
                    host);
        return false;
      }
      in4->sin_family = AF_INET;
      in4->sin_port = htons((uint16_t)port);
      sl = sizeof(*in4);
    }
  }
  if (addr)
    *addr = ss;
  if (len)
    *len = sl;
  return true;
}

/* ---- requests ------------------------------------------------------------ */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *text) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
  VgpuHttp *h = cls;
  /* Reads only.  A body (of any method) is never read: the answer goes out
   * on the first call, and MHD closes the connection after it. */
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return send_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: GET or HEAD only\n");
  if (strcmp(url, "/metrics") == 0) {
    char *text = h->metrics ? h->metrics(h->user) : g_strdup("");
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(strlen(text), text, g_free);
    if (!r) {
      g_free(text);
      return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
  }
  if (strcmp(url, "/") == 0 || strcmp(url, "/dashboard") == 0) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        vgpu_dashboard_html_len, (void *)vgpu_dashboard_html, MHD_RESPMEM_PERSISTENT);
    if (!r)
      return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(r, "Content-Security-Policy", CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
  }
  return send_text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics, / or /dashboard\n");
}

/* One open connection, for the deadline. */
typedef struct {
  int fd;          /* libmicrohttpd's: never closed here */
  gint64 start_us; /* when it was accepted */
  bool cut;
} Conn;

/* Once a second while connections are open: one open for longer than
 * VGPU_HTTP_DEADLINE_S (a client trickling its request, or reading the
 * answer slowly) is shut down; libmicrohttpd then sees it end and closes
 * it.  The fd stays libmicrohttpd's until it reports the connection
 * closed, so it cannot have been reused meanwhile. */
static gboolean on_deadline(gpointer user) {
  VgpuHttp *h = user;
  gint64 now = g_get_monotonic_time();
  GHashTableIter it;
  gpointer k;
  bool cut = false;
  g_hash_table_iter_init(&it, h->conns);
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    Conn *c = k;
    if (!c->cut && now - c->start_us >= (gint64)VGPU_HTTP_DEADLINE_S * G_USEC_PER_SEC) {
      (void)shutdown(c->fd, SHUT_RDWR);
      c->cut = cut = true;
    }
  }
  if (cut) {
    vgpu_info("metrics: closed a connection still open after %d s (a slow client)",
              VGPU_HTTP_DEADLINE_S);
    vgpu_http_run(h);
  }
  if (g_hash_table_size(h->conns) > 0)
    return G_SOURCE_CONTINUE;
  h->deadline_timer = 0;
  return G_SOURCE_REMOVE;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  VgpuHttp *h = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    Conn *conn = g_new0(Conn, 1);
    conn->fd = info ? info->connect_fd : -1;
    conn->start_us = g_get_monotonic_time();
    *socket_context = conn;
    if (conn->fd >= 0)
      g_hash_table_add(h->conns, conn);
    if (!h->deadline_timer)
      h->deadline_timer = g_timeout_add_seconds(1, on_deadline, h);
    h->open++;
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    Conn *conn = *socket_context;
    if (conn) {
      g_hash_table_remove(h->conns, conn);
      g_free(conn);
      *socket_context = NULL;
    }
    if (h->open > 0)
      h->open--;
  }
}

/* ---- main loop ----------------------------------------------------------- */

static gboolean on_timer(gpointer user);

/* After every MHD_run(): wake up again when MHD's next timeout is due
 * (a connection to close, or one with data already read to go on with). */
static void reschedule(VgpuHttp *h) {
  if (h->timer) {
    g_source_remove(h->timer);
    h->timer = 0;
  }
  MHD_UNSIGNED_LONG_LONG ms = 0;
  if (MHD_get_timeout(h->mhd, &ms) != MHD_YES)
    return;
  h->timer = g_timeout_add((guint)MIN(ms, (MHD_UNSIGNED_LONG_LONG)60000), on_timer, h);
}

void vgpu_http_run(VgpuHttp *h) {
  MHD_run(h->mhd);
  reschedule(h);
}

static gboolean on_timer(gpointer user) {
  VgpuHttp *h = user;
  h->timer = 0;
  vgpu_http_run(h);
  return G_SOURCE_REMOVE;
}

static gboolean on_epoll(gint fd, GIOCondition cond, gpointer user) {
  vgpu_http_run(user);
  return G_SOURCE_CONTINUE;
}

bool vgpu_http_add_connection(VgpuHttp *h, int fd, const struct sockaddr *addr, socklen_t len) {
  struct sockaddr_storage none;
  if (!addr) {
    memset(&none, 0, sizeof(none));
    none.ss_family = AF_UNIX;
    addr = (const struct sockaddr *)&none;
    len = sizeof(sa_family_t);
  }
  (void)vgpu_set_nonblock(fd, true);
  /* MHD closes fd when it refuses it (a limit reached). */
  bool ok = MHD_add_connection(h->mhd, fd, addr, len) == MHD_YES;
  reschedule(h);
  return ok;
}

static void on_accept(int cfd, gpointer user) {
  VgpuHttp *h = user;
  struct sockaddr_storage peer;
  socklen_t len = sizeof(peer);
  memset(&peer, 0, sizeof(peer));
  if (getpeername(cfd, (struct sockaddr *)&peer, &len) < 0) {
    vgpu_close(cfd);
    return;
  }
  if (peer.ss_family == AF_UNIX)
    len = MAX(len, (socklen_t)sizeof(sa_family_t));
  vgpu_http_add_connection(h, cfd, (struct sockaddr *)&peer, len);
}

static int listen_on(const char *address, char **unix_path, GError **error) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (!vgpu_http_address_parse(address, &ss, &len, error))
    return -1;
  if (ss.ss_family == AF_UNIX) {
    int fd = vgpu_listen_unix(address, 0666, 64);
    if (fd < 0) {
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-fd), "metrics-listen %s: %s", address,
                  g_strerror(-fd));
      return -1;
    }
    *unix_path = g_strdup(address);
    return fd;
  }
  vgpu_autofd int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
      (ss.ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
      bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 64) < 0) {
    int e = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "metrics-listen %s: %s", address,
                g_strerror(e));
    return -1;
  }
  return vgpu_steal_fd(&fd);
}

VgpuHttp *vgpu_http_new(const char *address, VgpuHttpMetricsFunc metrics, gpointer user,
                        GError **error) {
  VgpuHttp *h = g_new0(VgpuHttp, 1);
  h->fd = -1;
  h->conns = g_hash_table_new(g_direct_hash, g_direct_equal);
  h->metrics = metrics;
  h->user = user;
  if (address) {
    h->fd = listen_on(address, &h->unix_path, error);
    if (h->fd < 0) {
      vgpu_http_free(h);
      return NULL;
    }
    h->address = g_strdup(address);
  }
  h->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)VGPU_HTTP_MAX_CONNECTIONS,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)VGPU_HTTP_MAX_PER_IP,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)VGPU_HTTP_MEMORY_LIMIT,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)VGPU_HTTP_TIMEOUT_S,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_END);
  if (!h->mhd) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "metrics-listen %s: libmicrohttpd did not start", address ? address : "(none)");
    vgpu_http_free(h);
    return NULL;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
  if (!info || info->epoll_fd < 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "metrics-listen %s: libmicrohttpd has no epoll fd", address ? address : "(none)");
    vgpu_http_free(h);
    return NULL;
  }
  h->io_watch = g_unix_fd_add(info->epoll_fd, G_IO_IN, on_epoll, h);
  if (h->fd >= 0)
    h->listener = vgpu_listener_new(h->fd, "metrics", 16, on_accept, h);
  return h;
}

void vgpu_http_free(VgpuHttp *h) {
  if (!h)
    return;
  vgpu_listener_free(h->listener);
  if (h->io_watch)
    g_source_remove(h->io_watch);
  if (h->timer)
    g_source_remove(h->timer);
  if (h->mhd)
    MHD_stop_daemon(h->mhd); /* closes its connections (and frees their Conn) */
  if (h->deadline_timer)
    g_source_remove(h->deadline_timer);
  g_hash_table_unref(h->conns);
  if (h->fd >= 0)
    vgpu_close(h->fd);
  if (h->unix_path)
    (void)unlink(h->unix_path);
  g_free(h->unix_path);
  g_free(h->address);
  g_free(h);
}

const char *vgpu_http_address(const VgpuHttp *h) {
  return h ? h->address : NULL;
}

guint vgpu_http_n_connections(const VgpuHttp *h) {
  return h->open;
}
