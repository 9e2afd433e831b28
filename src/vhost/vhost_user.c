/* vhost-user back-end protocol core: message handling, guest memory table
 * and the split virtqueue.  See vhost_user.h for the contract. */
#include "vhost/vhost_user.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Split ring layout (virtio 1.x, little-endian). */
struct VhuDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct VhuAvail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[];
};
struct VhuUsedElem {
  uint32_t id;
  uint32_t len;
};
struct VhuUsed {
  uint16_t flags;
  uint16_t idx;
  struct VhuUsedElem ring[];
};

#define DESC_F_NEXT 1u
#define DESC_F_WRITE 2u
#define DESC_F_INDIRECT 4u
#define AVAIL_F_NO_INTERRUPT 1u

/* Wire payloads. */
typedef struct {
  uint32_t index;
  uint32_t num;
} WireState;
typedef struct {
  uint32_t index;
  uint32_t flags;
  uint64_t desc, used, avail, log;
} WireAddr;
typedef struct {
  uint64_t gpa, size, uva, mmap_offset;
} WireRegion;

static unsigned long live_mappings;

unsigned long vhu_live_mappings(void) {
  return __atomic_load_n(&live_mappings, __ATOMIC_RELAXED);
}

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

const char *vhu_request_name(uint32_t r) {
  switch (r) {
  case VHU_GET_FEATURES:
    return "GET_FEATURES";
  case VHU_SET_FEATURES:
    return "SET_FEATURES";
  case VHU_SET_OWNER:
    return "SET_OWNER";
  case VHU_RESET_OWNER:
    return "RESET_OWNER";
  case VHU_SET_MEM_TABLE:
    return "SET_MEM_TABLE";
  case VHU_SET_LOG_BASE:
    return "SET_LOG_BASE";
  case VHU_SET_LOG_FD:
    return "SET_LOG_FD";
  case VHU_SET_VRING_NUM:
    return "SET_VRING_NUM";
  case VHU_SET_VRING_ADDR:
    return "SET_VRING_ADDR";
  case VHU_SET_VRING_BASE:
    return "SET_VRING_BASE";
  case VHU_GET_VRING_BASE:
    return "GET_VRING_BASE";
  case VHU_SET_VRING_KICK:
    return "SET_VRING_KICK";
  case VHU_SET_VRING_CALL:
    return "SET_VRING_CALL";
  case VHU_SET_VRING_ERR:
    return "SET_VRING_ERR";
  case VHU_GET_PROTOCOL_FEATURES:
    return "GET_PROTOCOL_FEATURES";
  case VHU_SET_PROTOCOL_FEATURES:
    return "SET_PROTOCOL_FEATURES";
  case VHU_GET_QUEUE_NUM:
    return "GET_QUEUE_NUM";
  case VHU_SET_VRING_ENABLE:
    return "SET_VRING_ENABLE";
  case VHU_SET_BACKEND_REQ_FD:
    return "SET_BACKEND_REQ_FD";
  case VHU_GET_CONFIG:
    return "GET_CONFIG";
  case VHU_SET_CONFIG:
    return "SET_CONFIG";
  case VHU_GPU_SET_SOCKET:
    return "GPU_SET_SOCKET";
  case VHU_RESET_DEVICE:
    return "RESET_DEVICE";
  case VHU_GET_MAX_MEM_SLOTS:
    return "GET_MAX_MEM_SLOTS";
  case VHU_ADD_MEM_REG:
    return "ADD_MEM_REG";
  case VHU_REM_MEM_REG:
    return "REM_MEM_REG";
  default:
    return "unknown";
  }
}

/* ---- guest memory ---------------------------------------------------- */

static void region_unmap(VhuRegion *r) {
  if (r->map_base) {
    munmap(r->map_base, r->map_len);
    __atomic_fetch_sub(&live_mappings, 1, __ATOMIC_RELAXED);
  }
  memset(r, 0, sizeof(*r));
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  /* both ranges non-empty and end-overflow-free (checked before) */
  return a < b + blen && b < a + alen;
}

/* Checks a region against itself and against @regions[0, n). */
static int region_check(const WireRegion *w, const VhuRegion *regions, uint32_t n,
                        const char **why) {
  uint64_t end;
  if (w->size == 0) {
    *why = "memory region of size 0";
    return -EINVAL;
  }
  if (__builtin_add_overflow(w->gpa, w->size, &end) ||
      __builtin_add_overflow(w->uva, w->size, &end) ||
      __builtin_add_overflow(w->mmap_offset, w->size, &end) || end > (uint64_t)INT64_MAX) {
    *why = "memory region wraps around the address space";
    return -EINVAL;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (ranges_overlap(w->gpa, w->size, regions[i].gpa, regions[i].size)) {
      *why = "memory regions overlap in guest-physical space";
      return -EINVAL;
    }
    if (ranges_overlap(w->uva, w->size, regions[i].uva, regions[i].size)) {
      *why = "memory regions overlap in front-end address space";
      return -EINVAL;
    }
  }
  return 0;
}

/* Maps a checked region.  Only the pages the region covers are mapped,
 * from the file offset rounded down to the file's block (page or huge
 * page) size.  The file must really hold the region: a mapping past the
 * end of a memfd would fault (SIGBUS) on the first guest access. */
static int region_map(VhuRegion *r, const WireRegion *w, int fd, const char **why) {
  struct stat st;
  if (fstat(fd, &st) < 0) {
    *why = "memory region fd cannot be examined";
    return -errno;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = "memory region fd is not a shared memory file";
    return -EINVAL;
  }
  uint64_t end = w->mmap_offset + w->size; /* checked in region_check */
  if (st.st_size < 0 || (uint64_t)st.st_size < end) {
    *why = "memory region reaches past the end of its file";
    return -EINVAL;
  }
  uint64_t align = (uint64_t)sysconf(_SC_PAGESIZE);
  if (st.st_blksize > 0 && (uint64_t)st.st_blksize > align &&
      (uint64_t)st.st_blksize <= (1ull << 30) &&
      ((uint64_t)st.st_blksize & ((uint64_t)st.st_blksize - 1)) == 0)
    align = (uint64_t)st.st_blksize;
  uint64_t off = w->mmap_offset & ~(align - 1);
  uint64_t delta = w->mmap_offset - off;
  uint64_t len = delta + w->size;
  if (len > (uint64_t)SIZE_MAX - align) {
    *why = "memory region too large to map";
    return -EINVAL;
  }
  len = (len + align - 1) & ~(align - 1);
  void *p =
      mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, (off_t)off);
  if (p == MAP_FAILED) {
    *why = "memory region cannot be mapped";
    return -errno;
  }
  __atomic_fetch_add(&live_mappings, 1, __ATOMIC_RELAXED);
  r->gpa = w->gpa;
  r->size = w->size;
  r->uva = w->uva;
  r->mmap_offset = w->mmap_offset;
  r->map_base = p;
  r->map_len = (size_t)len;
  r->host = (uint8_t *)p + delta;
  return 0;
}

void *vhu_gpa_to_host(const VhuDev *dev, uint64_t gpa, uint64_t len) {
  for (uint32_t i = 0; i < dev->nregions; i++) {
    const VhuRegion *r = &dev->regions[i];
    if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
      return r->host + (gpa - r->gpa);
  }
  return NULL;
}

void *vhu_uva_to_host(const VhuDev *dev, uint64_t uva, uint64_t len) {
  for (uint32_t i = 0; i < dev->nregions; i++) {
    const VhuRegion *r = &dev->regions[i];
    if (uva >= r->uva && uva - r->uva < r->size && len <= r->size - (uva - r->uva))
      return r->host + (uva - r->uva);
  }
  return NULL;
}

int vhu_gpa_to_iov(const VhuDev *dev, uint64_t gpa, uint64_t len, struct iovec *iov, unsigned max,
                   unsigned *n) {
  uint64_t end;
  if (__builtin_add_overflow(gpa, len, &end))
    return -EFAULT;
  while (len > 0) {
    const VhuRegion *r = NULL;
    for (uint32_t i = 0; i < dev->nregions; i++) {
      if (gpa >= dev->regions[i].gpa && gpa - dev->regions[i].gpa < dev->regions[i].size) {
        r = &dev->regions[i];
        break;
      }
    }
    if (!r)
      return -EFAULT;
    if (*n >= max)
      return -E2BIG;
    uint64_t off = gpa - r->gpa;
    uint64_t piece = r->size - off;
    if (piece > len)
      piece = len;
    if (piece > SIZE_MAX)
      return -EFAULT;
    iov[*n].iov_base = r->host + off;
    iov[*n].iov_len = (size_t)piece;
    (*n)++;
    gpa += piece;
    len -= piece;
  }
  return 0;
}

/* ---- rings ----------------------------------------------------------- */

static size_t avail_bytes(uint32_t num) {
  return 4 + 2 * (size_t)num + 2; /* flags, idx, ring, used_event */
}
static size_t used_bytes(uint32_t num) {
  return 4 + 8 * (size_t)num + 2; /* flags, idx, ring, avail_event */
}

/* Translates the ring addresses through the current memory table. */
static bool vq_map(VhuDev *dev, VhuQueue *vq) {
  vq->mapped = false;
  vq->desc = NULL;
  vq->avail = NULL;
  vq->used = NULL;
  if (!vq->addr_set || vq->num == 0)
    return false;
  void *d = vhu_uva_to_host(dev, vq->desc_uva, 16 * (uint64_t)vq->num);
  void *a = vhu_uva_to_host(dev, vq->avail_uva, avail_bytes(vq->num));
  void *u = vhu_uva_to_host(dev, vq->used_uva, used_bytes(vq->num));
  /* The front-end's addresses were checked for alignment; a region whose
   * front-end address and file offset disagree modulo 16 would still give
   * misaligned host pointers. */
  if (!d || !a || !u || ((uintptr_t)d & 15) || ((uintptr_t)a & 1) || ((uintptr_t)u & 3))
    return false;
  vq->desc = d;
  vq->avail = a;
  vq->used = u;
  vq->mapped = true;
  return true;
}

static void vq_remap_all(VhuDev *dev) {
  for (uint32_t q = 0; q < dev->cfg.num_queues; q++)
    vq_map(dev, &dev->vq[q]);
}

static void vq_init(VhuQueue *vq) {
  memset(vq, 0, sizeof(*vq));
  vq->kick_fd = vq->call_fd = vq->err_fd = -1;
}

static void vq_reset(VhuQueue *vq) {
  close_fd(&vq->kick_fd);
  close_fd(&vq->call_fd);
  close_fd(&vq->err_fd);
  vq_init(vq);
}

static void mem_clear(VhuDev *dev) {
  for (uint32_t i = 0; i < dev->nregions; i++)
    region_unmap(&dev->regions[i]);
  if (dev->nregions)
    dev->mem_gen++;
  dev->nregions = 0;
}

/* ---- device ---------------------------------------------------------- */

int vhu_dev_init(VhuDev *dev, const VhuDevConfig *cfg) {
  memset(dev, 0, sizeof(*dev));
  dev->display_fd = -1;
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++)
    vq_init(&dev->vq[q]);
  if (!cfg || cfg->num_queues == 0 || cfg->num_queues > VHU_MAX_QUEUES ||
      (cfg->gpu_features & ~VHU_GPU_FEATURE_MASK) || cfg->num_scanouts > 16)
    return -EINVAL;
  dev->cfg = *cfg;
  dev->features_offered = (1ull << VHU_F_VERSION_1) | (1ull << VHU_F_PROTOCOL_FEATURES) |
                          (1ull << VHU_F_INDIRECT_DESC) | (1ull << VHU_F_EVENT_IDX) |
                          (1ull << VHU_F_NOTIFY_ON_EMPTY) | cfg->gpu_features;
  return 0;
}

void vhu_dev_fini(VhuDev *dev) {
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++)
    vq_reset(&dev->vq[q]);
  mem_clear(dev);
  close_fd(&dev->display_fd);
}

bool vhu_dev_has_feature(const VhuDev *dev, unsigned bit) {
  return bit < 64 && (dev->features >> bit) & 1;
}

bool vhu_dev_has_protocol_feature(const VhuDev *dev, unsigned bit) {
  return bit < 64 && (dev->protocol_features >> bit) & 1;
}

int vhu_dev_take_display_fd(VhuDev *dev) {
  int fd = dev->display_fd;
  dev->display_fd = -1;
  return fd;
}

void vhu_dev_config_raise(VhuDev *dev, uint32_t events) {
  dev->events_read |= events;
}

void vhu_dev_config_set_counts(VhuDev *dev, uint32_t num_scanouts, uint32_t num_capsets) {
  dev->cfg.num_scanouts = num_scanouts;
  dev->cfg.num_capsets = num_capsets;
}

int vhu_header_check(const VhuHeader *hdr, const char **why) {
  if ((hdr->flags & VHU_FLAG_VERSION_MASK) != VHU_FLAG_VERSION) {
    *why = "unsupported protocol version in header";
    return -EPROTO;
  }
  if (hdr->flags & VHU_FLAG_REPLY) {
    *why = "reply flag set on a request";
    return -EPROTO;
  }
  if (hdr->size > VHU_MAX_PAYLOAD) {
    *why = "payload larger than any request";
    return -EPROTO;
  }
  return 0;
}

int vhu_header_parse(const uint8_t raw[VHU_HDR_SIZE], VhuHeader *hdr, const char **why) {
  memcpy(&hdr->request, raw, 4);
  memcpy(&hdr->flags, raw + 4, 4);
  memcpy(&hdr->size, raw + 8, 4);
  return vhu_header_check(hdr, why);
}

/* ---- message handling ------------------------------------------------ */

typedef struct {
  VhuDev *dev;
  const VhuHeader *hdr;
  const uint8_t *p;
  int fds[VHU_MAX_FDS]; /* taken ones are set to -1 */
  size_t nfds;
  VhuResult *res;
  bool replied;
} Msg;

static void reply(Msg *m, const void *data, uint32_t len) {
  uint32_t h[3] = {m->hdr->request, VHU_FLAG_VERSION | VHU_FLAG_REPLY, len};
  memcpy(m->res->reply, h, VHU_HDR_SIZE);
  if (len)
    memcpy(m->res->reply + VHU_HDR_SIZE, data, len);
  m->res->reply_len = VHU_HDR_SIZE + len;
  m->replied = true;
}

static void reply_u64(Msg *m, uint64_t v) {
  reply(m, &v, 8);
}

static int fail(Msg *m, int err, const char *why) {
  m->res->why = why;
  return err;
}

static int expect_size(Msg *m, uint32_t size) {
  if (m->hdr->size != size)
    return fail(m, -EINVAL, "payload size wrong for this request");
  return 0;
}

static int expect_fds(Msg *m, size_t n) {
  if (m->nfds != n)
    return fail(m, -EINVAL, n ? "request without the fd it needs" : "unexpected fds with request");
  return 0;
}

static uint64_t get_u64(const Msg *m) {
  uint64_t v;
  memcpy(&v, m->p, 8);
  return v;
}

static int take_fd(Msg *m, size_t i) {
  int fd = m->fds[i];
  m->fds[i] = -1;
  return fd;
}

static int get_queue(Msg *m, uint32_t index, VhuQueue **vq) {
  if (index >= m->dev->cfg.num_queues)
    return fail(m, -EINVAL, "ring index out of range");
  *vq = &m->dev->vq[index];
  return 0;
}

static void all_rings(Msg *m, uint32_t actions) {
  m->res->actions |= actions;
  m->res->ring_mask |= (1u << m->dev->cfg.num_queues) - 1;
}

static void ring_action(Msg *m, uint32_t index, uint32_t actions) {
  m->res->actions |= actions;
  m->res->ring_mask |= 1u << index;
}

/* RESET_DEVICE (and the deprecated RESET_OWNER): rings and features back
 * to their initial state.  The memory table stays: a front-end that
 * tracks which regions it sent (CONFIGURE_MEM_SLOTS) does not send them
 * again, and the mappings are still the front-end's memory. */
static void dev_reset(Msg *m) {
  VhuDev *dev = m->dev;
  for (unsigned q = 0; q < VHU_MAX_QUEUES; q++)
    vq_reset(&dev->vq[q]);
  dev->features = 0;
  dev->features_set = false;
  dev->events_read = 0;
  all_rings(m, VHU_ACT_RESET | VHU_ACT_RING_STOPPED | VHU_ACT_KICK_FD);
}

static int h_set_features(Msg *m) {
  int rc = expect_size(m, 8);
  if (rc < 0)
    return rc;
  uint64_t f = get_u64(m);
  /* Unknown bits are tolerated (QEMU passes the guest's features, e.g.
   * RING_RESET, through unfiltered); dirty logging cannot be done. */
  if (f & (1ull << VHU_F_LOG_ALL))
    return fail(m, -ENOTSUP, "dirty page logging (LOG_ALL) is not supported");
  m->dev->features = f;
  m->dev->features_set = true;
  if (!(f & (1ull << VHU_F_PROTOCOL_FEATURES))) {
    /* Without protocol features every ring starts enabled. */
    for (uint32_t q = 0; q < m->dev->cfg.num_queues; q++)
      m->dev->vq[q].enabled = true;
  }
  m->res->actions |= VHU_ACT_FEATURES;
  return 0;
}

static int h_mem_table(Msg *m) {
  VhuDev *dev = m->dev;
  if (m->hdr->size < 8)
    return fail(m, -EINVAL, "payload size wrong for this request");
  uint32_t n;
  memcpy(&n, m->p, 4);
  if (n == 0 || n > VHU_MAX_TABLE_REGIONS)
    return fail(m, -EINVAL, "memory table region count out of range");
  if (m->hdr->size != 8 + n * sizeof(WireRegion))
    return fail(m, -EINVAL, "payload size wrong for this request");
  if (m->nfds != n)
    return fail(m, -EINVAL, "memory table needs one fd per region");
  WireRegion w[VHU_MAX_TABLE_REGIONS];
  memcpy(w, m->p + 8, n * sizeof(WireRegion));
  /* Validate the whole new table before touching the old one. */
  VhuRegion tmp[VHU_MAX_TABLE_REGIONS];
  memset(tmp, 0, sizeof(tmp));
  for (uint32_t i = 0; i < n; i++) {
    const char *why = NULL;
    if (region_check(&w[i], tmp, i, &why) < 0)
      return fail(m, -EINVAL, why);
    tmp[i].gpa = w[i].gpa;
    tmp[i].size = w[i].size;
    tmp[i].uva = w[i].uva;
  }
  mem_clear(dev);
  m->res->actions |= VHU_ACT_MEM_CHANGED;
  for (uint32_t i = 0; i < n; i++) {
    const char *why = NULL;
    int rc = region_map(&dev->regions[i], &w[i], m->fds[i], &why);
    if (rc < 0) {
      mem_clear(dev);
      vq_remap_all(dev);
      return fail(m, rc, why);
    }
    dev->nregions = i + 1;
  }
  vq_remap_all(dev);
  return 0;
}

static int h_add_mem_reg(Msg *m) {
  VhuDev *dev = m->dev;
  int rc = expect_size(m, 8 + sizeof(WireRegion));
  if (rc < 0 || (rc = expect_fds(m, 1)) < 0)
    return rc;
  if (dev->nregions >= VHU_MAX_MEM_REGIONS)
    return fail(m, -ENOSPC, "no free memory slot");
  WireRegion w;
  memcpy(&w, m->p + 8, sizeof(w));
  const char *why = NULL;
  if (region_check(&w, dev->regions, dev->nregions, &why) < 0)
    return fail(m, -EINVAL, why);
  if ((rc = region_map(&dev->regions[dev->nregions], &w, m->fds[0], &why)) < 0)
    return fail(m, rc, why);
  dev->nregions++;
  m->res->actions |= VHU_ACT_MEM_CHANGED;
  vq_remap_all(dev);
  return 0;
}

static int h_rem_mem_reg(Msg *m) {
  VhuDev *dev = m->dev;
  int rc = expect_size(m, 8 + sizeof(WireRegion));
  if (rc < 0)
    return rc;
  if (m->nfds > 1)
    return fail(m, -EINVAL, "unexpected fds with request");
  WireRegion w;
  memcpy(&w, m->p + 8, sizeof(w));
  for (uint32_t i = 0; i < dev->nregions; i++) {
    VhuRegion *r = &dev->regions[i];
    if (r->gpa == w.gpa && r->size == w.size && r->uva == w.uva) {
      region_unmap(r);
      dev->mem_gen++;
      dev->regions[i] = dev->regions[dev->nregions - 1];
      memset(&dev->regions[dev->nregions - 1], 0, sizeof(VhuRegion));
      dev->nregions--;
      m->res->actions |= VHU_ACT_MEM_CHANGED;
      vq_remap_all(dev);
      return 0;
    }
  }
  return fail(m, -ENOENT, "no such memory region");
}

/* A ring-state payload (ring index, number) and the ring it names. */
static int state_queue(Msg *m, WireState *s, VhuQueue **vq) {
  int rc = expect_size(m, 8);
  if (rc < 0)
    return rc;
  memcpy(s, m->p, 8);
  return get_queue(m, s->index, vq);
}

static int h_vring_num(Msg *m) {
  WireState s;
  VhuQueue *vq;
  int rc = state_queue(m, &s, &vq);
  if (rc < 0)
    return rc;
  if (vq->started)
    return fail(m, -EBUSY, "ring size changed while the ring runs");
  if (s.num == 0 || s.num > VHU_MAX_QUEUE_SIZE || (s.num & (s.num - 1)))
    return fail(m, -EINVAL, "ring size not a power of two up to 32768");
  vq->num = s.num;
  vq_map(m->dev, vq);
  return 0;
}

static int h_vring_addr(Msg *m) {
  int rc = expect_size(m, sizeof(WireAddr));
  if (rc < 0)
    return rc;
  WireAddr a;
  memcpy(&a, m->p, sizeof(a));
  VhuQueue *vq;
  if ((rc = get_queue(m, a.index, &vq)) < 0)
    return rc;
  if (a.flags & 1u)
    return fail(m, -ENOTSUP, "ring logging is not supported");
  if ((a.desc & 15) || (a.avail & 1) || (a.used & 3))
    return fail(m, -EINVAL, "ring address misaligned");
  if (vq->num == 0)
    return fail(m, -EINVAL, "ring address before ring size");
  vq->desc_uva = a.desc;
  vq->avail_uva = a.avail;
  vq->used_uva = a.used;
  vq->addr_set = true;
  if (!vq_map(m->dev, vq)) {
    vq->addr_set = false;
    return fail(m, -EFAULT, "ring outside the memory table or misaligned in it");
  }
  if (!vq->started) {
    /* Continue the used ring where the guest sees it; last_avail stays
     * what SET_VRING_BASE said (chains popped but never returned before a
     * stop are not offered again). */
    vq->used_idx = __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE);
    vq->inflight = 0;
    vq->signalled_used_valid = false;
  }
  return 0;
}

static int h_vring_base(Msg *m) {
  WireState s;
  VhuQueue *vq;
  int rc = state_queue(m, &s, &vq);
  if (rc < 0)
    return rc;
  if (vq->started)
    return fail(m, -EBUSY, "ring base changed while the ring runs");
  if (s.num > 0xffff)
    return fail(m, -EINVAL, "ring base beyond 16 bits (packed rings are not supported)");
  vq->last_avail = vq->used_idx = (uint16_t)s.num;
  vq->inflight = 0;
  vq->signalled_used_valid = false;
  return 0;
}

static int h_get_vring_base(Msg *m) {
  WireState s;
  VhuQueue *vq;
  int rc = state_queue(m, &s, &vq);
  if (rc < 0)
    return rc;
  vq->started = false;
  vq->kick_set = false;
  close_fd(&vq->kick_fd);
  vq->broken = false;
  ring_action(m, s.index, VHU_ACT_RING_STOPPED | VHU_ACT_KICK_FD);
  WireState r = {s.index, vq->last_avail};
  reply(m, &r, sizeof(r));
  return 0;
}

/* KICK, CALL, ERR: u64 with the ring index and the NOFD bit. */
static int h_vring_fd(Msg *m) {
  int rc = expect_size(m, 8);
  if (rc < 0)
    return rc;
  uint64_t v = get_u64(m);
  if (v & ~(uint64_t)(VHU_VRING_IDX_MASK | VHU_VRING_NOFD))
    return fail(m, -EINVAL, "unknown bits in ring fd request");
  uint32_t index = (uint32_t)(v & VHU_VRING_IDX_MASK);
  bool nofd = v & VHU_VRING_NOFD;
  VhuQueue *vq;
  if ((rc = get_queue(m, index, &vq)) < 0)
    return rc;
  if ((rc = expect_fds(m, nofd ? 0 : 1)) < 0)
    return rc;
  int fd = nofd ? -1 : take_fd(m, 0);
  switch (m->hdr->request) {
  case VHU_SET_VRING_KICK:
    close_fd(&vq->kick_fd);
    vq->kick_fd = fd;
    vq->kick_set = true;
    vq->started = true;
    vq->broken = false;
    ring_action(m, index, VHU_ACT_KICK_FD | VHU_ACT_RING_STARTED);
    break;
  case VHU_SET_VRING_CALL:
    close_fd(&vq->call_fd);
    vq->call_fd = fd;
    vq->signalled_used_valid = false;
    break;
  default:
    close_fd(&vq->err_fd);
    vq->err_fd = fd;
    break;
  }
  return 0;
}

static int h_vring_enable(Msg *m) {
  WireState s;
  VhuQueue *vq;
  int rc = state_queue(m, &s, &vq);
  if (rc < 0)
    return rc;
  if (s.num > 1)
    return fail(m, -EINVAL, "ring enable value not 0 or 1");
  vq->enabled = s.num == 1;
  ring_action(m, s.index, VHU_ACT_RING_ENABLE);
  return 0;
}

static void config_bytes(const VhuDev *dev, uint8_t out[VHU_GPU_CONFIG_SIZE]) {
  uint32_t c[4] = {dev->events_read, 0, dev->cfg.num_scanouts, dev->cfg.num_capsets};
  memcpy(out, c, sizeof(c));
}

static int config_check(Msg *m, uint32_t *off, uint32_t *size) {
  if (m->hdr->size < 12)
    return fail(m, -EINVAL, "payload size wrong for this request");
  uint32_t flags;
  memcpy(off, m->p, 4);
  memcpy(size, m->p + 4, 4);
  memcpy(&flags, m->p + 8, 4);
  if (*size > VHU_MAX_CONFIG_DATA || m->hdr->size != 12 + *size)
    return fail(m, -EINVAL, "config payload size does not match its length field");
  if ((uint64_t)*off + *size > VHU_GPU_CONFIG_SIZE)
    return fail(m, -EINVAL, "config access outside the 16-byte config space");
  if (flags > 1)
    return fail(m, -EINVAL, "unknown config flags");
  return 0;
}

static int h_get_config(Msg *m) {
  uint32_t off, size;
  int rc = config_check(m, &off, &size);
  if (rc < 0)
    return rc;
  uint8_t cfg[VHU_GPU_CONFIG_SIZE];
  uint8_t out[VHU_MAX_PAYLOAD];
  config_bytes(m->dev, cfg);
  memcpy(out, m->p, 12);
  memcpy(out + 12, cfg + off, size);
  reply(m, out, 12 + size);
  return 0;
}

static int h_set_config(Msg *m) {
  uint32_t off, size;
  int rc = config_check(m, &off, &size);
  if (rc < 0)
    return rc;
  /* Only events_clear (bytes 4..7) is writable; QEMU writes the whole
   * struct, so other bytes are ignored. */
  if (off <= 4 && off + size >= 8) {
    uint32_t clear;
    memcpy(&clear, m->p + 12 + (4 - off), 4);
    m->dev->events_read &= ~clear;
    m->res->actions |= VHU_ACT_CONFIG;
  }
  return 0;
}

static int h_gpu_set_socket(Msg *m) {
  int rc = expect_size(m, 0);
  if (rc < 0 || (rc = expect_fds(m, 1)) < 0)
    return rc;
  close_fd(&m->dev->display_fd);
  m->dev->display_fd = take_fd(m, 0);
  m->res->actions |= VHU_ACT_DISPLAY_FD;
  return 0;
}

static int dispatch(Msg *m) {
  VhuDev *dev = m->dev;
  int rc;
  switch (m->hdr->request) {
  case VHU_GET_FEATURES:
    if ((rc = expect_size(m, 0)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    reply_u64(m, dev->features_offered);
    return 0;
  case VHU_SET_FEATURES:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_set_features(m);
  case VHU_SET_OWNER:
    if ((rc = expect_size(m, 0)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    dev->owner = true;
    return 0;
  case VHU_RESET_OWNER:
  case VHU_RESET_DEVICE:
    if ((rc = expect_size(m, 0)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    dev_reset(m);
    return 0;
  case VHU_SET_MEM_TABLE:
    return h_mem_table(m);
  case VHU_SET_VRING_NUM:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_vring_num(m);
  case VHU_SET_VRING_ADDR:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_vring_addr(m);
  case VHU_SET_VRING_BASE:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_vring_base(m);
  case VHU_GET_VRING_BASE:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_get_vring_base(m);
  case VHU_SET_VRING_KICK:
  case VHU_SET_VRING_CALL:
  case VHU_SET_VRING_ERR:
    return h_vring_fd(m);
  case VHU_GET_PROTOCOL_FEATURES:
    if ((rc = expect_size(m, 0)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    reply_u64(m, VHU_PROTOCOL_FEATURES);
    return 0;
  case VHU_SET_PROTOCOL_FEATURES:
    if ((rc = expect_size(m, 8)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    /* Bits never offered are not acked, whatever the front-end claims. */
    dev->protocol_features = get_u64(m) & VHU_PROTOCOL_FEATURES;
    return 0;
  case VHU_GET_QUEUE_NUM:
    if ((rc = expect_size(m, 0)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    reply_u64(m, dev->cfg.num_queues);
    return 0;
  case VHU_SET_VRING_ENABLE:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_vring_enable(m);
  case VHU_GET_CONFIG:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_get_config(m);
  case VHU_SET_CONFIG:
    if ((rc = expect_fds(m, 0)) < 0)
      return rc;
    return h_set_config(m);
  case VHU_GPU_SET_SOCKET:
    return h_gpu_set_socket(m);
  case VHU_GET_MAX_MEM_SLOTS:
    if ((rc = expect_size(m, 0)) < 0 || (rc = expect_fds(m, 0)) < 0)
      return rc;
    reply_u64(m, VHU_MAX_MEM_REGIONS);
    return 0;
  case VHU_ADD_MEM_REG:
    return h_add_mem_reg(m);
  case VHU_REM_MEM_REG:
    return h_rem_mem_reg(m);
  case VHU_SET_LOG_BASE:
  case VHU_SET_LOG_FD:
    return fail(m, -ENOTSUP, "dirty page logging is not supported");
  case VHU_SET_BACKEND_REQ_FD:
    return fail(m, -ENOTSUP, "back-end requests were not offered");
  default:
    return fail(m, -ENOTSUP, "request not supported");
  }
}

int vhu_dev_handle(VhuDev *dev, const VhuHeader *hdr, const void *payload, const int *fds,
                   size_t nfds, VhuResult *res) {
  memset(res, 0, sizeof(*res));
  Msg m = {.dev = dev, .hdr = hdr, .p = payload, .res = res};
  if (nfds > VHU_MAX_FDS) {
    for (size_t i = 0; i < nfds; i++)
      if (fds[i] >= 0)
        close(fds[i]);
    res->why = "more fds than any request carries";
    return -EINVAL;
  }
  for (size_t i = 0; i < nfds; i++)
    m.fds[i] = fds[i];
  m.nfds = nfds;
  const char *why = NULL;
  int rc = vhu_header_check(hdr, &why);
  if (rc < 0)
    res->why = why;
  else if (hdr->size > 0 && !payload)
    rc = fail(&m, -EINVAL, "payload missing");
  else
    rc = dispatch(&m);
  for (size_t i = 0; i < nfds; i++)
    close_fd(&m.fds[i]);
  /* REPLY_ACK: a request that asked for a reply and has none of its own
   * gets u64 0 on success, 1 on failure. */
  if (!m.replied && (hdr->flags & VHU_FLAG_NEED_REPLY) && (hdr->flags & VHU_FLAG_REPLY) == 0)
    reply_u64(&m, rc < 0 ? 1 : 0);
  else if (rc < 0 && m.replied)
    res->reply_len = 0; /* never a reply of a failed request's own kind */
  return rc;
}

/* ---- virtqueue ------------------------------------------------------- */

static int vq_fail(VhuQueue *vq, const char **why, const char *reason, int err) {
  vq->broken = true;
  if (why)
    *why = reason;
  return err;
}

bool vhu_vq_ready(const VhuDev *dev, unsigned q) {
  if (q >= dev->cfg.num_queues)
    return false;
  const VhuQueue *vq = &dev->vq[q];
  return vq->started && vq->enabled && vq->mapped && !vq->broken;
}

bool vhu_vq_broken(const VhuDev *dev, unsigned q) {
  return q < dev->cfg.num_queues && dev->vq[q].broken;
}

int vhu_vq_kick_fd(const VhuDev *dev, unsigned q) {
  return q < dev->cfg.num_queues ? dev->vq[q].kick_fd : -1;
}

static void read_desc(const void *table, uint32_t i, struct VhuDesc *d) {
  /* One copy of the guest's descriptor: it may change under us, so every
   * check and use below works on this copy.  memcpy because an indirect
   * table need not be aligned. */
  memcpy(d, (const uint8_t *)table + (size_t)i * 16, 16);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static int walk_chain(VhuDev *dev, VhuQueue *vq, uint16_t head, VhuElem *e, const char **why) {
  const void *table = vq->desc;
  uint32_t tsize = vq->num, i = head, visited = 0;
  bool indirect = false, writable = false;
  unsigned n = 0;
  e->head = head;
  e->mem_gen = dev->mem_gen;
  e->out_num = e->in_num = 0;
  e->out_bytes = e->in_bytes = 0;
  for (;;) {
    struct VhuDesc d;
    read_desc(table, i, &d);
    if (++visited > tsize)
      return vq_fail(vq, why, "descriptor chain loops", -ELOOP);
    if (d.flags & DESC_F_INDIRECT) {
      if (!vhu_dev_has_feature(dev, VHU_F_INDIRECT_DESC))
        return vq_fail(vq, why, "indirect descriptor without INDIRECT_DESC", -EINVAL);
      if (indirect)
        return vq_fail(vq, why, "indirect descriptor inside an indirect table", -EINVAL);
      if (visited != 1)
        return vq_fail(vq, why, "indirect descriptor not at the head of its chain", -EINVAL);
      if (d.flags & DESC_F_NEXT)
        return vq_fail(vq, why, "indirect descriptor with NEXT set", -EINVAL);
      if (d.len == 0 || d.len % 16 || d.len / 16 > VHU_MAX_QUEUE_SIZE)
        return vq_fail(vq, why, "indirect table size invalid", -EINVAL);
      table = vhu_gpa_to_host(dev, d.addr, d.len);
      if (!table)
        return vq_fail(vq, why, "indirect table outside guest memory or across regions", -EFAULT);
      tsize = d.len / 16;
      i = 0;
      visited = 0;
      indirect = true;
      continue;
    }
    if (d.flags & DESC_F_WRITE)
      writable = true;
    else if (writable)
      return vq_fail(vq, why, "readable descriptor after a writable one", -EINVAL);
    if (d.len) {
      int rc = vhu_gpa_to_iov(dev, d.addr, d.len, e->iov, VHU_ELEM_MAX_IOV, &n);
      if (rc == -E2BIG)
        return vq_fail(vq, why, "descriptor chain has too many pieces", -E2BIG);
      if (rc < 0)
        return vq_fail(vq, why, "descriptor outside guest memory", -EFAULT);
      if (writable)
        e->in_bytes += d.len;
      else
        e->out_bytes += d.len;
    }
    if (!writable)
      e->out_num = n;
    if (!(d.flags & DESC_F_NEXT))
      break;
    i = d.next;
    if (i >= tsize)
      return vq_fail(vq, why, "next descriptor index out of range", -EINVAL);
  }
  e->in_num = n - e->out_num;
  return 0;
}

/* The u16 after the used ring: where the guest looks before kicking. */
static uint16_t *avail_event(VhuQueue *vq) {
  return (uint16_t *)&vq->used->ring[vq->num];
}

int vhu_vq_pop(VhuDev *dev, unsigned q, VhuElem *elem, const char **why) {
  if (q >= dev->cfg.num_queues) {
    if (why)
      *why = "ring index out of range";
    return -EINVAL;
  }
  VhuQueue *vq = &dev->vq[q];
  if (vq->broken) {
    if (why)
      *why = "ring is broken";
    return -EIO;
  }
  if (!vq->started || !vq->enabled || !vq->addr_set)
    return 0;
  if (!vq->mapped)
    return vq_fail(vq, why, "ring no longer in guest memory", -EFAULT);
  uint16_t avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
  uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
  if (pending > vq->num)
    return vq_fail(vq, why, "available index moved by more than the ring size", -EINVAL);
  if (pending == 0) {
    if (!vhu_dev_has_feature(dev, VHU_F_EVENT_IDX))
      return 0;
    /* Going idle: ask for a kick at the next entry, then look again, so
     * an entry added in between is not left waiting for a kick that the
     * guest thinks it need not send. */
    __atomic_store_n(avail_event(vq), vq->last_avail, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
    pending = (uint16_t)(avail_idx - vq->last_avail);
    if (pending == 0)
      return 0;
    if (pending > vq->num)
      return vq_fail(vq, why, "available index moved by more than the ring size", -EINVAL);
  }
  if (vq->inflight >= vq->num)
    return vq_fail(vq, why, "more chains in flight than the ring holds", -EINVAL);
  uint16_t head =
      __atomic_load_n(&vq->avail->ring[vq->last_avail & (vq->num - 1)], __ATOMIC_RELAXED);
  if (head >= vq->num)
    return vq_fail(vq, why, "head descriptor index out of range", -EINVAL);
  int rc = walk_chain(dev, vq, head, elem, why);
  if (rc < 0)
    return rc;
  vq->last_avail++;
  vq->inflight++;
  if (vhu_dev_has_feature(dev, VHU_F_EVENT_IDX)) {
    /* avail_event: the guest kicks again once it passes this index. */
    __atomic_store_n(avail_event(vq), vq->last_avail, __ATOMIC_RELEASE);
  }
  return 1;
}

bool vhu_elem_valid(const VhuDev *dev, const VhuElem *elem) {
  return elem->mem_gen == dev->mem_gen;
}

int vhu_vq_push(VhuDev *dev, unsigned q, uint16_t head, uint32_t len) {
  if (q >= dev->cfg.num_queues)
    return -EINVAL;
  VhuQueue *vq = &dev->vq[q];
  if (!vq->mapped || head >= vq->num || vq->inflight == 0)
    return -EINVAL;
  struct VhuUsedElem *u = &vq->used->ring[vq->used_idx & (vq->num - 1)];
  __atomic_store_n(&u->id, head, __ATOMIC_RELAXED);
  __atomic_store_n(&u->len, len, __ATOMIC_RELAXED);
  vq->used_idx++;
  /* The entry is visible before the index that publishes it. */
  __atomic_store_n(&vq->used->idx, vq->used_idx, __ATOMIC_RELEASE);
  vq->inflight--;
  return 0;
}

bool vhu_vq_should_call(VhuDev *dev, unsigned q) {
  if (q >= dev->cfg.num_queues)
    return false;
  VhuQueue *vq = &dev->vq[q];
  if (!vq->mapped)
    return false;
  /* Our used->idx store before the guest's flags / used_event load. */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (vhu_dev_has_feature(dev, VHU_F_NOTIFY_ON_EMPTY) && vq->inflight == 0 &&
      __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE) == vq->last_avail)
    return true;
  if (!vhu_dev_has_feature(dev, VHU_F_EVENT_IDX))
    return !(__atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED) & AVAIL_F_NO_INTERRUPT);
  uint16_t old = vq->signalled_used, now = vq->used_idx;
  bool valid = vq->signalled_used_valid;
  vq->signalled_used = now;
  vq->signalled_used_valid = true;
  if (!valid)
    return true;
  uint16_t used_event = __atomic_load_n(&vq->avail->ring[vq->num], __ATOMIC_RELAXED);
  return (uint16_t)(now - used_event - 1) < (uint16_t)(now - old);
}

int vhu_vq_notify(VhuDev *dev, unsigned q) {
  if (!vhu_vq_should_call(dev, q))
    return 0;
  int fd = dev->vq[q].call_fd;
  if (fd < 0)
    return 0;
  uint64_t one = 1;
  ssize_t w;
  do
    w = write(fd, &one, sizeof(one));
  while (w < 0 && errno == EINTR);
  if (w == (ssize_t)sizeof(one))
    return 1;
  /* EAGAIN: the counter is saturated, the guest will be woken anyway. */
  return w < 0 && errno == EAGAIN ? 1 : w < 0 ? -errno : -EIO;
}

int vhu_vq_kick_drain(VhuDev *dev, unsigned q) {
  if (q >= dev->cfg.num_queues || dev->vq[q].kick_fd < 0)
    return -EINVAL;
  struct pollfd p = {.fd = dev->vq[q].kick_fd, .events = POLLIN};
  int n;
  do
    n = poll(&p, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  if (n == 0 || !(p.revents & POLLIN))
    return -EAGAIN;
  uint64_t v;
  ssize_t r;
  do
    r = read(p.fd, &v, sizeof(v));
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return errno == EAGAIN ? -EAGAIN : -errno;
  return 0;
}
