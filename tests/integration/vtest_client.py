"""A small vtest client (protocol version 2, as Mesa 22.3 speaks it) for
tests that need to send exact bytes, well-formed or not."""
import array
import socket
import struct

CREATE_RENDERER, PING, BUSY_WAIT, PROTOCOL_VERSION = 8, 10, 7, 11
GET_CAPS, GET_CAPS2, RESOURCE_CREATE2, RESOURCE_UNREF = 1, 9, 12, 3
SUBMIT_CMD, TRANSFER_GET2, TRANSFER_PUT2 = 6, 13, 14


def cmd(cid, words=(), raw=b"", length=None):
    body = b"".join(struct.pack("<I", w & 0xFFFFFFFF) for w in words) + raw
    return struct.pack("<II", len(words) if length is None else length, cid) + body


class VtestClient:
    def __init__(self, path, timeout=20):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

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
        fds = array.array("i")
        msg, anc, _, _ = self.s.recvmsg(1, socket.CMSG_SPACE(4 * fds.itemsize))
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        if not msg or not fds:
            raise ConnectionError("no fd received")
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

    # -- the handshake Mesa does ------------------------------------------
    def handshake(self, name=b"vtest-client"):
        name += b"\0"
        self.send(cmd(CREATE_RENDERER, raw=name, length=len(name)) + cmd(PING) + cmd(BUSY_WAIT, (0, 0)))
        assert self.recv_words(2) == (0, PING)
        assert self.recv_words(3) == (1, BUSY_WAIT, 0)
        self.send(cmd(PROTOCOL_VERSION, (2,)))
        assert self.recv_words(3) == (1, PROTOCOL_VERSION, 2)
        self.send(cmd(GET_CAPS2) + cmd(GET_CAPS))
        n, rid = self.recv_words(2)
        assert rid == 2 and n > 1, (n, rid)
        self.caps2 = self.recv_exact(n - 1)
        n, rid = self.recv_words(2)
        assert rid == 1 and n > 1, (n, rid)
        self.caps1 = self.recv_exact(n - 1)

    def create2(self, handle, target, fmt, bind, w, h, data_size, depth=1, array_size=1, last_level=0):
        self.send(cmd(RESOURCE_CREATE2, (handle, target, fmt, bind, w, h, depth, array_size,
                                         last_level, 0, data_size)))
        return self.recv_fd() if data_size else None

    def busy_wait(self, handle=0, wait=True):
        self.send(cmd(BUSY_WAIT, (handle, 1 if wait else 0)))
        return self.recv_words(3)[2]

    def unref(self, handle):
        self.send(cmd(RESOURCE_UNREF, (handle,)))

    def transfer_get2(self, handle, box, data_size, offset=0, level=0):
        self.send(cmd(TRANSFER_GET2, (handle, level) + tuple(box) + (data_size, offset)))

    def transfer_put2(self, handle, box, data_size, offset=0, level=0):
        # Mesa's LEN counts data it never sends; the server must cope.
        length = 10 + (data_size + 3) // 4
        self.send(cmd(TRANSFER_PUT2, (handle, level) + tuple(box) + (data_size, offset), length=length))


def well_behaved_session(path):
    """A short, complete session; raises if the server misbehaves."""
    c = VtestClient(path)
    try:
        c.handshake(b"probe")
        fd = c.create2(1, 2, 1, 1 << 7 | 2 | 8, 64, 64, 64 * 64 * 4)
        c.transfer_put2(1, (0, 0, 0, 64, 64, 1), 64 * 64 * 4)
        c.transfer_get2(1, (0, 0, 0, 64, 64, 1), 64 * 64 * 4)
        assert c.busy_wait(1) == 0
        c.unref(1)
        assert c.busy_wait(0) == 0
        import os
        os.close(fd)
    finally:
        c.close()
