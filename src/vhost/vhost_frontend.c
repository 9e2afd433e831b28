/* The vhost-user-gpu front-end of the worker (worker/frontend.h): QEMU's
 * vhost-user-gpu-pci device talks to this worker over the client socket.
 *
 * The protocol core (vhost/vhost_user.h) decides what each message means;
 * this adapter does the socket I/O (header, payload, fds), acts on what the
 * core reports (kick fds to watch, memory that moved, a display socket, a
 * reset), and runs the rings: a kick pops every chain, gathers its
 * readable bytes into one buffer, lets the device model answer
 * (virtio_gpu/vgpu_device.h), scatters the answer into the writable part
 * and pushes it.  A fenced command's chain waits, by cookie, until the
 * device completes it.
 *
 * Who pays for what: a message from QEMU the core refuses is a protocol
 * violation and ends the session (one log line); QEMU hanging up is the
 * client leaving; a bad guest request only gets an error response from the
 * device, and a hostile ring (a chain outside guest memory, a loop) stops
 * that ring until the device is reset. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/worker_exit.h"
#include "util/fd.h"
#include "util/log.h"
#include "vhost/vhost_display.h"
#include "vhost/vhost_user.h"
#include "virtio_gpu/vgpu_device.h"
#include "worker/frontend.h"

/* A message that started must arrive whole within this. */
#define VHF_MSG_TIMEOUT_MS 10000
/* A display write QEMU does not take within this ends the session. */
#define VHF_DISPLAY_TIMEOUT_MS 10000
/* The guest's GET_DISPLAY_INFO / GET_EDID waits at most this long for
 * QEMU's answer (QEMU busy: the last modes are reported; its late answer
 * is taken when it comes). */
#define VHF_QUERY_WAIT_MS 1000
/* GET_VRING_BASE waits at most this long for fenced work to finish. */
#define VHF_DRAIN_TIMEOUT_MS 2000
/* Default SUBMIT_3D cap when the worker contract gives none. */
#define VHF_DEFAULT_SUBMIT_MAX (16u << 20)
/* The largest request besides SUBMIT_3D: ATTACH_BACKING's entries. */
#define VHF_MAX_FIXED_REQ (32u + VGPU_CMD_MAX_ENTRIES * VGPU_CMD_MEM_ENTRY_SIZE)
#define VHF_PREFERRED_W 1280u
#define VHF_PREFERRED_H 800u

typedef struct {
  unsigned q;
  VhuElem elem;
} VhfPending;

struct VgpuFrontend {
  VgpuRenderer *renderer;
  VgpuLoop *loop;
  int client_fd;
  int client_watch;
  int renderer_fd, renderer_watch;
  int kick_watch[VHU_MAX_QUEUES];
  VhuDev dev;
  bool dev_ready;
  VgpuDevice *gpu;
  VgpuTenant *tenant; /* the instance's books; NULL without a ledger */
  VgpuGuard *guard;   /* GPU timeout and hang-up watch; NULL: none */
  /* The control ring's next index when QEMU last stopped it (see act()). */
  bool ctrl_stopped;
  uint16_t ctrl_stopped_at;
  uint32_t gpu_features; /* VGPU_CMD_F_* the device was created with */
  uint32_t heads;
  bool virgl;
  uint32_t submit_max;
  uint32_t max_stream_objects; /* the profile's bound; 0: the tracker's default */
  /* Gather buffer (readable part of one chain) and the response. */
  uint8_t *req;
  size_t req_cap;
  uint8_t resp[VGPU_DEVICE_RESP_MAX];
  VhuElem elem;        /* the chain being handled */
  GHashTable *pending; /* cookie -> VhfPending* */
  uint64_t next_cookie;
  bool notify_due[VHU_MAX_QUEUES];
  bool ring_broken_logged[VHU_MAX_QUEUES];
  VhuDisplay *display;
  int display_watch;
  bool refresh_due;  /* the display came up while the device was busy */
  bool display_late; /* QEMU let a question wait past VHF_QUERY_WAIT_MS */
  /* Screenshot requests from vgpud (the ledger's socket). */
  VgpuLedger *ledger;
  int ledger_watch;
  struct VhfCapture *capture; /* set while a screenshot redraws a scanout */
  /* How the session ended. */
  bool ended;
  int exit_code;
  char *reason;
};

static void session_end(VgpuFrontend *fe, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void session_end(VgpuFrontend *fe, int code, const char *fmt, ...) {
  if (fe->ended)
    return;
  va_list ap;
  va_start(ap, fmt);
  fe->reason = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fe->ended = true;
  fe->exit_code = code;
  vgpu_loop_quit(fe->loop);
}

/* ---- guest memory and device callbacks ------------------------------- */

static int mem_to_iov(void *user, uint64_t gpa, uint64_t len, struct iovec *iov, unsigned max,
                      unsigned *n) {
  VgpuFrontend *fe = user;
  return vhu_gpa_to_iov(&fe->dev, gpa, len, iov, max, n);
}

/* Copies @len bytes of @src into the writable part of @e. */
static size_t scatter(const VhuElem *e, const void *src, size_t len) {
  size_t done = 0;
  for (unsigned i = e->out_num; i < e->out_num + e->in_num && done < len; i++) {
    size_t n = MIN(e->iov[i].iov_len, len - done);
    memcpy(e->iov[i].iov_base, (const uint8_t *)src + done, n);
    done += n;
  }
  return done;
}

/* Gathers the readable part of @e (out_bytes, already bounded) into @dst. */
static void gather(const VhuElem *e, uint8_t *dst) {
  size_t done = 0;
  for (unsigned i = 0; i < e->out_num; i++) {
    memcpy(dst + done, e->iov[i].iov_base, e->iov[i].iov_len);
    done += e->iov[i].iov_len;
  }
}

static void push(VgpuFrontend *fe, unsigned q, const VhuElem *e, const void *resp, size_t len) {
  uint32_t written = 0;
  if (len > 0 && vhu_elem_valid(&fe->dev, e))
    written = (uint32_t)scatter(e, resp, MIN(len, e->in_bytes));
  if (vhu_vq_push(&fe->dev, q, e->head, written) == 0)
    fe->notify_due[q] = true;
}

static void notify_all(VgpuFrontend *fe) {
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++) {
    if (!fe->notify_due[q])
      continue;
    fe->notify_due[q] = false;
    int rc = vhu_vq_notify(&fe->dev, q);
    if (rc < 0)
      vgpu_debug("ring %u: cannot signal the guest: %s", q, g_strerror(-rc));
  }
}

static void gpu_complete(void *user, uint64_t cookie, const void *resp, size_t len) {
  VgpuFrontend *fe = user;
  VhfPending *p = g_hash_table_lookup(fe->pending, &cookie);
  if (!p)
    return; /* its ring was stopped or reset meanwhile */
  push(fe, p->q, &p->elem, resp, len);
  g_hash_table_remove(fe->pending, &cookie);
  /* The guest is notified by whoever called the device: the ring's
   * batch, or the fence callback. */
}

static void serve_shots(VgpuFrontend *fe);
static void display_scanout(void *user, uint32_t id, uint32_t w, uint32_t h);
static void display_update(void *user, uint32_t id, const VgpuRect *r, const void *pixels,
                           uint32_t stride, uint32_t format);
static void display_cursor_update(void *user, uint32_t scanout, uint32_t x, uint32_t y,
                                  uint32_t hot_x, uint32_t hot_y, const uint32_t *pixels);
static void display_cursor_move(void *user, uint32_t scanout, uint32_t x, uint32_t y);
static void gpu_modes_wanted(void *user, int32_t scanout);
static void modes_apply(VgpuFrontend *fe);

static uint32_t gpu_features_wanted(const VgpuFrontend *fe) {
  uint32_t f = 0;
  if (vhu_dev_has_feature(&fe->dev, VHU_F_GPU_VIRGL) && fe->virgl)
    f |= VGPU_CMD_F_VIRGL;
  if (vhu_dev_has_feature(&fe->dev, VHU_F_GPU_EDID))
    f |= VGPU_CMD_F_EDID;
  return f;
}

/* The device model follows the negotiated features; a change (a new
 * driver after a reset) starts it afresh. */
static VgpuDevice *gpu_get(VgpuFrontend *fe) {
  uint32_t want = gpu_features_wanted(fe);
  if (fe->gpu && fe->gpu_features == want)
    return fe->gpu;
  g_clear_pointer(&fe->gpu, vgpu_device_free);
  g_hash_table_remove_all(fe->pending);
  vgpu_guard_progress(fe->guard, false);
  VgpuDeviceConfig cfg = {
      .num_scanouts = fe->heads,
      .width = VHF_PREFERRED_W,
      .height = VHF_PREFERRED_H,
      .features = want,
      .submit_max = fe->submit_max,
      .max_stream_objects = fe->max_stream_objects,
      .renderer = (want & VGPU_CMD_F_VIRGL) ? fe->renderer : NULL,
      .tenant = fe->tenant,
      .mem = {.to_iov = mem_to_iov, .user = fe},
      .display = {.scanout = display_scanout,
                  .update = display_update,
                  .cursor_update = display_cursor_update,
                  .cursor_move = display_cursor_move,
                  .complete = gpu_complete,
                  .modes_wanted = gpu_modes_wanted,
                  .user = fe},
      .log_name = "guest",
  };
  fe->gpu = vgpu_device_new(&cfg);
  fe->gpu_features = want;
  if (!fe->gpu)
    session_end(fe, VGPU_WORKER_EXIT_ERROR, "cannot create the virtio-gpu device");
  else
    modes_apply(fe); /* what QEMU said before this device existed */
  return fe->gpu;
}

/* ---- rings ------------------------------------------------------------ */

/* An error response for a request the adapter cannot hand to the device
 * (larger than any request may be). */
static size_t error_response(const uint8_t *req, size_t len, uint8_t *resp, size_t cap) {
  VgpuCmd cmd;
  memset(&cmd, 0, sizeof(cmd));
  if (len >= VGPU_CMD_HDR_SIZE) {
    uint32_t flags;
    memcpy(&cmd.hdr.type, req, 4);
    memcpy(&flags, req + 4, 4);
    cmd.hdr.flags = flags & VIRTIO_GPU_FLAG_FENCE;
    memcpy(&cmd.hdr.fence_id, req + 8, 8);
    memcpy(&cmd.hdr.ctx_id, req + 16, 4);
  }
  int n = vgpu_resp_hdr(&cmd.hdr, VIRTIO_GPU_RESP_ERR_UNSPEC, resp, cap);
  return n > 0 ? (size_t)n : 0;
}

static void handle_elem(VgpuFrontend *fe, unsigned q, VhuElem *e) {
  VgpuDevice *gpu = gpu_get(fe);
  if (!gpu) {
    push(fe, q, e, NULL, 0);
    return;
  }
  if (e->out_bytes > fe->req_cap) {
    /* Only the header is needed to answer. */
    uint8_t hdr[VGPU_CMD_HDR_SIZE];
    size_t have = 0;
    for (unsigned i = 0; i < e->out_num && have < sizeof(hdr); i++) {
      size_t n = MIN(e->iov[i].iov_len, sizeof(hdr) - have);
      memcpy(hdr + have, e->iov[i].iov_base, n);
      have += n;
    }
    vgpu_info("guest request of %" G_GUINT64_FORMAT " bytes is over the %zu-byte limit",
              e->out_bytes, fe->req_cap);
    size_t n = q == VGPU_QUEUE_CONTROL ? error_response(hdr, have, fe->resp, sizeof(fe->resp)) : 0;
    push(fe, q, e, fe->resp, n);
    return;
  }
  size_t len = (size_t)e->out_bytes;
  gather(e, fe->req);
  uint64_t cookie = ++fe->next_cookie;
  /* Registered before the call: the device may complete it at once. */
  VhfPending *p = NULL;
  if (q == VGPU_QUEUE_CONTROL) {
    p = g_new(VhfPending, 1);
    p->q = q;
    memcpy(&p->elem.head, &e->head, offsetof(VhuElem, iov));
    memcpy(p->elem.iov, e->iov, sizeof(struct iovec) * (e->out_num + e->in_num));
    uint64_t *key = g_new(uint64_t, 1);
    *key = cookie;
    g_hash_table_insert(fe->pending, key, p);
  }
  size_t n =
      vgpu_device_handle(gpu, (VgpuQueue)q, fe->req, len, fe->resp, sizeof(fe->resp), cookie);
  if (q == VGPU_QUEUE_CONTROL && n == VGPU_DEVICE_DEFERRED) {
    /* Answered through gpu_complete (perhaps already); until then GPU
     * work is outstanding and the guard's timeout runs. */
    if (g_hash_table_contains(fe->pending, &cookie))
      vgpu_guard_busy(fe->guard);
    return;
  }
  if (p)
    g_hash_table_remove(fe->pending, &cookie);
  push(fe, q, e, fe->resp, MIN(n, sizeof(fe->resp)));
  if (fe->refresh_due && fe->display && fe->gpu) {
    fe->refresh_due = false;
    for (uint32_t i = 0; i < fe->heads && fe->display; i++)
      vgpu_device_refresh(fe->gpu, i);
  }
}

static void ring_run(VgpuFrontend *fe, unsigned q) {
  /* The device may block in the renderer (a read-back waits for
   * rendering): meanwhile the guard watches QEMU's socket. */
  vgpu_guard_enter(fe->guard);
  while (!fe->ended && vhu_vq_ready(&fe->dev, q)) {
    const char *why = NULL;
    int rc = vhu_vq_pop(&fe->dev, q, &fe->elem, &why);
    if (rc == 0)
      break;
    if (rc < 0) {
      /* The guest's ring is hostile: it stays stopped until a reset; the
       * session (and QEMU's other work) goes on. */
      if (!fe->ring_broken_logged[q])
        vgpu_warn("guest ring %u is broken, not served until QEMU restarts it: %s", q,
                  why ? why : g_strerror(-rc));
      fe->ring_broken_logged[q] = true;
      break;
    }
    handle_elem(fe, q, &fe->elem);
  }
  vgpu_guard_leave(fe->guard);
  notify_all(fe);
}

static void on_kick(void *user, int fd, short revents) {
  VgpuFrontend *fe = user;
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++) {
    if (vhu_vq_kick_fd(&fe->dev, q) != fd)
      continue;
    (void)revents;
    vhu_vq_kick_drain(&fe->dev, q);
    ring_run(fe, q);
    /* A screenshot request that came while the ledger was asked. */
    serve_shots(fe);
    return;
  }
}

static void rewatch_kick(VgpuFrontend *fe, unsigned q) {
  if (fe->kick_watch[q] >= 0) {
    vgpu_loop_remove(fe->loop, fe->kick_watch[q]);
    fe->kick_watch[q] = -1;
  }
  int fd = vhu_vq_kick_fd(&fe->dev, q);
  if (fd < 0)
    return;
  fe->kick_watch[q] = vgpu_loop_add(fe->loop, fd, POLLIN, on_kick, fe);
  if (fe->kick_watch[q] < 0)
    session_end(fe, VGPU_WORKER_EXIT_ERROR, "too many fds to watch");
}

static void drop_pending_ring(VgpuFrontend *fe, unsigned q) {
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, fe->pending);
  while (g_hash_table_iter_next(&it, &k, &v))
    if (((VhfPending *)v)->q == q)
      g_hash_table_iter_remove(&it);
  if (g_hash_table_size(fe->pending) == 0)
    vgpu_guard_progress(fe->guard, false);
}

/* Before a ring stops: let fenced work finish so its responses reach the
 * guest (a stop is also a VM pause, and the guest waits for them). */
static void drain_fences(VgpuFrontend *fe) {
  if (fe->renderer_fd < 0)
    return;
  gint64 deadline = g_get_monotonic_time() + (gint64)VHF_DRAIN_TIMEOUT_MS * 1000;
  while (g_hash_table_size(fe->pending) > 0) {
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    if (left <= 0)
      break;
    struct pollfd pfd = {.fd = fe->renderer_fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)left) > 0)
      fe->renderer->ops->poll(fe->renderer);
  }
}

static void on_renderer(void *user, int fd, short revents) {
  VgpuFrontend *fe = user;
  (void)fd;
  (void)revents;
  fe->renderer->ops->poll(fe->renderer);
}

/* ---- the display socket ------------------------------------------------ */

static void display_drop(VgpuFrontend *fe) {
  if (fe->display_watch >= 0)
    vgpu_loop_remove(fe->loop, fe->display_watch);
  fe->display_watch = -1;
  fe->display_late = false;
  g_clear_pointer(&fe->display, vhu_display_free);
}

/* A display call's result: QEMU closed the socket (it does on every stop)
 * drops it; QEMU not reading, or answering nonsense, ends the session. */
static void display_result(VgpuFrontend *fe, int rc, const char *why) {
  if (rc >= 0)
    return;
  if (rc == -EPIPE) {
    vgpu_debug("display socket closed by QEMU");
    display_drop(fe);
  } else if (rc == -EINVAL) {
    /* What the device asked to show does not fit what QEMU was told:
     * not sent (QEMU would trust it), the session goes on. */
    vgpu_warn("display update not sent: %s", why ? why : "invalid");
  } else if (rc == -ETIMEDOUT) {
    display_drop(fe);
    session_end(fe, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU stopped reading its display socket: %s",
                why ? why : "timeout");
  } else {
    display_drop(fe);
    session_end(fe, VGPU_WORKER_EXIT_VIOLATION, "display channel: %s", why ? why : g_strerror(-rc));
  }
}

/* QEMU's latest display info and EDIDs into the device; a change raises
 * the config space's DISPLAY event.  (QEMU 10 keeps events_read to itself
 * and raises DISPLAY on its own when its windows change; the guest then
 * asks again, and gpu_modes_wanted() fetches the new modes.) */
static void modes_apply(VgpuFrontend *fe) {
  if (!fe->display || !fe->gpu)
    return;
  int changed = 0;
  const VgpuDisplayMode *m = vhu_display_modes(fe->display);
  if (m) {
    int rc = vgpu_device_set_modes(fe->gpu, m, fe->heads);
    if (rc < 0)
      vgpu_warn("QEMU's display modes not taken: %s", g_strerror(-rc));
    changed |= rc > 0;
  }
  for (uint32_t i = 0; i < fe->heads; i++) {
    size_t len = 0;
    const uint8_t *e = vhu_display_edid(fe->display, i, &len);
    if (e)
      changed |= vgpu_device_set_edid(fe->gpu, i, e, len) > 0;
  }
  if (changed)
    vhu_dev_config_raise(&fe->dev, VHU_GPU_EVENT_DISPLAY);
}

/* What display replies brought (VHU_DISP_EV_*).  @in_device: called from
 * within the device (its modes hook), which must not be re-entered. */
static void display_events(VgpuFrontend *fe, int ev, bool in_device) {
  const char *why = NULL;
  if ((ev & VHU_DISP_EV_READY) && fe->display) {
    /* The channel is up: show what the guest already shows, and learn
     * QEMU's modes (answered while the guest goes on). */
    if (in_device)
      fe->refresh_due = true;
    else if (fe->gpu)
      for (uint32_t i = 0; i < fe->heads && fe->display; i++)
        vgpu_device_refresh(fe->gpu, i);
    int rc = fe->display ? vhu_display_ask_modes(fe->display, &why) : 0;
    if (rc >= 0 && fe->display)
      rc = vhu_display_ask_edid(fe->display, 0, &why);
    display_result(fe, rc < 0 ? rc : 0, why);
  }
  if (ev & VHU_DISP_EV_MODES)
    modes_apply(fe);
}

static void on_display(void *user, int fd, short revents) {
  VgpuFrontend *fe = user;
  (void)fd;
  (void)revents;
  const char *why = NULL;
  int rc = vhu_display_on_readable(fe->display, &why);
  if (rc > 0)
    display_events(fe, rc, false);
  if (fe->display && vhu_display_outstanding(fe->display) == 0)
    fe->display_late = false;
  display_result(fe, rc < 0 ? rc : 0, why);
}

/* The guest asks for its modes (@scanout -1) or head @scanout's EDID:
 * QEMU is asked and its answer awaited, bounded; until it answers, the
 * device reports what it last had. */
static void gpu_modes_wanted(void *user, int32_t scanout) {
  VgpuFrontend *fe = user;
  const char *why = NULL;
  if (!fe->display || fe->ended)
    return;
  /* QEMU has not answered the last question in time: until it catches
   * up, the guest is answered at once (a guest asking in a loop must not
   * stall the worker a second each). */
  if (fe->display_late && vhu_display_outstanding(fe->display) > 0)
    return;
  fe->display_late = false;
  int rc = 0;
  if (!vhu_display_ready(fe->display)) {
    /* The guest is quicker than QEMU's handshake reply. */
    rc = vhu_display_wait(fe->display, VHF_QUERY_WAIT_MS, &why);
    if (rc > 0)
      display_events(fe, rc, true);
    if (rc < 0 || !fe->display || !vhu_display_ready(fe->display)) {
      fe->display_late = rc >= 0 && fe->display;
      display_result(fe, rc < 0 ? rc : 0, why);
      return;
    }
  }
  rc = scanout < 0 ? vhu_display_ask_modes(fe->display, &why)
                   : vhu_display_ask_edid(fe->display, (uint32_t)scanout, &why);
  if (rc > 0)
    rc = vhu_display_wait(fe->display, VHF_QUERY_WAIT_MS, &why);
  if (rc > 0)
    display_events(fe, rc, true);
  if (rc >= 0 && fe->display && vhu_display_outstanding(fe->display) > 0)
    fe->display_late = true;
  display_result(fe, rc < 0 ? rc : 0, why);
}

static void display_take(VgpuFrontend *fe) {
  display_drop(fe);
  int fd = vhu_dev_take_display_fd(&fe->dev);
  if (fd < 0)
    return;
  const char *why = NULL;
  int rc = 0;
  fe->display = vhu_display_new(fd, fe->heads, VHF_DISPLAY_TIMEOUT_MS, &rc, &why);
  if (!fe->display) {
    display_result(fe, rc, why);
    return;
  }
  fe->display_watch = vgpu_loop_add(fe->loop, vhu_display_fd(fe->display), POLLIN, on_display, fe);
  if (fe->display_watch < 0)
    session_end(fe, VGPU_WORKER_EXIT_ERROR, "too many fds to watch");
}

/* ---- screenshots for vgpud ---------------------------------------------- */

/* One scanout's image being captured: vgpu_device_refresh() draws into it
 * instead of the display channel. */
typedef struct VhfCapture {
  uint32_t head;
  uint32_t w, h, format;
  int fd;       /* memfd, w * h * 4 bytes */
  uint8_t *map; /* its writable mapping while drawing */
  bool drawn;
  int err;
} VhfCapture;

static void capture_scanout(VhfCapture *c, uint32_t id, uint32_t w, uint32_t h) {
  if (id != c->head || c->fd >= 0 || c->err)
    return;
  if (w < 1 || h < 1 || w > VGPU_SHOT_MAX_DIM || h > VGPU_SHOT_MAX_DIM) {
    c->err = -ENOENT;
    return;
  }
  size_t size = (size_t)w * h * 4u;
  c->fd = memfd_create("vgpu-screenshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (c->fd < 0 || ftruncate(c->fd, (off_t)size) < 0) {
    c->err = -errno;
    return;
  }
  void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
  if (m == MAP_FAILED) {
    c->err = -errno;
    return;
  }
  c->map = m;
  c->w = w;
  c->h = h;
}

static void capture_update(VhfCapture *c, uint32_t id, const VgpuRect *r, const void *pixels,
                           uint32_t stride, uint32_t format) {
  if (id != c->head || !c->map || c->err)
    return;
  /* The device's rectangle lies inside the scanout it announced. */
  if (r->x > c->w || r->w > c->w - r->x || r->y > c->h || r->h > c->h - r->y)
    return;
  for (uint32_t y = 0; y < r->h; y++)
    memcpy(c->map + ((size_t)(r->y + y) * c->w + r->x) * 4u,
           (const uint8_t *)pixels + (size_t)y * stride, (size_t)r->w * 4u);
  c->format = format;
  c->drawn = true;
}

/* Captures head @req->head and sends the reply (with the sealed memfd). */
static void serve_shot(VgpuFrontend *fe, const VgpuShotRequest *req) {
  VhfCapture c = {.head = req->head, .fd = -1};
  VgpuShotReply rep = {.magic = VGPU_SHOT_MAGIC, .seq = req->seq, .head = req->head};
  int rc = -ENOENT;
  if (fe->gpu && req->head < fe->heads) {
    fe->capture = &c;
    rc = vgpu_device_refresh(fe->gpu, req->head);
    fe->capture = NULL;
  }
  if (rc == 0 && c.err)
    rc = c.err;
  else if (rc == 0 && !c.drawn)
    rc = -EIO;
  if (c.map)
    munmap(c.map, (size_t)c.w * c.h * 4u);
  if (rc == 0 &&
      fcntl(c.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
    rc = -errno;
  rep.status = rc;
  if (rc == 0) {
    rep.width = c.w;
    rep.height = c.h;
    rep.stride = c.w * 4u;
    rep.format = c.format;
  }
  int sr = vgpu_ledger_send_shot(fe->ledger, &rep, rc == 0 ? c.fd : -1);
  if (sr < 0)
    vgpu_warn("screenshot of head %u not sent to vgpud: %s", req->head, g_strerror(-sr));
  if (c.fd >= 0)
    close(c.fd);
}

/* Requests read off the socket, and one kept while the ledger waited. */
static void serve_shots(VgpuFrontend *fe) {
  if (!fe->ledger || fe->ended)
    return;
  VgpuShotRequest req;
  for (int i = 0; i < 8; i++) {
    int rc = vgpu_ledger_next_shot(fe->ledger, &req);
    if (rc == 0)
      return;
    if (rc < 0) {
      /* vgpud went away: the loop stops watching; the guard or the
       * client's end stops the worker. */
      if (fe->ledger_watch >= 0)
        vgpu_loop_remove(fe->loop, fe->ledger_watch);
      fe->ledger_watch = -1;
      return;
    }
    serve_shot(fe, &req);
  }
}

static void on_ledger(void *user, int fd, short revents) {
  (void)fd;
  (void)revents;
  serve_shots(user);
}

static void display_scanout(void *user, uint32_t id, uint32_t w, uint32_t h) {
  VgpuFrontend *fe = user;
  if (fe->capture) {
    capture_scanout(fe->capture, id, w, h);
    return;
  }
  const char *why = NULL;
  if (fe->display && vhu_display_ready(fe->display))
    display_result(fe, vhu_display_scanout(fe->display, id, w, h, &why), why);
}

static void display_update(void *user, uint32_t id, const VgpuRect *r, const void *pixels,
                           uint32_t stride, uint32_t format) {
  VgpuFrontend *fe = user;
  if (fe->capture) {
    capture_update(fe->capture, id, r, pixels, stride, format);
    return;
  }
  const char *why = NULL;
  if (fe->display && vhu_display_ready(fe->display))
    display_result(
        fe,
        vhu_display_update(fe->display, id, r->x, r->y, r->w, r->h, pixels, stride, format, &why),
        why);
}

static void display_cursor_update(void *user, uint32_t scanout, uint32_t x, uint32_t y,
                                  uint32_t hot_x, uint32_t hot_y, const uint32_t *pixels) {
  VgpuFrontend *fe = user;
  const char *why = NULL;
  if (fe->display && vhu_display_ready(fe->display))
    display_result(
        fe, vhu_display_cursor_update(fe->display, scanout, x, y, hot_x, hot_y, pixels, &why), why);
}

static void display_cursor_move(void *user, uint32_t scanout, uint32_t x, uint32_t y) {
  VgpuFrontend *fe = user;
  const char *why = NULL;
  if (fe->display && vhu_display_ready(fe->display))
    display_result(fe, vhu_display_cursor_move(fe->display, scanout, x, y, &why), why);
}

/* ---- messages from QEMU ------------------------------------------------ */

static void close_fds(int *fds, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

/* Receives exactly @len bytes within @deadline_us, collecting fds that
 * came with them.  1 done, 0 EOF before the first byte of a message,
 * -EPIPE EOF or an error in the middle, -ETIMEDOUT, -EPROTO (too many or
 * truncated fds: the ones received are closed), with *why. */
static int recv_part(int sock, void *buf, size_t len, int *fds, size_t *nfds, bool first,
                     gint64 deadline_us, const char **why) {
  size_t done = 0;
  while (done < len) {
    /* One fd more than there is room for shows that too many came. */
    int got[VHU_MAX_FDS + 1];
    size_t n_got, room = VHU_MAX_FDS - *nfds;
    ssize_t n = vgpu_recvmsg_fds(sock, (uint8_t *)buf + done, len - done, MSG_DONTWAIT, got,
                                 room + 1, &n_got);
    if (n == -EAGAIN) {
      gint64 left = (deadline_us - g_get_monotonic_time()) / 1000;
      if (left <= 0) {
        *why = "a message stopped half-way";
        return -ETIMEDOUT;
      }
      struct pollfd pfd = {.fd = sock, .events = POLLIN};
      poll(&pfd, 1, (int)MIN(left, G_MAXINT));
      continue;
    }
    if (n == -EMSGSIZE || n_got > room) {
      close_fds(got, n_got);
      *why = "more fds than any request carries";
      return -EPROTO;
    }
    if (n < 0) {
      *why = "socket error";
      return -EPIPE;
    }
    memcpy(fds + *nfds, got, n_got * sizeof(int));
    *nfds += n_got;
    if (n == 0) {
      if (first && done == 0)
        return 0;
      *why = "QEMU hung up in the middle of a message";
      return -EPIPE;
    }
    done += (size_t)n;
  }
  return 1;
}

/* A reply QEMU does not take within the message timeout ends the
 * session: the worker never waits on QEMU without a bound. */
static bool send_reply(VgpuFrontend *fe, const VhuResult *res) {
  size_t done = 0;
  gint64 deadline = g_get_monotonic_time() + (gint64)VHF_MSG_TIMEOUT_MS * 1000;
  while (done < res->reply_len) {
    ssize_t n =
        send(fe->client_fd, res->reply + done, res->reply_len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      gint64 left = (deadline - g_get_monotonic_time()) / 1000;
      if (left <= 0) {
        session_end(fe, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU did not take a reply in %d s",
                    VHF_MSG_TIMEOUT_MS / 1000);
        return false;
      }
      struct pollfd pfd = {.fd = fe->client_fd, .events = POLLOUT};
      poll(&pfd, 1, (int)left);
      continue;
    }
    if (n < 0) {
      session_end(fe, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU hung up before a reply was sent");
      return false;
    }
    done += (size_t)n;
  }
  return true;
}

static void act(VgpuFrontend *fe, const VhuResult *res) {
  uint32_t a = res->actions;
  if (a & VHU_ACT_MEM_CHANGED) {
    if (fe->gpu)
      vgpu_device_mem_changed(fe->gpu);
  }
  if (a & VHU_ACT_RESET) {
    fe->ctrl_stopped = false;
    g_hash_table_remove_all(fe->pending);
    vgpu_guard_progress(fe->guard, false);
    if (fe->gpu)
      vgpu_device_reset(fe->gpu);
    memset(fe->ring_broken_logged, 0, sizeof(fe->ring_broken_logged));
  }
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++) {
    if (!(res->ring_mask & (1u << q)))
      continue;
    if (a & VHU_ACT_RING_STOPPED) {
      drop_pending_ring(fe, q);
      fe->ring_broken_logged[q] = false;
      if (q == VGPU_QUEUE_CONTROL && !(a & VHU_ACT_RESET)) {
        fe->ctrl_stopped = true;
        fe->ctrl_stopped_at = fe->dev.vq[q].last_avail;
      }
    }
    /* QEMU sends no reset when the guest reboots: it stops the rings and
     * starts them again, and the new driver starts its resource ids from
     * 1. A pause resumes the control ring where it stopped; a new driver
     * starts it from 0. So a control ring that stopped past 0 and starts
     * at 0 is a new driver, and the old one's objects go. */
    if ((a & VHU_ACT_RING_STARTED) && q == VGPU_QUEUE_CONTROL && fe->ctrl_stopped) {
      fe->ctrl_stopped = false;
      if (fe->ctrl_stopped_at != 0 && fe->dev.vq[q].last_avail == 0 && fe->gpu) {
        vgpu_info("guest driver started afresh: its previous resources and scanouts dropped");
        g_hash_table_remove_all(fe->pending);
        vgpu_guard_progress(fe->guard, false);
        vgpu_device_reset(fe->gpu);
      }
    }
    if (a & VHU_ACT_KICK_FD)
      rewatch_kick(fe, q);
  }
  if (a & VHU_ACT_DISPLAY_FD)
    display_take(fe);
  /* Chains the guest queued before the ring ran. */
  if (a & (VHU_ACT_RING_STARTED | VHU_ACT_RING_ENABLE))
    for (unsigned q = 0; q < VHU_MAX_QUEUES; q++)
      if (res->ring_mask & (1u << q))
        ring_run(fe, q);
}

static void on_client(void *user, int fd, short revents) {
  VgpuFrontend *fe = user;
  (void)revents;
  uint8_t raw[VHU_HDR_SIZE];
  uint8_t payload[VHU_MAX_PAYLOAD];
  int fds[VHU_MAX_FDS];
  size_t nfds = 0;
  const char *why = NULL;
  gint64 deadline = g_get_monotonic_time() + (gint64)VHF_MSG_TIMEOUT_MS * 1000;
  int rc = recv_part(fd, raw, sizeof(raw), fds, &nfds, true, deadline, &why);
  VhuHeader hdr = {0};
  bool have_hdr = false;
  if (rc == 1) {
    rc = vhu_header_parse(raw, &hdr, &why) < 0 ? -EPROTO : 1;
    have_hdr = true;
  }
  if (rc == 1 && hdr.size > 0)
    rc = recv_part(fd, payload, hdr.size, fds, &nfds, false, deadline, &why);
  if (rc <= 0) {
    close_fds(fds, nfds);
    if (rc == 0)
      session_end(fe, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU hung up");
    else if (rc == -EPROTO)
      session_end(fe, VGPU_WORKER_EXIT_VIOLATION, "%s: %s",
                  have_hdr ? vhu_request_name(hdr.request) : "message", why);
    else
      session_end(fe, VGPU_WORKER_EXIT_CLIENT_LEFT, "%s", why);
    return;
  }
  VhuResult res;
  uint32_t request = hdr.request;
  if (request == VHU_GET_VRING_BASE)
    drain_fences(fe);
  rc = vhu_dev_handle(&fe->dev, &hdr, payload, fds, nfds, &res);
  if (!send_reply(fe, &res))
    return;
  if (rc < 0) {
    session_end(fe, VGPU_WORKER_EXIT_VIOLATION, "%s: %s", vhu_request_name(request),
                res.why ? res.why : g_strerror(-rc));
    return;
  }
  act(fe, &res);
}

/* ---- VgpuFrontendOps --------------------------------------------------- */

/* QEMU sends GET_FEATURES as soon as it connects; a peer that sends
 * nothing within the header timeout, or leaves, never costs a renderer. */
static bool vhf_await_client(const VgpuFrontendArgs *a) {
  struct pollfd pfd = {.fd = a->client_fd, .events = POLLIN};
  int timeout = a->header_timeout_ms > 0 ? a->header_timeout_ms : -1;
  for (;;) {
    int r = poll(&pfd, 1, timeout);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      vgpu_info("QEMU sent nothing");
      return false;
    }
    break;
  }
  char c;
  ssize_t n = recv(a->client_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n <= 0) {
    vgpu_info("QEMU left before sending a message");
    return false;
  }
  return true;
}

/* The renderer's fence callbacks (from inside its poll): the device
 * completes the deferred responses they retire. */
static void on_fence(void *user, uint64_t fence) {
  VgpuFrontend *fe = user;
  if (fe->gpu)
    vgpu_device_fence_retired(fe->gpu, fence);
  vgpu_guard_progress(fe->guard, g_hash_table_size(fe->pending) > 0);
  notify_all(fe);
}

static void on_ctx_fence(void *user, uint32_t ctx_id, uint32_t ring_idx, uint64_t fence) {
  VgpuFrontend *fe = user;
  if (fe->gpu)
    vgpu_device_ctx_fence_retired(fe->gpu, ctx_id, ring_idx, fence);
  vgpu_guard_progress(fe->guard, g_hash_table_size(fe->pending) > 0);
  notify_all(fe);
}

static void pending_free(gpointer p) {
  g_free(p);
}

/* A quota refusal costs the guest its request (ERR_OUT_OF_MEMORY from the
 * device), never the session. */
static void tenant_refused(void *user, VgpuResKind kind, const char *reason) {
  (void)user;
  (void)kind;
  vgpu_info("guest request refused by the instance's quota: %s", reason);
}

static void tenant_release(void *user, VgpuTenantResource *res, bool *keep_charge) {
  (void)user;
  (void)res;
  *keep_charge = false;
}

static VgpuFrontend *vhf_create(VgpuRenderer *r, VgpuLoop *loop, const VgpuFrontendArgs *a) {
  VgpuFrontend *fe = g_new0(VgpuFrontend, 1);
  fe->renderer = r;
  fe->loop = loop;
  fe->client_fd = a->client_fd;
  fe->guard = a->guard;
  fe->renderer_fd = -1;
  fe->renderer_watch = -1;
  fe->display_watch = -1;
  fe->ledger_watch = -1;
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++)
    fe->kick_watch[q] = -1;
  fe->heads = a->heads ? a->heads : 1;
  fe->virgl = a->virgl < 0 ? g_strcmp0(r->ops->name, "virgl") == 0 : a->virgl > 0;
  fe->submit_max = a->max_submit_bytes ? a->max_submit_bytes : VHF_DEFAULT_SUBMIT_MAX;
  fe->max_stream_objects = a->max_stream_objects;
  fe->req_cap = MAX((size_t)fe->submit_max + 32, (size_t)VHF_MAX_FIXED_REQ);
  fe->req = g_malloc(fe->req_cap);
  fe->pending = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, pending_free);
  if (a->ledger) {
    VgpuTenantPolicy policy = {.refused = tenant_refused, .release = tenant_release, .user = fe};
    fe->tenant = vgpu_tenant_new(a->ledger, a->slot, &policy);
    vgpu_throttle_watch(vgpu_tenant_throttle(fe->tenant), fe->guard, fe->client_fd);
  }

  uint32_t capsets = fe->virgl ? (uint32_t)__builtin_popcount(vgpu_device_capset_mask(r)) : 0;
  if (fe->virgl && capsets == 0) {
    vgpu_info("renderer %s has no capability set: VIRGL not offered", r->ops->name);
    fe->virgl = false;
  }
  VhuDevConfig dcfg = {
      .gpu_features = (1ull << VHU_F_GPU_EDID) | (fe->virgl ? 1ull << VHU_F_GPU_VIRGL : 0),
      .num_queues = 2,
      .num_scanouts = fe->heads,
      .num_capsets = capsets,
  };
  if (vhu_dev_init(&fe->dev, &dcfg) < 0) {
    session_end(fe, VGPU_WORKER_EXIT_ERROR, "bad device configuration");
    return fe;
  }
  fe->dev_ready = true;
  vgpu_set_nonblock(fe->client_fd, true);
  fe->client_watch = vgpu_loop_add(loop, fe->client_fd, POLLIN, on_client, fe);
  r->fence_cb = on_fence;
  r->ctx_fence_cb = on_ctx_fence;
  r->fence_user = fe;
  fe->renderer_fd = r->ops->get_poll_fd(r);
  if (fe->renderer_fd >= 0)
    fe->renderer_watch = vgpu_loop_add(loop, fe->renderer_fd, POLLIN, on_renderer, fe);
  if (fe->client_watch < 0)
    session_end(fe, VGPU_WORKER_EXIT_ERROR, "cannot watch the client socket");
  fe->ledger = a->ledger;
  if (vgpu_ledger_fd(a->ledger) >= 0) {
    fe->ledger_watch = vgpu_loop_add(loop, vgpu_ledger_fd(a->ledger), POLLIN, on_ledger, fe);
    if (fe->ledger_watch < 0)
      session_end(fe, VGPU_WORKER_EXIT_ERROR, "cannot watch the ledger socket");
  }
  return fe;
}

static int vhf_finish(VgpuFrontend *fe, bool *abandon) {
  *abandon = false;
  const char *reason = fe->reason ? fe->reason : "loop ended";
  switch (fe->exit_code) {
  case VGPU_WORKER_EXIT_CLIENT_LEFT:
    vgpu_info("VM session ended: %s", reason);
    break;
  case VGPU_WORKER_EXIT_VIOLATION:
    vgpu_warn("VM protocol violation, session ended: %s", reason);
    break;
  default:
    vgpu_warn("VM session ended (%s): %s", vgpu_worker_exit_name(fe->exit_code), reason);
    break;
  }
  return fe->exit_code;
}

static void vhf_destroy(VgpuFrontend *fe) {
  if (!fe)
    return;
  display_drop(fe);
  fe->renderer->fence_cb = NULL;
  fe->renderer->ctx_fence_cb = NULL;
  fe->renderer->fence_user = NULL;
  g_clear_pointer(&fe->pending, g_hash_table_destroy);
  g_clear_pointer(&fe->gpu, vgpu_device_free);
  g_clear_pointer(&fe->tenant, vgpu_tenant_free);
  if (fe->dev_ready)
    vhu_dev_fini(&fe->dev);
  g_free(fe->req);
  g_free(fe->reason);
  g_free(fe);
}

const VgpuFrontendOps vgpu_vhost_user_gpu_frontend = {
    .name = "vhost-user-gpu",
    .await_client = vhf_await_client,
    .create = vhf_create,
    .finish = vhf_finish,
    .destroy = vhf_destroy,
};
