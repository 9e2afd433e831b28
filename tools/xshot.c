/* vgpu-xshot: saves an X display's root window, or one window found by
 * name, as a PNG (the demo and tests use it to show what tenants drew). */
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <glib.h>
#include <png.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int shift_of(unsigned long mask) {
  int s = 0;
  while (mask && !(mask & 1)) {
    mask >>= 1;
    s++;
  }
  return s;
}

int main(int argc, char **argv) {
  g_autofree char *display = NULL, *name = NULL, *output = NULL;
  gint64 window = 0;
  GOptionEntry entries[] = {
      {"display", 'd', 0, G_OPTION_ARG_STRING, &display, "X display (default $DISPLAY)", "DPY"},
      {"window", 'w', 0, G_OPTION_ARG_INT64, &window, "Window id", "ID"},
      {"name", 'n', 0, G_OPTION_ARG_STRING, &name, "Window name (WM_NAME)", "NAME"},
      {"output", 'o', 0, G_OPTION_ARG_FILENAME, &output, "PNG file to write", "FILE"},
      {NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("- save an X window as PNG");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autoptr(GError) e = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &e) || !output) {
    fprintf(stderr, "vgpu-xshot: %s\n", e ? e->message : "--output FILE is required");
    return 2;
  }
  Display *d = XOpenDisplay(display);
  if (!d) {
    fprintf(stderr, "vgpu-xshot: cannot open display %s\n", display ? display : "$DISPLAY");
    return 1;
  }
  Window w = window ? (Window)window : DefaultRootWindow(d);
  if (name && !(w = find_named(d, DefaultRootWindow(d), name))) {
    fprintf(stderr, "vgpu-xshot: no window named \"%s\"\n", name);
    return 1;
  }
  XWindowAttributes wa;
  if (!XGetWindowAttributes(d, w, &wa)) {
    fprintf(stderr, "vgpu-xshot: no such window\n");
    return 1;
  }
  XImage *img = XGetImage(d, w, 0, 0, (unsigned)wa.width, (unsigned)wa.height, AllPlanes, ZPixmap);
  if (!img || img->bits_per_pixel < 24) {
    fprintf(stderr, "vgpu-xshot: cannot read a TrueColor image of the window\n");
    return 1;
  }
  FILE *f = fopen(output, "wb");
  if (!f) {
    perror(output);
    return 1;
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    fprintf(stderr, "vgpu-xshot: writing %s failed\n", output);
    return 1;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)wa.width, (png_uint_32)wa.height, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  int rs = shift_of(img->red_mask), gs = shift_of(img->green_mask), bs = shift_of(img->blue_mask);
  png_bytep row = g_malloc((size_t)wa.width * 3);
  for (int y = 0; y < wa.height; y++) {
    for (int x = 0; x < wa.width; x++) {
      unsigned long p = XGetPixel(img, x, y);
      row[x * 3] = (png_byte)((p & img->red_mask) >> rs);
      row[x * 3 + 1] = (png_byte)((p & img->green_mask) >> gs);
      row[x * 3 + 2] = (png_byte)((p & img->blue_mask) >> bs);
    }
    png_write_row(png, row);
  }
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  fclose(f);
  g_free(row);
  XDestroyImage(img);
  XCloseDisplay(d);
  printf("%s: %dx%d\n", output, wa.width, wa.height);
  return 0;
}
