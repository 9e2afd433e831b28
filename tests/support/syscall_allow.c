/* syscall-allow NAMES FAMILIES COMMAND [ARG...]: runs COMMAND under a
 * seccomp filter that allows only the system calls named in the file NAMES
 * (one a line; names this kernel lacks are skipped) and fails every other
 * with EPERM, and that lets socket() make only the address families in
 * FAMILIES (comma-separated numbers; others fail with EAFNOSUPPORT): what
 * the systemd unit's SystemCallFilter=, SystemCallErrorNumber=EPERM and
 * RestrictAddressFamilies= do, for the tests of the unit's settings where
 * systemd does not run.  Test support only, never installed. */
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: syscall-allow NAMES FAMILIES COMMAND [ARG...]\n");
    return 2;
  }
  scmp_filter_ctx c = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (!c)
    return 1;
  FILE *f = fopen(argv[1], "re");
  if (!f) {
    perror(argv[1]);
    seccomp_release(c);
    return 1;
  }
  char line[128];
  int n = 0;
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (!*line || strcmp(line, "socket") == 0)
      continue;
    int nr = seccomp_syscall_resolve_name(line);
    if (nr == __NR_SCMP_ERROR)
      continue;
    if (seccomp_rule_add(c, SCMP_ACT_ALLOW, nr, 0) == 0)
      n++;
  }
  fclose(f);
  /* socket(): the families listed, EAFNOSUPPORT for the rest. */
  char *fams = strdup(argv[2]);
  unsigned long allowed[64];
  size_t na = 0;
  for (char *s = strtok(fams, ","); s && na < 64; s = strtok(NULL, ","))
    allowed[na++] = strtoul(s, NULL, 10);
  free(fams);
  for (unsigned long fam = 0; fam < 64; fam++) {
    int ok = 0;
    for (size_t i = 0; i < na; i++)
      ok |= allowed[i] == fam;
    if (seccomp_rule_add(c, ok ? SCMP_ACT_ALLOW : SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                         SCMP_A0(SCMP_CMP_EQ, fam)) < 0)
      return 1;
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || seccomp_load(c) < 0) {
    perror("seccomp");
    return 1;
  }
  seccomp_release(c);
  fprintf(stderr, "syscall-allow: %d system calls allowed\n", n);
  execvp(argv[3], argv + 3);
  perror(argv[3]);
  return 127;
}
