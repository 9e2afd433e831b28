#!/usr/bin/env python3
"""vgpu benchmarks: vgpud vs virgl_test_server vs native llvmpipe, one run.

Every configuration runs the same scenario back to back (interleaved by
scenario), so machine load drifts affect them alike, and the table reports
ratios measured in this run only.  Targets are reported, never asserted: the
exit status is 0 whenever the harness itself worked.

Environment:
  BUILD_DIR            build tree holding vgpud, vgpu-worker, vgpu-run (default: build)
  BENCH_SECONDS        glxgears run length per scenario (default 15; 5 per line)
  BENCH_SCENE_SECONDS  glmark2 duration per scene (default 5)
  BENCH_CONFIGS        comma list of native,reference,vgpud,vgpud-1inst
  BENCH_SCENARIOS      comma list of gears-1,gears-4,glmark2-1,glmark2-4
  BENCH_ROUNDS         repeat the whole interleaved sequence (default 1)
  BENCH_OUT            directory for logs and results.json (default out/bench)
  BENCH_LAUNCHER       auto (vgpu-run when it works), vgpu-run, or unshare
  BENCH_MESA           comma list of the clients' Mesa: 22 (this host's) and 25
                       (default: both where the root is built, else 22)
                       (the Debian 13 root of scripts/mesa-root.sh, run
                       through scripts/in-mesa-root.sh; its configs are named
                       CONFIG-m25 and compared with reference-m25; no native)
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_MESA_ROOT = os.path.join(REPO, "scripts", "in-mesa-root.sh")
MESA_ROOT = os.path.join(REPO, "scripts", "mesa-root.sh")
M25 = "-m25"  # suffix of the configs whose clients are Mesa 25's
CLK_TCK = os.sysconf("SC_CLK_TCK")

GLMARK2_SCENES = [
    "build:use-vbo=true",
    "texture",
    "shading:shading=phong",
    "bump:bump-render=normals",
]
TENANTS = 4
CONFIGS = ["native", "reference", "vgpud", "vgpud-1inst"]
SCENARIOS = ["gears-1", "gears-4", "glmark2-1", "glmark2-4"]

# Targets from the issue; ratios are against the reference in the same run.
TARGET_ONE_TENANT = 1.0
AIM_ONE_TENANT = 1.15
TARGET_FOUR_AGG = 0.95
TARGET_FAIRNESS = 0.95
TARGET_SUPERVISOR_CPU = 1.0  # % of one core


def env_int(name, default):
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- /proc helpers

def proc_stat(pid):
    """(ppid, utime+stime ticks) or None if gone; comm may hold spaces."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12])


def proc_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def children_of(ppid, comm=None):
    """Live children of ppid; only those named comm when given."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[0] == ppid and (comm is None or proc_comm(int(name)) == comm):
            out.append(int(name))
    return out


def jain(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    sq = sum(x * x for x in xs)
    return (sum(xs) ** 2) / (len(xs) * sq) if sq > 0 else None


class ServerSampler(threading.Thread):
    """Samples a server's per-client children: peak VmRSS and CPU ticks."""

    def __init__(self, server_pid, comm=None, period=0.25):
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self.comm = comm
        self.period = period
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.peak_rss = {}
        self.cpu_ticks = {}

    def sample(self):
        for pid in children_of(self.server_pid, self.comm):
            rss = proc_rss_kib(pid)
            st = proc_stat(pid)
            with self.lock:
                if rss is not None:
                    self.peak_rss[pid] = max(rss, self.peak_rss.get(pid, 0))
                if st is not None:
                    self.cpu_ticks[pid] = st[1]

    def run(self):
        while not self.stop_event.wait(self.period):
            self.sample()

    def stop(self):
        self.stop_event.set()
        self.join()


# ---------------------------------------------------------------- servers

class Bench:
    def __init__(self):
        self.build = os.path.join(REPO, os.environ.get("BUILD_DIR", "build"))
        self.out = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(REPO, "out/bench")))
        os.makedirs(self.out, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="vgpu-bench-")
        self.gears_seconds = env_int("BENCH_SECONDS", 15)
        self.scene_seconds = env_int("BENCH_SCENE_SECONDS", 5)
        self.rounds = env_int("BENCH_ROUNDS", 1)
        self.configs = [c for c in os.environ.get("BENCH_CONFIGS", ",".join(CONFIGS)).split(",") if c]
        self.scenarios = [s for s in os.environ.get("BENCH_SCENARIOS", ",".join(SCENARIOS)).split(",") if s]
        self.launcher_pref = os.environ.get("BENCH_LAUNCHER", "auto")
        self.mesas = [m for m in os.environ.get("BENCH_MESA", default_mesas()).split(",") if m]
        for m in self.mesas:
            if m not in ("22", "25"):
                raise SystemExit(f"BENCH_MESA: {m!r} is neither 22 nor 25")
        if "25" in self.mesas:
            base = self.configs
            self.configs = base[:] if "22" in self.mesas else []
            self.configs += [c + M25 for c in base if c != "native"]
        self.mesa_root = None
        self.procs = []  # every long-lived process we started, for cleanup
        self.display = None
        self.ref = None
        self.vgpud = None
        self.vgpud_dir = os.path.join(self.tmp, "vgpud")
        self.unavailable = {}
        self.launcher = "unshare"
        self.results = []
        self.run_id = 0

    def require(self, name, tools, built=("vgpud",)):
        """True when every one of tools is on PATH and every program of
        built is in this build's src/cli; else logs "NAME: skipped: why"
        and returns False, and the bench ends there with status 0."""
        for tool in tools:
            if not shutil.which(tool):
                log(f"{name}: skipped: {tool} not found (see bench/README.md)")
                return False
        for prog in built:
            if not os.access(os.path.join(self.build, "src/cli", prog), os.X_OK):
                log(f"{name}: skipped: {self.build}/src/cli/{prog} not built (make build)")
                return False
        return True

    # -- process bookkeeping
    def spawn(self, argv, logname, env=None, **kw):
        logf = open(os.path.join(self.out, logname), "w")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, **kw)
        p.logf = logf
        p.logpath = logf.name
        return p

    def reap(self, p, timeout):
        """Waits with wait4 so the client's CPU time (rusage) is kept."""
        if p.returncode is not None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                p.returncode = -1
                return True
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                p.cpu_s = ru.ru_utime + ru.ru_stime
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop_proc(self, p, sig=signal.SIGTERM, grace=5.0):
        if p is None or p.returncode is not None or self.reap(p, 0):
            return
        try:
            os.killpg(p.pid, sig)  # the group we created with start_new_session
        except ProcessLookupError:
            pass
        if not self.reap(p, grace):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.reap(p, 30)

    def cleanup(self):
        for p in reversed(self.procs):
            self.stop_proc(p)

    # -- X server
    def start_xvfb(self):
        r, w = os.pipe()
        p = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x1024x24",
                              "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.out, "xvfb.log"), "w"),
                             start_new_session=True)
        os.close(w)
        self.procs.append(p)
        self.xvfb_pid = p.pid
        num = b""
        deadline = time.time() + 15
        while time.time() < deadline and not num.endswith(b"\n"):
            chunk = os.read(r, 16)
            if not chunk:
                break
            num += chunk
        os.close(r)
        if not num.strip():
            raise RuntimeError("Xvfb did not report a display")
        self.display = ":" + num.decode().strip()
        log(f"Xvfb on display {self.display}")

    # -- reference server
    def start_reference(self):
        sock = os.path.join(self.tmp, "ref.sock")
        p = self.spawn(["virgl_test_server", "--use-egl-surfaceless", f"--socket-path={sock}"],
                       "reference-server.log")
        self.procs.append(p)
        if not wait_for(lambda: os.path.exists(sock), 10):
            self.unavailable["reference"] = "virgl_test_server did not create its socket"
            return
        self.ref = (p, sock)
        log(f"virgl_test_server pid {p.pid} on {sock}")

    # -- vgpud
    def daemon_lines(self, build=None):
        """The [daemon] section: the build tree's worker, and GPU memory
        given rather than taken from half of the host's RAM, so that the
        benchmarks' instances (four of 4G here, more of 1G in sched.py) fit
        on a small host too; partitioning is not what they measure."""
        lines = ["[daemon]", "gpu-memory=64G"]
        worker = os.path.join(build or self.build, "src/worker/vgpu-worker")
        if os.access(worker, os.X_OK):
            # The build tree keeps the worker beside the sources, not beside vgpud.
            lines.append(f"worker={worker}")
        return lines + [""]

    def vgpud_config(self):
        lines = self.daemon_lines()
        lines += ["[profile bench]", "vram=4G", f"max-clients={TENANTS}", ""]
        for i in range(TENANTS):
            lines += [f"[instance t{i}]", "profile=bench", ""]
        return "\n".join(lines)

    def start_vgpud(self):
        p, err = self.launch_vgpud(self.vgpud_config(), [f"t{i}" for i in range(TENANTS)],
                                   self.vgpud_dir, "vgpud.log")
        if err:
            self.unavailable["vgpud"] = err
            return
        self.vgpud = (p, [os.path.join(self.vgpud_dir, f"t{i}", "vtest.sock")
                          for i in range(TENANTS)])
        log(f"vgpud pid {p.pid}, runtime dir {self.vgpud_dir}")

    def launch_vgpud(self, conf_text, instances, runtime_dir, logname, build=None):
        """Starts BUILD/src/cli/vgpud on conf_text; waits for every instance's
        vtest socket.  (process, None) when up, else (None, why)."""
        vgpud = os.path.join(build or self.build, "src/cli/vgpud")
        if not os.access(vgpud, os.X_OK):
            return None, f"{vgpud} not built"
        conf = os.path.join(self.tmp, logname.removesuffix(".log") + ".conf")
        with open(conf, "w") as f:
            f.write(conf_text)
        p = self.spawn([vgpud, "--foreground", "--runtime-dir", runtime_dir, "--config", conf],
                       logname)
        p.confpath = conf  # what a reload re-reads
        self.procs.append(p)
        socks = [os.path.join(runtime_dir, i, "vtest.sock") for i in instances]
        ok = wait_for(lambda: p.poll() is not None or all(os.path.exists(s) for s in socks), 10)
        if not ok or p.poll() is not None:
            with open(p.logpath) as f:
                tail = f.read().strip().splitlines()[-3:]
            self.stop_proc(p)
            return None, "vgpud did not start: " + " | ".join(tail)
        return p, None

    def pick_launcher(self, sock=None):
        """vgpu-run when it runs a command on sock (default: the reference's)."""
        vrun = os.path.join(self.build, "src/cli/vgpu-run")
        if self.launcher_pref == "unshare":
            return
        works = False
        sock = sock or (self.ref[1] if self.ref else None)
        if os.access(vrun, os.X_OK) and sock:
            r = subprocess.run([vrun, "--socket", sock, "--", "true"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            works = r.returncode == 0
        if works:
            self.launcher = "vgpu-run"
        elif self.launcher_pref == "vgpu-run":
            raise RuntimeError(f"{vrun} does not work (BENCH_LAUNCHER=vgpu-run)")

    def client_argv(self, config, tenant, cmd):
        """argv that runs cmd as a tenant of config."""
        if config == "native":
            return cmd
        m25 = config.endswith(M25)
        config = config.removesuffix(M25)
        if config == "reference":
            sock = self.ref[1]
            inst = None
        else:
            inst = f"t{tenant}" if config == "vgpud" else "t0"
            sock = os.path.join(self.vgpud_dir, inst, "vtest.sock")
        if m25:
            return ["sh", IN_MESA_ROOT, "--root", self.mesa_root, sock, "--"] + cmd
        return self.vtest_argv(sock, inst, self.vgpud_dir, cmd)

    def vtest_argv(self, sock, inst, runtime_dir, cmd):
        """argv that runs cmd (host Mesa) with its vtest connection on sock:
        instance inst of the vgpud serving runtime_dir, or, inst None, the
        server listening there."""
        if self.launcher == "vgpu-run":
            vrun = os.path.join(self.build, "src/cli/vgpu-run")
            if inst is None:
                return [vrun, "--socket", sock, "--"] + cmd
            return [vrun, "--runtime-dir", runtime_dir, "--instance", inst, "--"] + cmd
        # A private mount namespace where Mesa's fixed path is the chosen socket.
        script = ('mount --make-rprivate / && { [ -e /tmp/.virgl_test ] || '
                  'touch /tmp/.virgl_test; } && mount --bind "$0" /tmp/.virgl_test && exec "$@"')
        return ["unshare", "-m", "sh", "-c", script, sock] + cmd

    def client_env(self, config):
        env = dict(os.environ)
        env["DISPLAY"] = self.display
        env["LIBGL_ALWAYS_SOFTWARE"] = "1"
        env["vblank_mode"] = "0"
        if config == "native":
            env.pop("GALLIUM_DRIVER", None)
        else:
            env["GALLIUM_DRIVER"] = "virpipe"
        if config.endswith(M25):
            env["VGPU_PASS_ENV"] = "vblank_mode"  # the root's environment is its own
        return env

    def server_of(self, config):
        if config.startswith("reference"):
            return self.ref[0].pid if self.ref else None
        if config.startswith("vgpud"):
            return self.vgpud[0].pid if self.vgpud else None
        return None

    # ------------------------------------------------------------ one run
    def run_scenario(self, config, scenario):
        kind, n = scenario.split("-")
        n = int(n)
        self.run_id += 1
        if kind == "gears":
            lines = max(1, self.gears_seconds // 5)
            runtime = lines * 5 + 2.0
            cmd = ["glxgears", "-info"]
        else:
            lines = 0
            runtime = None
            cmd = ["glmark2", "--size", "400x300"]
            for s in GLMARK2_SCENES:
                cmd += ["-b", f"{s}:duration={self.scene_seconds}"]
        server = self.server_of(config)
        comm = "vgpu-worker" if config.startswith("vgpud") else None
        sampler = ServerSampler(server, comm) if server else None
        sup0 = proc_stat(server)[1] if server else None
        x0 = proc_stat(self.xvfb_pid)[1]
        t0 = time.monotonic()
        if sampler:
            sampler.start()
        clients = []
        for t in range(n):
            logname = f"{self.run_id:03d}-{config}-{scenario}-t{t}.log"
            clients.append(self.spawn(self.client_argv(config, t, cmd), logname,
                                      env=self.client_env(config)))
        if runtime is not None:
            time.sleep(runtime)
            if sampler:
                sampler.sample()  # before the clients go, so no worker CPU is missed
            for c in clients:
                self.stop_proc(c)
        else:
            limit = time.monotonic() + len(GLMARK2_SCENES) * self.scene_seconds * 4 + 60
            for c in clients:
                if not self.reap(c, max(1.0, limit - time.monotonic())):
                    self.stop_proc(c)
        wall = time.monotonic() - t0
        if sampler:
            sampler.stop()
        sup1 = proc_stat(server)[1] if server else None
        x1 = proc_stat(self.xvfb_pid)[1]
        per_tenant = []
        errors = []
        for c in clients:
            c.logf.close()
            with open(c.logpath, errors="replace") as f:
                text = f.read()
            fps, err = (parse_gears(text, lines) if kind == "gears" else parse_glmark2(text))
            err = err or check_renderer(text, config)
            if err:
                errors.append(f"{os.path.basename(c.logpath)}: {err}")
                fps = None
            per_tenant.append(fps)
        res = {"config": config, "scenario": scenario, "tenants": n, "wall_s": round(wall, 2)}
        if kind == "glmark2":
            res["scenes"] = [p["scenes"] if p else None for p in per_tenant]
            per_tenant = [p["mean"] if p else None for p in per_tenant]
        res["per_tenant_fps"] = per_tenant
        ok = [x for x in per_tenant if x is not None]
        res["fps"] = sum(ok) if len(ok) == n else None
        res["fairness"] = jain(per_tenant) if n > 1 and len(ok) == n else None
        if server:
            res["supervisor_cpu_pct"] = 100.0 * (sup1 - sup0) / CLK_TCK / wall
            rss = list(sampler.peak_rss.values())
            res["worker_rss_kib"] = rss
            res["worker_rss_mean_kib"] = sum(rss) / len(rss) if rss else None
            res["worker_cpu_s"] = sum(sampler.cpu_ticks.values()) / CLK_TCK
        cpu = [getattr(c, "cpu_s", None) for c in clients]
        res["client_cpu_s"] = sum(cpu) if None not in cpu else None
        res["xvfb_cpu_pct"] = 100.0 * (x1 - x0) / CLK_TCK / wall
        res["errors"] = errors
        return res

    # ------------------------------------------------------------ main
    def main(self):
        if not self.require("bench", ("Xvfb", "glxgears", "glmark2", "virgl_test_server",
                                      "unshare"), built=()):
            return 0
        self.start_xvfb()
        if any(c.startswith(("reference", "vgpud")) for c in self.configs):
            self.start_reference()
        if any(c.startswith("vgpud") for c in self.configs):
            self.start_vgpud()
            if "vgpud" in self.unavailable:
                self.unavailable["vgpud-1inst"] = self.unavailable["vgpud"]
        if any(c.endswith(M25) for c in self.configs):
            p = subprocess.run(["sh", MESA_ROOT, "--print"], capture_output=True, text=True)
            if p.returncode == 0:
                self.mesa_root = p.stdout.strip()
            else:
                for c in self.configs:
                    if c.endswith(M25):
                        self.unavailable[c] = "no Mesa 25 root: run make mesa-root"
            if "reference" in self.unavailable:
                self.unavailable.setdefault("reference" + M25, self.unavailable["reference"])
            if self.vgpud is None and "vgpud" in self.unavailable:
                for c in self.configs:
                    if c.startswith("vgpud") and c.endswith(M25):
                        self.unavailable.setdefault(c, self.unavailable["vgpud"])
        self.pick_launcher()
        log(f"vtest clients launched with {self.launcher}; load average "
            f"{os.getloadavg()[0]:.2f} at start")
        load0 = os.getloadavg()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        for rnd in range(self.rounds):
            for scenario in self.scenarios:
                for config in self.configs:
                    if config in self.unavailable:
                        continue
                    if config.startswith("vgpud-1inst") and scenario.endswith("-1"):
                        continue  # identical to vgpud with one tenant
                    log(f"[round {rnd + 1}/{self.rounds}] {config:16s} {scenario} ...")
                    r = self.run_scenario(config, scenario)
                    r["round"] = rnd + 1
                    for e in r["errors"]:
                        log(f"    error: {e}")
                    self.results.append(r)
        load1 = os.getloadavg()
        meta = {"started": started, "launcher": self.launcher, "cpus": os.cpu_count(),
                "mesa": self.mesas,
                "gears_seconds": self.gears_seconds, "scene_seconds": self.scene_seconds,
                "glmark2_scenes": GLMARK2_SCENES, "rounds": self.rounds,
                "loadavg_start": load0, "loadavg_end": load1, "unavailable": self.unavailable}
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump({"meta": meta, "runs": self.results}, f, indent=1)
        from report import print_report  # noqa: E402  (sibling module)
        print_report(meta, self.results)
        log(f"logs and results.json in {self.out}")
        return 0


def default_mesas():
    """Both Mesas where the Mesa 25 root is built, else this host's."""
    p = subprocess.run(["sh", MESA_ROOT, "--print"], capture_output=True, text=True)
    return "22,25" if p.returncode == 0 else "22"


def wait_for(cond, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def control(runtime_dir, requests, timeout=10):
    """Replies to requests (dicts) sent on one connection to vgpud's
    control socket: one JSON line each way per request."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(os.path.join(runtime_dir, "control.sock"))
        s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        data = b""
        while data.count(b"\n") < len(requests):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return [json.loads(line) for line in data.splitlines()[:len(requests)]]


def parse_gears(text, lines):
    vals = []
    for line in text.splitlines():
        if " frames in " in line and "FPS" in line:
            try:
                vals.append(float(line.split("=")[1].split()[0]))
            except (IndexError, ValueError):
                pass
    if not vals:
        return None, "no FPS lines from glxgears"
    if len(vals) >= 2:
        vals = vals[1:]  # the first interval includes start-up
    return sum(vals) / len(vals), None


def parse_glmark2(text):
    scenes = {}
    for line in text.splitlines():
        if line.startswith("[") and " FPS: " in line:
            name = line[1:line.index("]")]
            try:
                scenes[name] = float(line.split(" FPS: ")[1].split()[0])
            except (IndexError, ValueError):
                pass
    if len(scenes) != len(GLMARK2_SCENES):
        return None, f"glmark2 finished {len(scenes)} of {len(GLMARK2_SCENES)} scenes"
    return {"scenes": scenes, "mean": sum(scenes.values()) / len(scenes)}, None


def check_renderer(text, config):
    """A vtest client that fails to connect may fall back to plain llvmpipe."""
    rend = [l for l in text.splitlines() if "GL_RENDERER" in l]
    if not rend:
        return "no GL_RENDERER line"
    is_virgl = "virgl" in rend[0]
    if config == "native" and is_virgl:
        return f"unexpected renderer: {rend[0].strip()}"
    if config != "native" and not is_virgl:
        return f"not rendering through vtest: {rend[0].strip()}"
    return None


def run_main(bench):
    """A bench script's entry: SIGINT and SIGTERM end it with status 130
    through the same clean-up as a normal end (bench.cleanup(), then its
    temporary directory removed), and its exit status is bench.main()'s."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: sys.exit(130))
    try:
        rc = bench.main()
    finally:
        bench.cleanup()
        shutil.rmtree(bench.tmp, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run_main(Bench())
