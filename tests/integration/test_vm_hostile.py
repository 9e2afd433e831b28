#!/usr/bin/env python3
"""Hostile guests through vgpud, beside neighbours that keep drawing.

A C harness plays QEMU (test-vhost-frontend): two well-behaved VMs, one
on instance `nb` and one on `vgpu0`, transfer and flush a 64x48 scanout in
a loop (--neighbour), while on instance `vgpu0` one hostile VM after another
(--hostile SCENARIO) sends descriptors outside guest memory, a looping
descriptor chain and a looping indirect table, a resource beyond the
instance's VRAM, a duplicate resource id, set-scanout / flush / transfer
rectangles out of bounds, attach-backing entries outside guest memory,
overlapping or totalling over 4 GiB, blob commands (not offered), and
leaves in the middle of a vhost-user message and with fenced commands in
flight.  After each:

  - the harness saw the required answers (an error response and the VM
    goes on, or the control ring marked broken, NEEDS_RESET, with one log
    line, while the cursor ring answers);
  - vgpud logged exactly one "ended" line for that VM, with the worker
    exit status of core/worker_exit.h ("client left (exit 0)": a QEMU that
    leaves is not a crash) and the crash counters did not move;
  - vgpud is alive, `vgpuctl list` answers, and vgpud answers a list
    request on its control socket within 1 s (polled every 0.2 s on a
    thread for the whole run; the program's own start-up under ASan on a
    loaded machine is not counted against that bound);
  - both neighbours' frame counters grew and each instance's usage is what
    its neighbour holds (vgpu0's hostile VM's resources are reclaimed).

QEMU's own protocol violations (a memory table whose regions overlap or
wrap, a vring outside guest memory, a message announcing a 1 MiB payload)
end that VM's session: status 2 ("protocol violation", not a crash) and one
worker line naming the instance, the VM's pid and the reason.  Blob
commands, which the back-end does not offer, get ERR_UNSPEC."""
import os
import re
import subprocess
import sys
import threading
import time

import harness as h

CONFIG = """
[profile test]
vram=256M
max-resources=1024
max-contexts=4
max-clients=8
heads=1

[instance vgpu0]
profile=test

[instance nb]
profile=test
"""

# scenario -> what the harness must print (beyond "outcome as required")
SCENARIOS = [
    ("outside", r"cursor-used-len 0"),
    ("loop", r"cursor-used-len 0"),
    ("indirect", r"cursor-used-len 0"),
    ("long-chain", r"cursor-used-len 0"),
    ("indirect-len", r"cursor-used-len 0"),
    ("huge", r"create-16384x16384 0x1201"),
    ("duplicate", r"create-same-id 0x1203"),
    ("scanout", r"set-scanout-16 0x1202"),
    ("backing", r"attach-outside 0x12"),
    ("overlap", r"overlap-bad-pixels 0\n.*same-pages-bad-pixels 0\n.*attach-over-4g 0x1205"),
    ("blob", r"blob-offered 0\ncreate-blob 0x1200\nset-scanout-blob 0x1200\n"
             r"map-blob 0x1200\nunmap-blob 0x1200"),
    ("mem-overlap", r"session-ended"),
    ("mem-wrap", r"session-ended"),
    ("ring-outside", r"session-ended"),
    ("msg-size", r"session-ended"),
    ("vanish-msg", r"vanished"),
    ("vanish-fence", r"vanished"),
]

# The ring scenarios: that ring is marked broken (one log line), the
# session goes on until the harness hangs up.
RING = ("outside", "loop", "indirect", "long-chain", "indirect-len")
# QEMU's protocol violations: the worker ends the session (status 2) with
# one line naming the instance, the VM's pid and the reason.
VIOLATION = {
    "mem-overlap": r"SET_MEM_TABLE: .*overlap",
    "mem-wrap": r"SET_MEM_TABLE: .*wrap",
    "ring-outside": r"SET_VRING_ADDR: ",
    "msg-size": r"SET_FEATURES: payload larger than any request",
}


# A new sanitized worker with virglrenderer on a loaded 2-core machine can
# take more than the harness's default 10 s to answer QEMU's first message.
SLOW = {"VHH_TIMEOUT_MS": "30000"}


class Neighbour:
    def __init__(self, tool, path):
        self.frames = 0
        self.p = subprocess.Popen([tool, "--neighbour", path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=h.sanitizer_env(dict(os.environ, **SLOW)))
        line = self.p.stdout.readline()
        if line.strip() != "READY":
            self.p.kill()
            raise AssertionError(f"the neighbour did not start: {line!r}\n{self.p.stderr.read()}")
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            m = re.match(r"FRAMES (\d+)", line)
            if m:
                self.frames = int(m.group(1))

    def wait_more(self, than, timeout=30):
        h.wait_for(lambda: self.frames > than or self.p.poll() is not None, timeout,
                   "the neighbour's frame counter to grow")
        assert self.p.poll() is None, f"the neighbour ended:\n{self.p.stderr.read()}"
        return self.frames

    def stop(self):
        self.p.stdin.close()
        rc = self.p.wait(timeout=60)
        self.t.join(10)
        err = self.p.stderr.read()
        assert rc == 0, f"the neighbour failed ({rc}):\n{err}"
        return err.strip()


def list_time(d):
    """`vgpuctl list` as a user runs it: it must answer (the time includes
    starting the sanitized program on a loaded machine)."""
    t0 = time.monotonic()
    r = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, "list"], capture_output=True,
                       text=True, timeout=5)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def answer_time(d):
    """vgpud's own answer to a list request on its control socket."""
    t0 = time.monotonic()
    r = d.control({"command": "list"})
    took = time.monotonic() - t0
    assert r["ok"], r
    assert took < 1.0, f"vgpud answered list after {took:.2f} s"
    return took


class ListProbe:
    """A list request on vgpud's control socket every 0.2 s on a thread for
    the whole run: the slowest answer and any failure."""

    def __init__(self, d):
        self.d, self.times, self.errors = d, [], []
        self.done = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done.wait(0.2):
            try:
                self.times.append(answer_time(self.d))
            except (AssertionError, OSError, ValueError) as e:
                self.errors.append(str(e))

    def stop(self):
        self.done.set()
        self.t.join(10)
        assert not self.errors, self.errors
        assert self.times, "vgpuctl list never ran"
        return len(self.times), max(self.times)


def crashes(d):
    return {n: d.usage(n)["worker_crashes"] for n in ("vgpu0", "nb")}


def ended_lines(d, pid):
    return re.findall(rf"vgpu0: VM \(QEMU\) pid {pid} worker \d+ ended: ([^;]*);", d.log_text())


def holds(d, name, held):
    """Waits until instance @name holds exactly what its neighbour holds,
    with the neighbour its only tenant, and returns that usage."""
    def same():
        u = d.usage(name)
        ok = (u["clients"], u["vm_clients"], u["vram"], u["resources"], u["contexts"]) == \
            (1, 1, held["vram"], held["resources"], held["contexts"])
        return u if ok else None
    return h.wait_for(same, 20, f"{name} to hold only its neighbour's {held}")


def main():
    tool = os.environ.get("VGPU_VHOST_HARNESS")
    if not tool or not os.environ.get("VGPU_WORKER"):
        h.skip("VGPU_VHOST_HARNESS and VGPU_WORKER are set by meson")
    d = h.Daemon(CONFIG)
    nbs = []
    try:
        # One neighbour on another instance, one on the hostile VMs' own.
        for name in ("nb", "vgpu0"):
            nbs.append(Neighbour(tool, os.path.join(d.dir, name, "vhost-user.sock")))
        held = {n: d.usage(n) for n in ("nb", "vgpu0")}
        for n, u in held.items():
            assert u["vm_clients"] == 1 and u["vram"] > 0, (n, u)
            print(f"neighbour on {n}: usage vram {u['vram']} resources {u['resources']}")
        before = crashes(d)
        frames = [nb.wait_more(0) for nb in nbs]
        worst = 0.0
        probe = ListProbe(d)
        path = os.path.join(d.dir, "vgpu0", "vhost-user.sock")
        for name, want in SCENARIOS:
            log_at = len(d.log_text())
            p = subprocess.Popen([tool, "--hostile", name, path], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=h.sanitizer_env(dict(os.environ, **SLOW)))
            stdout, stderr = p.communicate(timeout=60)
            out = stdout.strip().replace("\n", ", ")
            assert p.returncode == 0, f"{name}: harness rc {p.returncode}: {out}\n{stderr}"
            assert re.search(want, stdout, re.S), f"{name}: no /{want}/ in: {out}"
            h.wait_for(lambda: ended_lines(d, p.pid), 20, f"{name}: vgpud's end line")
            now0 = holds(d, "vgpu0", held["vgpu0"])
            ends = ended_lines(d, p.pid)
            violation = name in VIOLATION
            status = "protocol violation (exit 2)" if violation else "client left (exit 0)"
            assert ends == [status], f"{name}: {ends}"
            assert d.proc.poll() is None, "vgpud died"
            text = d.log_text()[log_at:]
            broken = [ln for ln in text.splitlines() if "is broken" in ln]
            assert len(broken) == (1 if name in RING else 0), f"{name}: {broken}"
            ended = [ln for ln in text.splitlines() if "VM protocol violation" in ln]
            if violation:
                # One reason, naming the instance and the VM (its pid).
                assert len(ended) == 1, f"{name}: {ended}"
                assert re.search(rf"vgpu0 client {p.pid}: VM protocol violation, session "
                                 rf"ended: {VIOLATION[name]}", ended[0]), ended[0]
            else:
                assert not ended, f"{name}: {ended}"
            took = list_time(d)
            worst = max(worst, took)
            assert crashes(d) == before, f"{name}: crash counters moved: {crashes(d)} vs {before}"
            now = holds(d, "nb", held["nb"])
            more = [nb.wait_more(f) for nb, f in zip(nbs, frames)]
            for ln in broken + ended:
                print(f"{name}: log: {ln.strip()}")
            print(f"{name}: {out}; vgpud: {ends[0]}; vgpu0 usage vram {now0['vram']} "
                  f"clients {now0['clients']}; nb vram {now['vram']}; list {took * 1000:.0f} ms; "
                  f"neighbour frames {frames} -> {more}")
            frames = more
        n, slowest = probe.stop()
        print(f"crash counters {crashes(d)} (unchanged); vgpud answered list {n} times "
              f"throughout, slowest {slowest * 1000:.0f} ms; slowest vgpuctl list run "
              f"{worst * 1000:.0f} ms")
        while nbs:
            print(nbs.pop().stop())
        for name in ("nb", "vgpu0"):
            idle = d.wait_idle(name)
            assert idle["vram"] == 0 and idle["resources"] == 0, idle
        d.stop()
    finally:
        for nb in nbs:
            nb.p.kill()
        d.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
