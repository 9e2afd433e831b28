#!/usr/bin/env python3
"""piglit through vgpud gives the results stored in piglit-expected.txt
(Debian 12: Mesa 22.3 llvmpipe under virglrenderer 0.10.4), for every
texture target and array kind, copies, layered rendering, GLSL, compute,
transform feedback and queries.

  test_piglit.py [--set check|full] [--jobs N]
      compares vgpud's results with the stored ones.  'check' (make check)
      runs the lines marked check, 'full' (make conformance) every line.
      A test that crashes, times out or prints no result under vgpud is a
      failure whatever the file says, and so is a session vgpud ends as a
      protocol violation, a crashed worker or a tenant's usage not
      returning to zero.
  test_piglit.py --record OUT [--jobs N] [NAME_FILE]
      runs every test (those of NAME_FILE, one piglit name a line, or the
      stored file's) under virgl_test_server and under vgpud and writes
      the expected-results file to OUT (see its header).

VGPU_PIGLIT_REFERENCE=1 also runs each test under virgl_test_server and
prints where it differs.  The reference is advisory: it is restarted when
it dies, and nothing it does decides the test."""
import argparse
import ast
import concurrent.futures
import gzip
import os
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET

import harness as h

PIGLIT = os.path.dirname(h.PIGLIT_BIN)
PROFILE = os.path.join(PIGLIT, "tests", "quick_gl.xml.gz")
EXPECTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "piglit-expected.txt")
RESULTS = ("pass", "fail", "skip", "warn")
PER_TEST_S = 300  # a bound for a hang: under load a test took up to 2.5x its recorded time
SLOW_S = 40  # --record leaves out tests slower than this under vgpud

# A daemon sized for parallel piglit clients: every test is one tenant.
CONFIG = """
[profile piglit]
vram=2G
max-resources=65536
max-contexts=16
max-clients=16

[instance vgpu0]
profile=piglit
"""


def load_profile():
    """piglit's test name -> argv, from the installed quick_gl profile."""
    tests = {}
    for e in ET.parse(gzip.open(PROFILE)).getroot():
        if e.get("type") != "gl":
            continue
        for o in e.findall("option"):
            if o.get("name") == "command":
                tests[e.get("name")] = ast.literal_eval(o.get("value"))
    return tests


def argv_for(name, profile):
    """A profile name, or 'shader_runner <file>' relative to piglit's root."""
    if name.startswith("shader_runner "):
        return [os.path.join(h.PIGLIT_BIN, "shader_runner"),
                os.path.join(PIGLIT, name.split(" ", 1)[1]), "-auto", "-fbo"]
    cmd = profile[name]
    return [os.path.join(h.PIGLIT_BIN, cmd[0])] + cmd[1:] + ["-auto", "-fbo"]


def load_expected(path=EXPECTED):
    """[(result, set, name)] in file order; '#' starts a comment line."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) != 3 or parts[0] not in RESULTS or parts[1] not in ("check", "full"):
                raise SystemExit(f"{path}:{n}: expected 'RESULT SET NAME', got {line!r}")
            rows.append(tuple(parts))
    return rows


def result_of(rc, out):
    """piglit's verdict, or crash/timeout when it gave none."""
    m = re.findall(r'PIGLIT: \{"result": "(\w+)"', out)
    if m:
        return m[-1]
    return "timeout" if rc in (124, 137, -9) else "crash"


class Reference:
    """virgl_test_server, restarted whenever it is found dead.  Its crashes
    are its own: they are reported, never held against vgpud."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.lock = threading.Lock()
        self.restarts = 0
        self.server = h.ReferenceServer(tmp)

    def sock(self):
        with self.lock:
            if self.server.proc.poll() is not None:
                self.restarts += 1
                try:
                    os.unlink(self.server.sock)
                except FileNotFoundError:
                    pass
                self.server = h.ReferenceServer(self.tmp)
            return self.server.sock

    def stop(self):
        with self.lock:
            if self.server.proc.poll() is None:
                self.server.stop()


def run_one(argv, start, x):
    """A test the X server refused to connect is run once more, with what
    the X server's state was printed: that refusal is not the result of
    the vtest server under test."""
    t0 = time.monotonic()
    for attempt in (1, 2):
        rc, out = h.finish(start(["timeout", "-s", "KILL", str(PER_TEST_S)] + argv, x.display,
                                 h.PIGLIT_BIN), PER_TEST_S + 30)
        if attempt == 2 or not h.x_refused(out):
            break
        print(f"  note: the X server refused {argv[0]}'s connection; run again. {x.health()}",
              flush=True)
    return result_of(rc, out), out, time.monotonic() - t0


def run_all(names, profile, x, d, jobs, ref=None):
    """{name: (vgpud result, output, seconds, reference result or None)}"""
    def vgpud(argv, display, cwd):
        return h.client(d, "vgpu0", argv, display, cwd=cwd)

    def reference(argv, display, cwd):
        return h.reference_client(ref.sock(), argv, display, cwd=cwd)

    def one(name):
        argv = argv_for(name, profile)
        r = run_one(argv, reference, x)[0] if ref else None
        v, out, secs = run_one(argv, vgpud, x)
        return name, (v, out, secs, r)

    done = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        for name, res in pool.map(one, names):
            done[name] = res
            print(f"  {res[0]:<8} {res[2]:5.1f}s {name}" + (f"   (reference {res[3]})" if ref else ""),
                  flush=True)
    finally:
        # an interrupted run starts nothing more
        pool.shutdown(wait=True, cancel_futures=True)
    return done


def daemon_checks(d):
    """What must hold after any amount of legal GL."""
    u = d.wait_idle("vgpu0", timeout=60)
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    assert u["worker_crashes"] == 0, f"{u['worker_crashes']} worker(s) crashed: {u}"
    # (a client that exits mid-reply ends its session by I/O, which is fine)
    ended = re.findall(r".*(?:protocol violation|quota (?:exceeded|refusal)|renderer failure"
                       r"|session ended \(renderer\)).*", d.log_text())
    assert not ended, "vgpud ended sessions running legal GL:\n" + "\n".join(ended[:20])


def compare(x, d, args):
    profile = load_profile()
    rows = [r for r in load_expected(args.expected) if args.set == "full" or r[1] == "check"]
    missing = [n for _, _, n in rows if not n.startswith("shader_runner ") and n not in profile]
    assert not missing, f"not in {PROFILE}: {missing[:5]}"
    ref = Reference(d.tmp) if os.environ.get("VGPU_PIGLIT_REFERENCE") == "1" else None
    t0 = time.monotonic()
    try:
        got = run_all([n for _, _, n in rows], profile, x, d, args.jobs, ref)
    finally:
        if ref:
            ref.stop()
    wall = time.monotonic() - t0
    wrong = [(n, want, got[n]) for want, _, n in rows if got[n][0] != want]
    for n, want, (v, out, _, _) in wrong:
        print(f"--- {n}: expected {want}, vgpud {v}\n{out[-1500:]}")
    if ref:
        differ = [(n, want, got[n][3]) for want, _, n in rows if got[n][3] != want]
        print(f"reference (advisory): restarted {ref.restarts} time(s), "
              f"{len(differ)} result(s) differ from the stored ones")
        for n, want, r in differ:
            print(f"  reference {r:<8} stored {want:<6} {n}")
    counts = {k: sum(v[0] == k for v in got.values()) for k in RESULTS + ("crash", "timeout")}
    print(f"{len(rows)} tests ({args.set}) in {wall:.0f} s with {args.jobs} job(s): "
          + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; {len(wrong)} unexpected")
    slow = sorted(got.items(), key=lambda kv: -kv[1][2])[:5]
    print("slowest: " + ", ".join(f"{n} {v[2]:.1f}s" for n, v in slow))
    assert not wrong, f"{len(wrong)} test(s) did not give the stored result"
    daemon_checks(d)


HEADER = """\
# piglit results expected under vgpud on Debian 12 (Mesa 22.3 llvmpipe,
# virglrenderer 0.10.4), read by test_piglit.py.  One test a line:
#   RESULT SET NAME
# RESULT: pass, fail, skip or warn (never crash: a crash is always a
# failure).  SET: 'check' runs in make check and make conformance, 'full'
# only in make conformance.  NAME: a test of piglit's quick_gl profile, or
# 'shader_runner FILE' with FILE relative to piglit's directory.
# Recorded by running every test under virgl_test_server and under vgpud:
#   python3 tests/integration/test_piglit.py --record OUT [NAMES]
# (with the environment meson's integration tests get).  A test is kept
# only where both gave the same pass/fail/skip/warn, vgpud within 40 s;
# the others are listed at the end, commented out, with the reason.  The
# 'check' marks are chosen by hand: a quick cross-section.
"""


def record(x, d, args):
    profile = load_profile()
    if args.names:
        with open(args.names) as f:
            names = [l.strip() for l in f if l.strip() and not l.startswith("#")]
        sets = {}
    else:
        old = load_expected(args.expected)
        names = [n for _, _, n in old]
        sets = {n: s for _, s, n in old}
    names = list(dict.fromkeys(names))
    ref = Reference(d.tmp)
    t0 = time.monotonic()
    try:
        got = run_all(names, profile, x, d, args.jobs, ref)
    finally:
        ref.stop()
    wall = time.monotonic() - t0
    kept, slow, dropped = [], [], []
    for n in names:
        v, _, secs, r = got[n]
        if v == r and v in RESULTS and secs > SLOW_S:
            slow.append(f"# {v} under both, {secs:.0f} s under vgpud: {n}")
        elif v == r and v in RESULTS:
            kept.append(f"{v:<5} {sets.get(n, 'full'):<5} {n}")
        else:
            dropped.append(f"# reference {r}, vgpud {v}: {n}")
    with open(args.record, "w") as f:
        f.write(HEADER)
        f.write("\n".join(kept) + "\n")
        if slow:
            f.write(f"\n# Left out as slow: over {SLOW_S} s each under vgpud with ASan on a loaded "
                    "2-core machine.\n")
            f.write("\n".join(slow) + "\n")
        if dropped:
            f.write("\n# Left out: no common result under both servers.\n")
            f.write("\n".join(dropped) + "\n")
    print(f"recorded {len(kept)} tests, left out {len(slow)} slow and {len(dropped)} others, in {wall:.0f} s "
          f"(reference restarted {ref.restarts} time(s))")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--set", choices=("check", "full"), default="check")
    p.add_argument("--jobs", type=int, default=int(os.environ.get("VGPU_PIGLIT_JOBS", "2")))
    p.add_argument("--record", metavar="OUT")
    p.add_argument("--expected", default=EXPECTED, help="the stored results (default: %(default)s)")
    p.add_argument("names", nargs="?")
    args = p.parse_args()
    needs = (os.path.join(h.PIGLIT_BIN, "shader_runner"), PROFILE)
    if args.record:
        needs += ("virgl_test_server",)
    h.run(lambda x, d: (record if args.record else compare)(x, d, args), needs=needs, config=CONFIG)


if __name__ == "__main__":
    main()
