#include "core/throttle.h"

#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <time.h>

#include "vgpu-config.h"

struct VgpuThrottle {
  VgpuLedger *ledger;
  VgpuGuard *guard;
  int fd;
  VgpuBucket bucket;
  VgpuPacer pacer;
  uint64_t (*now)(void *);
  bool (*sleep)(void *, uint64_t ns);
  void *user;
  /* llvmpipe: GPU time is the process CPU time (see core/sched.h). */
  VgpuCpuMeter meter;
  uint64_t (*cpu_now)(void *);
  void *cpu_user;
};

uint64_t vgpu_throttle_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t real_now(void *user) {
  (void)user;
  return vgpu_throttle_now_ns();
}

/* The CPU time of the whole process: the main thread's and that of every
 * thread llvmpipe (and virglrenderer) started in it. */
static uint64_t real_cpu_now(void *user) {
  (void)user;
  struct timespec ts;
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
    return 0; /* reads as a clock that went back: nothing charged */
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* What the work since the last charge cost in GPU time: the wall time the
 * caller measured, or on llvmpipe (the grant page's cpu_milli) the process
 * CPU time used since the last reading, as a part of the CPU capacity. */
static uint64_t cost(VgpuThrottle *t, uint64_t wall_ns) {
  uint32_t milli = vgpu_ledger_cpu_milli(t->ledger);
  if (milli == 0) {
    vgpu_cpu_meter_read(&t->meter, 0, 0); /* a later switch starts afresh */
    return wall_ns;
  }
  return vgpu_cpu_meter_read(&t->meter, t->cpu_now(t->cpu_user), milli);
}

/* Sleeps on the client's socket: POLLHUP (peer closed or died) ends the
 * wait; events 0, so data the client sends meanwhile does not. */
static bool real_sleep(void *user, uint64_t ns) {
  VgpuThrottle *t = user;
  int ms = (int)((ns + 999999) / 1000000);
  if (t->fd < 0) {
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    return true;
  }
  struct pollfd p = {.fd = t->fd, .events = 0};
  int n = poll(&p, 1, ms);
  return !(n > 0 && (p.revents & (POLLHUP | POLLERR)));
}

VgpuThrottle *vgpu_throttle_new(VgpuLedger *ledger) {
  VgpuThrottle *t = g_new0(VgpuThrottle, 1);
  t->ledger = ledger;
  t->fd = -1;
  t->now = real_now;
  t->sleep = real_sleep;
  t->user = t;
  t->cpu_now = real_cpu_now;
  vgpu_bucket_init(&t->bucket, ledger ? vgpu_ledger_share_ppm(ledger) : 0, t->now(t->user));
  if (ledger)
    (void)cost(t, 0); /* the CPU time used so far is not this tenant's work */
  return t;
}

void vgpu_throttle_free(VgpuThrottle *t) {
  g_free(t);
}

void vgpu_throttle_watch(VgpuThrottle *t, VgpuGuard *guard, int hangup_fd) {
  t->guard = guard;
  t->fd = hangup_fd;
}

void vgpu_throttle_set_clock(VgpuThrottle *t, uint64_t (*now)(void *),
                             bool (*sleep)(void *, uint64_t ns), void *user) {
  t->now = now;
  t->sleep = sleep;
  t->user = user;
  vgpu_bucket_init(&t->bucket, t->bucket.rate_ppm, now(user));
  t->pacer = (VgpuPacer){0};
}

void vgpu_throttle_set_cpu_clock(VgpuThrottle *t, uint64_t (*cpu_now)(void *), void *user) {
  t->cpu_now = cpu_now;
  t->cpu_user = user;
  t->meter = (VgpuCpuMeter){0};
  if (t->ledger)
    (void)cost(t, 0);
}

/* Counts GPU time in the ledger and takes it from the tenant's balance. */
static void account(VgpuThrottle *t, uint64_t gpu_ns) {
  vgpu_ledger_count(t->ledger, 0, VGPU_RES_BUSY_NS, gpu_ns);
#if VGPU_SCHEDULER
  uint64_t now = t->now(t->user);
  vgpu_bucket_set_rate(&t->bucket, vgpu_ledger_share_ppm(t->ledger), now);
  vgpu_bucket_charge(&t->bucket, gpu_ns, now);
#endif
}

#if VGPU_SCHEDULER
/* One slice of a wait, outside the guard; counted as throttled time. */
static bool doze(VgpuThrottle *t, uint64_t ns) {
  uint64_t slice = MIN(ns, (uint64_t)VGPU_THROTTLE_SLICE_MS * 1000000ull);
  uint64_t t0 = t->now(t->user);
  vgpu_guard_leave(t->guard);
  bool ok = t->sleep(t->user, slice);
  vgpu_guard_enter(t->guard);
  uint64_t t1 = t->now(t->user);
  vgpu_ledger_count(t->ledger, 0, VGPU_RES_THROTTLED_NS, t1 > t0 ? t1 - t0 : 0);
  return ok;
}
#endif

bool vgpu_throttle_submit(VgpuThrottle *t) {
#if VGPU_SCHEDULER
  if (!t || !t->ledger)
    return true;
  /* On llvmpipe the threads may have rendered since the last charge
   * (work submitted earlier, finished while the client was answered):
   * that CPU time counts before the balance is looked at. */
  if (vgpu_ledger_cpu_milli(t->ledger)) {
    uint64_t c = cost(t, 0);
    if (c)
      account(t, c);
  }
  for (;;) {
    uint64_t now = t->now(t->user);
    vgpu_bucket_set_rate(&t->bucket, vgpu_ledger_share_ppm(t->ledger), now);
    uint64_t d = vgpu_bucket_delay(&t->bucket, now);
    if (d == 0)
      return true;
    if (!doze(t, d))
      return false;
  }
#else
  (void)t;
  return true;
#endif
}

void vgpu_throttle_charge(VgpuThrottle *t, uint64_t busy_ns) {
  if (!t || !t->ledger)
    return;
  account(t, cost(t, busy_ns));
}

bool vgpu_throttle_frame(VgpuThrottle *t) {
#if VGPU_SCHEDULER
  if (!t || !t->ledger)
    return true;
  uint64_t now = t->now(t->user);
  uint32_t cap = vgpu_ledger_fps_cap(t->ledger);
  uint64_t wait = vgpu_pacer_frame(&t->pacer, cap, now);
  if (wait == 0)
    return true;
  uint64_t until = now + wait;
  /* A cap lifted (or changed) meanwhile ends the wait at the next slice. */
  while (now < until && vgpu_ledger_fps_cap(t->ledger) == cap) {
    if (!doze(t, until - now))
      return false;
    now = t->now(t->user);
  }
  return true;
#else
  (void)t;
  return true;
#endif
}
