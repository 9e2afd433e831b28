/* Fuzz target: the supervisor's book against workers that write anything
 * into their slot pages and send anything on their request sockets, mixed
 * with honest workers that reserve and release, workers joining and
 * leaving, limits changing and the supervisor's ticks.  Each input is a
 * list of 16-byte operations.  After every operation the book must hold:
 * a worker's usage as shown never exceeds its grant, the grant page says
 * what the book granted, an instance's usage never exceeds its workers'
 * grants, and, until a limit is lowered below use, the grants of an
 * instance add up to no more than its limit.  While an instance's grants
 * add up to more than its limit, no grant grows (a joining worker gets
 * none), whatever the workers write or ask.  An honest worker's grant never
 * falls below what it held over the last VGPU_LEDGER_HOLD_TICKS ticks (so
 * re-allocating up to that never fails), and on a tick of an instance over
 * its limit it falls to exactly that (and an eighth more while that does
 * not fit the limit). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_W 6

typedef struct {
  int slot; /* -1: none */
  VgpuBookChildFds fds;
  VgpuSlotPage *page;
  const VgpuGrantPage *grant;
  int inst;
  /* A model of what an honest worker held: per quota kind, its peak
   * usage in each of the last ticks and since the last one.  Only while
   * the worker never wrote its page behind the ledger's back. */
  bool honest;
  uint64_t used[VGPU_RES_N_QUOTA];
  uint64_t peak_now[VGPU_RES_N_QUOTA];
  uint64_t win[VGPU_RES_N_QUOTA][VGPU_LEDGER_HOLD_TICKS];
} W;

typedef struct {
  uint8_t op, a, b, c;
  uint32_t x;
  uint64_t v;
} Op;

static VgpuBook *book;
static int inst[2];
static bool lowered[2];
static W w[MAX_W];

static void drop(W *x) {
  if (x->slot < 0)
    return;
  vgpu_book_worker_remove(book, (uint32_t)x->slot);
  munmap(x->page, sizeof(VgpuSlotPage));
  munmap((void *)x->grant, sizeof(VgpuGrantPage));
  close(x->fds.slot_fd);
  close(x->fds.grant_fd);
  close(x->fds.sock);
  x->slot = -1;
}

static void add(W *x, int i) {
  drop(x);
  VgpuBookChildFds c;
  int slot = vgpu_book_worker_add(book, (uint32_t)inst[i], 1, 1, &c);
  if (slot < 0)
    abort();
  /* Our own copies, as the worker's would be: taken before the book
   * closes its copies of the child's fds. */
  x->fds.slot_fd = dup(c.slot_fd);
  x->fds.grant_fd = dup(c.grant_fd);
  x->fds.sock = dup(c.sock);
  vgpu_book_worker_started(book, (uint32_t)slot, 1);
  x->page = mmap(NULL, sizeof(VgpuSlotPage), PROT_READ | PROT_WRITE, MAP_SHARED, x->fds.slot_fd, 0);
  x->grant = mmap(NULL, sizeof(VgpuGrantPage), PROT_READ, MAP_SHARED, x->fds.grant_fd, 0);
  if (x->page == MAP_FAILED || x->grant == MAP_FAILED)
    abort();
  /* The seal holds: no writable shared mapping of the grant page. */
  if (mmap(NULL, sizeof(VgpuGrantPage), PROT_READ | PROT_WRITE, MAP_SHARED, x->fds.grant_fd, 0) !=
      MAP_FAILED)
    abort();
  x->slot = slot;
  x->inst = i;
  x->honest = true;
  memset(x->used, 0, sizeof(x->used));
  memset(x->peak_now, 0, sizeof(x->peak_now));
  memset(x->win, 0, sizeof(x->win));
}

/* What an honest worker held lately, as the model says. */
static uint64_t held(const W *x, int k) {
  uint64_t h = MAX(x->used[k], x->peak_now[k]);
  for (int t = 0; t < VGPU_LEDGER_HOLD_TICKS; t++)
    h = MAX(h, x->win[k][t]);
  return h;
}

static uint64_t grant_of(const W *x, int k) {
  return atomic_load(&x->grant->grant[k]);
}

/* The sum of the grants of instance i's workers. */
static uint64_t grants(int i, int k) {
  uint64_t sum = 0;
  for (int j = 0; j < MAX_W; j++)
    if (w[j].slot >= 0 && w[j].inst == i)
      sum = grant_of(&w[j], k) > UINT64_MAX - sum ? UINT64_MAX : sum + grant_of(&w[j], k);
  return sum;
}

/* The limits as last set (the book's own are checked in check()). */
static uint64_t limits[2][VGPU_RES_N_QUOTA];

static uint64_t limit_of(int i, int k) {
  return limits[i][k];
}

/* Before an operation: each worker's grants (UINT64_MAX + 1 marks none). */
typedef struct {
  bool present[MAX_W];
  uint64_t grant[MAX_W][VGPU_RES_N_QUOTA];
  bool over[2][VGPU_RES_N_QUOTA];
} Before;

static void snapshot(Before *s) {
  for (int j = 0; j < MAX_W; j++) {
    s->present[j] = w[j].slot >= 0;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
      s->grant[j][k] = s->present[j] ? grant_of(&w[j], k) : 0;
  }
  for (int i = 0; i < 2; i++)
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
      uint64_t lim = limit_of(i, k);
      s->over[i][k] = lim && grants(i, k) > lim;
    }
}

/* joined[j]: worker j is not the one the snapshot saw (it was added). */
static void check_over(const Before *s, const bool joined[MAX_W], bool ticked) {
  for (int j = 0; j < MAX_W; j++) {
    W *x = &w[j];
    if (x->slot < 0)
      continue;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
      uint64_t lim = limit_of(x->inst, k), g = grant_of(x, k);
      if (!lim)
        continue;
      /* Re-allocating up to what it held lately never fails. */
      if (x->honest && g < held(x, k))
        abort();
      if (grants(x->inst, k) > lim) {
        /* Over the limit: nothing grows, a newcomer gets nothing. */
        if (joined[j] ? g != 0 : (s->present[j] && g > s->grant[j][k]))
          abort();
      }
      /* A tick of an instance over its limit: grants fall to what the
       * workers held lately (and an eighth more while that does not fit
       * the limit). */
      uint64_t h = held(x, k), kept = h + h / 8;
      if (ticked && s->over[x->inst][k] && x->honest && !joined[j] && g != MIN(s->grant[j][k], h) &&
          g != MIN(s->grant[j][k], kept))
        abort();
    }
  }
}

static void check(void) {
  for (int i = 0; i < 2; i++) {
    uint64_t sum[VGPU_RES_N_QUOTA] = {0};
    for (int j = 0; j < MAX_W; j++) {
      if (w[j].slot < 0)
        continue;
      VgpuBookWorkerUsage u;
      if (!vgpu_book_worker_usage(book, (uint32_t)w[j].slot, &u))
        abort();
      if (u.instance != (uint32_t)inst[i])
        continue;
      for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
        if (u.used[k] > u.grant[k] || atomic_load(&w[j].grant->grant[k]) != u.grant[k])
          abort();
        sum[k] = u.grant[k] > UINT64_MAX - sum[k] ? UINT64_MAX : sum[k] + u.grant[k];
      }
    }
    VgpuBookUsage iu;
    if (!vgpu_book_instance_usage(book, (uint32_t)inst[i], &iu))
      abort();
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
      if (iu.used[k] > sum[k] || iu.limit[k] != limits[i][k])
        abort();
      /* Reported over its limit: the grants are, and what the workers
       * held lately (within them) is too. */
      if (iu.held[k] && (!iu.limit[k] || sum[k] <= iu.limit[k] || iu.held[k] <= iu.limit[k] ||
                         iu.held[k] > sum[k] || iu.holders[k] == 0))
        abort();
      if (iu.limit[k] && !lowered[i] && sum[k] > iu.limit[k])
        abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!book) {
    book = vgpu_book_new();
    const uint64_t lim[VGPU_RES_N_QUOTA] = {1000, 7, 0};
    inst[0] = vgpu_book_instance_add(book, "a", lim);
    inst[1] = vgpu_book_instance_add(book, "b", lim);
    for (int j = 0; j < MAX_W; j++)
      w[j].slot = -1;
  }
  const uint64_t lim[VGPU_RES_N_QUOTA] = {1000, 7, 0};
  lowered[0] = lowered[1] = false;
  for (int i = 0; i < 2; i++) {
    vgpu_book_instance_set_limits(book, (uint32_t)inst[i], lim);
    memcpy(limits[i], lim, sizeof(lim));
  }
  for (size_t off = 0; off + sizeof(Op) <= size; off += sizeof(Op)) {
    Op o;
    memcpy(&o, data + off, sizeof(o));
    W *x = &w[o.a % MAX_W];
    int i = o.b & 1;
    Before before;
    snapshot(&before);
    bool joined[MAX_W] = {false}, ticked = false;
    switch (o.op % 8) {
    case 0:
      add(x, i);
      joined[x - w] = true;
      break;
    case 1:
      drop(x);
      break;
    case 2: /* the worker writes what it likes into its own page */
      if (x->slot >= 0) {
        unsigned f = o.c % (VGPU_RES_N + 1 + VGPU_RES_N_QUOTA);
        if (f == VGPU_RES_N)
          atomic_store(&x->page->peak_vram, o.v);
        else if (f > VGPU_RES_N)
          atomic_store(&x->page->recent_peak[f - VGPU_RES_N - 1], o.v);
        else
          atomic_store(&x->page->used[f], o.v);
        x->honest = false;
      }
      break;
    case 3: /* a request, well-formed or not */
      if (x->slot >= 0) {
        VgpuLedgerAsk a = {.seq = o.x, .kind = o.c, .want = o.v};
        size_t len = (o.b & 2) ? (o.x % (sizeof(a) + 8)) : sizeof(a);
        uint8_t buf[sizeof(a) + 8] = {0};
        memcpy(buf, &a, sizeof(a));
        (void)send(x->fds.sock, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        const char *why;
        int r = vgpu_book_worker_service(book, (uint32_t)x->slot, &why);
        VgpuLedgerAnswer ans;
        while (recv(x->fds.sock, &ans, sizeof(ans), MSG_DONTWAIT) > 0)
          ;
        if (r != 0)
          drop(x); /* vgpud kills it */
      }
      break;
    case 4: { /* an operator changes the limits */
      uint64_t next[VGPU_RES_N_QUOTA] = {o.v % 2048, o.x % 16, o.c % 4};
      VgpuBookUsage u;
      vgpu_book_instance_usage(book, (uint32_t)inst[i], &u);
      for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
        if (next[k] && (u.limit[k] == 0 || next[k] < u.limit[k]))
          lowered[i] = true;
      vgpu_book_instance_set_limits(book, (uint32_t)inst[i], next);
      memcpy(limits[i], next, sizeof(next));
      break;
    }
    case 5: /* an honest reservation: add, compare, undo when past */
      if (x->slot >= 0) {
        int k = o.c % VGPU_RES_N_QUOTA;
        uint64_t n = o.v % 512;
        uint64_t now = atomic_fetch_add(&x->page->used[k], n) + n;
        if (now > grant_of(x, k)) {
          atomic_fetch_sub(&x->page->used[k], n);
          /* Never past what an honest worker held lately. */
          if (x->honest && now <= held(x, k))
            abort();
        } else {
          if (now > atomic_load(&x->page->recent_peak[k]))
            atomic_store(&x->page->recent_peak[k], now);
          x->used[k] = now;
          x->peak_now[k] = MAX(x->peak_now[k], now);
        }
      }
      break;
    case 6: /* an honest release */
      if (x->slot >= 0) {
        int k = o.c % VGPU_RES_N_QUOTA;
        uint64_t have = atomic_load(&x->page->used[k]);
        uint64_t n = have == UINT64_MAX ? o.v : o.v % (have + 1); /* at most what it has */
        atomic_fetch_sub(&x->page->used[k], n);
        x->used[k] -= x->honest ? n : 0;
      }
      break;
    case 7: /* the supervisor's tick */
      vgpu_book_tick(book);
      ticked = true;
      for (int j = 0; j < MAX_W; j++) {
        W *y = &w[j];
        if (y->slot < 0)
          continue;
        for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
          memmove(&y->win[k][1], &y->win[k][0], sizeof(y->win[k]) - sizeof(y->win[k][0]));
          y->win[k][0] = MAX(y->used[k], y->peak_now[k]);
          y->peak_now[k] = 0;
        }
      }
      break;
    }
    check();
    check_over(&before, joined, ticked);
  }
  for (int j = 0; j < MAX_W; j++)
    drop(&w[j]);
  return 0;
}
