#!/usr/bin/env python3
"""Writes the seed corpus for fuzz-vtest: client streams shaped like what
Mesa 22.3 sends (see docs/ARCHITECTURE.md), plus protocol-0 transfers.
Run from anywhere; writes into tests/fuzz/corpus/vtest/."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "vtest")


def cmd(cid, words=(), raw=b"", length=None):
    body = b"".join(struct.pack("<I", w) for w in words) + raw
    if length is None:
        length = len(words)
    return struct.pack("<II", length, cid) + body


def hello(name=b"glxgears\0"):
    return (cmd(8, raw=name, length=len(name)) + cmd(10) + cmd(7, (0, 0)) + cmd(11, (2,))
            + cmd(9) + cmd(1))


def create2(handle, target, fmt, bind, w, h, d=1, arr=1, last=0, samples=0, size=0):
    return cmd(12, (handle, target, fmt, bind, w, h, d, arr, last, samples, size))


SEEDS = {
    "handshake": hello(),
    "glxgears-frame": hello()
    + create2(1, 2, 2, 138, 300, 300, size=360000)
    + create2(2, 2, 17, 1, 300, 300, size=360000)
    + cmd(6, (0x000d002b, 3, 0, 10))
    + create2(5, 0, 64, 131072, 8, 1, 1, 0, size=8)
    + cmd(7, (5, 1))
    + cmd(13, (1, 0, 0, 0, 0, 300, 300, 1, 364800, 0))
    + cmd(7, (1, 1))
    + cmd(3, (5,)),
    "put2-quirk": hello()
    + create2(3, 0, 64, 16, 4096, 1, 1, 1, size=4096)
    + cmd(14, (3, 0, 0, 0, 0, 64, 1, 1, 64, 0), length=10 + 16),
    "v0-transfers": cmd(8, raw=b"t\0", length=2) + cmd(11, (0,))
    + cmd(2, (7, 2, 2, 2, 4, 4, 1, 1, 0, 0))
    + cmd(5, (7, 0, 16, 64, 0, 0, 0, 4, 4, 1, 64), raw=bytes(64), length=11 + 16)
    + cmd(4, (7, 0, 16, 64, 0, 0, 0, 4, 4, 1, 64)),
    "mipmap-cube": hello()
    + create2(9, 4, 2, 8, 64, 64, 1, 6, 6, 0, size=131072)
    + cmd(13, (9, 3, 0, 0, 5, 8, 8, 1, 256, 0)),
    "bad-id": cmd(8, raw=b"x\0", length=2) + cmd(999),
    "oversize-submit": cmd(8, raw=b"x\0", length=2) + struct.pack("<II", 1 << 30, 6),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
