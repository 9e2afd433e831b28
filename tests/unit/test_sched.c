/* GPU-time scheduling: the token bucket, the frame pacer, the share
 * computation (core/sched.c) and the worker-side waits (core/throttle.c),
 * all on a simulated clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/ledger.h"
#include "core/sched.h"
#include "core/throttle.h"
#include "vgpu-config.h"

#define MS 1000000ull
#define S 1000000000ull

/* A tenant that always has work: waits as told, then spends `cost` of GPU
 * (and wall) time per submission.  Returns the busy fraction in ppm. */
static uint64_t run_greedy(VgpuBucket *b, uint64_t *now, uint64_t cost, uint64_t span) {
  uint64_t end = *now + span, busy = 0;
  while (*now < end) {
    uint64_t d = vgpu_bucket_delay(b, *now);
    assert_true(d <= VGPU_SCHED_DEBT_WINDOW_NS + MS);
    *now += d;
    *now += cost;
    busy += cost;
    vgpu_bucket_charge(b, cost, *now);
  }
  return busy * VGPU_SCHED_PPM / span;
}

static void test_bucket_steady(void **state) {
  (void)state;
  static const uint32_t rates[] = {1000, 142857, 250000, 500000, 900000};
  static const uint64_t costs[] = {200000, 1 * MS, 7 * MS, 40 * MS};
  for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
    for (size_t j = 0; j < sizeof(costs) / sizeof(costs[0]); j++) {
      /* Exact while one submission costs no more than the debt bound;
       * beyond, see test_bucket_clock. */
      if ((int64_t)costs[j] > vgpu_bucket_max_debt(rates[i]))
        continue;
      VgpuBucket b;
      uint64_t now = 5 * S;
      vgpu_bucket_init(&b, rates[i], now);
      uint64_t got = run_greedy(&b, &now, costs[j], 60 * S);
      /* Within 1% of the share (plus one submission over the run). */
      uint64_t slack = rates[i] / 100 + costs[j] * VGPU_SCHED_PPM / (60 * S) + 1;
      assert_in_range(got, rates[i] - MIN(slack, rates[i]), rates[i] + slack);
    }
  /* Unthrottled: never waits, whatever it spends. */
  VgpuBucket b;
  vgpu_bucket_init(&b, 0, 0);
  vgpu_bucket_charge(&b, 10 * S, 1);
  assert_int_equal(vgpu_bucket_delay(&b, 2), 0);
}

static void test_bucket_burst(void **state) {
  (void)state;
  VgpuBucket b;
  uint64_t now = S;
  vgpu_bucket_init(&b, 500000, now);
  /* Starts empty: no windfall. */
  assert_int_equal(b.tokens, 0);
  /* Idle for long: the balance stops at the burst. */
  now += 30 * S;
  assert_int_equal(vgpu_bucket_delay(&b, now), 0);
  assert_int_equal(b.tokens, vgpu_bucket_burst(500000));
  assert_int_equal(vgpu_bucket_burst(500000), 50 * MS);
  /* The burst is spent without waiting, then waits start. */
  vgpu_bucket_charge(&b, 50 * MS, now);
  assert_int_equal(vgpu_bucket_delay(&b, now), 0);
  vgpu_bucket_charge(&b, 10 * MS, now);
  assert_int_equal(vgpu_bucket_delay(&b, now), 20 * MS);
  /* 10 ms later at 50%: 5 ms earned, 5 ms still owed = 10 ms wait. */
  assert_int_equal(vgpu_bucket_delay(&b, now + 10 * MS), 10 * MS);
}

static void test_bucket_clock(void **state) {
  (void)state;
  VgpuBucket b;
  uint64_t now = 100 * S;
  vgpu_bucket_init(&b, 250000, now);
  vgpu_bucket_charge(&b, 100 * MS, now);
  uint64_t d = vgpu_bucket_delay(&b, now);
  assert_int_equal(d, 400 * MS);
  /* Backwards: nothing earned, nothing lost, the wait stays bounded. */
  assert_int_equal(vgpu_bucket_delay(&b, now - 50 * S), d);
  assert_int_equal(vgpu_bucket_delay(&b, 0), d);
  /* And time counts again from where it was. */
  assert_int_equal(vgpu_bucket_delay(&b, now + 100 * MS), 300 * MS);
  /* Forward by a day: one burst, no more. */
  now += 86400 * S;
  assert_int_equal(vgpu_bucket_delay(&b, now), 0);
  assert_int_equal(b.tokens, vgpu_bucket_burst(250000));
  /* A huge charge (a hijacked count, or a draw of minutes) owes at most
   * the debt window: the wait is seconds, not hours. */
  vgpu_bucket_charge(&b, UINT64_MAX, now);
  d = vgpu_bucket_delay(&b, now);
  assert_true(d >= VGPU_SCHED_DEBT_WINDOW_NS && d <= VGPU_SCHED_DEBT_WINDOW_NS + 1);
  vgpu_bucket_charge(&b, UINT64_MAX, now);
  assert_int_equal(vgpu_bucket_delay(&b, now), d);
  /* Near the top of the clock: no overflow. */
  vgpu_bucket_init(&b, 999999, UINT64_MAX - S);
  assert_int_equal(vgpu_bucket_delay(&b, UINT64_MAX), 0);
  assert_int_equal(b.tokens, vgpu_bucket_burst(999999));
}

static void test_bucket_rate_change(void **state) {
  (void)state;
  VgpuBucket b;
  uint64_t now = S;
  vgpu_bucket_init(&b, 500000, now);
  /* Deep in debt at 50%, then the share drops to 10%: the debt is cut to
   * what 10% owes at most, so the wait stays within the window. */
  vgpu_bucket_charge(&b, 10 * S, now);
  assert_int_equal(b.tokens, -vgpu_bucket_max_debt(500000));
  vgpu_bucket_set_rate(&b, 100000, now);
  assert_int_equal(b.tokens, -vgpu_bucket_max_debt(100000));
  assert_true(vgpu_bucket_delay(&b, now) <= VGPU_SCHED_DEBT_WINDOW_NS + 1);
  /* Full at 90%, dropped to 10%: the balance is cut to the new burst. */
  now += 10 * S;
  vgpu_bucket_set_rate(&b, 900000, now);
  now += 10 * S;
  assert_int_equal(vgpu_bucket_delay(&b, now), 0);
  assert_int_equal(b.tokens, vgpu_bucket_burst(900000));
  vgpu_bucket_set_rate(&b, 100000, now);
  assert_int_equal(b.tokens, vgpu_bucket_burst(100000));
  /* Unthrottled and back: nothing carried over either way. */
  vgpu_bucket_charge(&b, 5 * S, now);
  vgpu_bucket_set_rate(&b, 0, now);
  assert_int_equal(vgpu_bucket_delay(&b, now), 0);
  vgpu_bucket_charge(&b, 5 * S, now + MS);
  vgpu_bucket_set_rate(&b, 200000, now + 2 * MS);
  assert_int_equal(b.tokens, 0);
  assert_int_equal(vgpu_bucket_delay(&b, now + 2 * MS), 0);
  /* A share of the whole GPU, or an out of range one, is not throttled:
   * a tenant alone on the GPU never waits, whatever its measured cost. */
  vgpu_bucket_set_rate(&b, 200000, now + 3 * MS);
  vgpu_bucket_charge(&b, 2 * S, now + 3 * MS);
  assert_true(vgpu_bucket_delay(&b, now + 3 * MS) > 0);
  vgpu_bucket_set_rate(&b, VGPU_SCHED_PPM, now + 3 * MS);
  assert_int_equal(b.rate_ppm, 0);
  vgpu_bucket_charge(&b, 10 * S, now + 4 * MS);
  assert_int_equal(vgpu_bucket_delay(&b, now + 4 * MS), 0);
  vgpu_bucket_set_rate(&b, UINT32_MAX, now + 5 * MS);
  assert_int_equal(b.rate_ppm, 0);
  vgpu_bucket_init(&b, VGPU_SCHED_PPM, now);
  assert_int_equal(b.rate_ppm, 0);
  /* Back under the whole GPU: paced again, from a zero balance. */
  vgpu_bucket_set_rate(&b, 500000, now + 6 * MS);
  assert_int_equal(b.tokens, 0);
  vgpu_bucket_charge(&b, 10 * MS, now + 6 * MS);
  assert_int_equal(vgpu_bucket_delay(&b, now + 6 * MS), 20 * MS);
  /* Changing the share while the tenant runs: the long-run fraction
   * follows the new share. */
  vgpu_bucket_init(&b, 600000, now);
  run_greedy(&b, &now, 3 * MS, 5 * S);
  vgpu_bucket_set_rate(&b, 200000, now);
  uint64_t got = run_greedy(&b, &now, 3 * MS, 30 * S);
  assert_in_range(got, 196000, 204000);
}

static void test_pacer(void **state) {
  (void)state;
  VgpuPacer p = {0};
  const uint64_t period = S / 30;
  uint64_t now = 10 * S;
  /* A fast tenant (1 ms a frame) is spaced at 1/30 s. */
  uint64_t first = 0, last = 0;
  for (int i = 0; i < 301; i++) {
    uint64_t w = vgpu_pacer_frame(&p, 30, now);
    assert_true(w <= period);
    now += w;
    if (i == 0)
      first = now;
    if (i > 1)
      assert_int_equal(now - last, period);
    last = now;
    now += MS;
  }
  assert_int_equal(last - first, 300 * period);
  /* A slow one (50 ms a frame) is never held. */
  now += vgpu_pacer_frame(&p, 30, now);
  now += 50 * MS;
  for (int i = 0; i < 200; i++) {
    assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
    now += 50 * MS;
  }
  /* After a stall it does not catch up with a burst. */
  now += 5 * S;
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 30, now + MS), period - MS);
  /* A late frame keeps the schedule: the next comes at once. */
  uint64_t base = now + period;
  now = base + 2 * period + MS; /* frames due at base and base + period missed */
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), period - MS);
  now += period - MS;
  /* Late by a period and a half: one frame at once, then on schedule. */
  now += 2 * period + period / 2;
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), period - period / 2);
  /* More than VGPU_PACER_CATCH_UP_NS behind: a new schedule. */
  now += VGPU_PACER_CATCH_UP_NS + 2 * period;
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 30, now), period);
  /* No cap: nothing; a new cap starts a new schedule; a clock that goes
   * back does not make a long wait. */
  assert_int_equal(vgpu_pacer_frame(&p, 0, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 60, now), 0);
  assert_int_equal(vgpu_pacer_frame(&p, 60, now), S / 60);
  assert_true(vgpu_pacer_frame(&p, 60, now - 100 * S) <= S / 60);
}

static void shares(const VgpuShareIn *in, size_t n, VgpuShareOut *out) {
  memset(out, 0xa5, n * sizeof(*out));
  vgpu_sched_shares(in, n, out);
}

static void test_shares(void **state) {
  (void)state;
  VgpuShareOut o[4];
  /* Equal: active instances split the GPU; idle ones give theirs away. */
  VgpuShareIn eq[3] = {
      {VGPU_SHARE_EQUAL, 100, 1}, {VGPU_SHARE_EQUAL, 100, 6}, {VGPU_SHARE_EQUAL, 100, 0}};
  shares(eq, 3, o);
  assert_int_equal(o[0].instance_ppm, 500000);
  assert_int_equal(o[0].tenant_ppm, 500000);
  assert_int_equal(o[1].instance_ppm, 500000);
  assert_int_equal(o[1].tenant_ppm, 83333);
  assert_int_equal(o[1].idle_tenant_ppm, 71428);
  assert_int_equal(o[2].instance_ppm, 333333); /* what it would get */
  assert_int_equal(o[2].idle_tenant_ppm, 333333);
  /* A tenant that dies holding tokens: recomputed without it, the other
   * tenant of its instance gets the instance's share. */
  eq[1].active_tenants = 1;
  shares(eq, 3, o);
  assert_int_equal(o[1].tenant_ppm, 500000);
  /* Its instance's last tenant gone: the light one has the GPU. */
  eq[1].active_tenants = 0;
  shares(eq, 3, o);
  assert_int_equal(o[0].tenant_ppm, 1000000);
  /* Fixed 1:2:4, held whoever is idle. */
  VgpuShareIn fx[3] = {
      {VGPU_SHARE_FIXED, 1, 1}, {VGPU_SHARE_FIXED, 2, 0}, {VGPU_SHARE_FIXED, 4, 2}};
  shares(fx, 3, o);
  assert_int_equal(o[0].instance_ppm, 142857);
  assert_int_equal(o[1].instance_ppm, 285714);
  assert_int_equal(o[1].idle_tenant_ppm, 285714);
  assert_int_equal(o[2].instance_ppm, 571428);
  assert_int_equal(o[2].tenant_ppm, 285714);
  /* Mixed: fixed reserves its weight's part of all non-best-effort
   * weights; equal instances split the rest among the active ones;
   * best-effort is not counted and never throttled. */
  VgpuShareIn mx[4] = {{VGPU_SHARE_FIXED, 200, 0},
                       {VGPU_SHARE_EQUAL, 100, 3},
                       {VGPU_SHARE_EQUAL, 100, 0},
                       {VGPU_SHARE_BEST_EFFORT, 100, 5}};
  shares(mx, 4, o);
  assert_int_equal(o[0].instance_ppm, 500000);
  assert_int_equal(o[1].instance_ppm, 500000);
  assert_int_equal(o[1].tenant_ppm, 166666);
  assert_int_equal(o[2].instance_ppm, 250000);
  assert_int_equal(o[3].instance_ppm, 0);
  assert_int_equal(o[3].tenant_ppm, 0);
  assert_int_equal(o[3].idle_tenant_ppm, 0);
  /* Only best-effort, or nothing: nothing throttled. */
  shares(&mx[3], 1, o);
  assert_int_equal(o[0].tenant_ppm, 0);
  vgpu_sched_shares(NULL, 0, NULL);
  /* A throttled share is never 0 (which would mean unthrottled), even
   * with weights so uneven it rounds down, or a weight of 0. */
  VgpuShareIn tiny[3] = {
      {VGPU_SHARE_FIXED, 1, 1}, {VGPU_SHARE_FIXED, 10000, 1}, {VGPU_SHARE_FIXED, 0, 1}};
  for (int i = 0; i < 200; i++) {
    VgpuShareIn many[200];
    for (int j = 0; j < 200; j++)
      many[j] = (VgpuShareIn){VGPU_SHARE_FIXED, j == i ? 1 : 10000, 3};
    VgpuShareOut mo[200];
    vgpu_sched_shares(many, 200, mo);
    assert_true(mo[i].tenant_ppm >= 1 && mo[i].idle_tenant_ppm >= 1);
  }
  shares(tiny, 3, o);
  assert_int_equal(o[2].instance_ppm, o[0].instance_ppm);
  assert_true(o[0].instance_ppm + o[1].instance_ppm + o[2].instance_ppm <= 1000000);
}

/* ---- CPU time as GPU time (llvmpipe) ------------------------------------ */

static void test_cpu_meter(void **state) {
  (void)state;
  VgpuCpuMeter m = {0};
  /* The first reading starts the meter: what came before is not charged. */
  assert_int_equal(vgpu_cpu_meter_read(&m, 7 * S, 2000), 0);
  /* Two CPUs: 10 ms of CPU time is 5 ms of the whole GPU's time. */
  assert_int_equal(vgpu_cpu_meter_read(&m, 7 * S + 10 * MS, 2000), 5 * MS);
  /* No CPU used: nothing. */
  assert_int_equal(vgpu_cpu_meter_read(&m, 7 * S + 10 * MS, 2000), 0);
  /* One CPU and a half: remainders are carried, nothing is lost to
   * rounding however small the steps. */
  VgpuCpuMeter f = {0};
  uint64_t sum = 0, cpu = 0;
  (void)vgpu_cpu_meter_read(&f, cpu, 1500);
  for (int i = 0; i < 3000; i++) {
    cpu += 1;
    sum += vgpu_cpu_meter_read(&f, cpu, 1500);
  }
  assert_int_equal(sum, 2000);
  /* A clock that goes backwards charges nothing, and the meter counts on
   * from where it went: no huge unsigned difference, no lost start. */
  assert_int_equal(vgpu_cpu_meter_read(&m, 3 * S, 2000), 0);
  assert_int_equal(vgpu_cpu_meter_read(&m, 3 * S + 4 * MS, 2000), 2 * MS);
  /* Charging switched off (wall time) and on again: a fresh start. */
  assert_int_equal(vgpu_cpu_meter_read(&m, 9 * S, 0), 0);
  assert_int_equal(vgpu_cpu_meter_read(&m, 10 * S, 1000), 0);
  assert_int_equal(vgpu_cpu_meter_read(&m, 10 * S + MS, 1000), MS);
  /* Less than a whole CPU: the capacity is smaller, each ns costs more. */
  assert_int_equal(vgpu_cpu_meter_read(&m, 10 * S + 2 * MS, 500), 2 * MS);
  /* An interval too long for 64-bit arithmetic saturates, it does not wrap. */
  VgpuCpuMeter big = {0};
  (void)vgpu_cpu_meter_read(&big, 0, 1);
  assert_int_equal(vgpu_cpu_meter_read(&big, UINT64_MAX, 1), UINT64_MAX);
}

/* ---- the measured CPU capacity (llvmpipe) -------------------------------- */

/* Ticks of 200 ms, each with `idle` and `workers` ns in its window, for
 * `n` ticks; returns the last figure. */
static uint32_t cap_run_part(VgpuCapacity *c, uint64_t *wall, uint64_t *idle_ctr, uint64_t idle,
                             uint64_t workers, uint32_t active_ppm, int n) {
  uint32_t m = 0;
  for (int i = 0; i < n; i++) {
    *wall += 200 * MS;
    *idle_ctr += idle;
    m = vgpu_capacity_tick(c, *wall, *idle_ctr, workers, active_ppm, false);
  }
  return m;
}

static uint32_t cap_run(VgpuCapacity *c, uint64_t *wall, uint64_t *idle_ctr, uint64_t idle,
                        uint64_t workers, int n) {
  return cap_run_part(c, wall, idle_ctr, idle, workers, 0, n);
}

static void test_capacity(void **state) {
  (void)state;
  VgpuCapacity c;
  vgpu_capacity_init(&c, 2000);
  /* Before any window: the nominal capacity; the floor is 1/20 of it. */
  assert_int_equal(vgpu_capacity_milli(&c), 2000);
  assert_int_equal(c.floor_milli, 100);
  uint64_t wall = 5 * S, idle = 77 * S;
  /* The first tick only starts the window, whatever the counters say. */
  assert_int_equal(vgpu_capacity_tick(&c, wall, idle, 123 * S, 0, false), 2000);
  /* All idle (two CPUs, 200 ms: 400 ms idle), no worker: the whole
   * machine. */
  assert_int_equal(cap_run(&c, &wall, &idle, 400 * MS, 0, 10), 2000);
  /* No idle time, the workers used one CPU of the two (the rest went to
   * other processes): one step moves the figure by 200 / (1000 + 200) of
   * the way, then it settles at one CPU. */
  assert_int_equal(cap_run(&c, &wall, &idle, 0, 200 * MS, 1), 1833);
  assert_int_equal(cap_run(&c, &wall, &idle, 0, 200 * MS, 60), 1000);
  /* Workers and idle together: half a CPU each. */
  assert_int_equal(cap_run(&c, &wall, &idle, 100 * MS, 100 * MS, 60), 1000);
  /* Counters that say more than the CPUs could (tick-granular counts
   * land in one window or the next): at most the nominal capacity. */
  assert_int_equal(cap_run(&c, &wall, &idle, 400 * MS, 400 * MS, 60), 2000);
  /* No idle and no worker time (others take everything): the floor, not
   * zero. */
  assert_int_equal(cap_run(&c, &wall, &idle, 0, 0, 100), 100);
  /* Back to one CPU. */
  assert_int_equal(cap_run(&c, &wall, &idle, 200 * MS, 0, 60), 1000);
  /* An idle counter that goes back (a CPU went offline): that window
   * counts no idle time (the figure drops a step, no huge unsigned
   * difference), and the next window counts from the new value. */
  uint32_t m = vgpu_capacity_tick(&c, wall += 200 * MS, idle - 30 * S, 0, 0, false);
  assert_int_equal(m, 833);
  idle -= 30 * S;
  assert_int_equal(cap_run(&c, &wall, &idle, 200 * MS, 0, 60), 1000);
  /* A clock that did not move or went back changes nothing, and the next
   * window runs from where it went. */
  assert_int_equal(vgpu_capacity_tick(&c, wall, idle + 400 * MS, 0, 0, false), 1000);
  assert_int_equal(vgpu_capacity_tick(&c, wall - S, idle + 400 * MS, 0, 0, false), 1000);
  wall -= S;
  idle += 400 * MS;
  assert_int_equal(cap_run(&c, &wall, &idle, 200 * MS, 0, 1), 1000);
  /* A window longer than ten time constants (vgpud was stopped): it only
   * starts a new one. */
  wall += 60 * S;
  assert_int_equal(vgpu_capacity_tick(&c, wall, idle + 120 * S, 0, 0, false), 1000);
  /* Shares held for idle instances: the active ones hold a quarter of the
   * capacity and use it (a quarter of one CPU), other processes take every
   * idle moment.  The figure stays at one CPU rather than shrinking by a
   * quarter each window; the whole of it (VGPU_SCHED_PPM, or 0) changes
   * nothing. */
  assert_int_equal(cap_run_part(&c, &wall, &idle, 0, 50 * MS, 250000, 60), 1000);
  assert_int_equal(cap_run_part(&c, &wall, &idle, 0, 200 * MS, VGPU_SCHED_PPM, 60), 1000);
  assert_int_equal(cap_run_part(&c, &wall, &idle, 0, 200 * MS, 2 * VGPU_SCHED_PPM, 60), 1000);
  /* On a quiet host the held part shows as idle time too: at most the
   * nominal capacity. */
  assert_int_equal(cap_run_part(&c, &wall, &idle, 300 * MS, 50 * MS, 250000, 60), 2000);
  /* A smaller nominal capacity (a cgroup ceiling of half a CPU): the
   * measured figure never goes above it. */
  VgpuCapacity h;
  vgpu_capacity_init(&h, 500);
  uint64_t hw = 0, hi = 0;
  (void)vgpu_capacity_tick(&h, hw, hi, 0, 0, false);
  assert_int_equal(cap_run(&h, &hw, &hi, 400 * MS, 0, 20), 500);
  assert_int_equal(h.floor_milli, 25);
  /* A tiny nominal figure still has a floor of at least 1. */
  VgpuCapacity t;
  vgpu_capacity_init(&t, 1);
  assert_int_equal(t.floor_milli, 1);
  assert_int_equal(vgpu_capacity_milli(&t), 1);
}

/* An instance under its share whose threads waited for a CPU: idle time
 * is fragments it could not take, and does not count. */
static void test_capacity_starved(void **state) {
  (void)state;
  const uint64_t win = 200 * MS;
  /* Share 4/7 of 2 CPUs over 200 ms: 228.6 ms due; 99% is 226.3 ms. */
  const uint32_t four7 = 4 * VGPU_SCHED_PPM / 7;
  assert_true(vgpu_capacity_starved(150 * MS, 100 * MS, win, four7, 2000));
  /* Waited, but used its share (it was throttled): not starved. */
  assert_false(vgpu_capacity_starved(230 * MS, 100 * MS, win, four7, 2000));
  assert_false(vgpu_capacity_starved(227 * MS, 100 * MS, win, four7, 2000));
  assert_true(vgpu_capacity_starved(226 * MS, 100 * MS, win, four7, 2000));
  /* Under its share without waiting (it renders little): light, not
   * starved; the wait must be a fifth of the window (40 ms). */
  assert_false(vgpu_capacity_starved(10 * MS, 0, win, four7, 2000));
  assert_false(vgpu_capacity_starved(10 * MS, 39 * MS, win, four7, 2000));
  assert_true(vgpu_capacity_starved(10 * MS, 40 * MS, win, four7, 2000));
  /* No window (the first tick), no share, no capacity: never. */
  assert_false(vgpu_capacity_starved(0, S, 0, four7, 2000));
  assert_false(vgpu_capacity_starved(0, S, win, 0, 2000));
  assert_false(vgpu_capacity_starved(0, S, win, four7, 0));
  /* Counters at their limits: no overflow. */
  assert_false(vgpu_capacity_starved(UINT64_MAX, UINT64_MAX, win, VGPU_SCHED_PPM, UINT32_MAX));
  assert_true(vgpu_capacity_starved(0, UINT64_MAX, UINT64_MAX, VGPU_SCHED_PPM, UINT32_MAX));

  /* Starved windows count the workers' time alone: with 100 ms idle and
   * 350 ms of workers per 200 ms window, 1.75 CPUs rather than the two
   * (of 2.25) the idle time would add up to. */
  VgpuCapacity c;
  vgpu_capacity_init(&c, 2000);
  uint64_t wall = S, idle = 0;
  (void)vgpu_capacity_tick(&c, wall, idle, 0, 0, false);
  uint32_t m = 0;
  for (int i = 0; i < 60; i++) {
    wall += win;
    idle += 100 * MS;
    m = vgpu_capacity_tick(&c, wall, idle, 350 * MS, 0, true);
  }
  assert_int_equal(m, 1750);
  /* The same windows not starved: the idle time counts again (capped at
   * the nominal two CPUs). */
  for (int i = 0; i < 60; i++) {
    wall += win;
    idle += 100 * MS;
    m = vgpu_capacity_tick(&c, wall, idle, 300 * MS, 0, false);
  }
  assert_int_equal(m, 2000);
  /* The idle counter is followed through starved windows: no window after
   * one counts the idle time of the starved one. */
  wall += win;
  idle += 100 * MS;
  (void)vgpu_capacity_tick(&c, wall, idle, 0, 0, true);
  for (int i = 0; i < 60; i++) {
    wall += win;
    m = vgpu_capacity_tick(&c, wall, idle, 200 * MS, 0, false);
  }
  assert_int_equal(m, 1000);
}

/* The workers' part of a window: each worker's kernel CPU counter, as the
 * change since the last tick. */
static void test_cpu_delta(void **state) {
  (void)state;
  /* A worker that just started counts from zero: its whole CPU time falls
   * in the window it started in. */
  uint64_t a = 0, b = 0;
  assert_int_equal(vgpu_cpu_delta(&a, 30 * MS), 30 * MS);
  assert_int_equal(vgpu_cpu_delta(&b, 50 * MS), 50 * MS);
  assert_int_equal(vgpu_cpu_delta(&a, 130 * MS) + vgpu_cpu_delta(&b, 60 * MS), 110 * MS);
  /* A counter that went back grows by nothing, and counts on from there. */
  assert_int_equal(vgpu_cpu_delta(&a, 10 * MS), 0);
  assert_int_equal(a, 10 * MS);
  assert_int_equal(vgpu_cpu_delta(&a, 25 * MS), 15 * MS);
  /* A worker that vanished (reaped, not read any more): the window holds
   * only the others' time, and the figure stays within its bounds. */
  VgpuCapacity c;
  vgpu_capacity_init(&c, 2000);
  uint64_t wall = S, idle = 0;
  (void)vgpu_capacity_tick(&c, wall, idle, 0, 0, false);
  uint64_t used = vgpu_cpu_delta(&b, 60 * MS + 200 * MS); /* b alone: a is gone */
  assert_int_equal(used, 200 * MS);
  uint32_t m = cap_run(&c, &wall, &idle, 0, used, 60);
  assert_int_equal(m, 1000);
}

/* ---- the worker's waits ------------------------------------------------- */

typedef struct {
  uint64_t now;
  uint64_t longest;
  int sleeps;
  int hangup_after; /* sleeps; -1 never */
  VgpuLedger *ledger;
  int unthrottle_after; /* sleeps; -1 never */
} Clock;

static uint64_t fake_now(void *user) {
  return ((Clock *)user)->now;
}

static bool fake_sleep(void *user, uint64_t ns) {
  Clock *c = user;
  c->now += ns;
  c->longest = MAX(c->longest, ns);
  c->sleeps++;
  if (c->unthrottle_after >= 0 && c->sleeps >= c->unthrottle_after)
    vgpu_ledger_standalone_set_sched(c->ledger, 0, 0);
  return c->hangup_after < 0 || c->sleeps < c->hangup_after;
}

static void test_throttle(void **state) {
  (void)state;
#if !VGPU_SCHEDULER
  skip(); /* built with -Dscheduler=false: nothing waits */
#endif
  uint64_t limits[VGPU_RES_N_QUOTA] = {0};
  VgpuLedger *l = vgpu_ledger_new_standalone(limits);
  Clock c = {.now = S, .hangup_after = -1, .ledger = l, .unthrottle_after = -1};
  VgpuThrottle *t = vgpu_throttle_new(l);
  vgpu_throttle_set_clock(t, fake_now, fake_sleep, &c);
  /* Unthrottled: busy time counted, no wait. */
  vgpu_throttle_charge(t, 300 * MS);
  assert_true(vgpu_throttle_submit(t));
  assert_int_equal(c.sleeps, 0);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 300 * MS);
  /* A 25% share: 100 ms of GPU time makes the next submission wait
   * 400 ms, in slices of at most VGPU_THROTTLE_SLICE_MS, counted. */
  vgpu_ledger_standalone_set_sched(l, 250000, 0);
  assert_true(vgpu_throttle_submit(t));
  vgpu_throttle_charge(t, 100 * MS);
  uint64_t t0 = c.now;
  assert_true(vgpu_throttle_submit(t));
  assert_int_equal(c.now - t0, 400 * MS);
  assert_true(c.longest <= VGPU_THROTTLE_SLICE_MS * MS);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_THROTTLED_NS), 400 * MS);
  /* The share lifted during a wait ends it at the next slice. */
  vgpu_throttle_charge(t, 100 * MS);
  c.unthrottle_after = c.sleeps + 2;
  t0 = c.now;
  assert_true(vgpu_throttle_submit(t));
  assert_int_equal(c.now - t0, 2 * VGPU_THROTTLE_SLICE_MS * MS);
  c.unthrottle_after = -1;
  /* A client that hangs up while held back: false at once. */
  vgpu_ledger_standalone_set_sched(l, 100000, 0);
  vgpu_throttle_charge(t, 500 * MS);
  c.hangup_after = c.sleeps + 1;
  assert_false(vgpu_throttle_submit(t));
  c.hangup_after = -1;
  /* Frames at a cap of 25 from a tenant that could do 1000. */
  vgpu_ledger_standalone_set_sched(l, 0, 25);
  c.now += 10 * S;
  uint64_t start = 0;
  for (int i = 0; i <= 50; i++) {
    assert_true(vgpu_throttle_frame(t));
    if (i == 0)
      start = c.now;
    c.now += MS;
  }
  assert_int_equal(c.now - MS - start, 2 * S);
  /* Without a ledger nothing waits. */
  VgpuThrottle *none = vgpu_throttle_new(NULL);
  vgpu_throttle_charge(none, S);
  assert_true(vgpu_throttle_submit(none));
  assert_true(vgpu_throttle_frame(none));
  vgpu_throttle_free(none);
  vgpu_throttle_free(t);
  vgpu_ledger_free(l);
}

/* Utilisation over the last second from samples on a 200 ms tick. */
static void test_busy_window(void **state) {
  (void)state;
  VgpuBusyWindow w;
  int64_t t = 5000000; /* monotonic microseconds */
  vgpu_busy_window_init(&w, t, 0);
  /* No time passed: 0. */
  assert_int_equal(vgpu_busy_window_permille(&w, t, 0), 0);
  /* A young tenant (0.1 s old) busy half the time: 50.0% since it began. */
  assert_int_equal(vgpu_busy_window_permille(&w, t + 100000, 50 * MS), 500);
  /* Idle for 2 s on the tick: 0. */
  uint64_t busy = 0;
  for (int i = 0; i < 10; i++) {
    t += 200000;
    vgpu_busy_window_push(&w, t, busy);
  }
  assert_int_equal(vgpu_busy_window_permille(&w, t, busy), 0);
  /* Then busy 30% of each tick: after a second, 30.0% (the base sample is
   * the newest at least 1 s old, so the idle past has left the window). */
  for (int i = 0; i < 10; i++) {
    t += 200000;
    busy += 60 * MS;
    vgpu_busy_window_push(&w, t, busy);
  }
  assert_int_equal(vgpu_busy_window_permille(&w, t, busy), 300);
  /* Between ticks: the reading at the request counts. */
  assert_int_equal(vgpu_busy_window_permille(&w, t + 100000, busy + 30 * MS), 300);
  /* Going idle shows at once as a falling figure, 0 a second later. */
  for (int i = 0; i < 2; i++) {
    t += 200000;
    vgpu_busy_window_push(&w, t, busy);
  }
  assert_int_equal(vgpu_busy_window_permille(&w, t, busy), 180);
  for (int i = 0; i < 3; i++) {
    t += 200000;
    vgpu_busy_window_push(&w, t, busy);
  }
  assert_int_equal(vgpu_busy_window_permille(&w, t, busy), 0);
  /* Samples closer than VGPU_BUSY_MIN_STEP_US are not kept: a burst of
   * events does not shrink the window below a second. */
  for (int i = 0; i < 20; i++)
    vgpu_busy_window_push(&w, t + 1000 * i, busy);
  t += 200000;
  busy += 100 * MS;
  assert_true(vgpu_busy_window_permille(&w, t, busy) <= 100);
  /* A counter that claims more than the wall time: 100.0% at most. */
  assert_int_equal(vgpu_busy_window_permille(&w, t, busy + 10 * S), 1000);
  /* A counter or clock that goes back restarts the window there. */
  vgpu_busy_window_push(&w, t, 0);
  assert_int_equal(w.n, 1);
  vgpu_busy_window_push(&w, t - 1, busy);
  assert_int_equal(w.n, 1);
  assert_int_equal(vgpu_busy_window_permille(&w, t - 1 + 200000, busy + 100 * MS), 500);
}

/* On llvmpipe (a grant page with cpu_milli) the process CPU time is what a
 * tenant is charged, whatever wall time the caller measured. */
static uint64_t fake_cpu(void *user) {
  return *(uint64_t *)user;
}

static void test_throttle_cpu(void **state) {
  (void)state;
#if !VGPU_SCHEDULER
  skip();
#endif
  uint64_t limits[VGPU_RES_N_QUOTA] = {0};
  VgpuLedger *l = vgpu_ledger_new_standalone(limits);
  vgpu_ledger_standalone_set_cpu_milli(l, 2000); /* two CPUs are the GPU */
  Clock c = {.now = S, .hangup_after = -1, .ledger = l, .unthrottle_after = -1};
  uint64_t cpu = 50 * S; /* what the process used before the tenant came */
  VgpuThrottle *t = vgpu_throttle_new(l);
  vgpu_throttle_set_clock(t, fake_now, fake_sleep, &c);
  vgpu_throttle_set_cpu_clock(t, fake_cpu, &cpu);
  vgpu_ledger_standalone_set_sched(l, 250000, 0);
  /* A frame that took 300 ms of wall time (neighbours rendered beside
   * it) but 200 ms of CPU: 100 ms of the two-CPU GPU.  At a 25% share the
   * next submission waits 400 ms. */
  assert_true(vgpu_throttle_submit(t));
  cpu += 200 * MS;
  vgpu_throttle_charge(t, 300 * MS);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 100 * MS);
  uint64_t t0 = c.now;
  assert_true(vgpu_throttle_submit(t));
  assert_int_equal(c.now - t0, 400 * MS);
  /* CPU time llvmpipe's threads used after the last charge (work that
   * finished while the client was being answered) counts at the next
   * submission, before it may go. */
  cpu += 40 * MS;
  t0 = c.now;
  assert_true(vgpu_throttle_submit(t));
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 120 * MS);
  assert_int_equal(c.now - t0, 80 * MS);
  /* The process CPU clock going backwards charges nothing (no wrap to a
   * huge charge), and counting goes on from there. */
  cpu -= 30 * S;
  vgpu_throttle_charge(t, 5 * MS);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 120 * MS);
  t0 = c.now;
  assert_true(vgpu_throttle_submit(t));
  assert_int_equal(c.now, t0);
  cpu += 20 * MS;
  vgpu_throttle_charge(t, 0);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 130 * MS);
  assert_true(vgpu_throttle_submit(t));
  /* Back to wall time (cpu_milli 0): what the caller measured counts, the
   * CPU clock does not. */
  vgpu_ledger_standalone_set_cpu_milli(l, 0);
  cpu += S;
  vgpu_throttle_charge(t, 7 * MS);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 137 * MS);
  /* And to CPU time again: the second that passed meanwhile is not
   * charged, only what follows. */
  vgpu_ledger_standalone_set_cpu_milli(l, 1000);
  vgpu_throttle_charge(t, 0);
  cpu += 3 * MS;
  vgpu_throttle_charge(t, 0);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_BUSY_NS), 140 * MS);
  vgpu_throttle_free(t);
  vgpu_ledger_free(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bucket_steady), cmocka_unit_test(test_bucket_burst),
      cmocka_unit_test(test_bucket_clock),  cmocka_unit_test(test_bucket_rate_change),
      cmocka_unit_test(test_pacer),         cmocka_unit_test(test_shares),
      cmocka_unit_test(test_throttle),      cmocka_unit_test(test_busy_window),
      cmocka_unit_test(test_cpu_meter),     cmocka_unit_test(test_throttle_cpu),
      cmocka_unit_test(test_capacity),      cmocka_unit_test(test_capacity_starved),
      cmocka_unit_test(test_cpu_delta),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
