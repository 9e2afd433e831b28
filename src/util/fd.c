#include "util/fd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void vgpu_close(int fd) {
  int saved = errno;
  /* Linux always releases the fd, even on EINTR: never retry close(). */
  (void)close(fd);
  errno = saved;
}

int vgpu_write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int vgpu_writev_all(int fd, struct iovec *iov, int iovcnt) {
  while (iovcnt > 0) {
    ssize_t n = writev(fd, iov, iovcnt);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

int vgpu_read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (n == 0)
      return -EPIPE;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

void vgpu_msg_set_fd(struct msghdr *m, VgpuFdControl *ctl, int fd) {
  memset(ctl, 0, sizeof(*ctl));
  m->msg_control = ctl->buf;
  m->msg_controllen = sizeof(ctl->buf);
  struct cmsghdr *c = CMSG_FIRSTHDR(m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
}

int vgpu_send_fd(int sock, int fd) {
  char byte = 0;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  VgpuFdControl ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  vgpu_msg_set_fd(&msg, &ctl, fd);
  for (;;) {
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n == 1)
      return 0;
    if (n < 0 && errno == EINTR)
      continue;
    return n < 0 ? -errno : -EIO;
  }
}

ssize_t vgpu_recvmsg_fds(int sock, void *buf, size_t len, int flags, int *fds, size_t max_fds,
                         size_t *n_fds) {
  union {
    struct cmsghdr align;
    char b[CMSG_SPACE(sizeof(int) * VGPU_RECV_FDS_MAX)];
  } ctl;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
  *n_fds = 0;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  bool cut = (msg.msg_flags & MSG_CTRUNC) != 0;
  size_t got = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (!cut && got < max_fds)
        fds[got++] = f;
      else
        vgpu_close(f);
    }
  }
  if (cut)
    return -EMSGSIZE; /* every fd that came is closed above */
  *n_fds = got;
  return n;
}

int vgpu_recv_fds(int sock, int *fds, int max_fds) {
  char byte;
  size_t got;
  ssize_t n = vgpu_recvmsg_fds(sock, &byte, 1, 0, fds, max_fds > 0 ? (size_t)max_fds : 0, &got);
  if (n < 0)
    return (int)n;
  if (n == 0)
    return -EPIPE;
  return (int)got;
}

int vgpu_set_nonblock(int fd, bool nonblock) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return -errno;
  fl = nonblock ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int vgpu_set_cloexec(int fd, bool cloexec) {
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0)
    return -errno;
  fl = cloexec ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
  return fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0;
}

int vgpu_listen_unix(const char *path, unsigned mode, int backlog) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(a.sun_path))
    return -ENAMETOOLONG;
  if (mode & ~0777u)
    return -EINVAL;
  strcpy(a.sun_path, path);
  /* Only a stale socket is replaced: anything else there is not ours to
   * delete.  unlink() never follows a symbolic link. */
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return -EEXIST;
    if (unlink(path) < 0 && errno != ENOENT)
      return -errno;
  }
  vgpu_autofd int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -errno;
  /* bind() gives the new file the socket inode's mode less the umask, so
   * the mode is set on the unbound socket and the umask cleared around
   * bind(): the file is born with its mode and nothing changes it later
   * through a path (a chmod after bind would follow a symbolic link put in
   * its place). */
  if (fchmod(fd, mode) < 0)
    return -errno;
  mode_t old = umask(0);
  int r = bind(fd, (struct sockaddr *)&a, sizeof(a));
  int e = errno;
  umask(old);
  if (r < 0)
    return -e;
  if (listen(fd, backlog) < 0) {
    e = -errno;
    (void)unlink(path);
    return e;
  }
  return vgpu_steal_fd(&fd);
}

int vgpu_peer_cred(int sock, pid_t *pid, uid_t *uid, gid_t *gid) {
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return -errno;
  if (pid)
    *pid = cred.pid;
  if (uid)
    *uid = cred.uid;
  if (gid)
    *gid = cred.gid;
  return 0;
}

int vgpu_count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -errno;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the directory's own fd */
}
