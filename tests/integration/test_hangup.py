#!/usr/bin/env python3
"""Work ends with its tenant.  On the null renderer, whose command stream
NULL_HANG models a submission that never completes (deterministic, no
timing involved):

- a client SIGKILLed while it waits for such work: its worker notices the
  hang-up at once, exits as "client left", and the instance's client count
  returns to 0 (bounded wait on that condition);
- the same client leaving between commands with the work still running;
- gpu-timeout: a session whose submission has not completed after
  gpu-timeout seconds ends with one log line naming the tenant, exit status
  5 ("gpu timeout"), whether or not the client waits for it;
- a client that sends half a command header and hangs up is not a crash.

None of these counts as a worker crash."""
import os
import signal
import struct
import subprocess
import sys
import time

import harness as h
import vtest_client as vt

NULL_HANG = (0x00010000, 0x474E4148)  # NOP of one dword, "HANG" (render/renderer.h)

CONFIG = """
[daemon]
renderer=null

[profile test]
vram=64M
max-clients=4
gpu-timeout=0

[instance patient]
profile=test

[instance strict]
profile=test
gpu-timeout=1
"""

# Run as a separate process so the test can SIGKILL it mid-wait.
WAITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import vtest_client as vt
c = vt.VtestClient(sys.argv[1])
c.handshake(b"waiter")
c.submit_cmd(tuple(int(w, 0) for w in sys.argv[3].split(",")))
c.send(vt.cmd(vt.BUSY_WAIT, (0, 1)))  # wait: never answered
print("waiting", flush=True)
time.sleep(600)
"""


def tenants(d, inst):
    return d.show(inst)["tenants"]


def pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purposes only once vgpud reaped it.
    return False


def worker_of(d, inst, client_pid):
    mine = lambda: [t for t in tenants(d, inst) if t["client_pid"] == client_pid]
    return h.wait_for(mine, 20, f"{inst}'s worker for client {client_pid}")[0]["worker_pid"]


def killed_while_waiting(d):
    here = os.path.dirname(os.path.abspath(__file__))
    hang = ",".join(hex(w) for w in NULL_HANG)
    p = subprocess.Popen([sys.executable, "-c", WAITER, d.socket("patient"), here, hang],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "waiting"
    worker = worker_of(d, "patient", p.pid)
    # The worker is parked in its fence wait, not gone: the work never ends.
    time.sleep(0.3)
    assert [t["worker_pid"] for t in tenants(d, "patient")] == [worker]
    t0 = time.monotonic()
    p.kill()
    p.wait()
    d.wait_log(r"patient client %d: waiter: client left while waiting for its GPU work" % p.pid)
    u = d.wait_idle("patient", timeout=10)
    took = time.monotonic() - t0
    d.wait_log(r"patient: client pid %d worker %d ended: client left \(exit 0\)" % (p.pid, worker))
    assert u["worker_crashes"] == 0, u
    assert (u["vram"], u["resources"], u["contexts"]) == (0, 0, 0), u
    h.wait_for(lambda: pid_gone(worker), 10, "the worker process to be reaped")
    print(f"ok: SIGKILLed client waiting on a never-ending fence: worker {worker} gone, "
          f"clients 0 after {took:.2f} s")


def left_with_work_running(d):
    c = vt.VtestClient(d.socket("patient"))
    c.handshake(b"leaver")
    c.submit_cmd(NULL_HANG)
    assert c.busy_wait(wait=False) == 1  # still running
    worker = worker_of(d, "patient", os.getpid())
    c.close()
    d.wait_log(r"patient: client pid %d worker %d ended: client left \(exit 0\)"
               % (os.getpid(), worker))
    u = d.wait_idle("patient", timeout=10)
    assert u["worker_crashes"] == 0, u
    print("ok: client left between commands with its work running")


def gpu_timeout(d, wait):
    c = vt.VtestClient(d.socket("strict"), timeout=30)
    c.handshake(b"slowpoke")
    c.submit_cmd(NULL_HANG)
    worker = worker_of(d, "strict", os.getpid())
    t0 = time.monotonic()
    if wait:
        c.send(vt.cmd(vt.BUSY_WAIT, (0, 1)))
    # The server ends the session: the connection closes by itself.
    assert c.closed_by_server(timeout=20), "session not ended by gpu-timeout"
    took = time.monotonic() - t0
    line = d.wait_log(r"strict client %d: gpu timeout, session ended: a submission has run "
                      r"for [\d.]+ s without completing" % os.getpid())
    d.wait_log(r"strict: client pid %d worker %d ended: gpu timeout \(exit 5\)"
               % (os.getpid(), worker))
    u = d.wait_idle("strict", timeout=10)
    assert u["worker_crashes"] == 0, u
    c.close()
    assert 0.9 <= took < 10, took
    print(f"ok: gpu-timeout=1 ({'waiting' if wait else 'not waiting'}): ended after "
          f"{took:.2f} s: {line.group(0)}")


def half_header(d):
    before = d.usage("patient")["worker_crashes"]
    c = vt.VtestClient(d.socket("patient"))
    c.send(struct.pack("<I", 5)[:3])
    worker = worker_of(d, "patient", os.getpid())
    c.close()
    d.wait_log(r"patient: client pid %d worker %d ended: client left \(exit 0\)"
               % (os.getpid(), worker))
    u = d.wait_idle("patient")
    assert u["worker_crashes"] == before == 0, u
    print("ok: half a header then a hang-up is no crash")


def test(x, d):
    killed_while_waiting(d)
    left_with_work_running(d)
    gpu_timeout(d, wait=True)
    gpu_timeout(d, wait=False)
    half_header(d)
    # A well-behaved session still works on both instances afterwards.
    vt.well_behaved_session(d.socket("patient"))
    vt.well_behaved_session(d.socket("strict"))
    for inst in ("patient", "strict"):
        assert d.wait_idle(inst)["worker_crashes"] == 0


if __name__ == "__main__":
    h.run(test, needs=(), config=CONFIG)
