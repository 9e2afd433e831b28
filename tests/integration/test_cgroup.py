#!/usr/bin/env python3
"""CPU cgroups per instance: real clients' workers sit in a cgroup of their
own under their instance's, whose CPU weight and ceiling follow its profile
(equal: the default weight, no ceiling; fixed: its weight and a ceiling of
weight / total x CPUs); `vgpuctl set weight=` rewrites them; a worker's
cgroup goes when its client leaves, a destroyed instance's group goes, and
the tree goes when vgpud stops.  A worker's uid can neither write the files
nor leave its cgroup.  The kernel enforces it: a worker taken over by its
tenant that ignores its GPU-time tokens and spins (tests/support/
hijacked_worker.c, which serves the real clients by exec'ing the real
worker) is held to its instance's ceiling.  llvmpipe's thread count (render-threads)
reaches the worker as LP_NUM_THREADS.  A tree left by a vgpud killed with
SIGKILL is cleaned up by the next one.  Skips where no cgroup cpu
controller is writable."""
import os
import re
import signal
import socket
import subprocess
import time

import harness as h

CONFIG = """
[daemon]
log-level=info
worker={worker}

[profile eq]
gpu-share=equal
max-clients=4
vram=256M

[profile one]
gpu-share=fixed
weight=100
render-threads=1
max-clients=4
vram=256M

[profile three]
gpu-share=fixed
weight=300
render-threads=1
max-clients=4
vram=256M

[profile be]
gpu-share=best-effort
weight=5000
max-clients=4
vram=256M

[instance eq]
profile=eq

[instance f1]
profile=one

[instance f3]
profile=three

[instance be]
profile=be
"""

PERIOD = 1000000
NCPU = len(os.sched_getaffinity(0))


def quota(weight, total):
    return max(weight * NCPU * PERIOD // total, 1000)


class Tree:
    """The cgroup tree vgpud announced in its start-up line."""

    def __init__(self, d):
        m = d.wait_log(r"scheduling: .*?(cgroup v([12]) cpu at (\S+) |cgroup: off \((.*)\); llvmpipe)")
        if m.group(4) is not None:
            d.stop()
            h.skip(f"no cgroup cpu controller vgpud may use here: {m.group(4)}")
        d.wait_log(r"vgpud \S+ ready: ")  # the groups are written by then
        self.version = int(m.group(2))
        self.path = m.group(3)
        print("tree:", m.group(1), self.path)

    def group(self, inst):
        return os.path.join(self.path, inst)

    def read(self, inst, name):
        with open(os.path.join(self.group(inst), name)) as f:
            return f.read().strip()

    def values(self, inst):
        """(weight as the v2 cpu.weight, ceiling in us per 1 s or 0); the
        burst, where the kernel has one, is the ceiling again."""
        if self.version == 2:
            q, period = self.read(inst, "cpu.max").split()
            assert int(period) == PERIOD, period
            w, q, burst = int(self.read(inst, "cpu.weight")), 0 if q == "max" else int(q), \
                "cpu.max.burst"
        else:
            assert int(self.read(inst, "cpu.cfs_period_us")) == PERIOD
            q = int(self.read(inst, "cpu.cfs_quota_us"))
            w, q, burst = int(self.read(inst, "cpu.shares")), 0 if q == -1 else q, \
                "cpu.cfs_burst_us"
        if os.path.exists(os.path.join(self.group(inst), burst)):
            assert int(self.read(inst, burst)) == q, (inst, burst, self.read(inst, burst), q)
        return w, q

    def expect(self, inst, weight, ceiling):
        shares = weight if self.version == 2 else max(2, (weight * 1024 + 50) // 100)
        got = self.values(inst)
        assert got == (shares, ceiling), (inst, got, (shares, ceiling))

    def cgroup_of(self, pid):
        """The cgroup directory of pid in this tree's hierarchy."""
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            hid, ctrls, path = line.split(":", 2)
            if (self.version == 2 and hid == "0") or \
               (self.version == 1 and "cpu" in ctrls.split(",")):
                return path
        raise AssertionError(f"pid {pid} has no cgroup line: {lines}")


def worker_of(d, inst):
    return h.wait_for(lambda: (lambda t: t[0]["worker_pid"] if t else None)(d.show(inst)["tenants"]),
                      60, f"a tenant on {inst}")


def leaf_of(tree, inst, pid):
    """Checks pid is in a cgroup of its own directly under inst's; returns
    the directory."""
    rel = tree.cgroup_of(pid)
    parent, leaf = os.path.split(rel)
    assert tree.group(inst).endswith(parent), (tree.group(inst), rel)
    assert re.fullmatch(r"w\d+", leaf), rel
    path = os.path.join(tree.group(inst), leaf)
    with open(os.path.join(path, "cgroup.procs")) as f:
        assert str(pid) in f.read().split(), (path, pid)
    return path


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (all threads)


def throttled(tree, inst):
    for line in tree.read(inst, "cpu.stat").splitlines():
        k, v = line.split()
        if k == "nr_throttled":
            return int(v)
    raise AssertionError("no nr_throttled in cpu.stat")


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def as_uid(uid, what, fn):
    """Runs fn() in a child that has dropped to uid; the child reports
    whether fn raised PermissionError."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                fn()
                code = 1  # it worked: the worker could have done it
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, f"uid {uid} could {what} (status {status})"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def check_hijack_proof(tree, inst, leaf, worker):
    uid = uid_of(worker)
    assert uid != 0, "the worker runs as root"
    group = tree.group(inst)
    for p in (tree.path, group, leaf):
        st = os.stat(p)
        assert st.st_uid == 0 and (st.st_mode & 0o777) == 0o755, (p, oct(st.st_mode), st.st_uid)
    weight_file = "cpu.weight" if tree.version == 2 else "cpu.shares"
    for p in (os.path.join(group, weight_file), os.path.join(leaf, "cgroup.procs")):
        st = os.stat(p)
        assert st.st_uid == 0 and not st.st_mode & 0o022, (p, oct(st.st_mode))
    as_uid(uid, "change its instance's weight", lambda: write(os.path.join(group, weight_file), "10000"))
    as_uid(uid, "raise its ceiling",
           lambda: write(os.path.join(group, "cpu.max" if tree.version == 2 else "cpu.cfs_quota_us"),
                         "max" if tree.version == 2 else "-1"))
    # Leaving: into its instance's group, the tree's top or vgpud's own.
    for target in (group, tree.path, os.path.dirname(tree.path)):
        as_uid(uid, f"move a process into {target}",
               lambda t=target: write(os.path.join(t, "cgroup.procs"), str(worker)))
    as_uid(uid, "make a cgroup of its own", lambda: os.mkdir(os.path.join(group, "escape")))
    print(f"worker uid {uid}: cannot write weights or ceilings, move, or make cgroups")


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)


def test(x, d):
    tree = Tree(d)
    total = 100 + 100 + 300  # eq, f1, f3; best-effort is not counted
    tree.expect("eq", 100, 0)
    tree.expect("be", 100, 0)
    tree.expect("f1", 100, quota(100, total))
    tree.expect("f3", 300, quota(300, total))
    print("groups:", {i: tree.values(i) for i in ("eq", "be", "f1", "f3")})

    # Two busy tenants on fixed shares 1:3, one on an equal share.
    g1 = h.Output(h.client(d, "f1", ["glxgears"], x.display))
    g3 = h.Output(h.client(d, "f3", ["glxgears"], x.display))
    ge = h.Output(h.client(d, "eq", ["glxgears"], x.display))
    w1, w3, we = worker_of(d, "f1"), worker_of(d, "f3"), worker_of(d, "eq")
    leaf1 = leaf_of(tree, "f1", w1)
    leaf3 = leaf_of(tree, "f3", w3)
    leafe = leaf_of(tree, "eq", we)
    print("workers:", tree.cgroup_of(w1), tree.cgroup_of(w3), tree.cgroup_of(we))
    if tree.version == 1:  # the tree weighs what its workers did as processes
        assert int(tree.read("", "cpu.shares")) == 3 * 1024, tree.read("", "cpu.shares")
    assert environ(w1).get(b"LP_NUM_THREADS") == b"1", environ(w1).get(b"LP_NUM_THREADS")
    assert b"LP_NUM_THREADS" not in environ(we)
    check_hijack_proof(tree, "f1", leaf1, w1)

    # The kernel's effect: a worker on f1 taken over by its tenant ignores
    # its tokens and spins; the instance's ceiling (2.4% of the CPUs' time
    # at weight 10) holds it and f1's honest worker together, throttled,
    # while the weight-300 one (ceiling 73%) is not held to it.
    h.wait_for(lambda: d.usage("f1")["frames"] > 0 and d.usage("f3")["frames"] > 0, 90,
               "both fixed-share tenants to render")
    # vgpuctl set rewrites the weight and every fixed ceiling at once.
    r = d.control({"command": "set", "name": "f1", "settings": {"weight": "10"}})
    assert r["ok"], r
    total = 100 + 10 + 300
    tree.expect("f1", 10, quota(10, total))
    tree.expect("f3", 300, quota(300, total))
    tree.expect("eq", 100, 0)
    spinner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    spinner.settimeout(60)
    spinner.connect(d.socket("f1"))
    spinner.sendall(b"ATTACK spin 8\n")
    ws = h.wait_for(lambda: (lambda t: [x["worker_pid"] for x in t if x["worker_pid"] != w1] or None)(
        d.show("f1")["tenants"]), 30, "the spinning worker on f1")[0]
    leaf_of(tree, "f1", ws)
    buf = b""
    while b"NOTE spinning" not in buf:
        chunk = spinner.recv(4096)
        assert chunk, f"the spinning worker ended: {buf!r}"
        buf += chunk
    time.sleep(1.0)  # past the first period, whose burst it may take
    hz = os.sysconf("SC_CLK_TCK")
    t0, c1, c3, n1 = time.monotonic(), cpu_ticks(w1) + cpu_ticks(ws), cpu_ticks(w3), \
        throttled(tree, "f1")
    time.sleep(6)
    dt = time.monotonic() - t0
    u1 = (cpu_ticks(w1) + cpu_ticks(ws) - c1) / hz / dt
    u3 = (cpu_ticks(w3) - c3) / hz / dt
    n1 = throttled(tree, "f1") - n1
    while b"END\n" not in buf:  # it stops spinning and ends
        chunk = spinner.recv(4096)
        if not chunk:
            break
        buf += chunk
    spinner.close()
    h.wait_for(lambda: ws not in [x["worker_pid"] for x in d.show("f1")["tenants"]], 30,
               "the spinning worker to end")
    cap1 = quota(10, total) / PERIOD
    print(f"CPU use: f1 (its glxgears worker and a spinning one) {u1:.3f} CPUs (ceiling "
          f"{cap1:.3f}, throttled in {n1} periods), f3 {u3:.3f} CPUs (ceiling "
          f"{quota(300, total) / PERIOD:.2f}), ratio {u3 / max(u1, 1e-9):.1f}")
    assert n1 > 0, "f1 was never throttled"
    # Over six periods, at most six ceilings and one burst (as much again).
    assert 0 < u1 <= cap1 * 7 / 6 * 1.1 + 0.02, (u1, cap1)
    assert u3 > u1 * 2, (u1, u3)

    r = d.control({"command": "set", "name": "f1", "settings": {"weight": "200"}})
    assert r["ok"], r
    total = 100 + 200 + 300
    tree.expect("f1", 200, quota(200, total))
    tree.expect("f3", 300, quota(300, total))
    tree.expect("eq", 100, 0)
    r = d.control({"command": "set", "name": "eq", "settings": {"gpu-share": "fixed"}})
    assert r["ok"], r
    tree.expect("eq", 100, quota(100, total))
    print("after set:", {i: tree.values(i) for i in ("eq", "f1", "f3")})

    # A worker's cgroup goes with its client.
    for o, leaf in ((g1, leaf1), (g3, leaf3), (ge, leafe)):
        o.stop()
        h.wait_for(lambda leaf=leaf: not os.path.exists(leaf), 20, f"{leaf} to be removed")
    print("worker cgroups removed after their clients left")
    if tree.version == 1:
        assert int(tree.read("", "cpu.shares")) == 1024, tree.read("", "cpu.shares")

    # Run-time instances: created with a group, destroyed without.
    r = d.control({"command": "create", "name": "rt", "profile": "three"})
    assert r["ok"], r
    total += 300
    tree.expect("rt", 300, quota(300, total))
    tree.expect("f1", 200, quota(200, total))
    r = d.control({"command": "destroy", "name": "rt", "force": False})
    assert r["ok"], r
    h.wait_for(lambda: not os.path.exists(tree.group("rt")), 20, "rt's group to be removed")
    total -= 300
    tree.expect("f1", 200, quota(200, total))

    # A vgpud killed outright leaves its tree and an orphaned worker: the
    # next one on the same runtime directory moves the worker out and
    # removes the tree before making its own.
    orphan_client = h.Output(h.client(d, "eq", ["glxgears"], x.display))
    leaf_of(tree, "eq", worker_of(d, "eq"))
    d.kill()
    assert os.path.isdir(tree.path)
    orphan_client.stop()
    # A stray process in the old tree (an orphaned worker may end on its own
    # when its ledger channel closes; this one stays until moved).
    stray = subprocess.Popen(["sleep", "120"])
    orphan = stray.pid
    write(os.path.join(tree.group("eq"), "cgroup.procs"), str(orphan))
    args = [h.VGPUD, "--foreground", "--runtime-dir", d.dir, "--config", d.config_path,
            "--state-dir", d.state_dir]
    d.log = open(d.log_path, "w")
    d.proc = subprocess.Popen(args, stdout=d.log, stderr=subprocess.STDOUT,
                              env=h.sanitizer_env(dict(os.environ,
                                                       VGPU_REAL_WORKER=os.environ["VGPU_WORKER"])),
                              start_new_session=True)
    m = d.wait_log(r"cgroup: removed %s, left by an earlier vgpud \(1 process\(es\) moved out\)"
                   % re.escape(tree.path))
    print("stale tree:", m.group(0))
    again = Tree(d)
    assert again.path == tree.path
    where = tree.cgroup_of(orphan)
    assert os.path.basename(tree.path) not in where, where
    print(f"stray process {orphan} moved to {where}")
    stray.kill()
    stray.wait()
    # The run-time changes above (eq made fixed, f1's weight) outlive the
    # restart (the state file): the new tree has them.
    tree.expect("eq", 100, quota(100, 100 + 200 + 300))
    tree.expect("f1", 200, quota(200, 100 + 200 + 300))

    d.stop()
    assert not os.path.exists(tree.path), f"{tree.path} left after vgpud stopped"
    print("tree removed at exit")


if __name__ == "__main__":
    if os.environ.get("VGPU_HAVE_VIRGL") == "0":
        h.skip("vgpu was built without virglrenderer (-Dvirgl=disabled): no client can render")
    h.need("Xvfb", "glxgears")
    worker = os.environ.get("VGPU_HIJACKED_WORKER")
    real = os.environ.get("VGPU_WORKER")
    if not worker or not real:
        h.skip("VGPU_HIJACKED_WORKER and VGPU_WORKER name the test and real workers (meson sets them)")
    xv = h.Xvfb()
    dm = h.Daemon(CONFIG.format(worker=worker), env={"VGPU_REAL_WORKER": real})
    try:
        test(xv, dm)  # stops the daemon itself
    finally:
        dm.kill()
        xv.stop()
