#include "daemon/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"

#define BACKOFF_MS 100


struct VgpuListener {
  int fd;
  char *what;
  VgpuListenerFunc func;
  gpointer user;
  guint batch;
  guint watch;
  guint backoff;
};

static int reserve_fd = -1;
static guint64 shed_total;

void vgpu_listener_reserve_init(void) {
  if (reserve_fd < 0)
    reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

guint64 vgpu_listener_shed_total(void) {
  return shed_total;
}

static gboolean on_readable(gint fd, GIOCondition cond, gpointer user);

static gboolean on_backoff_end(gpointer user) {
  VgpuListener *l = user;
  l->backoff = 0;
  l->watch = g_unix_fd_add(l->fd, G_IO_IN, on_readable, l);
  return G_SOURCE_REMOVE;
}

/* Out of fds: frees one, takes the oldest waiting connection with it and
 * closes it.  False when that did not work either. */
static bool shed_one(VgpuListener *l, int err) {
  if (reserve_fd >= 0) {
    close(reserve_fd);
    reserve_fd = -1;
    int c = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (c >= 0)
      close(c);
    vgpu_listener_reserve_init();
    if (c >= 0) {
      shed_total++;
      vgpu_warn("%s: out of file descriptors (%s): connection closed unserved (%" G_GUINT64_FORMAT
                " so far)",
                l->what, g_strerror(err), shed_total);
      return true;
    }
  }
  return false;
}

static gboolean on_readable(gint fd, GIOCondition cond, gpointer user) {
  VgpuListener *l = user;
  for (guint i = 0; i < l->batch; i++) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c >= 0) {
      l->func(c, l->user);
      continue;
    }
    int err = errno;
    if (err == EINTR || err == ECONNABORTED)
      continue;
    if (err == EAGAIN)
      break;
    if ((err == EMFILE || err == ENFILE) && shed_one(l, err))
      continue;
    /* No fd to spare, or another error: stop watching for a while rather
     * than wake up again at once. */
    vgpu_warn("%s: accept: %s; not accepting for %d ms", l->what, g_strerror(err), BACKOFF_MS);
    l->watch = 0;
    l->backoff = g_timeout_add(BACKOFF_MS, on_backoff_end, l);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

VgpuListener *vgpu_listener_new(int fd, const char *what, guint batch, VgpuListenerFunc func,
                                gpointer user) {
  vgpu_listener_reserve_init();
  VgpuListener *l = g_new0(VgpuListener, 1);
  l->batch = MAX(batch, 1);
  l->fd = fd;
  l->what = g_strdup(what);
  l->func = func;
  l->user = user;
  l->watch = g_unix_fd_add(fd, G_IO_IN, on_readable, l);
  return l;
}

void vgpu_listener_free(VgpuListener *l) {
  if (!l)
    return;
  if (l->watch)
    g_source_remove(l->watch);
  if (l->backoff)
    g_source_remove(l->backoff);
  g_free(l->what);
  g_free(l);
}
