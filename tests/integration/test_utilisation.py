#!/usr/bin/env python3
"""GPU utilisation and what the workers run on, as vgpuctl shows them.

1. `status` (JSON and table) names the render device (here: no render
   node, EGL surfaceless llvmpipe, as glxinfo names it), the Mesa version
   the workers' GL context reports (the same as glxinfo's) and the
   virglrenderer version (pkg-config's) with the library file vgpu-worker
   loads (ldd's).
2. Idle instances show 0% GPU busy in `list`, `show` and `top`; so does a
   tenant that did some work (a read-back) and then sits idle, about a
   second later, its row naming its process (this test's python3).
3. A glxgears tenant on vgpu0: vgpu0's and the tenant's busy % rise above
   0 while vgpu1 stays at 0; the tenant row names "glxgears"; the
   instance's figure is the sum of its tenants'; `top`'s first screen
   already has vgpud's figure, its second one the delta over its interval.
4. After the tenant leaves, vgpu0 is back at 0%."""
import json
import os
import re
import shutil
import subprocess

import harness as h
import vtest_client as vt


def ctl(d, *args):
    r = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def instance(reply, name):
    return next(i for i in reply["instances"] if i["name"] == name)


def glxinfo(display):
    """(GL renderer, Mesa version) of the host's own Mesa on the X server."""
    env = dict(os.environ, DISPLAY=display, LIBGL_ALWAYS_SOFTWARE="1")
    r = subprocess.run(["glxinfo", "-B"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    renderer = re.search(r"OpenGL renderer string: (.*)", r.stdout).group(1).strip()
    mesa = re.search(r"OpenGL version string: .* Mesa (\S+)", r.stdout).group(1)
    return renderer, mesa


def worker_library():
    """The libvirglrenderer file the dynamic linker gives vgpu-worker."""
    worker = os.environ.get("VGPU_WORKER") or shutil.which("vgpu-worker")
    out = subprocess.run(["ldd", worker], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"libvirglrenderer\.so\S* => (\S+)", out)
    assert m, out
    return os.path.realpath(m.group(1))


def test_status(x, d):
    d.wait_probed()
    st = json.loads(ctl(d, "status", "--json"))
    daemon = st["daemon"]
    renderer = instance(st, "vgpu0")["renderer"]
    assert renderer["state"] == "ready", renderer
    gl_renderer, mesa = glxinfo(x.display)
    print(f"glxinfo: {gl_renderer}, Mesa {mesa}; status: {json.dumps(renderer)[:400]}")
    nodes = [n for n in os.listdir("/dev/dri") if n.startswith("renderD")] \
        if os.path.isdir("/dev/dri") else []
    if nodes:
        # A host with a GPU: the node vgpud picked and its driver.
        assert daemon["render_node"].startswith("/dev/dri/renderD"), daemon
        driver = os.path.basename(os.readlink(
            f"/sys/class/drm/{os.path.basename(daemon['render_node'])}/device/driver"))
        assert daemon["render_driver"] == driver, daemon
    else:
        assert daemon["render_node"] is None and daemon["render_driver"] is None, daemon
        assert renderer["gl_renderer"].startswith("llvmpipe"), renderer
        assert renderer["gl_renderer"] == gl_renderer, (renderer, gl_renderer)
    assert renderer["mesa_version"] == mesa, (renderer, mesa)
    assert renderer["gl_version"].endswith("Mesa " + mesa), renderer
    pc = subprocess.run(["pkg-config", "--modversion", "virglrenderer"], capture_output=True,
                        text=True, timeout=30).stdout.strip()
    assert renderer["virglrenderer_version"] == pc, (renderer, pc)
    assert renderer["virglrenderer_library"] == worker_library(), renderer
    text = ctl(d, "status")
    print(text)
    if not nodes:
        assert f"\nrender device  no render node, EGL surfaceless: {gl_renderer}\n" in text, text
    assert f"\nMesa           {mesa} (OpenGL " in text, text
    assert f"\nvirglrenderer  {pc} ({worker_library()})\n" in text, text


def busy_column(table, name):
    """The GPU BUSY cell of instance `name` in `vgpuctl list`."""
    lines = table.splitlines()
    start = lines[0].index("GPU BUSY")
    row = next(line for line in lines[1:] if line.split()[0] == name)
    return row[start:].split()[0]


def test_idle(d):
    lst = json.loads(ctl(d, "list", "--json"))
    for name in ("vgpu0", "vgpu1"):
        assert instance(lst, name)["busy_percent"] == 0, lst
    table = ctl(d, "list")
    assert busy_column(table, "vgpu0") == "0.0%" and busy_column(table, "vgpu1") == "0.0%", table
    shown = ctl(d, "show", "vgpu0")
    assert "\nGPU busy   0.0% of the GPU over the last second\n" in shown, shown
    top = json.loads(ctl(d, "top", "--json", "--iterations", "1").splitlines()[0])
    assert instance(top, "vgpu0")["busy_percent"] == 0, top


def test_idle_tenant(d):
    c = vt.VtestClient(d.socket("vgpu1"))
    fd = None
    try:
        c.handshake(b"idle")
        fd = c.create2(1, vt.TARGET_2D, vt.FORMAT_B8G8R8A8_UNORM,
                       vt.BIND_DISPLAY_TARGET | vt.BIND_RENDER_TARGET, 256, 256, 256 * 256 * 4)
        c.transfer_get2(1, (0, 0, 0, 256, 256, 1), 256 * 256 * 4)
        assert c.busy_wait(1) == 0
        s = h.wait_for(lambda: (lambda s: s if s["tenants"] and s["tenants"][0]["busy_ns"] > 0
                                and s["tenants"][0]["busy_percent"] == 0 else None)(
                                    d.show("vgpu1")), 20, "vgpu1's idle tenant to show 0%")
        t = s["tenants"][0]
        print(f"idle tenant: busy_ns {t['busy_ns']}, {t['busy_percent']}%")
        assert s["busy_percent"] == 0, s
        with open(f"/proc/{os.getpid()}/comm") as f:
            comm = f.read().strip()
        assert t["client_name"] == comm, (t, comm)
        shown = ctl(d, "show", "vgpu1")
        assert "\nGPU busy   0.0% of the GPU over the last second\n" in shown, shown
        row = shown.split("\n\n", 1)[1].splitlines()[1].split()
        assert row[4] == comm and row[5] == "0.0%", shown
    finally:
        if fd is not None:
            os.close(fd)
        c.close()
    d.wait_idle("vgpu1")


def test_busy(x, d):
    gears = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    try:
        # Past its start-up (its first calls compile shaders for seconds,
        # counted when they return): rendering frames, and busy.
        def busy_tenant():
            s = d.show("vgpu0")
            t = s["tenants"]
            return s if t and t[0]["frames"] > 20 and t[0]["busy_percent"] > 0 else None
        s = h.wait_for(busy_tenant, 120, "vgpu0's tenant to render and show GPU busy time")
        t = s["tenants"][0]
        print(f"vgpu0: {s['busy_percent']}% busy, tenant {t['client_name']} {t['busy_percent']}%")
        assert t["client_name"] == "glxgears", t
        assert 0 < t["busy_percent"] <= 100, t
        assert s["busy_percent"] == t["busy_percent"], s  # one tenant: the sum is its figure
        # The other instance did nothing.
        assert d.show("vgpu1")["busy_percent"] == 0
        # The tables: the tenant's process and figure, the instance's figure.
        shown = ctl(d, "show", "vgpu0")
        print(shown)
        header = shown.split("\n\n", 1)[1].splitlines()[0].split()
        assert header[:6] == ["KIND", "WORKER", "CLIENT", "UID", "PROCESS", "GPU"], shown
        row = shown.split("\n\n", 1)[1].splitlines()[1].split()
        assert row[4] == "glxgears" and re.fullmatch(r"(\d+\.\d|<0\.1)%", row[5]), shown
        h.wait_for(lambda: busy_column(ctl(d, "list"), "vgpu0") != "0.0%", 30,
                   "list to show vgpu0 busy")
        # top: vgpud's figure on the first screen, its own delta on the second.
        lines = ctl(d, "top", "--json", "--iterations", "2", "--interval", "2").splitlines()
        first, second = (instance(json.loads(line), "vgpu0") for line in lines)
        print(f"top: {first['busy_percent']}% then {second['busy_percent']}%")
        assert first["busy_percent"] > 0 and second["busy_percent"] > 0, lines
        assert second["tenants"][0]["busy_percent"] > 0, second
        assert instance(json.loads(lines[1]), "vgpu1")["busy_percent"] == 0, lines[1]
        text = ctl(d, "top", "--iterations", "1")
        assert "glxgears" in text and "GPU BUSY" in text, text
    finally:
        gears.stop()
    d.wait_idle("vgpu0")
    # Nobody left: 0 at once (the figure is over live tenants).
    assert d.show("vgpu0")["busy_percent"] == 0


def test(x, d):
    test_status(x, d)
    test_idle(d)
    test_idle_tenant(d)
    test_busy(x, d)
    test_idle(d)


if __name__ == "__main__":
    h.run(test, needs=("glxgears", "glxinfo", "pkg-config", "ldd"))
