#!/usr/bin/env python3
"""vgpu-run as vgpu-run(1) documents it: usage errors exit 2, errors before
the command runs exit 125 with a message naming the socket, 126/127 as for
env(1), otherwise the command's own status and process id (exec); the
environment it sets, the private bind of Mesa's fixed socket path, the
VGPU_INSTANCE / VGPU_RUNTIME_DIR defaults, a socket the caller may not
use, and an unprivileged caller (user namespace where the kernel allows
one, else the documented refusal); the namespace decided from the
client's Mesa (this host's Mesa 22.3 gets one; Mesa 25 of the Debian 13
root, or a driver named by LIBGL_DRIVERS_PATH that reads
VTEST_SOCKET_NAME, gets none, and Mesa 25 renders so as nobody) and
--namespace overriding it."""
import os
import re
import shutil
import subprocess

import harness as h

CONFIG = """
[profile p]
vram=128M
max-clients=4

[instance vgpu0]
profile=p

[instance locked]
profile=p
socket-mode=0600

[profile tiny]
vram=1M

[instance tiny]
profile=tiny
"""

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
MESA_PATH = "/tmp/.virgl_test"
# glxinfo -B trips an X error under Xvfb with virpipe; glxgears -info
# prints the same renderer line and then renders.
# It runs until it has printed a frame rate (see gears()); the timeout
# only bounds a client that hangs.
GEARS = ["timeout", "-s", "INT", "120", "glxgears", "-info"]


def gears(prefix, args, env=None):
    """vgpu-run ARGS with GEARS, stopped by SIGINT (which timeout passes
    on) once glxgears printed a frame rate or ended: (status, output)."""
    o = h.Output(subprocess.Popen(list(prefix) + [h.VGPU_RUN] + list(args) + ["--"] + GEARS,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=dict(os.environ, **(env or {})), start_new_session=True))
    try:
        h.wait_for(lambda: h.fps_values(o.text()) or o.proc.poll() is not None, 90,
                   "a frame rate from glxgears")
    finally:
        rc, out = o.stop()
    return rc, out


def vrun(args, env=None, prefix=(), timeout=60):
    p = subprocess.run(list(prefix) + [h.VGPU_RUN] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def ended_by_vgpud(x, d, rd):
    """A session vgpud ends: vgpu-run's last line gives vgpud's reason and
    it exits 122; vgpud without instance or not running: 125 and one
    line."""
    rc, out, err = vrun(rd + ["--instance", "tiny", "--", "timeout", "60", "glxgears"],
                        env={"DISPLAY": x.display}, timeout=90)
    last = err.rstrip().splitlines()[-1]
    assert rc == 122, (rc, err[-2000:])
    assert re.fullmatch(r"vgpu-run: session ended by vgpud: VRAM limit 1 MiB reached on instance "
                        r"tiny \(the session asked for [\d.]+ [KM]iB in all, other tenants held 0 B\)",
                        last), last
    print(f"ok: a refused tenant's last line: {last}")
    # The same through the control socket: only the same uid (or an admin)
    # reads it.
    ends = d.control({"command": "session-end", "pid": 1})
    assert ends["ok"] and isinstance(ends["sessions"], list), ends

    # vgpud died and left its sockets: not started, one line naming them.
    dead = h.Daemon(CONFIG)
    try:
        dead.kill()
        rc, _, err = vrun(["--runtime-dir", dead.dir, "--", "true"])
        assert rc == 125 and err == (f"vgpu-run: vgpud is not running: nothing listens on "
                                     f"{dead.dir}/control.sock (a stale socket of a vgpud that "
                                     f"ended; runtime dir {dead.dir})\n"), (rc, err)
    finally:
        shutil.rmtree(dead.tmp, ignore_errors=True)
    empty = os.path.join(d.tmp, "empty-run")
    os.mkdir(empty)
    rc, _, err = vrun(["--runtime-dir", empty, "--", "true"])
    assert rc == 125 and f"vgpud is not running: no {empty}/control.sock" in err, (rc, err)
    print("ok: a stale or missing vgpud is named before anything starts")


def userns_allowed():
    """Whether an unprivileged user may create a user namespace here."""
    p = subprocess.run(NOBODY + ["unshare", "--user", "--map-root-user", "--mount", "true"],
                       capture_output=True, text=True, timeout=30)
    return p.returncode == 0


def namespace_choice(d, rd, sock0, display):
    """The mount namespace comes from the client's Mesa (or --namespace):
    this host's Mesa 22.3 gets one, a Mesa that reads VTEST_SOCKET_NAME
    (Mesa 25 of the Debian 13 root, a driver named by LIBGL_DRIVERS_PATH)
    gets none."""
    own_ns = os.readlink("/proc/self/ns/mnt")
    sock_ino = str(os.stat(sock0).st_ino)
    probe = f"readlink /proc/self/ns/mnt; stat -L -c %i {MESA_PATH} 2>/dev/null || echo none"

    def decided(args, env=None, prefix=()):
        rc, out, err = vrun(rd + ["--verbose"] + args + ["--", "sh", "-c", probe], env=env, prefix=prefix)
        assert rc == 0, (args, rc, err)
        ns, ino = out.split()
        # in a namespace Mesa's fixed path is the instance's socket
        assert (ino == sock_ino) == (ns != own_ns), (args, out, err)
        return ns != own_ns, err

    ns, err = decided([])
    assert ns and re.search(r"Mesa driver \S+/dri/swrast_dri\.so does not read VTEST_SOCKET_NAME: "
                            r"private mount namespace", err), err
    ns, err = decided(["--namespace=never"])
    assert not ns and "--namespace=never: no mount namespace" in err, err
    ns, err = decided(["--namespace=auto"])
    assert ns, err
    rc, _, err = vrun(rd + ["--namespace=sometimes", "--", "true"])
    assert rc == 2 and "auto, always or never" in err, (rc, err)

    # A driver that reads the variable, where LIBGL_DRIVERS_PATH sends the
    # loader (this host's libGLX_mesa has no libgallium: its DRI driver
    # decides).
    dri = os.path.join(d.tmp, "dri")
    os.mkdir(dri)
    with open(os.path.join(dri, "swrast_dri.so"), "wb") as f:
        f.write(b"\x7fELF\0VTEST_SOCKET_NAME\0")
    ns, err = decided([], env={"LIBGL_DRIVERS_PATH": dri})
    assert not ns and f"{dri}/swrast_dri.so reads VTEST_SOCKET_NAME: no mount namespace" in err, err
    print("ok: Mesa 22.3 gets a namespace, --namespace=never and a driver reading "
          "VTEST_SOCKET_NAME none")

    root, why = h.find_mesa_root()
    if not root:
        print(f"note: the Mesa 25 decision is not checked: {why}")
        return
    ns, err = decided(["--mesa-root", root])
    assert not ns and re.search(r"Mesa driver \S+/libgallium-25\.\S+\.so reads VTEST_SOCKET_NAME: "
                                r"no mount namespace", err), err
    ns, err = decided(["--mesa-root", root, "--namespace=always"])
    assert ns and "--namespace=always: private mount namespace" in err, err
    # No namespace needed: an unprivileged caller runs without one, even
    # where user namespaces are disabled.
    ns, err = decided(["--mesa-root", root], prefix=NOBODY)
    assert not ns, err
    print(f"ok: Mesa 25 of {root} reads VTEST_SOCKET_NAME: no namespace, also as nobody")

    # And it renders so: Mesa 25's glxgears, run unchrooted by the root's
    # own dynamic loader on the root's libraries, as nobody, finds the
    # socket through VTEST_SOCKET_NAME alone (Mesa's fixed path is not the
    # socket: no namespace binds it).  The socket is virgl_test_server's:
    # this checks vgpu-run, whatever protocol version vgpud offers (the
    # client matrix renders Mesa 25 through vgpud).
    lib = os.path.join(root, "usr/lib/x86_64-linux-gnu")
    loader = os.path.join(root, "lib64/ld-linux-x86-64.so.2")
    if not os.path.exists(loader) or not shutil.which("virgl_test_server"):
        print(f"note: no {loader} (not an x86-64 root) or no virgl_test_server: "
              "Mesa 25 not rendered through vgpu-run")
        return
    gears25 = ["timeout", "-s", "INT", "120", loader, "--library-path", lib,
               os.path.join(root, "usr/bin/glxgears"), "-info"]
    ref = h.ReferenceServer(d.tmp)
    try:
        os.chmod(ref.sock, 0o666)  # for nobody
        o = h.Output(subprocess.Popen(NOBODY + [h.VGPU_RUN, "--socket", ref.sock, "--verbose", "--mesa-root",
                                                root, "--"] + gears25,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=dict(os.environ, DISPLAY=display), start_new_session=True))
        try:
            h.wait_for(lambda: h.fps_values(o.text()) or o.proc.poll() is not None, 90,
                       "a frame rate from Mesa 25's glxgears")
        finally:
            _, out = o.stop()
    finally:
        ref.stop()
    shown = "\n".join(l for l in out.splitlines() if not l.startswith("GL_EXTENSIONS"))
    assert "reads VTEST_SOCKET_NAME: no mount namespace" in out, shown
    assert re.search(r"GL_RENDERER\s+= virgl", out) and re.search(r"GL_VERSION\s+= .*Mesa 25\.", out), shown
    assert h.fps_values(out), shown
    print(f"ok: Mesa 25's glxgears rendered through vgpu-run as nobody without a namespace, "
          f"{h.fps_values(out)[0]:.0f} FPS")


def test(x, d):
    rd = ["--runtime-dir", d.dir]
    sock0 = d.socket("vgpu0")

    # Informational options and usage errors.
    rc, out, _ = vrun(["--help"])
    assert rc == 0 and all(o in out for o in ("--instance", "--socket", "--runtime-dir")), out
    assert out.count("-- COMMAND [ARG...]") == 1, out  # the usage line names the command once
    rc, out, _ = vrun(["--version"])
    assert rc == 0 and re.match(r"vgpu-run \d+\.\d+", out), out
    rc, _, err = vrun(rd)
    assert rc == 2 and "no command given" in err, (rc, err)
    rc, _, err = vrun(["--frobnicate", "--", "true"])
    assert rc == 2 and "try --help" in err, (rc, err)

    # Errors before the command runs: 125 and a message naming the target.
    rc, _, err = vrun(rd + ["--instance", "nosuch", "--", "true"])
    assert rc == 125 and err.count("\n") == 1, (rc, err)
    assert f"no vGPU instance 'nosuch' in vgpud (runtime dir {d.dir}); instances: locked, tiny, vgpu0" in err, err
    plain = os.path.join(d.tmp, "not-a-socket")
    open(plain, "w").close()
    rc, _, err = vrun(["--socket", plain, "--", "true"])
    assert rc == 125 and plain in err and "not a socket" in err, (rc, err)
    rc, _, err = vrun(["--socket", plain + ".missing", "--", "true"])
    assert rc == 125 and "No such file" in err, (rc, err)
    print("ok: usage errors and refusals")

    # The command's status, as env(1) has it.
    assert vrun(rd + ["--", "sh", "-c", "exit 7"])[0] == 7
    rc, _, err = vrun(rd + ["--", "/nonexistent/program"])
    assert rc == 127 and "cannot run /nonexistent/program" in err, (rc, err)
    rc, _, err = vrun(rd + ["--", d.config_path])  # exists, not executable
    assert rc == 126, (rc, err)
    print("ok: exit statuses 7, 127, 126")

    # The command is vgpu-run's child, sees the documented environment,
    # and finds the instance's socket at Mesa's fixed path.
    probe = ('echo ppid=$PPID; echo gd=$GALLIUM_DRIVER; echo sw=$LIBGL_ALWAYS_SOFTWARE; '
             f'echo vs=$VTEST_SOCKET_NAME; stat -c type=%F {MESA_PATH}')
    p = subprocess.Popen([h.VGPU_RUN] + rd + ["--", "sh", "-c", probe], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got["ppid"] == str(p.pid), (got, p.pid)
    assert (got["gd"], got["sw"], got["vs"]) == ("virpipe", "1", sock0), got
    assert got["type"] == "socket", got
    # The bind is private to the command: outside it Mesa's path is untouched.
    assert not os.path.exists(MESA_PATH) or not os.path.samestat(os.stat(MESA_PATH), os.stat(sock0))
    print("ok: the command is vgpu-run's child; environment and private bind as documented")

    namespace_choice(d, rd, sock0, x.display)
    ended_by_vgpud(x, d, rd)

    # Defaults from the environment.
    rc, out, err = vrun(["--", "sh", "-c", "echo $VTEST_SOCKET_NAME"],
                        env={"VGPU_RUNTIME_DIR": d.dir, "VGPU_INSTANCE": "locked"})
    assert rc == 0 and out.strip() == d.socket("locked"), (out, err)

    # A real GL client renders, and vgpud accounts it to the same pid.
    env = {"DISPLAY": x.display}
    o = h.Output(subprocess.Popen([h.VGPU_RUN] + rd + ["--"] + GEARS, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **env),
                                  start_new_session=True))
    try:
        # vgpu-run's child `timeout` forks glxgears: the tenant vgpud
        # accounts is that grandchild.
        tenant = h.wait_for(lambda: d.show("vgpu0")["tenants"], 30, "a tenant on vgpu0")[0]
        ppid = parent(parent(tenant["client_pid"]))
        assert ppid == o.proc.pid, (tenant, o.proc.pid)
        h.wait_for(lambda: h.fps_values(o.text()) or o.proc.poll() is not None, 90,
                   "a frame rate from glxgears")
    finally:
        _, out = o.stop()
    assert "GL_RENDERER   = virgl" in out and h.fps_values(out), out
    d.wait_log(r"vgpu0: client pid %d uid 0 connected" % tenant["client_pid"])
    print("ok: glxgears renders through virgl")

    # An unprivileged caller: a socket it may not use is named, not hidden
    # behind Mesa's "connection lost".
    rc, _, err = vrun(rd + ["--instance", "locked", "--", "true"], prefix=NOBODY)
    assert rc == 125 and "no permission to connect" in err and "mode 0600" in err, (rc, err)
    rc, out = gears(NOBODY + ["env", f"DISPLAY={x.display}"], rd)
    err = out
    if userns_allowed():
        assert "GL_RENDERER   = virgl" in out and h.fps_values(out), out
        print("ok: as nobody, rendered through an unprivileged user namespace")
    else:
        assert rc == 125 and "unprivileged user namespaces are disabled" in err, (rc, err)
        print("ok: as nobody, user namespaces are disabled here and vgpu-run says so")
    d.wait_idle("vgpu0")


if __name__ == "__main__":
    h.run(test, needs=("glxgears", "setpriv", "unshare"), config=CONFIG)
