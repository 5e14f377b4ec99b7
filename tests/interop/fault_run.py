"""One fault scenario's run against a three-member cluster in network namespaces (netns.py),
and the figures taken from what it recorded (test_faults.py asserts them).

A `FaultRun` starts the cluster (cluster_harness.Cluster), six recording clients (two per
member, each pipelining `counter-add` at a moderate rate with a few requests outstanding; a
client whose member dies moves to the next member) and one `Probe` per member: every
PROBE_PERIOD, on a connection of its own, OOB `ping` then OOB `query-cluster` (role, term,
leader), each timed. The scenario then injects faults and heals them:

- `PAUSE`: SIGSTOP, healed by SIGCONT (a hung process: its connections stay open);
- `CUT`: the member cut off from both peers by nftables rules, healed by removing them
  (clients still reach it);
- `KILL`: `kill -9`, healed by a restart with the same flags and data.

`end()` waits for an agreed leader, stops the clients (they drain what they are owed, bounded),
waits until every member has applied the same log, reads every member's counter, checks the
history (history.py) and returns the `Figures`.

How the figures are read from the record:

- a member's view at time t is its latest `query-cluster` answer, if at most FRESH_S old (a
  paused or dead member stops answering and so stops counting);
- **failover**: from the fault's start to the first moment every member on the majority side
  names the same leader, itself on the majority side and saying it leads (for a follower's
  fault the leader simply stays: about 0);
- **majority ack**: from that moment to the first acknowledgement by a majority-side member;
- **leaderless after heal**: the longest stretch, from the heal on (until the next fault
  starts, or the end), in which no member that says it leads is named by a majority;
- **longest wait**: invoke to reply over every request, except those a paused member held
  while it was stopped (a frozen process cannot answer; they are reported apart);
- **OOB**: per member, the slowest probe answer, except while that member was paused or dead.
"""

import dataclasses
import math
import signal
import threading
import time

import history
from cluster_harness import (PROGRESS_TIMEOUT, AddClient, Cluster, Qmp, Tally,
                             wait_for_acks)

PAUSE, CUT, KILL = "paused", "partitioned", "killed"

PROBE_PERIOD = 0.05  # the OOB probe rate: 20/s per member, a leaderless window to 50 ms
PROBE_TIMEOUT = 10.0  # > a 4-s pause: a stopped member answers its probe once resumed
FRESH_S = 0.25  # five probe periods: a view older than this no longer speaks for its member
CLIENTS_PER_MEMBER = 2
CLIENT_WINDOW = 4  # "a few requests outstanding" per client
# Adds/s per client, 240/s in all. Measured on the 2-core machine with debug engines (what CI
# runs): with 4 in flight per client the cluster tops out near 380/s (each add waits for the
# leader's and a follower's fsync, p50 about 50 ms, so 24 in flight bound the rate), the
# leader's process using about half a core; at 240/s the engines use about 80% of one core
# in all and the Python clients 5%, leaving room for a failover's extra work.
CLIENT_RATE = 40.0
WARMUP_ACKS = 100  # every client served a few times before the first fault


@dataclasses.dataclass
class Fault:
    kind: str
    node: int
    role: str  # "leader", "follower", or "leaderless" if no leader was agreed at the start
    start: float
    heal: float | None = None
    back: float | None = None  # heal done: resumed, rules removed, or restarted and listening

    def describe(self):
        return "%s member %d %s" % (self.role, self.node, self.kind)


class Probe(threading.Thread):
    """OOB `ping` and `query-cluster` on `member` every PROBE_PERIOD, on its own connection;
    reconnects while the member is down. `answers`: (command, sent, answered); `views`:
    (answered, role, term, leader)."""

    def __init__(self, member, stop):
        super().__init__(name="probe-%d" % member.node, daemon=True)
        self.member = member
        self.stop = stop
        self.answers = []
        self.views = []
        self.error = None

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the scenario
            self.error = e

    def _run(self):
        conn, next_at = None, time.monotonic()
        while not self.stop.is_set():
            conn = conn or self._connect()
            if conn is not None:
                try:
                    self._probe(conn)
                except (EOFError, OSError):
                    conn.close()
                    conn = None
            next_at = max(next_at + PROBE_PERIOD, time.monotonic())
            self.stop.wait(next_at - time.monotonic())
        if conn is not None:
            conn.close()

    def _connect(self):
        try:
            return Qmp(self.member.addr, timeout=1.0)
        except (OSError, EOFError):
            return None  # down (killed, restarting): tried again next period

    def _probe(self, conn):
        for cmd in ("ping", "query-cluster"):
            sent = time.monotonic()
            conn.send({"exec-oob": cmd, "id": cmd})
            reply = conn.read(PROBE_TIMEOUT)
            while reply is not None and "event" in reply:
                reply = conn.read(PROBE_TIMEOUT)
            answered = time.monotonic()
            if reply is None:
                raise AssertionError("member %d: no answer to OOB %s for %.0f s"
                                     % (self.member.node, cmd, PROBE_TIMEOUT))
            assert reply.get("id") == cmd and "return" in reply, reply
            self.answers.append((cmd, sent, answered))
            if cmd == "query-cluster":
                r = reply["return"]
                self.views.append((answered, r["role"], r["term"], r["leader"]))


class FaultRun:
    """A cluster under load with probes; see the module doc."""

    def __init__(self, net):
        self.net = net
        self.cluster = Cluster(net=net)
        self.tally = Tally()
        self.stop = threading.Event()
        self.probes_stop = threading.Event()
        self.faults = []
        self.clients = []
        self.probes = []

    def start(self):
        self.cluster.start()
        members = self.cluster.members
        nodes = sorted(members)
        self.probes = [Probe(members[n], self.probes_stop) for n in nodes]
        for i, n in enumerate(nodes):
            order = [members[x] for x in nodes[i:] + nodes[:i]]  # own member first
            for k in range(CLIENTS_PER_MEMBER):
                self.clients.append(AddClient("m%d%s" % (n, "abcdefgh"[k]), order, self.tally,
                                              self.stop, window=CLIENT_WINDOW,
                                              rate=CLIENT_RATE))
        for t in self.probes + self.clients:
            t.start()
        wait_for_acks(self.tally, WARMUP_ACKS, self.clients)
        return self

    def leader(self):
        return self.cluster.wait_for_leader()

    def follower(self):
        leader = self.leader()
        return min((m for m in self.cluster.live() if m is not leader), key=lambda m: m.node)

    def viewed_leader(self):
        """The leader a majority of the probes' fresh views name now (None: none)."""
        now = time.monotonic()
        views = {p.member.node: p.views[-1][1:] for p in self.probes
                 if p.views and now - p.views[-1][0] <= FRESH_S}
        return Figures.agreed(views, sorted(self.cluster.members), everyone=False)

    def inject(self, kind, member):
        leader = self.viewed_leader()
        role = "leaderless" if leader is None else "leader" if leader == member.node else "follower"
        fault = Fault(kind, member.node, role, time.monotonic())
        self.faults.append(fault)
        if kind == PAUSE:
            member.engine.proc.send_signal(signal.SIGSTOP)
        elif kind == CUT:
            self.net.cut(member.node)
        else:
            member.kill9()
        return fault

    def heal(self, fault):
        member = self.cluster.members[fault.node]
        fault.heal = time.monotonic()
        if fault.kind == PAUSE:
            member.engine.proc.send_signal(signal.SIGCONT)
        elif fault.kind == CUT:
            self.net.heal()
        else:
            member.start()
        fault.back = time.monotonic()

    def hold(self, seconds):
        """Lets the run go on for `seconds` (a fault's length, the time after a heal)."""
        time.sleep(seconds)

    def end(self):
        """Stops the load once a leader is agreed; the figures of the whole run."""
        self.cluster.wait_for_leader(timeout=PROGRESS_TIMEOUT)
        self.stop.set()
        for c in self.clients:
            c.join(c.reply_timeout + 5)
        self.probes_stop.set()
        for p in self.probes:
            p.join(PROBE_TIMEOUT + 5)
        self.cluster.wait_converged()
        finals = {m.node: m.counter() for m in self.cluster.live()}
        errors = ["%s: %s" % (t.name, t.error) for t in self.clients + self.probes
                  if t.error is not None or t.is_alive()]
        errors += ["unexpected reply %r" % (r,) for r in self.tally.odd[:3]]
        ops = self.tally.history()
        return Figures(ops, history.check(ops, finals), self.faults, self.probes, errors)

    def teardown(self):
        """Heals what is still broken and kills everything (also after a failure)."""
        self.stop.set()
        self.probes_stop.set()
        for f in self.faults:
            member = self.cluster.members[f.node]
            if f.kind == PAUSE and member.alive():
                member.engine.proc.send_signal(signal.SIGCONT)
        self.net.heal()
        self.cluster.teardown()


class Figures:
    """What one run measured (module doc), per fault and over the whole run."""

    def __init__(self, ops, verdict, faults, probes, errors):
        self.ops = ops
        self.verdict = verdict
        self.faults = faults
        self.errors = errors
        self.nodes = sorted(p.member.node for p in probes)
        self.answers = {p.member.node: p.answers for p in probes}
        self.timeline = sorted((t, p.member.node, (role, term, leader))
                               for p in probes for t, role, term, leader in p.views)

    # -- views ----------------------------------------------------------------------------

    def _sweep(self):
        """(t, views fresh at t) at every probe answer, in time order."""
        latest = {}
        for t, node, view in self.timeline:
            latest[node] = (t, view)
            yield t, {n: v for n, (at, v) in latest.items() if t - at <= FRESH_S}

    @staticmethod
    def agreed(views, side, everyone):
        """The leader named by every member of `side` (everyone=True) or by a majority of
        `side`, itself in `side` and saying it leads; None if there is none."""
        named = [views[n][2] for n in side if n in views]
        for leader in set(named) - {None}:
            says = leader in side and leader in views and views[leader][0] == "leader"
            count = named.count(leader)
            if says and (count == len(side) if everyone else 2 * count > len(side)):
                return leader
        return None

    def majority(self, fault):
        return [n for n in self.nodes if n != fault.node]

    def failover(self, fault):
        """Seconds from the fault to a leader agreed by the whole majority side (inf: none
        before the heal)."""
        side = self.majority(fault)
        for t, views in self._sweep():
            if fault.start <= t <= fault.heal and \
                    self.agreed(views, side, everyone=True) is not None:
                return t - fault.start
        return math.inf

    def majority_ack(self, fault):
        """Seconds from the majority side's leader to its first acknowledgement."""
        led = fault.start + self.failover(fault)
        side = set(self.majority(fault))
        acks = [op.complete for op in self.ops if op.outcome == history.OK and op.node in side
                and op.complete >= led]
        return min(acks) - led if acks else math.inf

    def acks_during(self, fault):
        """(majority side, cut-off side) acknowledgements while the fault lasted."""
        inside = [op for op in self.ops if op.outcome == history.OK
                  and fault.start <= op.complete <= fault.heal]
        cut = sum(op.node == fault.node for op in inside)
        return len(inside) - cut, cut

    def leaderless_after_heal(self, fault):
        """The longest stretch without an agreed leader from the heal until the next fault
        (or the end), counted from the heal."""
        later = [f.start for f in self.faults if f.start > fault.start]
        until = min(later) if later else math.inf
        longest, since = 0.0, None
        for t, views in self._sweep():
            if self.agreed(views, self.nodes, everyone=False) is None:
                since = t if since is None else since
                continue
            if since is not None and t > fault.heal and since < until:
                longest = max(longest, t - max(since, fault.heal))
            since = None
        if since is not None and since < until:
            longest = max(longest, self.timeline[-1][0] - max(since, fault.heal))
        return longest

    # -- requests and OOB -----------------------------------------------------------------

    def _held_by_pause(self, node, start, end):
        return any(f.kind == PAUSE and f.node == node and start <= f.heal and end >= f.start
                   for f in self.faults)

    def _down(self, node, start, end):
        return any(f.kind in (PAUSE, KILL) and f.node == node and start <= f.back
                   and end >= f.start for f in self.faults)

    def longest_wait(self):
        """(seconds, op) over every request but those a paused member held."""
        waits = [(math.inf if op.complete is None else op.complete - op.invoke, op)
                 for op in self.ops
                 if not self._held_by_pause(op.node, op.invoke, op.complete or math.inf)]
        return max(waits, key=lambda w: w[0], default=(0.0, None))

    def held_by_pause(self):
        """The longest wait of the requests a paused member held (reported only)."""
        held = [op.complete - op.invoke for op in self.ops if op.complete is not None
                and self._held_by_pause(op.node, op.invoke, op.complete)]
        return max(held, default=0.0)

    def oob_max(self):
        """Per member, the slowest OOB answer while it was neither paused nor dead."""
        return {n: max((a - s for _, s, a in self.answers[n] if not self._down(n, s, a)),
                       default=math.inf) for n in self.nodes}

    # -- report ---------------------------------------------------------------------------

    def fault_line(self, fault):
        major, cut = self.acks_during(fault)
        return ("%s %.1f s: acks majority %d / cut-off %d; failover %s; first majority ack "
                "%s after it; leaderless after heal %.2f s"
                % (fault.describe(), fault.heal - fault.start, major, cut,
                   seconds(self.failover(fault)), seconds(self.majority_ack(fault)),
                   self.leaderless_after_heal(fault)))

    def summary_line(self, name):
        """One line for the scenario: the fault's figures (the worst over several), then the
        run's."""
        if len(self.faults) == 1:
            return "%s: %s; %s" % (name, self.fault_line(self.faults[0]), self.run_line())
        acks = [self.acks_during(f) for f in self.faults]
        worst = [max(fig(f) for f in self.faults) for fig in
                 (self.failover, self.majority_ack, self.leaderless_after_heal)]
        return ("%s: %d faults: acks majority %d / cut-off %d; worst failover %s; worst "
                "first majority ack %s after it; worst leaderless after heal %.2f s; %s"
                % (name, len(self.faults), sum(a for a, _ in acks), sum(c for _, c in acks),
                   seconds(worst[0]), seconds(worst[1]), worst[2], self.run_line()))

    def describe(self, op):
        """An op, with its invoke time from the start of the nearest fault."""
        fault = min(self.faults, key=lambda f: abs(op.invoke - f.start))
        return "%s from member %d (%s), sent %+.2f s from a fault's start%s" % (
            op.outcome, op.node, op.client, op.invoke - fault.start,
            ": " + op.desc if op.outcome in (history.NOT_EXECUTED, history.UNKNOWN) else "")

    def run_line(self):
        wait, op = self.longest_wait()
        where = " (%s)" % self.describe(op).split(":")[0] if op is not None else ""
        oob = ", ".join("%d: %s" % (n, millis(v)) for n, v in self.oob_max().items())
        held = self.held_by_pause()
        return ("longest wait %s%s%s; OOB max %s; %s"
                % (seconds(wait), where,
                   "; held by the paused member %s" % seconds(held) if held else "", oob,
                   self.verdict))


def seconds(v):
    return "none" if v == math.inf else "%.2f s" % v


def millis(v):
    return "none" if v == math.inf else "%.1f ms" % (1000 * v)
