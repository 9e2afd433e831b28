/* The virtio-gpu device model: one guest's GPU state (resources, backing,
 * scanouts, cursor, 3D contexts) behind one call per request.
 *
 * Transport-neutral: it never sees a vring, a socket or a vhost-user
 * message.  The adapter (the vhost-user-gpu front-end, or a test) pops a
 * request, gathers its readable bytes, and calls vgpu_device_handle(); it
 * writes the response the device produced into the chain's writable part
 * and pushes it.  A fenced 3D command's response is deferred until its
 * fence retires: the device then hands it back through `complete`.
 *
 * Guest memory is reached only through the VgpuGuestMem hooks (guest
 * physical address to host iovecs), so the device keeps backing as guest
 * addresses and translates again after vgpu_device_mem_changed().
 *
 * Every guest value is validated before use; a bad request gets an error
 * response (VIRTIO_GPU_RESP_ERR_*) with one logged reason, and the device
 * keeps running.  Charges go through the core tenant (core/tenant.h) whose
 * refusals the device answers with ERR_OUT_OF_MEMORY; that includes what
 * 3D command streams make (see max_stream_objects). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/tenant.h"
#include "render/renderer.h"
#include "virtio_gpu/vgpu_cmd.h"

typedef struct VgpuDevice VgpuDevice;

/* Guest memory, as the adapter maps it. */
typedef struct VgpuGuestMem {
  /* Splits [gpa, gpa + len) into host iovecs appended at iov[*n], at most
   * @max in all.  0, -EFAULT (outside guest memory) or -E2BIG. */
  int (*to_iov)(void *user, uint64_t gpa, uint64_t len, struct iovec *iov, unsigned max,
                unsigned *n);
  void *user;
} VgpuGuestMem;

/* Pixel formats as virtio-gpu names them (VIRTIO_GPU_FORMAT_*). */
enum {
  VGPU_FORMAT_B8G8R8A8_UNORM = 1,
  VGPU_FORMAT_B8G8R8X8_UNORM = 2,
  VGPU_FORMAT_A8R8G8B8_UNORM = 3,
  VGPU_FORMAT_X8R8G8B8_UNORM = 4,
  VGPU_FORMAT_R8G8B8A8_UNORM = 67,
  VGPU_FORMAT_X8B8G8R8_UNORM = 68,
  VGPU_FORMAT_A8B8G8R8_UNORM = 121,
  VGPU_FORMAT_R8G8B8X8_UNORM = 134,
};

/* What the guest's screens show, for the adapter to forward (the
 * vhost-user-gpu display channel) or a test to record.  Pointers are valid
 * only during the call. */
typedef struct VgpuDisplayOps {
  /* Scanout @id now shows a @w x @h image (w == 0: disabled). */
  void (*scanout)(void *user, uint32_t id, uint32_t w, uint32_t h);
  /* Rectangle @r (in the scanout's own coordinates) of scanout @id
   * changed; @pixels is its top-left pixel,
   * 4 bytes per pixel in @format (VGPU_FORMAT_*), rows @stride bytes
   * apart. */
  void (*update)(void *user, uint32_t id, const VgpuRect *r, const void *pixels, uint32_t stride,
                 uint32_t format);
  /* A new 64x64 cursor image (B8G8R8A8), or @pixels NULL: hidden. */
  void (*cursor_update)(void *user, uint32_t scanout, uint32_t x, uint32_t y, uint32_t hot_x,
                        uint32_t hot_y, const uint32_t *pixels);
  void (*cursor_move)(void *user, uint32_t scanout, uint32_t x, uint32_t y);
  /* A fenced command's response is ready: @cookie as given to
   * vgpu_device_handle(), @resp/@len the bytes to write. */
  void (*complete)(void *user, uint64_t cookie, const void *resp, size_t len);
  /* Optional: called before the device answers GET_DISPLAY_INFO (@scanout
   * -1) or GET_EDID (@scanout, already checked against num_scanouts), so
   * the adapter can fetch the display's current modes and hand them in with
   * vgpu_device_set_modes() / vgpu_device_set_edid() first.  It must not
   * call anything else on the device. */
  void (*modes_wanted)(void *user, int32_t scanout);
  void *user;
} VgpuDisplayOps;

typedef struct VgpuDeviceConfig {
  uint32_t num_scanouts; /* 1..VGPU_CMD_MAX_SCANOUTS (the profile's heads) */
  /* Mode each scanout reports until vgpu_device_set_modes() says otherwise
   * (clamped to 1..VGPU_DEVICE_MODE_MAX). */
  uint32_t width, height;
  uint32_t features;   /* VGPU_CMD_F_* negotiated with the guest */
  uint32_t submit_max; /* cap on SUBMIT_3D bytes */
  /* Bound on live command-stream objects per 3D context (the profile's
   * max-stream-objects; 0: VGPU_VIRGL_DEFAULT_MAX_OBJECTS).  Every SUBMIT_3D
   * goes through a per-context stream tracker (core/virgl_stream.h) before
   * the renderer: sub-contexts beyond the first are charged as contexts,
   * large shader text as VRAM, objects beyond this bound are refused, and a
   * 3D resource the guest unreferenced stays charged while objects still
   * hold it.  A malformed stream is answered ERR_INVALID_PARAMETER, a bound
   * or quota refusal ERR_OUT_OF_MEMORY; the stream's commands before the
   * refused one run, the rest do not. */
  uint32_t max_stream_objects;
  VgpuRenderer *renderer; /* NULL: 2D only (VIRGL must not be offered) */
  VgpuTenant *tenant;     /* charges; NULL: none (tests, fuzzing) */
  VgpuGuestMem mem;
  VgpuDisplayOps display;
  const char *log_name; /* names the VM in log lines */
} VgpuDeviceConfig;

/* NULL for a config out of range (scanouts, VIRGL without a renderer).
 * cfg->tenant must outlive the device: the device enters its resources in
 * it (priv NULL) and takes them out with vgpu_tenant_resource_forget(), so
 * the tenant's release hook is never called for them.  log_name is
 * copied. */
VgpuDevice *vgpu_device_new(const VgpuDeviceConfig *cfg);
/* The features negotiated after creation (VGPU_CMD_F_*): 0, or -EINVAL
 * for VIRGL without a renderer (nothing changes then).  Resources and
 * contexts stay. */
int vgpu_device_set_features(VgpuDevice *d, uint32_t features);
/* The largest width, height, x or y of a display mode. */
#define VGPU_DEVICE_MODE_MAX 16384u
/* The display's modes for scanouts 0..@n-1 (what GET_DISPLAY_INFO reports
 * from now on; the other scanouts keep theirs).  An enabled mode needs
 * 0 < w, h <= VGPU_DEVICE_MODE_MAX and x, y <= VGPU_DEVICE_MODE_MAX;
 * enabled is 0 or 1; a disabled one is reported as zeros.  1 when a mode
 * changed (the adapter raises the config space's DISPLAY event), 0 when
 * none did, -EINVAL (@n over num_scanouts, a bad mode; nothing changes).
 * Modes survive vgpu_device_reset(): they are the display's, not the
 * guest's. */
int vgpu_device_set_modes(VgpuDevice *d, const VgpuDisplayMode *modes, uint32_t n);
/* Scanout @id's EDID as the display gave it (@len a multiple of 128, at
 * most VGPU_CMD_EDID_MAX), or @len 0: GET_EDID builds one from the head's
 * mode again.  1 changed, 0 same, -EINVAL. */
int vgpu_device_set_edid(VgpuDevice *d, uint32_t id, const uint8_t *edid, size_t len);
/* Releases every resource and context (charges included). */
void vgpu_device_free(VgpuDevice *d);

/* vgpu_device_handle() returns this when the response comes later through
 * `complete` (a fenced command). */
#define VGPU_DEVICE_DEFERRED 0

/* Handles one request of queue @q (@req: its @len readable bytes).  Writes
 * the response into @resp (@cap bytes; VGPU_DEVICE_RESP_MAX always
 * suffices, and @cap must be at least VGPU_CMD_HDR_SIZE) and returns its
 * length (> 0), VGPU_DEVICE_DEFERRED, or, on the cursor queue, 0 with
 * nothing to write.  Never fails: a bad request gets an error response.
 * With VIRGL negotiated, every FENCE-flagged control request is deferred
 * (also one that failed), so responses complete in fence order; without
 * it a fenced request is answered at once. */
#define VGPU_DEVICE_RESP_MAX 65536u
size_t vgpu_device_handle(VgpuDevice *d, VgpuQueue q, const uint8_t *req, size_t len, uint8_t *resp,
                          size_t cap, uint64_t cookie);
/* The guest's memory table changed: cached translations are dropped and
 * backing translated again at its next use. */
void vgpu_device_mem_changed(VgpuDevice *d);
/* Device reset: every resource, context and scanout goes; deferred
 * responses are dropped (never completed). */
void vgpu_device_reset(VgpuDevice *d);
/* Redraws scanout @id into the display ops (e.g. for a new display
 * connection or a screenshot).  0 or -ENOENT (no scanout set). */
int vgpu_device_refresh(VgpuDevice *d, uint32_t id);

/* Fences.  The device gives the renderer its own fence ids (strictly
 * increasing from 1, whatever the guest's ids), so the adapter forwards
 * the renderer's callbacks here: every deferred response whose fence is
 * <= @fence is completed (through `complete`, in fence order).  The
 * renderer's callbacks are set when the adapter creates it, with the
 * device as (part of) their user data. */
void vgpu_device_fence_retired(VgpuDevice *d, uint64_t fence);
/* A context fence (a request with INFO_RING_IDX): completes the deferred
 * responses of that context and ring up to @fence. */
void vgpu_device_ctx_fence_retired(VgpuDevice *d, uint32_t ctx_id, uint32_t ring_idx,
                                   uint64_t fence);

/* Bit n set: capset id n (1 VIRGL, 2 VIRGL2) is offered with this renderer
 * (0 for NULL).  Its popcount is the config space's num_capsets, which the
 * guest reads before features are negotiated. */
uint32_t vgpu_device_capset_mask(VgpuRenderer *r);
