/*
 * gltriangle: the 3D guest's GLES client.  It runs inside the guest (whose
 * root is the host's file system shared over 9p) on Mesa's virgl driver.
 *
 *   gltriangle [RENDER_NODE]         offscreen: GBM + EGL on the render
 *       node, a surfaceless GLES2 context, a red triangle on blue drawn
 *       into a framebuffer object and read back; prints "GLTRIANGLE PASS"
 *       when the centre is red and a corner blue, else "GLTRIANGLE FAIL".
 *   gltriangle --kms [CARD] [SECONDS] the same picture in a GBM scanout
 *       surface of the first connected connector's preferred mode, set on
 *       its CRTC; prints "GLTRIANGLE KMS-SET WxH" and holds the mode.
 *
 * It needs no development packages: the few EGL, GBM, GLES2 and libdrm
 * entry points and constants it uses are declared here and looked up with
 * dlopen/dlsym at run time.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* EGL */
typedef void *EGLDisplay, *EGLConfig, *EGLContext, *EGLSurface;
typedef int32_t EGLint;
typedef unsigned EGLBoolean, EGLenum;
#define EGL_NONE 0x3038
#define EGL_RED_SIZE 0x3024
#define EGL_GREEN_SIZE 0x3023
#define EGL_BLUE_SIZE 0x3022
#define EGL_ALPHA_SIZE 0x3021
#define EGL_SURFACE_TYPE 0x3033
#define EGL_WINDOW_BIT 0x0004
#define EGL_RENDERABLE_TYPE 0x3040
#define EGL_OPENGL_ES2_BIT 0x0004
#define EGL_NATIVE_VISUAL_ID 0x302E
#define EGL_CONTEXT_CLIENT_VERSION 0x3098
#define EGL_OPENGL_ES_API 0x30A0
#define EGL_PLATFORM_GBM_KHR 0x31D7
#define EGL_VENDOR 0x3053

/* GLES2 */
typedef unsigned GLenum, GLuint;
typedef int GLint, GLsizei;
typedef float GLfloat;
typedef unsigned char GLubyte;
#define GL_VENDOR 0x1F00
#define GL_RENDERER 0x1F01
#define GL_VERSION 0x1F02
#define GL_VERTEX_SHADER 0x8B31
#define GL_FRAGMENT_SHADER 0x8B30
#define GL_COMPILE_STATUS 0x8B81
#define GL_LINK_STATUS 0x8B82
#define GL_FLOAT 0x1406
#define GL_FALSE 0
#define GL_COLOR_BUFFER_BIT 0x4000
#define GL_TRIANGLES 0x0004
#define GL_RENDERBUFFER 0x8D41
#define GL_FRAMEBUFFER 0x8D40
#define GL_COLOR_ATTACHMENT0 0x8CE0
#define GL_FRAMEBUFFER_COMPLETE 0x8CD5
#define GL_RGBA4 0x8056
#define GL_RGBA 0x1908
#define GL_UNSIGNED_BYTE 0x1401
#define GL_NO_ERROR 0

/* GBM */
#define GBM_FORMAT_XRGB8888 0x34325258u /* 'XR24' */
#define GBM_BO_USE_SCANOUT 1u
#define GBM_BO_USE_RENDERING 4u
union gbm_handle {
  void *ptr;
  int32_t s32;
  uint32_t u32;
  int64_t s64;
  uint64_t u64;
};

/* libdrm's mode structures, as xf86drmMode.h lays them out. */
#define DRM_MODE_CONNECTED 1
#define DRM_MODE_TYPE_PREFERRED (1 << 3)
typedef struct {
  uint32_t clock;
  uint16_t hdisplay, hsync_start, hsync_end, htotal, hskew;
  uint16_t vdisplay, vsync_start, vsync_end, vtotal, vscan;
  uint32_t vrefresh, flags, type;
  char name[32];
} drm_mode_info;
typedef struct {
  int count_fbs;
  uint32_t *fbs;
  int count_crtcs;
  uint32_t *crtcs;
  int count_connectors;
  uint32_t *connectors;
  int count_encoders;
  uint32_t *encoders;
  uint32_t min_width, max_width, min_height, max_height;
} drm_resources;
typedef struct {
  uint32_t connector_id, encoder_id, connector_type, connector_type_id;
  int connection; /* drmModeConnection */
  uint32_t mm_width, mm_height;
  int subpixel; /* drmModeSubPixel */
  int count_modes;
  drm_mode_info *modes;
  int count_props;
  uint32_t *props;
  uint64_t *prop_values;
  int count_encoders;
  uint32_t *encoders;
} drm_connector;
typedef struct {
  uint32_t encoder_id, encoder_type, crtc_id, possible_crtcs, possible_clones;
} drm_encoder;

static struct {
  EGLDisplay (*GetPlatformDisplay)(EGLenum, void *, const EGLint *);
  EGLBoolean (*Initialize)(EGLDisplay, EGLint *, EGLint *);
  EGLBoolean (*BindAPI)(EGLenum);
  EGLBoolean (*ChooseConfig)(EGLDisplay, const EGLint *, EGLConfig *, EGLint, EGLint *);
  EGLBoolean (*GetConfigAttrib)(EGLDisplay, EGLConfig, EGLint, EGLint *);
  EGLContext (*CreateContext)(EGLDisplay, EGLConfig, EGLContext, const EGLint *);
  EGLSurface (*CreateWindowSurface)(EGLDisplay, EGLConfig, void *, const EGLint *);
  EGLBoolean (*MakeCurrent)(EGLDisplay, EGLSurface, EGLSurface, EGLContext);
  EGLBoolean (*SwapBuffers)(EGLDisplay, EGLSurface);
  EGLint (*GetError)(void);
  const char *(*QueryString)(EGLDisplay, EGLint);
  EGLBoolean (*Terminate)(EGLDisplay);
} egl;

static struct {
  GLuint (*CreateShader)(GLenum);
  void (*ShaderSource)(GLuint, GLsizei, const char *const *, const GLint *);
  void (*CompileShader)(GLuint);
  void (*GetShaderiv)(GLuint, GLenum, GLint *);
  void (*GetShaderInfoLog)(GLuint, GLsizei, GLsizei *, char *);
  GLuint (*CreateProgram)(void);
  void (*AttachShader)(GLuint, GLuint);
  void (*BindAttribLocation)(GLuint, GLuint, const char *);
  void (*LinkProgram)(GLuint);
  void (*UseProgram)(GLuint);
  void (*VertexAttribPointer)(GLuint, GLint, GLenum, unsigned char, GLsizei, const void *);
  void (*EnableVertexAttribArray)(GLuint);
  void (*Viewport)(GLint, GLint, GLsizei, GLsizei);
  void (*ClearColor)(GLfloat, GLfloat, GLfloat, GLfloat);
  void (*Clear)(GLuint);
  void (*DrawArrays)(GLenum, GLint, GLsizei);
  void (*Finish)(void);
  const GLubyte *(*GetString)(GLenum);
  GLenum (*GetError)(void);
  void (*GenRenderbuffers)(GLsizei, GLuint *);
  void (*BindRenderbuffer)(GLenum, GLuint);
  void (*RenderbufferStorage)(GLenum, GLenum, GLsizei, GLsizei);
  void (*GenFramebuffers)(GLsizei, GLuint *);
  void (*BindFramebuffer)(GLenum, GLuint);
  void (*FramebufferRenderbuffer)(GLenum, GLenum, GLenum, GLuint);
  GLenum (*CheckFramebufferStatus)(GLenum);
  void (*ReadPixels)(GLint, GLint, GLsizei, GLsizei, GLenum, GLenum, void *);
} gl;

static struct {
  void *(*create_device)(int);
  void *(*surface_create)(void *, uint32_t, uint32_t, uint32_t, uint32_t);
  void *(*surface_lock_front_buffer)(void *);
  uint32_t (*bo_get_stride)(void *);
  union gbm_handle (*bo_get_handle)(void *);
} gbm;

static struct {
  drm_resources *(*GetResources)(int);
  drm_connector *(*GetConnector)(int, uint32_t);
  void (*FreeConnector)(drm_connector *);
  drm_encoder *(*GetEncoder)(int, uint32_t);
  int (*AddFB)(int, uint32_t, uint32_t, uint8_t, uint8_t, uint32_t, uint32_t, uint32_t *);
  int (*SetCrtc)(int, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t *, int, drm_mode_info *);
} drm;

static int fail(const char *what) {
  printf("gltriangle: %s\nGLTRIANGLE FAIL\n", what);
  fflush(stdout);
  return 1;
}

/* Fills the n function pointers at table from lib's symbols prefix+name. */
static int load(const char *lib, const char *prefix, void **table, const char *const *names,
                size_t n) {
  void *h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    printf("gltriangle: %s\n", dlerror());
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    char sym[96];
    snprintf(sym, sizeof sym, "%s%s", prefix, names[i]);
    table[i] = dlsym(h, sym);
    if (!table[i]) {
      printf("gltriangle: %s has no %s\n", lib, sym);
      return -1;
    }
  }
  return 0;
}

#define LOAD(lib, prefix, tbl, ...)                                                                \
  do {                                                                                             \
    static const char *const names_[] = {__VA_ARGS__};                                             \
    _Static_assert(sizeof(tbl) == sizeof(names_), "one name per entry point");                     \
    if (load(lib, prefix, (void **)&(tbl), names_, sizeof names_ / sizeof names_[0]) < 0)          \
      return -1;                                                                                   \
  } while (0)

static int load_all(void) {
  LOAD("libEGL.so.1", "egl", egl, "GetPlatformDisplay", "Initialize", "BindAPI", "ChooseConfig",
       "GetConfigAttrib", "CreateContext", "CreateWindowSurface", "MakeCurrent", "SwapBuffers",
       "GetError", "QueryString", "Terminate");
  LOAD("libGLESv2.so.2", "gl", gl, "CreateShader", "ShaderSource", "CompileShader", "GetShaderiv",
       "GetShaderInfoLog", "CreateProgram", "AttachShader", "BindAttribLocation", "LinkProgram",
       "UseProgram", "VertexAttribPointer", "EnableVertexAttribArray", "Viewport", "ClearColor",
       "Clear", "DrawArrays", "Finish", "GetString", "GetError", "GenRenderbuffers",
       "BindRenderbuffer", "RenderbufferStorage", "GenFramebuffers", "BindFramebuffer",
       "FramebufferRenderbuffer", "CheckFramebufferStatus", "ReadPixels");
  LOAD("libgbm.so.1", "gbm_", gbm, "create_device", "surface_create", "surface_lock_front_buffer",
       "bo_get_stride", "bo_get_handle");
  LOAD("libdrm.so.2", "drmMode", drm, "GetResources", "GetConnector", "FreeConnector", "GetEncoder",
       "AddFB", "SetCrtc");
  return 0;
}

static GLuint shader(GLenum type, const char *src) {
  GLuint s = gl.CreateShader(type);
  gl.ShaderSource(s, 1, &src, NULL);
  gl.CompileShader(s);
  GLint ok = 0;
  gl.GetShaderiv(s, GL_COMPILE_STATUS, &ok);
  if (!ok) {
    char log[1024] = "";
    gl.GetShaderInfoLog(s, sizeof log, NULL, log);
    printf("gltriangle: shader: %s\n", log);
  }
  return s;
}

/* Blue background, a red triangle from the bottom corners to the top
 * middle. */
static void draw(int w, int h) {
  GLuint p = gl.CreateProgram();
  gl.AttachShader(p,
                  shader(GL_VERTEX_SHADER, "attribute vec2 pos;\n"
                                           "void main() { gl_Position = vec4(pos, 0.0, 1.0); }\n"));
  gl.AttachShader(p, shader(GL_FRAGMENT_SHADER,
                            "precision mediump float;\n"
                            "void main() { gl_FragColor = vec4(1.0, 0.0, 0.0, 1.0); }\n"));
  gl.BindAttribLocation(p, 0, "pos");
  gl.LinkProgram(p);
  gl.UseProgram(p);
  static const GLfloat corners[] = {-1, -1, 1, -1, 0, 1};
  gl.VertexAttribPointer(0, 2, GL_FLOAT, GL_FALSE, 0, corners);
  gl.EnableVertexAttribArray(0);
  gl.Viewport(0, 0, w, h);
  gl.ClearColor(0, 0, 1, 1);
  gl.Clear(GL_COLOR_BUFFER_BIT);
  gl.DrawArrays(GL_TRIANGLES, 0, 3);
  gl.Finish();
}

static EGLDisplay egl_display(void *dev) {
  EGLDisplay dpy = egl.GetPlatformDisplay(EGL_PLATFORM_GBM_KHR, dev, NULL);
  EGLint major = 0, minor = 0;
  if (!dpy || !egl.Initialize(dpy, &major, &minor))
    return NULL;
  egl.BindAPI(EGL_OPENGL_ES_API);
  printf("gltriangle: EGL %d.%d %s\n", major, minor, egl.QueryString(dpy, EGL_VENDOR));
  return dpy;
}

static void print_gl(void) {
  printf("GL_VENDOR=%s\nGL_RENDERER=%s\nGL_VERSION=%s\n", (const char *)gl.GetString(GL_VENDOR),
         (const char *)gl.GetString(GL_RENDERER), (const char *)gl.GetString(GL_VERSION));
}

static int offscreen(const char *node) {
  enum { W = 256, H = 256 };
  int fd = open(node, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return fail("cannot open the render node");
  void *dev = gbm.create_device(fd);
  EGLDisplay dpy = dev ? egl_display(dev) : NULL;
  if (!dpy)
    return fail("no EGL display on GBM");
  static const EGLint cfg_attr[] = {EGL_RENDERABLE_TYPE, EGL_OPENGL_ES2_BIT, EGL_NONE};
  EGLConfig cfg = NULL;
  EGLint n = 0;
  egl.ChooseConfig(dpy, cfg_attr, &cfg, 1, &n);
  static const EGLint ctx_attr[] = {EGL_CONTEXT_CLIENT_VERSION, 2, EGL_NONE};
  EGLContext ctx = egl.CreateContext(dpy, n > 0 ? cfg : NULL, NULL, ctx_attr);
  if (!ctx || !egl.MakeCurrent(dpy, NULL, NULL, ctx)) {
    printf("gltriangle: EGL error 0x%x\n", egl.GetError());
    return fail("no surfaceless GLES2 context");
  }
  print_gl();
  GLuint rb = 0, fb = 0;
  gl.GenRenderbuffers(1, &rb);
  gl.BindRenderbuffer(GL_RENDERBUFFER, rb);
  gl.RenderbufferStorage(GL_RENDERBUFFER, GL_RGBA4, W, H);
  gl.GenFramebuffers(1, &fb);
  gl.BindFramebuffer(GL_FRAMEBUFFER, fb);
  gl.FramebufferRenderbuffer(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_RENDERBUFFER, rb);
  if (gl.CheckFramebufferStatus(GL_FRAMEBUFFER) != GL_FRAMEBUFFER_COMPLETE)
    return fail("framebuffer object incomplete");
  draw(W, H);
  static unsigned char px[W * H * 4];
  gl.ReadPixels(0, 0, W, H, GL_RGBA, GL_UNSIGNED_BYTE, px);
  GLenum err = gl.GetError();
  const unsigned char *c = px + ((H / 2) * W + W / 2) * 4; /* inside */
  const unsigned char *k = px + ((H - 2) * W + 1) * 4;     /* top left: outside */
  printf("center=%02x%02x%02x%02x corner=%02x%02x%02x%02x glerr=0x%x\n", c[0], c[1], c[2], c[3],
         k[0], k[1], k[2], k[3], err);
  int ok = err == GL_NO_ERROR && c[0] > 0xf0 && c[1] < 0x10 && c[2] < 0x10 && k[0] < 0x10 &&
           k[1] < 0x10 && k[2] > 0xf0;
  puts(ok ? "GLTRIANGLE PASS" : "GLTRIANGLE FAIL");
  fflush(stdout);
  egl.Terminate(dpy);
  close(fd);
  return !ok;
}

static int kms(const char *card, int hold) {
  int fd = open(card, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return fail("cannot open the card");
  drm_resources *res = drm.GetResources(fd);
  drm_connector *conn = NULL;
  for (int i = 0; res && i < res->count_connectors; i++) {
    conn = drm.GetConnector(fd, res->connectors[i]);
    if (conn && conn->connection == DRM_MODE_CONNECTED && conn->count_modes > 0)
      break;
    if (conn)
      drm.FreeConnector(conn);
    conn = NULL;
  }
  if (!conn || res->count_crtcs < 1)
    return fail("no connected connector");
  drm_mode_info mode = conn->modes[0];
  for (int i = 0; i < conn->count_modes; i++) {
    if (conn->modes[i].type & DRM_MODE_TYPE_PREFERRED) {
      mode = conn->modes[i];
      break;
    }
  }
  uint32_t crtc = res->crtcs[0];
  drm_encoder *enc = conn->encoder_id ? drm.GetEncoder(fd, conn->encoder_id) : NULL;
  if (enc && enc->crtc_id)
    crtc = enc->crtc_id;
  int w = mode.hdisplay, h = mode.vdisplay;

  void *dev = gbm.create_device(fd);
  void *gs = dev ? gbm.surface_create(dev, w, h, GBM_FORMAT_XRGB8888,
                                      GBM_BO_USE_SCANOUT | GBM_BO_USE_RENDERING)
                 : NULL;
  if (!gs)
    return fail("no GBM scanout surface");
  EGLDisplay dpy = egl_display(dev);
  if (!dpy)
    return fail("no EGL display on GBM");
  static const EGLint cfg_attr[] = {EGL_SURFACE_TYPE,
                                    EGL_WINDOW_BIT,
                                    EGL_RED_SIZE,
                                    8,
                                    EGL_GREEN_SIZE,
                                    8,
                                    EGL_BLUE_SIZE,
                                    8,
                                    EGL_ALPHA_SIZE,
                                    0,
                                    EGL_RENDERABLE_TYPE,
                                    EGL_OPENGL_ES2_BIT,
                                    EGL_NONE};
  EGLConfig cfgs[64], cfg = NULL;
  EGLint n = 0;
  egl.ChooseConfig(dpy, cfg_attr, cfgs, 64, &n);
  for (EGLint i = 0; i < n && !cfg; i++) { /* the one whose visual is XRGB8888 */
    EGLint id = 0;
    if (egl.GetConfigAttrib(dpy, cfgs[i], EGL_NATIVE_VISUAL_ID, &id) &&
        (uint32_t)id == GBM_FORMAT_XRGB8888)
      cfg = cfgs[i];
  }
  if (!cfg)
    return fail("no XRGB8888 EGL config");
  static const EGLint ctx_attr[] = {EGL_CONTEXT_CLIENT_VERSION, 2, EGL_NONE};
  EGLContext ctx = egl.CreateContext(dpy, cfg, NULL, ctx_attr);
  EGLSurface surf = egl.CreateWindowSurface(dpy, cfg, gs, NULL);
  if (!ctx || !surf || !egl.MakeCurrent(dpy, surf, surf, ctx)) {
    printf("gltriangle: EGL error 0x%x\n", egl.GetError());
    return fail("no window surface context");
  }
  print_gl();
  draw(w, h);
  egl.SwapBuffers(dpy, surf);
  void *bo = gbm.surface_lock_front_buffer(gs);
  uint32_t fb = 0;
  if (!bo || drm.AddFB(fd, w, h, 24, 32, gbm.bo_get_stride(bo), gbm.bo_get_handle(bo).u32, &fb))
    return fail("AddFB failed");
  if (drm.SetCrtc(fd, crtc, fb, 0, 0, &conn->connector_id, 1, &mode))
    return fail("SetCrtc failed");
  printf("GLTRIANGLE KMS-SET %dx%d\n", w, h);
  fflush(stdout);
  sleep(hold);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (load_all() < 0)
    return fail("the EGL, GBM, GLES2 or libdrm library is missing");
  if (argc > 1 && !strcmp(argv[1], "--kms"))
    return kms(argc > 2 ? argv[2] : "/dev/dri/card0", argc > 3 ? atoi(argv[3]) : 60);
  return offscreen(argc > 1 ? argv[1] : "/dev/dri/renderD128");
}
