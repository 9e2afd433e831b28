/* vm_peer: the other end of a socket pair (sock_diag), the /proc walk for
 * its holders, and the identity read from /proc, on a real socket pair and
 * on a fake /proc tree with malformed files. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/vm_peer.h"

static void test_peer_ino(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  struct stat b;
  assert_int_equal(fstat(sv[1], &b), 0);
  ino_t peer = 0;
  int rc = vgpu_unix_peer_ino(sv[0], &peer);
  if (rc == -EPROTONOSUPPORT || rc == -ENOENT) {
    /* A kernel without unix_diag: vgpud then keeps the maker's identity. */
    close(sv[0]);
    close(sv[1]);
    skip();
  }
  assert_int_equal(rc, 0);
  assert_true(peer == b.st_ino);
  /* The walk over the real /proc finds this process holding sv[1]. */
  VgpuPeerWalk *w = vgpu_peer_walk_new("/proc", peer);
  unsigned turns = 0;
  while (!vgpu_peer_walk_step(w, 64))
    turns++;
  const pid_t *pids;
  const int *fds;
  bool more;
  unsigned n = vgpu_peer_walk_holders(w, &pids, &fds, &more);
  assert_int_equal(n, 1);
  assert_false(more);
  assert_int_equal(pids[0], getpid());
  assert_int_equal(fds[0], sv[1]);
  assert_true(turns > 0); /* it really went in steps */
  vgpu_peer_walk_free(w);
  VgpuProcIdentity id;
  assert_true(vgpu_proc_identity("/proc", getpid(), sv[1], peer, &id));
  assert_int_equal(id.pid, getpid());
  assert_int_equal(id.uid, getuid());
  assert_true(id.name[0]);
  /* The fd no longer that socket: not taken. */
  assert_false(vgpu_proc_identity("/proc", getpid(), sv[0], peer, &id));
  close(sv[0]);
  close(sv[1]);
  /* Not a socket; a socket with no peer. */
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  assert_int_equal(vgpu_unix_peer_ino(fd, &peer), -ENOTSOCK);
  close(fd);
  int lone = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(vgpu_unix_peer_ino(lone, &peer) < 0);
  close(lone);
}

static char *root;

static void put(const char *rel, const char *text) {
  g_autofree char *path = g_build_filename(root, rel, NULL);
  g_autofree char *dir = g_path_get_dirname(path);
  assert_int_equal(g_mkdir_with_parents(dir, 0700), 0);
  assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void link_to(const char *rel, const char *target) {
  g_autofree char *path = g_build_filename(root, rel, NULL);
  g_autofree char *dir = g_path_get_dirname(path);
  assert_int_equal(g_mkdir_with_parents(dir, 0700), 0);
  (void)unlink(path);
  assert_int_equal(symlink(target, path), 0);
}

static void test_fake_proc(void **state) {
  (void)state;
  root = g_dir_make_tmp("vm-peer-XXXXXX", NULL);
  assert_non_null(root);
  /* 123: QEMU as uid 1000; 124: the maker; 125: malformed; "self" and
   * "0" are not processes. */
  put("123/status", "Name:\tqemu\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\nGid:\t0\n");
  put("123/comm", "qemu-system-x86\n");
  link_to("123/fd/0", "/dev/null");
  link_to("123/fd/7", "socket:[777]");
  link_to("123/exe", "/usr/bin/qemu-system-x86_64");
  put("124/status", "Name:\tlibvirtd\nUid:\t0\t0\t0\t0\n");
  put("124/comm", "libvirtd\n");
  link_to("124/fd/3", "socket:[777]");
  link_to("124/fd/4", "socket:[7770]");
  link_to("124/exe", "/usr/sbin/libvirtd");
  link_to("126/exe", "/usr/sbin/libvirtd");
  put("125/status", "Name:\tx\nUid:\tabc\n");
  put("125/comm", "x\n");
  link_to("125/fd/1", "socket:[778]");
  put("self/status", "Uid:\t0\n");
  link_to("0/fd/1", "socket:[777]");

  VgpuPeerWalk *w = vgpu_peer_walk_new(root, 777);
  while (!vgpu_peer_walk_step(w, 1))
    ;
  const pid_t *pids;
  const int *fds;
  bool more;
  unsigned n = vgpu_peer_walk_holders(w, &pids, &fds, &more);
  assert_int_equal(n, 2);
  assert_false(more);
  for (unsigned i = 0; i < n; i++)
    assert_int_equal(fds[i], pids[i] == 123 ? 7 : 3);
  vgpu_peer_walk_free(w);

  VgpuProcIdentity id;
  assert_true(vgpu_proc_identity(root, 123, 7, 777, &id));
  assert_int_equal(id.uid, 1000);
  assert_string_equal(id.name, "qemu-system-x86");
  assert_false(vgpu_proc_identity(root, 123, 0, 777, &id)); /* not the socket */
  assert_false(vgpu_proc_identity(root, 125, 1, 778, &id)); /* uid not a number */
  assert_false(vgpu_proc_identity(root, 999, 1, 777, &id)); /* no such process */
  put("125/status", "Name:\tx\nUid:\t99999999999\t0\t0\t0\n");
  assert_false(vgpu_proc_identity(root, 125, 1, 778, &id)); /* beyond uid_t */
  put("125/status", "Name:\tx\nGid:\t0\n");
  assert_false(vgpu_proc_identity(root, 125, 1, 778, &id)); /* no Uid line */
  put("125/status", "Name:\tx\nUid:\t5\t5\t5\t5\n");
  put("125/comm", "a\x01\x7f"
                  "b\xff\n");
  assert_true(vgpu_proc_identity(root, 125, 1, 778, &id));
  assert_string_equal(id.name, "a??b?");
  put("125/comm", "");
  assert_false(vgpu_proc_identity(root, 125, 1, 778, &id)); /* no name */

  assert_true(vgpu_proc_same_exe(root, 124, 126));
  assert_false(vgpu_proc_same_exe(root, 123, 124));
  assert_false(vgpu_proc_same_exe(root, 123, 999)); /* unreadable: not the same */

  /* More holders than are kept: said so. */
  for (int p = 200; p < 212; p++) {
    g_autofree char *rel = g_strdup_printf("%d/fd/9", p);
    link_to(rel, "socket:[777]");
  }
  w = vgpu_peer_walk_new(root, 777);
  while (!vgpu_peer_walk_step(w, 1000))
    ;
  n = vgpu_peer_walk_holders(w, &pids, &fds, &more);
  assert_int_equal(n, 8);
  assert_true(more);
  vgpu_peer_walk_free(w);
  /* No such root: done at once, nothing found. */
  w = vgpu_peer_walk_new("/nonexistent-proc", 777);
  assert_true(vgpu_peer_walk_step(w, 1));
  assert_int_equal(vgpu_peer_walk_holders(w, &pids, &fds, &more), 0);
  vgpu_peer_walk_free(w);

  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
  g_clear_pointer(&root, g_free);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_peer_ino),
      cmocka_unit_test(test_fake_proc),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
