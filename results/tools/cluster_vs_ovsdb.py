#!/usr/bin/env python3
"""The replicated log measured beside ovsdb-server, in one run: writes OUT/ (never overwritten)
with one loadgen run folder per scenario, commands.txt, and summary.md (tables from each
run's summary.json).

    results/tools/cluster_vs_ovsdb.py results/2026-12-01-cluster [--quick]

Scenarios (release binaries: target/release/ooblane and loadgen; Debian openvswitch-common):
  engine-leader-16, engine-follower-16   counter-add, closed loop 4 connections x depth 16
  ovsdb-leader-16, ovsdb-follower-16     transact insert, the same shape (the issue's anchor)
  engine-leader-256, engine-follower-256 counter-add, 4 x 256 (pipelined: group commit)
  ovsdb-leader-256                       transact insert, 4 x 256
  engine-rate-5000                       open loop: counter-add 5,000/s + ping OOB 500/s
  oob-idle-N, oob-busy-N                 ping OOB 1,000/s on member N, idle, then while a
                                         second loadgen saturates the leader (4 x 256)
  durable-256, durable-rate-5000         engine --data alone (no cluster), same loads
Each engine member and ovsdb-server gets its own data directory under a temporary folder;
every process is stopped at the end. All on this machine's cores, clients included.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from engine_proc import Servers, cluster_argvs, cluster_leader, free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENGINE = os.path.join(ROOT, "target", "release", "ooblane")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
DB = "lg"
SCHEMA = {"name": DB, "version": "1.0.0", "tables": {"T": {"columns": {"n": {"type": "integer"}}}}}
ADD = 'name=add,cmd=counter-add,args={"delta":1}'
PING = "name=ping,cmd=ping,oob"
INSERT = {"lanes": [{"name": "insert", "cmd": "transact",
                     "args": [DB, {"op": "insert", "table": "T", "row": {"n": 1}}]}]}


class Suite(Servers):
    def __init__(self, out, quick):
        self.tmp = tempfile.mkdtemp(prefix="cluster-bench-")
        super().__init__(out, self.tmp)
        self.dur, self.warm = ("2s", "500ms") if quick else ("5s", "1s")
        self.rows = []
        os.makedirs(out)

    # -- servers ------------------------------------------------------------------------

    def engine_cluster(self):
        members = cluster_argvs(ENGINE, self.tmp)
        pids = [self.spawn(argv, "engine-%d" % (i + 1)).pid for i, (argv, _) in enumerate(members)]
        qmp = [port for _, port in members]
        for port in qmp:
            wait_port(port)
        leader = cluster_leader(qmp)
        order = [leader] + [i for i in range(3) if i != leader]
        return [("tcp:127.0.0.1:%d" % qmp[i], pids[i], i + 1) for i in order]

    def durable_engine(self):
        port = free_port()
        data = os.path.join(self.tmp, "durable")
        pid = self.spawn([ENGINE, "--data", data, "--qmp", "tcp:127.0.0.1:%d" % port],
                         "durable").pid
        wait_port(port)
        return "tcp:127.0.0.1:%d" % port, pid

    def ovsdb_cluster(self):
        schema = os.path.join(self.tmp, "schema.json")
        with open(schema, "w") as f:
            json.dump(SCHEMA, f)
        raft = ["tcp:127.0.0.1:%d" % free_port() for _ in range(3)]
        dbs = [os.path.join(self.tmp, "ovsdb-%d.db" % i) for i in range(3)]
        self.run_checked(["ovsdb-tool", "create-cluster", dbs[0], schema, raft[0]])
        for i in (1, 2):
            self.run_checked(["ovsdb-tool", "join-cluster", dbs[i], DB, raft[i], raft[0]])
        ports = [free_port() for _ in range(3)]
        ctls = [os.path.join(self.tmp, "ovsdb-%d.ctl" % i) for i in range(3)]
        pids = []
        for i in range(3):
            pids.append(self.spawn(["ovsdb-server", dbs[i], "--remote=ptcp:%d:127.0.0.1" % ports[i],
                                    "--unixctl=" + ctls[i], "--no-chdir", "-vconsole:off",
                                    "--log-file=" + os.path.join(self.tmp, "ovsdb-%d.log" % i)],
                                   "ovsdb-%d" % i).pid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            roles = [ovsdb_role(c) for c in ctls]
            if roles.count("leader") == 1 and roles.count("follower") == 2:
                break
            time.sleep(0.1)
        else:
            raise TimeoutError("the ovsdb cluster did not form: %r" % roles)
        leader = roles.index("leader")
        order = [leader] + [i for i in range(3) if i != leader]
        return [("tcp:127.0.0.1:%d" % ports[i], pids[i]) for i in order]

    def run_checked(self, argv):
        self.log(argv)
        subprocess.run(argv, check=True, timeout=30, stdout=subprocess.DEVNULL)

    # -- loads --------------------------------------------------------------------------

    def loadgen(self, name, remote, pid, *args, background=False):
        out = os.path.join(self.out, name)
        argv = [LOADGEN, "-r", remote, "-d", self.dur, "--warmup", self.warm, "--spin", "off",
                "--label", name, "-o", out] + list(args)
        if pid is not None:
            argv += ["--server-pid", str(pid)]
        self.log(argv)
        with open(out + ".txt", "w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        if background:
            return proc
        proc.wait(timeout=120)
        self.rows.append(name)
        return proc

    def closed(self, name, remote, pid, depth, lane=ADD, jsonrpc=False):
        args = ["--depth", str(depth), "-c", "4"]
        if jsonrpc:
            workload = os.path.join(self.tmp, "insert.json")
            with open(workload, "w") as f:
                json.dump(INSERT, f)
            args += ["--protocol", "jsonrpc", "--workload", workload]
        else:
            args += ["--lane", lane]
        self.loadgen(name, remote, pid, *args)

    def rate(self, name, remote, pid):
        self.loadgen(name, remote, pid, "-c", "4", "--lane", ADD + ",rate=5000",
                     "--lane", PING + ",rate=500")

    def oob(self, name, remote, pid):
        self.loadgen(name, remote, pid, "-c", "1", "--lane", PING + ",rate=1000")

    # -- the suite ----------------------------------------------------------------------

    def run(self):
        members = self.engine_cluster()
        (leader, lpid, _), (follower, fpid, _) = members[0], members[1]
        self.closed("engine-leader-16", leader, lpid, 16)
        self.closed("engine-follower-16", follower, fpid, 16)
        self.closed("engine-leader-256", leader, lpid, 256)
        self.closed("engine-follower-256", follower, fpid, 256)
        self.rate("engine-rate-5000", leader, lpid)
        for remote, pid, node in members:
            self.oob("oob-idle-%d" % node, remote, pid)
        for remote, pid, node in members:
            load = self.loadgen("saturate-for-%d" % node, leader, None, "--depth", "256",
                                "-c", "4", "--lane", ADD, background=True)
            time.sleep(1.0)
            self.oob("oob-busy-%d" % node, remote, pid)
            load.wait(timeout=120)
        self.stop_all()
        remote, pid = self.durable_engine()
        self.closed("durable-256", remote, pid, 256)
        self.rate("durable-rate-5000", remote, pid)
        self.stop_all()
        ovsdb = self.ovsdb_cluster()
        self.closed("ovsdb-leader-16", ovsdb[0][0], ovsdb[0][1], 16, jsonrpc=True)
        self.closed("ovsdb-follower-16", ovsdb[1][0], ovsdb[1][1], 16, jsonrpc=True)
        self.closed("ovsdb-leader-256", ovsdb[0][0], ovsdb[0][1], 256, jsonrpc=True)
        self.stop_all()
        self.summarize()

    def summarize(self):
        lines = ["| run | lane | replies/s | p50 | p99 | p99.9 | errors+failed+missing | CPU µs/reply | cs/1k |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name in self.rows:
            path = os.path.join(self.out, name, "summary.json")
            if not os.path.exists(path):
                lines.append("| %s | (no summary: see %s.txt) | | | | | | | |" % (name, name))
                continue
            with open(path) as f:
                s = json.load(f)
            cost = s.get("server") or {}
            for lane in s["lanes"]:
                c, k = lane["corrected"], lane["counts"]
                bad = k["errors"] + k["failed"] + k["missing"]
                lines.append("| %s | %s | %.0f | %s | %s | %s | %d | %s | %s |" % (
                    name, lane["name"], lane["rate"], ms(c["p50"]), ms(c["p99"]), ms(c["p999"]),
                    bad, fmt(cost.get("cpu_us_per_reply")), fmt(cost.get("switches_per_1k_replies"))))
        with open(os.path.join(self.out, "summary.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines))


def ms(us):
    return "%.2f ms" % (us / 1000.0) if us >= 1000 else "%.0f µs" % us


def fmt(v):
    return "" if v is None else "%.1f" % v


def ovsdb_role(ctl):
    r = subprocess.run(["ovs-appctl", "-t", ctl, "cluster/status", DB],
                       capture_output=True, text=True, timeout=5)
    for line in r.stdout.splitlines():
        if line.startswith("Role: "):
            return line[len("Role: "):].strip()
    return None


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    out, quick = sys.argv[1], "--quick" in sys.argv[2:]
    if os.path.exists(out):
        sys.exit("%s exists; results are never overwritten" % out)
    suite = Suite(out, quick)
    try:
        suite.run()
    finally:
        suite.stop_all()
        shutil.rmtree(suite.tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
