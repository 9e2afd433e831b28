#!/usr/bin/env python3
"""Writes the seed corpus for fuzz-vtest: client streams shaped like what
Mesa 22.3 and Mesa 25 send (see docs/ARCHITECTURE.md), protocol-0
transfers, and protocol 3's blobs, syncs and SUBMIT_CMD2.
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


def hello3(name=b"glxgears\0"):
    """Mesa 25 against virglrenderer 0.10.4: 3, caps, then 2 again."""
    return (cmd(8, raw=name, length=len(name)) + cmd(10) + cmd(7, (0, 0)) + cmd(11, (3,))
            + cmd(9) + cmd(1) + cmd(10) + cmd(7, (0, 0)) + cmd(11, (2,)))


def pipe_resource(blob_id, size):
    """A command stream making a buffer for a host3d blob."""
    return cmd(6, ((11 << 16) | 48, 0, 64, 16, size, 1, 1, 1, 0, 0, 0, blob_id))


def blob(btype, size, blob_id, flags=1):
    return cmd(18, (btype, flags, size & 0xffffffff, size >> 32, blob_id & 0xffffffff, blob_id >> 32))


def submit2(batches, data):
    """batches: (flags, cmd_offset, cmd_size, sync_offset, sync_count, ring)."""
    words = [len(batches)]
    for b in batches:
        words += list(b) + [0, 0]
    return cmd(24, words + data)


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
    "mesa25-blob": hello3()
    + create2(1, 2, 2, 138, 300, 300, size=360000)
    + pipe_resource(1, 524288)
    + blob(2, 524288, 1)
    + cmd(7, (0, 1))
    + cmd(3, (2,)),
    "v3-handles-guest-blob": cmd(8, raw=b"t\0", length=2) + cmd(11, (3,))
    + create2(0, 0, 64, 16, 4096, 1, size=4096)
    + blob(1, 8192, 0)
    + blob(3, 4096, 0)
    + cmd(15, (1,)) + cmd(16, (2, 2)) + cmd(17, (2,)),
    "v3-syncs": cmd(8, raw=b"t\0", length=2) + cmd(11, (3,))
    + cmd(19, (0, 0)) + cmd(19, (5, 0))
    + cmd(23, (0, 1000, 1, 7, 0, 2, 6, 0))
    + submit2([(0, 17, 1, 18, 1, 0), (1, 17, 1, 21, 1, 3)], [0, 1, 7, 0, 2, 6, 0])
    + cmd(22, (1, 9, 0)) + cmd(21, (1,)) + cmd(23, (1, 0, 2, 1, 0)) + cmd(20, (1,)),
    "v3-from-v2-session": hello() + cmd(19, (0, 0)),
    "v3-bad-submit2": cmd(8, raw=b"t\0", length=2) + cmd(11, (3,))
    + submit2([(0, 0xffffffff, 2, 9, 0, 0)], [0]),
    "bad-id": cmd(8, raw=b"x\0", length=2) + cmd(999),
    "oversize-submit": cmd(8, raw=b"x\0", length=2) + struct.pack("<II", 1 << 30, 6),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
