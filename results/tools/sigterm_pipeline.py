#!/usr/bin/env python3
"""SIGTERM under load, measured (issue 9, item 5): starts ENGINE, connects CLIENTS (default 4)
that each pipeline `counter-add` requests without pause from one thread and read replies
from another; after HOLD seconds (default 2) sends SIGTERM and lets the clients keep sending
until the engine stops reading. Prints per client the replies received (ids checked in
order from 0), whether the `SHUTDOWN` event arrived, and how the stream ended (FIN or reset).
The adds form one total order, so the replies' counter values must be exactly 1..R for R
replies in all: none missing before the last one seen. Replies lost after the last one
seen would show as a reset (the kernel discards them only when it sends one), not a FIN.

    results/tools/sigterm_pipeline.py target/release/ooblane [ENGINE FLAGS...]

Stdlib only."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from engine_proc import start_engine

ENGINE, FLAGS = sys.argv[1], sys.argv[2:]
CLIENTS = int(os.environ.get("CLIENTS", "4"))
HOLD = float(os.environ.get("HOLD", "2"))
REPLY = re.compile(rb'\{"return":\{"value":(\d+)\},"id":(\d+)\}')


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        f = self.sock.makefile("rb")
        f.readline()
        self.sock.sendall(b'{"execute":"qmp_capabilities"}')
        f.readline()
        self.sent = 0
        self.ids, self.values, self.shutdown, self.end, self.other = [], [], False, None, 0
        self.send_error = None

    def send(self):
        i = 0
        try:
            while True:
                blob = b"".join(b'{"execute":"counter-add","arguments":{"delta":1},"id":%d}' % j
                                for j in range(i, i + 500))
                self.sock.sendall(blob)
                i += 500
                self.sent = i
        except OSError as e:
            self.send_error = type(e).__name__

    def read(self):
        tail = b""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                self.end = "reset"
                return
            if not data:
                self.end = "FIN"
                return
            data = tail + data
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            for line in data[:cut].splitlines():
                m = REPLY.fullmatch(line.strip())
                if m:
                    self.values.append(int(m.group(1)))
                    self.ids.append(int(m.group(2)))
                elif b'"SHUTDOWN"' in line:
                    self.shutdown = True
                else:
                    self.other += 1


def main():
    proc, port = start_engine(ENGINE, FLAGS, stderr=subprocess.PIPE)
    clients = [Client(port) for _ in range(CLIENTS)]
    threads = []
    for c in clients:
        for target in (c.send, c.read):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            threads.append(t)
    time.sleep(HOLD)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    code = proc.wait(timeout=60)
    exited = time.time() - t0
    for t in threads[1::2]:
        t.join(timeout=30)
    print(f"engine: {ENGINE} {' '.join(FLAGS)}; SIGTERM after {HOLD:g} s of {CLIENTS} clients "
          f"pipelining; exit code {code} after {exited:.2f} s")
    ok = code == 0
    total = 0
    for i, c in enumerate(clients):
        in_order = c.ids == list(range(len(c.ids)))
        total += len(c.ids)
        ok &= in_order and c.shutdown and c.end == "FIN" and c.other == 0
        print(f"  client {i}: sent >= {c.sent}, {len(c.ids)} replies "
              f"{'in order' if in_order else 'OUT OF ORDER'}, SHUTDOWN "
              f"{'received' if c.shutdown else 'MISSING'}, ended by {c.end}, "
              f"{c.other} other lines, sender stopped by {c.send_error}")
    values = sorted(v for c in clients for v in c.values)
    gapless = values == list(range(1, total + 1))
    print(f"replies {total}, counter values 1..{values[-1] if values else 0}: "
          f"{'none missing' if gapless else 'REPLIES LOST'}")
    ok &= gapless
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
