#!/usr/bin/env python3
"""The dashboard vgpud serves at / on its metrics listener, loaded in
headless Chromium while real tenants render.

Two instances (one with an fps cap), three glxgears tenants, one of them
run under a hostile process name (markup, a quote and a backslash).  The
page, read back as Chromium rendered it, must show both instances with
their profiles and limits, every tenant with its pid and process name as
plain text (no element made of it), frame rates the cap bounds, and plots
with data points after a few refreshes; no script error and no CSP
violation.  A screenshot goes into the test's output directory.  Then the
page must follow an instance created and destroyed, say "vgpud
unreachable" and keep what it showed while vgpud is down, and come back
after vgpud restarts with its counters at zero (a gap in the plots, no
bogus rate)."""
import html.parser
import json
import os
import shutil
import subprocess
import sys
import tempfile

import cdp
import harness as h

HOSTILE = '<b>"gears&lt;\\'  # a process name: 14 characters of comm

CONFIG = """
[daemon]
metrics-listen=127.0.0.1:{port}

[profile desktop]
vram=256M
max-clients=4
fps-cap=30

[profile compute]
vram=512M
max-clients=4

[instance vgpu0]
profile=desktop

[instance vgpu1]
profile=compute
"""

FPS_CAP = 30


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []
        self.text = ""

    def all(self, pred):
        for c in self.children:
            if pred(c):
                yield c
            yield from c.all(pred)

    def full_text(self):
        return self.text + "".join(c.full_text() for c in self.children)


class Dom(html.parser.HTMLParser):
    """The rendered page as a tree (the void elements the page uses end at once)."""
    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {}, None)
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        if self.cur.children:
            self.cur.children.append(Node("#text", {}, self.cur))
            self.cur.children[-1].text = data
        else:
            self.cur.text += data


def cards(dom):
    """Per instance card: its text, tenants {pid: row cells} and, per plot,
    per series, the point counts of its runs."""
    out = {}
    for c in dom.root.all(lambda n: n.attrs.get("data-instance")):
        tenants = {}
        for row in c.all(lambda n: n.tag == "tr" and "data-pid" in n.attrs):
            cells = {td.attrs.get("class", ""): td.full_text()
                     for td in row.all(lambda n: n.tag == "td")}
            tenants[int(row.attrs["data-pid"])] = cells
        plots = {}
        for p in c.all(lambda n: n.attrs.get("data-plot")):
            runs = plots.setdefault(p.attrs["data-plot"], {})
            for line in p.all(lambda n: n.tag == "polyline"):
                runs.setdefault(line.attrs["data-series"], []).append(int(line.attrs["data-points"]))
        out[c.attrs["data-instance"]] = {"node": c, "text": c.full_text(), "tenants": tenants,
                                         "plots": plots}
    return out


# The page's own parser, run in the page: line -> (name, labels, value as
# String() gives it) or None for a line it must skip.
PARSER_CASES = [
    ('a 1', ["a", {}, "1"]),
    ('a{x="1",} 2.5e3 1700000000000', ["a", {"x": "1"}, "2500"]),
    ('a{x="q\\"<b>\\\\\\n"} 3', ["a", {"x": 'q"<b>\\\n'}, "3"]),
    ('a{x="}",y="{ ,"} NaN', ["a", {"x": "}", "y": "{ ,"}, "NaN"]),
    ('a +Inf', ["a", {}, "Infinity"]),
    ('a{x="\\q"} -Inf', ["a", {"x": "\\q"}, "-Infinity"]),
    ('a{x="unterminated} 1', None),
    ('a{x=1} 1', None),
    ('a{x="1" y="2"} 1', None),
    ('a 1.2.3', None),
    ('a', None),
    ('9a 1', None),
]


def check_parser(b):
    got = json.loads(b.eval(
        "JSON.stringify(" + json.dumps([c for c, _ in PARSER_CASES]) + ".map(line => {"
        " const s = parseSample(line);"
        " return s && [s.name, s.labels, String(s.value)]; }))"))
    for (line, want), g in zip(PARSER_CASES, got):
        assert g == want, f"{line!r}: parsed as {g!r}, expected {want!r}"
    text = '# HELP a some \\ help\n# TYPE a counter\r\na{b="c"} 1\r\n\n# comment\nbad line\nb 2\n'
    fams = json.loads(b.eval(f"JSON.stringify([...parseMetrics({json.dumps(text)}).entries()])"))
    assert fams == [["a", [{"name": "a", "labels": {"b": "c"}, "value": 1}]],
                    ["b", [{"name": "b", "labels": {}, "value": 2}]]], fams


def status(b):
    return b.eval("[document.getElementById('status').className,"
                  " document.getElementById('status').textContent]")


def output_dir():
    """Where the screenshot goes: VGPU_TEST_OUTPUT, else meson-logs/ in the
    build directory meson runs the test from, else a temporary directory."""
    d = os.environ.get("VGPU_TEST_OUTPUT")
    if not d:
        d = os.path.join(os.getcwd(), "meson-logs") if os.path.isdir("meson-logs") else tempfile.mkdtemp(
            prefix="vgpu-dashboard-")
    d = os.path.join(d, "dashboard")
    os.makedirs(d, exist_ok=True)
    return d


def main():
    if not os.access(cdp.CHROMIUM, os.X_OK):
        h.skip(f"{cdp.CHROMIUM} is not installed (make deps installs chromium)")
    if os.environ.get("VGPU_HAVE_VIRGL") == "0":
        h.skip("vgpu was built without virglrenderer (-Dvirgl=disabled): no client can render")
    h.need("Xvfb", "glxgears")
    port = h.free_port()
    config = CONFIG.format(port=port)
    x = h.Xvfb()
    d = h.Daemon(config)
    b = None
    tenants = []
    links = tempfile.mkdtemp(prefix="vgpu-dashboard-bin-")
    try:
        os.symlink(shutil.which("glxgears"), os.path.join(links, HOSTILE))
        for inst, argv in (("vgpu0", ["glxgears"]), ("vgpu0", [os.path.join(links, HOSTILE)]),
                           ("vgpu1", ["glxgears"])):
            o = h.Output(h.client(d, inst, argv, x.display))
            tenants.append((inst, h.program_pid(o.proc), o))
        pids = {inst: {p for i, p, _ in tenants if i == inst} for inst in ("vgpu0", "vgpu1")}
        for inst in pids:
            h.wait_for(lambda: {t["client_pid"] for t in d.show(inst)["tenants"]} == pids[inst]
                       and all(t["frames"] > 0 for t in d.show(inst)["tenants"]), 90,
                       f"{inst}'s tenants to present frames")

        b = cdp.Browser(width=1180, height=420)
        b.navigate(f"http://127.0.0.1:{port}/")
        h.wait_for(lambda: b.eval("typeof parseSample") == "function", 30, "the page's script")
        check_parser(b)

        # A few refreshes: every instance's plots have 3 points or more
        # (the first read gives no rate), and every tenant has a rate.
        def ready():
            c = cards(Dom(b.dom()))
            if set(c) != {"vgpu0", "vgpu1"}:
                return None
            for inst, card in c.items():
                if set(card["tenants"]) != pids[inst]:
                    return None
                for plot in ("fps", "busy", "vram"):
                    if max(card["plots"].get(plot, {}).get("instance", [0])) < 3:
                        return None
                if any(t["fps"] in ("–", "0.0") for t in card["tenants"].values()):
                    return None
            return c
        c = h.wait_for(ready, 90, "both instances, their tenants and 3 points in every plot")
        names = {"vgpu0": {"glxgears", HOSTILE}, "vgpu1": {"glxgears"}}
        for inst, card in c.items():
            assert {t["name"] for t in card["tenants"].values()} == names[inst], card["tenants"]
            for pid, t in card["tenants"].items():
                fps = float(t["fps"])
                assert fps > 0, (inst, pid, t)
                if inst == "vgpu0":
                    assert fps <= FPS_CAP * 1.2, f"{inst} tenant {pid}: {fps} FPS, cap {FPS_CAP}"
                # 100 x the rate of busy seconds (on llvmpipe CPU seconds
                # over the usable CPUs); a call counts when it returns, so
                # a long one may show above 100% in one 2 s window: bound
                # loosely.
                busy = float(t["busy"][:-2])
                assert t["busy"].endswith(" %") and 0 < busy <= 100 * (os.cpu_count() or 1), t
                assert t["vram"].endswith(("KiB", "MiB")), t
            # Each tenant has its own line in the plots.
            for plot in ("fps", "busy", "vram"):
                assert {f"tenant {p}" for p in pids[inst]} <= set(card["plots"][plot]), card["plots"]
        # The hostile name is text: no element of the page was made of it.
        for card in cards(Dom(b.dom())).values():
            assert not list(card["node"].all(lambda n: n.tag == "b")), "markup from a tenant name"
        t0 = c["vgpu0"]["text"]
        assert "profile desktop" in t0 and "fps cap 30" in t0 and "of 256 MiB" in t0, t0
        t1 = c["vgpu1"]["text"]
        assert "profile compute" in t1 and "fps cap none" in t1 and "of 512 MiB" in t1, t1
        assert "clients 2" in t0 and "clients 1" in t1, (t0, t1)
        head = b.eval("document.querySelector('header').textContent")
        assert "version ?" not in head and "renderer ?" not in head and "GPU memory ?" not in head, head
        assert status(b)[0] == "", status(b)

        shot = b.screenshot(os.path.join(output_dir(), "dashboard.png"))
        with open(shot, "rb") as f:
            png = f.read()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10000, len(png)
        print(f"screenshot: {shot} ({len(png)} bytes)")
        print("vgpu0 tenants: " + json.dumps(c["vgpu0"]["tenants"]))
        print("vgpu1 tenants: " + json.dumps(c["vgpu1"]["tenants"]))

        # An instance appears, then vanishes.
        ctl = [h.VGPUCTL, "--runtime-dir", d.dir]
        subprocess.run(ctl + ["create", "extra", "--profile", "compute"], check=True, timeout=30,
                       capture_output=True)
        h.wait_for(lambda: "extra" in cards(Dom(b.dom())), 30, "the card of a created instance")
        subprocess.run(ctl + ["destroy", "extra"], check=True, timeout=30, capture_output=True)
        h.wait_for(lambda: set(cards(Dom(b.dom()))) == {"vgpu0", "vgpu1"}, 30,
                   "the card of a destroyed instance to go")

        # vgpud stops: the page says so and keeps what it showed.
        for _, _, o in tenants:
            o.stop()
        d.stop()
        h.wait_for(lambda: status(b)[0] == "down", 30, "the page to notice vgpud is gone")
        cls, text = status(b)
        assert "vgpud unreachable" in text and "showing data from" in text, text
        kept = cards(Dom(b.dom()))
        assert set(kept) == {"vgpu0", "vgpu1"}, kept
        assert sum(kept["vgpu0"]["plots"]["fps"]["instance"]) >= 3, kept["vgpu0"]["plots"]

        # vgpud restarts (its counters start at zero): the page follows, the
        # old points stay, the reset leaves a gap and no negative or huge rate.
        d = h.Daemon(config)

        def back():
            c = cards(Dom(b.dom()))
            if status(b)[0] == "down" or c.get("vgpu0", {}).get("tenants") != {}:
                return None
            runs = c["vgpu0"]["plots"]["fps"].get("instance", [])
            return c if len(runs) >= 2 and runs[-1] >= 2 else None
        c = h.wait_for(back, 60, "the page to follow the restarted vgpud past its counter reset")
        dom = Dom(b.dom())
        for line in dom.root.all(lambda n: n.tag == "polyline"):
            for xy in line.attrs["points"].split():
                px, py = map(float, xy.split(","))
                assert 0 <= px <= 180.5 and 10 <= py <= 78, (line.attrs, xy)
        problems = b.problems()
        assert not problems, problems
        print("after restart: instance FPS runs " + str(c["vgpu0"]["plots"]["fps"]["instance"]))
        d.stop()
    finally:
        for _, _, o in tenants:
            o.stop()
        if b:
            b.close()
        d.kill()
        x.stop()
        shutil.rmtree(links, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
