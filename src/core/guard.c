/* The worker's guard thread (see guard.h). */
#include "core/guard.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/worker_exit.h"
#include "util/log.h"

struct VgpuGuard {
  int client_fd;
  int wake_fd; /* eventfd: the main thread changed something to look at */
  int64_t timeout_us;
  VgpuGuardExpire hook;
  void *user;
  pthread_t thread;
  atomic_int_least64_t busy_since; /* monotonic us; 0: no GPU work outstanding */
  atomic_int_least64_t in_renderer_since; /* monotonic us; 0: not inside */
  atomic_bool hangup_seen;
  atomic_bool stop;
};

static void wake(VgpuGuard *g) {
  uint64_t one = 1;
  ssize_t r;
  do
    r = write(g->wake_fd, &one, sizeof(one));
  while (r < 0 && errno == EINTR);
}

static void default_expire(void *user, VgpuGuardCause cause, double seconds) {
  (void)user;
  if (cause == VGPU_GUARD_GPU_TIMEOUT) {
    vgpu_warn("gpu timeout, session ended: a submission has run for %.1f s without completing",
              seconds);
    _exit(VGPU_WORKER_EXIT_GPU_TIMEOUT);
  }
  vgpu_info("client left while its GPU work was running; session ended");
  _exit(VGPU_WORKER_EXIT_CLIENT_LEFT);
}

/* How long the main thread must have been inside one renderer call, its
 * client gone, before the guard ends the session itself.  Quick calls are
 * left to the main thread, which then sees the hang-up and ends the
 * session with its own, more precise log line. */
#define STUCK_US (500 * 1000)

static int ms_until(int64_t us) {
  return us <= 0 ? 0 : (int)MIN((us + 999) / 1000, (int64_t)G_MAXINT);
}

static void *guard_main(void *arg) {
  VgpuGuard *g = arg;
  while (!atomic_load(&g->stop)) {
    int64_t now = g_get_monotonic_time();
    int64_t since = atomic_load(&g->busy_since);
    int timeout = -1;
    if (g->timeout_us > 0 && since == 0) {
      /* Nothing outstanding: look again after an eighth of the timeout,
       * so the main thread never has to wake us when work starts. */
      timeout = (int)MAX(g->timeout_us / 8 / 1000, 1);
    } else if (g->timeout_us > 0) {
      int64_t left = since + g->timeout_us - now;
      if (left <= 0) {
        g->hook(g->user, VGPU_GUARD_GPU_TIMEOUT, (double)(now - since) / 1e6);
        atomic_store(&g->busy_since, 0); /* a test's hook returns */
        continue;
      }
      timeout = ms_until(left);
    }
    /* The client is gone: end the session once the main thread has been
     * stuck inside the renderer for STUCK_US. */
    bool gone = atomic_load(&g->hangup_seen);
    if (gone) {
      int64_t entered = atomic_load(&g->in_renderer_since);
      if (entered > 0 && now - entered >= STUCK_US) {
        g->hook(g->user, VGPU_GUARD_CLIENT_GONE, (double)(now - entered) / 1e6);
        atomic_store(&g->in_renderer_since, 0); /* a test's hook returns */
        continue;
      }
      if (entered > 0)
        timeout = timeout < 0 ? ms_until(entered + STUCK_US - now)
                              : MIN(timeout, ms_until(entered + STUCK_US - now));
    }
    /* A hung-up socket stays hung up: once seen, it is not polled again
     * (entering the renderer wakes the thread instead). */
    struct pollfd p[2] = {{.fd = g->wake_fd, .events = POLLIN},
                          {.fd = gone ? -1 : g->client_fd, .events = 0}};
    int r = poll(p, 2, timeout);
    if (r < 0 && errno != EINTR)
      break;
    if (r > 0 && (p[0].revents & POLLIN)) {
      uint64_t v;
      (void)!read(g->wake_fd, &v, sizeof(v));
    }
    if (r > 0 && (p[1].revents & (POLLHUP | POLLERR)))
      atomic_store(&g->hangup_seen, true);
  }
  return NULL;
}

VgpuGuard *vgpu_guard_start(int client_fd, unsigned gpu_timeout_s, VgpuGuardExpire hook, void *user,
                            GError **error) {
  VgpuGuard *g = g_new0(VgpuGuard, 1);
  g->client_fd = client_fd;
  g->timeout_us = (int64_t)gpu_timeout_s * G_USEC_PER_SEC;
  g->hook = hook ? hook : default_expire;
  g->user = user;
  g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (g->wake_fd < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "guard eventfd: %s",
                g_strerror(errno));
    g_free(g);
    return NULL;
  }
  int r = pthread_create(&g->thread, NULL, guard_main, g);
  if (r != 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(r), "guard thread: %s", g_strerror(r));
    close(g->wake_fd);
    g_free(g);
    return NULL;
  }
  return g;
}

void vgpu_guard_stop(VgpuGuard *g) {
  if (!g)
    return;
  atomic_store(&g->stop, true);
  wake(g);
  pthread_join(g->thread, NULL);
  close(g->wake_fd);
  g_free(g);
}

void vgpu_guard_enter(VgpuGuard *g) {
  if (!g)
    return;
  atomic_store(&g->in_renderer_since, g_get_monotonic_time());
  if (atomic_load(&g->hangup_seen))
    wake(g); /* the client is gone: let the guard time this call */
}

void vgpu_guard_leave(VgpuGuard *g) {
  if (g)
    atomic_store(&g->in_renderer_since, 0);
}

void vgpu_guard_busy(VgpuGuard *g) {
  if (!g)
    return;
  int64_t zero = 0;
  atomic_compare_exchange_strong(&g->busy_since, &zero, g_get_monotonic_time());
}

void vgpu_guard_progress(VgpuGuard *g, bool still_busy) {
  if (g)
    atomic_store(&g->busy_since, still_busy ? g_get_monotonic_time() : 0);
}
