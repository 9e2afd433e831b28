#!/usr/bin/env python3
"""What serving metrics costs the tenants and vgpud.

One vgpud and one set of eight glxgears tenants (four on each of two
gpu-share=equal instances) run for the whole measurement; only the
metrics endpoint changes.  Before every window the harness installs one
of two configuration files as vgpud's --config, identical but for
`metrics-listen=127.0.0.1:PORT` (on) or its absence (off), and runs
`vgpuctl reload`: vgpud opens or closes its listener as it does for an
operator.  In "on" windows a thread of the harness fetches /metrics once
a second (a real HTTP GET); in "off" windows nothing scrapes, and a
connection to PORT must be refused (the switch is checked, not assumed).

Windows are BENCH_METRICS_SECONDS long, each after its reload and a
settling gap of GAP_S (neither measured), in quartets A B B A (odd
rounds) or B A A B (even rounds, so that a window's place in its
quartet weighs on A and B alike).  A is off; B is on in a test quartet
and off again in a control quartet (the A/A control: the same reloads
and schedule, the endpoint never on).  A round is one quartet of each,
in alternating order from round to round; BENCH_METRICS_ROUNDS rounds.
Each quartet gives two pairs (A, B) of adjacent windows, so a drift of
the machine over a quartet weighs on both sides alike.

Frames are counted by vgpud itself: each tenant's `frames` counter (one
per frame read back to the client, i.e. per glXSwapBuffers under
virpipe), read with `show` for both instances on one connection to
vgpud's control socket at each window's edges; the edge's time is the
midpoint of that request.  glxgears prints a frame rate only every 5 s,
on its own clock, so its lines cannot be cut at window edges; the
counters can, to the frame (some 600-1000 frames a second here), and
they also show that every tenant rendered in every window and stayed
the same process all along.  The socket is read directly rather than
through vgpuctl so that an edge costs one round trip, not a process
start (the reloads, in the gaps, go through the vgpuctl binary).

CPU placement (BENCH_METRICS_PIN, on by default where the harness may
use two or more CPUs): tenant i's glxgears and its worker, every thread
of both, run on CPU i modulo the CPUs (client: bound before it runs;
worker, started by vgpud: bound once every tenant has connected); a
thread that widens its own affinity later (Mesa's disk-cache thread
does) is bound again before the next window and named in the report.
vgpud and Xvfb are not pinned.  Unpinned on 2 CPUs, the kernel's
placement of 8 clients and 8 workers made the fastest tenant of a
window 2.4-3.2 times as fast as the slowest (median over windows),
moved the aggregate rate of adjacent windows by 6.4-6.6% (median) and
the frames per CPU-second by 12% (coefficient of variation); pinned,
1.2-1.45 times, 3-4% and 7% on the same, shared, machine.  Pinned
tenants cannot leave a CPU that other work holds, so on a shared
machine they get less CPU time (there 1.3 CPUs against 1.7): the
figures are ratios within the run, never absolute frame rates.

BENCH_METRICS_AUTOGROUP_NICE (unset: left alone): with the kernel's
autogroups (sched_autogroup_enabled) CPU time is shared between
sessions, not processes, so `nice` hardly shields the bench from other
sessions' work; this writes the value to /proc/PID/autogroup of every
process the bench runs (root may give a negative one), at the cost of
whatever else runs on the machine.  It leaves the figures' meaning as
it is; it is for a machine that other work shares.

Reported, for on/off and for the A/A control: the ratio of sums (B
frames / B seconds over A frames / A seconds), the median of the
per-pair ratios, and a bootstrap 95% interval of the ratio of sums over
pairs (BOOTSTRAP resamples of the pairs, fixed seed).  The verdict is a
non-inferiority test on that interval: "met" when its lower end is at
least the goal, "MISSED" when its upper end is below it, "n/a" (not
resolved) when it straddles the goal.  The A/A control is the bench's
own check: its interval must contain 1 (the schedule favours neither
position); where it does not, the verdict is "n/a" too, and its width
shows the bench's noise floor.  The same figures per CPU-second (frames over the CPU time of
everything the bench runs: vgpud, workers, clients, Xvfb and the
harness with its scraper, from /proc/PID/task/*/schedstat) tell CPU
taken from the tenants apart from work done less efficiently.  vgpud's
CPU over the "on" windows in % of one core (goal < 1%; the "off"
windows beside it), the scrapes that succeeded and failed.  Goals are
reported, never asserted: the exit status is 0 whenever the harness
itself worked.

Environment (besides BUILD_DIR, BENCH_OUT and BENCH_LAUNCHER as for
bench.py):
  BENCH_METRICS_SECONDS  length of one window (default 2: two scrapes
                         in an "on" window; on a shared, loaded 2-core
                         machine the A/A interval reached 4.0% and 5.4%
                         from 1 with 2 s windows, 3.4% to 9.5% with 4 s
                         ones in about the same time: more pairs, and
                         less drift of the load within a pair)
  BENCH_METRICS_ROUNDS   rounds of one test and one control quartet
                         (default 9: 18 on/off and 18 A/A pairs, about
                         3.5 minutes in all)
  BENCH_METRICS_PIN      1 (default where 2+ CPUs): tenant i on CPU i
                         modulo the usable CPUs; 0: no pinning; a CPU
                         list (e.g. 2-3): tenants spread over those
  BENCH_METRICS_AUTOGROUP_NICE  autogroup nice value for the bench's
                         processes (default: unset, left alone)
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402
from pairs import BOOTSTRAP, half_width, pair_stats, quartet_pairs  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness as h  # noqa: E402
import sched as S  # noqa: E402
import vm3d as V  # noqa: E402  (CPU pinning helpers)
from report import fmt, verdict  # noqa: E402

TENANTS = 8
INSTANCES = ("m0", "m1")
GOAL_RATIO = 0.99
GOAL_SUP_CPU = 1.0  # % of one core
GAP_S = 0.5  # after a reload, before a window starts
# Roles in a quartet: odd rounds A B B A, even rounds B A A B, so that a
# window's place in its quartet weighs on A and B alike.  A is "off"; B
# is "on" in test quartets and "off" again in control quartets.
ORDERS = (("A", "B", "B", "A"), ("B", "A", "A", "B"))
CASE = {("test", "A"): "off", ("test", "B"): "on", ("control", "A"): "off",
        ("control", "B"): "off"}


class Scraper(threading.Thread):
    """GET /metrics once a second until stopped; counts what came back."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop_ev = threading.Event()
        self.ok = self.failed = 0
        self.bytes = 0
        self.last_error = None

    def run(self):
        while not self.stop_ev.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    body = r.read()
                    self.ok += 1
                    self.bytes = len(body)
            except OSError as e:
                self.failed += 1
                self.last_error = str(e)
            self.stop_ev.wait(1.0)

    def finish(self):
        self.stop_ev.set()
        self.join(10)


def ancestors(pid):
    """The pids above pid, nearest first, up to init."""
    out = []
    while pid > 1:
        st = B.proc_stat(pid)
        if not st:
            break
        pid = st[0]
        out.append(pid)
    return out


def thread_ns(pids):
    """{(pid, tid): ns on a CPU} of every thread of pids, from
    /proc/PID/task/TID/schedstat (nanoseconds, not clock ticks)."""
    out = {}
    for pid, tid in V.threads(pids):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[(pid, tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_delta(a, b):
    """Seconds on a CPU between two thread_ns() samples: threads started
    in between count whole; those gone by b are lost (none in the
    processes sampled here, whose threads live as long as they do)."""
    return sum(v - a.get(k, 0) for k, v in b.items()) / 1e9


class MetricsBench(S.SchedBench):
    def __init__(self):
        super().__init__()
        base = os.path.dirname(self.out)
        self.json_path = os.path.join(base, "metrics.json")
        self.out = os.path.join(base, "metrics")
        os.makedirs(self.out, exist_ok=True)
        self.seconds = B.env_int("BENCH_METRICS_SECONDS", 2)
        self.rounds = B.env_int("BENCH_METRICS_ROUNDS", 9)
        self.vgpuctl = os.path.join(self.build, "src/cli/vgpuctl")
        self.listen = None
        self.port = None
        self.vgpud = None
        self.rd = None
        self.conf = {}  # "on"/"off" -> the configuration file's text
        self.windows = []
        self.scrapes = {"ok": 0, "failed": 0, "bytes": 0, "last_error": None}
        try:
            self.pin = self.pin_plan(os.environ.get("BENCH_METRICS_PIN", ""),
                                     sorted(os.sched_getaffinity(0)))
        except ValueError as e:
            raise SystemExit(f"BENCH_METRICS_PIN: {e}")
        self.repinned = set()
        nice = os.environ.get("BENCH_METRICS_AUTOGROUP_NICE", "")
        try:
            self.ag_nice = int(nice) if nice else None
        except ValueError:
            raise SystemExit(f"BENCH_METRICS_AUTOGROUP_NICE: {nice!r} is not a number")
        self.ag_set = None  # what setting it did, for the report
        self.clients_by_index = []  # vgpud's client pid of tenant i
        self.held_ns = 0  # the tenants' throttled_ns at the last edge
        self.who = None  # client pid -> (instance, worker pid), as at the start

    def daemon_lines(self, build=None):
        lines = super().daemon_lines(build)
        # Never the host's /var/lib/vgpu: run-time changes there would
        # change the instances under test.
        lines.insert(len(lines) - 1, f"state-dir={os.path.join(self.tmp, 'state')}")
        if self.listen:
            lines.insert(len(lines) - 1, f"metrics-listen={self.listen}")
        return lines

    # ------------------------------------------------------------ parts
    @staticmethod
    def pin_plan(value, allowed):
        """The CPU of each tenant (list, by tenant index) for
        BENCH_METRICS_PIN=value, or None: no pinning."""
        if value == "0" or (value in ("", "1") and len(allowed) < 2):
            return None
        cpus = allowed if value in ("", "1") else V.parse_cpus(value)
        if not set(cpus) <= set(allowed):
            raise ValueError(f"names CPUs outside those this process may use "
                             f"({V.format_cpus(allowed)})")
        return [cpus[i % len(cpus)] for i in range(TENANTS)]

    def set_autogroups(self):
        """BENCH_METRICS_AUTOGROUP_NICE: the scheduler autogroup of every
        process the bench runs (each session started here is one) gets
        that nice value, i.e. its weight against other sessions' groups."""
        if self.ag_nice is None:
            return
        done, failed = 0, []
        for pid in sorted({p for ps in self.cpu_groups().values() for p in ps}):
            try:
                with open(f"/proc/{pid}/autogroup", "w") as f:
                    f.write(str(self.ag_nice))
                done += 1
            except OSError as e:
                failed.append(f"{pid}: {e.strerror}")
        self.ag_set = f"autogroup nice {self.ag_nice} for {done} processes" + (
            f" (not for {', '.join(failed)})" if failed else "")
        B.log(f"metrics: {self.ag_set}")

    def hold_pins(self, widened=None):
        """Tenant i's client and worker (all their threads) on CPU pin[i]:
        the worker, started by vgpud, is bound at the first call; later,
        any thread that widened its own affinity is bound again and named
        in widened (default self.repinned)."""
        if not self.pin:
            return
        for i, client in enumerate(self.clients_by_index):
            V.hold_pin([client, self.who[client][1]], [self.pin[i]],
                       self.repinned if widened is None else widened)

    def make_configs(self):
        profiles = {"p": {"gpu-share": "equal"}}
        insts = {i: "p" for i in INSTANCES}
        self.port = h.free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.conf["on"] = self.daemon_config(profiles, insts)
        self.listen = None
        self.conf["off"] = self.daemon_config(profiles, insts)
        return profiles, insts

    def switch(self, case):
        """Installs the case's configuration and reloads vgpud; checks that
        an "off" endpoint refuses connections.  None, or what went wrong."""
        path = self.vgpud.confpath
        with open(path + ".new", "w") as f:
            f.write(self.conf[case])
        os.replace(path + ".new", path)
        r = subprocess.run([self.vgpuctl, "--runtime-dir", self.rd, "reload"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return f"vgpuctl reload ({case}) exited {r.returncode}: {(r.stdout + r.stderr).strip()}"
        if case == "off":
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
                return f"127.0.0.1:{self.port} still accepts connections after the reload to off"
            except ConnectionRefusedError:
                pass
            except OSError as e:
                return f"127.0.0.1:{self.port} after the reload to off: {e}"
        return None

    def edge(self):
        """(time, {client pid: frames}, {client pid: (instance, worker pid)})
        from vgpud's counters now."""
        t0 = time.monotonic()
        replies = B.control(self.rd, [{"command": "show", "name": i} for i in INSTANCES])
        t1 = time.monotonic()
        frames, who = {}, {}
        self.held_ns = 0
        for inst, r in zip(INSTANCES, replies):
            if not r.get("ok"):
                raise S.Unavailable(f"show {inst}: {r.get('error', r)}")
            for t in r["instance"].get("tenants", []):
                frames[t["client_pid"]] = t["frames"]
                who[t["client_pid"]] = (inst, t["worker_pid"])
                self.held_ns += t.get("throttled_ns", 0)
        return (t0 + t1) / 2, frames, who

    def cpu_groups(self):
        """{group: pids} whose CPU time is sampled at window edges."""
        return {"vgpud": [self.vgpud.pid], "workers": [w for _, w in self.who.values()],
                "clients": list(self.who), "xvfb": [self.xvfb_pid], "harness": [os.getpid()]}

    def cpu_sample(self):
        return {g: thread_ns(pids) for g, pids in self.cpu_groups().items()}

    def window(self, idx, rnd, kind, pos, role):
        """One window: switch, settle, count.  Its record."""
        case = CASE[(kind, role)]
        err = self.switch(case)
        if err:
            raise S.Unavailable(err)
        self.hold_pins()
        scraper = Scraper(self.port) if case == "on" else None
        if scraper:
            scraper.start()
        time.sleep(GAP_S)
        # CPU, then frames, at both edges: the same lag on each side.
        c0 = self.cpu_sample()
        t0, f0, _ = self.edge()
        held0 = self.held_ns
        time.sleep(self.seconds)
        c1 = self.cpu_sample()
        t1, f1, who = self.edge()
        held = (self.held_ns - held0) / 1e9
        if scraper:
            scraper.finish()
            self.scrapes["ok"] += scraper.ok
            self.scrapes["failed"] += scraper.failed
            self.scrapes["bytes"] = scraper.bytes or self.scrapes["bytes"]
            self.scrapes["last_error"] = scraper.last_error or self.scrapes["last_error"]
        errors = []
        if scraper and (scraper.failed or not scraper.ok):
            errors.append(f"{scraper.ok} scrapes of {scraper.url} succeeded, {scraper.failed} "
                          f"failed ({scraper.last_error})")
        if who != self.who or set(f0) != set(self.who):
            errors.append(f"tenants changed: {sorted(self.who.items())} at the start, "
                          f"{sorted(who.items())} now")
        per = {pid: f1[pid] - f0[pid] for pid in f0 if pid in f1}
        errors += [f"tenant {pid} on {who.get(pid, ('?',))[0]} rendered no frame"
                   for pid, n in per.items() if n <= 0]
        dt = t1 - t0
        frames = sum(per.values())
        cpu = {g: cpu_delta(c0[g], c1[g]) for g in c0}
        w = {"index": idx, "round": rnd, "quartet": kind, "position": pos, "role": role,
             "case": case,
             "start_s": t0 - self.t_first, "seconds": dt, "frames": frames,
             "fps": frames / dt if dt > 0 else None,
             "tenant_fps": {str(pid): n / dt for pid, n in sorted(per.items())},
             "cpu_s": cpu, "cpu_s_all": sum(cpu.values()),
             "throttled_s": held,
             "scrapes": scraper.ok if scraper else 0,
             "scrape_failures": scraper.failed if scraper else 0,
             "errors": errors}
        for e in errors:
            B.log(f"    error: {e}")
        self.windows.append(w)
        return w

    def schedule(self):
        """(round, quartet kind, position, role) in the order run."""
        out = []
        for rnd in range(1, self.rounds + 1):
            kinds = ("test", "control") if rnd % 2 else ("control", "test")
            order = ORDERS[(rnd - 1) % 2]
            for kind in kinds:
                out += [(rnd, kind, pos, role) for pos, role in enumerate(order)]
        return out

    def pairs_of(self, kind, per="seconds"):
        """((A frames, A per), (B frames, B per)) of each pair of kind's
        quartets, the windows at positions (0, 1) and (3, 2); per:
        "seconds" (wall time) or "cpu_s_all" (CPU time of everything the
        bench runs)."""
        return quartet_pairs([w for w in self.windows if w["quartet"] == kind],
                             lambda w: w["round"],
                             lambda w: (w["frames"], w[per]) if w["frames"] and w[per] else None)

    def cpu_pct(self, sel, group="vgpud"):
        ws = [w for w in self.windows if sel(w)]
        t = sum(w["seconds"] for w in ws)
        return 100.0 * sum(w["cpu_s"][group] for w in ws) / t if t else None

    # ------------------------------------------------------------ main
    def main(self):
        if not self.require("metrics", ("Xvfb", "glxgears", "unshare"), built=("vgpud", "vgpuctl")):
            return 0
        t_start = time.monotonic()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        self.start_xvfb()
        try:
            p, rd = self.daemon("probe", {"p": {}}, {"probe": "p"})
        except S.Unavailable as e:
            B.log(f"metrics: skipped: {e}")
            return 0
        self.pick_launcher(os.path.join(rd, "probe", "vtest.sock"))
        self.stop_daemon(p)
        profiles, insts = self.make_configs()
        try:
            self.vgpud, self.rd = self.daemon("metrics", profiles, insts)
        except S.Unavailable as e:
            B.log(f"metrics: skipped: {e}")
            return 0
        B.log(f"metrics: {TENANTS} glxgears on {', '.join(INSTANCES)}; endpoint "
              f"127.0.0.1:{self.port} switched by vgpuctl reload; {self.rounds} rounds of "
              f"{self.seconds} s windows")
        placement = [INSTANCES[i % len(INSTANCES)] for i in range(TENANTS)]
        clients = [self.tenant(self.rd, inst, ["glxgears", "-info"], f"metrics-{inst}-{i}",
                               preexec_fn=V.pinned([self.pin[i]] if self.pin else None))
                   for i, inst in enumerate(placement)]
        # Warm-up: every tenant has printed its first 5 s frame rate.
        errors = []
        if not self.wait_logs(clients, lambda t: " frames in " in t, 120):
            errors.append("a tenant printed no frame rate within 120 s")
        errors += [f"{os.path.basename(c.logpath)}: exited (status {c.returncode}) during the "
                   "warm-up" for c in clients if c.poll() is not None]
        if not errors:
            _, _, self.who = self.edge()
            if len(self.who) != TENANTS:
                errors.append(f"vgpud shows {len(self.who)} tenants, not {TENANTS}")
            # Tenant i: the client whose process descends from clients[i].
            self.clients_by_index = []
            for c in clients:
                pid = next((p for p in self.who if c.pid in (p, *ancestors(p))), None)
                if pid is None:
                    errors.append(f"{os.path.basename(c.logpath)}: not among vgpud's tenants")
                self.clients_by_index.append(pid)
            if not errors:
                self.hold_pins(widened=set())
                self.set_autogroups()
                time.sleep(GAP_S)
        load0 = os.getloadavg()
        self.t_first = time.monotonic()
        failed = None
        if not errors:
            plan = self.schedule()
            for idx, (rnd, kind, pos, role) in enumerate(plan):
                try:
                    w = self.window(idx, rnd, kind, pos, role)
                except (S.Unavailable, OSError, ValueError, subprocess.SubprocessError) as e:
                    failed = f"window {idx + 1} ({kind}, {CASE[(kind, role)]}): {e}"
                    break
                if pos == 3:
                    B.log(f"[round {rnd}/{self.rounds}] {kind:7s} "
                          + " ".join(f"{x['role']}:{x['case']:3s} {x['fps']:6.1f}"
                                     for x in self.windows[-4:]) + " FPS")
                errors += [f"window {idx + 1}: {e}" for e in w["errors"]]
                if any(c.poll() is not None for c in clients):
                    failed = "a tenant exited during the measurement"
                    break
        load1 = os.getloadavg()
        for c in clients:
            self.stop_proc(c)
        for c in clients:
            text = self.read_log(c)
            err = B.check_renderer(text, "vgpud")
            if err:
                errors.append(f"{os.path.basename(c.logpath)}: {err}")
        if self.vgpud.poll() is not None:
            errors.append(f"vgpud exited ({self.vgpud.returncode}); see {self.vgpud.logpath}")
        self.stop_daemon(self.vgpud)
        if failed:
            errors.append(failed)
        for e in errors:
            B.log(f"metrics: error: {e}")

        onoff = pair_stats(self.pairs_of("test"))
        aa = pair_stats(self.pairs_of("control"))
        onoff_cpu = pair_stats(self.pairs_of("test", "cpu_s_all"))
        aa_cpu = pair_stats(self.pairs_of("control", "cpu_s_all"))
        tot = sum(w["seconds"] for w in self.windows)
        bench_cpus = sum(w["cpu_s_all"] for w in self.windows) / tot if tot else None
        noise = half_width(aa["ci95"])
        aa_ci = aa["ci95"]
        unbiased = bool(aa_ci) and aa_ci[0] <= 1.0 <= aa_ci[1]
        sup_on = self.cpu_pct(lambda w: w["case"] == "on")
        sup_off = self.cpu_pct(lambda w: w["case"] == "off")

        def fps_of(sel):
            ws = [w for w in self.windows if sel(w)]
            t = sum(w["seconds"] for w in ws)
            return sum(w["frames"] for w in ws) / t if t else None

        fps_on = fps_of(lambda w: w["case"] == "on")
        fps_off = fps_of(lambda w: w["quartet"] == "test" and w["case"] == "off")
        ratio = onoff["ratio"]
        ci = onoff["ci95"]
        judged = None
        if errors:
            why = "; not judged: errors above"
        elif not unbiased:
            why = (f"; not judged: the A/A control's interval "
                   f"{fmt(aa_ci and aa_ci[0], '.3f')}..{fmt(aa_ci and aa_ci[1], '.3f')} "
                   f"does not contain 1")
        elif not ci:
            why = "; not judged: no interval"
        elif ci[0] >= GOAL_RATIO:
            judged, why = True, "; the whole interval is above the goal"
        elif ci[1] < GOAL_RATIO:
            judged, why = False, "; the whole interval is below the goal"
        else:
            why = "; not resolved: the interval straddles the goal"
        why += (f"; A/A control {fmt(aa_ci and aa_ci[0], '.3f')}.."
                f"{fmt(aa_ci and aa_ci[1], '.3f')}, noise floor "
                f"{fmt(noise and 100 * noise, '.1f')}%")
        goals = [(judged,
                  f"aggregate FPS with metrics scraped / without: {fmt(ratio, '.3f')}, 95% "
                  f"interval {fmt(ci and ci[0], '.3f')}..{fmt(ci and ci[1], '.3f')} "
                  f"(goal >= {GOAL_RATIO}){why}"),
                 (None if errors or sup_on is None else sup_on < GOAL_SUP_CPU,
                  f"vgpud with metrics scraped every second: {fmt(sup_on, '.2f')}% of a core "
                  f"(goal < {GOAL_SUP_CPU}%; {fmt(sup_off, '.2f')}% in the off windows)")]
        meta = {"started": started, "cpus": os.cpu_count(), "window_s": self.seconds,
                "gap_s": GAP_S, "rounds": self.rounds, "tenants": TENANTS,
                "instances": list(INSTANCES), "launcher": self.launcher, "build": self.build,
                "listen": f"127.0.0.1:{self.port}", "bootstrap": BOOTSTRAP,
                "pin": self.pin, "repinned": sorted(self.repinned), "autogroup": self.ag_set,
                "frames_from": "vgpud per-tenant frames counters (control socket, show)",
                "loadavg_start": load0, "loadavg_end": load1,
                "wall_s": time.monotonic() - t_start, "errors": errors}
        fig = {"on_off": onoff, "aa": aa, "on_off_per_cpu_s": onoff_cpu, "aa_per_cpu_s": aa_cpu,
               "bench_cpus": bench_cpus,
               "cpu_pct_by_group": {g: self.cpu_pct(lambda w: True, g)
                                    for g in (self.windows[0]["cpu_s"] if self.windows else {})},
               "fps_on": fps_on, "fps_off": fps_off,
               "aa_half_width": noise, "aa_contains_1": unbiased, "judged": judged,
               "supervisor_cpu_pct_on": sup_on, "supervisor_cpu_pct_off": sup_off,
               "scrapes": self.scrapes}
        with open(self.json_path, "w") as f:
            json.dump({"meta": meta, "figures": fig,
                       "goals": [{"met": ok, "text": t} for ok, t in goals],
                       "windows": self.windows}, f, indent=1)
        self.print_report(meta, fig, goals)
        B.log(f"logs in {self.out}, results in {self.json_path}")
        return 1 if failed else 0

    def print_report(self, meta, fig, goals):
        print()
        print(f"metrics endpoint cost ({TENANTS} glxgears on {len(INSTANCES)} instances, one "
              f"vgpud and one set of tenants; {self.rounds} rounds of {self.seconds} s windows, "
              f"endpoint switched by vgpuctl reload; load {meta['loadavg_start'][0]:.2f} -> "
              f"{meta['loadavg_end'][0]:.2f}, {meta['cpus']} CPUs, {meta['wall_s']:.0f} s)")
        if self.pin:
            print(f"  pinned: tenant i (glxgears and its worker) on CPU "
                  f"{'/'.join(str(c) for c in self.pin)}"
                  + (f"; bound again: {', '.join(meta['repinned'])}" if meta["repinned"] else ""))
        else:
            print("  not pinned")
        if meta["autogroup"]:
            print(f"  {meta['autogroup']}")
        print(f"  {'':22s} {'pairs':>5s} {'sum ratio':>9s} {'median':>7s}  "
              f"{'95% interval':13s} {'pair range':13s}")

        def row(label, st):
            ci, per = st["ci95"], [r for r in st["per_pair"] if r is not None]
            print(f"  {label:22s} {st['pairs']:5d} {fmt(st['ratio'], '9.3f'):>9s} "
                  f"{fmt(st['median'], '7.3f'):>7s}  "
                  f"{(fmt(ci[0], '.3f') + '..' + fmt(ci[1], '.3f')) if ci else '-':13s} "
                  f"{(format(min(per), '.3f') + '..' + format(max(per), '.3f')) if per else '-':13s}")

        row("on / off", fig["on_off"])
        row("A/A control (off/off)", fig["aa"])
        row("on / off, per CPU-s", fig["on_off_per_cpu_s"])
        row("A/A, per CPU-s", fig["aa_per_cpu_s"])
        print(f"  the bench's processes used {fmt(fig['bench_cpus'], '.2f')} CPUs: "
              + ", ".join(f"{g} {fmt(v, '.1f')}%" for g, v in fig["cpu_pct_by_group"].items()))
        print(f"  aggregate FPS: off {fmt(fig['fps_off'], '.1f')}, on {fmt(fig['fps_on'], '.1f')}"
              f" (frames counted by vgpud)")
        sc = fig["scrapes"]
        print(f"  scrapes: {sc['ok']} ok, {sc['failed']} failed"
              + (f" (last error: {sc['last_error']})" if sc["last_error"] else "")
              + f", {sc['bytes']} B each")
        for ok, text in goals:
            print(f"  {verdict(ok)} {text}")


if __name__ == "__main__":
    B.run_main(MetricsBench())
