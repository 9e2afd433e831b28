#!/usr/bin/env python3
"""Writes the seed corpora for fuzz-vtest: client streams shaped like what
Mesa 22.3 and Mesa 25 send (see docs/ARCHITECTURE.md), protocol-0
transfers, and protocol 3's blobs, syncs and SUBMIT_CMD2; and for
fuzz-vhost_user: what QEMU 10 sends a GPU back-end, with guest rings.
Run from anywhere; writes into tests/fuzz/corpus/vtest/ and vhost_user/."""
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


# ---- fuzz-vhost_user: scripts of vhost-user messages and guest actions ----
# Format (tests/fuzz/fuzz_vhost_user.c): 0 req flags nfds fdkinds len16
# payload (a message; fdkinds bit i set = an eventfd, clear = a memfd of the
# 64 KiB guest memory), 1 q (pop, push, notify), 2 off16 len8 bytes (guest
# memory write), 3 q (kick drain).
VHU_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "vhost_user")
NEED_REPLY = 0x8
UVA = 0x7F0000000000


def vmsg(req, payload=b"", flags=0, nfds=0, kinds=0):
    return bytes([0, req, flags, nfds, kinds]) + struct.pack("<H", len(payload)) + payload


def vu64(req, v, **kw):
    return vmsg(req, struct.pack("<Q", v), **kw)


def vstate(req, index, num, **kw):
    return vmsg(req, struct.pack("<II", index, num), **kw)


def region(gpa, size, uva, off):
    return struct.pack("<QQQQ", gpa, size, uva, off)


def gwrite(off, data):
    out = b""
    while data:
        piece, data = data[:255], data[255:]
        out += bytes([2]) + struct.pack("<HB", off, len(piece)) + piece
        off += len(piece)
    return out


def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


RING = {0: 0x1000, 1: 0x2000}


def ring_setup(q, num=16):
    return vstate(8, q, num) + vstate(10, q, 0) + ring_addr_kick(q)


def ring_addr_kick(q):
    base = RING[q]
    return (vmsg(9, struct.pack("<IIQQQQ", q, 0, UVA + base, UVA + base + 0x800,
                                  UVA + base + 0x400, 0))
            + vu64(12, q, nfds=1, kinds=1))


def offer(q, heads, num=16):
    base = RING[q]
    return gwrite(base + 0x400, struct.pack("<HH", 0, len(heads))
                  + b"".join(struct.pack("<H", h) for h in heads))


def qemu10_start(features=0x10170000002, add_mem=True):
    """Realize and DRIVER_OK as QEMU 10 sends them to a GPU back-end."""
    s = (vmsg(1) + vmsg(15) + vu64(16, 0x8F2B) + vmsg(17) + vmsg(36)
         + vmsg(21, flags=NEED_REPLY, nfds=1, kinds=1) + vmsg(3) + vmsg(1))
    for q in (0, 1):
        s += vu64(13, q, nfds=1, kinds=1) + vu64(14, q, nfds=1, kinds=1)
    s += vmsg(24, struct.pack("<III", 0, 16, 0) + bytes(16))
    s += vmsg(33, nfds=1, kinds=1)
    s += vu64(13, 0, nfds=1, kinds=1) + vu64(13, 1, nfds=1, kinds=1)
    s += vu64(2, features)
    if add_mem:
        s += vmsg(37, struct.pack("<Q", 0) + region(0, 0x8000, UVA, 0), flags=NEED_REPLY, nfds=1)
        s += vmsg(37, struct.pack("<Q", 0) + region(0x10000, 0x8000, UVA + 0x10000, 0x8000),
                  flags=NEED_REPLY, nfds=1)
    else:
        s += vmsg(5, struct.pack("<II", 2, 0) + region(0, 0x8000, UVA, 0)
                  + region(0x10000, 0x8000, UVA + 0x10000, 0x8000), nfds=2)
    s += ring_setup(0) + ring_setup(1)
    s += vstate(18, 0, 1, flags=NEED_REPLY) + vstate(18, 1, 1, flags=NEED_REPLY)
    s += vu64(13, 0, nfds=1, kinds=1) + vu64(13, 1, nfds=1, kinds=1)
    return s


def qemu10_stop():
    return (vstate(18, 0, 0) + vstate(18, 1, 0) + vstate(11, 0, 0) + vstate(11, 1, 0)
            + vu64(13, 0, nfds=1, kinds=1) + vu64(13, 1, nfds=1, kinds=1))


direct = (gwrite(0x1000, desc(0x4000, 24, 1, 1) + desc(0x10100, 24, 2, 0))
          + gwrite(0x4000, struct.pack("<IIQIB3x", 0x100, 0, 0, 0, 0)) + offer(0, [0]))
indirect = (gwrite(0x5000, desc(0x4000, 24, 1, 1) + desc(0x4100, 64, 1, 2)
                   + desc(0x10200, 24, 2, 0))
            + gwrite(0x1000, desc(0x5000, 48, 4, 0)) + offer(0, [0]))
VHU_SEEDS = {
    "qemu10-2d-boot": qemu10_start() + direct + bytes([3, 0, 1, 0]) + qemu10_stop(),
    "qemu10-indirect": qemu10_start() + indirect + bytes([1, 0]),
    "set-mem-table": qemu10_start(add_mem=False) + direct + bytes([1, 0]),
    "cursor-queue": qemu10_start() + gwrite(0x2000, desc(0x4000, 56, 0, 0)) + offer(1, [0, 0])
    + bytes([1, 1]),
    "no-event-idx": qemu10_start(features=0x10150000002) + direct + bytes([1, 0]),
    "looping-chain": qemu10_start() + gwrite(0x1000, desc(0x4000, 0, 1, 1) + desc(0x4000, 0, 1, 0))
    + offer(0, [0]) + bytes([1, 0]),
    "nested-indirect": qemu10_start() + gwrite(0x5000, desc(0x6000, 16, 4, 0))
    + gwrite(0x1000, desc(0x5000, 16, 4, 0)) + offer(0, [0]) + bytes([1, 0]),
    "outside-memory": qemu10_start() + gwrite(0x1000, desc(0xC000, 64, 0, 0)) + offer(0, [0])
    + bytes([1, 0]),
    "resume": qemu10_start() + direct + bytes([1, 0]) + qemu10_stop() + vstate(10, 0, 1)
    + ring_addr_kick(0) + vstate(18, 0, 1) + bytes([1, 0]),
    "reset-device": qemu10_start() + direct + bytes([1, 0]) + vmsg(34) + bytes([1, 0]),
    "remove-region": qemu10_start() + vmsg(38, struct.pack("<Q", 0) + region(0, 0x8000, UVA, 0))
    + direct + bytes([1, 0]),
    "config": vmsg(24, struct.pack("<III", 4, 8, 0) + bytes(8))
    + vmsg(25, struct.pack("<III", 0, 16, 0) + struct.pack("<IIII", 0, 1, 0, 0)),
    "bad-table": vmsg(5, struct.pack("<II", 2, 0) + region(0, 0x8000, UVA, 0)
                      + region(0x4000, 0x8000, UVA + 0x10000, 0x8000), nfds=2),
}

os.makedirs(VHU_OUT, exist_ok=True)
for name, data in VHU_SEEDS.items():
    with open(os.path.join(VHU_OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(VHU_SEEDS)} seeds to {VHU_OUT}")


# fuzz-virtio_gpu_cmd: one config byte (scanouts - 1 in bits 0-3, capsets in
# bits 4-5, SUBMIT_3D cap in bits 6-7), then one request laid out as the
# Linux guest driver sends it.
VGC_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "virtio_gpu_cmd")
VGC_CFG = bytes([0x01 | (2 << 4) | (2 << 6)])  # two heads, VIRGL+VIRGL2, 4 KiB


def vgc(ctype, body=b"", flags=0, fence=0, ctx=0, ring=0):
    return VGC_CFG + struct.pack("<IIQIB3x", ctype, flags, fence, ctx, ring) + body


def vgc_rect(x, y, w, h):
    return struct.pack("<IIII", x, y, w, h)


VGC_SEEDS = {
    "get-display-info": vgc(0x100),
    "create-2d": vgc(0x101, struct.pack("<IIII", 1, 2, 1024, 768)),
    "unref": vgc(0x102, struct.pack("<II", 1, 0)),
    "set-scanout": vgc(0x103, vgc_rect(0, 0, 1024, 768) + struct.pack("<II", 0, 1)),
    "flush": vgc(0x104, vgc_rect(0, 0, 8, 16) + struct.pack("<II", 1, 0)),
    "transfer-2d": vgc(0x105, vgc_rect(8, 16, 8, 16) + struct.pack("<QII", 65568, 1, 0)),
    "attach-backing": vgc(0x106, struct.pack("<II", 1, 2) + struct.pack("<QII", 0x100000, 4096, 0)
                          + struct.pack("<QII", 0x200000, 8192, 0)),
    "detach-backing": vgc(0x107, struct.pack("<II", 1, 0)),
    "capset-info": vgc(0x108, struct.pack("<II", 1, 0)),
    "capset": vgc(0x109, struct.pack("<II", 2, 2)),
    "edid": vgc(0x10a, struct.pack("<II", 0, 0)),
    "assign-uuid": vgc(0x10b, struct.pack("<II", 1, 0)),
    "create-blob-guest": vgc(0x10c, struct.pack("<IIIIQQ", 9, 1, 1, 1, 0, 65536)
                             + struct.pack("<QII", 0x300000, 65536, 0)),
    "create-blob-host3d": vgc(0x10c, struct.pack("<IIIIQQ", 10, 2, 3, 0, 77, 4096)),
    "set-scanout-blob": vgc(0x10d, vgc_rect(0, 0, 640, 480)
                            + struct.pack("<IIIIII", 1, 9, 640, 480, 1, 0)
                            + struct.pack("<4I", 2560, 0, 0, 0) + bytes(16)),
    "ctx-create": vgc(0x200, struct.pack("<II", 8, 0) + b"glxgears".ljust(64, b"\0"), ctx=1),
    "ctx-create-init": vgc(0x200, struct.pack("<II", 4, 2) + b"kwin".ljust(64, b"\0"), ctx=2),
    "ctx-destroy": vgc(0x201, ctx=1),
    "ctx-attach": vgc(0x202, struct.pack("<II", 4, 0), ctx=1),
    "ctx-detach": vgc(0x203, struct.pack("<II", 4, 0), ctx=1),
    "create-3d": vgc(0x204, struct.pack("<11I", 4, 2, 67, 2, 256, 128, 1, 1, 0, 0, 1) + bytes(4)),
    "transfer-to-3d": vgc(0x205, struct.pack("<6IQ4I", 0, 0, 0, 256, 128, 1, 0, 4, 0, 1024, 0),
                          ctx=1),
    "transfer-from-3d": vgc(0x206, struct.pack("<6IQ4I", 0, 0, 0, 16, 16, 1, 0, 4, 0, 64, 0),
                            ctx=1, flags=1, fence=5),
    "submit-3d": vgc(0x207, struct.pack("<II", 16, 0) + struct.pack("<4I", 0x10001, 0, 0, 0),
                     ctx=1, flags=1, fence=6),
    "submit-3d-ring": vgc(0x207, struct.pack("<II", 4, 0) + struct.pack("<I", 0),
                          ctx=1, flags=3, fence=7, ring=1),
    "map-blob": vgc(0x208, struct.pack("<IIQ", 10, 0, 0x200000)),
    "unmap-blob": vgc(0x209, struct.pack("<II", 10, 0)),
    "update-cursor": vgc(0x300, struct.pack("<IIII", 0, 100, 200, 0) + struct.pack("<IIII", 3, 4, 5, 0)),
    "move-cursor": vgc(0x301, struct.pack("<IIII", 1, 10, 20, 0) + bytes(16)),
    "rect-wrap": vgc(0x104, vgc_rect(0xffffff00, 0, 0x100, 1) + struct.pack("<II", 1, 0)),
    "entries-wrap": vgc(0x106, struct.pack("<II", 1, 0x10000001) + bytes(32)),
}

os.makedirs(VGC_OUT, exist_ok=True)
for name, data in VGC_SEEDS.items():
    with open(os.path.join(VGC_OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(VGC_SEEDS)} seeds to {VGC_OUT}")


# fuzz-virtio_gpu_device: one config byte (bit 0 VIRGL, bit 1 EDID, bit 2
# CONTEXT_INIT, bits 4-7 scanouts - 1), then records: op byte, u16 length,
# bytes (op 0 control request, 1 cursor request, 2 poll, 3 memory table
# change, 4 reset or (with a byte) features again, 5 refresh, 6 guest
# memory write).  Guest memory is
# 256 KiB from 0x10000.
VGD_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "virtio_gpu_device")


def vgd(op, data=b""):
    return struct.pack("<BH", op, len(data)) + data


def vgd_req(ctype, body=b"", flags=0, fence=0, ctx=0, ring=0):
    return vgd(0, struct.pack("<IIQIB3x", ctype, flags, fence, ctx, ring) + body)


def vgd_2d(res=1, w=64, h=32):
    size = w * h * 4
    return (vgd_req(0x100)
            + vgd_req(0x101, struct.pack("<IIII", res, 2, w, h))
            + vgd(6, struct.pack("<I", 0) + bytes(range(256)) * 16)
            + vgd_req(0x106, struct.pack("<II", res, 2) + struct.pack("<QII", 0x10000, size // 2, 0)
                      + struct.pack("<QII", 0x10000 + size, size // 2, 0))
            + vgd_req(0x105, vgc_rect(0, 0, w, h) + struct.pack("<QII", 0, res, 0))
            + vgd_req(0x103, vgc_rect(0, 0, w, h) + struct.pack("<II", 0, res))
            + vgd_req(0x104, vgc_rect(0, 0, w, h) + struct.pack("<II", res, 0)))


VGD_SEEDS = {
    "2d-sequence": bytes([0x12]) + vgd_2d() + vgd(5, b"\0") + vgd(3)
    + vgd_req(0x105, vgc_rect(4, 4, 8, 8) + struct.pack("<QII", 4 * 256 + 16, 1, 0))
    + vgd_req(0x107, struct.pack("<II", 1, 0)) + vgd_req(0x102, struct.pack("<II", 1, 0)),
    "cursor": bytes([0x02]) + vgd_2d(5, 64, 64)
    + vgd(1, struct.pack("<IIQIB3x", 0x300, 0, 0, 0, 0) + struct.pack("<IIII", 0, 100, 200, 0)
          + struct.pack("<IIII", 5, 4, 5, 0))
    + vgd(1, struct.pack("<IIQIB3x", 0x301, 0, 0, 0, 0) + struct.pack("<IIII", 0, 10, 20, 0)
          + bytes(16)),
    "edid-reset": bytes([0x02]) + vgd_2d() + vgd_req(0x10a, struct.pack("<II", 0, 0)) + vgd(4)
    + vgd_2d(),
    "3d-sequence": bytes([0x17])
    + vgd_req(0x108, struct.pack("<II", 0, 0)) + vgd_req(0x109, struct.pack("<II", 2, 2))
    + vgd_req(0x200, struct.pack("<II", 4, 0) + b"fuzz".ljust(64, b"\0"), ctx=1)
    + vgd_req(0x204, struct.pack("<11I", 4, 2, 2, 2, 64, 32, 1, 1, 0, 0, 0) + bytes(4))
    + vgd_req(0x106, struct.pack("<II", 4, 1) + struct.pack("<QII", 0x10000, 8192, 0))
    + vgd_req(0x202, struct.pack("<II", 4, 0), ctx=1)
    + vgd_req(0x205, struct.pack("<6IQ4I", 0, 0, 0, 64, 32, 1, 0, 4, 0, 256, 0), ctx=1)
    + vgd_req(0x207, struct.pack("<II", 8, 0) + struct.pack("<2I", 0x10000, 0), ctx=1, flags=1,
              fence=9)
    + vgd_req(0x207, struct.pack("<II", 4, 0) + struct.pack("<I", 0x10000), ctx=1, flags=3,
              fence=3, ring=1)
    + vgd_req(0x103, vgc_rect(0, 0, 64, 32) + struct.pack("<II", 0, 4))
    + vgd_req(0x104, vgc_rect(0, 0, 64, 32) + struct.pack("<II", 4, 0))
    + vgd(2) + vgd(3)
    + vgd_req(0x206, struct.pack("<6IQ4I", 0, 0, 0, 16, 16, 1, 0, 4, 0, 256, 0), ctx=1)
    + vgd_req(0x201, ctx=1),
}

os.makedirs(VGD_OUT, exist_ok=True)
for name, data in VGD_SEEDS.items():
    with open(os.path.join(VGD_OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(VGD_SEEDS)} seeds to {VGD_OUT}")

# ---- fuzz-vhost_display: what QEMU writes on the display socket ----------
# Format (tests/fuzz/fuzz_vhost_display.c): byte 0 = heads-1 (low nibble)
# and the questions asked after the handshake (high nibble: bit 4 display
# info, bits 5-7 EDID of heads 0-2); then QEMU's bytes.
VDP_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "vhost_display")


def vdp_reply(req, payload):
    return struct.pack("<III", req, 4, len(payload)) + payload


def vdp_info(modes):
    body = struct.pack("<I20x", 0x1101)
    for i in range(16):
        body += struct.pack("<6I", *(modes[i] if i < len(modes) else (0, 0, 0, 0, 0, 0)))
    return vdp_reply(3, body)


def vdp_edid(n):
    edid = bytes([0, 255, 255, 255, 255, 255, 255, 0]) + bytes(n - 8)
    return vdp_reply(11, struct.pack("<I20xII", 0x1104, n, 0) + edid + bytes(1024 - n))


VDP_FEATURES = vdp_reply(1, struct.pack("<Q", 3))
VDP_SEEDS = {
    "handshake": bytes([0x00]) + VDP_FEATURES,
    "qemu10-one-head": bytes([0x30]) + VDP_FEATURES + vdp_info([(0, 0, 1024, 768, 1, 0)])
    + vdp_edid(1024),
    "two-heads": bytes([0x71]) + VDP_FEATURES
    + vdp_info([(0, 0, 1280, 800, 1, 0), (1280, 0, 640, 480, 1, 0)]) + vdp_edid(256) + vdp_edid(128),
    "qemu72": bytes([0x10]) + vdp_reply(1, struct.pack("<Q", 0)) + vdp_info([(0, 0, 800, 600, 1, 0)]),
    "bad-mode": bytes([0x10]) + VDP_FEATURES + vdp_info([(0, 0, 16385, 768, 1, 0)]),
    "unasked": bytes([0x00]) + VDP_FEATURES + vdp_info([(0, 0, 1024, 768, 1, 0)]),
}

os.makedirs(VDP_OUT, exist_ok=True)
for name, data in VDP_SEEDS.items():
    with open(os.path.join(VDP_OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(VDP_SEEDS)} seeds to {VDP_OUT}")
