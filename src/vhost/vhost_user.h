/* vhost-user back-end protocol core for a virtio-gpu device.
 *
 * Plain C, no GLib, no main loop, no socket I/O: the adapter reads one
 * message from the front-end's socket (12-byte header, payload, the fds that
 * came with it) and hands it to vhu_dev_handle(); the core answers with the
 * bytes to send back (if any), the actions the adapter must take (watch a
 * new kick fd, a ring stopped, a new display socket...) and, on a bad
 * message, a negative errno and a reason.  The adapter decides what a
 * refusal costs (answer with an error, mark the device NEEDS_RESET, end the
 * session); the core never aborts on input.
 *
 * The core owns every fd it is handed, kept or closed, also on error.  Its
 * only allocations are the guest memory mappings the front-end asks for
 * (bounded by VHU_MAX_MEM_REGIONS); the state itself is a fixed-size struct
 * the caller places where it likes.
 *
 * It also implements the split virtqueue over that memory: popping
 * descriptor chains (direct and indirect, every address translated and
 * bounded), writing used entries and deciding whether the guest needs an
 * interrupt (flags or event index). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Requests (front-end -> back-end) this core knows by name. */
enum {
  VHU_GET_FEATURES = 1,
  VHU_SET_FEATURES = 2,
  VHU_SET_OWNER = 3,
  VHU_RESET_OWNER = 4,
  VHU_SET_MEM_TABLE = 5,
  VHU_SET_LOG_BASE = 6,
  VHU_SET_LOG_FD = 7,
  VHU_SET_VRING_NUM = 8,
  VHU_SET_VRING_ADDR = 9,
  VHU_SET_VRING_BASE = 10,
  VHU_GET_VRING_BASE = 11,
  VHU_SET_VRING_KICK = 12,
  VHU_SET_VRING_CALL = 13,
  VHU_SET_VRING_ERR = 14,
  VHU_GET_PROTOCOL_FEATURES = 15,
  VHU_SET_PROTOCOL_FEATURES = 16,
  VHU_GET_QUEUE_NUM = 17,
  VHU_SET_VRING_ENABLE = 18,
  VHU_SET_BACKEND_REQ_FD = 21,
  VHU_GET_CONFIG = 24,
  VHU_SET_CONFIG = 25,
  VHU_GPU_SET_SOCKET = 33,
  VHU_RESET_DEVICE = 34,
  VHU_GET_MAX_MEM_SLOTS = 36,
  VHU_ADD_MEM_REG = 37,
  VHU_REM_MEM_REG = 38,
};

/* Header flags. */
#define VHU_FLAG_VERSION 0x1u
#define VHU_FLAG_VERSION_MASK 0x3u
#define VHU_FLAG_REPLY 0x4u
#define VHU_FLAG_NEED_REPLY 0x8u

/* Virtio and vhost-user feature bits (GET/SET_FEATURES). */
#define VHU_F_GPU_VIRGL 0
#define VHU_F_GPU_EDID 1
#define VHU_F_GPU_RESOURCE_UUID 2
#define VHU_F_GPU_RESOURCE_BLOB 3
#define VHU_F_GPU_CONTEXT_INIT 4
#define VHU_F_NOTIFY_ON_EMPTY 24
#define VHU_F_LOG_ALL 26
#define VHU_F_INDIRECT_DESC 28
#define VHU_F_EVENT_IDX 29
#define VHU_F_PROTOCOL_FEATURES 30
#define VHU_F_VERSION_1 32
#define VHU_F_RING_RESET 40
/* The GPU device bits a caller may ask the core to offer. */
#define VHU_GPU_FEATURE_MASK                                                                       \
  ((1ull << VHU_F_GPU_VIRGL) | (1ull << VHU_F_GPU_EDID) | (1ull << VHU_F_GPU_RESOURCE_UUID) |      \
   (1ull << VHU_F_GPU_RESOURCE_BLOB) | (1ull << VHU_F_GPU_CONTEXT_INIT))

/* Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
#define VHU_PF_MQ 0
#define VHU_PF_REPLY_ACK 3
#define VHU_PF_CONFIG 9
#define VHU_PF_RESET_DEVICE 13
#define VHU_PF_CONFIGURE_MEM_SLOTS 15
/* What this core implements and offers: nothing else. */
#define VHU_PROTOCOL_FEATURES                                                                      \
  ((1ull << VHU_PF_MQ) | (1ull << VHU_PF_REPLY_ACK) | (1ull << VHU_PF_CONFIG) |                    \
   (1ull << VHU_PF_RESET_DEVICE) | (1ull << VHU_PF_CONFIGURE_MEM_SLOTS))

/* Limits.  A message carries at most 8 fds (SET_MEM_TABLE's 8 regions);
 * the largest payload is a config message with 256 data bytes. */
#define VHU_HDR_SIZE 12u
#define VHU_MAX_FDS 8u
#define VHU_MAX_CONFIG_DATA 256u
#define VHU_MAX_PAYLOAD (12u + VHU_MAX_CONFIG_DATA)
#define VHU_MAX_TABLE_REGIONS 8u /* SET_MEM_TABLE */
#define VHU_MAX_MEM_REGIONS 32u  /* with ADD_MEM_REG: what GET_MAX_MEM_SLOTS says */
#define VHU_MAX_QUEUES 2u        /* control and cursor */
#define VHU_MAX_QUEUE_SIZE 32768u
#define VHU_ELEM_MAX_IOV 1024u /* readable + writable pieces of one chain */
#define VHU_VRING_NOFD 0x100u
#define VHU_VRING_IDX_MASK 0xffu

/* virtio-gpu config space (16 bytes, little-endian). */
#define VHU_GPU_CONFIG_SIZE 16u
#define VHU_GPU_EVENT_DISPLAY 1u

typedef struct {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
} VhuHeader;

typedef struct {
  uint64_t gpa;  /* guest-physical start */
  uint64_t size; /* bytes */
  uint64_t uva;  /* the front-end's virtual address of gpa */
  uint64_t mmap_offset;
  uint8_t *host;  /* our pointer to gpa */
  void *map_base; /* what munmap takes */
  size_t map_len;
} VhuRegion;

typedef struct {
  uint32_t num; /* ring size; 0 = not set */
  uint64_t desc_uva, avail_uva, used_uva;
  bool addr_set;
  struct VhuDesc *desc; /* host pointers, valid while mapped */
  struct VhuAvail *avail;
  struct VhuUsed *used;
  bool mapped;
  int kick_fd, call_fd, err_fd; /* -1: none */
  bool kick_set;                /* SET_VRING_KICK seen (fd or NOFD) */
  bool enabled;
  bool started;        /* kick set and not stopped by GET_VRING_BASE */
  bool broken;         /* a hostile ring: no further pops until reset */
  uint16_t last_avail; /* next avail entry to pop */
  uint16_t used_idx;   /* our copy of used->idx */
  uint16_t signalled_used;
  bool signalled_used_valid;
  uint32_t inflight; /* popped, not yet pushed */
} VhuQueue;

typedef struct {
  /* What the adapter's device model supports, set before the first
   * message: GPU feature bits to offer (VHU_GPU_FEATURE_MASK subset),
   * number of queues (2 for virtio-gpu), and the config space values. */
  uint64_t gpu_features;
  uint32_t num_queues;
  uint32_t num_scanouts;
  uint32_t num_capsets;
} VhuDevConfig;

typedef struct {
  VhuDevConfig cfg;
  uint64_t features_offered;
  uint64_t features; /* acked by SET_FEATURES */
  bool features_set;
  uint64_t protocol_features; /* acked */
  bool owner;
  VhuRegion regions[VHU_MAX_MEM_REGIONS];
  uint32_t nregions;
  VhuQueue vq[VHU_MAX_QUEUES];
  int display_fd; /* GPU_SET_SOCKET, until the adapter takes it */
  uint32_t events_read;
  uint32_t mem_gen; /* bumped whenever a mapping goes away */
} VhuDev;

/* Actions the adapter takes after a message (bits of VhuResult.actions). */
enum {
  VHU_ACT_FEATURES = 1u << 0,     /* SET_FEATURES: check vhu_dev_has_feature() (VIRGL...) */
  VHU_ACT_MEM_CHANGED = 1u << 1,  /* memory table changed: drop cached guest pointers */
  VHU_ACT_KICK_FD = 1u << 2,      /* a ring's kick fd changed: re-watch vhu_vq_kick_fd() */
  VHU_ACT_RING_STARTED = 1u << 3, /* kick set: the ring runs (pop once vhu_vq_ready()) */
  VHU_ACT_RING_STOPPED = 1u << 4, /* GET_VRING_BASE: no more pops; reply may wait for drain */
  VHU_ACT_RING_ENABLE = 1u << 5,  /* SET_VRING_ENABLE changed a ring */
  VHU_ACT_DISPLAY_FD = 1u << 6,   /* GPU_SET_SOCKET: take it with vhu_dev_take_display_fd() */
  VHU_ACT_RESET = 1u << 7,        /* RESET_OWNER/RESET_DEVICE: rings, features reset; memory kept */
  VHU_ACT_CONFIG = 1u << 8,       /* SET_CONFIG cleared events */
};

typedef struct {
  uint8_t reply[VHU_HDR_SIZE + VHU_MAX_PAYLOAD]; /* header + payload to send */
  size_t reply_len;                              /* 0: send nothing */
  uint32_t actions;                              /* VHU_ACT_* */
  uint32_t ring_mask;                            /* rings the ring actions concern */
  const char *why;                               /* set with a negative return */
} VhuResult;

/* Initialises @dev (no allocation).  Returns -EINVAL for a bad config. */
int vhu_dev_init(VhuDev *dev, const VhuDevConfig *cfg);
/* Unmaps all guest memory and closes every fd the core holds. */
void vhu_dev_fini(VhuDev *dev);

/* Checks a received header before its payload is read: version bits,
 * not a reply, payload no larger than VHU_MAX_PAYLOAD.  0 or -EPROTO. */
int vhu_header_check(const VhuHeader *hdr, const char **why);
/* Parses 12 raw bytes into @hdr and checks it (as vhu_header_check). */
int vhu_header_parse(const uint8_t raw[VHU_HDR_SIZE], VhuHeader *hdr, const char **why);

/* Handles one message.  @payload holds hdr->size bytes; @fds the fds that
 * came with it (all owned by the core from here on, closed or kept).
 * Fills @res: a reply to send (reply_len > 0), actions, and on a negative
 * return a reason.  A failed request that asked for a reply (NEED_REPLY)
 * still gets its reply (u64 non-zero) in @res. */
int vhu_dev_handle(VhuDev *dev, const VhuHeader *hdr, const void *payload, const int *fds,
                   size_t nfds, VhuResult *res);

bool vhu_dev_has_feature(const VhuDev *dev, unsigned bit);
bool vhu_dev_has_protocol_feature(const VhuDev *dev, unsigned bit);
/* The display socket from the last GPU_SET_SOCKET; the caller owns it
 * afterwards (-1 if none). */
int vhu_dev_take_display_fd(VhuDev *dev);
/* Config space: raise event bits (e.g. VHU_GPU_EVENT_DISPLAY) the guest
 * reads in events_read; change counts before the guest next reads them. */
void vhu_dev_config_raise(VhuDev *dev, uint32_t events);
void vhu_dev_config_set_counts(VhuDev *dev, uint32_t num_scanouts, uint32_t num_capsets);

/* Guest memory.  gpa: guest-physical; uva: the front-end's virtual
 * addresses (ring addresses).  Both return a host pointer only when the
 * whole range [addr, addr + len) lies in one region, else NULL. */
void *vhu_gpa_to_host(const VhuDev *dev, uint64_t gpa, uint64_t len);
void *vhu_uva_to_host(const VhuDev *dev, uint64_t uva, uint64_t len);
/* Splits [gpa, gpa + len) into host iovecs across adjacent regions,
 * appending at iov[*n] with at most @max entries in all.  0, -EFAULT (a
 * byte outside guest memory) or -E2BIG (more pieces than @max). */
int vhu_gpa_to_iov(const VhuDev *dev, uint64_t gpa, uint64_t len, struct iovec *iov, unsigned max,
                   unsigned *n);
/* Number of live guest mappings over all devices (tests and fuzzer). */
unsigned long vhu_live_mappings(void);

/* One popped descriptor chain: readable pieces first (iov[0, out_num)),
 * then writable ones (iov[out_num, out_num + in_num)). */
typedef struct {
  uint16_t head;
  uint32_t mem_gen; /* the device's mem_gen when popped */
  unsigned out_num, in_num;
  uint64_t out_bytes, in_bytes;
  struct iovec iov[VHU_ELEM_MAX_IOV];
} VhuElem;

/* Pops the next chain of ring @q: 1 with @elem filled, 0 when the ring is
 * empty (or not started/enabled), negative errno with *why for a hostile
 * ring, which is then marked broken (later pops fail until reset). */
int vhu_vq_pop(VhuDev *dev, unsigned q, VhuElem *elem, const char **why);
/* Whether @elem's iovecs still point into mapped guest memory: false once
 * a region was unmapped after the pop (SET_MEM_TABLE, REM_MEM_REG).
 * A stale element's buffers must not be touched; push it with length 0. */
bool vhu_elem_valid(const VhuDev *dev, const VhuElem *elem);
/* Returns a popped chain with @len bytes written.  0 or -EINVAL. */
int vhu_vq_push(VhuDev *dev, unsigned q, uint16_t head, uint32_t len);
/* Whether the guest wants an interrupt for what was pushed since the last
 * call (flags or event index); updates the "signalled" mark. */
bool vhu_vq_should_call(VhuDev *dev, unsigned q);
/* should_call, then signal the call eventfd.  1 signalled, 0 not needed or
 * no call fd, negative errno when writing the eventfd failed. */
int vhu_vq_notify(VhuDev *dev, unsigned q);
/* Drains the kick eventfd (after the adapter saw it readable).  0 or
 * negative errno; -EAGAIN when nothing was pending. */
int vhu_vq_kick_drain(VhuDev *dev, unsigned q);
int vhu_vq_kick_fd(const VhuDev *dev, unsigned q);
bool vhu_vq_ready(const VhuDev *dev, unsigned q); /* started, enabled, mapped, not broken */
bool vhu_vq_broken(const VhuDev *dev, unsigned q);

/* Name of a request for logs ("SET_MEM_TABLE", or "unknown"). */
const char *vhu_request_name(uint32_t request);
