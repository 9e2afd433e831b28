#!/usr/bin/env python3
"""VM tenants: vgpu-vhost-gpu (the back-end program QEMU and libvirt start)
and each instance's DIR/NAME/vhost-user.sock.

Against a stand-in worker (this script, run by vgpud as its worker: it
logs its command line and serves until its client hangs up), so what vgpud
and the program do is checked whatever the real worker's front-ends are:

  - --print-capabilities is JSON of type gpu; render-node only with one;
  - no vgpud: one line, non-zero, before any socket is made;
  - an fd handed over lands on the right instance as a tenant of kind vm
    (vgpuctl list/show --json and text), with the worker started as
    --protocol=vhost-user-gpu --heads=<profile heads> --virgl=on|off, and
    the program exits 0 when the worker ends cleanly, 1 when it does not;
  - a non-socket fd, a listening socket, a datagram socket and a caller
    that is not an admin are refused, and nothing is started;
  - destroy of an instance with a VM tenant is refused without --force;
  - killing the program ends the worker;
  - vhost-user.sock accepts a connection and starts a vm worker.

Then against the real vgpu-worker, when it has the vhost-user-gpu
front-end (said, not skipped, when it has not): QEMU's first requests
(GET_FEATURES, the protocol features, GET_CONFIG) on vhost-user.sock and
through vgpu-vhost-gpu; num_scanouts is the profile's heads (1, 3), and the
program exits 0 once QEMU hangs up."""
import glob
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

import harness as h

VHOST_GPU = os.environ.get("VGPU_VHOST_GPU", "vgpu-vhost-gpu")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SELF = os.path.abspath(__file__)

CONFIG = """
[daemon]
vm-instance=vgpu1
control-timeout=1

[profile test]
vram=512M
max-clients=8
heads=3

[profile one]
vram=64M
heads=1

[instance vgpu0]
profile=one

[instance vgpu1]
profile=test
"""


# ---- the stand-in worker (run by vgpud) -------------------------------------

def stand_in_worker():
    if "--probe" in sys.argv:
        return 4
    print("stand-in-worker: argv " + " ".join(sys.argv[1:]), file=sys.stderr, flush=True)
    client = socket.socket(fileno=3)
    client.setblocking(True)
    # Serves until the client hangs up (clean) or says "fail" (unclean).
    while True:
        data = client.recv(4096)
        if not data:
            return 0
        if b"fail" in data:
            return 2


# ---- helpers ----------------------------------------------------------------

def ctl_json(d, *args):
    p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, "--json"] + list(args),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def tenants(d, name):
    return d.show(name).get("tenants", [])


def vm_program(d, fd, *args, pre=(), env=None):
    return subprocess.Popen(list(pre) + [VHOST_GPU, "--runtime-dir", d.dir, f"--fd={fd}"] + list(args),
                            pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=h.sanitizer_env(dict(os.environ, **(env or {}))))


def attach(d, *args):
    """A socketpair whose one end goes to vgpu-vhost-gpu; returns (our end,
    the program, the tenant record once it shows)."""
    ours, theirs = socket.socketpair()
    p = vm_program(d, theirs.fileno(), *args)
    theirs.close()
    return ours, p


def wait_tenant(d, name, pred=lambda t: True):
    return h.wait_for(lambda: next((t for t in tenants(d, name) if pred(t)), None), 30,
                      f"a tenant on {name}")


def finish(p, timeout=30):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


# ---- the tests ---------------------------------------------------------------

def test_capabilities():
    p = subprocess.run([VHOST_GPU, "--print-capabilities"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    caps = json.loads(p.stdout)
    assert caps["type"] == "gpu", caps
    nodes = [n for n in glob.glob("/dev/dri/renderD*") if stat.S_ISCHR(os.stat(n).st_mode)]
    assert ("render-node" in caps["features"]) == bool(nodes), (caps, nodes)
    assert set(caps["features"]) <= {"virgl", "render-node"}, caps
    # QEMU's short form too.
    q = subprocess.run([VHOST_GPU, "-c"], capture_output=True, text=True, timeout=30)
    assert q.returncode == 0 and json.loads(q.stdout) == caps
    print(f"capabilities: {caps['features']} ({len(nodes)} render node(s) here)")


def test_no_vgpud():
    with tempfile.TemporaryDirectory() as tmp:
        a, b = socket.socketpair()
        p = subprocess.run([VHOST_GPU, "--runtime-dir", tmp, f"--fd={b.fileno()}"], pass_fds=(b.fileno(),),
                           capture_output=True, text=True, timeout=30)
        lines = p.stderr.splitlines()
        assert p.returncode != 0 and len(lines) == 1 and "vgpud is not running" in lines[0], p.stderr
        sock = os.path.join(tmp, "vm.sock")
        p = subprocess.run([VHOST_GPU, "--runtime-dir", tmp, f"--socket-path={sock}"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and len(p.stderr.splitlines()) == 1, p.stderr
        assert not os.path.exists(sock), "a socket was made with no vgpud to serve it"
        p = subprocess.run([VHOST_GPU, "--runtime-dir", tmp], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "exactly one of" in p.stderr, p.stderr
        print("no vgpud: " + lines[0])


def test_handoff(d):
    # No --instance: [daemon] vm-instance (vgpu1, heads=3).  --virgl asks for 3D.
    ours, p = attach(d, "--virgl")
    t = wait_tenant(d, "vgpu1")
    assert t["kind"] == "vm" and t["client_pid"] == os.getpid(), t
    d.wait_log(r"stand-in-worker: argv --protocol=vhost-user-gpu --heads=3 --virgl=on --client-fd=3 ")
    d.wait_log(r"vgpu1: VM \(QEMU\) pid %d uid 0 connected: worker %d" % (os.getpid(), t["worker_pid"]))
    listed = {i["name"]: i for i in ctl_json(d, "list")["instances"]}
    assert listed["vgpu1"]["usage"]["vm_clients"] == 1 and listed["vgpu0"]["usage"]["vm_clients"] == 0
    assert listed["vgpu1"]["vm_socket"] == os.path.join(d.dir, "vgpu1", "vhost-user.sock")
    shown = ctl_json(d, "show", "vgpu1")["instance"]
    assert [x["kind"] for x in shown["tenants"]] == ["vm"], shown
    text = subprocess.run([h.VGPUCTL, "-r", d.dir, "show", "vgpu1"], capture_output=True, text=True).stdout
    rows = [line.split() for line in text.splitlines()]
    assert "clients    1/8 (1 VM)" in text and ["vm", str(t["worker_pid"])] in [r[:2] for r in rows], text
    text = subprocess.run([h.VGPUCTL, "-r", d.dir, "list"], capture_output=True, text=True).stdout
    assert " VMS " in text.splitlines()[0], text
    # The program lives while the worker does, past the control socket's
    # idle timeout (1 s here): an idle connection opened after it is closed
    # by vgpud first.
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(os.path.join(d.dir, "control.sock"))
    idle.settimeout(30)
    assert idle.recv(1) == b"", "vgpud did not close an idle control connection"
    idle.close()
    assert p.poll() is None, finish(p)
    assert tenants(d, "vgpu1"), "the VM's tenant went with the idle timeout"
    # QEMU hanging up ends both, cleanly.
    ours.close()
    rc, out, err = finish(p)
    assert rc == 0 and "VM attached to instance vgpu1" in err, (rc, err)
    d.wait_idle("vgpu1")

    # --instance, no --virgl: vgpu0's profile has heads=1.  A worker that
    # ends badly makes the program exit 1 with vgpud's reason.
    ours, p = attach(d, "--instance", "vgpu0")
    wait_tenant(d, "vgpu0")
    d.wait_log(r"stand-in-worker: argv --protocol=vhost-user-gpu --heads=1 --virgl=off ")
    ours.sendall(b"fail")
    rc, out, err = finish(p)
    assert rc == 1 and "the VM's worker ended: protocol violation (exit 2)" in err, (rc, err)
    ours.close()
    d.wait_idle("vgpu0")

    # --socket-path: the program listens, QEMU connects, the socket file goes.
    path = os.path.join(d.tmp, "gpu.sock")
    p = subprocess.Popen([VHOST_GPU, "--runtime-dir", d.dir, f"--socket-path={path}", "-i", "vgpu0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=h.sanitizer_env(dict(os.environ)))
    h.wait_for(lambda: os.path.exists(path) or p.poll() is not None, 30, "the program's socket")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600, oct(os.lstat(path).st_mode)
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu.connect(path)
    t = wait_tenant(d, "vgpu0")
    assert t["kind"] == "vm" and t["client_pid"] == os.getpid(), t
    assert not os.path.exists(path), "the listening socket was left behind"
    qemu.close()
    rc, out, err = finish(p)
    assert rc == 0, (rc, err)
    d.wait_idle("vgpu0")

    # Killing the program (libvirt stopping the back-end) ends the worker.
    ours, p = attach(d)
    t = wait_tenant(d, "vgpu1")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    d.wait_log(r"vgpu1: the caller that attached VM \(QEMU\) pid \d+ left: ending worker %d" % t["worker_pid"])
    d.wait_idle("vgpu1")
    ours.close()
    print("handoff: kind vm on the right instance, program follows its worker")


def test_refusals(d):
    started = d.log_text().count("stand-in-worker: argv")
    def refused(fd, why, pre=()):
        p = vm_program(d, fd, "--instance", "vgpu0", pre=pre)
        rc, out, err = finish(p)
        assert rc == 1 and why in err, (rc, err)
        return err.strip()

    with open("/dev/null") as f:
        print("refused: " + refused(f.fileno(), "not a socket"))
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(os.path.join(d.tmp, "listening.sock"))
    lst.listen(1)
    print("refused: " + refused(lst.fileno(), "not connected"))
    lst.close()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    print("refused: " + refused(b.fileno(), "not an AF_UNIX stream socket"))
    a, b = socket.socketpair()
    print("refused: " + refused(b.fileno(), "permission denied", pre=NOBODY))
    p = vm_program(d, b.fileno(), "--instance", "nosuch")
    rc, out, err = finish(p)
    assert rc == 1 and 'no instance "nosuch"' in err, err
    p = vm_program(d, b.fileno(), "--render-node=/dev/null", "--instance", "vgpu0")
    rc, out, err = finish(p)
    assert rc == 1 and "render node /dev/null not usable" in err, err
    print("refused: " + err.strip())
    a.close()
    b.close()
    assert d.usage("vgpu0")["clients"] == 0
    assert d.log_text().count("stand-in-worker: argv") == started, "a refused VM got a worker"


def test_destroy(d):
    r = d.control({"command": "create", "name": "t1", "profile": "one"})
    assert r["ok"], r
    ours, p = attach(d, "--instance", "t1")
    wait_tenant(d, "t1")
    q = subprocess.run([h.VGPUCTL, "-r", d.dir, "destroy", "t1"], capture_output=True, text=True)
    assert q.returncode == 1 and "has 1 connected tenant(s); use --force" in q.stderr, q.stderr
    assert p.poll() is None
    q = subprocess.run([h.VGPUCTL, "-r", d.dir, "destroy", "t1", "--force"], capture_output=True, text=True)
    assert q.returncode == 0, q.stderr
    rc, out, err = finish(p)
    assert rc == 1 and "killed by SIGKILL" in err, (rc, err)
    h.wait_for(lambda: not d.control({"command": "show", "name": "t1"})["ok"], 30, "t1 to go")
    ours.close()
    print("destroy: refused with a VM tenant, --force ended it")


def test_instance_socket(d):
    path = os.path.join(d.dir, "vgpu0", "vhost-user.sock")
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == stat.S_IMODE(
        os.lstat(d.socket("vgpu0")).st_mode), oct(st.st_mode)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    t = wait_tenant(d, "vgpu0")
    assert t["kind"] == "vm", t
    d.wait_log(r"stand-in-worker: argv --protocol=vhost-user-gpu --heads=1 --virgl=on ")
    s.close()
    d.wait_idle("vgpu0")
    print("vhost-user.sock: a connection got a vm worker")


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "the worker hung up instead of replying"
        data += chunk
    return data


def vhost_call(s, request, payload=b""):
    """One vhost-user request that has a reply, as QEMU sends it (flags:
    version 1); returns the reply's payload."""
    s.sendall(struct.pack("<III", request, 1, len(payload)) + payload)
    req, flags, size = struct.unpack("<III", recv_exact(s, 12))
    assert req == request and flags & 0x4 and size <= 4096, (req, flags, size)
    return recv_exact(s, size)


def vhost_negotiate(s):
    """GET_FEATURES, then the protocol features with CONFIG, then the
    virtio-gpu config space: returns (features, num_scanouts)."""
    features = struct.unpack("<Q", vhost_call(s, 1))[0]  # GET_FEATURES
    assert features & (1 << 30), hex(features)  # VHOST_USER_F_PROTOCOL_FEATURES
    proto = struct.unpack("<Q", vhost_call(s, 15))[0]  # GET_PROTOCOL_FEATURES
    assert proto & (1 << 9), hex(proto)  # CONFIG
    s.sendall(struct.pack("<IIIQ", 16, 1, 8, 1 << 9))  # SET_PROTOCOL_FEATURES
    # GET_CONFIG: virtio_gpu_config is events_read, events_clear,
    # num_scanouts, num_capsets (u32 each).
    cfg = vhost_call(s, 24, struct.pack("<III", 0, 16, 0) + bytes(16))
    offset, size, flags = struct.unpack("<III", cfg[:12])
    assert size == 16 and len(cfg) == 28, cfg
    return features, struct.unpack("<IIII", cfg[12:28])[2]


def real_worker_speaks_vhost_user():
    p = subprocess.run([os.environ.get("VGPU_WORKER", "vgpu-worker"), "--help"], capture_output=True, text=True)
    return "vhost-user-gpu" in p.stdout + p.stderr


def test_real_worker():
    d = h.Daemon(CONFIG)
    try:
        path = os.path.join(d.dir, "vgpu0", "vhost-user.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(60)
        s.connect(path)
        if not real_worker_speaks_vhost_user():
            # The worker refuses the protocol: vgpud logs its end, reclaims.
            d.wait_log(r"vgpu0: VM \(QEMU\) pid \d+ worker \d+ ended")
            d.wait_idle("vgpu0")
            print("real worker: no vhost-user-gpu front-end in this vgpu-worker; "
                  "GET_FEATURES exchange not tried")
        else:
            # On vgpu0's own socket: profile "one", heads=1.
            features, scanouts = vhost_negotiate(s)
            assert scanouts == 1, scanouts
            t = wait_tenant(d, "vgpu0")
            assert t["kind"] == "vm"
            s.close()
            d.wait_idle("vgpu0")
            print(f"real worker on vhost-user.sock: features {features:#x}, {scanouts} scanout")
            # Through vgpu-vhost-gpu onto vgpu1 (heads=3); QEMU hanging up
            # ends the worker cleanly and the program with status 0.
            ours, p = attach(d, "--virgl")
            ours.settimeout(60)
            features, scanouts = vhost_negotiate(ours)
            assert scanouts == 3 and features & 1, (scanouts, hex(features))  # VIRTIO_GPU_F_VIRGL
            assert [x["kind"] for x in tenants(d, "vgpu1")] == ["vm"]
            ours.close()
            rc, out, err = finish(p)
            assert rc == 0, (rc, err)
            d.wait_idle("vgpu1")
            print(f"real worker via vgpu-vhost-gpu: features {features:#x}, {scanouts} scanouts, "
                  "exit 0 after QEMU hung up")
            # heads set at run time reaches the next VM.
            r = d.control({"command": "set", "name": "vgpu0", "settings": {"heads": "2"}})
            assert r["ok"], r
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(60)
            s.connect(path)
            assert vhost_negotiate(s)[1] == 2
            s.close()
            d.wait_idle("vgpu0")
        s.close()
        d.stop()
    finally:
        d.kill()


def test_socketpair_identity(d):
    """libvirt's way: its daemon makes the socket pair, gives one end to
    vgpu-vhost-gpu and, afterwards, the other to the QEMU it starts (as
    another user), then closes its own copy.  SO_PEERCRED names the pair's
    maker; vgpud must find the process holding the other end and count the
    VM under it."""
    ours, p = attach(d, "--instance", "vgpu0")
    t = wait_tenant(d, "vgpu0")
    assert t["client_pid"] == os.getpid(), t
    # The stand-in QEMU: another program, as nobody, holding the other end
    # (started after the back-end, as libvirt does); this process keeps its
    # copy for a moment, as libvirtd does until QEMU runs.
    qemu = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "sleep", "600"], pass_fds=(ours.fileno(),))
    try:
        t = wait_tenant(d, "vgpu0", lambda t: t["client_pid"] == qemu.pid)
        ours.close()
        assert t["client_uid"] == 65534 and t.get("client_name") == "sleep", t
        d.wait_log(r"vgpu0: VM worker %d: QEMU is pid %d uid 65534 \(sleep\), behind the socket "
                   r"pair pid %d uid 0 made" % (t["worker_pid"], qemu.pid, os.getpid()))
        text = subprocess.run([h.VGPUCTL, "-r", d.dir, "show", "vgpu0"], capture_output=True,
                              text=True).stdout
        assert ["vm", str(t["worker_pid"]), str(qemu.pid), "65534"] in \
            [r.split()[:4] for r in text.splitlines()], text
    finally:
        qemu.kill()
        qemu.wait()
    # QEMU gone: the other end closes, the worker and the program end.
    rc, out, err = finish(p)
    assert rc == 0, (rc, err)
    d.wait_log(r"vgpu0: VM \(QEMU\) pid %d worker %d ended: client left" % (qemu.pid, t["worker_pid"]))
    d.wait_idle("vgpu0")
    print(f"socket pair: the VM is counted under the process holding the other end "
          f"(pid {qemu.pid}, uid 65534, sleep), not the pair's maker (pid {os.getpid()})")


def main():
    h.need("setpriv", VHOST_GPU)
    test_capabilities()
    test_no_vgpud()
    d = h.Daemon(CONFIG, env={"VGPU_WORKER": SELF})
    try:
        test_handoff(d)
        test_socketpair_identity(d)
        test_refusals(d)
        test_destroy(d)
        test_instance_socket(d)
        d.stop()
    finally:
        d.kill()
    test_real_worker()
    sys.exit(0)


if __name__ == "__main__":
    if "--client-fd=3" in sys.argv or "--probe" in sys.argv:
        sys.exit(stand_in_worker())
    main()
