#!/usr/bin/python3
"""The guest half of test_cgroup_v2.py: runs as root inside the guest,
whose /init has mounted the host's / read-only over 9p with cgroup2 at
/sys/fs/cgroup, and prints what it saw on the serial console for the
host to judge.

Like systemd with Delegate=yes, it hands the cpu (and memory) controller
down from the root cgroup, makes /sys/fs/cgroup/vgpud.service marked
trusted.delegate and owned by vgpud's user (root), and starts the built
vgpud in it with two instances: `eq` (gpu-share=equal) and `fx`
(gpu-share=fixed, weight=300).  It then reads the groups vgpud wrote,
connects a vtest tenant to each instance (handshake, a resource, a
submission, a wait for it), notes each worker's cgroup, sets fx's weight
to 50 with vgpuctl, lets the tenants leave and stops vgpud.

Usage: cgroup_v2_guest.py PARAMS.json, where PARAMS holds "env" (VGPUD,
VGPUCTL, VGPU_WORKER, VGPU_SOURCE_DIR and the sanitizer options the host
test runs with).  Every line it prints starts with "vgpu-cg: "; the last
is "vgpu-cg: facts JSON", or "vgpu-cg: SKIP reason"."""
import json
import os
import re
import subprocess
import sys
import time
import traceback

with open(sys.argv[1]) as _f:
    os.environ.update(json.load(_f)["env"])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402  (after the environment is set)
import vtest_client as vc  # noqa: E402

CG = "/sys/fs/cgroup"
SERVICE = os.path.join(CG, "vgpud.service")
TREE = os.path.join(SERVICE, "instances")
INSTANCES = ("eq", "fx")

# renderer=null: the workers are real (spawned, isolated, placed in their
# cgroups, taking submissions) but draw nothing, so that no worker starts
# virglrenderer and llvmpipe under TCG, which takes tens of seconds on a
# loaded host; what is tested here is where the workers run.
CONFIG = """
[daemon]
log-level=info
renderer=null

[profile eq]
gpu-share=equal
max-clients=2
vram=64M

[profile fx]
gpu-share=fixed
weight=300
render-threads=1
max-clients=2
vram=64M

[instance eq]
profile=eq

[instance fx]
profile=fx
"""


T0 = time.monotonic()


def say(text):
    print(f"vgpu-cg: [{time.monotonic() - T0:5.1f}] {text}", flush=True)


def read(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read().strip()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def group(inst):
    """What vgpud wrote into an instance's group."""
    return {"cpu.weight": read(TREE, inst, "cpu.weight"), "cpu.max": read(TREE, inst, "cpu.max"),
            "cpu.max.burst": read(TREE, inst, "cpu.max.burst")}


def subdirs(path):
    """The cgroups directly below path."""
    return sorted(e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e)))


def cgroup_of(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def as_uid(uid, tries):
    """What of tries (name -> function) a process of uid may do: each runs
    in a child that dropped to uid; names of those that did not raise
    PermissionError are returned."""
    allowed = []
    for name, fn in tries.items():
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                try:
                    fn()
                    code = 1
                except PermissionError:
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            allowed.append(name)
    return allowed


def tenant(d, inst):
    """A vtest tenant on inst that has made its worker render: the
    handshake, a display-sized resource, a command submission and a wait
    until it is done.  Returns (client, backing fd, worker pid)."""
    c = vc.VtestClient(d.socket(inst), timeout=120)
    c.handshake(inst.encode())
    fd = c.create2(1, vc.TARGET_2D, vc.FORMAT_B8G8R8A8_UNORM,
                   vc.BIND_DISPLAY_TARGET | vc.BIND_RENDER_TARGET, 64, 64, 64 * 64 * 4)
    c.submit_cmd(())
    assert c.busy_wait(1, wait=True) == 0, f"{inst}: the submission stays busy"
    pid = h.wait_for(lambda: (lambda t: t[0]["worker_pid"] if t else None)(d.show(inst)["tenants"]),
                     30, f"a tenant on {inst}")
    return c, fd, pid


def run(facts):
    have = read(CG, "cgroup.controllers").split()
    facts["root_controllers"] = have
    if "cpu" not in have:
        say(f"SKIP the guest kernel's cgroup2 has no cpu controller (it has: {' '.join(have)})")
        sys.exit(0)
    # What systemd does for a unit with Delegate=yes: the controllers
    # handed down to the unit's cgroup, which is marked delegated and
    # belongs to the unit's user.
    write(os.path.join(CG, "cgroup.subtree_control"),
          " ".join("+" + c for c in ("cpu", "memory") if c in have))
    os.mkdir(SERVICE, 0o755)
    os.chown(SERVICE, 0, 0)
    os.setxattr(SERVICE, "trusted.delegate", b"1")
    facts["service_controllers"] = read(SERVICE, "cgroup.controllers").split()

    t0 = time.monotonic()
    # Generous bounds: a TCG guest on a loaded host is many times slower.
    d = h.Daemon(CONFIG, cgroup=SERVICE, start_timeout=120)
    clients = []
    try:
        m = d.wait_log(r"scheduling: [^;]*; (cgroup v(\d) cpu at (\S+) \(|cgroup: off \((.*)\); "
                       r"llvmpipe)", timeout=90)
        facts["startup"] = {"version": m.group(2), "path": m.group(3), "off": m.group(4)}
        d.wait_log(r"vgpud \S+ ready: ", timeout=90)
        facts["vgpud_cgroup"] = cgroup_of(d.pid())
        facts["ncpu"] = len(os.sched_getaffinity(0))
        facts["groups"] = {i: group(i) for i in INSTANCES}
        facts["service_subtree"] = read(SERVICE, "cgroup.subtree_control").split()
        say(f"vgpud up in {time.monotonic() - t0:.1f} s: {facts['startup']}")

        facts["workers"] = {}
        for inst in INSTANCES:
            t1 = time.monotonic()
            c, fd, pid = tenant(d, inst)
            clients.append((c, fd))
            where = cgroup_of(pid)
            leaf = os.path.join(CG, where.lstrip("/"))
            facts["workers"][inst] = {
                "pid": pid, "uid": uid_of(pid), "cgroup": where,
                "in_procs": str(pid) in read(leaf, "cgroup.procs").split(),
                "leaf_owner": os.stat(leaf).st_uid,
                "parent_weight": read(os.path.dirname(leaf), "cpu.weight"),
                "memory.max": read(leaf, "memory.max") if os.path.exists(
                    os.path.join(leaf, "memory.max")) else None,
            }
            say(f"{inst}: worker {pid} in {where} after {time.monotonic() - t1:.1f} s")

        # A hijacked worker can neither raise its share nor leave its cgroup.
        w = facts["workers"]["fx"]
        leaf = os.path.join(CG, w["cgroup"].lstrip("/"))
        fx = os.path.join(TREE, "fx")
        facts["worker_may"] = as_uid(w["uid"], {
            "write fx's cpu.weight": lambda: write(os.path.join(fx, "cpu.weight"), "10000"),
            "write fx's cpu.max": lambda: write(os.path.join(fx, "cpu.max"), "max"),
            "move into fx's group": lambda: write(os.path.join(fx, "cgroup.procs"), str(w["pid"])),
            "move into the delegated cgroup": lambda: write(os.path.join(SERVICE, "cgroup.procs"),
                                                            str(w["pid"])),
            "move into the root cgroup": lambda: write(os.path.join(CG, "cgroup.procs"),
                                                       str(w["pid"])),
            "make a cgroup": lambda: os.mkdir(os.path.join(leaf, "escape")),
        })
        say("vgpuctl set fx weight=50")
        r = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, "set", "fx", "weight=50"],
                           capture_output=True, text=True, timeout=60)
        facts["set"] = {"rc": r.returncode, "out": (r.stdout + r.stderr).strip()}
        # The control request returns once the groups are rewritten.
        facts["groups_after_set"] = {i: group(i) for i in INSTANCES}

        say("the tenants leave")
        leaves = [os.path.join(CG, w["cgroup"].lstrip("/")) for w in facts["workers"].values()]
        for c, fd in clients:
            os.close(fd)
            c.close()
        clients = []
        for inst in INSTANCES:
            d.wait_idle(inst, timeout=60)
        try:
            h.wait_for(lambda: not any(os.path.exists(p) for p in leaves), 20,
                       "the workers' cgroups to go")
        except AssertionError:
            pass  # the host names what is left
        facts["leaves_left"] = [p for p in leaves if os.path.exists(p)]
        facts["instance_groups_left"] = subdirs(TREE)
        facts["vgpud_log"] = d.log_text()
        say("stopping vgpud")
        d.stop()
        say("vgpud stopped")
        d = None
        facts["service_left"] = subdirs(SERVICE)
    finally:
        for c, fd in clients:
            os.close(fd)
            c.close()
        if d is not None:
            facts["vgpud_log"] = d.log_text()
            d.kill()


def main():
    facts = {}
    try:
        run(facts)
    except BaseException as e:  # noqa: B036  (reported, then judged on the host)
        if isinstance(e, SystemExit) and e.code == 0:
            return
        facts["error"] = "".join(traceback.format_exception(e))[-3000:]
    log = facts.pop("vgpud_log", "")
    for line in log.splitlines()[-200:]:
        if re.search(r"cgroup|scheduling|isolation|error|warn", line, re.I):
            say(f"log {line}")
    say("facts " + json.dumps(facts))


if __name__ == "__main__":
    main()
