#!/usr/bin/env python3
"""Slow-loris, measured (issue 9, item 4): starts ENGINE (default timeouts: 30 s), opens N
connections (default 1000) that each send one byte a second: the first half negotiate, then
trickle a message that never ends (`{"execute":"` then one `x` a second: the incomplete-
message timeout), the other half never negotiate and trickle spaces (the negotiation
timeout). Meanwhile a probe connects every 5 s and times a served `ping`. Prints, per half,
how many got their error line and then end of stream, and when (seconds after their first
byte); a connection still open after LIMIT seconds (default 40) counts as held.

    results/tools/slowloris.py target/release/ooblane [ENGINE FLAGS...]

Stdlib only."""

import os
import resource
import selectors
import socket
import sys
import time

from engine_proc import finish, start_engine

ENGINE, FLAGS = sys.argv[1], sys.argv[2:]
N = int(os.environ.get("N", "1000"))
LIMIT = float(os.environ.get("LIMIT", "40"))


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    proc, port = start_engine(ENGINE, FLAGS)
    conns = []
    for i in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        f.readline()  # greeting
        negotiate = i < N // 2
        if negotiate:
            s.sendall(b'{"execute":"qmp_capabilities"}')
            f.readline()
            s.sendall(b'{"execute":"')
        else:
            s.sendall(b" ")
        s.setblocking(False)
        conns.append({"sock": s, "neg": negotiate, "first": time.time(), "text": b"",
                      "eof": None})
    print(f"engine: {ENGINE} {' '.join(FLAGS)}; {N} connections open, one byte a second each")
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c["sock"], selectors.EVENT_READ, c)
    start = time.time()
    next_drip, next_probe, probes = start + 1, start, []
    while time.time() - start < LIMIT and any(c["eof"] is None for c in conns):
        now = time.time()
        if now >= next_drip:
            for c in conns:
                if c["eof"] is None:
                    try:
                        c["sock"].send(b"x" if c["neg"] else b" ")
                    except OSError:
                        pass
            next_drip += 1
        if now >= next_probe:
            t0 = time.time()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as p:
                pf = p.makefile("rb")
                pf.readline()
                p.sendall(b'{"execute":"qmp_capabilities"}{"execute":"ping"}')
                pf.readline()
                pf.readline()
            probes.append((time.time() - t0) * 1000)
            next_probe += 5
        for key, _ in sel.select(timeout=0.1):
            c = key.data
            try:
                data = c["sock"].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                data, c["reset"] = b"", True
            if data:
                c["text"] += data
            else:
                c["eof"] = time.time() - c["first"]
                sel.unregister(c["sock"])
                c["sock"].close()
    ok = True
    for neg, what in [(True, "negotiated, message trickled"), (False, "never negotiated")]:
        half = [c for c in conns if c["neg"] == neg]
        closed = [c for c in half if c["eof"] is not None]
        resets = sum(1 for c in half if c.get("reset"))
        texts = {}
        for c in closed:
            t = c["text"].decode(errors="replace").strip()
            texts[t] = texts.get(t, 0) + 1
        times = sorted(c["eof"] for c in closed)
        span = f"{times[0]:.1f} to {times[-1]:.1f} s" if times else "-"
        print(f"{what}: {len(closed)} of {len(half)} closed ({resets} resets), after {span}")
        for t, k in texts.items():
            print(f"  x{k}: {t}")
        ok &= len(closed) == len(half) and resets == 0
    print(f"probe (connect, negotiate, ping) every 5 s: "
          f"{', '.join(f'{p:.1f}' for p in probes)} ms")
    return finish(proc, ok)


if __name__ == "__main__":
    sys.exit(main())
