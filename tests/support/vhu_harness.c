/* The harness that plays QEMU (see vhu_harness.h). */
#include "vhu_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vhost/vhost_display.h"
#include "vhost/vhost_user.h"

/* The protocol features the harness speaks (the reference back-end offers
 * more: back-end requests, inflight tracking...). */
#define VHH_PROTOCOL_FEATURES                                                                      \
  ((1ull << VHU_PF_MQ) | (1ull << VHU_PF_REPLY_ACK) | (1ull << VHU_PF_CONFIG) |                    \
   (1ull << VHU_PF_CONFIGURE_MEM_SLOTS))

/* Ring layout in guest memory: ring q at q * 64 KiB. */
#define RING_AREA 0x20000u
#define REQ_AREA_START 0x100000u

typedef struct {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
} Desc;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void vhh_read_log(VhhHarness *h) {
  if (h->err_fd < 0)
    return;
  for (;;) {
    if (h->log_len + 1 >= sizeof(h->log))
      return;
    ssize_t n = read(h->err_fd, h->log + h->log_len, sizeof(h->log) - 1 - h->log_len);
    if (n <= 0)
      return;
    h->log_len += (size_t)n;
    h->log[h->log_len] = 0;
  }
}

unsigned vhh_log_count(const VhhHarness *h, const char *needle) {
  unsigned n = 0;
  const char *line = h->log;
  while (line && *line) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (memmem(line, len, needle, strlen(needle)))
      n++;
    line = end ? end + 1 : NULL;
  }
  return n;
}

int vhh_timeout_ms(void) {
  static int ms;
  if (!ms) {
    const char *e = getenv("VHH_TIMEOUT_MS");
    long v = e ? strtol(e, NULL, 10) : 0;
    ms = v >= 1000 && v <= 600000 ? (int)v : 10000;
  }
  return ms;
}

/* The guest's memory: a memfd shared with the back-end, mapped here, its
 * request area allocated from the start. */
static bool guest_memory(VhhHarness *h) {
  h->memfd = memfd_create("vhh-guest", MFD_CLOEXEC);
  if (h->memfd < 0 || ftruncate(h->memfd, VHH_MEM_SIZE) < 0)
    return false;
  h->mem = mmap(NULL, VHH_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, h->memfd, 0);
  if (h->mem == MAP_FAILED)
    return false;
  h->alloc = REQ_AREA_START;
  return true;
}

bool vhh_start(VhhHarness *h, const char *const *extra_args) {
  const char *worker = getenv("VGPU_WORKER");
  if (!worker) {
    memset(h, 0, sizeof(*h));
    fprintf(stderr, "VGPU_WORKER is not set\n");
    return false;
  }
  const char *argv[32] = {worker,
                          "--client-fd=3",
                          "--protocol=vhost-user-gpu",
                          "--renderer=null",
                          "--instance=harness",
                          "--log-level=debug"};
  unsigned argc = 6;
  for (unsigned i = 0; extra_args && extra_args[i] && argc < 31; i++)
    argv[argc++] = extra_args[i];
  argv[argc] = NULL;
  return vhh_start_argv(h, argv);
}

bool vhh_start_argv(VhhHarness *h, const char *const *argv) {
  memset(h, 0, sizeof(*h));
  h->sock = h->err_fd = h->disp = h->memfd = -1;
  h->qemu_pfeatures = 0x3;
  h->qemu_mode[0] = (VhhMode){0, 0, 1280, 800, 1};
  /* A base block: the fixed header, zeros, the checksum byte. */
  static const uint8_t edid_hdr[8] = {0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0};
  memcpy(h->qemu_edid, edid_hdr, 8);
  h->qemu_edid[127] = (uint8_t)(256 - 6 * 0xff % 256);
  h->qemu_edid_len = 128;
  for (unsigned q = 0; q < 2; q++)
    h->vq[q].kick = h->vq[q].call = -1;
  int sv[2], ep[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0)
    return false;
  const char *prog = argv[0];
  pid_t pid = fork();
  if (pid < 0)
    return false;
  if (pid == 0) {
    dup2(sv[1], 3);
    dup2(ep[1], 2);
    execv(prog, (char *const *)argv);
    _exit(127);
  }
  close(sv[1]);
  close(ep[1]);
  h->pid = pid;
  h->sock = sv[0];
  h->err_fd = ep[0];
  fcntl(h->err_fd, F_SETFL, O_NONBLOCK);
  return guest_memory(h);
}

bool vhh_connect(VhhHarness *h, const char *path) {
  memset(h, 0, sizeof(*h));
  h->sock = h->err_fd = h->disp = h->memfd = -1;
  for (unsigned q = 0; q < 2; q++)
    h->vq[q].kick = h->vq[q].call = -1;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(a.sun_path))
    return false;
  strcpy(a.sun_path, path);
  h->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (h->sock < 0 || connect(h->sock, (struct sockaddr *)&a, sizeof(a)) < 0)
    return false;
  return guest_memory(h);
}

int vhh_finish(VhhHarness *h) {
  if (h->sock >= 0)
    close(h->sock);
  h->sock = -1;
  if (h->disp >= 0)
    close(h->disp);
  h->disp = -1;
  if (h->pid <= 0)
    return 0; /* connected (vhh_connect): no worker of ours */
  int status = 0;
  int64_t deadline = now_ms() + VHH_TIMEOUT_MS;
  for (;;) {
    vhh_read_log(h);
    pid_t r = waitpid(h->pid, &status, WNOHANG);
    if (r == h->pid)
      break;
    if (now_ms() > deadline) {
      kill(h->pid, SIGKILL);
      waitpid(h->pid, &status, 0);
      vhh_read_log(h);
      return -1;
    }
    struct pollfd pfd = {.fd = h->err_fd, .events = POLLIN};
    poll(&pfd, 1, 20); /* wakes on output or every 20 ms to reap */
  }
  vhh_read_log(h);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void vhh_free(VhhHarness *h) {
  if (h->mem && h->mem != MAP_FAILED)
    munmap(h->mem, VHH_MEM_SIZE);
  int *fds[] = {&h->sock,       &h->err_fd,     &h->disp,       &h->memfd,
                &h->vq[0].kick, &h->vq[0].call, &h->vq[1].kick, &h->vq[1].call};
  for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
    if (*fds[i] >= 0) {
      close(*fds[i]);
      *fds[i] = -1;
    }
  for (unsigned i = 0; i < VHH_MAX_SCANOUTS; i++)
    free(h->scanout[i].px);
}

/* Reads exactly len bytes of @fd within the deadline; false on EOF. */
static bool read_full(int fd, void *buf, size_t len, int64_t deadline) {
  size_t done = 0;
  while (done < len) {
    int left = (int)(deadline - now_ms());
    if (left <= 0)
      return false;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, left) <= 0)
      continue;
    ssize_t n = recv(fd, (uint8_t *)buf + done, len - done, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n <= 0)
      return false;
    done += (size_t)n;
  }
  return true;
}

int vhh_msg(VhhHarness *h, uint32_t request, uint32_t flags, const void *payload, uint32_t size,
            const int *fds, unsigned nfds, void *reply, size_t reply_cap) {
  uint32_t hdr[3] = {request, flags ? flags : VHU_FLAG_VERSION, size};
  struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)payload, size}};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 16)];
  } cbuf;
  struct msghdr mh = {.msg_iov = iov, .msg_iovlen = size ? 2 : 1};
  if (nfds) {
    memset(&cbuf, 0, sizeof(cbuf));
    mh.msg_control = cbuf.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  if (sendmsg(h->sock, &mh, MSG_NOSIGNAL) != (ssize_t)(sizeof(hdr) + size))
    return -1;
  if (!reply)
    return 0;
  uint32_t rh[3];
  int64_t deadline = now_ms() + VHH_TIMEOUT_MS;
  if (!read_full(h->sock, rh, sizeof(rh), deadline))
    return -1;
  if (rh[0] != request || rh[1] != (VHU_FLAG_VERSION | VHU_FLAG_REPLY) || rh[2] > 4096)
    return -1;
  uint8_t buf[4096];
  if (!read_full(h->sock, buf, rh[2], deadline))
    return -1;
  memcpy(reply, buf, rh[2] < reply_cap ? rh[2] : reply_cap);
  return (int)rh[2];
}

static bool display_one(VhhHarness *h);

static bool msg_u64(VhhHarness *h, uint32_t req, uint64_t v) {
  return vhh_msg(h, req, 0, &v, 8, NULL, 0, NULL, 0) == 0;
}

static bool get_u64(VhhHarness *h, uint32_t req, uint64_t *v) {
  return vhh_msg(h, req, 0, NULL, 0, NULL, 0, v, 8) == 8;
}

static bool need_ack(VhhHarness *h, uint32_t req, const void *p, uint32_t size, const int *fds,
                     unsigned nfds) {
  uint64_t ack = 1;
  return vhh_msg(h, req, VHU_FLAG_VERSION | VHU_FLAG_NEED_REPLY, p, size, fds, nfds, &ack, 8) ==
             8 &&
         ack == 0;
}

static bool start_rings(VhhHarness *h, uint16_t base_idx);
static bool display_handshake(VhhHarness *h);

static bool set_display_socket(VhhHarness *h) {
  int dsv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, dsv) < 0)
    return false;
  int rc = vhh_msg(h, VHU_GPU_SET_SOCKET, 0, NULL, 0, &dsv[1], 1, NULL, 0);
  close(dsv[1]);
  h->disp = dsv[0];
  h->disp_handshake = false;
  return rc == 0;
}

bool vhh_stop(VhhHarness *h, uint16_t *next_avail) {
  if (h->disp >= 0)
    close(h->disp);
  h->disp = -1;
  for (unsigned q = 0; q < 2; q++) {
    uint32_t en[2] = {q, 0};
    if (!need_ack(h, VHU_SET_VRING_ENABLE, en, 8, NULL, 0))
      return false;
  }
  for (unsigned q = 0; q < 2; q++) {
    uint32_t st[2] = {q, 0}, reply[2] = {0, 0};
    if (vhh_msg(h, VHU_GET_VRING_BASE, 0, st, 8, NULL, 0, reply, sizeof(reply)) != 8 ||
        reply[0] != q)
      return false;
    if (q == 0)
      *next_avail = (uint16_t)reply[1];
  }
  return true;
}

bool vhh_restart(VhhHarness *h, uint16_t next_avail) {
  for (unsigned i = 0; i < VHH_MAX_SCANOUTS; i++) {
    free(h->scanout[i].px);
    memset(&h->scanout[i], 0, sizeof(h->scanout[i]));
  }
  if (next_avail == 0) {
    /* A new driver (guest reboot): fresh rings from index 0. */
    for (unsigned q = 0; q < 2; q++) {
      memset(h->mem + h->vq[q].desc_gpa, 0, RING_AREA);
      h->vq[q].avail_idx = h->vq[q].used_seen = 0;
    }
  }
  return set_display_socket(h) && start_rings(h, next_avail) && display_handshake(h);
}

bool vhh_negotiate(VhhHarness *h, uint64_t want_gpu_features) {
  uint64_t v;
  if (!get_u64(h, VHU_GET_FEATURES, &h->features) ||
      !get_u64(h, VHU_GET_PROTOCOL_FEATURES, &h->pfeatures) ||
      !msg_u64(h, VHU_SET_PROTOCOL_FEATURES, h->pfeatures & VHH_PROTOCOL_FEATURES) ||
      !get_u64(h, VHU_GET_QUEUE_NUM, &v) || v != 2 || !get_u64(h, VHU_GET_MAX_MEM_SLOTS, &v) ||
      vhh_msg(h, VHU_SET_OWNER, 0, NULL, 0, NULL, 0, NULL, 0) < 0)
    return false;
  uint8_t cfg[12 + 16] = {0};
  uint32_t cfg_hdr[3] = {0, 16, 0};
  memcpy(cfg, cfg_hdr, sizeof(cfg_hdr));
  uint8_t cfg_reply[12 + 16];
  if (vhh_msg(h, VHU_GET_CONFIG, 0, cfg, sizeof(cfg), NULL, 0, cfg_reply, sizeof(cfg_reply)) !=
      (int)sizeof(cfg))
    return false;
  if (!set_display_socket(h))
    return false;
  /* What QEMU 10 acks for a Linux guest: the ring features whether
   * offered or not, RING_RESET included. */
  uint64_t feats = (1ull << VHU_F_VERSION_1) | (1ull << VHU_F_PROTOCOL_FEATURES) |
                   (1ull << VHU_F_INDIRECT_DESC) | (1ull << VHU_F_EVENT_IDX) |
                   (1ull << VHU_F_RING_RESET) |
                   (h->features & want_gpu_features & VHU_GPU_FEATURE_MASK);
  if (!msg_u64(h, VHU_SET_FEATURES, feats))
    return false;
  struct {
    uint32_t n, pad;
    uint64_t gpa, size, uva, off;
  } table = {1, 0, 0, VHH_MEM_SIZE, (uint64_t)(uintptr_t)h->mem, 0};
  if (!need_ack(h, VHU_SET_MEM_TABLE, &table, sizeof(table), &h->memfd, 1))
    return false;
  for (unsigned q = 0; q < 2; q++) {
    VhhRing *r = &h->vq[q];
    r->desc_gpa = (uint64_t)q * RING_AREA;
    r->avail_gpa = r->desc_gpa + 0x1000;
    r->used_gpa = r->desc_gpa + 0x2000;
    r->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  return start_rings(h, 0) && display_handshake(h);
}

static bool start_rings(VhhHarness *h, uint16_t base_idx) {
  for (unsigned q = 0; q < 2; q++) {
    VhhRing *r = &h->vq[q];
    uint32_t st[2] = {q, VHH_RING_NUM};
    uint32_t base[2] = {q, q == 0 ? base_idx : r->avail_idx};
    struct {
      uint32_t index, flags;
      uint64_t desc, used, avail, log;
    } addr = {q,
              0,
              (uint64_t)(uintptr_t)(h->mem + r->desc_gpa),
              (uint64_t)(uintptr_t)(h->mem + r->used_gpa),
              (uint64_t)(uintptr_t)(h->mem + r->avail_gpa),
              0};
    uint64_t idx = q;
    uint32_t en[2] = {q, 1};
    if (vhh_msg(h, VHU_SET_VRING_NUM, 0, st, 8, NULL, 0, NULL, 0) < 0 ||
        vhh_msg(h, VHU_SET_VRING_BASE, 0, base, 8, NULL, 0, NULL, 0) < 0 ||
        vhh_msg(h, VHU_SET_VRING_ADDR, 0, &addr, sizeof(addr), NULL, 0, NULL, 0) < 0 ||
        vhh_msg(h, VHU_SET_VRING_CALL, 0, &idx, 8, &r->call, 1, NULL, 0) < 0 ||
        vhh_msg(h, VHU_SET_VRING_KICK, 0, &idx, 8, &r->kick, 1, NULL, 0) < 0 ||
        !need_ack(h, VHU_SET_VRING_ENABLE, en, 8, NULL, 0))
      return false;
  }
  return true;
}

static bool display_handshake(VhhHarness *h) {
  /* QEMU answers the display handshake once it has started the device. */
  int64_t deadline = now_ms() + VHH_TIMEOUT_MS;
  while (!h->disp_handshake && h->disp >= 0 && now_ms() < deadline) {
    struct pollfd pfd = {.fd = h->disp, .events = POLLIN};
    if (poll(&pfd, 1, (int)(deadline - now_ms())) > 0 && !display_one(h)) {
      close(h->disp);
      h->disp = -1;
    }
  }
  return h->disp_handshake;
}

uint64_t vhh_alloc(VhhHarness *h, uint64_t len) {
  uint64_t a = (h->alloc + 15) & ~15ull;
  if (a + len > VHH_MEM_SIZE)
    a = REQ_AREA_START; /* wrap: earlier requests are done by then */
  h->alloc = a + len;
  return a;
}

/* One display message from the worker: records it, answers what needs an
 * answer.  false on EOF or a message the harness does not know. */
static bool display_one(VhhHarness *h) {
  uint32_t hdr[3];
  int64_t deadline = now_ms() + VHH_TIMEOUT_MS;
  if (!read_full(h->disp, hdr, sizeof(hdr), deadline))
    return false;
  uint32_t size = hdr[2];
  uint8_t *p = malloc(size ? size : 1);
  if (!p || !read_full(h->disp, p, size, deadline)) {
    free(p);
    return false;
  }
  bool ok = true;
  uint32_t *u = (uint32_t *)p;
  switch (hdr[0]) {
  case VHU_DISP_GET_PROTOCOL_FEATURES: {
    /* QEMU 10's answer: EDID and DMABUF2 (unless the test says other). */
    uint32_t r[3] = {VHU_DISP_GET_PROTOCOL_FEATURES, VHU_DISP_FLAG_REPLY, 8};
    uint64_t f = h->qemu_pfeatures;
    ok = write(h->disp, r, sizeof(r)) == sizeof(r) && write(h->disp, &f, 8) == 8;
    break;
  }
  case VHU_DISP_GET_DISPLAY_INFO: {
    /* QEMU's virtio_gpu_resp_display_info for the harness's modes. */
    h->info_asked++;
    if (h->qemu_answer == VHH_QEMU_SILENT)
      break;
    uint8_t r[12 + 408] = {0};
    uint32_t rsize = h->qemu_answer == VHH_QEMU_BAD_SIZE ? 407 : 408;
    uint32_t rh[3] = {VHU_DISP_GET_DISPLAY_INFO, VHU_DISP_FLAG_REPLY, rsize};
    uint32_t type = 0x1101;
    memcpy(r, rh, 12);
    memcpy(r + 12, &type, 4);
    for (unsigned i = 0; i < VHH_MAX_SCANOUTS; i++) {
      VhhMode m = h->qemu_mode[i];
      if (i == 0 && h->qemu_answer == VHH_QEMU_BAD_MODE)
        m = (VhhMode){0, 0, 0, 0, 1};
      if (i == 0 && h->qemu_answer == VHH_QEMU_HUGE_MODE)
        m = (VhhMode){0, 0, 16385, 768, 1};
      uint32_t mode[6] = {m.x, m.y, m.w, m.h, m.enabled, 0};
      memcpy(r + 12 + 24 + 24 * i, mode, sizeof(mode));
    }
    ok = write(h->disp, r, 12 + rsize) == (ssize_t)(12 + rsize);
    if (ok && h->qemu_answer == VHH_QEMU_UNASKED_REPLY)
      ok = write(h->disp, r, 12 + rsize) == (ssize_t)(12 + rsize);
    break;
  }
  case VHU_DISP_GET_EDID: {
    /* QEMU's virtio_gpu_resp_edid: type, size, pad, 1024 bytes. */
    ok = size == 4;
    if (!ok)
      break;
    h->edid_asked++;
    h->edid_asked_for = u[0];
    if (h->qemu_answer == VHH_QEMU_SILENT)
      break;
    uint8_t r[12 + 1056] = {0};
    uint32_t rh[3] = {VHU_DISP_GET_EDID, VHU_DISP_FLAG_REPLY, 1056};
    uint32_t type = 0x1104;
    uint32_t len = h->qemu_answer == VHH_QEMU_BAD_EDID ? 129 : h->qemu_edid_len;
    memcpy(r, rh, 12);
    memcpy(r + 12, &type, 4);
    memcpy(r + 12 + 24, &len, 4);
    memcpy(r + 12 + 32, h->qemu_edid, sizeof(h->qemu_edid));
    ok = write(h->disp, r, sizeof(r)) == (ssize_t)sizeof(r);
    break;
  }
  case VHU_DISP_SET_PROTOCOL_FEATURES:
    ok = size == 8;
    if (ok) {
      memcpy(&h->disp_acked, p, 8);
      h->disp_handshake = true;
    }
    break;
  case VHU_DISP_SCANOUT:
    ok = size == 12 && u[0] < VHH_MAX_SCANOUTS && u[1] <= 16384 && u[2] <= 16384;
    if (ok) {
      VhhScanout *s = &h->scanout[u[0]];
      free(s->px);
      s->w = u[1];
      s->h = u[1] ? u[2] : 0;
      s->px = s->w ? calloc((size_t)s->w * s->h, 4) : NULL;
    }
    break;
  case VHU_DISP_UPDATE: {
    ok = size >= 20 && u[0] < VHH_MAX_SCANOUTS;
    if (!ok)
      break;
    VhhScanout *s = &h->scanout[u[0]];
    uint64_t x = u[1], y = u[2], w = u[3], hh = u[4];
    /* What QEMU trusts, the harness checks. */
    ok = s->px && x + w <= s->w && y + hh <= s->h && size == 20 + w * hh * 4;
    if (!ok) {
      fprintf(stderr, "harness: bad UPDATE %u,%u %ux%u on %ux%u, size %u\n", u[1], u[2], u[3], u[4],
              s->w, s->h, size);
      break;
    }
    for (uint64_t row = 0; row < hh; row++)
      memcpy(s->px + (y + row) * s->w + x, p + 20 + row * w * 4, w * 4);
    s->updates++;
    break;
  }
  case VHU_DISP_CURSOR_POS:
  case VHU_DISP_CURSOR_POS_HIDE:
    ok = size == 12;
    if (ok) {
      h->cursor_x = u[1];
      h->cursor_y = u[2];
      h->cursor_hidden = hdr[0] == VHU_DISP_CURSOR_POS_HIDE;
    }
    h->cursor_msgs++;
    break;
  case VHU_DISP_CURSOR_UPDATE:
    ok = size == 20 + 64 * 64 * 4;
    if (ok) {
      h->cursor_x = u[1];
      h->cursor_y = u[2];
      h->cursor_hidden = false;
      memcpy(h->cursor_px, p + 20, sizeof(h->cursor_px));
    }
    h->cursor_msgs++;
    break;
  default:
    fprintf(stderr, "harness: unexpected display message %u\n", hdr[0]);
    ok = false;
  }
  free(p);
  return ok;
}

void vhh_pump_display(VhhHarness *h, int quiet_ms) {
  while (h->disp >= 0) {
    if (quiet_ms <= 0)
      return;
    struct pollfd pfd = {.fd = h->disp, .events = POLLIN};
    if (poll(&pfd, 1, quiet_ms) <= 0)
      return;
    if (!display_one(h)) {
      close(h->disp);
      h->disp = -1;
    }
  }
}

uint64_t vhh_post(VhhHarness *h, unsigned q, const void *req, size_t len, size_t resp_cap) {
  VhhRing *r = &h->vq[q];
  uint64_t rq = vhh_alloc(h, len);
  uint64_t rs = vhh_alloc(h, resp_cap ? resp_cap : 1);
  memcpy(vhh_ptr(h, rq), req, len);
  memset(vhh_ptr(h, rs), 0xee, resp_cap);
  /* Descriptors 2n and 2n + 1 for the n-th request. */
  Desc *d = vhh_ptr(h, r->desc_gpa);
  uint16_t head = (uint16_t)((r->avail_idx * 2) % VHH_RING_NUM);
  d[head] = (Desc){rq, (uint32_t)len, resp_cap ? 1 : 0, (uint16_t)(head + 1)};
  if (resp_cap)
    d[head + 1] = (Desc){rs, (uint32_t)resp_cap, 2, 0};
  uint16_t *avail = vhh_ptr(h, r->avail_gpa);
  avail[2 + r->avail_idx % VHH_RING_NUM] = head;
  /* EVENT_IDX: interrupt me when this chain is used (used_event). */
  avail[2 + VHH_RING_NUM] = r->used_seen;
  __atomic_store_n(&avail[1], (uint16_t)(r->avail_idx + 1), __ATOMIC_RELEASE);
  r->avail_idx++;
  uint64_t one = 1;
  if (write(r->kick, &one, 8) != 8)
    return 0;
  return rs;
}

int vhh_submit(VhhHarness *h, unsigned q, const void *req, size_t len, void *resp,
               size_t resp_cap) {
  VhhRing *r = &h->vq[q];
  uint16_t head = (uint16_t)((r->avail_idx * 2) % VHH_RING_NUM);
  uint64_t rs = vhh_post(h, q, req, len, resp_cap);
  if (!rs)
    return -1;
  uint16_t *used_idx = (uint16_t *)((uint8_t *)vhh_ptr(h, r->used_gpa) + 2);
  int64_t deadline = now_ms() + VHH_TIMEOUT_MS;
  while (__atomic_load_n(used_idx, __ATOMIC_ACQUIRE) == r->used_seen) {
    int left = (int)(deadline - now_ms());
    if (left <= 0)
      return -1;
    struct pollfd pfd[2] = {{.fd = r->call, .events = POLLIN}, {.fd = h->disp, .events = POLLIN}};
    if (poll(pfd, h->disp >= 0 && !h->disp_stalled ? 2 : 1, left) <= 0)
      continue;
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      (void)!read(r->call, &v, 8);
    }
    if (h->disp >= 0 && !h->disp_stalled && (pfd[1].revents & (POLLIN | POLLHUP)) &&
        !display_one(h)) {
      close(h->disp);
      h->disp = -1;
    }
  }
  uint32_t *elem =
      (uint32_t *)((uint8_t *)vhh_ptr(h, r->used_gpa) + 4 + 8 * (r->used_seen % VHH_RING_NUM));
  r->used_seen++;
  if (elem[0] != head)
    return -1;
  uint32_t used_len = elem[1];
  if (resp && resp_cap)
    memcpy(resp, vhh_ptr(h, rs), used_len < resp_cap ? used_len : resp_cap);
  return (int)used_len;
}

void vhh_post_raw(VhhHarness *h, unsigned q, uint64_t gpa, uint32_t len) {
  VhhRing *r = &h->vq[q];
  Desc *d = vhh_ptr(h, r->desc_gpa);
  uint16_t head = (uint16_t)((r->avail_idx * 2) % VHH_RING_NUM);
  d[head] = (Desc){gpa, len, 0, 0};
  uint16_t *avail = vhh_ptr(h, r->avail_gpa);
  avail[2 + r->avail_idx % VHH_RING_NUM] = head;
  __atomic_store_n(&avail[1], (uint16_t)(r->avail_idx + 1), __ATOMIC_RELEASE);
  r->avail_idx++;
  uint64_t one = 1;
  (void)!write(r->kick, &one, 8);
}

uint32_t vhh_ctrl(VhhHarness *h, const void *req, size_t len) {
  uint8_t resp[1056];
  int n = vhh_submit(h, 0, req, len, resp, sizeof(resp));
  if (n < 24)
    return 0;
  uint32_t type;
  memcpy(&type, resp, 4);
  return type;
}
