/* vhost-user back-end core, played against by a test acting as QEMU 10:
 * memfd guest memory, the negotiation QEMU sends a GPU device, vrings in
 * that memory, descriptor chains, kicks and stops, and the hostile cases
 * (addresses outside guest memory, loops, nested indirect tables, bad ring
 * sizes and alignment, bad memory tables, stray fds, wrong sizes). */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhost/vhost_user.h"

/* Guest memory: one 1 MiB memfd holding two regions with a hole between
 * them in guest-physical space, as QEMU's pc machine has (0..0xa0000 and
 * 0xc0000..): region A gpa [0, 0x80000) = file [0, 0x80000), region B gpa
 * [0x100000, 0x180000) = file [0x80000, 0x100000). */
#define MEM_SIZE 0x100000u
#define A_SIZE 0x80000u
#define B_GPA 0x100000u
#define UVA0 0x7f0000000000ull

/* Ring layout: queue q at gpa 0x1000 + q * 0x4000: desc, +0x1000 avail,
 * +0x2000 used. */
#define RING_GPA(q) (0x1000u + (q)*0x4000u)
#define QSIZE 16u

typedef struct {
  VhuDev dev;
  int memfd;
  uint8_t *mem;
  VhuResult res;
  int kick[2], call[2]; /* our ends (dups) of each ring's eventfds */
  int display_peer;
} T;

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while ((e = readdir(d)))
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the DIR's own */
}

static uint8_t *gpa_ptr(T *t, uint64_t gpa) {
  return gpa < A_SIZE ? t->mem + gpa : t->mem + A_SIZE + (gpa - B_GPA);
}

/* Whether the core's pointer @p and our @mine are the same guest byte (the
 * core has its own mapping of the memfd). */
static bool same_byte(void *p, uint8_t *mine) {
  *mine = 0xa5;
  bool a = *(volatile uint8_t *)p == 0xa5;
  *mine = 0x5a;
  return a && *(volatile uint8_t *)p == 0x5a;
}

static int msg(T *t, uint32_t req, uint32_t flags, const void *p, uint32_t len, const int *fds,
               size_t nfds) {
  VhuHeader h = {req, VHU_FLAG_VERSION | flags, len};
  return vhu_dev_handle(&t->dev, &h, p, fds, nfds, &t->res);
}

static uint64_t reply_u64(T *t, uint32_t req) {
  uint32_t h[3];
  uint64_t v;
  assert_int_equal(t->res.reply_len, VHU_HDR_SIZE + 8);
  memcpy(h, t->res.reply, 12);
  assert_int_equal(h[0], req);
  assert_int_equal(h[1], 0x5); /* QEMU accepts nothing else */
  assert_int_equal(h[2], 8);
  memcpy(&v, t->res.reply + 12, 8);
  return v;
}

static uint64_t get_u64(T *t, uint32_t req) {
  assert_int_equal(msg(t, req, 0, NULL, 0, NULL, 0), 0);
  return reply_u64(t, req);
}

static int set_u64(T *t, uint32_t req, uint32_t flags, uint64_t v, const int *fds, size_t n) {
  return msg(t, req, flags, &v, 8, fds, n);
}

static int vstate(T *t, uint32_t req, uint32_t flags, uint32_t index, uint32_t num) {
  uint32_t s[2] = {index, num};
  return msg(t, req, flags, s, 8, NULL, 0);
}

typedef struct {
  uint64_t gpa, size, uva, off;
} Reg;

static int add_reg(T *t, Reg r) {
  uint64_t p[5] = {0, r.gpa, r.size, r.uva, r.off};
  int fd = dup(t->memfd);
  return msg(t, VHU_ADD_MEM_REG, VHU_FLAG_NEED_REPLY, p, 40, &fd, 1);
}

static int mem_table(T *t, const Reg *r, uint32_t n, size_t nfds) {
  uint8_t p[8 + 32 * 9] = {0};
  int fds[9];
  memcpy(p, &n, 4);
  for (uint32_t i = 0; i < n; i++)
    memcpy(p + 8 + 32 * i, &r[i], 32);
  for (size_t i = 0; i < nfds; i++)
    fds[i] = dup(t->memfd);
  return msg(t, VHU_SET_MEM_TABLE, 0, p, 8 + 32 * n, fds, nfds);
}

static int ring_addr(T *t, uint32_t q, uint64_t desc, uint64_t avail, uint64_t used) {
  uint64_t p[5];
  uint32_t iw[2] = {q, 0};
  memcpy(p, iw, 8);
  p[1] = desc;
  p[2] = used;
  p[3] = avail;
  p[4] = 0;
  return msg(t, VHU_SET_VRING_ADDR, 0, p, 40, NULL, 0);
}

static const Reg reg_a = {0, A_SIZE, UVA0, 0};
static const Reg reg_b = {B_GPA, 0x80000, UVA0 + B_GPA, A_SIZE};

static int setup(void **state) {
  T *t = calloc(1, sizeof(T));
  VhuDevConfig cfg = {.gpu_features = (1u << VHU_F_GPU_EDID) | (1u << VHU_F_GPU_VIRGL),
                      .num_queues = 2,
                      .num_scanouts = 1,
                      .num_capsets = 2};
  assert_int_equal(vhu_dev_init(&t->dev, &cfg), 0);
  t->memfd = memfd_create("guest", MFD_CLOEXEC);
  assert_true(t->memfd >= 0);
  assert_int_equal(ftruncate(t->memfd, MEM_SIZE), 0);
  t->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, t->memfd, 0);
  assert_true(t->mem != MAP_FAILED);
  t->kick[0] = t->kick[1] = t->call[0] = t->call[1] = t->display_peer = -1;
  *state = t;
  return 0;
}

static int teardown(void **state) {
  T *t = *state;
  vhu_dev_fini(&t->dev);
  assert_int_equal(vhu_live_mappings(), 0);
  munmap(t->mem, MEM_SIZE);
  close(t->memfd);
  for (int i = 0; i < 2; i++) {
    if (t->kick[i] >= 0)
      close(t->kick[i]);
    if (t->call[i] >= 0)
      close(t->call[i]);
  }
  if (t->display_peer >= 0)
    close(t->display_peer);
  free(t);
  return 0;
}

/* Sends an eventfd for ring @q and keeps our own copy in @mine. */
static int ring_fd(T *t, uint32_t req, uint32_t q, int *mine) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (mine) {
    if (*mine >= 0)
      close(*mine);
    *mine = dup(fd);
  }
  return set_u64(t, req, 0, q, &fd, 1);
}

/* Step ① and ② of what QEMU 10 sends at realize, then ④ at DRIVER_OK. */
static void negotiate(T *t, uint64_t features) {
  uint64_t f = get_u64(t, VHU_GET_FEATURES);
  assert_true(f & (1ull << VHU_F_VERSION_1));
  assert_true(f & (1ull << VHU_F_PROTOCOL_FEATURES));
  assert_true(f & (1ull << VHU_F_INDIRECT_DESC));
  assert_true(f & (1ull << VHU_F_EVENT_IDX));
  assert_true(f & (1ull << VHU_F_GPU_EDID));
  assert_true(f & (1ull << VHU_F_GPU_VIRGL));
  assert_false(f & (1ull << VHU_F_GPU_RESOURCE_BLOB)); /* not asked for */
  assert_false(f & (1ull << VHU_F_LOG_ALL));
  uint64_t pf = get_u64(t, VHU_GET_PROTOCOL_FEATURES);
  assert_int_equal(pf, VHU_PROTOCOL_FEATURES);
  /* QEMU acks what the reference offered (0x8f2b); we keep our part. */
  assert_int_equal(set_u64(t, VHU_SET_PROTOCOL_FEATURES, 0, 0x8f2b, NULL, 0), 0);
  assert_int_equal(t->res.reply_len, 0);
  assert_true(vhu_dev_has_protocol_feature(&t->dev, VHU_PF_REPLY_ACK));
  assert_true(vhu_dev_has_protocol_feature(&t->dev, VHU_PF_CONFIG));
  assert_false(vhu_dev_has_protocol_feature(&t->dev, 5)); /* BACKEND_REQ: never offered */
  assert_int_equal(get_u64(t, VHU_GET_QUEUE_NUM), 2);
  assert_int_equal(get_u64(t, VHU_GET_MAX_MEM_SLOTS), VHU_MAX_MEM_REGIONS);
  assert_int_equal(msg(t, VHU_SET_OWNER, 0, NULL, 0, NULL, 0), 0);
  get_u64(t, VHU_GET_FEATURES);
  for (uint32_t q = 0; q < 2; q++) {
    assert_int_equal(ring_fd(t, VHU_SET_VRING_CALL, q, NULL), 0);
    assert_int_equal(ring_fd(t, VHU_SET_VRING_ERR, q, NULL), 0);
  }
  /* ③ the guest probes the config space */
  uint32_t c[7] = {0, 16, 0};
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 28, NULL, 0), 0);
  assert_int_equal(t->res.reply_len, 12 + 28);
  uint32_t out[10];
  memcpy(out, t->res.reply, 40);
  assert_int_equal(out[1], 0x5);
  assert_int_equal(out[2], 28);
  assert_int_equal(out[4], 16);
  assert_int_equal(out[8], 1); /* num_scanouts at data + 8 */
  assert_int_equal(out[9], 2); /* num_capsets */
  /* ④ DRIVER_OK */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  t->display_peer = sv[1];
  assert_int_equal(msg(t, VHU_GPU_SET_SOCKET, 0, NULL, 0, &sv[0], 1), 0);
  assert_true(t->res.actions & VHU_ACT_DISPLAY_FD);
  int dfd = vhu_dev_take_display_fd(&t->dev);
  assert_int_equal(dfd, sv[0]);
  close(dfd);
  for (uint32_t q = 0; q < 2; q++)
    assert_int_equal(ring_fd(t, VHU_SET_VRING_CALL, q, NULL), 0);
  assert_int_equal(set_u64(t, VHU_SET_FEATURES, 0, features, NULL, 0), 0);
  assert_true(t->res.actions & VHU_ACT_FEATURES);
  assert_int_equal(t->res.reply_len, 0);
  assert_int_equal(add_reg(t, reg_a), 0);
  assert_int_equal(reply_u64(t, VHU_ADD_MEM_REG), 0);
  assert_true(t->res.actions & VHU_ACT_MEM_CHANGED);
  assert_int_equal(add_reg(t, reg_b), 0);
  assert_int_equal(reply_u64(t, VHU_ADD_MEM_REG), 0);
  assert_int_equal(vhu_live_mappings(), 2);
  for (uint32_t q = 0; q < 2; q++) {
    assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, q, QSIZE), 0);
    assert_int_equal(vstate(t, VHU_SET_VRING_BASE, 0, q, 0), 0);
    uint64_t g = RING_GPA(q);
    assert_int_equal(ring_addr(t, q, UVA0 + g, UVA0 + g + 0x1000, UVA0 + g + 0x2000), 0);
    assert_int_equal(ring_fd(t, VHU_SET_VRING_KICK, q, &t->kick[q]), 0);
    assert_true(t->res.actions & VHU_ACT_KICK_FD);
    assert_true(t->res.ring_mask & (1u << q));
    assert_false(vhu_vq_ready(&t->dev, q)); /* disabled until SET_VRING_ENABLE */
  }
  for (uint32_t q = 0; q < 2; q++) {
    assert_int_equal(vstate(t, VHU_SET_VRING_ENABLE, VHU_FLAG_NEED_REPLY, q, 1), 0);
    assert_int_equal(reply_u64(t, VHU_SET_VRING_ENABLE), 0);
    assert_true(vhu_vq_ready(&t->dev, q));
  }
  for (uint32_t q = 0; q < 2; q++)
    assert_int_equal(ring_fd(t, VHU_SET_VRING_CALL, q, &t->call[q]), 0);
}

/* What QEMU 10 acked in the trace: EDID, INDIRECT_DESC, EVENT_IDX,
 * PROTOCOL_FEATURES, VERSION_1 and bit 40 RING_RESET, never offered. */
#define QEMU10_FEATURES 0x10170000002ull
#define ALL_FEATURES QEMU10_FEATURES

/* ---- guest side of the rings ---- */

static void put_desc(T *t, uint64_t table_gpa, uint16_t i, uint64_t addr, uint32_t len,
                     uint16_t flags, uint16_t next) {
  uint8_t *d = gpa_ptr(t, table_gpa) + 16 * i;
  memcpy(d, &addr, 8);
  memcpy(d + 8, &len, 4);
  memcpy(d + 12, &flags, 2);
  memcpy(d + 14, &next, 2);
}

static uint16_t *avail(T *t, uint32_t q) {
  return (uint16_t *)gpa_ptr(t, RING_GPA(q) + 0x1000);
}
static uint8_t *used(T *t, uint32_t q) {
  return gpa_ptr(t, RING_GPA(q) + 0x2000);
}

static void offer(T *t, uint32_t q, uint16_t head) {
  uint16_t *a = avail(t, q);
  a[2 + (a[1] % QSIZE)] = head;
  __atomic_store_n(&a[1], (uint16_t)(a[1] + 1), __ATOMIC_RELEASE);
}

static uint16_t used_idx(T *t, uint32_t q) {
  uint16_t v;
  memcpy(&v, used(t, q) + 2, 2);
  return v;
}

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

static void test_negotiation_and_direct_chain(void **state) {
  T *t = *state;
  negotiate(t, ALL_FEATURES);
  VhuElem *e = malloc(sizeof(*e));
  const char *why = NULL;
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 0); /* empty */
  /* A command in region A, the response in region B. */
  memcpy(gpa_ptr(t, 0x10000), "command-bytes-24-long!!!", 24);
  put_desc(t, RING_GPA(0), 3, 0x10000, 24, F_NEXT, 7);
  put_desc(t, RING_GPA(0), 7, B_GPA + 0x100, 64, F_WRITE, 0);
  offer(t, 0, 3);
  /* the guest kicks */
  uint64_t one = 1;
  assert_int_equal(write(t->kick[0], &one, 8), 8);
  assert_int_equal(vhu_vq_kick_drain(&t->dev, 0), 0);
  assert_int_equal(vhu_vq_kick_drain(&t->dev, 0), -EAGAIN);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
  assert_int_equal(e->head, 3);
  assert_int_equal(e->out_num, 1);
  assert_int_equal(e->in_num, 1);
  assert_int_equal(e->out_bytes, 24);
  assert_int_equal(e->in_bytes, 64);
  assert_memory_equal(e->iov[0].iov_base, "command-bytes-24-long!!!", 24);
  memcpy(e->iov[1].iov_base, "response", 8);
  assert_memory_equal(gpa_ptr(t, B_GPA + 0x100), "response", 8);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 0);
  /* EVENT_IDX: avail_event published after the pop */
  uint16_t ae;
  memcpy(&ae, used(t, 0) + 4 + 8 * QSIZE, 2);
  assert_int_equal(ae, 1);
  assert_int_equal(vhu_vq_push(&t->dev, 0, 3, 8), 0);
  assert_int_equal(used_idx(t, 0), 1);
  uint32_t ue[2];
  memcpy(ue, used(t, 0) + 4, 8);
  assert_int_equal(ue[0], 3);
  assert_int_equal(ue[1], 8);
  assert_int_equal(vhu_vq_push(&t->dev, 0, 3, 8), -EINVAL); /* nothing in flight */
  /* The guest's used_event = 0: the first completion interrupts. */
  assert_int_equal(vhu_vq_notify(&t->dev, 0), 1);
  uint64_t v = 0;
  assert_int_equal(read(t->call[0], &v, 8), 8);
  assert_int_equal(v, 1);
  free(e);
}

static void test_event_idx_and_flags_suppression(void **state) {
  T *t = *state;
  negotiate(t, ALL_FEATURES);
  VhuElem *e = malloc(sizeof(*e));
  const char *why;
  uint16_t *a = avail(t, 0);
  for (int round = 0; round < 3; round++) {
    put_desc(t, RING_GPA(0), 0, 0x10000, 16, F_WRITE, 0);
    offer(t, 0, 0);
    assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
    assert_int_equal(vhu_vq_push(&t->dev, 0, 0, 16), 0);
    if (round == 0) {
      assert_true(vhu_vq_should_call(&t->dev, 0)); /* first: always */
      a[2 + QSIZE] = 5;                            /* used_event: call me past 5 */
    } else {
      assert_false(vhu_vq_should_call(&t->dev, 0)); /* used idx 2, 3: not yet */
    }
  }
  for (int i = 0; i < 3; i++) {
    put_desc(t, RING_GPA(0), 0, 0x10000, 16, F_WRITE, 0);
    offer(t, 0, 0);
    assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
    assert_int_equal(vhu_vq_push(&t->dev, 0, 0, 16), 0);
  }
  assert_true(vhu_vq_should_call(&t->dev, 0)); /* used idx 6 passed 5 */
  /* Going idle on an empty ring republishes avail_event, whatever the
   * memory held (after a resume it holds the previous run's value). */
  uint16_t ae = 0x1234;
  memcpy(used(t, 0) + 4 + 8 * QSIZE, &ae, 2);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 0);
  memcpy(&ae, used(t, 0) + 4 + 8 * QSIZE, 2);
  assert_int_equal(ae, 6);
  free(e);
}

static void test_flags_suppression_without_event_idx(void **state) {
  T *t = *state;
  negotiate(t, QEMU10_FEATURES & ~(1ull << VHU_F_EVENT_IDX));
  VhuElem *e = malloc(sizeof(*e));
  const char *why;
  put_desc(t, RING_GPA(1), 0, 0x10000, 16, 0, 0);
  offer(t, 1, 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 1, e, &why), 1);
  assert_int_equal(vhu_vq_push(&t->dev, 1, 0, 0), 0);
  avail(t, 1)[0] = 1; /* VRING_AVAIL_F_NO_INTERRUPT */
  assert_false(vhu_vq_should_call(&t->dev, 1));
  assert_int_equal(vhu_vq_notify(&t->dev, 1), 0);
  avail(t, 1)[0] = 0;
  assert_true(vhu_vq_should_call(&t->dev, 1));
  free(e);
}

static void test_indirect_chain(void **state) {
  T *t = *state;
  negotiate(t, ALL_FEATURES);
  VhuElem *e = malloc(sizeof(*e));
  const char *why = NULL;
  /* table in region B: two readable pieces (header, data), one writable */
  uint64_t tbl = B_GPA + 0x2000;
  put_desc(t, tbl, 0, 0x10000, 24, F_NEXT, 2);
  put_desc(t, tbl, 2, 0x11000, 4096, F_NEXT, 1);
  put_desc(t, tbl, 1, B_GPA + 0x8000, 24, F_WRITE, 0);
  put_desc(t, RING_GPA(0), 5, tbl, 3 * 16, F_INDIRECT, 0);
  offer(t, 0, 5);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
  assert_int_equal(e->head, 5);
  assert_int_equal(e->out_num, 2);
  assert_int_equal(e->in_num, 1);
  assert_int_equal(e->out_bytes, 24 + 4096);
  assert_true(same_byte(e->iov[1].iov_base, gpa_ptr(t, 0x11000)));
  assert_true(same_byte(e->iov[2].iov_base, gpa_ptr(t, B_GPA + 0x8000)));
  assert_int_equal(vhu_vq_push(&t->dev, 0, 5, 24), 0);
  /* A chained write split over several writable descriptors. */
  put_desc(t, RING_GPA(0), 0, 0x10000, 24, F_NEXT, 1);
  put_desc(t, RING_GPA(0), 1, 0x12000, 8, F_WRITE | F_NEXT, 2);
  put_desc(t, RING_GPA(0), 2, 0x13000, 8, F_WRITE | F_NEXT, 3);
  put_desc(t, RING_GPA(0), 3, B_GPA, 8, F_WRITE, 0);
  offer(t, 0, 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
  assert_int_equal(e->out_num, 1);
  assert_int_equal(e->in_num, 3);
  assert_int_equal(e->in_bytes, 24);
  free(e);
}

/* A descriptor over two regions adjacent in guest-physical space is split
 * into two pieces. */
static void test_descriptor_across_adjacent_regions(void **state) {
  T *t = *state;
  Reg r[2] = {{0, 0x40000, UVA0, 0}, {0x40000, 0x40000, UVA0 + 0x80000, 0x80000}};
  assert_int_equal(mem_table(t, r, 2, 2), 0);
  struct iovec iov[4];
  unsigned n = 0;
  assert_int_equal(vhu_gpa_to_iov(&t->dev, 0x3fff0, 0x20, iov, 4, &n), 0);
  assert_int_equal(n, 2);
  assert_true(same_byte(iov[0].iov_base, t->mem + 0x3fff0));
  assert_int_equal(iov[0].iov_len, 16);
  assert_true(same_byte(iov[1].iov_base, t->mem + 0x80000));
  assert_int_equal(iov[1].iov_len, 16);
  n = 0;
  assert_int_equal(vhu_gpa_to_iov(&t->dev, 0x3fff0, 0x20, iov, 1, &n), -E2BIG);
  assert_null(vhu_gpa_to_host(&t->dev, 0x3fff0, 0x20)); /* not one region */
  assert_non_null(vhu_gpa_to_host(&t->dev, 0x3fff0, 0x10));
  n = 0;
  assert_int_equal(vhu_gpa_to_iov(&t->dev, 0x7fff0, 0x20, iov, 4, &n), -EFAULT);
  n = 0;
  assert_int_equal(vhu_gpa_to_iov(&t->dev, UINT64_MAX - 4, 16, iov, 4, &n), -EFAULT);
}

/* One hostile chain per case: the pop fails with a reason, the ring is
 * broken from then on, and nothing outside guest memory was touched. */
typedef void (*Build)(T *t);

static void run_hostile(void **state, Build build, int err, const char *reason) {
  T *t = *state;
  negotiate(t, ALL_FEATURES);
  VhuElem *e = malloc(sizeof(*e));
  const char *why = NULL;
  build(t);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), err);
  assert_non_null(why);
  assert_non_null(strstr(why, reason));
  assert_true(vhu_vq_broken(&t->dev, 0));
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), -EIO);
  /* the other ring goes on */
  put_desc(t, RING_GPA(1), 0, 0x10000, 8, 0, 0);
  offer(t, 1, 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 1, e, &why), 1);
  free(e);
}

static void b_outside(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x200000, 16, 0, 0);
  offer(t, 0, 0);
}
static void b_straddle(T *t) {
  put_desc(t, RING_GPA(0), 0, A_SIZE - 8, 16, 0, 0); /* into the hole */
  offer(t, 0, 0);
}
static void b_huge_len(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x10, 0xffffffff, 0, 0);
  offer(t, 0, 0);
}
static void b_wrapping_addr(T *t) {
  put_desc(t, RING_GPA(0), 0, UINT64_MAX - 7, 16, 0, 0);
  offer(t, 0, 0);
}
static void b_loop(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x10000, 16, F_NEXT, 1);
  put_desc(t, RING_GPA(0), 1, 0x10000, 0, F_NEXT, 0);
  offer(t, 0, 0);
}
static void b_indirect_loop(T *t) {
  uint64_t tbl = 0x20000;
  put_desc(t, tbl, 0, 0x10000, 0, F_NEXT, 1);
  put_desc(t, tbl, 1, 0x10000, 0, F_NEXT, 0);
  put_desc(t, RING_GPA(0), 0, tbl, 32, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_nested_indirect(T *t) {
  uint64_t tbl = 0x20000;
  put_desc(t, tbl, 0, 0x21000, 16, F_INDIRECT, 0);
  put_desc(t, RING_GPA(0), 0, tbl, 16, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_indirect_next(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x20000, 16, F_INDIRECT | F_NEXT, 1);
  offer(t, 0, 0);
}
static void b_indirect_size(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x20000, 24, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_indirect_huge(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x20000, 0xfffffff0, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_indirect_outside(T *t) {
  put_desc(t, RING_GPA(0), 0, A_SIZE - 16, 32, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_indirect_not_head(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x10000, 8, F_NEXT, 1);
  put_desc(t, RING_GPA(0), 1, 0x20000, 16, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_too_many_pieces(T *t) {
  /* 1100 one-byte descriptors in an indirect table */
  uint64_t tbl = 0x20000;
  for (uint16_t i = 0; i < 1100; i++)
    put_desc(t, tbl, i, 0x10000 + i, 1, i + 1 < 1100 ? F_NEXT : 0, i + 1);
  put_desc(t, RING_GPA(0), 0, tbl, 1100 * 16, F_INDIRECT, 0);
  offer(t, 0, 0);
}
static void b_next_range(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x10000, 8, F_NEXT, QSIZE);
  offer(t, 0, 0);
}
static void b_head_range(T *t) {
  offer(t, 0, QSIZE + 3);
}
static void b_avail_jump(T *t) {
  avail(t, 0)[1] = QSIZE + 1;
}
static void b_read_after_write(T *t) {
  put_desc(t, RING_GPA(0), 0, 0x10000, 8, F_WRITE | F_NEXT, 1);
  put_desc(t, RING_GPA(0), 1, 0x11000, 8, 0, 0);
  offer(t, 0, 0);
}

#define HOSTILE(name, err, reason)                                                                 \
  static void test_hostile_##name(void **state) {                                                  \
    run_hostile(state, b_##name, err, reason);                                                     \
  }
HOSTILE(outside, -EFAULT, "outside guest memory")
HOSTILE(straddle, -EFAULT, "outside guest memory")
HOSTILE(huge_len, -EFAULT, "outside guest memory")
HOSTILE(wrapping_addr, -EFAULT, "outside guest memory")
HOSTILE(loop, -ELOOP, "loops")
HOSTILE(indirect_loop, -ELOOP, "loops")
HOSTILE(nested_indirect, -EINVAL, "inside an indirect table")
HOSTILE(indirect_next, -EINVAL, "NEXT")
HOSTILE(indirect_size, -EINVAL, "indirect table size")
HOSTILE(indirect_huge, -EINVAL, "indirect table size")
HOSTILE(indirect_outside, -EFAULT, "indirect table outside")
HOSTILE(indirect_not_head, -EINVAL, "not at the head")
HOSTILE(too_many_pieces, -E2BIG, "too many pieces")
HOSTILE(next_range, -EINVAL, "next descriptor index")
HOSTILE(head_range, -EINVAL, "head descriptor index")
HOSTILE(avail_jump, -EINVAL, "more than the ring size")
HOSTILE(read_after_write, -EINVAL, "readable descriptor after")

static void test_indirect_needs_feature(void **state) {
  T *t = *state;
  negotiate(t, QEMU10_FEATURES & ~(1ull << VHU_F_INDIRECT_DESC));
  VhuElem *e = malloc(sizeof(*e));
  const char *why = NULL;
  put_desc(t, 0x20000, 0, 0x10000, 8, 0, 0);
  put_desc(t, RING_GPA(0), 0, 0x20000, 16, F_INDIRECT, 0);
  offer(t, 0, 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), -EINVAL);
  assert_non_null(strstr(why, "INDIRECT_DESC"));
  free(e);
}

/* GET_VRING_BASE stops the ring and reports the next avail index; a
 * resume from that base continues; RESET_DEVICE drops everything. */
static void test_stop_resume_reset(void **state) {
  T *t = *state;
  negotiate(t, ALL_FEATURES);
  VhuElem *e = malloc(sizeof(*e));
  const char *why;
  for (int i = 0; i < 5; i++) {
    put_desc(t, RING_GPA(0), 0, 0x10000, 8, 0, 0);
    offer(t, 0, 0);
    assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
    assert_int_equal(vhu_vq_push(&t->dev, 0, 0, 0), 0);
  }
  offer(t, 0, 0); /* offered, never popped before the stop */
  for (uint32_t q = 0; q < 2; q++)
    assert_int_equal(vstate(t, VHU_SET_VRING_ENABLE, 0, q, 0), 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 0); /* disabled */
  assert_int_equal(vstate(t, VHU_GET_VRING_BASE, 0, 0, 0), 0);
  assert_true(t->res.actions & VHU_ACT_RING_STOPPED);
  assert_int_equal(vhu_vq_kick_fd(&t->dev, 0), -1);
  uint32_t r[5];
  assert_int_equal(t->res.reply_len, 20);
  memcpy(r, t->res.reply, 20);
  assert_int_equal(r[0], VHU_GET_VRING_BASE);
  assert_int_equal(r[1], 0x5);
  assert_int_equal(r[2], 8);
  assert_int_equal(r[3], 0);
  assert_int_equal(r[4], 5);
  assert_int_equal(vstate(t, VHU_GET_VRING_BASE, 0, 1, 0), 0);
  memcpy(r, t->res.reply, 20);
  assert_int_equal(r[3], 1);
  assert_int_equal(r[4], 0);
  /* resume */
  assert_int_equal(vstate(t, VHU_SET_VRING_BASE, 0, 0, 5), 0);
  uint64_t g = RING_GPA(0);
  assert_int_equal(ring_addr(t, 0, UVA0 + g, UVA0 + g + 0x1000, UVA0 + g + 0x2000), 0);
  assert_int_equal(ring_fd(t, VHU_SET_VRING_KICK, 0, &t->kick[0]), 0);
  assert_int_equal(vstate(t, VHU_SET_VRING_ENABLE, 0, 0, 1), 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
  assert_int_equal(vhu_vq_push(&t->dev, 0, 0, 0), 0);
  assert_int_equal(used_idx(t, 0), 6);
  /* reset: rings and their fds gone, features cleared, memory kept (the
   * front-end does not send regions it already sent) */
  int before = count_fds();
  assert_int_equal(msg(t, VHU_RESET_DEVICE, 0, NULL, 0, NULL, 0), 0);
  assert_true(t->res.actions & VHU_ACT_RESET);
  assert_int_equal(count_fds(), before - 5); /* kick 0 (1 was stopped), 2 call, 2 err */
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 0);
  assert_false(vhu_vq_ready(&t->dev, 0));
  assert_false(vhu_dev_has_feature(&t->dev, VHU_F_EVENT_IDX));
  assert_int_equal(vhu_live_mappings(), 2);
  assert_non_null(vhu_gpa_to_host(&t->dev, B_GPA, 8));
  /* and the device starts again on it */
  assert_int_equal(set_u64(t, VHU_SET_FEATURES, 0, ALL_FEATURES, NULL, 0), 0);
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, QSIZE), 0);
  assert_int_equal(vstate(t, VHU_SET_VRING_BASE, 0, 0, 6), 0);
  assert_int_equal(ring_addr(t, 0, UVA0 + g, UVA0 + g + 0x1000, UVA0 + g + 0x2000), 0);
  assert_int_equal(ring_fd(t, VHU_SET_VRING_KICK, 0, &t->kick[0]), 0);
  assert_int_equal(vstate(t, VHU_SET_VRING_ENABLE, 0, 0, 1), 0);
  offer(t, 0, 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
  free(e);
}

static void test_bad_ring_setup(void **state) {
  T *t = *state;
  assert_int_equal(set_u64(t, VHU_SET_FEATURES, 0, ALL_FEATURES, NULL, 0), 0);
  assert_int_equal(add_reg(t, reg_a), 0);
  static const uint32_t bad[] = {0, 3, 100, 32769, 65536, 0x80000000u};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, bad[i]), -EINVAL);
    assert_non_null(t->res.why);
  }
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 2, 16), -EINVAL); /* ring 2 */
  /* 32768 is the largest ring; its descriptor table alone fills region A,
   * so avail and used cannot be placed there */
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, 32768), 0);
  assert_int_equal(ring_addr(t, 0, UVA0, UVA0 + 0x1000, UVA0 + 0x2000), 0);
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, 32768), 0);
  assert_int_equal(ring_addr(t, 0, UVA0 + 0x10, UVA0 + 0x1000, UVA0 + 0x2000), -EFAULT);
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, 16), 0);
  uint64_t g = RING_GPA(0);
  assert_int_equal(ring_addr(t, 0, UVA0 + g + 8, UVA0 + g + 0x1000, UVA0 + g + 0x2000), -EINVAL);
  assert_int_equal(ring_addr(t, 0, UVA0 + g, UVA0 + g + 0x1001, UVA0 + g + 0x2000), -EINVAL);
  assert_int_equal(ring_addr(t, 0, UVA0 + g, UVA0 + g + 0x1000, UVA0 + g + 0x2002), -EINVAL);
  /* guest-physical instead of front-end addresses: outside the table */
  assert_int_equal(ring_addr(t, 0, g, g + 0x1000, g + 0x2000), -EFAULT);
  /* the used ring runs off the end of region A */
  assert_int_equal(ring_addr(t, 0, UVA0 + g, UVA0 + g + 0x1000, UVA0 + A_SIZE - 64), -EFAULT);
  assert_int_equal(ring_addr(t, 0, UVA0 + g, UVA0 + g + 0x1000, UVA0 + g + 0x2000), 0);
  /* logging requested */
  uint64_t p[5] = {1ull << 32, UVA0 + g, UVA0 + g + 0x2000, UVA0 + g + 0x1000, 0};
  assert_int_equal(msg(t, VHU_SET_VRING_ADDR, 0, p, 40, NULL, 0), -ENOTSUP);
  assert_int_equal(vstate(t, VHU_SET_VRING_BASE, 0, 0, 0x10000), -EINVAL);
  assert_int_equal(vstate(t, VHU_SET_VRING_ENABLE, 0, 0, 2), -EINVAL);
  int fd = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(set_u64(t, VHU_SET_VRING_KICK, 0, 0x200, &fd, 1), -EINVAL); /* unknown bit */
  assert_int_equal(set_u64(t, VHU_SET_VRING_KICK, 0, 0, NULL, 0), -EINVAL);    /* fd missing */
  fd = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(set_u64(t, VHU_SET_VRING_KICK, 0, VHU_VRING_NOFD, &fd, 1), -EINVAL);
  assert_int_equal(set_u64(t, VHU_SET_VRING_KICK, 0, VHU_VRING_NOFD, NULL, 0), 0); /* polling */
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, 32), -EBUSY);                /* running */
  assert_int_equal(vstate(t, VHU_SET_VRING_BASE, 0, 0, 1), -EBUSY);
}

/* Front-end addresses aligned, but the region's front-end address and file
 * offset disagree modulo 16: the host pointers would be misaligned. */
static void test_ring_misaligned_in_mapping(void **state) {
  T *t = *state;
  assert_int_equal(add_reg(t, (Reg){0, 0x10000, UVA0 + 8, 0}), 0);
  assert_int_equal(vstate(t, VHU_SET_VRING_NUM, 0, 0, 16), 0);
  assert_int_equal(ring_addr(t, 0, UVA0 + 0x1000, UVA0 + 0x2000, UVA0 + 0x3000), -EFAULT);
  assert_non_null(strstr(t->res.why, "misaligned"));
  /* a region whose addresses agree modulo 16 takes the same ring */
  uint64_t rm[5] = {0, 0, 0x10000, UVA0 + 8, 0};
  assert_int_equal(msg(t, VHU_REM_MEM_REG, 0, rm, 40, NULL, 0), 0);
  assert_int_equal(add_reg(t, (Reg){0, 0x10000, UVA0, 0}), 0);
  assert_int_equal(ring_addr(t, 0, UVA0 + 0x1000, UVA0 + 0x2000, UVA0 + 0x3000), 0);
}

static void test_bad_memory_tables(void **state) {
  T *t = *state;
  int before = count_fds();
  /* overlap in guest-physical space */
  Reg ov[2] = {reg_a, {A_SIZE - 0x1000, 0x2000, UVA0 + 0x200000, 0}};
  assert_int_equal(mem_table(t, ov, 2, 2), -EINVAL);
  assert_non_null(strstr(t->res.why, "guest-physical"));
  /* overlap in the front-end's address space */
  Reg ouva[2] = {reg_a, {B_GPA, 0x1000, UVA0 + 0x1000, 0}};
  assert_int_equal(mem_table(t, ouva, 2, 2), -EINVAL);
  assert_non_null(strstr(t->res.why, "front-end"));
  Reg wrap = {UINT64_MAX - 0xfff, 0x2000, UVA0, 0};
  assert_int_equal(mem_table(t, &wrap, 1, 1), -EINVAL);
  Reg wrapu = {0, 0x2000, UINT64_MAX - 0xfff, 0};
  assert_int_equal(mem_table(t, &wrapu, 1, 1), -EINVAL);
  Reg wrapo = {0, 0x2000, UVA0, UINT64_MAX - 0xfff};
  assert_int_equal(mem_table(t, &wrapo, 1, 1), -EINVAL);
  Reg zero = {0, 0, UVA0, 0};
  assert_int_equal(mem_table(t, &zero, 1, 1), -EINVAL);
  /* bigger than the file: would fault on access */
  Reg big = {0, MEM_SIZE, UVA0, 0x1000};
  assert_int_equal(mem_table(t, &big, 1, 1), -EINVAL);
  assert_non_null(strstr(t->res.why, "past the end"));
  Reg nine[9];
  for (int i = 0; i < 9; i++)
    nine[i] = (Reg){i * 0x1000ull, 0x1000, UVA0 + i * 0x1000ull, i * 0x1000ull};
  assert_int_equal(mem_table(t, nine, 9, 8), -EPROTO); /* does not even fit a message */
  assert_int_equal(mem_table(t, nine, 8, 7), -EINVAL); /* one fd short */
  assert_int_equal(mem_table(t, nine, 0, 0), -EINVAL);
  /* not a memory file */
  uint64_t p[5] = {0, 0, 0x1000, UVA0, 0};
  int efd = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(msg(t, VHU_ADD_MEM_REG, 0, p, 40, &efd, 1), -EINVAL);
  assert_int_equal(vhu_live_mappings(), 0);
  assert_int_equal(count_fds(), before);
  /* a good table, then ADD_MEM_REG overlapping it, then a full one */
  assert_int_equal(mem_table(t, nine, 8, 8), 0);
  assert_int_equal(vhu_live_mappings(), 8);
  assert_int_equal(add_reg(t, (Reg){0x7000, 0x2000, UVA0 + 0x100000, 0}), -EINVAL);
  assert_int_equal(reply_u64(t, VHU_ADD_MEM_REG), 1); /* NEED_REPLY: failure */
  /* a failed table leaves no memory at all, not half of one */
  assert_int_equal(mem_table(t, ov, 2, 2), -EINVAL);
  assert_int_equal(vhu_live_mappings(), 8); /* validation happens before unmapping */
  Reg bad_second[2] = {reg_a, {B_GPA, 0x1000, UVA0 + B_GPA, MEM_SIZE}};
  assert_int_equal(mem_table(t, bad_second, 2, 2), -EINVAL);
  assert_int_equal(vhu_live_mappings(), 0);
  for (uint32_t i = 0; i < VHU_MAX_MEM_REGIONS; i++)
    assert_int_equal(add_reg(t, (Reg){i * 0x1000ull, 0x1000, UVA0 + i * 0x1000ull, 0}), 0);
  assert_int_equal(add_reg(t, (Reg){0x100000, 0x1000, UVA0 + 0x100000, 0}), -ENOSPC);
  /* REM_MEM_REG */
  uint64_t rm[5] = {0, 0x3000, 0x1000, UVA0 + 0x3000, 0};
  assert_int_equal(msg(t, VHU_REM_MEM_REG, 0, rm, 40, NULL, 0), 0);
  assert_int_equal(vhu_live_mappings(), VHU_MAX_MEM_REGIONS - 1);
  assert_null(vhu_gpa_to_host(&t->dev, 0x3000, 1));
  assert_non_null(vhu_gpa_to_host(&t->dev, 0x4000, 1));
  assert_int_equal(msg(t, VHU_REM_MEM_REG, 0, rm, 40, NULL, 0), -ENOENT);
  vhu_dev_fini(&t->dev);
  assert_int_equal(vhu_live_mappings(), 0);
  assert_int_equal(count_fds(), before);
}

/* Removing the region under a running ring: the next pop fails cleanly. */
static void test_ring_memory_removed(void **state) {
  T *t = *state;
  negotiate(t, ALL_FEATURES);
  VhuElem *e = malloc(sizeof(*e));
  const char *why = NULL;
  /* an element in flight across a change of the table goes stale */
  put_desc(t, RING_GPA(0), 0, B_GPA, 8, F_WRITE, 0);
  offer(t, 0, 0);
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), 1);
  assert_true(vhu_elem_valid(&t->dev, e));
  assert_int_equal(add_reg(t, (Reg){0x200000, 0x1000, UVA0 + 0x200000, 0}), 0);
  assert_true(vhu_elem_valid(&t->dev, e)); /* adding maps, unmaps nothing */
  uint64_t rm[5] = {0, 0, A_SIZE, UVA0, 0};
  assert_int_equal(msg(t, VHU_REM_MEM_REG, 0, rm, 40, NULL, 0), 0);
  assert_false(vhu_elem_valid(&t->dev, e));
  assert_int_equal(vhu_vq_pop(&t->dev, 0, e, &why), -EFAULT);
  assert_false(vhu_vq_should_call(&t->dev, 0));
  assert_int_equal(vhu_vq_push(&t->dev, 0, 0, 0), -EINVAL);
  free(e);
}

static void test_too_many_fds(void **state) {
  T *t = *state;
  int before = count_fds();
  int fds[12];
  for (int i = 0; i < 12; i++)
    fds[i] = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(msg(t, VHU_SET_OWNER, 0, NULL, 0, fds, 12), -EINVAL);
  assert_int_equal(count_fds(), before);
  /* fds on a request that takes none */
  for (int i = 0; i < 2; i++)
    fds[i] = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(msg(t, VHU_GET_FEATURES, 0, NULL, 0, fds, 2), -EINVAL);
  assert_int_equal(t->res.reply_len, 0);
  assert_int_equal(count_fds(), before);
  /* SET_BACKEND_REQ_FD was never offered: refused, fd closed, acked 1 */
  fds[0] = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(msg(t, VHU_SET_BACKEND_REQ_FD, VHU_FLAG_NEED_REPLY, NULL, 0, fds, 1), -ENOTSUP);
  assert_int_equal(reply_u64(t, VHU_SET_BACKEND_REQ_FD), 1);
  assert_int_equal(count_fds(), before);
  /* a second display socket replaces (and closes) the first */
  fds[0] = eventfd(0, EFD_CLOEXEC);
  fds[1] = eventfd(0, EFD_CLOEXEC);
  assert_int_equal(msg(t, VHU_GPU_SET_SOCKET, 0, NULL, 0, &fds[0], 1), 0);
  assert_int_equal(msg(t, VHU_GPU_SET_SOCKET, 0, NULL, 0, &fds[1], 1), 0);
  assert_int_equal(count_fds(), before + 1);
  vhu_dev_fini(&t->dev);
  assert_int_equal(count_fds(), before);
}

/* Every request with one byte too many and one too few. */
static void test_wrong_payload_sizes(void **state) {
  T *t = *state;
  static const struct {
    uint32_t req, size;
  } sizes[] = {
      {VHU_GET_FEATURES, 0},          {VHU_SET_FEATURES, 8},   {VHU_SET_OWNER, 0},
      {VHU_RESET_OWNER, 0},           {VHU_SET_VRING_NUM, 8},  {VHU_SET_VRING_ADDR, 40},
      {VHU_SET_VRING_BASE, 8},        {VHU_GET_VRING_BASE, 8}, {VHU_SET_VRING_KICK, 8},
      {VHU_SET_VRING_CALL, 8},        {VHU_SET_VRING_ERR, 8},  {VHU_GET_PROTOCOL_FEATURES, 0},
      {VHU_SET_PROTOCOL_FEATURES, 8}, {VHU_GET_QUEUE_NUM, 0},  {VHU_SET_VRING_ENABLE, 8},
      {VHU_GPU_SET_SOCKET, 0},        {VHU_RESET_DEVICE, 0},   {VHU_GET_MAX_MEM_SLOTS, 0},
      {VHU_ADD_MEM_REG, 40},          {VHU_REM_MEM_REG, 40},   {VHU_SET_MEM_TABLE, 40},
      {VHU_GET_CONFIG, 28},           {VHU_SET_CONFIG, 28},
  };
  uint8_t p[VHU_MAX_PAYLOAD] = {0};
  uint32_t one = 1, sixteen = 16;
  memcpy(p, &one, 4); /* mem table: 1 region */
  int before = count_fds();
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    uint32_t req = sizes[i].req;
    if (req == VHU_GET_CONFIG || req == VHU_SET_CONFIG) {
      memset(p, 0, 12);
      memcpy(p + 4, &sixteen, 4);
    }
    for (int d = -1; d <= 1; d += 2) {
      if (sizes[i].size == 0 && d < 0)
        continue;
      uint32_t size = sizes[i].size + d;
      int fd = -1;
      size_t nfds = 0;
      if (req == VHU_GPU_SET_SOCKET || req == VHU_ADD_MEM_REG || req == VHU_SET_MEM_TABLE ||
          req == VHU_SET_VRING_KICK || req == VHU_SET_VRING_CALL || req == VHU_SET_VRING_ERR) {
        fd = dup(t->memfd);
        nfds = 1;
      }
      VhuHeader h = {req, VHU_FLAG_VERSION | VHU_FLAG_NEED_REPLY, size};
      int rc = vhu_dev_handle(&t->dev, &h, p, &fd, nfds, &t->res);
      if (rc != -EINVAL)
        fail_msg("%s with %u bytes: %d", vhu_request_name(req), size, rc);
      assert_non_null(t->res.why);
      /* the front-end that asked for a reply gets a failure, not silence */
      assert_int_equal(reply_u64(t, req), 1);
    }
  }
  assert_int_equal(count_fds(), before);
  assert_int_equal(vhu_live_mappings(), 0);
}

static void test_headers(void **state) {
  (void)state;
  const char *why = NULL;
  uint8_t raw[12] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  VhuHeader h;
  assert_int_equal(vhu_header_parse(raw, &h, &why), 0);
  assert_int_equal(h.request, 1);
  raw[4] = 2; /* version 2 */
  assert_int_equal(vhu_header_parse(raw, &h, &why), -EPROTO);
  raw[4] = 5; /* a reply */
  assert_int_equal(vhu_header_parse(raw, &h, &why), -EPROTO);
  raw[4] = 1;
  raw[9] = 0x10; /* 4096 bytes */
  assert_int_equal(vhu_header_parse(raw, &h, &why), -EPROTO);
  assert_non_null(why);
  raw[9] = 0;
  raw[8] = VHU_MAX_PAYLOAD & 0xff;
  raw[9] = VHU_MAX_PAYLOAD >> 8;
  assert_int_equal(vhu_header_parse(raw, &h, &why), 0);
}

static void test_config_space(void **state) {
  T *t = *state;
  uint32_t c[7] = {8, 8, 0};
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 20, NULL, 0), 0);
  uint32_t out[10];
  memcpy(out, t->res.reply, 32);
  assert_int_equal(out[2], 20);
  assert_int_equal(out[6], 1); /* num_scanouts */
  assert_int_equal(out[7], 2); /* num_capsets */
  vhu_dev_config_raise(&t->dev, VHU_GPU_EVENT_DISPLAY);
  vhu_dev_config_set_counts(&t->dev, 2, 0);
  c[0] = 0;
  c[1] = 16;
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 28, NULL, 0), 0);
  memcpy(out, t->res.reply, 40);
  assert_int_equal(out[3 + 3], VHU_GPU_EVENT_DISPLAY);
  /* SET_CONFIG as QEMU sends it: the whole struct with events_clear */
  uint32_t s[7] = {0, 16, 0, 0, VHU_GPU_EVENT_DISPLAY, 7, 7};
  assert_int_equal(msg(t, VHU_SET_CONFIG, 0, s, 28, NULL, 0), 0);
  assert_true(t->res.actions & VHU_ACT_CONFIG);
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 28, NULL, 0), 0);
  memcpy(out, t->res.reply, 40);
  assert_int_equal(out[6], 0);
  assert_int_equal(out[3 + 5], 2); /* num_scanouts unchanged by the write */
  c[0] = 12;
  c[1] = 8; /* past the 16 bytes */
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 20, NULL, 0), -EINVAL);
  assert_int_equal(t->res.reply_len, 0);
  c[0] = 0xfffffffc;
  c[1] = 8;
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 20, NULL, 0), -EINVAL);
  c[0] = 0;
  c[1] = 4;
  c[2] = 2; /* unknown flags */
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, c, 16, NULL, 0), -EINVAL);
  uint8_t huge[VHU_MAX_PAYLOAD] = {0};
  uint32_t n = 300;
  memcpy(huge + 4, &n, 4);
  assert_int_equal(msg(t, VHU_GET_CONFIG, 0, huge, VHU_MAX_PAYLOAD, NULL, 0), -EINVAL);
}

static void test_unsupported_requests(void **state) {
  T *t = *state;
  uint64_t v = 0;
  assert_int_equal(msg(t, VHU_SET_LOG_BASE, 0, &v, 8, NULL, 0), -ENOTSUP);
  assert_int_equal(t->res.reply_len, 0);
  assert_int_equal(msg(t, 99, VHU_FLAG_NEED_REPLY, NULL, 0, NULL, 0), -ENOTSUP);
  assert_int_equal(reply_u64(t, 99), 1);
  assert_string_equal(vhu_request_name(99), "unknown");
  assert_string_equal(vhu_request_name(VHU_GPU_SET_SOCKET), "GPU_SET_SOCKET");
  /* LOG_ALL cannot be honoured */
  assert_int_equal(set_u64(t, VHU_SET_FEATURES, 0, 1ull << VHU_F_LOG_ALL, NULL, 0), -ENOTSUP);
  /* without PROTOCOL_FEATURES the rings start enabled */
  assert_int_equal(set_u64(t, VHU_SET_FEATURES, 0, 1ull << VHU_F_VERSION_1, NULL, 0), 0);
  assert_true(t->dev.vq[0].enabled);
  /* bad configs */
  VhuDev d;
  VhuDevConfig bad = {.num_queues = 3};
  assert_int_equal(vhu_dev_init(&d, &bad), -EINVAL);
  bad = (VhuDevConfig){.num_queues = 2, .gpu_features = 1ull << 30};
  assert_int_equal(vhu_dev_init(&d, &bad), -EINVAL);
  assert_int_equal(vhu_dev_init(&d, NULL), -EINVAL);
  vhu_dev_fini(&d);
}

/* The older path: SET_MEM_TABLE when CONFIGURE_MEM_SLOTS is not acked,
 * with REPLY_ACK's NEED_REPLY answered. */
static void test_mem_table_path(void **state) {
  T *t = *state;
  Reg r[2] = {reg_a, reg_b};
  uint8_t p[8 + 64] = {0};
  uint32_t n = 2;
  memcpy(p, &n, 4);
  memcpy(p + 8, r, 64);
  int fds[2] = {dup(t->memfd), dup(t->memfd)};
  assert_int_equal(msg(t, VHU_SET_MEM_TABLE, VHU_FLAG_NEED_REPLY, p, sizeof(p), fds, 2), 0);
  assert_int_equal(reply_u64(t, VHU_SET_MEM_TABLE), 0);
  assert_true(same_byte(vhu_gpa_to_host(&t->dev, B_GPA + 5, 1), t->mem + A_SIZE + 5));
  assert_true(same_byte(vhu_uva_to_host(&t->dev, UVA0 + 7, 1), t->mem + 7));
  assert_null(vhu_uva_to_host(&t->dev, UVA0 + A_SIZE, 1)); /* the hole */
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T_(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
      T_(test_negotiation_and_direct_chain),
      T_(test_event_idx_and_flags_suppression),
      T_(test_flags_suppression_without_event_idx),
      T_(test_indirect_chain),
      T_(test_descriptor_across_adjacent_regions),
      T_(test_hostile_outside),
      T_(test_hostile_straddle),
      T_(test_hostile_huge_len),
      T_(test_hostile_wrapping_addr),
      T_(test_hostile_loop),
      T_(test_hostile_indirect_loop),
      T_(test_hostile_nested_indirect),
      T_(test_hostile_indirect_next),
      T_(test_hostile_indirect_size),
      T_(test_hostile_indirect_huge),
      T_(test_hostile_indirect_outside),
      T_(test_hostile_indirect_not_head),
      T_(test_hostile_too_many_pieces),
      T_(test_hostile_next_range),
      T_(test_hostile_head_range),
      T_(test_hostile_avail_jump),
      T_(test_hostile_read_after_write),
      T_(test_indirect_needs_feature),
      T_(test_stop_resume_reset),
      T_(test_bad_ring_setup),
      T_(test_ring_misaligned_in_mapping),
      T_(test_bad_memory_tables),
      T_(test_ring_memory_removed),
      T_(test_too_many_fds),
      T_(test_wrong_payload_sizes),
      T_(test_config_space),
      T_(test_unsupported_requests),
      T_(test_mem_table_path),
      cmocka_unit_test(test_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
