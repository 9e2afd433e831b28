/* virgl command stream scanner and object books: framing, the events each
 * command yields, and the charges the tracker makes and gives back as the
 * renderer would create and free (replace on a live handle, per
 * sub-context tables, resources kept by views). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/virgl_stream.h"

#define CMD0(cmd, obj, len) ((uint32_t)(cmd) | ((uint32_t)(obj) << 8) | ((uint32_t)(len) << 16))

/* A fake ledger: what is charged per kind, with an optional limit. */
typedef struct {
  uint64_t used[VGPU_RES_N_QUOTA];
  uint64_t limit[VGPU_RES_N_QUOTA]; /* 0: none */
  GHashTable *resources;            /* handles the tenant holds */
  char last_refusal[128];
} Books;

static bool b_reserve(void *user, VgpuResKind k, uint64_t amount, const char *what) {
  Books *b = user;
  if (b->limit[k] && b->used[k] + amount > b->limit[k]) {
    g_snprintf(b->last_refusal, sizeof(b->last_refusal), "%s", what);
    return false;
  }
  b->used[k] += amount;
  return true;
}

static void b_release(void *user, VgpuResKind k, uint64_t amount) {
  Books *b = user;
  assert_true(b->used[k] >= amount); /* never gives back more than it took */
  b->used[k] -= amount;
}

static bool b_has(void *user, uint32_t handle) {
  return g_hash_table_contains(((Books *)user)->resources, GUINT_TO_POINTER(handle));
}

typedef struct {
  Books b;
  VgpuVirglTracker *t;
} Fix;

static int setup(void **state) {
  Fix *f = g_new0(Fix, 1);
  f->b.resources = g_hash_table_new(g_direct_hash, g_direct_equal);
  VgpuVirglCharger ch = {
      .reserve = b_reserve, .release = b_release, .has_resource = b_has, .user = &f->b};
  f->t = vgpu_virgl_tracker_new(VGPU_VIRGL_MIN_MAX_OBJECTS, &ch);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  Fix *f = *state;
  vgpu_virgl_tracker_free(f->t);
  /* Everything the tracker charged comes back when it goes. */
  assert_int_equal(f->b.used[VGPU_RES_CONTEXTS], 0);
  g_hash_table_unref(f->b.resources);
  g_free(f);
  return 0;
}

/* A tenant resource: charged 1000 bytes and one object, as the session does. */
static void resource(Fix *f, uint32_t h) {
  g_hash_table_add(f->b.resources, GUINT_TO_POINTER(h));
  f->b.used[VGPU_RES_VRAM] += 1000;
  f->b.used[VGPU_RES_OBJECTS] += 1;
}

static void unref(Fix *f, uint32_t h) {
  g_hash_table_remove(f->b.resources, GUINT_TO_POINTER(h));
  vgpu_virgl_tracker_resource_gone(f->t, h, 1000);
}

static VgpuVirglResult submit(Fix *f, const uint32_t *dw, size_t n) {
  char *why = NULL;
  VgpuVirglResult r = vgpu_virgl_tracker_submit(f->t, dw, n, &why);
  assert_true((r == VGPU_VIRGL_MALFORMED || r == VGPU_VIRGL_BOUND) == (why != NULL));
  g_free(why);
  return r;
}

#define SUBMIT(f, ...)                                                                             \
  submit(f, (const uint32_t[]){__VA_ARGS__}, sizeof((const uint32_t[]){__VA_ARGS__}) / 4)

static void view(uint32_t *w, uint32_t handle, uint32_t res) {
  uint32_t v[7] = {CMD0(1, VGPU_VIRGL_OBJECT_SAMPLER_VIEW, 6), handle, res, 2, 0, 0, 0};
  memcpy(w, v, sizeof(v));
}

/* ---- scanner -------------------------------------------------------------- */

static void test_next_events(void **state) {
  (void)state;
  uint32_t s[] = {
      CMD0(0, 0, 0), /* NOP */
      CMD0(1, VGPU_VIRGL_OBJECT_SURFACE, 5),
      7,
      3,
      2,
      0,
      0, /* surface 7 of resource 3 */
      CMD0(1, VGPU_VIRGL_OBJECT_QUERY, 4),
      8,
      0,
      0,
      4, /* query 8, result in resource 4 */
      CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5),
      9,
      1,
      1u << 20,
      50,
      0, /* long shader */
      CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5),
      9,
      1,
      VGPU_VIRGL_SHADER_OFFSET_CONT | 20,
      50,
      0,
      CMD0(3, VGPU_VIRGL_OBJECT_SURFACE, 1),
      7,
      CMD0(29, 0, 1),
      5,
      CMD0(28, 0, 1),
      5,
      CMD0(30, 0, 1),
      5,
      CMD0(7, 0, 2),
      1,
      2, /* CLEAR-like: something else */
  };
  size_t off = 0, n = G_N_ELEMENTS(s);
  VgpuVirglEvent ev;
  const char *why = NULL;
  struct {
    VgpuVirglEventKind kind;
    uint32_t handle, res, sub;
  } want[] = {{VGPU_VIRGL_EV_OTHER},
              {VGPU_VIRGL_EV_OBJECT_CREATE, 7, 3},
              {VGPU_VIRGL_EV_OBJECT_CREATE, 8, 4},
              {VGPU_VIRGL_EV_OBJECT_CREATE, 9, 0},
              {VGPU_VIRGL_EV_SHADER_CONTINUE, 9, 0},
              {VGPU_VIRGL_EV_OBJECT_DESTROY, 7, 0},
              {VGPU_VIRGL_EV_SUB_CTX_CREATE, 0, 0, 5},
              {VGPU_VIRGL_EV_SUB_CTX_SET, 0, 0, 5},
              {VGPU_VIRGL_EV_SUB_CTX_DESTROY, 0, 0, 5},
              {VGPU_VIRGL_EV_OTHER}};
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
    assert_int_equal(vgpu_virgl_next(s, n, &off, &ev, &why), 1);
    assert_int_equal(ev.kind, want[i].kind);
    assert_int_equal(ev.handle, want[i].handle);
    assert_int_equal(ev.res_handle, want[i].res);
    assert_int_equal(ev.sub_ctx, want[i].sub);
    if (i == 3) /* declared text + (50 + 10) tokens */
      assert_int_equal(ev.bytes, (1u << 20) + 60 * 4);
  }
  assert_int_equal(vgpu_virgl_next(s, n, &off, &ev, &why), 0);
  assert_int_equal(off, n);
}

static void test_next_framing(void **state) {
  (void)state;
  VgpuVirglEvent ev;
  const char *why = NULL;
  size_t off = 0;
  /* length 3 with 2 dwords left */
  uint32_t past[] = {CMD0(0, 0, 0), CMD0(8, 0, 3), 1, 2};
  assert_int_equal(vgpu_virgl_next(past, 4, &off, &ev, &why), 1);
  assert_int_equal(vgpu_virgl_next(past, 4, &off, &ev, &why), -EINVAL);
  assert_non_null(strstr(why, "past the end"));
  /* the largest length (65535) on a short buffer */
  uint32_t huge[] = {CMD0(1, 1, 0xffff), 1};
  off = 0;
  assert_int_equal(vgpu_virgl_next(huge, 2, &off, &ev, &why), -EINVAL);
  /* a view without room for its resource handle */
  uint32_t shortv[] = {CMD0(1, VGPU_VIRGL_OBJECT_SAMPLER_VIEW, 1), 5};
  off = 0;
  assert_int_equal(vgpu_virgl_next(shortv, 2, &off, &ev, &why), -EINVAL);
  /* sub-context commands carry exactly one dword */
  uint32_t sub[] = {CMD0(29, 0, 2), 1, 2};
  off = 0;
  assert_int_equal(vgpu_virgl_next(sub, 3, &off, &ev, &why), -EINVAL);
  uint32_t nohandle[] = {CMD0(1, VGPU_VIRGL_OBJECT_BLEND, 0)};
  off = 0;
  assert_int_equal(vgpu_virgl_next(nohandle, 1, &off, &ev, &why), -EINVAL);
}

/* ---- tracker -------------------------------------------------------------- */

static void test_view_keeps_resource(void **state) {
  Fix *f = *state;
  resource(f, 1);
  uint32_t w[14];
  view(w, 10, 1);
  view(w + 7, 11, 1);
  assert_int_equal(submit(f, w, 14), VGPU_VIRGL_OK);
  unref(f, 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000);
  assert_int_equal(f->b.used[VGPU_RES_OBJECTS], 1);
  assert_int_equal(vgpu_virgl_tracker_kept_resources(f->t), 1);
  assert_int_equal(vgpu_virgl_tracker_kept_vram(f->t), 1000);
  /* The handle is free again: a new resource with it is a different one. */
  resource(f, 1);
  view(w, 12, 1);
  assert_int_equal(submit(f, w, 7), VGPU_VIRGL_OK);
  assert_int_equal(SUBMIT(f, CMD0(3, 0, 1), 10, CMD0(3, 0, 1), 11), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000); /* only the new one */
  assert_int_equal(vgpu_virgl_tracker_kept_resources(f->t), 0);
  unref(f, 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000); /* view 12 */
  /* A create on a live handle replaces (and frees) the old object. */
  uint32_t ss[10] = {CMD0(1, VGPU_VIRGL_OBJECT_SAMPLER_STATE, 9), 12};
  assert_int_equal(submit(f, ss, 10), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
  assert_int_equal(f->b.used[VGPU_RES_OBJECTS], 0);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 1);
  /* Destroying an unknown handle is harmless. */
  assert_int_equal(SUBMIT(f, CMD0(3, 0, 1), 999), VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 1);
}

static void test_resource_without_objects_released_at_once(void **state) {
  Fix *f = *state;
  resource(f, 4);
  unref(f, 4);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
  assert_int_equal(f->b.used[VGPU_RES_OBJECTS], 0);
  /* a view of a handle the tenant does not hold pins nothing */
  uint32_t w[7];
  view(w, 3, 4);
  assert_int_equal(submit(f, w, 7), VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_kept_resources(f->t), 0);
}

static void test_sub_contexts(void **state) {
  Fix *f = *state;
  f->b.limit[VGPU_RES_CONTEXTS] = 2;
  resource(f, 1);
  /* sub-context 1 is created and made current; its view pins resource 1 */
  uint32_t w[9] = {CMD0(29, 0, 1), 1};
  view(w + 2, 5, 1);
  assert_int_equal(submit(f, w, 9), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_CONTEXTS], 1);
  assert_int_equal(vgpu_virgl_tracker_sub_ctxs(f->t), 1);
  /* the same handle in sub-context 0 is another object */
  uint32_t w0[9] = {CMD0(28, 0, 1), 0};
  view(w0 + 2, 5, 1);
  assert_int_equal(submit(f, w0, 9), VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 2);
  unref(f, 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000);
  /* destroying sub-context 1 destroys its view; sub-context 0's stays */
  assert_int_equal(SUBMIT(f, CMD0(30, 0, 1), 1), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_CONTEXTS], 0);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000);
  /* sub-context 0 cannot be destroyed; switching to an unknown id keeps
   * the current one; the view goes with a destroy there */
  assert_int_equal(SUBMIT(f, CMD0(30, 0, 1), 0, CMD0(28, 0, 1), 77, CMD0(3, 0, 1), 5),
                   VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 0);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
  /* the limit: two sub-contexts fit, a third is refused */
  assert_int_equal(SUBMIT(f, CMD0(29, 0, 1), 2, CMD0(29, 0, 1), 3, CMD0(29, 0, 1), 2),
                   VGPU_VIRGL_OK);
  assert_int_equal(SUBMIT(f, CMD0(29, 0, 1), 4), VGPU_VIRGL_REFUSED);
  assert_string_equal(f->b.last_refusal, "sub-context 4");
  /* destroying the current sub-context makes 0 current: objects land there */
  uint32_t ss[12] = {CMD0(30, 0, 1), 3, CMD0(1, VGPU_VIRGL_OBJECT_SAMPLER_STATE, 9), 40};
  assert_int_equal(submit(f, ss, 12), VGPU_VIRGL_OK);
  assert_int_equal(SUBMIT(f, CMD0(30, 0, 1), 2), VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 1);
}

static void test_object_bound(void **state) {
  Fix *f = *state; /* 64 */
  uint32_t ss[10 * 64];
  for (uint32_t i = 0; i < 64; i++) {
    memset(ss + i * 10, 0, 40);
    ss[i * 10] = CMD0(1, VGPU_VIRGL_OBJECT_SAMPLER_STATE, 9);
    ss[i * 10 + 1] = i + 1;
  }
  assert_int_equal(submit(f, ss, G_N_ELEMENTS(ss)), VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 64);
  uint32_t one[10] = {CMD0(1, VGPU_VIRGL_OBJECT_BLEND, 9), 1000};
  assert_int_equal(submit(f, one, 10), VGPU_VIRGL_BOUND);
  /* a destroy makes room */
  assert_int_equal(SUBMIT(f, CMD0(3, 0, 1), 5), VGPU_VIRGL_OK);
  assert_int_equal(submit(f, one, 10), VGPU_VIRGL_OK);
}

static void test_shader_text_charged(void **state) {
  Fix *f = *state;
  f->b.limit[VGPU_RES_VRAM] = 4u << 20;
  /* small shaders cost nothing */
  assert_int_equal(SUBMIT(f, CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5), 1, 1, 8, 10, 0, 0),
                   VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
  /* a declared 1 MiB long shader is charged while it lives */
  assert_int_equal(SUBMIT(f, CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5), 2, 1, 1u << 20, 0, 0),
                   VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], (1u << 20) + 40);
  /* its continuation is not a new object */
  assert_int_equal(SUBMIT(f, CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5), 2, 1,
                          VGPU_VIRGL_SHADER_OFFSET_CONT | 4, 0, 0),
                   VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 2);
  /* 8 MiB of declared text does not fit in 4 MiB */
  assert_int_equal(SUBMIT(f, CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5), 3, 1, 8u << 20, 0, 0),
                   VGPU_VIRGL_REFUSED);
  assert_string_equal(f->b.last_refusal, "shader 3");
  /* nor do 2^32 declared tokens */
  assert_int_equal(SUBMIT(f, CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5), 4, 1, 8, 0xffffffffu, 0),
                   VGPU_VIRGL_REFUSED);
  assert_int_equal(SUBMIT(f, CMD0(3, 0, 1), 2), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
}

/* Bound state holds what it binds: a bound view outlives DESTROY_OBJECT,
 * a bound buffer outlives RESOURCE_UNREF, until the binding changes. */
static void test_bindings_keep_resources(void **state) {
  Fix *f = *state;
  resource(f, 1);
  resource(f, 2);
  resource(f, 3);
  resource(f, 4);
  uint32_t w[7];
  view(w, 5, 1);
  assert_int_equal(submit(f, w, 7), VGPU_VIRGL_OK);
  assert_int_equal(SUBMIT(f, CMD0(1, VGPU_VIRGL_OBJECT_SURFACE, 5), 7, 3, 2, 0, 0, CMD0(10, 0, 3),
                          1, 0, 5,                             /* fragment view slot 0 */
                          CMD0(6, 0, 3), 16, 0, 2,             /* vertex buffer 0 */
                          CMD0(5, 0, 3), 1, 0, 7,              /* colour buffer 0 */
                          CMD0(27, 0, 5), 0, 1, 0, 64, 4,      /* uniform buffer 1 */
                          CMD0(27, 0, 5), 0, 2, 0, 64, 0,      /* another slot: 1 stays */
                          CMD0(3, 0, 1), 5, CMD0(3, 0, 1), 7), /* destroy view, surface */
                   VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 0);
  assert_int_equal(vgpu_virgl_tracker_bindings(f->t), 4);
  for (uint32_t h = 1; h <= 4; h++)
    unref(f, h);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 4000);
  assert_int_equal(vgpu_virgl_tracker_kept_resources(f->t), 4);
  /* unbinding each lets its resource go */
  assert_int_equal(SUBMIT(f, CMD0(10, 0, 2), 1, 0), VGPU_VIRGL_OK); /* no views from slot 0 */
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 3000);
  assert_int_equal(SUBMIT(f, CMD0(6, 0, 0)), VGPU_VIRGL_OK); /* no vertex buffers */
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 2000);
  assert_int_equal(SUBMIT(f, CMD0(5, 0, 2), 0, 0), VGPU_VIRGL_OK); /* no attachments */
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000);
  assert_int_equal(SUBMIT(f, CMD0(27, 0, 5), 0, 1, 0, 0, 0), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
  assert_int_equal(f->b.used[VGPU_RES_OBJECTS], 0);
  assert_int_equal(vgpu_virgl_tracker_bindings(f->t), 0);
}

/* Rebinding what is bound keeps it; a sub-context takes its bindings with it. */
static void test_rebind_and_sub_context_bindings(void **state) {
  Fix *f = *state;
  resource(f, 1);
  assert_int_equal(SUBMIT(f, CMD0(29, 0, 1), 3, CMD0(11, 0, 3), 1, 2, 0, CMD0(11, 0, 3), 1, 2, 0),
                   VGPU_VIRGL_OK);
  unref(f, 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 1000);
  assert_int_equal(SUBMIT(f, CMD0(30, 0, 1), 3), VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
  assert_int_equal(vgpu_virgl_tracker_bindings(f->t), 0);
}

static void test_bindings_outside_slots(void **state) {
  Fix *f = *state;
  assert_int_equal(SUBMIT(f, CMD0(10, 0, 3), 6, 0, 1), VGPU_VIRGL_MALFORMED); /* stage 6 */
  assert_int_equal(SUBMIT(f, CMD0(34, 0, 5), 0, 64, 0, 0, 1), VGPU_VIRGL_MALFORMED);
  assert_int_equal(SUBMIT(f, CMD0(5, 0, 2), 9, 0), VGPU_VIRGL_MALFORMED); /* 9 colour buffers */
  assert_int_equal(SUBMIT(f, CMD0(6, 0, 2), 0, 0), VGPU_VIRGL_MALFORMED); /* not 3 per buffer */
  /* empty shader-buffer and atomic lists change nothing, wherever they start */
  assert_int_equal(SUBMIT(f, CMD0(34, 0, 2), 0, 1000, CMD0(40, 0, 2), 1000, 0), VGPU_VIRGL_OK);
}

/* The end of the tracker gives back what objects still kept. */
static void test_free_releases_everything(void **state) {
  Fix *f = *state;
  resource(f, 1);
  resource(f, 2);
  uint32_t w[2 + 7 + 7];
  w[0] = CMD0(29, 0, 1);
  w[1] = 9;
  view(w + 2, 1, 1);
  view(w + 9, 2, 2);
  assert_int_equal(submit(f, w, G_N_ELEMENTS(w)), VGPU_VIRGL_OK);
  unref(f, 1);
  unref(f, 2);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 2000);
  vgpu_virgl_tracker_free(f->t);
  f->t = NULL;
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    assert_int_equal(f->b.used[k], 0);
}

/* PIPE_RESOURCE_CREATE: charged when the stream runs, handed to the blob
 * that claims its id, released with the tracker if none does. */
static void test_pipe_resources(void **state) {
  Fix *f = *state;
  /* 4096-byte buffer (R8, width 4096) for blob 3; 2D 64x64 RGBA for blob 4 */
  assert_int_equal(SUBMIT(f, CMD0(48, 0, 11), 0, 64, 16, 4096, 1, 1, 1, 0, 0, 0, 3, CMD0(48, 0, 11),
                          2, 1, 2, 64, 64, 1, 1, 0, 0, 0, 4),
                   VGPU_VIRGL_OK);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 4096 + 64 * 64 * 4);
  assert_int_equal(vgpu_virgl_tracker_blobs(f->t), 2);
  VgpuResourceDesc d;
  uint64_t vram = 0;
  assert_false(vgpu_virgl_tracker_blob_take(f->t, 5, &d, &vram));
  assert_false(vgpu_virgl_tracker_blob_take(f->t, (1ull << 32) | 3, &d, &vram));
  assert_true(vgpu_virgl_tracker_blob_take(f->t, 4, &d, &vram));
  assert_int_equal(vram, 64 * 64 * 4);
  assert_int_equal(d.target, 2);
  assert_int_equal(d.width, 64);
  assert_int_equal(d.format, 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 4096); /* the caller charges it now */
  assert_false(vgpu_virgl_tracker_blob_take(f->t, 4, &d, &vram));
  /* blob id 0, a pending id again, a bad description, a wrong length */
  assert_int_equal(SUBMIT(f, CMD0(48, 0, 11), 0, 64, 16, 4096, 1, 1, 1, 0, 0, 0, 0),
                   VGPU_VIRGL_MALFORMED);
  assert_int_equal(SUBMIT(f, CMD0(48, 0, 11), 0, 64, 16, 4096, 1, 1, 1, 0, 0, 0, 3),
                   VGPU_VIRGL_MALFORMED);
  assert_int_equal(SUBMIT(f, CMD0(48, 0, 11), 0, 64, 16, 0xffffffffu, 1, 1, 1, 0, 0, 0, 9),
                   VGPU_VIRGL_MALFORMED);
  assert_int_equal(SUBMIT(f, CMD0(48, 0, 10), 0, 64, 16, 4096, 1, 1, 1, 0, 0, 0),
                   VGPU_VIRGL_MALFORMED);
  /* VRAM refused: nothing kept */
  f->b.limit[VGPU_RES_VRAM] = 8192;
  assert_int_equal(SUBMIT(f, CMD0(48, 0, 11), 0, 64, 16, 8192, 1, 1, 1, 0, 0, 0, 7),
                   VGPU_VIRGL_REFUSED);
  assert_int_equal(vgpu_virgl_tracker_blobs(f->t), 1);
  vgpu_virgl_tracker_free(f->t);
  f->t = NULL;
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 0);
}

/* Two trackers (two contexts of one device) on one tenant's books: the
 * device's hand-over hook passes a charge to the other tracker. */
static VgpuVirglTracker *other_tracker;
static int hand_overs;
static bool b_hand_over(void *user, uint32_t handle, uint64_t vram) {
  hand_overs++;
  return other_tracker && vgpu_virgl_tracker_take_over(other_tracker, handle, vram);
}

static void test_refers_and_hand_over(void **state) {
  Fix *f = *state;
  VgpuVirglCharger ch = {.reserve = b_reserve,
                         .release = b_release,
                         .has_resource = b_has,
                         .hand_over = b_hand_over,
                         .user = &f->b};
  VgpuVirglTracker *a = vgpu_virgl_tracker_new(0, &ch), *b = vgpu_virgl_tracker_new(0, &ch);
  hand_overs = 0;
  resource(f, 1);
  resource(f, 2);
  uint32_t w[7];
  view(w, 10, 1);
  char *why = NULL;
  assert_int_equal(vgpu_virgl_tracker_submit(a, w, 7, &why), VGPU_VIRGL_OK);
  assert_int_equal(vgpu_virgl_tracker_submit(b, w, 7, &why), VGPU_VIRGL_OK);
  assert_true(vgpu_virgl_tracker_refers(a, 1) && vgpu_virgl_tracker_refers(b, 1));
  assert_false(vgpu_virgl_tracker_refers(a, 2));
  assert_false(vgpu_virgl_tracker_refers(NULL, 1));
  /* The tenant lets go of 1: a keeps its charge, b retires its view's. */
  g_hash_table_remove(f->b.resources, GUINT_TO_POINTER(1));
  vgpu_virgl_tracker_resource_gone(a, 1, 1000);
  assert_true(vgpu_virgl_tracker_resource_retire(b, 1));
  assert_false(vgpu_virgl_tracker_resource_retire(b, 2));
  assert_false(vgpu_virgl_tracker_refers(a, 1) || vgpu_virgl_tracker_refers(b, 1));
  assert_int_equal(vgpu_virgl_tracker_kept_vram(a), 1000);
  assert_int_equal(vgpu_virgl_tracker_kept_vram(b), 0);
  /* A new resource under handle 1 is not the retired one. */
  resource(f, 1);
  assert_false(vgpu_virgl_tracker_refers(b, 1));
  /* a's view goes: b still holds the memory and takes the charge over. */
  other_tracker = b;
  uint32_t destroy[2] = {CMD0(3, 0, 1), 10};
  assert_int_equal(vgpu_virgl_tracker_submit(a, destroy, 2, &why), VGPU_VIRGL_OK);
  assert_int_equal(hand_overs, 1);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 2000 + 1000); /* 1 (new), 2, and the old 1 */
  assert_int_equal(vgpu_virgl_tracker_kept_vram(a), 0);
  assert_int_equal(vgpu_virgl_tracker_kept_vram(b), 1000);
  assert_false(vgpu_virgl_tracker_take_over(a, 1, 1000)); /* nothing of a holds it */
  /* b's view goes with b: nobody takes it, it is released. */
  other_tracker = a;
  vgpu_virgl_tracker_free(b);
  assert_int_equal(hand_overs, 2);
  assert_int_equal(f->b.used[VGPU_RES_VRAM], 2000);
  assert_int_equal(f->b.used[VGPU_RES_OBJECTS], 2);
  other_tracker = NULL;
  vgpu_virgl_tracker_free(a);
}

/* A refused command leaves the books as they were, and the caller learns
 * how much of the stream was taken. */
static void test_submit_part(void **state) {
  Fix *f = *state;
  f->b.limit[VGPU_RES_CONTEXTS] = 1;
  resource(f, 1);
  uint32_t w[7];
  view(w, 10, 1);
  assert_int_equal(submit(f, w, 7), VGPU_VIRGL_OK);
  /* destroy 10, then a second sub-context: refused at dword 4 */
  const uint32_t s[] = {CMD0(29, 0, 1), 1, CMD0(3, 0, 1), 10, CMD0(29, 0, 1), 2, CMD0(0, 0, 0)};
  size_t applied = 99;
  char *why = NULL;
  assert_int_equal(vgpu_virgl_tracker_submit_part(f->t, s, G_N_ELEMENTS(s), &applied, &why),
                   VGPU_VIRGL_REFUSED);
  assert_int_equal(applied, 4);
  assert_int_equal(vgpu_virgl_tracker_sub_ctxs(f->t), 1);
  /* framing: stops before the bad command */
  const uint32_t bad[] = {CMD0(0, 0, 0), CMD0(0, 0, 5), 1};
  assert_int_equal(vgpu_virgl_tracker_submit_part(f->t, bad, 3, &applied, &why),
                   VGPU_VIRGL_MALFORMED);
  assert_int_equal(applied, 1);
  g_free(why);
  assert_int_equal(vgpu_virgl_tracker_submit_part(f->t, bad, 1, &applied, &why), VGPU_VIRGL_OK);
  assert_int_equal(applied, 1);
  /* a create replacing a live handle at the bound is not refused; a refused
   * large shader does not take the old object away */
  f->b.limit[VGPU_RES_VRAM] = 1000 + 1;
  assert_int_equal(SUBMIT(f, CMD0(28, 0, 1), 0), VGPU_VIRGL_OK);
  uint32_t sh[6] = {CMD0(1, VGPU_VIRGL_OBJECT_SHADER, 5), 10, 1, 1u << 20, 0, 0};
  assert_int_equal(submit(f, sh, 6), VGPU_VIRGL_REFUSED);
  assert_int_equal(vgpu_virgl_tracker_objects(f->t), 1);
  assert_true(vgpu_virgl_tracker_refers(f->t, 1)); /* view 10 is still there */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_next_events),
      cmocka_unit_test(test_next_framing),
      cmocka_unit_test_setup_teardown(test_view_keeps_resource, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resource_without_objects_released_at_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sub_contexts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_object_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shader_text_charged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_releases_everything, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pipe_resources, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bindings_keep_resources, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rebind_and_sub_context_bindings, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bindings_outside_slots, setup, teardown),
      cmocka_unit_test_setup_teardown(test_refers_and_hand_over, setup, teardown),
      cmocka_unit_test_setup_teardown(test_submit_part, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
