/* Which vtest socket a GL client's Mesa connects to.
 *
 * Mesa's virpipe driver reads the socket path from VTEST_SOCKET_NAME in
 * Mesa 24 and later; Mesa 22.3 (Debian 12) has /tmp/.virgl_test compiled
 * in.  vgpu-run asks the driver a client would load, found the way Mesa's
 * GLX loader finds it, whether it knows that variable's name. */
#pragma once

#include <stdbool.h>

typedef enum {
  VGPU_MESA_SOCKET_ENV,   /* the driver reads VTEST_SOCKET_NAME */
  VGPU_MESA_SOCKET_FIXED, /* it does not: only /tmp/.virgl_test works */
  VGPU_MESA_NOT_FOUND,    /* no Mesa driver where the loader looks */
} VgpuMesaSocket;

typedef struct {
  VgpuMesaSocket kind;
  /* The file that decided (with the sysroot), NULL when none was found. */
  char *driver;
  /* Where the loader was looked for, for a message: "dir, dir, ...". */
  char *searched;
} VgpuMesaProbe;

/* Finds the Mesa driver a GL client would load with
 * LIBGL_ALWAYS_SOFTWARE=1 and tells whether it reads VTEST_SOCKET_NAME:
 *
 *  - libGLX_mesa.so.0 (else a non-glvnd libGL.so.1) in the library
 *    directories: those of ld_path ($LD_LIBRARY_PATH), then the multiarch
 *    and plain /usr/lib and /lib directories;
 *  - Mesa 24 and later: the libgallium-VERSION.so it is linked to (named
 *    in its dynamic string table), in the same directories;
 *  - otherwise (Mesa 23 and earlier) the software DRI driver swrast_dri.so
 *    in the directories of drivers_path ($LIBGL_DRIVERS_PATH, ':'
 *    separated) when set, else in the dri directory beside libGLX_mesa and
 *    the usual DRI directories; a DRI driver that is only a stub linked to
 *    libgallium is followed to it.
 *
 * sysroot (NULL or "/" for this system) is put before every directory, for
 * a client that runs chrooted in that tree.  Never fails: a file that
 * cannot be read counts as absent.  Free with vgpu_mesa_probe_clear(). */
void vgpu_mesa_probe(const char *sysroot, const char *ld_path, const char *drivers_path,
                     VgpuMesaProbe *out);
void vgpu_mesa_probe_clear(VgpuMesaProbe *p);
