#!/usr/bin/env python3
"""GPU memory partitioning and vgpuctl top's tenant rates.

With [daemon] gpu-memory=1G (explicit, so nothing depends on this host's
RAM): creating, resizing and reloading instances whose VRAM limits together
exceed gpu-memory x overcommit is refused with the free figure, the state
before is kept (a reload whose file fits applies: run-time changes that no
longer fit are reported and kept for later), `vgpuctl profiles` counts down
how many more instances of each profile fit, `vgpuctl list` shows the free GPU memory, and start-up
(and --check-config) refuses a file that does not fit.  Then
`vgpuctl top --json` streams one parseable object per line with the rates
of a rendering tenant."""
import json
import os
import subprocess

import harness as h

CONFIG = """
[daemon]
gpu-memory=1G

[profile p]
vram=256M
max-clients=4

[profile big]
vram=768M

[instance vgpu0]
profile=p

[instance vgpu1]
profile=p
"""

MiB = 1 << 20


def ctl(d, *args):
    p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, *args], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def ctl_json(d, *args):
    rc, out, err = ctl(d, "--json", *args)
    assert rc == 0, err
    return json.loads(out)


def available(d):
    return {p["name"]: p["available"] for p in ctl_json(d, "profiles")["profiles"]}


def memory(d):
    r = ctl_json(d, "list")
    return (r["gpu_memory"], r["overcommit"], r["gpu_memory_assigned"], r["gpu_memory_free"])


def refused(d, args, message):
    rc, out, err = ctl(d, *args)
    assert rc == 1 and message in err, (args, rc, out, err)


def test(x, d):
    # Two instances of 256 MiB in 1 GiB.
    assert memory(d) == (1 << 30, 1.0, 512 * MiB, 512 * MiB), memory(d)
    rc, out, _ = ctl(d, "list")
    assert "GPU memory 1 GiB, overcommit 1.0: 512 MiB assigned, 512 MiB free" in out, out
    assert available(d) == {"p": 2, "big": 0}
    rc, out, _ = ctl(d, "profiles")
    assert out.splitlines()[0].split()[:3] == ["PROFILE", "VRAM", "AVAILABLE"], out
    st = ctl_json(d, "status")["daemon"]
    assert st["gpu_memory_free"] == 512 * MiB, st

    # Creating: AVAILABLE counts down; the third does not fit.
    assert ctl(d, "create", "t1", "--profile", "p")[0] == 0
    assert available(d) == {"p": 1, "big": 0}
    assert ctl(d, "create", "t2", "--profile", "p")[0] == 0
    assert available(d) == {"p": 0, "big": 0}
    refused(d, ["create", "t3", "--profile", "p"],
            "t3: vram 256 MiB does not fit: 0 B of 1 GiB GPU memory free (overcommit 1.0)")
    assert "t3" not in {i["name"] for i in ctl_json(d, "list")["instances"]}
    assert not os.path.exists(d.socket("t3"))

    # Resizing beyond: refused, the old limit kept.  vram=unlimited counts as
    # all of gpu-memory; 1000T is refused like any other size that does not fit.
    ctl(d, "destroy", "t2")
    refused(d, ["set", "vgpu0", "vram=768M"],
            "vgpu0: vram 768 MiB does not fit: 512 MiB of 1 GiB GPU memory free")
    refused(d, ["set", "vgpu0", "vram=1000T"], "vgpu0: vram 1000 TiB does not fit")
    refused(d, ["set", "vgpu0", "vram=unlimited"],
            "vgpu0: vram unlimited (counted as all 1 GiB) does not fit")
    assert d.show("vgpu0")["limits"]["vram"] == 256 * MiB
    assert ctl(d, "set", "vgpu0", "vram=384M")[0] == 0
    assert memory(d)[2:] == (896 * MiB, 128 * MiB), memory(d)

    # A reload whose file alone does not fit is refused and nothing changes.
    big = CONFIG.replace("[instance vgpu1]\nprofile=p", "[instance vgpu1]\nprofile=big")
    with open(d.config_path, "w") as f:
        f.write(big + "\n[instance vgpu2]\nprofile=p\n")
    refused(d, ["reload"], "reload failed, configuration unchanged: vgpu2: vram 256 MiB does not "
                           "fit: 0 B of 1 GiB GPU memory free (overcommit 1.0)")
    assert d.show("vgpu1")["profile"] == "p" and d.show("vgpu0")["limits"]["vram"] == 384 * MiB
    # A file that fits but leaves no room for the run-time changes applies;
    # t1 and vgpu0's vram=384M are reported, not applied, and kept.
    with open(d.config_path, "w") as f:
        f.write(big)
    rc, out, err = ctl(d, "reload")
    assert rc == 0, err
    assert "vgpu0: vram 384 MiB does not fit: 256 MiB of 1 GiB GPU memory free (overcommit " \
        "1.0); run-time vram=384M not applied" in out, out
    assert "t1: vram 256 MiB does not fit: 0 B of 1 GiB GPU memory free (overcommit 1.0); not " \
        "created, kept in the state file" in out, out
    assert d.show("vgpu1")["profile"] == "big" and d.show("vgpu0")["limits"]["vram"] == 256 * MiB
    assert "t1" not in {i["name"] for i in ctl_json(d, "list")["instances"]}
    # With overcommit 2.0 they fit again; vgpu0 goes back to the file's
    # 256 MiB once its run-time vram is reset.
    with open(d.config_path, "w") as f:
        f.write(big.replace("gpu-memory=1G", "gpu-memory=1G\novercommit=2.0"))
    rc, out, err = ctl(d, "reload")
    assert rc == 0 and "t1: added (profile p)" in out and "vgpu0: vram 256 MiB -> 384 MiB" in out, \
        out + err
    rc, out, err = ctl(d, "reset", "vgpu0", "vram")
    assert rc == 0 and "vgpu0: vram 384 MiB -> 256 MiB" in out, out + err
    assert memory(d) == (1 << 30, 2.0, 1280 * MiB, 768 * MiB), memory(d)
    assert available(d) == {"p": 3, "big": 1}
    assert ctl(d, "create", "t4", "--profile", "big")[0] == 0
    refused(d, ["create", "t5", "--profile", "p"], "t5: vram 256 MiB does not fit: 0 B of 2 GiB "
            "GPU memory free (1 GiB x overcommit 2.0)")
    assert ctl(d, "destroy", "t4")[0] == 0

    # Start-up: a file that does not fit is refused like any invalid one.
    bad = os.path.join(d.tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write(CONFIG + "[instance vgpu2]\nprofile=big\n")
    p = subprocess.run([h.VGPUD, "--check-config", "--config", bad], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and "vgpu2: vram 768 MiB does not fit: 512 MiB of 1 GiB GPU memory " \
        "free (overcommit 1.0)" in p.stderr, p.stderr
    p = subprocess.run([h.VGPUD, "--foreground", "--config", bad, "--runtime-dir",
                        os.path.join(d.tmp, "other")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "vgpu2: vram 768 MiB does not fit" in p.stderr, p.stderr
    p = subprocess.run([h.VGPUD, "--check-config", "--config", d.config_path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "GPU memory 1 GiB (gpu-memory in the configuration), " \
        "overcommit 2.0: 1 GiB assigned, 1 GiB free" in p.stdout, p.stdout + p.stderr

    # top --json: one object per line, with a rendering tenant's rates.
    g = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    try:
        h.wait_for(lambda: d.usage("vgpu0")["frames"] > 10, 60, "glxgears to draw on vgpu0")
        p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, "--json", "top", "--iterations",
                            "3", "--interval", "0.5"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert len(lines) == 3, p.stdout
        polls = [json.loads(line) for line in lines]
        assert polls[0]["elapsed_s"] is None and polls[2]["elapsed_s"] > 0.4, polls[2]
        for poll in polls:
            assert poll["gpu_memory"] == 1 << 30, poll
        inst = {i["name"]: i for i in polls[2]["instances"]}
        tenants = inst["vgpu0"]["tenants"]
        assert len(tenants) == 1, inst["vgpu0"]
        t = tenants[0]
        for k in ("busy_percent", "throttled_percent", "share_percent", "frames_per_s"):
            assert k in t, t
        assert t["frames_per_s"] > 0 and t["busy_percent"] > 0, t
        first = {i["name"]: i for i in polls[0]["instances"]}
        assert first["vgpu0"]["tenants"][0]["frames_per_s"] is None, polls[0]
        # The stream is line by line and flushed: head ends it, vgpuctl exits 0.
        p = subprocess.run(f"'{h.VGPUCTL}' --runtime-dir '{d.dir}' --json top --interval 0.2 "
                           "| head -n 2", shell=True, capture_output=True, text=True, timeout=60)
        assert len(p.stdout.splitlines()) == 2, p.stdout + p.stderr
        assert all("instances" in json.loads(line) for line in p.stdout.splitlines())
        rc, out, err = ctl(d, "top", "--iterations", "2", "--interval", "0.5")
        assert rc == 0 and "GPU BUSY" in out and "FPS/CAP" in out, out + err
        print("top:\n" + out)
    finally:
        g.stop()


if __name__ == "__main__":
    h.run(test, needs=("glxgears",), config=CONFIG)
