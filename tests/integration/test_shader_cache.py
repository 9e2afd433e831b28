#!/usr/bin/env python3
"""Each worker's shader cache is its own and ends with it (root's vgpud).

While two glxgears tenants render: each worker holds Mesa's single-file
cache open in DIR/shader-cache/UID (UID its own, 0700, made by vgpud), the
names are gone before the tenant's first command, and the files have the
shaders it compiled under the sandbox; the two caches are different
files.  A process of one worker's uid can neither list DIR/shader-cache
nor enter the other's directory.  When the tenants leave, their
directories go; with shader-cache=off (a reload) the next worker runs with
Mesa's cache off and gets none; when vgpud stops, DIR/shader-cache goes."""
import os
import re
import signal
import stat
import subprocess

import harness as h

CONFIG = "[daemon]\nshader-cache=private\n" + h.DEFAULT_CONFIG


def workers(d):
    """{pid: (uid, argv)} of vgpud's serving workers (not the probe)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
            uid = os.stat(f"/proc/{name}").st_uid
        except (OSError, IndexError, ValueError):
            continue
        if ppid == d.pid() and argv and argv[0].endswith("vgpu-worker") and "--probe" not in argv:
            out[int(name)] = (uid, argv)
    return out


def cache_files(pid):
    """(fd path, link text) of the cache files the worker holds open."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "/shader-cache/" in link:
            found.append((f"/proc/{pid}/fd/{fd}", link))
    return found


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(e.decode().split("=", 1) for e in f.read().split(b"\0") if b"=" in e)


def as_uid(uid, argv):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + argv,
                          capture_output=True, text=True)


def test(x, d):
    root = os.path.join(d.dir, "shader-cache")
    st = os.lstat(root)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o711, st
    assert "shader cache: private to each worker" in d.log_text(), d.log_text()
    assert os.listdir(root) == []

    a = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    b = h.Output(h.client(d, "vgpu1", ["glxgears"], x.display))
    try:
        for i in ("vgpu0", "vgpu1"):
            h.wait_for(lambda: d.usage(i)["frames"] > 0, 60, f"{i} to present a frame")
        w = workers(d)
        assert len(w) == 2, w
        inodes = {}
        for pid, (uid, argv) in w.items():
            mine = os.path.join(root, str(uid))
            assert f"--shader-cache={mine}" in argv, argv
            st = os.lstat(mine)
            assert st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700, (mine, st)
            # Nothing by name: the cache is in the worker's open files only.
            assert os.listdir(mine) == [], os.listdir(mine)
            files = cache_files(pid)
            names = sorted(os.path.basename(link.split(" (deleted)")[0]) for _, link in files)
            assert names == ["foz_cache.foz", "foz_cache_idx.foz"], files
            assert all(link.startswith(mine + "/") and link.endswith(" (deleted)")
                       for _, link in files), files
            data = [p for p, link in files if "foz_cache.foz" in link][0]
            # What glxgears' shaders compiled to, written under the sandbox.
            h.wait_for(lambda: os.stat(data).st_size > 1024, 30, f"worker {pid}'s cache to fill")
            s = os.stat(data)
            inodes[pid] = (s.st_dev, s.st_ino)
            print(f"worker {pid} (uid {uid}): {os.stat(data).st_size} bytes of compiled shaders "
                  f"in {files[0][1].split('/mesa_shader_cache_sf')[0]}")
        assert len(set(inodes.values())) == 2, inodes

        # One worker's uid against the other's cache and the list of all.
        (pa, (ua, _)), (pb, (ub, _)) = sorted(w.items())
        r = as_uid(ua, ["ls", root])
        assert r.returncode != 0 and "Permission denied" in r.stderr, r
        r = as_uid(ua, ["ls", os.path.join(root, str(ub))])
        assert r.returncode != 0 and "Permission denied" in r.stderr, r
        r = as_uid(ua, ["cat", f"/proc/{pb}/fd/{cache_files(pb)[0][0].rsplit('/', 1)[1]}"])
        assert r.returncode != 0, r
    finally:
        a.stop()
        b.stop()
    for inst in ("vgpu0", "vgpu1"):
        d.wait_idle(inst)
    h.wait_for(lambda: os.listdir(root) == [], 20, "the workers' cache directories to go")

    # shader-cache=off, by a reload: the next worker compiles without one.
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace("shader-cache=private", "shader-cache=off", 1))
    os.kill(d.pid(), signal.SIGHUP)
    d.wait_log(r"shader-cache=off: for workers started from now on")
    f0 = d.usage("vgpu0")["frames"]
    c = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    try:
        h.wait_for(lambda: d.usage("vgpu0")["frames"] > f0, 60, "vgpu0 to present a frame")
        w = workers(d)
        assert len(w) == 1, w
        pid, (uid, argv) = next(iter(w.items()))
        assert not any(a.startswith("--shader-cache") for a in argv), argv
        assert environ(pid).get("MESA_SHADER_CACHE_DISABLE") == "true"
        assert cache_files(pid) == [], cache_files(pid)
        assert os.listdir(root) == []
    finally:
        c.stop()
    d.wait_idle("vgpu0")
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(timeout=20)  # its exit status and log: h.run's d.stop()
    assert not os.path.exists(root), "DIR/shader-cache outlived vgpud"


if __name__ == "__main__":
    if os.geteuid() != 0:
        h.skip("a private shader cache needs workers with uids of their own: vgpud must be root")
    h.need("setpriv")
    h.run(test, needs=("glxgears",), config=CONFIG)
