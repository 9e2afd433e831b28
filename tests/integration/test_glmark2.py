#!/usr/bin/env python3
"""Several glmark2 scenes run to completion through vgpud, each with a
frame rate, and the instance is empty again afterwards."""
import re

import harness as h

SCENES = ["build:use-vbo=true", "texture:texture-filter=linear", "shading:shading=phong",
          "bump:bump-render=normals", "effect2d", "pulsar", "ideas"]


def test(x, d):
    argv = ["glmark2", "--size", "300x300"]
    for s in SCENES:
        argv += ["-b", f"{s}:duration=2"]
    rc, out = h.finish(h.client(d, "vgpu0", argv, x.display), 240)
    print(out[-2500:])
    assert rc == 0, f"glmark2 exited with {rc}"
    assert re.search(r"GL_RENDERER:\s+virgl", out), "glmark2 did not run on virgl"
    results = re.findall(r"^\[(\w+)\] .*FPS: (\d+)", out, re.M)
    assert len(results) == len(SCENES), f"{len(results)} of {len(SCENES)} scenes reported"
    assert all(int(fps) > 0 for _, fps in results), results
    assert "Unsupported" not in out and "Failed" not in out.replace("Failed to set swap interval", "")
    assert re.search(r"glmark2 Score: \d+", out)
    u = d.wait_idle("vgpu0")
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    assert u["frames"] > 0


if __name__ == "__main__":
    h.run(test, needs=("glmark2",))
