/* The metrics endpoint's text: see metrics.h.  Everything comes from the
 * same reading of the supervisor's records and the book that the control
 * server's views use (daemon/snapshot.h); counters are the book's
 * (monotonic, clamped to what each worker was granted). */
#include "daemon/metrics.h"

#include <inttypes.h>
#include <string.h>

#include "core/gpumem.h"
#include "core/profile.h"
#include "daemon/probe.h"
#include "daemon/snapshot.h"
#include "vgpu-config.h"

void vgpu_metrics_label_value(GString *out, const char *v, size_t max) {
  for (size_t i = 0; v && i < max && v[i]; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c == '\\')
      g_string_append(out, "\\\\");
    else if (c == '"')
      g_string_append(out, "\\\"");
    else if (c == '\n')
      g_string_append(out, "\\n");
    else if (c < 0x20 || c >= 0x7f)
      g_string_append_c(out, '?'); /* keeps the text valid UTF-8 */
    else
      g_string_append_c(out, (char)c);
  }
}

void vgpu_metrics_seconds(GString *out, uint64_t ns) {
  g_string_append_printf(out, "%" PRIu64 ".%09" PRIu64, ns / 1000000000u, ns % 1000000000u);
}

static void family(GString *o, const char *name, const char *type, const char *help) {
  g_string_append_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef struct {
  VgpuInstance *in;
  const VgpuInstanceConfig *cfg;
  VgpuInstanceSnapshot snap;
  GString *labels; /* instance="...",profile="..." */
} Inst;

static void add_label(GString *l, const char *name, const char *value, size_t max) {
  if (l->len)
    g_string_append_c(l, ',');
  g_string_append_printf(l, "%s=\"", name);
  vgpu_metrics_label_value(l, value, max);
  g_string_append_c(l, '"');
}

/* What each series reads from an instance (or a tenant) and how it is
 * written: a count, a ratio, or nanoseconds written as seconds. */
typedef enum { V_COUNT, V_SECONDS, V_RATIO } ValueKind;

typedef struct {
  const char *name;
  const char *type;
  const char *help;
  ValueKind kind;
  /* false: no sample for this one (e.g. no limit) */
  bool (*get)(const Inst *i, uint64_t *v);
} InstFamily;

#define GETTER(fn, expr, present)                                                                  \
  static bool fn(const Inst *i, uint64_t *v) {                                                     \
    *v = (expr);                                                                                   \
    return (present);                                                                              \
  }
GETTER(i_vram, i->snap.usage.used[VGPU_RES_VRAM], true)
GETTER(i_vram_limit, i->snap.usage.limit[VGPU_RES_VRAM], *v > 0)
GETTER(i_res, i->snap.usage.used[VGPU_RES_OBJECTS], true)
GETTER(i_res_limit, i->snap.usage.limit[VGPU_RES_OBJECTS], *v > 0)
GETTER(i_ctx, i->snap.usage.used[VGPU_RES_CONTEXTS], true)
GETTER(i_clients, i->snap.clients, true)
GETTER(i_fps_cap, i->cfg->eff.fps_cap, *v > 0)
GETTER(i_share, vgpu_instance_share_ppm(i->in), true)
GETTER(i_busy, i->snap.usage.used[VGPU_RES_BUSY_NS], true)
GETTER(i_frames, i->snap.usage.used[VGPU_RES_FRAMES], true)
GETTER(i_throttled, i->snap.usage.used[VGPU_RES_THROTTLED_NS], true)
GETTER(i_refusals, i->snap.usage.refusals, true)
GETTER(i_crashes, i->snap.usage.worker_crashes, true)
GETTER(i_ended, i->snap.sessions_ended, true)

static const InstFamily inst_families[] = {
    {"vgpu_instance_vram_used_bytes", "gauge", "VRAM its tenants hold.", V_COUNT, i_vram},
    {"vgpu_instance_vram_limit_bytes", "gauge", "Its VRAM limit (absent: unlimited).", V_COUNT,
     i_vram_limit},
    {"vgpu_instance_resources", "gauge", "Resources its tenants hold.", V_COUNT, i_res},
    {"vgpu_instance_resources_limit", "gauge", "Its resource limit (absent: unlimited).", V_COUNT,
     i_res_limit},
    {"vgpu_instance_contexts", "gauge", "Rendering contexts its tenants hold.", V_COUNT, i_ctx},
    {"vgpu_instance_clients", "gauge", "Connected tenants (programs and virtual machines).",
     V_COUNT, i_clients},
    {"vgpu_instance_fps_cap", "gauge", "Its frame-rate cap per tenant (absent: none).", V_COUNT,
     i_fps_cap},
    {"vgpu_instance_gpu_share_ratio", "gauge",
     "Its current share of one GPU's time, 0..1 (0: best-effort, not throttled).", V_RATIO,
     i_share},
    {"vgpu_instance_busy_seconds_total", "counter", "GPU time its tenants used.", V_SECONDS,
     i_busy},
    {"vgpu_instance_frames_total", "counter", "Frames its tenants presented.", V_COUNT, i_frames},
    {"vgpu_instance_throttled_seconds_total", "counter",
     "Time its tenants were held back by the GPU-time scheduler or the fps cap.", V_SECONDS,
     i_throttled},
    {"vgpu_instance_refusals_total", "counter", "Requests refused for its quotas.", V_COUNT,
     i_refusals},
    {"vgpu_instance_crashes_total", "counter", "Its workers that died abnormally.", V_COUNT,
     i_crashes},
    {"vgpu_instance_sessions_ended_total", "counter",
     "Sessions vgpud's side ended (quota, violation, GPU timeout, crash, stop).", V_COUNT, i_ended},
};

typedef struct {
  const char *name;
  const char *type;
  const char *help;
  ValueKind kind;
  int res; /* VGPU_RES_* of the worker's usage */
} TenantFamily;

static const TenantFamily tenant_families[] = {
    {"vgpu_tenant_vram_used_bytes", "gauge", "VRAM the tenant holds.", V_COUNT, VGPU_RES_VRAM},
    {"vgpu_tenant_resources", "gauge", "Resources the tenant holds.", V_COUNT, VGPU_RES_OBJECTS},
    {"vgpu_tenant_contexts", "gauge", "Rendering contexts the tenant holds.", V_COUNT,
     VGPU_RES_CONTEXTS},
    {"vgpu_tenant_busy_seconds_total", "counter", "GPU time the tenant used.", V_SECONDS,
     VGPU_RES_BUSY_NS},
    {"vgpu_tenant_frames_total", "counter", "Frames the tenant presented.", V_COUNT,
     VGPU_RES_FRAMES},
    {"vgpu_tenant_throttled_seconds_total", "counter", "Time the tenant was held back.", V_SECONDS,
     VGPU_RES_THROTTLED_NS},
};

static void value(GString *o, ValueKind kind, uint64_t v) {
  if (kind == V_SECONDS)
    vgpu_metrics_seconds(o, v);
  else if (kind == V_RATIO)
    g_string_append_printf(o, "%" PRIu64 ".%06" PRIu64, v / 1000000u, v % 1000000u);
  else
    g_string_append_printf(o, "%" PRIu64, v);
}

/* The Mesa version the probe read from the GL version string, else "Mesa X"
 * from the renderer's description, when it names one. */
static char *mesa_version(GPtrArray *all) {
  for (guint i = 0; i < all->len; i++) {
    const VgpuProbe *p = vgpu_instance_probe(g_ptr_array_index(all, i));
    const VgpuProbeAnswer *a =
        p && vgpu_probe_state(p) == VGPU_PROBE_READY ? vgpu_probe_answer(p) : NULL;
    if (a && a->mesa_version)
      return g_strdup(a->mesa_version);
    const char *m = a && a->description ? strstr(a->description, "Mesa ") : NULL;
    if (m) {
      m += 5;
      return g_strndup(m, strcspn(m, " )"));
    }
  }
  return g_strdup("unknown");
}

char *vgpu_metrics_text(VgpuSupervisor *s) {
  GString *o = g_string_sized_new(16384);
  g_autoptr(GPtrArray) all = vgpu_supervisor_instances(s);
  const VgpuConfig *cfg = vgpu_supervisor_config(s);

  family(o, "vgpu_info", "gauge", "vgpud's version, renderer and the libraries it renders with.");
  g_autofree char *mesa = mesa_version(all);
  g_autoptr(GString) info = g_string_new(NULL);
  add_label(info, "version", VGPU_VERSION, 64);
  add_label(info, "renderer", cfg->renderer, 64);
  add_label(info, "mesa_version", mesa, 64);
  add_label(info, "virglrenderer_version", VGPU_VIRGLRENDERER_VERSION, 64);
  g_string_append_printf(o, "vgpu_info{%s} 1\n", info->str);

  uint64_t gm, assigned;
  uint32_t milli;
  vgpu_supervisor_gpu_memory(s, &gm, &milli, &assigned);
  family(o, "vgpu_gpu_memory_bytes", "gauge",
         "GPU memory the instances' VRAM limits are cut from.");
  g_string_append_printf(o, "vgpu_gpu_memory_bytes %" PRIu64 "\n", gm);
  family(o, "vgpu_gpu_memory_free_bytes", "gauge",
         "GPU memory (times overcommit) no instance's VRAM limit takes.");
  g_string_append_printf(o, "vgpu_gpu_memory_free_bytes %" PRIu64 "\n",
                         vgpu_gpumem_free(vgpu_gpumem_capacity(gm, milli), assigned));

  Inst *insts = g_new0(Inst, MAX(all->len, 1));
  for (guint i = 0; i < all->len; i++) {
    Inst *it = &insts[i];
    it->in = g_ptr_array_index(all, i);
    it->cfg = vgpu_instance_config(it->in);
    vgpu_instance_snapshot(s, it->in, true, &it->snap);
    it->labels = g_string_new(NULL);
    add_label(it->labels, "instance", it->cfg->name, 64);
    add_label(it->labels, "profile", it->cfg->profile, 64);
  }
  for (size_t f = 0; f < G_N_ELEMENTS(inst_families); f++) {
    const InstFamily *fam = &inst_families[f];
    family(o, fam->name, fam->type, fam->help);
    for (guint i = 0; i < all->len; i++) {
      uint64_t v = 0;
      if (!fam->get(&insts[i], &v))
        continue;
      g_string_append_printf(o, "%s{%s} ", fam->name, insts[i].labels->str);
      value(o, fam->kind, v);
      g_string_append_c(o, '\n');
    }
  }
  for (size_t f = 0; f < G_N_ELEMENTS(tenant_families); f++) {
    const TenantFamily *fam = &tenant_families[f];
    family(o, fam->name, fam->type, fam->help);
    for (guint i = 0; i < all->len; i++) {
      GArray *ts = insts[i].snap.tenants;
      for (guint t = 0; t < ts->len; t++) {
        const VgpuTenantSnapshot *ten = &g_array_index(ts, VgpuTenantSnapshot, t);
        char pid[16];
        g_snprintf(pid, sizeof(pid), "%d", (int)ten->info.client_pid);
        g_autoptr(GString) l = g_string_new(insts[i].labels->str);
        add_label(l, "tenant_pid", pid, sizeof(pid));
        add_label(l, "tenant_name", ten->info.client_name,
                  MIN(sizeof(ten->info.client_name), (size_t)VGPU_METRICS_NAME_MAX));
        g_string_append_printf(o, "%s{%s} ", fam->name, l->str);
        value(o, fam->kind, ten->usage.used[fam->res]);
        g_string_append_c(o, '\n');
      }
    }
  }
  for (guint i = 0; i < all->len; i++) {
    vgpu_instance_snapshot_clear(&insts[i].snap);
    g_string_free(insts[i].labels, TRUE);
  }
  g_free(insts);
  return g_string_free(o, FALSE);
}
