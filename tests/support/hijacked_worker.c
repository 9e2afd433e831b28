/* A worker taken over by its tenant, for tests only (never installed).
 *
 * vgpud runs it in place of vgpu-worker ([daemon] worker=), so it starts
 * with exactly what a real worker gets: vgpud's privilege drop, the
 * inherited client socket and ledger, the same arguments.  It then applies
 * the same sandbox the real worker applies once its renderer is up
 * (vgpu_sandbox_apply), and only then acts as an attacker would.
 *
 * A client whose first bytes are not "ATTACK " is a real GL client: the
 * program then execs the real worker ($VGPU_REAL_WORKER) with its own
 * arguments, before any sandbox of its own, so one vgpud serves attackers
 * and the neighbours that must keep rendering.
 *
 * An attack is one line from the client, "ATTACK NAME [ARG]\n"; the answer
 * is one line per attempt, "RESULT NAME refused|DONE-IT DETAIL\n", then
 * "END\n".  An attempt the sandbox answers by ending the process leaves
 * the socket closed without "END" (vgpud logs why). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>

#include "core/ledger.h"
#include "util/sanitize.h"
#include "worker/sandbox.h"

#if VGPU_SANITIZED
/* LeakSanitizer's exit check stops the world with ptrace, which the
 * sandbox refuses (as in vgpu-worker). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_leaks=0";
}
#endif

static int client = -1;

static void say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void say(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
  va_end(ap);
  n = CLAMP(n, 0, (int)sizeof(buf) - 2);
  buf[n++] = '\n';
  (void)!write(client, buf, (size_t)n);
  (void)!write(2, buf, (size_t)n);
}

/* One attempt: ok is whether the attacker got what it wanted. */
static void result(const char *name, bool ok, const char *detail) {
  say("RESULT %s %s %s", name, ok ? "DONE-IT" : "refused", detail);
}

static void result_errno(const char *name, int r) {
  result(name, r >= 0, r >= 0 ? "succeeded" : g_strerror(errno));
}

/* ---- attacks ------------------------------------------------------------ */

static void attack_control(const char *path) {
  /* The sandbox ends the process at socket(). */
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    result_errno("control-socket", s);
    return;
  }
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  g_strlcpy(a.sun_path, path, sizeof(a.sun_path));
  if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
    result_errno("control-connect", -1);
    return;
  }
  const char req[] = "{\"command\":\"destroy\",\"name\":\"neighbour\",\"force\":true}\n";
  (void)!write(s, req, sizeof(req) - 1);
  char reply[512] = {0};
  ssize_t n = read(s, reply, sizeof(reply) - 1);
  result("control-admin", n > 0 && strstr(reply, "\"ok\":true"), n > 0 ? g_strstrip(reply) : "");
}

static void attack_files(const char *runtime_dir) {
  char buf[64];
  int fd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
  result("read-/etc/shadow", fd >= 0 && read(fd, buf, sizeof(buf)) > 0,
         fd >= 0 ? "opened" : g_strerror(errno));
  fd = open("/root/vgpu-hijacked", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  result_errno("create-under-/root", fd);
  fd = open("/root/.bashrc", O_WRONLY | O_APPEND | O_CLOEXEC);
  result_errno("write-/root/.bashrc", fd);
  g_autofree char *p = g_build_filename(runtime_dir, "hijacked", NULL);
  fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  result_errno("create-in-runtime-dir", fd);
  g_autofree char *pid = g_build_filename(runtime_dir, "vgpud.pid", NULL);
  fd = open(pid, O_WRONLY | O_TRUNC | O_CLOEXEC);
  result_errno("write-vgpud.pid", fd);
  fd = open("/tmp/vgpu-hijacked", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  result_errno("create-in-/tmp", fd);
}

/* arg: "DIR UID", vgpud's runtime directory and a neighbour worker's uid.
 * Another worker's shader cache, the list of all, and its own directory
 * (own_cache, from --shader-cache) to plant something in. */
static void attack_shader_cache(const char *arg, const char *own_cache) {
  g_auto(GStrv) w = g_strsplit(arg, " ", 2);
  if (!w[0] || !w[1]) {
    say("NOTE shader-cache needs DIR UID");
    return;
  }
  g_autofree char *all = g_build_filename(w[0], "shader-cache", NULL);
  g_autofree char *theirs = g_build_filename(all, w[1], NULL);
  result_errno("list-shader-caches", open(all, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  result_errno("open-neighbour-cache", open(theirs, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  g_autofree char *plant = g_build_filename(theirs, "foz_cache.foz", NULL);
  result_errno("create-in-neighbour-cache", open(plant, O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!own_cache) {
    say("NOTE no --shader-cache of its own");
    return;
  }
  g_autofree char *mine = g_build_filename(own_cache, "planted.foz", NULL);
  result_errno("create-in-own-cache", open(mine, O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  g_autofree char *sub = g_build_filename(own_cache, "mesa_shader_cache_sf", NULL);
  result_errno("mkdir-in-own-cache", mkdir(sub, 0700));
}

static void attack_proc(void) {
  pid_t vgpud = getppid();
  char path[64];
  g_snprintf(path, sizeof(path), "/proc/%d/mem", (int)vgpud);
  result_errno("open-vgpud-mem", open(path, O_RDWR | O_CLOEXEC));
  g_snprintf(path, sizeof(path), "/proc/%d/environ", (int)vgpud);
  result_errno("open-vgpud-environ", open(path, O_RDONLY | O_CLOEXEC));
  result_errno("open-/proc/1/mem", open("/proc/1/mem", O_RDONLY | O_CLOEXEC));
}

/* The ledger through copies of the fds --ledger-fds names (freeing the
 * ledger closes the fds it was given); NULL, with a NOTE, when it cannot be
 * attached, or when no fds were given (the NOTE then only when `what`
 * names the attack). */
static VgpuLedger *attach_ledger(const char *ledger_fds, const char *what) {
  int lf[3];
  if (!ledger_fds || sscanf(ledger_fds, "%d,%d,%d", &lf[0], &lf[1], &lf[2]) != 3) {
    if (what)
      say("NOTE %s: no ledger fds", what);
    return NULL;
  }
  g_autoptr(GError) e = NULL;
  VgpuLedger *l =
      vgpu_ledger_attach(fcntl(lf[0], F_DUPFD_CLOEXEC, 0), fcntl(lf[1], F_DUPFD_CLOEXEC, 0),
                         fcntl(lf[2], F_DUPFD_CLOEXEC, 0), &e);
  if (!l)
    say("NOTE ledger-attach %s", e->message);
  return l;
}

/* The ledger asked for more than any instance may have, then every
 * shared mapping it can make from an inherited fd overwritten with
 * garbage (its ledger pages among them, whatever their layout). */
static void attack_scribble(const char *ledger_fds) {
  { /* detached again before the scribbling */
    g_autoptr(VgpuLedger) l = attach_ledger(ledger_fds, NULL);
    if (l) {
      int r = vgpu_ledger_reserve(l, 0, VGPU_RES_VRAM, 1ull << 40);
      result("ledger-reserve-1TiB", r == 0, r == 0 ? "charged" : g_strerror(-r));
    }
  }
  guint scribbled = 0;
  guint64 bytes = 0;
  for (int fd = 0; fd < 1024; fd++) {
    struct stat st;
    if (fd == client || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0)
      continue;
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      continue;
    guint8 *b = p;
    for (off_t i = 0; i < st.st_size; i++)
      b[i] = (guint8)g_random_int();
    munmap(p, (size_t)st.st_size);
    scribbled++;
    bytes += (guint64)st.st_size;
  }
  say("NOTE scribble %u shared mapping(s), %" G_GUINT64_FORMAT " bytes of garbage", scribbled,
      bytes);
}

/* Whatever it can lock: flock on every inherited fd, held until it is
 * killed.  (The ledger has no lock a worker could hold: vgpud keeps the
 * books in its own memory.) */
static G_NORETURN void attack_lock(void) {
  guint n = 0;
  for (int fd = 0; fd < 1024; fd++)
    if (fd != client && flock(fd, LOCK_EX | LOCK_NB) == 0)
      n++;
  say("NOTE lock holding %u lock(s) forever", n);
  say("END");
  for (;;)
    poll(NULL, 0, -1); /* pause() is not on the allow-list: it would spin */
}

static void attack_memory(void) {
  /* Touches every page, so a cgroup sees it as well as an rlimit. */
  const size_t chunk = 16u << 20;
  guint64 total = 0;
  for (;;) {
    void *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      break;
    memset(p, 0xa5, chunk);
    total += chunk;
    if (total >= (64ull << 30))
      break;
  }
  char d[96];
  g_snprintf(d, sizeof(d), "stopped after %" G_GUINT64_FORMAT " MiB: %s", total >> 20,
             g_strerror(errno));
  result("allocate-without-end", total >= (64ull << 30), d);
}

/* vgpud's controlling terminal (the test gives it one, @pty names it):
 * typing into it with TIOCSTI, through /dev/tty, the inherited stdio or
 * the terminal's own path. */
static void attack_tty(const char *pty) {
  char c = '#';
  int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
  result_errno("open-/dev/tty", fd);
  if (fd >= 0)
    result_errno("tiocsti-/dev/tty", ioctl(fd, TIOCSTI, &c));
  for (int i = 0; i <= 2; i++) {
    char name[32];
    g_snprintf(name, sizeof(name), "tiocsti-fd%d", i);
    int r = ioctl(i, TIOCSTI, &c);
    if (r == 0 || errno != ENOTTY) /* not a terminal: nothing to try */
      result_errno(name, r);
  }
  fd = open(pty, O_RDWR | O_CLOEXEC);
  result_errno("open-terminal-path", fd);
  if (fd >= 0)
    result_errno("tiocsti-terminal-path", ioctl(fd, TIOCSTI, &c));
}

/* Answers vgpud's next screenshot request with a bad image: "size" (a
 * sealed memfd smaller than width * height * 4), "unsealed" (the right
 * size, no seals), "garbage" (a pipe and nonsense dimensions) or "huge"
 * (dimensions past the bound). */
static void attack_bad_shot(const char *how, const char *ledger_fds) {
  g_autoptr(VgpuLedger) l = attach_ledger(ledger_fds, "bad-shot");
  if (!l)
    return;
  say("READY bad-shot %s", how);
  VgpuShotRequest req;
  for (;;) {
    struct pollfd p = {.fd = vgpu_ledger_fd(l), .events = POLLIN};
    if (poll(&p, 1, 30000) <= 0) {
      say("NOTE bad-shot: no request came");
      return;
    }
    int r = vgpu_ledger_next_shot(l, &req);
    if (r < 0) {
      say("NOTE bad-shot: %s", g_strerror(-r));
      return;
    }
    if (r > 0)
      break;
  }
  VgpuShotReply rep = {.magic = VGPU_SHOT_MAGIC,
                       .seq = req.seq,
                       .head = req.head,
                       .width = 64,
                       .height = 48,
                       .stride = 256,
                       .format = 2};
  int fd = memfd_create("bad-shot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  int pfd[2] = {-1, -1};
  size_t size = 64u * 48u * 4u;
  if (g_str_equal(how, "size"))
    size -= 4;
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
    say("NOTE bad-shot: memfd %s", g_strerror(errno));
    return;
  }
  if (!g_str_equal(how, "unsealed"))
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  int send_fd = fd;
  if (g_str_equal(how, "garbage")) {
    if (pipe2(pfd, O_CLOEXEC) == 0)
      send_fd = pfd[0];
    rep.width = 0x7fffffffu;
    rep.height = 3;
    rep.stride = 0xfffffffcu;
    rep.format = 999;
  } else if (g_str_equal(how, "huge")) {
    rep.width = 65536;
    rep.height = 65536;
    rep.stride = 262144;
  }
  int r = vgpu_ledger_send_shot(l, &rep, send_fd);
  result("bad-shot-sent", r == 0, r == 0 ? how : g_strerror(-r));
  /* vgpud ends this worker for it; wait to be killed. */
  for (int i = 0; i < 100; i++)
    (void)poll(NULL, 0, 100);
  close(fd);
  if (pfd[0] >= 0)
    close(pfd[0]), close(pfd[1]);
}

/* Ignores its GPU-time tokens and takes every CPU cycle it can for
 * SECONDS (default 10): only the kernel's ceiling of its instance's
 * cgroup holds it to its share.  No system call in the loop (the clock
 * comes from the vDSO). */
static void attack_spin(const char *arg) {
  int secs = arg && *arg ? atoi(arg) : 10;
  secs = CLAMP(secs, 1, 120);
  say("NOTE spinning for %d s", secs);
  gint64 until = g_get_monotonic_time() + (gint64)secs * G_USEC_PER_SEC;
  volatile uint64_t spins = 0;
  while (g_get_monotonic_time() < until)
    for (int i = 0; i < 100000; i++)
      spins++;
  say("NOTE spun for %d s", secs);
}

static void run_attack(const char *name, const char *arg, const char *ledger_fds,
                       const char *own_cache) {
  if (g_str_equal(name, "bad-shot")) {
    attack_bad_shot(arg, ledger_fds);
    return;
  }
  if (g_str_equal(name, "control"))
    attack_control(arg);
  else if (g_str_equal(name, "kill-vgpud"))
    result_errno("kill-vgpud", kill(getppid(), SIGKILL));
  else if (g_str_equal(name, "kill-pid"))
    result_errno("kill-pid", kill((pid_t)atoi(arg), SIGKILL));
  else if (g_str_equal(name, "proc"))
    attack_proc();
  else if (g_str_equal(name, "pidfd")) {
    int pfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
    result_errno("pidfd-open-vgpud", pfd);
    if (pfd >= 0)
      result_errno("pidfd-getfd-vgpud", (int)syscall(SYS_pidfd_getfd, pfd, 0, 0));
  } else if (g_str_equal(name, "files"))
    attack_files(arg);
  else if (g_str_equal(name, "shader-cache"))
    attack_shader_cache(arg, own_cache);
  else if (g_str_equal(name, "exec")) {
    char *const argv[] = {"/bin/sh", "-c", "id > /tmp/vgpu-hijacked-exec", NULL};
    result_errno("exec-shell", execve(argv[0], argv, NULL));
  } else if (g_str_equal(name, "scribble"))
    attack_scribble(ledger_fds);
  else if (g_str_equal(name, "lock"))
    attack_lock();
  else if (g_str_equal(name, "memory"))
    attack_memory();
  else if (g_str_equal(name, "tty"))
    attack_tty(arg);
  else if (g_str_equal(name, "spin"))
    attack_spin(arg);
  else
    say("NOTE unknown attack %s", name);
}

/* Becomes the real worker ($VGPU_REAL_WORKER) with the same arguments;
 * returns 1 only when that fails. */
static int exec_real(char **args) {
  const char *real = g_getenv("VGPU_REAL_WORKER");
  if (!real)
    return 1;
  g_free(args[0]);
  args[0] = g_strdup(real);
  execv(real, args);
  return 1;
}

int main(int argc, char **argv) {
  gint client_fd = -1;
  g_autofree char *ledger_fds = NULL;
  gint64 host_memory = 0;
  gboolean no_sandbox = FALSE;
  g_autofree char *shader_cache = NULL;
  GOptionEntry entries[] = {{"client-fd", 0, 0, G_OPTION_ARG_INT, &client_fd, NULL, NULL},
                            {"ledger-fds", 0, 0, G_OPTION_ARG_STRING, &ledger_fds, NULL, NULL},
                            {"host-memory", 0, 0, G_OPTION_ARG_INT64, &host_memory, NULL, NULL},
                            {"no-sandbox", 0, 0, G_OPTION_ARG_NONE, &no_sandbox, NULL, NULL},
                            {"shader-cache", 0, 0, G_OPTION_ARG_FILENAME, &shader_cache, NULL,
                             NULL},
                            {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_auto(GStrv) args = g_strdupv(argv);
  g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
  g_option_context_set_ignore_unknown_options(ctx, TRUE);
  g_option_context_add_main_entries(ctx, entries, NULL);
  int ac = argc;
  char **av = argv; /* parsing takes what it knows out of av: args keeps all */
  if (!g_option_context_parse(ctx, &ac, &av, NULL))
    return 1;
  if (client_fd < 0) {
    /* vgpud's renderer probe (--probe) has no client: the real worker's. */
    return exec_real(args);
  }
  client = client_fd;
  signal(SIGPIPE, SIG_IGN);

  /* A real client, or an attacker? */
  char head[7] = {0};
  struct pollfd pfd = {.fd = client, .events = POLLIN};
  if (poll(&pfd, 1, 30000) <= 0 || recv(client, head, 7, MSG_PEEK) != 7 ||
      memcmp(head, "ATTACK ", 7) != 0) {
    return exec_real(args);
  }
  char line[512];
  ssize_t n = 0;
  while (n < (ssize_t)sizeof(line) - 1 && read(client, line + n, 1) == 1 && line[n] != '\n')
    n++;
  line[n] = '\0';
  g_auto(GStrv) words = g_strsplit(line + 7, " ", 2);

  /* The worker's own half of the sandbox, exactly as vgpu-worker has it. */
  VgpuSandboxConfig sb = {.host_memory = (uint64_t)MAX(host_memory, 0), .filter = !no_sandbox};
  VgpuSandboxState sbs;
  g_autoptr(GError) e = NULL;
  if (!vgpu_sandbox_apply(&sb, &sbs, &e)) {
    say("NOTE sandbox failed: %s", e->message);
    return 1;
  }
  say("NOTE sandbox uid %u gid %u filter %s data-limit %" G_GUINT64_FORMAT, (unsigned)getuid(),
      (unsigned)getgid(), sbs.filtered ? "yes" : "no", sbs.data_limit);
  run_attack(words[0] ? words[0] : "", words[0] && words[1] ? words[1] : "", ledger_fds,
             shader_cache);
  say("END");
  return 0;
}
