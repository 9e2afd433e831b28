/* vgpu-longdraw: a GL client whose every frame is one full-window draw
 * with a fragment shader that loops ITERATIONS times per pixel, so a
 * single submission keeps the GPU (llvmpipe: every core) busy for as long
 * as asked.  Tests use it to check that such work ends with its tenant
 * (client killed) or with the instance's gpu-timeout.  Not installed.
 *
 * Prints "drawing" once the shader is ready, just before the first frame,
 * then "frame" after each one completes. */
#define GL_GLEXT_PROTOTYPES
#include "glx_window.h"

#include <GL/gl.h>
#include <GL/glext.h>
#include <stdio.h>
#include <stdlib.h>

static const char *fragment_shader = "#version 120\n"
                                     "uniform int n;\n"
                                     "void main() {\n"
                                     "  float a = gl_FragCoord.x * 0.001;\n"
                                     "  for (int i = 0; i < n; i++)\n"
                                     "    a = sin(a) * 1.0001 + 0.1;\n"
                                     "  gl_FragColor = vec4(fract(a), 0.0, 0.0, 1.0);\n"
                                     "}\n";

int main(int argc, char **argv) {
  long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
  if (iterations <= 0 || iterations > 0x7fffffff) {
    fprintf(stderr, "usage: %s [ITERATIONS]\n", argv[0]);
    return 2;
  }
  struct glx_window w;
  if (!glx_window_open(&w, "vgpu-longdraw", 256, 256))
    return 1;
  GLuint fs = glCreateShader(GL_FRAGMENT_SHADER);
  glShaderSource(fs, 1, &fragment_shader, NULL);
  glCompileShader(fs);
  GLint ok = 0;
  glGetShaderiv(fs, GL_COMPILE_STATUS, &ok);
  GLuint prog = glCreateProgram();
  glAttachShader(prog, fs);
  glLinkProgram(prog);
  if (ok)
    glGetProgramiv(prog, GL_LINK_STATUS, &ok);
  if (!ok) {
    fprintf(stderr, "shader did not compile or link\n");
    return 1;
  }
  glUseProgram(prog);
  glUniform1i(glGetUniformLocation(prog, "n"), (GLint)iterations);
  glFinish();
  printf("drawing\n");
  fflush(stdout);
  for (;;) {
    glClear(GL_COLOR_BUFFER_BIT);
    glBegin(GL_QUADS);
    glVertex2f(-1, -1);
    glVertex2f(1, -1);
    glVertex2f(1, 1);
    glVertex2f(-1, 1);
    glEnd();
    glXSwapBuffers(w.dpy, w.win);
    glFinish();
    printf("frame\n");
    fflush(stdout);
  }
}
