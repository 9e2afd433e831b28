#!/usr/bin/env python3
"""Operating vgpud: vgpuctl in human and JSON form, run-time create / set /
destroy, the client limit, admin-only commands, SIGHUP reload without
disturbing tenants, a broken configuration kept out, SIGTERM cleanup, and
vgpu-run's errors."""
import json
import os
import re
import signal
import subprocess
import time

import harness as h

CONFIG = """
[profile p]
vram=256M
max-clients=4

[instance vgpu0]
profile=p

[instance vgpu1]
profile=p
"""

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def ctl(d, *args, as_nobody=False):
    argv = (NOBODY if as_nobody else []) + [h.VGPUCTL, "--runtime-dir", d.dir] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test(x, d):
    # Read commands, human and JSON.
    rc, out, err = ctl(d, "list")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "PROFILE", "STATE"], out
    col = lines[0].index("VRAM")
    assert all(l[col - 2:col] == "  " for l in lines[1:]), f"columns not aligned:\n{out}"
    assert "0 B / 256 MiB" in out, out
    rc, out, _ = ctl(d, "--json", "list")
    inst = {i["name"]: i for i in json.loads(out)["instances"]}
    assert set(inst) == {"vgpu0", "vgpu1"}
    assert inst["vgpu0"]["limits"] == {"vram": 256 << 20, "resources": 0, "contexts": 0,
                                       "clients": 4}, inst["vgpu0"]
    rc, out, _ = ctl(d, "--json", "profiles")
    assert [p["name"] for p in json.loads(out)["profiles"]] == ["p"]
    # Scheduling settings are shown as not enforced, in JSON and in tables.
    unenforced = ["gpu_share", "weight", "fps_cap", "heads"]
    assert json.loads(out)["profiles"][0]["not_enforced"] == unenforced, out
    assert inst["vgpu0"]["not_enforced"] == unenforced, inst["vgpu0"]
    rc, out, _ = ctl(d, "profiles")
    assert rc == 0 and "equal*" in out and "* not enforced" in out, out
    rc, out, _ = ctl(d, "show", "vgpu0")
    assert rc == 0 and "gpu share  equal (weight 100), not enforced" in out, out
    rc, out, _ = ctl(d, "--json", "status")
    assert json.loads(out)["daemon"]["pid"] == d.pid()
    rc, out, _ = ctl(d, "top", "--iterations", "2", "--interval", "0.2")
    assert rc == 0 and out.count("vgpuctl top") == 2, out

    # Run-time instance: create, render, resize, client limit, destroy.
    rc, out, err = ctl(d, "create", "t1", "--profile", "p")
    assert rc == 0, err
    assert os.path.exists(d.socket("t1"))
    rc, _, err = ctl(d, "set", "t1", "vram=64M", "max-clients=1")
    assert rc == 0, err
    rc, out, _ = ctl(d, "--json", "show", "t1")
    t1 = json.loads(out)["instance"]
    assert t1["origin"] == "runtime" and t1["limits"]["vram"] == 64 << 20
    assert t1["limits"]["clients"] == 1
    first = h.client(d, "t1", ["timeout", "-s", "INT", "12", "glxgears"], x.display)
    h.wait_for(lambda: d.usage("t1")["frames"] > 10, 30, "t1 to render")
    second = h.client(d, "t1", ["glxgears"], x.display)
    rc2, _ = h.finish(second, 30)
    assert rc2 != 0, "a second client got past max-clients=1"
    d.wait_log(r"t1: refused client pid %d uid \d+: client limit 1 reached" % second.pid)
    rc, _, err = ctl(d, "destroy", "t1")
    assert rc == 1 and "connected tenant" in err, err
    rc, out, _ = ctl(d, "show", "t1")
    assert "WORKER" in out and "CLIENT" in out, out
    rc, _, err = ctl(d, "destroy", "t1", "--force")
    assert rc == 0, err
    h.finish(first, 30)
    h.wait_for(lambda: not os.path.exists(d.socket("t1")), 20, "t1's socket to go")
    h.wait_for(lambda: ctl(d, "show", "t1")[0] == 1, 20, "t1 to be gone")

    # Errors and permissions.
    rc, _, err = ctl(d, "show", "nosuch")
    assert rc == 1 and 'no instance "nosuch"' in err, err
    rc, _, err = ctl(d, "create", "t2", "--profile", "nosuch")
    assert rc == 1 and "unknown profile" in err, err
    rc, _, err = ctl(d, "set", "vgpu0", "vram=12Q")
    assert rc == 1 and "not a size" in err, err
    rc, _, err = ctl(d, "bogus")
    assert rc == 2, err
    rc, out, _ = ctl(d, "list", as_nobody=True)
    assert rc == 0 and "vgpu0" in out
    rc, _, err = ctl(d, "create", "t3", "--profile", "p", as_nobody=True)
    assert rc == 1 and "permission denied" in err, err
    rc, _, err = subprocess.run([h.VGPUCTL, "--runtime-dir", "/nonexistent", "list"],
                                capture_output=True, text=True).returncode, None, None
    assert rc == 3
    r = d.control({"command": "frobnicate"})
    assert not r["ok"] and "unknown command" in r["error"]

    # SIGHUP: add vgpu2, drop vgpu1, resize vgpu0; vgpu0's tenant runs on.
    g = h.client(d, "vgpu0", ["timeout", "-s", "INT", "14", "glxgears"], x.display)
    h.wait_for(lambda: d.usage("vgpu0")["frames"] > 10, 30, "vgpu0 to render")
    worker = d.show("vgpu0")["tenants"][0]["worker_pid"]
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace("[instance vgpu1]", "[instance vgpu2]")
                .replace("vram=256M", "vram=300M"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded .*: 1 instance\(s\) added, 1 removed, 1 changed")
    assert os.path.exists(d.socket("vgpu2")) and not os.path.exists(d.socket("vgpu1"))
    s0 = d.show("vgpu0")
    assert s0["limits"]["vram"] == 300 << 20 and s0["tenants"][0]["worker_pid"] == worker
    vt_ok = h.finish(h.client(d, "vgpu2", ["timeout", "-s", "INT", "9", "glxgears"], x.display), 30)
    assert h.fps_values(vt_ok[1]), vt_ok[1]
    # A broken file is reported with FILE:LINE and changes nothing.
    with open(d.config_path, "a") as f:
        f.write("\n[profile q]\nvrma=1G\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(re.escape(d.config_path) + r":\d+: unknown key \"vrma\"")
    assert os.path.exists(d.socket("vgpu2"))
    rc, out = h.finish(g, 60)
    assert len(h.fps_values(out)) >= 2, f"vgpu0's tenant was disturbed:\n{out}"

    # An instance that cannot be created (a file stands where its directory
    # goes) is left out of a reload; the rest applies and vgpuctl says so.
    open(os.path.join(d.dir, "blocked"), "w").close()
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace("[instance vgpu1]", "[instance vgpu2]")
                .replace("vram=256M", "vram=320M") + "\n[instance blocked]\nprofile=p\n")
    rc, out, err = ctl(d, "reload")
    blocked = os.path.join(d.dir, "blocked")
    assert rc == 1 and f"vgpuctl: warning: blocked: {blocked} is not a directory" in err, \
        (rc, out, err)
    assert d.show("vgpu0")["limits"]["vram"] == 320 << 20
    assert "blocked" not in {i["name"] for i in d.control({"command": "list"})["instances"]}
    os.unlink(os.path.join(d.dir, "blocked"))

    # Known request members of the wrong JSON type are refused by name.
    for req, what in (({"command": {"x": 1}}, '"command" must be a string'),
                      ({"command": "show", "name": 7}, '"name" must be a string'),
                      ({"command": "destroy", "name": "vgpu2", "force": "yes"},
                       '"force" must be true or false'),
                      ({"command": "set", "name": "vgpu2", "settings": []},
                       '"settings" must be an object')):
        r = d.control(req)
        assert not r["ok"] and what in r["error"], (req, r)
    assert os.path.exists(d.socket("vgpu2"))

    # A bad file stops start-up with FILE:LINE; a second vgpud on the same
    # runtime directory is refused.
    bad = os.path.join(d.tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("[profile p]\nvram=12Q\n")
    p = subprocess.run([h.VGPUD, "--foreground", "--config", bad, "--runtime-dir",
                        os.path.join(d.tmp, "other")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and f"{bad}:2: bad value \"12Q\" for vram" in p.stderr, p.stderr
    p = subprocess.run([h.VGPUD, "--foreground", "--runtime-dir", d.dir], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and f"another vgpud (pid {d.pid()}) is using" in p.stderr, p.stderr

    # vgpu-run's errors.
    p = subprocess.run([h.VGPU_RUN, "--runtime-dir", d.dir, "--instance", "nosuch", "--", "true"],
                       capture_output=True, text=True)
    assert p.returncode == 125 and "no vGPU instance 'nosuch'" in p.stderr, p.stderr
    p = subprocess.run([h.VGPU_RUN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--instance" in p.stdout

    # As a normal user: through an unprivileged user namespace where the
    # kernel allows one, else the documented error.
    p = subprocess.run(NOBODY + ["env", f"DISPLAY={x.display}", h.VGPU_RUN, "--runtime-dir", d.dir,
                                 "--instance", "vgpu0", "--", "timeout", "-s", "INT", "9",
                                 "glxgears", "-info"], capture_output=True, text=True, timeout=60)
    if "unprivileged user namespaces are disabled" in p.stderr:
        assert p.returncode == 125, p.stderr
        print("vgpu-run as nobody: user namespaces disabled here, clear error given")
    else:
        assert "GL_RENDERER   = virgl" in p.stdout, p.stdout + p.stderr
        print("vgpu-run as nobody: rendered through a user namespace")

    # SIGTERM: exit 0, sockets, pid file and instance directories gone.
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    left = [f for f in os.listdir(d.dir)] if os.path.exists(d.dir) else []
    assert left == [], f"left behind in the runtime dir: {left}"


if __name__ == "__main__":
    h.run(test, needs=("glxgears", "setpriv",), config=CONFIG)
