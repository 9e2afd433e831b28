#!/usr/bin/env python3
"""kill -9 of a worker mid-frame: the daemon logs the cause, the instance's
usage returns to exactly zero, a new client renders on it, and a tenant of
another instance never notices.  A SIGTERM'd worker is a stop, not a
crash."""
import os
import signal
import time

import harness as h


def test(x, d):
    other = h.client(d, "vgpu1", ["timeout", "-s", "INT", "16", "glxgears"], x.display)
    victim = h.client(d, "vgpu0", ["glxgears"], x.display)
    h.wait_for(lambda: d.usage("vgpu0")["frames"] > 50, 30, "vgpu0 to render")
    tenants = d.show("vgpu0")["tenants"]
    assert len(tenants) == 1, tenants
    worker = tenants[0]["worker_pid"]
    other_worker = d.show("vgpu1")["tenants"][0]["worker_pid"]
    os.kill(worker, signal.SIGKILL)
    line = d.wait_log(r"vgpu0: client pid %d worker %d ended: killed by SIGKILL" % (victim.pid, worker))
    print("logged:", line.group(0))
    u = d.wait_idle("vgpu0")
    assert (u["vram"], u["resources"], u["contexts"], u["clients"]) == (0, 0, 0, 0), u
    assert u["worker_crashes"] == 1, u
    h.finish(victim, 30)  # Mesa aborts on a lost connection: expected

    # The instance still serves new clients.
    rc, out = h.finish(h.client(d, "vgpu0", ["timeout", "-s", "INT", "7", "glxgears"], x.display), 60)
    assert h.fps_values(out), f"no frames on vgpu0 after the crash:\n{out}"

    # SIGTERM (an operator stopping one session) ends it with its slot
    # reclaimed, and is not counted as a crash.
    stopped = h.client(d, "vgpu0", ["glxgears"], x.display)
    mine = lambda: [t for t in d.show("vgpu0")["tenants"] if t["client_pid"] == stopped.pid]
    h.wait_for(mine, 30, "the new client's worker")
    worker = mine()[0]["worker_pid"]
    os.kill(worker, signal.SIGTERM)
    d.wait_log(r"vgpu0: client pid %d worker %d ended: stopped by SIGTERM" % (stopped.pid, worker))
    u = d.wait_idle("vgpu0")
    assert (u["vram"], u["clients"], u["worker_crashes"]) == (0, 0, 1), u
    h.finish(stopped, 30)

    # The other tenant ran throughout, on the same worker.
    assert d.show("vgpu1")["tenants"][0]["worker_pid"] == other_worker
    rc, out = h.finish(other, 60)
    fps = h.fps_values(out)
    assert len(fps) >= 2 and min(fps) > 0, out
    print(f"vgpu1 unaffected: {fps}")


if __name__ == "__main__":
    h.run(test, needs=("glxgears",))
