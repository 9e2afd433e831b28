#include "ctl/ctl_proto.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/fd.h"

G_DEFINE_QUARK(vgpu-ctl-error-quark, vgpu_ctl_error)

struct VgpuCtl {
  int fd;
  char *path;
};

/* ---- connection ---------------------------------------------------------- */

VgpuCtl *vgpu_ctl_connect_path(const char *path, GError **error) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(a.sun_path)) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT,
                "cannot connect to vgpud at %s: socket path too long (see --runtime-dir)", path);
    return NULL;
  }
  memcpy(a.sun_path, path, strlen(path) + 1);
  vgpu_autofd int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    int err = errno;
    /* Permission problems have a different cure than a stopped daemon. */
    const char *hint = err == EACCES || err == EPERM ? "the socket's permissions keep this user out"
                                                     : "is vgpud running? see --runtime-dir";
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT,
                "cannot connect to vgpud at %s: %s (%s)", path, g_strerror(err), hint);
    return NULL;
  }
  VgpuCtl *c = g_new0(VgpuCtl, 1);
  c->fd = vgpu_steal_fd(&fd);
  c->path = g_strdup(path);
  return c;
}

VgpuCtl *vgpu_ctl_connect(const char *runtime_dir, GError **error) {
  g_autofree char *path = g_build_filename(runtime_dir, "control.sock", NULL);
  return vgpu_ctl_connect_path(path, error);
}

void vgpu_ctl_free(VgpuCtl *c) {
  if (!c)
    return;
  vgpu_close(c->fd);
  g_free(c->path);
  g_free(c);
}

/* ---- framing ------------------------------------------------------------- */

/* read(), keeping the first fd passed along (SCM_RIGHTS) in *passed when
 * it is not NULL and holds none yet; every other fd is closed.  Returns
 * the byte count or -errno. */
static ssize_t read_fd(int fd, void *buf, size_t len, int *passed) {
  int got = -1;
  size_t n_got;
  ssize_t n = vgpu_recvmsg_fds(fd, buf, len, 0, &got, passed && *passed < 0 ? 1 : 0, &n_got);
  if (n == -ENOTSOCK) {
    n = read(fd, buf, len);
    return n < 0 ? -errno : n;
  }
  if (n_got > 0)
    *passed = got;
  return n;
}

static char *read_line(int fd, size_t max, int timeout_ms, int *passed, GError **error);

char *vgpu_ctl_read_line(int fd, size_t max, int timeout_ms, GError **error) {
  return read_line(fd, max, timeout_ms, NULL, error);
}

static char *read_line(int fd, size_t max, int timeout_ms, int *passed, GError **error) {
  g_autoptr(GString) s = g_string_new(NULL);
  gint64 deadline = g_get_monotonic_time() + (gint64)MAX(timeout_ms, 0) * 1000;
  gsize scanned = 0;
  for (;;) {
    char *nl = memchr(s->str + scanned, '\n', s->len - scanned);
    gsize line_len = nl ? (gsize)(nl - s->str) : s->len;
    if (line_len > max) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                  "reply from vgpud longer than %zu bytes", max);
      return NULL;
    }
    if (nl) {
      if (memchr(s->str, '\0', line_len)) {
        g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                    "bad reply from vgpud: NUL byte in the line");
        return NULL;
      }
      g_string_truncate(s, line_len);
      return g_string_free(g_steal_pointer(&s), FALSE);
    }
    scanned = s->len;
    int wait = -1;
    if (timeout_ms >= 0) {
      gint64 left_us = deadline - g_get_monotonic_time();
      /* Round up so a sub-millisecond remainder still polls once more. */
      wait = left_us > 0 ? (int)MIN((left_us + 999) / 1000, G_MAXINT) : 0;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = wait != 0 ? poll(&p, 1, wait) : 0;
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT, "waiting for vgpud: %s",
                  g_strerror(errno));
      return NULL;
    }
    if (r == 0) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_TIMEOUT, "no reply from vgpud within %d ms",
                  timeout_ms);
      return NULL;
    }
    char buf[16384];
    ssize_t n = read_fd(fd, buf, sizeof(buf), passed);
    if (n == -EINTR || n == -EAGAIN)
      continue;
    if (n < 0) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT, "reading from vgpud: %s",
                  g_strerror((int)-n));
      return NULL;
    }
    if (n == 0) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                  "vgpud closed the connection before replying");
      return NULL;
    }
    g_string_append_len(s, buf, n);
  }
}

JsonObject *vgpu_ctl_parse_reply(const char *line, GError **error) {
  g_autoptr(JsonParser) p = json_parser_new();
  g_autoptr(GError) e = NULL;
  if (!json_parser_load_from_data(p, line, -1, &e)) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL, "bad reply from vgpud: %s",
                e->message);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(p);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                "bad reply from vgpud: not a JSON object");
    return NULL;
  }
  JsonObject *o = json_node_get_object(root);
  JsonNode *ok = json_object_get_member(o, "ok");
  if (!ok || json_node_get_value_type(ok) != G_TYPE_BOOLEAN) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                "bad reply from vgpud: no boolean \"ok\"");
    return NULL;
  }
  if (!json_node_get_boolean(ok)) {
    const char *why = vgpu_ctl_get_str(o, "error", "");
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_REFUSED, "%s",
                *why ? why : "vgpud refused the request without a reason");
    return NULL;
  }
  return json_object_ref(o);
}

char *vgpu_ctl_encode(JsonObject *request) {
  g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, request);
  /* Compact output escapes control characters inside strings, so the only
   * newline is the terminator. */
  g_autofree char *text = json_to_string(n, FALSE);
  return g_strconcat(text, "\n", NULL);
}

static int send_all(int fd, const char *buf, size_t len) {
  while (len) {
    /* MSG_NOSIGNAL: a daemon gone away is an error, not a SIGPIPE. */
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Sends the request's line; false with *error set (a CONNECT error). */
static bool send_request(VgpuCtl *c, JsonObject *request, GError **error) {
  g_autofree char *line = vgpu_ctl_encode(request);
  int r = send_all(c->fd, line, strlen(line));
  if (r < 0) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT, "sending to vgpud at %s: %s",
                c->path, g_strerror(-r));
    return false;
  }
  return true;
}

JsonObject *vgpu_ctl_call(VgpuCtl *c, JsonObject *request, int timeout_ms, GError **error) {
  if (!send_request(c, request, error))
    return NULL;
  g_autofree char *reply = vgpu_ctl_read_line(c->fd, VGPU_CTL_MAX_REPLY, timeout_ms, error);
  return reply ? vgpu_ctl_parse_reply(reply, error) : NULL;
}

JsonObject *vgpu_ctl_call_fd(VgpuCtl *c, JsonObject *request, int timeout_ms, int *fd,
                             GError **error) {
  *fd = -1;
  if (!send_request(c, request, error))
    return NULL;
  g_autofree char *reply = read_line(c->fd, VGPU_CTL_MAX_REPLY, timeout_ms, fd, error);
  JsonObject *o = reply ? vgpu_ctl_parse_reply(reply, error) : NULL;
  if (!o && *fd >= 0) {
    close(*fd);
    *fd = -1;
  }
  return o;
}

JsonObject *vgpu_ctl_transact(const char *runtime_dir, JsonObject *request, int timeout_ms,
                              GError **error) {
  g_autoptr(VgpuCtl) c = vgpu_ctl_connect(runtime_dir, error);
  return c ? vgpu_ctl_call(c, request, timeout_ms, error) : NULL;
}

/* ---- requests ------------------------------------------------------------ */

JsonObject *vgpu_ctl_request(const char *cmd, const char *name) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "command", cmd);
  if (name)
    json_object_set_string_member(o, "name", name);
  return o;
}

JsonObject *vgpu_ctl_request_create(const char *name, const char *profile) {
  JsonObject *o = vgpu_ctl_request("create", name);
  json_object_set_string_member(o, "profile", profile);
  return o;
}

JsonObject *vgpu_ctl_request_destroy(const char *name, bool force) {
  JsonObject *o = vgpu_ctl_request("destroy", name);
  json_object_set_boolean_member(o, "force", force);
  return o;
}

JsonObject *vgpu_ctl_request_set(const char *name, const char *const *assignments, GError **error) {
  if (!assignments || !assignments[0]) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_USAGE,
                "set needs at least one KEY=VALUE (e.g. vram=512M)");
    return NULL;
  }
  g_autoptr(JsonObject) settings = json_object_new();
  for (const char *const *kv = assignments; *kv; kv++) {
    const char *eq = strchr(*kv, '=');
    if (!eq || eq == *kv) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_USAGE, "\"%s\" is not KEY=VALUE", *kv);
      return NULL;
    }
    g_autofree char *key = g_strndup(*kv, (gsize)(eq - *kv));
    /* The daemon applies all settings or none; a repeated key would make
     * "which one won" a guess. */
    if (json_object_has_member(settings, key)) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_USAGE, "\"%s\" is given twice", key);
      return NULL;
    }
    json_object_set_string_member(settings, key, eq + 1);
  }
  JsonObject *o = vgpu_ctl_request("set", name);
  json_object_set_object_member(o, "settings", g_steal_pointer(&settings));
  return o;
}

/* ---- lenient member access ----------------------------------------------- */

static JsonNode *member(JsonObject *o, const char *key) {
  return o ? json_object_get_member(o, key) : NULL;
}

uint64_t vgpu_ctl_get_u64(JsonObject *o, const char *key) {
  JsonNode *n = member(o, key);
  if (!n || !JSON_NODE_HOLDS_VALUE(n))
    return 0;
  GType t = json_node_get_value_type(n);
  if (t == G_TYPE_INT64) {
    gint64 v = json_node_get_int(n);
    return v > 0 ? (uint64_t)v : 0;
  }
  if (t == G_TYPE_DOUBLE) {
    double v = json_node_get_double(n);
    /* 2^64 as a double; anything at or beyond it saturates. */
    return v > 0 ? (v < 18446744073709551616.0 ? (uint64_t)v : UINT64_MAX) : 0;
  }
  return 0;
}

const char *vgpu_ctl_get_str(JsonObject *o, const char *key, const char *fallback) {
  JsonNode *n = member(o, key);
  if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
    return fallback;
  return json_node_get_string(n);
}

JsonObject *vgpu_ctl_get_object(JsonObject *o, const char *key) {
  JsonNode *n = member(o, key);
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

JsonArray *vgpu_ctl_get_array(JsonObject *o, const char *key) {
  JsonNode *n = member(o, key);
  return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

JsonObject *vgpu_ctl_array_object(JsonArray *a, guint i) {
  if (!a || i >= json_array_get_length(a))
    return NULL;
  JsonNode *n = json_array_get_element(a, i);
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}
