"""What the attack scripts (stall_flood, nonreaders, slowloris, sigterm_pipeline) and the
cluster benchmarks (cluster_vs_ovsdb, commit_latency) share: start the engine on an ephemeral
QMP port, read its memory from /proc, open a negotiated QMP session, free loopback ports, the
command lines of a loopback cluster and which member leads it, the servers a run starts
(`Servers`), every thread's CPU and context switches (`thread_times`), and end with PASS /
FAIL.
Stdlib only."""

import json
import os
import socket
import subprocess
import time

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


def thread_times(pid):
    """{tid: (name, CPU ns, voluntary, involuntary context switches)} of every thread of PID,
    from /proc/PID/task/TID/{comm,schedstat,status}; a thread that ends meanwhile is left out."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"{base}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            out[tid] = (name, ns, int(fields["voluntary_ctxt_switches"]),
                        int(fields["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError, ValueError):
            pass
    return out


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


def qmp_oob(port, command):
    """One OOB command on a fresh QMP session; its `return`, or None."""
    try:
        s, f = negotiated(port, timeout=2)
        with s:
            s.sendall(json.dumps({"exec-oob": command, "id": 1}).encode())
            return json.loads(f.readline()).get("return")
    except (OSError, ValueError):
        return None


def qmp_execute(port, command, arguments=None, timeout=10):
    """One in-band command on a fresh QMP session; the reply (`return` or `error`)."""
    s, f = negotiated(port, timeout=timeout)
    with s:
        request = {"execute": command, "id": 1}
        if arguments is not None:
            request["arguments"] = arguments
        s.sendall(json.dumps(request).encode())
        return json.loads(f.readline())


def free_port():
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    """Waits until something accepts connections on loopback PORT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nothing listens on port %d" % port)



class Servers:
    """The server processes a benchmark run starts: each command line appended to
    OUT/commands.txt, each process's output to LOGS/NAME.log, all killed together."""

    def __init__(self, out, logs):
        self.out = out
        self.logs = logs
        self.procs = []

    def log(self, argv):
        with open(os.path.join(self.out, "commands.txt"), "a") as f:
            f.write(" ".join(argv) + "\n")

    def spawn(self, argv, name):
        self.log(argv)
        with open(os.path.join(self.logs, name + ".log"), "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        self.procs = []

def cluster_argvs(engine, data_root, members=3):
    """Command lines of a loopback `--cluster` of MEMBERS engines, member N with its data in
    DATA_ROOT/engine-N: a list of (argv, qmp_port)."""
    raft = [free_port() for _ in range(members)]
    qmp = [free_port() for _ in range(members)]
    spec = ",".join("%d=tcp:127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(raft))
    return [([engine, "--cluster", spec, "--node", str(i + 1),
              "--data", os.path.join(data_root, "engine-%d" % (i + 1)),
              "--qmp", "tcp:127.0.0.1:%d" % qmp[i]], qmp[i]) for i in range(members)]


def cluster_leader(qmp_ports, timeout=15.0):
    """Index in QMP_PORTS of the member whose `query-cluster` says it leads."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, port in enumerate(qmp_ports):
            status = qmp_oob(port, "query-cluster")
            if status and status.get("role") == "leader":
                return i
        time.sleep(0.1)
    raise TimeoutError("the engine cluster elected no leader")


def finish(proc, ok):
    """Stops the engine, prints the verdict, returns the exit status."""
    proc.terminate()
    proc.wait(timeout=30)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
