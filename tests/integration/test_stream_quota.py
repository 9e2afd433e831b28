#!/usr/bin/env python3
"""What command streams make is charged, against the virgl renderer: a
texture kept alive by a sampler view after RESOURCE_UNREF stays charged,
also when only a binding holds the destroyed view;
sub-contexts count against max-contexts; live stream objects are bounded by
max-stream-objects; a protocol-0 read-back asking for far more than its box
is refused; a resource with a backing is charged texture + backing.  Each
refusal ends only that session, with one log line, and the instance is
empty afterwards."""
import os

import harness as h
from vtest_client import (BIND_SAMPLER_VIEW, FORMAT_B8G8R8A8_UNORM, TARGET_2D, VtestClient, cmd)

CONFIG = """
[profile p]
vram=4M
max-contexts=4
max-stream-objects=64
max-clients=8

[instance q]
profile=p
"""

MIB = 1 << 20


def CMD0(c, obj, length):
    return c | (obj << 8) | (length << 16)


CREATE_OBJECT, DESTROY_OBJECT, SET_SAMPLER_VIEWS = 1, 3, 10
SET_SUB_CTX, CREATE_SUB_CTX, DESTROY_SUB_CTX = 28, 29, 30
OBJ_SAMPLER_VIEW, OBJ_SAMPLER_STATE = 6, 7
SWIZZLE_RGBA = 0 | 1 << 3 | 2 << 6 | 3 << 9


def sampler_view(handle, res):
    # format | target << 24, layers 0..0, levels 0..0, identity swizzle
    return [CMD0(CREATE_OBJECT, OBJ_SAMPLER_VIEW, 6), handle, res,
            FORMAT_B8G8R8A8_UNORM | TARGET_2D << 24, 0, 0, SWIZZLE_RGBA]


def sampler_state(handle):
    return [CMD0(CREATE_OBJECT, OBJ_SAMPLER_STATE, 9), handle] + [0] * 8


def destroy(handle):
    return [CMD0(DESTROY_OBJECT, 0, 1), handle]


def client(d, name):
    c = VtestClient(d.socket("q"))
    c.handshake(name)
    return c


def texture(c, handle, side=512):
    """A side x side BGRA texture with no backing: side*side*4 bytes."""
    c.create2(handle, TARGET_2D, FORMAT_B8G8R8A8_UNORM, BIND_SAMPLER_VIEW, side, side, 0)


def refused(d, c, name, reason):
    assert c.closed_by_server(), f"{name}: the session was not ended"
    c.close()
    line = d.wait_log(r"q client %d: %s: %s" % (os.getpid(), name.decode(), reason))
    print("refused:", line.group(0))


def views_keep_textures(d):
    c = client(d, b"views")
    for i in range(3):
        texture(c, 1 + i)  # 1 MiB each
    c.submit_cmd(sampler_view(11, 1) + sampler_view(12, 2) + sampler_view(13, 3))
    for i in range(3):
        c.unref(1 + i)
    assert c.busy_wait() == 0
    u = d.usage("q")
    # The renderer still holds the three textures through the views.
    assert (u["vram"], u["resources"]) == (3 * MIB, 3), u
    # Destroying a view lets its texture go, and its charge with it.
    c.submit_cmd(destroy(11))
    assert c.busy_wait() == 0
    u = d.usage("q")
    assert (u["vram"], u["resources"]) == (2 * MIB, 2), u
    # What the views hold still counts against the 4 MiB: 4 MiB more is refused.
    c.send(cmd(12, (4, TARGET_2D, FORMAT_B8G8R8A8_UNORM, BIND_SAMPLER_VIEW, 1024, 1024, 1, 1, 0, 0,
                    0)))
    refused(d, c, b"views", r"quota exceeded, session ended: resource 4 needs 4 MiB but VRAM limit")
    u = d.wait_idle("q")
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u


def bound_view_keeps_texture(d):
    c = client(d, b"bound")
    texture(c, 1)
    # Bind the view to fragment-shader slot 0, destroy it, release the texture:
    # the binding keeps both alive in the renderer, so the charge stays.
    c.submit_cmd(sampler_view(11, 1) + [CMD0(SET_SAMPLER_VIEWS, 0, 3), 1, 0, 11] + destroy(11))
    c.unref(1)
    assert c.busy_wait() == 0
    u = d.usage("q")
    assert (u["vram"], u["resources"]) == (MIB, 1), u
    c.submit_cmd([CMD0(SET_SAMPLER_VIEWS, 0, 2), 1, 0])  # unbind
    assert c.busy_wait() == 0
    u = d.usage("q")
    assert (u["vram"], u["resources"]) == (0, 0), u
    c.close()
    d.wait_idle("q")


def sub_contexts_count(d):
    c = client(d, b"subctx")
    # Create and destroy: never more than one at a time, any number of times.
    for i in range(1, 21):
        c.submit_cmd([CMD0(CREATE_SUB_CTX, 0, 1), i, CMD0(DESTROY_SUB_CTX, 0, 1), i])
    assert c.busy_wait() == 0
    assert d.usage("q")["contexts"] == 1, d.usage("q")
    # The renderer context and three sub-contexts fill max-contexts=4.
    c.submit_cmd([CMD0(CREATE_SUB_CTX, 0, 1), 31, CMD0(CREATE_SUB_CTX, 0, 1), 32,
                  CMD0(CREATE_SUB_CTX, 0, 1), 33, CMD0(SET_SUB_CTX, 0, 1), 0])
    assert c.busy_wait() == 0
    assert d.usage("q")["contexts"] == 4, d.usage("q")
    c.submit_cmd([CMD0(CREATE_SUB_CTX, 0, 1), 34])
    refused(d, c, b"subctx",
            r"quota exceeded, session ended: sub-context 34 refused: contexts limit 4 reached")
    u = d.wait_idle("q")
    assert u["contexts"] == 0, u


def objects_bounded(d):
    c = client(d, b"objects")
    stream = []
    for i in range(1, 65):
        stream += sampler_state(i)
    c.submit_cmd(stream)
    # Replacing a live handle, or destroying one, keeps within the bound.
    c.submit_cmd(sampler_state(64) + destroy(1) + sampler_state(100))
    assert c.busy_wait() == 0
    c.submit_cmd(sampler_state(101))
    refused(d, c, b"objects",
            r"quota exceeded, session ended: creating a sampler state \(handle 101\) would exceed "
            r"the bound of 64 stream objects")
    d.wait_idle("q")


def v0_readback_bounded(d):
    c = VtestClient(d.socket("q"))
    c.create_renderer(b"v0")
    assert c.protocol_version(0) == 0
    # RESOURCE_CREATE (v0) of a 1x1 BGRA texture, then a read-back of it.
    c.send(cmd(2, (1, TARGET_2D, FORMAT_B8G8R8A8_UNORM, BIND_SAMPLER_VIEW, 1, 1, 1, 1, 0, 0)))
    c.send(cmd(4, (1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 4)))
    assert len(c.recv_exact(4)) == 4  # the honest read-back: 4 raw bytes
    # The same read-back asking for 32 MiB (64 MiB is the fixed cap).
    c.send(cmd(4, (1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 32 * MIB)))
    refused(d, c, b"v0", r"protocol violation, session ended: transfer of %d bytes on resource 1, "
            r"whose box covers 4 bytes" % (32 * MIB))
    u = d.wait_idle("q")
    assert (u["vram"], u["resources"]) == (0, 0), u


def backing_and_texture(d):
    c = client(d, b"backing")
    fd = c.create2(1, TARGET_2D, FORMAT_B8G8R8A8_UNORM, BIND_SAMPLER_VIEW, 256, 256, 256 * 256 * 4)
    assert c.busy_wait() == 0
    u = d.usage("q")
    assert u["vram"] == 2 * 256 * 256 * 4, u  # texture + backing
    os.close(fd)
    c.close()
    u = d.wait_idle("q")
    assert u["vram"] == 0, u


def test(x, d):
    views_keep_textures(d)
    bound_view_keeps_texture(d)
    sub_contexts_count(d)
    objects_bounded(d)
    v0_readback_bounded(d)
    backing_and_texture(d)
    assert d.usage("q")["worker_crashes"] == 0


if __name__ == "__main__":
    h.run(test, config=CONFIG)
