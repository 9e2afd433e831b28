#!/usr/bin/env python3
"""What `vgpuctl status` says workers offer, from vgpud's renderer probe
(one `vgpu-worker --probe`, isolated like a worker).

1. renderer=null, then (reload) renderer=virgl: `status --json` and the
   human view name the vtest protocol versions and the virgl and virgl2
   capability sets, and a real vtest session agrees with them: the highest
   version it negotiates is the highest shown, and its GET_CAPS /
   GET_CAPS2 replies have the sizes shown.
2. A probe that hangs (a worker path whose --probe never answers, with a
   child of its own): vgpud answers `status` at once ("probing") and serves
   a client meanwhile; after probe-timeout the probe's whole process group
   is gone and status says "unknown (no answer within 2 s: killed)", logged
   once.  SIGTERM while such a probe runs stops vgpud at once, the probe
   and its child killed.
3. Probes that fail (exit 4), answer garbage, or flood their output: each
   shown as unknown with its reason, logged once, and vgpud carries on."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import harness as h
import vtest_client as vt

REAL_WORKER = os.environ.get("VGPU_WORKER", "vgpu-worker")

CONFIG = """
[daemon]
renderer={renderer}
probe-timeout={timeout}
{extra}

[profile p]
vram=256M
max-clients=4

[instance vgpu0]
profile=p

[instance vgpu1]
profile=p
"""

# A stand-in worker: --probe does what `probe` says, anything else is the
# real worker.  Workers run under their own uid: the file is 0755 in a
# 0755 directory.
WRAPPER = """#!/bin/sh
for a in "$@"; do
  if [ "$a" = --probe ]; then
{probe}
  fi
done
exec {real} "$@"
"""

PROBES = {
    # Never answers; leaves a child in its process group.
    "hang": "    sleep 3141 &\n    exec sleep 3142",
    "fail": "    echo 'error probe: renderer: no display here' >&2\n    exit 4",
    "garbage": "    echo 'this is not {json'\n    exit 0",
    "flood": "    exec yes '{\"renderer\":\"virgl\"}'",
}


def ctl(d, *args):
    r = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def status(d):
    return json.loads(ctl(d, "status", "--json"))


def renderers(d):
    """{instance: renderer object} from `status --json`."""
    return {i["name"]: i["renderer"] for i in status(d)["instances"]}


def wait_state(d, want, timeout=60):
    def settled():
        rs = renderers(d)
        return rs if rs and all(r["state"] == want for r in rs.values()) else None
    return h.wait_for(settled, timeout, f"every instance's renderer to be {want}")


def probe_log_lines(d):
    return [l for l in d.log_text().splitlines() if "renderer probe (" in l]


def check_offer(d, renderer):
    """The probe's answer against the status views and a real session."""
    rs = wait_state(d, "ready")
    assert set(rs) == {"vgpu0", "vgpu1"}, rs
    r = rs["vgpu0"]
    assert r == rs["vgpu1"], rs  # one renderer configuration, one probe
    assert r["name"] == renderer, r
    versions = r["vtest_protocols"]
    assert versions[0] == 0 and 2 in versions and 1 not in versions, versions
    assert versions == [0] + list(range(2, versions[-1] + 1)), versions
    caps = {c["name"]: c for c in r["capsets"]}
    assert caps["virgl"]["id"] == 1 and caps["virgl"]["version"] == 1, caps
    assert caps["virgl2"]["id"] == 2 and caps["virgl2"]["version"] == 2, caps
    print(f"ok: {renderer}: {r['description']}; vtest protocols {versions}; capsets "
          + ", ".join(f"{c['name']} v{c['version']} ({c['size']} B)" for c in r["capsets"]))

    # A session on the instance: the highest version it agrees to, and the
    # caps it sends, are what status shows.
    c = vt.VtestClient(d.socket("vgpu0"))
    c.create_renderer()
    c.ping()
    assert c.protocol_version(99) == versions[-1]
    caps2, caps1 = c.get_caps2(), c.get_caps()
    c.close()
    assert len(caps1) == caps["virgl"]["size"], (len(caps1), caps)
    assert len(caps2) == caps["virgl2"]["size"], (len(caps2), caps)
    print(f"ok: a session negotiates version {versions[-1]} and gets caps of "
          f"{len(caps1)} and {len(caps2)} bytes")

    text = ctl(d, "status")
    want = ("  vtest protocols  " + ", ".join(map(str, versions)) + "\n"
            + "  capsets          virgl v1 (%d B), virgl2 v2 (%d B)"
            % (caps["virgl"]["size"], caps["virgl2"]["size"]))
    assert text.count("\ninstance ") == 2 and want in text, text
    assert f"  renderer         {renderer}: {r['description']}\n" in text, text


def test_renderers():
    d = h.Daemon(CONFIG.format(renderer="null", timeout=60, extra=""))
    try:
        check_offer(d, "null")
        assert len(probe_log_lines(d)) == 1, probe_log_lines(d)
        if os.environ.get("VGPU_HAVE_VIRGL") == "0":
            print("note: built without virglrenderer: the virgl renderer is not probed")
        else:
            with open(d.config_path, "w") as f:
                f.write(CONFIG.format(renderer="virgl", timeout=60, extra=""))
            d.proc.send_signal(signal.SIGHUP)
            d.wait_log(r"reloaded ")
            # The new configuration is probed anew; the null answer is not
            # shown for it.
            rs = renderers(d)
            assert all(r["name"] == "virgl" and r["state"] in ("probing", "ready")
                       for r in rs.values()), rs
            check_offer(d, "virgl")
            assert len(probe_log_lines(d)) == 2, probe_log_lines(d)
        d.stop()
    finally:
        d.kill()


def processes_named(*argvs):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        if [a.decode(errors="replace") for a in argv] in argvs:
            found.append(int(pid))
    return found


def with_wrapper(kind, tmp, timeout=2):
    path = os.path.join(tmp, f"worker-{kind}.sh")
    with open(path, "w") as f:
        f.write(WRAPPER.format(probe=PROBES[kind], real=REAL_WORKER))
    os.chmod(path, 0o755)
    return h.Daemon(CONFIG.format(renderer="null", timeout=timeout, extra=f"worker={path}"))


def test_hang(tmp):
    hung = [["sleep", "3141"], ["sleep", "3142"]]
    assert not processes_named(*hung), "a sleep 3141/3142 from elsewhere is running"
    t0 = time.monotonic()
    d = with_wrapper("hang", tmp)
    try:
        # Start-up did not wait for the probe; status answers at once.
        t = time.monotonic()
        rs = renderers(d)
        took = time.monotonic() - t
        assert all(r["state"] == "probing" for r in rs.values()), rs
        assert took < 1.0, f"status took {took:.2f} s while the probe hangs"
        text = ctl(d, "status")
        assert "  vtest protocols  probing\n  capsets          probing\n" in text, text
        h.wait_for(lambda: len(processes_named(*hung)) == 2, 10, "the hanging probe and its child")
        # A client is served meanwhile (its worker is the real one).
        c = vt.VtestClient(d.socket("vgpu0"))
        c.handshake()
        c.close()
        served = time.monotonic() - t0
        rs = wait_state(d, "unknown", timeout=30)
        gone = time.monotonic() - t0
        for r in rs.values():
            assert r["reason"] == "no answer within 2 s: killed", r
            assert "vtest_protocols" not in r and "capsets" not in r, r
        h.wait_for(lambda: not processes_named(*hung), 10, "the probe's process group to be killed")
        text = ctl(d, "status")
        assert ("  vtest protocols  unknown (no answer within 2 s: killed)\n"
                "  capsets          unknown (no answer within 2 s: killed)\n") in text, text
        lines = probe_log_lines(d)
        assert len(lines) == 1 and "no answer within 2 s" in lines[0], lines
        print(f"ok: hanging probe: status answered in {took * 1000:.0f} ms while probing, a client "
              f"was served {served:.2f} s after start, the probe was killed and shown as unknown "
              f"{gone:.2f} s after start")
        d.stop()
    finally:
        d.kill()
        for pid in processes_named(*hung):
            os.kill(pid, signal.SIGKILL)


def test_stop_while_probing(tmp):
    """SIGTERM while the probe hangs: vgpud stops at once, probe and child
    killed and reaped."""
    hung = [["sleep", "3141"], ["sleep", "3142"]]
    d = with_wrapper("hang", tmp, timeout=600)
    try:
        h.wait_for(lambda: len(processes_named(*hung)) == 2, 10, "the hanging probe and its child")
        t = time.monotonic()
        d.stop()
        took = time.monotonic() - t
        assert took < 5, f"vgpud took {took:.1f} s to stop while its probe hung"
        h.wait_for(lambda: not processes_named(*hung), 10, "the probe's process group to be killed")
        print(f"ok: vgpud stopped in {took:.2f} s while its probe hung; probe and child gone")
    finally:
        d.kill()
        for pid in processes_named(*hung):
            os.kill(pid, signal.SIGKILL)


def test_failures(tmp):
    reasons = {
        "fail": "the probe failed: renderer failure (exit 4); the log has its reason",
        "garbage": "malformed answer: not JSON",
        "flood": "answer over 65536 bytes: killed",
    }
    for kind, reason in reasons.items():
        d = with_wrapper(kind, tmp, timeout=60)
        try:
            rs = wait_state(d, "unknown", timeout=60)
            for r in rs.values():
                assert r["reason"].startswith(reason), (kind, r)
            lines = probe_log_lines(d)
            assert len(lines) == 1 and reason in lines[0], (kind, lines)
            if kind == "fail":
                assert "probe: renderer: no display here" in d.log_text()
            c = vt.VtestClient(d.socket("vgpu1"))
            c.handshake()
            c.close()
            print(f"ok: probe '{kind}': unknown ({rs['vgpu0']['reason']}), logged once, "
                  "clients served")
            d.stop()
        finally:
            d.kill()


def main():
    test_renderers()
    tmp = tempfile.mkdtemp(prefix="vgpu-probe-")
    os.chmod(tmp, 0o755)
    try:
        test_hang(tmp)
        test_stop_while_probing(tmp)
        test_failures(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
