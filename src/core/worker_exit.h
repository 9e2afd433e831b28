/* The worker's exit status: one contract shared by vgpu-worker (which
 * exits with it) and vgpud (which logs it and counts crashes).
 *
 * A tenant that leaves, at any point and in any way (between commands, in
 * the middle of a header, while its work is still running), is not a
 * crash: it ends with VGPU_WORKER_EXIT_CLIENT_LEFT.  Only an internal
 * error, a renderer failure on valid input, or an unknown status or
 * signal counts as one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef enum {
  VGPU_WORKER_EXIT_CLIENT_LEFT = 0, /* hung up, idle timeout, or left mid-message */
  VGPU_WORKER_EXIT_ERROR = 1,       /* internal error (also ASan's status) */
  VGPU_WORKER_EXIT_VIOLATION = 2,   /* malformed or hostile input */
  VGPU_WORKER_EXIT_QUOTA = 3,       /* a request beyond the instance's limits */
  VGPU_WORKER_EXIT_RENDERER = 4,    /* the renderer failed on valid input */
  VGPU_WORKER_EXIT_GPU_TIMEOUT = 5, /* a submission ran past gpu-timeout */
  VGPU_WORKER_EXIT_N
} VgpuWorkerExit;

/* "client left", "internal error", ...; NULL for a status outside the
 * contract. */
static inline const char *vgpu_worker_exit_name(int code) {
  static const char *const names[VGPU_WORKER_EXIT_N] = {
      "client left",   "internal error",   "protocol violation",
      "quota refusal", "renderer failure", "gpu timeout",
  };
  return code >= 0 && code < VGPU_WORKER_EXIT_N ? names[code] : NULL;
}

/* Whether an exit status counts as a worker crash.  A status outside the
 * contract (a sanitizer's, exec's 127) does. */
static inline bool vgpu_worker_exit_is_crash(int code) {
  switch (code) {
  case VGPU_WORKER_EXIT_CLIENT_LEFT:
  case VGPU_WORKER_EXIT_VIOLATION:
  case VGPU_WORKER_EXIT_QUOTA:
  case VGPU_WORKER_EXIT_GPU_TIMEOUT:
    return false;
  default:
    return true;
  }
}
