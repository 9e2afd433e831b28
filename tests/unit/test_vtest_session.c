/* vtest session on the null renderer: replies byte for byte as Mesa reads
 * them, fd passing, sealing, quota refusals that charge nothing, and the
 * books balancing when the session ends. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/ledger.h"
#include "render/renderer.h"
#include "util/fd.h"
#include "vtest/vtest_session.h"

typedef struct {
  int sv[2];
  VgpuLedger *ledger;
  int slot;
  VgpuRenderer *r;
  VtestSession *s;
  uint8_t in[65536];
  size_t n;
} Fix;

static uint32_t max_stream_objects; /* 0: the session's default */
static uint32_t max_syncs;          /* 0: the session's default */

static int setup_limits(void **state, uint64_t vram, uint64_t objects) {
  Fix *f = calloc(1, sizeof(*f));
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv), 0);
  uint64_t limits[VGPU_RES_N_QUOTA] = {
      [VGPU_RES_VRAM] = vram, [VGPU_RES_OBJECTS] = objects, [VGPU_RES_CONTEXTS] = 4};
  f->ledger = vgpu_ledger_new_standalone(limits);
  f->r = vgpu_renderer_null_new(NULL, NULL);
  VtestSessionConfig cfg = {.ledger = f->ledger,
                            .slot = (uint32_t)f->slot,
                            .limits = VTEST_DEFAULT_LIMITS,
                            .max_stream_objects = max_stream_objects,
                            .max_syncs = max_syncs};
  f->s = vtest_session_new(f->r, f->sv[0], &cfg);
  *state = f;
  return 0;
}

static int setup(void **state) {
  return setup_limits(state, 64u << 20, 100);
}
static int setup_tiny(void **state) {
  return setup_limits(state, 1u << 20, 3);
}
static int setup_bound(void **state) {
  max_stream_objects = 64;
  int r = setup_limits(state, 64u << 20, 100);
  max_stream_objects = 0;
  return r;
}

static int setup_syncs(void **state) {
  max_syncs = 16;
  int r = setup_limits(state, 64u << 20, 100);
  max_syncs = 0;
  return r;
}

static int teardown(void **state) {
  Fix *f = *state;
  vtest_session_free(f->s);
  vgpu_renderer_free(f->r);
  vgpu_ledger_free(f->ledger);
  close(f->sv[0]);
  if (f->sv[1] >= 0)
    close(f->sv[1]);
  free(f);
  return 0;
}

static void put32(Fix *f, uint32_t v) {
  memcpy(f->in + f->n, &v, 4);
  f->n += 4;
}

static void cmd(Fix *f, uint32_t id, uint32_t len, const uint32_t *w, int nw) {
  put32(f, len);
  put32(f, id);
  for (int i = 0; i < nw; i++)
    put32(f, w[i]);
}

static void name(Fix *f) {
  cmd(f, VTEST_CMD_CREATE_RENDERER, 5, NULL, 0);
  memcpy(f->in + f->n, "test", 5);
  f->n += 5;
}

/* Runs what was queued; returns whether the session is still alive. */
static bool run(Fix *f) {
  size_t used, need;
  bool ok = vtest_session_process(f->s, f->in, f->n, &used, &need);
  if (ok)
    assert_int_equal(used, f->n);
  f->n = 0;
  assert_true(vtest_session_flush(f->s) || !ok);
  return ok;
}

/* Runs what was queued and expects the session to end: how, and a reason
 * that contains @reason. */
static void expect_end(Fix *f, int kind, const char *reason) {
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), kind);
  assert_non_null(strstr(vtest_session_end_reason(f->s), reason));
}

/* Runs what was queued (a resource creation) and closes the backing fd the
 * session sent back. */
static void run_drop_backing(Fix *f) {
  assert_true(run(f));
  int fd;
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  close(fd);
}

static void expect(Fix *f, const uint32_t *w, int nw) {
  uint32_t got[16];
  assert_int_equal(vgpu_read_all(f->sv[1], got, (size_t)nw * 4), 0);
  assert_memory_equal(got, w, (size_t)nw * 4);
}

static void create2(Fix *f, uint32_t h, uint32_t target, uint32_t fmt, uint32_t bind, uint32_t w,
                    uint32_t hgt, uint32_t data) {
  uint32_t a[11] = {h, target, fmt, bind, w, hgt, 1, target == 0 ? 0 : 1, 0, 0, data};
  cmd(f, VTEST_CMD_RESOURCE_CREATE2, 11, a, 11);
}

static void test_handshake_like_mesa(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_PING_PROTOCOL_VERSION, 0, NULL, 0);
  cmd(f, VTEST_CMD_RESOURCE_BUSY_WAIT, 2, (uint32_t[]){0, 0}, 2);
  assert_true(run(f));
  expect(f, (uint32_t[]){0, 10, 1, 7, 0}, 5);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){2}, 1);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 11, 2}, 3);
  cmd(f, VTEST_CMD_GET_CAPS2, 0, NULL, 0);
  cmd(f, VTEST_CMD_GET_CAPS, 0, NULL, 0);
  assert_true(run(f));
  uint32_t h[2];
  static uint8_t caps[2048];
  assert_int_equal(vgpu_read_all(f->sv[1], h, 8), 0);
  assert_int_equal(h[0], 1377); /* bytes + 1 */
  assert_int_equal(h[1], 2);    /* GET_CAPS2 answers with id 2 */
  assert_int_equal(vgpu_read_all(f->sv[1], caps, 1376), 0);
  assert_int_equal(vgpu_read_all(f->sv[1], h, 8), 0);
  assert_int_equal(h[0], 309);
  assert_int_equal(h[1], 1);
  assert_int_equal(vgpu_read_all(f->sv[1], caps, 308), 0);
}

static void test_version_negotiation(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){7}, 1);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){2}, 1);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){1}, 1);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 11, 3, 1, 11, 2, 1, 11, 0}, 9);
}

static void test_command_before_create_renderer(void **state) {
  Fix *f = *state;
  cmd(f, VTEST_CMD_PING_PROTOCOL_VERSION, 0, NULL, 0);
  expect_end(f, VTEST_END_VIOLATION, "before CREATE_RENDERER");
}

static void test_create_passes_sealed_memfd(void **state) {
  Fix *f = *state;
  name(f);
  create2(f, 1, 2, 2, 138, 300, 300, 360000);
  assert_true(run(f));
  int fd = -1;
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  assert_true(fd >= 0);
  assert_int_equal(lseek(fd, 0, SEEK_END), 360000);
  int seals = fcntl(fd, F_GET_SEALS);
  assert_true(seals & F_SEAL_SHRINK);
  assert_int_equal(ftruncate(fd, 4096), -1); /* the client cannot pull it from under us */
  /* texture (300x300x4) and shm backing, both held */
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 360000 + 360000);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_OBJECTS), 1);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_CONTEXTS), 1);
  /* TRANSFER_GET2 with Mesa's aligned data_size larger than the backing
   * is fine; it counts a frame because the resource is a display target. */
  cmd(f, VTEST_CMD_TRANSFER_GET2, 10, (uint32_t[]){1, 0, 0, 0, 0, 300, 300, 1, 364800, 0}, 10);
  assert_true(run(f));
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_FRAMES), 1);
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){1}, 1);
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){77}, 1); /* unknown: ignored */
  assert_true(run(f));
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 0);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_OBJECTS), 0);
  close(fd);
}

/* The worker keeps a mapping per backing, not an fd: a client with
 * thousands of resources must not run the worker out of descriptors. */
static void test_backings_hold_no_fds(void **state) {
  Fix *f = *state;
  name(f);
  assert_true(run(f));
  int before = vgpu_count_fds();
  for (uint32_t h = 1; h <= 90; h++) {
    create2(f, h, 0, 64, 16, 4096, 1, 4096);
    assert_true(run(f));
    int fd = -1;
    assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
    close(fd);
  }
  assert_int_equal(vgpu_count_fds(), before);
  /* ... and the session goes on. */
  cmd(f, VTEST_CMD_RESOURCE_BUSY_WAIT, 2, (uint32_t[]){90, 1}, 2);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 7, 0}, 3);
}

static void test_duplicate_handle(void **state) {
  Fix *f = *state;
  name(f);
  create2(f, 3, 0, 64, 16, 64, 1, 0);
  create2(f, 3, 0, 64, 16, 64, 1, 0);
  expect_end(f, VTEST_END_VIOLATION, "already in use");
  assert_int_equal(vtest_session_resource_count(f->s), 1);
}

/* Handle 0 is reserved (the renderer refuses it too): refused before
 * anything is created or charged. */
static void test_zero_handle(void **state) {
  Fix *f = *state;
  name(f);
  create2(f, 3, 0, 64, 16, 64, 1, 0);
  assert_true(run(f));
  create2(f, 0, 0, 64, 16, 64, 1, 0);
  expect_end(f, VTEST_END_VIOLATION, "handle 0");
  assert_int_equal(vtest_session_resource_count(f->s), 1);
}

/* Creates resource 1 (16x16 BGRX display target, 1 KiB backing) and drops
 * the memfd the session passes back. */
static void create_small_target(Fix *f) {
  name(f);
  create2(f, 1, 2, 2, 138, 16, 16, 1024);
  run_drop_backing(f);
}

static void test_transfer_outside_resource(void **state) {
  Fix *f = *state;
  create_small_target(f);
  cmd(f, VTEST_CMD_TRANSFER_GET2, 10, (uint32_t[]){1, 0, 8, 0, 0, 16, 16, 1, 1024, 0}, 10);
  expect_end(f, VTEST_END_VIOLATION, "outside resource 1");
}

/* What Mesa sends for a 1D array texture (arb_copy_image, layered
 * rendering): its layers are z, as for every array target. */
static void test_transfer_1d_array_layers(void **state) {
  Fix *f = *state;
  name(f);
  /* resource 4: 32x1 RGBA8, 12 layers, a 1536-byte backing */
  cmd(f, VTEST_CMD_RESOURCE_CREATE2, 11, (uint32_t[]){4, 6, 67, 8, 32, 1, 1, 12, 0, 0, 1536}, 11);
  run_drop_backing(f);
  cmd(f, VTEST_CMD_TRANSFER_PUT2, 10, (uint32_t[]){4, 0, 0, 0, 1, 32, 1, 1, 128, 128}, 10);
  cmd(f, VTEST_CMD_TRANSFER_GET2, 10, (uint32_t[]){4, 0, 0, 0, 0, 32, 1, 12, 1536, 0}, 10);
  cmd(f, VTEST_CMD_TRANSFER_PUT2, 10, (uint32_t[]){4, 0, 8, 0, 11, 24, 1, 1, 96, 1408}, 10);
  assert_true(run(f));
  /* one layer past the end, and a layer put in y */
  cmd(f, VTEST_CMD_TRANSFER_PUT2, 10, (uint32_t[]){4, 0, 0, 0, 12, 32, 1, 1, 128, 0}, 10);
  expect_end(f, VTEST_END_VIOLATION, "outside resource 4");
}

static void test_transfer_1d_array_layer_in_y(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_RESOURCE_CREATE2, 11, (uint32_t[]){4, 6, 67, 8, 32, 1, 1, 12, 0, 0, 1536}, 11);
  run_drop_backing(f);
  cmd(f, VTEST_CMD_TRANSFER_PUT2, 10, (uint32_t[]){4, 0, 0, 1, 0, 32, 1, 1, 128, 0}, 10);
  expect_end(f, VTEST_END_VIOLATION, "outside resource 4");
}

static void test_transfer_past_backing(void **state) {
  Fix *f = *state;
  create_small_target(f);
  cmd(f, VTEST_CMD_TRANSFER_PUT2, 10, (uint32_t[]){1, 0, 0, 0, 0, 4, 4, 1, 64, 1000}, 10);
  expect_end(f, VTEST_END_VIOLATION, "backing");
}

static void test_transfer_unknown_handle(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_TRANSFER_GET2, 10, (uint32_t[]){9, 0, 0, 0, 0, 1, 1, 1, 4, 0}, 10);
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_VIOLATION);
}

static void test_vram_quota_refuses_before_allocating(void **state) {
  Fix *f = *state; /* 1 MiB, 3 objects */
  name(f);
  create2(f, 1, 2, 2, 138, 256, 256, 262144); /* 256 KiB */
  run_drop_backing(f);
  create2(f, 2, 2, 2, 138, 1024, 1024, 4194304); /* 4 MiB: over */
  expect_end(f, VTEST_END_QUOTA, "VRAM limit");
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 2 * 262144); /* + backing */
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_OBJECTS), 1);
  assert_int_equal(vtest_session_resource_count(f->s), 1);
  /* Ending the session gives everything back. */
  vtest_session_free(f->s);
  f->s = NULL;
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    assert_int_equal(vgpu_ledger_used(f->ledger, k), 0);
}

static void test_object_quota(void **state) {
  Fix *f = *state; /* 3 objects */
  name(f);
  for (uint32_t h = 1; h <= 4; h++)
    create2(f, h, 0, 64, 16, 64, 1, 0);
  expect_end(f, VTEST_END_QUOTA, "resources limit 3");
}

static void test_partial_commands(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_PING_PROTOCOL_VERSION, 0, NULL, 0);
  size_t used, need;
  /* Cut inside the second command: only the first is executed. */
  /* CREATE_RENDERER "test\0" is 13 bytes. */
  assert_true(vtest_session_process(f->s, f->in, 13 + 3, &used, &need));
  assert_int_equal(used, 13);
  assert_int_equal(need, 8);
  assert_true(vtest_session_process(f->s, f->in + used, f->n - used, &used, &need));
  assert_int_equal(used, 8);
  assert_true(vtest_session_flush(f->s));
  expect(f, (uint32_t[]){0, 10}, 2);
  f->n = 0;
}

static void test_submit_and_busy_wait(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){0, 0}, 2);
  /* Unaligned (after the 13-byte name) and empty: found by the fuzzer. */
  cmd(f, VTEST_CMD_SUBMIT_CMD, 0, NULL, 0);
  cmd(f, VTEST_CMD_RESOURCE_BUSY_WAIT, 2, (uint32_t[]){0, 1}, 2);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 7, 0}, 3);
}

/* A client that hangs up while waiting for work that does not complete
 * (the null renderer's never-ending stream): the wait sees the hang-up at
 * once and the session ends as "gone", with the work still pending. */
static void test_hangup_while_waiting(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1}, 2);
  assert_true(run(f));
  assert_true(vtest_session_work_pending(f->s));
  cmd(f, VTEST_CMD_RESOURCE_BUSY_WAIT, 2, (uint32_t[]){0, 0}, 2); /* no wait: busy */
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 7, 1}, 3);
  close(f->sv[1]);
  f->sv[1] = -1;
  cmd(f, VTEST_CMD_RESOURCE_BUSY_WAIT, 2, (uint32_t[]){0, 1}, 2);
  size_t used, need;
  gint64 t0 = g_get_monotonic_time();
  assert_false(vtest_session_process(f->s, f->in, f->n, &used, &need));
  assert_true(g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC);
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_GONE);
  assert_non_null(strstr(vtest_session_end_reason(f->s), "client left while waiting"));
  assert_true(vtest_session_work_pending(f->s));
}

/* The same client leaving between commands while its work runs: the loop
 * ends the session as a plain disconnect, and the worker learns that work
 * is still pending (it then exits without tearing the renderer down). */
static void test_hangup_with_work_pending(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1}, 2);
  assert_int_equal(vgpu_write_all(f->sv[1], f->in, f->n), 0);
  f->n = 0;
  close(f->sv[1]);
  f->sv[1] = -1;
  assert_int_equal(vtest_session_run(f->s, 0), VTEST_END_DISCONNECT);
  assert_true(vtest_session_work_pending(f->s));
}

static gpointer write_stream(gpointer data) {
  Fix *f = data;
  GByteArray *b = g_byte_array_new();
  static const char nm[8] = "big";
  uint32_t hdr[2] = {sizeof(nm), VTEST_CMD_CREATE_RENDERER};
  g_byte_array_append(b, (const guint8 *)hdr, 8);
  g_byte_array_append(b, (const guint8 *)nm, sizeof(nm));
  /* A 3 MiB submit (the read buffer grows past its 256 KiB), then small
   * commands after it (the buffer shrinks back and nothing is lost). */
  uint32_t ndw = 3u << 18;
  hdr[0] = ndw;
  hdr[1] = VTEST_CMD_SUBMIT_CMD;
  g_byte_array_append(b, (const guint8 *)hdr, 8);
  guint at = b->len;
  g_byte_array_set_size(b, at + ndw * 4);
  memset(b->data + at, 0, ndw * 4);
  for (int i = 0; i < 3; i++) {
    uint32_t bw[4] = {2, VTEST_CMD_RESOURCE_BUSY_WAIT, 0, 1};
    g_byte_array_append(b, (const guint8 *)bw, sizeof(bw));
  }
  assert_int_equal(vgpu_write_all(f->sv[1], b->data, b->len), 0);
  g_byte_array_unref(b);
  shutdown(f->sv[1], SHUT_WR);
  return NULL;
}

/* The whole read loop over a real socket, with a submit far larger than the
 * read buffer in the middle of the stream. */
static void test_run_loop_large_submit(void **state) {
  Fix *f = *state;
  GThread *t = g_thread_new("writer", write_stream, f);
  assert_int_equal(vtest_session_run(f->s, 0), VTEST_END_DISCONNECT);
  g_thread_join(t);
  expect(f, (uint32_t[]){1, 7, 0, 1, 7, 0, 1, 7, 0}, 9);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_COMMANDS), 5);
  assert_true(vgpu_ledger_used(f->ledger, VGPU_RES_BYTES_IN) > (3u << 20));
}

static void test_v0_transfer_get_is_raw(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){0}, 1);
  cmd(f, VTEST_CMD_RESOURCE_CREATE, 10, (uint32_t[]){7, 2, 2, 2, 4, 4, 1, 1, 0, 0}, 10);
  cmd(f, VTEST_CMD_TRANSFER_GET, 11, (uint32_t[]){7, 0, 16, 64, 0, 0, 0, 4, 4, 1, 64}, 11);
  assert_true(run(f));
  uint8_t got[12 + 64];
  assert_int_equal(vgpu_read_all(f->sv[1], got, sizeof(got)), 0);
  /* version reply, then 64 raw bytes with no header */
  assert_int_equal(((uint32_t *)got)[1], 11);
  for (int i = 12; i < 76; i++)
    assert_int_equal(got[i], 0);
}

/* ---- what command streams create ---------------------------------------- */

#define CMD0(cmd, obj, len) ((uint32_t)(cmd) | ((uint32_t)(obj) << 8) | ((uint32_t)(len) << 16))

static uint64_t used(Fix *f, VgpuResKind k) {
  return vgpu_ledger_used(f->ledger, k);
}

static void sampler_view(Fix *f, uint32_t handle, uint32_t res) {
  uint32_t w[7] = {CMD0(1, 6, 6), handle, res, 2, 0, 0, 0};
  cmd(f, VTEST_CMD_SUBMIT_CMD, 7, w, 7);
}

/* A sampler view keeps its texture: the charge stays until the view goes. */
static void test_view_keeps_texture_charged(void **state) {
  Fix *f = *state;
  name(f);
  create2(f, 1, 2, 2, 8, 64, 64, 0); /* 16 KiB, no backing */
  create2(f, 2, 2, 2, 8, 64, 64, 0);
  sampler_view(f, 5, 1);
  sampler_view(f, 6, 1); /* two views of the same texture */
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){1}, 1);
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){2}, 1); /* no view: released now */
  assert_true(run(f));
  assert_int_equal(vtest_session_resource_count(f->s), 0);
  assert_int_equal(used(f, VGPU_RES_VRAM), 16384);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 1);
  cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){CMD0(3, 6, 1), 5}, 2);
  assert_true(run(f));
  assert_int_equal(used(f, VGPU_RES_VRAM), 16384); /* view 6 still holds it */
  /* Replacing view 6 by a view of nothing we hold lets the texture go. */
  sampler_view(f, 6, 99);
  assert_true(run(f));
  assert_int_equal(used(f, VGPU_RES_VRAM), 0);
  assert_int_equal(used(f, VGPU_RES_OBJECTS), 0);
}

/* ... and the end of the session gives back what views still hold. */
static void test_view_charge_released_at_end(void **state) {
  Fix *f = *state;
  name(f);
  create2(f, 1, 2, 2, 8, 64, 64, 0);
  sampler_view(f, 5, 1);
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){1}, 1);
  assert_true(run(f));
  assert_int_equal(used(f, VGPU_RES_VRAM), 16384);
  vtest_session_free(f->s);
  f->s = NULL;
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    assert_int_equal(used(f, (VgpuResKind)k), 0);
}

/* Sub-contexts are contexts: the 4-context instance holds the renderer
 * context and three sub-contexts, and refuses a fourth. */
static void test_sub_contexts_count(void **state) {
  Fix *f = *state;
  name(f);
  for (uint32_t id = 1; id <= 3; id++)
    cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){CMD0(29, 0, 1), id}, 2);
  /* an id that exists, and sub-context 0, cost nothing */
  cmd(f, VTEST_CMD_SUBMIT_CMD, 4, (uint32_t[]){CMD0(29, 0, 1), 2, CMD0(29, 0, 1), 0}, 4);
  assert_true(run(f));
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 4);
  /* destroying one frees its place */
  cmd(f, VTEST_CMD_SUBMIT_CMD, 4, (uint32_t[]){CMD0(30, 0, 1), 2, CMD0(30, 0, 1), 0}, 4);
  assert_true(run(f));
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 3);
  cmd(f, VTEST_CMD_SUBMIT_CMD, 4, (uint32_t[]){CMD0(29, 0, 1), 7, CMD0(29, 0, 1), 8}, 4);
  expect_end(f, VTEST_END_QUOTA, "sub-context 8 refused: contexts limit 4");
  vtest_session_free(f->s);
  f->s = NULL;
  assert_int_equal(used(f, VGPU_RES_CONTEXTS), 0);
}

/* Objects beyond the bound end the session before the stream runs. */
static void test_stream_object_bound(void **state) {
  Fix *f = *state; /* 64 objects */
  name(f);
  uint32_t w[10] = {CMD0(1, 7, 9)};
  for (uint32_t h = 1; h <= 64; h++) {
    w[1] = h;
    cmd(f, VTEST_CMD_SUBMIT_CMD, 10, w, 10);
  }
  w[1] = 64; /* replaces handle 64: still 64 live */
  cmd(f, VTEST_CMD_SUBMIT_CMD, 10, w, 10);
  assert_true(run(f));
  w[1] = 65;
  cmd(f, VTEST_CMD_SUBMIT_CMD, 10, w, 10);
  expect_end(f, VTEST_END_QUOTA, "bound of 64 stream objects");
}

/* A long shader's declared text is charged while the shader lives. */
static void test_long_shader_charged(void **state) {
  Fix *f = *state; /* 1 MiB */
  name(f);
  /* declares 2 MiB of text in a 4-dword piece */
  uint32_t w[10] = {CMD0(1, 4, 9), 3, 1, 2u << 20, 100, 0, 0, 0, 0, 0};
  cmd(f, VTEST_CMD_SUBMIT_CMD, 10, w, 10);
  expect_end(f, VTEST_END_QUOTA, "shader 3 needs");
}

static void test_stream_framing(void **state) {
  Fix *f = *state;
  name(f);
  /* a command claiming 5 dwords with 1 left in the stream */
  cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){CMD0(0, 0, 0), CMD0(7, 0, 5)}, 2);
  expect_end(f, VTEST_END_VIOLATION, "past the end");
}

/* A v0 read-back of a 1x1 texture asks for 64 MiB: refused, nothing
 * allocated for it. */
static void test_v0_transfer_get_bounded(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){0}, 1);
  cmd(f, VTEST_CMD_RESOURCE_CREATE, 10, (uint32_t[]){7, 2, 2, 2, 1, 1, 1, 1, 0, 0}, 10);
  cmd(f, VTEST_CMD_TRANSFER_GET, 11, (uint32_t[]){7, 0, 0, 0, 0, 0, 0, 1, 1, 1, 64u << 20}, 11);
  expect_end(f, VTEST_END_VIOLATION, "whose box covers 4 bytes");
}

/* ... and so is one whose stride spreads two rows 16 MiB apart. */
static void test_v0_transfer_stride_bounded(void **state) {
  Fix *f = *state;
  name(f);
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){0}, 1);
  cmd(f, VTEST_CMD_RESOURCE_CREATE, 10, (uint32_t[]){7, 2, 2, 2, 1, 2, 1, 1, 0, 0}, 10);
  cmd(f, VTEST_CMD_TRANSFER_GET, 11,
      (uint32_t[]){7, 0, 16u << 20, 0, 0, 0, 0, 1, 2, 1, (16u << 20) + 4}, 11);
  expect_end(f, VTEST_END_VIOLATION, "span 16777220 bytes for a box of 8");
}

/* ---- protocol 3 ----------------------------------------------------------- */

/* CREATE_RENDERER and PROTOCOL_VERSION(asked), with its reply read. */
static void agree(Fix *f, uint32_t asked, uint32_t got) {
  cmd(f, VTEST_CMD_PROTOCOL_VERSION, 1, (uint32_t[]){asked}, 1);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 11, got}, 3);
}

static bool readable(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* A stream that makes a buffer of `bytes` for blob `blob_id`. */
static void pipe_resource(Fix *f, uint32_t bytes, uint32_t blob_id) {
  uint32_t c[12] = {(11u << 16) | 48u, 0, 64, 16, bytes, 1, 1, 1, 0, 0, 0, blob_id};
  cmd(f, VTEST_CMD_SUBMIT_CMD, 12, c, 12);
}

static void blob(Fix *f, uint32_t type, uint64_t size, uint64_t blob_id) {
  uint32_t a[6] = {type,
                   VTEST_BLOB_FLAG_MAPPABLE,
                   (uint32_t)size,
                   (uint32_t)(size >> 32),
                   (uint32_t)blob_id,
                   (uint32_t)(blob_id >> 32)};
  cmd(f, VTEST_CMD_RESOURCE_CREATE_BLOB, 6, a, 6);
}

static void test_v3_needs_agreement(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 2, 2);
  cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){0, 0}, 2);
  expect_end(f, VTEST_END_VIOLATION, "never agreed");
  assert_int_equal(vtest_session_sync_count(f->s), 0);
}

/* Mesa 25 against virglrenderer 0.10.4: 3, caps, then 2 again, and blobs
 * after that; the blob's id continues above the client's own handles. */
static void test_mesa25_renegotiation_and_blob(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  cmd(f, VTEST_CMD_GET_PARAM, 1, (uint32_t[]){VTEST_PARAM_MAX_TIMELINE_COUNT}, 1);
  cmd(f, VTEST_CMD_GET_PARAM, 1, (uint32_t[]){99}, 1);
  assert_true(run(f));
  expect(f, (uint32_t[]){2, 15, 1, 64, 2, 15, 0, 0}, 8);
  agree(f, 2, 2);
  create2(f, 7, 0, 64, 16, 4096, 1, 4096);
  assert_true(run(f));
  int fd = -1;
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  close(fd);
  pipe_resource(f, 65536, 1);
  assert_true(run(f));
  /* the pipe resource is charged as soon as the stream made it */
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 8192 + 65536);
  blob(f, VTEST_BLOB_MEM_HOST3D, 65536, 1);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 18, 8}, 3);
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  assert_int_equal(lseek(fd, 0, SEEK_END), 65536);
  close(fd);
  /* charged once, as one more object */
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 8192 + 65536);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_OBJECTS), 2);
  /* the same blob id cannot be claimed twice */
  blob(f, VTEST_BLOB_MEM_HOST3D, 65536, 1);
  expect_end(f, VTEST_END_VIOLATION, "no command stream");
  assert_int_equal(vtest_session_resource_count(f->s), 2);
}

static void test_blob_released(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  pipe_resource(f, 4096, 5);
  blob(f, VTEST_BLOB_MEM_HOST3D, 4096, 5);
  blob(f, VTEST_BLOB_MEM_GUEST, 8192, 0);
  assert_true(run(f));
  int fd = -1;
  expect(f, (uint32_t[]){1, 18, 1}, 3);
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  close(fd);
  expect(f, (uint32_t[]){1, 18, 2}, 3);
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  assert_int_equal(lseek(fd, 0, SEEK_END), 8192);
  assert_true(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK);
  close(fd);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 4096 + 8192);
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){1}, 1);
  cmd(f, VTEST_CMD_RESOURCE_UNREF, 1, (uint32_t[]){2}, 1);
  assert_true(run(f));
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 0);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_OBJECTS), 0);
  /* a pipe resource never claimed is charged until the session ends */
  pipe_resource(f, 4096, 6);
  assert_true(run(f));
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 4096);
  vtest_session_free(f->s);
  f->s = NULL;
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 0);
  f->s = vtest_session_new(f->r, f->sv[0], &(VtestSessionConfig){.limits = VTEST_DEFAULT_LIMITS});
}

static void test_blob_bad(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  /* beyond the 64 MiB of VRAM: refused, nothing charged or created */
  blob(f, VTEST_BLOB_MEM_GUEST, 1ull << 30, 0);
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_QUOTA);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 0);
  assert_int_equal(vtest_session_resource_count(f->s), 0);
}

static void test_blob_overflow(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  blob(f, VTEST_BLOB_MEM_HOST3D_GUEST, UINT64_MAX, 3);
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_QUOTA);
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_VRAM), 0);
}

static void test_v3_server_handles(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  create2(f, 0, 0, 64, 16, 4096, 1, 4096);
  cmd(f, VTEST_CMD_RESOURCE_CREATE, 10, (uint32_t[]){0, 0, 64, 16, 16, 1, 1, 1, 0, 0}, 10);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 12, 1}, 3);
  int fd = -1;
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  close(fd);
  expect(f, (uint32_t[]){1, 2, 2}, 3);
  /* a client-chosen handle at version 3 */
  create2(f, 9, 0, 64, 16, 4096, 1, 4096);
  expect_end(f, VTEST_END_VIOLATION, "server picks");
}

static void test_syncs_and_waits(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){0, 0}, 2);
  cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){5, 1}, 2);
  cmd(f, VTEST_CMD_SYNC_WRITE, 3, (uint32_t[]){1, 3, 0}, 3);
  cmd(f, VTEST_CMD_SYNC_READ, 1, (uint32_t[]){1}, 1);
  cmd(f, VTEST_CMD_SYNC_READ, 1, (uint32_t[]){2}, 1);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 19, 1, 1, 19, 2, 2, 21, 3, 0, 2, 21, 5, 1}, 14);
  /* already signalled: readable at once, nothing pending */
  cmd(f, VTEST_CMD_SYNC_WAIT, 5, (uint32_t[]){0, 1000, 1, 3, 0}, 5);
  assert_true(run(f));
  expect(f, (uint32_t[]){0, 23}, 2);
  int fd = -1;
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  assert_true(readable(fd));
  close(fd);
  assert_int_equal(vtest_session_wait_count(f->s), 0);
  /* all of two syncs: pending until a batch's fence moves both */
  cmd(f, VTEST_CMD_SYNC_WAIT, 8, (uint32_t[]){0, 1000, 1, 7, 0, 2, 6, 1}, 8);
  assert_true(run(f));
  expect(f, (uint32_t[]){0, 23}, 2);
  assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
  assert_false(readable(fd));
  assert_int_equal(vtest_session_wait_count(f->s), 1);
  /* batch 0: no ring, moves sync 1 at once; batch 1: ring 3, sync 2 */
  uint32_t sc[1 + 16 + 1 + 6] = {2,  0, 17, 1, 18, 1, 0, 0, 0, VTEST_SUBMIT2_FLAG_RING_IDX,
                                 17, 1, 21, 1, 3,  0, 0, 0, /* a NOP */
                                 1,  7, 0,  2, 6,  1};
  cmd(f, VTEST_CMD_SUBMIT_CMD2, G_N_ELEMENTS(sc), sc, G_N_ELEMENTS(sc));
  assert_true(run(f));
  assert_false(readable(fd));
  assert_int_equal(vtest_session_timeline_pending(f->s), 1);
  f->r->ops->poll(f->r); /* the context fence retires */
  assert_int_equal(vtest_session_timeline_pending(f->s), 0);
  assert_true(readable(fd));
  assert_int_equal(vtest_session_wait_count(f->s), 0);
  close(fd);
  cmd(f, VTEST_CMD_SYNC_UNREF, 1, (uint32_t[]){1}, 1);
  assert_true(run(f));
  assert_int_equal(vtest_session_sync_count(f->s), 1);
  /* gone now */
  cmd(f, VTEST_CMD_SYNC_READ, 1, (uint32_t[]){1}, 1);
  expect_end(f, VTEST_END_VIOLATION, "does not exist");
}

/* A wait left pending when the session ends (the client hung up inside
 * SYNC_WAIT): its eventfd and sync references go with the session. */
static void test_wait_pending_at_end(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  int before = vgpu_count_fds();
  cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){0, 0}, 2);
  cmd(f, VTEST_CMD_SYNC_WAIT, 5, (uint32_t[]){VTEST_SYNC_WAIT_FLAG_ANY, 60000, 1, 1, 0}, 5);
  cmd(f, VTEST_CMD_SUBMIT_CMD, 2, (uint32_t[]){VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1}, 2);
  uint32_t sc[1 + 8 + 3] = {1, VTEST_SUBMIT2_FLAG_RING_IDX, 0, 0, 9, 1, 0, 0, 0, 1, 9, 0};
  cmd(f, VTEST_CMD_SUBMIT_CMD2, G_N_ELEMENTS(sc), sc, G_N_ELEMENTS(sc));
  assert_true(run(f));
  assert_int_equal(vtest_session_wait_count(f->s), 1);
  assert_int_equal(vtest_session_timeline_pending(f->s), 1);
  /* the worker's eventfd (the client's copy is still in the socket) */
  assert_int_equal(vgpu_count_fds(), before + 1);
  vtest_session_free(f->s);
  f->s = NULL;
  assert_int_equal(vgpu_count_fds(), before);
  f->s = vtest_session_new(f->r, f->sv[0], &(VtestSessionConfig){.limits = VTEST_DEFAULT_LIMITS});
}

static void test_sync_limits(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  for (int i = 0; i < 16; i++)
    cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){0, 0}, 2);
  assert_true(run(f));
  assert_int_equal(vtest_session_sync_count(f->s), 16);
  cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){0, 0}, 2);
  expect_end(f, VTEST_END_QUOTA, "limit 16");
}

static void test_pending_waits_bounded(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  cmd(f, VTEST_CMD_SYNC_CREATE, 2, (uint32_t[]){0, 0}, 2);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 19, 1}, 3);
  for (uint32_t i = 0; i < VTEST_MAX_PENDING_WAITS; i++) {
    cmd(f, VTEST_CMD_SYNC_WAIT, 5, (uint32_t[]){0, 60000, 1, 1, 0}, 5);
    assert_true(run(f));
    expect(f, (uint32_t[]){0, 23}, 2);
    int fd = -1;
    assert_int_equal(vgpu_recv_fds(f->sv[1], &fd, 1), 1);
    close(fd);
  }
  cmd(f, VTEST_CMD_SYNC_WAIT, 5, (uint32_t[]){0, 60000, 1, 1, 0}, 5);
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_QUOTA);
  /* one write satisfies them all */
  assert_int_equal(vtest_session_wait_count(f->s), VTEST_MAX_PENDING_WAITS);
}

/* Without blobs or context fences the renderer allows version 2 only. */
static void test_renderer_without_v3(void **state) {
  Fix *f = *state;
  static VgpuRendererOps ops;
  ops = *f->r->ops;
  ops.resource_create_blob = NULL;
  const VgpuRendererOps *saved = f->r->ops;
  vtest_session_free(f->s);
  f->r->ops = &ops;
  assert_int_equal(vtest_renderer_max_version(f->r), 2);
  f->s = vtest_session_new(f->r, f->sv[0], &(VtestSessionConfig){.limits = VTEST_DEFAULT_LIMITS});
  name(f);
  agree(f, 3, 2);
  cmd(f, VTEST_CMD_GET_PARAM, 1, (uint32_t[]){1}, 1);
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_VIOLATION);
  vtest_session_free(f->s);
  f->r->ops = saved;
  f->s = vtest_session_new(f->r, f->sv[0], &(VtestSessionConfig){.limits = VTEST_DEFAULT_LIMITS});
}

/* Work submitted with SUBMIT_CMD2 is what a busy wait waits for too. */
static void test_submit2_busy_wait(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  uint32_t sc[1 + 8 + 2] = {1, 0, 9, 2, 0, 0, 0, 0, 0, VGPU_NULL_HANG_DW0, VGPU_NULL_HANG_DW1};
  cmd(f, VTEST_CMD_SUBMIT_CMD2, G_N_ELEMENTS(sc), sc, G_N_ELEMENTS(sc));
  cmd(f, VTEST_CMD_RESOURCE_BUSY_WAIT, 2, (uint32_t[]){0, 0}, 2);
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 7, 1}, 3);
  assert_true(vtest_session_work_pending(f->s));
}

static void test_submit2_unknown_sync(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  uint32_t sc[1 + 8 + 1 + 3] = {1, 0, 9, 1, 10, 1, 0, 0, 0, 0, 77, 1, 0};
  cmd(f, VTEST_CMD_SUBMIT_CMD2, G_N_ELEMENTS(sc), sc, G_N_ELEMENTS(sc));
  expect_end(f, VTEST_END_VIOLATION, "sync 77");
  /* checked before anything reached the renderer: no context yet */
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_CONTEXTS), 0);
}

static void test_capset_and_context_init(void **state) {
  Fix *f = *state;
  name(f);
  agree(f, 3, 3);
  cmd(f, VTEST_CMD_GET_CAPSET, 2, (uint32_t[]){2, 2}, 2);
  assert_true(run(f));
  uint32_t h[3];
  static uint8_t caps[1376];
  assert_int_equal(vgpu_read_all(f->sv[1], h, 12), 0);
  assert_int_equal(h[0], 1 + 1376 / 4);
  assert_int_equal(h[1], 16);
  assert_int_equal(h[2], 1);
  assert_int_equal(vgpu_read_all(f->sv[1], caps, 1376), 0);
  cmd(f, VTEST_CMD_GET_CAPSET, 2, (uint32_t[]){2, 3}, 2); /* version too new */
  cmd(f, VTEST_CMD_GET_CAPSET, 2, (uint32_t[]){9, 0}, 2); /* no such set */
  assert_true(run(f));
  expect(f, (uint32_t[]){1, 16, 0, 1, 16, 0}, 6);
  cmd(f, VTEST_CMD_CONTEXT_INIT, 1, (uint32_t[]){2}, 1);
  cmd(f, VTEST_CMD_CONTEXT_INIT, 1, (uint32_t[]){2}, 1); /* again, the same: fine */
  assert_true(run(f));
  assert_int_equal(vgpu_ledger_used(f->ledger, VGPU_RES_CONTEXTS), 1);
  cmd(f, VTEST_CMD_CONTEXT_INIT, 1, (uint32_t[]){1}, 1);
  assert_false(run(f));
  assert_int_equal(vtest_session_end_kind(f->s), VTEST_END_VIOLATION);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_handshake_like_mesa, setup, teardown),
      cmocka_unit_test_setup_teardown(test_version_negotiation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_command_before_create_renderer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_create_passes_sealed_memfd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backings_hold_no_fds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_loop_large_submit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_duplicate_handle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zero_handle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transfer_outside_resource, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transfer_1d_array_layers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transfer_1d_array_layer_in_y, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transfer_past_backing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transfer_unknown_handle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_vram_quota_refuses_before_allocating, setup_tiny,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_object_quota, setup_tiny, teardown),
      cmocka_unit_test_setup_teardown(test_partial_commands, setup, teardown),
      cmocka_unit_test_setup_teardown(test_submit_and_busy_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hangup_while_waiting, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hangup_with_work_pending, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v0_transfer_get_is_raw, setup, teardown),
      cmocka_unit_test_setup_teardown(test_view_keeps_texture_charged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_view_charge_released_at_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sub_contexts_count, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_object_bound, setup_bound, teardown),
      cmocka_unit_test_setup_teardown(test_long_shader_charged, setup_tiny, teardown),
      cmocka_unit_test_setup_teardown(test_stream_framing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v0_transfer_get_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v0_transfer_stride_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v3_needs_agreement, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mesa25_renegotiation_and_blob, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blob_released, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blob_bad, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blob_overflow, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v3_server_handles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_syncs_and_waits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wait_pending_at_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_limits, setup_syncs, teardown),
      cmocka_unit_test_setup_teardown(test_pending_waits_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_submit2_unknown_sync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_renderer_without_v3, setup, teardown),
      cmocka_unit_test_setup_teardown(test_submit2_busy_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_capset_and_context_init, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
