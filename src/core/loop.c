/* A poll()-based loop over a handful of fds (see loop.h). */
#include "core/loop.h"

#include <errno.h>
#include <glib.h>

typedef struct {
  int fd; /* -1: slot free */
  short events;
  VgpuLoopFdFn fn;
  void *user;
} Watch;

struct VgpuLoop {
  Watch w[VGPU_LOOP_MAX_WATCHES];
  int64_t timer_at; /* -1: none */
  VgpuLoopTimerFn timer_fn;
  void *timer_user;
  bool quit;
};

VgpuLoop *vgpu_loop_new(void) {
  VgpuLoop *l = g_new0(VgpuLoop, 1);
  for (int i = 0; i < VGPU_LOOP_MAX_WATCHES; i++)
    l->w[i].fd = -1;
  l->timer_at = -1;
  return l;
}

void vgpu_loop_free(VgpuLoop *l) {
  g_free(l);
}

int vgpu_loop_add(VgpuLoop *l, int fd, short events, VgpuLoopFdFn fn, void *user) {
  for (int i = 0; i < VGPU_LOOP_MAX_WATCHES; i++) {
    if (l->w[i].fd < 0) {
      l->w[i] = (Watch){.fd = fd, .events = events, .fn = fn, .user = user};
      return i;
    }
  }
  return -ENOSPC;
}

void vgpu_loop_modify(VgpuLoop *l, int id, int fd, short events) {
  if (id < 0 || id >= VGPU_LOOP_MAX_WATCHES || l->w[id].fd < 0)
    return;
  if (fd >= 0)
    l->w[id].fd = fd;
  l->w[id].events = events;
}

void vgpu_loop_remove(VgpuLoop *l, int id) {
  if (id >= 0 && id < VGPU_LOOP_MAX_WATCHES)
    l->w[id].fd = -1;
}

void vgpu_loop_set_timer(VgpuLoop *l, int64_t at_us, VgpuLoopTimerFn fn, void *user) {
  l->timer_at = at_us < 0 ? -1 : at_us;
  l->timer_fn = fn;
  l->timer_user = user;
}

void vgpu_loop_quit(VgpuLoop *l) {
  l->quit = true;
}

int vgpu_loop_run(VgpuLoop *l) {
  while (!l->quit) {
    struct pollfd p[VGPU_LOOP_MAX_WATCHES];
    int id[VGPU_LOOP_MAX_WATCHES];
    nfds_t n = 0;
    for (int i = 0; i < VGPU_LOOP_MAX_WATCHES; i++) {
      if (l->w[i].fd < 0)
        continue;
      p[n] = (struct pollfd){.fd = l->w[i].fd, .events = l->w[i].events};
      id[n++] = i;
    }
    int timeout = -1;
    if (l->timer_at >= 0) {
      int64_t left = l->timer_at - g_get_monotonic_time();
      /* Round up: waking a little early would only turn the loop again. */
      timeout = left <= 0 ? 0 : (int)MIN((left + 999) / 1000, (int64_t)G_MAXINT);
    }
    int r = poll(p, n, timeout);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      l->quit = false;
      return -errno;
    }
    for (nfds_t k = 0; k < n && !l->quit; k++) {
      Watch *w = &l->w[id[k]];
      /* A callback may have removed or changed a later watch. */
      if (p[k].revents == 0 || w->fd != p[k].fd)
        continue;
      w->fn(w->user, w->fd, p[k].revents);
    }
    if (!l->quit && l->timer_at >= 0 && g_get_monotonic_time() >= l->timer_at) {
      l->timer_at = -1;
      l->timer_fn(l->timer_user);
    }
  }
  l->quit = false; /* the next run starts afresh */
  return 0;
}
