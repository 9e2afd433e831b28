"""What the VM tests and bench/vm3d.py share: QEMU's command line for the
guest of scripts/vm-guest.sh on a vhost-user-gpu socket, a QMP client,
the guest's serial console polled for its verdict, pictures taken until
one shows what the guest drew, and ending QEMU's process group.

Standard library only, and nothing of harness.py: bench/ imports it too.
Every wait is bounded by a deadline (time.monotonic()); failures raise
AssertionError with the caller's context() appended."""
import json
import os
import shutil
import signal
import socket
import time

POLL_S = 0.05  # the serial console and sockets
SHOT_PAUSE_S = 0.2  # between pictures that did not match yet


class Timeout(AssertionError):
    pass


def wait_until(pred, deadline, what):
    """pred()'s first true value, polled until deadline (at least a
    second from now); Timeout after."""
    timeout = max(1, deadline - time.monotonic())
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(POLL_S)
    raise Timeout(f"timed out after {timeout}s waiting for {what}")


def qemu_argv(qemu, guest, sock, serial, mem, append, device_opts="", qmp=None, extra=()):
    """QEMU (TCG unless $VGPU_VM_ACCEL says otherwise) booting guest's
    kernel and initramfs with memfd guest memory, the vhost-user-gpu-pci
    device on sock (device_opts appended to it), the serial console into
    the file serial (or, as "socket:PATH", on a socket QEMU listens on and
    waits for a client on before it starts the guest: the console both
    ways), QMP on the socket qmp when given, then extra."""
    # The unpacked kernel boots as a PVH guest, without decompressing itself.
    kernel = os.path.join(guest, "vmlinux")
    if not os.path.exists(kernel):
        kernel = os.path.join(guest, "vmlinuz")
    argv = [qemu, "-accel", os.environ.get("VGPU_VM_ACCEL", "tcg"), "-smp", "1", "-m", mem,
            "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
            "-machine", "pc,memory-backend=mem",
            "-nodefaults", "-no-user-config", "-vga", "none", "-display", "none", "-no-reboot",
            "-chardev", f"socket,id=vgpu,path={sock}",
            "-device", "vhost-user-gpu-pci,chardev=vgpu" + device_opts, *extra]
    if qmp:
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if serial.startswith("socket:"):
        argv += ["-chardev", f"socket,id=console,path={serial[7:]},server=on,wait=on",
                 "-serial", "chardev:console"]
    else:
        argv += ["-serial", f"file:{serial}"]
    return argv + ["-kernel", kernel, "-initrd", os.path.join(guest, "initrd.gz"),
                   "-append", append]


class Qmp:
    """A QMP connection: one command at a time, events skipped."""

    def __init__(self, path, deadline, proc):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

        def connected():
            if proc.poll() is not None:
                raise AssertionError(f"QEMU exited with {proc.returncode} at start")
            return self._connect(path)

        wait_until(connected, deadline, "QEMU's QMP socket")
        self.buf = b""
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def _connect(self, path):
        try:
            self.sock.connect(path)
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False

    def _read(self, timeout=60):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("QEMU closed its QMP socket")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, timeout=60, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            r = self._read(timeout)
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise AssertionError(f"QMP {name}: {r['error']}")

    def close(self):
        self.sock.close()


def kill_group(p):
    if p is not None and p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def end_test(daemon, work):
    """A VM test's last steps: the end of vgpud's log printed and vgpud
    killed when daemon (a harness.Daemon) is still there, and the work
    directory removed unless VGPU_VM_KEEP=1 keeps it."""
    if daemon is not None:
        print(f"--- vgpud\n{daemon.log_text()[-3000:]}")
        daemon.kill()
    if os.environ.get("VGPU_VM_KEEP") == "1":
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except FileNotFoundError:
        return "(no output)\n"


def read_serial(path):
    """The serial console so far, or None before QEMU made the file."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def wait_serial(serial, marks, deadline, gone, context, what):
    """The serial console's text once any of marks is in it.  gone()
    returns why the VM cannot get there any more (its QEMU or back-end
    ended), else None."""
    def seen():
        why = gone()
        if why:
            raise AssertionError(why + context())
        text = read_serial(serial)
        return text if text is not None and any(m in text for m in marks) else None

    try:
        return wait_until(seen, deadline, what)
    except Timeout as e:
        raise AssertionError(f"{e}{context()}") from None


def until_shown(shoot, deadline, gone, context, what):
    """Pictures until one shows what the guest drew: shoot(n) takes and
    checks the n-th, returning (matched, detail).  Returns (n, the
    match's detail, the first mismatch's detail or "").  Fails at the
    deadline, or when gone() names why the VM ended."""
    n = 0
    first_wrong = ""
    while True:
        n += 1
        ok, detail = shoot(n)
        if ok:
            return n, detail, first_wrong
        first_wrong = first_wrong or detail
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {n} tries; the last:\n{detail}" + context())
        why = gone()
        if why:
            raise AssertionError(f"{why}:\n{detail}" + context())
        time.sleep(SHOT_PAUSE_S)  # the next try; the deadline bounds them
