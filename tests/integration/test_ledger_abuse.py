#!/usr/bin/env python3
"""vgpud against workers that abuse their ledger fds (a test-only stand-in,
fake_worker.py, runs in place of vgpu-worker): one that sends junk on its
request socket is killed with one log line; one that writes huge and
"negative" values into its slot page and asks for more than the limit
cannot write its grant page, is shown clamped to what it was granted,
changes nothing on another instance, and leaves the books at zero when it
goes.  `list` answers promptly throughout."""
import os
import socket
import time

import harness as h

CONFIG = """
[profile p]
vram=64M
max-resources=100
max-contexts=4
max-clients=4

[instance greedy]
profile=p

[instance junk]
profile=p

[instance other]
profile=p
"""

FAKE = os.path.join(h.SOURCE_DIR, "tests", "integration", "fake_worker.py")


def connect(d, instance):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.socket(instance))
    return s


def quick_list(d):
    t0 = time.monotonic()
    r = d.control({"command": "list"})
    took = time.monotonic() - t0
    assert r["ok"] and took < 1.0, (r, took)
    return {i["name"]: i for i in r["instances"]}


def test(x, d):
    before = quick_list(d)["other"]

    g = connect(d, "greedy")
    d.wait_log(r"fake-worker: asked for limit\+1: granted=0")
    log = d.log_text()
    assert "fake-worker: grant page writable: no" in log, log
    assert "fake-worker: grant page write(): no" in log, log
    inst = quick_list(d)
    u, lim = inst["greedy"]["usage"], inst["greedy"]["limits"]
    # Alone on its instance it was granted the whole limit: its claims are
    # clamped to that, and a "negative" count is nothing.
    assert u["vram"] == lim["vram"] == 64 << 20, u
    assert u["resources"] == 0 and u["contexts"] == 0, u
    assert u["refusals"] == 1, u
    assert u["frames"] < 10**7, u  # no faster than a session could count
    assert inst["other"]["usage"] == before["usage"], inst["other"]
    assert inst["other"]["limits"] == before["limits"], inst["other"]

    j = connect(d, "junk")
    line = d.wait_log(r"junk: worker (\d+) \(client pid \d+\) sent a malformed ledger request: killed")
    d.wait_log(r"junk: client pid \d+ worker %s ended: killed by SIGKILL" % line.group(1))
    j.close()
    quick_list(d)

    g.close()
    u = d.wait_idle("greedy")
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    assert quick_list(d)["other"]["usage"] == before["usage"]


if __name__ == "__main__":
    h.run(test, config=CONFIG, env={"VGPU_WORKER": FAKE})
