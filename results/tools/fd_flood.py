#!/usr/bin/env python3
"""Descriptor-exhaustion attack, measured (issue 9, item 3): runs ENGINE under
`prlimit --nofile=1024:1024` with two parser threads, makes 4,000 sequential connection
attempts holding every greeted one, closes them all, then times how long a new client takes
to be served (greeting, then `qmp_capabilities` answered). Prints greeted / refused / silent
counts, the refusal texts, the recovery time and the engine's warning count.

    results/tools/fd_flood.py target/release/ooblane [ENGINE FLAGS...]

A client that gets no first line within WAIT seconds (env, default 0.02: a served client
gets its greeting in well under a millisecond on loopback) counts as silent."""

import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

ATTEMPTS = 4000
WAIT = float(os.environ.get("WAIT", "0.02"))
RECOVERY_LIMIT = 10.0


def first_line(sock):
    return sock.makefile("rb").readline()


def main():
    engine, flags = sys.argv[1], sys.argv[2:]
    cmd = ["prlimit", "--nofile=1024:1024", engine, "--qmp", "tcp:127.0.0.1:0",
           "--threads", "2", "--no-pin", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    host, port = proc.stdout.readline().strip().split("tcp:")[1].rsplit(":", 1)
    log = []
    threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))

    held, silent, refusals = [], 0, {}
    start = time.time()
    for _ in range(ATTEMPTS):
        sock = socket.socket()
        sock.settimeout(WAIT)
        try:
            sock.connect((host, int(port)))
            line = first_line(sock)
        except OSError:
            silent += 1
            held.append(sock)
            continue
        if line.startswith(b'{"QMP"'):
            held.append(sock)
        else:
            text = line.decode(errors="replace").strip()
            refusals[text] = refusals.get(text, 0) + 1
            sock.close()
    flood = time.time() - start
    for sock in held:
        sock.close()

    closed = time.time()
    served = None
    while served is None and time.time() - closed < RECOVERY_LIMIT:
        with socket.socket() as sock:
            sock.settimeout(1)
            try:
                sock.connect((host, int(port)))
                lines = sock.makefile("rb")
                if lines.readline().startswith(b'{"QMP"'):
                    sock.sendall(b'{"execute":"qmp_capabilities"}')
                    if lines.readline().startswith(b'{"return"'):
                        served = time.time() - closed
            except OSError:
                pass
    time.sleep(0.2)  # let the last log lines arrive
    proc.kill()
    proc.wait()

    warnings = [re.sub(r"\x1b\[[0-9;]*m", "", w) for w in log if "WARN" in w]
    print(f"attempts {ATTEMPTS}: greeted {len(held) - silent}, refused {sum(refusals.values())}, "
          f"silent {silent}, in {flood:.1f} s")
    for text, count in refusals.items():
        print(f"  refusal x{count}: {text}")
    print("new client after all closed: " +
          (f"served in {served * 1000:.1f} ms" if served is not None
           else f"NOT served within {RECOVERY_LIMIT:.0f} s"))
    print(f"engine warnings: {len(warnings)}")
    kinds = {}
    for w in warnings:
        kind = re.sub(r"^\S+\s+WARN\s+", "", w).split(" count=")[0].split(" error=")[0].strip()
        kinds[kind] = kinds.get(kind, 0) + 1
    for kind, count in kinds.items():
        print(f"  x{count}: {kind}")


if __name__ == "__main__":
    main()
