"""Shared helpers for vgpu's integration tests: an Xvfb, a vgpud on a
private runtime directory, its control socket, and real GL clients run
through vgpu-run.  Python standard library only.

Exit codes follow meson: 0 pass, 77 skip (with the reason printed),
anything else fail."""
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time

SKIP = 77
VGPUD = os.environ.get("VGPUD", "vgpud")
VGPU_RUN = os.environ.get("VGPU_RUN", "vgpu-run")
VGPUCTL = os.environ.get("VGPUCTL", "vgpuctl")
SOURCE_DIR = os.environ.get("VGPU_SOURCE_DIR", os.path.dirname(os.path.abspath(__file__)) + "/../..")
PIGLIT_BIN = "/usr/lib/x86_64-linux-gnu/piglit/bin"
MESA_ROOT_SH = os.path.join(SOURCE_DIR, "scripts", "mesa-root.sh")
IN_MESA_ROOT_SH = os.path.join(SOURCE_DIR, "scripts", "in-mesa-root.sh")


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def need(*programs):
    for p in programs:
        if not shutil.which(p) and not os.path.exists(p):
            skip(f"{p} is not installed (make deps installs it)")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def accepts(path):
    """Whether a Unix stream socket at path accepts a connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def sanitizer_env(env):
    supp = os.path.join(SOURCE_DIR, "tests", "lsan.supp")
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0")
    if os.path.exists(supp):
        env.setdefault("LSAN_OPTIONS", f"suppressions={supp}:print_suppressions=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


class Xvfb:
    def __init__(self):
        need("Xvfb")
        # Xvfb picks a free display itself and writes its number to the
        # pipe once it accepts clients.  Choosing a number here raced with
        # the Xvfbs of tests running in parallel: a loser could see the
        # winner's socket, take it for its own and lose its display when
        # the winner's test ended.
        r, w = os.pipe()
        # Its messages are kept: they say why it refused a client.
        self.log = tempfile.NamedTemporaryFile(prefix="vgpu-xvfb-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=self.log)
        os.close(w)
        num = b""
        try:
            end = time.monotonic() + 30
            while not num.endswith(b"\n"):
                left = end - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    break
                chunk = os.read(r, 16)
                if not chunk:
                    break
                num += chunk
        finally:
            os.close(r)
        if not num.strip().isdigit() or self.proc.poll() is not None:
            self.stop()
            raise AssertionError(f"Xvfb did not report a display (got {num!r})")
        self.display = ":" + num.decode().strip()

    def health(self):
        """One line on the X server now: alive, its socket, a new client."""
        n = self.display.lstrip(":")
        alive = self.proc.poll() is None
        path = f"/tmp/.X11-unix/X{n}"
        probe = subprocess.run(["xdpyinfo", "-display", self.display], capture_output=True,
                               text=True, timeout=30) if shutil.which("xdpyinfo") else None
        with open(self.log.name, errors="replace") as f:
            said = f.read()[-600:].strip()
        return (f"Xvfb {self.display}: {'running' if alive else 'exited'}, socket "
                f"{path} {'present' if os.path.exists(path) else 'missing'}, a new client "
                + ("-" if probe is None else "connects" if probe.returncode == 0 else
                   f"is refused ({probe.stderr.strip()[:200]})")
                + (f"; it said: {said}" if said else ""))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


# What a GL client prints when the X server refused its connection: a
# failure of the test environment, not a result of the server under test.
X_REFUSED = re.compile(r"XOpenDisplay failed|waffle_display_connect failed|[Cc]an't open display")


def x_refused(out):
    return bool(X_REFUSED.search(out or ""))


DEFAULT_CONFIG = """
[profile test]
vram=512M
max-resources=65536
max-contexts=16
max-clients=8

[instance vgpu0]
profile=test

[instance vgpu1]
profile=test
"""


class Daemon:
    """vgpud --foreground on a private runtime directory."""

    def __init__(self, config=DEFAULT_CONFIG, log_level="info", env=None, ctty=None,
                 state_dir=None, cgroup=None, start_timeout=30):
        self.tmp = tempfile.mkdtemp(prefix="vgpu-test-")
        os.chmod(self.tmp, 0o755)  # tests also act as an unprivileged user
        self.dir = os.path.join(self.tmp, "run")
        self.config_path = os.path.join(self.tmp, "vgpud.conf")
        self.log_path = os.path.join(self.tmp, "vgpud.log")
        # Run-time changes (create, set, destroy) are kept here, never in
        # the host's /var/lib/vgpu; a test that restarts vgpud passes its own.
        self.state_dir = state_dir or os.path.join(self.tmp, "state")
        args = [VGPUD, "--foreground", "--runtime-dir", self.dir, "--log-level", log_level,
                "--state-dir", self.state_dir]
        if config is not None:
            with open(self.config_path, "w") as f:
                f.write(config)
            args += ["--config", self.config_path]
        self.log = open(self.log_path, "w")
        # ctty: a terminal fd that becomes vgpud's controlling terminal.
        # cgroup: a cgroup v2 directory vgpud joins before it runs (the one a
        # service manager would have delegated to it).
        tty_kw = {}
        if ctty is not None:
            tty_kw = {"pass_fds": (ctty,),
                      "preexec_fn": lambda: fcntl.ioctl(ctty, termios.TIOCSCTTY, 0)}
        elif cgroup is not None:
            procs = os.path.join(cgroup, "cgroup.procs")

            def join():
                with open(procs, "w") as f:
                    f.write("0")
            tty_kw = {"preexec_fn": join}
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=sanitizer_env(dict(os.environ, **(env or {}))),
                                     start_new_session=True, **tty_kw)
        wait_for(lambda: os.path.exists(os.path.join(self.dir, "control.sock")) or self.proc.poll() is not None,
                 start_timeout, "vgpud's control socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"vgpud exited at start:\n{self.log_text()}")

    def socket(self, instance):
        return os.path.join(self.dir, instance, "vtest.sock")

    def control(self, request, uid=None):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # generous: a loaded 2-core machine spawning ASan workers answers late
        s.settimeout(30)
        s.connect(os.path.join(self.dir, "control.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return json.loads(data)

    def show(self, instance):
        r = self.control({"command": "show", "name": instance})
        assert r["ok"], r
        return r["instance"]

    def usage(self, instance):
        return self.show(instance)["usage"]

    def log_text(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, pattern, timeout=20):
        return wait_for(lambda: re.search(pattern, self.log_text()), timeout, f"log line /{pattern}/")

    def wait_idle(self, instance, timeout=20):
        """Waits until the instance has no tenants and returns its usage."""
        return wait_for(lambda: (lambda u: u if u["clients"] == 0 else None)(self.usage(instance)),
                        timeout, f"{instance} to have no tenants")

    def wait_probed(self, timeout=60):
        """Waits until vgpud's renderer probe has ended (answered or not),
        e.g. before counting vgpud's fds: it holds the probe's pipe."""
        def done():
            r = self.control({"command": "status"})
            return all(i["renderer"]["state"] != "probing" for i in r.get("instances", []))
        wait_for(done, timeout, "vgpud's renderer probe to end")

    def pid(self):
        return self.proc.pid

    def control_connections(self):
        """Control connections vgpud still holds open (from /proc/net/unix,
        where an accepted socket shows the path it was accepted on)."""
        path = os.path.join(self.dir, "control.sock")
        with open("/proc/net/unix") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        return sum(1 for r in rows if len(r) >= 8 and r[7] == path and r[5] == "03")

    def wait_control_closed(self, timeout=20):
        """Waits until vgpud has closed every control connection (the
        test's own requests included), e.g. before counting its fds."""
        wait_for(lambda: self.control_connections() == 0, timeout, "vgpud to close its control connections")

    def stop(self, expect_rc=0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError("vgpud did not stop within 20 s of SIGTERM")
        rc = self.proc.returncode
        text = self.log_text()
        if "ERROR: AddressSanitizer" in text or "runtime error:" in text or "LeakSanitizer" in text:
            raise AssertionError(f"sanitizer report in vgpud's log:\n{text[-4000:]}")
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError(f"vgpud exited with {rc}, expected {expect_rc}:\n{text[-3000:]}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def client(daemon, instance, argv, display, **kw):
    """Starts a GL program on an instance through vgpu-run."""
    env = dict(os.environ, DISPLAY=display)
    return subprocess.Popen([VGPU_RUN, "--runtime-dir", daemon.dir, "--instance", instance, "--"] + argv,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, **kw)


def program_pid(p, timeout=30):
    """The pid of the program vgpu-run (started as p) runs as its child."""
    def child():
        try:
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                kids = f.read().split()
        except FileNotFoundError:
            return None
        return int(kids[0]) if kids else None
    return wait_for(child, timeout, f"vgpu-run {p.pid} to start its program")


def reference_client(sock, argv, display, **kw):
    env = dict(os.environ, DISPLAY=display)
    return subprocess.Popen([VGPU_RUN, "--socket", sock, "--"] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True, **kw)


def find_mesa_root():
    """The Debian 13 root with Mesa 25's clients (scripts/mesa-root.sh),
    built by `make check`: (path, None), or (None, why) when this machine
    cannot build it (no mirror reachable, not root).  Fails when it could
    be built but has not been."""
    p = subprocess.run(["sh", MESA_ROOT_SH, "--print"], capture_output=True, text=True, timeout=60)
    if p.returncode == 0:
        return p.stdout.strip(), None
    w = subprocess.run(["sh", MESA_ROOT_SH, "--why-not"], capture_output=True, text=True, timeout=60)
    if w.returncode == 0:
        return None, f"no Mesa 25 root, and it cannot be built here: {w.stdout.strip()}"
    raise AssertionError("the Mesa 25 root is not built although this machine can build it: "
                         "run `make mesa-root` (make check does)")


def mesa_root():
    """find_mesa_root()'s path for running its clients; skips the test when
    there is none, or when not root (scripts/in-mesa-root.sh mounts and
    chroots)."""
    if os.geteuid() != 0:
        skip("Mesa 25's clients run chrooted in the Debian 13 root, which needs root")
    root, why = find_mesa_root()
    if not root:
        skip(why)
    return root


def mesa25_client(root, sock, argv, display, cwd="/", **kw):
    """Starts a program of the Mesa 25 root connected to a vtest socket
    (scripts/in-mesa-root.sh: chrooted, in a private mount namespace)."""
    env = dict(os.environ, DISPLAY=display)
    return subprocess.Popen(["sh", IN_MESA_ROOT_SH, "--root", root, "--cwd", cwd, sock, "--"] + list(argv),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, **kw)


class ReferenceServer:
    """virgl_test_server 0.10.4 on its own socket (only --socket-path=P works)."""

    def __init__(self, tmpdir):
        need("virgl_test_server")
        self.sock = os.path.join(tmpdir, "ref.sock")
        self.proc = subprocess.Popen(["virgl_test_server", "--use-egl-surfaceless",
                                      f"--socket-path={self.sock}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: os.path.exists(self.sock), 20, "virgl_test_server's socket")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)


class Output:
    """Reads a client's output as it comes, so a test can wait on what it
    printed, then stops it."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self):
        return "".join(self.lines)

    def stop(self, sig=signal.SIGINT, timeout=30):
        """Sends sig to the client's process group unless it has ended;
        returns (exit status, all its output)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(10)
        return self.proc.returncode, self.text()


def gears(daemon, instance, display, rates=1, args=()):
    """Runs glxgears on an instance until it has printed `rates` frame rates
    (its first comes 5 s after its first frame, then one every 5 s) or has
    ended, then stops it with SIGINT; returns (status, output)."""
    o = Output(client(daemon, instance, ["glxgears", *args], display))
    try:
        wait_for(lambda: len(fps_values(o.text())) >= rates or o.proc.poll() is not None,
                 60 + 5 * rates, f"{rates} frame rate(s) from glxgears on {instance}")
    finally:
        rc, out = o.stop()
    return rc, out


def finish(p, timeout=60):
    """Output of a client started with a `timeout` wrapper or one that ends."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    return p.returncode, out


def fps_values(text):
    """glxgears' rates (see gears())."""
    return [float(x) for x in re.findall(r"frames in [\d.]+ seconds = ([\d.]+) FPS", text)]


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(test, needs=("Xvfb",), config=DEFAULT_CONFIG, env=None, ctty=None):
    """Runs test(xvfb, daemon) with both started and always stopped; the
    daemon must then stop cleanly (exit 0, no sanitizer report)."""
    if os.environ.get("VGPU_HAVE_VIRGL") == "0":
        skip("vgpu was built without virglrenderer (-Dvirgl=disabled): no client can render")
    need("Xvfb", *needs)
    x = Xvfb()
    d = Daemon(config, env=env, ctty=ctty)
    try:
        test(x, d)
        d.stop()
    finally:
        d.kill()
        x.stop()
    sys.exit(0)
