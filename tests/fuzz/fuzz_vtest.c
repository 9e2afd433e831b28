/* libFuzzer target for the vtest front-end: every input is fed through the
 * decoder and then, as one client's byte stream, through a whole session on
 * the null renderer with a small quota, so validation, quota refusals and
 * resource bookkeeping are all reached.  ASan/UBSan catch what goes wrong;
 * the checks below catch books that do not balance. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ledger.h"
#include "render/renderer.h"
#include "vtest/vtest_decode.h"
#include "vtest/vtest_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static VgpuLedger *ledger;

static void decode_all(const uint8_t *data, size_t size, const VtestLimits *lim) {
  size_t off = 0;
  while (off < size) {
    VtestCmd cmd;
    size_t need;
    const char *why = NULL;
    VtestDecodeResult r = vtest_decode(data + off, size - off, lim, &cmd, &need, &why);
    if (r != VTEST_DECODE_OK) {
      if (r == VTEST_DECODE_NEED_MORE && need <= size - off)
        abort(); /* claimed to need bytes it already had */
      if (r == VTEST_DECODE_INVALID && !why)
        abort(); /* every refusal must say why */
      return;
    }
    if (cmd.size < VTEST_HDR_SIZE || cmd.size > size - off)
      abort();
    off += cmd.size;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Small limits so fuzzing reaches the refusal paths quickly. */
  VtestLimits lim = {.max_name_bytes = 256,
                     .max_submit_bytes = 1 << 16,
                     .max_transfer_bytes = 1 << 16,
                     .max_wait_syncs = 8};
  decode_all(data, size, &lim);

  if (!ledger) {
    uint64_t limits[VGPU_RES_N_QUOTA] = {[VGPU_RES_VRAM] = 4u << 20, [VGPU_RES_OBJECTS] = 64,
                                         [VGPU_RES_CONTEXTS] = 1};
    ledger = vgpu_ledger_new_standalone(limits);
  }
  int slot = 0;
  VgpuRenderer *r = vgpu_renderer_null_new(NULL, NULL);
  VtestSessionConfig cfg = {
      .ledger = ledger, .slot = (uint32_t)slot, .limits = lim, .max_syncs = 16};
  /* The lowest free descriptor: one a session leaves open (a wait's
   * eventfd, a blob's memfd) takes it. */
  int probe = dup(2);
  close(probe);
  VtestSession *s = vtest_session_new(r, -1, &cfg);
  /* Feed in two uneven pieces to exercise partial commands. */
  uint8_t *buf = malloc(size + 1);
  memcpy(buf, data, size);
  size_t len = size / 3, off = 0, consumed, need;
  bool alive = true;
  while (alive) {
    alive = vtest_session_process(s, buf + off, len - off, &consumed, &need);
    off += consumed;
    if (len == size || !alive)
      break;
    len = size;
  }
  /* Retire what the renderer has (context fences move syncs, wake waits). */
  r->ops->poll(r);
  if (vtest_session_sync_count(s) > 16 || vtest_session_wait_count(s) > VTEST_MAX_PENDING_WAITS)
    abort(); /* past the limits it was given */
  vtest_session_free(s);
  int after = dup(2);
  close(after);
  if (after != probe)
    abort(); /* a descriptor outlived its session */
  vgpu_renderer_free(r);
  free(buf);
  /* A finished session must have released everything it charged: blobs,
   * pipe resources no blob claimed, and what command streams hold. */
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    if (vgpu_ledger_used(ledger, k) != 0)
      abort();
  return 0;
}
