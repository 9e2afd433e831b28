/* A GLX window for the GL test clients in tools/: the X display, an RGBA
 * double-buffered visual, one mapped window and a GL context made current
 * on it.  Not installed. */
#pragma once

#include <GL/glx.h>
#include <X11/Xlib.h>
#include <stdbool.h>

struct glx_window {
  Display *dpy;
  Window win;
  GLXContext ctx;
};

/* Opens a WIDTHxHEIGHT window titled NAME on $DISPLAY and makes a GL context
 * current on it.  On failure prints one line to stderr, releases what it had
 * opened and returns false. */
bool glx_window_open(struct glx_window *w, const char *name, unsigned width, unsigned height);

/* Releases the context, the window and the display. */
void glx_window_close(struct glx_window *w);
