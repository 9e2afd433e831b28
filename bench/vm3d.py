#!/usr/bin/env python3
"""3D in a real guest: glmark2-es2-drm --off-screen under QEMU 10 (TCG),
this project's back-end (QEMU on a vgpud instance's vhost-user.sock) against
QEMU's reference /usr/lib/qemu/vhost-user-gpu --virgl forced onto software
GBM (GBM_ALWAYS_SOFTWARE=1 --render-node=/dev/null), one paired boot each
per round.

The guest is scripts/vm-guest.sh's (vgpu.mode=3d): it mounts the host's /
read-only over 9p and runs vgpu.gl=PATH there, chrooted, on the render
node.  PATH here is a small script written into a private directory that
runs glmark2-es2-drm --off-screen on fixed scenes and durations; the guest
prints every line it writes on the serial console, where the per-scene FPS
is read.

Per boot it records: each scene's FPS, glmark2's score, the time from
QEMU's start to the first scene's result, and the back-end's peak RSS
(VmHWM of the vgpu-worker serving the VM, or of the reference process),
also without shared memory (the guest RAM both map).
Prints ratios ours / reference per scene.  Reports, never asserts: the exit
status is 0 unless the harness itself breaks.  A machine without QEMU 10,
the guest's parts, glmark2-es2-drm or a built vgpud gets one line saying
what is missing and exit 0.

Knobs (environment): BUILD_DIR (build), BENCH_ROUNDS (2),
BENCH_VM_SCENE_SECONDS (5), BENCH_VM_SCENES (the scene list, ';'
separated glmark2 -b values), BENCH_VM_TIMEOUT (300 s per boot),
BENCH_OUT (out/bench; results in vm3d.json, logs in vm3d/),
VGPU_QEMU (qemu-system-x86_64), VGPU_VM_ACCEL (tcg).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import vmlib  # noqa: E402  (QEMU's command line and the serial console, as the VM tests)
BUILD = os.path.abspath(os.environ.get("BUILD_DIR", os.path.join(SRC, "build")))
QEMU = os.environ.get("VGPU_QEMU", "qemu-system-x86_64")
REF = "/usr/lib/qemu/vhost-user-gpu"
GLMARK = "/usr/bin/glmark2-es2-drm"
MEM = "1G"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SCENE_S = int(os.environ.get("BENCH_VM_SCENE_SECONDS", "5"))
SCENES = [s for s in os.environ.get(
    "BENCH_VM_SCENES", "build:use-vbo=true;texture;shading:shading=phong;bump:bump-render=normals"
).split(";") if s]
TIMEOUT = float(os.environ.get("BENCH_VM_TIMEOUT", "300"))
OUT = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(SRC, "out", "bench")))
FPS_RE = re.compile(r"vgpu-guest: gl: \[(\w+)\] (.*?): FPS: (\d+) FrameTime: ([\d.]+) ms")
SCORE_RE = re.compile(r"glmark2 Score: (\d+)")


def log(msg):
    print(msg, flush=True)


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


def boot(backend, guest, client, logdir, tag):
    """One guest boot on backend ('vgpud' or 'reference'); returns a dict."""
    work = tempfile.mkdtemp(prefix=f"vgpu-vm3d-{tag}-")
    os.chmod(work, 0o755)
    serial = os.path.join(logdir, f"{tag}-serial.log")
    procs = []
    res = {"backend": backend, "scenes": {}, "score": None, "first_result_s": None,
           "done_s": None, "rss_kib": None, "rss_noshm_kib": None, "error": None}
    try:
        if backend == "vgpud":
            rdir = os.path.join(work, "run")
            conf = os.path.join(work, "vgpud.conf")
            with open(conf, "w") as f:
                f.write(f"[daemon]\nworker={BUILD}/src/worker/vgpu-worker\nrenderer=virgl\n"
                        "gpu-memory=4G\n\n"
                        "[profile bench]\nvram=4G\nmax-resources=65536\nmax-contexts=16\nmax-clients=1\n\n"
                        "[instance vgpu0]\nprofile=bench\n")
            be = subprocess.Popen([f"{BUILD}/src/cli/vgpud", "--foreground", "--runtime-dir", rdir,
                                   "--config", conf],
                                  stdout=open(os.path.join(logdir, f"{tag}-vgpud.log"), "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
            sock = os.path.join(rdir, "vgpu0", "vhost-user.sock")
        else:
            sock = os.path.join(work, "ref.sock")
            env = dict(os.environ, GBM_ALWAYS_SOFTWARE="1")
            be = subprocess.Popen([REF, "--virgl", "--render-node=/dev/null",
                                   f"--socket-path={sock}"], env=env,
                                  stdout=open(os.path.join(logdir, f"{tag}-backend.log"), "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(be)
        try:
            vmlib.wait_until(lambda: be.poll() is not None or os.path.exists(sock),
                             time.monotonic() + 20, sock)
        except vmlib.Timeout:
            pass
        if be.poll() is not None or not os.path.exists(sock):
            res["error"] = f"{backend} did not create {sock}"
            return res
        argv = vmlib.qemu_argv(
            QEMU, guest, sock, serial, MEM,
            "console=ttyS0 panic=-1 drm_kms_helper.fbdev_emulation=0 "
            f"vgpu.mode=3d vgpu.gl={client}",
            extra=["-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
                   "-device", "virtio-9p-pci,fsdev=root,mount_tag=rootfs"])
        t0 = time.monotonic()
        qemu = subprocess.Popen(argv, stdout=open(os.path.join(logdir, f"{tag}-qemu.log"), "w"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        procs.append(qemu)

        def rss_pids():
            if backend == "reference":
                return [be.pid]
            return [c for c in children(be.pid) if comm(c) == "vgpu-worker"]

        peak = peak_own = 0
        text = ""
        while time.monotonic() - t0 < TIMEOUT:
            for pid in rss_pids():
                hwm, own = mem_kib(pid)
                peak = max(peak, hwm)
                peak_own = max(peak_own, own)
            text = vmlib.read_serial(serial) or ""
            if res["first_result_s"] is None and FPS_RE.search(text):
                res["first_result_s"] = round(time.monotonic() - t0, 2)
            if "gl offscreen done" in text or "vgpu-guest: FAILED" in text:
                break
            if qemu.poll() is not None or be.poll() is not None:
                break
            time.sleep(0.25)
        res["done_s"] = round(time.monotonic() - t0, 2)
        res["rss_kib"] = peak or None
        res["rss_noshm_kib"] = peak_own or None
        for m in FPS_RE.finditer(text):
            opts = [o for o in m.group(2).split(":") if not o.startswith("duration=")]
            res["scenes"][":".join([m.group(1)] + opts)] = int(m.group(3))
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
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def main():
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
    client = write_client(work)
    with open("/proc/loadavg") as f:
        load0 = f.read().split()[:3]
    log(f"vm3d: {QEMU} TCG, guest {guest}, scenes {SCENES} x {SCENE_S} s, {ROUNDS} round(s), "
        f"load {' '.join(load0)}")
    rounds = []
    try:
        for rnd in range(1, ROUNDS + 1):
            row = {}
            for backend in ("vgpud", "reference"):
                r = boot(backend, guest, client, logdir, f"r{rnd}-{backend}")
                row[backend] = r
                log(f"round {rnd} {backend:9}: " + (f"ERROR {r['error']} " if r["error"] else "") +
                    " ".join(f"{k}={v}" for k, v in r["scenes"].items()) +
                    f" score={r['score']} first-result={r['first_result_s']}s "
                    f"done={r['done_s']}s peak-RSS={(r['rss_kib'] or 0) / 1024:.1f}MiB "
                    f"without-shmem={(r['rss_noshm_kib'] or 0) / 1024:.1f}MiB "
                    f"renderer={r.get('renderer')}")
            rounds.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[:3]

    log("")
    log(f"{'round':5} {'scene':32} {'vgpud':>6} {'ref':>6} {'x ref':>6}")
    ratios = []
    for i, row in enumerate(rounds, 1):
        a, b = row["vgpud"], row["reference"]
        for scene in list(a["scenes"]) + [k for k in b["scenes"] if k not in a["scenes"]]:
            fa, fb = a["scenes"].get(scene), b["scenes"].get(scene)
            x = fa / fb if fa and fb else None
            if x:
                ratios.append(x)
            log(f"{i:<5} {scene:32} {fa or '-':>6} {fb or '-':>6} "
                f"{f'{x:.2f}x' if x else '-':>6}")
        sa, sb = a["score"], b["score"]
        log(f"{i:<5} {'score':32} {sa or '-':>6} {sb or '-':>6} "
            f"{f'{sa / sb:.2f}x' if sa and sb else '-':>6}")
        fa, fb = a["first_result_s"], b["first_result_s"]
        log(f"{i:<5} {'QEMU start -> first result (s)':32} {fa or '-':>6} {fb or '-':>6} "
            f"{f'{fa / fb:.2f}x' if fa and fb else '-':>6}")
        ra, rb = a["rss_kib"], b["rss_kib"]
        log(f"{i:<5} {'back-end peak RSS (MiB)':32} {f'{ra / 1024:.1f}' if ra else '-':>6} "
            f"{f'{rb / 1024:.1f}' if rb else '-':>6} {f'{ra / rb:.2f}x' if ra and rb else '-':>6}")
        ra, rb = a["rss_noshm_kib"], b["rss_noshm_kib"]
        log(f"{i:<5} {'  without shared memory (MiB)':32} {f'{ra / 1024:.1f}' if ra else '-':>6} "
            f"{f'{rb / 1024:.1f}' if rb else '-':>6} {f'{ra / rb:.2f}x' if ra and rb else '-':>6}")
    if ratios:
        lo = min(ratios)
        log(f"target: every scene >= 1.0x reference: {'met' if lo >= 1.0 else 'MISSED'} "
            f"(lowest {lo:.2f}x)")
    log(f"load average before {' '.join(load0)}, after {' '.join(load1)}")
    with open(os.path.join(OUT, "vm3d.json"), "w") as f:
        json.dump({"scenes": SCENES, "scene_seconds": SCENE_S, "load_before": load0,
                   "load_after": load1, "rounds": rounds}, f, indent=1)
    log(f"results: {os.path.join(OUT, 'vm3d.json')}, logs: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
