#!/usr/bin/env python3
"""vgpuctl screenshot: a VM tenant's scanout as a PNG.

A C harness plays QEMU on an instance's vhost-user.sock (test-vhost-frontend
--serve-frame) and shows a known 64x48 frame, from a 2D resource and
(with virglrenderer) from a 3D one the worker reads back; `vgpuctl
screenshot` must write exactly those pixels.  Then the refusals (no such instance, no VM
tenant, a head without a scanout, a symlink as FILE, a worker that does
not answer within 2 s), and a hijacked worker that answers with a bad
image (wrong size, unsealed memfd, garbage, huge): each is refused with a
log line, that worker is ended, and vgpud answers on."""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import harness as h

CONFIG = """
[daemon]
worker={worker}

[profile test]
vram=256M
max-resources=1024
max-contexts=4
max-clients=8
heads=1

[instance vgpu0]
profile=test

[instance empty]
profile=test
"""

W, H = 64, 48


def expected_pixel(x, y):
    return ((x * 4) & 0xFF, (y * 5) & 0xFF, (x ^ y) & 0xFF)


def read_png(path):
    """Decodes an 8-bit RGB, non-interlaced PNG: (width, height, rows of
    bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, hh, depth, ctype, _, _, interlace = ihdr
    assert (depth, ctype, interlace) == (8, 2, 0), ihdr
    raw = zlib.decompress(idat)
    stride, bpp, rows, prev = w * 3, 3, [], bytearray(w * 3)
    for y in range(hh):
        ft = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ft == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ft == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pr) & 0xFF
        rows.append(bytes(line))
        prev = line
    return w, hh, rows


def vgpuctl(d, *args, timeout=30):
    return subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, *args], capture_output=True,
                          text=True, timeout=timeout)


def refused(d, args, why):
    r = vgpuctl(d, "screenshot", *args)
    assert r.returncode == 1 and why in r.stderr, f"{args}: rc {r.returncode}:\n{r.stderr}"
    print(f"refused {' '.join(args)}: {r.stderr.strip()}")


def vm_tenants(d, name):
    return [t for t in d.show(name)["tenants"] if t["kind"] == "vm"]


def start_frame(d, tool, three_d=False):
    path = os.path.join(d.dir, "vgpu0", "vhost-user.sock")
    mode = "--serve-frame-3d" if three_d else "--serve-frame"
    p = subprocess.Popen([tool, mode, path], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # A worker that starts its renderer on a loaded
                         # machine may take longer than the harness's
                         # default 10 s to answer QEMU's start sequence.
                         env=h.sanitizer_env(dict(os.environ, VHH_TIMEOUT_MS="30000")))
    line = p.stdout.readline()
    if line.strip() != "READY":
        p.kill()
        raise AssertionError(f"the harness did not show its frame: {line!r}\n{p.stderr.read()}")
    return p


def test_frame(d, tool, out):
    p = start_frame(d, tool)
    try:
        ts = vm_tenants(d, "vgpu0")
        assert len(ts) == 1, ts
        png = os.path.join(out, "head0.png")
        t0 = time.monotonic()
        r = vgpuctl(d, "screenshot", "vgpu0", png)
        assert r.returncode == 0, r.stderr
        print(r.stdout.strip(), f"({time.monotonic() - t0:.2f} s)")
        w, hh, rows = read_png(png)
        assert (w, hh) == (W, H), (w, hh)
        bad = sum(1 for y in range(H) for x in range(W)
                  if tuple(rows[y][x * 3:x * 3 + 3]) != expected_pixel(x, y))
        assert bad == 0, f"{bad} of {W * H} pixels differ from the guest's frame"
        print(f"screenshot: {W}x{H}, every pixel as the guest drew it")
        # --json, --head 0 and --tenant by the QEMU (harness) pid
        r = vgpuctl(d, "--json", "screenshot", "vgpu0", "--head", "0", "--tenant",
                    str(p.pid), png)
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        assert (j["width"], j["height"], j["head"], j["file"]) == (W, H, 0, png), j
        # a file that exists is replaced (as the user), a symlink is not followed
        victim = os.path.join(out, "victim")
        with open(victim, "w") as f:
            f.write("keep")
        link = os.path.join(out, "link.png")
        os.symlink(victim, link)
        refused(d, ["vgpu0", link], "symbolic link")
        assert open(victim).read() == "keep"
        # errors
        refused(d, ["nosuch", png], 'no instance "nosuch"')
        refused(d, ["empty", png], "empty has no VM tenant")
        refused(d, ["vgpu0", "--head", "1", png], "head 1 shows nothing")
        refused(d, ["vgpu0", "--tenant", "1", png], "no VM tenant with worker or QEMU pid 1")
        # another user's VM is not theirs to see
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            h.VGPUCTL, "--runtime-dir", d.dir, "screenshot", "vgpu0",
                            "/nonexistent/x.png"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "no VM tenant of yours" in r.stderr, r
        print(f"as nobody: {r.stderr.strip()}")
        r = vgpuctl(d, "screenshot", "vgpu0", "--head", "16", png)
        assert r.returncode == 2, r
        # a worker that does not answer: stopped, vgpud answers after 2 s
        wpid = ts[0]["worker_pid"]
        os.kill(wpid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            refused(d, ["vgpu0", png], "did not answer within 2000 ms")
            took = time.monotonic() - t0
            assert took < 6, took
            r = vgpuctl(d, "list")
            assert r.returncode == 0, r.stderr
        finally:
            os.kill(wpid, signal.SIGCONT)
        print(f"a stopped worker: refused after {took:.2f} s; vgpud answered on")
        # once it runs again, its late reply is dropped and a new request works
        r = vgpuctl(d, "screenshot", "vgpu0", png)
        assert r.returncode == 0, r.stderr
        assert read_png(png)[2] == rows
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0, p.stderr.read()
    d.wait_idle("vgpu0")


def test_frame_3d(d, tool, out):
    """The same frame in a 3D resource: the worker reads it back from
    virglrenderer (llvmpipe) for the screenshot."""
    p = start_frame(d, tool, three_d=True)
    try:
        png = os.path.join(out, "head0-3d.png")
        r = vgpuctl(d, "screenshot", "vgpu0", png)
        assert r.returncode == 0, r.stderr
        w, hh, rows = read_png(png)
        assert (w, hh) == (W, H), (w, hh)
        bad = sum(1 for y in range(H) for x in range(W)
                  if tuple(rows[y][x * 3:x * 3 + 3]) != expected_pixel(x, y))
        assert bad == 0, f"{bad} of {W * H} pixels of the 3D scanout differ"
        print("3D scanout screenshot: every pixel as the guest uploaded it")
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0, p.stderr.read()
    d.wait_idle("vgpu0")


def test_bad_shots(d, out):
    png = os.path.join(out, "bad.png")
    reasons = {"size": "memfd size is not stride * height",
               "unsealed": "fd is not a memfd sealed",
               "garbage": "dimensions out of range",
               "huge": "dimensions out of range"}
    for how, why in reasons.items():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(os.path.join(d.dir, "vgpu0", "vhost-user.sock"))
        s.sendall(f"ATTACK bad-shot {how}\n".encode())
        got = b""
        while b"READY" not in got:
            chunk = s.recv(4096)
            assert chunk, f"the hijacked worker left: {got!r}"
            got += chunk
        refused(d, ["vgpu0", png], f"the VM's worker sent a bad screenshot (screenshot {why}")
        assert not os.path.exists(png)
        d.wait_log(r"worker \d+ sent a bad screenshot " + re.escape(f"(screenshot {why}") + r"[^)]*\): killed")
        s.close()
        d.wait_idle("vgpu0")
        r = vgpuctl(d, "list", timeout=5)
        assert r.returncode == 0, r.stderr
    print("bad images from a hijacked worker: refused, logged, the worker ended")


def main():
    tool = os.environ.get("VGPU_VHOST_HARNESS")
    worker = os.environ.get("VGPU_HIJACKED_WORKER")
    real = os.environ.get("VGPU_WORKER")
    if not tool or not worker or not real:
        h.skip("VGPU_VHOST_HARNESS, VGPU_HIJACKED_WORKER and VGPU_WORKER are set by meson")
    h.need("setpriv")
    # Without libpng vgpuctl says so before it connects anywhere.
    r = subprocess.run([h.VGPUCTL, "--runtime-dir", "/nonexistent", "screenshot", "x", "x.png"],
                       capture_output=True, text=True)
    if "without libpng" in r.stderr:
        h.skip("vgpuctl was built without libpng")
    out = tempfile.mkdtemp(prefix="vgpu-shot-")
    d = h.Daemon(CONFIG.format(worker=worker), env={"VGPU_REAL_WORKER": real})
    try:
        test_frame(d, tool, out)
        if os.environ.get("VGPU_HAVE_VIRGL") == "1":
            test_frame_3d(d, tool, out)
        else:
            print("3D part skipped: built without virglrenderer")
        test_bad_shots(d, out)
        d.stop()
    finally:
        d.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
