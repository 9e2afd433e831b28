/* Accepting on a listening socket without spinning when fds run out.
 *
 * A listener accepts every pending connection on each wake-up and hands
 * each to its callback.  When accept() fails with EMFILE or ENFILE, the
 * connection that cannot be accepted stays in the backlog and the socket
 * stays readable, which would wake the main loop again at once: instead,
 * a reserve fd kept open for this purpose is closed, the connection is
 * accepted with it and closed at once (the client sees its connection
 * end), and the reserve is reopened; if even that fails, the listener
 * stops watching its socket for a short back-off.  Both are logged with a
 * rate limit. */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef struct VgpuListener VgpuListener;

/* Called for each accepted connection (non-blocking, close-on-exec); the
 * callback owns cfd. */
typedef void (*VgpuListenerFunc)(int cfd, gpointer user);

/* Watches fd (not owned: the caller closes it after freeing the listener).
 * what names it in log lines, e.g. "vgpu0" or "control".  At most batch
 * connections are accepted per wake-up; the rest wait for the next
 * main-loop iteration, so a socket whose connections are dear to serve
 * (an instance's: a worker's fork and exec each) does not keep the others
 * waiting. */
VgpuListener *vgpu_listener_new(int fd, const char *what, guint batch, VgpuListenerFunc func,
                                gpointer user);
void vgpu_listener_free(VgpuListener *l);

/* Opens the shared reserve fd (once; later calls do nothing). */
void vgpu_listener_reserve_init(void);
/* Connections shed (accepted and closed at once) for want of fds, all
 * listeners together, since start-up. */
guint64 vgpu_listener_shed_total(void);
