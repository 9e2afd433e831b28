#include "core/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/fd.h"

const char *vgpu_res_kind_name(VgpuResKind kind) {
  static const char *const names[VGPU_RES_N] = {"vram",     "resources", "contexts", "frames",
                                                "commands", "bytes_in",  "busy_ns"};
  return (unsigned)kind < VGPU_RES_N ? names[kind] : "?";
}

static VgpuLedger *ledger_wrap(int fd, size_t size, GError **error) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "mapping the ledger: %s",
                g_strerror(errno));
    return NULL;
  }
  VgpuLedger *l = g_new0(VgpuLedger, 1);
  l->hdr = p;
  l->size = size;
  l->fd = fd;
  return l;
}

VgpuLedger *vgpu_ledger_create(GError **error) {
  size_t size = sizeof(VgpuLedgerHeader);
  vgpu_autofd int fd = memfd_create("vgpu-ledger", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "creating the ledger: %s",
                g_strerror(errno));
    return NULL;
  }
  VgpuLedger *l = ledger_wrap(fd, size, error);
  if (!l)
    return NULL;
  vgpu_steal_fd(&fd);
  l->hdr->magic = VGPU_LEDGER_MAGIC;
  l->hdr->version = VGPU_LEDGER_VERSION;
  l->hdr->max_instances = VGPU_LEDGER_MAX_INSTANCES;
  l->hdr->max_slots = VGPU_LEDGER_MAX_SLOTS;
  return l;
}

VgpuLedger *vgpu_ledger_map(int fd, GError **error) {
  struct stat st;
  if (fstat(fd, &st) < 0 || (size_t)st.st_size != sizeof(VgpuLedgerHeader)) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                "ledger fd %d is not a ledger of this version", fd);
    return NULL;
  }
  VgpuLedger *l = ledger_wrap(fd, sizeof(VgpuLedgerHeader), error);
  if (l && (l->hdr->magic != VGPU_LEDGER_MAGIC || l->hdr->version != VGPU_LEDGER_VERSION)) {
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "ledger has a bad magic or version");
    l->fd = -1; /* the caller still owns the fd */
    vgpu_ledger_free(l);
    return NULL;
  }
  return l;
}

void vgpu_ledger_free(VgpuLedger *l) {
  if (!l)
    return;
  munmap(l->hdr, l->size);
  if (l->fd >= 0)
    vgpu_close(l->fd);
  g_free(l);
}

VgpuLedgerInstance *vgpu_ledger_instance(VgpuLedger *l, uint32_t inst) {
  g_return_val_if_fail(inst < VGPU_LEDGER_MAX_INSTANCES, NULL);
  return &l->hdr->instances[inst];
}

VgpuLedgerSlot *vgpu_ledger_slot(VgpuLedger *l, uint32_t slot) {
  g_return_val_if_fail(slot < VGPU_LEDGER_MAX_SLOTS, NULL);
  return &l->hdr->slots[slot];
}

int vgpu_ledger_instance_add(VgpuLedger *l, const char *name,
                             const uint64_t limits[VGPU_RES_N_QUOTA]) {
  for (uint32_t i = 0; i < VGPU_LEDGER_MAX_INSTANCES; i++) {
    VgpuLedgerInstance *in = &l->hdr->instances[i];
    if (atomic_load(&in->in_use))
      continue;
    memset((void *)in, 0, sizeof(*in));
    in->index = i;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&in->lock, &a);
    pthread_mutexattr_destroy(&a);
    g_strlcpy(in->name, name, sizeof(in->name));
    vgpu_ledger_instance_set_limits(l, i, limits);
    atomic_store(&in->in_use, 1);
    return (int)i;
  }
  return -ENOSPC;
}

void vgpu_ledger_instance_set_limits(VgpuLedger *l, uint32_t inst,
                                     const uint64_t limits[VGPU_RES_N_QUOTA]) {
  VgpuLedgerInstance *in = vgpu_ledger_instance(l, inst);
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    atomic_store(&in->limit[k], limits[k]);
}

void vgpu_ledger_instance_remove(VgpuLedger *l, uint32_t inst) {
  atomic_store(&vgpu_ledger_instance(l, inst)->in_use, 0);
}

int vgpu_ledger_slot_claim(VgpuLedger *l, uint32_t inst, pid_t client_pid, uid_t client_uid) {
  for (uint32_t i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
    VgpuLedgerSlot *s = &l->hdr->slots[i];
    uint32_t expect = VGPU_SLOT_FREE;
    if (!atomic_compare_exchange_strong(&s->state, &expect, VGPU_SLOT_ACTIVE))
      continue;
    s->instance = inst;
    s->worker_pid = 0;
    s->client_pid = client_pid;
    s->client_uid = client_uid;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->started_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (int k = 0; k < VGPU_RES_N; k++)
      atomic_store(&s->used[k], 0);
    atomic_store(&s->peak_vram, 0);
    atomic_fetch_add(&l->hdr->instances[inst].clients, 1);
    return (int)i;
  }
  return -ENOSPC;
}

void vgpu_ledger_slot_set_worker(VgpuLedger *l, uint32_t slot, pid_t worker_pid) {
  vgpu_ledger_slot(l, slot)->worker_pid = worker_pid;
}

/* Takes the instance lock; repairs the totals if the last holder died. */
static void instance_lock(VgpuLedger *l, VgpuLedgerInstance *in) {
  int r = pthread_mutex_lock(&in->lock);
  if (r != EOWNERDEAD)
    return;
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++) {
    uint64_t sum = 0;
    for (uint32_t i = 0; i < VGPU_LEDGER_MAX_SLOTS; i++) {
      VgpuLedgerSlot *s = &l->hdr->slots[i];
      if (atomic_load(&s->state) == VGPU_SLOT_ACTIVE && s->instance == in->index)
        sum += atomic_load(&s->used[k]);
    }
    atomic_store(&in->used[k], sum);
  }
  pthread_mutex_consistent(&in->lock);
}

void vgpu_ledger_instance_lock(VgpuLedger *l, uint32_t inst) {
  instance_lock(l, vgpu_ledger_instance(l, inst));
}

void vgpu_ledger_instance_unlock(VgpuLedger *l, uint32_t inst) {
  pthread_mutex_unlock(&vgpu_ledger_instance(l, inst)->lock);
}

uint64_t vgpu_ledger_slot_reclaim(VgpuLedger *l, uint32_t slot) {
  VgpuLedgerSlot *s = vgpu_ledger_slot(l, slot);
  if (atomic_load(&s->state) != VGPU_SLOT_ACTIVE)
    return 0;
  VgpuLedgerInstance *in = &l->hdr->instances[s->instance];
  instance_lock(l, in);
  uint64_t vram = atomic_load(&s->used[VGPU_RES_VRAM]);
  for (int k = 0; k < VGPU_RES_N_QUOTA; k++)
    atomic_fetch_sub(&in->used[k], atomic_exchange(&s->used[k], 0));
  atomic_fetch_sub(&in->clients, 1);
  atomic_store(&s->state, VGPU_SLOT_FREE);
  pthread_mutex_unlock(&in->lock);
  return vram;
}

int vgpu_ledger_reserve(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount) {
  g_return_val_if_fail(kind < VGPU_RES_N_QUOTA, -EINVAL);
  VgpuLedgerSlot *s = vgpu_ledger_slot(l, slot);
  VgpuLedgerInstance *in = &l->hdr->instances[s->instance];
  instance_lock(l, in);
  uint64_t limit = atomic_load(&in->limit[kind]);
  uint64_t next;
  if (__builtin_add_overflow(atomic_load(&in->used[kind]), amount, &next) ||
      (limit && next > limit)) {
    pthread_mutex_unlock(&in->lock);
    atomic_fetch_add(&in->refusals, 1);
    return -EDQUOT;
  }
  atomic_store(&in->used[kind], next);
  uint64_t mine = atomic_fetch_add(&s->used[kind], amount) + amount;
  pthread_mutex_unlock(&in->lock);
  if (kind == VGPU_RES_VRAM && mine > atomic_load(&s->peak_vram))
    atomic_store(&s->peak_vram, mine);
  return 0;
}

void vgpu_ledger_release(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount) {
  g_return_if_fail(kind < VGPU_RES_N_QUOTA);
  VgpuLedgerSlot *s = vgpu_ledger_slot(l, slot);
  VgpuLedgerInstance *in = &l->hdr->instances[s->instance];
  instance_lock(l, in);
  atomic_fetch_sub(&s->used[kind], amount);
  atomic_fetch_sub(&in->used[kind], amount);
  pthread_mutex_unlock(&in->lock);
}

void vgpu_ledger_count(VgpuLedger *l, uint32_t slot, VgpuResKind kind, uint64_t amount) {
  VgpuLedgerSlot *s = vgpu_ledger_slot(l, slot);
  atomic_fetch_add(&s->used[kind], amount);
  atomic_fetch_add(&l->hdr->instances[s->instance].used[kind], amount);
}
