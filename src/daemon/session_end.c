#include "daemon/session_end.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "core/profile.h"
#include "core/worker_exit.h"

struct VgpuSessionRing {
  VgpuSessionEnd e[VGPU_SESSION_END_RING];
  guint next, n;
};

VgpuSessionRing *vgpu_session_ring_new(void) {
  return g_new0(VgpuSessionRing, 1);
}

void vgpu_session_ring_free(VgpuSessionRing *r) {
  g_free(r);
}

void vgpu_session_ring_add(VgpuSessionRing *r, const VgpuSessionEnd *e) {
  r->e[r->next] = *e;
  r->next = (r->next + 1) % VGPU_SESSION_END_RING;
  if (r->n < VGPU_SESSION_END_RING)
    r->n++;
}

bool vgpu_session_chain_has(const VgpuProcRef *chain, guint n, const VgpuProcRef *who) {
  for (guint i = 0; i < n && i < VGPU_SESSION_ANCESTORS; i++)
    if (chain[i].pid == who->pid && (who->start == 0 || chain[i].start == who->start))
      return true;
  return false;
}

GArray *vgpu_session_ring_find(const VgpuSessionRing *r, const VgpuProcRef *who, uid_t uid,
                               bool admin) {
  GArray *a = g_array_new(FALSE, FALSE, sizeof(VgpuSessionEnd));
  for (guint i = 0; i < r->n; i++) {
    const VgpuSessionEnd *e =
        &r->e[(r->next + VGPU_SESSION_END_RING - r->n + i) % VGPU_SESSION_END_RING];
    if ((admin || e->client_uid == uid) && vgpu_session_chain_has(e->chain, e->n_chain, who))
      g_array_append_val(a, *e);
  }
  return a;
}

/* "VRAM limit 256 MiB", "resource limit 4096", "context limit 16". */
static char *limit_text(uint32_t kind, uint64_t v) {
  if (kind == VGPU_RES_VRAM) {
    g_autofree char *s = vgpu_format_size(v, false);
    return g_strdup(s);
  }
  return g_strdup_printf("%" G_GUINT64_FORMAT, v);
}

static const char *kind_text(uint32_t kind) {
  switch (kind) {
  case VGPU_RES_VRAM:
    return "VRAM";
  case VGPU_RES_OBJECTS:
    return "resource";
  case VGPU_RES_CONTEXTS:
    return "context";
  default:
    return "quota";
  }
}

void vgpu_session_end_compose(VgpuSessionEnd *e, int status, const char *why,
                              const VgpuBookRefusal *refusal, uint32_t gpu_timeout_s) {
  const char *in = e->instance;
  e->by_vgpud = true;
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    e->cause = sig == SIGTERM ? "stopped" : "crash";
    if (sig == SIGTERM)
      g_snprintf(e->reason, sizeof(e->reason),
                 "worker stopped by vgpud or an operator on instance %s", in);
    else
      g_snprintf(e->reason, sizeof(e->reason), "worker %s on instance %s", why, in);
    return;
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  switch (code) {
  case VGPU_WORKER_EXIT_CLIENT_LEFT:
    e->by_vgpud = false;
    e->cause = "client-left";
    g_snprintf(e->reason, sizeof(e->reason), "the client left instance %s", in);
    return;
  case VGPU_WORKER_EXIT_QUOTA:
    e->cause = "quota";
    if (refusal && refusal->valid) {
      g_autofree char *lim = limit_text(refusal->kind, refusal->limit);
      g_autofree char *want = limit_text(refusal->kind, refusal->want);
      g_autofree char *others = limit_text(refusal->kind, refusal->others);
      g_snprintf(e->reason, sizeof(e->reason),
                 "%s limit %s reached on instance %s (the session asked for %s in all, other "
                 "tenants held %s)",
                 kind_text(refusal->kind), lim, in, want, others);
    } else {
      g_snprintf(e->reason, sizeof(e->reason),
                 "a per-session limit reached on instance %s (stream objects, sync objects or "
                 "pending waits; vgpud's log names it)",
                 in);
    }
    return;
  case VGPU_WORKER_EXIT_VIOLATION:
    e->cause = "violation";
    g_snprintf(e->reason, sizeof(e->reason),
               "protocol violation on instance %s (malformed or refused input; vgpud's log "
               "names it)",
               in);
    return;
  case VGPU_WORKER_EXIT_GPU_TIMEOUT:
    e->cause = "gpu-timeout";
    g_snprintf(e->reason, sizeof(e->reason),
               "GPU timeout on instance %s: submitted work ran past gpu-timeout %u s", in,
               gpu_timeout_s);
    return;
  case VGPU_WORKER_EXIT_RENDERER:
    e->cause = "renderer";
    g_snprintf(e->reason, sizeof(e->reason), "the renderer failed on instance %s", in);
    return;
  default:
    e->cause = "crash";
    g_snprintf(e->reason, sizeof(e->reason), "worker ended on instance %s: %s", in, why);
    return;
  }
}
