/* fbpattern: a deterministic picture for the real-guest display tests.
 *
 *   fbpattern draw [FBDEV]          in the guest: fill the framebuffer
 *                                   (default /dev/fb0) and print
 *                                   "fbpattern: drew WxH ..."
 *   fbpattern compare W H FILE.ppm  on the host: compare a screendump
 *                                   (binary PPM) with the picture; exit 0
 *                                   when every pixel matches, 1 when not
 *   fbpattern expect W H FILE.ppm   on the host: write the picture itself
 *
 * Every pixel is a function of (x, y, W, H) alone, so the guest and the
 * host agree without exchanging anything.  Neighbouring pixels differ in
 * every channel's low bits, so a shift, a crop, a stride error or a
 * swapped channel shows as differing pixels, and the four corner blocks
 * differ from each other, so does a flip.
 *
 * The guest copy is linked statically (scripts/vm-guest.sh); the host copy
 * is built by meson for the tests. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define CORNER 24
#define MAX_SIDE 16384

struct rgb {
  uint8_t r, g, b;
};

static struct rgb pixel(unsigned x, unsigned y, unsigned w, unsigned h) {
  struct rgb c;
  if (x == 0 || y == 0 || x == w - 1 || y == h - 1)
    return (struct rgb){0xff, 0xff, 0xff};
  int left = x < CORNER, right = x >= w - CORNER, top = y < CORNER, bottom = y >= h - CORNER;
  if (top && left)
    return (struct rgb){0xff, 0x00, 0x00};
  if (top && right)
    return (struct rgb){0x00, 0xff, 0x00};
  if (bottom && left)
    return (struct rgb){0x00, 0x00, 0xff};
  if (bottom && right)
    return (struct rgb){0xff, 0xff, 0x00};
  c.r = (uint8_t)(x * 7u + y * 13u);
  c.g = (uint8_t)(((x >> 3) ^ (y >> 3)) * 37u + x);
  c.b = (uint8_t)(((((x / 40) + (y / 40)) & 1) ? 0xc0 : 0x20) | ((x + y) & 0x1f));
  return c;
}

static int draw(const char *dev) {
  int fd = open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "fbpattern: %s: %s\n", dev, strerror(errno));
    return 2;
  }
  struct fb_var_screeninfo var;
  struct fb_fix_screeninfo fix;
  if (ioctl(fd, FBIOGET_VSCREENINFO, &var) < 0 || ioctl(fd, FBIOGET_FSCREENINFO, &fix) < 0) {
    fprintf(stderr, "fbpattern: %s: screen info: %s\n", dev, strerror(errno));
    return 2;
  }
  if (var.bits_per_pixel != 32 || var.xres == 0 || var.yres == 0 || var.xres > MAX_SIDE ||
      var.yres > MAX_SIDE || fix.line_length < var.xres * 4) {
    fprintf(stderr, "fbpattern: %s: unsupported mode %ux%u, %u bpp, stride %u\n", dev, var.xres,
            var.yres, var.bits_per_pixel, fix.line_length);
    return 2;
  }
  size_t stride = fix.line_length, size = stride * var.yres;
  uint8_t *frame = calloc(1, size);
  if (!frame)
    return 2;
  for (unsigned y = 0; y < var.yres; y++)
    for (unsigned x = 0; x < var.xres; x++) {
      struct rgb c = pixel(x, y, var.xres, var.yres);
      uint32_t v = (uint32_t)c.r << var.red.offset | (uint32_t)c.g << var.green.offset |
                   (uint32_t)c.b << var.blue.offset;
      memcpy(frame + (size_t)y * stride + (size_t)x * 4, &v, 4);
    }
  /* write(), not mmap: the DRM fbdev emulation then marks the range it
   * was given as damaged and flushes it to the device's scanout. */
  for (size_t done = 0; done < size;) {
    ssize_t n = pwrite(fd, frame + done, size - done, (off_t)done);
    if (n <= 0) {
      fprintf(stderr, "fbpattern: %s: write: %s\n", dev, n < 0 ? strerror(errno) : "short");
      free(frame);
      return 2;
    }
    done += (size_t)n;
  }
  free(frame);
  fsync(fd);
  close(fd);
  printf("fbpattern: drew %ux%u bpp=%u stride=%u id=%.16s\n", var.xres, var.yres,
         var.bits_per_pixel, fix.line_length, fix.id);
  fflush(stdout);
  return 0;
}

/* One header token of a PPM: skips whitespace and comments. */
static int ppm_number(FILE *f, unsigned *out) {
  int ch;
  for (;;) {
    ch = fgetc(f);
    if (ch == '#') {
      while (ch != '\n' && ch != EOF)
        ch = fgetc(f);
    } else if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
      break;
    }
  }
  unsigned v = 0;
  int digits = 0;
  while (ch >= '0' && ch <= '9' && digits < 7) {
    v = v * 10 + (unsigned)(ch - '0');
    digits++;
    ch = fgetc(f);
  }
  if (!digits || (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r'))
    return -1;
  *out = v;
  return 0;
}

static int compare(unsigned w, unsigned h, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "fbpattern: %s: %s\n", path, strerror(errno));
    return 2;
  }
  unsigned pw, ph, maxval;
  if (fgetc(f) != 'P' || fgetc(f) != '6' || ppm_number(f, &pw) || ppm_number(f, &ph) ||
      ppm_number(f, &maxval) || maxval != 255) {
    fprintf(stderr, "fbpattern: %s: not a binary PPM with 8-bit channels\n", path);
    fclose(f);
    return 2;
  }
  if (pw != w || ph != h) {
    printf("fbpattern: screendump is %ux%u, the guest drew %ux%u\n", pw, ph, w, h);
    fclose(f);
    return 1;
  }
  unsigned long differ = 0, shown = 0;
  for (unsigned y = 0; y < h; y++) {
    for (unsigned x = 0; x < w; x++) {
      uint8_t got[3];
      if (fread(got, 1, 3, f) != 3) {
        printf("fbpattern: %s ends at pixel (%u,%u)\n", path, x, y);
        fclose(f);
        return 1;
      }
      struct rgb want = pixel(x, y, w, h);
      if (got[0] != want.r || got[1] != want.g || got[2] != want.b) {
        if (shown++ < 5)
          printf("fbpattern: (%u,%u) is %02x%02x%02x, want %02x%02x%02x\n", x, y, got[0], got[1],
                 got[2], want.r, want.g, want.b);
        differ++;
      }
    }
  }
  fclose(f);
  printf("fbpattern: %lu of %lu pixels differ\n", differ, (unsigned long)w * h);
  return differ ? 1 : 0;
}

static int expect(unsigned w, unsigned h, const char *path) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "fbpattern: %s: %s\n", path, strerror(errno));
    return 2;
  }
  fprintf(f, "P6\n%u %u\n255\n", w, h);
  for (unsigned y = 0; y < h; y++)
    for (unsigned x = 0; x < w; x++) {
      struct rgb c = pixel(x, y, w, h);
      uint8_t px[3] = {c.r, c.g, c.b};
      fwrite(px, 1, 3, f);
    }
  return fclose(f) ? 2 : 0;
}

static int side(const char *s, unsigned *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v < 2 || v > MAX_SIDE)
    return -1;
  *out = (unsigned)v;
  return 0;
}

int main(int argc, char **argv) {
  unsigned w, h;
  if (argc >= 2 && argc <= 3 && !strcmp(argv[1], "draw"))
    return draw(argc == 3 ? argv[2] : "/dev/fb0");
  if (argc == 5 && (!strcmp(argv[1], "compare") || !strcmp(argv[1], "expect")) &&
      !side(argv[2], &w) && !side(argv[3], &h))
    return argv[1][0] == 'c' ? compare(w, h, argv[4]) : expect(w, h, argv[4]);
  fprintf(stderr, "usage: fbpattern draw [FBDEV] | compare W H FILE.ppm | expect W H FILE.ppm\n");
  return 2;
}
