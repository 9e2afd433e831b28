/* The renderer interface on both back-ends: virglrenderer on surfaceless
 * EGL (llvmpipe here, a render node where there is one) and the null
 * back-end the session tests and the fuzzer run on. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "render/renderer.h"
#include "util/sanitize.h"
#include "vgpu-config.h"

#if VGPU_SANITIZED
/* llvmpipe's JIT leaves blocks LeakSanitizer cannot attribute (as in the
 * worker); the null back-end case below is still leak-checked by the
 * session tests and the fuzzer, which run on it. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_leaks=0";
}
#endif

#define W 64u
#define H 64u

static void on_fence(void *user, uint32_t fence) {
  *(uint32_t *)user = fence;
}

/* Polls until fence `id` has signalled, sleeping on the fd if there is one. */
static void wait_fence(VgpuRenderer *r, const uint32_t *seen, uint32_t id) {
  for (int i = 0; i < 500 && *seen < id; i++) {
    int fd = r->ops->get_poll_fd(r);
    if (fd >= 0) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      (void)poll(&p, 1, 10);
    }
    r->ops->poll(r);
  }
  assert_int_equal(*seen, id);
}

/* Creates a 64x64 B8G8R8A8 texture on `backing`, writes a pattern through
 * it, wipes the backing and reads the texture back into it. */
static void roundtrip(VgpuRenderer *r, uint32_t *backing, bool check_pixels) {
  assert_int_equal(r->ops->context_create(r, 1, 0, "unit"), 0);
  VgpuResourceDesc d = {.handle = 5,
                        .target = 2 /* TEXTURE_2D */,
                        .format = 1 /* B8G8R8A8 */,
                        .bind = 2 | 8 /* render target, sampler view */,
                        .width = W,
                        .height = H,
                        .depth = 1,
                        .array_size = 1};
  struct iovec iov = {backing, W * H * 4};
  assert_int_equal(r->ops->resource_create(r, &d, &iov, 1), 0);
  assert_int_equal(r->ops->ctx_attach_resource(r, 1, 5), 0);
  for (uint32_t i = 0; i < W * H; i++)
    backing[i] = i * 2654435761u;
  VgpuBox box = {0, 0, 0, W, H, 1};
  assert_int_equal(r->ops->transfer(r, 1, 5, VGPU_TRANSFER_TO_HOST, 0, 0, 0, &box, 0, NULL, 0), 0);
  memset(backing, 0, W * H * 4);
  assert_int_equal(r->ops->transfer(r, 1, 5, VGPU_TRANSFER_FROM_HOST, 0, 0, 0, &box, 0, NULL, 0),
                   0);
  if (check_pixels) {
    for (uint32_t i = 0; i < W * H; i++)
      if (backing[i] != i * 2654435761u)
        fail_msg("pixel %u: 0x%08x, wrote 0x%08x", i, backing[i], i * 2654435761u);
  }
  /* Unknown handles are refused, not trusted. */
  assert_true(r->ops->transfer(r, 1, 77, VGPU_TRANSFER_FROM_HOST, 0, 0, 0, &box, 0, NULL, 0) < 0);
  r->ops->ctx_detach_resource(r, 1, 5);
  r->ops->resource_unref(r, 5);
  r->ops->context_destroy(r, 1);
}

static void check_caps(VgpuRenderer *r) {
  uint32_t ver = 0, size = 0;
  assert_int_equal(r->ops->get_capset(r, 2, &ver, &size), 0);
  assert_true(ver >= 1 && size >= 4);
  g_autofree uint32_t *caps = g_malloc0(size);
  assert_int_equal(r->ops->fill_capset(r, 2, ver, caps), 0);
  assert_true(caps[0] >= 1); /* the caps structure's own version */
}

static void test_null(void **state) {
  (void)state;
  uint32_t seen = 0;
  VgpuRenderer *r = vgpu_renderer_null_new(on_fence, &seen);
  check_caps(r);
  g_autofree uint32_t *backing = g_malloc(W * H * 4);
  roundtrip(r, backing, false);
  assert_int_equal(r->ops->create_fence(r, 3), 0);
  wait_fence(r, &seen, 3);
  vgpu_renderer_free(r);
}

#if HAVE_VIRGL
static void test_virgl(void **state) {
  (void)state;
  uint32_t seen = 0;
  VgpuRendererConfig cfg = {.render_node = NULL, .use_thread_sync = true};
  g_autoptr(GError) e = NULL;
  VgpuRenderer *r = vgpu_renderer_virgl_new(&cfg, on_fence, &seen, &e);
  if (!r)
    fail_msg("virglrenderer on EGL surfaceless: %s", e->message);
  assert_non_null(strstr(r->ops->describe(r), "surfaceless"));
  /* virglrenderer is process-global: a second one is refused clearly. */
  g_autoptr(GError) e2 = NULL;
  assert_null(vgpu_renderer_virgl_new(&cfg, on_fence, &seen, &e2));
  assert_non_null(strstr(e2->message, "already"));
  check_caps(r);
  g_autofree uint32_t *backing = g_malloc(W * H * 4);
  roundtrip(r, backing, true);
  /* Fences signal through the sync thread's fd. */
  assert_true(r->ops->get_poll_fd(r) >= 0);
  assert_int_equal(r->ops->create_fence(r, 7), 0);
  wait_fence(r, &seen, 7);
  vgpu_renderer_free(r);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_null),
#if HAVE_VIRGL
    cmocka_unit_test(test_virgl),
#endif
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
#if !HAVE_VIRGL
  /* Half of what this test is for was not built: say so as a skip. */
  if (failed == 0) {
    printf("SKIP: built without virglrenderer (-Dvirgl=disabled): only the null back-end was "
           "tested\n");
    return 77;
  }
#endif
  return failed;
}
