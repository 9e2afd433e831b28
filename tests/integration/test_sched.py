#!/usr/bin/env python3
"""GPU-time scheduling with real clients (glxgears and glmark2 through
vgpu-run): fps-cap paces a fast tenant to the cap; best-effort throttles
nothing; fixed weights 1:2:4 hold each instance's GPU time to its share,
and GPU-bound tenants' frame rates follow 1:2:4; an equal share keeps a
light instance's frame rate beside a crowded one; a weight changed with
`vgpuctl set` while tenants render reaches their grant pages within a
second.

Frame rates come from vgpud's own frames counters (one per read-back of a
display target), read over a window after a warm-up.  The tolerances here
are for a loaded 2-core CI machine under ASan; bench/ measures the strict
figures."""
import os
import subprocess
import time

import harness as h

PROFILES = """
[profile be]
vram=512M
max-clients=8
gpu-share=best-effort

[profile cap30]
vram=512M
max-clients=8
gpu-share=best-effort
fps-cap=30

[profile eq]
vram=512M
max-clients=8
gpu-share=equal

[profile w1]
vram=512M
max-clients=8
gpu-share=fixed
weight=1

[profile w2]
vram=512M
max-clients=8
gpu-share=fixed
weight=2

[profile w4]
vram=512M
max-clients=8
gpu-share=fixed
weight=4

[profile w21]
vram=512M
max-clients=8
gpu-share=fixed
weight=21
"""

CONFIG = PROFILES + """
[instance be0]
profile=be

[instance cap0]
profile=cap30
"""

WINDOW = 4.0  # seconds a rate is measured over


def tenants_frames(d, inst):
    return d.usage(inst)["frames"]


def start(d, inst, x, n=1, args=(), argv=("glxgears",)):
    return [h.Output(h.client(d, inst, [*argv, *args], x.display)) for _ in range(n)]


# A GPU-bound tenant whose frames all cost the same: one glmark2 scene for
# the whole run (glmark2 sets a scene up again each time it restarts it,
# CPU time that is no frame's and that a slow tenant pays over fewer).
GPU_BOUND = ("glmark2", "--size", "300x200", "--run-forever", "-b",
             "shading:shading=phong:duration=3600")


def stop(outs):
    for o in outs:
        o.stop()


def warm(d, insts, frames=20, timeout=90):
    """Waits until each instance has shown `frames` more frames."""
    base = {i: tenants_frames(d, i) for i in insts}
    for i in insts:
        h.wait_for(lambda: tenants_frames(d, i) >= base[i] + frames, timeout,
                   f"{i} to render {frames} frames")


def rates(d, insts, window=WINDOW):
    """Frames per second of each instance over the window (a measurement,
    not a wait for a condition)."""
    f0 = {i: tenants_frames(d, i) for i in insts}
    t0 = time.monotonic()
    time.sleep(window)
    f1 = {i: tenants_frames(d, i) for i in insts}
    dt = time.monotonic() - t0
    return {i: (f1[i] - f0[i]) / dt for i in insts}


def cap_and_best_effort(x, d):
    # Alone and uncapped first: the machine must be able to go faster than
    # the cap, or the cap cannot be shown.
    be = start(d, "be0", x)
    try:
        warm(d, ["be0"])
        solo = rates(d, ["be0"])["be0"]
        print(f"best-effort glxgears alone: {solo:.1f} FPS")
        s = d.show("be0")
        assert s["share_ppm"] == 0 and s["throttled_ns"] == 0, s
        assert s["tenants"][0]["share_ppm"] == 0, s
        assert s["tenants"][0]["throttled_ns"] == 0, s
        assert s["tenants"][0]["active"] and s["active"], s
    finally:
        stop(be)
    # The cap must sit well below what the machine can render, or the
    # host's stalls, not the pacer, set the rate: on a loaded machine the
    # test lowers the cap (same mechanism, same +-1 FPS) and says so.
    want = 30
    if solo < 50:
        want = max(5, int(solo // 3))
        print(f"this machine renders only {solo:.1f} FPS: testing fps-cap={want} instead of 30")
        p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, "set", "cap0", f"fps-cap={want}"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
    cap = start(d, "cap0", x)
    try:
        warm(d, ["cap0"], frames=30)
        r = None
        # One retry: a window can catch a stall of the loaded machine.
        for _ in range(2):
            r = rates(d, ["cap0"], window=5.0)["cap0"]
            if want - 1 <= r <= want + 1:
                break
        print(f"fps-cap={want}: {r:.2f} FPS")
        assert want - 1 <= r <= want + 1, f"fps-cap={want} gave {r:.2f} FPS"
        s = d.show("cap0")
        assert s["fps_cap"] == want and s["throttled_ns"] > 0, s
        assert s["not_enforced"] == [], s
    finally:
        stop(cap)
    u = d.wait_idle("be0")
    assert u["throttled_ns"] == 0, u


# Fixed shares 1:2:4: the GPU time each instance gets (on llvmpipe: the
# CPU time of its worker) must keep that ratio within FIXED_TOLERANCE
# (largest relative deviation of w2/w1 from 2 and of w4/w1 from 4), and the
# GPU-bound tenants' frame rates within FIXED_FRAME_TOLERANCE, in one of
# three windows.  GPU time, with glxgears tenants on a loaded 2-core
# machine (load average 17-24, ASan, 8 s windows): 3-15% per window, and
# 19-37% with a second copy of this test beside it (the weight-4 tenant
# then got only 2/3 of its share: the host could not give it more).  Since
# the 1 s ceiling period with a burst and the starved-window rule: within
# 0.2-4.3% under ASan, 1.2% beside two busy loops.  Frames follow it as far
# as every frame costs the same CPU time, which a tenant that waits most of
# each second does not quite get (cold caches after each wait): 6-29%
# per window under ASan, 14% beside two busy loops.
FIXED_TOLERANCE = float(os.environ.get("SCHED_FIXED_TOLERANCE", "0.25"))
FIXED_FRAME_TOLERANCE = float(os.environ.get("SCHED_FIXED_FRAME_TOLERANCE", "0.35"))
FIXED_WINDOW = 12.0


def fixed_weights(x):
    # A fourth fixed instance of weight 21 that stays idle keeps 3/4 of the
    # host: fixed shares hold while others are idle, so the three tenants'
    # shares (1/28, 2/28, 4/28 of the CPUs) add up to a quarter of them.
    # Shares are upper bounds: the ratio can only be the scheduler's while
    # every tenant wants more than its share and the host can give it that
    # much; with the whole host promised to them, a loaded CI machine
    # cannot, and the load, not the share, sets the heaviest one's rate.
    names = ("w1", "w2", "w4", "w21")
    cfg = PROFILES + "".join(f"\n[instance {n}]\nprofile={n}\n" for n in names)
    d = h.Daemon(cfg)
    try:
        # On llvmpipe a worker is charged its process CPU time (said once
        # at start-up).
        d.wait_log(r"GPU time charged: each worker.s process CPU time, with the CPU time available "
                   r"to GPU work as the whole GPU, measured")
        outs = []
        n3 = ("w1", "w2", "w4")
        # GPU-bound tenants: frames whose cost is the worker's rendering
        # more than the client's and Xvfb's, the same for every frame.
        for n in n3:
            outs += start(d, n, x, argv=GPU_BOUND)
        try:
            warm(d, n3, frames=10)
            shares = {n: d.show(n)["share_ppm"] for n in n3}
            assert shares == {"w1": 35714, "w2": 71428, "w4": 142857}, shares
            # What the scheduler holds to the share is GPU time, here CPU
            # time as a part of the host's CPUs (busy_ns): its split must
            # be 1:2:4, and each within its share (plus the burst and one
            # frame's overshoot).  Frame rates follow it as far as every
            # frame costs the same CPU time (FIXED_FRAME_TOLERANCE).
            dev = None
            for attempt in range(3):
                b0 = {n: d.show(n)["usage"]["busy_ns"] for n in n3}
                r = rates(d, n3, window=FIXED_WINDOW)
                b1 = {n: d.show(n)["usage"]["busy_ns"] for n in n3}
                busy = {n: (b1[n] - b0[n]) / (FIXED_WINDOW * 1e9) for n in n3}
                g2, g4 = busy["w2"] / max(busy["w1"], 1e-6), busy["w4"] / max(busy["w1"], 1e-6)
                dev = max(abs(g2 / 2 - 1), abs(g4 / 4 - 1))
                q2, q4 = r["w2"] / max(r["w1"], 0.01), r["w4"] / max(r["w1"], 0.01)
                print(f"fixed 1:2:4 (attempt {attempt + 1}): GPU time {busy['w1']:.4f} "
                      f"{busy['w2']:.4f} {busy['w4']:.4f} of the host's CPUs (1:{g2:.2f}:{g4:.2f}, "
                      f"largest deviation {dev * 100:.1f}%); frames {r['w1']:.1f} {r['w2']:.1f} "
                      f"{r['w4']:.1f} FPS (1:{q2:.2f}:{q4:.2f})")
                for n in n3:
                    assert busy[n] <= shares[n] / 1e6 * 1.1 + 0.02, (n, busy, shares)
                fdev = max(abs(q2 / 2 - 1), abs(q4 / 4 - 1))
                if dev <= FIXED_TOLERANCE and fdev <= FIXED_FRAME_TOLERANCE:
                    break
            assert dev <= FIXED_TOLERANCE, \
                f"GPU time not 1:2:4 within {FIXED_TOLERANCE * 100:.0f}% ({dev * 100:.1f}%)"
            assert fdev <= FIXED_FRAME_TOLERANCE, \
                f"frame rates not 1:2:4 within {FIXED_FRAME_TOLERANCE * 100:.0f}% " \
                f"({fdev * 100:.1f}%): {r}"
            for n in n3:
                assert d.show(n)["throttled_ns"] > 0, n
            # The capacity the shares are parts of, as measured now: within
            # [nominal / 20, nominal].
            st = d.control({"command": "status"})["daemon"]
            cap, nominal = st["cpu_capacity_milli"], st["cpu_capacity_nominal_milli"]
            print(f"CPU capacity: {cap} of {nominal} thousandths of a CPU")
            assert nominal > 0 and nominal // 20 <= cap <= nominal, st

            # A weight changed while they render reaches the workers' grant
            # pages within a second: w1 goes from 1/28 to 4/31.
            t0 = time.monotonic()
            p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, "set", "w1", "weight=4"],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stderr
            s = h.wait_for(lambda: (lambda s: s if s["share_ppm"] == 129032 and
                                    s["tenants"][0]["share_ppm"] == 129032 else None)(d.show("w1")),
                           1.0 + (time.monotonic() - t0), "w1's new share")
            took = time.monotonic() - t0
            print(f"weight change: w1 share {s['share_ppm']} after {took:.2f} s")
            assert took < 1.5, took
            assert d.show("w4")["share_ppm"] == 129032
        finally:
            stop(outs)
        d.stop()
    finally:
        d.kill()


def equal_share(x):
    cfg = PROFILES + "\n[instance light]\nprofile=eq\n\n[instance crowd]\nprofile=eq\n"
    d = h.Daemon(cfg)
    try:
        light = start(d, "light", x)
        try:
            warm(d, ["light"], frames=60)  # past the first, slow frames
            solo = rates(d, ["light"])["light"]
            s = d.show("light")
            assert s["share_ppm"] == 1000000, s  # alone: the whole GPU
            # ... and so never made to wait: no one's time to keep.
            assert s["throttled_ns"] == 0, s
            crowd = start(d, "crowd", x, n=3)
            try:
                warm(d, ["crowd", "light"], frames=10)
                # The supervisor sees the crowd active at its next tick
                # after the crowd's busy time grew.
                h.wait_for(lambda: d.show("light")["share_ppm"] == 500000, 10,
                           "light's share to halve beside the active crowd")
                r = None
                for _ in range(3):
                    r = rates(d, ["light", "crowd"])
                    if r["light"] >= 0.7 * solo / 2:
                        break
                print(f"equal: light alone {solo:.1f} FPS, beside 3 tenants {r['light']:.1f} FPS "
                      f"({r['light'] / (solo / 2):.2f}x of half solo), crowd {r['crowd']:.1f} FPS")
                assert r["light"] >= 0.7 * solo / 2, (solo, r)
                # Each crowd tenant counts as active while it rendered in the
                # last 0.75 s; under load one may pause longer for a moment.
                st = h.wait_for(lambda: (lambda st: st if st["active"] and all(
                    t["share_ppm"] <= 500000 // 3 + 1 and t["active"] for t in st["tenants"])
                    else None)(d.show("crowd")), 10, "all three crowd tenants active at 1/6 each")
            finally:
                stop(crowd)
            # The crowd gone idle gives its share back.
            h.wait_for(lambda: d.show("light")["share_ppm"] == 1000000, 10,
                       "light to get the whole GPU back")
        finally:
            stop(light)
        d.stop()
    finally:
        d.kill()


def test(x, d):
    which = os.environ.get("SCHED_PARTS", "cap,fixed,equal").split(",")
    if "cap" in which:
        cap_and_best_effort(x, d)
    if "fixed" in which:
        fixed_weights(x)
    if "equal" in which:
        equal_share(x)


if __name__ == "__main__":
    h.run(test, needs=("glxgears", "glmark2"), config=CONFIG)
