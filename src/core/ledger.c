#include "core/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/fd.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

const char *vgpu_res_kind_name(VgpuResKind kind) {
  static const char *const names[VGPU_RES_N] = {
      "vram", "resources", "contexts", "frames", "commands", "bytes_in", "busy_ns", "throttled_ns"};
  return (unsigned)kind < VGPU_RES_N ? names[kind] : "?";
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sat_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

/* ===== worker side ====================================================== */

static void *map_fd(int fd, size_t size, int prot) {
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size != size)
    return NULL;
  void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? NULL : p;
}

VgpuLedger *vgpu_ledger_attach(int slot_fd, int grant_fd, int sock, GError **error) {
  VgpuSlotPage *slot = map_fd(slot_fd, sizeof(VgpuSlotPage), PROT_READ | PROT_WRITE);
  const VgpuGrantPage *grant = map_fd(grant_fd, sizeof(VgpuGrantPage), PROT_READ);
  int type = 0;
  socklen_t tl = sizeof(type);
  bool sock_ok = getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_SEQPACKET;
  if (!slot || !grant || !sock_ok || grant->magic != VGPU_LEDGER_MAGIC ||
      grant->version != VGPU_LEDGER_VERSION) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "fds %d, %d, %d are not a ledger slot page, grant page (version %d) and request "
                "socket",
                slot_fd, grant_fd, sock, VGPU_LEDGER_VERSION);
    if (slot)
      munmap(slot, sizeof(VgpuSlotPage));
    if (grant)
      munmap((void *)grant, sizeof(VgpuGrantPage));
    return NULL;
  }
  VgpuLedger *l = g_new0(VgpuLedger, 1);
  l->slot = slot;
  l->grant = grant;
  l->slot_fd = slot_fd;
  l->grant_fd = grant_fd;
  l->sock = sock;
  l->ask_timeout_ms = VGPU_LEDGER_ASK_TIMEOUT_MS;
  return l;
}

VgpuLedger *vgpu_ledger_new_standalone(const uint64_t limits[VGPU_RES_N_QUOTA]) {
  VgpuLedger *l = g_new0(VgpuLedger, 1);
  VgpuGrantPage *g = g_new0(VgpuGrantPage, 1);
  g->magic = VGPU_LEDGER_MAGIC;
  g->version = VGPU_LEDGER_VERSION;
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
    atomic_store(&g->limit[k], limits[k]);
    atomic_store(&g->grant[k], limits[k] ? limits[k] : UINT64_MAX);
  }
  l->slot = g_new0(VgpuSlotPage, 1);
  l->grant = g;
  l->slot_fd = l->grant_fd = l->sock = -1;
  l->standalone = true;
  return l;
}

void vgpu_ledger_free(VgpuLedger *l) {
  if (!l)
    return;
  if (l->standalone) {
    g_free(l->slot);
    g_free((void *)l->grant);
  } else {
    munmap(l->slot, sizeof(VgpuSlotPage));
    munmap((void *)l->grant, sizeof(VgpuGrantPage));
  }
  vgpu_close(l->slot_fd);
  vgpu_close(l->grant_fd);
  vgpu_close(l->sock);
  g_free(l);
}

/* Asks the supervisor to cover `want` of `kind`; true when it did.  Any
 * failure (no answer in time, a broken socket) is a refusal. */
static bool ask(VgpuLedger *l, VgpuResKind kind, uint64_t want) {
  if (l->sock < 0)
    return false;
  VgpuLedgerAsk a = {.seq = ++l->seq, .kind = (uint32_t)kind, .want = want};
  ssize_t n;
  do
    n = send(l->sock, &a, sizeof(a), MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof(a))
    return false;
  gint64 deadline = g_get_monotonic_time() + (gint64)l->ask_timeout_ms * 1000;
  for (;;) {
    gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;
    if (left_ms < 0)
      return false;
    struct pollfd p = {.fd = l->sock, .events = POLLIN};
    int r = poll(&p, 1, (int)left_ms);
    if (r < 0 && errno != EINTR)
      return false;
    if (r <= 0)
      continue;
    union {
      VgpuLedgerAnswer ans;
      VgpuShotRequest shot;
    } m;
    n = recv(l->sock, &m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n == (ssize_t)sizeof(m.shot) && m.shot.magic == VGPU_SHOT_MAGIC) {
      /* A screenshot request: kept for the loop (vgpu_ledger_next_shot). */
      l->shot = m.shot;
      l->shot_pending = true;
      continue;
    }
    if (n != (ssize_t)sizeof(m.ans))
      return false;
    VgpuLedgerAnswer ans = m.ans;
    if (ans.seq != a.seq)
      continue; /* a late answer to a request that timed out */
    l->last_instance_used[kind] = ans.instance_used;
    return ans.granted == 1;
  }
}

int vgpu_ledger_fd(const VgpuLedger *l) {
  return l ? l->sock : -1;
}

int vgpu_ledger_next_shot(VgpuLedger *l, VgpuShotRequest *out) {
  if (l->shot_pending) {
    *out = l->shot;
    l->shot_pending = false;
    return 1;
  }
  if (l->sock < 0)
    return 0;
  for (;;) {
    union {
      VgpuLedgerAnswer ans;
      VgpuShotRequest shot;
    } m;
    ssize_t n = recv(l->sock, &m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return errno == EAGAIN ? 0 : -errno;
    if (n == 0)
      return -ECONNRESET;
    if (n == (ssize_t)sizeof(m.shot) && m.shot.magic == VGPU_SHOT_MAGIC) {
      *out = m.shot;
      return 1;
    }
    /* A late ledger answer (its request timed out): nothing to do. */
  }
}

int vgpu_ledger_send_shot(VgpuLedger *l, const VgpuShotReply *r, int fd) {
  if (l->sock < 0)
    return -ENOTCONN;
  VgpuFdControl ctrl;
  struct iovec iov = {.iov_base = (void *)r, .iov_len = sizeof(*r)};
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0)
    vgpu_msg_set_fd(&m, &ctrl, fd);
  ssize_t n;
  do
    n = sendmsg(l->sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  return n == (ssize_t)sizeof(*r) ? 0 : -EIO;
}

bool vgpu_shot_format_known(uint32_t format) {
  switch (format) {
  case 1:
  case 2:
  case 3:
  case 4:
  case 67:
  case 68:
  case 121:
  case 134:
    return true;
  default:
    return false;
  }
}

bool vgpu_shot_check(const VgpuShotReply *r, int fd, const char **why) {
  uint64_t row, size;
  if (r->width < 1 || r->height < 1 || r->width > VGPU_SHOT_MAX_DIM ||
      r->height > VGPU_SHOT_MAX_DIM) {
    *why = "screenshot dimensions out of range";
    return false;
  }
  if (__builtin_mul_overflow((uint64_t)r->width, 4u, &row) || row != r->stride) {
    *why = "screenshot stride is not width * 4";
    return false;
  }
  if (__builtin_mul_overflow(row, (uint64_t)r->height, &size)) {
    *why = "screenshot size overflows";
    return false;
  }
  if (!vgpu_shot_format_known(r->format)) {
    *why = "screenshot in an unknown pixel format";
    return false;
  }
  if (fd < 0) {
    *why = "screenshot reply without its memfd";
    return false;
  }
  int seals = fcntl(fd, F_GET_SEALS);
  const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  if (seals < 0 || (seals & need) != need) {
    *why = "screenshot fd is not a memfd sealed against writes and resizing";
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
      (uint64_t)st.st_size != size) {
    *why = "screenshot memfd size is not stride * height";
    return false;
  }
  return true;
}

int vgpu_ledger_reserve(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount) {
  (void)slot;
  if ((unsigned)kind >= VGPU_RES_N_QUOTA)
    return -EINVAL;
  /* Refuse before adding what would wrap: the supervisor must never see a
   * wrapped (small) value that it could take as the truth. */
  uint64_t cur = atomic_load(&l->slot->used[kind]);
  if (cur > (uint64_t)INT64_MAX || amount > (uint64_t)INT64_MAX - cur)
    return -EDQUOT;
  bool asked = false;
  for (;;) {
    /* Add, then read the grant (both sequentially consistent): a
     * supervisor shrinking the grant writes it, then re-reads `used`, so
     * either this read sees the new grant or it sees this add. */
    uint64_t now = atomic_fetch_add(&l->slot->used[kind], amount) + amount;
    uint64_t grant = atomic_load(&l->grant->grant[kind]);
    if (now <= grant) {
      if (kind == VGPU_RES_VRAM && now > atomic_load(&l->slot->peak_vram))
        atomic_store(&l->slot->peak_vram, now);
      /* The supervisor zeroes it on its tick: a compare-exchange, so that
       * neither side's write is lost. */
      uint64_t p = atomic_load(&l->slot->recent_peak[kind]);
      while (now > p && !atomic_compare_exchange_weak(&l->slot->recent_peak[kind], &p, now))
        ;
      return 0;
    }
    atomic_fetch_sub(&l->slot->used[kind], amount);
    if (asked || !ask(l, kind, now))
      return -EDQUOT;
    asked = true;
  }
}

void vgpu_ledger_release(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount) {
  (void)slot;
  g_return_if_fail((unsigned)kind < VGPU_RES_N_QUOTA);
  atomic_fetch_sub(&l->slot->used[kind], amount);
}

void vgpu_ledger_count(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount) {
  (void)slot;
  g_return_if_fail((unsigned)kind < VGPU_RES_N);
  atomic_fetch_add(&l->slot->used[kind], amount);
}

uint32_t vgpu_ledger_share_ppm(const VgpuLedger *l) {
  return atomic_load(&l->grant->share_ppm);
}

uint32_t vgpu_ledger_fps_cap(const VgpuLedger *l) {
  return atomic_load(&l->grant->fps_cap);
}

uint32_t vgpu_ledger_cpu_milli(const VgpuLedger *l) {
  return atomic_load(&l->grant->cpu_milli);
}

void vgpu_ledger_standalone_set_cpu_milli(VgpuLedger *l, uint32_t cpu_milli) {
  g_return_if_fail(l->standalone);
  VgpuGrantPage *g = (VgpuGrantPage *)l->grant; /* our own memory when standalone */
  atomic_store(&g->cpu_milli, cpu_milli);
}

void vgpu_ledger_standalone_set_sched(VgpuLedger *l, uint32_t share_ppm, uint32_t fps_cap) {
  g_return_if_fail(l->standalone);
  VgpuGrantPage *g = (VgpuGrantPage *)l->grant; /* our own memory when standalone */
  atomic_store(&g->share_ppm, share_ppm);
  atomic_store(&g->fps_cap, fps_cap);
}

uint64_t vgpu_ledger_used(const VgpuLedger *l, VgpuResKind kind) {
  g_return_val_if_fail((unsigned)kind < VGPU_RES_N, 0);
  return atomic_load(&l->slot->used[kind]);
}

void vgpu_ledger_describe(const VgpuLedger *l, VgpuResKind kind, uint64_t *limit, uint64_t *used) {
  g_return_if_fail((unsigned)kind < VGPU_RES_N_QUOTA);
  *limit = atomic_load(&l->grant->limit[kind]);
  *used =
      l->last_instance_used[kind] ? l->last_instance_used[kind] : atomic_load(&l->slot->used[kind]);
}

/* ===== supervisor side ================================================== */

typedef struct {
  bool in_use;
  char name[VGPU_NAME_MAX];
  uint64_t limit[VGPU_RES_N_QUOTA];
  uint64_t history[VGPU_RES_N]; /* counters of workers gone */
  uint64_t refusals, crashes;
} BookInstance;

typedef struct {
  bool live;
  uint32_t inst;
  pid_t worker_pid, client_pid;
  uid_t client_uid;
  uint64_t started_ns;
  VgpuSlotPage *slot;                  /* untrusted: read only through the helpers below */
  VgpuGrantPage *grant;                /* ours to write */
  uint64_t grant_of[VGPU_RES_N_QUOTA]; /* the truth; the page mirrors it */
  uint64_t max_grant_vram;
  uint64_t peak_vram;
  /* Per quota kind, the peak usage of each of the last ticks (a ring
   * indexed by the book's tick count): what the worker keeps while its
   * instance is over its limit. */
  uint64_t recent[VGPU_RES_N_QUOTA][VGPU_LEDGER_HOLD_TICKS];
  uint64_t seen[VGPU_RES_N]; /* counters: highest value read */
  /* While the book is frozen: what the quota counters read then. */
  bool frozen;
  uint64_t frozen_used[VGPU_RES_N_QUOTA];
  int sock;               /* our end, non-blocking */
  VgpuBookChildFds child; /* until the worker has its copies */
  gint64 window_us;
  uint32_t window_requests;
  uint64_t requests;
  VgpuBookRefusal refusal; /* the last request refused */
} BookWorker;

struct VgpuBook {
  uint32_t max_requests_per_s;
  VgpuBookShotFn shot_fn;
  void *shot_user;
  void (*shrink_hook)(void);
  uint32_t ticks;
  BookInstance inst[VGPU_LEDGER_MAX_INSTANCES];
  BookWorker w[VGPU_LEDGER_MAX_SLOTS];
};

VgpuBook *vgpu_book_new(void) {
  VgpuBook *b = g_new0(VgpuBook, 1);
  b->max_requests_per_s = VGPU_LEDGER_MAX_REQUESTS_PER_S;
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    b->w[i].sock = b->w[i].child.slot_fd = b->w[i].child.grant_fd = b->w[i].child.sock = -1;
  return b;
}

void vgpu_book_free(VgpuBook *b) {
  if (!b)
    return;
  for (uint32_t i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    if (b->w[i].live)
      vgpu_book_worker_remove(b, i);
  g_free(b);
}

void vgpu_book_set_request_limit(VgpuBook *b, uint32_t per_second) {
  b->max_requests_per_s = per_second;
}

void vgpu_book_set_shrink_hook(VgpuBook *b, void (*hook)(void)) {
  b->shrink_hook = hook;
}

static BookInstance *book_inst(VgpuBook *b, uint32_t inst) {
  return inst < VGPU_LEDGER_MAX_INSTANCES && b->inst[inst].in_use ? &b->inst[inst] : NULL;
}

static BookWorker *book_worker(VgpuBook *b, uint32_t slot) {
  return slot < VGPU_LEDGER_MAX_SLOTS && b->w[slot].live ? &b->w[slot] : NULL;
}

/* A quota kind as the worker reports it, clamped to [0, grant]: a worker
 * cannot claim more than it was granted, and a "negative" value (a release
 * it never reserved) counts as nothing. */
static uint64_t clamp_used(const BookWorker *w, int k, uint64_t u) {
  if (u > (uint64_t)INT64_MAX)
    return 0;
  return MIN(u, w->grant_of[k]);
}

static uint64_t worker_quota_used(const BookWorker *w, int k) {
  if (w->frozen)
    return w->frozen_used[k];
  return clamp_used(w, k, atomic_load(&w->slot->used[k]));
}

/* What the worker held lately: the peak of the last ticks and of the
 * reservations since the last tick, within its grant. */
static uint64_t recent_peak(const BookWorker *w, int k) {
  uint64_t p = clamp_used(w, k, atomic_load(&w->slot->recent_peak[k]));
  for (int i = 0; i < VGPU_LEDGER_HOLD_TICKS; i++)
    p = MAX(p, w->recent[k][i]);
  return p;
}

/* A counter as the worker reports it, never going backwards and never
 * faster than any session could count (per second of the worker's life),
 * so a worker cannot pin its instance's totals at the maximum. */
static uint64_t worker_counter(BookWorker *w, int k) {
  static const uint64_t max_per_s[VGPU_RES_N] = {
      [VGPU_RES_FRAMES] = 100000,
      [VGPU_RES_COMMANDS] = 100000000,
      [VGPU_RES_BYTES_IN] = 100ull << 30,
      [VGPU_RES_BUSY_NS] = 4000000000ull,      /* a few threads' worth of wall time */
      [VGPU_RES_THROTTLED_NS] = 2000000000ull, /* one thread waits (with slack) */
  };
  uint64_t life_s = (now_ns() - w->started_ns) / 1000000000ull + 1, cap;
  if (__builtin_mul_overflow(max_per_s[k], life_s, &cap))
    cap = UINT64_MAX;
  uint64_t v = MIN(atomic_load(&w->slot->used[k]), cap);
  if (v > w->seen[k])
    w->seen[k] = v;
  return w->seen[k];
}

static void worker_refresh_peak(BookWorker *w) {
  uint64_t now = worker_quota_used(w, VGPU_RES_VRAM);
  uint64_t claimed = MIN(atomic_load(&w->slot->peak_vram), w->max_grant_vram);
  w->peak_vram = MAX(w->peak_vram, MAX(now, claimed));
}

static void set_grant(BookWorker *w, int k, uint64_t g) {
  w->grant_of[k] = g;
  atomic_store(&w->grant->grant[k], g);
  if (k == VGPU_RES_VRAM && g != UINT64_MAX && g > w->max_grant_vram)
    w->max_grant_vram = g;
}

/* What the worker held lately, as it reports it (raw: a hostile value
 * only stops its own grant from shrinking). */
static uint64_t held_lately(const BookWorker *w, int k) {
  return MAX(atomic_load(&w->slot->used[k]), recent_peak(w, k));
}

/* Takes back what a worker was granted beyond what it held lately, never
 * below what it holds, never raising the grant.  With `cushion` (its
 * instance is over its limit) it keeps an eighth more, for the ups and
 * downs of a real program's usage (how many buffers are in flight varies
 * with timing).  Write the smaller grant, then re-read `used`: a
 * reservation racing with this either read the new grant (and undid
 * itself) or its add is in the second reading, and the grant is raised
 * back to cover it. */
static void shrink_to_held(VgpuBook *b, BookWorker *w, int k, bool cushion) {
  uint64_t old = w->grant_of[k];
  uint64_t u = held_lately(w, k);
  if (cushion)
    u = sat_add(u, u / 8);
  if (u >= old)
    return;
  if (b->shrink_hook)
    b->shrink_hook();
  atomic_store(&w->grant->grant[k], u);
  uint64_t u2 = atomic_load(&w->slot->used[k]);
  uint64_t final = MIN(MAX(u2, u), old);
  if (final != u)
    atomic_store(&w->grant->grant[k], final);
  w->grant_of[k] = final;
}

static uint64_t sum_grants(VgpuBook *b, uint32_t inst, int k, const BookWorker *except) {
  uint64_t sum = 0;
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    const BookWorker *w = &b->w[i];
    if (w->live && w->inst == inst && w != except)
      sum = sat_add(sum, w->grant_of[k]);
  }
  return sum;
}

static uint64_t slack(uint64_t limit) {
  return MAX(limit / 8, 1);
}

static unsigned count_workers(VgpuBook *b, uint32_t inst) {
  unsigned n = 0;
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    n += b->w[i].live && b->w[i].inst == inst;
  return n;
}

/* The instance's grants of kind k add up to more than its limit: it was
 * lowered below what the workers held. */
static bool over_limit(VgpuBook *b, uint32_t inst, int k) {
  uint64_t lim = b->inst[inst].limit[k];
  return lim && sum_grants(b, inst, k, NULL) > lim;
}

/* What the instance's workers held lately, each within its grant, and how
 * many held some. */
static uint64_t sum_held(VgpuBook *b, uint32_t inst, int k, uint32_t *holders) {
  uint64_t sum = 0;
  *holders = 0;
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    const BookWorker *w = &b->w[i];
    if (!w->live || w->inst != inst)
      continue;
    uint64_t h = MIN(held_lately(w, k), w->grant_of[k]);
    sum = sat_add(sum, h);
    *holders += h > 0;
  }
  return sum;
}

/* Shrinks every grant of the instance to what its worker held lately: with
 * the cushion while that does not fit the limit. */
static void shrink_all_to_held(VgpuBook *b, uint32_t inst, int k) {
  uint32_t holders;
  bool cushion = sum_held(b, inst, k, &holders) > b->inst[inst].limit[k];
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    if (b->w[i].live && b->w[i].inst == inst)
      shrink_to_held(b, &b->w[i], k, cushion);
}

int vgpu_book_instance_add(VgpuBook *b, const char *name, const uint64_t limits[VGPU_RES_N_QUOTA]) {
  for (uint32_t i = 0; i < VGPU_LEDGER_MAX_INSTANCES; i++) {
    BookInstance *in = &b->inst[i];
    if (in->in_use)
      continue;
    memset(in, 0, sizeof(*in));
    in->in_use = true;
    g_strlcpy(in->name, name, sizeof(in->name));
    memcpy(in->limit, limits, sizeof(in->limit));
    return (int)i;
  }
  return -ENOSPC;
}

void vgpu_book_instance_set_limits(VgpuBook *b, uint32_t inst,
                                   const uint64_t limits[VGPU_RES_N_QUOTA]) {
  BookInstance *in = book_inst(b, inst);
  g_return_if_fail(in);
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
    uint64_t old = in->limit[k], lim = limits[k];
    in->limit[k] = lim;
    for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
      BookWorker *w = &b->w[i];
      if (!w->live || w->inst != inst)
        continue;
      atomic_store(&w->grant->limit[k], lim);
      if (lim == 0)
        set_grant(w, k, UINT64_MAX);
    }
    if (lim && (old == 0 || lim < old))
      shrink_all_to_held(b, inst, k); /* they ask again for more */
  }
}

void vgpu_book_instance_remove(VgpuBook *b, uint32_t inst) {
  BookInstance *in = book_inst(b, inst);
  if (in)
    in->in_use = false;
}

void vgpu_book_freeze(VgpuBook *b) {
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    BookWorker *w = &b->w[i];
    w->frozen = false;
    if (!w->live)
      continue;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
      w->frozen_used[k] = worker_quota_used(w, k);
    w->frozen = true;
  }
}

void vgpu_book_thaw(VgpuBook *b) {
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
    b->w[i].frozen = false;
}

bool vgpu_book_instance_usage(VgpuBook *b, uint32_t inst, VgpuBookUsage *out) {
  BookInstance *in = book_inst(b, inst);
  memset(out, 0, sizeof(*out));
  if (!in)
    return false;
  memcpy(out->limit, in->limit, sizeof(out->limit));
  memcpy(out->used, in->history, sizeof(out->used));
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    BookWorker *w = &b->w[i];
    if (!w->live || w->inst != inst)
      continue;
    out->clients++;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
      out->used[k] = sat_add(out->used[k], worker_quota_used(w, k));
    for (int k = VGPU_RES_N_QUOTA; k < VGPU_RES_N; k++)
      out->used[k] = sat_add(out->used[k], worker_counter(w, k));
  }
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
    uint32_t holders;
    uint64_t held = sum_held(b, inst, k, &holders);
    if (in->limit[k] && held > in->limit[k] && over_limit(b, inst, k)) {
      out->held[k] = held;
      out->holders[k] = holders;
    }
  }
  out->refusals = in->refusals;
  out->worker_crashes = in->crashes;
  return true;
}

void vgpu_book_tick(VgpuBook *b) {
  uint32_t at = b->ticks++ % VGPU_LEDGER_HOLD_TICKS;
  for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    BookWorker *w = &b->w[i];
    if (!w->live)
      continue;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
      uint64_t peak = atomic_exchange(&w->slot->recent_peak[k], 0);
      w->recent[k][at] =
          MAX(clamp_used(w, k, peak), clamp_used(w, k, atomic_load(&w->slot->used[k])));
    }
  }
  for (uint32_t inst = 0; inst < VGPU_LEDGER_MAX_INSTANCES; inst++) {
    if (!b->inst[inst].in_use)
      continue;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
      if (over_limit(b, inst, k))
        shrink_all_to_held(b, inst, k);
  }
}

void vgpu_book_note_refusal(VgpuBook *b, uint32_t inst) {
  BookInstance *in = book_inst(b, inst);
  if (in)
    in->refusals++;
}

void vgpu_book_note_crash(VgpuBook *b, uint32_t inst) {
  BookInstance *in = book_inst(b, inst);
  if (in)
    in->crashes++;
}

/* A memfd of `size` bytes sealed against resizing, mapped read-write here.
 * With `future_write`, F_SEAL_FUTURE_WRITE too: mappings made from it after
 * this (the worker's) can be read-only only, and write() fails. */
static int make_page(const char *name, size_t size, bool future_write, void **map) {
  vgpu_autofd int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
    return -errno;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return -errno;
  int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL | (future_write ? F_SEAL_FUTURE_WRITE : 0);
  if (fcntl(fd, F_ADD_SEALS, seals) < 0) {
    int e = errno;
    munmap(p, size);
    return -e;
  }
  *map = p;
  return vgpu_steal_fd(&fd);
}

int vgpu_book_worker_add(VgpuBook *b, uint32_t inst, pid_t client_pid, uid_t client_uid,
                         VgpuBookChildFds *child) {
  BookInstance *in = book_inst(b, inst);
  if (!in)
    return -EINVAL;
  uint32_t slot = 0;
  while (slot < VGPU_LEDGER_MAX_SLOTS && b->w[slot].live)
    slot++;
  if (slot == VGPU_LEDGER_MAX_SLOTS)
    return -ENOSPC;
  void *sp = NULL, *gp = NULL;
  int sv[2] = {-1, -1};
  int slot_fd = make_page("vgpu-slot", sizeof(VgpuSlotPage), false, &sp);
  if (slot_fd < 0)
    return slot_fd;
  /* The grant page is filled in before it is sealed: after the seal not
   * even we could map it writable again. */
  vgpu_autofd int gfd = memfd_create("vgpu-grant", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int err = 0;
  if (gfd < 0 || ftruncate(gfd, sizeof(VgpuGrantPage)) < 0)
    err = -errno;
  if (!err) {
    gp = mmap(NULL, sizeof(VgpuGrantPage), PROT_READ | PROT_WRITE, MAP_SHARED, gfd, 0);
    if (gp == MAP_FAILED) {
      gp = NULL;
      err = -errno;
    }
  }
  if (!err && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    err = -errno;
  if (!err)
    vgpu_set_nonblock(sv[0], true);
  BookWorker *w = &b->w[slot];
  if (!err) {
    memset(w, 0, sizeof(*w));
    w->inst = inst;
    w->client_pid = client_pid;
    w->client_uid = client_uid;
    w->started_ns = now_ns();
    w->slot = sp;
    w->grant = gp;
    w->sock = sv[0];
    w->grant->magic = VGPU_LEDGER_MAGIC;
    w->grant->version = VGPU_LEDGER_VERSION;
    for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
      uint64_t lim = in->limit[k];
      atomic_store(&w->grant->limit[k], lim);
      if (lim == 0) {
        set_grant(w, k, UINT64_MAX);
        continue;
      }
      /* A first allowance, so that most sessions never need to ask: all
       * of it for a worker alone on its instance, else some slack. */
      uint64_t taken = sum_grants(b, inst, k, NULL);
      bool alone = count_workers(b, inst) == 0;
      set_grant(w, k, taken >= lim ? 0 : MIN(alone ? lim : slack(lim), lim - taken));
    }
    if (fcntl(gfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL | F_SEAL_FUTURE_WRITE) <
        0)
      err = -errno;
  }
  if (err) {
    if (sp)
      munmap(sp, sizeof(VgpuSlotPage));
    if (gp)
      munmap(gp, sizeof(VgpuGrantPage));
    vgpu_close(slot_fd);
    vgpu_close(sv[0]);
    vgpu_close(sv[1]);
    memset(w, 0, sizeof(*w));
    w->sock = w->child.slot_fd = w->child.grant_fd = w->child.sock = -1;
    return err;
  }
  w->child.slot_fd = slot_fd;
  w->child.grant_fd = vgpu_steal_fd(&gfd);
  w->child.sock = sv[1];
  w->live = true;
  *child = w->child;
  return (int)slot;
}

static void close_child_fds(BookWorker *w) {
  vgpu_close(w->child.slot_fd);
  vgpu_close(w->child.grant_fd);
  vgpu_close(w->child.sock);
  w->child.slot_fd = w->child.grant_fd = w->child.sock = -1;
}

void vgpu_book_worker_started(VgpuBook *b, uint32_t slot, pid_t worker_pid) {
  BookWorker *w = book_worker(b, slot);
  g_return_if_fail(w);
  w->worker_pid = worker_pid;
  close_child_fds(w);
}

int vgpu_book_worker_fd(VgpuBook *b, uint32_t slot) {
  BookWorker *w = book_worker(b, slot);
  return w ? w->sock : -1;
}

/* Covers `want` of kind k for w if the instance has room, taking back
 * what other workers of the instance were granted beyond what they held
 * lately.  The grant grows only so far that the instance's grants fit its
 * limit: while they do not (it was lowered), every request for more than
 * the grant is refused. */
static bool grant_request(VgpuBook *b, BookWorker *w, int k, uint64_t want) {
  BookInstance *in = &b->inst[w->inst];
  uint64_t lim = in->limit[k];
  if (lim == 0) {
    set_grant(w, k, UINT64_MAX);
    return true;
  }
  if (want <= w->grant_of[k])
    return true;
  uint64_t others = sum_grants(b, w->inst, k, w);
  if (want > lim || others > lim - want) {
    bool over = over_limit(b, w->inst, k);
    for (int i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++)
      if (b->w[i].live && b->w[i].inst == w->inst && &b->w[i] != w)
        shrink_to_held(b, &b->w[i], k, over);
    others = sum_grants(b, w->inst, k, w);
  }
  if (want > lim || others > lim - want) {
    in->refusals++;
    w->refusal = (VgpuBookRefusal){
        .valid = true, .kind = (uint32_t)k, .want = want, .limit = lim, .others = others};
    return false;
  }
  bool alone = count_workers(b, w->inst) == 1;
  set_grant(w, k, alone ? lim - others : MIN(sat_add(want, slack(lim)), lim - others));
  return true;
}

/* One more message from the worker in this second; false past the cap. */
static bool count_request(VgpuBook *b, BookWorker *w) {
  gint64 t = g_get_monotonic_time();
  if (t - w->window_us >= G_USEC_PER_SEC) {
    w->window_us = t;
    w->window_requests = 0;
  }
  return !(++w->window_requests > b->max_requests_per_s && b->max_requests_per_s);
}

void vgpu_book_set_shot_hook(VgpuBook *b, VgpuBookShotFn fn, void *user) {
  b->shot_fn = fn;
  b->shot_user = user;
}

int vgpu_book_worker_ask_shot(VgpuBook *b, uint32_t slot, uint32_t seq, uint32_t head) {
  BookWorker *w = book_worker(b, slot);
  if (!w || w->sock < 0)
    return -ESRCH;
  VgpuShotRequest q = {.magic = VGPU_SHOT_MAGIC, .seq = seq, .head = head};
  ssize_t n;
  do
    n = send(w->sock, &q, sizeof(q), MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  return n == (ssize_t)sizeof(q) ? 0 : -EIO;
}

int vgpu_book_worker_service(VgpuBook *b, uint32_t slot, const char **why) {
  BookWorker *w = book_worker(b, slot);
  *why = "no such worker";
  if (!w)
    return -EINVAL;
  /* A bounded batch per wake-up: the main loop goes on to others. */
  for (int i = 0; i < 16; i++) {
    union {
      VgpuLedgerAsk a;
      VgpuShotReply shot;
    } m;
    int passed = -1;
    size_t n_passed;
    ssize_t n =
        vgpu_recvmsg_fds(w->sock, &m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC, &passed, 1, &n_passed);
    VgpuLedgerAsk a = m.a;
    if (n == (ssize_t)sizeof(m.shot) && m.shot.magic == VGPU_SHOT_MAGIC && b->shot_fn) {
      if (!count_request(b, w)) {
        vgpu_close(passed);
        *why = "flooded the ledger with requests";
        return -EBUSY;
      }
      VgpuShotReply r = m.shot;
      b->shot_fn(b->shot_user, slot, &r, passed);
      continue;
    }
    if (passed >= 0) {
      vgpu_close(passed);
      *why = "sent an fd with a ledger request";
      return -EPROTO;
    }
    if (n == -EAGAIN)
      return 0;
    if (n == -EMSGSIZE) {
      *why = "sent fds with a ledger request";
      return -EPROTO;
    }
    if (n < 0) {
      *why = "ledger request socket failed";
      return (int)n;
    }
    if (n == 0) {
      *why = "closed its ledger request socket";
      return -ECONNRESET;
    }
    if (n != (ssize_t)sizeof(a) || a.kind >= VGPU_RES_N_QUOTA) {
      *why = "sent a malformed ledger request";
      return -EPROTO;
    }
    w->requests++;
    if (!count_request(b, w)) {
      *why = "flooded the ledger with requests";
      return -EBUSY;
    }
    VgpuLedgerAnswer ans = {.seq = a.seq};
    ans.granted = grant_request(b, w, (int)a.kind, a.want) ? 1 : 0;
    for (int j = 0; j < VGPU_LEDGER_MAX_SLOTS; j++)
      if (b->w[j].live && b->w[j].inst == w->inst)
        ans.instance_used = sat_add(ans.instance_used, worker_quota_used(&b->w[j], (int)a.kind));
    worker_refresh_peak(w);
    do
      n = send(w->sock, &ans, sizeof(ans), MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(ans)) {
      *why = "does not read the ledger's answers";
      return n < 0 ? -errno : -EIO;
    }
  }
  return 0;
}

bool vgpu_book_worker_usage(VgpuBook *b, uint32_t slot, VgpuBookWorkerUsage *out) {
  BookWorker *w = book_worker(b, slot);
  memset(out, 0, sizeof(*out));
  if (!w)
    return false;
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
    out->used[k] = worker_quota_used(w, k);
    out->grant[k] = w->grant_of[k];
  }
  for (int k = VGPU_RES_N_QUOTA; k < VGPU_RES_N; k++)
    out->used[k] = worker_counter(w, k);
  worker_refresh_peak(w);
  out->peak_vram = w->peak_vram;
  out->requests = w->requests;
  out->started_ns = w->started_ns;
  out->worker_pid = w->worker_pid;
  out->client_pid = w->client_pid;
  out->client_uid = w->client_uid;
  out->instance = w->inst;
  return true;
}

void vgpu_book_worker_set_sched(VgpuBook *b, uint32_t slot, uint32_t share_ppm, uint32_t fps_cap) {
  BookWorker *w = book_worker(b, slot);
  if (!w)
    return;
  if (atomic_load(&w->grant->share_ppm) != share_ppm)
    atomic_store(&w->grant->share_ppm, share_ppm);
  if (atomic_load(&w->grant->fps_cap) != fps_cap)
    atomic_store(&w->grant->fps_cap, fps_cap);
}

void vgpu_book_worker_set_cpu_milli(VgpuBook *b, uint32_t slot, uint32_t cpu_milli) {
  BookWorker *w = book_worker(b, slot);
  if (w && atomic_load(&w->grant->cpu_milli) != cpu_milli)
    atomic_store(&w->grant->cpu_milli, cpu_milli);
}

uint64_t vgpu_book_worker_busy_ns(VgpuBook *b, uint32_t slot) {
  BookWorker *w = book_worker(b, slot);
  return w ? worker_counter(w, VGPU_RES_BUSY_NS) : 0;
}

bool vgpu_book_worker_last_refusal(VgpuBook *b, uint32_t slot, VgpuBookRefusal *out) {
  BookWorker *w = book_worker(b, slot);
  *out = w ? w->refusal : (VgpuBookRefusal){0};
  return out->valid;
}

uint64_t vgpu_book_worker_remove(VgpuBook *b, uint32_t slot) {
  BookWorker *w = book_worker(b, slot);
  if (!w)
    return 0;
  uint64_t vram = worker_quota_used(w, VGPU_RES_VRAM);
  uint32_t inst = w->inst;
  BookInstance *in = book_inst(b, inst);
  if (in)
    for (int k = VGPU_RES_N_QUOTA; k < VGPU_RES_N; k++)
      in->history[k] = sat_add(in->history[k], worker_counter(w, k));
  munmap(w->slot, sizeof(VgpuSlotPage));
  munmap(w->grant, sizeof(VgpuGrantPage));
  vgpu_close(w->sock);
  close_child_fds(w);
  memset(w, 0, sizeof(*w));
  w->sock = w->child.slot_fd = w->child.grant_fd = w->child.sock = -1;
  return vram;
}
