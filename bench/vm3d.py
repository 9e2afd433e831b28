#!/usr/bin/env python3
"""3D in a real guest: glmark2-es2-drm --off-screen under QEMU 10 (TCG),
this project's back-end (QEMU on a vgpud instance's vhost-user.sock) against
QEMU's reference /usr/lib/qemu/vhost-user-gpu --virgl forced onto software
GBM (GBM_ALWAYS_SOFTWARE=1 --render-node=/dev/null).

Paired (BENCH_VM_MODE=paired, the default): both guests boot once and stay
up; each reads 'N SCENE' lines from its serial console (a socket QEMU
listens on) and runs glmark2 on that one scene.  Per round, every scene
runs as a quartet of 5 s windows, B A A B and A B B A in turn (B: the
first of BENCH_VM_SIDES, vgpud; A: the second, the reference), then one
A/A control quartet on one side's guest alone.  Per scene: B's rate over
A's as the ratio of sums over the pairs of neighbouring windows, the
median pair and a bootstrap 95% interval (bench/pairs.py), and the A/A
control's, which shows the noise floor.  The machine's speed drifts over
minutes by more than the back-ends differ; neighbouring windows share it.

Boots (BENCH_VM_MODE=boots): one paired boot each per round, one glmark2
run over all scenes per boot.  Rounds alternate which back-end boots
first (A B, then B A, ...) so that a drift over the run weighs on both
alike.  The rest of this text describes that mode unless it says paired.

CPU pinning (on by default where this process may run on 2 or more CPUs):
QEMU (its TCG vCPU, main loop and 9p) runs on one fixed set of CPUs and the
back-end (vgpud and its worker, or the reference process, with their
llvmpipe threads) on the disjoint rest, the same sets for both back-ends;
without it the scheduler's placement of those threads changes the
fragment-bound scenes' FPS between boots more than the back-end does.  The
affinity is set in each child before it runs, so every thread it starts
inherits it; a thread that widens its own (Mesa's shader-cache queue resets
its thread to every CPU) is bound back at the next 0.25 s sample and named
in the boot's "repinned" list.  Each boot records the CPUs its QEMU's and
its back-end's threads may run on once the first result is in.

The guest is scripts/vm-guest.sh's (vgpu.mode=3d): it mounts the host's /
read-only over 9p and runs vgpu.gl=PATH there, chrooted, on the render
node.  PATH here is a small script written into a private directory that
runs glmark2-es2-drm --off-screen on fixed scenes and durations; the guest
prints every line it writes on the serial console, where the per-scene FPS
is read.

Per boot it records: each scene's FPS, glmark2's score, the time from
QEMU's start to the first scene's result, and the back-end's peak RSS
(VmHWM of the vgpu-worker serving the VM, or of the reference process),
also without shared memory (the guest RAM both map), and per scene the
CPU time the back-end and QEMU used per frame (from glmark2's start or the
previous result to this scene's result, over its frames: set-up included).
Prints ratios ours / reference per scene and round, then per scene the
median FPS of each back-end over the rounds and their ratio (the figure the
target is judged on), with the lowest and highest round's ratio.  Reports,
never asserts: the exit status is 0 unless the harness itself breaks (2 for
a BENCH_VM_PIN it cannot use).  A machine without QEMU 10,
the guest's parts, glmark2-es2-drm or a built vgpud gets one line saying
what is missing and exit 0.

Knobs (environment): BUILD_DIR (build), BENCH_VM_MODE (paired | boots),
BENCH_VM_SIDES (paired: two sides, ';' separated, each 'vgpud' or
'reference' then VAR=VALUE words for that back-end's environment;
default 'vgpud;reference'), BENCH_ROUNDS (3 paired, 2 boots),
BENCH_VM_SCENE_SECONDS (5), BENCH_VM_SCENES (the scene list, ';'
separated glmark2 -b values), BENCH_VM_TIMEOUT (300 s per boot or window),
BENCH_VM_PROFILE (boots only; perf: perf record -g of the back-end's process, strace:
strace -c -f, from glmark2's start to the first result, into
BENCH_OUT/vm3d/TAG.perf or TAG.strace; '' none),
BENCH_OUT (out/bench; results in vm3d.json, logs in vm3d/),
BENCH_VM_PIN (1 with 2 or more CPUs, else 0: 0 off; 1 QEMU on the first
half of the CPUs this process may use, the back-end on the rest; QCPUS:BCPUS
names both sets as CPU lists, e.g. 0:1 or 0-1:2-3),
VGPU_QEMU (qemu-system-x86_64), VGPU_VM_ACCEL (tcg).
"""
import json
import os
import re
import shutil
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import vmlib  # noqa: E402  (QEMU's command line and the serial console, as the VM tests)
from pairs import half_width, pair_stats, quartet_pairs  # noqa: E402
BUILD = os.path.abspath(os.environ.get("BUILD_DIR", os.path.join(SRC, "build")))
QEMU = os.environ.get("VGPU_QEMU", "qemu-system-x86_64")
REF = "/usr/lib/qemu/vhost-user-gpu"
GLMARK = "/usr/bin/glmark2-es2-drm"
MEM = "1G"
MODE = os.environ.get("BENCH_VM_MODE", "paired")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3" if MODE == "paired" else "2"))
SIDES = os.environ.get("BENCH_VM_SIDES", "vgpud;reference").split(";")
SCENE_S = int(os.environ.get("BENCH_VM_SCENE_SECONDS", "5"))
SCENES = [s for s in os.environ.get(
    "BENCH_VM_SCENES", "build:use-vbo=true;texture;shading:shading=phong;bump:bump-render=normals"
).split(";") if s]
TIMEOUT = float(os.environ.get("BENCH_VM_TIMEOUT", "300"))
OUT = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(SRC, "out", "bench")))
# A profiler attached to the back-end while glmark2 renders: 'perf'
# (perf record -g), 'strace' (strace -c -f) or '' (none).
PROFILE = os.environ.get("BENCH_VM_PROFILE", "")
FPS_RE = re.compile(r"vgpu-guest: gl: \[(\w+)\] (.*?): FPS: (\d+) FrameTime: ([\d.]+) ms")
SCORE_RE = re.compile(r"glmark2 Score: (\d+)")


def log(msg):
    print(msg, flush=True)


def parse_cpus(text):
    """The CPUs a list such as '1', '0-3' or '0,2-3' names, as a sorted list;
    ValueError when it names none or is not such a list."""
    cpus = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        a, b = int(lo), int(hi) if dash else int(lo)
        if a < 0 or b < a or b >= 4096:
            raise ValueError(f"{part!r} is not a CPU or CPU range")
        cpus.update(range(a, b + 1))
    return sorted(cpus)


def format_cpus(cpus):
    """A sorted CPU list written back as ranges: [0, 1, 2, 5] -> '0-2,5'."""
    runs = []
    for c in cpus:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def pin_sets(value, allowed):
    """(QEMU's CPUs, the back-end's CPUs) for BENCH_VM_PIN=value, allowed
    being the CPUs this process may use; None when pinning is off.
    ValueError for a value that cannot be used here."""
    allowed = sorted(allowed)
    if value == "0" or (value == "" and len(allowed) < 2):
        return None
    if value in ("", "1"):
        if len(allowed) < 2:
            raise ValueError(f"pinning needs 2 CPUs, this process may use {format_cpus(allowed)}")
        half = len(allowed) // 2
        return allowed[:half], allowed[half:]
    qemu, colon, backend = value.partition(":")
    if not colon:
        raise ValueError("expected 0, 1 or QEMU_CPUS:BACKEND_CPUS")
    q, b = parse_cpus(qemu), parse_cpus(backend)
    if set(q) & set(b):
        raise ValueError(f"QEMU's and the back-end's CPUs overlap ({format_cpus(set(q) & set(b))})")
    if not set(q + b) <= set(allowed):
        raise ValueError(f"names CPUs outside those this process may use ({format_cpus(allowed)})")
    return q, b


def pinned(cpus):
    """A preexec_fn that binds the child to cpus before it runs (None: no
    pinning); its threads inherit the affinity."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def threads(pids):
    """(pid, tid) of every thread of pids that still exist (tid as the
    name of its /proc/PID/task entry)."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            yield pid, tid


def thread_cpus(pids):
    """{tid: (name, CPUs)} for every thread of pids: the thread's comm and
    the CPUs it may run on (Cpus_allowed_list) as a list."""
    out = {}
    for pid, tid in threads(pids):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            out[int(tid)] = (fields["Name"].strip(),
                             parse_cpus(fields["Cpus_allowed_list"]))
        except (OSError, ValueError, KeyError):
            pass
    return out


def hold_pin(pids, cpus, widened):
    """Binds again to cpus any thread of pids that has widened (or moved) its
    own affinity since it inherited cpus (Mesa's shader-cache queue, for
    one, resets its thread to every CPU), and adds 'name (CPUs)' of each
    such thread to the set widened.  Returns the CPUs the threads may run
    on afterwards, as a list."""
    allowed = set()
    for tid, (name, have) in thread_cpus(pids).items():
        if have != cpus:
            try:
                os.sched_setaffinity(tid, cpus)
                widened.add(f"{name} ({format_cpus(have)})")
                have = cpus
            except OSError:
                pass  # the thread ended, or cannot be moved: it shows in the result
        allowed.update(have)
    return sorted(allowed)


def missing():
    """Why this machine cannot run the benchmark, or ''."""
    exe = shutil.which(QEMU)
    if not exe:
        return f"{QEMU} is not installed (make deps installs QEMU 10)"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"version (\d+)\.", r.stdout)
    if not m or int(m.group(1)) < 10:
        return f"{QEMU} is not QEMU 10 or newer ({r.stdout.splitlines()[0] if r.stdout else '?'})"
    if not os.access(REF, os.X_OK):
        return f"QEMU's reference back-end {REF} is missing (qemu-system-gui)"
    if not os.access(GLMARK, os.X_OK):
        return f"{GLMARK} is missing (make deps installs glmark2-es2-drm)"
    for p in ("src/cli/vgpud", "src/worker/vgpu-worker"):
        if not os.access(os.path.join(BUILD, p), os.X_OK):
            return f"{os.path.join(BUILD, p)} is not built (make build)"
    return ""


def guest_dir():
    sh = os.path.join(SRC, "scripts", "vm-guest.sh")
    r = subprocess.run(["sh", sh], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return None, (r.stdout + r.stderr).strip().splitlines()[-1:]
    r = subprocess.run(["sh", sh, "--print"], capture_output=True, text=True, timeout=60)
    return (r.stdout.strip() or None), ["scripts/vm-guest.sh built no guest"]


def mem_kib(pid):
    """(VmHWM, RssAnon + RssFile) of pid in KiB: the peak resident set, and
    the resident set now without shared memory (RssShmem), which is mostly
    the guest's RAM that every vhost-user back-end maps."""
    v = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in ("VmHWM", "RssAnon", "RssFile"):
                    v[k] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return v.get("VmHWM", 0), v.get("RssAnon", 0) + v.get("RssFile", 0)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids):
    """User + system CPU time of pids (each with all its threads), in
    clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def stop(p):
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def profiler_start(kind, pids, out):
    """Attaches kind ('perf' or 'strace') to every thread of pids, writing
    to out (perf's data, or strace's summary); returns the Popen."""
    if kind == "perf":
        argv = ["perf", "record", "-g", "-F", "499", "-o", out, "-p", ",".join(map(str, pids))]
    else:
        argv = ["strace", "-c", "-f", "-o", out] + [a for p in pids for a in ("-p", str(p))]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def profiler_stop(p):
    """Detaches the profiler (SIGINT: perf and strace write what they have)."""
    if p is None or p.poll() is not None:
        return
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def write_client(work):
    """The script the guest runs as vgpu.gl (first with the render node as
    its argument, then with --kms, which it declines)."""
    path = os.path.join(work, "vm3d-client.sh")
    bench = " ".join(f"-b '{s}:duration={SCENE_S}'" for s in SCENES)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "[ \"$1\" != --kms ] || exit 0\n"
                f"exec {GLMARK} --off-screen {bench}\n")
    os.chmod(path, 0o755)
    return path


def start_backend(backend, work, logdir, tag, cpus, env=None):
    """Starts backend ('vgpud': a vgpud with one instance, or 'reference'),
    bound to cpus (None: unbound), with env (a dict) added to its
    environment; returns (its Popen, the vhost-user socket QEMU connects
    to)."""
    if backend == "vgpud":
        rdir = os.path.join(work, "run")
        conf = os.path.join(work, "vgpud.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nworker={BUILD}/src/worker/vgpu-worker\nrenderer=virgl\n"
                    "gpu-memory=4G\n\n"
                    "[profile bench]\nvram=4G\nmax-resources=65536\nmax-contexts=16\nmax-clients=1\n"
                    # The guest's shader set-up, JIT-compiled on one
                    # busy CPU, can outlast the default 10 s.
                    "gpu-timeout=120\n\n"
                    "[instance vgpu0]\nprofile=bench\n")
        be = subprocess.Popen([f"{BUILD}/src/cli/vgpud", "--foreground", "--runtime-dir", rdir,
                               "--config", conf], env={**os.environ, **(env or {})},
                              stdout=open(os.path.join(logdir, f"{tag}-vgpud.log"), "w"),
                              stderr=subprocess.STDOUT, start_new_session=True,
                              preexec_fn=pinned(cpus))
        return be, os.path.join(rdir, "vgpu0", "vhost-user.sock")
    sock = os.path.join(work, "ref.sock")
    be = subprocess.Popen([REF, "--virgl", "--render-node=/dev/null", f"--socket-path={sock}"],
                          env={**os.environ, "GBM_ALWAYS_SOFTWARE": "1", **(env or {})},
                          stdout=open(os.path.join(logdir, f"{tag}-backend.log"), "w"),
                          stderr=subprocess.STDOUT, start_new_session=True,
                          preexec_fn=pinned(cpus))
    return be, sock


def serving_pids(backend, be):
    """The process that serves the VM: the reference's own, or vgpud's
    vgpu-worker child (none before QEMU connects); its RSS is measured."""
    if backend == "reference":
        return [be.pid]
    return [c for c in children(be.pid) if comm(c) == "vgpu-worker"]


def backend_pids(backend, be):
    """Every process of the back-end: vgpud and its worker, or the
    reference; their CPU time is measured and their CPUs held."""
    return [be.pid] + serving_pids(backend, be) if backend == "vgpud" else [be.pid]


def peak_rss(pids, peak, peak_own):
    """(peak, peak_own) raised to what mem_kib() reads for pids now."""
    for pid in pids:
        hwm, own = mem_kib(pid)
        peak, peak_own = max(peak, hwm), max(peak_own, own)
    return peak, peak_own


def loadavg():
    """The 1, 5 and 15 minute load averages, as strings."""
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def appeared(proc, path, seconds):
    """Whether path exists while proc still runs, waiting up to seconds."""
    try:
        vmlib.wait_until(lambda: proc.poll() is not None or os.path.exists(path),
                         time.monotonic() + seconds, path)
    except vmlib.Timeout:
        pass
    return proc.poll() is None and os.path.exists(path)


def start_qemu(guest, vsock, serial, client, logdir, tag, cpus):
    """QEMU booting the 3D guest on the vhost-user socket vsock, its
    console on serial (vmlib.qemu_argv's), running client as vgpu.gl,
    bound to cpus; returns the Popen."""
    argv = vmlib.qemu_argv(
        QEMU, guest, vsock, serial, MEM,
        "console=ttyS0 panic=-1 drm_kms_helper.fbdev_emulation=0 "
        f"vgpu.mode=3d vgpu.gl={client}",
        extra=["-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
               "-device", "virtio-9p-pci,fsdev=root,mount_tag=rootfs"])
    return subprocess.Popen(argv, stdout=open(os.path.join(logdir, f"{tag}-qemu.log"), "w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=pinned(cpus))


def boot(backend, guest, client, logdir, tag, pin):
    """One guest boot on backend ('vgpud' or 'reference'), with pin None or
    (QEMU's CPUs, the back-end's CPUs); returns a dict."""
    work = tempfile.mkdtemp(prefix=f"vgpu-vm3d-{tag}-")
    os.chmod(work, 0o755)
    serial = os.path.join(logdir, f"{tag}-serial.log")
    procs = []
    res = {"backend": backend, "scenes": {}, "score": None, "first_result_s": None,
           "done_s": None, "rss_kib": None, "rss_noshm_kib": None, "error": None,
           "qemu_cpus": None, "backend_cpus": None, "repinned": []}
    qemu_pin, backend_pin = pin if pin else (None, None)
    prof = None  # the profiler, while one runs
    try:
        be, sock = start_backend(backend, work, logdir, tag, backend_pin)
        procs.append(be)
        if not appeared(be, sock, 20):
            res["error"] = f"{backend} did not create {sock}"
            return res
        t0 = time.monotonic()
        qemu = start_qemu(guest, sock, serial, client, logdir, tag, qemu_pin)
        procs.append(qemu)

        peak = peak_own = 0
        text = ""
        widened = set()
        # CPU time (back-end, QEMU) when glmark2 started and at each scene's
        # result: per scene, what a frame cost each side in CPU time, a
        # figure a busy machine moves far less than it moves FPS.
        cpu_marks = []
        while time.monotonic() - t0 < TIMEOUT:
            if pin:
                qemu_cpus = hold_pin([qemu.pid], qemu_pin, widened)
                backend_cpus = hold_pin(backend_pids(backend, be), backend_pin, widened)
            peak, peak_own = peak_rss(serving_pids(backend, be), peak, peak_own)
            text = vmlib.read_serial(serial) or ""
            # glmark2 prints its renderer before its first scene and a
            # scene's FPS after it: the profile covers the rendering.
            if PROFILE and prof is None and "GL_RENDERER" in text and serving_pids(backend, be):
                prof = profiler_start(PROFILE, serving_pids(backend, be),
                                      os.path.join(logdir, f"{tag}.{PROFILE}"))
            if "GL_RENDERER" in text and len(cpu_marks) <= len(FPS_RE.findall(text)):
                cpu_marks.append((cpu_ticks(backend_pids(backend, be)), cpu_ticks([qemu.pid])))
            if prof is not None and FPS_RE.search(text):
                profiler_stop(prof)
            if res["first_result_s"] is None and FPS_RE.search(text):
                res["first_result_s"] = round(time.monotonic() - t0, 2)
                # Every thread is up by the first result: where may they run?
                if not pin:
                    qemu_cpus = sorted({c for _, cpus in thread_cpus([qemu.pid]).values()
                                        for c in cpus})
                    backend_cpus = sorted({c for _, cpus in
                                           thread_cpus(backend_pids(backend, be)).values()
                                           for c in cpus})
                res["qemu_cpus"] = format_cpus(qemu_cpus)
                res["backend_cpus"] = format_cpus(backend_cpus)
            if "gl offscreen done" in text or "vgpu-guest: FAILED" in text:
                break
            if qemu.poll() is not None or be.poll() is not None:
                break
            time.sleep(0.25)
        res["done_s"] = round(time.monotonic() - t0, 2)
        res["repinned"] = sorted(widened)
        res["rss_kib"] = peak or None
        res["rss_noshm_kib"] = peak_own or None
        res["cpu_ms_per_frame"] = {}
        for i, m in enumerate(FPS_RE.finditer(text)):
            opts = [o for o in m.group(2).split(":") if not o.startswith("duration=")]
            scene = ":".join([m.group(1)] + opts)
            res["scenes"][scene] = int(m.group(3))
            frames = int(m.group(3)) * SCENE_S
            if i + 1 < len(cpu_marks) and frames:
                # The window also holds the scene's set-up (shaders, model).
                res["cpu_ms_per_frame"][scene] = {
                    side: round((cpu_marks[i + 1][k] - cpu_marks[i][k]) * 1000 / CLK_TCK / frames,
                                2) for k, side in enumerate(("backend", "qemu"))}
        m = SCORE_RE.search(text)
        res["score"] = int(m.group(1)) if m else None
        if "gl offscreen done" not in text:
            why = "FAILED in the guest" if "vgpu-guest: FAILED" in text else \
                f"QEMU exited {qemu.returncode}" if qemu.poll() is not None else \
                f"back-end exited {be.returncode}" if be.poll() is not None else "timed out"
            res["error"] = f"{why}; see {serial}"
        elif not res["scenes"]:
            res["error"] = f"no FPS line on the serial console; see {serial}"
        r = re.search(r"GL_RENDERER:\s*(.*)", text)
        res["renderer"] = r.group(1).strip() if r else None
        return res
    finally:
        if prof is not None:
            profiler_stop(prof)
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


class Broken(Exception):
    """A paired guest that cannot go on: its QEMU or back-end ended, or it
    did not answer in time."""


def write_paired_client(work):
    """The script a paired guest runs as vgpu.gl: it reads 'N SCENE' lines
    from the serial console (its standard input) and runs glmark2 on that
    one scene for each, between 'vm3d: begin N' and 'vm3d: end N' lines;
    with --kms (after the console closes) it declines."""
    path = os.path.join(work, "vm3d-paired.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "[ \"$1\" != --kms ] || exit 0\n"
                "echo 'vm3d: ready'\n"
                "while read -r n scene; do\n"
                "  echo \"vm3d: begin $n\"\n"
                f"  {GLMARK} --off-screen -b \"$scene:duration={SCENE_S}\"\n"
                "  echo \"vm3d: end $n status=$?\"\n"
                "done\n")
    os.chmod(path, 0o755)
    return path


def parse_side(text):
    """'BACKEND [VAR=VALUE ...]' -> (text, backend, {VAR: VALUE}):
    the back-end ('vgpud' or 'reference') and what to add to its
    environment.  ValueError for anything else."""
    words = text.split()
    if not words or words[0] not in ("vgpud", "reference"):
        raise ValueError(f"{text!r}: a side is 'vgpud' or 'reference', then VAR=VALUE words")
    env = {}
    for w in words[1:]:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ValueError(f"{w!r} is not VAR=VALUE")
        env[k] = v
    return " ".join(words), words[0], env


class Guest:
    """One guest kept running for the whole paired run on one back-end,
    its serial console a socket the bench writes commands to and reads
    results from; the CPU sets are held and the back-end's peak RSS taken
    while it waits."""

    def __init__(self, side, guest, client, logdir, tag, pin):
        self.label, self.backend, self.env = side
        self.guest, self.client, self.logdir, self.tag = guest, client, logdir, tag
        self.qemu_pin, self.backend_pin = pin if pin else (None, None)
        self.work = tempfile.mkdtemp(prefix=f"vgpu-vm3d-{tag}-")
        os.chmod(self.work, 0o755)
        self.log = open(os.path.join(logdir, f"{tag}-serial.log"), "w")
        self.text = ""
        self.sock = self.be = self.qemu = None
        self.widened = set()
        self.peak = self.peak_own = 0
        self.ready_s = None

    def gone(self):
        for name, p in (("QEMU", self.qemu), ("back-end", self.be)):
            if p is not None and p.poll() is not None:
                return f"{name} exited {p.returncode}"
        return None

    def pump(self, wait_s):
        """Reads what the console has (waiting up to wait_s for it), holds
        the CPU sets and samples the back-end's RSS."""
        if self.sock is not None and select.select([self.sock], [], [], wait_s)[0]:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.sock.close()
                self.sock = None
            else:
                chunk = data.decode(errors="replace")
                self.text += chunk
                self.log.write(chunk)
                self.log.flush()
        elif self.sock is None:
            time.sleep(wait_s)
        if self.qemu_pin:
            hold_pin([self.qemu.pid], self.qemu_pin, self.widened)
            hold_pin(backend_pids(self.backend, self.be), self.backend_pin, self.widened)
        self.peak, self.peak_own = peak_rss(serving_pids(self.backend, self.be), self.peak,
                                            self.peak_own)

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while not pred():
            why = self.gone() or ("the console closed" if self.sock is None else None)
            if why or time.monotonic() > deadline:
                raise Broken(f"{self.label}: {why or 'timed out'} waiting for {what}; "
                             f"see {self.log.name}")
            self.pump(0.25)

    def start(self):
        """Boots the guest; returns once its client is ready."""
        self.be, vsock = start_backend(self.backend, self.work, self.logdir, self.tag,
                                       self.backend_pin, self.env)
        if not appeared(self.be, vsock, 20):
            raise Broken(f"{self.label}: the back-end did not create {vsock}")
        console = os.path.join(self.work, "console.sock")
        t0 = time.monotonic()
        self.qemu = start_qemu(self.guest, vsock, f"socket:{console}", self.client, self.logdir,
                               self.tag, self.qemu_pin)
        # QEMU waits for this connection before it starts the guest.
        if not appeared(self.qemu, console, 30):
            raise Broken(f"{self.label}: QEMU did not create {console}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(console)
        self.wait_for(lambda: "vgpu-guest: gl: vm3d: ready" in self.text or
                      "vgpu-guest: FAILED" in self.text, TIMEOUT, "the guest's client")
        if "vgpu-guest: FAILED" in self.text:
            raise Broken(f"{self.label}: the guest FAILED; see {self.log.name}")
        self.ready_s = round(time.monotonic() - t0, 2)

    def run(self, n, scene):
        """Runs scene as window n; returns its figures."""
        start = len(self.text)
        pids = backend_pids(self.backend, self.be)
        c0 = (cpu_ticks(pids), cpu_ticks([self.qemu.pid]))
        t0 = time.monotonic()
        try:
            if self.sock is None:
                raise OSError("the console closed")
            self.sock.sendall(f"{n} {scene}\n".encode())
        except OSError as e:
            raise Broken(f"{self.label}: cannot send window {n}: {e}") from e
        end = re.compile(rf"vgpu-guest: gl: vm3d: end {n} status=(\d+)")
        self.wait_for(lambda: end.search(self.text, start), TIMEOUT, f"window {n} ({scene})")
        wall = time.monotonic() - t0
        c1 = (cpu_ticks(pids), cpu_ticks([self.qemu.pid]))
        seg = self.text[start:]
        m = FPS_RE.search(seg)
        if not m or end.search(seg).group(1) != "0":
            raise Broken(f"{self.label}: window {n} ({scene}) gave no FPS line or glmark2 "
                         f"failed; see {self.log.name}")
        frametime = float(m.group(4))
        rate = 1000.0 / frametime if frametime > 0 else 0.0
        frames = rate * SCENE_S
        cpu = [(c1[k] - c0[k]) * 1000 / CLK_TCK / frames if frames else None for k in (0, 1)]
        return {"fps": int(m.group(3)), "frametime_ms": frametime, "rate": round(rate, 3),
                "frames": round(frames, 1), "wall_s": round(wall, 2),
                "cpu_ms_per_frame": {"backend": round(cpu[0], 2) if cpu[0] else None,
                                     "qemu": round(cpu[1], 2) if cpu[1] else None}}

    def close(self):
        if self.sock is not None:
            self.sock.close()
        for p in (self.qemu, self.be):
            stop(p)
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


# A quartet's order: B A A B and A B B A in turn, so that a window's place
# in its quartet weighs on both sides alike.  B is the first side (the one
# measured), A the second (the baseline): ratios are B's rate over A's.
ORDERS = (("B", "A", "A", "B"), ("A", "B", "B", "A"))


def window_pairs(windows):
    """((A frames, A s), (B frames, B s)) of the neighbouring windows of
    each quartet in windows."""
    return quartet_pairs(windows, lambda w: w["quartet"],
                         lambda w: (w["frames"], SCENE_S) if w["frames"] else None)


def show_ci(st):
    return f"{st['ci95'][0]:.3f}..{st['ci95'][1]:.3f}" if st["ci95"] else "-"


def paired_main(guest, logdir, pin, work):
    """Both sides' guests booted once and kept up; each scene run on them
    in quartets, ROUNDS times, with one A/A control quartet a round."""
    try:
        sides = [parse_side(s) for s in SIDES]
        if len(sides) != 2:
            raise ValueError("BENCH_VM_SIDES names two sides, ';' separated")
    except ValueError as e:
        log(f"vm3d: BENCH_VM_SIDES: {e}")
        return 2
    client = write_paired_client(work)
    load0 = loadavg()
    pinning = f"both QEMUs on CPU {format_cpus(pin[0])}, both back-ends on CPU " \
        f"{format_cpus(pin[1])}" if pin else "no CPU pinning"
    log(f"vm3d: paired: {QEMU} TCG, guest {guest}, B = {sides[0][0]!r} against A = "
        f"{sides[1][0]!r}, scenes {SCENES} x {SCENE_S} s, {ROUNDS} round(s) of a quartet per "
        f"scene and one A/A control quartet, {pinning}, load {' '.join(load0)}")
    guests = {}
    windows = []
    error = None
    try:
        for role, side in (("B", sides[0]), ("A", sides[1])):
            g = Guest(side, guest, client, logdir, f"paired-{role}-{side[1]}", pin)
            guests[role] = g
            g.start()
            log(f"{role} {g.label}: ready {g.ready_s} s after QEMU started")
        n = q = 0
        for rnd in range(1, ROUNDS + 1):
            plan = [("test", scene, None) for scene in SCENES]
            # The control: one side's guest in both roles, the two sides
            # and the scenes in turn.
            plan.append(("control", SCENES[(rnd - 1) % len(SCENES)], "BA"[(rnd - 1) % 2]))
            for kind, scene, on in plan:
                order = ORDERS[q % 2]
                q += 1
                for pos, role in enumerate(order):
                    n += 1
                    g = guests[on or role]
                    w = g.run(n, scene)
                    w.update({"window": n, "round": rnd, "kind": kind, "quartet": q,
                              "position": pos, "role": role, "scene": scene, "side": g.label})
                    windows.append(w)
                    log(f"window {n:3} round {rnd} {kind:7} {scene:28} {role} {g.label:12} "
                        f"{w['rate']:7.2f} FPS  back-end {w['cpu_ms_per_frame']['backend']} "
                        f"ms/frame  QEMU {w['cpu_ms_per_frame']['qemu']} ms/frame  "
                        f"{w['wall_s']} s")
    except Broken as e:
        error = str(e)
        log(f"vm3d: paired run stopped: {error}")
    finally:
        figures = {role: {"side": g.label, "ready_s": g.ready_s,
                          "rss_kib": g.peak or None, "rss_noshm_kib": g.peak_own or None,
                          "repinned": sorted(g.widened)} for role, g in guests.items()}
        for g in guests.values():
            g.close()
    load1 = loadavg()

    log("")
    log(f"B = {sides[0][0]}, A = {sides[1][0]}: per scene, B's frame rate over A's "
        "(ratio of sums over pairs of neighbouring windows), the median pair and a "
        f"bootstrap 95% interval")
    log(f"{'scene':28} {'B FPS':>7} {'A FPS':>7} {'B / A':>6} {'median':>6} {'95% interval':>13}"
        f" {'pairs':>5}  back-end CPU ms/frame B / A")
    results = {}
    for scene in SCENES + ["A/A control"]:
        sel = [w for w in windows if (w["kind"] == "control" if scene == "A/A control"
                                      else w["kind"] == "test" and w["scene"] == scene)]
        st = pair_stats(window_pairs(sel))

        def mean_of(role, key):
            xs = [key(w) for w in sel if w["role"] == role and key(w)]
            return sum(xs) / len(xs) if xs else None
        fb, fa = mean_of("B", lambda w: w["rate"]), mean_of("A", lambda w: w["rate"])
        cb = mean_of("B", lambda w: w["cpu_ms_per_frame"]["backend"])
        ca = mean_of("A", lambda w: w["cpu_ms_per_frame"]["backend"])
        results[scene] = dict(st, fps_b=fb, fps_a=fa, backend_cpu_ms_per_frame_b=cb,
                              backend_cpu_ms_per_frame_a=ca)
        log(f"{scene:28} {fb or 0:7.2f} {fa or 0:7.2f} "
            f"{(st['ratio'] or 0):6.3f} {(st['median'] or 0):6.3f} {show_ci(st):>13} "
            f"{st['pairs']:5}  {cb or 0:.2f} / {ca or 0:.2f}")
    for role in ("B", "A"):
        f = figures.get(role)
        if f:
            log(f"{role} {f['side']}: QEMU start -> client ready {f['ready_s']} s, back-end peak "
                f"RSS {(f['rss_kib'] or 0) / 1024:.1f} MiB (without shared memory "
                f"{(f['rss_noshm_kib'] or 0) / 1024:.1f} MiB)" +
                (f"; bound again: {', '.join(f['repinned'])}" if f["repinned"] else ""))
    lows = [results[s]["ratio"] for s in SCENES]
    aa = results["A/A control"]
    if not error and lows and all(lows):
        lo = min(lows)
        log(f"target: every scene at least 1.0x (ratio of sums): "
            f"{'met' if lo >= 1.0 else 'MISSED'} (lowest {lo:.3f}x); intervals above 1.0: "
            f"{sum(1 for s in SCENES if results[s]['ci95'] and results[s]['ci95'][0] >= 1.0)} "
            f"of {len(SCENES)}, below: "
            f"{sum(1 for s in SCENES if results[s]['ci95'] and results[s]['ci95'][1] < 1.0)}; "
            f"A/A control {aa['ratio'] or 0:.3f} ({show_ci(aa)}, noise floor "
            f"{(half_width(aa['ci95']) or 0) * 100:.1f}%)")
    else:
        log("target: no verdict (the run did not finish)")
    log(f"load average before {' '.join(load0)}, after {' '.join(load1)}")
    with open(os.path.join(OUT, "vm3d.json"), "w") as f:
        json.dump({"mode": "paired", "sides": {"B": sides[0][0], "A": sides[1][0]},
                   "scenes": SCENES, "scene_seconds": SCENE_S, "rounds": ROUNDS,
                   "load_before": load0, "load_after": load1, "error": error,
                   "pin": {"qemu": format_cpus(pin[0]), "backend": format_cpus(pin[1])}
                   if pin else None, "results": results, "guests": figures,
                   "windows": windows}, f, indent=1)
    log(f"results: {os.path.join(OUT, 'vm3d.json')}, logs: {logdir}")
    return 0


def pair_row(first, label, a, b, mib=False, note=""):
    """One line of the table: first (the round, or 'med'), label, the value
    for vgpud and for the reference (KiB shown as MiB when mib), their
    ratio, which it returns (None unless both are there), and note."""
    def show(v):
        return "-" if not v else f"{v / 1024:.1f}" if mib else f"{v:g}"

    x = a / b if a and b else None
    log(f"{first:<5} {label:32} {show(a):>6} {show(b):>6} {f'{x:.2f}x' if x else '-':>6}{note}")
    return x


def median(xs):
    xs = [x for x in xs if x]
    return statistics.median(xs) if xs else None


def main():
    try:
        pin = pin_sets(os.environ.get("BENCH_VM_PIN", ""), os.sched_getaffinity(0))
    except ValueError as e:
        log(f"vm3d: BENCH_VM_PIN={os.environ.get('BENCH_VM_PIN')}: {e}")
        return 2
    why = missing()
    if why:
        log(f"vm3d: skipped: {why}")
        return 0
    guest, err = guest_dir()
    if not guest:
        log(f"vm3d: skipped: no guest ({' '.join(err)})")
        return 0
    logdir = os.path.join(OUT, "vm3d")
    os.makedirs(logdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="vgpu-vm3d-client-")
    os.chmod(work, 0o755)
    if MODE == "paired":
        try:
            return paired_main(guest, logdir, pin, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if MODE != "boots":
        log(f"vm3d: BENCH_VM_MODE={MODE}: expected paired or boots")
        return 2
    client = write_client(work)
    load0 = loadavg()
    pinning = f"QEMU on CPU {format_cpus(pin[0])}, back-end on CPU {format_cpus(pin[1])}" \
        if pin else "no CPU pinning"
    log(f"vm3d: {QEMU} TCG, guest {guest}, scenes {SCENES} x {SCENE_S} s, {ROUNDS} round(s), "
        f"{pinning}, load {' '.join(load0)}")
    rounds = []
    try:
        for rnd in range(1, ROUNDS + 1):
            row = {}
            # A B, B A, A B, ...: a drift over the run falls on both back-ends.
            order = ("vgpud", "reference") if rnd % 2 else ("reference", "vgpud")
            for backend in order:
                r = boot(backend, guest, client, logdir, f"r{rnd}-{backend}", pin)
                row[backend] = r
                log(f"round {rnd} {backend:9}: " + (f"ERROR {r['error']} " if r["error"] else "") +
                    " ".join(f"{k}={v}" for k, v in r["scenes"].items()) +
                    f" score={r['score']} first-result={r['first_result_s']}s "
                    f"done={r['done_s']}s peak-RSS={(r['rss_kib'] or 0) / 1024:.1f}MiB "
                    f"without-shmem={(r['rss_noshm_kib'] or 0) / 1024:.1f}MiB "
                    f"renderer={r.get('renderer')} CPUs: QEMU {r['qemu_cpus']}, "
                    f"back-end {r['backend_cpus']}")
                for scene, c in r.get("cpu_ms_per_frame", {}).items():
                    log(f"round {rnd} {backend:9}: {scene}: CPU per frame: back-end "
                        f"{c['backend']:.2f} ms, QEMU {c['qemu']:.2f} ms")
                if r["repinned"]:
                    log(f"round {rnd} {backend:9}: bound again to its set: threads that had "
                        f"widened their CPUs: {', '.join(r['repinned'])}")
            row["order"] = list(order)
            rounds.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load1 = loadavg()

    log("")
    log(f"{'round':5} {'scene':32} {'vgpud':>6} {'ref':>6} {'x ref':>6}")
    scenes = []
    for row in rounds:
        for r in (row["vgpud"], row["reference"]):
            scenes += [k for k in r["scenes"] if k not in scenes]
    per_scene = {scene: [] for scene in scenes}
    for i, row in enumerate(rounds, 1):
        a, b = row["vgpud"], row["reference"]
        for scene in scenes:
            x = pair_row(i, scene, a["scenes"].get(scene), b["scenes"].get(scene))
            if x:
                per_scene[scene].append(x)
            ca = a.get("cpu_ms_per_frame", {}).get(scene, {})
            cb = b.get("cpu_ms_per_frame", {}).get(scene, {})
            pair_row(i, "  CPU ms/frame: back-end", ca.get("backend"), cb.get("backend"))
            pair_row(i, "  CPU ms/frame: QEMU", ca.get("qemu"), cb.get("qemu"))
        pair_row(i, "score", a["score"], b["score"])
        pair_row(i, "QEMU start -> first result (s)", a["first_result_s"], b["first_result_s"])
        pair_row(i, "back-end peak RSS (MiB)", a["rss_kib"], b["rss_kib"], mib=True)
        pair_row(i, "  without shared memory (MiB)", a["rss_noshm_kib"], b["rss_noshm_kib"],
                 mib=True)

    # Per scene, the median FPS of each back-end over the rounds and their
    # ratio: one odd boot moves a median less than it moves a round.
    log("")
    log(f"medians over {len(rounds)} round(s), with the lowest and highest round's ratio")
    medians = {}
    for scene in scenes + ["score"]:
        if scene == "score":
            fa = median([row["vgpud"]["score"] for row in rounds])
            fb = median([row["reference"]["score"] for row in rounds])
            xs = [row["vgpud"]["score"] / row["reference"]["score"] for row in rounds
                  if row["vgpud"]["score"] and row["reference"]["score"]]
        else:
            fa = median([row["vgpud"]["scenes"].get(scene) for row in rounds])
            fb = median([row["reference"]["scenes"].get(scene) for row in rounds])
            xs = per_scene[scene]
        x = pair_row("med", scene, fa, fb,
                     note=f"  rounds {min(xs):.2f}-{max(xs):.2f}x" if xs else "")
        medians[scene] = {"vgpud": fa, "reference": fb, "ratio": x,
                          "round_ratios": [round(v, 3) for v in xs]}
        if scene != "score":
            # CPU per frame: lower is better, so the ratio is reference / ours.
            ca = median([row["vgpud"].get("cpu_ms_per_frame", {}).get(scene, {}).get("backend")
                         for row in rounds])
            cb = median([row["reference"].get("cpu_ms_per_frame", {}).get(scene, {})
                         .get("backend") for row in rounds])
            pair_row("med", "  back-end CPU ms/frame", ca, cb,
                     note="  (ref / ours: " + (f"{cb / ca:.2f}x)" if ca and cb else "-)"))
            medians[scene]["backend_cpu_ms_per_frame"] = {"vgpud": ca, "reference": cb}
    met = [medians[s]["ratio"] for s in scenes]
    if met and all(met):
        lo = min(met)
        log(f"target: every scene's median >= 1.0x reference: "
            f"{'met' if lo >= 1.0 else 'MISSED'} (lowest {lo:.2f}x)")
    elif scenes:
        log("target: every scene's median >= 1.0x reference: no verdict (a scene has no FPS "
            "from one back-end)")
    log(f"load average before {' '.join(load0)}, after {' '.join(load1)}")
    with open(os.path.join(OUT, "vm3d.json"), "w") as f:
        json.dump({"mode": "boots", "scenes": SCENES, "scene_seconds": SCENE_S,
                   "load_before": load0,
                   "load_after": load1,
                   "pin": {"qemu": format_cpus(pin[0]), "backend": format_cpus(pin[1])}
                   if pin else None,
                   "medians": medians, "rounds": rounds}, f, indent=1)
    log(f"results: {os.path.join(OUT, 'vm3d.json')}, logs: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
