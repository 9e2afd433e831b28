#!/usr/bin/env python3
"""A real client on a tiny-VRAM instance is refused before its allocation
reaches the renderer, with one log line naming instance, client pid and the
limit, while a client on another instance keeps rendering; raising the
limit at run time lets a new client in."""
import os

import harness as h
from vtest_client import RESOURCE_CREATE2, VtestClient, cmd

CONFIG = """
[profile big]
vram=512M
max-clients=4

[profile tiny]
vram=1M
max-clients=4

[instance big]
profile=big

[instance tiny]
profile=tiny
"""


def test(x, d):
    big = h.Output(h.client(d, "big", ["glxgears"], x.display))
    h.wait_for(lambda: d.usage("big")["frames"] > 0, 60, "big to render")
    frames_before = d.usage("big")["frames"]
    # glxgears needs about 4.5 MB (two 300x300 targets and two vertex
    # buffers, each with its backing): the 1 MiB instance must refuse it.
    tiny = h.client(d, "tiny", ["glxgears"], x.display)
    rc, out = h.finish(tiny, 60)
    line = d.wait_log(r"tiny client (\d+): glxgears: quota exceeded, session ended: .*VRAM limit 1 MiB")
    # Mesa only sees a lost connection; vgpu-run's last line says why, and
    # its status is vgpu-run(1)'s "session ended by vgpud".
    assert rc == 122, f"the tiny client was not refused ({rc}):\n{out}"
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("vgpu-run: session ended by vgpud: VRAM limit 1 MiB reached on "
                           "instance tiny (the session asked for "), out
    print("refusal:", line.group(0))
    d.wait_log(r"tiny: client pid %d worker \d+ ended: quota refusal" % int(line.group(1)))
    u = d.wait_idle("tiny")
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    assert u["refusals"] >= 1, u
    # Nothing the tiny instance did touched the big one.
    h.wait_for(lambda: d.usage("big")["frames"] > frames_before, 30, "big to render on")
    h.wait_for(lambda: len(h.fps_values(big.text())) >= 2 or big.proc.poll() is not None, 60,
               "two frame rates from big")
    rc, out = big.stop()
    fps = h.fps_values(out)
    assert len(fps) >= 2 and min(fps) > 0, out
    print(f"big kept rendering: {fps}")

    # Raising the limit at run time admits a new client.
    r = d.control({"command": "set", "name": "tiny", "settings": {"vram": "64M"}})
    assert r["ok"] and r["instance"]["limits"]["vram"] == 64 << 20, r
    rc, out = h.gears(d, "tiny", x.display)
    assert h.fps_values(out), f"tiny did not render after the resize:\n{out}"

    # Shrinking below use kills nobody: it refuses growth past what the
    # tenants held.  A scripted client holds exactly 4 MiB: a 2 MiB texture
    # and its 2 MiB backing (a real program's usage moves from frame to
    # frame, which would make the check racy).
    holder = VtestClient(d.socket("tiny"))
    holder.handshake(b"holder")
    fd = holder.create2(1, 2, 1, 1 << 7 | 2 | 8, 1024, 512, 1024 * 512 * 4)
    assert holder.busy_wait(0) == 0
    assert d.usage("tiny")["vram"] == 4 << 20, d.usage("tiny")
    r = d.control({"command": "set", "name": "tiny", "settings": {"vram": "1M"}})
    assert r["ok"] and r["instance"]["usage"]["vram"] == 4 << 20, r
    # The holder's session goes on: its resource is still there to use.
    holder.transfer_put2(1, (0, 0, 0, 64, 64, 1), 64 * 64 * 4)
    assert holder.busy_wait(1) == 0, "the holder was ended by the shrink"
    rc, out = h.finish(h.client(d, "tiny", ["glxgears"], x.display), 60)
    assert rc != 0, "a new client was admitted past the shrunk limit"
    # It keeps what it held and an eighth more (4.5 MiB): a 1 MiB texture
    # with its 1 MiB backing is growth past that: refused, session ended.
    holder.send(cmd(RESOURCE_CREATE2, (2, 2, 1, 2, 512, 512, 1, 1, 0, 0, 512 * 512 * 4)))
    assert holder.closed_by_server(), "an allocation past what the holder held was accepted"
    holder.close()
    os.close(fd)
    d.wait_log(r"tiny client %d: holder: quota exceeded" % os.getpid())
    u = d.wait_idle("tiny")
    assert (u["vram"], u["resources"]) == (0, 0), u
    assert u["worker_crashes"] == 0, u
    assert "SIGKILL" not in d.log_text()
    assert d.show("tiny")["limits"]["vram"] == 1 << 20


if __name__ == "__main__":
    h.run(test, needs=("glxgears",), config=CONFIG)
