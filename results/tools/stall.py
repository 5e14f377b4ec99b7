#!/usr/bin/env python3
"""Holds the engine's executor for scenario 2(c) of results/run.sh.

Connects to a QMP address, negotiates `oob`, sends an in-band `stall` (timeout-ms given),
keeps the executor blocked for HOLD seconds, then sends an OOB `release` and waits for the
stall's reply. Exits non-zero if the stall was not released by us. Stdlib only.

usage: stall.py HOST PORT HOLD_SECONDS
"""
import json
import socket
import sys
import time


def read_line(sock_file):
    line = sock_file.readline()
    if not line:
        raise SystemExit("stall.py: connection closed")
    return json.loads(line)


def main():
    host, port, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    sock = socket.create_connection((host, port), timeout=hold + 30)
    replies = sock.makefile("rb")
    read_line(replies)  # greeting
    sock.sendall(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}')
    read_line(replies)
    timeout_ms = int((hold + 20) * 1000)
    stall = {"execute": "stall", "arguments": {"timeout-ms": timeout_ms}, "id": "stall"}
    sock.sendall(json.dumps(stall).encode())
    time.sleep(hold)
    sock.sendall(b'{"exec-oob":"release","id":"release"}')
    released = None
    while released is None:
        reply = read_line(replies)
        if reply.get("id") == "stall":
            released = reply["return"]["released"]
    print(f"stall.py: held {hold}s, released={released}")
    return 0 if released else 1


if __name__ == "__main__":
    sys.exit(main())
