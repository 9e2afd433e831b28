/* libFuzzer target for the display channel's reply reader: the input is
 * what a hostile QEMU writes on the GPU_SET_SOCKET socket.  Byte 0 picks
 * the device's head count (1..16) and which questions the back-end asks
 * once the handshake is done; the rest is QEMU's byte stream.  Checks
 * beyond ASan/UBSan: every error has a reason, and the modes and EDIDs the
 * channel keeps are always in range. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vhost/vhost_display.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 65536u

static void check_kept(const VhuDisplay *d, uint32_t heads) {
  const VgpuDisplayMode *m = vhu_display_modes(d);
  for (uint32_t i = 0; m && i < VHU_DISP_MAX_SCANOUTS; i++) {
    if (m[i].enabled > 1 || (i >= heads && m[i].enabled))
      abort();
    if (m[i].enabled && (m[i].r.w == 0 || m[i].r.h == 0 || m[i].r.w > 16384 || m[i].r.h > 16384 ||
                         m[i].r.x > 16384 || m[i].r.y > 16384))
      abort();
  }
  for (uint32_t i = 0; i < VHU_DISP_MAX_SCANOUTS; i++) {
    size_t len = 0;
    const uint8_t *e = vhu_display_edid(d, i, &len);
    if (e && (i >= heads || len == 0 || len > 1024 || len % 128))
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > MAX_INPUT)
    return 0;
  uint32_t heads = (data[0] & 0xf) + 1;
  uint8_t asks = data[0] >> 4;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return 0;
  int buf = (int)MAX_INPUT * 2;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  int rc = 0;
  const char *why = NULL;
  VhuDisplay *d = vhu_display_new(sv[0], heads, 50, &rc, &why);
  if (!d) {
    close(sv[1]);
    return 0;
  }
  size_t done = 1;
  while (done < size) {
    ssize_t n = write(sv[1], data + done, size - done);
    if (n <= 0)
      break;
    done += (size_t)n;
  }
  shutdown(sv[1], SHUT_WR); /* QEMU says no more: the reader meets EOF */
  for (int turns = 0; turns < 4096; turns++) {
    why = NULL;
    rc = vhu_display_on_readable(d, &why);
    if (rc < 0) {
      if (!why || (rc != -EPROTO && rc != -EPIPE && rc != -ETIMEDOUT))
        abort();
      break;
    }
    if (rc & VHU_DISP_EV_READY) {
      if ((asks & 1) && vhu_display_ask_modes(d, &why) < 0)
        break;
      for (uint32_t i = 0; i < 3; i++)
        if ((asks & (2u << i)) && vhu_display_ask_edid(d, i, &why) < 0)
          break;
    }
    if (vhu_display_outstanding(d) > VHU_DISP_MAX_ASKED)
      abort();
    check_kept(d, heads);
  }
  vhu_display_free(d);
  close(sv[1]);
  return 0;
}
