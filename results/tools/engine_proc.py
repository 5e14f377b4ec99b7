"""What the attack scripts (stall_flood, nonreaders, slowloris, sigterm_pipeline) share: start
the engine on an ephemeral QMP port, read its memory from /proc, open a negotiated QMP
session, and end with PASS / FAIL. Stdlib only."""

import socket
import subprocess

NEGOTIATE = b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}'


def start_engine(engine, flags, stderr=subprocess.DEVNULL, env=None):
    """`ooblane --qmp tcp:127.0.0.1:0 FLAGS...`; returns (process, port) once it listens."""
    proc = subprocess.Popen([engine, "--qmp", "tcp:127.0.0.1:0", *flags],
                            stdout=subprocess.PIPE, stderr=stderr, env=env)
    port = int(proc.stdout.readline().decode().strip().rsplit(":", 1)[1])
    return proc, port


def status(pid, key):
    """A byte figure of /proc/PID/status (VmRSS, VmHWM, ...); 0 if absent."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def negotiated(port, timeout=None):
    """A QMP session with OOB enabled: (socket, its reading file), greeting and reply read."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    f = s.makefile("rb")
    f.readline()
    s.sendall(NEGOTIATE)
    f.readline()
    return s, f


def finish(proc, ok):
    """Stops the engine, prints the verdict, returns the exit status."""
    proc.terminate()
    proc.wait(timeout=30)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
