/* virgl command stream scanner and per-tenant object books (see
 * virgl_stream.h).  The facts about the renderer it mirrors, from
 * virglrenderer's decoder:
 *  - a command whose length runs past the buffer is an error; commands
 *    before it have already run;
 *  - CREATE_OBJECT with handle 0 is refused; a handle already live in the
 *    current sub-context is replaced (the old object is destroyed);
 *    DESTROY_OBJECT of an unknown handle does nothing;
 *  - a shader whose declared text is longer than its command is a "long
 *    shader": the renderer allocates the declared length at once and
 *    later CREATE_OBJECTs flagged OFFSET_CONT append to it;
 *  - sampler views, surfaces, stream-output targets and queries hold a
 *    reference to their resource: the resource lives until they are gone,
 *    whatever the tenant does with its handle;
 *  - bound state holds references too: vertex, index, uniform,
 *    shader-storage and atomic buffers and shader images hold their
 *    resource; bound sampler views, framebuffer surfaces and stream-output
 *    targets hold their object (and so its resource) after DESTROY_OBJECT.
 *    SET_VERTEX_BUFFERS, SET_FRAMEBUFFER_STATE and SET_STREAMOUT_TARGETS
 *    replace the whole list; SET_SAMPLER_VIEWS also unbinds the slots after
 *    the ones it names; the others change only the slots they name;
 *  - PIPE_RESOURCE_CREATE (exactly 11 dwords) makes a resource the
 *    context keeps under its blob id until a host3d blob claims it, or the
 *    context is destroyed;
 *  - sub-context 0 exists with the context and is never destroyed;
 *    CREATE_SUB_CTX of a live id does nothing, of a new id creates a GL
 *    context and makes it current; DESTROY_SUB_CTX of the current one makes
 *    sub-context 0 current; objects live in the sub-context that was
 *    current when they were created. */
#include "core/virgl_stream.h"

#include <errno.h>
#include <string.h>

const char *vgpu_virgl_object_name(uint32_t type) {
  static const char *const names[] = {
      "null",    "blend",           "rasterizer",           "dsa",
      "shader",  "vertex elements", "sampler view",         "sampler state",
      "surface", "query",           "stream-output target", "msaa surface"};
  return type < G_N_ELEMENTS(names) ? names[type] : "unknown object";
}

static uint32_t le32(uint32_t v) {
  return GUINT32_FROM_LE(v);
}

/* Dword index of the resource handle in a CREATE_OBJECT, 0 if none. */
static uint32_t res_field(uint32_t type) {
  switch (type) {
  case VGPU_VIRGL_OBJECT_SAMPLER_VIEW:
  case VGPU_VIRGL_OBJECT_SURFACE:
  case VGPU_VIRGL_OBJECT_MSAA_SURFACE:
  case VGPU_VIRGL_OBJECT_STREAMOUT_TARGET:
    return 2;
  case VGPU_VIRGL_OBJECT_QUERY:
    return 4;
  default:
    return 0;
  }
}

static int bind_event(VgpuVirglEvent *ev, const uint32_t *c, VgpuVirglBindKind kind,
                      VgpuVirglBindMode mode, uint32_t shader, uint32_t start, uint32_t count,
                      uint32_t at, uint32_t stride, const char **why) {
  if (shader >= VGPU_VIRGL_SHADER_STAGES || start > VGPU_VIRGL_MAX_SLOTS ||
      count > VGPU_VIRGL_MAX_SLOTS - start) {
    *why = "binding outside the renderer's shader stages or slots";
    return -EINVAL;
  }
  ev->kind = VGPU_VIRGL_EV_BIND;
  ev->bind = kind;
  ev->mode = mode;
  ev->shader = shader;
  ev->start = start;
  ev->count = count;
  ev->handles = count ? c + at : NULL; /* count comes from the length: all inside */
  ev->stride = stride;
  return 1;
}

/* The binding commands; lengths as the renderer requires them. */
static int bind_command(VgpuVirglEvent *ev, const uint32_t *c, const char **why) {
  uint32_t len = ev->length;
  switch (ev->cmd) {
  case VGPU_VIRGL_CCMD_SET_FRAMEBUFFER_STATE: {
    uint32_t nr = len >= 2 ? le32(c[1]) : 0;
    if (len < 2 || nr > 8 || len != 2 + nr)
      break;
    /* depth-stencil surface at dword 2, then the colour buffers */
    return bind_event(ev, c, VGPU_VIRGL_BIND_FRAMEBUFFER, VGPU_VIRGL_DROP_ALL, 0, 0, nr + 1, 2, 1,
                      why);
  }
  case VGPU_VIRGL_CCMD_SET_VERTEX_BUFFERS:
    if (len % 3)
      break;
    return bind_event(ev, c, VGPU_VIRGL_BIND_VERTEX_BUFFER, VGPU_VIRGL_DROP_ALL, 0, 0, len / 3, 3,
                      3, why);
  case VGPU_VIRGL_CCMD_SET_SAMPLER_VIEWS:
    if (len < 2)
      break;
    return bind_event(ev, c, VGPU_VIRGL_BIND_SAMPLER_VIEW, VGPU_VIRGL_DROP_AFTER, le32(c[1]),
                      le32(c[2]), len - 2, 3, 1, why);
  case VGPU_VIRGL_CCMD_SET_INDEX_BUFFER:
    if (len != 1 && len != 3)
      break;
    return bind_event(ev, c, VGPU_VIRGL_BIND_INDEX_BUFFER, VGPU_VIRGL_KEEP_OTHERS, 0, 0, 1, 1, 1,
                      why);
  case VGPU_VIRGL_CCMD_SET_STREAMOUT_TARGETS:
    if (len < 1)
      break;
    return bind_event(ev, c, VGPU_VIRGL_BIND_STREAMOUT, VGPU_VIRGL_DROP_ALL, 0, 0, len - 1, 2, 1,
                      why);
  case VGPU_VIRGL_CCMD_SET_UNIFORM_BUFFER:
    if (len != 5)
      break;
    return bind_event(ev, c, VGPU_VIRGL_BIND_UNIFORM_BUFFER, VGPU_VIRGL_KEEP_OTHERS, le32(c[1]),
                      le32(c[2]), 1, 5, 1, why);
  case VGPU_VIRGL_CCMD_SET_SHADER_BUFFERS:
  case VGPU_VIRGL_CCMD_SET_SHADER_IMAGES: {
    if (len < 2)
      break;
    bool img = ev->cmd == VGPU_VIRGL_CCMD_SET_SHADER_IMAGES;
    uint32_t elem = img ? 5 : 3;
    uint32_t count = (len - 2) / elem;
    if (count == 0) /* the renderer checks only the stage then */
      return bind_event(ev, c, VGPU_VIRGL_BIND_SHADER_BUFFER, VGPU_VIRGL_KEEP_OTHERS, le32(c[1]), 0,
                        0, 3, elem, why);
    return bind_event(ev, c, img ? VGPU_VIRGL_BIND_SHADER_IMAGE : VGPU_VIRGL_BIND_SHADER_BUFFER,
                      VGPU_VIRGL_KEEP_OTHERS, le32(c[1]), le32(c[2]), count, 2 + elem, elem, why);
  }
  case VGPU_VIRGL_CCMD_SET_ATOMIC_BUFFERS: {
    if (len < 2)
      break;
    uint32_t count = (len - 1) / 3;
    return bind_event(ev, c, VGPU_VIRGL_BIND_ATOMIC_BUFFER, VGPU_VIRGL_KEEP_OTHERS, 0,
                      count ? le32(c[1]) : 0, count, 4, 3, why);
  }
  default:
    ev->kind = VGPU_VIRGL_EV_OTHER;
    return 1;
  }
  *why = "binding command of the wrong length";
  return -EINVAL;
}

int vgpu_virgl_next(const uint32_t *dw, size_t ndw, size_t *off, VgpuVirglEvent *ev,
                    const char **why) {
  memset(ev, 0, sizeof(*ev));
  if (*off >= ndw)
    return 0;
  const uint32_t *c = dw + *off;
  uint32_t hdr = le32(c[0]);
  ev->cmd = hdr & 0xff;
  ev->obj_type = (hdr >> 8) & 0xff;
  ev->length = hdr >> 16;
  if ((uint64_t)ev->length + 1 > ndw - *off) {
    *why = "command runs past the end of the stream";
    return -EINVAL;
  }
  *off += (size_t)ev->length + 1;

  switch (ev->cmd) {
  case VGPU_VIRGL_CCMD_CREATE_OBJECT: {
    if (ev->length < 1) {
      *why = "object creation without a handle";
      return -EINVAL;
    }
    ev->handle = le32(c[1]);
    uint32_t rf = res_field(ev->obj_type);
    if (rf) {
      if (ev->length < rf) {
        *why = "object creation too short for its resource handle";
        return -EINVAL;
      }
      ev->res_handle = le32(c[rf]);
    }
    ev->kind = VGPU_VIRGL_EV_OBJECT_CREATE;
    if (ev->obj_type == VGPU_VIRGL_OBJECT_SHADER) {
      if (ev->length < 4) {
        *why = "shader creation too short for its header";
        return -EINVAL;
      }
      uint32_t offlen = le32(c[3]);
      uint32_t ntok = le32(c[4]);
      if (offlen & VGPU_VIRGL_SHADER_OFFSET_CONT) {
        ev->kind = VGPU_VIRGL_EV_SHADER_CONTINUE;
      } else {
        /* The renderer keeps the declared text (rounded to dwords) and
         * allocates num_tokens + 10 four-byte tokens to translate it. */
        uint64_t text = MAX(((uint64_t)offlen + 3) / 4 * 4, (uint64_t)ev->length * 4);
        ev->bytes = text + ((uint64_t)ntok + 10) * 4;
      }
    }
    return 1;
  }
  case VGPU_VIRGL_CCMD_DESTROY_OBJECT:
    if (ev->length < 1) {
      *why = "object destruction without a handle";
      return -EINVAL;
    }
    ev->handle = le32(c[1]);
    ev->kind = VGPU_VIRGL_EV_OBJECT_DESTROY;
    return 1;
  case VGPU_VIRGL_CCMD_PIPE_RESOURCE_CREATE: {
    if (ev->length != VGPU_VIRGL_PIPE_RES_CREATE_SIZE) {
      *why = "pipe resource creation of the wrong length";
      return -EINVAL;
    }
    VgpuResourceDesc *d = &ev->desc;
    d->target = le32(c[1]);
    d->format = le32(c[2]);
    d->bind = le32(c[3]);
    d->width = le32(c[4]);
    d->height = le32(c[5]);
    d->depth = le32(c[6]);
    d->array_size = le32(c[7]);
    d->last_level = le32(c[8]);
    d->nr_samples = le32(c[9]);
    d->flags = le32(c[10]);
    ev->blob_id = le32(c[11]);
    ev->kind = VGPU_VIRGL_EV_PIPE_RESOURCE;
    return 1;
  }
  case VGPU_VIRGL_CCMD_SET_SUB_CTX:
  case VGPU_VIRGL_CCMD_CREATE_SUB_CTX:
  case VGPU_VIRGL_CCMD_DESTROY_SUB_CTX:
    if (ev->length != 1) {
      *why = "sub-context command with a length other than 1";
      return -EINVAL;
    }
    ev->sub_ctx = le32(c[1]);
    ev->kind = ev->cmd == VGPU_VIRGL_CCMD_SET_SUB_CTX      ? VGPU_VIRGL_EV_SUB_CTX_SET
               : ev->cmd == VGPU_VIRGL_CCMD_CREATE_SUB_CTX ? VGPU_VIRGL_EV_SUB_CTX_CREATE
                                                           : VGPU_VIRGL_EV_SUB_CTX_DESTROY;
    return 1;
  default:
    return bind_command(ev, c, why);
  }
}

/* ---- tracker ------------------------------------------------------------- */

/* A resource that objects refer to.  While the tenant holds the handle it
 * sits in `pins`; once the tenant lets go it moves to `kept` and carries the
 * resource's charge until its last object is destroyed. */
typedef struct Pin {
  uint32_t handle;
  uint32_t refs;
  bool gone;
  bool charged; /* gone: this tracker holds its charge (vram bytes, one object) */
  uint64_t vram;
} Pin;

/* An object lives while its table entry or a binding holds it. */
typedef struct Obj {
  uint32_t type;
  uint32_t refs;
  Pin *pin;
  uint64_t charge; /* VRAM bytes charged for shader text */
} Obj;

/* What one binding slot holds: a resource or an object. */
typedef struct Bound {
  Pin *pin;
  Obj *obj;
} Bound;

#define BIND_KINDS (VGPU_VIRGL_BIND_STREAMOUT + 1)

typedef struct SubCtx {
  uint32_t id;
  GHashTable *objects; /* handle -> Obj* */
  /* Binding slots per kind and shader stage, VGPU_VIRGL_MAX_SLOTS to a
   * row, allocated when first used: a list that replaces its kind walks
   * one row, never every binding. */
  Bound *rows[BIND_KINDS][VGPU_VIRGL_SHADER_STAGES];
} SubCtx;

struct VgpuVirglTracker {
  VgpuVirglCharger ch;
  uint32_t max_objects;
  uint32_t n_objects;
  uint32_t n_bindings;
  GHashTable *subs; /* id -> SubCtx* */
  SubCtx *current;
  SubCtx *sub0;
  GHashTable *pins; /* handle -> Pin*, resources the tenant still holds */
  GHashTable *kept; /* Pin* set, resources kept alive by objects only */
  uint64_t kept_vram;
  GHashTable *blobs; /* blob id -> PipeRes*, made by streams, not yet claimed */
};

typedef struct PipeRes {
  VgpuResourceDesc desc;
  uint64_t vram;
} PipeRes;

static bool reserve(VgpuVirglTracker *t, VgpuResKind kind, uint64_t amount, const char *what) {
  if (amount == 0 || !t->ch.reserve)
    return true;
  return t->ch.reserve(t->ch.user, kind, amount, what);
}

static void release(VgpuVirglTracker *t, VgpuResKind kind, uint64_t amount) {
  if (amount && t->ch.release)
    t->ch.release(t->ch.user, kind, amount);
}

static void unpin(VgpuVirglTracker *t, Pin *p) {
  if (--p->refs > 0)
    return;
  if (p->gone) {
    g_hash_table_remove(t->kept, p);
    t->kept_vram -= p->vram;
    if (p->charged && (!t->ch.hand_over || !t->ch.hand_over(t->ch.user, p->handle, p->vram))) {
      release(t, VGPU_RES_VRAM, p->vram);
      release(t, VGPU_RES_OBJECTS, 1);
    }
  } else {
    g_hash_table_remove(t->pins, GUINT_TO_POINTER(p->handle));
  }
  g_free(p);
}

static Pin *pin_get(VgpuVirglTracker *t, uint32_t handle) {
  Pin *p = g_hash_table_lookup(t->pins, GUINT_TO_POINTER(handle));
  if (!p) {
    p = g_new0(Pin, 1);
    p->handle = handle;
    g_hash_table_insert(t->pins, GUINT_TO_POINTER(handle), p);
  }
  p->refs++;
  return p;
}

static void obj_unref(VgpuVirglTracker *t, Obj *o) {
  if (--o->refs > 0)
    return;
  release(t, VGPU_RES_VRAM, o->charge);
  if (o->pin)
    unpin(t, o->pin);
  g_free(o);
}

/* Takes the object out of its table: it lives on while bindings hold it. */
static void obj_remove(VgpuVirglTracker *t, SubCtx *s, uint32_t handle) {
  Obj *o = g_hash_table_lookup(s->objects, GUINT_TO_POINTER(handle));
  if (!o)
    return;
  g_hash_table_remove(s->objects, GUINT_TO_POINTER(handle));
  t->n_objects--;
  obj_unref(t, o);
}

/* Empties a slot. */
static void bound_clear(VgpuVirglTracker *t, Bound *b) {
  if (!b->pin && !b->obj)
    return;
  if (b->pin)
    unpin(t, b->pin);
  if (b->obj)
    obj_unref(t, b->obj);
  b->pin = NULL;
  b->obj = NULL;
  t->n_bindings--;
}

/* Unbinds the slots of (kind, shader) from `from` on. */
static void unbind_from(VgpuVirglTracker *t, SubCtx *s, VgpuVirglBindKind kind, uint32_t shader,
                        uint32_t from) {
  Bound *row = s->rows[kind][shader];
  for (uint32_t i = from; row && i < VGPU_VIRGL_MAX_SLOTS; i++)
    bound_clear(t, &row[i]);
}

static bool bind_holds_object(VgpuVirglBindKind kind, uint32_t type) {
  switch (kind) {
  case VGPU_VIRGL_BIND_SAMPLER_VIEW:
    return type == VGPU_VIRGL_OBJECT_SAMPLER_VIEW;
  case VGPU_VIRGL_BIND_FRAMEBUFFER:
    return type == VGPU_VIRGL_OBJECT_SURFACE || type == VGPU_VIRGL_OBJECT_MSAA_SURFACE;
  case VGPU_VIRGL_BIND_STREAMOUT:
    return type == VGPU_VIRGL_OBJECT_STREAMOUT_TARGET;
  default:
    return false;
  }
}

static void bind_slot(VgpuVirglTracker *t, SubCtx *s, VgpuVirglBindKind kind, uint32_t shader,
                      uint32_t slot, uint32_t handle) {
  Bound **row = &s->rows[kind][shader];
  if (!*row && !handle)
    return;
  if (!*row)
    *row = g_new0(Bound, VGPU_VIRGL_MAX_SLOTS);
  Bound b = {NULL, NULL};
  /* Take the new reference before dropping the old: rebinding the same
   * thing must not free it in between. */
  if (handle && kind >= VGPU_VIRGL_BIND_SAMPLER_VIEW) {
    Obj *o = g_hash_table_lookup(s->objects, GUINT_TO_POINTER(handle));
    if (o && bind_holds_object(kind, o->type)) {
      o->refs++;
      b.obj = o;
    }
  } else if (handle && t->ch.has_resource && t->ch.has_resource(t->ch.user, handle)) {
    b.pin = pin_get(t, handle);
  }
  bound_clear(t, &(*row)[slot]);
  if (b.pin || b.obj) {
    (*row)[slot] = b;
    t->n_bindings++;
  }
}

static void bind(VgpuVirglTracker *t, const VgpuVirglEvent *ev) {
  SubCtx *s = t->current;
  if (ev->mode == VGPU_VIRGL_DROP_ALL)
    unbind_from(t, s, ev->bind, ev->shader, 0);
  for (uint32_t i = 0; i < ev->count; i++)
    bind_slot(t, s, ev->bind, ev->shader, ev->start + i, le32(ev->handles[i * ev->stride]));
  if (ev->mode == VGPU_VIRGL_DROP_AFTER)
    unbind_from(t, s, ev->bind, ev->shader, ev->start + ev->count);
}

static SubCtx *sub_new(VgpuVirglTracker *t, uint32_t id) {
  SubCtx *s = g_new0(SubCtx, 1);
  s->id = id;
  s->objects = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_hash_table_insert(t->subs, GUINT_TO_POINTER(id), s);
  return s;
}

static void sub_free(VgpuVirglTracker *t, SubCtx *s) {
  for (uint32_t k = 0; k < BIND_KINDS; k++)
    for (uint32_t sh = 0; sh < VGPU_VIRGL_SHADER_STAGES; sh++) {
      unbind_from(t, s, (VgpuVirglBindKind)k, sh, 0);
      g_free(s->rows[k][sh]);
    }
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, s->objects);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    g_hash_table_iter_remove(&it);
    t->n_objects--;
    obj_unref(t, v);
  }
  g_hash_table_unref(s->objects);
  g_free(s);
}

VgpuVirglTracker *vgpu_virgl_tracker_new(uint32_t max_objects, const VgpuVirglCharger *charger) {
  VgpuVirglTracker *t = g_new0(VgpuVirglTracker, 1);
  if (charger)
    t->ch = *charger;
  t->max_objects = max_objects ? max_objects : VGPU_VIRGL_DEFAULT_MAX_OBJECTS;
  t->subs = g_hash_table_new(g_direct_hash, g_direct_equal);
  t->pins = g_hash_table_new(g_direct_hash, g_direct_equal);
  t->kept = g_hash_table_new(g_direct_hash, g_direct_equal);
  t->blobs = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  t->sub0 = t->current = sub_new(t, 0);
  return t;
}

void vgpu_virgl_tracker_free(VgpuVirglTracker *t) {
  if (!t)
    return;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, t->subs);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    g_hash_table_iter_remove(&it);
    if (GPOINTER_TO_UINT(k) != 0)
      release(t, VGPU_RES_CONTEXTS, 1);
    sub_free(t, v);
  }
  g_hash_table_iter_init(&it, t->blobs);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    release(t, VGPU_RES_VRAM, ((PipeRes *)v)->vram);
    g_hash_table_iter_remove(&it);
  }
  g_hash_table_unref(t->blobs);
  /* Every pin was held by an object: none can be left. */
  g_warn_if_fail(g_hash_table_size(t->pins) == 0 && g_hash_table_size(t->kept) == 0);
  g_hash_table_unref(t->subs);
  g_hash_table_unref(t->pins);
  g_hash_table_unref(t->kept);
  g_free(t);
}

void vgpu_virgl_tracker_resource_gone(VgpuVirglTracker *t, uint32_t handle, uint64_t vram) {
  Pin *p = t ? g_hash_table_lookup(t->pins, GUINT_TO_POINTER(handle)) : NULL;
  if (!p) {
    if (t) {
      release(t, VGPU_RES_VRAM, vram);
      release(t, VGPU_RES_OBJECTS, 1);
    }
    return;
  }
  g_hash_table_remove(t->pins, GUINT_TO_POINTER(handle));
  p->gone = true;
  p->charged = true;
  p->vram = vram;
  t->kept_vram += vram;
  g_hash_table_add(t->kept, p);
}

bool vgpu_virgl_tracker_resource_retire(VgpuVirglTracker *t, uint32_t handle) {
  Pin *p = t ? g_hash_table_lookup(t->pins, GUINT_TO_POINTER(handle)) : NULL;
  if (!p)
    return false;
  g_hash_table_remove(t->pins, GUINT_TO_POINTER(handle));
  p->gone = true;
  g_hash_table_add(t->kept, p);
  return true;
}

bool vgpu_virgl_tracker_take_over(VgpuVirglTracker *t, uint32_t handle, uint64_t vram) {
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, t->kept);
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    Pin *p = k;
    if (p->handle == handle && !p->charged) {
      p->charged = true;
      p->vram = vram;
      t->kept_vram += vram;
      return true;
    }
  }
  return false;
}

bool vgpu_virgl_tracker_refers(const VgpuVirglTracker *t, uint32_t handle) {
  return t && g_hash_table_contains(t->pins, GUINT_TO_POINTER(handle));
}

static VgpuVirglResult object_create(VgpuVirglTracker *t, const VgpuVirglEvent *ev, char **why) {
  if (ev->handle == 0)
    return VGPU_VIRGL_OK; /* the renderer refuses it and the session ends */
  /* The renderer replaces a live handle; a refused command changes
   * nothing, so the old object goes only once the new one is accepted. */
  bool replaces = g_hash_table_contains(t->current->objects, GUINT_TO_POINTER(ev->handle));
  if (!replaces && t->n_objects >= t->max_objects) {
    *why = g_strdup_printf("creating a %s (handle %u) would exceed the bound of %u stream "
                           "objects",
                           vgpu_virgl_object_name(ev->obj_type), ev->handle, t->max_objects);
    return VGPU_VIRGL_BOUND;
  }
  Obj *o = g_new0(Obj, 1);
  o->type = ev->obj_type;
  o->refs = 1;
  if (ev->obj_type == VGPU_VIRGL_OBJECT_SHADER && ev->bytes >= VGPU_VIRGL_SHADER_CHARGE_MIN) {
    char what[64];
    g_snprintf(what, sizeof(what), "shader %u", ev->handle);
    if (!reserve(t, VGPU_RES_VRAM, ev->bytes, what)) {
      g_free(o);
      return VGPU_VIRGL_REFUSED;
    }
    o->charge = ev->bytes;
  }
  obj_remove(t, t->current, ev->handle);
  if (ev->res_handle && t->ch.has_resource && t->ch.has_resource(t->ch.user, ev->res_handle))
    o->pin = pin_get(t, ev->res_handle);
  t->n_objects++;
  g_hash_table_insert(t->current->objects, GUINT_TO_POINTER(ev->handle), o);
  return VGPU_VIRGL_OK;
}

/* The renderer allocates the resource when the stream runs: it is charged
 * from then on, and counts against the bound on stream objects. */
static VgpuVirglResult pipe_resource(VgpuVirglTracker *t, const VgpuVirglEvent *ev, char **why) {
  uint64_t size = 0;
  const char *bad = NULL;
  if (ev->blob_id == 0) {
    *why = g_strdup("virgl command stream: pipe resource with blob id 0");
    return VGPU_VIRGL_MALFORMED;
  }
  if (g_hash_table_contains(t->blobs, GUINT_TO_POINTER(ev->blob_id))) {
    *why = g_strdup_printf("virgl command stream: pipe resource with blob id %u, which is "
                           "already waiting for its blob",
                           ev->blob_id);
    return VGPU_VIRGL_MALFORMED;
  }
  int r = vgpu_resource_size(&ev->desc, &size, &bad);
  if (r < 0) {
    *why = g_strdup_printf("virgl command stream: invalid pipe resource for blob %u: %s",
                           ev->blob_id, bad ? bad : g_strerror(-r));
    return VGPU_VIRGL_MALFORMED;
  }
  if (t->n_objects + g_hash_table_size(t->blobs) >= t->max_objects) {
    *why = g_strdup_printf("pipe resource for blob %u would exceed the bound of %u stream objects",
                           ev->blob_id, t->max_objects);
    return VGPU_VIRGL_BOUND;
  }
  char what[64];
  g_snprintf(what, sizeof(what), "pipe resource for blob %u", ev->blob_id);
  if (!reserve(t, VGPU_RES_VRAM, size, what))
    return VGPU_VIRGL_REFUSED;
  PipeRes *p = g_new0(PipeRes, 1);
  p->desc = ev->desc;
  p->vram = size;
  g_hash_table_insert(t->blobs, GUINT_TO_POINTER(ev->blob_id), p);
  return VGPU_VIRGL_OK;
}

bool vgpu_virgl_tracker_blob_take(VgpuVirglTracker *t, uint64_t blob_id, VgpuResourceDesc *desc,
                                  uint64_t *vram) {
  if (blob_id == 0 || blob_id > UINT32_MAX)
    return false;
  PipeRes *p = g_hash_table_lookup(t->blobs, GUINT_TO_POINTER((uint32_t)blob_id));
  if (!p)
    return false;
  *desc = p->desc;
  *vram = p->vram;
  release(t, VGPU_RES_VRAM, p->vram);
  g_hash_table_remove(t->blobs, GUINT_TO_POINTER((uint32_t)blob_id));
  return true;
}

uint32_t vgpu_virgl_tracker_blobs(const VgpuVirglTracker *t) {
  return g_hash_table_size(t->blobs);
}

static VgpuVirglResult apply(VgpuVirglTracker *t, const VgpuVirglEvent *ev, char **why) {
  switch (ev->kind) {
  case VGPU_VIRGL_EV_PIPE_RESOURCE:
    return pipe_resource(t, ev, why);
  case VGPU_VIRGL_EV_OBJECT_CREATE:
    return object_create(t, ev, why);
  case VGPU_VIRGL_EV_OBJECT_DESTROY:
    obj_remove(t, t->current, ev->handle);
    return VGPU_VIRGL_OK;
  case VGPU_VIRGL_EV_BIND:
    bind(t, ev);
    return VGPU_VIRGL_OK;
  case VGPU_VIRGL_EV_SUB_CTX_CREATE: {
    if (g_hash_table_contains(t->subs, GUINT_TO_POINTER(ev->sub_ctx)))
      return VGPU_VIRGL_OK;
    char what[64];
    g_snprintf(what, sizeof(what), "sub-context %u", ev->sub_ctx);
    if (!reserve(t, VGPU_RES_CONTEXTS, 1, what))
      return VGPU_VIRGL_REFUSED;
    t->current = sub_new(t, ev->sub_ctx);
    return VGPU_VIRGL_OK;
  }
  case VGPU_VIRGL_EV_SUB_CTX_DESTROY: {
    SubCtx *s = ev->sub_ctx ? g_hash_table_lookup(t->subs, GUINT_TO_POINTER(ev->sub_ctx)) : NULL;
    if (!s)
      return VGPU_VIRGL_OK;
    if (t->current == s)
      t->current = t->sub0;
    g_hash_table_remove(t->subs, GUINT_TO_POINTER(ev->sub_ctx));
    sub_free(t, s);
    release(t, VGPU_RES_CONTEXTS, 1);
    return VGPU_VIRGL_OK;
  }
  case VGPU_VIRGL_EV_SUB_CTX_SET: {
    SubCtx *s = g_hash_table_lookup(t->subs, GUINT_TO_POINTER(ev->sub_ctx));
    if (s)
      t->current = s;
    return VGPU_VIRGL_OK;
  }
  default:
    return VGPU_VIRGL_OK;
  }
}

VgpuVirglResult vgpu_virgl_tracker_submit(VgpuVirglTracker *t, const uint32_t *dw, size_t ndw,
                                          char **why) {
  size_t applied;
  return vgpu_virgl_tracker_submit_part(t, dw, ndw, &applied, why);
}

VgpuVirglResult vgpu_virgl_tracker_submit_part(VgpuVirglTracker *t, const uint32_t *dw, size_t ndw,
                                               size_t *applied, char **why) {
  size_t off = 0;
  for (;;) {
    VgpuVirglEvent ev;
    const char *w = NULL;
    size_t at = off;
    *applied = at;
    int r = vgpu_virgl_next(dw, ndw, &off, &ev, &w);
    if (r == 0)
      return VGPU_VIRGL_OK;
    if (r < 0) {
      *why = g_strdup_printf("virgl command stream: %s (dword %zu of %zu, header 0x%08x)", w, at,
                             ndw, le32(dw[at]));
      return VGPU_VIRGL_MALFORMED;
    }
    VgpuVirglResult res = apply(t, &ev, why);
    if (res != VGPU_VIRGL_OK)
      return res;
  }
}

uint32_t vgpu_virgl_tracker_objects(const VgpuVirglTracker *t) {
  return t->n_objects;
}

uint32_t vgpu_virgl_tracker_bindings(const VgpuVirglTracker *t) {
  return t->n_bindings;
}

uint32_t vgpu_virgl_tracker_sub_ctxs(const VgpuVirglTracker *t) {
  return g_hash_table_size(t->subs) - 1;
}

uint32_t vgpu_virgl_tracker_kept_resources(const VgpuVirglTracker *t) {
  return g_hash_table_size(t->kept);
}

uint64_t vgpu_virgl_tracker_kept_vram(const VgpuVirglTracker *t) {
  return t->kept_vram;
}
