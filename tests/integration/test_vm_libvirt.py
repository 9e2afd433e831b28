#!/usr/bin/env python3
"""libvirt starts a TCG domain whose primary video is a vhost-user GPU, finds
vgpu-vhost-gpu through a JSON descriptor, and the guest's framebuffer shows
in `virsh screenshot` with every pixel right while vgpud counts the VM as a
tenant of the instance the back-end landed on; after `virsh destroy` that
instance holds nothing.

The domain is docs/examples/vgpu-domain.xml with this test's name, guest
(scripts/vm-guest.sh), emulator and a serial console in a file; --accel3d
keeps its <acceleration accel3d='yes'/> (a host without a render node:
libvirt passes --virgl and no node), else it is removed.

What runs, all started here and always stopped at the end:
  vgpud       as root on a private runtime directory, with [daemon]
              admin-group=libvirt-qemu: libvirt runs QEMU and its
              back-ends as the libvirt-qemu user and group, and attach-vm
              is an admin command
  virtlogd, libvirtd
              by hand (no systemd needed), as root, in a mount namespace of
              their own (unshare) in which private directories of this test
              are bound over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
              /var/log/libvirt, /var/cache/libvirt and
              /usr/share/qemu/vhost-user: the host's libvirt configuration,
              domains and daemons are neither seen nor touched.  virsh
              reaches this libvirtd through its socket's real path.  Where
              the host has no /run/libvirt (or one of the others) an empty
              one is made as the mount point and removed at the end.
  the descriptor
              40-vgpu-vhost-gpu.json in the private /usr/share/qemu/vhost-user
              beside copies of the host's descriptors (so ours wins by
              sorting first, as the installed one does), pointing at a
              two-line wrapper that runs this build's vgpu-vhost-gpu with
              --runtime-dir of this test's vgpud and --instance vgpu0
              (libvirt passes a back-end no environment and no options of
              ours).

Checks, first with no vgpud: `virsh start` fails and the domain stays shut
off, and the back-end started as libvirt starts it (streams on /dev/null)
exits 1 with its reason in syslog.  Then: libvirt ran our program (the back-end's pidfile names a process
whose executable is this build's vgpu-vhost-gpu, and `vgpuctl --json show`
lists a tenant of kind vm on vgpu0); the guest's virtio_gpu driver binds
and its pattern is in a screenshot (polled to a deadline, each compared
whole by tests/vm/fbpattern); after `virsh destroy` the back-end is gone,
vgpu0 has no tenant and holds no VRAM or resource.  Prints the time from
`virsh start` to the first matching screenshot.  VGPU_VM_KEEP=1 keeps the
work directory.

Skips (77) only when libvirt (libvirtd, virtlogd, virsh, its QEMU driver
and its libvirt-qemu user), QEMU 10 or unshare is not installed, when not
root (the system libvirtd is root's), or while vgpu-vhost-gpu is not
built."""
import argparse
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from xml.etree import ElementTree as ET

import harness as h
import test_vm_boot_2d as vm
import vmlib

QEMU_USER = "libvirt-qemu"
GUEST_CMDLINE = "console=ttyS0 panic=-1 vt.global_cursor_default=0 vgpu.mode=2d"
# Bound over in libvirtd's mount namespace, each to a private directory.
PRIVATE = ["/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt",
           "/var/cache/libvirt", "/usr/share/qemu/vhost-user"]
DESCRIPTOR_DIR = "/usr/share/qemu/vhost-user"
DESCRIPTOR_IN = os.path.join(h.SOURCE_DIR, "dist", "vgpu-vhost-gpu.json.in")
EXAMPLE = os.path.join(h.SOURCE_DIR, "docs", "examples", "vgpu-domain.xml")

CONFIG = """
[daemon]
admin-group=libvirt-qemu
""" + h.DEFAULT_CONFIG

QEMU_CONF = f"""# This test's libvirtd only.
user = "{QEMU_USER}"
group = "{QEMU_USER}"
# Nothing relabelled or chowned (the cached guest is world-readable), no
# cgroup made: the host is left as it was.
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
"""


def png_to_ppm(png, ppm):
    """Converts an 8-bit RGB or RGBA PNG (what QEMU's screendump writes) to
    a binary PPM for fbpattern."""
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, hgt, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, \
                f"{png}: depth {depth}, colour type {ctype}, interlace {interlace} not handled"
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    out = bytearray()
    for y in range(hgt):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            else:
                assert f == 0, f"{png}: filter {f} on row {y}"
        prev = line
        if bpp == 3:
            out += line
        else:
            for i in range(0, stride, 4):
                out += line[i:i + 3]
    with open(ppm, "wb") as o:
        o.write(b"P6\n%d %d\n255\n" % (w, hgt) + bytes(out))


def check_libvirt():
    for prog in ("libvirtd", "virtlogd", "virsh"):
        if not shutil.which(prog):
            h.skip(f"{prog} is not installed (make deps installs libvirt 11 from backports)")
    if not glob.glob("/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"):
        h.skip("libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu; make deps)")
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        h.skip(f"no {QEMU_USER} user (libvirt's packages make it; make deps)")
    if not shutil.which("unshare"):
        h.skip("unshare is not installed")
    if os.geteuid() != 0:
        h.skip("the system libvirtd and its QEMU user need root")


class Libvirt:
    """virtlogd and libvirtd in a mount namespace of their own, over this
    test's private directories."""

    def __init__(self, work, wrapper):
        self.root = os.path.join(work, "libvirt")
        self.made = []  # mount points made on the host, removed at the end
        self.proc = None
        try:
            self._start(work, wrapper)
        except BaseException:
            self.stop()  # nothing left running or made when start fails
            raise

    def _start(self, work, wrapper):
        binds = []
        for path in PRIVATE:
            priv = os.path.join(self.root, path.strip("/").replace("/", "-"))
            os.makedirs(priv)
            os.chmod(priv, 0o755)
            if not os.path.isdir(path):
                os.makedirs(path, 0o755)
                self.made.append(path)
            binds.append((priv, path))
        self.dirs = dict((p, d) for d, p in binds)
        etc = self.dirs["/etc/libvirt"]
        os.makedirs(os.path.join(etc, "qemu"))
        for name in ("libvirtd.conf", "virtlogd.conf"):
            open(os.path.join(etc, name), "w").close()
        with open(os.path.join(etc, "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        # The host's descriptors (QEMU's reference among them), then ours,
        # which sorts first.
        desc = self.dirs[DESCRIPTOR_DIR]
        for f in glob.glob(os.path.join(DESCRIPTOR_DIR, "*.json")):
            shutil.copy(f, desc)
        # vgpu's own descriptor, as make install writes it, but for the
        # binary.
        with open(DESCRIPTOR_IN) as f:
            text = f.read()
        assert "@LIBEXECDIR@/vgpu-vhost-gpu" in text, f"{DESCRIPTOR_IN} names no binary"
        text = text.replace("@LIBEXECDIR@/vgpu-vhost-gpu", wrapper)
        assert json.loads(text)["binary"] == wrapper and json.loads(text)["type"] == "gpu"
        self.descriptor = os.path.join(desc, "40-vgpu-vhost-gpu.json")
        with open(self.descriptor, "w") as f:
            f.write(text)
        self.log_path = os.path.join(work, "libvirtd.log")
        mounts = "".join(f"mount --bind '{d}' '{p}' && " for d, p in binds)
        script = (f"mount --make-rprivate / && {mounts}"
                  "{ virtlogd & } && exec libvirtd")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", script], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        self.sock = os.path.join(self.dirs["/run/libvirt"], "libvirt-sock")
        self.uri = f"qemu:///system?socket={self.sock}"

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"libvirtd exited with {self.proc.returncode}:\n"
                                     f"{vm.tail(self.log_path)}")
            return h.accepts(self.sock) and \
                self.virsh("version", check=False).returncode == 0
        h.wait_for(up, 120, "libvirtd's socket")

    def virsh(self, *args, check=True, timeout=120):
        r = subprocess.run(["virsh", "-q", "-c", self.uri] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"virsh {' '.join(args)}: {r.stdout}{r.stderr}" + self.context()
        return r

    def qemu_log(self, name):
        return vm.tail(os.path.join(self.dirs["/var/log/libvirt"], "qemu", f"{name}.log"))

    def context(self, name=None):
        return (f"\n--- libvirtd\n{vm.tail(self.log_path)}"
                + (f"--- qemu (libvirt's log)\n{self.qemu_log(name)}" if name else ""))

    def stop(self):
        """Ends libvirtd and virtlogd (the whole process group; QEMU and the
        back-end are gone with the domain), then removes the mount points
        made on the host."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            vm.kill_group(self.proc)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # virtlogd
            except ProcessLookupError:
                pass
        for path in reversed(self.made):
            try:
                os.rmdir(path)
            except OSError as e:
                print(f"could not remove {path}, made as a mount point: {e}")


def domain_xml(name, guest, serial, accel3d):
    """docs/examples/vgpu-domain.xml, the example the README points at, with
    this test's name, guest, emulator and a serial console in a file, and
    without <acceleration> unless accel3d."""
    tree = ET.parse(EXAMPLE)
    dom = tree.getroot()
    kernel = os.path.join(guest, "vmlinux")
    if not os.path.exists(kernel):
        kernel = os.path.join(guest, "vmlinuz")
    dom.find("name").text = name
    dom.find("os/kernel").text = kernel
    dom.find("os/initrd").text = os.path.join(guest, "initrd.gz")
    dom.find("os/cmdline").text = GUEST_CMDLINE
    devices = dom.find("devices")
    devices.find("emulator").text = shutil.which(vm.QEMU)
    ser = devices.find("serial")
    ser.set("type", "file")
    ET.SubElement(ser, "source", path=serial)
    model = devices.find("video/model")
    assert devices.find("video/driver").get("name") == "vhostuser", "the example's video is not vhostuser"
    acc = model.find("acceleration")
    assert acc is not None and acc.get("accel3d") == "yes", "the example has no accel3d='yes'"
    if not accel3d:
        model.remove(acc)
    return ET.tostring(dom, encoding="unicode")


def unseen_reason_in_syslog(exe, work):
    """Started as libvirt starts it (standard streams on /dev/null, --fd of a
    connected socket) with no vgpud, the back-end exits 1 and its one line
    goes to syslog: in a mount namespace with a tmpfs /dev whose /dev/log is
    this test's datagram socket."""
    log_sock = os.path.join(work, "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(log_sock)
    ours, theirs = socket.socketpair()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        script = ("mount --make-rprivate / && mount -t tmpfs none /dev && touch /dev/log && "
                  f"mount --bind '{log_sock}' /dev/log && exec \"$@\"")
        p = subprocess.Popen(["unshare", "--mount", "sh", "-c", script, "sh", exe,
                              "--runtime-dir", os.path.join(work, "no-vgpud"),
                              f"--fd={theirs.fileno()}"],
                             stdin=null, stdout=null, stderr=null, pass_fds=(theirs.fileno(),))
        rc = p.wait(timeout=60)
        rx.settimeout(10)
        try:
            line = rx.recv(4096).decode(errors="replace")
        except socket.timeout:
            line = ""
    finally:
        os.close(null)
        ours.close()
        theirs.close()
        rx.close()
    print(f"vgpu-vhost-gpu with stderr on /dev/null and no vgpud: status {rc}, syslog: {line!r}")
    assert rc == 1, f"the back-end exited with {rc} without vgpud"
    assert "vgpu-vhost-gpu[" in line and "vgpud is not running" in line, \
        f"the back-end's reason is not in syslog: {line!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--accel3d", action="store_true",
                    help="<acceleration accel3d='yes'/>: libvirt starts the back-end with --virgl")
    args = ap.parse_args()
    check_libvirt()
    vm.check_qemu()
    exe = os.environ.get("VGPU_VHOST_GPU", "")
    if not exe or not os.access(exe, os.X_OK):
        h.skip("vgpud's VM path (vgpu-vhost-gpu) is not built in this tree")
    if os.environ.get("VGPU_HAVE_VIRGL") == "0":
        h.skip("vgpu was built without virglrenderer (-Dvirgl=disabled): no worker renders")
    exe = os.path.realpath(exe)
    guest = vm.guest_dir()
    qu = pwd.getpwnam(QEMU_USER)
    work = tempfile.mkdtemp(prefix="vgpu-libvirt-")
    os.chmod(work, 0o755)
    # QEMU (libvirt-qemu) writes the serial console here.
    qdir = os.path.join(work, "qemu")
    os.mkdir(qdir)
    os.chown(qdir, qu.pw_uid, qu.pw_gid)
    serial = os.path.join(qdir, "serial.log")
    name = f"vgpu-test-{os.getpid()}"
    daemon = lv = None
    defined = False
    try:
        unseen_reason_in_syslog(exe, work)
        # The wrapper names vgpud's runtime directory through a link made
        # once vgpud runs.
        run_link = os.path.join(work, "vgpud")
        wrapper = os.path.join(work, "vgpu-vhost-gpu")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec '{exe}' --runtime-dir '{run_link}' --instance vgpu0 \"$@\"\n")
        os.chmod(wrapper, 0o755)
        lv = Libvirt(work, wrapper)
        print(lv.virsh("version").stdout.strip())
        xml_path = os.path.join(work, "domain.xml")
        with open(xml_path, "w") as f:
            f.write(domain_xml(name, guest, serial, args.accel3d))
        lv.virsh("define", xml_path)
        defined = True

        # No vgpud yet: the back-end says so and exits 1, and libvirt does
        # not start the domain.
        r = lv.virsh("start", name, check=False)
        said = r.stdout + r.stderr
        print(f"virsh start without vgpud: status {r.returncode}: {said.strip()}")
        assert r.returncode != 0, "the domain started without vgpud" + lv.context(name)
        st = lv.virsh("domstate", name).stdout.strip()
        assert st == "shut off", f"the domain is {st!r} after a failed start" + lv.context(name)
        # libvirt reads nothing the back-end prints (its stderr is
        # /dev/null; see unseen_reason_in_syslog); QEMU names the device.
        assert "vhost-user" in said + lv.qemu_log(name), \
            "neither virsh nor libvirt's log names the vhost-user device" + lv.context(name)

        daemon = h.Daemon(CONFIG)
        os.symlink(daemon.dir, run_link)
        t0 = time.monotonic()
        lv.virsh("start", name)
        t_started = time.monotonic() - t0
        deadline = t0 + vm.BOOT_TIMEOUT

        def context():
            return (f"\n--- serial\n{vm.tail(serial)}" + lv.context(name)
                    + f"--- vgpud\n{daemon.log_text()[-3000:]}")

        # libvirt ran our program: its pidfile names this build's binary.
        pidfiles = glob.glob(os.path.join(lv.dirs["/run/libvirt"], "qemu", "*vhost-user-gpu.pid"))
        assert len(pidfiles) == 1, f"libvirt wrote no back-end pidfile: {pidfiles}" + context()
        with open(pidfiles[0]) as f:
            backend_pid = int(f.read().strip())
        backend_exe = os.readlink(f"/proc/{backend_pid}/exe")
        assert backend_exe == exe, f"libvirt's back-end is {backend_exe}, not {exe}" + context()
        with open(f"/proc/{backend_pid}/cmdline", "rb") as f:
            backend_argv = [a.decode() for a in f.read().split(b"\0") if a]
        print(f"libvirt started {backend_exe} (pid {backend_pid}) "
              f"as uid {os.stat(f'/proc/{backend_pid}').st_uid}: {' '.join(backend_argv)}")
        assert ("--virgl" in backend_argv) == args.accel3d, \
            f"accel3d={args.accel3d} but the back-end's arguments are {backend_argv}" + context()
        assert not any(a.startswith("--render-node") for a in backend_argv), \
            f"libvirt gave the back-end a render node: {backend_argv}" + context()
        qemu_cmd = lv.qemu_log(name)
        assert "vhost-user-vga" in qemu_cmd, "libvirt's QEMU has no vhost-user-vga" + context()

        def gone():
            st = lv.virsh("domstate", name, check=False).stdout.strip()
            return f"the domain is {st!r} during boot" if st != "running" else None

        text = vmlib.wait_serial(serial, ("vgpu-guest: FAILED", "pattern written"), deadline, gone,
                                 context, "the guest's pattern")
        t_pattern = time.monotonic() - t0
        print("\n".join(l for l in text.splitlines() if l.startswith("vgpu-guest:")))
        assert "vgpu-guest: FAILED" not in text, "the guest failed" + context()
        assert "card0 driver=virtio_gpu" in text, "virtio_gpu did not bind" + context()
        virgl = "+virgl" if args.accel3d else "-virgl"
        assert f"features: {virgl}" in text, f"the guest's device does not say {virgl}" + context()
        m = re.search(r"fbpattern: drew (\d+)x(\d+)", text)
        assert m, "the guest printed no geometry" + context()
        w, hgt = int(m.group(1)), int(m.group(2))

        # Screenshots until one matches (the framebuffer reaches the display
        # a little after the guest's write), each compared whole.
        t_shot = None

        def shoot(n):
            nonlocal t_shot
            png = os.path.join(work, f"shot{n}.png")
            ppm = png[:-4] + ".ppm"
            r = lv.virsh("screenshot", name, png, check=False)
            assert r.returncode == 0, f"virsh screenshot: {r.stdout}{r.stderr}" + context()
            t_shot = time.monotonic() - t0
            with open(png, "rb") as f:
                magic = f.read(2)
            if magic == b"P6":
                shutil.copy(png, ppm)
            else:
                png_to_ppm(png, ppm)
            c = subprocess.run([vm.FBPATTERN, "compare", str(w), str(hgt), ppm], capture_output=True,
                               text=True, timeout=60)
            return c.returncode == 0, c.stdout + c.stderr

        shots, last, _ = vmlib.until_shown(shoot, deadline, lambda: None, context,
                                           "screenshot showed the pattern")
        t_shown = t_shot  # when the matching one was taken, not compared
        print(last.strip().splitlines()[-1] + f" (virsh screenshot {shots}, {w}x{hgt})")

        # The VM is vgpu0's tenant, of kind vm, while it runs.
        r = subprocess.run([h.VGPUCTL, "--runtime-dir", daemon.dir, "--json", "show", "vgpu0"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"vgpuctl show: {r.stdout}{r.stderr}"
        inst = json.loads(r.stdout)
        inst = inst.get("instance", inst)
        vms = [t for t in inst.get("tenants", []) if t.get("kind") == "vm"]
        assert len(vms) == 1, f"vgpu0 does not show one VM tenant: {inst}" + context()
        usage = inst["usage"]
        print(f"vgpu0 while the domain runs: tenant {vms[0]}; usage {usage}")
        # The tenant is the domain's QEMU (libvirt's pid file names it), as
        # its user, not libvirtd, which made the socket pair.
        with open(os.path.join(lv.dirs["/run/libvirt"], "qemu", f"{name}.pid")) as f:
            qemu_pid = int(f.read().strip())
        qemu_uid = pwd.getpwnam(QEMU_USER).pw_uid
        t = vms[0]
        assert (t["client_pid"], t["client_uid"]) == (qemu_pid, qemu_uid) and \
            t.get("client_name", "").startswith("qemu"), \
            f"the VM tenant is not QEMU (pid {qemu_pid}, uid {qemu_uid}): {t}" + context()
        assert qemu_pid != lv.proc.pid and qemu_pid != backend_pid
        print(f"tenant: QEMU pid {qemu_pid} uid {qemu_uid} ({t['client_name']})")
        assert usage["clients"] >= 1 and usage["resources"] >= 1 and usage["vram"] > 0, \
            f"vgpu0 holds nothing for the guest: {usage}" + context()

        lv.virsh("destroy", name)
        h.wait_for(lambda: not os.path.exists(f"/proc/{backend_pid}"), 30,
                   "the back-end to end after virsh destroy")
        usage = daemon.wait_idle("vgpu0")
        print(f"vgpu0 after virsh destroy: {usage}")
        assert usage.get("vm_clients", 0) == 0 and usage["vram"] == 0 and \
            usage["resources"] == 0 and usage["clients"] == 0, \
            f"vgpu0 still holds something after the domain: {usage}" + context()
        lv.virsh("undefine", name)
        defined = False
        print(f"libvirt: virsh start took {t_started:.2f} s; from virsh start, the guest wrote its "
              f"pattern at {t_pattern:.2f} s and the first matching screenshot came at "
              f"{t_shown:.2f} s")
        lv.stop()
        lv = None
        daemon.stop()
        daemon = None
    finally:
        if lv is not None:
            if defined:
                lv.virsh("destroy", name, check=False)
            lv.stop()
        vmlib.end_test(daemon, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
