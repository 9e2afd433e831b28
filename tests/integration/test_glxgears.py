#!/usr/bin/env python3
"""Real Mesa clients (glxgears) render through vgpud on two vGPU instances,
one at a time and both at once; usage is visible while they run and back
to zero after."""
import harness as h


def test(x, d):
    for inst in ("vgpu0", "vgpu1"):
        rc, out = h.gears(d, inst, x.display, args=["-info"])
        assert "GL_RENDERER   = virgl" in out, f"{inst}: no virgl renderer in:\n{out}"
        assert h.fps_values(out), f"{inst}: no frame rate reported:\n{out}"
        print(f"{inst}: {out.splitlines()[0]} ... {h.fps_values(out)[0]:.0f} FPS")
        u = d.wait_idle(inst)
        assert u["vram"] == 0 and u["resources"] == 0 and u["contexts"] == 0, u
        assert u["frames"] > 0, u

    # Both at once: each renders, each instance sees only its own tenant.
    frames = {i: d.usage(i)["frames"] for i in ("vgpu0", "vgpu1")}
    a = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    b = h.Output(h.client(d, "vgpu1", ["glxgears"], x.display))
    try:
        for i in ("vgpu0", "vgpu1"):
            h.wait_for(lambda: d.usage(i)["frames"] > frames[i], 60, f"{i} to present a frame")
        s0, s1 = d.show("vgpu0"), d.show("vgpu1")
        for s in (s0, s1):
            assert s["usage"]["clients"] == 1, s
            assert len(s["tenants"]) == 1 and s["tenants"][0]["vram"] > 0, s
            assert s["usage"]["vram"] == s["tenants"][0]["vram"], s
        h.wait_for(lambda: d.usage("vgpu0")["frames"] > s0["usage"]["frames"], 30,
                   "vgpu0 to present more frames")
        for o, i in ((a, "vgpu0"), (b, "vgpu1")):
            h.wait_for(lambda: h.fps_values(o.text()) or o.proc.poll() is not None, 60,
                       f"a frame rate from {i}")
    finally:
        _, out_a = a.stop()
        _, out_b = b.stop()
    fa, fb = h.fps_values(out_a), h.fps_values(out_b)
    assert fa and fa[-1] > 0, out_a
    assert fb and fb[-1] > 0, out_b
    print(f"concurrent: vgpu0 {fa[-1]:.0f} FPS, vgpu1 {fb[-1]:.0f} FPS")
    for inst in ("vgpu0", "vgpu1"):
        u = d.wait_idle(inst)
        assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    log = d.log_text()
    assert log.count("connected: worker") == 4, log


if __name__ == "__main__":
    h.run(test, needs=("glxgears",))
