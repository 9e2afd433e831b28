/* The vtest protocol versions this server offers, for those who report
 * them (vgpu-worker --probe).  Negotiation itself is in vtest_session.c:
 * a client asking for version v gets min(v, VTEST_PROTOCOL_VERSION), and
 * version 1, never a complete protocol, is answered with 0. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "vtest/vtest_decode.h"

/* Highest version offered. */
static inline uint32_t vtest_max_protocol_version(void) {
  return VTEST_PROTOCOL_VERSION;
}

/* Fills out[] with every version a client can end up speaking with a
 * server whose highest version is max, ascending (0, then 2 up to max);
 * returns how many there are, even when more than n (only n are
 * written).  A worker's max depends on its renderer
 * (vtest_renderer_max_version: 3 with blobs and context fences, else 2). */
static inline size_t vtest_protocol_versions_upto(uint32_t max, uint32_t *out, size_t n) {
  size_t k = 0;
  for (uint32_t v = 0; v <= max; v++) {
    if (v == 1)
      continue;
    if (k < n)
      out[k] = v;
    k++;
  }
  return k;
}

/* The same up to the highest version this server can speak at all. */
static inline size_t vtest_protocol_versions(uint32_t *out, size_t n) {
  return vtest_protocol_versions_upto(vtest_max_protocol_version(), out, n);
}
