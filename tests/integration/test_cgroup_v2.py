#!/usr/bin/env python3
"""vgpud's cgroup v2 path, run for real in a guest: this host binds the cpu
controller to cgroup v1, so v2 cannot have it here (test_cgroup.py covers
v1).  One boot of scripts/vm-guest.sh's kernel under QEMU (TCG) with an
/init of this test's own, appended to that guest's initramfs: it mounts
the host's / read-only over 9p (the built vgpud, Python and Mesa come from
it) with cgroup2 at /sys/fs/cgroup, where no v1 hierarchy holds the cpu
controller, and runs cgroup_v2_guest.py there.  That script delegates a
cgroup to vgpud the way systemd's Delegate=yes does, starts vgpud in it
with an equal-share and a fixed-share (weight 300) instance, connects a
vtest tenant to each (renderer null: real workers that take submissions
but start no llvmpipe, which under TCG would take most of the test's
time) and prints what it saw; this side checks:
  - vgpud's start-up line names cgroup v2 at <delegated>/instances, and
    vgpud moved itself into <delegated>/daemon;
  - cpu.weight and cpu.max of each instance's group as cgroup.h maps the
    profile: equal 100 and "max 1000000", fixed 300 and a ceiling of
    300 / (100 + 300) x CPUs per 1 s period, with as much again of burst
    (cpu.max.burst; 0 without a ceiling);
  - each worker runs under its own uid in a cgroup of its own (w<N>, root's)
    directly under its instance's group, with memory.max its host-memory
    cap (2G by default) where the memory controller is delegated too;
  - fx's worker uid can neither write its group's cpu.weight or cpu.max,
    move itself (into its instance's group, the delegated one or the
    root), nor make a cgroup;
  - `vgpuctl set fx weight=50` rewrites fx's cpu.weight and ceiling at once;
  - the workers' cgroups go when their tenants leave, and the whole tree
    when vgpud stops (only daemon, where vgpud itself still is, stays).
Skips (77) when QEMU or its virtio-9p-pci device is missing, or the guest
reports that its kernel has no cgroup2 (or no cpu controller in it) or
its root (the host's) no /usr/bin/python3.  A missing guest kernel
or busybox is not a skip: as in the other real-guest tests it fails."""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import harness as h
from test_vm_boot_2d import guest_dir
from vmlib import end_test, kill_group, tail, wait_serial

QEMU = os.environ.get("VGPU_QEMU", "qemu-system-x86_64")
MEM = "1G"
# A bound, not the usual time: 25-40 s on a quiet 2-core host, 3-5 times
# that while other builds and tests load it.
TIMEOUT = float(os.environ.get("VGPU_VM_BOOT_TIMEOUT", "240"))
GUEST_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cgroup_v2_guest.py")
PERIOD = 1000000

# The guest's /init: the initramfs's busybox and 9p modules, the host's /
# at /mnt, cgroup2 there, the parameters (/params.json) in its /run, then
# the guest script in a chroot.  Its last
# line is always "vgpu-cg: END ...", then it powers the VM off.
INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "vgpu-cg: $*"; }
end() { say "END $*"; poweroff -f; sleep 60; }
script=
for arg in $(cat /proc/cmdline); do
  case "$arg" in vgpucg.script=*) script=${arg#vgpucg.script=} ;; esac
done
say "init uptime=$(cut -d' ' -f1 /proc/uptime)"
for ko in $(cat /lib/modules/order); do
  insmod "/lib/modules/$ko" 2>/dev/null
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro,cache=loose rootfs /mnt ||
  end "FAILED: cannot mount the 9p root"
for fs in proc:proc sysfs:sys devtmpfs:dev tmpfs:run tmpfs:tmp; do
  mount -t "${fs%%:*}" "${fs%%:*}" "/mnt/${fs#*:}" || end "FAILED: cannot mount /mnt/${fs#*:}"
done
grep -qw cgroup2 /proc/filesystems || end "SKIP the guest kernel has no cgroup2 file system"
mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup || end "FAILED: cannot mount cgroup2"
[ -x /mnt/usr/bin/python3 ] || end "SKIP the guest's root (the host's /) has no /usr/bin/python3"
cat /params.json >/mnt/run/vgpucg-params.json || end "FAILED: cannot copy the parameters"
say "root ready uptime=$(cut -d' ' -f1 /proc/uptime)"
chroot /mnt /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
  /usr/bin/python3 -u "$script" /run/vgpucg-params.json 2>&1
end "rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
"""


def cpio_newc(entries):
    """An uncompressed newc archive of (name, mode, data), trailer included."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(list(entries) + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def make_initrd(guest, path, params):
    """The guest's initramfs with this test's /init and /params.json laid
    over it (the kernel unpacks archives one after the other; a later file
    wins)."""
    with open(os.path.join(guest, "initrd.gz"), "rb") as f:
        base = f.read()
    base += b"\0" * (-len(base) % 4)
    extra = gzip.compress(cpio_newc([("init", 0o100755, INIT.encode()),
                                     ("params.json", 0o100644, params)]))
    with open(path, "wb") as f:
        f.write(base + extra)


def quota(weight, total, ncpu):
    return max(weight * ncpu * PERIOD // total, 1000)


def check(facts):
    """Asserts what the guest saw; returns lines for the report."""
    assert "error" not in facts, f"the guest script failed:\n{facts['error']}"
    svc = "/vgpud.service"
    tree = "/sys/fs/cgroup" + svc + "/instances"
    assert "cpu" in facts["service_controllers"], facts["service_controllers"]
    assert facts["startup"] == {"version": "2", "path": tree, "off": None}, \
        f"vgpud's start-up line says {facts['startup']}, not cgroup v2 at {tree}"
    assert facts["vgpud_cgroup"] == svc + "/daemon", \
        f"vgpud runs in {facts['vgpud_cgroup']}, not {svc}/daemon"
    assert "cpu" in facts["service_subtree"], facts["service_subtree"]
    n = facts["ncpu"]
    want = {"eq": {"cpu.weight": "100", "cpu.max": f"max {PERIOD}", "cpu.max.burst": "0"},
            "fx": {"cpu.weight": "300", "cpu.max": f"{quota(300, 400, n)} {PERIOD}",
                   "cpu.max.burst": str(quota(300, 400, n))}}
    assert facts["groups"] == want, f"the groups hold {facts['groups']}, not {want}"
    uids = set()
    for inst, w in facts["workers"].items():
        assert re.fullmatch(re.escape(f"{svc}/instances/{inst}/") + r"w\d+", w["cgroup"] or ""), \
            f"{inst}'s worker {w['pid']} is in {w['cgroup']}, not a w<N> under {inst}'s group"
        assert w["in_procs"], f"{inst}: the worker is not in its cgroup's cgroup.procs: {w}"
        assert w["leaf_owner"] == 0, f"{inst}: the worker's cgroup belongs to uid {w['leaf_owner']}"
        assert w["uid"] not in (0, None), f"{inst}: the worker runs as uid {w['uid']}"
        assert w["parent_weight"] == want[inst]["cpu.weight"], (inst, w)
        if "memory" in facts["service_controllers"]:  # the host-memory cap, default 2G
            assert w["memory.max"] == str(2 << 30), \
                f"{inst}: the worker's cgroup has memory.max {w['memory.max']}, not 2G"
        uids.add(w["uid"])
    assert len(uids) == 2, f"the two workers share a uid: {facts['workers']}"
    assert facts["worker_may"] == [], f"fx's worker uid may {facts['worker_may']}"
    assert facts["set"]["rc"] == 0, f"vgpuctl set fx weight=50 failed: {facts['set']['out']}"
    after = {"eq": want["eq"],
             "fx": {"cpu.weight": "50", "cpu.max": f"{quota(50, 150, n)} {PERIOD}",
                    "cpu.max.burst": str(quota(50, 150, n))}}
    assert facts["groups_after_set"] == after, \
        f"after vgpuctl set the groups hold {facts['groups_after_set']}, not {after}"
    assert not facts["leaves_left"], f"workers' cgroups left after their tenants: {facts['leaves_left']}"
    assert facts["instance_groups_left"] == ["eq", "fx"], \
        f"{tree} holds {facts['instance_groups_left']} once the tenants left, not eq and fx"
    # vgpud itself is still in daemon until it exits; nothing else is left.
    assert facts["service_left"] == ["daemon"], \
        f"{svc} holds {facts['service_left']} after vgpud stopped, not only daemon"
    return [f"groups at start: {facts['groups']}",
            "fx's worker uid: cannot write weights or ceilings, move, or make cgroups",
            f"workers: " + ", ".join(f"{i} pid {w['pid']} uid {w['uid']} in {w['cgroup']} "
                                     f"(memory.max {w['memory.max']})"
                                     for i, w in facts["workers"].items()),
            f"after vgpuctl set fx weight=50: {facts['groups_after_set']}",
            f"left in {svc} after vgpud stopped: {facts['service_left']}"]


def main():
    if not shutil.which(QEMU):
        h.skip(f"{QEMU} is not installed (make deps installs it)")
    devs = subprocess.run([QEMU, "-device", "help"], capture_output=True, text=True, timeout=60)
    if "virtio-9p-pci" not in devs.stdout + devs.stderr:
        h.skip(f"{QEMU} has no virtio-9p-pci device (the guest's root)")
    guest = guest_dir()
    kernel = os.path.join(guest, "vmlinux")
    if not os.path.exists(kernel):
        kernel = os.path.join(guest, "vmlinuz")
    work = tempfile.mkdtemp(prefix="vgpu-cgv2-")
    os.chmod(work, 0o755)
    qemu = None
    try:
        keep = ("VGPUD", "VGPUCTL", "VGPU_WORKER", "VGPU_SOURCE_DIR", "ASAN_OPTIONS",
                "LSAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONDONTWRITEBYTECODE")
        env = {k: os.path.abspath(os.environ[k]) if k in ("VGPUD", "VGPUCTL", "VGPU_WORKER",
                                                           "VGPU_SOURCE_DIR") else os.environ[k]
               for k in keep if os.environ.get(k)}
        initrd = os.path.join(work, "initrd.gz")
        make_initrd(guest, initrd, json.dumps({"env": env}).encode())
        serial = os.path.join(work, "serial.log")
        qemu_log_path = os.path.join(work, "qemu.log")
        argv = [QEMU, "-accel", os.environ.get("VGPU_VM_ACCEL", "tcg"), "-smp", "1", "-m", MEM,
                "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none",
                "-no-reboot", "-serial", f"file:{serial}",
                "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
                "-device", "virtio-9p-pci,fsdev=root,mount_tag=rootfs",
                "-kernel", kernel, "-initrd", initrd,
                "-append", f"console=ttyS0 panic=-1 quiet vgpucg.script={GUEST_PY}"]

        def context():
            return f"\n--- serial\n{tail(serial, 80)}--- qemu\n{tail(qemu_log_path)}"

        with open(qemu_log_path, "w") as qemu_log:
            t0 = time.monotonic()
            qemu = subprocess.Popen(argv, stdout=qemu_log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

        def gone():
            return f"QEMU exited with {qemu.returncode}" if qemu.poll() is not None else None

        wait_serial(serial, ("vgpu-cg: init",), t0 + TIMEOUT, gone, context, "the guest's /init")
        t_init = time.monotonic() - t0
        print(f"the guest's /init runs {t_init:.1f} s after QEMU started", flush=True)
        text = wait_serial(serial, ("vgpu-cg: END",), t0 + TIMEOUT,
                           lambda: None if "vgpu-cg: END" in (tail(serial, 5) or "") else gone(),
                           context, "the guest's verdict")
        wall = time.monotonic() - t0
        lines = [l[len("vgpu-cg: "):] for l in text.splitlines() if l.startswith("vgpu-cg: ")]
        print("\n".join(l for l in lines if not l.startswith("facts ") and "] facts " not in l))
        end = next(l for l in lines if l.startswith("END "))
        for l in lines:
            if re.match(r"(\[[ \d.]+\] )?SKIP |END SKIP ", l):
                h.skip("in the guest: " + l.split("SKIP ", 1)[1])
        facts_line = next((l for l in lines if re.match(r"(\[[ \d.]+\] )?facts ", l)), None)
        assert facts_line, f"the guest printed no facts ({end})" + context()
        facts = json.loads(facts_line.split("facts ", 1)[1])
        try:
            report = check(facts)
        except AssertionError as e:
            raise AssertionError(f"{e}{context()}") from None
        assert end.startswith("END rc=0 "), f"the guest script ended with {end}" + context()
        print("\n".join(report))
        print(f"cgroup v2 in a guest: /init ran {t_init:.1f} s after QEMU started, the guest "
              f"ended at {wall:.1f} s")
    finally:
        kill_group(qemu)
        end_test(None, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
