/* Executes vtest commands for one client.  Validation of structure lives in
 * vtest_decode.c; this file checks meaning (handles, boxes, backing sizes,
 * quotas) before anything reaches the renderer. */
#include "vtest/vtest_session.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
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

struct VtestSession {
  VgpuRenderer *r;
  int sock;
  VtestSessionConfig cfg;
  char name[64];
  bool named;
  bool ctx_created;
  uint32_t version;
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
  s->stream = stream_tracker_new(s);
  s->out = g_byte_array_sized_new(4096);
  s->client_watch = s->fence_watch = -1;
  r->fence_cb = on_fence;
  r->fence_user = s;
  return s;
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
  s->r->fence_cb = NULL;
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
  int r = s->r->ops->context_create(s->r, VTEST_CTX_ID, 0, s->name);
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
  count(s, VGPU_RES_BUSY_NS, now_ns() - t0);
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

static bool cmd_resource_create(VtestSession *s, const VtestCmd *cmd, bool v2) {
  const VgpuResourceDesc *d = &cmd->u.create.desc;
  uint32_t data_size = cmd->u.create.data_size;
  const char *why = NULL;
  uint64_t size;

  if (d->handle == 0)
    return end_session(s, VTEST_END_VIOLATION, "resource handle 0 is reserved");
  if (vgpu_tenant_resource_get(s->tenant, d->handle))
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

  /* The renderer's texture and the shm backing both exist. */
  uint64_t bytes = size + (uint64_t)data_size;
  char what[64];
  g_snprintf(what, sizeof(what), "resource %u", d->handle);
  VtestResource *res = vgpu_tenant_resource_add(s->tenant, d, bytes, what);
  if (!res)
    return false; /* the refusal ended the session */

  VtestBacking *b = g_new0(VtestBacking, 1);
  /* The fd goes to the client (protocol 2) and is closed here either way:
   * the mapping keeps the memory, and a worker holding one fd per resource
   * would run into RLIMIT_NOFILE long before any quota. */
  vgpu_autofd int shm_fd = -1;
  if (data_size > 0) {
    shm_fd = create_backing(data_size, &b->shm);
    if (shm_fd < 0) {
      int e = -shm_fd;
      g_free(b);
      vgpu_tenant_resource_forget(s->tenant, d->handle);
      return end_session(s, VTEST_END_RENDERER, "cannot allocate a %u-byte backing: %s",
                         data_size, g_strerror(e));
    }
    b->shm_size = data_size;
    b->iov.iov_base = b->shm;
    b->iov.iov_len = data_size;
  }
  r = s->r->ops->resource_create(s->r, d, b->shm ? &b->iov : NULL, b->shm ? 1 : 0);
  if (r < 0) {
    if (b->shm)
      munmap(b->shm, b->shm_size);
    g_free(b);
    vgpu_tenant_resource_forget(s->tenant, d->handle);
    return end_session(s, VTEST_END_VIOLATION, "renderer refused resource %u: %s", d->handle,
                       g_strerror(-r));
  }
  s->r->ops->ctx_attach_resource(s->r, VTEST_CTX_ID, d->handle);
  res->priv = b;
  if (v2 && shm_fd >= 0)
    return send_fd(s, shm_fd);
  return true;
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
  int r = s->r->ops->transfer(s->r, VTEST_CTX_ID, t->handle, dir, t->level, 0, 0, &t->box,
                              t->offset, NULL, 0);
  if (r < 0)
    return end_session(s, VTEST_END_VIOLATION, "renderer refused transfer on resource %u: %s",
                       t->handle, g_strerror(-r));
  if (dir == VGPU_TRANSFER_FROM_HOST && (res->desc.bind & VGPU_BIND_DISPLAY_TARGET))
    count(s, VGPU_RES_FRAMES, 1);
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

static bool cmd_submit(VtestSession *s, const VtestCmd *cmd) {
  if (!ensure_context(s))
    return false;
  uint32_t ndw = cmd->u.submit.ndw;
  const void *dw = cmd->u.submit.dw;
  if (ndw > 0 && ((uintptr_t)dw & 3) != 0) {
    size_t bytes = (size_t)ndw * 4;
    if (s->scratch_cap < bytes) {
      g_free(s->scratch);
      s->scratch = g_malloc(bytes);
      s->scratch_cap = bytes;
    }
    memcpy(s->scratch, dw, bytes);
    dw = s->scratch;
  }
  if (!stream_check(s, dw, ndw))
    return false;
  uint64_t t0 = now_ns();
  int r = s->r->ops->submit(s->r, VTEST_CTX_ID, dw, ndw);
  if (r < 0)
    return end_session(s, VTEST_END_VIOLATION, "renderer rejected a %u-dword command stream: %s",
                       ndw, g_strerror(-r));
  s->fence_submitted++;
  vgpu_guard_busy(s->cfg.guard);
  r = s->r->ops->create_fence(s->r, s->fence_submitted);
  count(s, VGPU_RES_BUSY_NS, now_ns() - t0);
  if (r < 0)
    return end_session(s, VTEST_END_RENDERER, "creating a fence failed: %s", g_strerror(-r));
  return true;
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
  switch (cmd->id) {
  case VTEST_CMD_CREATE_RENDERER:
    return cmd_create_renderer(s, cmd);
  case VTEST_CMD_PING_PROTOCOL_VERSION:
    out_hdr(s, 0, VTEST_CMD_PING_PROTOCOL_VERSION);
    return true;
  case VTEST_CMD_PROTOCOL_VERSION: {
    uint32_t v = MIN(cmd->u.version, s->cfg.max_version);
    if (v == 1)
      v = 0; /* version 1 was never a complete protocol */
    s->version = v;
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
