/* What workers offer: vgpud never runs a renderer itself, so it starts one
 * `vgpu-worker --probe` per renderer configuration, isolated like any
 * worker, and keeps its answer (renderer, vtest protocol versions,
 * capability sets) for `vgpuctl status`.
 *
 * The probe is a worker, so its answer is untrusted input: read without
 * blocking, at most VGPU_PROBE_MAX_ANSWER bytes, within a timeout (then
 * its process group is killed), and parsed by vgpu_probe_parse(), which
 * accepts only the shape below and bounded values.  A probe that fails
 * leaves the reason to show. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/isolation.h"

#define VGPU_PROBE_MAX_ANSWER (64u << 10)
#define VGPU_PROBE_MAX_VERSIONS 16u
#define VGPU_PROBE_MAX_CAPSETS 32u
#define VGPU_PROBE_MAX_CAPSET_ID 255u
/* virglrenderer's largest capability set today is ~1.4 KiB. */
#define VGPU_PROBE_MAX_CAPSET_SIZE (1u << 20)
#define VGPU_PROBE_MAX_NAME 32u
#define VGPU_PROBE_MAX_DESCRIPTION 256u
/* gl_renderer, gl_version, virglrenderer_version and _library. */
#define VGPU_PROBE_MAX_TEXT 256u
/* A refusal's reason: printable ASCII, at most this many bytes. */
#define VGPU_PROBE_MAX_REASON 200u
/* Host memory the probe may allocate once its renderer is up. */
#define VGPU_PROBE_HOST_MEMORY (1ull << 30)

typedef struct VgpuProbeCapset {
  uint32_t id; /* 1..VGPU_PROBE_MAX_CAPSET_ID */
  uint32_t version;
  uint32_t size; /* bytes, 1..VGPU_PROBE_MAX_CAPSET_SIZE */
} VgpuProbeCapset;

/* A parsed answer:
 *   {"renderer": "virgl", "description": "...", "vtest_protocols": [0, 2],
 *    "capsets": [{"id": 1, "version": 1, "size": 308}, ...],
 *    "gl_renderer": "...", "gl_version": "...", "virglrenderer_version":
 *    "0.10.4", "virglrenderer_library": "/usr/lib/..."}  (the last four
 *    optional)
 * Members of other names are ignored. */
typedef struct VgpuProbeAnswer {
  char *renderer;    /* 1..VGPU_PROBE_MAX_NAME of [a-z0-9_-] */
  char *description; /* printable ASCII, at most VGPU_PROBE_MAX_DESCRIPTION bytes */
  guint n_versions;  /* 1..VGPU_PROBE_MAX_VERSIONS, strictly ascending, each <= 255 */
  uint32_t versions[VGPU_PROBE_MAX_VERSIONS];
  guint n_capsets; /* 0..VGPU_PROBE_MAX_CAPSETS, ids strictly ascending */
  VgpuProbeCapset capsets[VGPU_PROBE_MAX_CAPSETS];
  /* Optional (NULL when absent), printable ASCII, 1..VGPU_PROBE_MAX_TEXT:
   * the GL context's GL_RENDERER and GL_VERSION, the virglrenderer version
   * the worker was built against and the library file it loaded (an
   * absolute path). */
  char *gl_renderer, *gl_version, *virgl_version, *virgl_library;
  /* From gl_version: "22.3.6" out of "... Mesa 22.3.6"; NULL if none. */
  char *mesa_version;
} VgpuProbeAnswer;

/* Parses len bytes (no NUL needed; one embedded is refused).  On failure
 * *out is left empty and error says what was wrong: one line of printable
 * ASCII, at most VGPU_PROBE_MAX_REASON bytes. */
bool vgpu_probe_parse(const char *data, size_t len, VgpuProbeAnswer *out, GError **error);
void vgpu_probe_answer_clear(VgpuProbeAnswer *a);
/* Mesa's version out of a GL_VERSION string ("4.5 (Core Profile) Mesa
 * 22.3.6" gives "22.3.6"), or NULL when it names no Mesa. */
char *vgpu_probe_mesa_version(const char *gl_version);

typedef enum {
  VGPU_PROBE_PROBING = 0, /* started, no answer yet */
  VGPU_PROBE_READY,       /* answered */
  VGPU_PROBE_UNKNOWN,     /* failed: see vgpu_probe_reason() */
} VgpuProbeState;

typedef struct VgpuProbe VgpuProbe;

typedef struct VgpuProbeSpawn {
  const char *label;       /* for log lines, e.g. "virgl on EGL surfaceless" */
  const char *const *argv; /* the worker with --probe and its renderer options */
  const char *const *envp;
  VgpuIsolation *isolation; /* must outlive the probe */
  guint timeout_s;          /* >= 1 */
} VgpuProbeSpawn;

/* Starts a probe in the main context; never blocks.  Always returns a
 * probe: one that could not be started is UNKNOWN at once. */
VgpuProbe *vgpu_probe_start(const VgpuProbeSpawn *sp);
VgpuProbeState vgpu_probe_state(const VgpuProbe *p);
const char *vgpu_probe_reason(const VgpuProbe *p);            /* UNKNOWN only, else NULL */
const VgpuProbeAnswer *vgpu_probe_answer(const VgpuProbe *p); /* READY only, else NULL */
/* Whether its process has not been reaped yet. */
bool vgpu_probe_alive(const VgpuProbe *p);
/* Kills a live probe's process group (its exit is still reaped by the
 * main loop).  With a reason it becomes UNKNOWN (logged) unless it had
 * answered; without one (vgpud stopping) nothing is logged. */
void vgpu_probe_kill(VgpuProbe *p, const char *why);
/* A live probe is killed and forgotten (its zombie, if any, is left). */
void vgpu_probe_free(VgpuProbe *p);
