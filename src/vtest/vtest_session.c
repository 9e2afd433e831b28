/* Executes vtest commands for one client.  Validation of structure lives in
 * vtest_decode.c; this file checks meaning (handles, boxes, backing sizes,
 * quotas) before anything reaches the renderer. */
#include "vtest/vtest_session.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/profile.h"
#include "core/tenant.h"
#include "core/virgl_stream.h"
#include "util/fd.h"

#define VTEST_CTX_ID 1u
/* Mesa's backing can be a little larger than the tight layout (aligned
 * display-target strides); anything far beyond is refused. */
#define BACKING_SLACK (64u * 1024u)

/* What vtest attaches to a resource of the tenant's table. */
typedef struct VtestBacking {
  void *shm; /* the backing, mapped; its fd is closed once handed over */
  size_t shm_size;
  struct iovec iov; /* must outlive the renderer resource */
} VtestBacking;

typedef VgpuTenantResource VtestResource;

/* A sync object (protocol 3): a 64-bit value that command batches and the
 * client move forward.  The session's table holds one reference; pending
 * waits and timeline submissions hold others. */
typedef struct VtestSync {
  uint32_t id;
  uint32_t refs;
  uint64_t value;
} VtestSync;

/* A SYNC_WAIT not yet satisfied: its eventfd (the client holds a copy)
 * becomes readable when all of its syncs (one with ANY) reach their
 * values.  Signalled entries are dropped (NULL). */
typedef struct VtestWait {
  uint32_t flags;
  uint32_t count, signaled;
  uint64_t deadline_ns;
  int fd;
  VtestSync **syncs;
  uint64_t *values;
} VtestWait;

/* A SUBMIT_CMD2 batch on a ring, whose syncs move when its context fence
 * retires. */
typedef struct VtestSubmit {
  uint64_t fence;
  uint32_t count;
  VtestSync **syncs;
  uint64_t *values;
} VtestSubmit;

struct VtestSession {
  VgpuRenderer *r;
  int sock;
  VtestSessionConfig cfg;
  char name[64];
  bool named;
  bool ctx_created;
  uint32_t version;
  bool v3_agreed;      /* agreed on version 3 at least once */
  uint32_t capset_id;  /* CONTEXT_INIT's, 0: a plain context */
  uint32_t max_handle; /* highest resource handle this session used */
  GHashTable *syncs;   /* id -> VtestSync* */
  uint32_t next_sync_id;
  GQueue waits;                          /* VtestWait*, in arrival order */
  GQueue timelines[VTEST_MAX_TIMELINES]; /* VtestSubmit*, oldest first */
  uint64_t ctx_fence_seq;
  VgpuTenant *tenant;       /* resource table and quota charges */
  VgpuVirglTracker *stream; /* objects and sub-contexts made by command streams */
  uint64_t fence_submitted;
  uint64_t fence_completed;
  GByteArray *out;
  uint8_t *scratch; /* aligned copy of an unaligned command stream */
  size_t scratch_cap;
  VtestEnd end;
  char *end_reason;
  /* Served by a worker loop (vtest_session_attach). */
  VgpuLoop *loop;
  int client_watch, fence_watch;
  int idle_timeout_ms;
  uint8_t *in;
  size_t in_cap, in_len;
};

static bool end_session(VtestSession *s, VtestEnd kind, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);
static void resource_release(void *user, VgpuTenantResource *res, bool *keep_charge);
static VgpuVirglTracker *stream_tracker_new(VtestSession *s);

static bool fences_pending(VtestSession *s) {
  return s->fence_completed != s->fence_submitted;
}

static void on_fence(void *user, uint64_t fence) {
  VtestSession *s = user;
  /* Fences are mergeable: a report of N completes everything <= N. */
  if (fence > s->fence_completed && fence <= s->fence_submitted) {
    s->fence_completed = fence;
    vgpu_guard_progress(s->cfg.guard, fences_pending(s));
  }
}

/* ---- sync objects --------------------------------------------------------- */

static VtestSync *sync_ref(VtestSync *y) {
  y->refs++;
  return y;
}

static void sync_unref(VtestSync *y) {
  if (y && --y->refs == 0)
    g_free(y);
}

static void wait_free(VtestWait *w) {
  for (uint32_t i = 0; i < w->count; i++)
    sync_unref(w->syncs[i]);
  if (w->fd >= 0)
    close(w->fd);
  g_free(w->syncs);
  g_free(w->values);
  g_free(w);
}

static void submit_free(VtestSubmit *sub) {
  for (uint32_t i = 0; i < sub->count; i++)
    sync_unref(sub->syncs[i]);
  g_free(sub->syncs);
  g_free(sub->values);
  g_free(sub);
}

static uint64_t now_ns(void);

static void wait_ready(VtestWait *w) {
  static const uint64_t one = 1;
  (void)!write(w->fd, &one, sizeof(one));
}

/* Waits past their time are forgotten: the client has stopped polling. */
static void waits_collect(VtestSession *s, uint64_t now) {
  for (GList *l = s->waits.head; l;) {
    GList *next = l->next;
    VtestWait *w = l->data;
    if (w->deadline_ns < now) {
      g_queue_delete_link(&s->waits, l);
      wait_free(w);
    }
    l = next;
  }
}

/* As the reference server: a lower value is stored without waking
 * anyone, a higher one wakes the waits it satisfies. */
static void sync_signal(VtestSession *s, VtestSync *y, uint64_t value) {
  if (y->value >= value) {
    y->value = value;
    return;
  }
  y->value = value;
  waits_collect(s, now_ns());
  for (GList *l = s->waits.head; l;) {
    GList *next = l->next;
    VtestWait *w = l->data;
    bool ready = false;
    for (uint32_t i = 0; i < w->count && !ready; i++) {
      if (w->syncs[i] != y || w->values[i] > value)
        continue;
      sync_unref(w->syncs[i]);
      w->syncs[i] = NULL;
      w->signaled++;
      ready = w->signaled == w->count || (w->flags & VTEST_SYNC_WAIT_FLAG_ANY);
    }
    if (ready) {
      wait_ready(w);
      g_queue_delete_link(&s->waits, l);
      wait_free(w);
    }
    l = next;
  }
}

/* A context fence retired: it and every earlier submission on its ring
 * are done (fences are mergeable). */
static void on_ctx_fence(void *user, uint32_t ctx_id, uint32_t ring, uint64_t fence) {
  VtestSession *s = user;
  if (ctx_id != VTEST_CTX_ID || ring >= VTEST_MAX_TIMELINES)
    return;
  GQueue *q = &s->timelines[ring];
  while (!g_queue_is_empty(q) && ((VtestSubmit *)g_queue_peek_head(q))->fence <= fence) {
    VtestSubmit *sub = g_queue_pop_head(q);
    for (uint32_t i = 0; i < sub->count; i++)
      sync_signal(s, sub->syncs[i], sub->values[i]);
    submit_free(sub);
  }
}

/* vtest's policy for a quota refusal: the session ends. */
static void on_refused(void *user, VgpuResKind kind, const char *reason) {
  end_session(user, VTEST_END_QUOTA, "%s", reason);
}

VtestSession *vtest_session_new(VgpuRenderer *r, int sock, const VtestSessionConfig *cfg) {
  VtestSession *s = g_new0(VtestSession, 1);
  s->r = r;
  s->sock = sock;
  s->cfg = *cfg;
  if (s->cfg.max_version == 0 || s->cfg.max_version > VTEST_PROTOCOL_VERSION)
    s->cfg.max_version = VTEST_PROTOCOL_VERSION;
  VgpuTenantPolicy policy = {.refused = on_refused, .release = resource_release, .user = s};
  s->tenant = vgpu_tenant_new(cfg->ledger, cfg->slot, &policy);
  vgpu_throttle_watch(vgpu_tenant_throttle(s->tenant), s->cfg.guard, sock);
  s->stream = stream_tracker_new(s);
  s->out = g_byte_array_sized_new(4096);
  s->client_watch = s->fence_watch = -1;
  s->syncs = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, (GDestroyNotify)sync_unref);
  s->next_sync_id = 1;
  g_queue_init(&s->waits);
  for (guint i = 0; i < VTEST_MAX_TIMELINES; i++)
    g_queue_init(&s->timelines[i]);
  if (s->cfg.max_version > vtest_renderer_max_version(r))
    s->cfg.max_version = vtest_renderer_max_version(r);
  if (s->cfg.max_syncs == 0)
    s->cfg.max_syncs = VTEST_DEFAULT_MAX_SYNCS;
  if (s->cfg.limits.max_wait_syncs == 0)
    s->cfg.limits.max_wait_syncs = VTEST_DEFAULT_MAX_WAIT_SYNCS;
  r->fence_cb = on_fence;
  r->ctx_fence_cb = on_ctx_fence;
  r->fence_user = s;
  return s;
}

uint32_t vtest_renderer_max_version(const VgpuRenderer *r) {
  const VgpuRendererOps *o = r->ops;
  return o->resource_create_blob && o->export_blob && o->context_create_fence ? 3u : 2u;
}

void vtest_session_free(VtestSession *s) {
  if (!s)
    return;
  if (s->loop) {
    vgpu_loop_remove(s->loop, s->client_watch);
    vgpu_loop_remove(s->loop, s->fence_watch);
    vgpu_loop_set_timer(s->loop, -1, NULL, NULL);
  }
  /* Resources go first (detached from the context), then the context. */
  g_clear_pointer(&s->tenant, vgpu_tenant_free);
  if (s->ctx_created)
    s->r->ops->context_destroy(s->r, VTEST_CTX_ID);
  /* Last: it releases what it took over from released resources (its
   * charges go straight to the ledger, not through the tenant). */
  vgpu_virgl_tracker_free(s->stream);
  g_queue_clear_full(&s->waits, (GDestroyNotify)wait_free);
  for (guint i = 0; i < VTEST_MAX_TIMELINES; i++)
    g_queue_clear_full(&s->timelines[i], (GDestroyNotify)submit_free);
  g_hash_table_unref(s->syncs);
  s->r->fence_cb = NULL;
  s->r->ctx_fence_cb = NULL;
  s->r->fence_user = NULL;
  g_byte_array_unref(s->out);
  g_free(s->scratch);
  g_free(s->in);
  g_free(s->end_reason);
  g_free(s);
}

VtestEnd vtest_session_end_kind(const VtestSession *s) { return s->end; }
const char *vtest_session_end_reason(const VtestSession *s) {
  return s->end_reason ? s->end_reason : "";
}
const char *vtest_session_client_name(const VtestSession *s) { return s->name; }
guint vtest_session_resource_count(const VtestSession *s) {
  return vgpu_tenant_resource_count(s->tenant);
}
guint vtest_session_sync_count(const VtestSession *s) {
  return g_hash_table_size(s->syncs);
}
guint vtest_session_wait_count(const VtestSession *s) {
  return s->waits.length;
}
guint vtest_session_timeline_pending(const VtestSession *s) {
  guint n = 0;
  for (guint i = 0; i < VTEST_MAX_TIMELINES; i++)
    n += s->timelines[i].length;
  return n;
}
uint64_t vtest_session_vram(const VtestSession *s) {
  return vgpu_tenant_vram(s->tenant);
}
bool vtest_session_work_pending(VtestSession *s) {
  if (fences_pending(s))
    s->r->ops->poll(s->r);
  return fences_pending(s);
}

const char *vtest_end_name(VtestEnd e) {
  static const char *const names[] = {"none",     "disconnect", "violation", "quota",
                                      "renderer", "io",         "idle",      "gone"};
  return (unsigned)e < G_N_ELEMENTS(names) ? names[e] : "?";
}

static bool end_session(VtestSession *s, VtestEnd kind, const char *fmt, ...) {
  if (s->end == VTEST_END_NONE) {
    va_list ap;
    va_start(ap, fmt);
    s->end_reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    s->end = kind;
    if (s->loop)
      vgpu_loop_quit(s->loop);
  }
  return false;
}

/* ---- replies ---------------------------------------------------------- */

static void out_u32(VtestSession *s, uint32_t v) {
  v = GUINT32_TO_LE(v);
  g_byte_array_append(s->out, (const guint8 *)&v, 4);
}

static void out_hdr(VtestSession *s, uint32_t len, uint32_t id) {
  out_u32(s, len);
  out_u32(s, id);
}

bool vtest_session_flush(VtestSession *s) {
  if (s->out->len == 0)
    return true;
  int r = 0;
  if (s->sock >= 0)
    r = vgpu_write_all(s->sock, s->out->data, s->out->len);
  g_byte_array_set_size(s->out, 0);
  if (r < 0)
    return end_session(s, VTEST_END_IO, "writing a reply failed: %s", g_strerror(-r));
  return true;
}

/* The fd travels in its own sendmsg after the reply bytes: Mesa reads the
 * header with read() and would drop a descriptor attached to it. */
static bool send_fd(VtestSession *s, int fd) {
  if (!vtest_session_flush(s))
    return false;
  if (s->sock < 0)
    return true;
  int r = vgpu_send_fd(s->sock, fd);
  if (r < 0)
    return end_session(s, VTEST_END_IO, "passing a buffer fd failed: %s", g_strerror(-r));
  return true;
}

/* ---- context, fences ---------------------------------------------------- */

static void count(VtestSession *s, VgpuResKind kind, uint64_t amount) {
  vgpu_tenant_count(s->tenant, kind, amount);
}

/* GPU time: counted, and taken from the tenant's share. */
static void busy(VtestSession *s, uint64_t ns) {
  vgpu_throttle_charge(vgpu_tenant_throttle(s->tenant), ns);
}

static bool throttle_gone(VtestSession *s, const char *what) {
  return end_session(s, VTEST_END_GONE, "client left while its %s was held back for its GPU share",
                     what);
}

/* Holds the next submission back while the tenant is over its share. */
static bool throttle_submit(VtestSession *s) {
  return vgpu_throttle_submit(vgpu_tenant_throttle(s->tenant)) || throttle_gone(s, "submission");
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The renderer context is created by the first command that needs it. */
static bool ensure_context(VtestSession *s) {
  if (s->ctx_created)
    return true;
  if (!vgpu_tenant_context_charge(s->tenant, "renderer context"))
    return false;
  int r = s->r->ops->context_create(s->r, VTEST_CTX_ID, s->capset_id, s->name);
  if (r < 0) {
    vgpu_tenant_context_release(s->tenant);
    return end_session(s, VTEST_END_RENDERER, "renderer context creation failed: %s",
                       g_strerror(-r));
  }
  s->ctx_created = true;
  return true;
}

/* Sleeps on the renderer's fence fd when it has one (sync thread), else
 * polls it with 200 us sleeps between; never spins.  The client's socket
 * is watched beside it: a client that hangs up while its work runs ends
 * the session at once (the worker then exits without waiting for the
 * renderer; a GPU timeout is the guard's).  The socket is polled for
 * POLLHUP (peer closed or died), not POLLRDHUP: a client that only shut
 * down its sending side still reads replies, and POLLRDHUP would then stay
 * set and turn this wait into a spin. */
static bool wait_fences(VtestSession *s) {
  uint64_t t0 = now_ns();
  bool gone = false;
  s->r->ops->poll(s->r);
  vgpu_guard_leave(s->cfg.guard); /* the socket is watched here */
  /* Without a client (fuzzing) there is nobody to wait for. */
  while (fences_pending(s) && !gone && s->sock >= 0) {
    int fd = s->r->ops->get_poll_fd(s->r);
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->sock, .events = 0}};
    int n = poll(p, 2, fd >= 0 ? 100 : 0);
    if (n > 0 && (p[1].revents & (POLLHUP | POLLERR)))
      gone = true;
    else if (fd < 0)
      g_usleep(200);
    s->r->ops->poll(s->r);
  }
  vgpu_guard_enter(s->cfg.guard);
  busy(s, now_ns() - t0);
  if (gone)
    return end_session(s, VTEST_END_GONE,
                       "client left while waiting for its GPU work (fence %" G_GUINT64_FORMAT
                       " of %" G_GUINT64_FORMAT " done)",
                       s->fence_completed, s->fence_submitted);
  return true;
}

/* ---- resources ---------------------------------------------------------- */

/* The tenant's release hook: the renderer's object, then the backing;
 * the tenant releases the charges. */
static void resource_release(void *user, VgpuTenantResource *res, bool *keep_charge) {
  VtestSession *s = user;
  VtestBacking *b = res->priv;
  if (s->ctx_created)
    s->r->ops->ctx_detach_resource(s->r, VTEST_CTX_ID, res->desc.handle);
  s->r->ops->resource_unref(s->r, res->desc.handle);
  if (b && b->shm)
    munmap(b->shm, b->shm_size);
  g_free(b);
  /* Objects made by command streams may keep it alive: so does its charge,
   * which the tracker takes over (and releases when nothing refers to it). */
  vgpu_virgl_tracker_resource_gone(s->stream, res->desc.handle, res->charge);
  *keep_charge = true;
}

static VtestBacking *backing_of(const VtestResource *res) {
  return res->priv;
}

/* A sealed memfd: the client maps it, but cannot shrink it under us. */
static int create_backing(size_t size, void **map) {
  vgpu_autofd int fd = memfd_create("vgpu-vtest", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return -errno;
  if (ftruncate(fd, (off_t)size) < 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
    return -errno;
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return -errno;
  *map = p;
  return vgpu_steal_fd(&fd);
}

/* A handle for a resource the server names (protocol 3, blobs): above
 * every handle this session has used, as Mesa continues its own counter
 * from the id a blob gets, and never one in use. */
static uint32_t pick_handle(VtestSession *s) {
  uint32_t h = s->max_handle + 1;
  while (h == 0 || vgpu_tenant_resource_get(s->tenant, h))
    h++;
  return h;
}

static void note_handle(VtestSession *s, uint32_t h) {
  s->max_handle = MAX(s->max_handle, h);
}

/* Creates the renderer's resource for a tenant entry already charged, and
 * its shared-memory backing; the fd (or -1) for the client in *fd. */
static bool resource_finish(VtestSession *s, VtestResource *res, uint32_t data_size, int *fd) {
  uint32_t h = res->desc.handle;
  VtestBacking *b = g_new0(VtestBacking, 1);
  /* The fd goes to the client (protocol 2) and is closed by the caller
   * either way: the mapping keeps the memory, and a worker holding one fd
   * per resource would run into RLIMIT_NOFILE long before any quota. */
  vgpu_autofd int shm_fd = -1;
  if (data_size > 0) {
    shm_fd = create_backing(data_size, &b->shm);
    if (shm_fd < 0) {
      int e = -shm_fd;
      g_free(b);
      vgpu_tenant_resource_forget(s->tenant, h);
      return end_session(s, VTEST_END_RENDERER, "cannot allocate a %u-byte backing: %s", data_size,
                         g_strerror(e));
    }
    b->shm_size = data_size;
    b->iov.iov_base = b->shm;
    b->iov.iov_len = data_size;
  }
  int r = s->r->ops->resource_create(s->r, &res->desc, b->shm ? &b->iov : NULL, b->shm ? 1 : 0);
  if (r < 0) {
    if (b->shm)
      munmap(b->shm, b->shm_size);
    g_free(b);
    vgpu_tenant_resource_forget(s->tenant, h);
    return end_session(s, VTEST_END_VIOLATION, "renderer refused resource %u: %s", h,
                       g_strerror(-r));
  }
  s->r->ops->ctx_attach_resource(s->r, VTEST_CTX_ID, h);
  res->priv = b;
  *fd = vgpu_steal_fd(&shm_fd);
  return true;
}

static bool cmd_resource_create(VtestSession *s, const VtestCmd *cmd, bool v2) {
  VgpuResourceDesc desc = cmd->u.create.desc;
  const VgpuResourceDesc *d = &desc;
  uint32_t data_size = cmd->u.create.data_size;
  const char *why = NULL;
  uint64_t size;
  bool server_ids = s->version >= 3;

  if (server_ids && d->handle != 0)
    return end_session(s, VTEST_END_VIOLATION,
                       "resource handle %u at protocol version 3, where the server picks them",
                       d->handle);
  if (!server_ids && d->handle == 0)
    return end_session(s, VTEST_END_VIOLATION, "resource handle 0 is reserved");
  if (!server_ids && vgpu_tenant_resource_get(s->tenant, d->handle))
    return end_session(s, VTEST_END_VIOLATION, "resource handle %u is already in use", d->handle);
  int r = vgpu_resource_size(d, &size, &why);
  if (r < 0)
    return end_session(s, VTEST_END_VIOLATION, "invalid resource %u: %s", d->handle,
                       why ? why : g_strerror(-r));
  if ((uint64_t)data_size > 2 * size + BACKING_SLACK)
    return end_session(s, VTEST_END_VIOLATION,
                       "resource %u asks for a %u-byte backing, far beyond its %" G_GUINT64_FORMAT
                       " bytes",
                       d->handle, data_size, size);
  if (!ensure_context(s))
    return false;
  if (server_ids)
    desc.handle = pick_handle(s);
  note_handle(s, desc.handle);

  /* The renderer's texture and the shm backing both exist. */
  uint64_t bytes = size + (uint64_t)data_size;
  char what[64];
  g_snprintf(what, sizeof(what), "resource %u", d->handle);
  VtestResource *res = vgpu_tenant_resource_add(s->tenant, d, bytes, what);
  if (!res)
    return false; /* the refusal ended the session */
  vgpu_autofd int shm_fd = -1;
  if (!resource_finish(s, res, data_size, &shm_fd))
    return false;
  if (server_ids) {
    out_hdr(s, 1, cmd->id);
    out_u32(s, desc.handle);
  }
  if (v2 && shm_fd >= 0)
    return send_fd(s, shm_fd);
  return true;
}

/* ---- protocol 3 ----------------------------------------------------------- */

/* RESOURCE_CREATE_BLOB.  Host3d blobs (types 2 and 3) claim the resource a
 * command stream made under blob_id: the stream tracker charged it, and
 * the blob takes that charge over.  Guest memory (types 1 and 3) is a
 * sealed memfd of `size` bytes, charged as well. */
static bool cmd_blob(VtestSession *s, const VtestCmd *cmd) {
  uint32_t type = cmd->u.blob.type, flags = cmd->u.blob.flags;
  uint64_t size = cmd->u.blob.size, blob_id = cmd->u.blob.blob_id;
  bool host = type != VTEST_BLOB_MEM_GUEST, guest = type != VTEST_BLOB_MEM_HOST3D;
  VgpuResourceDesc desc = {0};
  uint64_t charge = 0;

  if (guest && size > UINT32_MAX)
    return end_session(s, VTEST_END_QUOTA,
                       "blob of %" G_GUINT64_FORMAT " bytes of guest memory, beyond 4 GiB", size);
  if (host) {
    if (!vgpu_virgl_tracker_blob_take(s->stream, blob_id, &desc, &charge))
      return end_session(
          s, VTEST_END_VIOLATION,
          "blob names blob id %" G_GUINT64_FORMAT ", which no command stream created", blob_id);
    if (size > 2 * charge + BACKING_SLACK)
      return end_session(s, VTEST_END_VIOLATION,
                         "blob of %" G_GUINT64_FORMAT " bytes for a %" G_GUINT64_FORMAT
                         "-byte resource",
                         size, charge);
  } else {
    if (blob_id != 0)
      return end_session(s, VTEST_END_VIOLATION, "guest blob with blob id %" G_GUINT64_FORMAT,
                         blob_id);
    /* What the tenant's table needs to know of it: a byte buffer. */
    desc.target = 0;
    desc.format = 64; /* VIRGL_FORMAT_R8_UNORM */
    desc.width = (uint32_t)size;
    desc.height = desc.depth = desc.array_size = 1;
  }
  if (guest)
    charge += size;
  if (!ensure_context(s))
    return false;
  desc.handle = pick_handle(s);
  note_handle(s, desc.handle);
  char what[64];
  g_snprintf(what, sizeof(what), "blob resource %u", desc.handle);
  VtestResource *res = vgpu_tenant_resource_add(s->tenant, &desc, charge, what);
  if (!res)
    return false;

  VtestBacking *b = g_new0(VtestBacking, 1);
  vgpu_autofd int fd = -1;
  if (guest) {
    fd = create_backing((size_t)size, &b->shm);
    if (fd < 0) {
      int e = -fd;
      g_free(b);
      vgpu_tenant_resource_forget(s->tenant, desc.handle);
      return end_session(s, VTEST_END_RENDERER,
                         "cannot allocate a %" G_GUINT64_FORMAT "-byte blob: %s", size,
                         g_strerror(e));
    }
    b->shm_size = (size_t)size;
    b->iov.iov_base = b->shm;
    b->iov.iov_len = (size_t)size;
  }
  VgpuBlobArgs args = {.handle = desc.handle,
                       .ctx_id = VTEST_CTX_ID,
                       .blob_mem = type,
                       .blob_flags = flags,
                       .blob_id = blob_id,
                       .size = size,
                       .iov = guest ? &b->iov : NULL,
                       .niov = guest ? 1 : 0};
  int r = s->r->ops->resource_create_blob(s->r, &args);
  if (r < 0) {
    if (b->shm)
      munmap(b->shm, b->shm_size);
    g_free(b);
    vgpu_tenant_resource_forget(s->tenant, desc.handle);
    return end_session(s, VTEST_END_VIOLATION, "renderer refused blob %u: %s", desc.handle,
                       g_strerror(-r));
  }
  res->priv = b;
  if (type == VTEST_BLOB_MEM_HOST3D) {
    r = s->r->ops->export_blob(s->r, desc.handle, &fd);
    if (r < 0)
      return end_session(s, VTEST_END_RENDERER, "exporting blob %u failed: %s", desc.handle,
                         g_strerror(-r));
  }
  s->r->ops->ctx_attach_resource(s->r, VTEST_CTX_ID, desc.handle);
  out_hdr(s, 1, VTEST_CMD_RESOURCE_CREATE_BLOB);
  out_u32(s, desc.handle);
  return send_fd(s, fd);
}

static VtestSync *sync_get(VtestSession *s, uint32_t id) {
  return g_hash_table_lookup(s->syncs, GUINT_TO_POINTER(id));
}

static bool cmd_sync_create(VtestSession *s, const VtestCmd *cmd) {
  guint n = g_hash_table_size(s->syncs);
  if (n >= s->cfg.max_syncs)
    return end_session(s, VTEST_END_QUOTA, "sync object refused: %u held, limit %u", n,
                       s->cfg.max_syncs);
  uint32_t id = s->next_sync_id;
  while (id == 0 || sync_get(s, id))
    id++;
  s->next_sync_id = id + 1;
  VtestSync *y = g_new0(VtestSync, 1);
  y->id = id;
  y->refs = 1;
  y->value = cmd->u.sync.value;
  g_hash_table_insert(s->syncs, GUINT_TO_POINTER(id), y);
  out_hdr(s, 1, VTEST_CMD_SYNC_CREATE);
  out_u32(s, id);
  return true;
}

static bool unknown_sync(VtestSession *s, const VtestCmd *cmd, uint32_t id) {
  return end_session(s, VTEST_END_VIOLATION, "%s names sync %u, which does not exist",
                     vtest_cmd_name(cmd->id), id);
}

static bool cmd_sync(VtestSession *s, const VtestCmd *cmd) {
  VtestSync *y = sync_get(s, cmd->u.sync.id);
  if (!y)
    return unknown_sync(s, cmd, cmd->u.sync.id);
  switch (cmd->id) {
  case VTEST_CMD_SYNC_UNREF:
    g_hash_table_remove(s->syncs, GUINT_TO_POINTER(cmd->u.sync.id));
    return true;
  case VTEST_CMD_SYNC_READ:
    out_hdr(s, 2, VTEST_CMD_SYNC_READ);
    out_u32(s, (uint32_t)y->value);
    out_u32(s, (uint32_t)(y->value >> 32));
    return true;
  default: /* SYNC_WRITE */
    sync_signal(s, y, cmd->u.sync.value);
    return true;
  }
}

/* SYNC_WAIT never blocks: the client gets an eventfd that becomes readable
 * when the wait is satisfied (at once if it already is). */
static bool cmd_sync_wait(VtestSession *s, const VtestCmd *cmd) {
  uint32_t n = cmd->u.wait.count;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id;
    uint64_t v;
    vtest_sync_entry(cmd->u.wait.syncs, i, &id, &v);
    if (!sync_get(s, id))
      return unknown_sync(s, cmd, id);
  }
  uint64_t now = now_ns();
  waits_collect(s, now);
  if (s->waits.length >= VTEST_MAX_PENDING_WAITS)
    return end_session(s, VTEST_END_QUOTA, "sync wait refused: %u waits pending, limit %u",
                       s->waits.length, VTEST_MAX_PENDING_WAITS);
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return end_session(s, VTEST_END_RENDERER, "eventfd for a sync wait: %s", g_strerror(errno));
  VtestWait *w = g_new0(VtestWait, 1);
  w->fd = fd;
  w->flags = cmd->u.wait.flags;
  w->syncs = g_new0(VtestSync *, MAX(n, 1));
  w->values = g_new0(uint64_t, MAX(n, 1));
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id;
    uint64_t v;
    vtest_sync_entry(cmd->u.wait.syncs, i, &id, &v);
    VtestSync *y = sync_get(s, id);
    if (y->value < v) { /* already signalled ones are skipped */
      w->syncs[w->count] = sync_ref(y);
      w->values[w->count++] = v;
    }
  }
  bool ready = w->count == 0 || ((w->flags & VTEST_SYNC_WAIT_FLAG_ANY) && w->count < n);
  if (ready)
    wait_ready(w);
  uint32_t ms = MIN(cmd->u.wait.timeout_ms, VTEST_MAX_WAIT_MS);
  w->deadline_ns = now + (uint64_t)ms * 1000000u;
  out_hdr(s, 0, VTEST_CMD_SYNC_WAIT);
  bool ok = send_fd(s, w->fd);
  if (!ok || ready || ms == 0)
    wait_free(w);
  else
    g_queue_push_tail(&s->waits, w);
  return ok;
}

static bool stream_check(VtestSession *s, const void *dw, uint32_t ndw);

/* An aligned view of ndw dwords that may sit at any byte offset. */
static const void *aligned_dwords(VtestSession *s, const void *dw, uint32_t ndw) {
  if (ndw == 0 || ((uintptr_t)dw & 3) == 0)
    return dw;
  size_t bytes = (size_t)ndw * 4;
  if (s->scratch_cap < bytes) {
    g_free(s->scratch);
    s->scratch = g_malloc(bytes);
    s->scratch_cap = bytes;
  }
  memcpy(s->scratch, dw, bytes);
  return s->scratch;
}

static bool implicit_fence(VtestSession *s);

/* SUBMIT_CMD2: every batch and sync is checked before the first reaches
 * the renderer.  A batch with RING_IDX moves its syncs when its context
 * fence retires; one without, right after it is submitted.  Unlike the
 * reference server, an implicit fence follows the batches too: a busy
 * wait then covers this work as well, and so does the GPU timeout. */
static bool cmd_submit2(VtestSession *s, const VtestCmd *cmd) {
  uint32_t nb = cmd->u.submit2.batch_count;
  for (uint32_t i = 0; i < nb; i++) {
    VtestBatch b;
    vtest_submit2_batch(cmd, i, &b);
    for (uint32_t j = 0; j < b.sync_count; j++) {
      uint32_t id;
      uint64_t v;
      vtest_sync_entry(b.syncs, j, &id, &v);
      if (!sync_get(s, id))
        return unknown_sync(s, cmd, id);
    }
  }
  if (!ensure_context(s) || !throttle_submit(s))
    return false;
  for (uint32_t i = 0; i < nb; i++) {
    VtestBatch b;
    vtest_submit2_batch(cmd, i, &b);
    const void *dw = aligned_dwords(s, b.cmd, b.cmd_size);
    if (!stream_check(s, dw, b.cmd_size))
      return false;
    uint64_t t0 = now_ns();
    int r = s->r->ops->submit(s->r, VTEST_CTX_ID, dw, b.cmd_size);
    busy(s, now_ns() - t0);
    if (r < 0)
      return end_session(s, VTEST_END_VIOLATION, "renderer rejected a %u-dword command stream: %s",
                         b.cmd_size, g_strerror(-r));
    if (b.sync_count == 0)
      continue;
    if (!(b.flags & VTEST_SUBMIT2_FLAG_RING_IDX)) {
      for (uint32_t j = 0; j < b.sync_count; j++) {
        uint32_t id;
        uint64_t v;
        vtest_sync_entry(b.syncs, j, &id, &v);
        sync_signal(s, sync_get(s, id), v);
      }
      continue;
    }
    VtestSubmit *sub = g_new0(VtestSubmit, 1);
    sub->fence = ++s->ctx_fence_seq;
    sub->syncs = g_new0(VtestSync *, b.sync_count);
    sub->values = g_new0(uint64_t, b.sync_count);
    for (uint32_t j = 0; j < b.sync_count; j++) {
      uint32_t id;
      vtest_sync_entry(b.syncs, j, &id, &sub->values[j]);
      sub->syncs[sub->count++] = sync_ref(sync_get(s, id));
    }
    /* Queued first: a renderer may report the fence from inside. */
    g_queue_push_tail(&s->timelines[b.ring_idx], sub);
    r = s->r->ops->context_create_fence(s->r, VTEST_CTX_ID, b.ring_idx, sub->fence);
    if (r < 0)
      return end_session(s, VTEST_END_RENDERER, "creating a context fence failed: %s",
                         g_strerror(-r));
  }
  return nb == 0 || implicit_fence(s);
}

static bool cmd_get_param(VtestSession *s, const VtestCmd *cmd) {
  bool known = cmd->u.param == VTEST_PARAM_MAX_TIMELINE_COUNT;
  out_hdr(s, 2, VTEST_CMD_GET_PARAM);
  out_u32(s, known ? 1 : 0);
  out_u32(s, known ? VTEST_MAX_TIMELINES : 0);
  return true;
}

static bool cmd_get_capset(VtestSession *s, const VtestCmd *cmd) {
  uint32_t ver = 0, size = 0;
  int r = s->r->ops->get_capset(s->r, cmd->u.capset.id, &ver, &size);
  if (r < 0 || size == 0 || cmd->u.capset.version > ver) {
    out_hdr(s, 1, VTEST_CMD_GET_CAPSET);
    out_u32(s, 0);
    return true;
  }
  if (size % 4)
    return end_session(s, VTEST_END_RENDERER, "capability set %u has %u bytes, not whole dwords",
                       cmd->u.capset.id, size);
  guint off = s->out->len;
  out_hdr(s, 1 + size / 4, VTEST_CMD_GET_CAPSET);
  out_u32(s, 1);
  g_byte_array_set_size(s->out, off + 12 + size);
  memset(s->out->data + off + 12, 0, size);
  r = s->r->ops->fill_capset(s->r, cmd->u.capset.id, cmd->u.capset.version,
                             s->out->data + off + 12);
  if (r < 0)
    return end_session(s, VTEST_END_RENDERER, "filling capability set %u failed", cmd->u.capset.id);
  return true;
}

static bool cmd_context_init(VtestSession *s, const VtestCmd *cmd) {
  uint32_t id = cmd->u.capset_id, ver, size;
  if (s->ctx_created) {
    if (id == s->capset_id)
      return true;
    return end_session(s, VTEST_END_VIOLATION,
                       "CONTEXT_INIT with capability set %u for a context made with %u", id,
                       s->capset_id);
  }
  if (s->r->ops->get_capset(s->r, id, &ver, &size) < 0 || size == 0)
    return end_session(s, VTEST_END_VIOLATION,
                       "CONTEXT_INIT with capability set %u, which the renderer lacks", id);
  s->capset_id = id;
  return ensure_context(s);
}

static bool cmd_resource_unref(VtestSession *s, uint32_t handle) {
  /* Unknown handles are ignored, as the reference server does: harmless. */
  vgpu_tenant_resource_remove(s->tenant, handle);
  return true;
}

/* Checks the box against the level and returns the tightly packed size of
 * the transferred region (what the renderer reads or writes). */
static bool check_box(VtestSession *s, const VtestResource *res, const VtestTransfer *t,
                      uint64_t *tight, uint64_t *row_bytes, uint64_t *image_bytes) {
  const VgpuResourceDesc *d = &res->desc;
  const VgpuBox *b = &t->box;
  const char *why = NULL;
  if (vgpu_resource_check_box(
          d, t->level, &(VgpuResourceBox){b->x, b->y, b->z, b->w, b->h, b->d}, &why) < 0)
    return end_session(s, VTEST_END_VIOLATION,
                       "transfer box %ux%ux%u at %u,%u,%u outside resource %u (target %u, "
                       "%ux%ux%u, %u layers, level %u): %s",
                       b->w, b->h, b->d, b->x, b->y, b->z, t->handle, d->target, d->width,
                       d->height, d->depth, d->array_size, t->level, why);
  VgpuFormatInfo fi;
  if (!vgpu_format_info(d->format, &fi))
    return end_session(s, VTEST_END_VIOLATION, "transfer on resource %u of unknown format",
                       t->handle);
  uint64_t bw = (b->w + fi.block_w - 1) / fi.block_w;
  uint64_t bh = (b->h + fi.block_h - 1) / fi.block_h;
  *row_bytes = bw * fi.block_bytes;
  *image_bytes = *row_bytes * bh;
  *tight = *image_bytes * b->d; /* all factors < 2^32 and small: no overflow */
  return true;
}

static bool cmd_transfer2(VtestSession *s, const VtestCmd *cmd, VgpuTransferDir dir) {
  const VtestTransfer *t = &cmd->u.transfer;
  VtestResource *res = vgpu_tenant_resource_get(s->tenant, t->handle);
  if (!res)
    return end_session(s, VTEST_END_VIOLATION, "transfer on unknown resource %u", t->handle);
  const VtestBacking *bk = backing_of(res);
  if (!bk->shm)
    return end_session(s, VTEST_END_VIOLATION, "transfer on resource %u, which has no backing",
                       t->handle);
  uint64_t tight = 0, row = 0, img = 0;
  if (!check_box(s, res, t, &tight, &row, &img))
    return false;
  /* data_size is not checked: Mesa 22.3 sends aligned sizes larger than the
   * backing.  What the renderer touches is offset + tight. */
  if ((uint64_t)t->offset + tight > bk->shm_size)
    return end_session(s, VTEST_END_VIOLATION,
                       "transfer on resource %u reaches byte %" G_GUINT64_FORMAT
                       " of a %zu-byte backing",
                       t->handle, (uint64_t)t->offset + tight, bk->shm_size);
  uint64_t t0 = now_ns();
  int r = s->r->ops->transfer(s->r, VTEST_CTX_ID, t->handle, dir, t->level, 0, 0, &t->box,
                              t->offset, NULL, 0);
  if (r < 0)
    return end_session(s, VTEST_END_VIOLATION, "renderer refused transfer on resource %u: %s",
                       t->handle, g_strerror(-r));
  /* A read-back waits for the rendering it reads: GPU time. */
  if (dir == VGPU_TRANSFER_FROM_HOST)
    busy(s, now_ns() - t0);
  if (dir == VGPU_TRANSFER_FROM_HOST && (res->desc.bind & VGPU_BIND_DISPLAY_TARGET)) {
    count(s, VGPU_RES_FRAMES, 1);
    /* The frame boundary: the frame-rate cap spaces frames here. */
    if (!vgpu_throttle_frame(vgpu_tenant_throttle(s->tenant)))
      return throttle_gone(s, "frame");
  }
  return true;
}

/* Protocol 0 transfers carry the data inline in both directions.  The
 * bytes a transfer may name are bounded by what its box covers in that
 * resource (with the strides the renderer will use) plus a little slack:
 * a read-back allocates only what the renderer writes. */
#define V0_TRANSFER_SLACK (64u * 1024u)

static bool cmd_transfer_v0(VtestSession *s, const VtestCmd *cmd, VgpuTransferDir dir) {
  const VtestTransfer *t = &cmd->u.transfer;
  VtestResource *res = vgpu_tenant_resource_get(s->tenant, t->handle);
  if (!res)
    return end_session(s, VTEST_END_VIOLATION, "transfer on unknown resource %u", t->handle);
  uint64_t tight = 0, row = 0, img = 0, level_row = 0, level_img = 0;
  uint32_t lw, lh, ld;
  if (!check_box(s, res, t, &tight, &row, &img))
    return false;
  /* Zero strides mean the level's own, as the renderer reads them. */
  (void)vgpu_resource_level_layout(&res->desc, t->level, &level_row, &level_img, &lw, &lh, &ld);
  uint64_t stride = t->stride ? t->stride : MAX(level_row, row);
  uint64_t layer = t->layer_stride ? t->layer_stride : MAX(level_img, img);
  if (stride < row || layer < img)
    return end_session(s, VTEST_END_VIOLATION, "transfer strides smaller than the box");
  /* Bytes the renderer walks with these strides (each factor < 2^32). */
  uint64_t rows = row ? img / row : 0;
  uint64_t need = (t->box.d - 1) * layer + (rows - 1) * stride + row;
  /* The same box at the resource's own strides: what an honest client
   * needs.  Strides may pad rows and layers, not multiply them. */
  uint64_t real = (t->box.d - 1) * MAX(level_img, img) + (rows - 1) * MAX(level_row, row) + row;
  if (t->box.d == 0 || rows == 0)
    need = real = 0;
  if (need > 2 * real + V0_TRANSFER_SLACK)
    return end_session(s, VTEST_END_VIOLATION,
                       "transfer strides %u/%u on resource %u span %" G_GUINT64_FORMAT
                       " bytes for a box of %" G_GUINT64_FORMAT,
                       t->stride, t->layer_stride, t->handle, need, real);
  if (need > t->data_size)
    return end_session(s, VTEST_END_VIOLATION,
                       "transfer of %u bytes cannot hold the %" G_GUINT64_FORMAT "-byte box",
                       t->data_size, need);
  if ((uint64_t)t->data_size > need + V0_TRANSFER_SLACK)
    return end_session(s, VTEST_END_VIOLATION,
                       "transfer of %u bytes on resource %u, whose box covers %" G_GUINT64_FORMAT
                       " bytes",
                       t->data_size, t->handle, need);
  if (t->data_size == 0)
    return true; /* an empty box: nothing to move, and no reply bytes */
  if (need == 0 && dir == VGPU_TRANSFER_FROM_HOST) {
    g_byte_array_set_size(s->out, s->out->len + t->data_size);
    memset(s->out->data + s->out->len - t->data_size, 0, t->data_size);
    return true;
  }
  size_t n = dir == VGPU_TRANSFER_TO_HOST ? t->data_size : (size_t)need;
  void *buf = dir == VGPU_TRANSFER_TO_HOST ? (void *)t->data : g_try_malloc0(n);
  if (!buf)
    return end_session(s, VTEST_END_RENDERER, "out of memory for a %zu-byte read-back", n);
  struct iovec iov = {.iov_base = buf, .iov_len = n};
  int r = s->r->ops->transfer(s->r, VTEST_CTX_ID, t->handle, dir, t->level, t->stride,
                              t->layer_stride, &t->box, 0, &iov, 1);
  if (dir == VGPU_TRANSFER_FROM_HOST) {
    if (r >= 0) {
      /* raw, no header; the client reads data_size bytes */
      g_byte_array_append(s->out, buf, (guint)n);
      g_byte_array_set_size(s->out, s->out->len + (t->data_size - n));
      memset(s->out->data + s->out->len - (t->data_size - n), 0, t->data_size - n);
    }
    g_free(buf);
  }
  if (r < 0)
    return end_session(s, VTEST_END_VIOLATION, "renderer refused transfer on resource %u: %s",
                       t->handle, g_strerror(-r));
  return true;
}

/* ---- command streams: what they create is charged (core/virgl_stream.c) -- */

static bool stream_reserve(void *user, VgpuResKind kind, uint64_t amount, const char *what) {
  return vgpu_tenant_charge(((VtestSession *)user)->tenant, kind, amount, what);
}
/* Straight to the ledger: the tracker outlives the tenant at teardown. */
static void stream_release(void *user, VgpuResKind kind, uint64_t amount) {
  VtestSession *s = user;
  if (s->cfg.ledger && amount)
    vgpu_ledger_release(s->cfg.ledger, s->cfg.slot, kind, amount);
}
static bool stream_has_resource(void *user, uint32_t handle) {
  VtestSession *s = user;
  return s->tenant && vgpu_tenant_resource_get(s->tenant, handle) != NULL;
}

static VgpuVirglTracker *stream_tracker_new(VtestSession *s) {
  VgpuVirglCharger ch = {.reserve = stream_reserve,
                         .release = stream_release,
                         .has_resource = stream_has_resource,
                         .user = s};
  return vgpu_virgl_tracker_new(s->cfg.max_stream_objects, &ch);
}

static bool stream_check(VtestSession *s, const void *dw, uint32_t ndw) {
  g_autofree char *why = NULL;
  switch (vgpu_virgl_tracker_submit(s->stream, dw, ndw, &why)) {
  case VGPU_VIRGL_OK:
    return true;
  case VGPU_VIRGL_MALFORMED:
    return end_session(s, VTEST_END_VIOLATION, "%s", why);
  case VGPU_VIRGL_BOUND:
    return end_session(s, VTEST_END_QUOTA, "%s", why);
  default:
    return false; /* the charger has ended the session */
  }
}

/* ---- everything else ----------------------------------------------------- */

/* The implicit fence after submitted work: RESOURCE_BUSY_WAIT waits for
 * it, and the guard's GPU timeout counts from it. */
static bool implicit_fence(VtestSession *s) {
  s->fence_submitted++;
  vgpu_guard_busy(s->cfg.guard);
  int r = s->r->ops->create_fence(s->r, s->fence_submitted);
  if (r < 0)
    return end_session(s, VTEST_END_RENDERER, "creating a fence failed: %s", g_strerror(-r));
  return true;
}

static bool cmd_submit(VtestSession *s, const VtestCmd *cmd) {
  if (!ensure_context(s))
    return false;
  uint32_t ndw = cmd->u.submit.ndw;
  const void *dw = aligned_dwords(s, cmd->u.submit.dw, ndw);
  if (!stream_check(s, dw, ndw) || !throttle_submit(s))
    return false;
  uint64_t t0 = now_ns();
  int r = s->r->ops->submit(s->r, VTEST_CTX_ID, dw, ndw);
  if (r < 0)
    return end_session(s, VTEST_END_VIOLATION, "renderer rejected a %u-dword command stream: %s",
                       ndw, g_strerror(-r));
  bool ok = implicit_fence(s);
  busy(s, now_ns() - t0);
  return ok;
}

static bool cmd_busy_wait(VtestSession *s, const VtestCmd *cmd) {
  /* The handle is not tracked per resource: "idle" means everything
   * submitted before is done, which is what Mesa's fences need. */
  if (cmd->u.busy_wait.flags & VTEST_BUSY_WAIT_FLAG_WAIT) {
    if (!vtest_session_flush(s) || !wait_fences(s))
      return false;
  } else if (fences_pending(s)) {
    s->r->ops->poll(s->r);
  }
  out_hdr(s, 1, VTEST_CMD_RESOURCE_BUSY_WAIT);
  out_u32(s, fences_pending(s) ? 1 : 0);
  return true;
}

static bool cmd_caps(VtestSession *s, uint32_t set, uint32_t reply_id) {
  uint32_t ver = 0, size = 0;
  int r = s->r->ops->get_capset(s->r, set, &ver, &size);
  if (r < 0 || size == 0)
    return end_session(s, VTEST_END_RENDERER, "renderer has no capability set %u", set);
  guint off = s->out->len;
  out_hdr(s, size + 1, reply_id); /* LEN counts bytes plus one */
  g_byte_array_set_size(s->out, off + 8 + size);
  memset(s->out->data + off + 8, 0, size);
  r = s->r->ops->fill_capset(s->r, set, ver, s->out->data + off + 8);
  if (r < 0)
    return end_session(s, VTEST_END_RENDERER, "filling capability set %u failed", set);
  return true;
}

static bool cmd_create_renderer(VtestSession *s, const VtestCmd *cmd) {
  if (s->named)
    return end_session(s, VTEST_END_VIOLATION, "second CREATE_RENDERER");
  size_t n = MIN(cmd->u.create_renderer.name_len, sizeof(s->name) - 1);
  size_t i;
  for (i = 0; i < n && cmd->u.create_renderer.name[i]; i++) {
    char c = cmd->u.create_renderer.name[i];
    s->name[i] = g_ascii_isprint(c) ? c : '?';
  }
  s->name[i] = '\0';
  s->named = true;
  return true;
}

static bool execute(VtestSession *s, const VtestCmd *cmd) {
  if (!s->named && cmd->id != VTEST_CMD_CREATE_RENDERER)
    return end_session(s, VTEST_END_VIOLATION, "%s before CREATE_RENDERER",
                       vtest_cmd_name(cmd->id));
  if (vtest_cmd_is_v3(cmd->id) && !s->v3_agreed)
    return end_session(s, VTEST_END_VIOLATION,
                       "%s needs protocol version 3, which this session never agreed to",
                       vtest_cmd_name(cmd->id));
  switch (cmd->id) {
  case VTEST_CMD_CREATE_RENDERER:
    return cmd_create_renderer(s, cmd);
  case VTEST_CMD_GET_PARAM:
    return cmd_get_param(s, cmd);
  case VTEST_CMD_GET_CAPSET:
    return cmd_get_capset(s, cmd);
  case VTEST_CMD_CONTEXT_INIT:
    return cmd_context_init(s, cmd);
  case VTEST_CMD_RESOURCE_CREATE_BLOB:
    return cmd_blob(s, cmd);
  case VTEST_CMD_SYNC_CREATE:
    return cmd_sync_create(s, cmd);
  case VTEST_CMD_SYNC_UNREF:
  case VTEST_CMD_SYNC_READ:
  case VTEST_CMD_SYNC_WRITE:
    return cmd_sync(s, cmd);
  case VTEST_CMD_SYNC_WAIT:
    return cmd_sync_wait(s, cmd);
  case VTEST_CMD_SUBMIT_CMD2:
    return cmd_submit2(s, cmd);
  case VTEST_CMD_PING_PROTOCOL_VERSION:
    out_hdr(s, 0, VTEST_CMD_PING_PROTOCOL_VERSION);
    return true;
  case VTEST_CMD_PROTOCOL_VERSION: {
    uint32_t v = MIN(cmd->u.version, s->cfg.max_version);
    if (v == 1)
      v = 0; /* version 1 was never a complete protocol */
    s->version = v;
    /* Mesa 24/25 agree on 3, read the caps, and may settle on 2 again
     * while still using what version 3 brought. */
    if (v >= 3)
      s->v3_agreed = true;
    out_hdr(s, 1, VTEST_CMD_PROTOCOL_VERSION);
    out_u32(s, v);
    return true;
  }
  case VTEST_CMD_GET_CAPS2:
    return cmd_caps(s, 2, VTEST_CMD_RESOURCE_CREATE); /* reply id 2, as Mesa expects */
  case VTEST_CMD_GET_CAPS:
    return cmd_caps(s, 1, VTEST_CMD_GET_CAPS);
  case VTEST_CMD_RESOURCE_CREATE:
    return cmd_resource_create(s, cmd, false);
  case VTEST_CMD_RESOURCE_CREATE2:
    return cmd_resource_create(s, cmd, true);
  case VTEST_CMD_RESOURCE_UNREF:
    return cmd_resource_unref(s, cmd->u.handle);
  case VTEST_CMD_SUBMIT_CMD:
    return cmd_submit(s, cmd);
  case VTEST_CMD_RESOURCE_BUSY_WAIT:
    return cmd_busy_wait(s, cmd);
  case VTEST_CMD_TRANSFER_GET2:
    return cmd_transfer2(s, cmd, VGPU_TRANSFER_FROM_HOST);
  case VTEST_CMD_TRANSFER_PUT2:
    return cmd_transfer2(s, cmd, VGPU_TRANSFER_TO_HOST);
  case VTEST_CMD_TRANSFER_GET:
    return cmd_transfer_v0(s, cmd, VGPU_TRANSFER_FROM_HOST);
  case VTEST_CMD_TRANSFER_PUT:
    return cmd_transfer_v0(s, cmd, VGPU_TRANSFER_TO_HOST);
  default:
    return end_session(s, VTEST_END_VIOLATION, "unexpected command %u", cmd->id);
  }
}

bool vtest_session_process(VtestSession *s, const uint8_t *buf, size_t len, size_t *consumed,
                           size_t *need) {
  size_t off = 0;
  uint64_t ncmds = 0;
  bool ok = s->end == VTEST_END_NONE;
  *need = VTEST_HDR_SIZE;
  /* Renderer calls may block (a read-back waits for rendering): meanwhile
   * the guard watches the client's socket. */
  vgpu_guard_enter(s->cfg.guard);
  while (ok) {
    VtestCmd cmd;
    const char *why = NULL;
    VtestDecodeResult d = vtest_decode(buf + off, len - off, &s->cfg.limits, &cmd, need, &why);
    if (d == VTEST_DECODE_NEED_MORE)
      break;
    if (d == VTEST_DECODE_INVALID) {
      uint32_t hdr[2] = {0, 0};
      memcpy(hdr, buf + off, MIN(len - off, sizeof(hdr)));
      ok = end_session(s, VTEST_END_VIOLATION, "%s (command id %u, length %u)", why,
                       GUINT32_FROM_LE(hdr[1]), GUINT32_FROM_LE(hdr[0]));
      break;
    }
    ok = execute(s, &cmd);
    off += cmd.size;
    ncmds++;
  }
  vgpu_guard_leave(s->cfg.guard);
  *consumed = off;
  count(s, VGPU_RES_COMMANDS, ncmds);
  return ok;
}

#define READ_BUF_SIZE (256u * 1024u)

/* Executes what the buffer holds, keeps the rest, sizes the buffer for the
 * next command and sends the replies. */
static bool serve_buffer(VtestSession *s) {
  size_t used = 0, need = VTEST_HDR_SIZE;
  if (!vtest_session_process(s, s->in, s->in_len, &used, &need))
    return false;
  if (used) {
    memmove(s->in, s->in + used, s->in_len - used);
    s->in_len -= used;
  }
  if (need > s->in_cap) {
    /* Bounded by the decoder's limits before we get here. */
    s->in_cap = need;
    s->in = g_realloc(s->in, s->in_cap);
  } else if (s->in_cap > READ_BUF_SIZE && s->in_len <= READ_BUF_SIZE && need <= READ_BUF_SIZE) {
    /* One large submit must not keep its buffer resident for the rest
     * of the session. */
    s->in_cap = READ_BUF_SIZE;
    s->in = g_realloc(s->in, s->in_cap);
  }
  return vtest_session_flush(s);
}

static void on_idle(void *user) {
  VtestSession *s = user;
  end_session(s, VTEST_END_IDLE, "idle for %d s", s->idle_timeout_ms / 1000);
}

static void arm_idle(VtestSession *s) {
  if (s->idle_timeout_ms > 0)
    vgpu_loop_set_timer(s->loop, g_get_monotonic_time() + (int64_t)s->idle_timeout_ms * 1000,
                        on_idle, s);
}

/* The client's socket: one large read, then everything it completes. */
static void on_client(void *user, int fd, short revents) {
  VtestSession *s = user;
  ssize_t n = read(fd, s->in + s->in_len, s->in_cap - s->in_len);
  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return;
  if (n < 0 && errno == ECONNRESET && s->in_len == 0) {
    /* A client killed between commands resets the connection. */
    end_session(s, VTEST_END_DISCONNECT, "client disconnected (connection reset)");
    return;
  }
  if (n < 0) {
    end_session(s, VTEST_END_IO, "reading from the client failed: %s", g_strerror(errno));
    return;
  }
  if (n == 0) {
    if (s->in_len > 0)
      end_session(s, VTEST_END_IO, "client hung up in the middle of a command (%zu bytes left)",
                  s->in_len);
    else
      end_session(s, VTEST_END_DISCONNECT, "client disconnected");
    return;
  }
  s->in_len += (size_t)n;
  count(s, VGPU_RES_BYTES_IN, (uint64_t)n);
  arm_idle(s);
  serve_buffer(s);
}

/* The renderer's fence fd: completions are noted even while the client
 * does not wait for them (the guard's GPU timeout counts from the last). */
static void on_fence_fd(void *user, int fd, short revents) {
  VtestSession *s = user;
  s->r->ops->poll(s->r);
}

bool vtest_session_attach(VtestSession *s, VgpuLoop *loop, int idle_timeout_ms) {
  s->loop = loop;
  s->idle_timeout_ms = idle_timeout_ms;
  s->in_cap = READ_BUF_SIZE;
  s->in = g_malloc(s->in_cap);
  s->client_watch = vgpu_loop_add(loop, s->sock, POLLIN, on_client, s);
  int fd = s->r->ops->get_poll_fd(s->r);
  if (fd >= 0)
    s->fence_watch = vgpu_loop_add(loop, fd, POLLIN, on_fence_fd, s);
  if (s->client_watch < 0 || (fd >= 0 && s->fence_watch < 0))
    return end_session(s, VTEST_END_IO, "no room in the worker loop");
  arm_idle(s);
  return true;
}

VtestEnd vtest_session_run(VtestSession *s, int idle_timeout_ms) {
  VgpuLoop *loop = vgpu_loop_new();
  if (vtest_session_attach(s, loop, idle_timeout_ms)) {
    int r = vgpu_loop_run(loop);
    if (r < 0)
      end_session(s, VTEST_END_IO, "waiting for the client failed: %s", g_strerror(-r));
  }
  vtest_session_flush(s);
  vgpu_loop_remove(loop, s->client_watch);
  vgpu_loop_remove(loop, s->fence_watch);
  s->client_watch = s->fence_watch = -1;
  s->loop = NULL;
  vgpu_loop_free(loop);
  return s->end;
}
