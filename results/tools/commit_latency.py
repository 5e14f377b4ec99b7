#!/usr/bin/env python3
"""Commit latency beside etcd and the physical floor, in one sitting: writes OUT_DIR (never
overwritten) with one loadgen run folder per point and repetition, the floor measurements,
commands.txt, sitting.json, and (through commit_latency_summary.py) summary.json and
README.md with the tables.

    flock /tmp/loadtest.lock results/tools/commit_latency.py OUT_DIR \\
        [--engine PATH] [--old-engine PATH] [--loadgen PATH] [--floor PATH] \\
        [--reps N] [--data-root DIR] [--quick]

Defaults: --engine target/release/ooblane (target/release/engine if that is missing),
--loadgen target/release/loadgen, --floor target/release/floor (build them with
`cargo build --release -p ooblane -p loadgen -p bench`; loadgen needs --protocol etcd), 3
repetitions (1 with --quick, which also shortens every run). --old-engine adds a second
engine build, measured beside the first in the same sitting. Installs Debian's etcd-server
with apt-get if `etcd` is missing.

Systems, each started fresh for every repetition with its data under --data-root (default: a
temporary folder; the floor is measured there, so disk and filesystem are the same):
  BUILD-cluster   3 engine members (--cluster, --data), per engine build
  BUILD-durable   one engine with --data, per engine build
  etcd-3          3 etcd members (defaults: fsync on every commit), HTTP/JSON gateway
  etcd-1          one etcd member
Points, where they apply (engine: QMP counter-add {"delta":1}; etcd: a put of a 1-byte value):
  closed-c16, closed-c64         16 / 64 connections x one request outstanding, via the leader
  paced-1000-c16-leader/follower 1,000/s over 16 connections, via the leader / a follower
  paced-5000-c16-leader/follower 5,000/s over 16 connections
  paced-5000-c64-leader          5,000/s over 64 connections (etcd's gateway serves one
                                 request at a time per connection; 16 cap it)
  pipelined-c4x256               4 connections x 256 outstanding (engine only)
Every point samples the CPU and context switches of all the system's members
(loadgen --server-pid, once per member). Repetitions alternate the order of the systems
(forward, then backward) so drift of the shared machine does not favour one. The floor
(`floor DATA_ROOT`: fdatasync of a small write, loopback round trip) is measured right
before every system starts and once at the end: disk latency here drifts with other I/O by
10x within minutes, so each point is compared with the floor measured next to it. Everything
runs on this machine's cores, loadgen included: run it under the load-test lock.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from engine_proc import Servers, cluster_argvs, cluster_leader, free_port, qmp_execute, wait_port
import commit_latency_summary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")
ADD = 'name=commit,cmd=counter-add,args={"delta":1}'
# Key "loadgen", value "1", base64 as the gateway takes them.
PUT = 'name=commit,cmd=/v3/kv/put,args={"key":"bG9hZGdlbg==","value":"MQ=="}'
ETCD_PUT_BODY = b'{"key":"bG9hZGdlbg==","value":"MQ=="}'
# fdatasyncs of each kind per floor measurement (round trips: three times as many): p99 is
# the 5th worst, and it takes a second or two even when the disk is slow, 19 times a sitting.
FLOOR_COUNT = 500


def points(members, engine):
    """The points a system gets: (name, connections, depth or None, rate or None, via)."""
    out = [("closed-c16", 16, 1, None, "leader"), ("closed-c64", 64, 1, None, "leader")]
    for rate in (1000, 5000):
        out.append(("paced-%d-c16-leader" % rate, 16, None, rate, "leader"))
        if members > 1:
            out.append(("paced-%d-c16-follower" % rate, 16, None, rate, "follower"))
    # etcd's gateway answers one request at a time per HTTP/1.1 connection: at 5,000/s over
    # 16 connections each must commit within 3.2 ms or its queue grows; 64 lift that cap.
    out.append(("paced-5000-c64-leader", 64, None, 5000, "leader"))
    if engine:
        out.append(("pipelined-c4x256", 4, 256, None, "leader"))
    return out


class Running:
    """A started system: its member processes and where to send load."""

    def __init__(self, procs, leader, follower):
        self.procs = procs
        self.pids = [p.pid for p in procs]
        self.remotes = {"leader": leader, "follower": follower}


class Sitting(Servers):
    def __init__(self, args):
        self.data_root = args.data_root or tempfile.mkdtemp(prefix="commit-latency-")
        super().__init__(args.out, os.path.join(self.data_root, "logs"))
        os.makedirs(self.logs, exist_ok=True)
        self.args = args
        self.dur, self.warm = ("2s", "500ms") if args.quick else ("4s", "1s")
        self.points = []
        self.floors = {}
        self.failures = []
        os.makedirs(os.path.join(self.out, "runs"))
        os.makedirs(os.path.join(self.out, "floor"))

    # -- systems ------------------------------------------------------------------------

    def engine_cluster(self, engine, data):
        members = cluster_argvs(engine, data)
        procs = [self.spawn(argv, "%s-%d" % (os.path.basename(data), i + 1))
                 for i, (argv, _) in enumerate(members)]
        qmp = [port for _, port in members]
        for port in qmp:
            wait_port(port)
        leader = cluster_leader(qmp)
        follower = (leader + 1) % len(qmp)
        ready_engine(qmp[leader])
        order = [leader] + [i for i in range(len(qmp)) if i != leader]
        return Running([procs[i] for i in order], "tcp:127.0.0.1:%d" % qmp[leader],
                       "tcp:127.0.0.1:%d" % qmp[follower])

    def engine_durable(self, engine, data):
        port = free_port()
        proc = self.spawn([engine, "--data", data, "--qmp", "tcp:127.0.0.1:%d" % port],
                          os.path.basename(data))
        wait_port(port)
        ready_engine(port)
        return Running([proc], "tcp:127.0.0.1:%d" % port, None)

    def etcd(self, members, data):
        client = [free_port() for _ in range(members)]
        peer = [free_port() for _ in range(members)]
        cluster = ",".join("m%d=http://127.0.0.1:%d" % (i + 1, p) for i, p in enumerate(peer))
        procs = []
        for i in range(members):
            name = "m%d" % (i + 1)
            procs.append(self.spawn([
                "etcd", "--name", name, "--data-dir", os.path.join(data, name),
                "--listen-client-urls", "http://127.0.0.1:%d" % client[i],
                "--advertise-client-urls", "http://127.0.0.1:%d" % client[i],
                "--listen-peer-urls", "http://127.0.0.1:%d" % peer[i],
                "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer[i],
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", os.path.basename(data),
                "--logger", "zap", "--log-level", "warn"], "%s-%s" % (os.path.basename(data), name)))
        leader = etcd_leader(client)
        follower = (leader + 1) % members if members > 1 else None
        order = [leader] + [i for i in range(members) if i != leader]
        return Running([procs[i] for i in order], "tcp:127.0.0.1:%d" % client[leader],
                       None if follower is None else "tcp:127.0.0.1:%d" % client[follower])

    def systems(self):
        """(system id, what, members, engine binary or None) in sitting order."""
        builds = [("old", self.args.old_engine)] if self.args.old_engine else []
        builds.append(("new" if self.args.old_engine else "engine", self.args.engine))
        out = [("%s-cluster" % b, "engine", 3, path) for b, path in builds]
        out.append(("etcd-3", "etcd", 3, None))
        out += [("%s-durable" % b, "engine", 1, path) for b, path in builds]
        out.append(("etcd-1", "etcd", 1, None))
        return out

    def start(self, system, kind, members, engine, data):
        if kind == "etcd":
            return self.etcd(members, data)
        if members > 1:
            return self.engine_cluster(engine, data)
        return self.engine_durable(engine, data)

    # -- loads --------------------------------------------------------------------------

    def loadgen(self, name, running, lane, connections, depth, rate, via):
        out = os.path.join(self.out, "runs", name)
        protocol = ["--protocol", "etcd"] if lane == PUT else []
        lane_spec = lane + (",rate=%d" % rate if rate else "")
        depth = ["--depth", str(depth)] if depth else []
        argv = [self.args.loadgen, "-r", running.remotes[via], *protocol, "--lane", lane_spec,
                "-c", str(connections), *depth, "-d", self.dur, "--warmup", self.warm,
                "--spin", "off", "--label", name, "-o", out]
        for pid in running.pids:
            argv += ["--server-pid", str(pid)]
        self.log(argv)
        with open(out + ".txt", "w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        # loadgen's own CPU shares the cores with the servers: kept to say how much.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        self.client_cpu_s = usage.ru_utime + usage.ru_stime
        # 120 runs a sitting: the SVG plot stays, its PNG twin (most of a run's bytes) goes.
        if os.path.exists(os.path.join(out, "percentiles.png")):
            os.remove(os.path.join(out, "percentiles.png"))
        return out, rc

    def run_system(self, rep, system, kind, members, engine):
        data = os.path.join(self.data_root, "r%d-%s" % (rep, system))
        floor = self.floor("r%d-%s" % (rep, system))
        try:
            running = self.start(system, kind, members, engine, data)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            self.failures.append("rep %d: %s did not start: %s" % (rep, system, e))
            self.keep_logs(system)
            self.stop_all()
            return
        lane = PUT if kind == "etcd" else ADD
        for point, connections, depth, rate, via in points(members, kind == "engine"):
            name = "r%d-%s-%s" % (rep, system, point)
            print("  %s" % name, flush=True)
            out, rc = self.loadgen(name, running, lane, connections, depth, rate, via)
            self.points.append({"rep": rep, "system": system, "kind": kind, "members": members,
                                "point": point, "via": via, "dir": os.path.relpath(out, self.out),
                                "rc": rc, "floor": floor, "client_cpu_s": self.client_cpu_s})
        self.stop_all()
        shutil.rmtree(data, ignore_errors=True)

    def keep_logs(self, system):
        dest = os.path.join(self.out, "logs")
        os.makedirs(dest, exist_ok=True)
        for f in os.listdir(self.logs):
            if system in f:
                shutil.copy(os.path.join(self.logs, f), dest)

    def floor(self, tag):
        """Measures the floor into floor/TAG.json; returns TAG."""
        argv = [self.args.floor, self.data_root, "--count", str(FLOOR_COUNT)]
        self.log(argv)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
        with open(os.path.join(self.out, "floor", tag + ".json"), "w") as f:
            f.write(result.stdout)
        self.floors[tag] = json.loads(result.stdout)
        return tag

    def run(self):
        meta = describe(self.args, self.data_root)
        meta["load_start"] = loadavg()
        started = time.monotonic()
        order = self.systems()
        for rep in range(1, self.args.reps + 1):
            print("repetition %d" % rep, flush=True)
            for system, kind, members, engine in (order if rep % 2 else order[::-1]):
                self.run_system(rep, system, kind, members, engine)
        self.floor("end")
        meta["load_end"] = loadavg()
        meta["pressure_end"] = pressure()
        meta["elapsed_s"] = round(time.monotonic() - started)
        sitting = {"meta": meta, "floors": self.floors, "points": self.points,
                   "failures": self.failures, "systems": [s for s, _, _, _ in order]}
        with open(os.path.join(self.out, "sitting.json"), "w") as f:
            json.dump(sitting, f, indent=1)
        commit_latency_summary.write(self.out)
        failed = [p["dir"] for p in self.points if p["rc"] != 0]
        for run in failed:
            print("FAILED verification: %s (see %s.txt)" % (run, run), file=sys.stderr)
        return 0 if not (self.failures or failed) else 1


def ready_engine(port, timeout=20.0):
    """Waits until a replicated command commits through PORT (a durable node answers nothing
    before its log is replayed; a cluster needs its first commit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "return" in qmp_execute(port, "counter-add", {"delta": 1}):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError("no commit through port %d" % port)


def etcd_post(port, path, body, timeout=2.0):
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def etcd_leader(client_ports, timeout=20.0):
    """Index of the member that leads (its own id is the leader every member reports), once
    a put commits through it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = [etcd_post(p, "/v3/maintenance/status", b"{}") for p in client_ports]
            ids = [s["header"]["member_id"] for s in status]
            leaders = {s.get("leader") for s in status}
            if len(leaders) == 1 and leaders <= set(ids):
                leader = ids.index(leaders.pop())
                etcd_post(client_ports[leader], "/v3/kv/put", ETCD_PUT_BODY)
                return leader
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError("etcd elected no leader")


def ensure_etcd():
    if shutil.which("etcd"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    # The package's service is not started where there is no init system to start it; this
    # suite starts its own members on free ports either way.
    subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True, env=env)


def output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return ""


def binary(path):
    """What a binary is: its path, --version, SHA-256, and the COMMIT file beside it if any."""
    commit_file = os.path.join(os.path.dirname(path), "COMMIT")
    commit = open(commit_file).read().strip() if os.path.exists(commit_file) else None
    with open(path, "rb") as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    return {"path": os.path.abspath(path), "version": output([path, "--version"]),
            "sha256": sha256, "commit_file": commit}


def describe(args, data_root):
    dirty = bool(output(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]))
    cpu = [l.split(":", 1)[1].strip() for l in output(["lscpu"]).splitlines()
           if l.startswith("Model name")]
    mem = [l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")]
    return {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": output(["git", "-C", ROOT, "rev-parse", "HEAD"]) + (" (dirty)" if dirty else ""),
        "rustc": output(["rustc", "-V"]),
        "machine": {"cpu": cpu[0] if cpu else platform.processor(), "cores": os.cpu_count(),
                    "memory_gib": round(int(mem[0]) / 2**20, 1) if mem else None,
                    "kernel": platform.release(),
                    "data_fs": output(["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T", data_root])},
        "etcd": output(["etcd", "--version"]).splitlines()[:1],
        "engine": binary(args.engine),
        "old_engine": binary(args.old_engine) if args.old_engine else None,
        "loadgen": binary(args.loadgen),
        "durations": {"measured": "2s" if args.quick else "4s", "warmup": "500ms" if args.quick else "1s"},
        "reps": args.reps,
    }


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def pressure():
    out = {}
    for kind in ("cpu", "io"):
        try:
            out[kind] = open("/proc/pressure/%s" % kind).readline().strip()
        except OSError:
            pass
    return out


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default_engine = os.path.join(RELEASE, "ooblane")
    if not os.path.exists(default_engine):
        default_engine = os.path.join(RELEASE, "engine")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--engine", default=default_engine, help="engine build to measure")
    p.add_argument("--old-engine", help="a second engine build, measured beside --engine")
    p.add_argument("--loadgen", default=os.path.join(RELEASE, "loadgen"))
    p.add_argument("--floor", default=os.path.join(RELEASE, "floor"))
    p.add_argument("--reps", type=int, help="repetitions of every point (3; 1 with --quick)")
    p.add_argument("--data-root", help="where the data directories go (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="1 repetition, 2 s runs")
    args = p.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    for path in filter(None, [args.engine, args.old_engine, args.loadgen, args.floor]):
        if not os.access(path, os.X_OK):
            p.error("%s is not an executable" % path)
    return args


def main():
    args = parse_args()
    if os.path.exists(args.out):
        sys.exit("%s exists; results are never overwritten" % args.out)
    ensure_etcd()
    sitting = Sitting(args)
    try:
        code = sitting.run()
    finally:
        sitting.stop_all()
        if not args.data_root:
            shutil.rmtree(sitting.data_root, ignore_errors=True)
    for failure in sitting.failures:
        print("FAILED: " + failure, file=sys.stderr)
    print("results written to %s" % args.out)
    sys.exit(code)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
