#!/usr/bin/env python3
"""Stalled-pipelining attack, measured (issue 9, items 1-2): starts ENGINE, holds its executor
with an in-band `stall`, then opens N connections that each pipeline 64-byte `counter-add`
requests until the engine stops reading them (no socket accepts more for QUIET seconds). Then
it releases the stall, checks that every request fully sent got exactly one reply, in order
(ids matched one by one, no error), closes the attackers and samples the engine's RSS from
/proc as it settles. Prints one line per figure.

    results/tools/stall_flood.py N target/release/ooblane [ENGINE FLAGS...]

Environment: ENGINE_ENV="K=V K=V" is added to the engine's environment (an allocator via
LD_PRELOAD, GLIBC_TUNABLES); SNDBUF (default 65536) is each attacker's SO_SNDBUF, so the
kernel's buffers stay small beside what the engine holds; QUIET (default 3) seconds without
progress end the flood; ENGINE_LOG names a file for the engine's stderr. Stdlib only."""

import os
import re
import selectors
import socket
import subprocess
import sys
import time

from engine_proc import finish, mib, negotiated, start_engine, status

N = int(sys.argv[1])
ENGINE, FLAGS = sys.argv[2], sys.argv[3:]
SNDBUF = int(os.environ.get("SNDBUF", "65536"))
QUIET = float(os.environ.get("QUIET", "3"))
BATCH = 2048  # requests generated per refill
ID = re.compile(rb'"id":(\d+)\}')
SETTLE = [0.5, 2, 5, 10, 20, 30]  # seconds after the attackers closed


def request(i):
    r = b'{"execute":"counter-add","arguments":{"delta":1},"id":%d}' % i
    return r + b" " * (64 - len(r))








class Attacker:
    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        self.sock.connect(("127.0.0.1", port))
        f = self.sock.makefile("rb")
        f.readline()
        self.sock.sendall(b'{"execute":"qmp_capabilities"}')
        f.readline()
        self.sock.setblocking(False)
        self.next_id = 0  # ids generated
        self.pending = memoryview(b"")
        self.expect = 0  # next reply id expected
        self.tail = b""
        self.errors = 0

    def refill(self):
        ids = range(self.next_id, self.next_id + BATCH)
        self.pending = memoryview(b"".join(request(i) for i in ids))
        self.next_id += BATCH

    def send(self):
        """Sends until the socket is full; returns the bytes sent."""
        sent = 0
        while True:
            if not self.pending:
                self.refill()
            try:
                n = self.sock.send(self.pending)
            except BlockingIOError:
                return sent
            sent += n
            self.pending = self.pending[n:]

    def stop(self):
        """Ends the flood: the request half sent is kept to complete, the unsent rest is
        dropped. Returns the requests this connection must get replies to."""
        part = len(self.pending) % 64
        total = self.next_id - len(self.pending) // 64
        self.pending = self.pending[:part]
        return total

    def take(self, data):
        data = self.tail + data
        cut = data.rfind(b"\n") + 1
        self.tail = data[cut:]
        chunk = data[:cut]
        self.errors += chunk.count(b'"error"')
        ids = ID.findall(chunk)
        if ids and (int(ids[0]) != self.expect or int(ids[-1]) != self.expect + len(ids) - 1
                    or chunk.count(b"\n") != len(ids)):
            ints = [int(i) for i in ids]
            if ints != list(range(self.expect, self.expect + len(ints))):
                raise SystemExit(f"stall_flood: out of order or duplicate near id {self.expect}")
        self.expect += len(ids)


PROCS = []  # the engine, ended whatever happens


def main():
    env = dict(os.environ)
    for kv in os.environ.get("ENGINE_ENV", "").split():
        k, v = kv.split("=", 1)
        env[k] = v
    log = open(os.environ["ENGINE_LOG"], "wb") if "ENGINE_LOG" in os.environ else subprocess.DEVNULL
    proc, port = start_engine(ENGINE, FLAGS, stderr=log, env=env)
    PROCS.append(proc)
    time.sleep(0.5)
    idle = status(proc.pid, "VmRSS")
    print(f"engine: {ENGINE} --qmp tcp:127.0.0.1:0 {' '.join(FLAGS)}  env: {os.environ.get('ENGINE_ENV', '-')}")
    print(f"idle RSS: {mib(idle)}")

    staller, staller_f = negotiated(port)
    staller.sendall(b'{"execute":"stall","arguments":{"timeout-ms":600000},"id":"stall"}')
    attackers = [Attacker(port) for _ in range(N)]
    sel = selectors.DefaultSelector()
    for a in attackers:
        sel.register(a.sock, selectors.EVENT_WRITE, a)
    start = last_progress = time.time()
    while time.time() - last_progress < QUIET:
        for key, _ in sel.select(timeout=0.5):
            if key.data.send():
                last_progress = time.time()
    flood = last_progress - start
    sel.close()
    expected = {a: a.stop() for a in attackers}
    sent = sum(expected.values())
    peak = status(proc.pid, "VmHWM")
    held = status(proc.pid, "VmRSS")
    staller.sendall(b'{"exec-oob":"query-stats","id":"qs"}')
    stats = staller_f.readline()
    memory = re.search(rb'"memory":\{[^}]*\}', stats)
    print(f"flood: {N} connections, {sent} requests accepted ({sent / N:.0f} each, "
          f"{mib(sent * 64 / N)} each) in {flood:.1f} s")
    print(f"RSS while held: {mib(held)}, peak (VmHWM) {mib(peak)}")
    print(f"query-stats memory: {memory.group(0).decode() if memory else stats[:200]}")

    # Release, complete the half-sent requests, read every reply.
    staller.sendall(b'{"exec-oob":"release","id":"r"}')
    for a in attackers:
        if len(a.pending):
            a.sock.setblocking(True)
            a.sock.sendall(a.pending)
            a.sock.setblocking(False)
    sel = selectors.DefaultSelector()
    for a in attackers:
        sel.register(a.sock, selectors.EVENT_READ, a)
    released = time.time()
    open_ = set(attackers)
    while open_ and time.time() - released < 900:
        for key, _ in sel.select(timeout=1):
            a = key.data
            try:
                data = a.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit("stall_flood: engine closed an attacker")
            a.take(data)
            if a.expect >= expected[a]:
                sel.unregister(a.sock)
                open_.discard(a)
    answer = time.time() - released
    errors = sum(a.errors for a in attackers)
    extra = sum(a.expect - expected[a] for a in attackers)
    print(f"after release: {sum(a.expect for a in attackers)} of {sum(expected.values())} "
          f"answered in order in {answer:.1f} s, {len(open_)} connections short, "
          f"{extra} extra, {errors} errors; peak RSS (VmHWM) {mib(status(proc.pid, 'VmHWM'))}")
    for a in attackers:
        a.sock.close()
    closed = time.time()
    line = []
    for at in SETTLE:
        time.sleep(max(0, closed + at - time.time()))
        line.append(f"{at:g}s {mib(status(proc.pid, 'VmRSS'))}")
    rss = status(proc.pid, "VmRSS")
    print(f"RSS after the attackers closed: {', '.join(line)}  ({rss / idle:.1f}x idle)")
    staller.close()
    return finish(proc, not open_ and errors == 0 and extra == 0)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for p in PROCS:
            p.kill()
