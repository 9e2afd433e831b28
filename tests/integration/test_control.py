#!/usr/bin/env python3
"""Operating vgpud: vgpuctl in human and JSON form, run-time create / set /
destroy, the client limit, admin-only commands, SIGHUP reload without
disturbing tenants, a broken configuration kept out, SIGTERM cleanup, and
vgpu-run's errors.  First, local users attacking the daemon: a 10,000-request
flood, a client that never reads its replies, 1000 unfinished long lines,
a connection flood at a lowered fd limit, idle half-headers filling an
instance, and who may see whose tenants; each with the figures it measures.

Run as `test_control.py --as-attacker MODE DIR N` (under setpriv), it is the
attacking client itself."""
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import harness as h

CONFIG = """
[daemon]
header-timeout=2

[profile p]
vram=256M
max-clients=4

[instance vgpu0]
profile=p

[instance vgpu1]
profile=p
"""

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
LIST = b'{"command":"list"}\n'


# ---- the attacking side (runs as nobody) ------------------------------------

def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def attacker(mode, path, n):
    if mode == "flood":
        # n requests over 4 connections, pipelined, replies read as they come.
        socks = [connect(path) for _ in range(4)]
        sel = selectors.DefaultSelector()
        todo = {s: LIST * (n // 4) for s in socks}
        got = {s: 0 for s in socks}
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        replies = 0
        while replies < n // 4 * 4:
            for key, ev in sel.select(10):
                s = key.fileobj
                if ev & selectors.EVENT_WRITE and todo[s]:
                    k = s.send(todo[s][:65536])
                    todo[s] = todo[s][k:]
                    if not todo[s]:
                        sel.modify(s, selectors.EVENT_READ)
                if ev & selectors.EVENT_READ:
                    data = s.recv(1 << 20)
                    if not data:
                        sys.exit(f"closed after {got[s]} replies")
                    got[s] += data.count(b"\n")
                    replies += data.count(b"\n")
        print(f"flood: {replies} replies")
    elif mode == "never-read":
        s = connect(path)
        s.setblocking(False)
        sent, t0 = 0, time.monotonic()
        try:
            while sent < n and time.monotonic() - t0 < 30:
                try:
                    sent += s.send(LIST) // len(LIST)
                except BlockingIOError:
                    time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # Closed by vgpud: what is left to read ends with EOF.
        s.setblocking(True)
        s.settimeout(30)
        try:
            while s.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass  # closed with requests of ours unread
        print(f"never-read: {sent} requests sent, closed after {time.monotonic() - t0:.1f} s")
    elif mode == "long-lines":
        # n connections, each with a 64 KiB line and no newline.
        held = []
        for _ in range(n):
            try:
                s = connect(path)
                held.append(s)
                s.sendall(b"x" * 65536)
            except OSError:
                pass
        print(f"long-lines: {n} connections tried", flush=True)
        sys.stdin.read()  # hold them until told
    elif mode == "half-headers":
        held = []
        for _ in range(n):
            s = connect(path)
            s.send(b"\x01\x00")  # 2 of a header's 8 bytes
            held.append(s)
        print("half-headers: sent", flush=True)
        sys.stdin.read()


def as_nobody(mode, path, n, **kw):
    return subprocess.Popen(NOBODY + [sys.executable, os.path.abspath(__file__), "--as-attacker",
                                      mode, path, str(n)], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kw)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def timed_list(d):
    t0 = time.monotonic()
    r = d.control({"command": "list"})
    assert r["ok"], r
    return time.monotonic() - t0


def attacks(d):
    ctl_path = os.path.join(d.dir, "control.sock")

    # A 10,000-request flood from another user: list stays fast for others.
    flood = as_nobody("flood", ctl_path, 10000)
    lat = []
    while flood.poll() is None:
        lat.append(timed_list(d))
    out = flood.stdout.read()
    assert flood.returncode == 0 and "flood: 10000 replies" in out, out
    lat = sorted(lat or [timed_list(d)])
    p95 = lat[int(len(lat) * 0.95)]
    print(f"figure: control list latency under a 10,000-request flood: median "
          f"{statistics.median(lat) * 1000:.1f} ms, 95th percentile {p95 * 1000:.1f} ms, "
          f"max {max(lat) * 1000:.1f} ms over {len(lat)} requests (load average "
          f"{os.getloadavg()[0]:.1f})")
    assert max(lat) < 1.0, lat

    # A client that pipelines and never reads: others are served, it is closed.
    never = as_nobody("never-read", ctl_path, 100000)
    lat = []
    while never.poll() is None:
        lat.append(timed_list(d))
    out = never.stdout.read()
    assert never.returncode == 0 and "closed after" in out, out
    print(f"figure: {out.strip()}; list meanwhile max "
          f"{max(lat or [0]) * 1000:.1f} ms over {len(lat)} requests")
    assert not lat or max(lat) < 1.0, lat
    d.wait_log(r"control: pid \d+ uid 65534 does not read its replies")

    # 1000 unfinished 64 KiB lines: refused past the per-uid cap, and what
    # is held is bounded.
    rss0 = h.rss_kib(d.pid())
    lines = as_nobody("long-lines", ctl_path, 1000, stdin=subprocess.PIPE)
    assert "long-lines: 1000" in lines.stdout.readline()
    rss1 = h.rss_kib(d.pid())
    held = d.control({"command": "status"})["daemon"]["control_connections"] - 1
    lines.stdin.close()
    lines.wait(30)
    print(f"figure: 1000 unfinished 64 KiB control lines: RSS {rss0} -> {rss1} KiB "
          f"(+{rss1 - rss0} KiB), {held} connection(s) held")
    assert held <= 8, held
    assert rss1 - rss0 < 16 * 1024, (rss0, rss1)
    d.wait_log(r"control: refused pid \d+ uid 65534: per-uid limit of 8 connections reached")

    # Idle half-headers from one user: the per-uid limit leaves room for
    # others, and header-timeout frees the slots.
    hh = as_nobody("half-headers", d.socket("vgpu0"), 4, stdin=subprocess.PIPE)
    assert "sent" in hh.stdout.readline()
    d.wait_log(r"vgpu0: refused client pid \d+ uid 65534: per-uid client limit 2 reached")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.connect(d.socket("vgpu0"))
    h.wait_for(lambda: d.usage("vgpu0")["clients"] == 3, 10, "root's client next to nobody's")
    t0 = time.monotonic()
    h.wait_for(lambda: d.usage("vgpu0")["clients"] == 0, 20, "header-timeout to end them")
    print(f"figure: idle half-header connections ended {time.monotonic() - t0:.1f} s after "
          f"the check (header-timeout=2)")
    other.close()
    hh.stdin.close()
    hh.wait(10)

    # A flood of connections at a lowered fd limit: no spinning, a bounded
    # log, instances accept once it ends.
    soft = subprocess.run(["prlimit", f"--pid={d.pid()}", "--nofile", "--output=SOFT",
                           "--noheadings"], capture_output=True, text=True, check=True).stdout
    subprocess.run(["prlimit", f"--pid={d.pid()}", "--nofile=64:"], check=True)
    log0 = len(d.log_text().splitlines())
    held = []
    for _ in range(300):
        try:
            held.append(connect(ctl_path))
        except OSError:
            break
    t0, c0 = time.monotonic(), cpu_ticks(d.pid())
    h.wait_for(lambda: time.monotonic() - t0 > 2, 5, "2 s of the flood held")
    cpu = (cpu_ticks(d.pid()) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
    log_lines = len(d.log_text().splitlines()) - log0
    for s in held:
        s.close()
    subprocess.run(["prlimit", f"--pid={d.pid()}", f"--nofile={soft.strip()}:"], check=True)
    print(f"figure: {len(held)} control connections at RLIMIT_NOFILE=64: vgpud CPU "
          f"{cpu * 100:.0f}% while held, {log_lines} log lines")
    assert cpu < 0.2, cpu
    assert log_lines < 400, log_lines
    d.wait_log(r"control: out of file descriptors")
    t = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.connect(d.socket("vgpu1"))
    h.wait_for(lambda: d.usage("vgpu1")["clients"] == 1, 20, "vgpu1 to accept after the flood")
    t.close()
    h.wait_for(lambda: d.usage("vgpu1")["clients"] == 0, 20, "vgpu1's test client to go")


def ctl(d, *args, as_nobody=False):
    argv = (NOBODY if as_nobody else []) + [h.VGPUCTL, "--runtime-dir", d.dir] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test(x, d):
    attacks(d)

    # Read commands, human and JSON.
    rc, out, err = ctl(d, "list")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "PROFILE", "STATE"], out
    col = lines[0].index("VRAM")
    # The table, then the GPU memory line.
    assert lines[-1].startswith("GPU memory "), out
    assert all(l[col - 2:col] == "  " for l in lines[1:-1]), f"columns not aligned:\n{out}"
    assert "0 B / 256 MiB" in out, out
    rc, out, _ = ctl(d, "--json", "list")
    inst = {i["name"]: i for i in json.loads(out)["instances"]}
    assert set(inst) == {"vgpu0", "vgpu1"}
    assert inst["vgpu0"]["limits"] == {"vram": 256 << 20, "resources": 0, "contexts": 0,
                                       "clients": 4, "clients_per_uid": 2}, inst["vgpu0"]
    rc, out, _ = ctl(d, "--json", "profiles")
    assert [p["name"] for p in json.loads(out)["profiles"]] == ["p"]
    # The scheduler enforces the scheduling settings: nothing is marked
    # "not enforced", in JSON or in tables.
    assert json.loads(out)["profiles"][0]["not_enforced"] == [], out
    assert inst["vgpu0"]["not_enforced"] == [], inst["vgpu0"]
    assert inst["vgpu0"]["share_ppm"] in (500000, 1000000), inst["vgpu0"]  # two equal instances
    assert isinstance(inst["vgpu0"]["active"], bool), inst["vgpu0"]
    rc, out, _ = ctl(d, "profiles")
    assert rc == 0 and "equal*" not in out and "not enforced" not in out, out
    rc, out, _ = ctl(d, "show", "vgpu0")
    assert rc == 0 and "gpu share  equal (weight 100)\n" in out, out
    rc, out, _ = ctl(d, "--json", "status")
    assert json.loads(out)["daemon"]["pid"] == d.pid()
    rc, out, _ = ctl(d, "top", "--iterations", "2", "--interval", "0.2")
    assert rc == 0 and out.count("vgpuctl top") == 2, out

    # Run-time instance: create, render, resize, client limit, destroy.
    rc, out, err = ctl(d, "create", "t1", "--profile", "p")
    assert rc == 0, err
    assert os.path.exists(d.socket("t1"))
    rc, _, err = ctl(d, "set", "t1", "vram=64M", "max-clients=1")
    assert rc == 0, err
    rc, out, _ = ctl(d, "--json", "show", "t1")
    t1 = json.loads(out)["instance"]
    assert t1["origin"] == "runtime" and t1["limits"]["vram"] == 64 << 20
    assert t1["limits"]["clients"] == 1
    first = h.Output(h.client(d, "t1", ["glxgears"], x.display))
    h.wait_for(lambda: d.usage("t1")["frames"] > 10, 30, "t1 to render")
    second = h.client(d, "t1", ["glxgears"], x.display)
    rc2, out2 = h.finish(second, 30)
    d.wait_log(r"t1: refused client pid \d+ uid \d+: client limit 1 reached")
    # vgpu-run's last line says why, with its own status (vgpu-run(1)).
    assert rc2 == 122, f"a second client got past max-clients=1 ({rc2}):\n{out2}"
    assert out2.rstrip().splitlines()[-1] == ("vgpu-run: session ended by vgpud: refused by "
                                              "instance t1: client limit 1 reached"), out2
    rc, _, err = ctl(d, "destroy", "t1")
    assert rc == 1 and "connected tenant" in err, err
    rc, out, _ = ctl(d, "show", "t1")
    assert "WORKER" in out and "CLIENT" in out, out
    # Another user sees that a tenant is there, not who or how much.
    rc, out, _ = ctl(d, "--json", "show", "t1", as_nobody=True)
    t1 = json.loads(out)["instance"]
    assert t1["tenants"] == [] and t1["tenants_hidden"] == 1, t1
    rc, out, _ = ctl(d, "show", "t1", as_nobody=True)
    assert "WORKER" not in out and "1 tenant(s) of other users" in out, out
    rc, _, err = ctl(d, "destroy", "t1", "--force")
    assert rc == 0, err
    first.stop()
    h.wait_for(lambda: not os.path.exists(d.socket("t1")), 20, "t1's socket to go")
    h.wait_for(lambda: ctl(d, "show", "t1")[0] == 1, 20, "t1 to be gone")

    # Errors and permissions.
    rc, _, err = ctl(d, "show", "nosuch")
    assert rc == 1 and 'no instance "nosuch"' in err, err
    rc, _, err = ctl(d, "create", "t2", "--profile", "nosuch")
    assert rc == 1 and "unknown profile" in err, err
    rc, _, err = ctl(d, "set", "vgpu0", "vram=12Q")
    assert rc == 1 and "not a size" in err, err
    rc, _, err = ctl(d, "bogus")
    assert rc == 2, err
    rc, out, _ = ctl(d, "list", as_nobody=True)
    assert rc == 0 and "vgpu0" in out
    rc, _, err = ctl(d, "create", "t3", "--profile", "p", as_nobody=True)
    assert rc == 1 and "permission denied" in err, err
    rc, _, err = subprocess.run([h.VGPUCTL, "--runtime-dir", "/nonexistent", "list"],
                                capture_output=True, text=True).returncode, None, None
    assert rc == 3
    r = d.control({"command": "frobnicate"})
    assert not r["ok"] and "unknown command" in r["error"]

    # SIGHUP: add vgpu2, drop vgpu1, resize vgpu0; vgpu0's tenant runs on.
    g = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    h.wait_for(lambda: d.usage("vgpu0")["frames"] > 10, 30, "vgpu0 to render")
    worker = d.show("vgpu0")["tenants"][0]["worker_pid"]
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace("[instance vgpu1]", "[instance vgpu2]")
                .replace("vram=256M", "vram=300M"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded .*: 1 instance\(s\) added, 1 removed, 1 changed")
    assert os.path.exists(d.socket("vgpu2")) and not os.path.exists(d.socket("vgpu1"))
    s0 = d.show("vgpu0")
    assert s0["limits"]["vram"] == 300 << 20 and s0["tenants"][0]["worker_pid"] == worker
    vt_ok = h.gears(d, "vgpu2", x.display)
    assert h.fps_values(vt_ok[1]), vt_ok[1]
    # A broken file is reported with FILE:LINE and changes nothing.
    with open(d.config_path, "a") as f:
        f.write("\n[profile q]\nvrma=1G\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(re.escape(d.config_path) + r":\d+: unknown key \"vrma\"")
    assert os.path.exists(d.socket("vgpu2"))
    h.wait_for(lambda: len(h.fps_values(g.text())) >= 2 or g.proc.poll() is not None, 60,
               "vgpu0's tenant to print two frame rates")
    assert g.proc.poll() is None, f"vgpu0's tenant ended:\n{g.text()}"
    rc, out = g.stop()
    assert len(h.fps_values(out)) >= 2, f"vgpu0's tenant was disturbed:\n{out}"

    # An instance that cannot be created (a file stands where its directory
    # goes) is left out of a reload; the rest applies and vgpuctl says so.
    open(os.path.join(d.dir, "blocked"), "w").close()
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace("[instance vgpu1]", "[instance vgpu2]")
                .replace("vram=256M", "vram=320M") + "\n[instance blocked]\nprofile=p\n")
    rc, out, err = ctl(d, "reload")
    blocked = os.path.join(d.dir, "blocked")
    assert rc == 1 and f"vgpuctl: warning: blocked: {blocked} is not a directory" in err, \
        (rc, out, err)
    assert d.show("vgpu0")["limits"]["vram"] == 320 << 20
    assert "blocked" not in {i["name"] for i in d.control({"command": "list"})["instances"]}
    os.unlink(os.path.join(d.dir, "blocked"))

    # Known request members of the wrong JSON type are refused by name.
    for req, what in (({"command": {"x": 1}}, '"command" must be a string'),
                      ({"command": "show", "name": 7}, '"name" must be a string'),
                      ({"command": "destroy", "name": "vgpu2", "force": "yes"},
                       '"force" must be true or false'),
                      ({"command": "set", "name": "vgpu2", "settings": []},
                       '"settings" must be an object')):
        r = d.control(req)
        assert not r["ok"] and what in r["error"], (req, r)
    assert os.path.exists(d.socket("vgpu2"))

    # A bad file stops start-up with FILE:LINE; a second vgpud on the same
    # runtime directory is refused.
    bad = os.path.join(d.tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("[profile p]\nvram=12Q\n")
    p = subprocess.run([h.VGPUD, "--foreground", "--config", bad, "--runtime-dir",
                        os.path.join(d.tmp, "other")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and f"{bad}:2: bad value \"12Q\" for vram" in p.stderr, p.stderr
    p = subprocess.run([h.VGPUD, "--foreground", "--runtime-dir", d.dir], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and f"another vgpud (pid {d.pid()}) is using" in p.stderr, p.stderr

    # vgpu-run's errors.
    p = subprocess.run([h.VGPU_RUN, "--runtime-dir", d.dir, "--instance", "nosuch", "--", "true"],
                       capture_output=True, text=True)
    assert p.returncode == 125 and "no vGPU instance 'nosuch'" in p.stderr, p.stderr
    p = subprocess.run([h.VGPU_RUN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--instance" in p.stdout

    # As a normal user: through an unprivileged user namespace where the
    # kernel allows one, else the documented error.
    p = subprocess.run(NOBODY + ["env", f"DISPLAY={x.display}", h.VGPU_RUN, "--runtime-dir", d.dir,
                                 "--instance", "vgpu0", "--", "timeout", "-s", "INT", "9",
                                 "glxgears", "-info"], capture_output=True, text=True, timeout=60)
    if "unprivileged user namespaces are disabled" in p.stderr:
        assert p.returncode == 125, p.stderr
        print("vgpu-run as nobody: user namespaces disabled here, clear error given")
    else:
        assert "GL_RENDERER   = virgl" in p.stdout, p.stdout + p.stderr
        print("vgpu-run as nobody: rendered through a user namespace")

    # SIGTERM: exit 0, sockets, pid file and instance directories gone.
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    left = [f for f in os.listdir(d.dir)] if os.path.exists(d.dir) else []
    assert left == [], f"left behind in the runtime dir: {left}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--as-attacker"]:
        attacker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    # No ASan quarantine (sanitizer builds), so RSS measures what vgpud keeps.
    h.run(test, needs=("glxgears", "setpriv", "prlimit"), config=CONFIG,
          env={"ASAN_OPTIONS": "abort_on_error=0:quarantine_size_mb=0"})
