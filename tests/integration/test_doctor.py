#!/usr/bin/env python3
"""`vgpuctl doctor` against fixture trees (tests/fixtures/doctor/CASE, read
with --root) and on this machine.

1. Each fixture gives exactly the statuses listed below, in the order of
   the checks; the counts and the exit status (1 with a FAIL, else 0)
   agree; every check says what it found and, unless PASS, a fix.
2. The garbage tree (truncated, binary and out-of-range files, a dangling
   driver link, a directory where a render node should be) once more with
   FIFOs in place of two /proc files: nothing blocks, nothing crashes.
3. The human output: one line per check, then the counts.
4. This machine (--root /): the JSON parses, has every check, and the exit
   status follows its FAILs.
5. Usage: --root with another command, a --root that is no directory and an
   operand are usage errors (exit 2)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

VGPUCTL = os.environ.get("VGPUCTL", "vgpuctl")
SRC = os.environ.get("VGPU_SOURCE_DIR",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(SRC, "tests", "fixtures", "doctor")

CHECKS = ["render-node", "mesa", "virglrenderer", "kvm", "qemu", "userns", "seccomp",
          "cgroup", "iommu", "vfio", "gpu-partitioning", "hugepages", "gpu-irq-affinity",
          "libvirt-descriptor"]

EXPECTED = {
    # A GPU VM host with everything in place.
    "gpu-host": dict.fromkeys(CHECKS, "PASS"),
    # A GPU (with mediated-device types) whose interrupts all sit on CPU 0
    # of 8; nothing else in the tree.
    "gpu-irq-cpu0": {
        "render-node": "PASS", "mesa": "WARN", "virglrenderer": "WARN", "kvm": "WARN",
        "qemu": "WARN", "userns": "WARN", "seccomp": "FAIL", "cgroup": "WARN", "iommu": "WARN",
        "vfio": "WARN", "gpu-partitioning": "PASS", "hugepages": "WARN",
        "gpu-irq-affinity": "WARN", "libvirt-descriptor": "WARN"},
    # Debian 12 without a GPU: llvmpipe, QEMU 7.2 and no KVM, hybrid
    # cgroups, a stale descriptor whose binary is gone.
    "llvmpipe-host": {
        "render-node": "WARN", "mesa": "PASS", "virglrenderer": "PASS", "kvm": "WARN",
        "qemu": "FAIL", "userns": "WARN", "seccomp": "PASS", "cgroup": "WARN", "iommu": "WARN",
        "vfio": "WARN", "gpu-partitioning": "WARN", "hugepages": "WARN",
        "gpu-irq-affinity": "PASS", "libvirt-descriptor": "FAIL"},
    # Truncated and odd files everywhere.
    "garbage": {
        "render-node": "PASS", "mesa": "FAIL", "virglrenderer": "FAIL", "kvm": "PASS",
        "qemu": "FAIL", "userns": "WARN", "seccomp": "WARN", "cgroup": "WARN", "iommu": "WARN",
        "vfio": "WARN", "gpu-partitioning": "WARN", "hugepages": "WARN",
        "gpu-irq-affinity": "PASS", "libvirt-descriptor": "FAIL"},
}

# A finding each case must report (the reason behind a status, not only
# the status).
FOUND = {
    "gpu-host": {"render-node": "renderD128 (amdgpu)", "gpu-partitioning": "SR-IOV (16 VFs)",
                 "hugepages": "1024 x 2048kB", "qemu": "10.0.2",
                 "gpu-irq-affinity": "irq 120 -> CPUs 0-15"},
    "gpu-irq-cpu0": {"gpu-irq-affinity": "irq 140 -> CPUs 0 (i915; 8 CPUs)",
                     "gpu-partitioning": "mdev (1 type)"},
    "llvmpipe-host": {"render-node": "llvmpipe", "qemu": "7.2", "cgroup": "hybrid",
                      "libvirt-descriptor": "does not exist"},
    "garbage": {"mesa": "not understood", "userns": "not a count",
                "seccomp": "without kill_process", "libvirt-descriptor": "not valid JSON"},
}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def doctor(*args, timeout=60):
    return subprocess.run([VGPUCTL, "doctor", *args], capture_output=True, text=True,
                          timeout=timeout, errors="replace")


def check_report(case, p, expected):
    check(p.returncode in (0, 1), f"{case}: exit status {p.returncode}: {p.stderr}")
    try:
        rep = json.loads(p.stdout)
    except ValueError as e:
        check(False, f"{case}: --json output does not parse: {e}")
        return None
    names = [c["name"] for c in rep["checks"]]
    check(names == CHECKS, f"{case}: checks {names}")
    counts = {s: sum(c["status"] == s for c in rep["checks"]) for s in ("PASS", "WARN", "FAIL")}
    check((rep["pass"], rep["warn"], rep["fail"]) ==
          (counts["PASS"], counts["WARN"], counts["FAIL"]), f"{case}: counts {rep}")
    check(p.returncode == (1 if counts["FAIL"] else 0),
          f"{case}: exit status {p.returncode} with {counts['FAIL']} FAIL")
    for c in rep["checks"]:
        check(c["status"] in ("PASS", "WARN", "FAIL"), f"{case}: {c}")
        check(isinstance(c["found"], str) and c["found"], f"{case}: {c['name']}: no finding")
        if c["status"] == "PASS":
            check(c["fix"] is None, f"{case}: {c['name']}: a fix on PASS")
        else:
            check(isinstance(c["fix"], str) and c["fix"], f"{case}: {c['name']}: no fix")
    if expected is not None:
        got = {c["name"]: c["status"] for c in rep["checks"]}
        for name in CHECKS:
            check(got.get(name) == expected[name],
                  f"{case}: {name} is {got.get(name)}, expected {expected[name]}: "
                  + next((c["found"] for c in rep["checks"] if c["name"] == name), ""))
    return rep


def main():
    # 1. fixtures
    for case, expected in EXPECTED.items():
        p = doctor("--root", os.path.join(FIXTURES, case), "--json")
        rep = check_report(case, p, expected)
        if rep:
            found = {c["name"]: c["found"] for c in rep["checks"]}
            for name, text in FOUND.get(case, {}).items():
                check(text in found[name], f"{case}: {name}: {text!r} not in {found[name]!r}")
        print(f"{case}: " + " ".join(f"{c['name']}={c['status']}" for c in rep["checks"])
              if rep else f"{case}: no report")

    # 2. garbage with FIFOs that no one writes
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "garbage")
        shutil.copytree(os.path.join(FIXTURES, "garbage"), tree, symlinks=True)
        for rel in ("proc/meminfo", "proc/cmdline"):
            path = os.path.join(tree, rel)
            if os.path.exists(path):
                os.unlink(path)
            os.mkfifo(path)
        try:
            p = doctor("--root", tree, "--json", timeout=20)
            check_report("garbage+fifo", p, EXPECTED["garbage"])
        except subprocess.TimeoutExpired:
            check(False, "garbage+fifo: doctor blocked on a FIFO")

    # 3. human output
    p = doctor("--root", os.path.join(FIXTURES, "llvmpipe-host"))
    lines = p.stdout.splitlines()
    check(p.returncode == 1, f"human: exit status {p.returncode}")
    check(len(lines) == len(CHECKS) + 1, f"human: {len(lines)} lines")
    for line, name in zip(lines, CHECKS):
        status = EXPECTED["llvmpipe-host"][name]
        check(line.split()[:2] == [status, name], f"human: {line!r}")
        check(("; fix: " in line) == (status != "PASS"), f"human: fix on {line!r}")
    check(lines and lines[-1].startswith("4 pass, 8 warn, 2 fail"), f"human: {lines[-1:]}")

    # 4. this machine
    p = doctor("--json")
    rep = check_report("this machine", p, None)
    if rep:
        for c in rep["checks"]:
            print(f"this machine: {c['status']} {c['name']}: {c['found']}")

    # 5. usage
    p = subprocess.run([VGPUCTL, "list", "--root", "/"], capture_output=True, text=True)
    check(p.returncode == 2 and "--root" in p.stderr, f"list --root: {p.returncode} {p.stderr}")
    p = doctor("--root", "/nonexistent/doctor-root")
    check(p.returncode == 2 and "not a directory" in p.stderr, f"bad root: {p.returncode}")
    p = doctor("extra")
    check(p.returncode == 2, f"operand: {p.returncode}")

    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all doctor checks behave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
