/* A test harness that plays QEMU for the worker's vhost-user-gpu
 * front-end: it spawns the real vgpu-worker on one end of a socketpair,
 * gives it memfd guest memory, lays out split virtqueues in it, kicks and
 * waits on call eventfds (poll with a timeout, never sleep), and serves the
 * display socket (answers GET_PROTOCOL_FEATURES, records SCANOUT and UPDATE
 * into an image per scanout).
 *
 * Guest-physical addresses run from 0 to the memory's size; the "QEMU
 * virtual" addresses of the ring messages are the harness's own mapping. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VHH_MEM_SIZE (16u << 20)
#define VHH_RING_NUM 64u
#define VHH_MAX_SCANOUTS 16u
/* How long the harness waits for any answer: 10 s, or $VHH_TIMEOUT_MS
 * (a test driving many sanitized workers on a loaded machine raises it). */
int vhh_timeout_ms(void);
#define VHH_TIMEOUT_MS vhh_timeout_ms()

typedef struct {
  uint32_t w, h; /* from SCANOUT; 0: disabled or never set */
  uint32_t *px;  /* w x h, x8r8g8b8 as QEMU composites it */
  unsigned updates;
} VhhScanout;

typedef struct {
  uint32_t x, y, w, h, enabled;
} VhhMode;

/* How the harness's QEMU answers the back-end's display questions. */
typedef enum {
  VHH_QEMU_FINE,          /* as QEMU does */
  VHH_QEMU_SILENT,        /* never answers GET_DISPLAY_INFO / GET_EDID */
  VHH_QEMU_BAD_SIZE,      /* a display info reply one byte short */
  VHH_QEMU_BAD_MODE,      /* head 0 enabled at 0x0 */
  VHH_QEMU_HUGE_MODE,     /* head 0 enabled at 16385x768 */
  VHH_QEMU_BAD_EDID,      /* an EDID reply whose size field is 129 */
  VHH_QEMU_UNASKED_REPLY, /* a second, unasked display info reply */
} VhhQemuAnswer;

typedef struct {
  uint64_t desc_gpa, avail_gpa, used_gpa;
  int kick, call; /* eventfds, harness side */
  uint16_t avail_idx;
  uint16_t used_seen;
} VhhRing;

typedef struct {
  pid_t pid;
  int sock;   /* QEMU's end of the vhost-user socket; -1 once closed */
  int err_fd; /* the worker's stderr */
  char log[16384];
  size_t log_len;
  int memfd;
  uint8_t *mem;
  VhhRing vq[2];
  int disp;            /* QEMU's end of the display socket; -1: none */
  bool disp_handshake; /* GET/SET_PROTOCOL_FEATURES done */
  bool disp_stalled;   /* true: the harness stops reading the display (QEMU blocked) */
  uint64_t disp_acked;
  VhhScanout scanout[VHH_MAX_SCANOUTS];
  unsigned cursor_msgs;
  uint32_t cursor_x, cursor_y; /* last CURSOR_POS / CURSOR_UPDATE position */
  bool cursor_hidden;          /* last message was CURSOR_POS_HIDE */
  uint32_t cursor_px[64 * 64]; /* last CURSOR_UPDATE image */
  uint64_t features;           /* what GET_FEATURES offered */
  uint64_t pfeatures;          /* what GET_PROTOCOL_FEATURES offered */
  /* The harness's QEMU: display protocol features it offers (default 0x3,
   * QEMU 10's EDID | DMABUF2), its modes (default head 0 at 1280x800), the
   * EDID it answers (default: a 128-byte block), how it answers, and what
   * it was asked. */
  uint64_t qemu_pfeatures;
  VhhMode qemu_mode[VHH_MAX_SCANOUTS];
  uint8_t qemu_edid[1024];
  uint32_t qemu_edid_len;
  VhhQemuAnswer qemu_answer;
  unsigned info_asked, edid_asked;
  uint32_t edid_asked_for; /* the last GET_EDID's scanout */
  uint64_t alloc;          /* bump allocator for request buffers */
} VhhHarness;

/* Starts `$VGPU_WORKER --protocol=vhost-user-gpu --renderer=null` with
 * @extra_args (NULL-terminated, may be NULL).  false if it cannot. */
bool vhh_start(VhhHarness *h, const char *const *extra_args);
/* Starts any vhost-user-gpu back-end: @argv[0] is the program, the
 * vhost-user socket is its fd 3 (e.g. QEMU's reference with --fd=3). */
bool vhh_start_argv(VhhHarness *h, const char *const *argv);
/* Plays QEMU against a listening vhost-user socket (e.g. a vgpud
 * instance's vhost-user.sock) instead of a worker of its own: pid 0, no
 * log.  false if it cannot connect. */
bool vhh_connect(VhhHarness *h, const char *path);
/* Closes the sockets (if still open), waits for the worker (bounded;
 * killed after the timeout) and returns its exit status, or -1 for a
 * signal/timeout.  The worker's stderr is in h->log afterwards. */
int vhh_finish(VhhHarness *h);
/* Unmaps and frees the harness's own state. */
void vhh_free(VhhHarness *h);

/* One vhost-user message; fds are sent with it.  With @reply non-NULL
 * waits for the reply and copies up to @reply_cap payload bytes (returns
 * its size, or -1 on EOF/timeout/bad header).  0 on success otherwise. */
int vhh_msg(VhhHarness *h, uint32_t request, uint32_t flags, const void *payload, uint32_t size,
            const int *fds, unsigned nfds, void *reply, size_t reply_cap);
/* The QEMU 10 start sequence: features, protocol features, owner,
 * config, display socket, memory table, both rings running.  With
 * @want_gpu_features the GPU bits to ack (of those offered). */
bool vhh_negotiate(VhhHarness *h, uint64_t want_gpu_features);

/* QEMU's stop (guest reset, VM pause): display socket closed, rings
 * disabled, GET_VRING_BASE for both; *next_avail is ring 0's answer. */
bool vhh_stop(VhhHarness *h, uint16_t *next_avail);
/* QEMU's start again: a new display socket, rings from @next_avail
 * (ring 0) and where ring 1 was, enabled; waits for the display handshake.
 * The recorded scanouts are cleared first.  @next_avail 0 plays a guest
 * reboot: both rings are laid out afresh from index 0. */
bool vhh_restart(VhhHarness *h, uint16_t next_avail);

/* Guest memory: a fresh buffer of @len bytes (16-byte aligned). */
uint64_t vhh_alloc(VhhHarness *h, uint64_t len);
static inline void *vhh_ptr(VhhHarness *h, uint64_t gpa) {
  return h->mem + gpa;
}
/* Submits a request (@req copied into guest memory) with a writable
 * response buffer of @resp_cap bytes on ring @q; waits for its used entry
 * (serving the display meanwhile) and copies the response into @resp.
 * Returns the used length, or -1 when none came within the timeout. */
int vhh_submit(VhhHarness *h, unsigned q, const void *req, size_t len, void *resp, size_t resp_cap);
/* Submits without waiting; returns the response buffer's address (0 if
 * the kick failed). */
uint64_t vhh_post(VhhHarness *h, unsigned q, const void *req, size_t len, size_t resp_cap);
/* Makes the next chain on ring @q start with a descriptor at @gpa (which
 * may lie outside guest memory) and kicks, without waiting. */
void vhh_post_raw(VhhHarness *h, unsigned q, uint64_t gpa, uint32_t len);
/* Convenience: submits a control request and returns the response type
 * (0 on timeout). */
uint32_t vhh_ctrl(VhhHarness *h, const void *req, size_t len);
/* Serves the display socket until nothing arrives for @quiet_ms. */
void vhh_pump_display(VhhHarness *h, int quiet_ms);
/* Reads the worker's stderr so far (non-blocking) into h->log. */
void vhh_read_log(VhhHarness *h);
/* Number of lines in h->log containing @needle. */
unsigned vhh_log_count(const VhhHarness *h, const char *needle);
