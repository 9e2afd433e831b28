/* Ledger: the supervisor's book against real worker processes.  Each
 * "remote" below is a forked process that attaches the fds a worker gets
 * and runs what the test sends it (reserve, release, garbage writes...),
 * while the test plays the supervisor: it answers ledger requests from a
 * poll loop, exactly as vgpud's main loop does.  Limits are never crossed,
 * even by two processes racing; kill -9 at any point leaves the books
 * exact; a worker that writes garbage into its own page, or abuses its
 * socket, changes nothing outside its own clamped usage and cannot make
 * the supervisor wait. */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/ledger.h"

enum {
  OP_RESERVE,
  OP_RELEASE,
  OP_COUNT,
  OP_POKE,        /* raw store into used[kind] (kind VGPU_RES_N: peak_vram,
                     VGPU_RES_N + 1 + k: recent_peak[k]) */
  OP_TRY_WRITES,  /* tries every way to write the grant page or resize a page */
  OP_SEND_RAW,    /* sends `amount` bytes of junk on the request socket */
  OP_FLOOD,       /* sends valid requests without reading answers */
  OP_SPAM,        /* asks as fast as it can, reading the answers */
  OP_STRESS,      /* reserve/release `amount` rounds (0: until killed) */
  OP_ASK_TIMEOUT, /* reserves past the grant with a 200 ms timeout */
  OP_EXIT,
};

typedef struct {
  int32_t op, kind;
  uint64_t amount;
} Cmd;

typedef struct {
  pid_t pid;
  int slot;
  int cmd_w, res_r;
} Remote;

/* Shared with every remote (MAP_SHARED | MAP_ANONYMOUS). */
typedef struct {
  _Atomic int64_t held[VGPU_RES_N_QUOTA]; /* what stress workers hold */
  _Atomic int64_t max_held;
  _Atomic uint64_t rounds;
  _Atomic int violations;
} Shared;

static VgpuBook *book;
static int inst, other;
static Shared *sh;
static const uint64_t lim[VGPU_RES_N_QUOTA] = {
    [VGPU_RES_VRAM] = 1000, [VGPU_RES_OBJECTS] = 3, [VGPU_RES_CONTEXTS] = 0};

static int setup(void **state) {
  book = vgpu_book_new();
  inst = vgpu_book_instance_add(book, "t", lim);
  other = vgpu_book_instance_add(book, "other", lim);
  sh = mmap(NULL, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return inst >= 0 && other >= 0 && sh != MAP_FAILED ? 0 : -1;
}

static int teardown(void **state) {
  vgpu_book_free(book);
  munmap(sh, sizeof(Shared));
  return 0;
}

static VgpuBookUsage usage(int i) {
  VgpuBookUsage u;
  assert_true(vgpu_book_instance_usage(book, (uint32_t)i, &u));
  return u;
}

/* ---- the worker process -------------------------------------------------- */

static int64_t stress(VgpuLedger *l, uint64_t rounds) {
  unsigned seed = (unsigned)getpid();
  uint64_t mine = 0;
  for (uint64_t i = 0; rounds == 0 || i < rounds; i++) {
    uint64_t amount = 1 + (uint64_t)(rand_r(&seed) % 200);
    if (vgpu_ledger_reserve(l, 0, VGPU_RES_VRAM, amount) == 0) {
      int64_t h = atomic_fetch_add(&sh->held[VGPU_RES_VRAM], (int64_t)amount) + (int64_t)amount;
      if (h > (int64_t)lim[VGPU_RES_VRAM])
        atomic_fetch_add(&sh->violations, 1);
      int64_t m = atomic_load(&sh->max_held);
      while (h > m && !atomic_compare_exchange_weak(&sh->max_held, &m, h))
        ;
      mine += amount;
    }
    if (mine && rand_r(&seed) % 3 == 0) {
      uint64_t back = 1 + (uint64_t)rand_r(&seed) % mine;
      atomic_fetch_sub(&sh->held[VGPU_RES_VRAM], (int64_t)back);
      vgpu_ledger_release(l, 0, VGPU_RES_VRAM, back);
      mine -= back;
    }
    atomic_fetch_add(&sh->rounds, 1);
  }
  atomic_fetch_sub(&sh->held[VGPU_RES_VRAM], (int64_t)mine);
  vgpu_ledger_release(l, 0, VGPU_RES_VRAM, mine);
  return 0;
}

/* Returns a bit per way of writing that worked (0: none did). */
static int64_t try_writes(VgpuLedger *l) {
  int64_t worked = 0;
  void *base = (void *)l->grant;
  if (mprotect(base, sizeof(VgpuGrantPage), PROT_READ | PROT_WRITE) == 0)
    worked |= 1;
  void *p = mmap(NULL, sizeof(VgpuGrantPage), PROT_READ | PROT_WRITE, MAP_SHARED, l->grant_fd, 0);
  if (p != MAP_FAILED)
    worked |= 2;
  uint64_t big = UINT64_MAX;
  if (pwrite(l->grant_fd, &big, sizeof(big), offsetof(VgpuGrantPage, grant)) > 0)
    worked |= 4;
  if (ftruncate(l->slot_fd, 0) == 0 || ftruncate(l->grant_fd, 0) == 0)
    worked |= 8;
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", l->grant_fd);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    void *q = mmap(NULL, sizeof(VgpuGrantPage), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (q != MAP_FAILED)
      worked |= 16;
    close(fd);
  }
  return worked;
}

static int64_t flood(VgpuLedger *l) {
  VgpuLedgerAsk a = {.kind = VGPU_RES_VRAM, .want = 1};
  int64_t sent = 0;
  while (sent < 100000) {
    a.seq++;
    if (send(l->sock, &a, sizeof(a), MSG_NOSIGNAL) != (ssize_t)sizeof(a))
      break; /* the supervisor hung up on us */
    sent++;
  }
  return sent;
}

static int64_t spam(VgpuLedger *l) {
  int64_t n = 0;
  while (n < 1000000) {
    if (vgpu_ledger_reserve(l, 0, VGPU_RES_VRAM, lim[VGPU_RES_VRAM] + 1) != -EDQUOT)
      return -1;
    n++;
    int t;
    socklen_t tl = sizeof(t);
    if (getsockopt(l->sock, SOL_SOCKET, SO_ERROR, &t, &tl) < 0 || t)
      break;
  }
  return n;
}

static int64_t ask_timeout(VgpuLedger *l) {
  l->ask_timeout_ms = 200;
  gint64 t0 = g_get_monotonic_time();
  int r = vgpu_ledger_reserve(l, 0, VGPU_RES_VRAM, lim[VGPU_RES_VRAM] + 1);
  gint64 ms = (g_get_monotonic_time() - t0) / 1000;
  return r == -EDQUOT && ms >= 150 && ms < 2000 ? 0 : -1000 - ms;
}

static void remote_main(VgpuBookChildFds *c, int cmd_r, int res_w) {
  VgpuLedger *l = vgpu_ledger_attach(c->slot_fd, c->grant_fd, c->sock, NULL);
  if (!l)
    _exit(3);
  for (;;) {
    Cmd m;
    if (read(cmd_r, &m, sizeof(m)) != (ssize_t)sizeof(m))
      _exit(0);
    int64_t r = 0;
    switch (m.op) {
    case OP_RESERVE:
      r = vgpu_ledger_reserve(l, 0, (VgpuResKind)m.kind, m.amount);
      break;
    case OP_RELEASE:
      vgpu_ledger_release(l, 0, (VgpuResKind)m.kind, m.amount);
      break;
    case OP_COUNT:
      vgpu_ledger_count(l, 0, (VgpuResKind)m.kind, m.amount);
      break;
    case OP_POKE:
      if (m.kind == VGPU_RES_N)
        atomic_store(&l->slot->peak_vram, m.amount);
      else if (m.kind > VGPU_RES_N)
        atomic_store(&l->slot->recent_peak[m.kind - VGPU_RES_N - 1], m.amount);
      else
        atomic_store(&l->slot->used[m.kind], m.amount);
      break;
    case OP_TRY_WRITES:
      r = try_writes(l);
      break;
    case OP_SEND_RAW: {
      char junk[64] = {0x7f};
      r = send(l->sock, junk, m.amount, MSG_NOSIGNAL);
      break;
    }
    case OP_FLOOD:
      r = flood(l);
      break;
    case OP_SPAM:
      r = spam(l);
      break;
    case OP_STRESS:
      r = stress(l, m.amount);
      break;
    case OP_ASK_TIMEOUT:
      r = ask_timeout(l);
      break;
    default:
      _exit(0);
    }
    if (write(res_w, &r, sizeof(r)) != (ssize_t)sizeof(r))
      _exit(4);
  }
}

/* ---- the supervisor's side ----------------------------------------------- */

static Remote remote_new(int in) {
  VgpuBookChildFds c;
  Remote r = {0};
  r.slot = vgpu_book_worker_add(book, (uint32_t)in, 100, 1000, &c);
  assert_true(r.slot >= 0);
  int cmd[2], res[2];
  assert_int_equal(pipe2(cmd, O_CLOEXEC), 0);
  assert_int_equal(pipe2(res, O_CLOEXEC), 0);
  fflush(NULL); /* the child must not repeat buffered output */
  r.pid = fork();
  assert_true(r.pid >= 0);
  if (r.pid == 0) {
    close(cmd[1]);
    close(res[0]);
    remote_main(&c, cmd[0], res[1]);
  }
  close(cmd[0]);
  close(res[1]);
  vgpu_book_worker_started(book, (uint32_t)r.slot, r.pid);
  r.cmd_w = cmd[1];
  r.res_r = res[0];
  return r;
}

/* Answers every live worker's requests until `until` is readable (or, with
 * until < 0, until cond() holds).  Returns the last service error seen on
 * `watch` (0: none). */
static int pump(int until, bool (*cond)(void), const Remote *watch, int timeout_ms) {
  const int err = 0;
  gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  for (;;) {
    if (cond && cond())
      return err;
    assert_true(g_get_monotonic_time() < deadline);
    struct pollfd p[VGPU_LEDGER_MAX_SLOTS + 1];
    int slots[VGPU_LEDGER_MAX_SLOTS + 1];
    int n = 0;
    for (int s = 0; s < VGPU_LEDGER_MAX_SLOTS; s++) {
      int fd = vgpu_book_worker_fd(book, (uint32_t)s);
      if (fd >= 0) {
        p[n] = (struct pollfd){.fd = fd, .events = POLLIN};
        slots[n++] = s;
      }
    }
    if (until >= 0) {
      p[n] = (struct pollfd){.fd = until, .events = POLLIN};
      slots[n++] = -1;
    }
    int r = poll(p, (nfds_t)n, cond ? 5 : 1000);
    assert_true(r >= 0 || errno == EINTR);
    for (int i = 0; i < n; i++) {
      if (!p[i].revents)
        continue;
      if (slots[i] < 0)
        return err;
      const char *why;
      gint64 t0 = g_get_monotonic_time();
      int e = vgpu_book_worker_service(book, (uint32_t)slots[i], &why);
      /* It never waits on the worker (a second is only scheduling noise). */
      assert_true(g_get_monotonic_time() - t0 < G_USEC_PER_SEC);
      if (e && watch && slots[i] == watch->slot)
        return e; /* vgpud would kill it now */
      if (e)
        fail_msg("worker in slot %d: %s (%d)", slots[i], why, e);
    }
  }
}

static int64_t call(const Remote *r, int op, int kind, uint64_t amount) {
  Cmd m = {.op = op, .kind = kind, .amount = amount};
  assert_int_equal(write(r->cmd_w, &m, sizeof(m)), sizeof(m));
  assert_int_equal(pump(r->res_r, NULL, NULL, 10000), 0);
  int64_t v;
  assert_int_equal(read(r->res_r, &v, sizeof(v)), sizeof(v));
  return v;
}

static int reserve(const Remote *r, VgpuResKind k, uint64_t n) {
  return (int)call(r, OP_RESERVE, k, n);
}

static void release(const Remote *r, VgpuResKind k, uint64_t n) {
  call(r, OP_RELEASE, k, n);
}

/* Ends the remote with `sig` (0: asks it to exit) and drops its record. */
static int remote_end(Remote *r, int sig) {
  Cmd m = {.op = OP_EXIT};
  if (sig)
    kill(r->pid, sig);
  else
    assert_int_equal(write(r->cmd_w, &m, sizeof(m)), sizeof(m));
  close(r->cmd_w);
  close(r->res_r);
  int st;
  assert_int_equal(waitpid(r->pid, &st, 0), r->pid);
  vgpu_book_worker_remove(book, (uint32_t)r->slot);
  return st;
}

static VgpuBookWorkerUsage wusage(const Remote *r) {
  VgpuBookWorkerUsage u;
  assert_true(vgpu_book_worker_usage(book, (uint32_t)r->slot, &u));
  return u;
}

static uint64_t granted(int i, VgpuResKind k) {
  uint64_t sum = 0;
  for (int s = 0; s < VGPU_LEDGER_MAX_SLOTS; s++) {
    VgpuBookWorkerUsage u;
    if (vgpu_book_worker_usage(book, (uint32_t)s, &u) && u.instance == (uint32_t)i)
      sum += u.grant[k];
  }
  return sum;
}

/* ---- tests ------------------------------------------------------------- */

static void test_reserve_up_to_limit(void **state) {
  Remote a = remote_new(inst);
  uint64_t refusals = usage(inst).refusals;
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 600), 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 400), 0);
  assert_int_equal(wusage(&a).requests, 0); /* alone: it had it all at once */
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 1), -EDQUOT);
  assert_int_equal(wusage(&a).requests, 1);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 1000);
  assert_int_equal(usage(inst).refusals, refusals + 1);
  /* Overflow is a refusal, not a wrap. */
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, UINT64_MAX), -EDQUOT);
  /* 0 = unlimited */
  assert_int_equal(reserve(&a, VGPU_RES_CONTEXTS, 1000000), 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 0), 0);
  /* Counters cannot be reserved. */
  assert_int_equal(reserve(&a, VGPU_RES_FRAMES, 1), -EINVAL);
  release(&a, VGPU_RES_VRAM, 400);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 600);
  assert_int_equal(wusage(&a).peak_vram, 1000);
  assert_int_equal(usage(inst).clients, 1);
  assert_int_equal(remote_end(&a, 0), 0);
  VgpuBookUsage u = usage(inst);
  assert_int_equal(u.used[VGPU_RES_VRAM], 0);
  assert_int_equal(u.used[VGPU_RES_CONTEXTS], 0);
  assert_int_equal(u.clients, 0);
}

/* One report reads the workers once: between freeze and thaw the totals
 * and the per-worker figures stay what they were, even as workers go on. */
static void test_freeze_gives_one_reading(void **state) {
  Remote a = remote_new(inst);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 100), 0);
  vgpu_book_freeze(book);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 16), 0);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 100);
  assert_int_equal(wusage(&a).used[VGPU_RES_VRAM], 100);
  vgpu_book_thaw(book);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 116);
  assert_int_equal(wusage(&a).used[VGPU_RES_VRAM], 116);
  release(&a, VGPU_RES_VRAM, 116);
  assert_int_equal(remote_end(&a, 0), 0);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
}

static void test_two_workers_share_the_limit(void **state) {
  Remote a = remote_new(inst), b = remote_new(inst);
  assert_int_equal(usage(inst).clients, 2);
  assert_int_equal(reserve(&a, VGPU_RES_OBJECTS, 2), 0);
  /* a's unused allowance is taken back for b, but 2 + 2 > 3 */
  assert_int_equal(reserve(&b, VGPU_RES_OBJECTS, 2), -EDQUOT);
  assert_int_equal(reserve(&b, VGPU_RES_OBJECTS, 1), 0);
  assert_int_equal(reserve(&a, VGPU_RES_OBJECTS, 1), -EDQUOT);
  assert_true(granted(inst, VGPU_RES_OBJECTS) <= 3);
  assert_int_equal(usage(inst).used[VGPU_RES_OBJECTS], 3);
  remote_end(&a, SIGKILL);
  assert_int_equal(usage(inst).used[VGPU_RES_OBJECTS], 1); /* exactly what b holds */
  assert_int_equal(reserve(&b, VGPU_RES_OBJECTS, 2), 0);   /* a's share came back */
  remote_end(&b, 0);
  assert_int_equal(usage(inst).used[VGPU_RES_OBJECTS], 0);
  assert_int_equal(granted(inst, VGPU_RES_OBJECTS), 0);
}

static void ticks(int n) {
  for (int i = 0; i < n; i++)
    vgpu_book_tick(book);
}

static void set_limits(int i, uint64_t vram) {
  uint64_t l[VGPU_RES_N_QUOTA];
  memcpy(l, lim, sizeof(l));
  l[VGPU_RES_VRAM] = vram;
  vgpu_book_instance_set_limits(book, (uint32_t)i, l);
}

static uint64_t vram_grant(const Remote *r) {
  return wusage(r).grant[VGPU_RES_VRAM];
}

/* What a worker keeps of what it held lately while what its instance's
 * workers held exceeds a lowered limit. */
static uint64_t keep(uint64_t held) {
  return held + held / 8;
}

/* A limit lowered below use ends no one: the worker goes on freeing and
 * re-creating up to what it held (and an eighth more), without even
 * asking; growth beyond is refused; what it gives back for good (held for
 * no tick of the last VGPU_LEDGER_HOLD_TICKS) is gone; once what it holds
 * fits the limit, the cushion goes and the limit holds as before. */
static void test_shrink_below_use(void **state) {
  Remote a = remote_new(inst);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 800), 0);
  ticks(1);
  set_limits(inst, 500);
  VgpuBookUsage u = usage(inst);
  assert_int_equal(u.used[VGPU_RES_VRAM], 800); /* nothing taken away */
  assert_int_equal(u.limit[VGPU_RES_VRAM], 500);
  assert_int_equal(u.held[VGPU_RES_VRAM], 800);
  assert_int_equal(u.holders[VGPU_RES_VRAM], 1);
  assert_int_equal(u.held[VGPU_RES_OBJECTS], 0);
  assert_int_equal(vram_grant(&a), keep(800));
  uint64_t asked = wusage(&a).requests;
  for (int i = 0; i < 3 * VGPU_LEDGER_HOLD_TICKS; i++) {
    release(&a, VGPU_RES_VRAM, 300);
    assert_int_equal(reserve(&a, VGPU_RES_VRAM, 300), 0);
    ticks(1);
  }
  assert_int_equal(wusage(&a).requests, asked);
  assert_int_equal(vram_grant(&a), keep(800));
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, keep(800) - 800 + 1), -EDQUOT);
  /* 200 given back: kept for the window, then gone. */
  release(&a, VGPU_RES_VRAM, 200);
  ticks(VGPU_LEDGER_HOLD_TICKS - 1);
  assert_int_equal(vram_grant(&a), keep(800));
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 200), 0);
  release(&a, VGPU_RES_VRAM, 200);
  /* The tick after that peak is the first of the window. */
  ticks(VGPU_LEDGER_HOLD_TICKS);
  assert_int_equal(vram_grant(&a), keep(800));
  ticks(1);
  assert_int_equal(vram_grant(&a), keep(600));
  assert_int_equal(usage(inst).held[VGPU_RES_VRAM], 600);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, keep(600) - 600 + 1), -EDQUOT);
  /* Below the limit again: the instance is no longer over, and the
   * worker may grow up to the limit. */
  release(&a, VGPU_RES_VRAM, 200);
  ticks(VGPU_LEDGER_HOLD_TICKS);
  assert_int_equal(vram_grant(&a), 400);
  assert_int_equal(usage(inst).held[VGPU_RES_VRAM], 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 100), 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 1), -EDQUOT);
  /* Unlimited, then limited again: grants follow. */
  uint64_t none[VGPU_RES_N_QUOTA] = {0};
  vgpu_book_instance_set_limits(book, (uint32_t)inst, none);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 100000), 0);
  vgpu_book_instance_set_limits(book, (uint32_t)inst, lim);
  assert_int_equal(vram_grant(&a), keep(100500)); /* what it holds */
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 100500);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, keep(100500) - 100500 + 1), -EDQUOT);
  release(&a, VGPU_RES_VRAM, 100000);
  ticks(VGPU_LEDGER_HOLD_TICKS + 1);
  assert_int_equal(vram_grant(&a), 500);
  assert_int_equal(usage(inst).held[VGPU_RES_VRAM], 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 500), 0); /* asks: up to the limit */
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 1), -EDQUOT);
  remote_end(&a, 0);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
}

/* Two workers over a lowered limit keep what they hold; a newcomer gets
 * nothing until they hold less than the limit, and a worker that writes
 * anything into its page cannot grow past what it was granted. */
static void test_shrink_below_use_shared(void **state) {
  Remote a = remote_new(inst), b = remote_new(inst);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 600), 0);
  assert_int_equal(reserve(&b, VGPU_RES_VRAM, 300), 0); /* a's grant falls to 600 */
  uint64_t ga = vram_grant(&a), gb = vram_grant(&b);
  assert_int_equal(ga, 600);
  assert_true(gb >= 300 && ga + gb <= 1000);
  ticks(1);
  set_limits(inst, 500);
  assert_int_equal(vram_grant(&a), ga);
  assert_int_equal(vram_grant(&b), MIN(gb, keep(300)));
  gb = vram_grant(&b);
  VgpuBookUsage u = usage(inst);
  assert_int_equal(u.held[VGPU_RES_VRAM], 900);
  assert_int_equal(u.holders[VGPU_RES_VRAM], 2);
  Remote c = remote_new(inst);
  assert_int_equal(vram_grant(&c), 0);
  assert_int_equal(reserve(&c, VGPU_RES_VRAM, 1), -EDQUOT);
  VgpuBookRefusal r;
  assert_true(vgpu_book_worker_last_refusal(book, (uint32_t)c.slot, &r));
  assert_int_equal(r.limit, 500);
  assert_int_equal(r.others, ga + gb);
  /* b churns, then gives everything back; a cannot grow meanwhile. */
  release(&b, VGPU_RES_VRAM, 300);
  assert_int_equal(reserve(&b, VGPU_RES_VRAM, 300), 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, ga - 600 + 1), -EDQUOT);
  release(&b, VGPU_RES_VRAM, 300);
  ticks(VGPU_LEDGER_HOLD_TICKS + 1);
  assert_int_equal(vram_grant(&b), 0);
  assert_int_equal(vram_grant(&a), ga); /* more than 500: still over */
  assert_int_equal(reserve(&c, VGPU_RES_VRAM, 1), -EDQUOT);
  /* a lies about its usage and recent peak: it keeps no more than its
   * grant, and its grant does not grow. */
  const uint64_t garbage[] = {UINT64_MAX, (uint64_t)-5, 1ull << 63, 123456789};
  for (size_t g = 0; g < G_N_ELEMENTS(garbage); g++) {
    call(&a, OP_POKE, VGPU_RES_VRAM, garbage[g]);
    call(&a, OP_POKE, VGPU_RES_N + 1 + VGPU_RES_VRAM, garbage[g]);
    ticks(VGPU_LEDGER_HOLD_TICKS + 1);
    assert_true(vram_grant(&a) <= ga);
    assert_true(usage(inst).used[VGPU_RES_VRAM] <= ga);
    assert_true(granted(inst, VGPU_RES_VRAM) <= ga);
  }
  call(&a, OP_POKE, VGPU_RES_VRAM, 600);
  call(&a, OP_POKE, VGPU_RES_N + 1 + VGPU_RES_VRAM, 0);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, ga - 600 + 1), -EDQUOT);
  /* a gives back 200 for good: the instance fits, c gets the rest. */
  release(&a, VGPU_RES_VRAM, 200);
  ticks(VGPU_LEDGER_HOLD_TICKS);
  assert_int_equal(vram_grant(&a), 400);
  assert_int_equal(usage(inst).held[VGPU_RES_VRAM], 0);
  assert_int_equal(reserve(&c, VGPU_RES_VRAM, 100), 0);
  assert_int_equal(reserve(&c, VGPU_RES_VRAM, 1), -EDQUOT);
  remote_end(&a, 0);
  remote_end(&b, SIGKILL);
  remote_end(&c, 0);
  vgpu_book_instance_set_limits(book, (uint32_t)inst, lim);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
  assert_int_equal(granted(inst, VGPU_RES_VRAM), 0);
}

static void test_counters_are_not_limited(void **state) {
  uint64_t before = usage(inst).used[VGPU_RES_FRAMES];
  Remote a = remote_new(inst);
  call(&a, OP_COUNT, VGPU_RES_FRAMES, 5);
  call(&a, OP_COUNT, VGPU_RES_FRAMES, 7);
  assert_int_equal(usage(inst).used[VGPU_RES_FRAMES], before + 12);
  /* Counters never go back, whatever the page says. */
  call(&a, OP_POKE, VGPU_RES_FRAMES, 1);
  assert_int_equal(usage(inst).used[VGPU_RES_FRAMES], before + 12);
  remote_end(&a, 0);
  assert_int_equal(usage(inst).used[VGPU_RES_FRAMES], before + 12); /* history */
}

/* Gives a racing reservation time to land between the supervisor's read of
 * a worker's usage and its write of the smaller grant. */
static void slow_shrink(void) {
  g_usleep(50);
}

static bool both_done_flag;
static const Remote *race[2];
static int race_left;
static bool race_done(void) {
  for (int i = 0; i < 2; i++) {
    struct pollfd p = {.fd = race[i]->res_r, .events = POLLIN};
    if (race[i]->res_r >= 0 && poll(&p, 1, 0) == 1) {
      int64_t v;
      assert_int_equal(read(race[i]->res_r, &v, sizeof(v)), sizeof(v));
      assert_int_equal(v, 0);
      race_left--;
    }
  }
  return race_left == 0 || both_done_flag;
}

/* Two processes reserving and releasing against one limit at once, each
 * asking for more and having the other's grant shrunk under it: what they
 * hold together never exceeds the limit, and the totals end at zero. */
static void test_concurrent_race(void **state) {
  memset(sh, 0, sizeof(*sh));
  Remote a = remote_new(inst), b = remote_new(inst);
  race[0] = &a;
  race[1] = &b;
  race_left = 2;
  Cmd m = {.op = OP_STRESS, .amount = 20000};
  assert_int_equal(write(a.cmd_w, &m, sizeof(m)), sizeof(m));
  assert_int_equal(write(b.cmd_w, &m, sizeof(m)), sizeof(m));
  vgpu_book_set_request_limit(book, 0); /* as fast as they can */
  vgpu_book_set_shrink_hook(book, slow_shrink);
  pump(-1, race_done, NULL, 120000);
  vgpu_book_set_shrink_hook(book, NULL);
  vgpu_book_set_request_limit(book, VGPU_LEDGER_MAX_REQUESTS_PER_S);
  /* They did contend: each had to ask, and have its grant shrunk. */
  assert_true(wusage(&a).requests > 10 && wusage(&b).requests > 10);
  assert_int_equal(atomic_load(&sh->violations), 0);
  assert_true(atomic_load(&sh->max_held) <= (int64_t)lim[VGPU_RES_VRAM]);
  /* The race reached the limit: the test did contend. */
  assert_true(atomic_load(&sh->max_held) > (int64_t)lim[VGPU_RES_VRAM] / 2);
  assert_true(granted(inst, VGPU_RES_VRAM) <= lim[VGPU_RES_VRAM]);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
  assert_true(usage(inst).refusals > 0);
  remote_end(&a, 0);
  remote_end(&b, 0);
}

static uint64_t stop_at;
static bool rounds_reached(void) {
  return atomic_load(&sh->rounds) >= stop_at;
}

/* kill -9 at arbitrary points of a reserve/release loop, while a second
 * worker races with it: the dead one's share always comes back whole. */
static void test_kill_mid_reservation(void **state) {
  memset(sh, 0, sizeof(*sh));
  Remote b = remote_new(inst);
  for (int round = 0; round < 8; round++) {
    Remote a = remote_new(inst);
    Cmd m = {.op = OP_STRESS, .amount = 0};
    assert_int_equal(write(a.cmd_w, &m, sizeof(m)), sizeof(m));
    stop_at = atomic_load(&sh->rounds) + 500 + (uint64_t)round * 397;
    pump(-1, rounds_reached, NULL, 60000);
    int st = remote_end(&a, SIGKILL);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
    assert_int_equal(granted(inst, VGPU_RES_VRAM), wusage(&b).grant[VGPU_RES_VRAM]);
  }
  /* The survivor can have the whole limit. */
  assert_int_equal(reserve(&b, VGPU_RES_VRAM, lim[VGPU_RES_VRAM]), 0);
  release(&b, VGPU_RES_VRAM, lim[VGPU_RES_VRAM]);
  remote_end(&b, 0);
  assert_int_equal(granted(inst, VGPU_RES_VRAM), 0);
}

/* A worker that writes what it likes into its own page: nothing changes for
 * another instance, its own usage is clamped to its grant, and it cannot
 * write its grant page, resize its pages or reach another worker's. */
static void test_hostile_worker(void **state) {
  Remote victim = remote_new(other);
  assert_int_equal(reserve(&victim, VGPU_RES_VRAM, 300), 0);
  VgpuBookUsage before = usage(other);
  Remote h = remote_new(inst);
  assert_int_equal(reserve(&h, VGPU_RES_VRAM, 200), 0);
  uint64_t grant = wusage(&h).grant[VGPU_RES_VRAM];
  assert_true(grant >= 200 && grant <= lim[VGPU_RES_VRAM]);
  assert_int_equal(call(&h, OP_TRY_WRITES, 0, 0), 0);
  const uint64_t garbage[] = {UINT64_MAX, (uint64_t)-5, 1ull << 63, 0, 123456789};
  for (size_t g = 0; g < G_N_ELEMENTS(garbage); g++) {
    for (int k = 0; k <= VGPU_RES_N + VGPU_RES_N_QUOTA; k++)
      call(&h, OP_POKE, k, garbage[g]);
    vgpu_book_tick(book);
    VgpuBookUsage u = usage(inst);
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
      uint64_t cap = wusage(&h).grant[k];
      assert_true(u.used[k] <= cap);
      assert_true(wusage(&h).used[k] <= cap);
    }
    assert_true(wusage(&h).peak_vram <= lim[VGPU_RES_VRAM]);
    /* Counters at most what a session could count in its lifetime. */
    assert_true(wusage(&h).used[VGPU_RES_FRAMES] <= 100000 * 60);
    assert_true(u.used[VGPU_RES_BYTES_IN] < (uint64_t)INT64_MAX / 1000);
    assert_memory_equal(usage(other).limit, before.limit, sizeof(before.limit));
    assert_memory_equal(usage(other).used, before.used, sizeof(before.used));
    assert_memory_equal(usage(inst).limit, lim, sizeof(lim));
  }
  /* It still cannot get past the limit by asking. */
  call(&h, OP_POKE, VGPU_RES_VRAM, 0);
  assert_int_equal(reserve(&h, VGPU_RES_VRAM, lim[VGPU_RES_VRAM] + 1), -EDQUOT);
  assert_true(granted(inst, VGPU_RES_VRAM) <= lim[VGPU_RES_VRAM]);
  /* Junk on its socket: it is reported, to be killed. */
  Cmd m = {.op = OP_SEND_RAW, .amount = 3};
  assert_int_equal(write(h.cmd_w, &m, sizeof(m)), sizeof(m));
  assert_int_equal(pump(-1, NULL, &h, 10000), -EPROTO);
  remote_end(&h, SIGKILL);
  assert_memory_equal(usage(other).used, before.used, sizeof(before.used));
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
  assert_int_equal(granted(inst, VGPU_RES_VRAM), 0);
  remote_end(&victim, 0);
}

/* A worker that sends requests and never reads the answers: the
 * supervisor's answer fails at once (non-blocking) and the worker is
 * reported; it never waits for it. */
static void test_worker_that_does_not_read(void **state) {
  Remote h = remote_new(inst);
  Cmd m = {.op = OP_FLOOD};
  assert_int_equal(write(h.cmd_w, &m, sizeof(m)), sizeof(m));
  int e = pump(-1, NULL, &h, 10000);
  assert_true(e == -EAGAIN || e == -EBUSY);
  remote_end(&h, SIGKILL);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 0);
}

/* A worker that asks without pause (and reads the answers) past the
 * book's rate: reported, to be killed. */
static void test_worker_that_floods(void **state) {
  vgpu_book_set_request_limit(book, 200);
  Remote h = remote_new(inst);
  Cmd m = {.op = OP_SPAM};
  assert_int_equal(write(h.cmd_w, &m, sizeof(m)), sizeof(m));
  assert_int_equal(pump(-1, NULL, &h, 10000), -EBUSY);
  vgpu_book_set_request_limit(book, VGPU_LEDGER_MAX_REQUESTS_PER_S);
  remote_end(&h, SIGKILL);
}

/* A stopped worker holds nothing the supervisor needs: another worker's
 * request (which shrinks the stopped one's grant), a limit change and the
 * usage read all complete while it is frozen. */
static void test_stopped_worker_blocks_nothing(void **state) {
  Remote a = remote_new(inst), b = remote_new(inst);
  assert_int_equal(reserve(&a, VGPU_RES_VRAM, 100), 0);
  kill(a.pid, SIGSTOP);
  assert_int_equal(reserve(&b, VGPU_RES_VRAM, 900), 0);
  assert_int_equal(wusage(&a).grant[VGPU_RES_VRAM], 100);
  vgpu_book_instance_set_limits(book, (uint32_t)inst, lim);
  assert_int_equal(usage(inst).used[VGPU_RES_VRAM], 1000);
  remote_end(&a, SIGKILL);
  remote_end(&b, 0);
}

/* A supervisor that never answers: the worker's reservation is refused
 * after its bounded wait. */
static void test_unanswered_request_times_out(void **state) {
  Remote a = remote_new(inst);
  Cmd m = {.op = OP_ASK_TIMEOUT};
  assert_int_equal(write(a.cmd_w, &m, sizeof(m)), sizeof(m));
  int64_t v;
  assert_int_equal(read(a.res_r, &v, sizeof(v)), sizeof(v)); /* no pumping */
  assert_int_equal(v, 0);
  remote_end(&a, 0);
}

static void test_attach_checks(void **state) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  GError *e = NULL;
  assert_null(vgpu_ledger_attach(fd[0], fd[1], fd[0], &e));
  assert_non_null(e);
  g_error_free(e);
  close(fd[0]);
  close(fd[1]);
  assert_string_equal(vgpu_res_kind_name(VGPU_RES_VRAM), "vram");
  /* Records the book does not have are refused, not dereferenced. */
  VgpuBookUsage u;
  assert_false(vgpu_book_instance_usage(book, VGPU_LEDGER_MAX_INSTANCES + 7, &u));
  VgpuBookWorkerUsage wu;
  assert_false(vgpu_book_worker_usage(book, 1u << 30, &wu));
  assert_int_equal(vgpu_book_worker_remove(book, 1u << 30), 0);
  VgpuBookChildFds c;
  assert_int_equal(vgpu_book_worker_add(book, 1u << 30, 1, 1, &c), -EINVAL);
}

static void test_standalone(void **state) {
  VgpuLedger *l = vgpu_ledger_new_standalone(lim);
  assert_int_equal(vgpu_ledger_reserve(l, 0, VGPU_RES_VRAM, 1000), 0);
  assert_int_equal(vgpu_ledger_reserve(l, 0, VGPU_RES_VRAM, 1), -EDQUOT);
  uint64_t limit, used;
  vgpu_ledger_describe(l, VGPU_RES_VRAM, &limit, &used);
  assert_int_equal(limit, 1000);
  assert_int_equal(used, 1000);
  vgpu_ledger_release(l, 0, VGPU_RES_VRAM, 1000);
  assert_int_equal(vgpu_ledger_used(l, VGPU_RES_VRAM), 0);
  vgpu_ledger_free(l);
}

/* A memfd of @size bytes, sealed with @seals (0: none). */
static int shot_memfd(size_t size, int seals) {
  int fd = memfd_create("shot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  if (seals)
    assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
  return fd;
}

/* What a worker's screenshot reply must be before vgpud passes it on. */
static void test_shot_check(void **state) {
  (void)state;
  const int all = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  const char *why = NULL;
  VgpuShotReply ok = {.width = 64, .height = 48, .stride = 256, .format = 2};
  int good = shot_memfd(256 * 48, all);
  assert_true(vgpu_shot_check(&ok, good, &why));
  /* each field out of its bound */
  VgpuShotReply r = ok;
  r.width = 0;
  assert_false(vgpu_shot_check(&r, good, &why));
  r = ok;
  r.height = VGPU_SHOT_MAX_DIM + 1;
  assert_false(vgpu_shot_check(&r, good, &why));
  r = ok;
  r.stride = 260; /* padded rows are not accepted */
  assert_false(vgpu_shot_check(&r, good, &why));
  r = ok;
  r.width = 0x40000000u; /* width * 4 wraps 32 bits */
  r.stride = 0;
  assert_false(vgpu_shot_check(&r, good, &why));
  r = ok;
  r.format = 999;
  assert_false(vgpu_shot_check(&r, good, &why));
  assert_non_null(strstr(why, "format"));
  assert_false(vgpu_shot_check(&ok, -1, &why));
  /* the fd: size, seals, kind */
  int small = shot_memfd(256 * 48 - 4, all);
  assert_false(vgpu_shot_check(&ok, small, &why));
  assert_non_null(strstr(why, "size"));
  int big = shot_memfd(256 * 49, all);
  assert_false(vgpu_shot_check(&ok, big, &why));
  int unsealed = shot_memfd(256 * 48, 0);
  assert_false(vgpu_shot_check(&ok, unsealed, &why));
  assert_non_null(strstr(why, "sealed"));
  int writable = shot_memfd(256 * 48, F_SEAL_SHRINK | F_SEAL_GROW);
  assert_false(vgpu_shot_check(&ok, writable, &why));
  int p[2];
  assert_int_equal(pipe2(p, O_CLOEXEC), 0);
  assert_false(vgpu_shot_check(&ok, p[0], &why));
  /* the largest image passes the arithmetic (its fd then decides) */
  r = ok;
  r.width = r.height = VGPU_SHOT_MAX_DIM;
  r.stride = VGPU_SHOT_MAX_DIM * 4;
  assert_false(vgpu_shot_check(&r, good, &why));
  assert_non_null(strstr(why, "size"));
  int fds[] = {good, small, big, unsealed, writable, p[0], p[1]};
  for (size_t i = 0; i < G_N_ELEMENTS(fds); i++)
    close(fds[i]);
}

static void test_instance_table_full(void **state) {
  int n = 0;
  for (int i = 0; i < VGPU_LEDGER_MAX_INSTANCES + 1; i++)
    if (vgpu_book_instance_add(book, "x", lim) >= 0)
      n++;
  assert_int_equal(n, VGPU_LEDGER_MAX_INSTANCES - 2); /* two are ours */
  assert_int_equal(vgpu_book_instance_add(book, "y", lim), -ENOSPC);
  for (int i = 0; i < VGPU_LEDGER_MAX_INSTANCES; i++)
    if (i != inst && i != other)
      vgpu_book_instance_remove(book, (uint32_t)i);
  assert_true(vgpu_book_instance_add(book, "z", lim) >= 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reserve_up_to_limit),
      cmocka_unit_test(test_shot_check),
      cmocka_unit_test(test_freeze_gives_one_reading),
      cmocka_unit_test(test_two_workers_share_the_limit),
      cmocka_unit_test(test_shrink_below_use),
      cmocka_unit_test(test_shrink_below_use_shared),
      cmocka_unit_test(test_counters_are_not_limited),
      cmocka_unit_test(test_concurrent_race),
      cmocka_unit_test(test_kill_mid_reservation),
      cmocka_unit_test(test_hostile_worker),
      cmocka_unit_test(test_worker_that_does_not_read),
      cmocka_unit_test(test_worker_that_floods),
      cmocka_unit_test(test_stopped_worker_blocks_nothing),
      cmocka_unit_test(test_unanswered_request_times_out),
      cmocka_unit_test(test_attach_checks),
      cmocka_unit_test(test_standalone),
      cmocka_unit_test(test_instance_table_full),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
