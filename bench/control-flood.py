#!/usr/bin/env python3
"""Control-socket latency under a flood: starts vgpud (VGPUD, default
build/src/cli/vgpud) on a scratch runtime directory, has another user
(uid 65534 through setpriv, when run as root) send N `list` requests
(default 10,000) pipelined over 4 connections while reading the replies,
and meanwhile times `list` on fresh connections from this process.  Prints
median, 95th percentile and maximum.  Usage: bench/control-flood.py [N]"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness as h  # noqa: E402

TEST = os.path.join(HERE, "..", "tests", "integration", "test_control.py")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    vgpud = os.environ.get("VGPUD", os.path.join(HERE, "..", "build", "src", "cli", "vgpud"))
    h.VGPUD = vgpud
    os.environ.setdefault("VGPU_WORKER", os.path.join(os.path.dirname(vgpud), "..", "worker",
                                                      "vgpu-worker"))
    d = h.Daemon(log_level="warning")
    try:
        ctl = os.path.join(d.dir, "control.sock")
        who = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] \
            if os.getuid() == 0 and shutil.which("setpriv") else []
        idle = sorted(timed(d) for _ in range(200))
        t0 = time.monotonic()
        flood = subprocess.Popen(who + [sys.executable, TEST, "--as-attacker", "flood", ctl, str(n)],
                                 stdout=subprocess.PIPE, text=True)
        lat = []
        while flood.poll() is None:
            lat.append(timed(d))
        took = time.monotonic() - t0
        out = flood.stdout.read().strip()
        lat.sort()
        print(f"vgpud {vgpud}; load average {os.getloadavg()[0]:.1f}")
        print(f"idle:  list median {statistics.median(idle) * 1e3:.2f} ms, "
              f"p95 {idle[int(len(idle) * .95)] * 1e3:.2f} ms, max {idle[-1] * 1e3:.2f} ms")
        print(f"flood: {out} in {took:.2f} s ({n / took:.0f} requests/s); list median "
              f"{statistics.median(lat) * 1e3:.2f} ms, p95 {lat[int(len(lat) * .95)] * 1e3:.2f} ms, "
              f"max {lat[-1] * 1e3:.2f} ms over {len(lat)} requests")
    finally:
        d.stop()


def timed(d):
    t = time.monotonic()
    assert d.control({"command": "list"})["ok"]
    return time.monotonic() - t


if __name__ == "__main__":
    main()
