#!/usr/bin/env python3
"""make demo: starts vgpud on its embedded configuration in a private
runtime directory, runs glxgears on vgpu0 and vgpu1 at the same time for
about ten seconds (each on its own virtual X screen), prints a table per
instance and saves a PNG of each window.  Stops everything it started."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
VGPUD = os.path.join(BUILD, "src/cli/vgpud")
VGPUCTL = os.path.join(BUILD, "src/cli/vgpuctl")
VGPU_RUN = os.path.join(BUILD, "src/cli/vgpu-run")
XSHOT = os.path.join(BUILD, "tools/vgpu-xshot")
OUT = os.path.abspath("out/demo")
SECONDS = int(os.environ.get("DEMO_SECONDS", "10"))
INSTANCES = ["vgpu0", "vgpu1"]

procs = []


def say(msg):
    print(f"[demo] {msg}", flush=True)


def cleanup():
    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def start(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    procs.append(p)
    return p


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"[demo] timed out waiting for {what}")


def free_display(start_at):
    for n in range(start_at, start_at + 100):
        if not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            return n
    raise SystemExit("[demo] no free X display number")


def ctl_json(rundir, *args):
    out = subprocess.run([VGPUCTL, "--runtime-dir", rundir, "--json"] + list(args),
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024


def main():
    for p in (VGPUD, VGPUCTL, VGPU_RUN):
        if not os.access(p, os.X_OK):
            raise SystemExit(f"[demo] {p} is missing: run 'make build' first")
    for p in ("Xvfb", "glxgears"):
        if not shutil.which(p):
            raise SystemExit(f"[demo] {p} is missing: run 'make deps' first")
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="vgpu-demo-")
    rundir = os.path.join(tmp, "run")
    log = open(os.path.join(OUT, "vgpud.log"), "w")
    try:
        say(f"starting vgpud (embedded configuration) in {rundir}")
        start([VGPUD, "--foreground", "--runtime-dir", rundir], stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(os.path.join(rundir, "control.sock")), 30, "vgpud")
        subprocess.run([VGPUCTL, "--runtime-dir", rundir, "list"], check=True)

        displays = {}
        n = 90
        for inst in INSTANCES:
            n = free_display(n)
            displays[inst] = f":{n}"
            say(f"starting Xvfb {displays[inst]} for {inst}")
            start(["Xvfb", displays[inst], "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: os.path.exists(f"/tmp/.X11-unix/X{n}"), 20, "Xvfb")
            n += 1
        time.sleep(0.3)

        say(f"running glxgears on {' and '.join(INSTANCES)} at the same time for {SECONDS} s")
        clients = {}
        for inst in INSTANCES:
            clients[inst] = start([VGPU_RUN, "--runtime-dir", rundir, "--instance", inst, "--",
                                   "timeout", "-s", "INT", str(SECONDS + 1), "glxgears", "-info"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=dict(os.environ, DISPLAY=displays[inst]))
        time.sleep(SECONDS * 0.6)
        snap = {inst: ctl_json(rundir, "show", inst)["instance"] for inst in INSTANCES}
        shots = {}
        for inst in INSTANCES:
            path = os.path.join(OUT, f"{inst}.png")
            if os.access(XSHOT, os.X_OK):
                r = subprocess.run([XSHOT, "--display", displays[inst], "--name", "glxgears",
                                    "--output", path], capture_output=True, text=True)
                if r.returncode == 0:
                    shots[inst] = path
        outputs = {inst: clients[inst].communicate(timeout=SECONDS + 30)[0] for inst in INSTANCES}

        print()
        for inst in INSTANCES:
            out, s = outputs[inst], snap[inst]
            m = re.search(r"GL_RENDERER\s*=\s*(.*)", out)
            fps = [float(x) for x in re.findall(r"= ([\d.]+) FPS", out)]
            u, l = s["usage"], s["limits"]
            rows = [("renderer", m.group(1) if m else "(none: see the output below)"),
                    ("frames per second", f"{sum(fps) / len(fps):.0f}" if fps else "-"),
                    ("VRAM used / limit", f"{size(u['vram'])} / {size(l['vram'])}"),
                    ("resources", f"{u['resources']} / {l['resources'] or 'unlimited'}"),
                    ("clients", f"{u['clients']} / {l['clients'] or 'unlimited'}"),
                    ("screenshot", shots.get(inst, "(vgpu-xshot not built)"))]
            print(f"== {inst} (profile {s['profile']}) ==")
            for k, v in rows:
                print(f"  {k:<18} {v}")
            if not m or not fps:
                print(out)
            print()
        say(f"vgpud's log: {os.path.join(OUT, 'vgpud.log')}")
        ok = all(re.search(r"GL_RENDERER\s*=\s*virgl", outputs[i]) for i in INSTANCES)
        return 0 if ok else 1
    finally:
        say("stopping everything the demo started")
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
