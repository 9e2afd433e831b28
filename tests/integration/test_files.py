#!/usr/bin/env python3
"""Files never used as found.  vgpud, as root and as an unprivileged user
(nobody), against runtime directories and names another user prepared: a
directory owned by someone else or writable by others, a symbolic link as
the directory, on its path, as vgpud.pid, vgpud.log or an instance
directory.  Each start-up is refused with a message naming the path, its
owner and mode, and no victim file is touched.  A clean start makes every
file with its exact mode whatever the umask.  vgpu-run, against every kind
of /tmp/.virgl_test (missing, symbolic link, another user's file, root's
file), gives the program the instance socket at Mesa's path and leaves the
shared /tmp as it found it.

Everything runs in a mount namespace of its own with a fresh tmpfs on /tmp,
so the hostile names never appear in the machine's real /tmp."""
import atexit
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import harness as h

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CONFIG = """
[daemon]
renderer=null

[profile p]
vram=16M

[instance vgpu0]
profile=p
socket-mode=0660
"""
VICTIM_TEXT = "victim's own data\n"


def state_dir(as_nobody):
    """Root's vgpud keeps run-time changes in a directory of this test's,
    never in the host's /var/lib/vgpu (nobody's goes to its own default)."""
    if as_nobody:
        return []
    global STATE_DIR
    if STATE_DIR is None:
        STATE_DIR = tempfile.mkdtemp(prefix="vgpu-files-state-")
        atexit.register(shutil.rmtree, STATE_DIR, True)
    return ["--state-dir", STATE_DIR]


STATE_DIR = None


def vgpud(args, as_nobody=False, env=None, timeout=30):
    """A start-up that is expected to be refused (a started vgpud runs on)."""
    e = h.sanitizer_env(dict(os.environ, **(env or {})))
    e.pop("XDG_RUNTIME_DIR", None)
    e.pop("VGPU_RUNTIME_DIR", None)
    e.update(env or {})
    cmd = (NOBODY if as_nobody else []) + [h.VGPUD, "--config", CONF] + state_dir(as_nobody) + args
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vgpud started instead of refusing: {' '.join(args)}") from None


def victim():
    path = "/tmp/victim"
    with open(path, "w") as f:
        f.write(VICTIM_TEXT)
    os.chmod(path, 0o644)
    return path


def assert_victim_intact(path):
    st = os.lstat(path)
    with open(path) as f:
        assert f.read() == VICTIM_TEXT, "the victim file was written"
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0, "the victim file was changed"


def fresh(path, mode=0o755, uid=0):
    subprocess.run(["rm", "-rf", path], check=True)
    os.mkdir(path)
    os.chmod(path, mode)
    os.chown(path, uid, uid)
    return path


def refused(p, *needles):
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    for n in needles:
        assert n in p.stderr, f"{n!r} not in: {p.stderr}"
    assert "AddressSanitizer" not in p.stderr and "runtime error:" not in p.stderr, p.stderr


def start_stop(args, as_nobody=False, env=None):
    """Starts vgpud in the foreground, logging to a file wait_ready() reads."""
    e = h.sanitizer_env(dict(os.environ))
    e.pop("XDG_RUNTIME_DIR", None)
    e.pop("VGPU_RUNTIME_DIR", None)
    e.update(env or {})
    cmd = (NOBODY if as_nobody else []) + [h.VGPUD, "--foreground", "--config", CONF] + state_dir(as_nobody) + args
    log = open("/tmp/vgpud-files.log", "w+")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=e)
    p.log = log
    return p


def log_of(proc):
    proc.log.seek(0)
    return proc.log.read()


def wait_ready(proc, rd):
    # "ready" is logged once the signal handlers are in place.
    h.wait_for(lambda: " ready: runtime dir " in log_of(proc) or proc.poll() is not None,
               30, "vgpud to be ready")
    assert proc.poll() is None, log_of(proc)
    assert os.path.exists(os.path.join(rd, "control.sock")), log_of(proc)


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)
    out = log_of(proc)
    proc.log.close()
    assert proc.returncode == 0, out
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out


def daemon_as_root():
    v = victim()
    # Another user's directory, and one others may write.
    rd = fresh("/tmp/rd", 0o755, 65534)
    refused(vgpud(["-f", "-r", rd]), f"{rd} is owned by uid 65534 with mode 0755")
    assert os.listdir(rd) == []
    os.chown(rd, 0, 0)
    os.chmod(rd, 0o777)
    refused(vgpud(["-f", "-r", rd]), f"{rd} is owned by uid 0 with mode 0777")
    assert os.listdir(rd) == []
    # A parent others may write without the sticky bit.
    refused(vgpud(["-f", "-r", rd + "/sub"]), f"{rd} (a parent of {rd}/sub)", "mode 0777")
    assert os.listdir(rd) == []
    # A symbolic link as the directory or on its path.
    target = fresh("/tmp/target", 0o755)
    os.symlink(target, "/tmp/rdlink")
    refused(vgpud(["-f", "-r", "/tmp/rdlink"]), "/tmp/rdlink is a symbolic link")
    refused(vgpud(["-f", "-r", "/tmp/rdlink/sub"]), "/tmp/rdlink is a symbolic link")
    assert os.listdir(target) == []
    print("ok: root: foreign, writable and linked runtime directories refused")

    # Symbolic links inside a good directory: pid file, log file, instance.
    rd = fresh("/tmp/rd", 0o755)
    os.symlink(v, os.path.join(rd, "vgpud.pid"))
    refused(vgpud(["-f", "-r", rd]), f"{rd}/vgpud.pid is a symbolic link")
    os.unlink(os.path.join(rd, "vgpud.pid"))
    os.link(v, os.path.join(rd, "vgpud.pid"))  # a second name for the victim
    refused(vgpud(["-f", "-r", rd]), f"{rd}/vgpud.pid has 2 hard links")
    os.unlink(os.path.join(rd, "vgpud.pid"))
    os.symlink(v, os.path.join(rd, "vgpud.log"))
    refused(vgpud(["-r", rd]), f"{rd}/vgpud.log is a symbolic link")  # detaching: logs to it
    assert os.listdir(rd) == ["vgpud.log"], os.listdir(rd)
    os.unlink(os.path.join(rd, "vgpud.log"))
    os.symlink(target, os.path.join(rd, "vgpu0"))
    refused(vgpud(["-f", "-r", rd]), f"{rd}/vgpu0 is a symbolic link")
    assert os.listdir(target) == []
    assert os.listdir(rd) == ["vgpu0"], os.listdir(rd)
    os.unlink(os.path.join(rd, "vgpu0"))
    os.mkdir(os.path.join(rd, "vgpu0"), 0o777)
    os.chmod(os.path.join(rd, "vgpu0"), 0o777)
    refused(vgpud(["-f", "-r", rd]), f"{rd}/vgpu0 is owned by uid 0 with mode 0777")
    os.rmdir(os.path.join(rd, "vgpu0"))
    # A stale non-socket where a socket goes is not deleted.
    os.mkdir(os.path.join(rd, "vgpu0"))
    os.symlink(v, os.path.join(rd, "vgpu0", "vtest.sock"))
    refused(vgpud(["-f", "-r", rd]), "vtest.sock", "File exists")
    assert os.readlink(os.path.join(rd, "vgpu0", "vtest.sock")) == v
    os.unlink(os.path.join(rd, "vgpu0", "vtest.sock"))
    # The same for the instance's vhost-user socket (for QEMU).
    os.symlink(v, os.path.join(rd, "vgpu0", "vhost-user.sock"))
    refused(vgpud(["-f", "-r", rd]), "vhost-user.sock", "File exists")
    assert os.readlink(os.path.join(rd, "vgpu0", "vhost-user.sock")) == v
    subprocess.run(["rm", "-rf", os.path.join(rd, "vgpu0")], check=True)
    assert_victim_intact(v)
    print("ok: root: linked pid file, log file, instance directory and socket refused; "
          "victim untouched")

    # A clean start under a strict umask: exact modes, all gone after.
    old = os.umask(0o077)
    try:
        p = start_stop(["-r", "/tmp/new/run"])
    finally:
        os.umask(old)
    wait_ready(p, "/tmp/new/run")
    modes = {n: stat.S_IMODE(os.lstat(os.path.join("/tmp/new/run", n)).st_mode)
             for n in ("", "control.sock", "vgpu0", "vgpu0/vtest.sock", "vgpu0/vhost-user.sock",
                       "vgpud.pid")}
    assert modes == {"": 0o755, "control.sock": 0o666, "vgpu0": 0o755,
                     "vgpu0/vtest.sock": 0o660, "vgpu0/vhost-user.sock": 0o660,
                     "vgpud.pid": 0o644}, modes
    # A run-time socket-mode change reaches the socket (never through a link).
    r = subprocess.run([h.VGPUCTL, "--runtime-dir", "/tmp/new/run", "set", "vgpu0",
                        "socket-mode=0600"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(os.lstat("/tmp/new/run/vgpu0/vtest.sock").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat("/tmp/new/run/vgpu0/vhost-user.sock").st_mode) == 0o600
    stop(p)
    assert not os.path.exists("/tmp/new/run")
    shown = ", ".join(f"{n or '.'} {m:04o}" for n, m in modes.items())
    print(f"ok: root: clean start under umask 077: {shown}; socket-mode=0600 applied at run time")


def daemon_as_nobody():
    v = victim()
    # The non-root fallback /tmp/vgpu-UID, made by another user first.
    rd = fresh("/tmp/vgpu-65534", 0o777)
    os.symlink(v, os.path.join(rd, "vgpud.pid"))
    refused(vgpud(["-f"], as_nobody=True), "/tmp/vgpu-65534 is owned by uid 0 with mode 0777",
            "must be owned by uid 65534")
    os.unlink(os.path.join(rd, "vgpud.pid"))
    os.chown(rd, 65534, 65534)
    os.chmod(rd, 0o1777)
    refused(vgpud(["-f"], as_nobody=True), "/tmp/vgpu-65534 is owned by uid 65534 with mode 1777")
    os.rmdir(rd)
    # Another user's parent directory.
    fresh("/tmp/other", 0o755, 1000)
    refused(vgpud(["-f", "-r", "/tmp/other/run"], as_nobody=True),
            "/tmp/other (a parent of /tmp/other/run) is owned by uid 1000")
    assert_victim_intact(v)
    print("ok: nobody: pre-made /tmp/vgpu-65534 and a foreign parent refused; victim untouched")

    # Its own fallback directory, made fresh: 0755 and owned by nobody.
    p = start_stop([], as_nobody=True)
    wait_ready(p, rd)
    st = os.lstat(rd)
    assert st.st_uid == 65534 and stat.S_IMODE(st.st_mode) == 0o755, (st.st_uid, oct(st.st_mode))
    assert os.lstat(os.path.join(rd, "vgpu0", "vtest.sock")).st_uid == 65534
    stop(p)
    assert not os.path.exists(rd)
    # VGPU_RUNTIME_DIR, as the tools read it.
    p = start_stop([], as_nobody=True, env={"VGPU_RUNTIME_DIR": "/tmp/from-env"})
    wait_ready(p, "/tmp/from-env")
    stop(p)
    print("ok: nobody: starts in a fresh /tmp/vgpu-65534 (0755, its own) and in $VGPU_RUNTIME_DIR")


def listening_socket():
    os.makedirs("/tmp/sockdir", exist_ok=True)
    os.chmod("/tmp/sockdir", 0o1777)  # the program writes here, also as nobody
    path = "/tmp/sockdir/vtest.sock"
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen()
    os.chmod(path, 0o666)
    return s, path


def tmp_state():
    """What the shared /tmp holds: names, kinds, owners, inodes."""
    out = {}
    for n in os.listdir("/tmp"):
        st = os.lstat(os.path.join("/tmp", n))
        out[n] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_ino, stat.S_IMODE(st.st_mode))
    return out


PROBE = ('stat -L -c type=%F /tmp/.virgl_test; cat /tmp/sockdir/hello; '
         'echo made > /tmp/sockdir/from-program')


def vgpu_run(sock, prefix=()):
    p = subprocess.run(list(prefix) + [h.VGPU_RUN, "-v", "--socket", sock, "--", "sh", "-c", PROBE],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def vgpu_run_cases(prefix, who):
    s, sock = listening_socket()
    with open("/tmp/sockdir/hello", "w") as f:
        f.write("shared\n")
    v = victim()
    cases = {
        "missing": lambda: None,
        "symlink to a victim": lambda: os.symlink(v, "/tmp/.virgl_test"),
        "another user's file": lambda: (open("/tmp/.virgl_test", "w").close(),
                                        os.chown("/tmp/.virgl_test", 1000, 1000)),
        "another user's directory": lambda: (os.mkdir("/tmp/.virgl_test"),
                                             os.chown("/tmp/.virgl_test", 1000, 1000)),
        "root's file": lambda: open("/tmp/.virgl_test", "w").close(),
    }
    for name, make in cases.items():
        subprocess.run(["rm", "-rf", "/tmp/.virgl_test", "/tmp/sockdir/from-program"], check=True)
        make()
        before = tmp_state()
        rc, out, err = vgpu_run(sock, prefix)
        assert rc == 0, (name, rc, out, err)
        # The program sees the socket at Mesa's path and the shared /tmp's
        # directories, and what it writes in them is there afterwards.
        assert "type=socket" in out and "shared" in out, (name, out, err)
        with open("/tmp/sockdir/from-program") as f:
            assert f.read() == "made\n", name
        os.unlink("/tmp/sockdir/from-program")
        after = tmp_state()
        assert after == before, (name, before, after)
        assert_victim_intact(v)
        how = "covered in place" if "bound over the existing file" in err else "private /tmp"
        print(f"ok: vgpu-run as {who}, /tmp/.virgl_test {name}: socket seen ({how}), "
              "/tmp unchanged")
    s.close()
    subprocess.run(["rm", "-rf", "/tmp/.virgl_test", "/tmp/sockdir"], check=True)


def userns_allowed():
    p = subprocess.run(NOBODY + ["unshare", "--user", "--map-root-user", "--mount", "true"],
                       capture_output=True, text=True, timeout=30)
    return p.returncode == 0


def inner():
    global CONF
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "vgpu-test-tmp", "/tmp"], check=True)
    CONF = "/tmp/vgpud.conf"
    with open(CONF, "w") as f:
        f.write(CONFIG)
    os.chmod(CONF, 0o644)
    daemon_as_root()
    daemon_as_nobody()
    vgpu_run_cases((), "root")
    if userns_allowed():
        vgpu_run_cases(NOBODY, "nobody")
    else:
        print("note: unprivileged user namespaces are disabled: vgpu-run as nobody not tried")
    sys.exit(0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner()
    if os.geteuid() != 0:
        h.skip("needs root (it prepares files as other users and a private /tmp)")
    h.need("setpriv", "unshare")
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                        os.path.abspath(__file__), "--inner"])
    sys.exit(p.returncode)
