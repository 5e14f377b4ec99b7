#!/usr/bin/env python3
"""Where one commit's CPU and wake-ups go: starts a 3-member cluster (or, with --members 1, a
durable single node) of ENGINE with fresh data under a temporary folder, drives it with loadgen
at a paced rate through the leader, and over a window in the middle of the run reads every
thread's CPU time (/proc/PID/task/TID/schedstat) and context switches (voluntary and not, from
.../status). The commits in the window are counted exactly: the counter (OOB `query-counter`
on the leader) before and after. Prints one table, per member role and thread name: CPU µs,
voluntary and involuntary switches, each per commit.

    flock /tmp/loadtest.lock results/tools/commit_profile.py ENGINE \\
        [--loadgen PATH] [--members 3] [--rate 1000] [--connections 16] [--window 4]

Stdlib only; run it under the load-test lock (loadgen shares the machine's cores).
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from engine_proc import cluster_argvs, cluster_leader, free_port, qmp_oob, thread_times, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADD = 'name=commit,cmd=counter-add,args={"delta":1}'


def counter(port):
    value = qmp_oob(port, "query-counter")
    if value is None:
        sys.exit("query-counter failed on port %d" % port)
    return value["value"] if isinstance(value, dict) else value


def start(args, root):
    """The members' processes and QMP ports, and the leader's index."""
    if args.members == 1:
        port = free_port()
        argvs = [([args.engine, "--data", os.path.join(root, "d"), "--qmp",
                   "tcp:127.0.0.1:%d" % port], port)]
    else:
        argvs = cluster_argvs(args.engine, root, args.members)
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for argv, _ in argvs]
    ports = [port for _, port in argvs]
    for port in ports:
        wait_port(port)
    leader = cluster_leader(ports) if args.members > 1 else 0
    return procs, ports, leader


def sample(args, procs, ports, leader):
    """Per (role, thread name): [cpu ns, voluntary, involuntary, threads] over the window,
    and the commits in it."""
    before = [thread_times(p.pid) for p in procs]
    first = counter(ports[leader])
    time.sleep(args.window)
    last = counter(ports[leader])
    after = [thread_times(p.pid) for p in procs]
    table = collections.defaultdict(lambda: [0, 0, 0, 0])
    for i, (a, b) in enumerate(zip(before, after)):
        role = "node" if args.members == 1 else "leader" if i == leader else "follower"
        for tid, (name, cpu, vol, invol) in b.items():
            if tid in a:
                row = table[(role, name)]
                row[0] += cpu - a[tid][1]
                row[1] += vol - a[tid][2]
                row[2] += invol - a[tid][3]
                row[3] += 1
    return table, last - first


def report(args, table, commits):
    print("%s, %d member(s), paced %d/s over %d connections through the leader; "
          "%d commits in a %.0f-s window" % (args.engine, args.members, args.rate,
                                             args.connections, commits, args.window))
    print()
    print("| role | thread | threads | CPU µs / commit | voluntary / commit | involuntary / commit |")
    print("|---|---|---:|---:|---:|---:|")
    total = [0, 0, 0]
    for (role, name), (cpu, vol, invol, n) in sorted(table.items(),
                                                     key=lambda kv: (kv[0][0], -kv[1][0])):
        if cpu == 0 and vol == 0 and invol == 0:
            continue
        total = [total[0] + cpu, total[1] + vol, total[2] + invol]
        print("| %s | %s | %d | %.1f | %.2f | %.2f |" % (
            role, name, n, cpu / 1e3 / commits, vol / commits, invol / commits))
    print("| all | all | | **%.1f** | **%.2f** | **%.2f** |" % (
        total[0] / 1e3 / commits, total[1] / commits, total[2] / commits))
    if args.members > 2:
        print("\n(each follower row sums the %d followers' threads of that name)" % (args.members - 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine")
    p.add_argument("--loadgen", default=os.path.join(ROOT, "target", "release", "loadgen"))
    p.add_argument("--members", type=int, default=3, choices=[1, 3, 5])
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--window", type=float, default=4.0, help="seconds sampled")
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="commit-profile-")
    procs = []
    try:
        procs, ports, leader = start(args, root)
        run_s = args.window + 4
        load = subprocess.Popen(
            [args.loadgen, "-r", "tcp:127.0.0.1:%d" % ports[leader], "--lane", ADD,
             "--rate", str(args.rate), "-c", str(args.connections), "-d", "%gs" % run_s,
             "--warmup", "1s", "--out", os.path.join(root, "loadgen")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)  # warm-up and the first second of the measured run
        table, commits = sample(args, procs, ports, leader)
        if load.wait(timeout=run_s + 30) != 0:
            sys.exit("loadgen failed (exit %d)" % load.returncode)
        if commits <= 0:
            sys.exit("no commits in the window")
        report(args, table, commits)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
