/* The worker's event loop: one poll() over the few fds a worker serves
 * (the client socket, the renderer's fence fd, later a virtio device's
 * kick fds) and one timer.  Single-threaded, no allocation per turn. */
#pragma once

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#define VGPU_LOOP_MAX_WATCHES 16

typedef struct VgpuLoop VgpuLoop;

/* revents as poll() reports them. */
typedef void (*VgpuLoopFdFn)(void *user, int fd, short revents);
typedef void (*VgpuLoopTimerFn)(void *user);

VgpuLoop *vgpu_loop_new(void);
void vgpu_loop_free(VgpuLoop *l);

/* Watches fd for `events` (0: only POLLHUP/POLLERR, which poll() always
 * reports).  Returns a watch id >= 0, or -ENOSPC. */
int vgpu_loop_add(VgpuLoop *l, int fd, short events, VgpuLoopFdFn fn, void *user);
/* Changes what a watch waits for; fd < 0 keeps the fd. */
void vgpu_loop_modify(VgpuLoop *l, int id, int fd, short events);
void vgpu_loop_remove(VgpuLoop *l, int id);
/* One timer: fn runs once at `at_us` (g_get_monotonic_time() clock);
 * at_us < 0 cancels it. */
void vgpu_loop_set_timer(VgpuLoop *l, int64_t at_us, VgpuLoopTimerFn fn, void *user);
/* Runs until vgpu_loop_quit() is called from a callback (or poll() fails
 * for a reason other than EINTR: returns -errno then, else 0).  A loop
 * already told to quit returns at once. */
int vgpu_loop_run(VgpuLoop *l);
void vgpu_loop_quit(VgpuLoop *l);
