#!/usr/bin/env python3
"""A VRAM limit lowered below what a real glxgears tenant holds ends no
one: `vgpuctl set` says so with the figures, the tenant goes on rendering
(freeing and re-creating its resources) for hundreds more frames without a
refusal, a new tenant that needs VRAM is refused with the limit in its
message, and raising the limit again lets one in."""
import json
import re
import subprocess

import harness as h

CONFIG = """
[profile p]
vram=256M
max-clients=4

[instance vgpu0]
profile=p
"""

MORE_FRAMES = 300


def ctl(d, *args):
    p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, *args], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def test(x, d):
    first = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    # Past its start-up: it has drawn frames and holds what it renders with.
    h.wait_for(lambda: d.usage("vgpu0")["frames"] >= 30 or first.proc.poll() is not None, 120,
               "glxgears to draw 30 frames")
    assert first.proc.poll() is None, first.text()
    u = d.usage("vgpu0")
    assert u["vram"] > 1 << 20 and u["refusals"] == 0, u

    out = ctl(d, "set", "vgpu0", "vram=1M")
    lines = out.splitlines()
    assert lines[0] == "updated vgpu0", out
    m = re.fullmatch(r"vgpu0: vram limit 1 MiB is below the ([\d.]+ [KMG]iB) its tenant holds: "
                     r"it keeps what it holds; growth is refused until it holds less than 1 MiB",
                     lines[1])
    assert m and len(lines) == 2, out
    print("vgpuctl set:", lines[1])
    inst = json.loads(ctl(d, "--json", "show", "vgpu0"))["instance"]
    over = inst["over_limit"]
    assert len(over) == 1 and over[0]["kind"] == "vram", over
    assert over[0]["limit"] == 1 << 20 and over[0]["tenants"] == 1, over
    assert over[0]["held"] >= inst["usage"]["vram"] > 1 << 20, inst

    # It renders on, churning its resources, and is never refused.
    frames0 = d.usage("vgpu0")["frames"]
    h.wait_for(lambda: d.usage("vgpu0")["frames"] >= frames0 + MORE_FRAMES
               or first.proc.poll() is not None, 180, f"{MORE_FRAMES} more frames")
    assert first.proc.poll() is None, f"glxgears ended under the lowered limit:\n{first.text()}"
    u = d.usage("vgpu0")
    assert u["refusals"] == 0 and u["clients"] == 1, u
    assert "quota exceeded" not in d.log_text(), d.log_text()[-3000:]
    print(f"{u['frames'] - frames0} frames under the lowered limit, vram {u['vram']}, refusals 0")
    assert d.show("vgpu0")["over_limit"], "the tenant holds more than 1 MiB: still over"

    # A new tenant needs VRAM: refused, with the limit in vgpu-run's message.
    rc, out = h.finish(h.client(d, "vgpu0", ["glxgears"], x.display), 60)
    assert rc == 122, f"the new tenant was not refused ({rc}):\n{out}"
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("vgpu-run: session ended by vgpud: VRAM limit 1 MiB reached on "
                           "instance vgpu0 (the session asked for "), out
    print("new tenant:", last)
    assert first.proc.poll() is None, first.text()
    assert d.usage("vgpu0")["refusals"] == 1

    # Raised again: nothing is over, and a new tenant renders.
    out = ctl(d, "set", "vgpu0", "vram=256M")
    assert out == "updated vgpu0\n", out
    assert d.show("vgpu0")["over_limit"] == []
    rc, out = h.gears(d, "vgpu0", x.display)
    assert h.fps_values(out), f"no frames after the limit was raised:\n{out}"

    rc, out = first.stop()
    assert h.fps_values(out) and "session ended" not in out, out
    u = d.wait_idle("vgpu0")
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    assert u["worker_crashes"] == 0, u


if __name__ == "__main__":
    h.run(test, needs=("glxgears",), config=CONFIG)
