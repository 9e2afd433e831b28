/* The virgl command stream a tenant submits (vtest SUBMIT_CMD, virtio-gpu
 * SUBMIT_3D), looked at before the renderer sees it.
 *
 * Two layers, both pure (no I/O):
 *  - a scanner that walks the stream command by command (header:
 *    length << 16 | object_type << 8 | command, length in dwords after the
 *    header), checks that every command lies inside the buffer, and reports
 *    what changes the renderer's memory: objects created and destroyed (with
 *    the resource an object refers to), sub-contexts created, destroyed and
 *    made current, and state bindings that hold a resource or an object
 *    (vertex, index, uniform, shader-storage and atomic buffers, shader
 *    images, sampler views, framebuffer surfaces, stream-output targets);
 *  - a tracker that keeps, per tenant, the objects and bindings of each
 *    sub-context as the renderer will hold them (a create of a live handle
 *    replaces it, a destroy of an unknown handle does nothing, a destroyed
 *    object lives on while a binding holds it) and charges for them through
 *    the front-end's callbacks: one context per sub-context beyond the
 *    first, a per-profile bound on live objects, shader text where it is
 *    large, and the charge of a resource an object still refers to after
 *    the tenant has let go of it. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ledger.h"
#include "core/resource.h"

/* virgl_protocol.h: enum virgl_object_type and the context commands we
 * look at. */
enum {
  VGPU_VIRGL_OBJECT_NULL = 0,
  VGPU_VIRGL_OBJECT_BLEND = 1,
  VGPU_VIRGL_OBJECT_RASTERIZER = 2,
  VGPU_VIRGL_OBJECT_DSA = 3,
  VGPU_VIRGL_OBJECT_SHADER = 4,
  VGPU_VIRGL_OBJECT_VERTEX_ELEMENTS = 5,
  VGPU_VIRGL_OBJECT_SAMPLER_VIEW = 6,
  VGPU_VIRGL_OBJECT_SAMPLER_STATE = 7,
  VGPU_VIRGL_OBJECT_SURFACE = 8,
  VGPU_VIRGL_OBJECT_QUERY = 9,
  VGPU_VIRGL_OBJECT_STREAMOUT_TARGET = 10,
  VGPU_VIRGL_OBJECT_MSAA_SURFACE = 11,
  VGPU_VIRGL_OBJECT_MAX = 12,
};

enum {
  VGPU_VIRGL_CCMD_NOP = 0,
  VGPU_VIRGL_CCMD_CREATE_OBJECT = 1,
  VGPU_VIRGL_CCMD_DESTROY_OBJECT = 3,
  VGPU_VIRGL_CCMD_SET_FRAMEBUFFER_STATE = 5,
  VGPU_VIRGL_CCMD_SET_VERTEX_BUFFERS = 6,
  VGPU_VIRGL_CCMD_SET_SAMPLER_VIEWS = 10,
  VGPU_VIRGL_CCMD_SET_INDEX_BUFFER = 11,
  VGPU_VIRGL_CCMD_SET_STREAMOUT_TARGETS = 24,
  VGPU_VIRGL_CCMD_SET_UNIFORM_BUFFER = 27,
  VGPU_VIRGL_CCMD_SET_SUB_CTX = 28,
  VGPU_VIRGL_CCMD_CREATE_SUB_CTX = 29,
  VGPU_VIRGL_CCMD_DESTROY_SUB_CTX = 30,
  VGPU_VIRGL_CCMD_SET_SHADER_BUFFERS = 34,
  VGPU_VIRGL_CCMD_SET_SHADER_IMAGES = 35,
  VGPU_VIRGL_CCMD_SET_ATOMIC_BUFFERS = 40,
  /* A resource made inside the context, for a later host3d blob to claim
   * by blob id: target, format, bind, width, height, depth, array size,
   * last level, samples, flags, blob id (11 dwords). */
  VGPU_VIRGL_CCMD_PIPE_RESOURCE_CREATE = 48,
};
#define VGPU_VIRGL_PIPE_RES_CREATE_SIZE 11u

/* What a binding command binds.  The first six hold resources, the rest
 * objects. */
typedef enum {
  VGPU_VIRGL_BIND_VERTEX_BUFFER = 1,
  VGPU_VIRGL_BIND_INDEX_BUFFER,
  VGPU_VIRGL_BIND_UNIFORM_BUFFER,
  VGPU_VIRGL_BIND_SHADER_BUFFER,
  VGPU_VIRGL_BIND_SHADER_IMAGE,
  VGPU_VIRGL_BIND_ATOMIC_BUFFER,
  VGPU_VIRGL_BIND_SAMPLER_VIEW, /* objects from here on */
  VGPU_VIRGL_BIND_FRAMEBUFFER,  /* slot 0: depth-stencil, 1..8: colour */
  VGPU_VIRGL_BIND_STREAMOUT,
} VgpuVirglBindKind;

/* How a binding command treats the slots it does not name. */
typedef enum {
  VGPU_VIRGL_KEEP_OTHERS = 0, /* only [start, start + count) change */
  VGPU_VIRGL_DROP_AFTER,      /* slots from start + count on are unbound too */
  VGPU_VIRGL_DROP_ALL,        /* the list replaces every slot of its kind */
} VgpuVirglBindMode;

/* Slots per kind and shader stage the renderer accepts are all below this
 * (gallium: 32 buffers, images, sampler views, attributes; 16 stream-output
 * targets; 9 framebuffer attachments); a binding beyond it is malformed. */
#define VGPU_VIRGL_MAX_SLOTS 64u
#define VGPU_VIRGL_SHADER_STAGES 6u

#define VGPU_VIRGL_SHADER_OFFSET_CONT 0x80000000u

typedef enum {
  VGPU_VIRGL_EV_OTHER = 0,       /* a command that creates or frees nothing we track */
  VGPU_VIRGL_EV_OBJECT_CREATE,   /* obj_type, handle, res_handle (0: none), bytes */
  VGPU_VIRGL_EV_SHADER_CONTINUE, /* the next piece of a long shader: handle */
  VGPU_VIRGL_EV_OBJECT_DESTROY,  /* handle */
  VGPU_VIRGL_EV_SUB_CTX_CREATE,  /* sub_ctx */
  VGPU_VIRGL_EV_SUB_CTX_DESTROY,
  VGPU_VIRGL_EV_SUB_CTX_SET,
  VGPU_VIRGL_EV_BIND,          /* bind, shader, start, count, handles at dw[at + i * stride] */
  VGPU_VIRGL_EV_PIPE_RESOURCE, /* desc (handle 0), blob_id */
} VgpuVirglEventKind;

typedef struct VgpuVirglEvent {
  VgpuVirglEventKind kind;
  uint32_t cmd;        /* command id (header bits 0-7) */
  uint32_t obj_type;   /* header bits 8-15 */
  uint32_t length;     /* dwords after the header */
  uint32_t handle;     /* object handle */
  uint32_t res_handle; /* resource the object refers to, 0 if none */
  uint32_t sub_ctx;
  uint64_t bytes; /* shader: declared text bytes + token buffer */
  /* VGPU_VIRGL_EV_BIND */
  VgpuVirglBindKind bind;
  VgpuVirglBindMode mode;
  uint32_t shader, start, count;
  const uint32_t *handles; /* handles[i * stride], i < count */
  uint32_t stride;
  /* VGPU_VIRGL_EV_PIPE_RESOURCE */
  VgpuResourceDesc desc;
  uint32_t blob_id;
} VgpuVirglEvent;

/* Decodes the command at dword *off of dw[0..ndw).  Returns 1 with *ev
 * filled and *off moved past the command, 0 at the end of the stream, or
 * -EINVAL (with *why, a static string) when the command does not fit in the
 * buffer, is too short for the fields it must carry, or binds a shader
 * stage or slot the renderer would refuse. */
int vgpu_virgl_next(const uint32_t *dw, size_t ndw, size_t *off, VgpuVirglEvent *ev,
                    const char **why);

const char *vgpu_virgl_object_name(uint32_t type);

/* How the tracker charges: the front-end's ledger (or anything else). */
typedef struct VgpuVirglCharger {
  /* false: refused; the front-end has noted why. */
  bool (*reserve)(void *user, VgpuResKind kind, uint64_t amount, const char *what);
  void (*release)(void *user, VgpuResKind kind, uint64_t amount);
  /* Whether the tenant holds a resource with this handle right now. */
  bool (*has_resource)(void *user, uint32_t handle);
  void *user;
  /* Optional.  The last object referring to resource `handle`, which the
   * tenant let go of, is gone from this tracker: true when the front-end
   * takes its charge (`vram` bytes and one VGPU_RES_OBJECTS) over, because
   * something else (another context's objects) still holds the memory;
   * false (or no hook): the tracker releases it. */
  bool (*hand_over)(void *user, uint32_t handle, uint64_t vram);
} VgpuVirglCharger;

/* Shader text (declared length plus the token buffer the renderer
 * allocates) at or above this size is charged as VRAM while the shader
 * lives. */
#define VGPU_VIRGL_SHADER_CHARGE_MIN (64u * 1024u)
/* Default bound on live objects when a profile does not set one. */
#define VGPU_VIRGL_DEFAULT_MAX_OBJECTS 65536u
#define VGPU_VIRGL_MIN_MAX_OBJECTS 64u
#define VGPU_VIRGL_MAX_MAX_OBJECTS (1u << 24)

typedef enum {
  VGPU_VIRGL_OK = 0,
  VGPU_VIRGL_MALFORMED, /* framing: *why says what */
  VGPU_VIRGL_BOUND,     /* more live objects than allowed: *why says so */
  VGPU_VIRGL_REFUSED,   /* the charger refused; it recorded why */
} VgpuVirglResult;

typedef struct VgpuVirglTracker VgpuVirglTracker;

/* max_objects: live objects allowed over all sub-contexts (0: the default). */
VgpuVirglTracker *vgpu_virgl_tracker_new(uint32_t max_objects, const VgpuVirglCharger *charger);
/* Releases every charge the tracker still holds (sub-contexts, shader text,
 * resources kept by objects): call once the renderer context is gone. */
void vgpu_virgl_tracker_free(VgpuVirglTracker *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VgpuVirglTracker, vgpu_virgl_tracker_free)

/* Applies a whole stream to the books before the renderer sees it.  On
 * anything but OK the stream must not be submitted and the session ends;
 * *why (MALFORMED, BOUND) is owned by the caller. */
VgpuVirglResult vgpu_virgl_tracker_submit(VgpuVirglTracker *t, const uint32_t *dw, size_t ndw,
                                          char **why);

/* The same, for a front-end that keeps the tenant running after a refusal
 * (virtio-gpu answers with an error): *applied is the number of dwords of
 * the commands the books took before the one refused (ndw on OK).  A
 * refused command leaves the books as they were, so submitting exactly
 * those dwords leaves the renderer holding what the books say. */
VgpuVirglResult vgpu_virgl_tracker_submit_part(VgpuVirglTracker *t, const uint32_t *dw, size_t ndw,
                                               size_t *applied, char **why);

/* The tenant let go of resource `handle`, which was charged `vram` bytes
 * and one VGPU_RES_OBJECTS.  Released now if no object refers to it, else
 * when the last such object is destroyed. */
void vgpu_virgl_tracker_resource_gone(VgpuVirglTracker *t, uint32_t handle, uint64_t vram);

/* Whether an object of this tracker (or a binding) refers to the
 * resource the tenant holds under `handle` now: the tracker that would keep
 * its memory alive after vgpu_virgl_tracker_resource_gone().  A resource
 * already gone does not count, so a new resource under the same handle is
 * not mistaken for it. */
bool vgpu_virgl_tracker_refers(const VgpuVirglTracker *t, uint32_t handle);

/* Several trackers (one per context of a virtio-gpu device) may refer to
 * one resource, but exactly one holds its charge after the tenant let go
 * of it (vgpu_virgl_tracker_resource_gone()).  Each other one that refers
 * to it retires its references here: they keep nothing charged and are no
 * longer confused with a new resource under the same handle.  False if
 * the tracker did not refer to it. */
bool vgpu_virgl_tracker_resource_retire(VgpuVirglTracker *t, uint32_t handle);
/* The charger's hand_over hook passes a charge on: a tracker whose
 * objects still hold a retired resource `handle` takes `vram` bytes and
 * one VGPU_RES_OBJECTS over (and releases them, or hands them over in
 * turn, when its last such object goes).  False if none of its objects
 * holds one. */
bool vgpu_virgl_tracker_take_over(VgpuVirglTracker *t, uint32_t handle, uint64_t vram);

/* A host3d blob claims the resource a command stream made with this blob
 * id: its description comes back (handle 0) with the VRAM bytes it was
 * charged, which the tracker releases now (the caller charges them again
 * to the blob, which owns the memory from here on).  False if no stream
 * made one. */
bool vgpu_virgl_tracker_blob_take(VgpuVirglTracker *t, uint64_t blob_id, VgpuResourceDesc *desc,
                                  uint64_t *vram);

/* For tests and status. */
uint32_t vgpu_virgl_tracker_blobs(const VgpuVirglTracker *t);   /* unclaimed pipe resources */
uint32_t vgpu_virgl_tracker_objects(const VgpuVirglTracker *t); /* in object tables */
uint32_t vgpu_virgl_tracker_bindings(const VgpuVirglTracker *t);
uint32_t vgpu_virgl_tracker_sub_ctxs(const VgpuVirglTracker *t); /* besides sub-context 0 */
uint32_t vgpu_virgl_tracker_kept_resources(const VgpuVirglTracker *t);
uint64_t vgpu_virgl_tracker_kept_vram(const VgpuVirglTracker *t);
