#!/usr/bin/env python3
"""The systemd unit (dist/vgpud.service.in, built as vgpud.service).

1. `systemd-analyze security --offline=true` rates its exposure at 4.0 or
   below (skipped, saying so, where systemd-analyze is missing).
2. No systemd runs as PID 1 here, so the unit cannot be started for real.
   Its settings' effects are reproduced around a real vgpud instead, in a
   mount namespace of this test's own (a private /run, so the system
   directory /run/vgpu is free): every mount read-only but /run/vgpu, the
   cgroup tree and the API file systems (ProtectSystem=strict,
   ProtectKernelTunables=), empty /tmp and /home (PrivateTmp=,
   ProtectHome=), the unit's CapabilityBoundingSet= and NoNewPrivileges=
   (setpriv), its SystemCallFilter= with SystemCallErrorNumber=EPERM and
   its RestrictAddressFamilies= (a seccomp filter made from
   `systemd-analyze syscall-filter`, with unshare() and setns() taken out
   for RestrictNamespaces=).  Under all of it a glxgears tenant renders,
   and clients as nobody, with no VGPU_RUNTIME_DIR, find the system vgpud
   at /run/vgpu (vgpuctl list, vgpu-run).
3. Reload as systemd runs it: vgpud gets NOTIFY_SOCKET; `vgpuctl reload`
   (the unit's ExecReload=) of a file with three errors exits non-zero
   naming all three, vgpud sends RELOADING=1, READY=1 and a STATUS= with the
   refusal, and keeps serving; a good file then reloads with status 0.
Not reproduced: DevicePolicy=/DeviceAllow= (no render node here: llvmpipe),
ProtectKernelModules=/ProtectKernelLogs=/ProtectClock=/LockPersonality=
(system calls vgpud never makes), RestrictNamespaces= for clone() flags."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import harness as h

UNIT = os.environ.get("VGPU_UNIT", "")
SYSCALL_ALLOW = os.environ.get("VGPU_SYSCALL_ALLOW", "")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CONFIG = """[profile p]
vram=128M
max-clients=4

[instance vgpu0]
profile=p
"""
BAD = CONFIG + """
[instance broken]
profile=nonesuch

[profile q]
vram=lots
max-clients=-1
"""
GOOD = CONFIG + """
[instance vgpu1]
profile=p
"""


def unit_settings():
    settings = {}
    with open(UNIT) as f:
        for line in f:
            m = re.match(r"^([A-Za-z]+)=(.*)$", line.strip())
            if m:
                settings.setdefault(m.group(1), []).append(m.group(2))
    return settings


def exposure():
    if not shutil.which("systemd-analyze"):
        print("SKIP part: systemd-analyze is not installed: the exposure score is not measured")
        return
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", UNIT],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", p.stdout + p.stderr)
    assert m, f"no exposure level in systemd-analyze's output:\n{p.stdout}{p.stderr}"
    score = float(m.group(1))
    assert score <= 4.0, f"exposure {score} > 4.0:\n{p.stdout}"
    print(f"ok: systemd-analyze security --offline=true: exposure {score}")


def syscall_names(spec):
    """The system calls of a SystemCallFilter= allow list, groups expanded
    (systemd-analyze syscall-filter names a group's members, groups among
    them)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                          timeout=60).stdout
    groups, cur = {}, None
    for line in text.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif cur is not None and line.startswith("    ") and not line.strip().startswith("#"):
            cur.append(line.strip())
    out, todo, seen = set(), list(spec), set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.startswith("@"):
            assert n in groups, f"systemd-analyze knows no group {n}"
            todo += groups[n]
        else:
            out.add(n)
    return out


def caps(settings):
    names = settings["CapabilityBoundingSet"][0].split()
    return "-all," + ",".join("+" + c[4:].lower() for c in names)


def families(settings):
    numbers = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6,
               "AF_NETLINK": 16}
    return ",".join(str(int(numbers[f])) for f in settings["RestrictAddressFamilies"][0].split())


# The read-only file system of ProtectSystem=strict: every mount remounted
# read-only but the runtime directory, the cgroup tree, /dev and /proc
# (ProtectKernelTunables= then makes /proc/sys read-only too), and empty
# /tmp and /home.
SANDBOX_SH = r"""
set -e
# StateDirectory=vgpu: writable, and here empty (never the host's state).
mkdir -p /var/lib/vgpu
mount -t tmpfs -o mode=700 tmpfs /var/lib/vgpu
findmnt -rn -o TARGET | while read -r t; do
  case "$t" in
    /run/vgpu|/run/vgpu/*|/var/lib/vgpu|/proc|/proc/*|/dev|/dev/*|/sys/fs/cgroup|/sys/fs/cgroup/*) continue ;;
  esac
  mount -o remount,bind,ro "$t" 2>/dev/null || true
done
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755,ro tmpfs /home
if touch /usr/.vgpu-rw-probe 2>/dev/null; then echo "/usr is writable" >&2; exit 1; fi
exec "$@"
"""


def start_vgpud(tmp, settings, config, notify):
    names = syscall_names(settings["SystemCallFilter"][0].split())
    names -= {"unshare", "setns"}  # RestrictNamespaces=yes
    allow = os.path.join(tmp, "syscalls")
    with open(allow, "w") as f:
        f.write("\n".join(sorted(names)) + "\n")
    log = open(os.path.join(tmp, "vgpud.log"), "w")
    env = h.sanitizer_env(dict(os.environ, NOTIFY_SOCKET=notify))
    # LeakSanitizer inspects the process with ptrace(), which the unit's
    # filter refuses as it would under systemd: leaks are the other tests'
    # to find.
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    env.pop("VGPU_RUNTIME_DIR", None)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX_SH, "sandbox",
            "setpriv", "--no-new-privs", "--bounding-set", caps(settings), "--inh-caps=-all",
            SYSCALL_ALLOW, allow, families(settings),
            h.VGPUD, "--foreground", "--config", config]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    return proc, log


class Notify:
    """The NOTIFY_SOCKET end systemd would hold."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(path)
        os.chmod(path, 0o666)
        self.got = []

    def wait(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.got:
                if pred(m):
                    return m
            self.s.settimeout(max(0.1, end - time.monotonic()))
            try:
                self.got.append(self.s.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no {what} from vgpud; got {self.got}")


def inside():
    settings = unit_settings()
    # A private /run: the system directory /run/vgpu of this test only, its
    # own mount so that the read-only remount leaves it writable (systemd's
    # RuntimeDirectory= makes it the same way).
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run"], check=True)
    os.mkdir("/run/vgpu", 0o755)
    subprocess.run(["mount", "--bind", "/run/vgpu", "/run/vgpu"], check=True)
    # Under the private /run: the sandbox's /tmp is an empty one.
    tmp = tempfile.mkdtemp(prefix="vgpu-unit-", dir="/run")
    os.chmod(tmp, 0o755)
    config = os.path.join(tmp, "vgpud.conf")
    with open(config, "w") as f:
        f.write(CONFIG)
    os.chmod(config, 0o644)
    notify = Notify("/run/notify.sock")
    x = h.Xvfb()
    proc, log = start_vgpud(tmp, settings, config, "/run/notify.sock")
    logpath = os.path.join(tmp, "vgpud.log")

    def logtext():
        with open(logpath, errors="replace") as f:
            return f.read()
    try:
        try:
            notify.wait(lambda m: "READY=1" in m, 60, "READY=1")
        except AssertionError:
            raise AssertionError(f"vgpud did not get ready:\n{logtext()}")
        st = notify.wait(lambda m: "STATUS=1 instance, 0 tenants" in m, 10, "STATUS=")
        print(f"ok: vgpud ready under the unit's settings; {st.strip()}")
        assert "syscall-allow:" in logtext(), logtext()

        # Clients as nobody, no VGPU_RUNTIME_DIR: the system vgpud.
        env = {k: v for k, v in os.environ.items()
               if k not in ("VGPU_RUNTIME_DIR", "XDG_RUNTIME_DIR")}
        p = subprocess.run(NOBODY + [h.VGPUCTL, "list"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode == 0 and "vgpu0" in p.stdout, (p.returncode, p.stdout, p.stderr)
        print("ok: vgpuctl list as nobody finds the vgpud at /run/vgpu")
        p = subprocess.run(NOBODY + [h.VGPU_RUN, "--instance", "vgpu0", "--namespace", "never",
                                     "--", "sh", "-c", "echo $VTEST_SOCKET_NAME"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0 and "/run/vgpu/vgpu0/vtest.sock" in p.stdout, \
            (p.returncode, p.stdout, p.stderr)
        print("ok: vgpu-run as nobody finds the vgpud at /run/vgpu")

        # A tenant renders through the sandboxed vgpud and its workers.
        o = h.Output(subprocess.Popen(
            [h.VGPU_RUN, "--instance", "vgpu0", "--", "glxgears"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=dict(env, DISPLAY=x.display),
            start_new_session=True))
        try:
            h.wait_for(lambda: h.fps_values(o.text()) or o.proc.poll() is not None, 90,
                       "a frame rate from glxgears")
            notify.wait(lambda m: "1 tenant" in m, 15, "STATUS= with the tenant")
        finally:
            rc, out = o.stop()
        rates = h.fps_values(out)
        assert rates and rates[0] > 1, f"glxgears did not render:\n{out}\n{logtext()[-3000:]}"
        print(f"ok: glxgears rendered at {rates[0]:.0f} FPS through the sandboxed vgpud")

        # The unit's ExecReload=: a bad file is refused, every error named.
        with open(config, "w") as f:
            f.write(BAD)
        p = subprocess.run([h.VGPUCTL, "reload"], capture_output=True, text=True, env=env,
                           timeout=60)
        err = p.stderr
        assert p.returncode != 0, (p.returncode, p.stdout, err)
        for where in (":9: unknown profile", ":12: bad value \"lots\"", ":13: bad value \"-1\""):
            assert where in err, f"{where!r} not in:\n{err}"
        notify.wait(lambda m: "reload refused:" in m and ":9: unknown profile" in m
                    and "(and 2 more)" in m, 10, "STATUS= with the refusal")
        notify.wait(lambda m: m.startswith("RELOADING=1"), 1, "RELOADING=1")
        print(f"ok: vgpuctl reload of a bad file exits {p.returncode} naming all 3 errors; "
              f"RELOADING=1, READY=1, STATUS=reload refused ... (and 2 more)")
        p = subprocess.run(NOBODY + [h.VGPUCTL, "list"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode == 0 and "vgpu0" in p.stdout, (p.stdout, p.stderr)
        with open(config, "w") as f:
            f.write(GOOD)
        notify.got.clear()
        p = subprocess.run([h.VGPUCTL, "reload"], capture_output=True, text=True, env=env,
                           timeout=60)
        assert p.returncode == 0, (p.stdout, p.stderr)
        notify.wait(lambda m: "READY=1" in m, 10, "READY=1 after the reload")
        notify.wait(lambda m: "STATUS=2 instances" in m and "refused" not in m, 10,
                    "STATUS= of the new configuration")
        print("ok: a good file reloads with status 0; STATUS=2 instances")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        x.stop()
    text = logtext()
    assert "ERROR: AddressSanitizer" not in text and "runtime error:" not in text, text[-4000:]
    assert proc.returncode == 0, f"vgpud exited {proc.returncode}:\n{text[-3000:]}"
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        inside()
        sys.exit(0)
    assert os.path.exists(UNIT), f"no built unit at {UNIT}"
    exposure()
    if os.environ.get("VGPU_HAVE_VIRGL") == "0":
        h.skip("vgpu was built without virglrenderer: no tenant can render")
    if os.geteuid() != 0:
        h.skip("the unit's settings are reproduced with mounts and setpriv: needs root")
    if not SYSCALL_ALLOW:
        h.skip("built without libseccomp: the unit's system call filter cannot be reproduced")
    h.need("Xvfb", "glxgears", "unshare", "setpriv", "findmnt", "systemd-analyze")
    p = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if p.returncode != 0:
        h.skip(f"no mount namespace can be made here: {p.stderr.strip()}")
    os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                          os.path.abspath(__file__), "--inside"])


if __name__ == "__main__":
    main()
