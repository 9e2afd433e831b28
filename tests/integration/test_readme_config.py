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
    sys.exit(0)


if __name__ == "__main__":
    main()
