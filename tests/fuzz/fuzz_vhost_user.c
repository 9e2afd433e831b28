/* libFuzzer target for the vhost-user back-end core: each input is a
 * script of operations a hostile front-end and guest could perform against
 * one device: vhost-user messages (any request, flags, payload, and fds
 * that are memfds of the guest memory or eventfds), guest writes into its
 * memory (to build rings and descriptors), pops/pushes/notifies on either
 * ring, and kick drains.  ASan/UBSan catch bad accesses in the core's own
 * memory; the checks below catch the rest: every iovec a pop returns lies
 * inside a mapped region, a failure always has a reason, replies are well
 * formed, mappings match the memory table at every step and are all gone
 * at the end, no ring runs right after a reset, and no fd is left open.
 *
 * Script format, repeated (see tests/fuzz/make-corpus.py):
 *   0, req, flags, nfds, fdkinds, len(u16), payload[len]   a message
 *   1, queue                                               pop all, push, notify
 *   2, offset(u16), len(u8), bytes[len]                    guest memory write
 *   3, queue                                               kick drain */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vhost/vhost_user.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEM_SIZE 0x10000u

static int memfd = -1;
static uint8_t *mem;
static VhuElem elem;
/* VGPU_FUZZ_TRACE=1: one line per operation, to see how far a seed gets. */
static int trace = -1;

static void check_reply(const VhuResult *res, int rc) {
  if (rc < 0 && !res->why)
    abort(); /* every refusal says why */
  if (res->reply_len == 0)
    return;
  uint32_t h[3];
  if (res->reply_len < VHU_HDR_SIZE || res->reply_len > sizeof(res->reply))
    abort();
  memcpy(h, res->reply, 12);
  if (h[1] != (VHU_FLAG_VERSION | VHU_FLAG_REPLY) || h[2] != res->reply_len - VHU_HDR_SIZE)
    abort();
}

static void check_maps(const VhuDev *dev) {
  if (vhu_live_mappings() != dev->nregions)
    abort(); /* a mapping leaked or a region has none */
}

static bool in_region(const VhuDev *dev, const struct iovec *v) {
  const uint8_t *p = v->iov_base;
  for (uint32_t i = 0; i < dev->nregions; i++) {
    const VhuRegion *r = &dev->regions[i];
    if (p >= r->host && (uint64_t)(p - r->host) <= r->size &&
        v->iov_len <= r->size - (uint64_t)(p - r->host))
      return true;
  }
  return false;
}

static void pop_all(VhuDev *dev, unsigned q) {
  for (int n = 0; n < 64; n++) {
    const char *why = NULL;
    int rc = vhu_vq_pop(dev, q, &elem, &why);
    if (trace)
      fprintf(stderr, "pop q%u: %d %s out %u in %u\n", q, rc, why ? why : "", elem.out_num,
              elem.in_num);
    if (rc < 0 && !why)
      abort();
    if (rc <= 0)
      return;
    if (elem.out_num + elem.in_num > VHU_ELEM_MAX_IOV)
      abort();
    uint64_t out = 0, in = 0;
    for (unsigned i = 0; i < elem.out_num + elem.in_num; i++) {
      if (!in_region(dev, &elem.iov[i]))
        abort();
      volatile uint8_t *b = elem.iov[i].iov_base;
      /* touch both ends: reading is always allowed, writing only the
       * writable part */
      (void)b[0];
      (void)b[elem.iov[i].iov_len - 1];
      if (i >= elem.out_num)
        b[0] = 0xee, in += elem.iov[i].iov_len;
      else
        out += elem.iov[i].iov_len;
    }
    if (out != elem.out_bytes || in != elem.in_bytes)
      abort();
    if (vhu_vq_push(dev, q, elem.head, (uint32_t)(in > 24 ? 24 : in)) != 0)
      abort(); /* a popped chain can always be returned */
    vhu_vq_notify(dev, q);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (trace < 0)
    trace = getenv("VGPU_FUZZ_TRACE") != NULL;
  if (memfd < 0) {
    memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, MEM_SIZE) < 0)
      abort();
    mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (mem == MAP_FAILED)
      abort();
  }
  /* A call fd that is a memfd gets written to: put the file back. */
  if (ftruncate(memfd, MEM_SIZE) < 0 || lseek(memfd, 0, SEEK_SET) < 0)
    abort();
  memset(mem, 0, MEM_SIZE);
  int probe = dup(2);
  close(probe);

  VhuDev dev;
  VhuDevConfig cfg = {.gpu_features = 3, .num_queues = 2, .num_scanouts = 1, .num_capsets = 2};
  if (vhu_dev_init(&dev, &cfg) != 0)
    abort();
  size_t off = 0;
  while (off < size) {
    uint8_t op = data[off++] % 4;
    if (op == 0) {
      if (size - off < 6)
        break;
      uint8_t req = data[off], fl = data[off + 1], nfds = data[off + 2] % 10, kinds = data[off + 3];
      uint32_t len = data[off + 4] | (uint32_t)data[off + 5] << 8;
      off += 6;
      if (len > size - off)
        len = (uint32_t)(size - off);
      uint8_t payload[1024];
      if (len > sizeof(payload))
        len = sizeof(payload);
      memcpy(payload, data + off, len);
      off += len;
      int fds[10];
      for (unsigned i = 0; i < nfds; i++)
        fds[i] = (kinds >> (i % 8)) & 1 ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : dup(memfd);
      /* flags: mostly version 1 with NEED_REPLY as given; bit 7 asks for
       * the raw byte to reach the header checks */
      uint32_t flags = (fl & 0x80) ? (fl & 0x7fu) : (VHU_FLAG_VERSION | (fl & VHU_FLAG_NEED_REPLY));
      VhuHeader h = {req, flags, len};
      VhuResult res;
      int rc = vhu_dev_handle(&dev, &h, payload, fds, nfds, &res);
      if (trace)
        fprintf(stderr, "%s: %d %s reply %zu actions %#x\n", vhu_request_name(req), rc,
                res.why ? res.why : "", res.reply_len, res.actions);
      check_reply(&res, rc);
      check_maps(&dev);
      if ((res.actions & VHU_ACT_RESET) && (vhu_vq_ready(&dev, 0) || vhu_vq_ready(&dev, 1)))
        abort(); /* a reset ring runs again only after a new set-up */
      if (res.actions & VHU_ACT_DISPLAY_FD) {
        int d = vhu_dev_take_display_fd(&dev);
        if (d < 0)
          abort();
        close(d);
      }
    } else if (op == 1 || op == 3) {
      if (off >= size)
        break;
      unsigned q = data[off++] % 3; /* 2: out of range */
      if (op == 1)
        pop_all(&dev, q);
      else
        vhu_vq_kick_drain(&dev, q);
    } else {
      if (size - off < 3)
        break;
      uint32_t o = data[off] | (uint32_t)data[off + 1] << 8;
      uint32_t n = data[off + 2];
      off += 3;
      if (n > size - off)
        n = (uint32_t)(size - off);
      if (o + n > MEM_SIZE)
        n = MEM_SIZE - o;
      memcpy(mem + o, data + off, n);
      off += n;
    }
  }
  vhu_dev_fini(&dev);
  if (vhu_live_mappings() != 0)
    abort(); /* every mapping unmapped at teardown */
  int after = dup(2);
  close(after);
  if (after != probe)
    abort(); /* an fd the core was handed is still open */
  return 0;
}
