#!/usr/bin/env python3
"""A real Linux guest under QEMU 10 (TCG) on a vhost-user-gpu back-end:
its virtio_gpu driver binds, it draws tests/vm/fbpattern's picture into
its framebuffer, and QEMU's own `screendump` (QMP) shows that picture
with every pixel right.

The back-end, by --backend:
  reference  QEMU's own /usr/lib/qemu/vhost-user-gpu, or the command in
             $VGPU_VM_BACKEND (split like a shell would; the test adds
             --socket-path=PATH): proves the harness, and takes any
             drop-in back-end
  vgpu       vgpu-vhost-gpu ($VGPU_VHOST_GPU) landing on instance vgpu0 of
             a vgpud started here; the instance counts the VM as a tenant
             (clients) while it runs and has none after
  vgpud      QEMU connects straight to vgpud's DIR/vgpu0/vhost-user.sock

Steps: start the back-end on a socket (the reference and vgpu ones must
create it), boot the guest of scripts/vm-guest.sh (built here if it is not
cached) with memfd guest memory and -device vhost-user-gpu-pci, wait for
"pattern written" on the serial console, take screendumps until one
matches the picture (each is compared whole; at most a deadline), quit
QEMU over QMP, and check that QEMU and the back-end both ended with status
0.  Prints the boot-to-scanout times it measured.  VGPU_VM_KEEP=1 keeps
the work directory (serial console, logs, screendumps).

--xres W --yres H give QEMU's device those properties
(`vhost-user-gpu-pci,xres=W,yres=H`): the back-end must pass QEMU's
display mode and EDID on to the guest, whose framebuffer must then be
W x H.

Skips (77) only when QEMU 10 (qemu-system-x86_64 >= 10 with its
vhost-user-gpu-pci device, and for `reference` its back-end) is not
installed, or for `vgpu` and `vgpud` while vgpud's VM path
(vgpu-vhost-gpu) is not built in this tree."""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import harness as h
# test_vm_libvirt.py takes kill_group and tail from here.
from vmlib import (Qmp, end_test, kill_group, qemu_argv, tail,  # noqa: F401
                   until_shown, wait_serial)

QEMU = os.environ.get("VGPU_QEMU", "qemu-system-x86_64")
REFERENCE = "/usr/lib/qemu/vhost-user-gpu"
VM_GUEST_SH = os.path.join(h.SOURCE_DIR, "scripts", "vm-guest.sh")
FBPATTERN = os.environ.get("VGPU_FBPATTERN", "fbpattern")
MEM = "512M"
BOOT_TIMEOUT = float(os.environ.get("VGPU_VM_BOOT_TIMEOUT", "150"))


def qemu_version():
    """(major, minor) of QEMU, or None when it is not installed."""
    exe = shutil.which(QEMU)
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_qemu():
    v = qemu_version()
    if v is None:
        h.skip(f"{QEMU} is not installed (make deps installs QEMU 10 from backports)")
    if v == (0, 0):
        h.skip(f"{QEMU} prints no QEMU version: QEMU 10 is needed (make deps installs it from backports)")
    if v < (10, 0):
        h.skip(f"{QEMU} is QEMU {v[0]}.{v[1]}, which refuses vhost-user-gpu without KVM: "
               "QEMU 10 is needed (make deps installs it from backports)")
    devs = subprocess.run([QEMU, "-device", "help"], capture_output=True, text=True, timeout=30)
    if "vhost-user-gpu-pci" not in devs.stdout + devs.stderr:
        h.skip(f"{QEMU} has no vhost-user-gpu-pci device")


def guest_dir():
    """The cached kernel and initramfs, built now if they are not ready."""
    r = subprocess.run(["sh", VM_GUEST_SH], capture_output=True, text=True, timeout=600)
    print(r.stdout.strip())
    assert r.returncode == 0, f"scripts/vm-guest.sh failed:\n{r.stdout}{r.stderr}"
    r = subprocess.run(["sh", VM_GUEST_SH, "--print"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "scripts/vm-guest.sh built no guest"
    return r.stdout.strip()


def boot(work, guest, sock, backend_proc, backend_log, while_shown=None, mode=None):
    """Boots the guest against the back-end listening on sock; returns
    the measured times.  while_shown() runs once the picture is shown,
    before QEMU quits.  mode (W, H): QEMU's device gets xres/yres and
    the guest's framebuffer must have that size.  Raises AssertionError on
    any failure."""
    serial = os.path.join(work, "serial.log")
    qmp_path = os.path.join(work, "qmp.sock")
    qemu_log_path = os.path.join(work, "qemu.log")
    argv = qemu_argv(QEMU, guest, sock, serial, MEM,
                     "console=ttyS0 panic=-1 vt.global_cursor_default=0 vgpu.mode=2d",
                     device_opts=f",xres={mode[0]},yres={mode[1]}" if mode else "", qmp=qmp_path)
    qemu_log = open(qemu_log_path, "w")
    t0 = time.monotonic()
    deadline = t0 + BOOT_TIMEOUT
    qemu = subprocess.Popen(argv, stdout=qemu_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    qmp = None

    def context():
        return (f"\n--- serial\n{tail(serial)}--- qemu\n{tail(qemu_log_path)}"
                + (f"--- back-end\n{tail(backend_log)}" if backend_log else ""))

    def gone(when):
        if qemu.poll() is not None:
            return f"QEMU exited with {qemu.returncode} {when}"
        if backend_proc is not None and backend_proc.poll() is not None:
            return f"the back-end exited with {backend_proc.returncode} {when}"
        return None

    try:
        try:
            qmp = Qmp(qmp_path, deadline, qemu)
        except AssertionError as e:
            raise AssertionError(f"{e}{context()}") from None

        # The guest's serial console, polled until its verdict or the deadline.
        text = wait_serial(serial, ("vgpu-guest: FAILED", "pattern written"), deadline,
                           lambda: gone("during boot"), context, "the guest's pattern")
        t_pattern = time.monotonic() - t0
        guest_lines = [l for l in text.splitlines() if l.startswith("vgpu-guest:")]
        print("\n".join(guest_lines))
        if "vgpu-guest: FAILED" in text:
            raise AssertionError("the guest failed" + context())
        assert "card0 driver=virtio_gpu" in text, "virtio_gpu did not bind" + context()
        m = re.search(r"fbpattern: drew (\d+)x(\d+)", text)
        assert m, "the guest printed no geometry" + context()
        w, hgt = int(m.group(1)), int(m.group(2))
        if mode:
            assert (w, hgt) == tuple(mode), \
                f"the guest's framebuffer is {w}x{hgt}, QEMU's display {mode[0]}x{mode[1]}" + context()
        up = re.search(r"pattern written uptime=([\d.]+)", text)

        # The framebuffer reaches the display a little after the write
        # returns: screendumps until one matches, each compared whole.
        def shoot(n):
            shot = os.path.join(work, f"shot{n}.ppm")
            qmp.cmd("screendump", filename=shot, format="ppm")
            r = subprocess.run([FBPATTERN, "compare", str(w), str(hgt), shot], capture_output=True,
                               text=True, timeout=60)
            if r.returncode != 0:
                os.unlink(shot)
            return r.returncode == 0, r.stdout + r.stderr

        shots, last, _ = until_shown(shoot, deadline, lambda: gone("while the display was checked"), context,
                                     "screendump showed the pattern")
        t_shown = time.monotonic() - t0
        print(last.strip().splitlines()[-1] + f" (screendump {shots}, {w}x{hgt})")

        if while_shown is not None:
            while_shown()
        qmp.cmd("quit")
        try:
            rc = qemu.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("QEMU did not quit within 30 s" + context()) from None
        assert rc == 0, f"QEMU exited with {rc}" + context()
        return {"pattern": t_pattern, "shown": t_shown, "shots": shots,
                "uptime": float(up.group(1)) if up else None, "context": context}
    finally:
        if qmp is not None:
            qmp.close()
        kill_group(qemu)
        qemu_log.close()


def start_backend(cmd, sock, log_path, env=None):
    log = open(log_path, "w")
    p = subprocess.Popen(cmd + [f"--socket-path={sock}"], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True,
                         env=h.sanitizer_env(dict(os.environ, **(env or {}))))
    log.close()
    try:
        h.wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 30,
                   "the back-end's socket")
    except AssertionError:
        kill_group(p)
        raise
    if p.poll() is not None:
        raise AssertionError(f"the back-end exited with {p.returncode} before creating {sock}:\n"
                             f"{tail(log_path)}")
    return p


def backend_ended(p, log_path, timeout=30):
    """The back-end must end on its own, with status 0, once QEMU is gone."""
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the back-end still runs {timeout} s after QEMU quit:\n"
                             f"{tail(log_path)}") from None
    text = tail(log_path, 200)
    assert rc == 0, f"the back-end exited with {rc}:\n{text}"
    for bad in ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "CRITICAL"):
        assert bad not in text, f"'{bad}' in the back-end's output:\n{text}"


def report(mode, t):
    up = f", guest uptime {t['uptime']:.2f} s" if t["uptime"] is not None else ""
    print(f"boot-to-scanout ({mode}): pattern written {t['pattern']:.2f} s after QEMU started{up}; "
          f"shown in screendump {t['shots']} at {t['shown']:.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["reference", "vgpu", "vgpud"], default="reference")
    ap.add_argument("--xres", type=int)
    ap.add_argument("--yres", type=int)
    args = ap.parse_args()
    mode = (args.xres, args.yres) if args.xres and args.yres else None

    check_qemu()
    if args.backend == "reference":
        cmd = shlex.split(os.environ.get("VGPU_VM_BACKEND", REFERENCE))
        if not cmd or not (shutil.which(cmd[0]) or os.access(cmd[0], os.X_OK)):
            h.skip(f"the back-end {cmd[0] if cmd else '(empty)'} is not installed "
                   "(QEMU's is in qemu-system-gui, which make deps installs)")
    else:
        # vgpu-vhost-gpu and vgpud's vhost-user.sock come together.
        exe = os.environ.get("VGPU_VHOST_GPU", "")
        if not exe or not os.access(exe, os.X_OK):
            h.skip("vgpud's VM path (vgpu-vhost-gpu) is not built in this tree")
    if os.environ.get("VGPU_HAVE_VIRGL") == "0" and args.backend != "reference":
        h.skip("vgpu was built without virglrenderer (-Dvirgl=disabled): no worker renders")
    guest = guest_dir()
    work = tempfile.mkdtemp(prefix="vgpu-vm-")
    backend = None
    daemon = None
    backend_log = os.path.join(work, "backend.log")
    try:
        if args.backend == "reference":
            sock = os.path.join(work, "gpu.sock")
            backend = start_backend(cmd, sock, backend_log)
            t = boot(work, guest, sock, backend, backend_log, mode=mode)
            backend_ended(backend, backend_log)
        else:
            daemon = h.Daemon()
            if args.backend == "vgpu":
                sock = os.path.join(work, "gpu.sock")
                backend = start_backend([exe, "--runtime-dir", daemon.dir, "--instance", "vgpu0"],
                                        sock, backend_log)
            else:
                sock = os.path.join(daemon.dir, "vgpu0", "vhost-user.sock")
                assert os.path.exists(sock), f"vgpud did not create {sock}:\n{daemon.log_text()}"
                backend_log = None
            def tenant():
                # The guest's framebuffer (one resource) is charged to the
                # instance, and the VM counts as its tenant.
                usage = daemon.usage("vgpu0")
                print(f"vgpu0 while the VM runs: {usage}")
                assert usage.get("vm_clients", usage["clients"]) >= 1 and usage["clients"] >= 1, \
                    f"vgpu0 counts no tenant for the VM: {usage}"
                assert usage["resources"] >= 1 and usage["vram"] > 0, \
                    f"vgpu0 holds no VRAM for the guest's framebuffer: {usage}"

            t = boot(work, guest, sock, backend, backend_log, tenant, mode=mode)
            if backend is not None:
                backend_ended(backend, backend_log)
            usage = daemon.wait_idle("vgpu0")
            print(f"vgpu0 after the VM: {usage}")
            assert usage.get("vm_clients", 0) == 0 and usage["vram"] == 0 and \
                usage["resources"] == 0, f"vgpu0 still holds something after the VM: {usage}"
            daemon.stop()
            daemon = None
        report(args.backend, t)
    finally:
        kill_group(backend)
        end_test(daemon, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
