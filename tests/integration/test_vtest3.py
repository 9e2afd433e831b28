#!/usr/bin/env python3
"""vtest protocol version 3 through vgpud with virglrenderer: the same
session as against virgl_test_server (Mesa 25's handshake, GET_PARAM,
GET_CAPSET, server-chosen handles, a guest blob, syncs, a SUBMIT_CMD2 batch
whose context fence moves a sync and wakes a SYNC_WAIT), then the bad
input of version 3, each of which ends only its own session with one log
line while nothing stays charged, and the daemon and a tenant rendering on
another instance go on."""
import os
import select
import signal
import shutil
import struct

import harness as h
import vtest_client as vt
from vtest_client import cmd

CONFIG = """
[profile p3]
vram=64M
max-syncs=32
max-clients=unlimited

[instance vgpu0]
profile=p3

[instance vgpu1]
profile=p3
"""

ME = os.getpid()


def good_session(path):
    """What a version-3 client does; returns what it saw, for comparison
    with the reference server, and the handles the server picked (which
    differ on purpose: the reference counts from 1 whatever handles the
    client chose, so a blob can get a handle the client uses later)."""
    c = vt.VtestClient3(path)
    seen = []
    picked = []
    fds = []
    try:
        seen.append(("version", c.handshake3(b"v3-good")))
        seen.append(("timelines", c.get_param(1)))
        seen.append(("param 7", c.get_param(7)))
        caps = c.get_capset(2, 2)
        seen.append(("capset 2", len(caps)))
        seen.append(("capset 9", c.get_capset(9, 0)))
        # Mesa 25 then settles on 2 and keeps version 3's commands.
        seen.append(("renegotiated", c.protocol_version(2)))
        h1, fd = c.create2(5, vt.TARGET_BUFFER, vt.FORMAT_R8_UNORM, vt.BIND_VERTEX_BUFFER, 4096, 1,
                           4096), None
        fds.append(h1)
        bh, fd = c.create_blob(vt.BLOB_GUEST, 65536, 0)
        fds.append(fd)
        seen.append(("blob size", os.lseek(fd, 0, os.SEEK_END)))
        picked.append(bh)
        sid = c.sync_create(0)
        # one batch on ring 0 (virglrenderer's GL contexts have that one
        # only): a NOP, then sync := 1 when its fence retires
        c.send(vt.submit2_cmd([(vt.SUBMIT2_RING_IDX, 9, 1, 10, 1, 0)], [0, sid, 1, 0]))
        efd = c.sync_wait([(sid, 1)], 10000)
        fds.append(efd)
        ready, _, _ = select.select([efd], [], [], 20)
        seen.append(("wait satisfied", bool(ready)))
        seen.append(("sync value", c.sync_read(sid)))
        efd2 = c.sync_wait([(sid, 1)], 0)  # already there: readable at once
        fds.append(efd2)
        seen.append(("signalled wait", bool(select.select([efd2], [], [], 5)[0])))
        c.send(cmd(vt.SYNC_WRITE, (sid, 9, 0)))
        seen.append(("written", c.sync_read(sid)))
        c.send(cmd(vt.SYNC_UNREF, (sid,)))
        c.unref(bh)
        c.unref(5)
        seen.append(("idle", c.busy_wait(0)))
        # at version 3 the server names resources
        seen.append(("version 3 again", c.protocol_version(3)))
        handle, fd = c.create2_v3(vt.TARGET_BUFFER, vt.FORMAT_R8_UNORM, vt.BIND_VERTEX_BUFFER,
                                  4096, 1, 4096)
        fds.append(fd)
        picked.append(handle)
        c.unref(handle)
        seen.append(("idle", c.busy_wait(0)))
    finally:
        for fd in fds:
            if isinstance(fd, int) and fd > 2 and fd not in (5,):
                try:
                    os.close(fd)
                except OSError:
                    pass
        c.close()
    return seen, picked


def v3(c):
    """A session that has agreed on version 3."""
    c.send(vt.create_renderer_cmd(b"hostile-3"))
    assert c.protocol_version(3) == 3


def bad_cases():
    def v2_only(c):
        c.handshake(b"hostile-2")
        c.send(cmd(vt.SYNC_CREATE, (0, 0)))

    def overflow(c):
        v3(c)
        c.send(vt.blob_cmd(vt.BLOB_GUEST, (1 << 64) - 1, 0))

    def size_zero(c):
        v3(c)
        c.send(vt.blob_cmd(vt.BLOB_GUEST, 0, 0))

    def beyond_quota(c):
        v3(c)
        c.send(vt.blob_cmd(vt.BLOB_GUEST, 1 << 30, 0))

    def bad_type(c):
        v3(c)
        c.send(vt.blob_cmd(4, 4096, 0))

    def bad_flags(c):
        v3(c)
        c.send(vt.blob_cmd(vt.BLOB_GUEST, 4096, 0, flags=8))

    def unknown_blob_id(c):
        v3(c)
        c.send(vt.blob_cmd(vt.BLOB_HOST3D, 65536, 77))

    def unknown_sync(c):
        v3(c)
        c.send(cmd(vt.SYNC_READ, (99,)))

    def wait_unknown_sync(c):
        v3(c)
        c.send(cmd(vt.SYNC_WAIT, (0, 100, 42, 1, 0)))

    def too_many_waited(c):
        v3(c)
        c.send(struct.pack("<II", 2 + 3 * 257, vt.SYNC_WAIT))

    def wait_len(c):
        v3(c)
        c.send(cmd(vt.SYNC_WAIT, (0, 100, 1), length=3))

    def batch_table(c):
        v3(c)
        c.send(cmd(vt.SUBMIT_CMD2, (2, 0, 9, 0, 0, 0, 0, 0, 0)))

    def batch_range(c):
        v3(c)
        c.send(vt.submit2_cmd([(0, 0xFFFFFFFF, 2, 9, 0, 0)], [0]))

    def sync_range(c):
        v3(c)
        c.send(vt.submit2_cmd([(0, 9, 1, 8, 2, 0)], [0]))

    def handle_at_v3(c):
        v3(c)
        c.send(cmd(vt.RESOURCE_CREATE2, (7, 0, 64, 16, 4096, 1, 1, 1, 0, 0, 4096)))

    def thousands_of_syncs(c):
        v3(c)
        c.send(b"".join(cmd(vt.SYNC_CREATE, (0, 0)) for _ in range(33)))

    return [
        (v2_only, "SYNC_CREATE needs protocol version 3, which this session never agreed to"),
        (overflow, "beyond 4 GiB"),
        (size_zero, "blob of size 0"),
        (beyond_quota, "blob resource"),
        (bad_type, "unknown blob type"),
        (bad_flags, "unknown blob flags"),
        (unknown_blob_id, "blob id 77, which no command stream created"),
        (unknown_sync, "sync 99, which does not exist"),
        (wait_unknown_sync, "sync 42, which does not exist"),
        (too_many_waited, "SYNC_WAIT on more syncs than allowed"),
        (wait_len, "SYNC_WAIT length is not 2"),
        (batch_table, "batch table runs past"),
        (batch_range, "batch commands outside"),
        (sync_range, "batch syncs outside"),
        (handle_at_v3, "where the server picks them"),
        (thousands_of_syncs, "sync object refused: 32 held, limit 32"),
    ]


def check_idle(d):
    u = d.wait_idle("vgpu0", timeout=30)
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u


def test(x, d):
    path = d.socket("vgpu0")
    ref_seen = None
    if shutil.which("virgl_test_server"):
        tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vgpu-ref3-{ME}")
        os.makedirs(tmp, exist_ok=True)
        ref = h.ReferenceServer(tmp)
        try:
            ref_seen, ref_picked = good_session(ref.sock)
        finally:
            ref.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"ok: reference: {ref_seen}, handles it picked {ref_picked}")
    seen, picked = good_session(path)
    print(f"ok: vgpud: {seen}, handles it picked {picked}")
    if ref_seen is not None:
        assert seen == ref_seen, f"vgpud {seen} != reference {ref_seen}"
    # above every handle the session used (the client's own 5 included)
    assert picked == [6, 7], picked
    d.wait_log(r"vgpu0 client %d: v3-good: client disconnected" % ME)
    check_idle(d)

    # Mesa 22.3's glxgears on the other instance, through all that follows.
    bystander = h.client(d, "vgpu1", ["timeout", "-s", "INT", "600", "glxgears"], x.display)
    h.wait_for(lambda: d.usage("vgpu1")["frames"] > 10, 60, "the bystander to render")
    bystander_worker = [t["worker_pid"] for t in d.show("vgpu1")["tenants"]]

    for payload, reason in bad_cases():
        c = vt.VtestClient3(path)
        try:
            payload(c)
            assert c.closed_by_server(), f"session kept open after: {reason}"
        finally:
            c.close()
        d.wait_log(r"vgpu0 client %d: hostile-[23]: (protocol violation|quota exceeded), "
                   r"session ended: .*%s" % (ME, reason.replace("(", r"\(")))
        check_idle(d)
        assert d.proc.poll() is None, "vgpud died"
        print(f"ok: {reason}")

    # A host3d blob whose memory this renderer cannot export (llvmpipe in
    # virglrenderer 0.10.4 has no exportable buffer storage): the reference
    # drops the client too; here the session ends with one line.
    c = vt.VtestClient3(path)
    try:
        v3(c)
        c.submit_cmd(vt.pipe_resource_words(1, 65536))
        c.send(vt.blob_cmd(vt.BLOB_HOST3D, 65536, 1))
        assert c.closed_by_server()
    finally:
        c.close()
    d.wait_log(r"vgpu0 client %d: hostile-3: (session ended \(renderer\): exporting blob"
               r"|protocol violation, session ended: renderer refused blob)" % ME)
    check_idle(d)
    print("ok: host3d blob the renderer cannot export")

    # A client that hangs up inside SYNC_WAIT: an ordinary disconnect.
    c = vt.VtestClient3(path)
    v3(c)
    c.name = b"waiter"
    sid = c.sync_create(0)
    efd = c.sync_wait([(sid, 5)], 60000)
    os.close(efd)
    c.close()
    d.wait_log(r"vgpu0 client %d: hostile-3: client disconnected" % ME)
    check_idle(d)
    print("ok: hang-up inside SYNC_WAIT")
    vt.well_behaved_session(path)
    check_idle(d)

    assert bystander.poll() is None, "the other instance's client died"
    assert [t["worker_pid"] for t in d.show("vgpu1")["tenants"]] == bystander_worker
    frames = d.usage("vgpu1")["frames"]
    h.wait_for(lambda: d.usage("vgpu1")["frames"] > frames, 30, "the bystander to render on")
    os.killpg(bystander.pid, signal.SIGINT)
    h.finish(bystander, 90)
    d.wait_idle("vgpu1", timeout=60)
    print(f"ok: the bystander on vgpu1 rendered throughout ({frames} frames)")


if __name__ == "__main__":
    h.run(test, needs=("glxgears",), config=CONFIG)
