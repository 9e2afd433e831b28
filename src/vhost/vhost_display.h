/* The vhost-user-gpu display channel, back-end side: the socket QEMU hands
 * over with GPU_SET_SOCKET, on which this worker tells QEMU what the
 * guest's screens and cursor show (SCANOUT, UPDATE, CURSOR_*), for QEMU's
 * own VNC/SDL/screendump, and asks QEMU for its displays' modes and EDIDs
 * (GET_DISPLAY_INFO, GET_EDID with the EDID protocol feature).  Every reply
 * is checked (its request was asked, its size, its modes) before it is
 * kept; anything else is -EPROTO.  No dmabuf: frames travel as UPDATE messages,
 * sent straight from the device's pixels (rows gathered by sendmsg, a
 * bounce row only for a format QEMU does not read).
 *
 * Every write is bounded: QEMU stops reading while its display is blocked,
 * and a QEMU that does not take a message within the timeout gets
 * -ETIMEDOUT (the caller ends the session).  QEMU closing the socket (it
 * does on every device stop) is -EPIPE: the caller drops the channel. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio_gpu/vgpu_cmd.h"

/* Display messages (back-end -> QEMU). */
enum {
  VHU_DISP_GET_PROTOCOL_FEATURES = 1,
  VHU_DISP_SET_PROTOCOL_FEATURES = 2,
  VHU_DISP_GET_DISPLAY_INFO = 3,
  VHU_DISP_CURSOR_POS = 4,
  VHU_DISP_CURSOR_POS_HIDE = 5,
  VHU_DISP_CURSOR_UPDATE = 6,
  VHU_DISP_SCANOUT = 7,
  VHU_DISP_UPDATE = 8,
  VHU_DISP_DMABUF_SCANOUT = 9,
  VHU_DISP_DMABUF_UPDATE = 10,
  VHU_DISP_GET_EDID = 11,
};
#define VHU_DISP_FLAG_REPLY 0x4u
#define VHU_DISP_HDR_SIZE 12u
#define VHU_DISP_CURSOR_SIZE 64u
#define VHU_DISP_MAX_SCANOUTS 16u
/* Replies QEMU may owe at once; more questions wait for those. */
#define VHU_DISP_MAX_ASKED 32u
/* The protocol features this back-end acks when QEMU offers them. */
#define VHU_DISP_PROTOCOL_F_EDID 0

typedef struct VhuDisplay VhuDisplay;

/* Takes @fd (closed on failure too) and sends GET_PROTOCOL_FEATURES; the
 * channel is ready once QEMU answered (vhu_display_on_readable() returns
 * 1).  NULL with *rc and *why on failure. */
VhuDisplay *vhu_display_new(int fd, uint32_t num_scanouts, int timeout_ms, int *rc,
                            const char **why);
void vhu_display_free(VhuDisplay *d);
int vhu_display_fd(const VhuDisplay *d);
bool vhu_display_ready(const VhuDisplay *d);
/* What QEMU answered to GET_PROTOCOL_FEATURES. */
uint64_t vhu_display_qemu_features(const VhuDisplay *d);
/* What this back-end acked of them (0 before the handshake). */
uint64_t vhu_display_acked(const VhuDisplay *d);
/* Replies QEMU still owes. */
unsigned vhu_display_outstanding(const VhuDisplay *d);

/* What a reply brought (a bit mask, >= 0). */
#define VHU_DISP_EV_READY 1 /* the handshake completed */
#define VHU_DISP_EV_MODES 2 /* new display info or EDID from QEMU */

/* The socket is readable: reads one reply.  VHU_DISP_EV_* (0: nothing
 * new), -EPIPE QEMU closed it, -EPROTO a message QEMU should not have
 * sent (not asked for, of the wrong size, a mode out of range, a bad
 * EDID), -ETIMEDOUT, with *why. */
int vhu_display_on_readable(VhuDisplay *d, const char **why);
/* Reads replies until QEMU owes none or @wait_ms passed (QEMU late is no
 * error: its reply is read whenever it comes).  The VHU_DISP_EV_* seen,
 * or on_readable's errors. */
int vhu_display_wait(VhuDisplay *d, int wait_ms, const char **why);

/* Ask QEMU, without waiting: its display info; head @id's EDID (only with
 * the EDID feature acked, and only for head 0 or a head QEMU's display
 * info showed enabled: QEMU never answers for a head it lacks).  1 asked,
 * 0 not asked (not ready, not supported, or VHU_DISP_MAX_ASKED replies
 * still owed), or send errors as below. */
int vhu_display_ask_modes(VhuDisplay *d, const char **why);
int vhu_display_ask_edid(VhuDisplay *d, uint32_t id, const char **why);
/* QEMU's latest display info (VHU_DISP_MAX_SCANOUTS modes; heads beyond
 * num_scanouts zeroed), or NULL before its first.  Valid until the next
 * call on @d. */
const VgpuDisplayMode *vhu_display_modes(const VhuDisplay *d);
/* QEMU's latest EDID for head @id (a multiple of 128 bytes), or NULL. */
const uint8_t *vhu_display_edid(const VhuDisplay *d, uint32_t id, size_t *len);

/* Each: 0, -EPIPE, -ETIMEDOUT or -EINVAL (a caller's bug: a scanout id
 * out of range, an update outside the scanout, with *why). */
int vhu_display_scanout(VhuDisplay *d, uint32_t id, uint32_t w, uint32_t h, const char **why);
/* @pixels: the rectangle's top-left pixel, rows @stride bytes apart, in
 * virtio-gpu @format (VGPU_FORMAT_*, 4 bytes a pixel). */
int vhu_display_update(VhuDisplay *d, uint32_t id, uint32_t x, uint32_t y, uint32_t w, uint32_t h,
                       const void *pixels, uint32_t stride, uint32_t format, const char **why);
/* @pixels: 64x64 B8G8R8A8, or NULL: hide the cursor. */
int vhu_display_cursor_update(VhuDisplay *d, uint32_t id, uint32_t x, uint32_t y, uint32_t hot_x,
                              uint32_t hot_y, const uint32_t *pixels, const char **why);
int vhu_display_cursor_move(VhuDisplay *d, uint32_t id, uint32_t x, uint32_t y, const char **why);
