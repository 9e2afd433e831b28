#!/usr/bin/env python3
"""vgpu scheduler benchmarks: GPU-time shares, frame-rate cap, overhead.

Every scenario writes a vgpud configuration of its own (profiles with
gpu-share, weight, fps-cap) and starts its own vgpud from the build tree, on
the Xvfb and with the launcher of bench.py (whose helpers this reuses), and
prints ratios measured in this run only.  Goals are reported, never
asserted: the exit status is 0 whenever the harness itself worked.

Scenarios (BENCH_SCHED_SCENARIOS, comma list):
  noisy       glxgears victim alone on instance `victim`, then beside six
              heavy glmark2 tenants on instance `crowd`: victim FPS over half
              its solo FPS; once with gpu-share=equal, once best-effort
  weights     gpu-share=fixed, weights 1:2:4 on three instances, one tenant
              each, frames and charged GPU time counted by vgpud: FPS ratios
              and the largest deviation from 1:2:4.  The goal's case has
              GPU-bound tenants (glmark2 BENCH_SCHED_WEIGHTS_SCENE, one scene
              for the whole run: glmark2 sets a scene up again every time it
              restarts it, CPU time that is no frame's); glxgears is shown
              beside it (a frame is ~1 ms of GPU work and as much of round
              trips, X and cache refills, so its ratios say as much about
              those)
  fpscap      tools/vgpu-frametime (one timestamp per frame) uncapped, then
              on an instance with fps-cap=30: mean FPS, frame-time stddev
  overhead    four glxgears on four best-effort instances, served by BUILD_DIR
              and by a second build with -Dscheduler=false (built here in
              BENCH_SCHED_NOSCHED_DIR), interleaved on, off, on, off
  supervisor  eight glxgears on two gpu-share=equal instances: vgpud's
              utime+stime over the measurement window, % of one core

Environment:
  BUILD_DIR                    build tree with vgpud, vgpu-worker, vgpu-run,
                               vgpu-frametime (default: build)
  BENCH_SCHED_SECONDS          measured time per run, after a discarded start:
                               glxgears' first 5 s line, or BENCH_SCHED_WARMUP
                               s of frame times (default 10; 5 s lines)
  BENCH_SCHED_ROUNDS           repeats of noisy, weights, fpscap, supervisor
                               (default 1; figures are means over rounds)
  BENCH_SCHED_OVERHEAD_ROUNDS  on/off pairs of the overhead scenario (default 2)
  BENCH_SCHED_HEAVY            glmark2 scene of the heavy tenants (default refract)
  BENCH_SCHED_HEAVY_TENANTS    how many (default 6)
  BENCH_SCHED_WEIGHTS_SCENE    glmark2 scene of the weights goal (default refract)
  BENCH_SCHED_WARMUP           seconds the heavy tenants render before the
                               victim starts, and seconds of frame times
                               discarded at the start of a frame-time run
                               (default 2)
  BENCH_SCHED_NOSCHED_DIR      build tree with -Dscheduler=false (default build-nosched)
  BENCH_OUT                    logs in BENCH_OUT/sched/, results in
                               BENCH_OUT/sched.json (default out/bench)
  BENCH_LAUNCHER               as for bench.py
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402
from report import fmt, verdict  # noqa: E402

SCENARIOS = ["noisy", "weights", "fpscap", "overhead", "supervisor"]

GOAL_NOISY = 0.9  # victim FPS / (0.5 x solo FPS), gpu-share=equal
WEIGHTS = [1, 2, 4]
GOAL_WEIGHT_DEV = 10.0  # % from 1:2:4
FPS_CAP = 30
GOAL_CAP_TOL = 1.0  # FPS either side of the cap
OVERHEAD_TENANTS = 4
GOAL_OVERHEAD = 0.97  # scheduler compiled in / compiled out, best-effort
SUP_TENANTS = 8
GOAL_SUP_CPU = 1.0  # % of one core

# Every profile: enough VRAM and clients for the scenario, no per-uid limit
# (every client of the benchmark runs as the same uid).
BASE_PROFILE = {"vram": "1G", "max-clients": "8", "max-clients-per-uid": "unlimited"}
# vgpud start-up log lines that say how GPU time is shared.
SCHED_LOG = re.compile(r"sched|cpu\.weight|gpu-share|fps-cap|LP_NUM_THREADS|threads", re.I)


class Unavailable(Exception):
    pass


def env_nonneg(name, default):
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def frame_stats(text, skip):
    """Frame rate and frame times of vgpu-frametime's output after skip s."""
    stamps = []
    for line in text.splitlines():
        try:
            stamps.append(float(line))
        except ValueError:
            pass
    if len(stamps) < 3:
        return None, f"{len(stamps)} frames from vgpu-frametime"
    kept = [t for t in stamps if t >= stamps[0] + skip]
    if len(kept) < 3:
        kept = stamps  # too short a run to discard a warm-up
    dts = [b - a for a, b in zip(kept, kept[1:])]
    span = kept[-1] - kept[0]
    m = span / len(dts)
    sd = (sum((d - m) ** 2 for d in dts) / len(dts)) ** 0.5
    srt = sorted(dts)
    return {"fps": len(dts) / span, "frames": len(kept), "span_s": span,
            "frame_ms_mean": 1e3 * m, "frame_ms_sd": 1e3 * sd,
            "frame_ms_p99": 1e3 * srt[min(len(srt) - 1, int(0.99 * len(srt)))],
            "frame_ms_max": 1e3 * srt[-1]}, None


def glmark2_fps_lines(text):
    return [float(m.group(1)) for m in re.finditer(r"FPS: ([0-9.]+)", text)]


def build_options(build):
    """{name: value} of a meson build tree, or None."""
    p = subprocess.run(["meson", "introspect", "--buildoptions", build],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return None
    try:
        return {o["name"]: o["value"] for o in json.loads(p.stdout)}
    except (ValueError, KeyError, TypeError):
        return None


class SchedBench(B.Bench):
    def __init__(self):
        super().__init__()
        self.json_path = os.path.join(self.out, "sched.json")
        self.out = os.path.join(self.out, "sched")
        os.makedirs(self.out, exist_ok=True)
        self.seconds = B.env_int("BENCH_SCHED_SECONDS", 10)
        self.lines = max(1, self.seconds // 5)  # glxgears lines measured, after the first
        self.rounds = B.env_int("BENCH_SCHED_ROUNDS", 1)
        self.pairs = B.env_int("BENCH_SCHED_OVERHEAD_ROUNDS", 2)
        self.heavy_scene = os.environ.get("BENCH_SCHED_HEAVY", "refract")
        self.heavy_n = B.env_int("BENCH_SCHED_HEAVY_TENANTS", 6)
        self.weights_scene = os.environ.get("BENCH_SCHED_WEIGHTS_SCENE", "refract")
        self.warmup = env_nonneg("BENCH_SCHED_WARMUP", 2)
        self.ft_skip = self.warmup
        self.scenarios = [s for s in os.environ.get("BENCH_SCHED_SCENARIOS",
                                                    ",".join(SCENARIOS)).split(",") if s]
        for s in self.scenarios:
            if s not in SCENARIOS:
                raise SystemExit(f"BENCH_SCHED_SCENARIOS: {s!r} is not one of {SCENARIOS}")
        self.nosched = os.path.join(B.REPO, os.environ.get("BENCH_SCHED_NOSCHED_DIR",
                                                           "build-nosched"))
        self.frametime = os.path.join(self.build, "tools/vgpu-frametime")
        self.seq = 0
        self.runs = []  # one entry per measurement, for the JSON
        self.skipped = {}  # scenario -> why
        self.first_log = None  # log of the first scenario's vgpud
        self.sched_log = None  # its lines about sharing GPU time
        self.sched_built = None  # BUILD_DIR's -Dscheduler, when the option exists

    # ------------------------------------------------------------ parts
    def daemon_config(self, profiles, instances, build=None):
        """vgpud.conf text: daemon_lines(), profiles {name: {key: value}}
        (over BASE_PROFILE), instances {name: profile}."""
        lines = self.daemon_lines(build)
        for name, keys in profiles.items():
            lines.append(f"[profile {name}]")
            lines += [f"{k}={v}" for k, v in {**BASE_PROFILE, **keys}.items()]
            lines.append("")
        for name, prof in instances.items():
            lines += [f"[instance {name}]", f"profile={prof}", ""]
        return "\n".join(lines)

    def daemon(self, tag, profiles, instances, build=None):
        """A vgpud of its own on daemon_config(profiles, instances, build).
        (process, runtime dir); the process's confpath is its file."""
        rd = os.path.join(self.tmp, tag)
        p, err = self.launch_vgpud(self.daemon_config(profiles, instances, build),
                                   list(instances), rd, f"{tag}-vgpud.log", build)
        if err:
            raise Unavailable(err)
        if self.first_log is None and build is None and tag != "probe":
            self.first_log = p.logpath
        return p, rd

    def sharing_log(self):
        """Lines of the first scenario's vgpud log that say how GPU time is
        shared (read once that vgpud has stopped, so the log is whole)."""
        if self.first_log is None:
            return None
        with open(self.first_log, errors="replace") as f:
            # Paths are left out of the match: the tree's own may say "sched".
            return [l.rstrip() for l in f if SCHED_LOG.search(re.sub(r"/\S*", "", l))]

    def stop_daemon(self, p):
        self.stop_proc(p)
        if p in self.procs:
            self.procs.remove(p)

    def tenant(self, rd, inst, cmd, tag, **kw):
        """cmd as a tenant of instance inst; kw as for subprocess.Popen."""
        self.seq += 1
        sock = os.path.join(rd, inst, "vtest.sock")
        p = self.spawn(self.vtest_argv(sock, inst, rd, cmd), f"{self.seq:03d}-{tag}.log",
                       env=self.client_env("vgpud"), **kw)
        self.procs.append(p)  # stopped on the way out, whatever happens
        return p

    def read_log(self, p):
        p.logf.close()
        with open(p.logpath, errors="replace") as f:
            return f.read()

    def wait_logs(self, clients, ready, timeout):
        """Waits until ready(log text) holds for every client's log, or one
        of them has exited.  False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            pending = False
            for c in clients:
                if c.poll() is not None:
                    return True  # the caller's parse reports it
                with open(c.logpath, errors="replace") as f:
                    if not ready(f.read()):
                        pending = True
                        break
            if not pending:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)

    def gears(self, vgpud, rd, placement, tag):
        """glxgears on each instance of placement, all at once.  Each one's
        first 5 s line (start-up) is discarded; the measurement lasts until
        every tenant has printed self.lines more.  FPS per tenant (None
        where it failed), errors, and vgpud's CPU (% of one core) from the
        moment every tenant had its first line to the end."""
        clients = [self.tenant(rd, inst, ["glxgears", "-info"], f"{tag}-{inst}-{i}")
                   for i, inst in enumerate(placement)]

        def lines(n):
            return lambda text: text.count(" frames in ") >= n

        errors = []
        if not self.wait_logs(clients, lines(1), 120):
            errors.append("a tenant printed no frame rate within 120 s")
        s0, w0 = B.proc_stat(vgpud.pid), time.monotonic()
        if not errors and not self.wait_logs(clients, lines(1 + self.lines),
                                             self.lines * 5 + 60):
            errors.append(f"a tenant printed fewer than {1 + self.lines} frame rates")
        s1, w1 = B.proc_stat(vgpud.pid), time.monotonic()
        for c in clients:
            self.stop_proc(c)
        sup = (100.0 * (s1[1] - s0[1]) / B.CLK_TCK / (w1 - w0)) if s0 and s1 else None
        fps = []
        for c in clients:
            text = self.read_log(c)
            f, err = B.parse_gears(text, self.lines)
            err = err or B.check_renderer(text, "vgpud")
            if err:
                errors.append(f"{os.path.basename(c.logpath)}: {err}")
                f = None
            fps.append(f)
        if vgpud.poll() is not None:
            errors.append(f"vgpud exited ({vgpud.returncode}); see {vgpud.logpath}")
        return fps, errors, sup

    def record(self, scenario, case, **kw):
        r = {"scenario": scenario, "case": case, **kw}
        for e in r.get("errors", []):
            B.log(f"    error: {e}")
        self.runs.append(r)
        return r

    # ------------------------------------------------------------ scenarios
    def run_noisy(self, rnd):
        scene = f"{self.heavy_scene}:duration=5"
        scene_name = self.heavy_scene.split(":")[0]
        for mode in ("equal", "best-effort"):
            B.log(f"[round {rnd}] noisy {mode}: victim alone ...")
            p, rd = self.daemon(f"noisy-{mode}-{rnd}", {"p": {"gpu-share": mode}},
                                {"victim": "p", "crowd": "p"})
            try:
                fps, errors, sup = self.gears(p, rd, ["victim"], f"noisy-{mode}-solo")
                self.record("noisy", f"{mode} solo", round=rnd, mode=mode, fps=fps[0],
                            errors=errors, supervisor_cpu_pct=sup)
                B.log(f"[round {rnd}] noisy {mode}: victim beside {self.heavy_n} "
                      f"glmark2 {self.heavy_scene} ...")
                heavy = [self.tenant(rd, "crowd", ["glmark2", "--size", "400x300",
                                                   "--run-forever", "-b", scene],
                                     f"noisy-{mode}-heavy{i}") for i in range(self.heavy_n)]
                # Warm-up: every heavy tenant is rendering its scene.
                started = self.wait_logs(heavy, lambda t: f"[{scene_name}]" in t, 120)
                time.sleep(self.warmup)
                errors = [] if started else [f"the heavy tenants did not start {scene_name} "
                                             "within 120 s"]
                errors += [f"{os.path.basename(h.logpath)}: exited before the victim started"
                          for h in heavy if h.poll() is not None]
                fps, errs, sup = self.gears(p, rd, ["victim"], f"noisy-{mode}-victim")
                errors += errs
                for h in heavy:
                    self.stop_proc(h)
                heavy_fps = []
                for h in heavy:
                    text = self.read_log(h)
                    err = B.check_renderer(text, "vgpud")
                    if err:
                        errors.append(f"{os.path.basename(h.logpath)}: {err}")
                    heavy_fps.append(mean(glmark2_fps_lines(text)))
                agg = sum(heavy_fps) if None not in heavy_fps else None
                self.record("noisy", f"{mode} beside heavy", round=rnd, mode=mode,
                            fps=None if errors else fps[0], heavy_scene=self.heavy_scene,
                            heavy_tenants=self.heavy_n, heavy_fps=heavy_fps,
                            heavy_fps_agg=agg, errors=errors, supervisor_cpu_pct=sup)
            finally:
                self.stop_daemon(p)

    def counted(self, vgpud, rd, placement, tag, cmd):
        """cmd as a tenant of each instance of placement, all at once; once
        every one has drawn frames for self.warmup s, vgpud's own counters
        over self.seconds: per tenant frames per second and the part of the
        charged GPU time it got (None where it failed), errors, and vgpud's
        CPU (% of one core) over that window."""
        clients = [self.tenant(rd, inst, cmd, f"{tag}-{inst}-{i}")
                   for i, inst in enumerate(placement)]
        errors = []

        def sample():
            replies = B.control(rd, [{"command": "show", "name": i} for i in placement])
            out = []
            for inst, r in zip(placement, replies):
                ts = r.get("instance", {}).get("tenants", []) if r.get("ok") else []
                out.append(ts[0] if len(ts) == 1 else None)
            return time.monotonic(), out

        deadline = time.monotonic() + 120
        while True:
            _, now = sample()
            if all(t and t["frames"] > 0 for t in now):
                break
            if any(c.poll() is not None for c in clients) or time.monotonic() > deadline:
                errors.append("a tenant drew no frame within 120 s, or exited")
                break
            time.sleep(0.25)
        fps, busy, sup = [None] * len(placement), [None] * len(placement), None
        if not errors:
            time.sleep(self.warmup)
            s0, (t0, a) = B.proc_stat(vgpud.pid), sample()
            time.sleep(self.seconds)
            s1, (t1, z) = B.proc_stat(vgpud.pid), sample()
            sup = (100.0 * (s1[1] - s0[1]) / B.CLK_TCK / (t1 - t0)) if s0 and s1 else None
            for k, (x, y) in enumerate(zip(a, z)):
                if not x or not y or x["worker_pid"] != y["worker_pid"]:
                    errors.append(f"{placement[k]}: its tenant changed during the window")
                    continue
                fps[k] = (y["frames"] - x["frames"]) / (t1 - t0)
                busy[k] = (y["busy_ns"] - x["busy_ns"]) / 1e9 / (t1 - t0)
        for c in clients:
            self.stop_proc(c)
        for c in clients:
            err = B.check_renderer(self.read_log(c), "vgpud")
            if err:
                errors.append(f"{os.path.basename(c.logpath)}: {err}")
        if vgpud.poll() is not None:
            errors.append(f"vgpud exited ({vgpud.returncode}); see {vgpud.logpath}")
        return fps, busy, errors, sup

    def run_weights(self, rnd):
        profiles = {f"w{w}": {"gpu-share": "fixed", "weight": str(w)} for w in WEIGHTS}
        placement = [f"w{w}" for w in WEIGHTS]
        for case, cmd in (("gpu-bound", ["glmark2", "--size", "400x300", "--run-forever",
                                          "-b", f"{self.weights_scene}:duration=3600"]),
                          ("glxgears", ["glxgears", "-info"])):
            B.log(f"[round {rnd}] weights {':'.join(map(str, WEIGHTS))}, {case} "
                  f"({' '.join(cmd[:1] + cmd[-1:])}) ...")
            p, rd = self.daemon(f"weights-{case}-{rnd}", profiles,
                                {i: i for i in placement})
            try:
                fps, busy, errors, sup = self.counted(p, rd, placement, f"weights-{case}", cmd)
            finally:
                self.stop_daemon(p)
            self.record("weights", case, round=rnd, weights=WEIGHTS, fps=fps, busy=busy,
                        errors=errors, client=" ".join(cmd), supervisor_cpu_pct=sup)

    def run_fpscap(self, rnd):
        if not os.access(self.frametime, os.X_OK):
            raise Unavailable(f"{self.frametime} not built (needs libgl-dev and libx11-dev)")
        p, rd = self.daemon(f"fpscap-{rnd}", {"free": {"fps-cap": "0"},
                                              "capped": {"fps-cap": str(FPS_CAP)}},
                            {"free": "free", "capped": "capped"})
        try:
            for inst in ("free", "capped"):
                B.log(f"[round {rnd}] fpscap {inst} ...")
                c = self.tenant(rd, inst, [self.frametime, str(self.seconds + self.ft_skip)],
                                f"fpscap-{inst}")
                if not self.reap(c, self.seconds + 60):
                    self.stop_proc(c)
                text = self.read_log(c)
                st, err = frame_stats(text, self.ft_skip)
                err = err or B.check_renderer(text, "vgpud")
                errors = [f"{os.path.basename(c.logpath)}: {err}"] if err else []
                if c.returncode not in (0, None) and not errors:
                    errors.append(f"{os.path.basename(c.logpath)}: exit {c.returncode}")
                self.record("fpscap", inst, round=rnd, fps_cap=FPS_CAP if inst == "capped" else 0,
                            errors=errors, **({} if errors else st))
        finally:
            self.stop_daemon(p)

    def run_supervisor(self, rnd):
        B.log(f"[round {rnd}] supervisor: {SUP_TENANTS} tenants ...")
        p, rd = self.daemon(f"supervisor-{rnd}", {"p": {"gpu-share": "equal"}},
                            {"s0": "p", "s1": "p"})
        try:
            fps, errors, sup = self.gears(p, rd, [f"s{i % 2}" for i in range(SUP_TENANTS)],
                                          "supervisor")
        finally:
            self.stop_daemon(p)
        self.record("supervisor", "equal", round=rnd, fps=fps, errors=errors,
                    supervisor_cpu_pct=sup)

    def prepare_nosched(self):
        """Builds the -Dscheduler=false tree; raises Unavailable saying why not."""
        with open(os.path.join(B.REPO, "meson_options.txt")) as f:
            if not re.search(r"option\(\s*'scheduler'", f.read()):
                raise Unavailable("no scheduler option")
        opts = build_options(self.build)
        if opts is None:
            raise Unavailable(f"cannot read the options of {self.build}")
        if "scheduler" not in opts:
            raise Unavailable(f"{self.build} predates the scheduler option: rebuild it (make build)")
        self.sched_built = opts["scheduler"]
        if opts["scheduler"] is not True:
            raise Unavailable(f"{self.build} is configured with -Dscheduler=false")
        args = [f"-Dbuildtype={opts.get('buildtype', 'release')}",
                f"-Db_ndebug={opts.get('b_ndebug', 'false')}", "-Dscheduler=false"]
        if "worker_static_glib" in opts:
            args.append(f"-Dworker_static_glib={str(opts['worker_static_glib']).lower()}")
        B.log(f"overhead: building {self.nosched} ({' '.join(args)}) ...")
        with open(os.path.join(self.out, "nosched-build.log"), "w") as logf:
            if os.path.exists(os.path.join(self.nosched, "meson-private", "coredata.dat")):
                setup = ["meson", "setup", "--reconfigure", self.nosched] + args
            else:
                setup = ["meson", "setup", self.nosched] + args
            # Only what the scenario runs: vgpu-run comes from BUILD_DIR.
            ninja = ["ninja", "-C", self.nosched, "src/cli/vgpud", "src/worker/vgpu-worker"]
            for cmd in (setup, ninja):
                if subprocess.run(cmd, cwd=B.REPO, stdout=logf, stderr=subprocess.STDOUT).returncode:
                    raise Unavailable(f"{' '.join(cmd[:3])} failed: see {logf.name}")
        off = build_options(self.nosched) or {}
        if off.get("scheduler") is not False:
            raise Unavailable(f"{self.nosched} did not take -Dscheduler=false")

    def run_overhead(self):
        """Needs prepare_nosched() done."""
        insts = {f"o{i}": "p" for i in range(OVERHEAD_TENANTS)}
        prof = {"p": {"gpu-share": "best-effort"}}
        daemons = {}
        try:
            daemons["on"] = self.daemon("overhead-on", prof, insts)
            daemons["off"] = self.daemon("overhead-off", prof, insts, build=self.nosched)
            for rnd in range(1, self.pairs + 1):
                for variant in ("on", "off"):
                    B.log(f"[round {rnd}/{self.pairs}] overhead: scheduler {variant} ...")
                    p, rd = daemons[variant]
                    fps, errors, sup = self.gears(p, rd, list(insts), f"overhead-{variant}")
                    agg = sum(fps) if None not in fps else None
                    self.record("overhead", variant, round=rnd, fps=fps, fps_agg=agg,
                                errors=errors, supervisor_cpu_pct=sup)
        finally:
            for p, _ in daemons.values():
                self.stop_daemon(p)

    # ------------------------------------------------------------ summary
    def figures(self):
        """Per-scenario figures over rounds, and the goal verdicts."""
        def sel(sc, case=None):
            return [r for r in self.runs if r["scenario"] == sc and (case is None or r["case"] == case)]

        fig, goals = {}, []
        if any(r["scenario"] == "noisy" for r in self.runs):
            for mode in ("equal", "best-effort"):
                solo = mean([r["fps"] for r in sel("noisy", f"{mode} solo")])
                crowd = sel("noisy", f"{mode} beside heavy")
                vic = mean([r["fps"] for r in crowd])
                ratio = vic / (0.5 * solo) if vic is not None and solo else None
                fig[f"noisy {mode}"] = {
                    "solo_fps": solo, "victim_fps": vic, "ratio_to_half_solo": ratio,
                    "heavy_fps_agg": mean([r.get("heavy_fps_agg") for r in crowd]),
                    "sup": max((r["supervisor_cpu_pct"] for r in crowd
                                if r.get("supervisor_cpu_pct") is not None), default=None)}
                if mode == "equal":
                    goals.append((None if ratio is None else ratio >= GOAL_NOISY,
                                  f"noisy neighbour, equal: victim {fmt(ratio, '.2f')}x of half "
                                  f"its solo FPS, goal >= {GOAL_NOISY:.2f}x"))
                else:
                    goals.append((None, f"noisy neighbour, best-effort: {fmt(ratio, '.2f')}x "
                                        "(no goal: shown beside equal)"))
        def ratios(xs):
            """xs over the first; the largest deviation from WEIGHTS, %."""
            norm = [x / xs[0] for x in xs] if None not in xs and xs[0] else None
            dev = (max(abs(n / (w / WEIGHTS[0]) - 1.0) for n, w in zip(norm, WEIGHTS)) * 100.0
                   if norm else None)
            return norm, dev

        for case in ("gpu-bound", "glxgears"):
            ws = [r for r in sel("weights", case) if not r["errors"]]
            if not sel("weights", case):
                continue
            per = [mean([r["fps"][i] for r in ws]) for i in range(len(WEIGHTS))]
            busy = [mean([r["busy"][i] for r in ws]) for i in range(len(WEIGHTS))]
            norm, dev = ratios(per)
            bnorm, bdev = ratios(busy)
            fig[f"weights {case}"] = {"fps": per, "normalised": norm, "worst_dev_pct": dev,
                                      "busy": busy, "busy_normalised": bnorm,
                                      "busy_worst_dev_pct": bdev}
            text = (f"fixed shares {':'.join(map(str, WEIGHTS))}, {case}: FPS "
                    f"{':'.join(fmt(n, '.2f') for n in norm) if norm else '-'}, largest "
                    f"deviation {fmt(dev, '.1f')}%")
            if case == "gpu-bound":
                goals.append((None if dev is None else dev <= GOAL_WEIGHT_DEV,
                              text + f", goal <= {GOAL_WEIGHT_DEV:.0f}%"))
            else:
                goals.append((None, text + " (no goal: shown beside the GPU-bound case)"))
        for inst in ("free", "capped"):
            rs = sel("fpscap", inst)
            if rs:
                fig[f"fpscap {inst}"] = {k: mean([r.get(k) for r in rs])
                                         for k in ("fps", "frame_ms_sd", "frame_ms_p99",
                                                   "frame_ms_max")}
        if "fpscap capped" in fig:
            f = fig["fpscap capped"]
            goals.append((None if f["fps"] is None else abs(f["fps"] - FPS_CAP) <= GOAL_CAP_TOL,
                          f"fps-cap={FPS_CAP}: {fmt(f['fps'], '.2f')} FPS, goal {FPS_CAP} +- "
                          f"{GOAL_CAP_TOL:.0f}; frame-time stddev {fmt(f['frame_ms_sd'], '.2f')} ms"))
        if "overhead" in self.skipped:
            goals.append((None, f"overhead: skipped: {self.skipped['overhead']}"))
        elif sel("overhead"):
            on = mean([r["fps_agg"] for r in sel("overhead", "on")])
            off = mean([r["fps_agg"] for r in sel("overhead", "off")])
            ratio = on / off if on is not None and off else None
            fig["overhead"] = {"on_fps_agg": on, "off_fps_agg": off, "ratio": ratio}
            goals.append((None if ratio is None else ratio >= GOAL_OVERHEAD,
                          f"overhead, best-effort, {OVERHEAD_TENANTS} tenants: scheduler "
                          f"compiled in {fmt(ratio, '.3f')}x of compiled out, goal >= "
                          f"{GOAL_OVERHEAD:.2f}x"))
        sv = sel("supervisor")
        if sv:
            sup = max((r["supervisor_cpu_pct"] for r in sv
                       if r.get("supervisor_cpu_pct") is not None), default=None)
            if any(r["errors"] for r in sv):
                sup = None
            fig["supervisor"] = {"cpu_pct": sup, "fps": [mean(x) for x in zip(*[r["fps"] for r in sv])]}
            goals.append((None if sup is None else sup < GOAL_SUP_CPU,
                          f"supervisor with {SUP_TENANTS} tenants: {fmt(sup, '.2f')}% of a core, "
                          f"goal < {GOAL_SUP_CPU:.0f}%"))
        return fig, goals

    def print_report(self, meta, fig, goals):
        print()
        print(f"vgpu sched bench  {meta['started']}  {meta['cpus']} CPUs, llvmpipe, "
              f"vtest clients via {meta['launcher']}, rounds={self.rounds} "
              f"(overhead: {self.pairs} pairs), "
              f"{self.seconds} s per measurement, load avg {meta['loadavg_start'][0]:.2f} -> "
              f"{meta['loadavg_end'][0]:.2f}, {meta['wall_s']:.0f} s")
        for sc, why in self.skipped.items():
            print(f"  {sc}: skipped: {why}")
        if self.sched_log:
            print("vgpud on sharing GPU time (start-up log):")
            for l in self.sched_log:
                print(f"  {l}")
        else:
            print("vgpud's start-up log says nothing about sharing GPU time")
        hdr = f"{'scenario':10s} {'case':36s} {'n':>2s} {'FPS':>18s}  {'figure':28s} {'sup CPU%':>8s}"
        print(hdr)
        print("-" * len(hdr))

        def row(sc, case, n, fps, figure="", sup=None):
            print(f"{sc:10s} {case:36s} {n:>2d} {fps:>18s}  {figure:28s} {fmt(sup, '8.2f'):>8s}")

        for mode in ("equal", "best-effort"):
            f = fig.get(f"noisy {mode}")
            if f:
                row("noisy", f"{mode}, victim alone", 1, fmt(f["solo_fps"], ".1f"))
                row("noisy", f"{mode}, victim + {self.heavy_n} {self.heavy_scene}",
                    1 + self.heavy_n, fmt(f["victim_fps"], ".1f"),
                    f"{fmt(f['ratio_to_half_solo'], '.2f')}x half solo; crowd "
                    f"{fmt(f['heavy_fps_agg'], '.0f')}", f["sup"])
        for case in ("gpu-bound", "glxgears"):
            f = fig.get(f"weights {case}")
            if f:
                row("weights", f"fixed {':'.join(map(str, WEIGHTS))}, {case}", len(WEIGHTS),
                    "/".join(fmt(x, ".1f" if case == "gpu-bound" else ".0f") for x in f["fps"]),
                    (":".join(fmt(n, ".2f") for n in f["normalised"]) if f["normalised"] else "-")
                    + f", dev {fmt(f['worst_dev_pct'], '.1f')}%")
                row("", "  charged GPU time", len(WEIGHTS),
                    "/".join(fmt(x, ".3f") for x in f["busy"]),
                    (":".join(fmt(n, ".2f") for n in f["busy_normalised"])
                     if f["busy_normalised"] else "-")
                    + f", dev {fmt(f['busy_worst_dev_pct'], '.1f')}%")
        for inst, label in (("free", "no cap"), ("capped", f"fps-cap={FPS_CAP}")):
            f = fig.get(f"fpscap {inst}")
            if f:
                row("fpscap", f"vgpu-frametime, {label}", 1, fmt(f["fps"], ".2f"),
                    f"sd {fmt(f['frame_ms_sd'], '.2f')} ms, p99 {fmt(f['frame_ms_p99'], '.1f')} ms")
        f = fig.get("overhead")
        if f:
            row("overhead", "best-effort, scheduler compiled in", OVERHEAD_TENANTS,
                fmt(f["on_fps_agg"], ".1f"))
            row("overhead", "best-effort, scheduler compiled out", OVERHEAD_TENANTS,
                fmt(f["off_fps_agg"], ".1f"), f"in/out {fmt(f['ratio'], '.3f')}x")
        f = fig.get("supervisor")
        if f:
            agg = sum(f["fps"]) if f["fps"] and None not in f["fps"] else None
            row("supervisor", "equal, 2 instances", SUP_TENANTS, fmt(agg, ".1f"),
                "vgpud CPU over the window", f["cpu_pct"])
        print()
        print("FPS: glxgears, mean of the 5 s lines after the first (several tenants: per")
        print("  tenant or sum); vgpu-frametime: frames over the span after the first "
              f"{self.ft_skip} s.")
        print("sup CPU%: vgpud's utime+stime over the FPS window, % of one core.")
        print("\ngoals:")
        for ok, text in goals:
            print(f"  {verdict(ok)} {text}")

    # ------------------------------------------------------------ main
    def main(self):
        if not self.require("sched", ("Xvfb", "glxgears", "glmark2", "unshare", "meson", "ninja")):
            return 0
        t_start = time.monotonic()
        if "overhead" in self.scenarios:
            try:
                self.prepare_nosched()  # before any measurement: the build loads the machine
            except Unavailable as e:
                self.skipped["overhead"] = str(e)
        self.start_xvfb()
        # The launcher is chosen on a scratch vgpud's socket.
        try:
            p, rd = self.daemon("probe", {"p": {}}, {"probe": "p"})
        except Unavailable as e:
            B.log(f"sched: skipped: {e}")
            return 0
        self.pick_launcher(os.path.join(rd, "probe", "vtest.sock"))
        self.stop_daemon(p)
        load0 = os.getloadavg()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        B.log(f"sched bench: vtest clients launched with {self.launcher}; load average "
              f"{load0[0]:.2f} at start")
        for rnd in range(1, self.rounds + 1):
            for sc in self.scenarios:
                if sc == "overhead" or sc in self.skipped:
                    continue
                try:
                    getattr(self, f"run_{sc}")(rnd)
                except Unavailable as e:
                    self.skipped[sc] = str(e)
                    B.log(f"  {sc}: skipped: {e}")
        if "overhead" in self.scenarios and "overhead" not in self.skipped:
            try:
                self.run_overhead()
            except Unavailable as e:
                self.skipped["overhead"] = str(e)
        load1 = os.getloadavg()
        self.sched_log = self.sharing_log()
        meta = {"started": started, "launcher": self.launcher, "cpus": os.cpu_count(),
                "seconds": self.seconds, "rounds": self.rounds, "overhead_pairs": self.pairs,
                "heavy_scene": self.heavy_scene, "heavy_tenants": self.heavy_n,
                "warmup_s": self.warmup, "frametime_skip_s": self.ft_skip,
                "build": self.build, "nosched_build": self.nosched,
                "build_scheduler_option": self.sched_built,
                "loadavg_start": load0, "loadavg_end": load1,
                "wall_s": time.monotonic() - t_start, "skipped": self.skipped,
                "vgpud_sched_log": self.sched_log}
        fig, goals = self.figures()
        with open(self.json_path, "w") as f:
            json.dump({"meta": meta, "figures": fig,
                       "goals": [{"met": ok, "text": t} for ok, t in goals],
                       "runs": self.runs}, f, indent=1)
        self.print_report(meta, fig, goals)
        B.log(f"logs in {self.out}, results in {self.json_path}")
        return 0


if __name__ == "__main__":
    B.run_main(SchedBench())
