/* vgpu-worker --protocol=vhost-user-gpu against a harness that plays QEMU
 * (tests/support/vhu_harness.h): the QEMU 10 start sequence, a 2D frame
 * whose pixels must arrive on the display channel as the guest wrote them,
 * hostile messages from QEMU (each ends the session with the violation
 * status and one log line), guest requests that only get error responses,
 * and QEMU hanging up (a clean exit). */
#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../support/vhu_harness.h"
#include "core/worker_exit.h"
#include "render/renderer.h"
#include "vhost/vhost_user.h"
#include "virtio_gpu/vgpu_cmd.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __func__, __LINE__, #cond);                              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      failures++;                                                                                  \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

typedef struct {
  uint32_t type, flags;
  uint64_t fence_id;
  uint32_t ctx_id, ring;
} Hdr;

static Hdr hdr(uint32_t type) {
  return (Hdr){.type = type};
}

/* The 2D requests that put one W x H B8G8R8X8 resource with its backing
 * at fb on scanout 0 and show it (each test sends what it needs). */
typedef struct {
  struct {
    Hdr h;
    uint32_t id, format, w, hh;
  } create;
  struct {
    Hdr h;
    uint32_t id, nr;
    uint64_t addr;
    uint32_t len, pad;
  } attach;
  struct {
    Hdr h;
    uint32_t x, y, w, hh;
    uint64_t offset;
    uint32_t id, pad;
  } xfer;
  struct {
    Hdr h;
    uint32_t x, y, w, hh, scanout, id;
  } set;
  struct {
    Hdr h;
    uint32_t x, y, w, hh, id, pad;
  } flush;
} Scanout2d;

static Scanout2d scanout_2d(uint32_t res, uint32_t w, uint32_t h, uint64_t fb) {
  Scanout2d r = {
      .create = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), res, 2, w, h},
      .attach = {hdr(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING), res, 1, fb, w * h * 4, 0},
      .xfer = {hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D), 0, 0, w, h, 0, res, 0},
      .set = {hdr(VIRTIO_GPU_CMD_SET_SCANOUT), 0, 0, w, h, 0, res},
      .flush = {hdr(VIRTIO_GPU_CMD_RESOURCE_FLUSH), 0, 0, w, h, res, 0},
  };
  return r;
}

/* Creates the resource, attaches its backing and sets it on scanout 0:
 * true when every answer is OK_NODATA. */
static bool scanout_2d_set(VhhHarness *h, const Scanout2d *rq) {
  return vhh_ctrl(h, &rq->create, sizeof(rq->create)) == VIRTIO_GPU_RESP_OK_NODATA &&
         vhh_ctrl(h, &rq->attach, sizeof(rq->attach)) == VIRTIO_GPU_RESP_OK_NODATA &&
         vhh_ctrl(h, &rq->set, sizeof(rq->set)) == VIRTIO_GPU_RESP_OK_NODATA;
}

/* In 3D context 1 (made here, as "3d"): a w x h B8G8R8X8 render-target
 * texture @res with rq's backing, attached to the context and uploaded
 * whole.  Returns the first answer that is not OK_NODATA, else OK_NODATA. */
static uint32_t upload_3d(VhhHarness *h, uint32_t res, uint32_t w, uint32_t hgt,
                          const Scanout2d *rq) {
  struct {
    Hdr h;
    uint32_t nlen, init;
    char name[64];
  } cc = {{VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0}, 2, 0, "3d"};
  struct {
    Hdr h;
    uint32_t id, target, format, bind, w, hh, depth, array_size, last_level, nr_samples, flags;
  } c3 = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D),
          res,
          2,
          2,
          (1u << 1) | (1u << 3) | (1u << 18),
          w,
          hgt,
          1,
          1,
          0,
          0,
          0};
  struct {
    Hdr h;
    uint32_t id, pad;
  } ca = {{VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 0, 0, 1, 0}, res, 0};
  struct {
    Hdr h;
    uint32_t x, y, z, w, hh, d;
    uint64_t offset;
    uint32_t id, level, stride, layer_stride;
  } tr = {
      {VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 0, 0, 1, 0}, 0, 0, 0, w, hgt, 1, 0, res, 0, w * 4, 0};
  uint32_t t;
  if ((t = vhh_ctrl(h, &cc, sizeof(cc))) != VIRTIO_GPU_RESP_OK_NODATA ||
      (t = vhh_ctrl(h, &c3, sizeof(c3))) != VIRTIO_GPU_RESP_OK_NODATA ||
      (t = vhh_ctrl(h, &rq->attach, sizeof(rq->attach))) != VIRTIO_GPU_RESP_OK_NODATA ||
      (t = vhh_ctrl(h, &ca, sizeof(ca))) != VIRTIO_GPU_RESP_OK_NODATA)
    return t;
  return vhh_ctrl(h, &tr, sizeof(tr));
}

static void dump_log(VhhHarness *h) {
  vhh_read_log(h);
  fprintf(stderr, "--- worker log ---\n%s------------------\n", h->log);
}

/* Waits (bounded) until the worker closed its end of the vhost-user
 * socket, draining whatever it still sent. */
static void wait_worker_closed(VhhHarness *h) {
  for (int turns = 0; turns < 1000; turns++) {
    struct pollfd pfd = {.fd = h->sock, .events = POLLIN};
    if (poll(&pfd, 1, VHH_TIMEOUT_MS) <= 0)
      return;
    uint8_t b[256];
    if (recv(h->sock, b, sizeof(b), MSG_DONTWAIT) <= 0)
      return;
  }
}

/* Ends with the expected status and exactly one line naming the cause. */
static void expect_end(VhhHarness *h, int status, const char *line, const char *what) {
  int st = vhh_finish(h);
  unsigned n = vhh_log_count(h, line);
  if (st != status || n != 1 || getenv("VHH_VERBOSE"))
    dump_log(h);
  CHECK(st == status, "%s: exit status %d, want %d", what, st, status);
  CHECK(n == 1, "%s: %u log lines with \"%s\", want 1", what, n, line);
}

static void test_2d_frame(void) {
  VhhHarness h;
  const char *args[] = {"--max-submit-bytes=4096", NULL};
  CHECK(vhh_start(&h, args), "cannot start the worker");
  if (!vhh_negotiate(&h, 0)) {
    dump_log(&h);
    vhh_finish(&h);
    vhh_free(&h);
    CHECK(false, "negotiation failed");
  }
  CHECK(h.features & (1ull << VHU_F_GPU_EDID), "EDID not offered");
  CHECK(!(h.features & (1ull << VHU_F_GPU_VIRGL)), "VIRGL offered by the null renderer");
  /* EDID acked (QEMU answers GET_EDID), DMABUF2 not. */
  CHECK(h.disp_acked == 1, "display features acked: %#llx", (unsigned long long)h.disp_acked);

  enum { W = 64, H = 48, RES = 7 };
  /* The guest's framebuffer in guest memory. */
  uint64_t fb = vhh_alloc(&h, W * H * 4);
  uint32_t *px = vhh_ptr(&h, fb);
  for (uint32_t y = 0; y < H; y++)
    for (uint32_t x = 0; x < W; x++)
      px[y * W + x] = 0xff000000u | (x * 4) << 16 | (y * 5) << 8 | ((x ^ y) & 0xff);

  Scanout2d rq = scanout_2d(RES, W, H, fb);
  uint32_t t = vhh_ctrl(&h, &rq.create, sizeof(rq.create));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "create: %#x", t);
  t = vhh_ctrl(&h, &rq.attach, sizeof(rq.attach));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "attach: %#x", t);
  t = vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "transfer: %#x", t);
  t = vhh_ctrl(&h, &rq.set, sizeof(rq.set));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "set scanout: %#x", t);
  t = vhh_ctrl(&h, &rq.flush, sizeof(rq.flush));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "flush: %#x", t);
  /* The worker wrote the frame before it answered the flush. */
  vhh_pump_display(&h, 200);
  CHECK(h.scanout[0].w == W && h.scanout[0].h == H, "scanout %ux%u", h.scanout[0].w,
        h.scanout[0].h);
  CHECK(h.scanout[0].updates >= 1, "no UPDATE received");
  unsigned bad = 0;
  for (uint32_t i = 0; i < W * H; i++)
    if ((h.scanout[0].px[i] & 0xffffff) != (px[i] & 0xffffff))
      bad++;
  CHECK(bad == 0, "%u of %u pixels differ from what the guest wrote", bad, W * H);

  /* A partial update: rows of the rectangle are not contiguous in the
   * resource (one iovec per row on the display socket). */
  for (uint32_t y = 5; y < 15; y++)
    for (uint32_t x = 8; x < 24; x++)
      px[y * W + x] = 0xff000000u | (x * y * 977u);
  rq.xfer.x = 8, rq.xfer.y = 5, rq.xfer.w = 16, rq.xfer.hh = 10, rq.xfer.offset = (5 * W + 8) * 4;
  rq.flush.x = 8, rq.flush.y = 5, rq.flush.w = 16, rq.flush.hh = 10;
  unsigned updates = h.scanout[0].updates;
  CHECK(vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.flush, sizeof(rq.flush)) == VIRTIO_GPU_RESP_OK_NODATA,
        "partial transfer and flush");
  for (int i = 0; i < 50 && h.scanout[0].updates == updates; i++)
    vhh_pump_display(&h, 100);
  bad = 0;
  for (uint32_t i = 0; i < W * H; i++)
    bad += (h.scanout[0].px[i] & 0xffffff) != (px[i] & 0xffffff);
  CHECK(h.scanout[0].updates > updates && bad == 0, "partial update: %u pixels differ", bad);
  rq.xfer.x = 0, rq.xfer.y = 0, rq.xfer.w = W, rq.xfer.hh = H, rq.xfer.offset = 0;
  rq.flush.x = 0, rq.flush.y = 0, rq.flush.w = W, rq.flush.hh = H;

  /* A format QEMU does not read as it is (R8G8B8A8): converted to
   * x8r8g8b8 on the way. */
  uint64_t fb2 = vhh_alloc(&h, W * H * 4);
  uint32_t *px2 = vhh_ptr(&h, fb2);
  for (uint32_t i = 0; i < W * H; i++)
    px2[i] = 0xff000000u | (i * 2246822519u >> 8);
  rq.create.id = 9, rq.create.format = 67;
  rq.attach.id = 9, rq.attach.addr = fb2;
  rq.xfer.id = 9;
  rq.set.id = 9;
  rq.flush.id = 9;
  updates = h.scanout[0].updates;
  CHECK(vhh_ctrl(&h, &rq.create, sizeof(rq.create)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.attach, sizeof(rq.attach)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.set, sizeof(rq.set)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.flush, sizeof(rq.flush)) == VIRTIO_GPU_RESP_OK_NODATA,
        "R8G8B8A8 scanout");
  for (int i = 0; i < 50 && h.scanout[0].updates == updates; i++)
    vhh_pump_display(&h, 100);
  bad = 0;
  for (uint32_t i = 0; i < W * H; i++) {
    uint32_t v = px2[i]; /* bytes R, G, B, A */
    uint32_t want = (v & 0xff) << 16 | (v & 0xff00) | (v >> 16 & 0xff);
    bad += (h.scanout[0].px[i] & 0xffffff) != want;
  }
  CHECK(h.scanout[0].updates > updates && bad == 0, "R8G8B8A8: %u pixels differ", bad);
  /* Back to the first resource for what follows. */
  rq.create.id = RES, rq.create.format = 2;
  rq.attach.id = RES, rq.attach.addr = fb;
  rq.xfer.id = RES;
  rq.set.id = RES;
  rq.flush.id = RES;
  CHECK(vhh_ctrl(&h, &rq.set, sizeof(rq.set)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.flush, sizeof(rq.flush)) == VIRTIO_GPU_RESP_OK_NODATA,
        "back to the first scanout");

  /* The cursor queue: a 64x64 image and a move reach the display channel;
   * its chains come back with length 0. */
  uint64_t cfb = vhh_alloc(&h, 64 * 64 * 4);
  uint32_t *cpx = vhh_ptr(&h, cfb);
  for (uint32_t i = 0; i < 64 * 64; i++)
    cpx[i] = 0x80000000u | i;
  rq.create.id = 8;
  rq.create.w = rq.create.hh = 64;
  rq.attach.id = 8;
  rq.attach.addr = cfb;
  rq.attach.len = 64 * 64 * 4;
  rq.xfer.id = 8;
  rq.xfer.w = rq.xfer.hh = 64;
  CHECK(vhh_ctrl(&h, &rq.create, sizeof(rq.create)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.attach, sizeof(rq.attach)) == VIRTIO_GPU_RESP_OK_NODATA &&
            vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer)) == VIRTIO_GPU_RESP_OK_NODATA,
        "cursor resource");
  struct {
    Hdr h;
    uint32_t scanout, x, y, pad, id, hot_x, hot_y, pad2;
  } cur = {hdr(VIRTIO_GPU_CMD_UPDATE_CURSOR), 0, 10, 20, 0, 8, 3, 4, 0};
  unsigned before = h.cursor_msgs;
  int cused = vhh_submit(&h, 1, &cur, sizeof(cur), NULL, 0);
  CHECK(cused == 0, "cursor update: used length %d", cused);
  for (int i = 0; i < 50 && h.cursor_msgs == before; i++)
    vhh_pump_display(&h, 100);
  CHECK(h.cursor_msgs == before + 1 && h.cursor_x == 10 && h.cursor_y == 20 && !h.cursor_hidden &&
            memcmp(h.cursor_px, cpx, sizeof(h.cursor_px)) == 0,
        "cursor image: %u messages, at %u,%u", h.cursor_msgs - before, h.cursor_x, h.cursor_y);
  cur.h.type = VIRTIO_GPU_CMD_MOVE_CURSOR;
  cur.x = 30;
  CHECK(vhh_submit(&h, 1, &cur, sizeof(cur), NULL, 0) == 0, "cursor move");
  for (int i = 0; i < 50 && h.cursor_msgs == before + 1; i++)
    vhh_pump_display(&h, 100);
  CHECK(h.cursor_msgs == before + 2 && h.cursor_x == 30, "cursor move: at %u", h.cursor_x);
  rq.xfer.id = RES;
  rq.xfer.w = W;
  rq.xfer.hh = H;

  /* Bad guest requests only get error responses. */
  rq.xfer.id = 99;
  t = vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer));
  CHECK(t >= VIRTIO_GPU_RESP_ERR_UNSPEC, "transfer to a missing resource: %#x", t);
  uint8_t junk[8] = {1, 2, 3};
  t = vhh_ctrl(&h, junk, sizeof(junk));
  CHECK(t == VIRTIO_GPU_RESP_ERR_UNSPEC, "short request: %#x", t);
  /* Larger than any request may be (256 KiB with a 4 KiB submit cap):
   * ERR_UNSPEC without being read. */
  size_t big_len = 300000;
  uint8_t *big = calloc(1, big_len);
  memcpy(big, &rq.flush, sizeof(rq.flush));
  t = vhh_ctrl(&h, big, big_len);
  free(big);
  CHECK(t == VIRTIO_GPU_RESP_ERR_UNSPEC, "oversized request: %#x", t);
  /* A response buffer smaller than the response: only what fits. */
  struct {
    Hdr h;
  } info = {hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO)};
  uint8_t small[16];
  int used = vhh_submit(&h, 0, &info, sizeof(info), small, sizeof(small));
  CHECK(used == (int)sizeof(small), "used length %d for a 16-byte response buffer", used);
  t = vhh_ctrl(&h, &rq.flush, sizeof(rq.flush));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "after bad requests: %#x", t);

  /* QEMU stops the device (guest reset or VM pause) and starts it again:
   * the ring continues where it stopped, and the new display socket is
   * shown what the guest shows without the guest drawing again. */
  uint16_t next_avail = 0;
  CHECK(vhh_stop(&h, &next_avail), "stop sequence failed");
  CHECK(next_avail == h.vq[0].avail_idx, "GET_VRING_BASE said %u, %u chains were offered",
        next_avail, h.vq[0].avail_idx);
  CHECK(vhh_restart(&h, next_avail), "restart failed");
  for (int i = 0; i < 50 && h.scanout[0].updates == 0; i++)
    vhh_pump_display(&h, 100);
  CHECK(h.scanout[0].w == W && h.scanout[0].updates >= 1, "no redraw after the restart");
  bad = 0;
  for (uint32_t i = 0; i < W * H; i++)
    if ((h.scanout[0].px[i] & 0xffffff) != (px[i] & 0xffffff))
      bad++;
  CHECK(bad == 0, "%u pixels differ after the restart", bad);
  t = vhh_ctrl(&h, &rq.flush, sizeof(rq.flush));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "flush after the restart: %#x", t);

  /* A guest reboot: QEMU stops and starts the rings, with no reset; the
   * new driver starts its rings at 0 and its resource ids at 1 again. */
  CHECK(vhh_stop(&h, &next_avail), "second stop failed");
  CHECK(vhh_restart(&h, 0), "restart after reboot failed");
  t = vhh_ctrl(&h, &rq.create, sizeof(rq.create));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "the new driver's first resource: %#x", t);
  rq.xfer.id = 8; /* the old driver's cursor resource */
  t = vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer));
  CHECK(t == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID, "an old driver's resource: %#x", t);

  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU hung up", "hang-up after a frame");
  vhh_free(&h);
}

/* A message QEMU should never send, sent after negotiation. */
typedef void (*Hostile)(VhhHarness *h);

static void hostile_bad_size(VhhHarness *h) {
  uint32_t four = 1;
  vhh_msg(h, VHU_SET_FEATURES, 0, &four, 4, NULL, 0, NULL, 0);
}

static void hostile_missing_fd(VhhHarness *h) {
  struct {
    uint32_t n, pad;
    uint64_t gpa, size, uva, off;
  } table = {1, 0, 0, 1 << 20, 0x10000000, 0};
  vhh_msg(h, VHU_SET_MEM_TABLE, 0, &table, sizeof(table), NULL, 0, NULL, 0);
}

static void hostile_too_many_fds(VhhHarness *h) {
  int fds[12];
  for (int i = 0; i < 12; i++)
    fds[i] = eventfd(0, EFD_CLOEXEC);
  vhh_msg(h, VHU_SET_OWNER, 0, NULL, 0, fds, 12, NULL, 0);
  for (int i = 0; i < 12; i++)
    close(fds[i]);
}

static void hostile_ring_outside(VhhHarness *h) {
  uint32_t base[2] = {0, 0};
  /* Stop ring 0 first, as QEMU does before moving it. */
  uint32_t st[2] = {0, 0};
  uint32_t reply[2];
  vhh_msg(h, VHU_GET_VRING_BASE, 0, st, 8, NULL, 0, reply, sizeof(reply));
  vhh_msg(h, VHU_SET_VRING_BASE, 0, base, 8, NULL, 0, NULL, 0);
  struct {
    uint32_t index, flags;
    uint64_t desc, used, avail, log;
  } addr = {0, 0, 0x7f0000000000ull, 0x7f0000002000ull, 0x7f0000001000ull, 0};
  vhh_msg(h, VHU_SET_VRING_ADDR, 0, &addr, sizeof(addr), NULL, 0, NULL, 0);
}

static void hostile_huge_payload(VhhHarness *h) {
  uint32_t raw[3] = {VHU_SET_FEATURES, VHU_FLAG_VERSION, 1u << 20};
  (void)!write(h->sock, raw, sizeof(raw));
}

static void test_hostile(const char *what, Hostile fn) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  bool ok = vhh_negotiate(&h, 0);
  if (!ok)
    dump_log(&h);
  CHECK(ok, "%s: negotiation failed", what);
  fn(&h);
  /* The session ends on its own, with the socket still open (QEMU has
   * not hung up): wait for the worker's end of it to close. */
  wait_worker_closed(&h);
  int st;
  st = vhh_finish(&h);
  unsigned n = vhh_log_count(&h, "protocol violation");
  if (st != VGPU_WORKER_EXIT_VIOLATION || n != 1 || getenv("VHH_VERBOSE"))
    dump_log(&h);
  vhh_free(&h);
  CHECK(st == VGPU_WORKER_EXIT_VIOLATION, "%s: exit status %d, want %d", what, st,
        VGPU_WORKER_EXIT_VIOLATION);
  CHECK(n == 1, "%s: %u protocol violation lines, want 1", what, n);
}

/* 3D offered (--virgl=on; the null renderer has capability sets): a fenced
 * request is answered only when its fence retires, through the renderer's
 * fence callback, with the guest's fence id. */
static void test_fenced(const char *renderer) {
  VhhHarness h;
  const char *args[] = {"--virgl=on", "--heads=2", renderer, NULL};
  CHECK(vhh_start(&h, args), "cannot start the worker");
  /* QEMU shows a second head beside the first. */
  h.qemu_mode[1] = (VhhMode){1280, 0, 1024, 768, 1};
  CHECK(vhh_negotiate(&h, 1ull << VHU_F_GPU_VIRGL), "negotiation failed");
  CHECK(h.features & (1ull << VHU_F_GPU_VIRGL), "VIRGL not offered with --virgl=on");
  struct {
    Hdr h;
    uint32_t index, pad;
  } ci = {hdr(VIRTIO_GPU_CMD_GET_CAPSET_INFO), 0, 0};
  uint32_t t = vhh_ctrl(&h, &ci, sizeof(ci));
  CHECK(t == VIRTIO_GPU_RESP_OK_CAPSET_INFO, "capset info: %#x", t);
  struct {
    Hdr h;
  } di = {hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO)};
  uint8_t info[408];
  int used = vhh_submit(&h, 0, &di, sizeof(di), info, sizeof(info));
  uint32_t m1[5];
  memcpy(m1, info + 24 + 24, sizeof(m1));
  CHECK(used == 408 && m1[0] == 1280 && m1[2] == 1024 && m1[3] == 768 && m1[4] == 1,
        "display info: used %d, head 1 at %u,%u %ux%u enabled %u", used, m1[0], m1[1], m1[2], m1[3],
        m1[4]);
  struct {
    Hdr h;
    uint32_t nlen, init;
    char name[64];
  } cc = {{VIRTIO_GPU_CMD_CTX_CREATE, VIRTIO_GPU_FLAG_FENCE, 0x123456789ull, 3, 0}, 4, 0, "test"};
  Hdr resp;
  used = vhh_submit(&h, 0, &cc, sizeof(cc), &resp, sizeof(resp));
  CHECK(used == (int)sizeof(resp), "fenced ctx create: used %d", used);
  CHECK(resp.type == VIRTIO_GPU_RESP_OK_NODATA && (resp.flags & VIRTIO_GPU_FLAG_FENCE) &&
            resp.fence_id == 0x123456789ull && resp.ctx_id == 3,
        "fenced response: type %#x flags %#x fence %#llx ctx %u", resp.type, resp.flags,
        (unsigned long long)resp.fence_id, resp.ctx_id);
  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU hung up", "fenced");
  vhh_free(&h);
}

/* Starts a worker with @args, negotiates VIRGL as QEMU does and creates
 * the guest's 3D context 1 (named @name). */
static void start_3d_ctx(VhhHarness *h, const char *const *args, const char *name) {
  CHECK(vhh_start(h, args), "cannot start the worker");
  CHECK(vhh_negotiate(h, 1ull << VHU_F_GPU_VIRGL), "negotiation failed");
  struct {
    Hdr h;
    uint32_t nlen, init;
    char name[64];
  } cc = {{VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0}, (uint32_t)strlen(name), 0, {0}};
  g_strlcpy(cc.name, name, sizeof(cc.name));
  uint32_t t = vhh_ctrl(h, &cc, sizeof(cc));
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "ctx create: %#x", t);
}

/* --max-stream-objects reaches the device: with a bound of 64, a guest's
 * 3D context may hold 64 sampler states and the 65th is refused with
 * out-of-memory, while the device goes on answering. */
static void test_stream_bound(void) {
  VhhHarness h;
  const char *args[] = {"--virgl=on", "--max-stream-objects=64", NULL};
  start_3d_ctx(&h, args, "test");
  uint32_t t;
  /* SUBMIT_3D: header, size, padding, then 10 dwords per sampler state */
  enum { PER = 10, N = 65 };
  static uint8_t req[24 + 8 + N * PER * 4];
  for (uint32_t round = 0; round < 2; round++) {
    uint32_t first = round ? 64 : 0, count = round ? 1 : 64;
    uint32_t size = count * PER * 4;
    Hdr hd = {VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, 1, 0};
    memset(req, 0, sizeof(req));
    memcpy(req, &hd, sizeof(hd));
    memcpy(req + 24, &size, 4);
    for (uint32_t i = 0; i < count; i++) {
      uint32_t dw[PER] = {1u | (7u << 8) | (9u << 16), first + i + 1};
      memcpy(req + 32 + (size_t)i * PER * 4, dw, sizeof(dw));
    }
    t = vhh_ctrl(&h, req, 32 + size);
    CHECK(t == (round ? VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY : VIRTIO_GPU_RESP_OK_NODATA),
          "submit of %u sampler states after %u: %#x", count, first, t);
  }
  struct {
    Hdr h;
  } di = {hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO)};
  t = vhh_ctrl(&h, &di, sizeof(di));
  CHECK(t == VIRTIO_GPU_RESP_OK_DISPLAY_INFO, "display info after the refusal: %#x", t);
  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU hung up", "stream bound");
  vhh_free(&h);
}

/* A 3D resource on virglrenderer (llvmpipe, no dmabuf) as a scanout: the
 * flushed frame is read back from the renderer and reaches the display
 * channel as UPDATE, pixel for pixel what the guest uploaded. */
static void test_3d_scanout(void) {
  VhhHarness h;
  const char *args[] = {"--virgl=on", "--renderer=virgl", NULL};
  CHECK(vhh_start(&h, args), "cannot start the worker");
  CHECK(vhh_negotiate(&h, 1ull << VHU_F_GPU_VIRGL), "negotiation failed");
  enum { W = 96, H = 40, RES = 5 };
  uint64_t fb = vhh_alloc(&h, W * H * 4);
  uint32_t *px = vhh_ptr(&h, fb);
  for (uint32_t i = 0; i < W * H; i++)
    px[i] = 0xff000000u | (i * 40503u);
  Scanout2d rq = scanout_2d(RES, W, H, fb);
  uint32_t t = upload_3d(&h, RES, W, H, &rq);
  CHECK(t == VIRTIO_GPU_RESP_OK_NODATA, "3D context, resource, backing or upload: %#x", t);
  CHECK((t = vhh_ctrl(&h, &rq.set, sizeof(rq.set))) == VIRTIO_GPU_RESP_OK_NODATA, "scanout: %#x",
        t);
  CHECK((t = vhh_ctrl(&h, &rq.flush, sizeof(rq.flush))) == VIRTIO_GPU_RESP_OK_NODATA, "flush: %#x",
        t);
  for (int i = 0; i < 50 && h.scanout[0].updates == 0; i++)
    vhh_pump_display(&h, 100);
  CHECK(h.scanout[0].w == W && h.scanout[0].h == H && h.scanout[0].updates >= 1,
        "3D scanout %ux%u, %u updates", h.scanout[0].w, h.scanout[0].h, h.scanout[0].updates);
  unsigned bad = 0;
  for (uint32_t i = 0; i < W * H; i++)
    bad += (h.scanout[0].px[i] & 0xffffff) != (px[i] & 0xffffff);
  CHECK(bad == 0, "%u of %u pixels of the 3D scanout differ", bad, W * H);
  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "QEMU hung up", "3D scanout");
  vhh_free(&h);
}

/* A submission that never completes (the null renderer's HANG stream):
 * its fenced response waits, and the guard ends the session after
 * --gpu-timeout with the GPU timeout status and one line. */
static void test_gpu_timeout(void) {
  VhhHarness h;
  const char *args[] = {"--virgl=on", "--gpu-timeout=1", NULL};
  start_3d_ctx(&h, args, "hang");
  struct {
    Hdr h;
    uint32_t size, pad;
    uint32_t dw[2];
  } sub = {{VIRTIO_GPU_CMD_SUBMIT_3D, VIRTIO_GPU_FLAG_FENCE, 7, 1, 0},
           8,
           0,
           {VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1}};
  CHECK(vhh_post(&h, 0, &sub, sizeof(sub), 24) != 0, "post");
  struct {
    Hdr h;
  } fenced = {{VIRTIO_GPU_CMD_GET_DISPLAY_INFO, VIRTIO_GPU_FLAG_FENCE, 8, 0, 0}};
  CHECK(vhh_post(&h, 0, &fenced, sizeof(fenced), 408) != 0, "post");
  wait_worker_closed(&h);
  uint16_t *used_idx = (uint16_t *)((uint8_t *)vhh_ptr(&h, h.vq[0].used_gpa) + 2);
  CHECK(*used_idx == h.vq[0].used_seen, "a response behind the hung fence was answered");
  expect_end(&h, VGPU_WORKER_EXIT_GPU_TIMEOUT, "gpu timeout", "hung submission");
  vhh_free(&h);
}

/* A guest ring with a descriptor outside guest memory: that ring stops
 * (one log line), the cursor ring and the session go on. */
static void test_hostile_guest_ring(void) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  CHECK(vhh_negotiate(&h, 0), "negotiation failed");
  vhh_post_raw(&h, 0, VHH_MEM_SIZE + 4096, 24);
  struct {
    Hdr h;
    uint32_t scanout, x, y, pad, id, hot_x, hot_y, pad2;
  } move = {hdr(VIRTIO_GPU_CMD_MOVE_CURSOR), 0, 10, 10, 0, 0, 0, 0, 0};
  uint8_t none[4];
  int used = vhh_submit(&h, 1, &move, sizeof(move), none, sizeof(none));
  CHECK(used == 0, "cursor request: used length %d", used);
  uint16_t *used_idx = (uint16_t *)((uint8_t *)vhh_ptr(&h, h.vq[0].used_gpa) + 2);
  CHECK(*used_idx == 0, "the hostile chain was answered");
  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "is broken", "hostile guest ring");
  CHECK(vhh_log_count(&h, "QEMU hung up") == 1, "no clean hang-up after a broken ring");
  vhh_free(&h);
}

/* QEMU stops reading its display socket: the worker gives up after its
 * bound and ends the session (not a crash), with one line. */
static void test_display_stall(void) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  CHECK(vhh_negotiate(&h, 0), "negotiation failed");
  enum { W = 1024, H = 1024, RES = 1 };
  uint64_t fb = vhh_alloc(&h, W * H * 4);
  Scanout2d rq = scanout_2d(RES, W, H, fb);
  CHECK(scanout_2d_set(&h, &rq), "create, attach and set scanout");
  h.disp_stalled = true;
  /* 4 MiB through a socket nobody reads: no answer, the worker ends. */
  (void)vhh_ctrl(&h, &rq.flush, sizeof(rq.flush));
  wait_worker_closed(&h);
  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "stopped reading its display", "display stall");
  vhh_free(&h);
}

/* ---- QEMU's display modes and EDID reach the guest -------------------- */

typedef struct {
  Hdr h;
  struct {
    uint32_t x, y, w, h, enabled, flags;
  } m[16];
} DisplayInfo;

typedef struct {
  Hdr h;
  uint32_t size, pad;
  uint8_t edid[1024];
} EdidResp;

static uint32_t get_display_info(VhhHarness *h, DisplayInfo *di) {
  Hdr req = hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO);
  memset(di, 0, sizeof(*di));
  int n = vhh_submit(h, 0, &req, sizeof(req), di, sizeof(*di));
  return n == (int)sizeof(*di) ? di->h.type : 0;
}

static uint32_t get_edid(VhhHarness *h, uint32_t scanout, EdidResp *e) {
  struct {
    Hdr h;
    uint32_t scanout, pad;
  } req = {hdr(VIRTIO_GPU_CMD_GET_EDID), scanout, 0};
  memset(e, 0, sizeof(*e));
  int n = vhh_submit(h, 0, &req, sizeof(req), e, sizeof(*e));
  return n == (int)sizeof(*e) ? e->h.type : 0;
}

/* QEMU 10 (EDID protocol feature): the guest sees QEMU's 1024x768 and its
 * EDID, and a later change of QEMU's mode (a window resize) with its next
 * GET_DISPLAY_INFO. */
static void test_qemu_modes(void) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  h.qemu_mode[0] = (VhhMode){0, 0, 1024, 768, 1};
  for (unsigned i = 0; i < 256; i++)
    h.qemu_edid[i] = (uint8_t)(i * 13 + 5);
  h.qemu_edid_len = 256;
  CHECK(vhh_negotiate(&h, 1ull << VHU_F_GPU_EDID), "negotiation failed");
  CHECK(h.disp_acked == 1, "display features acked: %#llx", (unsigned long long)h.disp_acked);
  DisplayInfo di;
  CHECK(get_display_info(&h, &di) == VIRTIO_GPU_RESP_OK_DISPLAY_INFO, "display info");
  CHECK(di.m[0].w == 1024 && di.m[0].h == 768 && di.m[0].enabled == 1,
        "head 0: %ux%u enabled %u, want QEMU's 1024x768", di.m[0].w, di.m[0].h, di.m[0].enabled);
  CHECK(h.info_asked >= 1, "QEMU was not asked for its display info");
  EdidResp e;
  CHECK(get_edid(&h, 0, &e) == VIRTIO_GPU_RESP_OK_EDID, "GET_EDID");
  CHECK(e.size == 256 && memcmp(e.edid, h.qemu_edid, 256) == 0, "EDID of %u bytes, want QEMU's 256",
        e.size);
  CHECK(h.edid_asked >= 1 && h.edid_asked_for == 0, "QEMU asked for EDID %u times (head %u)",
        h.edid_asked, h.edid_asked_for);
  /* QEMU's window changes: the guest's next question gets the new mode. */
  h.qemu_mode[0] = (VhhMode){0, 0, 800, 600, 1};
  CHECK(get_display_info(&h, &di) == VIRTIO_GPU_RESP_OK_DISPLAY_INFO, "display info again");
  CHECK(di.m[0].w == 800 && di.m[0].h == 600, "head 0: %ux%u, want 800x600", di.m[0].w, di.m[0].h);
  /* a head this device does not have is not asked about */
  unsigned asked = h.edid_asked;
  struct {
    Hdr h;
    uint32_t scanout, pad;
  } bad = {hdr(VIRTIO_GPU_CMD_GET_EDID), 1, 0};
  CHECK(vhh_ctrl(&h, &bad, sizeof(bad)) == VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID, "EDID head 1");
  CHECK(h.edid_asked == asked, "QEMU asked about head 1");
  int st = vhh_finish(&h);
  if (st != 0)
    dump_log(&h);
  CHECK(st == 0, "exit status %d", st);
  vhh_free(&h);
}

/* A QEMU without the EDID feature (QEMU 7.2) is never sent GET_EDID: the
 * device builds the EDID from QEMU's mode; a QEMU that does not answer at
 * all leaves the device's own mode, and the guest is still answered. */
static void test_qemu_old_or_silent(void) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  h.qemu_pfeatures = 0;
  h.qemu_mode[0] = (VhhMode){0, 0, 1024, 768, 1};
  CHECK(vhh_negotiate(&h, 1ull << VHU_F_GPU_EDID), "negotiation failed");
  CHECK(h.disp_acked == 0, "acked %#llx of nothing", (unsigned long long)h.disp_acked);
  DisplayInfo di;
  CHECK(get_display_info(&h, &di) == VIRTIO_GPU_RESP_OK_DISPLAY_INFO, "display info");
  CHECK(di.m[0].w == 1024 && di.m[0].h == 768, "head 0: %ux%u", di.m[0].w, di.m[0].h);
  EdidResp e;
  CHECK(get_edid(&h, 0, &e) == VIRTIO_GPU_RESP_OK_EDID, "GET_EDID");
  const uint8_t *t = e.edid + 54;
  CHECK(e.size == 128 && (t[2] | (t[4] >> 4) << 8) == 1024 && (t[5] | (t[7] >> 4) << 8) == 768,
        "built EDID: %u bytes, preferred %ux%u", e.size, t[2] | (t[4] >> 4) << 8,
        t[5] | (t[7] >> 4) << 8);
  CHECK(h.edid_asked == 0, "GET_EDID sent to a QEMU without the feature");
  CHECK(vhh_finish(&h) == 0, "exit status");
  vhh_free(&h);

  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  h.qemu_answer = VHH_QEMU_SILENT;
  h.qemu_mode[0] = (VhhMode){0, 0, 1024, 768, 1};
  CHECK(vhh_negotiate(&h, 1ull << VHU_F_GPU_EDID), "negotiation failed");
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(get_display_info(&h, &di) == VIRTIO_GPU_RESP_OK_DISPLAY_INFO, "display info (silent)");
  CHECK(di.m[0].w == 1280 && di.m[0].h == 800, "head 0: %ux%u, want the default 1280x800",
        di.m[0].w, di.m[0].h);
  /* once QEMU was late, the guest's next questions do not wait again */
  for (int i = 0; i < 5; i++) {
    CHECK(get_edid(&h, 0, &e) == VIRTIO_GPU_RESP_OK_EDID, "GET_EDID (silent)");
    CHECK(e.size == 128, "EDID of %u bytes", e.size);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  CHECK(took < 3.0, "six answers took %.1f s with QEMU silent", took);
  unsigned asked = h.info_asked + h.edid_asked;
  CHECK(asked <= 3, "a silent QEMU was asked %u times", asked);
  int st = vhh_finish(&h);
  if (st != 0)
    dump_log(&h);
  CHECK(st == 0, "exit status %d", st);
  vhh_free(&h);
}

/* A malformed reply from QEMU is a violation: status 2, one line.  The
 * back-end asks right after the handshake, so serving the display is
 * enough to get the replies read. */
static void test_qemu_bad_reply(VhhQemuAnswer how, const char *line, const char *what) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  h.qemu_answer = how;
  CHECK(vhh_negotiate(&h, 1ull << VHU_F_GPU_EDID), "%s: negotiation failed", what);
  vhh_pump_display(&h, 500);
  CHECK(h.info_asked >= 1, "%s: QEMU was not asked", what);
  wait_worker_closed(&h);
  expect_end(&h, VGPU_WORKER_EXIT_VIOLATION, line, what);
  vhh_free(&h);
}

static void test_hangup_mid_message(void) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  CHECK(vhh_negotiate(&h, 0), "negotiation failed");
  uint8_t part[12 + 3] = {VHU_SET_FEATURES, 0, 0, 0, VHU_FLAG_VERSION, 0, 0, 0, 8, 0, 0, 0, 1, 2};
  CHECK(write(h.sock, part, sizeof(part)) == (ssize_t)sizeof(part), "write");
  expect_end(&h, VGPU_WORKER_EXIT_CLIENT_LEFT, "session ended", "hang-up mid-message");
  vhh_free(&h);
}

static void test_hangup_before_anything(void) {
  VhhHarness h;
  CHECK(vhh_start(&h, NULL), "cannot start the worker");
  int st = vhh_finish(&h);
  if (st != VGPU_WORKER_EXIT_CLIENT_LEFT)
    dump_log(&h);
  vhh_free(&h);
  CHECK(st == VGPU_WORKER_EXIT_CLIENT_LEFT, "exit status %d", st);
}

/* The differential test: one 2D sequence, good and bad requests, against
 * this worker and against QEMU's reference back-end; every response (its
 * bytes and used length) and the scanout's pixels must be the same. */
#define REFERENCE_BACKEND "/usr/lib/qemu/vhost-user-gpu"
#define DIFF_STEPS 14

typedef struct {
  int used[DIFF_STEPS];
  uint8_t resp[DIFF_STEPS][24];
  uint32_t sw, sh;
  uint32_t *px;
  char log[16384];
} DiffRun;

static bool diff_run(VhhHarness *h, DiffRun *out) {
  memset(out, 0, sizeof(*out));
  if (!vhh_negotiate(h, 0))
    return false;
  enum { W = 64, H = 48 };
  uint64_t fb = vhh_alloc(h, W * H * 4);
  uint32_t *px = vhh_ptr(h, fb);
  for (uint32_t i = 0; i < W * H; i++)
    px[i] = 0xff000000u | (i * 2654435761u >> 8);
  struct {
    Hdr h;
    uint32_t id, format, w, hh;
  } c1 = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), 1, 2, W, H},
    c0 = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), 0, 2, W, H},
    cf = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), 2, 999, W, H};
  struct {
    Hdr h;
    uint32_t id, nr;
    uint64_t addr;
    uint32_t len, pad;
  } at = {hdr(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING), 1, 1, fb, W * H * 4, 0};
  struct {
    Hdr h;
    uint32_t x, y, w, hh;
    uint64_t offset;
    uint32_t id, pad;
  } tr = {hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D), 0, 0, W, H, 0, 1, 0},
    tr9 = {hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D), 0, 0, W, H, 0, 9, 0},
    trx = {hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D), 60, 0, 10, H, 0, 1, 0};
  struct {
    Hdr h;
    uint32_t x, y, w, hh, scanout, id;
  } ss = {hdr(VIRTIO_GPU_CMD_SET_SCANOUT), 0, 0, W, H, 0, 1},
    ssx = {hdr(VIRTIO_GPU_CMD_SET_SCANOUT), 0, 0, W, H, 16, 1},
    ssr = {hdr(VIRTIO_GPU_CMD_SET_SCANOUT), 0, 0, W + 1, H, 0, 1};
  struct {
    Hdr h;
    uint32_t x, y, w, hh, id, pad;
  } fl = {hdr(VIRTIO_GPU_CMD_RESOURCE_FLUSH), 0, 0, W, H, 1, 0},
    flx = {hdr(VIRTIO_GPU_CMD_RESOURCE_FLUSH), 0, 0, W, H + 1, 1, 0};
  struct {
    const void *p;
    size_t len;
  } steps[DIFF_STEPS] = {
      {&c1, sizeof(c1)},   {&c1, sizeof(c1)},   {&c0, sizeof(c0)},   {&cf, sizeof(cf)},
      {&at, sizeof(at)},   {&tr, sizeof(tr)},   {&tr9, sizeof(tr9)}, {&trx, sizeof(trx)},
      {&ss, sizeof(ss)},   {&ssx, sizeof(ssx)}, {&ssr, sizeof(ssr)}, {&fl, sizeof(fl)},
      {&flx, sizeof(flx)}, {&fl, sizeof(fl)},
  };
  for (unsigned i = 0; i < DIFF_STEPS; i++)
    out->used[i] = vhh_submit(h, 0, steps[i].p, steps[i].len, out->resp[i], 24);
  for (int i = 0; i < 50 && h->scanout[0].updates < 2; i++)
    vhh_pump_display(h, 100);
  out->sw = h->scanout[0].w;
  out->sh = h->scanout[0].h;
  if (h->scanout[0].px) {
    out->px = malloc((size_t)out->sw * out->sh * 4);
    memcpy(out->px, h->scanout[0].px, (size_t)out->sw * out->sh * 4);
  }
  vhh_finish(h);
  memcpy(out->log, h->log, sizeof(out->log));
  vhh_free(h);
  return true;
}

static int differential(void) {
  if (access(REFERENCE_BACKEND, X_OK) != 0) {
    printf("SKIP: QEMU's reference back-end %s is not installed (make deps installs "
           "qemu-system-gui)\n",
           REFERENCE_BACKEND);
    return 77;
  }
  VhhHarness h;
  DiffRun ours, ref;
  const char *ref_argv[] = {REFERENCE_BACKEND, "--fd=3", NULL};
  if (!vhh_start(&h, NULL) || !diff_run(&h, &ours)) {
    fprintf(stderr, "FAIL: this worker's run did not complete\n%s", h.log);
    return 1;
  }
  if (!vhh_start_argv(&h, ref_argv) || !diff_run(&h, &ref)) {
    fprintf(stderr, "FAIL: the reference's run did not complete\n%s", h.log);
    return 1;
  }
  int bad = 0;
  for (unsigned i = 0; i < DIFF_STEPS; i++) {
    uint32_t to, tr;
    memcpy(&to, ours.resp[i], 4);
    memcpy(&tr, ref.resp[i], 4);
    if (getenv("VHH_VERBOSE"))
      printf("step %u: ours used %d type %#x, reference used %d type %#x\n", i, ours.used[i], to,
             ref.used[i], tr);
    if (ours.used[i] != ref.used[i] || memcmp(ours.resp[i], ref.resp[i], 24) != 0) {
      fprintf(stderr, "step %u: ours used %d type %#x, reference used %d type %#x\n", i,
              ours.used[i], to, ref.used[i], tr);
      bad++;
    }
  }
  if (ours.sw != ref.sw || ours.sh != ref.sh || !ours.px || !ref.px) {
    fprintf(stderr, "scanout: ours %ux%u, reference %ux%u\n", ours.sw, ours.sh, ref.sw, ref.sh);
    bad++;
  } else {
    unsigned n = 0;
    for (uint32_t i = 0; i < ours.sw * ours.sh; i++)
      n += (ours.px[i] & 0xffffff) != (ref.px[i] & 0xffffff);
    if (n) {
      fprintf(stderr, "scanout: %u pixels differ\n", n);
      bad++;
    }
  }
  if (bad || getenv("VHH_VERBOSE"))
    fprintf(stderr, "--- reference log ---\n%s--- our log ---\n%s", ref.log, ours.log);
  free(ours.px);
  free(ref.px);
  printf("%d difference(s) over %u responses and the scanout\n", bad, DIFF_STEPS);
  return bad ? 1 : 0;
}

/* --bench N: N full-screen 1280x800 frames (TRANSFER_TO_HOST_2D + FLUSH)
 * through the display channel; prints frames/s and MB/s of pixels. */
static int bench(int frames, bool reference) {
  VhhHarness h;
  const char *ref_argv[] = {REFERENCE_BACKEND, "--fd=3", NULL};
  if (!(reference ? vhh_start_argv(&h, ref_argv) : vhh_start(&h, NULL)) || !vhh_negotiate(&h, 0))
    return 1;
  enum { W = 1280, H = 800, RES = 1 };
  uint64_t fb = vhh_alloc(&h, W * H * 4);
  memset(vhh_ptr(&h, fb), 0x5a, W * H * 4);
  Scanout2d rq = scanout_2d(RES, W, H, fb);
  if (!scanout_2d_set(&h, &rq))
    return 1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < frames; i++)
    if (vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer)) != VIRTIO_GPU_RESP_OK_NODATA ||
        vhh_ctrl(&h, &rq.flush, sizeof(rq.flush)) != VIRTIO_GPU_RESP_OK_NODATA)
      return 1;
  vhh_pump_display(&h, 100);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9 - 0.1;
  printf("%s: %u updates of %ux%u in %.3f s: %.1f updates/s, %.1f MB/s\n",
         reference ? "reference" : "vgpu-worker", h.scanout[0].updates, W, H, s,
         h.scanout[0].updates / s, h.scanout[0].updates * (double)W * H * 4 / s / 1e6);
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)h.pid);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      printf("%s: back-end %s", reference ? "reference" : "vgpu-worker", line);
  if (f)
    fclose(f);
  vhh_finish(&h);
  vhh_free(&h);
  return 0;
}

/* Connects to a vhost-user.sock and plays QEMU's start sequence; on
 * failure says which step failed (and frees @h). */
static bool play_qemu(VhhHarness *h, const char *path, uint64_t want_gpu_features) {
  bool connected = vhh_connect(h, path);
  if (connected && vhh_negotiate(h, want_gpu_features))
    return true;
  fprintf(stderr, "cannot play QEMU on %s: %s\n", path,
          connected ? "QEMU's start sequence was not answered in time" : "cannot connect");
  vhh_free(h);
  return false;
}

/* --serve-frame[-3d] SOCKET: plays QEMU on a vgpud instance's
 * vhost-user.sock with one 64x48 scanout (B8G8R8X8) whose pixel (x, y) is
 * red x * 4, green y * 5, blue x ^ y (each mod 256), a 2D resource or, with
 * -3d, a 3D one (VIRGL negotiated: the worker reads it back from the
 * renderer); prints "READY" once it is shown, and keeps the VM (serving its
 * display) until standard input closes. */
static int serve_frame(const char *path, bool three_d) {
  VhhHarness h;
  if (!play_qemu(&h, path, three_d ? 1ull << VHU_F_GPU_VIRGL : 0))
    return 1;
  if (three_d && !(h.features & (1ull << VHU_F_GPU_VIRGL))) {
    fprintf(stderr, "VIRGL not offered\n");
    vhh_free(&h);
    return 1;
  }
  enum { W = 64, H = 48, RES = 3 };
  uint64_t fb = vhh_alloc(&h, W * H * 4);
  uint32_t *px = vhh_ptr(&h, fb);
  for (uint32_t y = 0; y < H; y++)
    for (uint32_t x = 0; x < W; x++)
      px[y * W + x] =
          0xff000000u | ((x * 4) & 0xff) << 16 | ((y * 5) & 0xff) << 8 | ((x ^ y) & 0xff);
  Scanout2d rq = scanout_2d(RES, W, H, fb);
  bool drawn = three_d
                   ? upload_3d(&h, RES, W, H, &rq) == VIRTIO_GPU_RESP_OK_NODATA
                   : vhh_ctrl(&h, &rq.create, sizeof(rq.create)) == VIRTIO_GPU_RESP_OK_NODATA &&
                         vhh_ctrl(&h, &rq.attach, sizeof(rq.attach)) == VIRTIO_GPU_RESP_OK_NODATA &&
                         vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer)) == VIRTIO_GPU_RESP_OK_NODATA;
  drawn = drawn && vhh_ctrl(&h, &rq.set, sizeof(rq.set)) == VIRTIO_GPU_RESP_OK_NODATA &&
          vhh_ctrl(&h, &rq.flush, sizeof(rq.flush)) == VIRTIO_GPU_RESP_OK_NODATA;
  if (!drawn) {
    fprintf(stderr, "the frame was not drawn\n");
    vhh_free(&h);
    return 1;
  }
  vhh_pump_display(&h, 100);
  printf("READY\n");
  fflush(stdout);
  for (;;) {
    struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = h.disp, .events = POLLIN}};
    if (poll(p, h.disp >= 0 ? 2 : 1, -1) < 0)
      break;
    if (p[0].revents) {
      char b[64];
      if (read(0, b, sizeof(b)) <= 0)
        break;
    }
    if (h.disp >= 0 && p[1].revents)
      vhh_pump_display(&h, 0);
  }
  vhh_finish(&h);
  vhh_free(&h);
  return 0;
}

/* --hostile SCENARIO SOCKET: one hostile VM on a vgpud instance's
 * vhost-user.sock (the integration test vm_hostile drives it beside a
 * neighbour).  Prints what it saw, one "name value" per line, and exits 0
 * when the back-end answered as it must:
 *   outside      a descriptor outside guest memory: the control ring is
 *                marked broken (NEEDS_RESET), the cursor ring still answers;
 *   loop         a descriptor chain whose next points back at itself;
 *   indirect     an indirect table whose entry chains back to itself;
 *   huge         a 16384x16384 resource (1 GiB, beyond VRAM):
 *                ERR_OUT_OF_MEMORY, then a small one still works;
 *   duplicate    the same resource id twice: an error, the first lives;
 *   scanout      set-scanout and flush rectangles out of bounds, a scanout
 *                id beyond the heads: errors, a good frame still shows;
 *   backing      attach-backing entries outside guest memory or wrapping:
 *                errors, the resource can still get good backing;
 *   overlap      attach-backing entries that overlap each other (one
 *                repeated, one half over another) and a second resource on
 *                the same guest pages: accepted, and the scanout shows the
 *                entries' bytes in entry order; entries totalling over
 *                4 GiB: refused;
 *   long-chain   an indirect table of 1100 chained pieces (over the 1024 a
 *                chain may have): the ring is marked broken;
 *   indirect-len an indirect table whose length is not a multiple of 16;
 *   blob         blob commands (RESOURCE_CREATE_BLOB, SET_SCANOUT_BLOB,
 *                RESOURCE_MAP_BLOB, RESOURCE_UNMAP_BLOB) although blobs are
 *                not offered: ERR_UNSPEC each, the VM goes on;
 *   vanish-msg   QEMU leaves in the middle of a vhost-user message;
 *   vanish-fence QEMU leaves with a fenced command in flight.
 * Each hostile VM hangs up at the end (or vanishes): the session ends.
 * QEMU's own protocol violations end the session from the back-end's side
 * ("session-ended" once its end of the socket closed):
 *   mem-overlap  a memory table whose two regions overlap in guest memory;
 *   mem-wrap     a memory table region whose guest address + size wraps;
 *   ring-outside a vring address outside guest memory;
 *   msg-size     a message header announcing a 1 MiB payload. */
static uint32_t ctrl_type(VhhHarness *h, const void *req, size_t len, const char *what) {
  uint32_t t = vhh_ctrl(h, req, len);
  printf("%s 0x%x\n", what, t);
  return t;
}

typedef struct {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
} Desc;

static bool ctrl_ring_alive(VhhHarness *h) {
  struct {
    Hdr h;
    uint32_t id, format, w, hh;
  } c = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), 77, 2, 16, 16};
  return ctrl_type(h, &c, sizeof(c), "probe-create") == VIRTIO_GPU_RESP_OK_NODATA;
}

/* Queues one chain on ring @q made of the descriptors @d (indices from
 * 32 on, so vhh_post's slots are not touched) and kicks. */
static void post_chain(VhhHarness *h, unsigned q, const Desc *d, unsigned n) {
  VhhRing *r = &h->vq[q];
  Desc *ring = vhh_ptr(h, r->desc_gpa);
  for (unsigned i = 0; i < n; i++)
    ring[32 + i] = d[i];
  uint16_t *avail = vhh_ptr(h, r->avail_gpa);
  avail[2 + r->avail_idx % VHH_RING_NUM] = 32;
  __atomic_store_n(&avail[1], (uint16_t)(r->avail_idx + 1), __ATOMIC_RELEASE);
  r->avail_idx++;
  uint64_t one = 1;
  (void)!write(r->kick, &one, 8);
}

static bool ring_broken_cursor_alive(VhhHarness *h) {
  struct {
    Hdr h;
    uint32_t scanout, x, y, pad, id, hot_x, hot_y, pad2;
  } move = {hdr(VIRTIO_GPU_CMD_MOVE_CURSOR), 0, 10, 10, 0, 0, 0, 0, 0};
  uint8_t none[4];
  int used = vhh_submit(h, 1, &move, sizeof(move), none, sizeof(none));
  uint16_t ctrl_used = *(uint16_t *)((uint8_t *)vhh_ptr(h, h->vq[0].used_gpa) + 2);
  printf("cursor-used-len %d\nctrl-used-idx %u (of %u posted)\n", used, ctrl_used,
         h->vq[0].avail_idx);
  /* The hostile chain is never answered; nothing after it on that ring. */
  return used == 0 && ctrl_used < h->vq[0].avail_idx;
}

/* Waits (bounded) for the back-end to close its end of the socket and
 * says so: a protocol violation ends the session from that side. */
static bool session_ended(VhhHarness *h) {
  for (int turns = 0; turns < 1000; turns++) {
    struct pollfd pfd = {.fd = h->sock, .events = POLLIN};
    if (poll(&pfd, 1, VHH_TIMEOUT_MS) <= 0)
      break;
    uint8_t b[256];
    ssize_t n = recv(h->sock, b, sizeof(b), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      printf("session-ended\n");
      return true;
    }
  }
  printf("session-still-open\n");
  return false;
}

/* QEMU's own protocol violations, sent once the device runs. */
static void send_violation(VhhHarness *h, const char *what) {
  struct Region {
    uint64_t gpa, size, uva, off;
  };
  struct {
    uint32_t n, pad;
    struct Region r[2];
  } table = {0};
  uint64_t uva = (uint64_t)(uintptr_t)h->mem;
  if (strcmp(what, "mem-overlap") == 0) {
    table.n = 2;
    table.r[0] = (struct Region){0, VHH_MEM_SIZE, uva, 0};
    table.r[1] = (struct Region){VHH_MEM_SIZE / 2, VHH_MEM_SIZE / 2, uva + (1ull << 32), 0};
    int fds[2] = {h->memfd, h->memfd};
    vhh_msg(h, VHU_SET_MEM_TABLE, 0, &table, 8 + 2 * sizeof(struct Region), fds, 2, NULL, 0);
  } else if (strcmp(what, "mem-wrap") == 0) {
    table.n = 1;
    table.r[0] = (struct Region){UINT64_MAX - VHH_MEM_SIZE / 2, VHH_MEM_SIZE, uva, 0};
    vhh_msg(h, VHU_SET_MEM_TABLE, 0, &table, 8 + sizeof(struct Region), &h->memfd, 1, NULL, 0);
  } else if (strcmp(what, "ring-outside") == 0) {
    hostile_ring_outside(h);
  } else if (strcmp(what, "msg-size") == 0) {
    hostile_huge_payload(h);
  }
}

/* Resource @id (64x48) backed by overlapping entries over a 24-row buffer
 * B: rows 0-15 of B, the same again, and rows 8-23 of B; then a second
 * resource backed by B's rows 0-15 (the same guest pages).  Transfers and
 * flushes each and compares the scanout with the entries' bytes. */
static bool overlapping_backing(VhhHarness *h) {
  enum { W = 64, H = 48, ROW = W * 4 };
  const uint32_t OKT = VIRTIO_GPU_RESP_OK_NODATA;
  uint64_t b = vhh_alloc(h, 24 * ROW);
  uint32_t *bp = vhh_ptr(h, b);
  for (uint32_t y = 0; y < 24; y++)
    for (uint32_t x = 0; x < W; x++)
      bp[y * W + x] = 0xff000000u | y << 16 | x << 8 | ((x * 7 + y * 13) & 0xff);
  struct {
    Hdr h;
    uint32_t id, format, w, hh;
  } create = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), 21, 2, W, H};
  struct {
    Hdr h;
    uint32_t id, nr;
    struct {
      uint64_t addr;
      uint32_t len, pad;
    } e[3];
  } attach = {hdr(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING),
              21,
              3,
              {{b, 16 * ROW, 0}, {b, 16 * ROW, 0}, {b + 8 * ROW, 16 * ROW, 0}}};
  struct {
    Hdr h;
    uint32_t x, y, w, hh, scanout, id;
  } set = {hdr(VIRTIO_GPU_CMD_SET_SCANOUT), 0, 0, W, H, 0, 21};
  struct {
    Hdr h;
    uint32_t x, y, w, hh;
    uint64_t offset;
    uint32_t id, pad;
  } xfer = {hdr(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D), 0, 0, W, H, 0, 21, 0};
  struct {
    Hdr h;
    uint32_t x, y, w, hh, id, pad;
  } flush = {hdr(VIRTIO_GPU_CMD_RESOURCE_FLUSH), 0, 0, W, H, 21, 0};
  bool ok = ctrl_type(h, &create, sizeof(create), "create") == OKT &&
            ctrl_type(h, &attach, sizeof(attach), "attach-overlapping") == OKT &&
            ctrl_type(h, &xfer, sizeof(xfer), "transfer") == OKT &&
            ctrl_type(h, &set, sizeof(set), "set-scanout") == OKT &&
            ctrl_type(h, &flush, sizeof(flush), "flush") == OKT;
  vhh_pump_display(h, 50);
  VhhScanout *s = &h->scanout[0];
  unsigned bad = 0;
  if (!ok || !s->px || s->w != W || s->h != H)
    return false;
  for (uint32_t y = 0; y < H; y++) {
    uint32_t src = y < 16 ? y : y < 32 ? y - 16 : y - 32 + 8;
    for (uint32_t x = 0; x < W; x++)
      bad += (s->px[y * W + x] & 0xffffff) != (bp[src * W + x] & 0xffffff);
  }
  printf("overlap-bad-pixels %u\n", bad);
  /* A second resource on B's first 16 rows, shown in place of the first:
   * its top 16 rows are B's (the rest was never transferred: zero). */
  create.id = attach.id = set.id = xfer.id = flush.id = 22;
  attach.nr = 1;
  xfer.hh = flush.hh = 16;
  ok = bad == 0 && ctrl_type(h, &create, 24 + 16, "create-second") == OKT &&
       ctrl_type(h, &attach, 24 + 8 + 16, "attach-same-pages") == OKT &&
       ctrl_type(h, &xfer, sizeof(xfer), "transfer-second") == OKT &&
       ctrl_type(h, &set, sizeof(set), "set-scanout-second") == OKT &&
       ctrl_type(h, &flush, sizeof(flush), "flush-second") == OKT;
  vhh_pump_display(h, 50);
  bad = 0;
  for (uint32_t y = 0; ok && y < 16; y++)
    for (uint32_t x = 0; x < W; x++)
      bad += (s->px[y * W + x] & 0xffffff) != (bp[y * W + x] & 0xffffff);
  printf("same-pages-bad-pixels %u\n", bad);
  /* Entries whose lengths add up past 4 GiB (each inside u32, the sum
   * not): refused before anything is mapped. */
  create.id = attach.id = 23;
  attach.nr = 2;
  attach.e[0] = attach.e[1] = (typeof(attach.e[0])){0, 0xffffffffu, 0};
  ok =
      ok && bad == 0 && ctrl_type(h, &create, 24 + 16, "create-third") == OKT &&
      ctrl_type(h, &attach, 24 + 8 + 32, "attach-over-4g") == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
  return ok;
}

/* Blob commands on a device that did not offer RESOURCE_BLOB. */
static bool blob_refused(VhhHarness *h) {
  printf("blob-offered %d\n", (int)(h->features >> VHU_F_GPU_RESOURCE_BLOB & 1));
  struct {
    Hdr h;
    uint32_t id, blob_mem, blob_flags, nr;
    uint64_t blob_id, size;
    uint64_t addr;
    uint32_t len, pad;
  } create = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB),
              31,
              1 /* GUEST */,
              0,
              1,
              0,
              4096,
              vhh_alloc(h, 4096),
              4096,
              0};
  struct {
    Hdr h;
    uint32_t x, y, w, hh, scanout, id, width, height, format, pad;
    uint32_t strides[4], offsets[4];
  } sblob = {hdr(VIRTIO_GPU_CMD_SET_SCANOUT_BLOB), 0, 0, 32, 32, 0, 31, 32, 32, 2, 0, {128}, {0}};
  struct {
    Hdr h;
    uint32_t id, pad;
    uint64_t offset;
  } map = {hdr(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB), 31, 0, 0};
  struct {
    Hdr h;
    uint32_t id, pad;
  } unmap = {hdr(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB), 31, 0};
  const uint32_t E = VIRTIO_GPU_RESP_ERR_UNSPEC;
  return (h->features >> VHU_F_GPU_RESOURCE_BLOB & 1) == 0 &&
         ctrl_type(h, &create, sizeof(create), "create-blob") == E &&
         ctrl_type(h, &sblob, sizeof(sblob), "set-scanout-blob") == E &&
         ctrl_type(h, &map, sizeof(map), "map-blob") == E &&
         ctrl_type(h, &unmap, sizeof(unmap), "unmap-blob") == E && ctrl_ring_alive(h);
}

static int hostile_vm(const char *what, const char *path) {
  VhhHarness h;
  signal(SIGPIPE, SIG_IGN);
  if (!play_qemu(&h, path, 0))
    return 1;
  enum { W = 64, H = 48, RES = 5 };
  Scanout2d rq = scanout_2d(RES, W, H, 0);
  bool ok = false, vanish = false;
  const uint32_t OKT = VIRTIO_GPU_RESP_OK_NODATA;
  if (strcmp(what, "outside") == 0) {
    vhh_post_raw(&h, 0, VHH_MEM_SIZE + 4096, 24);
    ok = ring_broken_cursor_alive(&h);
  } else if (strcmp(what, "loop") == 0) {
    uint64_t req = vhh_alloc(&h, 24);
    memcpy(vhh_ptr(&h, req), &rq.create, 24);
    Desc d[2] = {{req, 24, 1 /* NEXT */, 33}, {req, 24, 1 /* NEXT */, 32}};
    post_chain(&h, 0, d, 2);
    ok = ring_broken_cursor_alive(&h);
  } else if (strcmp(what, "indirect") == 0) {
    uint64_t req = vhh_alloc(&h, sizeof(rq.create));
    memcpy(vhh_ptr(&h, req), &rq.create, sizeof(rq.create));
    uint64_t table = vhh_alloc(&h, 2 * sizeof(Desc));
    Desc *t = vhh_ptr(&h, table);
    t[0] = (Desc){req, sizeof(rq.create), 1 /* NEXT */, 1};
    t[1] = (Desc){req, sizeof(rq.create), 1 /* NEXT */, 0};
    Desc d = {table, 2 * sizeof(Desc), 4 /* INDIRECT */, 0};
    post_chain(&h, 0, &d, 1);
    ok = ring_broken_cursor_alive(&h);
  } else if (strcmp(what, "huge") == 0) {
    typeof(rq.create) big = {hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D), 9, 2, 16384, 16384};
    ok = ctrl_type(&h, &big, sizeof(big), "create-16384x16384") ==
             VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY &&
         ctrl_ring_alive(&h);
  } else if (strcmp(what, "duplicate") == 0) {
    uint32_t a = ctrl_type(&h, &rq.create, sizeof(rq.create), "create");
    typeof(rq.create) again = rq.create;
    again.w = 4096; /* a different size under the same id */
    uint32_t b = ctrl_type(&h, &again, sizeof(again), "create-same-id");
    rq.attach.addr = vhh_alloc(&h, W * H * 4);
    ok = a == OKT && b == VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID &&
         ctrl_type(&h, &rq.attach, sizeof(rq.attach), "attach-first") == OKT &&
         ctrl_type(&h, &rq.xfer, sizeof(rq.xfer), "transfer-first") == OKT && ctrl_ring_alive(&h);
  } else if (strcmp(what, "scanout") == 0) {
    rq.attach.addr = vhh_alloc(&h, W * H * 4);
    bool setup = ctrl_type(&h, &rq.create, sizeof(rq.create), "create") == OKT &&
                 ctrl_type(&h, &rq.attach, sizeof(rq.attach), "attach") == OKT;
    typeof(rq.set) s1 = rq.set, s2 = rq.set, s3 = rq.set;
    s1.w = W + 1;
    s2.x = 0xffffffc0u; /* x + w wraps */
    s3.scanout = 16;
    typeof(rq.flush) f1 = rq.flush;
    f1.y = 1, f1.hh = H;
    typeof(rq.xfer) x1 = rq.xfer;
    x1.offset = (uint64_t)W * H * 4;
    ok = setup &&
         ctrl_type(&h, &s1, sizeof(s1), "set-scanout-wider") ==
             VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER &&
         ctrl_type(&h, &s2, sizeof(s2), "set-scanout-wrapping") ==
             VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER &&
         ctrl_type(&h, &s3, sizeof(s3), "set-scanout-16") ==
             VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID &&
         ctrl_type(&h, &rq.set, sizeof(rq.set), "set-scanout") == OKT &&
         ctrl_type(&h, &f1, sizeof(f1), "flush-below") == VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER &&
         ctrl_type(&h, &x1, sizeof(x1), "transfer-past-backing") != OKT &&
         ctrl_type(&h, &rq.flush, sizeof(rq.flush), "flush") == OKT;
    vhh_pump_display(&h, 50);
    printf("scanout-0 %ux%u\n", h.scanout[0].w, h.scanout[0].h);
    ok = ok && h.scanout[0].w == W && h.scanout[0].h == H;
  } else if (strcmp(what, "backing") == 0) {
    bool setup = ctrl_type(&h, &rq.create, sizeof(rq.create), "create") == OKT;
    typeof(rq.attach) a1 = rq.attach, a2 = rq.attach, a3 = rq.attach;
    a1.addr = VHH_MEM_SIZE - 4096;   /* runs past the end of guest memory */
    a2.addr = 0xfffffffffffff000ull; /* addr + len wraps */
    a3.addr = (uint64_t)1 << 40;     /* far outside */
    ok = setup && ctrl_type(&h, &a1, sizeof(a1), "attach-past-end") != OKT &&
         ctrl_type(&h, &a2, sizeof(a2), "attach-wrapping") != OKT &&
         ctrl_type(&h, &a3, sizeof(a3), "attach-outside") != OKT;
    rq.attach.addr = vhh_alloc(&h, W * H * 4);
    ok = ok && ctrl_type(&h, &rq.attach, sizeof(rq.attach), "attach-good") == OKT &&
         ctrl_type(&h, &rq.xfer, sizeof(rq.xfer), "transfer") == OKT;
  } else if (strcmp(what, "overlap") == 0) {
    ok = overlapping_backing(&h) && ctrl_ring_alive(&h);
  } else if (strcmp(what, "long-chain") == 0) {
    enum { N = 1100 };
    uint64_t req = vhh_alloc(&h, 2 * N);
    uint64_t table = vhh_alloc(&h, N * sizeof(Desc));
    Desc *t = vhh_ptr(&h, table);
    /* One byte each, a byte apart: pieces that cannot merge. */
    for (unsigned i = 0; i < N; i++)
      t[i] = (Desc){req + 2 * i, 1, i + 1 < N ? 1 /* NEXT */ : 0, (uint16_t)(i + 1)};
    Desc d = {table, N * sizeof(Desc), 4 /* INDIRECT */, 0};
    post_chain(&h, 0, &d, 1);
    ok = ring_broken_cursor_alive(&h);
  } else if (strcmp(what, "indirect-len") == 0) {
    uint64_t req = vhh_alloc(&h, sizeof(rq.create));
    memcpy(vhh_ptr(&h, req), &rq.create, sizeof(rq.create));
    uint64_t table = vhh_alloc(&h, 2 * sizeof(Desc));
    Desc *t = vhh_ptr(&h, table);
    t[0] = (Desc){req, sizeof(rq.create), 0, 0};
    Desc d = {table, sizeof(Desc) + 8, 4 /* INDIRECT */, 0};
    post_chain(&h, 0, &d, 1);
    ok = ring_broken_cursor_alive(&h);
  } else if (strcmp(what, "blob") == 0) {
    ok = blob_refused(&h);
  } else if (strcmp(what, "mem-overlap") == 0 || strcmp(what, "mem-wrap") == 0 ||
             strcmp(what, "ring-outside") == 0 || strcmp(what, "msg-size") == 0) {
    send_violation(&h, what);
    ok = session_ended(&h);
  } else if (strcmp(what, "vanish-msg") == 0) {
    uint8_t part[12 + 3] = {VHU_SET_FEATURES, 0, 0, 0, VHU_FLAG_VERSION, 0, 0, 0, 8, 0, 0, 0, 1, 2};
    ok = write(h.sock, part, sizeof(part)) == (ssize_t)sizeof(part);
    vanish = true;
  } else if (strcmp(what, "vanish-fence") == 0) {
    rq.attach.addr = vhh_alloc(&h, W * H * 4);
    bool setup = ctrl_type(&h, &rq.create, sizeof(rq.create), "create") == OKT &&
                 ctrl_type(&h, &rq.attach, sizeof(rq.attach), "attach") == OKT;
    typeof(rq.xfer) fx = rq.xfer;
    fx.h.flags = VIRTIO_GPU_FLAG_FENCE;
    fx.h.fence_id = 42;
    typeof(rq.flush) ff = rq.flush;
    ff.h.flags = VIRTIO_GPU_FLAG_FENCE;
    ff.h.fence_id = 43;
    ok = setup && vhh_post(&h, 0, &fx, sizeof(fx), 24) && vhh_post(&h, 0, &ff, sizeof(ff), 24);
    vanish = true;
  } else {
    fprintf(stderr, "no scenario %s\n", what);
    vhh_free(&h);
    return 2;
  }
  if (vanish) {
    /* Gone without a word: sockets and eventfds close with the process;
     * the back-end must see its end of the socket close. */
    printf("vanished\n");
    fflush(stdout);
    _exit(ok ? 0 : 1);
  }
  vhh_finish(&h);
  vhh_free(&h);
  printf("outcome %s\n", ok ? "as required" : "WRONG");
  return ok ? 0 : 1;
}

/* --neighbour SOCKET: a well-behaved VM that keeps drawing: transfer and
 * flush of a 64x48 scanout in a loop, "FRAMES n" every 10 frames, until
 * standard input closes; exits 1 if any frame was refused. */
static int neighbour(const char *path) {
  VhhHarness h;
  signal(SIGPIPE, SIG_IGN);
  if (!play_qemu(&h, path, 0))
    return 1;
  enum { W = 64, H = 48, RES = 1 };
  uint64_t fb = vhh_alloc(&h, W * H * 4);
  Scanout2d rq = scanout_2d(RES, W, H, fb);
  const uint32_t OKT = VIRTIO_GPU_RESP_OK_NODATA;
  if (!scanout_2d_set(&h, &rq)) {
    fprintf(stderr, "the neighbour's scanout was not set\n");
    vhh_free(&h);
    return 1;
  }
  printf("READY\n");
  fflush(stdout);
  unsigned frames = 0;
  bool ok = true;
  uint32_t *px = vhh_ptr(&h, fb);
  for (;;) {
    /* About 200 frames a second at most: a steady load, not a spin. */
    struct pollfd p = {.fd = 0, .events = POLLIN};
    if (poll(&p, 1, 5) > 0) {
      char b[64];
      if (read(0, b, sizeof(b)) <= 0)
        break;
    }
    for (unsigned i = 0; i < W * H; i++)
      px[i] = 0xff000000u | (frames * 2654435761u + i);
    if (vhh_ctrl(&h, &rq.xfer, sizeof(rq.xfer)) != OKT ||
        vhh_ctrl(&h, &rq.flush, sizeof(rq.flush)) != OKT) {
      ok = false;
      break;
    }
    vhh_pump_display(&h, 0);
    if (++frames % 10 == 0) {
      printf("FRAMES %u %u\n", frames, h.scanout[0].updates);
      fflush(stdout);
    }
  }
  vhh_finish(&h);
  vhh_free(&h);
  fprintf(stderr, "neighbour: %u frames, %s\n", frames, ok ? "all answered" : "one refused");
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--hostile") == 0)
    return hostile_vm(argv[2], argv[3]);
  if (argc == 3 && strcmp(argv[1], "--neighbour") == 0)
    return neighbour(argv[2]);
  if (argc == 3 && strcmp(argv[1], "--serve-frame") == 0)
    return serve_frame(argv[2], false);
  if (argc == 3 && strcmp(argv[1], "--serve-frame-3d") == 0)
    return serve_frame(argv[2], true);
  if (argc == 2 && strcmp(argv[1], "--differential") == 0)
    return differential();
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "--bench") == 0)
    return bench(atoi(argv[2]), argc == 4 && strcmp(argv[3], "reference") == 0);
  if (!getenv("VGPU_WORKER")) {
    printf("SKIP: VGPU_WORKER not set\n");
    return 77;
  }
  /* A worker that ended its session closes sockets the harness may still
   * answer on. */
  signal(SIGPIPE, SIG_IGN);
  test_2d_frame();
  test_hostile("payload of the wrong size", hostile_bad_size);
  test_hostile("memory table without its fd", hostile_missing_fd);
  test_hostile("more fds than any request", hostile_too_many_fds);
  test_hostile("ring outside guest memory", hostile_ring_outside);
  test_hostile("payload over the limit", hostile_huge_payload);
  test_fenced(NULL);
  test_stream_bound();
  /* The same through virglrenderer (llvmpipe), where the build has it. */
  if (g_strcmp0(getenv("VGPU_HAVE_VIRGL"), "1") == 0) {
    test_fenced("--renderer=virgl");
    test_3d_scanout();
  } else
    printf("virgl part skipped: VGPU_HAVE_VIRGL is not 1 (built without virglrenderer)\n");
  test_gpu_timeout();
  test_hostile_guest_ring();
  test_hangup_mid_message();
  test_hangup_before_anything();
  test_display_stall();
  test_qemu_modes();
  test_qemu_old_or_silent();
  test_qemu_bad_reply(VHH_QEMU_BAD_SIZE, "wrong size", "display info one byte short");
  test_qemu_bad_reply(VHH_QEMU_BAD_MODE, "mode out of range", "a 0x0 enabled mode");
  test_qemu_bad_reply(VHH_QEMU_HUGE_MODE, "mode out of range", "a 16385-wide mode");
  test_qemu_bad_reply(VHH_QEMU_BAD_EDID, "EDID reply is malformed", "EDID of 129 bytes");
  test_qemu_bad_reply(VHH_QEMU_UNASKED_REPLY, "unexpected message from QEMU", "unasked reply");
  if (failures)
    fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
