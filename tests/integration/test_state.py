#!/usr/bin/env python3
"""Run-time changes that last: `vgpuctl create`, `set` and `destroy` are
kept in STATE-DIR/vgpud.state (mode 0600, no temporary file left) and
survive `vgpuctl reload` (which reports what it changed, what it left
overridden and what it could not apply) and a vgpud restart; a --transient
instance is gone after a restart; `vgpuctl reset` drops a change;
`vgpuctl dump-config` prints a vgpud.conf that --check-config accepts and
that starts a vgpud with the same instances and limits; a run-time
instance that no longer fits the GPU memory is reported and kept in the
file; a corrupt state file is refused with FILE:LINE, kept aside byte for
byte, and vgpud starts from the configuration file with one warning.
No client renders here (renderer=null): only vgpud's own bookkeeping."""
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile

import harness as h

CONFIG = """
[daemon]
renderer=null
gpu-memory=2G

[profile p]
vram=256M
max-clients=4

[profile big]
vram=1G

[instance vgpu0]
profile=p

[instance vgpu1]
profile=p
max-clients=3
"""

MiB = 1 << 20


def ctl(d, *args):
    p = subprocess.run([h.VGPUCTL, "--runtime-dir", d.dir, *args], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def ok(d, *args):
    rc, out, err = ctl(d, *args)
    assert rc == 0, (args, rc, out, err)
    return out


def instances(d):
    r = json.loads(ok(d, "--json", "list"))
    return {i["name"]: i for i in r["instances"]}


def limits(d):
    return {n: (i["profile"], i["limits"]["vram"], i["limits"]["clients"], i["fps_cap"])
            for n, i in instances(d).items()}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    top = tempfile.mkdtemp(prefix="vgpu-state-test-")
    state = os.path.join(top, "state")
    path = os.path.join(state, "vgpud.state")
    daemons = []

    def start(config, state_dir=state):
        d = h.Daemon(config, state_dir=state_dir)
        daemons.append(d)
        # Its signal handlers are in place (stop() sends SIGTERM).
        d.wait_log(r"vgpud \S+ ready: ")
        return d

    try:
        d = start(CONFIG)
        # Nothing changed yet: nothing written.
        assert not os.path.exists(path)

        # create, set, destroy; a transient instance.
        ok(d, "set", "vgpu0", "vram=512M", "max-clients=2")
        ok(d, "create", "extra", "--profile", "p")
        ok(d, "set", "extra", "fps-cap=30")
        out = ok(d, "create", "tmp", "--profile", "big", "--transient")
        assert "transient" in out, out
        assert instances(d)["tmp"]["transient"] is True
        assert instances(d)["extra"]["transient"] is False
        ok(d, "destroy", "vgpu1")
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert os.listdir(state) == ["vgpud.state"], os.listdir(state)
        text = open(path).read()
        print("state file:\n" + text)
        for part in ("[instance vgpu0]\nvram=512M\nmax-clients=2\n",
                     "[created extra]\nprofile=p\nfps-cap=30\n", "[destroyed vgpu1]\n"):
            assert part in text, (part, text)
        assert "tmp" not in text, text

        # reload: the file's new defaults apply under the run-time changes,
        # and vgpuctl says what it did and what it left.
        write(d.config_path, CONFIG.replace("max-clients=4", "max-clients=6"))
        out = ok(d, "reload")
        print("reload:\n" + out)
        assert f"configuration reloaded from {d.config_path}\n" in out, out
        assert "changed:\n  extra: max-clients 4 -> 6, max-clients-per-uid 2 -> 3\n" in out, out
        assert "left overridden by run-time changes (vgpuctl reset drops them):\n" in out, out
        assert "  vgpu0: vram=512M (file: profile p), max-clients=2 (file: profile p)\n" in out
        assert "  vgpu1: destroyed at run time (vgpuctl reset vgpu1 brings it back)\n" in out
        assert "  extra: created at run time from profile p, with fps-cap=30\n" in out
        assert "not applied" not in out, out
        assert limits(d) == {"vgpu0": ("p", 512 * MiB, 2, 0), "extra": ("p", 256 * MiB, 6, 30),
                             "tmp": ("big", 1 << 30, 0, 0)}, limits(d)
        r = json.loads(ok(d, "--json", "reload"))
        assert r["changed"] == [] and len(r["overridden"]) == 3 and r["not_applied"] == [], r
        d.wait_log(r"reloaded .*: 0 instance\(s\) added, 0 removed, 0 changed; 3 run-time "
                   r"change\(s\) left in force, 0 not applied")

        # dump-config: a valid vgpud.conf with the same instances and limits.
        dump = ok(d, "dump-config")
        print("dump-config:\n" + dump)
        assert "# created with vgpuctl create --transient\n[instance tmp]\n" in dump, dump
        assert "# changed with vgpuctl set\n[instance vgpu0]\nprofile=p\n" in dump, dump
        dump_path = os.path.join(top, "dump.conf")
        write(dump_path, dump)
        p = subprocess.run([h.VGPUD, "--check-config", "--config", dump_path],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and "OK, 2 profile(s), 3 instance(s)" in p.stdout, \
            p.stdout + p.stderr
        twin = start(dump, state_dir=os.path.join(top, "twin-state"))
        assert limits(twin) == limits(d), (limits(twin), limits(d))
        twin.stop()
        rc, _, err = ctl(d, "dump-config", "--force")
        assert rc == 2, err

        # Restart: the kept changes come back, the transient one does not.
        before = limits(d)
        d.stop()
        d = start(CONFIG.replace("max-clients=4", "max-clients=6"))
        del before["tmp"]
        assert limits(d) == before, (limits(d), before)
        d.wait_log(r"run-time change: vgpu0: vram=512M \(file: profile p\)")
        assert "run-time change not applied" not in d.log_text()

        # reset: one setting, a destroyed instance, errors.
        out = ok(d, "reset", "vgpu0", "vram")
        assert "changed:\n  vgpu0: vram 512 MiB -> 256 MiB\n" in out, out
        assert limits(d)["vgpu0"] == ("p", 256 * MiB, 2, 0)
        out = ok(d, "reset", "vgpu1")
        assert "  vgpu1: added (profile p)\n" in out, out
        assert limits(d)["vgpu1"] == ("p", 256 * MiB, 3, 0)
        rc, _, err = ctl(d, "reset", "vgpu1")
        assert rc == 1 and 'vgpuctl: "vgpu1" has no run-time changes' in err, err
        rc, _, err = ctl(d, "reset", "vgpu0", "vram")
        assert rc == 1 and '"vgpu0" has no run-time setting "vram"' in err, err
        text = open(path).read()
        assert "[destroyed vgpu1]" not in text and "vram=512M" not in text, text

        # The GPU memory shrinks under a run-time instance: the file applies,
        # extra is reported (log and reload) and kept in the state file.
        ok(d, "set", "extra", "vram=1G")
        write(d.config_path, CONFIG.replace("gpu-memory=2G", "gpu-memory=1G"))
        rc, out, err = ctl(d, "reload")
        print("reload, 1 GiB:\n" + out)
        assert rc == 0, err
        assert "  extra: removed (its run-time entry cannot be applied now)\n" in out, out
        assert ("run-time changes not applied:\n  extra: vram 1 GiB does not fit: 512 MiB of "
                "1 GiB GPU memory free (overcommit 1.0); not created, kept in the state file\n"
                in out), out
        assert "extra" not in instances(d)
        d.wait_log(r"run-time change not applied: extra: vram 1 GiB does not fit")
        assert "[created extra]\nprofile=p\nfps-cap=30\nvram=1G\n" in open(path).read()
        write(d.config_path, CONFIG)
        out = ok(d, "reload")
        assert "  extra: added (profile p)\n" in out, out
        assert limits(d)["extra"] == ("p", 1 << 30, 4, 30)
        d.stop()

        # A corrupt state file: refused with FILE:LINE, kept aside as it was,
        # one warning, and vgpud runs from the configuration file.
        bad = "[instance vgpu0]\nvram=512M\nvram=12Q\n"
        write(path, bad)
        d = start(CONFIG)
        log = d.log_text()
        warnings = [l for l in log.splitlines() if "warning run-time changes:" in l]
        assert len(warnings) == 1, log
        assert f'{path}:3: key "vram" given twice in [instance vgpu0]' in warnings[0], warnings
        aside = [f for f in os.listdir(state) if f.startswith("vgpud.state.bad-")]
        assert len(aside) == 1 and f"kept aside as {os.path.join(state, aside[0])}" in warnings[0]
        assert open(os.path.join(state, aside[0])).read() == bad
        assert not os.path.exists(path)
        assert set(limits(d)) == {"vgpu0", "vgpu1"}
        assert limits(d)["vgpu0"] == ("p", 256 * MiB, 4, 0)
        print("corrupt:", warnings[0])
        # The next change writes a new file; the one aside stays.
        ok(d, "set", "vgpu0", "max-clients=1")
        assert open(path).read().endswith("[instance vgpu0]\nmax-clients=1\n")
        assert os.path.exists(os.path.join(state, aside[0]))
        d.stop()

        # Not a file at all (a directory in its place): refused and moved too.
        os.unlink(path)
        os.mkdir(path)
        d = start(CONFIG)
        d.wait_log(r"run-time changes: %s:0: cannot read it: not a regular file; kept aside"
                   % re.escape(path))
        assert not os.path.exists(path)
        d.stop()
    finally:
        for x in daemons:
            x.kill()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
