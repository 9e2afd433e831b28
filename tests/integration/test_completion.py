#!/usr/bin/env python3
"""The bash completion of vgpuctl and vgpu-run (dist/bash-completion),
sourced in bash and driven through COMP_WORDS/COMP_CWORD as bash does:
commands, options per command, instance and profile names asked of a
running vgpud (with -r on the line), set's KEY= names, vgpu-run's
--namespace values and instances."""
import os
import shlex
import subprocess
import sys

import harness as h

CONFIG = """
[profile small]
vram=64M

[profile big]
vram=256M

[instance alpha]
profile=small

[instance beta]
profile=big
"""
COMPLETIONS = os.path.join(h.SOURCE_DIR, "dist", "bash-completion")


def complete(words, script):
    """COMPREPLY for the command line `words` (the last is being typed)."""
    func = "_vgpuctl" if script == "vgpuctl" else "_vgpu_run"
    prog = (f"source {shlex.quote(os.path.join(COMPLETIONS, script))}\n"
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\n"
            f"{func}\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=os.path.dirname(h.VGPUCTL) + ":" + os.environ["PATH"])
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True,
                       text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return sorted(l for l in p.stdout.splitlines() if l)


def main():
    h.need("bash")
    d = h.Daemon(CONFIG)
    try:
        rd = ["-r", d.dir]
        got = complete(["vgpuctl", ""], "vgpuctl")
        assert {"list", "show", "set", "create", "destroy", "top", "reload", "reset",
                "dump-config"} <= set(got), got
        assert complete(["vgpuctl", "sh"], "vgpuctl") == ["show"]
        assert complete(["vgpuctl"] + rd + ["show", ""], "vgpuctl") == ["alpha", "beta"]
        assert complete(["vgpuctl"] + rd + ["set", "a"], "vgpuctl") == ["alpha"]
        assert complete(["vgpuctl"] + rd + ["set", "alpha", "max-cl"], "vgpuctl") == \
            ["max-clients-per-uid=", "max-clients="]
        assert complete(["vgpuctl"] + rd + ["create", "t1", "--profile", ""], "vgpuctl") == \
            ["big", "small"]
        assert complete(["vgpuctl", "destroy", "--f"], "vgpuctl") == ["--force"]
        assert complete(["vgpuctl", "top", "--i"], "vgpuctl") == ["--interval", "--iterations"]
        assert complete(["vgpuctl", "doc"], "vgpuctl") == ["doctor"]
        assert complete(["vgpuctl", "doctor", "--ro"], "vgpuctl") == ["--root"]
        assert complete(["vgpuctl", "create", "t1", "--t"], "vgpuctl") == ["--transient"]
        assert complete(["vgpuctl", "dump"], "vgpuctl") == ["dump-config"]
        assert complete(["vgpuctl"] + rd + ["reset", "b"], "vgpuctl") == ["beta"]
        assert complete(["vgpuctl"] + rd + ["reset", "beta", "fps"], "vgpuctl") == ["fps-cap"]
        # No vgpud there: no names, no error.
        assert complete(["vgpuctl", "-r", "/nonexistent", "show", ""], "vgpuctl") == []
        print("ok: vgpuctl commands, options, instances, profiles and set keys")

        assert complete(["vgpu-run", "--ins"], "vgpu-run") == ["--instance"]
        assert complete(["vgpu-run"] + rd + ["--instance", ""], "vgpu-run") == ["alpha", "beta"]
        assert complete(["vgpu-run", "--namespace", "a"], "vgpu-run") == ["always", "auto"]
        got = complete(["vgpu-run", "-i", "alpha", "--", "glxgear"], "vgpu-run")
        assert got == [] or "glxgears" in got, got
        print("ok: vgpu-run options, instances, --namespace values, the command after --")
        d.stop()
    finally:
        d.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
