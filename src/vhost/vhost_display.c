/* The vhost-user-gpu display channel (see vhost_display.h). */
#include "vhost/vhost_display.h"

#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/fd.h"
#include "virtio_gpu/vgpu_device.h"

/* Feature bits QEMU may offer on this channel; this back-end acks EDID
 * (QEMU then answers GET_EDID), never DMABUF2 (no dmabuf here). */
#define VHU_DISP_F_EDID VHU_DISP_PROTOCOL_F_EDID
#define VHU_DISP_F_DMABUF2 1
#define VHU_DISP_ACKED (1ull << VHU_DISP_F_EDID)

/* QEMU's reply payloads (virtio_gpu_resp_display_info / _edid). */
#define VHU_DISP_INFO_SIZE 408u
#define VHU_DISP_EDID_RESP_SIZE 1056u
#define VHU_DISP_EDID_MAX 1024u
#define VHU_DISP_RESP_OK_DISPLAY_INFO 0x1101u
#define VHU_DISP_RESP_OK_EDID 0x1104u
/* The largest width, height, x or y QEMU may report. */
#define VHU_DISP_MODE_MAX 16384u

/* Rows of one UPDATE per sendmsg. */
#define VHU_DISP_IOV_BATCH 512u

struct VhuDisplay {
  int fd;
  int timeout_ms;
  uint32_t num_scanouts;
  bool ready; /* GET_PROTOCOL_FEATURES answered */
  uint64_t qemu_features;
  uint32_t sw[VHU_DISP_MAX_SCANOUTS], sh[VHU_DISP_MAX_SCANOUTS]; /* sent SCANOUT sizes */
  uint32_t *bounce;                                              /* one converted row */
  size_t bounce_px;
  /* Requests QEMU still owes a reply to, oldest first (a ring). */
  struct {
    uint32_t request, scanout;
  } asked[VHU_DISP_MAX_ASKED];
  unsigned asked_first, asked_n;
  /* QEMU's latest answers. */
  bool have_modes;
  VgpuDisplayMode modes[VHU_DISP_MAX_SCANOUTS];
  uint32_t edid_len[VHU_DISP_MAX_SCANOUTS]; /* 0: none yet */
  uint8_t edid[VHU_DISP_MAX_SCANOUTS][VHU_DISP_EDID_MAX];
};

typedef struct {
  uint32_t request, flags, size;
} __attribute__((packed)) DispHdr;

/* Sends all of iov[0, n) (modified) before the deadline. */
static int send_all(VhuDisplay *d, struct iovec *iov, size_t n, gint64 deadline, const char **why) {
  while (n > 0) {
    if (iov->iov_len == 0) {
      iov++;
      n--;
      continue;
    }
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = MIN(n, (size_t)IOV_MAX)};
    ssize_t w = sendmsg(d->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN) {
      gint64 left = (deadline - g_get_monotonic_time()) / 1000;
      if (left <= 0) {
        *why = "a display message was not taken in time";
        return -ETIMEDOUT;
      }
      struct pollfd pfd = {.fd = d->fd, .events = POLLOUT};
      poll(&pfd, 1, (int)MIN(left, G_MAXINT));
      continue;
    }
    if (w < 0) {
      *why = "display socket closed";
      return -EPIPE;
    }
    size_t left = (size_t)w;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0 && left > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

static gint64 deadline_of(const VhuDisplay *d) {
  return g_get_monotonic_time() + (gint64)d->timeout_ms * 1000;
}

static int send_msg(VhuDisplay *d, uint32_t request, const void *payload, uint32_t size,
                    const char **why) {
  DispHdr h = {request, 0, size};
  struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)payload, size}};
  return send_all(d, iov, size ? 2 : 1, deadline_of(d), why);
}

VhuDisplay *vhu_display_new(int fd, uint32_t num_scanouts, int timeout_ms, int *rc,
                            const char **why) {
  VhuDisplay *d = g_new0(VhuDisplay, 1);
  d->fd = fd;
  d->timeout_ms = timeout_ms;
  d->num_scanouts = MIN(MAX(num_scanouts, 1u), VHU_DISP_MAX_SCANOUTS);
  vgpu_set_cloexec(fd, true);
  d->asked[0].request = VHU_DISP_GET_PROTOCOL_FEATURES;
  d->asked_n = 1;
  *rc = send_msg(d, VHU_DISP_GET_PROTOCOL_FEATURES, NULL, 0, why);
  if (*rc < 0) {
    vhu_display_free(d);
    return NULL;
  }
  return d;
}

void vhu_display_free(VhuDisplay *d) {
  if (!d)
    return;
  if (d->fd >= 0)
    close(d->fd);
  g_free(d->bounce);
  g_free(d);
}

int vhu_display_fd(const VhuDisplay *d) {
  return d->fd;
}

bool vhu_display_ready(const VhuDisplay *d) {
  return d->ready;
}

uint64_t vhu_display_qemu_features(const VhuDisplay *d) {
  return d->qemu_features;
}

/* Reads exactly len bytes before the deadline; -EPIPE on EOF. */
static int recv_all(VhuDisplay *d, void *buf, size_t len, gint64 deadline, const char **why) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = recv(d->fd, (uint8_t *)buf + done, len - done, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      gint64 left = (deadline - g_get_monotonic_time()) / 1000;
      if (left <= 0) {
        *why = "a display reply stopped half-way";
        return -ETIMEDOUT;
      }
      struct pollfd pfd = {.fd = d->fd, .events = POLLIN};
      poll(&pfd, 1, (int)MIN(left, G_MAXINT));
      continue;
    }
    if (n <= 0) {
      *why = "display socket closed";
      return -EPIPE;
    }
    done += (size_t)n;
  }
  return 0;
}

uint64_t vhu_display_acked(const VhuDisplay *d) {
  return d->ready ? d->qemu_features & VHU_DISP_ACKED : 0;
}

unsigned vhu_display_outstanding(const VhuDisplay *d) {
  return d->asked_n;
}

/* Takes the oldest request matching a reply to @request.  QEMU drops a
 * GET_EDID it cannot answer (a head it does not have) without a word, so
 * GET_EDID entries before the match are forgotten; anything else out of
 * order is QEMU's error.  false: nothing matches. */
static bool asked_take(VhuDisplay *d, uint32_t request, uint32_t *scanout) {
  unsigned skip = 0;
  while (skip < d->asked_n) {
    unsigned i = (d->asked_first + skip) % VHU_DISP_MAX_ASKED;
    if (d->asked[i].request == request)
      break;
    if (d->asked[i].request != VHU_DISP_GET_EDID)
      return false;
    skip++;
  }
  if (skip == d->asked_n)
    return false;
  unsigned i = (d->asked_first + skip) % VHU_DISP_MAX_ASKED;
  *scanout = d->asked[i].scanout;
  d->asked_first = (i + 1) % VHU_DISP_MAX_ASKED;
  d->asked_n -= skip + 1;
  return true;
}

static uint32_t get32(const uint8_t *p, size_t off) {
  uint32_t v;
  memcpy(&v, p + off, 4);
  return GUINT32_FROM_LE(v);
}

/* QEMU's display info: every mode checked before any is kept. */
static int take_display_info(VhuDisplay *d, const uint8_t *p, const char **why) {
  if (get32(p, 0) != VHU_DISP_RESP_OK_DISPLAY_INFO) {
    *why = "QEMU's display info reply is not OK_DISPLAY_INFO";
    return -EPROTO;
  }
  VgpuDisplayMode m[VHU_DISP_MAX_SCANOUTS];
  for (uint32_t i = 0; i < VHU_DISP_MAX_SCANOUTS; i++) {
    const uint8_t *q = p + 24 + 24 * i;
    m[i] = (VgpuDisplayMode){.r = {get32(q, 0), get32(q, 4), get32(q, 8), get32(q, 12)},
                             .enabled = get32(q, 16),
                             .flags = get32(q, 20)};
    if (m[i].enabled > 1 ||
        (m[i].enabled && (m[i].r.w == 0 || m[i].r.h == 0 || m[i].r.w > VHU_DISP_MODE_MAX ||
                          m[i].r.h > VHU_DISP_MODE_MAX || m[i].r.x > VHU_DISP_MODE_MAX ||
                          m[i].r.y > VHU_DISP_MODE_MAX))) {
      *why = "QEMU's display info has a mode out of range";
      return -EPROTO;
    }
  }
  /* Heads beyond this device's (QEMU configured more outputs) are left
   * out: the guest cannot reach them through this device. */
  memcpy(d->modes, m, sizeof(m));
  for (uint32_t i = d->num_scanouts; i < VHU_DISP_MAX_SCANOUTS; i++)
    d->modes[i] = (VgpuDisplayMode){0};
  d->have_modes = true;
  return VHU_DISP_EV_MODES;
}

static int take_edid(VhuDisplay *d, uint32_t id, const uint8_t *p, const char **why) {
  uint32_t len = get32(p, 24);
  if (get32(p, 0) != VHU_DISP_RESP_OK_EDID || len == 0 || len > VHU_DISP_EDID_MAX ||
      len % 128 != 0) {
    *why = "QEMU's EDID reply is malformed";
    return -EPROTO;
  }
  memcpy(d->edid[id], p + 32, len);
  d->edid_len[id] = len;
  return VHU_DISP_EV_MODES;
}

int vhu_display_on_readable(VhuDisplay *d, const char **why) {
  DispHdr h;
  gint64 deadline = deadline_of(d);
  int rc = recv_all(d, &h, sizeof(h), deadline, why);
  if (rc < 0)
    return rc;
  /* QEMU only ever answers: a reply to something asked, of its size. */
  uint32_t want = h.request == VHU_DISP_GET_PROTOCOL_FEATURES ? 8u
                  : h.request == VHU_DISP_GET_DISPLAY_INFO    ? VHU_DISP_INFO_SIZE
                  : h.request == VHU_DISP_GET_EDID            ? VHU_DISP_EDID_RESP_SIZE
                                                              : 0u;
  uint32_t scanout = 0;
  if (want == 0 || !(h.flags & VHU_DISP_FLAG_REPLY) || !asked_take(d, h.request, &scanout)) {
    *why = "unexpected message from QEMU";
    return -EPROTO;
  }
  if (h.size != want) {
    *why = "a reply from QEMU has the wrong size";
    return -EPROTO;
  }
  uint8_t p[VHU_DISP_EDID_RESP_SIZE];
  if ((rc = recv_all(d, p, want, deadline, why)) < 0)
    return rc;
  if (h.request == VHU_DISP_GET_DISPLAY_INFO)
    return take_display_info(d, p, why);
  if (h.request == VHU_DISP_GET_EDID)
    return take_edid(d, scanout, p, why);
  uint64_t f;
  memcpy(&f, p, sizeof(f));
  d->qemu_features = GUINT64_FROM_LE(f);
  uint64_t ack = GUINT64_TO_LE(d->qemu_features & VHU_DISP_ACKED);
  if ((rc = send_msg(d, VHU_DISP_SET_PROTOCOL_FEATURES, &ack, sizeof(ack), why)) < 0)
    return rc;
  d->ready = true;
  return VHU_DISP_EV_READY;
}

static int ask(VhuDisplay *d, uint32_t request, uint32_t scanout, const char **why) {
  if (d->asked_n == VHU_DISP_MAX_ASKED)
    return 0; /* QEMU is behind: the answers it still owes will do */
  uint32_t m[1] = {scanout};
  int rc = send_msg(d, request, m, request == VHU_DISP_GET_EDID ? sizeof(m) : 0, why);
  if (rc < 0)
    return rc;
  unsigned i = (d->asked_first + d->asked_n++) % VHU_DISP_MAX_ASKED;
  d->asked[i].request = request;
  d->asked[i].scanout = scanout;
  return 1;
}

int vhu_display_ask_modes(VhuDisplay *d, const char **why) {
  if (!d->ready)
    return 0;
  return ask(d, VHU_DISP_GET_DISPLAY_INFO, 0, why);
}

int vhu_display_ask_edid(VhuDisplay *d, uint32_t id, const char **why) {
  /* QEMU never answers a GET_EDID for a head it lacks, so only head 0
   * (always there) and heads its display info showed are asked about. */
  if (!d->ready || !(d->qemu_features & (1ull << VHU_DISP_F_EDID)) || id >= d->num_scanouts ||
      (id > 0 && !(d->have_modes && d->modes[id].enabled)))
    return 0;
  return ask(d, VHU_DISP_GET_EDID, id, why);
}

int vhu_display_wait(VhuDisplay *d, int wait_ms, const char **why) {
  int ev = 0;
  gint64 deadline = g_get_monotonic_time() + (gint64)wait_ms * 1000;
  while (d->asked_n > 0) {
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    if (left <= 0)
      break;
    struct pollfd pfd = {.fd = d->fd, .events = POLLIN};
    int n = poll(&pfd, 1, (int)MIN(left, G_MAXINT));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    int rc = vhu_display_on_readable(d, why);
    if (rc < 0)
      return rc;
    ev |= rc;
  }
  return ev;
}

const VgpuDisplayMode *vhu_display_modes(const VhuDisplay *d) {
  return d->have_modes ? d->modes : NULL;
}

const uint8_t *vhu_display_edid(const VhuDisplay *d, uint32_t id, size_t *len) {
  if (id >= d->num_scanouts || d->edid_len[id] == 0)
    return NULL;
  *len = d->edid_len[id];
  return d->edid[id];
}

int vhu_display_scanout(VhuDisplay *d, uint32_t id, uint32_t w, uint32_t h, const char **why) {
  if (id >= d->num_scanouts) {
    *why = "scanout id out of range";
    return -EINVAL;
  }
  uint32_t m[3] = {id, w, h};
  int rc = send_msg(d, VHU_DISP_SCANOUT, m, sizeof(m), why);
  if (rc == 0) {
    d->sw[id] = w;
    d->sh[id] = w ? h : 0;
  }
  return rc;
}

/* Byte offsets of B, G, R in a pixel of @format; false for a format that
 * is not 4-byte RGB. */
static bool format_order(uint32_t format, unsigned *b, unsigned *g, unsigned *r) {
  switch (format) {
  case VGPU_FORMAT_B8G8R8A8_UNORM:
  case VGPU_FORMAT_B8G8R8X8_UNORM:
    *b = 0, *g = 1, *r = 2;
    return true;
  case VGPU_FORMAT_A8R8G8B8_UNORM:
  case VGPU_FORMAT_X8R8G8B8_UNORM:
    *b = 3, *g = 2, *r = 1;
    return true;
  case VGPU_FORMAT_R8G8B8A8_UNORM:
  case VGPU_FORMAT_R8G8B8X8_UNORM:
    *b = 2, *g = 1, *r = 0;
    return true;
  case VGPU_FORMAT_X8B8G8R8_UNORM:
  case VGPU_FORMAT_A8B8G8R8_UNORM:
    *b = 1, *g = 2, *r = 3;
    return true;
  default:
    return false;
  }
}

int vhu_display_update(VhuDisplay *d, uint32_t id, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                       const void *pixels, uint32_t stride, uint32_t format, const char **why) {
  unsigned ob, og, or ;
  if (id >= d->num_scanouts || d->sw[id] == 0) {
    *why = "update of a scanout QEMU was not told about";
    return -EINVAL;
  }
  /* QEMU trusts the rectangle: it must lie in the scanout it knows. */
  if (w == 0 || h == 0 || (uint64_t)x + w > d->sw[id] || (uint64_t)y + h > d->sh[id] ||
      (uint64_t)stride < (uint64_t)w * 4 || !format_order(format, &ob, &og, & or)) {
    *why = "update outside its scanout or in an unknown format";
    return -EINVAL;
  }
  uint64_t bytes = (uint64_t)w * h * 4;
  if (bytes > UINT32_MAX - 20) {
    *why = "update too large for one message";
    return -EINVAL;
  }
  uint32_t m[5] = {id, x, y, w, h};
  DispHdr hd = {VHU_DISP_UPDATE, 0, (uint32_t)(20 + bytes)};
  struct iovec iov[2 + VHU_DISP_IOV_BATCH];
  iov[0] = (struct iovec){&hd, sizeof(hd)};
  iov[1] = (struct iovec){m, sizeof(m)};
  gint64 deadline = deadline_of(d);
  int rc = send_all(d, iov, 2, deadline, why);
  bool direct = ob == 0 && og == 1 && or == 2;
  const uint8_t *src = pixels;
  if (direct && stride == w * 4) {
    iov[0] = (struct iovec){(void *)src, (size_t)bytes};
    return rc < 0 ? rc : send_all(d, iov, 1, deadline, why);
  }
  if (!direct && d->bounce_px < w) {
    g_free(d->bounce);
    d->bounce = g_new(uint32_t, w);
    d->bounce_px = w;
  }
  for (uint32_t row = 0; rc == 0 && row < h;) {
    size_t n = 0;
    if (direct) {
      for (; n < VHU_DISP_IOV_BATCH && row < h; n++, row++)
        iov[n] = (struct iovec){(void *)(src + (size_t)row * stride), (size_t)w * 4};
    } else {
      const uint8_t *p = src + (size_t)row * stride;
      for (uint32_t i = 0; i < w; i++, p += 4)
        d->bounce[i] = 0xff000000u | (uint32_t)p[or] << 16 | (uint32_t)p[og] << 8 | p[ob];
      iov[n++] = (struct iovec){d->bounce, (size_t)w * 4};
      row++;
    }
    rc = send_all(d, iov, n, deadline, why);
  }
  return rc;
}

int vhu_display_cursor_update(VhuDisplay *d, uint32_t id, uint32_t x, uint32_t y, uint32_t hot_x,
                              uint32_t hot_y, const uint32_t *pixels, const char **why) {
  if (id >= d->num_scanouts) {
    *why = "scanout id out of range";
    return -EINVAL;
  }
  uint32_t pos[3] = {id, x, y};
  if (!pixels)
    return send_msg(d, VHU_DISP_CURSOR_POS_HIDE, pos, sizeof(pos), why);
  uint32_t m[5] = {id, x, y, hot_x, hot_y};
  size_t data = VHU_DISP_CURSOR_SIZE * VHU_DISP_CURSOR_SIZE * 4;
  DispHdr hd = {VHU_DISP_CURSOR_UPDATE, 0, (uint32_t)(sizeof(m) + data)};
  struct iovec iov[3] = {{&hd, sizeof(hd)}, {m, sizeof(m)}, {(void *)pixels, data}};
  return send_all(d, iov, 3, deadline_of(d), why);
}

int vhu_display_cursor_move(VhuDisplay *d, uint32_t id, uint32_t x, uint32_t y, const char **why) {
  if (id >= d->num_scanouts) {
    *why = "scanout id out of range";
    return -EINVAL;
  }
  uint32_t pos[3] = {id, x, y};
  return send_msg(d, VHU_DISP_CURSOR_POS, pos, sizeof(pos), why);
}
