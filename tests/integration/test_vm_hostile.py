#!/usr/bin/env python3
"""Hostile guests through vgpud, beside a neighbour that keeps drawing.

A C harness plays QEMU (test-vhost-frontend): one well-behaved VM on
instance `nb` transfers and flushes a 64x48 scanout in a loop
(--neighbour), while on instance `vgpu0` one hostile VM after another
(--hostile SCENARIO) sends descriptors outside guest memory, a looping
descriptor chain and a looping indirect table, a resource beyond the
instance's VRAM, a duplicate resource id, set-scanout / flush / transfer
rectangles out of bounds, attach-backing entries outside guest memory, and
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
  - the neighbour's frame counter grew and its instance's usage is what it
    holds; vgpu0's usage is back to zero."""
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
    ("huge", r"create-16384x16384 0x1201"),
    ("duplicate", r"create-same-id 0x1203"),
    ("scanout", r"set-scanout-16 0x1202"),
    ("backing", r"attach-outside 0x12"),
    ("vanish-msg", r"vanished"),
    ("vanish-fence", r"vanished"),
]


class Neighbour:
    def __init__(self, tool, path):
        self.frames = 0
        self.p = subprocess.Popen([tool, "--neighbour", path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=h.sanitizer_env(dict(os.environ)))
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


def ended_lines(d):
    return re.findall(r"vgpu0: VM \(QEMU\) pid \d+ worker \d+ ended: ([^;]*);", d.log_text())


def main():
    tool = os.environ.get("VGPU_VHOST_HARNESS")
    if not tool or not os.environ.get("VGPU_WORKER"):
        h.skip("VGPU_VHOST_HARNESS and VGPU_WORKER are set by meson")
    d = h.Daemon(CONFIG)
    nb = None
    try:
        nb = Neighbour(tool, os.path.join(d.dir, "nb", "vhost-user.sock"))
        held = d.usage("nb")
        assert held["vm_clients"] == 1 and held["vram"] > 0, held
        print(f"neighbour on nb: usage vram {held['vram']} resources {held['resources']}")
        before = crashes(d)
        frames = nb.wait_more(0)
        worst = 0.0
        probe = ListProbe(d)
        path = os.path.join(d.dir, "vgpu0", "vhost-user.sock")
        for name, want in SCENARIOS:
            n_ended = len(ended_lines(d))
            log_at = len(d.log_text())
            r = subprocess.run([tool, "--hostile", name, path], capture_output=True, text=True,
                               timeout=60, env=h.sanitizer_env(dict(os.environ)))
            out = r.stdout.strip().replace("\n", ", ")
            assert r.returncode == 0, f"{name}: harness rc {r.returncode}: {out}\n{r.stderr}"
            assert re.search(want, r.stdout), f"{name}: no /{want}/ in: {out}"
            idle = d.wait_idle("vgpu0")
            h.wait_for(lambda: len(ended_lines(d)) > n_ended, 20, f"{name}: vgpud's end line")
            ends = ended_lines(d)[n_ended:]
            assert ends == ["client left (exit 0)"], f"{name}: {ends}"
            assert d.proc.poll() is None, "vgpud died"
            broken = [ln for ln in d.log_text()[log_at:].splitlines() if "is broken" in ln]
            ring = name in ("outside", "loop", "indirect")
            assert len(broken) == (1 if ring else 0), f"{name}: {broken}"
            took = list_time(d)
            worst = max(worst, took)
            assert crashes(d) == before, f"{name}: crash counters moved: {crashes(d)} vs {before}"
            assert (idle["vram"], idle["resources"], idle["contexts"]) == (0, 0, 0), idle
            now = d.usage("nb")
            assert (now["vram"], now["resources"], now["vm_clients"]) == \
                (held["vram"], held["resources"], 1), (now, held)
            more = nb.wait_more(frames)
            if broken:
                print(f"{name}: log: {broken[0].strip()}")
            print(f"{name}: {out}; vgpud: {ends[0]}; vgpu0 usage vram {idle['vram']} "
                  f"clients {idle['clients']}; nb vram {now['vram']}; list {took * 1000:.0f} ms; "
                  f"neighbour frames {frames} -> {more}")
            frames = more
        n, slowest = probe.stop()
        print(f"crash counters {crashes(d)} (unchanged); vgpud answered list {n} times "
              f"throughout, slowest {slowest * 1000:.0f} ms; slowest vgpuctl list run "
              f"{worst * 1000:.0f} ms")
        print(nb.stop())
        nb = None
        idle = d.wait_idle("nb")
        assert idle["vram"] == 0 and idle["resources"] == 0, idle
        d.stop()
    finally:
        if nb is not None:
            nb.p.kill()
        d.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
