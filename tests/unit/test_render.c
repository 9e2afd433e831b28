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

#include "core/capset.h"
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

static void on_fence(void *user, uint64_t fence) {
  *(uint64_t *)user = fence;
}

/* Polls until fence `id` has signalled, sleeping on the fd if there is one. */
static void wait_fence(VgpuRenderer *r, const uint64_t *seen, uint64_t id) {
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

/* 64-bit fence ids: steps just under 2^31 carry the id past 2^32 (the
 * virgl back-end's library has 32-bit ids). */
static void fences_64(VgpuRenderer *r, uint64_t *seen) {
  uint64_t id = *seen;
  for (int i = 0; i < 3; i++) {
    id += 0x70000000u;
    assert_int_equal(r->ops->create_fence(r, id), 0);
    wait_fence(r, seen, id);
  }
  assert_true(*seen > UINT32_MAX);
}

/* A WxH B8G8R8A8 2D texture, rendered to and sampled from. */
static VgpuResourceDesc texture_desc(uint32_t handle) {
  return (VgpuResourceDesc){.handle = handle,
                            .target = 2 /* TEXTURE_2D */,
                            .format = 1 /* B8G8R8A8 */,
                            .bind = 2 | 8 /* render target, sampler view */,
                            .width = W,
                            .height = H,
                            .depth = 1,
                            .array_size = 1};
}

/* What virtio-gpu needs beyond vtest: backing attached and detached after
 * creation, resource info, read-back of a scanout into plain memory. */
static void virtio_ops(VgpuRenderer *r, uint32_t *backing, bool check_pixels) {
  assert_int_equal(r->ops->context_create(r, 1, 0, "unit"), 0);
  VgpuResourceDesc d = texture_desc(9);
  assert_int_equal(r->ops->resource_create(r, &d, NULL, 0), 0);
  assert_int_equal(r->ops->ctx_attach_resource(r, 1, 9), 0);
  VgpuResourceInfo info;
  assert_int_equal(r->ops->resource_info(r, 9, &info), 0);
  assert_int_equal(info.format, 1);
  assert_int_equal(info.width, W);
  assert_int_equal(info.height, H);
  assert_int_equal(info.stride, W * 4);
  assert_false(info.has_backing);
  assert_true(r->ops->resource_info(r, 77, &info) < 0);

  /* No backing yet: a transfer through it is refused.  (Through context
   * 0: virglrenderer marks a context that names such a resource as in
   * error, and it then refuses everything.) */
  VgpuBox box = {0, 0, 0, W, H, 1};
  assert_true(r->ops->transfer(r, 0, 9, VGPU_TRANSFER_TO_HOST, 0, 0, 0, &box, 0, NULL, 0) < 0);
  struct iovec iov = {backing, W * H * 4};
  assert_int_equal(r->ops->attach_backing(r, 9, &iov, 1), 0);
  assert_int_equal(r->ops->attach_backing(r, 9, &iov, 1), -EBUSY);
  assert_int_equal(r->ops->resource_info(r, 9, &info), 0);
  assert_true(info.has_backing);
  for (uint32_t i = 0; i < W * H; i++)
    backing[i] = 0xff000000u | (i * 40503u);
  assert_int_equal(r->ops->transfer(r, 1, 9, VGPU_TRANSFER_TO_HOST, 0, 0, 0, &box, 0, NULL, 0), 0);
  r->ops->detach_backing(r, 9);
  assert_int_equal(r->ops->resource_info(r, 9, &info), 0);
  assert_false(info.has_backing);
  memset(backing, 0x55, W * H * 4); /* no longer the renderer's */

  /* Read-back of a sub-rectangle with a padded stride, without a backing. */
  const uint32_t bw = 16, bh = 8, stride = (bw + 4) * 4;
  size_t len = (size_t)(bh - 1) * stride + bw * 4;
  g_autofree uint32_t *out = g_malloc0(len);
  VgpuBox sub = {8, 4, 0, bw, bh, 1};
  assert_int_equal(r->ops->read_back(r, 9, &sub, out, len, stride), 0);
  if (check_pixels) {
    for (uint32_t y = 0; y < bh; y++)
      for (uint32_t x = 0; x < bw; x++) {
        uint32_t want = 0xff000000u | (((y + 4) * W + x + 8) * 40503u);
        uint32_t got = out[y * (stride / 4) + x];
        if (got != want)
          fail_msg("read-back pixel %u,%u: 0x%08x, wrote 0x%08x", x, y, got, want);
      }
  }
  /* Boxes outside the resource, short buffers and strides are refused. */
  VgpuBox outside = {W - 4, 0, 0, 8, 1, 1};
  assert_int_equal(r->ops->read_back(r, 9, &outside, out, len, stride), -EINVAL);
  assert_int_equal(r->ops->read_back(r, 9, &sub, out, len - 1, stride), -EINVAL);
  assert_int_equal(r->ops->read_back(r, 9, &sub, out, len, bw * 4 - 1), -EINVAL);
  assert_true(r->ops->read_back(r, 78, &sub, out, len, stride) < 0);
  r->ops->detach_backing(r, 9); /* again: nothing to do */
  r->ops->ctx_detach_resource(r, 1, 9);
  r->ops->resource_unref(r, 9);
  r->ops->context_destroy(r, 1);
}

/* Creates a 64x64 B8G8R8A8 texture on `backing`, writes a pattern through
 * it, wipes the backing and reads the texture back into it. */
static void roundtrip(VgpuRenderer *r, uint32_t *backing, bool check_pixels) {
  assert_int_equal(r->ops->context_create(r, 1, 0, "unit"), 0);
  VgpuResourceDesc d = texture_desc(5);
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
  uint64_t seen = 0;
  VgpuRenderer *r = vgpu_renderer_null_new(on_fence, &seen);
  check_caps(r);
  g_autofree uint32_t *backing = g_malloc(W * H * 4);
  roundtrip(r, backing, false);
  virtio_ops(r, backing, false);
  /* Fences signal through an fd, as virglrenderer's sync thread does. */
  int fd = r->ops->get_poll_fd(r);
  assert_true(fd >= 0);
  assert_int_equal(r->ops->create_fence(r, 3), 0);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 1);
  wait_fence(r, &seen, 3);
  assert_int_equal(poll(&p, 1, 0), 0);
  fences_64(r, &seen);
  vgpu_renderer_free(r);
}

/* The null back-end's never-completing submission, which the hang-up and
 * GPU-timeout tests rely on. */
static void test_null_hang(void **state) {
  (void)state;
  uint64_t seen = 0;
  VgpuRenderer *r = vgpu_renderer_null_new(on_fence, &seen);
  assert_int_equal(r->ops->context_create(r, 1, 0, "unit"), 0);
  uint32_t plain[2] = {0, 0};
  assert_int_equal(r->ops->submit(r, 1, plain, 2), 0);
  assert_int_equal(r->ops->create_fence(r, 1), 0);
  wait_fence(r, &seen, 1);
  uint32_t hang[3] = {VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1, 0};
  assert_int_equal(r->ops->submit(r, 1, hang, 3), 0);
  assert_int_equal(r->ops->create_fence(r, 2), 0);
  struct pollfd p = {.fd = r->ops->get_poll_fd(r), .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 0);
  r->ops->poll(r);
  assert_int_equal(seen, 1);
  r->ops->context_destroy(r, 1);
  vgpu_renderer_free(r);
}

#if HAVE_VIRGL
static void test_virgl(void **state) {
  (void)state;
  uint64_t seen = 0;
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
  /* Every capability set offered takes a context (virglrenderer built
   * with venus reports venus's too, which this back-end does not start). */
  unsigned offered = 0;
  for (size_t i = 0; i < VGPU_CAPSET_N_KNOWN; i++) {
    uint32_t id = vgpu_capset_names[i].id, ver = 0, size = 0;
    if (r->ops->get_capset(r, id, &ver, &size) < 0 || size == 0)
      continue;
    offered++;
    if (r->ops->context_create(r, 20 + id, id, "unit") < 0)
      fail_msg("capability set %u (%s) is offered but takes no context", id,
               vgpu_capset_names[i].name);
    r->ops->context_destroy(r, 20 + id);
  }
  assert_true(offered >= 1);
  g_autofree uint32_t *backing = g_malloc(W * H * 4);
  roundtrip(r, backing, true);
  virtio_ops(r, backing, true);
  /* Fences signal through the sync thread's fd. */
  assert_true(r->ops->get_poll_fd(r) >= 0);
  assert_int_equal(r->ops->create_fence(r, 7), 0);
  wait_fence(r, &seen, 7);
  fences_64(r, &seen);
  vgpu_renderer_free(r);
}
#endif

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_null),
    cmocka_unit_test(test_null_hang),
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
