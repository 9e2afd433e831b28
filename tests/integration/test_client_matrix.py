#!/usr/bin/env python3
"""The client-compatibility matrix: the same real clients, from one Mesa,
through one vtest server, give the results stored for that Mesa.

  test_client_matrix.py --mesa 22|25 --server vgpud|reference [--record]

Mesa 22 is this host's (Debian 12, Mesa 22.3), run through vgpu-run; Mesa
25 is the Debian 13 root that scripts/mesa-root.sh builds and caches, run
chrooted through scripts/in-mesa-root.sh.  The server is vgpud (instance
vgpu0) or virglrenderer's own virgl_test_server.  The clients:

  - glxgears -info: renders on virgl with the expected Mesa, a frame rate;
  - glmark2: a few short scenes, each reporting a frame rate;
  - piglit: the tests of client-matrix-expected.txt (mapped, copied and
    persistent buffers; sync objects and fences; every texture target),
    each giving the stored result for that Mesa.

Against virglrenderer 0.10.4's capabilities Mesa 25 settles on protocol
version 2 (it asks for 3, then for 2 when the host's feature level is
below 23), so these clients use no blob or sync command; test_vtest3.py
drives those.

Each server is judged against the stored results only, never against the
other live: a reference that crashes fails its own test.  With --record,
prints the piglit results in the file's format instead of comparing."""
import argparse
import ast
import concurrent.futures
import gzip
import os
import re
import time
import xml.etree.ElementTree as ET

import harness as h

EXPECTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "client-matrix-expected.txt")
RESULTS = ("pass", "fail", "skip", "warn")
PIGLIT_DIR = os.path.dirname(h.PIGLIT_BIN)  # the same path on the host and in the root
PER_TEST_S = 120
GLMARK2_SCENES = ["build:use-vbo=true", "texture:texture-filter=linear", "shading:shading=phong"]
MESA_VERSION = {"22": r"Mesa 22\.3\.", "25": r"Mesa 25\."}

CONFIG = """
[profile matrix]
vram=1G
max-resources=65536
max-contexts=16
max-clients=8

[instance vgpu0]
profile=matrix
"""


def load_expected(mesa):
    """[(name, result)] for this Mesa, in file order."""
    col = {"22": 0, "25": 1}[mesa]
    rows = []
    with open(EXPECTED) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) != 3 or parts[0] not in RESULTS or parts[1] not in RESULTS:
                raise SystemExit(f"{EXPECTED}:{n}: expected 'MESA22 MESA25 NAME', got {line!r}")
            rows.append((parts[2], parts[col]))
    return rows


def load_profile(root):
    """piglit's test name -> argv, from the quick_gl profile of the piglit
    that matches the Mesa (host or root: their versions differ)."""
    path = os.path.join(root or "/", PIGLIT_DIR.lstrip("/"), "tests", "quick_gl.xml.gz")
    tests = {}
    for e in ET.parse(gzip.open(path)).getroot():
        if e.get("type") != "gl":
            continue
        for o in e.findall("option"):
            if o.get("name") == "command":
                tests[e.get("name")] = ast.literal_eval(o.get("value"))
    return tests


def shown(out, n=2000):
    """The end of a client's output for a message, without glxgears' list
    of extensions."""
    return "\n".join(l for l in out.splitlines() if not l.startswith("GL_EXTENSIONS"))[-n:]


def piglit_result(rc, out):
    m = re.findall(r'PIGLIT: \{"result": "(\w+)"', out)
    if m:
        return m[-1]
    return "timeout" if rc in (124, 137, -9) else "crash"


class Matrix:
    def __init__(self, args, x, d):
        self.mesa, self.server, self.x, self.d = args.mesa, args.server, x, d
        self.root = args.root
        self.ref = None
        self.ref_restarts = 0
        if self.server == "reference":
            self.ref = h.ReferenceServer(d.tmp)

    def sock(self):
        if self.server == "vgpud":
            return self.d.socket("vgpu0")
        # The reference dies on some inputs: a new one serves the next
        # client, and the client it dropped has already failed.
        if self.ref.proc.poll() is not None:
            self.ref_restarts += 1
            os.unlink(self.ref.sock)
            self.ref = h.ReferenceServer(self.d.tmp)
        return self.ref.sock

    def start(self, argv, cwd="/"):
        sock = self.sock()
        if self.mesa == "25":
            return h.mesa25_client(self.root, sock, argv, self.x.display, cwd=cwd)
        if self.server == "vgpud":
            return h.client(self.d, "vgpu0", argv, self.x.display, cwd=cwd)
        return h.reference_client(sock, argv, self.x.display, cwd=cwd)

    def stop(self):
        if self.ref and self.ref.proc.poll() is None:
            self.ref.stop()

    def gears(self):
        o = h.Output(self.start(["glxgears", "-info"]))
        try:
            h.wait_for(lambda: h.fps_values(o.text()) or o.proc.poll() is not None, 90,
                       "a frame rate from glxgears")
        finally:
            _, out = o.stop()
        head = "\n".join(out.splitlines()[:2])
        assert re.search(r"GL_RENDERER\s+= virgl", out), f"glxgears did not render on virgl:\n{shown(out)}"
        assert re.search(r"GL_VERSION\s+= .*" + MESA_VERSION[self.mesa], out), \
            f"glxgears ran another Mesa than {self.mesa}:\n{head}"
        fps = h.fps_values(out)
        assert fps and fps[0] > 0, f"no frame rate from glxgears:\n{shown(out)}"
        print(f"ok: glxgears {fps[0]:.0f} FPS; {head}", flush=True)

    def glmark2(self):
        argv = ["glmark2", "--size", "300x300"]
        for s in GLMARK2_SCENES:
            argv += ["-b", f"{s}:duration=2"]
        rc, out = h.finish(self.start(argv), 120)
        assert rc == 0, f"glmark2 exited with {rc}:\n{out[-2500:]}"
        assert re.search(r"GL_RENDERER:\s+virgl", out), f"glmark2 did not run on virgl:\n{out[-2500:]}"
        assert re.search(r"GL_VERSION:\s+.*" + MESA_VERSION[self.mesa], out), out[-2500:]
        results = re.findall(r"^\[(\w+)\] .*FPS: (\d+)", out, re.M)
        assert len(results) == len(GLMARK2_SCENES), f"{len(results)} of {len(GLMARK2_SCENES)} scenes:\n{out}"
        assert all(int(fps) > 0 for _, fps in results), results
        assert "Unsupported" not in out, out
        print("ok: glmark2 " + ", ".join(f"{n} {fps} FPS" for n, fps in results), flush=True)

    def piglit(self, names, jobs):
        """{name: (result, output, seconds)}"""
        profile = load_profile(self.root)
        missing = [n for n in names if n not in profile]
        assert not missing, f"not in Mesa {self.mesa}'s piglit profile: {missing}"

        def one(name):
            cmd = profile[name]
            argv = ["timeout", "-s", "KILL", str(PER_TEST_S), os.path.join(h.PIGLIT_BIN, cmd[0])] + \
                cmd[1:] + ["-auto", "-fbo"]
            t0 = time.monotonic()
            for attempt in (1, 2):
                rc, out = h.finish(self.start(argv, cwd=h.PIGLIT_BIN), PER_TEST_S + 30)
                # an X server that refused the client: not a result (harness.x_refused)
                if attempt == 2 or not h.x_refused(out):
                    break
                print(f"  note: the X server refused {name}; run again. {self.x.health()}", flush=True)
            return name, (piglit_result(rc, out), out, time.monotonic() - t0)

        got = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for name, res in pool.map(one, names):
                got[name] = res
        return got


def test(args, x, d):
    try:
        run_matrix(args, x, d)
    except AssertionError:
        if args.server == "vgpud":
            print("--- the end of vgpud's log:\n" + d.log_text()[-3000:])
        raise


def run_matrix(args, x, d):
    m = Matrix(args, x, d)
    label = f"Mesa {args.mesa} through {args.server}"
    try:
        rows = load_expected(args.mesa)
        t0 = time.monotonic()
        if not args.record:
            m.gears()
            m.glmark2()
        got = m.piglit([n for n, _ in rows], args.jobs)
    finally:
        m.stop()
    if args.record:
        for n, _ in rows:
            print(f"{got[n][0]:<5} {n}   ({got[n][2]:.1f} s)")
        return
    wrong = [(n, want, got[n]) for n, want in rows if got[n][0] != want]
    for n, want, (r, out, _) in wrong:
        print(f"--- {n}: expected {want}, got {r}\n{out[-1500:]}")
    counts = {}
    for r, _, _ in got.values():
        counts[r] = counts.get(r, 0) + 1
    print(f"{label}: {len(rows)} piglit tests, " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f", {len(wrong)} unexpected; {time.monotonic() - t0:.0f} s in all"
          + (f"; reference restarted {m.ref_restarts} time(s)" if m.ref else ""))
    assert not wrong, f"{label}: {len(wrong)} piglit test(s) did not give the stored result: " + \
        ", ".join(n for n, _, _ in wrong)
    if args.server == "vgpud":
        u = d.wait_idle("vgpu0", timeout=60)
        assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
        assert u["worker_crashes"] == 0, u
        ended = re.findall(r".*(?:protocol violation|quota (?:exceeded|refusal)|renderer failure"
                           r"|session ended \(renderer\)).*", d.log_text())
        assert not ended, "vgpud ended sessions running legal GL:\n" + "\n".join(ended[:20])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mesa", choices=("22", "25"), required=True)
    p.add_argument("--server", choices=("vgpud", "reference"), required=True)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--record", action="store_true", help="print the piglit results, compare nothing")
    args = p.parse_args()
    # before anything starts: a machine without the root skips at once
    args.root = h.mesa_root() if args.mesa == "25" else None
    needs = ["glxgears", "glmark2", os.path.join(h.PIGLIT_BIN, "shader_runner")] if args.mesa == "22" else []
    if args.server == "reference":
        needs.append("virgl_test_server")
    h.run(lambda x, d: test(args, x, d), needs=needs, config=CONFIG)


if __name__ == "__main__":
    main()
