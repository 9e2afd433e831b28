#!/usr/bin/env python3
"""[daemon] metrics-listen: /metrics with two instances and a glxgears
tenant on each, scraped by a real prometheus and read back through its
query API; the dashboard route, 404 and 405; then hostile clients (a
slow one, an oversized header, more connections than the limits) beside
scrapes and the control socket; a reload to a Unix socket, and a bad
value refused by a reload."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import harness as h

PROMETHEUS = "/usr/bin/prometheus"
# src/daemon/http.h
MAX_CONNECTIONS = 64
MAX_PER_IP = 8
TIMEOUT_S = 5
DEADLINE_S = 10

INSTANCE_FAMILIES = [
    "vgpu_instance_vram_used_bytes", "vgpu_instance_vram_limit_bytes", "vgpu_instance_resources",
    "vgpu_instance_resources_limit", "vgpu_instance_contexts", "vgpu_instance_clients",
    "vgpu_instance_gpu_share_ratio", "vgpu_instance_busy_seconds_total",
    "vgpu_instance_frames_total", "vgpu_instance_throttled_seconds_total",
    "vgpu_instance_refusals_total", "vgpu_instance_crashes_total",
    "vgpu_instance_sessions_ended_total"]
TENANT_FAMILIES = [
    "vgpu_tenant_vram_used_bytes", "vgpu_tenant_resources", "vgpu_tenant_contexts",
    "vgpu_tenant_busy_seconds_total", "vgpu_tenant_frames_total",
    "vgpu_tenant_throttled_seconds_total"]


PORT = h.free_port()
CONFIG = h.DEFAULT_CONFIG.replace("[profile test]", f"[daemon]\nmetrics-listen=127.0.0.1:{PORT}\n\n[profile test]")


def request(raw, addr=("127.0.0.1", PORT), source=None, timeout=30):
    """Sends raw bytes and returns everything the server sends until it
    closes (HTTP/1.0-style requests close after the answer)."""
    fam = (socket.AF_UNIX if isinstance(addr, str)
           else socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(addr)
    s.sendall(raw)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def get(path, method="GET", addr=("127.0.0.1", PORT), headers=""):
    data = request(f"{method} {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n".encode(), addr)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return status, hdrs, body


SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{family: [(labels dict, value)]}, checking each family's HELP and
    TYPE come first and its samples are together."""
    out, typed, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in out, f"{current} twice"
            out[current] = []
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current, line
            typed[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            assert m.group(1) == current, f"{m.group(1)} outside its family {current}"
            out[current].append((dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    for name, kind in typed.items():
        assert kind == ("counter" if name.endswith("_total") else "gauge"), (name, kind)
    return out


def scrape():
    status, hdrs, body = get("/metrics")
    assert status == 200, (status, body[:200])
    assert hdrs["content-type"] == "text/plain; version=0.0.4; charset=utf-8", hdrs
    return parse(body.decode())


def check_series(d, pids):
    m = scrape()
    for f in INSTANCE_FAMILIES + TENANT_FAMILIES + ["vgpu_info", "vgpu_gpu_memory_bytes",
                                                   "vgpu_gpu_memory_free_bytes"]:
        assert f in m, f"no family {f}"
    (info, one), = m["vgpu_info"]
    assert one == 1 and info["renderer"] == "virgl" and info["version"], info
    assert m["vgpu_gpu_memory_bytes"][0][1] > 0
    for inst in ("vgpu0", "vgpu1"):
        rows = {f: [v for l, v in m[f] if l.get("instance") == inst] for f in INSTANCE_FAMILIES}
        show = d.show(inst)
        assert rows["vgpu_instance_vram_limit_bytes"] == [512 * 1024 * 1024], rows
        assert rows["vgpu_instance_resources_limit"] == [65536], rows
        assert rows["vgpu_instance_clients"] == [1], rows
        assert rows["vgpu_instance_vram_used_bytes"][0] > 0, rows
        assert rows["vgpu_instance_frames_total"][0] > 0, rows
        for l, v in m["vgpu_instance_clients"]:
            assert set(l) == {"instance", "profile"} and l["profile"] == "test", l
        ts = [(l, v) for l, v in m["vgpu_tenant_frames_total"] if l["instance"] == inst]
        assert len(ts) == 1, ts
        l, v = ts[0]
        assert set(l) == {"instance", "profile", "tenant_pid", "tenant_name"}, l
        assert l["tenant_name"] == "glxgears", l
        assert int(l["tenant_pid"]) == show["tenants"][0]["client_pid"], (l, show["tenants"])
        assert int(l["tenant_pid"]) in pids, (l, pids)
        assert v > 0, ts
    return m


def start_prometheus(tmp):
    port = h.free_port()
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: vgpud
    # vgpud's series carry a label "instance" (the vGPU instance): kept,
    # instead of renamed exported_instance for prometheus's own
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{PORT}']
""")
    log = open(os.path.join(tmp, "prometheus.log"), "w")
    p = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                          f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return p, port, log


def query(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
    except OSError:
        return []
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def prometheus_part(d, tmp):
    p, port, log = start_prometheus(tmp)
    try:
        def rates():
            res = query(port, "rate(vgpu_tenant_frames_total[5s])")
            by = {r["metric"].get("instance"): float(r["value"][1]) for r in res}
            return by if set(by) == {"vgpu0", "vgpu1"} and all(v > 0 for v in by.values()) else None
        by = h.wait_for(rates, 90, "prometheus to answer rate(vgpu_tenant_frames_total[5s]) for both instances")
        print(f"prometheus: frame rates {by}")
        res = h.wait_for(lambda: query(port, "vgpu_instance_vram_used_bytes"), 30,
                         "prometheus to answer vgpu_instance_vram_used_bytes")
        vram = {r["metric"]["instance"]: float(r["value"][1]) for r in res}
        assert set(vram) == {"vgpu0", "vgpu1"} and all(v > 0 for v in vram.values()), res
        for r in res:
            assert r["metric"]["profile"] == "test" and r["metric"]["job"] == "vgpud", r
        up = query(port, "up")
        assert up and up[0]["value"][1] == "1" and up[0]["metric"]["instance"] == f"127.0.0.1:{PORT}", up
        print(f"prometheus: vram used {vram}")
    finally:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def routes():
    status, hdrs, body = get("/")
    assert status == 200 and hdrs["content-type"] == "text/html; charset=utf-8", (status, hdrs)
    assert "default-src 'self'" in hdrs["content-security-policy"], hdrs
    assert b"<html" in body.lower(), body[:200]
    status2, _, body2 = get("/dashboard")
    assert status2 == 200 and body2 == body
    status, hdrs, body = get("/", method="HEAD")
    assert status == 200 and body == b"" and int(hdrs["content-length"]) > 0, (status, hdrs, body)
    status, _, _ = get("/nope")
    assert status == 404, status
    for method in ("POST", "PUT", "DELETE"):
        status, hdrs, _ = get("/metrics", method=method,
                              headers="Content-Length: 5\r\n" if method != "DELETE" else "")
        assert status == 405 and hdrs.get("allow") == "GET, HEAD", (method, status, hdrs)
    print("routes: / and /dashboard (CSP), HEAD, 404, 405 as they should be")


def connections_from(source):
    """Our connections to vgpud's port from source still open at the
    server's end (ESTABLISHED and the server has not closed)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{PORT} )"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if f"{source}:" in line)


def hostile(d):
    # An oversized header: refused with 431 (or 414 for a long URL), and the
    # server goes on.
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * 16384) + b"\r\n\r\n"
    data = request(big)
    assert data.startswith(b"HTTP/1.1 431") or data.startswith(b"HTTP/1.1 413"), data[:200]
    data = request(b"GET /" + b"m" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 414") or data.startswith(b"HTTP/1.1 431"), data[:200]
    scrape()
    print("oversized header and URL: refused (431/414); scrapes go on")

    # A slow client: half a request, then nothing; it is dropped within the
    # timeout while others are served.
    slow = socket.create_connection(("127.0.0.1", PORT))
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    scrape()
    assert d.control({"command": "status"})["ok"]
    slow.settimeout(TIMEOUT_S + 15)
    got = slow.recv(65536)
    took = time.monotonic() - t0
    assert got == b"" or not got.startswith(b"HTTP/1.1 200"), got[:100]
    assert took < TIMEOUT_S + 10, f"slow client dropped after {took:.1f} s"
    slow.close()
    print(f"slow client: dropped after {took:.1f} s (timeout {TIMEOUT_S} s); others served meanwhile")

    # A client that sends a byte a second (never idle for the timeout) is
    # cut at the deadline.
    trickle = socket.create_connection(("127.0.0.1", PORT))
    trickle.settimeout(1.0)
    t0 = time.monotonic()
    closed = None
    for b in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 60:
        try:
            trickle.send(bytes([b]))
            if trickle.recv(1) == b"":
                closed = time.monotonic() - t0
                break
        except socket.timeout:
            continue
        except OSError:
            closed = time.monotonic() - t0
            break
    trickle.close()
    assert closed is not None and closed < DEADLINE_S + 5, f"trickling client not cut ({closed})"
    d.wait_log(r"metrics: closed a connection still open after 10 s")
    print(f"trickling client: cut after {closed:.1f} s (deadline {DEADLINE_S} s)")

    # More connections from one address than its limit: the rest of that
    # address's are refused (closed at once), scrapes from another address
    # and the control socket are served.
    held = []
    for _ in range(MAX_PER_IP + 8):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", PORT))
        held.append(s)
    h.wait_for(lambda: connections_from("127.0.0.2") == MAX_PER_IP, 20,
               f"vgpud to keep only {MAX_PER_IP} connections from 127.0.0.2")
    scrape()
    assert d.control({"command": "status"})["ok"]
    print(f"per-IP limit: {MAX_PER_IP} of {len(held)} kept; scrapes from another address served")
    # Every connection vgpud takes: the control socket is still served,
    # and once the idle ones are dropped (timeout) scrapes are served again.
    for i in range(MAX_CONNECTIONS // MAX_PER_IP + 1):
        for _ in range(MAX_PER_IP):
            s = socket.socket()
            s.bind((f"127.0.1.{i + 1}", 0))
            s.connect(("127.0.0.1", PORT))
            held.append(s)
    t0 = time.monotonic()
    r = d.control({"command": "status"})
    assert r["ok"], r
    assert time.monotonic() - t0 < 5, "the control socket answered late"
    for s in held:
        s.close()
    h.wait_for(lambda: (lambda m: m is not None)(scrape_or_none()), TIMEOUT_S + 20,
               "a scrape to be served again")
    assert d.proc.poll() is None
    print(f"{len(held)} connections at once: control socket answered, scrapes served again")


def scrape_or_none():
    try:
        return scrape()
    except (AssertionError, OSError):
        return None


def crash_counted(d):
    """A worker killed (SIGKILL) counts as a crash and as a session vgpud's
    side ended, on its instance only."""
    worker = d.show("vgpu1")["tenants"][0]["worker_pid"]
    os.kill(worker, signal.SIGKILL)

    def counted():
        m = scrape()
        by = {f: {l["instance"]: v for l, v in m[f]}
              for f in ("vgpu_instance_crashes_total", "vgpu_instance_sessions_ended_total",
                        "vgpu_instance_clients")}
        return by if by["vgpu_instance_clients"]["vgpu1"] == 0 else None
    by = h.wait_for(counted, 30, "vgpu1's killed worker to be reclaimed")
    assert by["vgpu_instance_crashes_total"] == {"vgpu0": 0, "vgpu1": 1}, by
    assert by["vgpu_instance_sessions_ended_total"] == {"vgpu0": 0, "vgpu1": 1}, by
    assert not [l for l, _ in scrape()["vgpu_tenant_frames_total"] if l["instance"] == "vgpu1"]
    print("worker killed: vgpu1 crashes_total 1, sessions_ended_total 1, its tenant series gone")


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def reloads(d):
    # An address another program holds: the reload fails, nothing changes.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{busy.getsockname()[1]}"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reload failed, keeping the running configuration: metrics-listen 127\.0\.0\.1:\d+: "
               r"Address already in use")
    busy.close()
    scrape()
    print("reload: an address in use refused, the running one kept and served")
    if ipv6_loopback():
        port6 = h.free_port()
        with open(d.config_path, "w") as f:
            f.write(CONFIG.replace(f"127.0.0.1:{PORT}", f"[::1]:{port6}"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log(re.escape(f"metrics: http://[::1]:{port6}/metrics"))
        data = request(b"GET /metrics HTTP/1.0\r\n\r\n", addr=("::1", port6))
        assert data.startswith(b"HTTP/1.1 200") and b"vgpu_tenant_frames_total{" in data, data[:200]
        h.wait_for(lambda: scrape_or_none() is None, 10, "the IPv4 address to be closed")
        print(f"reload: served on [::1]:{port6}, 127.0.0.1:{PORT} closed")
    else:
        print("reload: no IPv6 loopback here; [::1] not tried")
    path = os.path.join(d.tmp, "metrics.sock")
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace(f"127.0.0.1:{PORT}", path))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(re.escape(f"metrics: http+unix://{path}:/metrics"))
    status, hdrs, body = get("/metrics", addr=path)
    assert status == 200 and b"vgpu_instance_clients{" in body, (status, body[:200])
    m = parse(body.decode())
    assert "vgpu_tenant_frames_total" in m
    h.wait_for(lambda: scrape_or_none() is None, 10, "the TCP address to be closed")
    st = os.stat(path)
    print(f"reload: served on Unix socket {path} (mode {oct(st.st_mode & 0o777)}), TCP closed")
    # A bad value: the reload is refused and the Unix socket stays.
    with open(d.config_path, "w") as f:
        f.write(CONFIG.replace(f"127.0.0.1:{PORT}", "localhost:99999"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reload failed, keeping the running configuration: .*metrics-listen")
    status, _, _ = get("/metrics", addr=path)
    assert status == 200
    # Removed: not served any more, the socket file is gone.
    with open(d.config_path, "w") as f:
        f.write(h.DEFAULT_CONFIG)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"metrics: no longer served")
    assert not os.path.exists(path)
    print("reload: a bad metrics-listen refused, the running one kept; removed: not served")


def test(x, d):
    d.wait_log(re.escape(f"metrics: http://127.0.0.1:{PORT}/metrics"))
    a = h.Output(h.client(d, "vgpu0", ["glxgears"], x.display))
    b = h.Output(h.client(d, "vgpu1", ["glxgears"], x.display))
    try:
        pids = set()

        def running():
            ok = all(d.usage(i)["frames"] > 0 for i in ("vgpu0", "vgpu1"))
            return ok and all(d.show(i)["tenants"] for i in ("vgpu0", "vgpu1"))
        h.wait_for(running, 90, "both instances to render frames")
        for i in ("vgpu0", "vgpu1"):
            pids.update(t["client_pid"] for t in d.show(i)["tenants"])
        m = check_series(d, pids)
        print(f"/metrics: {sum(len(v) for v in m.values())} samples in {len(m)} families, "
              f"tenants named glxgears on both instances")
        prometheus_part(d, d.tmp)
        routes()
        hostile(d)
        crash_counted(d)
        reloads(d)
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    if not os.path.exists(PROMETHEUS):
        h.skip(f"{PROMETHEUS} is not installed (Debian package prometheus; make deps installs it)")
    h.run(test, needs=("glxgears", "ss"), config=CONFIG)
