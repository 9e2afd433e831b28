/* Who is really behind a VM's vhost-user socket: see vm_peer.h. */
#include "daemon/vm_peer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "util/fd.h"
#include "util/small_file.h"

#define MAX_HOLDERS 8u

int vgpu_unix_peer_ino(int fd, ino_t *peer) {
  struct stat st;
  if (fstat(fd, &st) < 0)
    return -errno;
  if (!S_ISSOCK(st.st_mode) || st.st_ino > UINT32_MAX)
    return -ENOTSOCK;
  vgpu_autofd int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0)
    return errno == EPROTONOSUPPORT || errno == EAFNOSUPPORT ? -EPROTONOSUPPORT : -errno;
  /* The kernel answers at once; the bound only guards a broken one. */
  struct timeval tv = {.tv_sec = 1};
  (void)setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  struct {
    struct nlmsghdr h;
    struct unix_diag_req r;
  } req = {
      .h = {.nlmsg_len = sizeof(req),
            .nlmsg_type = SOCK_DIAG_BY_FAMILY,
            .nlmsg_flags = NLM_F_REQUEST,
            .nlmsg_seq = 1},
      .r = {.sdiag_family = AF_UNIX,
            .udiag_states = ~0u,
            .udiag_ino = (uint32_t)st.st_ino,
            .udiag_show = UDIAG_SHOW_PEER,
            .udiag_cookie = {~0u, ~0u}},
  };
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(nl, &req, sizeof(req), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
    return -errno;
  union {
    struct nlmsghdr h;
    uint8_t b[8192];
  } buf;
  ssize_t n = recv(nl, &buf, sizeof(buf), 0);
  if (n < 0)
    return -errno;
  size_t len = (size_t)n;
  for (struct nlmsghdr *h = &buf.h; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      const struct nlmsgerr *e = NLMSG_DATA(h);
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
        return -EPROTO;
      /* e.g. unix_diag not built or not loaded */
      return e->error ? e->error : -EPROTO;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
        h->nlmsg_len < NLMSG_LENGTH(sizeof(struct unix_diag_msg)))
      continue;
    const struct unix_diag_msg *m = NLMSG_DATA(h);
    if (m->udiag_ino != (uint32_t)st.st_ino)
      continue;
    size_t alen = h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));
    for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
      if (a->rta_type == UNIX_DIAG_PEER && RTA_PAYLOAD(a) >= sizeof(uint32_t)) {
        uint32_t p;
        memcpy(&p, RTA_DATA(a), sizeof(p));
        if (!p)
          return -ENOENT;
        *peer = (ino_t)p;
        return 0;
      }
    }
    return -ENOENT;
  }
  return -EPROTO;
}

struct VgpuPeerWalk {
  char *root;
  char want[40]; /* "socket:[INODE]" */
  DIR *proc;
  DIR *fds; /* the current process's fd directory */
  pid_t cur;
  pid_t pids[MAX_HOLDERS];
  int fdn[MAX_HOLDERS];
  unsigned n;
  bool more, done;
};

static bool parse_uint(const char *s, unsigned long max, unsigned long *out) {
  if (!*s)
    return false;
  unsigned long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return false;
    if (v > (max - (unsigned long)(*s - '0')) / 10)
      return false;
    v = v * 10 + (unsigned long)(*s - '0');
  }
  *out = v;
  return true;
}

VgpuPeerWalk *vgpu_peer_walk_new(const char *root, ino_t ino) {
  VgpuPeerWalk *w = g_new0(VgpuPeerWalk, 1);
  w->root = g_strdup(root);
  g_snprintf(w->want, sizeof(w->want), "socket:[%llu]", (unsigned long long)ino);
  w->proc = opendir(root);
  w->done = !w->proc;
  return w;
}

void vgpu_peer_walk_free(VgpuPeerWalk *w) {
  if (!w)
    return;
  if (w->fds)
    closedir(w->fds);
  if (w->proc)
    closedir(w->proc);
  g_free(w->root);
  g_free(w);
}

static void add_holder(VgpuPeerWalk *w, pid_t pid, int fd) {
  for (unsigned i = 0; i < w->n; i++)
    if (w->pids[i] == pid)
      return;
  if (w->n == MAX_HOLDERS) {
    w->more = true;
    return;
  }
  w->pids[w->n] = pid;
  w->fdn[w->n++] = fd;
}

bool vgpu_peer_walk_step(VgpuPeerWalk *w, unsigned budget) {
  while (!w->done && budget--) {
    if (w->fds) {
      struct dirent *e = readdir(w->fds);
      unsigned long fd;
      if (!e) {
        closedir(w->fds);
        w->fds = NULL;
        continue;
      }
      if (!parse_uint(e->d_name, INT32_MAX, &fd))
        continue;
      char link[64];
      ssize_t n = readlinkat(dirfd(w->fds), e->d_name, link, sizeof(link) - 1);
      if (n <= 0)
        continue;
      link[n] = 0;
      if (strcmp(link, w->want) == 0) {
        add_holder(w, w->cur, (int)fd);
        closedir(w->fds); /* one fd per process is enough */
        w->fds = NULL;
      }
      continue;
    }
    struct dirent *e = readdir(w->proc);
    if (!e) {
      w->done = true;
      break;
    }
    unsigned long pid;
    if (!parse_uint(e->d_name, INT32_MAX, &pid) || pid == 0)
      continue;
    char path[64];
    g_snprintf(path, sizeof(path), "%lu/fd", pid);
    int dfd = openat(dirfd(w->proc), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
      continue; /* gone, a thread-less zombie, or not ours to read */
    w->fds = fdopendir(dfd);
    if (!w->fds) {
      close(dfd);
      continue;
    }
    w->cur = (pid_t)pid;
  }
  return w->done;
}

unsigned vgpu_peer_walk_holders(const VgpuPeerWalk *w, const pid_t **pids, const int **fds,
                                bool *more) {
  *pids = w->pids;
  *fds = w->fdn;
  *more = w->more;
  return w->n;
}

bool vgpu_proc_status_uid(const char *text, uid_t *uid) {
  /* "Uid:\tREAL\tEFFECTIVE\tSAVED\tFS" on a line of its own */
  const char *u = strstr(text, "\nUid:\t");
  if (!u)
    return false;
  u += 6;
  char num[16];
  size_t k = 0;
  while (k < sizeof(num) - 1 && u[k] >= '0' && u[k] <= '9') {
    num[k] = u[k];
    k++;
  }
  num[k] = 0;
  unsigned long v;
  if (!parse_uint(num, UINT32_MAX - 1, &v) || (u[k] != '\t' && u[k] != '\n'))
    return false;
  *uid = (uid_t)v;
  return true;
}

void vgpu_proc_comm_name(const char *text, char name[16]) {
  size_t i = 0;
  for (; text[i] && text[i] != '\n' && i < 15; i++)
    name[i] = text[i] >= 0x20 && text[i] < 0x7f ? text[i] : '?';
  name[i] = 0;
}

void vgpu_proc_name(const char *root, pid_t pid, char name[16]) {
  char path[PATH_MAX], text[64];
  name[0] = 0;
  if (pid <= 0)
    return;
  g_snprintf(path, sizeof(path), "%s/%d/comm", root, (int)pid);
  if (vgpu_read_small_into(AT_FDCWD, path, text, sizeof(text)) > 0)
    vgpu_proc_comm_name(text, name);
}

bool vgpu_proc_identity(const char *root, pid_t pid, int fd, ino_t ino, VgpuProcIdentity *out) {
  char path[PATH_MAX], text[4096];
  g_snprintf(path, sizeof(path), "%s/%d/status", root, (int)pid);
  if (vgpu_read_small_into(AT_FDCWD, path, text, sizeof(text)) <= 0)
    return false;
  uid_t uid;
  if (!vgpu_proc_status_uid(text, &uid))
    return false;
  vgpu_proc_name(root, pid, out->name);
  if (!out->name[0])
    return false;
  /* Still that process: its fd still is the socket. */
  char want[40], link[64];
  g_snprintf(want, sizeof(want), "socket:[%llu]", (unsigned long long)ino);
  g_snprintf(path, sizeof(path), "%s/%d/fd/%d", root, (int)pid, fd);
  ssize_t n = readlink(path, link, sizeof(link) - 1);
  if (n <= 0)
    return false;
  link[n] = 0;
  if (strcmp(link, want) != 0)
    return false;
  out->pid = pid;
  out->uid = uid;
  return true;
}

bool vgpu_proc_same_exe(const char *root, pid_t a, pid_t b) {
  char pa[PATH_MAX], pb[PATH_MAX], la[PATH_MAX], lb[PATH_MAX];
  g_snprintf(pa, sizeof(pa), "%s/%d/exe", root, (int)a);
  g_snprintf(pb, sizeof(pb), "%s/%d/exe", root, (int)b);
  ssize_t na = readlink(pa, la, sizeof(la) - 1), nb = readlink(pb, lb, sizeof(lb) - 1);
  if (na <= 0 || nb <= 0)
    return false;
  la[na] = lb[nb] = 0;
  return strcmp(la, lb) == 0;
}
