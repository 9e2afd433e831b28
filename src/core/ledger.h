/* The ledger: per-instance limits and usage, kept by the supervisor alone.
 *
 * Two halves live here:
 *
 *  - The book (VgpuBook), in the supervisor's private memory: instances
 *    (name, limits, refusals, crashes, history of counters), and one record
 *    per live worker (its instance, client, and the allowance "grant" it
 *    holds for each quota kind).  For every instance and quota kind the sum
 *    of its live workers' grants never exceeds the instance limit.  Reclaim
 *    on worker exit uses only these records.
 *
 *  - The worker's side (VgpuLedger): per worker, a "slot page" the worker
 *    maps read-write (its own counters, nothing else) and a "grant page"
 *    the supervisor writes and seals with F_SEAL_FUTURE_WRITE before handing
 *    it over, so the worker can map it read-only only.  A reservation adds
 *    to the worker's own `used`, then compares with its grant; past it, the
 *    worker undoes the add and asks the supervisor for more over a
 *    per-worker SOCK_SEQPACKET socketpair, with a bounded wait.
 *
 * The supervisor reads slot pages as untrusted input: every quota value is
 * clamped to the worker's grant, every counter is kept monotonic, and
 * nothing read from a page is ever used as an index or a pointer.  There is
 * no lock a worker could hold: grants shrink with a write-then-re-read
 * (both sequentially consistent) against the worker's add-then-read.
 *
 * A limit lowered below what an instance's workers hold ends no one: each
 * worker keeps a grant of what it held lately (the peak of its usage over
 * the last VGPU_LEDGER_HOLD_TICKS ticks) and an eighth more, so it can go
 * on freeing and re-creating up to that, while a request for more is
 * refused until the instance fits its limit again.  On every tick of an
 * instance that is over its limit the grants fall to that, so the
 * effective limit follows usage down; once what the workers held lately
 * fits the limit, the eighth goes too.  A grant never grows while its
 * instance is over. */
#pragma once

#include <glib.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define VGPU_LEDGER_MAGIC 0x5247444c55504756ull /* "VGPULDGR" */
#define VGPU_LEDGER_VERSION 5
#define VGPU_LEDGER_MAX_INSTANCES 64
#define VGPU_LEDGER_MAX_SLOTS 512
#define VGPU_NAME_MAX 32
/* How long a worker waits for the supervisor's answer before it treats the
 * request as refused. */
#define VGPU_LEDGER_ASK_TIMEOUT_MS 2000
/* Requests one worker may send in one second before it is killed: far
 * above what a session needs (it asks only when its allowance runs out,
 * and each allowance covers at least an eighth of the limit). */
#define VGPU_LEDGER_MAX_REQUESTS_PER_S 20000
/* How many supervisor ticks (vgpu_book_tick) a worker's recent peak usage
 * covers: vgpud ticks every 200 ms, so 2 s. */
#define VGPU_LEDGER_HOLD_TICKS 10

typedef enum {
  VGPU_RES_VRAM = 0, /* bytes */
  VGPU_RES_OBJECTS,  /* resources */
  VGPU_RES_CONTEXTS, /* renderer contexts */
  VGPU_RES_N_QUOTA,  /* kinds below are counters, never limited */
  VGPU_RES_FRAMES = VGPU_RES_N_QUOTA,
  VGPU_RES_COMMANDS,
  VGPU_RES_BYTES_IN,
  VGPU_RES_BUSY_NS,
  VGPU_RES_THROTTLED_NS, /* time the worker held back submissions or frames */
  VGPU_RES_N,
} VgpuResKind;

const char *vgpu_res_kind_name(VgpuResKind kind);

/* ---- shared pages (layout known to both sides) -------------------------- */

/* Written by the worker; read by the supervisor as untrusted input (the
 * supervisor writes only recent_peak, back to 0 on each tick). */
typedef struct VgpuSlotPage {
  _Atomic uint64_t used[VGPU_RES_N];
  _Atomic uint64_t peak_vram;
  /* The highest `used` a reservation reached since the supervisor's last
   * tick, per quota kind. */
  _Atomic uint64_t recent_peak[VGPU_RES_N_QUOTA];
} VgpuSlotPage;

/* Written by the supervisor only; the worker's mapping is read-only. */
typedef struct VgpuGrantPage {
  uint64_t magic;
  uint32_t version;
  uint32_t pad;
  _Atomic uint64_t grant[VGPU_RES_N_QUOTA]; /* UINT64_MAX: unlimited */
  _Atomic uint64_t limit[VGPU_RES_N_QUOTA]; /* for messages only; 0 = unlimited */
  /* Scheduling: this worker's share of the GPU (see cpu_milli) in parts per
   * million (0: unthrottled) and its instance's frame-rate cap (0: none).
   * Rewritten by the supervisor whenever shares change. */
  _Atomic uint32_t share_ppm;
  _Atomic uint32_t fps_cap;
  /* What GPU time is: 0, the wall time of the worker's GPU work (a render
   * node: the GPU does the work); N > 0, the CPU time of the worker's
   * process (llvmpipe renders on the worker's own threads) as a part of N
   * thousandths of a CPU, the CPU capacity that counts as the whole GPU.
   * Written before the worker starts; on llvmpipe rewritten on the
   * supervisor's tick as the measured capacity changes (core/sched.h,
   * VgpuCapacity). */
  _Atomic uint32_t cpu_milli;
  uint32_t pad3;
} VgpuGrantPage;

/* Messages on the request socket (one per SOCK_SEQPACKET datagram). */
typedef struct VgpuLedgerAsk {
  uint32_t seq;
  uint32_t kind; /* < VGPU_RES_N_QUOTA */
  uint64_t want; /* total the worker wants to hold of that kind */
} VgpuLedgerAsk;

typedef struct VgpuLedgerAnswer {
  uint32_t seq;
  uint32_t granted;       /* 1: the grant page now covers `want`; 0: refused */
  uint64_t instance_used; /* the instance's usage of that kind (messages) */
} VgpuLedgerAnswer;

/* Screenshots share the request socket (datagrams of other sizes than the
 * ledger's).  The supervisor asks a VM worker for one scanout's image; the
 * worker answers with the image in a memfd it sealed against writes,
 * shrinking and growing (passed with the reply, SCM_RIGHTS), packed rows
 * (stride == width * 4), in `format` (VIRTIO_GPU_FORMAT_*).  The reply is
 * untrusted: the supervisor checks it with vgpu_shot_check(). */
#define VGPU_SHOT_MAGIC 0x544f4853u /* "SHOT" */
#define VGPU_SHOT_MAX_DIM 16384u
typedef struct VgpuShotRequest {
  uint32_t magic;
  uint32_t seq;
  uint32_t head;
  uint32_t pad;
  uint64_t pad2;
} VgpuShotRequest; /* 24 bytes: never the size of a ledger message */

typedef struct VgpuShotReply {
  uint32_t magic;
  uint32_t seq;
  int32_t status; /* 0: the image follows; -ENOENT: the head shows nothing; other -errno */
  uint32_t head;
  uint32_t width, height, stride, format;
} VgpuShotReply; /* 32 bytes */

/* The pixel formats a reply may carry (4 bytes a pixel). */
bool vgpu_shot_format_known(uint32_t format);
/* Checks a status-0 reply and its fd: dimensions 1..VGPU_SHOT_MAX_DIM,
 * stride == width * 4 (overflow-checked), a known format, and an fd that is
 * a memfd sealed with F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_WRITE whose size is
 * exactly stride * height.  Nothing is mapped.  False with *why a static
 * sentence. */
bool vgpu_shot_check(const VgpuShotReply *r, int fd, const char **why);

/* ---- worker side ------------------------------------------------------- */

typedef struct VgpuLedger {
  VgpuSlotPage *slot;
  const VgpuGrantPage *grant;
  int slot_fd, grant_fd, sock; /* owned; -1 when absent */
  bool standalone;             /* pages in private memory, no supervisor */
  uint32_t seq;
  int ask_timeout_ms;
  uint64_t last_instance_used[VGPU_RES_N_QUOTA];
  /* A screenshot request that arrived while waiting for an answer. */
  bool shot_pending;
  VgpuShotRequest shot;
} VgpuLedger;

/* Maps the fds vgpud passed (slot page read-write, grant page read-only)
 * and takes ownership of all three on success. */
VgpuLedger *vgpu_ledger_attach(int slot_fd, int grant_fd, int sock, GError **error);
/* A ledger without a supervisor (unit tests, fuzzing): one worker whose
 * grant is the whole limit (0 = unlimited). */
VgpuLedger *vgpu_ledger_new_standalone(const uint64_t limits[VGPU_RES_N_QUOTA]);
void vgpu_ledger_free(VgpuLedger *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuLedger, vgpu_ledger_free)

/* Returns 0 or -EDQUOT when the instance limit would be crossed or the
 * supervisor did not answer in time (nothing is charged then).  `slot` is
 * kept for the callers' sake and ignored: a ledger is one worker's. */
int vgpu_ledger_reserve(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount);
void vgpu_ledger_release(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount);
/* Adds to a counter kind (frames, commands, bytes, busy time). */
void vgpu_ledger_count(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount);
/* The scheduling settings the supervisor wrote (0: unthrottled / no cap;
 * a standalone ledger has neither). */
uint32_t vgpu_ledger_share_ppm(const VgpuLedger *l);
uint32_t vgpu_ledger_fps_cap(const VgpuLedger *l);
/* How GPU time is charged (the grant page's cpu_milli): 0 wall time, else
 * process CPU time against that many thousandths of a CPU. */
uint32_t vgpu_ledger_cpu_milli(const VgpuLedger *l);
/* Standalone ledgers only (tests): sets what the supervisor would write. */
void vgpu_ledger_standalone_set_sched(VgpuLedger *l, uint32_t share_ppm, uint32_t fps_cap);
void vgpu_ledger_standalone_set_cpu_milli(VgpuLedger *l, uint32_t cpu_milli);
/* What this worker holds (or has counted) of `kind`. */
uint64_t vgpu_ledger_used(const VgpuLedger *l, VgpuResKind kind);
/* For refusal messages: the instance limit (0 = unlimited) and the
 * instance's usage the supervisor reported with its last answer (this
 * worker's own usage when it never asked). */
void vgpu_ledger_describe(const VgpuLedger *l, VgpuResKind kind, uint64_t *limit, uint64_t *used);

/* The request socket (to watch for screenshot requests); -1 without one. */
int vgpu_ledger_fd(const VgpuLedger *l);
/* The next screenshot request: 1 (in *out), 0 none now, or a negative
 * errno (-ECONNRESET: the supervisor closed the socket).  Ledger answers
 * that arrive late are dropped here.  Never blocks. */
int vgpu_ledger_next_shot(VgpuLedger *l, VgpuShotRequest *out);
/* Sends a reply; fd (>= 0) goes with it and stays the caller's. */
int vgpu_ledger_send_shot(VgpuLedger *l, const VgpuShotReply *r, int fd);

/* ---- supervisor side ---------------------------------------------------- */

typedef struct VgpuBook VgpuBook;

/* The fds a new worker gets; the caller passes them to the child and then
 * calls vgpu_book_worker_started() (or _remove() when the spawn failed). */
typedef struct VgpuBookChildFds {
  int slot_fd;  /* slot page, read-write */
  int grant_fd; /* grant page, sealed against writes */
  int sock;     /* the worker's end of the request socketpair */
} VgpuBookChildFds;

typedef struct VgpuBookUsage {
  uint64_t limit[VGPU_RES_N_QUOTA]; /* 0 = unlimited */
  uint64_t used[VGPU_RES_N];        /* quota kinds: live workers, clamped;
                                       counters: history + live */
  /* Kinds whose limit is below what the workers held lately (it was
   * lowered): the sum of that (> limit, each within its grant) and how many
   * workers held some; 0 for kinds within their limit. */
  uint64_t held[VGPU_RES_N_QUOTA];
  uint32_t holders[VGPU_RES_N_QUOTA];
  uint64_t clients, refusals, worker_crashes;
} VgpuBookUsage;

typedef struct VgpuBookWorkerUsage {
  uint64_t used[VGPU_RES_N];
  uint64_t grant[VGPU_RES_N_QUOTA];
  uint64_t peak_vram;
  uint64_t requests;   /* ledger requests answered */
  uint64_t started_ns; /* CLOCK_MONOTONIC */
  pid_t worker_pid, client_pid;
  uid_t client_uid;
  uint32_t instance;
} VgpuBookWorkerUsage;

VgpuBook *vgpu_book_new(void);
void vgpu_book_free(VgpuBook *b);
/* Changes VGPU_LEDGER_MAX_REQUESTS_PER_S for this book (0: no limit). */
void vgpu_book_set_request_limit(VgpuBook *b, uint32_t per_second);
/* Tests only: runs while a grant is being shrunk, between reading the
 * worker's usage and writing the smaller grant, to widen the race the
 * shrink must survive. */
void vgpu_book_set_shrink_hook(VgpuBook *b, void (*hook)(void));
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuBook, vgpu_book_free)

/* Claims an instance record; returns its index or -ENOSPC. */
int vgpu_book_instance_add(VgpuBook *b, const char *name, const uint64_t limits[VGPU_RES_N_QUOTA]);
/* A smaller limit shrinks each worker's grant to what it held lately (its
 * peak over the last VGPU_LEDGER_HOLD_TICKS ticks, never below what it
 * holds now; an eighth more while that does not fit the limit): nothing is
 * taken away, each may re-allocate up to that, and requests for more are
 * refused while the instance is over the limit. */
void vgpu_book_instance_set_limits(VgpuBook *b, uint32_t inst,
                                   const uint64_t limits[VGPU_RES_N_QUOTA]);
/* Frees the record; callers remove its workers first. */
void vgpu_book_instance_remove(VgpuBook *b, uint32_t inst);
bool vgpu_book_instance_usage(VgpuBook *b, uint32_t inst, VgpuBookUsage *out);
/* Workers change their pages while they run: between freeze and thaw,
 * every usage read returns what the quota counters held at the freeze, so
 * one reply's instance totals and per-tenant figures agree.  Only for
 * building a report (nothing may reserve or reclaim meanwhile). */
void vgpu_book_freeze(VgpuBook *b);
void vgpu_book_thaw(VgpuBook *b);
/* The supervisor's tick (every 200 ms while workers live): records each
 * worker's peak usage since the last tick, and, for every instance and
 * quota kind whose grants add up to more than its limit, shrinks each
 * worker's grant to its peak over the last VGPU_LEDGER_HOLD_TICKS ticks
 * (an eighth more while those peaks together exceed the limit). */
void vgpu_book_tick(VgpuBook *b);
void vgpu_book_note_refusal(VgpuBook *b, uint32_t inst);
void vgpu_book_note_crash(VgpuBook *b, uint32_t inst);

/* Creates a worker record with its two pages and request socket; returns
 * the worker's slot number, -ENOSPC when every slot is taken, or another
 * negative errno. */
int vgpu_book_worker_add(VgpuBook *b, uint32_t inst, pid_t client_pid, uid_t client_uid,
                         VgpuBookChildFds *child);
/* The child has its copies: closes the supervisor's copies of the child's
 * fds and records the worker's pid. */
void vgpu_book_worker_started(VgpuBook *b, uint32_t slot, pid_t worker_pid);
/* The supervisor's end of the request socket (non-blocking). */
int vgpu_book_worker_fd(VgpuBook *b, uint32_t slot);
/* Answers what the worker asked.  Never blocks.  Returns 0, or a negative
 * errno with *why set to a static sentence when the worker broke the
 * channel's rules (malformed message, flood, replies not read): the caller
 * kills it.  -ECONNRESET: the worker closed its end (not a fault). */
int vgpu_book_worker_service(VgpuBook *b, uint32_t slot, const char **why);
/* Where vgpu_book_worker_service() hands screenshot replies (fd: the one
 * passed with it, or -1; the hook owns it).  Without a hook a reply is a
 * malformed message. */
typedef void (*VgpuBookShotFn)(void *user, uint32_t slot, const VgpuShotReply *r, int fd);
void vgpu_book_set_shot_hook(VgpuBook *b, VgpuBookShotFn fn, void *user);
/* Sends a screenshot request to the worker (never blocks): 0 or -errno. */
int vgpu_book_worker_ask_shot(VgpuBook *b, uint32_t slot, uint32_t seq, uint32_t head);
bool vgpu_book_worker_usage(VgpuBook *b, uint32_t slot, VgpuBookWorkerUsage *out);
/* Writes the worker's share (ppm of the GPU, 0: unthrottled)
 * and frame-rate cap (0: none) into its grant page. */
void vgpu_book_worker_set_sched(VgpuBook *b, uint32_t slot, uint32_t share_ppm, uint32_t fps_cap);
/* Writes how the worker charges GPU time (VgpuGrantPage.cpu_milli). */
void vgpu_book_worker_set_cpu_milli(VgpuBook *b, uint32_t slot, uint32_t cpu_milli);
/* The worker's busy_ns counter as vgpu_book_worker_usage() reads it
 * (clamped, monotonic), without the rest. */
uint64_t vgpu_book_worker_busy_ns(VgpuBook *b, uint32_t slot);
/* The last request of the worker's that the book refused (the figures
 * are the book's own, never read from the worker's pages): false when
 * none was. */
typedef struct VgpuBookRefusal {
  bool valid;
  uint32_t kind;   /* < VGPU_RES_N_QUOTA */
  uint64_t want;   /* the total the worker asked to hold */
  uint64_t limit;  /* the instance's limit then */
  uint64_t others; /* what the instance's other workers were granted then */
} VgpuBookRefusal;
bool vgpu_book_worker_last_refusal(VgpuBook *b, uint32_t slot, VgpuBookRefusal *out);
/* Drops the worker: its grants return to the instance, its counters go to
 * the instance's history.  Returns the VRAM it held (clamped). */
uint64_t vgpu_book_worker_remove(VgpuBook *b, uint32_t slot);
