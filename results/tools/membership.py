#!/usr/bin/env python3
"""Membership at run time under load, and what a linearizable read costs (issue 17), in one
run: writes OUT/ (never overwritten) with the samples, the events, loadgen's run folders,
figures.json, summary.md and, with matplotlib, membership.png.

    results/tools/membership.py OUT_DIR [--engine PATH] [--loadgen PATH] [--quick]
                                [--wait-handover]

1. **Membership** (time zero = start of loadgen's measured window):
   three members on loopback (`--threads 1 --no-pin`, one data directory each) are filled to
   a 10,000-entry log (loadgen adds at 1,000/s through the leader, one command an entry or
   nearly; the default `--snapshot-every 10000` applies), then loaded with `counter-add` at
   5,000/s through every member (8 connections, 500-ms interval log). At t=5 s a fourth
   member joins (`--join`); at t=20 s a follower is removed (`cluster-remove-member` sent
   in-band to the other original follower, which forwards it), at t=30 s the leader (sent to
   the leader itself); the load ends at t=40 s. A removed member is asked one `counter-add`
   and one in-band `query-counter` (its refusals are recorded), then stopped (SIGTERM;
   SIGKILL if it has not exited 5 s later), as an operator would: loadgen's connections to
   it move to another member. `--wait-handover` stops it only once the other members name a
   leader (for the leader: once leadership has moved). Throughout, every member alive is
   asked `query-cluster` and OOB `query-counter` every 100 ms (samples.jsonl), and a witness
   client per member sends one `counter-add` every 50 ms and records each reply's text
   (witness.jsonl): loadgen counts errors but keeps no text. At the end the remaining
   members must converge (same applied index and counter), and the counter must account for
   every acknowledged add (nothing lost or applied twice).
2. **Reads** on a fresh 3-member cluster, through one follower, 1,000/s a lane, 4
   connections: `counter-add`, in-band `query-counter` (a linearizable read) and OOB
   `query-counter`, first all three together, then each alone.

`--quick`: a 1,000-entry log and a 12-s timeline (join at 2 s, removals at 6 and 9 s), reads
for 3 s: a check that the script works, not a measurement. Release binaries by default:
target/release/ooblane and loadgen. Stdlib only; the plot (membership_plot.py) needs
matplotlib. Every process is stopped at the end; data directories live in a temporary folder.
"""

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import membership_figures
from engine_proc import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADD = 'name=add,cmd=counter-add,args={"delta":1}'
READ = "name=read,cmd=query-counter"
OOB_READ = "name=oob-read,cmd=query-counter,oob"
ENGINE_FLAGS = ["--threads", "1", "--no-pin"]  # five engines and loadgen share 2 cores
SAMPLE_EVERY = 0.1  # query-cluster period: the 100 ms
WITNESS_EVERY = 0.05  # one witness add per member every 50 ms: 20/s, next to 5,000/s
FILL_RATE = 1000  # low enough that the executor proposes one command an entry, or nearly
LOAD_CONNECTIONS = 8
LOADGEN_LEAD = 2.0  # seconds loadgen gets to connect before its time zero (--start-at)
SEED = 17  # loadgen's remote shuffle, so which connection starts where is repeatable
REPLY_TIMEOUT = 15.0  # a removal's reply: 3-s deadlines on the engine's side, and room
STOP_GRACE = 5.0  # SIGTERM to exit: a member exits in well under a second when it can


@dataclass(frozen=True)
class Plan:
    """The run's sizes and timeline (seconds from time zero)."""

    fill: int
    warmup: float
    join: float
    remove_follower: float
    remove_leader: float
    end: float
    read_s: float


FULL = Plan(fill=10_000, warmup=2, join=5, remove_follower=20, remove_leader=30, end=40,
            read_s=10)
QUICK = Plan(fill=1_000, warmup=1, join=2, remove_follower=6, remove_leader=9, end=12,
             read_s=3)


class Qmp:
    """A negotiated QMP connection (oob enabled) to a loopback port, line framed."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_id = 0
        self.read(timeout)
        self.send({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}})
        self.read(timeout)

    def send(self, msg):
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def read(self, timeout):
        """The next message; TimeoutError if none within `timeout`, EOFError at the end."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, cmd, args=None, oob=False, timeout=5.0):
        """One request and its reply (events skipped)."""
        self.next_id += 1
        msg = {"exec-oob" if oob else "execute": cmd, "id": self.next_id}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.read(max(0.001, deadline - time.monotonic()))
            if "event" not in reply and reply.get("id") == msg["id"]:
                return reply

    def close(self):
        self.sock.close()


def ask(port, cmd, args=None, oob=False, timeout=5.0):
    """One request on a connection of its own: the whole reply."""
    q = Qmp(port, timeout)
    try:
        return q.call(cmd, args, oob, timeout)
    finally:
        q.close()


class Member:
    """One engine: its id, member-to-member and QMP ports, data directory and process."""

    def __init__(self, node, workdir):
        self.node = node
        self.raft_port = free_port()
        self.qmp_port = free_port()
        self.data = os.path.join(workdir, "data-%d" % node)
        self.log_path = os.path.join(workdir, "member-%d.log" % node)
        self.proc = None
        self.stopping = False

    @property
    def remote(self):
        return "tcp:127.0.0.1:%d" % self.qmp_port

    def argv(self, engine, cluster_arg, join):
        argv = [engine, "--cluster", cluster_arg, "--node", str(self.node), "--data", self.data,
                "--qmp", self.remote] + ENGINE_FLAGS
        return argv + (["--join"] if join else [])

    def start(self, argv):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def running(self):
        """Alive and not on its way out (removed, or being stopped)."""
        return self.alive() and not self.stopping

    def status(self):
        return ask(self.qmp_port, "query-cluster", oob=True)["return"]

    def counter(self):
        return ask(self.qmp_port, "query-counter", oob=True)["return"]["value"]

    def stop(self, grace=STOP_GRACE):
        """SIGTERM (the engine answers what it has read, then exits), SIGKILL after `grace`
        seconds; says which, and how long it took."""
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return {"exited": "before"}
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=grace)
            return {"exited": "SIGTERM", "rc": rc, "after_s": round(time.monotonic() - started, 3)}
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return {"exited": "SIGKILL", "after_s": round(time.monotonic() - started, 3),
                    "why": "still running %g s after SIGTERM" % grace}


class Cluster:
    """Members on loopback, in a temporary folder of their own."""

    def __init__(self, run, name):
        self.run = run
        self.workdir = os.path.join(run.tmp, name)
        os.makedirs(self.workdir)
        self.members = {}

    def cluster_arg(self, nodes):
        return ",".join("%d=tcp:127.0.0.1:%d" % (n, self.members[n].raft_port)
                        for n in sorted(nodes))

    def start(self, size=3):
        for n in range(1, size + 1):
            self.members[n] = Member(n, self.workdir)
        arg = self.cluster_arg(self.members)
        for m in self.members.values():
            self.spawn(m, arg, join=False)
        for m in self.members.values():
            wait_port(m.qmp_port)
        return self.wait_for_leader()

    def spawn(self, member, cluster_arg, join):
        argv = member.argv(self.run.engine, cluster_arg, join)
        self.run.log_command(argv)
        member.start(argv)

    def add(self, node):
        """Member `node`, started with --join and every member so far plus itself."""
        self.members[node] = Member(node, self.workdir)
        self.spawn(self.members[node], self.cluster_arg(self.members), join=True)
        return self.members[node]

    def running(self):
        return [m for m in self.members.values() if m.running()]

    def leader(self):
        """The running member that says it leads, or None."""
        for m in self.running():
            try:
                if m.status()["role"] == "leader":
                    return m
            except (OSError, EOFError, ValueError, KeyError):
                continue
        return None

    def wait_for_leader(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise TimeoutError("no leader within %.0f s" % timeout)

    def wait_converged(self, timeout=20.0):
        """(converged, [(node, applied, counter)]) once every running member agrees."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            seen = [(m.node, m.status()["applied"], m.counter()) for m in self.running()]
            if len({(a, c) for _, a, c in seen}) == 1:
                return True, seen
            time.sleep(0.1)
        return False, seen

    def stop_all(self):
        for m in self.members.values():
            m.stop()


class Sampler(threading.Thread):
    """Every SAMPLE_EVERY, `query-cluster` and OOB `query-counter` on every running member, on
    one connection each (reopened when lost); rows timed from the suite's time zero."""

    def __init__(self, suite, cluster):
        super().__init__(daemon=True)
        self.suite, self.cluster = suite, cluster
        self.rows, self.conns = [], {}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            started = time.monotonic()
            for m in list(self.cluster.members.values()):
                if m.alive():  # a removed member too, until it has exited
                    self.sample(m)
            self.done.wait(max(0.0, SAMPLE_EVERY - (time.monotonic() - started)))

    def sample(self, m):
        try:
            q = self.conns.get(m.node) or Qmp(m.qmp_port, timeout=1.0)
            self.conns[m.node] = q
            t = self.suite.now()
            status = q.call("query-cluster", oob=True, timeout=2.0)["return"]
            counter = q.call("query-counter", oob=True, timeout=2.0)["return"]["value"]
            self.rows.append({"t": round(t, 4), "node": m.node, "counter": counter, **status})
        except (OSError, EOFError, ValueError, KeyError):
            self.conns.pop(m.node, None)


class Witness(threading.Thread):
    """One `counter-add` at a time through one member, every WITNESS_EVERY, each reply's
    text recorded: what loadgen counts as an error, said in words. Ends when its member
    stops, its connection ends, or `done` is set."""

    def __init__(self, suite, member, done):
        super().__init__(daemon=True)
        self.suite, self.member, self.done = suite, member, done
        self.rows = []

    def run(self):
        try:
            wait_port(self.member.qmp_port)
            q = Qmp(self.member.qmp_port)
        except (OSError, EOFError, TimeoutError) as e:
            self.record(self.suite.now(), None, "no connection: %s" % e)
            return
        while not self.done.is_set() and not self.member.stopping:
            if not self.one(q):
                return
            self.done.wait(WITNESS_EVERY)
        q.close()

    def one(self, q):
        sent = self.suite.now()
        try:
            reply = q.call("counter-add", {"delta": 1}, timeout=REPLY_TIMEOUT)
        except (OSError, EOFError) as e:
            self.record(sent, self.suite.now() - sent,
                        "no reply: %s" % (str(e) or type(e).__name__))
            return False
        result = "ok" if "return" in reply else reply.get("error", {}).get("desc", str(reply))
        self.record(sent, self.suite.now() - sent, result)
        return True

    def record(self, sent, took, result):
        self.rows.append({"t": round(sent, 4), "node": self.member.node, "result": result,
                          "ms": None if took is None else round(took * 1000, 2)})


class Suite:
    """The run: its output folder, binaries, plan, time zero and event log."""

    def __init__(self, out, engine, loadgen, plan, wait_handover):
        self.out, self.engine, self.loadgen_bin, self.plan = out, engine, loadgen, plan
        self.wait_handover = wait_handover
        self.tmp = tempfile.mkdtemp(prefix="membership-")
        self.zero = time.monotonic()
        self.events, self.facts = [], {}
        os.makedirs(out)

    def now(self):
        return time.monotonic() - self.zero

    def sleep_until(self, t):
        time.sleep(max(0.0, t - self.now()))

    def event(self, name, **detail):
        t = self.now()
        self.events.append({"t": round(t, 4), "event": name, **detail})
        print("t=%7.3f  %s %s" % (t, name, json.dumps(detail)), flush=True)
        return t

    def log_command(self, argv):
        with open(os.path.join(self.out, "commands.txt"), "a") as f:
            f.write(" ".join(argv) + "\n")

    def loadgen(self, name, args, save=True, background=False):
        """loadgen with `args`; its report in OUT/name.txt, its run folder OUT/name/."""
        argv = [self.loadgen_bin, "--spin", "off", "--label", name] + args
        argv += ["-o", os.path.join(self.out, name)] if save else ["--no-save"]
        self.log_command(argv)
        with open(os.path.join(self.out, name + ".txt"), "a") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        if not background:
            proc.wait(timeout=600)
        return proc

    def write_json(self, name, rows):
        with open(os.path.join(self.out, name), "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


# -- 1. membership under load ---------------------------------------------------------------

def fill(suite, cluster, leader):
    """Adds through the leader at FILL_RATE until its log holds `plan.fill` entries."""
    last = leader.status()["last-log"]
    while last < suite.plan.fill:
        secs = max(1, math.ceil((suite.plan.fill - last) / (0.9 * FILL_RATE)))
        suite.loadgen("fill", ["-r", leader.remote, "-c", "1", "-d", "%ds" % secs,
                               "--warmup", "0s", "--lane", "%s,rate=%d" % (ADD, FILL_RATE)],
                      save=False)
        last = leader.status()["last-log"]
    converged, seen = cluster.wait_converged()
    status = leader.status()
    suite.facts["fill"] = {"leader": leader.node, "last-log": status["last-log"],
                           "snapshot": status["snapshot"], "counter": seen[0][2],
                           "converged": converged, "members": seen}


def start_load(suite, cluster, joiner_port):
    """5,000 adds/s through every member (the joiner's address included: connections that
    start there, or fail over there, find it once it listens); sets the suite's time zero."""
    plan = suite.plan
    start_at = time.time() + LOADGEN_LEAD
    suite.zero = time.monotonic() + LOADGEN_LEAD + plan.warmup
    remotes = [a for m in cluster.members.values() for a in ("-r", m.remote)]
    remotes += ["-r", "tcp:127.0.0.1:%d" % joiner_port]
    args = remotes + ["-c", str(LOAD_CONNECTIONS), "--seed", str(SEED),
                      "-d", "%gs" % plan.end, "--warmup", "%gs" % plan.warmup,
                      "--interval", "500ms", "--drain", "5s", "--expect-errors",
                      "--start-at", "%.3f" % start_at, "--lane", ADD + ",rate=5000"]
    return suite.loadgen("load", args, background=True)


def join(suite, cluster, node, port):
    """Starts member `node` with --join on the QMP port loadgen already knows."""
    member = Member(node, cluster.workdir)
    member.qmp_port = port
    cluster.members[node] = member
    cluster.spawn(member, cluster.cluster_arg(cluster.members), join=True)
    suite.event("join-start", node=node)
    return member


def remove(suite, cluster, node, via, label):
    """`cluster-remove-member` sent in-band to `via`, timed. If it succeeded, a thread of its
    own asks the removed member one write and one in-band read (its refusals recorded), then
    stops it, so the timeline goes on whatever the removed member does; returns that thread."""
    q = Qmp(via.qmp_port)
    sent = suite.event(label + "-request", node=node, via=via.node)
    try:
        reply = q.call("cluster-remove-member", {"node": node}, timeout=REPLY_TIMEOUT)
    except (OSError, EOFError) as e:
        reply = {"no-reply": str(e) or type(e).__name__}
    finally:
        q.close()
    took = suite.now() - sent
    suite.event(label + "-reply", node=node, via=via.node, reply=reply,
                latency_ms=round(took * 1000, 2))
    if "return" not in reply:
        return None
    member = cluster.members[node]
    member.stopping = True  # no more samples: it is on its way out
    thread = threading.Thread(target=retire, args=(suite, member, label, cluster),
                              daemon=True)
    thread.start()
    return thread


def retire(suite, member, label, cluster):
    probe_removed(suite, member, label)
    if suite.wait_handover:
        leader = cluster.wait_for_leader()
        suite.event(label + "-leader-seen", leader=leader.node)
    suite.event(label + "-sigterm", node=member.node)
    suite.event(label + "-stopped", node=member.node, **member.stop())


def probe_removed(suite, member, label):
    asked = {}
    for cmd, args in (("counter-add", {"delta": 1}), ("query-counter", None)):
        try:
            asked[cmd] = ask(member.qmp_port, cmd, args, timeout=REPLY_TIMEOUT)
        except (OSError, EOFError) as e:
            asked[cmd] = {"no-reply": str(e) or type(e).__name__}
    suite.event(label + "-probe", node=member.node, replies=asked)


def pick_follower(cluster, leader):
    """(removed, via): the lowest original follower, and another original member that stays."""
    originals = [n for n in (1, 2, 3) if n != leader.node and cluster.members[n].running()]
    return cluster.members[originals[0]], cluster.members[originals[1]]


def membership(suite):
    plan = suite.plan
    cluster = Cluster(suite, "membership")
    leader = cluster.start()
    suite.event("formed", leader=leader.node)
    fill(suite, cluster, leader)
    joiner_port = free_port()
    load = start_load(suite, cluster, joiner_port)
    sampler, done = Sampler(suite, cluster), threading.Event()
    witnesses = [Witness(suite, m, done) for m in cluster.members.values()]
    for w in [sampler] + witnesses:
        w.start()
    try:
        retiring = scenario(suite, cluster, joiner_port, witnesses, done)
        load.wait(timeout=plan.end + 60)
        suite.event("load-end", loadgen_exit=load.returncode)
        done.set()
        for w in witnesses + retiring:
            w.join(timeout=REPLY_TIMEOUT + 5)
        converged, seen = cluster.wait_converged()
        suite.event("converged" if converged else "not-converged", members=seen)
        suite.facts["end"] = {"converged": converged, "members": seen}
    finally:
        done.set()
        sampler.done.set()
        sampler.join(timeout=5)
        if load.poll() is None:
            load.kill()
        cluster.stop_all()
        save_membership_data(suite, cluster, sampler, witnesses)


def scenario(suite, cluster, joiner_port, witnesses, done):
    plan = suite.plan
    suite.sleep_until(plan.join)
    joiner = join(suite, cluster, 4, joiner_port)
    witnesses.append(Witness(suite, joiner, done))
    witnesses[-1].start()
    suite.sleep_until(plan.remove_follower)
    leader = cluster.wait_for_leader()
    removed, via = pick_follower(cluster, leader)
    retiring = [remove(suite, cluster, removed.node, via, "remove-follower")]
    suite.sleep_until(plan.remove_leader)
    leader = cluster.wait_for_leader()
    retiring.append(remove(suite, cluster, leader.node, leader, "remove-leader"))
    new = cluster.wait_for_leader()
    suite.event("new-leader", node=new.node)
    return [t for t in retiring if t is not None]


def save_membership_data(suite, cluster, sampler, witnesses):
    suite.write_json("samples.jsonl", sampler.rows)
    suite.write_json("witness.jsonl", [r for w in witnesses for r in w.rows])
    suite.write_json("events.jsonl", suite.events)
    logs = os.path.join(suite.out, "logs")
    os.makedirs(logs, exist_ok=True)
    for m in cluster.members.values():
        if os.path.exists(m.log_path):
            shutil.copy(m.log_path, logs)


# -- 2. reads through a follower ------------------------------------------------------------

READ_RUNS = [("reads-mixed", [ADD, READ, OOB_READ]), ("reads-add", [ADD]),
             ("reads-read", [READ]), ("reads-oob", [OOB_READ])]


def reads(suite):
    cluster = Cluster(suite, "reads")
    try:
        leader = cluster.start()
        follower = next(m for m in cluster.running() if m is not leader)
        suite.facts["reads"] = {"leader": leader.node, "follower": follower.node}
        warm = "%gs" % suite.plan.warmup
        for name, lanes in READ_RUNS:
            args = ["-r", follower.remote, "-c", "4", "-d", "%gs" % suite.plan.read_s,
                    "--warmup", warm, "--server-pid", str(follower.proc.pid)]
            for lane in lanes:
                args += ["--lane", lane + ",rate=1000"]
            suite.loadgen(name, args)
    finally:
        cluster.stop_all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--engine", default=os.path.join(ROOT, "target", "release", "ooblane"))
    parser.add_argument("--loadgen", default=os.path.join(ROOT, "target", "release", "loadgen"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--wait-handover", action="store_true",
                        help="stop a removed member only once the others name a leader")
    opts = parser.parse_args()
    if os.path.exists(opts.out):
        sys.exit("%s exists; results are never overwritten" % opts.out)
    suite = Suite(opts.out, opts.engine, opts.loadgen, QUICK if opts.quick else FULL,
                  opts.wait_handover)
    try:
        membership(suite)
        reads(suite)
    finally:
        with open(os.path.join(suite.out, "facts.json"), "w") as f:
            json.dump({"plan": suite.plan.__dict__, "wait_handover": suite.wait_handover,
                       **suite.facts}, f, indent=1)
        shutil.rmtree(suite.tmp, ignore_errors=True)
    membership_figures.write(suite.out)
    try:
        import membership_plot
    except ImportError:
        print("no matplotlib: run results/tools/membership_plot.py %s with it" % suite.out)
        return
    membership_plot.plot(suite.out)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
