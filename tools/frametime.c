/* vgpu-frametime: a GL client that renders a cheap frame (a clear and one
 * rotating triangle) in a loop as fast as it is let, and prints the time
 * each glXSwapBuffers returned, one line per frame, so frame rate and
 * frame-time jitter can be computed exactly (glxgears prints only a
 * 5-second average).  The benchmarks use it for the frame-rate cap.
 * Not installed.
 *
 *   vgpu-frametime SECONDS [WIDTHxHEIGHT]
 *
 * Output: "GL_RENDERER = NAME", then one CLOCK_MONOTONIC time in seconds
 * (nanosecond digits) per frame.  It stops after SECONDS, or on SIGTERM or
 * SIGINT, and exits 0 with everything written. */
#include "glx_window.h"

#include <GL/gl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  char *end = NULL;
  double seconds = argc > 1 ? strtod(argv[1], &end) : 0;
  bool ok =
      argc >= 2 && argc <= 3 && end != argv[1] && *end == '\0' && seconds > 0 && seconds <= 86400;
  int width = 300, height = 300;
  if (ok && argc == 3) {
    char x = 0;
    ok = sscanf(argv[2], "%d%c%d", &width, &x, &height) == 3 && x == 'x' && width >= 1 &&
         width <= 4096 && height >= 1 && height <= 4096;
  }
  if (!ok) {
    fprintf(stderr, "usage: %s SECONDS [WIDTHxHEIGHT]\n", argv[0]);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  /* One line per frame at up to a few thousand frames a second: buffer
   * generously, the output is read once the client has exited. */
  static char outbuf[1 << 20];
  setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));

  struct glx_window w;
  if (!glx_window_open(&w, "vgpu-frametime", (unsigned)width, (unsigned)height))
    return 1;
  const GLubyte *renderer = glGetString(GL_RENDERER);
  printf("GL_RENDERER = %s\n", renderer ? (const char *)renderer : "(none)");
  fflush(stdout);

  glViewport(0, 0, width, height);
  double start = now();
  for (unsigned long frame = 0; !stop; frame++) {
    float a = (float)(frame % 360);
    glClearColor(0.1f, 0.1f, 0.2f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    glMatrixMode(GL_MODELVIEW);
    glLoadIdentity();
    glRotatef(a, 0, 0, 1);
    glBegin(GL_TRIANGLES);
    glColor3f(1, 0, 0);
    glVertex2f(-0.6f, -0.5f);
    glColor3f(0, 1, 0);
    glVertex2f(0.6f, -0.5f);
    glColor3f(0, 0, 1);
    glVertex2f(0, 0.7f);
    glEnd();
    glXSwapBuffers(w.dpy, w.win);
    double t = now();
    printf("%.9f\n", t);
    if (t - start >= seconds)
      break;
  }
  glx_window_close(&w);
  return fflush(stdout) == 0 ? 0 : 1;
}
