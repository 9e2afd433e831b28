#!/usr/bin/env python3
"""Test-only stand-in for vgpu-worker (never installed): it takes the fds
vgpud hands a worker and abuses its ledger ones, by instance name.

  junk*    sends a malformed request on its ledger socket, then waits
  greedy*  writes huge and "negative" values into its slot page, tries to
           write its grant page, asks for more than the limit, then serves
           until its client hangs up

What it sees is written to stderr (vgpud's log) as "fake-worker: ..."."""
import mmap
import os
import select
import socket
import struct
import sys
import time

SLOT_FD, GRANT_FD, SOCK_FD, CLIENT_FD = 4, 5, 6, 3
N_KINDS = 8  # vram, resources, contexts, frames, commands, bytes_in, busy_ns, throttled_ns
N_QUOTA = 3  # vram, resources, contexts
SLOT_SIZE = 8 * (N_KINDS + 1 + N_QUOTA)  # used, peak_vram, recent_peak
# magic, version, pad, grant, limit, share_ppm, fps_cap, cpu_milli, pad3
GRANT_SIZE = 8 + 4 + 4 + N_QUOTA * 8 + N_QUOTA * 8 + 4 + 4 + 4 + 4
LIMIT_OFFSET = 8 + 4 + 4 + N_QUOTA * 8


def say(msg):
    print(f"fake-worker: {msg}", file=sys.stderr, flush=True)


def main():
    if "--probe" in sys.argv:
        say("no renderer here to probe")
        return 4
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    instance = args.get("instance", "")
    assert args.get("ledger-fds") == f"{SLOT_FD},{GRANT_FD},{SOCK_FD}", args
    sock = socket.socket(fileno=SOCK_FD)
    if instance.startswith("junk"):
        sock.send(b"\x7fjunk")
        time.sleep(120)
        return 0
    slot = mmap.mmap(SLOT_FD, SLOT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    slot[0:8] = struct.pack("<Q", 2**62)            # vram: more than granted
    slot[8:16] = struct.pack("<Q", 2**63 + 5)       # resources: "negative"
    slot[16:24] = struct.pack("<Q", 2**64 - 3)      # contexts
    slot[24:32] = struct.pack("<Q", 2**64 - 1)      # frames
    slot[8 * N_KINDS:8 * N_KINDS + 8] = struct.pack("<Q", 2**64 - 1)  # peak
    for k in range(N_QUOTA):  # recent peaks: far past any grant
        off = 8 * (N_KINDS + 1 + k)
        slot[off:off + 8] = struct.pack("<Q", 2**63 - 1)
    try:
        mmap.mmap(GRANT_FD, GRANT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        say("grant page writable: yes")
    except OSError as e:
        say(f"grant page writable: no ({e.strerror})")
    try:
        os.pwrite(GRANT_FD, b"\xff" * 8, 16)
        say("grant page write(): yes")
    except OSError as e:
        say(f"grant page write(): no ({e.strerror})")
    grant = mmap.mmap(GRANT_FD, GRANT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    limit = struct.unpack_from("<Q", grant, LIMIT_OFFSET)[0]
    sock.send(struct.pack("<IIQ", 1, 0, limit + 1))
    select.select([sock], [], [], 10)
    seq, granted, used = struct.unpack("<IIQ", sock.recv(16))
    say(f"asked for limit+1: granted={granted}")
    # Serve until the client hangs up.
    client = socket.socket(fileno=CLIENT_FD)
    while client.recv(4096):
        pass
    return 0


sys.exit(main())
