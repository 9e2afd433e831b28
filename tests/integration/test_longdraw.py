#!/usr/bin/env python3
"""Work ends with its tenant, on the real renderer (virglrenderer on
llvmpipe): vgpu-longdraw's every frame is one draw whose fragment shader
loops for minutes, so the worker's renderer is busy far longer than any
wait below.

- The client is SIGKILLed while its draw runs (seen from the worker's CPU
  time growing): the worker must exit within seconds, as "client left",
  and the instance's client count return to 0.  Before the worker watched
  its client while waiting on the renderer, it kept rendering for minutes.
- On an instance with gpu-timeout=2 the same client's session ends with
  one log line naming the tenant and exit status 5.

Neither counts as a worker crash."""
import os
import re
import signal
import time

import harness as h

LONGDRAW = os.environ.get("VGPU_LONGDRAW", "")
# Per pixel; a 256x256 frame then takes minutes on llvmpipe.
ITERATIONS = "20000000"

# Each instance's VRAM is bounded: unlimited counts as all of gpu-memory.
CONFIG = """
[profile test]
vram=512M
max-clients=2
gpu-timeout=0

[instance patient]
profile=test

[instance strict]
profile=test
gpu-timeout=2
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(d, x, inst):
    p = h.client(d, inst, [LONGDRAW, ITERATIONS], x.display)
    line = p.stdout.readline()
    assert line.strip() == "drawing", f"vgpu-longdraw did not start: {line}{p.stdout.read()}"
    p.cpid = h.program_pid(p)  # vgpu-run's child
    mine = lambda: [t for t in d.show(inst)["tenants"] if t["client_pid"] == p.cpid]
    worker = h.wait_for(mine, 30, f"{inst}'s worker")[0]["worker_pid"]
    return p, worker


def killed_mid_draw(x, d):
    p, worker = start(d, x, "patient")
    c0 = cpu_seconds(worker)
    h.wait_for(lambda: cpu_seconds(worker) >= c0 + 1.0, 60, "the draw to keep the worker busy")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    u = d.wait_idle("patient", timeout=30)
    took = time.monotonic() - t0
    d.wait_log(r"patient: client pid %d worker %d ended: client left \(exit 0\)" % (p.cpid, worker))
    assert u["worker_crashes"] == 0, u
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    print(f"ok: client SIGKILLed mid-draw: worker {worker} gone, clients 0 after {took:.2f} s")


def gpu_timeout(x, d):
    p, worker = start(d, x, "strict")
    t0 = time.monotonic()
    line = d.wait_log(r"strict client %d: gpu timeout, session ended: a submission has run for "
                      r"[\d.]+ s without completing" % p.cpid, timeout=60)
    took = time.monotonic() - t0
    d.wait_log(r"strict: client pid %d worker %d ended: gpu timeout \(exit 5\)" % (p.cpid, worker))
    u = d.wait_idle("strict", timeout=30)
    assert u["worker_crashes"] == 0, u
    # Mesa aborts on the lost connection; vgpu-run's last line says why.
    rc, out = h.finish(p, 30)
    assert rc == 122 and out.rstrip().splitlines()[-1] == (
        "vgpu-run: session ended by vgpud: GPU timeout on instance strict: submitted work ran "
        "past gpu-timeout 2 s"), (rc, out[-2000:])
    print(f"ok: gpu-timeout=2 ended the session {took:.2f} s after its first draw: "
          f"{line.group(0)}")


def test(x, d):
    killed_mid_draw(x, d)
    gpu_timeout(x, d)


if __name__ == "__main__":
    if not LONGDRAW or not os.path.exists(LONGDRAW):
        h.skip("vgpu-longdraw was not built (it needs libgl-dev: make deps installs it)")
    h.run(test, config=CONFIG)
