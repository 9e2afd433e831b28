#!/usr/bin/env python3
"""What serving metrics costs: eight glxgears tenants on two
gpu-share=equal instances, served by a vgpud without metrics-listen
(off) and by one with it on 127.0.0.1 and /metrics scraped once a second
(on), interleaved off, on, off, on.  Reported: the tenants' aggregate
frame rate on / off (goal >= 0.99) and vgpud's CPU (utime + stime over
the measured window, % of one core) with the endpoint on (goal < 1%).
Goals are reported, never asserted: the exit status is 0 whenever the
harness itself worked.

Environment (besides BUILD_DIR, BENCH_OUT and BENCH_LAUNCHER as for
bench.py):
  BENCH_METRICS_SECONDS  measured time per run after glxgears' first 5 s
                         line (default 10; in 5 s lines)
  BENCH_METRICS_ROUNDS   off/on pairs (default 2)
"""

import json
import os
import shutil
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness as h  # noqa: E402
import sched as S  # noqa: E402
from report import fmt, verdict  # noqa: E402

TENANTS = 8
GOAL_RATIO = 0.99
GOAL_SUP_CPU = 1.0  # % of one core


class Scraper(threading.Thread):
    """GET /metrics once a second until stopped; counts what came back."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop_ev = threading.Event()
        self.ok = self.failed = 0
        self.bytes = 0

    def run(self):
        while not self.stop_ev.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    body = r.read()
                    self.ok += 1
                    self.bytes = len(body)
            except OSError:
                self.failed += 1
            self.stop_ev.wait(1.0)


class MetricsBench(S.SchedBench):
    def __init__(self):
        super().__init__()
        base = os.path.dirname(self.out)
        self.json_path = os.path.join(base, "metrics.json")
        self.out = os.path.join(base, "metrics")
        os.makedirs(self.out, exist_ok=True)
        self.seconds = B.env_int("BENCH_METRICS_SECONDS", 10)
        self.lines = max(1, self.seconds // 5)
        self.pairs = B.env_int("BENCH_METRICS_ROUNDS", 2)
        self.listen = None

    def daemon_lines(self, build=None):
        lines = super().daemon_lines(build)
        if self.listen:
            lines.insert(len(lines) - 1, f"metrics-listen={self.listen}")
        return lines

    def one(self, case, rnd):
        port = h.free_port() if case == "on" else None
        self.listen = f"127.0.0.1:{port}" if port else None
        B.log(f"[pair {rnd}] metrics {case}: {TENANTS} tenants ...")
        p, rd = self.daemon(f"metrics-{case}-{rnd}", {"p": {"gpu-share": "equal"}},
                            {"m0": "p", "m1": "p"})
        scraper = Scraper(port) if port else None
        try:
            if scraper:
                scraper.start()
            fps, errors, sup = self.gears(p, rd, [f"m{i % 2}" for i in range(TENANTS)],
                                          f"metrics-{case}")
        finally:
            if scraper:
                scraper.stop_ev.set()
                scraper.join(10)
            self.stop_daemon(p)
        if scraper and scraper.ok == 0:
            errors.append(f"no scrape of {scraper.url} succeeded")
        agg = sum(f for f in fps if f) if all(fps) else None
        r = self.record("metrics", case, round=rnd, fps=fps, fps_agg=agg, errors=errors,
                        supervisor_cpu_pct=sup,
                        scrapes=scraper.ok if scraper else None,
                        scrape_failures=scraper.failed if scraper else None,
                        scrape_bytes=scraper.bytes if scraper else None)
        B.log(f"    aggregate {fmt(agg, '.1f')} FPS, vgpud {fmt(sup, '.2f')}% of a core"
              + (f", {scraper.ok} scrapes ({scraper.failed} failed, {scraper.bytes} B)"
                 if scraper else ""))
        return r

    def main(self):
        for tool in ("Xvfb", "glxgears", "unshare"):
            if not shutil.which(tool):
                B.log(f"metrics: skipped: {tool} not found (see bench/README.md)")
                return 0
        if not os.access(os.path.join(self.build, "src/cli/vgpud"), os.X_OK):
            B.log(f"metrics: skipped: {self.build}/src/cli/vgpud not built (make build)")
            return 0
        t_start = time.monotonic()
        self.start_xvfb()
        try:
            p, rd = self.daemon("probe", {"p": {}}, {"probe": "p"})
        except S.Unavailable as e:
            B.log(f"metrics: skipped: {e}")
            return 0
        self.pick_launcher(os.path.join(rd, "probe", "vtest.sock"))
        self.stop_daemon(p)
        load0 = os.getloadavg()
        for rnd in range(1, self.pairs + 1):
            for case in ("off", "on"):
                try:
                    self.one(case, rnd)
                except S.Unavailable as e:
                    B.log(f"metrics: skipped: {e}")
                    return 0
        load1 = os.getloadavg()
        off = [r["fps_agg"] for r in self.runs if r["case"] == "off"]
        on = [r["fps_agg"] for r in self.runs if r["case"] == "on"]
        m_off, m_on = S.mean(off), S.mean(on)
        ratio = m_on / m_off if m_on and m_off else None
        sup_on = max((r["supervisor_cpu_pct"] for r in self.runs
                      if r["case"] == "on" and r["supervisor_cpu_pct"] is not None), default=None)
        sup_off = max((r["supervisor_cpu_pct"] for r in self.runs
                       if r["case"] == "off" and r["supervisor_cpu_pct"] is not None), default=None)
        goals = [(ratio is not None and ratio >= GOAL_RATIO,
                  f"aggregate FPS with metrics scraped / without: {fmt(ratio, '.3f')} "
                  f"(goal >= {GOAL_RATIO})"),
                 (sup_on is not None and sup_on < GOAL_SUP_CPU,
                  f"vgpud with metrics scraped every second: {fmt(sup_on, '.2f')}% of a core "
                  f"(goal < {GOAL_SUP_CPU}%; {fmt(sup_off, '.2f')}% without)")]
        meta = {"cpus": os.cpu_count(), "seconds": self.seconds, "pairs": self.pairs,
                "tenants": TENANTS, "launcher": self.launcher, "build": self.build,
                "loadavg_start": load0, "loadavg_end": load1,
                "wall_s": time.monotonic() - t_start}
        fig = {"fps_off": m_off, "fps_on": m_on, "ratio": ratio,
               "supervisor_cpu_pct_on": sup_on, "supervisor_cpu_pct_off": sup_off}
        with open(self.json_path, "w") as f:
            json.dump({"meta": meta, "figures": fig,
                       "goals": [{"met": ok, "text": t} for ok, t in goals],
                       "runs": self.runs}, f, indent=1)
        print()
        print(f"metrics endpoint cost ({TENANTS} glxgears on 2 instances, {self.pairs} off/on "
              f"pairs, {self.seconds} s each; load {load0[0]:.2f} -> {load1[0]:.2f}, "
              f"{os.cpu_count()} CPUs)")
        print(f"  aggregate FPS off {fmt(m_off, '.1f')}, on {fmt(m_on, '.1f')}")
        for ok, text in goals:
            print(f"  {verdict(ok)} {text}")
        B.log(f"logs in {self.out}, results in {self.json_path}")
        return 0


if __name__ == "__main__":
    B.run_main(MetricsBench())
