/* A GLX window for the GL test clients in tools/ (see glx_window.h). */
#include "glx_window.h"

#include <stdio.h>
#include <string.h>

bool glx_window_open(struct glx_window *w, const char *name, unsigned width, unsigned height) {
  memset(w, 0, sizeof(*w));
  w->dpy = XOpenDisplay(NULL);
  if (!w->dpy) {
    fprintf(stderr, "cannot open the X display\n");
    return false;
  }
  int attrs[] = {GLX_RGBA, GLX_DOUBLEBUFFER, GLX_RED_SIZE, 8, GLX_GREEN_SIZE, 8, GLX_BLUE_SIZE, 8,
                 None};
  XVisualInfo *vi = glXChooseVisual(w->dpy, DefaultScreen(w->dpy), attrs);
  if (!vi) {
    fprintf(stderr, "no RGBA double-buffered visual\n");
    glx_window_close(w);
    return false;
  }
  Window root = RootWindow(w->dpy, vi->screen);
  XSetWindowAttributes swa = {.colormap = XCreateColormap(w->dpy, root, vi->visual, AllocNone)};
  w->win = XCreateWindow(w->dpy, root, 0, 0, width, height, 0, vi->depth, InputOutput, vi->visual,
                         CWColormap, &swa);
  XStoreName(w->dpy, w->win, name);
  XMapWindow(w->dpy, w->win);
  w->ctx = glXCreateContext(w->dpy, vi, NULL, True);
  XFree(vi);
  if (!w->ctx || !glXMakeCurrent(w->dpy, w->win, w->ctx)) {
    fprintf(stderr, "cannot make a GL context current\n");
    glx_window_close(w);
    return false;
  }
  return true;
}

void glx_window_close(struct glx_window *w) {
  if (!w->dpy)
    return;
  if (w->ctx) {
    glXMakeCurrent(w->dpy, None, NULL);
    glXDestroyContext(w->dpy, w->ctx);
  }
  if (w->win)
    XDestroyWindow(w->dpy, w->win);
  XCloseDisplay(w->dpy);
  memset(w, 0, sizeof(*w));
}
