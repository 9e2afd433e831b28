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

VgpuCtl *vgpu_ctl_connect_path(const char *path, GError **error) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(a.sun_path)) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT, "socket path too long: %s", path);
    return NULL;
  }
  strcpy(a.sun_path, path);
  vgpu_autofd int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT,
                "cannot connect to vgpud at %s: %s (is vgpud running? see --runtime-dir)", path,
                g_strerror(errno));
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

char *vgpu_ctl_read_line(int fd, size_t max, int timeout_ms, GError **error) {
  g_autoptr(GString) s = g_string_new(NULL);
  gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  for (;;) {
    char *nl = memchr(s->str, '\n', s->len);
    if (nl) {
      *nl = '\0';
      return g_string_free(g_steal_pointer(&s), FALSE);
    }
    if (s->len > max) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                  "reply longer than %zu bytes", max);
      return NULL;
    }
    int left = (int)((deadline - g_get_monotonic_time()) / 1000);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = left > 0 ? poll(&p, 1, left) : 0;
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_PROTOCOL,
                  "no reply from vgpud within %d ms", timeout_ms);
      return NULL;
    }
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
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
                "bad reply from vgpud: not an object");
    return NULL;
  }
  JsonObject *o = json_node_get_object(root);
  if (!json_object_get_boolean_member_with_default(o, "ok", FALSE)) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_REFUSED, "%s",
                json_object_get_string_member_with_default(o, "error", "request failed"));
    return NULL;
  }
  return json_object_ref(o);
}

JsonObject *vgpu_ctl_call(VgpuCtl *c, JsonObject *request, int timeout_ms, GError **error) {
  g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(n, request);
  g_autofree char *text = json_to_string(n, FALSE);
  struct iovec iov[2] = {{text, strlen(text)}, {(void *)"\n", 1}};
  int r = vgpu_writev_all(c->fd, iov, 2);
  if (r < 0) {
    g_set_error(error, VGPU_CTL_ERROR, VGPU_CTL_ERROR_CONNECT, "sending to vgpud: %s",
                g_strerror(-r));
    return NULL;
  }
  g_autofree char *line = vgpu_ctl_read_line(c->fd, VGPU_CTL_MAX_REPLY, timeout_ms, error);
  return line ? vgpu_ctl_parse_reply(line, error) : NULL;
}

JsonObject *vgpu_ctl_request(const char *cmd, const char *name) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "command", cmd);
  if (name)
    json_object_set_string_member(o, "name", name);
  return o;
}
