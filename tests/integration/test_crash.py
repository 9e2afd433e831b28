#!/usr/bin/env python3
"""kill -9 of a worker mid-frame: the daemon logs the cause, the instance's
usage returns to exactly zero, a new client renders on it, and a tenant of
another instance never notices.  worker_crashes counts the kill and a
worker's own SIGSEGV; a SIGTERM'd worker is a stop, and a client that
sends half a command header and hangs up has left: neither is a crash."""
import os
import signal
import socket

import harness as h


def signal_worker(x, d, sig, ended, crashes):
    """A new glxgears client on vgpu0 whose worker gets sig: the log says
    how it ended, the instance is idle again, worker_crashes is crashes."""
    client = h.client(d, "vgpu0", ["glxgears"], x.display)
    pid = h.program_pid(client)
    mine = lambda: [t for t in d.show("vgpu0")["tenants"] if t["client_pid"] == pid]
    h.wait_for(mine, 30, f"the worker of the client to get {sig.name}")
    worker = mine()[0]["worker_pid"]
    os.kill(worker, sig)
    d.wait_log(r"vgpu0: client pid %d worker %d ended: %s" % (pid, worker, ended))
    u = d.wait_idle("vgpu0")
    assert (u["vram"], u["clients"], u["worker_crashes"]) == (0, 0, crashes), u
    h.finish(client, 30)


def test(x, d):
    # The neighbour runs until the end, however long the steps take.
    other = h.Output(h.client(d, "vgpu1", ["glxgears"], x.display))
    victim = h.client(d, "vgpu0", ["glxgears"], x.display)
    victim_pid = h.program_pid(victim)
    h.wait_for(lambda: d.usage("vgpu0")["frames"] > 50, 30, "vgpu0 to render")
    h.wait_for(lambda: d.usage("vgpu1")["frames"] > 50, 30, "vgpu1 to render")
    tenants = d.show("vgpu0")["tenants"]
    assert len(tenants) == 1, tenants
    worker = tenants[0]["worker_pid"]
    other_worker = d.show("vgpu1")["tenants"][0]["worker_pid"]
    frames_before_kill = d.usage("vgpu1")["frames"]
    os.kill(worker, signal.SIGKILL)
    line = d.wait_log(r"vgpu0: client pid %d worker %d ended: killed by SIGKILL" % (victim_pid, worker))
    print("logged:", line.group(0))
    u = d.wait_idle("vgpu0")
    assert (u["vram"], u["resources"], u["contexts"], u["clients"]) == (0, 0, 0, 0), u
    assert u["worker_crashes"] == 1, u
    h.finish(victim, 30)  # Mesa aborts on a lost connection: expected

    # The instance still serves new clients.
    rc, out = h.gears(d, "vgpu0", x.display)
    assert h.fps_values(out), f"no frames on vgpu0 after the crash:\n{out}"
    d.wait_idle("vgpu0")

    # SIGTERM (an operator stopping one session) ends it with its slot
    # reclaimed, and is not counted as a crash.
    signal_worker(x, d, signal.SIGTERM, "stopped by SIGTERM", 1)
    # A worker that dies of SIGSEGV has crashed, and is counted.
    signal_worker(x, d, signal.SIGSEGV, "crashed by SIGSEGV", 2)

    # A client that sends half a header and hangs up has only left.
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(d.socket("vgpu0"))
    c.sendall(b"\x05\x00")
    c.close()
    line = d.wait_log(r"vgpu0: client pid %d worker \d+ ended: ([^;]*)" % os.getpid())
    print("half a header:", line.group(0))
    u = d.wait_idle("vgpu0")
    assert u["worker_crashes"] == 2, f"a client that left was counted as a crash: {line.group(1)}; {u}"

    # The other tenant ran throughout, on the same worker.
    assert [t["worker_pid"] for t in d.show("vgpu1")["tenants"]] == [other_worker]
    frames = d.usage("vgpu1")["frames"]
    h.wait_for(lambda: d.usage("vgpu1")["frames"] > frames, 30, "vgpu1 to render on")
    assert frames > frames_before_kill, (frames, frames_before_kill)
    h.wait_for(lambda: h.fps_values(other.text()) or other.proc.poll() is not None, 60,
               "a frame rate from vgpu1")
    rc, out = other.stop()
    fps = h.fps_values(out)
    assert fps and min(fps) > 0, out
    print(f"vgpu1 unaffected: {fps}")


if __name__ == "__main__":
    # A sanitizer build turns a SIGSEGV into a report and exit 1: let the
    # worker die of the signal, as a release build's does.
    asan = os.environ.get("ASAN_OPTIONS", "")
    h.run(test, needs=("glxgears",), env={"ASAN_OPTIONS": asan + (":" if asan else "") + "handle_segv=0"})
