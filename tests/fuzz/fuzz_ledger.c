/* Fuzz target: the supervisor's book against workers that write anything
 * into their slot pages and send anything on their request sockets, mixed
 * with workers joining and leaving and limits changing.  Each input is a
 * list of 16-byte operations.  After every operation the book must hold:
 * a worker's usage as shown never exceeds its grant, the grant page says
 * what the book granted, an instance's usage never exceeds its workers'
 * grants, and, until a limit is lowered below use, the grants of an
 * instance add up to no more than its limit. */
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
      if (iu.used[k] > sum[k])
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
  for (int i = 0; i < 2; i++)
    vgpu_book_instance_set_limits(book, (uint32_t)inst[i], lim);
  for (size_t off = 0; off + sizeof(Op) <= size; off += sizeof(Op)) {
    Op o;
    memcpy(&o, data + off, sizeof(o));
    W *x = &w[o.a % MAX_W];
    int i = o.b & 1;
    switch (o.op % 6) {
    case 0:
      add(x, i);
      break;
    case 1:
      drop(x);
      break;
    case 2: /* the worker writes what it likes into its own page */
      if (x->slot >= 0) {
        if (o.c % (VGPU_RES_N + 1) == VGPU_RES_N)
          atomic_store(&x->page->peak_vram, o.v);
        else
          atomic_store(&x->page->used[o.c % (VGPU_RES_N + 1)], o.v);
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
      break;
    }
    case 5: /* an honest reservation: add, compare, undo when past */
      if (x->slot >= 0) {
        int k = o.c % VGPU_RES_N_QUOTA;
        uint64_t n = o.v % 512;
        uint64_t now = atomic_fetch_add(&x->page->used[k], n) + n;
        if (now > atomic_load(&x->grant->grant[k]) || atomic_load(&x->grant->ask_always[k]))
          atomic_fetch_sub(&x->page->used[k], n);
      }
      break;
    }
    check();
  }
  for (int j = 0; j < MAX_W; j++)
    drop(&w[j]);
  return 0;
}
