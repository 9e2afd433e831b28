"""A small vtest client (protocol version 2, as Mesa 22.3 speaks it, and
version 3's blobs, syncs and SUBMIT_CMD2) for tests that need to send
exact bytes, well-formed or not.

Wire format (little-endian dwords): a header {LEN, CMD} where LEN counts
the payload dwords, then the payload.  Replies use the same header; the
caps replies are the odd ones out (LEN is bytes + 1, GET_CAPS2 answers
with id 2).  A resource with a backing is answered with one byte carrying
the memfd as SCM_RIGHTS.

Run as a script with a socket path, it performs the reference session
(handshake, a 300x300 display target, a buffer, unref, busy-wait) and
prints what it saw; test_malformed.py runs that against virgl_test_server
first, so a failure there is the client's, not vgpud's."""
import array
import os
import socket
import struct
import sys

GET_CAPS, RESOURCE_UNREF, BUSY_WAIT, SUBMIT_CMD = 1, 3, 7, 6
CREATE_RENDERER, GET_CAPS2, PING, PROTOCOL_VERSION = 8, 9, 10, 11
RESOURCE_CREATE2, TRANSFER_GET2, TRANSFER_PUT2 = 12, 13, 14
GET_PARAM, GET_CAPSET, CONTEXT_INIT, RESOURCE_CREATE_BLOB = 15, 16, 17, 18
SYNC_CREATE, SYNC_UNREF, SYNC_READ, SYNC_WRITE, SYNC_WAIT, SUBMIT_CMD2 = 19, 20, 21, 22, 23, 24
BLOB_GUEST, BLOB_HOST3D, BLOB_HOST3D_GUEST = 1, 2, 3
BLOB_FLAG_MAPPABLE = 1
SUBMIT2_RING_IDX = 1
# virgl command stream: a resource made for a host3d blob (11 dwords:
# target, format, bind, width, height, depth, array size, last level,
# samples, flags, blob id)
CCMD_PIPE_RESOURCE_CREATE = 48

# Enumerations from virgl_hw.h / p_defines.h used by the tests.
TARGET_BUFFER, TARGET_2D = 0, 2
FORMAT_B8G8R8A8_UNORM, FORMAT_R8_UNORM = 1, 64
BIND_RENDER_TARGET, BIND_SAMPLER_VIEW, BIND_VERTEX_BUFFER = 1 << 1, 1 << 3, 1 << 4
BIND_DISPLAY_TARGET = 1 << 7


def cmd(cid, words=(), raw=b"", length=None):
    """One command; `length` overrides LEN for malformed input."""
    body = b"".join(struct.pack("<I", w & 0xFFFFFFFF) for w in words) + raw
    return struct.pack("<II", len(words) if length is None else length, cid) + body


def create_renderer_cmd(name):
    name += b"\0"
    return cmd(CREATE_RENDERER, raw=name, length=len(name))


class VtestClient:
    def __init__(self, path, timeout=20):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.caps1 = self.caps2 = None

    def close(self):
        self.s.close()

    # -- raw access, for malformed input ------------------------------------
    def send(self, data):
        self.s.sendall(data)

    def send_with_fds(self, data, fds):
        self.s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                 struct.pack(f"{len(fds)}i", *fds))])

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def recv_words(self, n):
        return struct.unpack(f"<{n}I", self.recv_exact(4 * n))

    def recv_fd(self):
        """The 1-byte message that carries a resource's memfd."""
        fds = array.array("i")
        msg, anc, _, _ = self.s.recvmsg(1, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if not msg or not fds:
            raise ConnectionError("no fd received")
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    def closed_by_server(self, timeout=20):
        """True once the server has hung up on us."""
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    # -- one method per command ----------------------------------------------
    def create_renderer(self, name=b"vtest-client"):
        self.send(create_renderer_cmd(name))  # no reply

    def ping(self):
        self.send(cmd(PING))
        assert self.recv_words(2) == (0, PING)

    def probe(self):
        """Mesa's version probe: ping and busy-wait in one write; an old
        server answers only the busy-wait."""
        self.send(cmd(PING) + cmd(BUSY_WAIT, (0, 0)))
        assert self.recv_words(2) == (0, PING)
        assert self.recv_words(3) == (1, BUSY_WAIT, 0)

    def protocol_version(self, version=2):
        self.send(cmd(PROTOCOL_VERSION, (version,)))
        n, rid, v = self.recv_words(3)
        assert (n, rid) == (1, PROTOCOL_VERSION), (n, rid)
        return v

    def _caps_reply(self, want_id):
        n, rid = self.recv_words(2)
        assert rid == want_id and n > 1, (n, rid)
        return self.recv_exact(n - 1)  # LEN is bytes + 1

    def get_caps2(self):
        self.send(cmd(GET_CAPS2))
        self.caps2 = self._caps_reply(2)
        return self.caps2

    def get_caps(self):
        self.send(cmd(GET_CAPS))
        self.caps1 = self._caps_reply(GET_CAPS)
        return self.caps1

    def handshake(self, name=b"vtest-client"):
        """The opening Mesa 22.3 sends, batched as it batches it."""
        self.send(create_renderer_cmd(name) + cmd(PING) + cmd(BUSY_WAIT, (0, 0)))
        assert self.recv_words(2) == (0, PING)
        assert self.recv_words(3) == (1, BUSY_WAIT, 0)
        assert self.protocol_version(2) == 2
        self.send(cmd(GET_CAPS2) + cmd(GET_CAPS))
        self.caps2 = self._caps_reply(2)
        self.caps1 = self._caps_reply(GET_CAPS)

    def create2(self, handle, target, fmt, bind, w, h, data_size, depth=1, array_size=1, last_level=0,
                nr_samples=0):
        """RESOURCE_CREATE2; returns the backing memfd when data_size > 0."""
        self.send(cmd(RESOURCE_CREATE2, (handle, target, fmt, bind, w, h, depth, array_size,
                                         last_level, nr_samples, data_size)))
        return self.recv_fd() if data_size else None

    resource_create2 = create2

    def unref(self, handle):
        self.send(cmd(RESOURCE_UNREF, (handle,)))

    resource_unref = unref

    def submit_cmd(self, dwords):
        self.send(cmd(SUBMIT_CMD, dwords))

    def busy_wait(self, handle=0, wait=True):
        """Returns the busy flag (0 once everything submitted is done)."""
        self.send(cmd(BUSY_WAIT, (handle, 1 if wait else 0)))
        n, rid, busy = self.recv_words(3)
        assert (n, rid) == (1, BUSY_WAIT), (n, rid)
        return busy

    def transfer_get2(self, handle, box, data_size, offset=0, level=0):
        self.send(cmd(TRANSFER_GET2, (handle, level) + tuple(box) + (data_size, offset)))

    def transfer_put2(self, handle, box, data_size, offset=0, level=0):
        # Mesa's LEN counts data it never sends (the data is in the shm
        # backing); a server must accept it, so the client does it too.
        length = 10 + (data_size + 3) // 4
        self.send(cmd(TRANSFER_PUT2, (handle, level) + tuple(box) + (data_size, offset), length=length))


def pipe_resource_words(blob_id, size, bind=BIND_VERTEX_BUFFER, flags=6):
    """A command stream making a `size`-byte buffer for host3d blob `blob_id`
    (flags: map persistent | coherent, as Mesa asks for a mapped buffer)."""
    return [11 << 16 | CCMD_PIPE_RESOURCE_CREATE, TARGET_BUFFER, FORMAT_R8_UNORM, bind, size, 1, 1,
            1, 0, 0, flags, blob_id]


def blob_cmd(btype, size, blob_id, flags=BLOB_FLAG_MAPPABLE):
    return cmd(RESOURCE_CREATE_BLOB, (btype, flags, size & 0xFFFFFFFF, size >> 32,
                                      blob_id & 0xFFFFFFFF, blob_id >> 32))


def submit2_cmd(batches, data):
    """batches: (flags, cmd_offset, cmd_size, sync_offset, sync_count, ring_idx)
    tuples, 8 dwords apart; data: the dwords after the batch table."""
    words = [len(batches)]
    for b in batches:
        words += list(b) + [0, 0]
    return cmd(SUBMIT_CMD2, words + list(data))


class VtestClient3(VtestClient):
    """The commands of protocol version 3."""

    def handshake3(self, name=b"vtest-client-3"):
        """Mesa 25's opening: version 3, caps (it would then ask for 2 again
        against virglrenderer 0.10.4; see mesa25_handshake)."""
        self.send(create_renderer_cmd(name) + cmd(PING) + cmd(BUSY_WAIT, (0, 0)))
        assert self.recv_words(2) == (0, PING)
        assert self.recv_words(3) == (1, BUSY_WAIT, 0)
        v = self.protocol_version(3)
        self.send(cmd(GET_CAPS2) + cmd(GET_CAPS))
        self.caps2 = self._caps_reply(2)
        self.caps1 = self._caps_reply(GET_CAPS)
        return v

    def get_param(self, param):
        self.send(cmd(GET_PARAM, (param,)))
        assert self.recv_words(2) == (2, GET_PARAM)
        return self.recv_words(2)

    def get_capset(self, cid, version):
        self.send(cmd(GET_CAPSET, (cid, version)))
        n, rid, valid = self.recv_words(3)
        assert rid == GET_CAPSET, rid
        return self.recv_exact(4 * (n - 1)) if valid else None

    def create2_v3(self, target, fmt, bind, w, h, data_size):
        """RESOURCE_CREATE2 at version 3: handle 0, the server names it."""
        self.send(cmd(RESOURCE_CREATE2, (0, target, fmt, bind, w, h, 1, 1, 0, 0, data_size)))
        n, rid, handle = self.recv_words(3)
        assert (n, rid) == (1, RESOURCE_CREATE2), (n, rid)
        return handle, (self.recv_fd() if data_size else None)

    def create_blob(self, btype, size, blob_id, flags=BLOB_FLAG_MAPPABLE):
        self.send(blob_cmd(btype, size, blob_id, flags))
        n, rid, handle = self.recv_words(3)
        assert (n, rid) == (1, RESOURCE_CREATE_BLOB), (n, rid)
        return handle, self.recv_fd()

    def sync_create(self, value=0):
        self.send(cmd(SYNC_CREATE, (value & 0xFFFFFFFF, value >> 32)))
        n, rid, sid = self.recv_words(3)
        assert (n, rid) == (1, SYNC_CREATE), (n, rid)
        return sid

    def sync_read(self, sid):
        self.send(cmd(SYNC_READ, (sid,)))
        n, rid, lo, hi = self.recv_words(4)
        assert (n, rid) == (2, SYNC_READ), (n, rid)
        return lo | hi << 32

    def sync_wait(self, syncs, timeout_ms, any_=False):
        """Returns the eventfd that becomes readable when the wait is met."""
        words = [1 if any_ else 0, timeout_ms]
        for sid, value in syncs:
            words += [sid, value & 0xFFFFFFFF, value >> 32]
        self.send(cmd(SYNC_WAIT, words))
        assert self.recv_words(2) == (0, SYNC_WAIT)
        return self.recv_fd()


def well_behaved_session(path):
    """A short, complete session; raises if the server misbehaves."""
    c = VtestClient(path)
    fd = None
    try:
        c.handshake(b"probe")
        fd = c.create2(1, TARGET_2D, FORMAT_B8G8R8A8_UNORM,
                       BIND_DISPLAY_TARGET | BIND_RENDER_TARGET | BIND_SAMPLER_VIEW,
                       64, 64, 64 * 64 * 4)
        c.transfer_put2(1, (0, 0, 0, 64, 64, 1), 64 * 64 * 4)
        c.transfer_get2(1, (0, 0, 0, 64, 64, 1), 64 * 64 * 4)
        assert c.busy_wait(1) == 0
        c.unref(1)
        assert c.busy_wait(0) == 0
    finally:
        if fd is not None:
            os.close(fd)
        c.close()


def reference_session(path):
    """The session the client is checked with: every command it has, each
    answer checked.  Returns a short description of what was seen."""
    c = VtestClient(path)
    fds = []
    try:
        c.create_renderer(b"reference-check")
        c.probe()
        assert c.protocol_version(2) == 2
        caps2, caps1 = c.get_caps2(), c.get_caps()
        # virgl_caps_v2 is far larger than v1, and both start with max_version.
        assert len(caps2) > len(caps1) >= 4, (len(caps2), len(caps1))
        c.ping()
        size = 300 * 300 * 4
        fds.append(c.resource_create2(1, TARGET_2D, FORMAT_B8G8R8A8_UNORM,
                                      BIND_DISPLAY_TARGET | BIND_RENDER_TARGET, 300, 300, size))
        assert os.fstat(fds[0]).st_size >= size
        fds.append(c.resource_create2(2, TARGET_BUFFER, FORMAT_R8_UNORM, BIND_VERTEX_BUFFER,
                                      4096, 1, 4096))
        os.pwrite(fds[1], b"\x5a" * 4096, 0)
        c.transfer_put2(2, (0, 0, 0, 4096, 1, 1), 4096)
        c.transfer_get2(1, (0, 0, 0, 300, 300, 1), size)
        c.submit_cmd(())  # an empty stream: a fence and nothing else
        assert c.busy_wait(1, wait=True) == 0
        c.resource_unref(2)
        c.resource_unref(1)
        assert c.busy_wait(0, wait=True) == 0
        return f"caps2 {len(caps2)} bytes, caps {len(caps1)} bytes"
    finally:
        for fd in fds:
            os.close(fd)
        c.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} VTEST-SOCKET")
    print(reference_session(sys.argv[1]))
