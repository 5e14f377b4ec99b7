#!/usr/bin/env python3
"""Clients that never read, measured (issue 9, item 1): starts ENGINE, then TEN clients that
send without reading: four pipeline `query-commands`, three pipeline in-band `query-stats`
(replies far larger than requests), three send 1 MiB of one-byte bad messages (`]`, one
error reply each). Once the engine holds them all (its `memory.held` unchanged for QUIET
seconds, polled out of band by a probe), prints the RSS above idle per client and the
engine's own count (`peak-conn`) against the per-connection budget; then every client
reads everything and the reply counts are checked (every request answered once, in order).

    results/tools/nonreaders.py target/release/ooblane [ENGINE FLAGS...]

Stdlib only."""

import json
import os
import re
import sys
import threading
import time

from engine_proc import finish, mib, negotiated, start_engine, status

ENGINE, FLAGS = sys.argv[1], sys.argv[2:]
QUIET = float(os.environ.get("QUIET", "3"))
BUDGET = 4 << 20  # the default --conn-budget
PIPELINED = 20_000
FLOOD = 1 << 20








def main():
    proc, port = start_engine(ENGINE, FLAGS)
    time.sleep(0.5)
    idle = status(proc.pid, "VmRSS")
    probe, probe_f = negotiated(port)

    def stats():
        probe.sendall(b'{"exec-oob":"query-stats","id":"qs"}')
        return json.loads(probe_f.readline())["return"]

    kinds = ["query-commands"] * 4 + ["query-stats"] * 3 + ["]"] * 3
    clients = []
    for kind in kinds:
        s, f = negotiated(port)
        if kind == "]":
            blob, expect = b"]" * FLOOD, FLOOD
        else:
            blob = b"".join(b'{"execute":"%s","id":%d}' % (kind.encode(), i)
                            for i in range(PIPELINED))
            expect = PIPELINED
        sender = threading.Thread(target=s.sendall, args=(blob,), daemon=True)
        sender.start()
        clients.append((kind, s, f, sender, expect))

    last, since, start = None, time.time(), time.time()
    while time.time() - since < QUIET:
        held = stats()["memory"]["held"]
        if held != last:
            last, since = held, time.time()
        time.sleep(0.2)
    memory = stats()["memory"]
    rss, peak = status(proc.pid, "VmRSS"), status(proc.pid, "VmHWM")
    n = len(clients)
    print(f"engine: {ENGINE} {' '.join(FLAGS)}; idle RSS {mib(idle)}")
    print(f"{n} clients not reading (4 query-commands x{PIPELINED}, 3 query-stats x{PIPELINED}, "
          f"3 x 1 MiB of ']'), held after {since - start:.1f} s")
    print(f"RSS {mib(rss)} (peak {mib(peak)}): {mib((rss - idle) / n)} per client above idle, "
          f"peak {mib((peak - idle) / n)}; budget {mib(BUDGET)}")
    print(f"engine count: held {mib(memory['held'])}, peak-conn {mib(memory['peak-conn'])} "
          f"({memory['peak-conn'] / BUDGET:.2f}x budget), paused-own {memory['paused-own']}")

    ok = True
    for kind, s, f, sender, expect in clients:
        if kind == "]":
            data, lines = b"", 0
            while lines < expect:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                data = chunk[-200:]
            good = lines == expect and b"JSON parse error" in data
        else:
            ids = []
            while len(ids) < expect:
                line = f.readline()
                if not line:
                    break
                m = re.search(rb'"id":(\d+)\}\r?\n$', line)
                ids.append(int(m.group(1)) if m and b'"return"' in line else -1)
            good = ids == list(range(expect))
            lines = len(ids)
        sender.join(timeout=30)
        ok &= good
        print(f"  {kind}: {lines} of {expect} replies {'in order, each once' if good else 'WRONG'}")
    print(f"after reading: peak RSS {mib(status(proc.pid, 'VmHWM'))}, "
          f"peak-conn {mib(stats()['memory']['peak-conn'])}")
    return finish(proc, ok)


if __name__ == "__main__":
    sys.exit(main())
