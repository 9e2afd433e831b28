/* vgpu-xshot: saves an X display's root window, or one window given by id
 * or found by name, as a PNG (the demo and tests use it to show what
 * tenants drew).  Reads the pixels with XGetImage, so it works on any X
 * server, Xvfb included, without extensions. */
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <glib.h>
#include <png.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char x_error[256];

/* Xlib's default handler exits with a terse protocol dump; keep the first
 * error instead so the caller can say what it was trying to do. */
static int on_x_error(Display *d, XErrorEvent *e) {
  if (!x_error[0])
    XGetErrorText(d, e->error_code, x_error, sizeof(x_error));
  return 0;
}

static Window find_named(Display *d, Window w, const char *name) {
  char *wn = NULL;
  if (XFetchName(d, w, &wn) && wn) {
    bool match = strcmp(wn, name) == 0;
    XFree(wn);
    if (match)
      return w;
  }
  Window root, parent, *kids = NULL;
  unsigned n = 0;
  Window found = 0;
  if (XQueryTree(d, w, &root, &parent, &kids, &n)) {
    for (unsigned i = 0; i < n && !found; i++)
      found = find_named(d, kids[i], name);
    if (kids)
      XFree(kids);
  }
  return found;
}

/* One colour channel: where it sits in a pixel and how to widen it to 8
 * bits (a 5- or 6-bit channel of a 16-bit visual, say). */
typedef struct {
  unsigned long mask;
  int shift, bits;
} Channel;

static Channel channel_of(unsigned long mask) {
  Channel c = {mask, 0, 0};
  while (mask && !(mask & 1)) {
    mask >>= 1;
    c.shift++;
  }
  while (mask & 1) {
    mask >>= 1;
    c.bits++;
  }
  return c;
}

static png_byte channel_value(const Channel *c, unsigned long pixel) {
  if (!c->bits)
    return 0;
  unsigned long v = (pixel & c->mask) >> c->shift;
  unsigned long max = c->bits >= 32 ? 0xffffffffUL : (1UL << c->bits) - 1;
  return (png_byte)(v * 255 / max);
}

static int fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("vgpu-xshot: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 1;
}

static bool write_png(const char *path, XImage *img, int width, int height, const Visual *v) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fail("cannot write %s: %s", path, g_strerror(errno));
    return false;
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  png_bytep row = g_malloc((size_t)width * 3);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(f);
    g_free(row);
    unlink(path);
    fail("writing %s failed", path);
    return false;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  Channel r = channel_of(v->red_mask), g = channel_of(v->green_mask), b = channel_of(v->blue_mask);
  for (int y = 0; y < height; y++) {
    for (int x = 0; x < width; x++) {
      unsigned long p = XGetPixel(img, x, y);
      row[x * 3] = channel_value(&r, p);
      row[x * 3 + 1] = channel_value(&g, p);
      row[x * 3 + 2] = channel_value(&b, p);
    }
    png_write_row(png, row);
  }
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  g_free(row);
  if (fclose(f) != 0) {
    unlink(path);
    fail("cannot write %s: %s", path, g_strerror(errno));
    return false;
  }
  return true;
}

int main(int argc, char **argv) {
  g_autofree char *display = NULL, *name = NULL, *output = NULL;
  gint64 window = 0;
  GOptionEntry entries[] = {
      {"display", 'd', 0, G_OPTION_ARG_STRING, &display, "X display (default $DISPLAY)", "DPY"},
      {"window", 'w', 0, G_OPTION_ARG_INT64, &window, "Window id (decimal or 0x hex)", "ID"},
      {"name", 'n', 0, G_OPTION_ARG_STRING, &name, "Window name (WM_NAME), e.g. glxgears", "NAME"},
      {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "PNG file to write", "FILE.png"},
      {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("--output FILE.png");
  g_option_context_set_summary(ctx, "Save an X window (default: the whole screen) as PNG.");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) e = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &e)) {
    fprintf(stderr, "vgpu-xshot: %s (try --help)\n", e->message);
    return 2;
  }
  if (!output || argc > 1 || (window && name)) {
    fprintf(stderr, "vgpu-xshot: usage: vgpu-xshot [--display DPY] [--window ID | --name NAME] "
                    "--output FILE.png\n");
    return 2;
  }
  if (window < 0 || (guint64)window > 0xffffffffULL)
    return fail("window id %" G_GINT64_FORMAT " is out of range", window);

  Display *d = XOpenDisplay(display);
  if (!d) {
    const char *shown = display ? display : g_getenv("DISPLAY");
    return fail("cannot open display %s", shown ? shown : "(none given and DISPLAY is not set)");
  }
  XSetErrorHandler(on_x_error);
  Window root = DefaultRootWindow(d);
  Window w = window ? (Window)window : root;
  if (name && !(w = find_named(d, root, name)))
    return fail("no window named \"%s\" on %s", name, DisplayString(d));

  XWindowAttributes wa;
  if (!XGetWindowAttributes(d, w, &wa) || x_error[0])
    return fail("no window 0x%lx on %s%s%s", (unsigned long)w, DisplayString(d),
                x_error[0] ? ": " : "", x_error);
  if (wa.map_state != IsViewable)
    return fail("window 0x%lx is not mapped: nothing on screen to capture", (unsigned long)w);
  if (wa.visual->class != TrueColor && wa.visual->class != DirectColor)
    return fail("window 0x%lx has a %d-bit visual without direct colour (class %d); only "
                "TrueColor is supported",
                (unsigned long)w, wa.depth, wa.visual->class);

  /* XGetImage fails on a window that reaches past the screen's edge, so
   * take only the part of it that is on screen. */
  int rx = 0, ry = 0;
  Window child;
  XWindowAttributes ra;
  XGetWindowAttributes(d, root, &ra);
  XTranslateCoordinates(d, w, root, 0, 0, &rx, &ry, &child);
  int x0 = rx < 0 ? -rx : 0, y0 = ry < 0 ? -ry : 0;
  int width = MIN(wa.width, ra.width - rx) - x0, height = MIN(wa.height, ra.height - ry) - y0;
  if (width <= 0 || height <= 0)
    return fail("window 0x%lx is entirely off screen", (unsigned long)w);

  XImage *img = XGetImage(d, w, x0, y0, (unsigned)width, (unsigned)height, AllPlanes, ZPixmap);
  XSync(d, False);
  if (!img || x_error[0])
    return fail("cannot read the pixels of window 0x%lx%s%s", (unsigned long)w,
                x_error[0] ? ": " : "", x_error);
  bool ok = write_png(output, img, width, height, wa.visual);
  XDestroyImage(img);
  XCloseDisplay(d);
  if (!ok)
    return 1;
  printf("%s: %dx%d\n", output, width, height);
  return 0;
}
