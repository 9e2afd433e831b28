#!/usr/bin/env python3
"""A 3D guest under QEMU 10 (TCG) straight on a vgpud instance's
vhost-user.sock (renderer virgl): Mesa's virgl driver in the guest draws
through the instance's worker, which renders with virglrenderer on
llvmpipe.

The guest is scripts/vm-guest.sh's, booted with vgpu.mode=3d: its /init
mounts the host's own / (read-only 9p, with Mesa in it) and there runs
tests/vm/gltriangle, built here with the host's C compiler (it loads EGL,
GBM, GLES2 and libdrm at run time, so no -dev package is needed).
Checks, in order:
  - the guest's virtio_gpu driver reports +virgl;
  - offscreen: GL_RENDERER is virgl and the triangle read back from a
    framebuffer object is right ("GLTRIANGLE PASS" on the serial console);
  - while the VM runs, `vgpuctl --json show vgpu0` lists exactly one
    tenant, of kind vm;
  - KMS: gltriangle --kms sets the same picture, rendered by virgl into a
    GBM scanout buffer, on the connector's mode; QMP screendumps (taken
    until one matches, within the deadline) show a blue background and a
    red triangle at the probe points;
  - after QEMU quits: the instance has no tenant and holds no VRAM.
Prints the times it measured (QEMU start to PASS, to the KMS frame).

Skips (77) only when QEMU 10 with vhost-user-gpu-pci, the guest's parts,
a C compiler or the host's Mesa libraries are missing, or vgpu was built
without virglrenderer."""
import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import harness as h
from test_vm_boot_2d import QEMU, check_qemu, guest_dir
from vmlib import Qmp, end_test, kill_group, qemu_argv, tail, until_shown, wait_serial

MEM = "1G"
BOOT_TIMEOUT = float(os.environ.get("VGPU_VM_BOOT_TIMEOUT", "240"))
GLTRIANGLE_SRC = os.path.join(h.SOURCE_DIR, "tests", "vm", "gltriangle.c")


def build_client(work):
    cc = os.environ.get("CC_GUEST", "cc")
    if not shutil.which(cc):
        h.skip(f"no C compiler ({cc}) for the guest's GL client")
    for lib in ("EGL", "GLESv2", "gbm", "drm"):
        if not ctypes.util.find_library(lib):
            h.skip(f"the host has no lib{lib} (Mesa's libegl1, libgles2, libgbm1 and libdrm2), "
                   "which the guest uses through its 9p root")
    exe = os.path.join(work, "gltriangle")
    r = subprocess.run([cc, "-O2", "-Wall", "-o", exe, GLTRIANGLE_SRC, "-ldl"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"gltriangle does not build:\n{r.stdout}{r.stderr}"
    return exe


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    assert m, f"{path} is not a binary PPM"
    w, hgt = int(m.group(1)), int(m.group(2))
    return w, hgt, data[m.end():]


def check_triangle(path, w, hgt):
    """'' when the screendump shows gltriangle's picture at w x hgt at the
    probe points, else what is wrong.  The triangle's corners are the
    bottom corners and the top middle of the screen."""
    sw, sh, px = read_ppm(path)
    if (sw, sh) != (w, hgt):
        return f"screendump is {sw}x{sh}, the mode {w}x{hgt}"
    if len(px) < w * hgt * 3:
        return "screendump is short"
    red, blue = (255, 0, 0), (0, 0, 255)
    probes = [(w // 2, hgt // 2, red), (w // 2, hgt * 3 // 4, red), (w // 4, hgt * 7 // 8, red),
              (w * 3 // 4, hgt * 7 // 8, red), (4, 4, blue), (w - 5, 4, blue),
              (w // 8, hgt // 4, blue), (w * 7 // 8, hgt // 4, blue)]
    wrong = []
    for x, y, want in probes:
        o = (y * w + x) * 3
        got = tuple(px[o:o + 3])
        if any(abs(a - b) > 16 for a, b in zip(got, want)):
            wrong.append(f"({x},{y}) is {got}, not {want}")
    return "; ".join(wrong)


def vgpuctl_show(daemon):
    r = subprocess.run([h.VGPUCTL, "--runtime-dir", daemon.dir, "--json", "show", "vgpu0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"vgpuctl --json show failed: {r.stdout}{r.stderr}"
    j = json.loads(r.stdout)
    return j.get("instance", j)


def main():
    check_qemu()
    if not os.access(os.environ.get("VGPU_VHOST_GPU", ""), os.X_OK):
        h.skip("vgpud's VM path (vgpu-vhost-gpu) is not built in this tree")
    if os.environ.get("VGPU_HAVE_VIRGL") == "0":
        h.skip("vgpu was built without virglrenderer (-Dvirgl=disabled): no worker renders")
    work = tempfile.mkdtemp(prefix="vgpu-vm3d-")
    os.chmod(work, 0o755)
    daemon = None
    qemu = None
    qmp = None
    try:
        client = build_client(work)
        guest = guest_dir()
        daemon = h.Daemon()
        sock = os.path.join(daemon.dir, "vgpu0", "vhost-user.sock")
        assert os.path.exists(sock), f"vgpud did not create {sock}:\n{daemon.log_text()}"

        serial = os.path.join(work, "serial.log")
        qmp_path = os.path.join(work, "qmp.sock")
        qemu_log_path = os.path.join(work, "qemu.log")
        argv = qemu_argv(QEMU, guest, sock, serial, MEM,
                         "console=ttyS0 panic=-1 drm_kms_helper.fbdev_emulation=0 "
                         f"vgpu.mode=3d vgpu.gl={client}",
                         qmp=qmp_path,
                         extra=["-fsdev", "local,id=root,path=/,security_model=none,readonly=on,"
                                "multidevs=remap",
                                "-device", "virtio-9p-pci,fsdev=root,mount_tag=rootfs"])

        def context():
            return (f"\n--- serial\n{tail(serial, 60)}--- qemu\n{tail(qemu_log_path)}"
                    f"--- vgpud\n{daemon.log_text()[-3000:]}")

        with open(qemu_log_path, "w") as qemu_log:
            t0 = time.monotonic()
            deadline = t0 + BOOT_TIMEOUT
            qemu = subprocess.Popen(argv, stdout=qemu_log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            qmp = Qmp(qmp_path, deadline, qemu)
        except AssertionError as e:
            raise AssertionError(f"{e}{context()}") from None

        def gone():
            return f"QEMU exited with {qemu.returncode}" if qemu.poll() is not None else None

        def serial_until(*marks):
            return wait_serial(serial, ("vgpu-guest: FAILED", "gl kms ended") + marks, deadline,
                               gone, context, f"{marks} on serial")

        text = serial_until("gl offscreen done")
        t_pass = time.monotonic() - t0
        print("\n".join(l for l in text.splitlines() if l.startswith("vgpu-guest:")
                        and "dmesg [    0." not in l))
        assert "vgpu-guest: FAILED" not in text, "the guest failed" + context()
        assert "card0 driver=virtio_gpu" in text, "virtio_gpu did not bind" + context()
        assert re.search(r"\[drm\] features: \+virgl", text), \
            "the guest's driver did not negotiate virgl" + context()
        assert "GL_RENDERER=virgl" in text, "the guest's GL renderer is not virgl" + context()
        assert "gl: GLTRIANGLE PASS" in text, "the offscreen triangle is wrong" + context()

        inst = vgpuctl_show(daemon)
        tenants = inst.get("tenants", [])
        print(f"vgpu0 while the VM runs: usage {inst.get('usage')}, tenants {tenants}")
        assert len(tenants) == 1 and tenants[0]["kind"] == "vm", \
            f"vgpuctl shows {tenants}, not one tenant of kind vm"

        text = serial_until("GLTRIANGLE KMS-SET")
        m = re.search(r"GLTRIANGLE KMS-SET (\d+)x(\d+)", text)
        assert m, "gltriangle --kms set no mode" + context()
        w, hgt = int(m.group(1)), int(m.group(2))
        kms_part = text[text.index("gl offscreen done"):]
        print("\n".join(l for l in kms_part.splitlines() if l.startswith("vgpu-guest: gl:")))
        assert "GL_RENDERER=virgl" in kms_part, "the KMS picture was not drawn by virgl" + context()
        t_set = time.monotonic() - t0

        def shoot(n):
            shot = os.path.join(work, f"kms{n}.ppm")
            qmp.cmd("screendump", filename=shot, format="ppm")
            wrong = check_triangle(shot, w, hgt)
            if wrong:
                os.unlink(shot)
            return not wrong, wrong

        shots, _, first_wrong = until_shown(shoot, deadline, gone, context,
                                            "screendump showed the triangle")
        t_kms = time.monotonic() - t0
        if first_wrong:
            print(f"screendump 1 did not match yet: {first_wrong}")
        qmp.cmd("quit")
        rc = qemu.wait(timeout=30)
        assert rc == 0, f"QEMU exited with {rc}" + context()
        usage = daemon.wait_idle("vgpu0", timeout=30)
        print(f"vgpu0 after the VM: {usage}")
        assert usage.get("vm_clients", 0) == 0 and usage["vram"] == 0 and usage["resources"] == 0, \
            f"vgpu0 still holds something after the VM: {usage}"
        daemon.stop()
        daemon = None
        print(f"3d guest: offscreen PASS {t_pass:.2f} s after QEMU started; KMS mode set at "
              f"{t_set:.2f} s; {w}x{hgt} frame shown in screendump {shots} at {t_kms:.2f} s")
    finally:
        if qmp is not None:
            qmp.close()
        kill_group(qemu)
        end_test(daemon, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
