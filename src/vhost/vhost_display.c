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

/* Feature bits QEMU may offer on this channel; this back-end acks none of
 * them (EDID is answered from the device's own modes, dmabuf is absent). */
#define VHU_DISP_F_EDID 0
#define VHU_DISP_F_DMABUF2 1
#define VHU_DISP_ACKED 0ull

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

int vhu_display_on_readable(VhuDisplay *d, const char **why) {
  DispHdr h;
  gint64 deadline = deadline_of(d);
  int rc = recv_all(d, &h, sizeof(h), deadline, why);
  if (rc < 0)
    return rc;
  /* Only one request of ours waits for an answer: GET_PROTOCOL_FEATURES
   * (this back-end never sends GET_DISPLAY_INFO, GET_EDID or dmabuf). */
  if (d->ready || h.request != VHU_DISP_GET_PROTOCOL_FEATURES || h.size != 8) {
    *why = "unexpected message from QEMU";
    return -EPROTO;
  }
  uint64_t f;
  if ((rc = recv_all(d, &f, sizeof(f), deadline, why)) < 0)
    return rc;
  d->qemu_features = f;
  uint64_t ack = f & VHU_DISP_ACKED;
  if ((rc = send_msg(d, VHU_DISP_SET_PROTOCOL_FEATURES, &ack, sizeof(ack), why)) < 0)
    return rc;
  d->ready = true;
  return 1;
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
