#!/usr/bin/env python3
"""A compromised worker: vgpud runs tests/support/hijacked_worker.c in
place of vgpu-worker, and each connection to the instance "victim" that
starts with "ATTACK" turns it into an attacker once the real sandbox is in
place.  Every attempt must fail or end only that worker, while `vgpuctl
list` answers within a second throughout, a glxgears on the instance
"neighbour" keeps rendering, the neighbour's usage and limits stay as they
were, and vgpud lives on."""
import os
import re
import socket
import subprocess
import termios
import threading
import time

import harness as h

HOST_MEMORY = 256 << 20

CONFIG = """
[daemon]
worker={worker}

[profile victim]
vram=64M
max-resources=1024
max-contexts=4
max-clients=8
host-memory=256M

[profile neighbour]
vram=512M
max-resources=65536
max-contexts=16
max-clients=4

[instance victim]
profile=victim

[instance neighbour]
profile=neighbour
"""


class ListProbe(threading.Thread):
    """Runs `vgpuctl list` back to back and keeps the slowest answer."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.d, self.stop, self.worst, self.failures, self.count = d, False, 0.0, [], 0

    def run(self):
        while not self.stop:
            t = time.monotonic()
            try:
                r = subprocess.run([h.VGPUCTL, "--runtime-dir", self.d.dir, "list"],
                                   capture_output=True, text=True, timeout=5)
                if r.returncode != 0:
                    self.failures.append(r.stderr.strip())
            except subprocess.TimeoutExpired:
                self.failures.append("no answer within 5 s")
            self.worst = max(self.worst, time.monotonic() - t)
            self.count += 1
            time.sleep(0.1)


def attack(d, name, arg="", keep_open=False):
    """Sends one attack; returns (results, ended_cleanly, socket-or-None)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    s.connect(d.socket("victim"))
    s.sendall(f"ATTACK {name} {arg}\n".encode())
    data = b""
    while b"END\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    text = data.decode(errors="replace")
    print(f"--- {name}:\n{text.strip()}")
    results = re.findall(r"^RESULT (\S+) (\S+) (.*)$", text, re.M)
    ended = "END\n" in text
    if keep_open:
        return results, ended, s
    s.close()
    return results, ended, None


def pending_input(fd):
    """What waits to be read on the terminal (TIOCSTI puts it there)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def expect_refused(results, name):
    assert results, f"{name}: no attempt reported"
    done = [r for r in results if r[1] != "refused"]
    assert not done, f"{name}: the attacker succeeded: {done}"


def expect_killed(d, name, results, ended):
    """The sandbox ended the worker at the attempt: nothing reported, the
    log says why."""
    assert not ended and not results, f"{name}: expected the worker to be ended, got {results}"
    d.wait_log(r"victim: client pid %d worker \d+ ended: killed by its seccomp filter" % os.getpid())


def test(x, d):
    try:
        attacks(x, d)
    except BaseException:
        print("vgpud's log:\n" + d.log_text()[-6000:])
        raise


def attacks(x, d):
    if os.geteuid() != 0:
        h.skip("the uid isolation is only applied by a vgpud running as root")
    log = d.log_text()
    assert re.search(r"isolation: each worker runs as a uid and gid of its own", log), log
    assert "seccomp allow-list" in log, log
    if "without a system-call filter" in log:
        h.skip("built without libseccomp: no filter to attack")

    nb = h.client(d, "neighbour", ["timeout", "-s", "INT", "90", "glxgears"], x.display)
    h.wait_for(lambda: d.usage("neighbour")["frames"] > 20, 60, "the neighbour to render")
    before = d.show("neighbour")
    nb_worker = before["tenants"][0]["worker_pid"]
    # A process group of its own (a signal to vgpud's group, such as a
    # terminal's ^C, does not reach it), in vgpud's session (no scheduler
    # autogroup of its own), without vgpud's controlling terminal.
    assert os.getpgid(nb_worker) == nb_worker, "the worker is not its own process group"
    assert os.getsid(nb_worker) == os.getsid(d.proc.pid), "the worker left vgpud's session"
    tty_nr = int(open(f"/proc/{nb_worker}/stat").read().rsplit(")", 1)[1].split()[4])
    assert tty_nr == 0, f"the worker has a controlling terminal ({tty_nr:#x})"
    assert int(open(f"/proc/{d.proc.pid}/stat").read().rsplit(")", 1)[1].split()[4]) != 0
    probe = ListProbe(d)
    probe.start()
    frames0 = d.usage("neighbour")["frames"]
    try:
        control = os.path.join(d.dir, "control.sock")
        for name, arg in (("control", control), ("kill-vgpud", ""), ("kill-pid", str(nb_worker)),
                          ("pidfd", ""), ("exec", "")):
            results, ended, _ = attack(d, name, arg)
            expect_killed(d, name, results, ended)

        for name, arg in (("proc", ""), ("files", d.dir), ("tty", TTY_PATH)):
            results, ended, _ = attack(d, name, arg)
            assert ended, f"{name}: the worker died"
            expect_refused(results, name)
        assert not os.path.exists("/root/vgpu-hijacked")
        assert not os.path.exists("/tmp/vgpu-hijacked")
        assert not os.path.exists("/tmp/vgpu-hijacked-exec")
        assert not os.path.exists(os.path.join(d.dir, "hijacked"))
        # Another worker's private shader cache, and its own to plant in.
        nb_uid = os.stat(f"/proc/{nb_worker}").st_uid
        results, ended, _ = attack(d, "shader-cache", f"{d.dir} {nb_uid}")
        assert ended, "shader-cache: the worker died"
        expect_refused(results, "shader-cache")
        assert {r[0] for r in results} == {
            "list-shader-caches", "open-neighbour-cache", "create-in-neighbour-cache",
            "create-in-own-cache", "mkdir-in-own-cache"}, results
        nb_cache = os.path.join(d.dir, "shader-cache", str(nb_uid))
        assert os.listdir(nb_cache) == [], os.listdir(nb_cache)
        typed = pending_input(TTY_SLAVE)
        assert not typed, f"the worker typed {typed!r} into vgpud's terminal"

        results, ended, _ = attack(d, "memory")
        if ended:
            expect_refused(results, "memory")
            mib = int(re.search(r"stopped after (\d+) MiB", results[0][2]).group(1))
            assert mib <= HOST_MEMORY >> 20, f"allocated {mib} MiB past a 256 MiB cap"
            print(f"memory: the worker's allocations stopped at {mib} MiB (cap 256 MiB)")
        else:
            d.wait_log(r"victim: client pid %d worker \d+ ended: killed by its host-memory cap"
                       % os.getpid())

        results, ended, _ = attack(d, "scribble")
        expect_refused(results, "scribble")

        # A worker that holds every lock it can and never lets go.
        results, ended, held = attack(d, "lock", keep_open=True)
        assert ended, "lock: the worker died"
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            assert d.usage("neighbour")["clients"] == 1
            time.sleep(0.2)
        held.close()
        holder = [t["worker_pid"] for t in d.show("victim")["tenants"]]
        assert len(holder) == 1, holder
        os.kill(holder[0], 9)
        d.wait_idle("victim")
    finally:
        probe.stop = True
        probe.join()

    # Nothing reached the rest of the system.
    assert d.proc.poll() is None, "vgpud died"
    print(f"vgpuctl list: {probe.count} answers, slowest {probe.worst:.3f} s")
    assert not probe.failures, probe.failures
    assert probe.worst < 1.0, f"vgpuctl list took {probe.worst:.2f} s"
    after = d.show("neighbour")
    assert after["tenants"][0]["worker_pid"] == nb_worker, "the neighbour's worker changed"
    # glxgears' own usage moves while it runs: what must hold is that the
    # instance's books are exactly what its one live tenant holds.
    assert after["usage"]["clients"] == 1, after["usage"]
    for k in ("vram", "resources", "contexts"):
        held = sum(t[k] for t in after["tenants"])
        assert after["usage"][k] == held, (k, after["usage"], after["tenants"])
    assert after["limits"] == before["limits"], (before["limits"], after["limits"])
    assert after["usage"]["frames"] > frames0, "the neighbour stopped rendering"
    rc, out = h.finish(nb, 120)
    fps = h.fps_values(out)
    assert fps and min(fps) > 0, f"the neighbour's glxgears:\n{out[-2000:]}"
    print(f"neighbour kept rendering: {fps} FPS")
    v = d.usage("victim")
    assert (v["vram"], v["resources"], v["contexts"], v["clients"]) == (0, 0, 0, 0), v


if __name__ == "__main__":
    worker = os.environ.get("VGPU_HIJACKED_WORKER")
    real = os.environ.get("VGPU_WORKER")
    if not worker or not real:
        h.skip("VGPU_HIJACKED_WORKER and VGPU_WORKER name the test and real workers (meson sets them)")
    # vgpud gets a controlling terminal, as when started by hand from a
    # shell: a worker must not be able to type into it.
    TTY_MASTER, TTY_SLAVE = os.openpty()
    TTY_PATH = os.ttyname(TTY_SLAVE)
    tattr = termios.tcgetattr(TTY_SLAVE)
    tattr[3] &= ~(termios.ICANON | termios.ECHO)  # bytes readable as they come
    termios.tcsetattr(TTY_SLAVE, termios.TCSANOW, tattr)
    h.run(test, needs=("glxgears",), config=CONFIG.format(worker=worker),
          env={"VGPU_REAL_WORKER": real}, ctty=TTY_SLAVE)
