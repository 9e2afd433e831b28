#include "core/sched.h"

#include <string.h>

/* ns of GPU time that `wall_ns` of wall time is worth at `rate_ppm`.
 * wall_ns is bounded by the callers (at most a few seconds), so the
 * product stays far below 2^63. */
static int64_t worth(uint32_t rate_ppm, uint64_t wall_ns) {
  return (int64_t)(wall_ns * (uint64_t)rate_ppm / VGPU_SCHED_PPM);
}

int64_t vgpu_bucket_burst(uint32_t rate_ppm) {
  return worth(rate_ppm, VGPU_SCHED_BURST_WINDOW_NS);
}

int64_t vgpu_bucket_max_debt(uint32_t rate_ppm) {
  return worth(rate_ppm, VGPU_SCHED_DEBT_WINDOW_NS);
}

static void bound(VgpuBucket *b) {
  int64_t hi = vgpu_bucket_burst(b->rate_ppm), lo = -vgpu_bucket_max_debt(b->rate_ppm);
  if (b->tokens > hi)
    b->tokens = hi;
  if (b->tokens < lo)
    b->tokens = lo;
}

static void refill(VgpuBucket *b, uint64_t now) {
  if (now <= b->last)
    return; /* no time passed, or the clock went back: nothing earned */
  uint64_t dt = now - b->last;
  b->last = now;
  if (b->rate_ppm == 0) {
    b->tokens = 0;
    return;
  }
  /* More than the burst and debt windows together refills everything. */
  uint64_t full = VGPU_SCHED_BURST_WINDOW_NS + VGPU_SCHED_DEBT_WINDOW_NS;
  if (dt > full)
    dt = full;
  b->tokens += worth(b->rate_ppm, dt);
  bound(b);
}

/* A share of the whole GPU (or more) leaves no one's time to keep: such a
 * tenant is not throttled.  Kept as a whole-GPU bucket instead, a tenant
 * alone on the GPU that always has work would spend exactly what it
 * earns, and each error of the measured capacity (llvmpipe) or of the
 * fence's time (a real GPU) would stop it for a wait the GPU spends idle. */
static uint32_t throttled_rate(uint32_t rate_ppm) {
  return rate_ppm >= VGPU_SCHED_PPM ? 0 : rate_ppm;
}

void vgpu_bucket_init(VgpuBucket *b, uint32_t rate_ppm, uint64_t now) {
  memset(b, 0, sizeof(*b));
  b->rate_ppm = throttled_rate(rate_ppm);
  b->last = now;
}

void vgpu_bucket_set_rate(VgpuBucket *b, uint32_t rate_ppm, uint64_t now) {
  rate_ppm = throttled_rate(rate_ppm);
  refill(b, now);
  if (rate_ppm == b->rate_ppm)
    return;
  if (b->rate_ppm == 0)
    b->tokens = 0; /* nothing was kept while unthrottled */
  b->rate_ppm = rate_ppm;
  bound(b);
}

uint64_t vgpu_bucket_delay(VgpuBucket *b, uint64_t now) {
  refill(b, now);
  if (b->rate_ppm == 0 || b->tokens >= 0)
    return 0;
  /* Rounded up, so that after the wait the balance is not negative. */
  uint64_t owed = (uint64_t)(-b->tokens);
  return (owed * VGPU_SCHED_PPM + b->rate_ppm - 1) / b->rate_ppm;
}

void vgpu_bucket_charge(VgpuBucket *b, uint64_t busy_ns, uint64_t now) {
  refill(b, now);
  if (b->rate_ppm == 0)
    return;
  int64_t lo = -vgpu_bucket_max_debt(b->rate_ppm);
  /* tokens >= lo; subtract without overflow, stopping at lo. */
  if (busy_ns >= (uint64_t)(b->tokens - lo))
    b->tokens = lo;
  else
    b->tokens -= (int64_t)busy_ns;
}

uint64_t vgpu_cpu_meter_read(VgpuCpuMeter *m, uint64_t cpu_now, uint32_t cpu_milli) {
  if (!m->started || cpu_now < m->last || cpu_milli == 0) {
    m->started = cpu_milli != 0;
    m->last = cpu_now;
    m->rem = 0;
    return 0;
  }
  uint64_t used = cpu_now - m->last;
  m->last = cpu_now;
  /* 128 bits: used x 1000 does not fit 64 for very long intervals. */
  unsigned __int128 scaled = (unsigned __int128)used * 1000u + m->rem;
  unsigned __int128 q = scaled / cpu_milli;
  m->rem = (uint64_t)(scaled % cpu_milli);
  return q > UINT64_MAX ? UINT64_MAX : (uint64_t)q;
}

void vgpu_capacity_init(VgpuCapacity *c, uint32_t nominal_milli) {
  memset(c, 0, sizeof(*c));
  c->nominal_milli = nominal_milli ? nominal_milli : 1;
  uint64_t f = (uint64_t)c->nominal_milli * VGPU_CAPACITY_FLOOR_PERMILLE / 1000u;
  c->floor_milli = f ? (uint32_t)f : 1;
  c->milli = c->nominal_milli;
}

uint32_t vgpu_capacity_milli(const VgpuCapacity *c) {
  double m = c->milli + 0.5;
  if (m >= c->nominal_milli)
    return c->nominal_milli;
  if (m <= c->floor_milli)
    return c->floor_milli;
  return (uint32_t)m;
}

uint32_t vgpu_capacity_tick(VgpuCapacity *c, uint64_t wall_ns, uint64_t idle_ns,
                            uint64_t workers_ns, uint32_t active_ppm, bool starved) {
  bool restart =
      !c->started || wall_ns <= c->last_wall || wall_ns - c->last_wall > 10 * VGPU_CAPACITY_TAU_NS;
  uint64_t dt = restart ? 0 : wall_ns - c->last_wall;
  uint64_t idle = idle_ns >= c->last_idle ? idle_ns - c->last_idle : 0;
  c->started = true;
  c->last_wall = wall_ns;
  c->last_idle = idle_ns;
  if (restart)
    return vgpu_capacity_milli(c);
  /* In double: a window is at most 10 s, the counters' changes are
   * bounded by the caller's CPUs times that. */
  double window = ((double)(starved ? 0 : idle) + (double)workers_ns) * 1000.0 / (double)dt;
  if (active_ppm > 0 && active_ppm < VGPU_SCHED_PPM)
    window = window * VGPU_SCHED_PPM / active_ppm;
  if (window > c->nominal_milli)
    window = c->nominal_milli;
  /* dt / (tau + dt): a first-order low-pass (1 - exp(-dt / tau) for
   * short windows), without libm. */
  double alpha = (double)dt / ((double)VGPU_CAPACITY_TAU_NS + (double)dt);
  c->milli += alpha * (window - c->milli);
  if (c->milli > c->nominal_milli)
    c->milli = c->nominal_milli;
  if (c->milli < c->floor_milli)
    c->milli = c->floor_milli;
  return vgpu_capacity_milli(c);
}

bool vgpu_capacity_starved(uint64_t used_ns, uint64_t delay_ns, uint64_t window_ns,
                           uint32_t share_ppm, uint32_t cap_milli) {
  if (window_ns == 0 || share_ppm == 0 || cap_milli == 0)
    return false;
  /* In double: the window is at most seconds, the counters' changes
   * bounded by the CPUs times that. */
  double due = (double)window_ns * share_ppm / VGPU_SCHED_PPM * cap_milli / 1000.0;
  return (double)used_ns * 1000.0 < due * VGPU_CAPACITY_STARVED_PERMILLE &&
         (double)delay_ns * 1000.0 >= (double)window_ns * VGPU_CAPACITY_WAIT_PERMILLE;
}

uint64_t vgpu_cpu_delta(uint64_t *last, uint64_t now) {
  uint64_t d = now >= *last ? now - *last : 0;
  *last = now;
  return d;
}

uint64_t vgpu_pacer_frame(VgpuPacer *p, uint32_t cap, uint64_t now) {
  if (cap == 0) {
    p->started = false;
    p->cap = 0;
    return 0;
  }
  uint64_t period = 1000000000ull / cap;
  if (!p->started || p->cap != cap || now + period < p->next) {
    /* First frame, a new cap, or a clock that went back: start here. */
    p->started = true;
    p->cap = cap;
    p->next = now + period;
    return 0;
  }
  if (now >= p->next) {
    /* Late: not delayed, and the schedule is kept, so that the frames
     * after a late one catch up and the average holds through a stall of
     * the host.  Far behind (more than VGPU_PACER_CATCH_UP_NS): the
     * schedule starts again from now rather than letting a long row of
     * frames through back to back. */
    p->next = now - p->next > VGPU_PACER_CATCH_UP_NS ? now + period : p->next + period;
    return 0;
  }
  uint64_t wait = p->next - now;
  p->next += period;
  return wait;
}

void vgpu_sched_shares(const VgpuShareIn *in, size_t n, VgpuShareOut *out) {
  uint64_t weights = 0, fixed_weights = 0;
  size_t equal_active = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t w = in[i].weight ? in[i].weight : 1;
    if (in[i].mode == VGPU_SHARE_BEST_EFFORT)
      continue;
    weights += w;
    if (in[i].mode == VGPU_SHARE_FIXED)
      fixed_weights += w;
    else if (in[i].active_tenants > 0)
      equal_active++;
  }
  uint64_t reserved = weights ? fixed_weights * VGPU_SCHED_PPM / weights : 0;
  uint64_t left = VGPU_SCHED_PPM - reserved;
  for (size_t i = 0; i < n; i++) {
    uint32_t w = in[i].weight ? in[i].weight : 1;
    uint64_t share = 0;
    switch (in[i].mode) {
    case VGPU_SHARE_FIXED:
      share = w * (uint64_t)VGPU_SCHED_PPM / weights;
      break;
    case VGPU_SHARE_EQUAL:
      /* An idle one is shown what it would get by becoming active. */
      share = left / (equal_active + (in[i].active_tenants > 0 ? 0 : 1));
      break;
    default:
      share = 0;
      break;
    }
    VgpuShareOut *o = &out[i];
    o->instance_ppm = (uint32_t)share;
    if (share == 0) {
      o->tenant_ppm = o->idle_tenant_ppm = 0;
      if (in[i].mode != VGPU_SHARE_BEST_EFFORT)
        o->instance_ppm = o->tenant_ppm = o->idle_tenant_ppm = 1; /* never "unthrottled" */
      continue;
    }
    uint32_t a = in[i].active_tenants;
    o->tenant_ppm = (uint32_t)(share / (a ? a : 1));
    o->idle_tenant_ppm = (uint32_t)(share / ((uint64_t)a + 1));
    if (o->tenant_ppm == 0)
      o->tenant_ppm = 1;
    if (o->idle_tenant_ppm == 0)
      o->idle_tenant_ppm = 1;
  }
}

/* ---- utilisation ----------------------------------------------------------- */

void vgpu_busy_window_init(VgpuBusyWindow *w, int64_t now_us, uint64_t busy_ns) {
  memset(w, 0, sizeof(*w));
  w->t_us[0] = now_us;
  w->busy_ns[0] = busy_ns;
  w->n = 1;
}

void vgpu_busy_window_push(VgpuBusyWindow *w, int64_t now_us, uint64_t busy_ns) {
  if (w->n == 0 || now_us < w->t_us[w->head] || busy_ns < w->busy_ns[w->head]) {
    vgpu_busy_window_init(w, now_us, busy_ns);
    return;
  }
  if (now_us - w->t_us[w->head] < VGPU_BUSY_MIN_STEP_US)
    return;
  w->head = (w->head + 1) % VGPU_BUSY_SAMPLES;
  w->t_us[w->head] = now_us;
  w->busy_ns[w->head] = busy_ns;
  if (w->n < VGPU_BUSY_SAMPLES)
    w->n++;
}

uint32_t vgpu_busy_window_permille(const VgpuBusyWindow *w, int64_t now_us, uint64_t busy_ns) {
  if (w->n == 0)
    return 0;
  /* From the newest sample backwards: the first one old enough, else the
   * oldest kept. */
  uint32_t base = w->head;
  for (uint32_t k = 0; k < w->n; k++) {
    base = (w->head + VGPU_BUSY_SAMPLES - k) % VGPU_BUSY_SAMPLES;
    if (now_us - w->t_us[base] >= VGPU_BUSY_WINDOW_US)
      break;
  }
  if (now_us <= w->t_us[base] || busy_ns <= w->busy_ns[base])
    return 0;
  /* In double: nanoseconds over microseconds, no overflow to care for. */
  double permille =
      (double)(busy_ns - w->busy_ns[base]) / 1e3 / (double)(now_us - w->t_us[base]) * 1000.0;
  return permille >= 1000.0 ? 1000u : (uint32_t)(permille + 0.5);
}
