/* GPU-time scheduling, pure logic: no I/O, no main loop, the clock is
 * passed in (nanoseconds of CLOCK_MONOTONIC in the callers).
 *
 *  - VgpuBucket: one worker's token bucket.  Its rate is a share of one
 *    GPU's wall time in parts per million (0: unthrottled); tokens are
 *    nanoseconds of GPU time, refilled from elapsed time at that rate and
 *    capped at VGPU_SCHED_BURST_WINDOW_NS worth of it; measured GPU time
 *    is charged after each submission, and the next submission waits until
 *    the balance is back to zero.  Debt is bounded too (at
 *    VGPU_SCHED_DEBT_WINDOW_NS worth), so no single wait is longer than
 *    that window whatever one submission cost.
 *  - VgpuCpuMeter: what a worker's process CPU time is worth in GPU time
 *    where the GPU is llvmpipe on the host's CPUs (see below).
 *  - VgpuPacer: the frame-rate cap, evenly spaced frames at 1/cap.
 *  - vgpu_sched_shares(): what the supervisor writes into each worker's
 *    grant page, from each instance's gpu-share mode, weight and number of
 *    active tenants. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/profile.h"

#define VGPU_SCHED_PPM 1000000u
/* Burst: a worker that was idle may spend this much wall time's worth of
 * its share at once (at a share of 50%, 50 ms of GPU time). */
#define VGPU_SCHED_BURST_WINDOW_NS 100000000ull
/* Debt: at most this much wall time's worth of its share is owed, so one
 * wait lasts at most this long (plus rounding). */
#define VGPU_SCHED_DEBT_WINDOW_NS 2000000000ull

typedef struct VgpuBucket {
  uint32_t rate_ppm; /* 0: unthrottled (a share of the whole GPU is too) */
  int64_t tokens;    /* ns of GPU time; negative: owed */
  uint64_t last;     /* clock of the last refill */
} VgpuBucket;

/* Starts empty (no windfall): the first submission runs, later ones wait
 * for what it cost. */
void vgpu_bucket_init(VgpuBucket *b, uint32_t rate_ppm, uint64_t now);
/* Refills at the old rate up to `now`, then bounds the balance by the new
 * rate's burst and debt.  From unthrottled, the balance starts at zero.
 * A rate of VGPU_SCHED_PPM or more (the whole GPU) is unthrottled, as in
 * vgpu_bucket_init(). */
void vgpu_bucket_set_rate(VgpuBucket *b, uint32_t rate_ppm, uint64_t now);
/* How long the next submission must wait (0: now).  Refills first.  A
 * clock that went backwards refills nothing; a jump forward refills at
 * most the burst. */
uint64_t vgpu_bucket_delay(VgpuBucket *b, uint64_t now);
/* Subtracts measured GPU time (bounded below by the debt window). */
void vgpu_bucket_charge(VgpuBucket *b, uint64_t busy_ns, uint64_t now);
/* The burst and debt bounds at a rate (ns of GPU time). */
int64_t vgpu_bucket_burst(uint32_t rate_ppm);
int64_t vgpu_bucket_max_debt(uint32_t rate_ppm);

/* On llvmpipe a worker's GPU work runs on its own threads, on the host's
 * CPUs, beside every other worker's.  The wall time from submission to
 * fence then grows with what the neighbours render at the same moment,
 * while the CPU time the work takes does not: llvmpipe workers are charged
 * their process CPU time instead.  The whole "GPU" is then the CPU
 * capacity vgpud may use, cpu_milli thousandths of a CPU (2000: two CPUs),
 * so that 1 ms of CPU time on a two-CPU host is 0.5 ms of GPU time, and a
 * share of 50% is one CPU's worth. */
typedef struct VgpuCpuMeter {
  bool started;
  uint64_t last; /* the process CPU clock at the last reading, ns */
  uint64_t rem;  /* what the last division left, carried to the next */
} VgpuCpuMeter;

/* The GPU time (ns) that the CPU time used since the last reading is
 * worth: (cpu_now - last) x 1000 / cpu_milli, the remainder carried.  The
 * first reading, a clock that went backwards and cpu_milli 0 charge
 * nothing and start again from cpu_now. */
uint64_t vgpu_cpu_meter_read(VgpuCpuMeter *m, uint64_t cpu_now, uint32_t cpu_milli);

/* ---- measured CPU capacity (llvmpipe) ---------------------------------------
 * What a share of an llvmpipe "GPU" is a share of: the CPU time that was
 * available to GPU work, measured by vgpud on its scheduler tick as the
 * CPU time its workers used plus the idle time of the CPUs it may use,
 * over the tick's window.  CPU time that other processes (the tenants'
 * clients, an X server, anything else on the host) take is then nobody's
 * share: every share shrinks in proportion and the weights' ratio holds.
 * Idle CPU counts, so a fixed share stays its weight of the whole capacity
 * when the others are idle (not work-conserving).  The figure is smoothed
 * (an exponential average with time constant VGPU_CAPACITY_TAU_NS) and
 * kept within [floor, nominal], nominal being the capacity the CPUs and
 * cgroup ceilings allow (daemon/cpu_capacity.h). */
#define VGPU_CAPACITY_TAU_NS 1000000000ull
/* The figure never goes below this part of the nominal capacity (in
 * thousandths): CPU time at most 20x dearer than on an idle host.  A low
 * figure is what a host that others keep busy gives (the workers' CPU
 * time is all there is), and any wait stays bounded by the debt window. */
#define VGPU_CAPACITY_FLOOR_PERMILLE 50u

typedef struct VgpuCapacity {
  uint32_t nominal_milli; /* the ceiling, thousandths of a CPU */
  uint32_t floor_milli;   /* the floor */
  bool started;
  uint64_t last_wall; /* the clock at the last tick, ns */
  uint64_t last_idle; /* the idle counter at the last tick, ns */
  double milli;       /* the smoothed figure */
} VgpuCapacity;

/* Starts at the nominal capacity; the floor is VGPU_CAPACITY_FLOOR_PERMILLE
 * of it (at least 1). */
void vgpu_capacity_init(VgpuCapacity *c, uint32_t nominal_milli);
/* One tick: wall_ns the clock, idle_ns the idle time of the CPUs summed
 * (a counter), workers_ns the CPU time the workers used since the last
 * tick (the caller's sum of vgpu_cpu_delta()), starved whether an
 * instance's workers waited for a CPU while under their share in the
 * window (vgpu_capacity_starved(): then no tenant could use the idle time,
 * which does not count), and active_ppm the part of
 * the capacity that the shares of the instances whose workers used CPU
 * time in the window hold (fixed and equal shares; 0 or more than
 * VGPU_SCHED_PPM: all of it).  The window's figure is (workers + idle) /
 * wall, divided by that part, at most nominal: a fixed share held for an
 * idle instance is capacity too, which idle CPU shows on a quiet host but
 * not where other processes take every idle moment (without it the figure
 * would shrink to what the active shares used, again and again, down to
 * the floor).  It moves the average by
 * window / (tau + window).  The first tick, a clock that did not move
 * forward and a window longer than 10 tau only start the window again
 * (the figure stays); an idle counter that went back counts no idle time
 * for that window.  Returns the current figure, thousandths of a CPU. */
uint32_t vgpu_capacity_tick(VgpuCapacity *c, uint64_t wall_ns, uint64_t idle_ns,
                            uint64_t workers_ns, uint32_t active_ppm, bool starved);
/* Whether an instance was starved in a window of window_ns (vgpud checks
 * once a second): its workers
 * used used_ns of CPU time, less than VGPU_CAPACITY_STARVED_PERMILLE of
 * what share_ppm of cap_milli was worth, while their threads waited
 * delay_ns for a CPU (the kernel's run delay, /proc/PID/task/N/schedstat),
 * at least VGPU_CAPACITY_WAIT_PERMILLE of the window.  Idle CPU time is
 * then fragments between other workers' runs that the instance's
 * threads, serialised by their own rendering, could not take: counting it
 * would promise shares the CPUs cannot give, and the instances that can
 * take their share would take the starved one's part of it.  Without the
 * wait (a tenant that renders little) the instance is merely light. */
bool vgpu_capacity_starved(uint64_t used_ns, uint64_t delay_ns, uint64_t window_ns,
                           uint32_t share_ppm, uint32_t cap_milli);
#define VGPU_CAPACITY_STARVED_PERMILLE 990u
#define VGPU_CAPACITY_WAIT_PERMILLE 200u
/* The current figure, rounded, within [floor, nominal]. */
uint32_t vgpu_capacity_milli(const VgpuCapacity *c);
/* How much a CPU-time counter grew since *last (then *last = now); one
 * that went back (a counter that started again) grew by 0. */
uint64_t vgpu_cpu_delta(uint64_t *last, uint64_t now);

typedef struct VgpuPacer {
  uint32_t cap; /* frames per second the schedule was built for */
  bool started;
  uint64_t next; /* when the next frame is due */
} VgpuPacer;

/* How late a frame may be before the pacer gives up catching up and
 * starts its schedule again from now. */
#define VGPU_PACER_CATCH_UP_NS 500000000ull

/* Called at each frame boundary: how long to wait before the frame is
 * let through, so that frames come every 1/cap seconds.  cap 0: no cap
 * (always 0).  A frame that is late is not delayed, and the frames after
 * it are let through early until the schedule is met again (the average
 * holds through a hiccup); one more than VGPU_PACER_CATCH_UP_NS late
 * resynchronises the schedule to now, so a slow tenant never builds up a
 * burst it could spend later.  A wait never exceeds one period. */
uint64_t vgpu_pacer_frame(VgpuPacer *p, uint32_t cap, uint64_t now);

typedef struct VgpuShareIn {
  VgpuShareMode mode;
  uint32_t weight;         /* fixed: 1..10000 (0 is taken as 1) */
  uint32_t active_tenants; /* tenants that did GPU work lately */
} VgpuShareIn;

typedef struct VgpuShareOut {
  /* The instance's share of one GPU's wall time (0: best-effort, never
   * throttled).  For an equal instance without active tenants: what it
   * would get if it became active. */
  uint32_t instance_ppm;
  /* Each active tenant's share (instance share / active tenants); an idle
   * tenant gets what it would if it became active (instance share /
   * (active + 1)), so a tenant that starts is paced at once and the next
   * recomputation narrows it.  Never 0 for a throttled instance. */
  uint32_t tenant_ppm;
  uint32_t idle_tenant_ppm;
} VgpuShareOut;

/* best-effort: 0 (not counted).  fixed: weight / sum of the weights of
 * every non-best-effort instance, held whether or not others are active.
 * equal: what fixed instances do not reserve, split equally among the
 * equal instances that have active tenants.  Total capacity is one GPU's
 * wall time (VGPU_SCHED_PPM). */
void vgpu_sched_shares(const VgpuShareIn *in, size_t n, VgpuShareOut *out);

/* ---- utilisation ------------------------------------------------------------
 * GPU busy % of one tenant over its last second or so: vgpud samples the
 * worker's busy_ns counter (as the book reads it: clamped, monotonic) on
 * its scheduler tick, and a view takes the change since the newest sample
 * at least VGPU_BUSY_WINDOW_US old (or since the oldest one, for a
 * younger tenant) against the wall time between them. */
#define VGPU_BUSY_WINDOW_US 1000000
/* Samples closer together than this are not kept (vgpud also updates its
 * shares on events between ticks). */
#define VGPU_BUSY_MIN_STEP_US 150000
#define VGPU_BUSY_SAMPLES 8

typedef struct VgpuBusyWindow {
  int64_t t_us[VGPU_BUSY_SAMPLES]; /* monotonic */
  uint64_t busy_ns[VGPU_BUSY_SAMPLES];
  uint32_t head; /* index of the newest sample */
  uint32_t n;    /* samples kept, 1..VGPU_BUSY_SAMPLES */
} VgpuBusyWindow;

/* A tenant that starts at now_us, its counter at busy_ns (0 for a new
 * worker). */
void vgpu_busy_window_init(VgpuBusyWindow *w, int64_t now_us, uint64_t busy_ns);
/* Keeps a sample unless the newest is less than VGPU_BUSY_MIN_STEP_US
 * old; a clock or counter that goes back restarts the window there. */
void vgpu_busy_window_push(VgpuBusyWindow *w, int64_t now_us, uint64_t busy_ns);
/* Busy time per wall time over the window ending at (now_us, busy_ns), in
 * tenths of a percent of one GPU, 0..1000: one worker's busy time is wall
 * time of its own submissions and waits, so more than all of it is a
 * misstatement and is shown as 100%.  0 when no time has passed. */
uint32_t vgpu_busy_window_permille(const VgpuBusyWindow *w, int64_t now_us, uint64_t busy_ns);
