#!/usr/bin/env python3
"""Every configuration example in README.md (its ```ini blocks) and
etc/vgpud.conf pass `vgpud --check-config`, so the documentation stays
valid; and a comment after a value is refused, as vgpud.conf(5) says."""
import os
import re
import subprocess
import sys
import tempfile

VGPUD = os.environ["VGPUD"]
SRC = os.environ["VGPU_SOURCE_DIR"]


def check(path):
    p = subprocess.run([VGPUD, "--check-config", "--config", path], capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def main():
    with open(os.path.join(SRC, "README.md")) as f:
        blocks = re.findall(r"^```ini\n(.*?)^```", f.read(), re.S | re.M)
    assert blocks, "no ```ini block in README.md"
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(blocks):
            path = os.path.join(tmp, f"readme-{i}.conf")
            with open(path, "w") as f:
                f.write(text)
            rc, out = check(path)
            assert rc == 0 and ": OK," in out, f"README.md example {i + 1}:\n{text}\n{out}"
            print(f"ok: README.md example {i + 1}: {out.splitlines()[0]}")
        rc, out = check(os.path.join(SRC, "etc", "vgpud.conf"))
        assert rc == 0, out
        path = os.path.join(tmp, "inline.conf")
        with open(path, "w") as f:
            f.write("[profile p]\nvram=1G  # note\n")
        rc, out = check(path)
        assert rc != 0 and "inline.conf:2" in out and "1G  # note" in out, (rc, out)
        print("ok: a comment after a value is refused with FILE:LINE")
        # Every error of a file, each on a line of its own, in line order.
        path = os.path.join(tmp, "three.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nlog-level=loud\nnot a line\n[profile p]\nvram=lots\n"
                    "[instance a]\nprofile=none\n")
        rc, out = check(path)
        lines = [l for l in out.splitlines() if l.startswith("vgpud: ")]
        want = ["three.conf:2: bad value \"loud\"", "three.conf:3: ",
                "three.conf:5: bad value \"lots\"", "three.conf:7: unknown profile \"none\""]
        assert rc == 1 and len(lines) == len(want), (rc, out)
        for line, w in zip(lines, want):
            assert w in line, (w, out)
        print("ok: --check-config names all 4 errors of a file, exit status 1")
    sys.exit(0)


if __name__ == "__main__":
    main()
