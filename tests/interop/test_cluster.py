"""Torture tests of the durable and replicated in-band log (`--data`, `--cluster`), in the
spirit of Open vSwitch's `tests/ovsdb-cluster.at`: real engine processes on loopback, real
`kill -9`, concurrent pipelining clients, and an account of every request afterwards.

`counter-add {"delta": 1}` returns the counter after the add, so every acknowledged value is
unique cluster-wide and the final counter says how many adds were applied. For every run:

- every request sent got exactly one reply, or was in flight on a connection that died
  ("lost with the connection"); no reply is missing on a live connection, none is duplicated;
- no acknowledged value appears twice, and each is <= the final counter;
- final counter == acknowledged + k, 0 <= k <= unknown-outcome replies + lost requests (a
  "not executed" reply must really mean not executed);
- every member ends with the same `applied` index and the same counter.

Clients whose member is killed reconnect to the next member of their list and go on (as an
OVSDB client with several remotes does); the durable single node has no other member, so its
client stops. Each run prints one summary line (run pytest with `-s` to see them).

(1) leader kill, (2) follower kill, (3) durable single node kill and restarts, (4) a minority
refuses `counter-add` with an explicit error while OOB answers at once, (5) a member stopped
for a few thousand entries catches up from the leader's snapshot, (6) loadgen with the three
remotes rides through a leader kill, (7) a follower frozen (SIGSTOP) with its client's adds in
flight while the others commit past a snapshot answers every one of them once resumed.

(7) found a bug: when the snapshot the resumed member installs covers its own waiting calls
(their entries committed by the others but not yet in its log), those entries are never
applied one by one, so the calls (and every in-band request behind them) waited forever. The
engine now fails such calls with "outcome unknown" when it installs a snapshot; the test
accepts those replies and checks the accounting as everywhere else.

The engine is target/debug/ooblane (or $ENGINE_BIN),
loadgen target/debug/loadgen (or $LOADGEN_BIN). Every wait is bounded; every process is
killed at teardown.
"""

import collections
import json
import os
import select
import signal
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import ROOT, Engine, free_port

LOADGEN_BIN = os.environ.get("LOADGEN_BIN", os.path.join(ROOT, "target", "debug", "loadgen"))

FORM_TIMEOUT = 15.0  # three debug engines electing a first leader
CONVERGE_TIMEOUT = 15.0  # a restarted member replaying its log and catching up
REPLY_TIMEOUT = 15.0  # > 3 s leader patience + 3 s commit deadline, with room for a slow CI
PROGRESS_TIMEOUT = 15.0  # for a run to reach its next milestone
WINDOW = 16  # counter-adds in flight per client connection
SNAPSHOT_ADDS = 1500  # > 1,000 entries kept after a snapshot + 100 between snapshots
ADD = {"delta": 1}


class Qmp:
    """A negotiated QMP connection (oob enabled) with line framing."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        greeting = self.read(timeout)
        assert "oob" in greeting["QMP"]["capabilities"], greeting
        self.send({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}})
        assert self.read(timeout) == {"return": {}}

    def send(self, msg):
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def read(self, timeout):
        """The next message; None if nothing came within `timeout`; EOFError at the end."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, cmd, args=None, oob=False, timeout=REPLY_TIMEOUT):
        """One request, its reply (events skipped); fails the test if none comes in time."""
        msg = {"exec-oob" if oob else "execute": cmd, "id": "c-%s" % cmd}
        if args is not None:
            msg["arguments"] = args
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.read(max(0.0, deadline - time.monotonic()))
            assert reply is not None, "no reply to %s within %.0f s" % (cmd, timeout)
            if "event" not in reply:
                assert reply.get("id") == msg["id"], reply
                return reply

    def close(self):
        self.sock.close()


def ask(port, cmd, oob=True, timeout=5.0):
    """`cmd`'s return value from the member on `port`, on a connection of its own."""
    q = Qmp(port, timeout)
    try:
        reply = q.call(cmd, oob=oob, timeout=timeout)
    finally:
        q.close()
    assert "return" in reply, reply
    return reply["return"]


class Member:
    """One engine of a cluster (or the durable single node): fixed ports and data dir, so a
    restart uses exactly the same flags."""

    def __init__(self, workdir, node, cluster_arg, snapshot_every=None):
        self.node = node
        self.workdir = workdir
        self.port = free_port()
        self.data = os.path.join(workdir, "data-%d" % node)
        self.args = ["--data", self.data]
        if cluster_arg:
            self.args += ["--cluster", cluster_arg, "--node", str(node)]
        if snapshot_every:
            self.args += ["--snapshot-every", str(snapshot_every)]
        self.engine = None

    def start(self):
        self.engine = Engine(qmp=["tcp:127.0.0.1:%d" % self.port], workdir=self.workdir,
                             extra_args=self.args)
        return self

    def kill9(self):
        self.engine.kill()

    def alive(self):
        return self.engine is not None and self.engine.returncode is None

    def status(self):
        return ask(self.port, "query-cluster")

    def log_text(self):
        """Everything this start of the engine wrote to stderr (its tracing log)."""
        with open(self.engine.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def counter(self):
        return ask(self.port, "query-counter")["value"]


class Cluster:
    def __init__(self, size=3, snapshot_every=None):
        self.workdir = tempfile.mkdtemp(prefix="cluster-")
        raft = {n: free_port() for n in range(1, size + 1)}
        arg = ",".join("%d=tcp:127.0.0.1:%d" % (n, p) for n, p in raft.items())
        self.members = {n: Member(self.workdir, n, arg, snapshot_every) for n in raft}

    def start(self):
        for m in self.members.values():
            m.start()
        self.wait_for_leader()
        return self

    def live(self):
        return [m for m in self.members.values() if m.alive()]

    def wait_for_leader(self, timeout=FORM_TIMEOUT):
        """The member every live member names as leader, once it says it leads (bounded)."""
        deadline = time.monotonic() + timeout
        statuses = []
        while time.monotonic() < deadline:
            statuses = [m.status() for m in self.live()]
            leaders = {s["leader"] for s in statuses}
            if len(leaders) == 1 and None not in leaders:
                leader = self.members[leaders.pop()]
                if leader.alive() and leader.status()["role"] == "leader":
                    return leader
            time.sleep(0.05)
        raise TimeoutError("no agreed leader within %.0f s: %r" % (timeout, statuses))

    def wait_converged(self, timeout=CONVERGE_TIMEOUT):
        """Until every live member reports the same applied index and counter (bounded);
        returns the counter."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = [(m.node, m.status()["applied"], m.counter()) for m in self.live()]
            if len({(a, c) for _, a, c in seen}) == 1:
                return seen[0][2]
            time.sleep(0.05)
        raise AssertionError("members did not converge within %.0f s: (node, applied, counter) %r"
                             % (timeout, seen))

    def teardown(self):
        for m in self.members.values():
            if m.engine is not None:
                m.engine.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        yield c.start()
    finally:
        c.teardown()


class Tally:
    """What the clients of one run saw, shared between their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = []  # (value, sent_at, answered_at)
        self.not_executed = 0
        self.unknown = 0
        self.lost = 0  # in flight on a connection that died
        self.sent = 0
        self.odd = []  # replies that are none of the above (must stay empty)
        self.missing = 0  # no reply on a live connection before the drain bound

    def values(self):
        with self.lock:
            return [v for v, _, _ in self.acked]

    def count(self):
        with self.lock:
            return len(self.acked)

    def summary(self, name, final):
        return ("%s: sent %d, acks %d, not-executed %d, unknown %d, lost %d, final %d (k = %d)"
                % (name, self.sent, len(self.acked), self.not_executed, self.unknown,
                   self.lost, final, final - len(self.acked)))


class AddClient(threading.Thread):
    """Pipelines `counter-add` (WINDOW in flight, unique ids) to `ports[0]`; if the
    connection dies, counts what was in flight as lost and moves on to the next port (none
    left: stops). After `stop` it sends nothing more and drains the replies owed (bounded)."""

    def __init__(self, name, ports, tally, stop, window=WINDOW, limit=None,
                 reply_timeout=REPLY_TIMEOUT):
        super().__init__(name=name, daemon=True)
        self.reply_timeout = reply_timeout
        self.ports = collections.deque(ports)
        self.tally = tally
        self.stop = stop
        self.window = window
        self.limit = limit  # stop by itself after this many requests
        self.next_id = 0
        self.error = None
        self.reconnects = 0

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the test, never swallowed
            self.error = e

    def _run(self):
        while self.ports:
            try:
                conn = Qmp(self.ports[0])
            except OSError:
                self.ports.popleft()  # that member is down: try the next
                continue
            if self._serve(conn):
                return
            self.reconnects += 1
            self.ports.popleft()  # the dead member: not tried again

    def _done_sending(self):
        return self.stop.is_set() or (self.limit is not None and self.next_id >= self.limit)

    def _serve(self, conn):
        """Runs one connection; True when the run is over, False if the connection died."""
        in_flight = {}  # id -> sent_at
        drain_deadline = None
        try:
            while True:
                while not self._done_sending() and len(in_flight) < self.window:
                    rid = "%s-%d" % (self.name, self.next_id)
                    self.next_id += 1
                    in_flight[rid] = time.monotonic()
                    conn.send({"execute": "counter-add", "arguments": ADD, "id": rid})
                    with self.tally.lock:
                        self.tally.sent += 1
                if self._done_sending():
                    if not in_flight:
                        return True
                    drain_deadline = drain_deadline or time.monotonic() + self.reply_timeout
                    if time.monotonic() > drain_deadline:
                        with self.tally.lock:
                            self.tally.missing += len(in_flight)
                        return True
                reply = conn.read(self.reply_timeout)
                if reply is None:
                    raise AssertionError("%s: no reply for %.0f s with %d in flight"
                                         % (self.name, self.reply_timeout, len(in_flight)))
                self._record(reply, in_flight)
        except (EOFError, ConnectionError):
            with self.tally.lock:
                self.tally.lost += len(in_flight)
            return False
        finally:
            conn.close()

    def _record(self, reply, in_flight):
        if "event" in reply:
            return
        sent_at = in_flight.pop(reply.get("id"), None)
        with self.tally.lock:
            if sent_at is None:
                self.tally.odd.append(("unknown or duplicate id", reply))
            elif "return" in reply:
                self.tally.acked.append((reply["return"]["value"], sent_at, time.monotonic()))
            else:
                desc = reply.get("error", {}).get("desc", "")
                if desc.startswith("not executed"):
                    self.tally.not_executed += 1
                elif desc.startswith("outcome unknown"):
                    self.tally.unknown += 1
                else:
                    self.tally.odd.append(("unexpected reply", reply))


def wait_for_acks(tally, at_least, clients, timeout=PROGRESS_TIMEOUT):
    deadline = time.monotonic() + timeout
    while tally.count() < at_least:
        errors = [c.error for c in clients if c.error is not None]
        assert not errors, errors
        assert time.monotonic() < deadline, "only %d of %d acks within %.0f s" % (
            tally.count(), at_least, timeout)
        time.sleep(0.02)


def finish(clients, stop):
    stop.set()
    for c in clients:
        c.join(c.reply_timeout + 5)
        assert not c.is_alive(), "client %s did not finish" % c.name
        if c.error is not None:
            raise c.error


def check_accounting(tally, final):
    """The invariants every run must keep; returns k (applied but not acknowledged)."""
    values = tally.values()
    assert tally.odd == [], tally.odd[:5]
    assert tally.missing == 0, "%d requests got no reply on a live connection" % tally.missing
    answered = len(values) + tally.not_executed + tally.unknown
    assert tally.sent == answered + tally.lost, "every request answered once or lost"
    dupes = [v for v, n in collections.Counter(values).items() if n > 1]
    assert dupes == [], "acknowledged twice: %r" % dupes[:10]
    assert max(values, default=0) <= final, "an acknowledged add is not in the final counter"
    k = final - len(values)
    assert 0 <= k <= tally.unknown + tally.lost, (
        "final %d, %d acks: %d applied without an ack, but only %d unknown + %d lost"
        % (final, len(values), k, tally.unknown, tally.lost))
    return k


def failover_seconds(tally, killed_at):
    """From the kill to the first ack of a request sent after it."""
    with tally.lock:
        after = [answered for _, sent, answered in tally.acked if sent > killed_at]
    return min(after) - killed_at if after else float("nan")


def torture(cluster, victim_role):
    """Three clients (one per member) pipeline counter-adds; `victim_role`'s member is
    killed -9 mid-run, restarted a moment later with the same flags, and the run finishes."""
    nodes = sorted(cluster.members)
    tally, stop = Tally(), threading.Event()
    clients = []
    for i, n in enumerate(nodes):
        order = nodes[i:] + nodes[:i]  # own member first, then the others
        clients.append(AddClient("m%d" % n, [cluster.members[x].port for x in order], tally, stop))
    for c in clients:
        c.start()
    try:
        wait_for_acks(tally, 300, clients)
        leader = cluster.wait_for_leader()
        if victim_role == "leader":
            victim = leader
        else:
            victim = next(m for m in cluster.live() if m is not leader)
        term_before = leader.status()["term"]
        before = tally.count()
        killed_at = time.monotonic()
        victim.kill9()
        wait_for_acks(tally, before + 300, clients)  # the survivors serve again
        victim.start()
        restarted = tally.count()
        wait_for_acks(tally, restarted + 300, clients)
    finally:
        finish(clients, stop)
    final = cluster.wait_converged()
    k = check_accounting(tally, final)
    term_after = cluster.wait_for_leader().status()["term"]
    print("\n" + tally.summary("%s kill (member %d)" % (victim_role, victim.node), final)
          + "; failover %.2f s; term %d -> %d; reconnects %d"
          % (failover_seconds(tally, killed_at), term_before, term_after,
             sum(c.reconnects for c in clients)))
    return k


def test_leader_kill_torture(cluster):
    torture(cluster, "leader")


def test_follower_kill_torture(cluster):
    torture(cluster, "follower")


def test_durable_single_node_kill_and_restarts():
    workdir = tempfile.mkdtemp(prefix="durable-")
    node = Member(workdir, 1, None)
    try:
        node.start()
        tally, stop = Tally(), threading.Event()
        client = AddClient("d", [node.port], tally, stop, window=32)
        client.start()
        try:
            wait_for_acks(tally, 500, [client])
            node.kill9()  # the client, with nowhere else to go, stops
            client.join(REPLY_TIMEOUT)
        finally:
            finish([client], stop)
        assert tally.lost <= 32, "no more than the window was in flight"
        node.start()
        final = node.counter()
        k = check_accounting(tally, final)
        print("\n" + tally.summary("durable single node kill -9", final))
        # A graceful stop and a second replay of the same log give the same state, and the
        # next add follows on from it.
        q = Qmp(node.port)
        assert q.call("quit") == {"return": {}, "id": "c-quit"}
        q.close()
        assert node.engine.proc.wait(timeout=15) == 0, node.engine.stderr_text()
        node.engine.kill()
        node.start()
        assert node.counter() == final
        q = Qmp(node.port)
        assert q.call("counter-add", ADD) == {"return": {"value": final + 1}, "id": "c-counter-add"}
        q.close()
        assert k <= tally.lost
    finally:
        if node.engine is not None:
            node.engine.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_minority_refuses_while_oob_answers(cluster, survivor_role):
    leader = cluster.wait_for_leader()
    q = Qmp(leader.port)
    assert q.call("counter-add", ADD)["return"] == {"value": 1}
    q.close()
    followers = [m for m in cluster.live() if m is not leader]
    survivor = leader if survivor_role == "leader" else followers[0]
    # A follower applies an entry once it learns it is committed (the next append or
    # heartbeat after the leader's reply): wait for that, so its counter below is exact.
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while survivor.counter() != 1:
        assert time.monotonic() < deadline, "the survivor never applied the first add"
        time.sleep(0.02)
    for m in cluster.live():
        if m is not survivor:
            m.kill9()
    conn = Qmp(survivor.port)
    started = time.monotonic()
    conn.send({"execute": "counter-add", "arguments": ADD, "id": "add"})
    oob_times, verdict, i = [], None, 0
    while verdict is None:
        assert time.monotonic() - started < 10.0, "counter-add unanswered after 10 s"
        for cmd in ("ping", "query-cluster"):
            rid = "oob-%d" % i
            i += 1
            t0 = time.monotonic()
            conn.send({"exec-oob": cmd, "id": rid})
            while True:
                reply = conn.read(2.0)
                assert reply is not None, "%s unanswered for 2 s" % cmd
                if reply.get("id") == "add":
                    verdict = reply
                    continue
                assert reply.get("id") == rid and "return" in reply, reply
                oob_times.append(time.monotonic() - t0)
                break
            if cmd == "query-cluster":
                assert reply["return"]["id"] == survivor.node
        time.sleep(0.05)
    waited = time.monotonic() - started
    conn.close()
    desc = verdict["error"]["desc"]
    assert verdict["error"]["class"] == "GenericError", verdict
    assert desc.startswith("not executed") or desc.startswith("outcome unknown"), verdict
    assert max(oob_times) < 0.5, "slowest OOB %.3f s" % max(oob_times)
    assert survivor.counter() == 1
    print("\nminority (%s survives): counter-add refused after %.2f s: %r; %d OOB replies "
          "meanwhile, slowest %.1f ms" % (survivor_role, waited, desc, len(oob_times),
                                           1000 * max(oob_times)))


def test_stopped_member_catches_up_from_a_snapshot():
    cluster = Cluster(snapshot_every=100)
    try:
        leader = cluster.start().wait_for_leader()
        lagging = next(m for m in cluster.live() if m is not leader)
        lagging.kill9()
        # One add in flight, so one log entry each (a window would batch several adds per
        # entry): more entries past the lagging member's log than the leader keeps after a
        # snapshot (openraft's max_in_snapshot_log_to_keep, 1,000, + --snapshot-every), so it
        # cannot catch up from the log alone.
        tally, stop = Tally(), threading.Event()
        client = AddClient("s", [leader.port], tally, stop, window=1, limit=SNAPSHOT_ADDS)
        client.start()
        client.join(60)
        finish([client], stop)
        assert tally.count() == SNAPSHOT_ADDS and tally.lost == 0, tally.summary("snapshot", -1)
        lagging.start()
        final = cluster.wait_converged()
        assert final == SNAPSHOT_ADDS
        check_accounting(tally, final)
        snapshots = {m.node: m.status()["snapshot"] for m in cluster.live()}
        assert snapshots[leader.node] is not None, snapshots
        assert "snapshot installed" in lagging.log_text(), (
            "the restarted member caught up without a snapshot: %r" % snapshots)
        print("\nsnapshot catch-up: %d acks, final %d on every member, the restarted one by a "
              "snapshot; snapshot index by member %r" % (tally.count(), final, snapshots))
    finally:
        cluster.teardown()


def test_loadgen_rides_through_a_leader_kill(cluster):
    if not os.access(LOADGEN_BIN, os.X_OK):
        pytest.fail("loadgen binary not found at %s (run `cargo build -p loadgen`)" % LOADGEN_BIN)
    leader = cluster.wait_for_leader()
    out = os.path.join(cluster.workdir, "loadgen")
    argv = [LOADGEN_BIN, "--lane", 'name=add,cmd=counter-add,args={"delta":1},rate=300',
            "-c", "3", "--warmup", "500ms", "-d", "6s", "--drain", "8s", "--seed", "1",
            "--backoff-min", "100ms", "--backoff-max", "400ms", "--expect-errors", "-o", out,
            "--no-shuffle"]
    # In order, leader first: all three connections start on the leader and move to the
    # next remote when it dies, so the reconnect counts are exact.
    ordered = [leader] + [m for m in cluster.live() if m is not leader]
    for m in ordered:
        argv += ["-r", "tcp:127.0.0.1:%d" % m.port]
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # 0.5 s warm-up + 2 s measured: the kill lands mid-run
        assert run.poll() is None, "loadgen ended early"
        leader.kill9()
        stdout, stderr = run.communicate(timeout=40)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=5)
    assert run.returncode == 0, stdout + stderr
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    v = s["verification"]
    assert (v["duplicates"], v["unknown_ids"], v["out_of_order"], v["protocol_errors"]) == (
        0, 0, 0, 0), stdout
    remotes = {r["address"]: r["counts"] for r in s["remotes"]}
    dead = remotes["tcp:127.0.0.1:%d" % leader.port]
    next_one = remotes["tcp:127.0.0.1:%d" % ordered[1].port]
    assert (dead["sessions"], dead["disconnects"]) == (3, 3), stdout
    assert (next_one["sessions"], next_one["reconnects"]) == (3, 3), stdout
    reconnects = sum(r["reconnects"] for r in remotes.values())
    assert "3 reconnects" in stdout, stdout
    t = s["total"]["counts"]
    assert t["sent"] == t["ok"] + t["errors"] + t["failed"] + t["missing"], stdout
    assert t["missing"] == 0, stdout
    # What may fail: the requests in flight on the leader's connections at the kill (all
    # three connections are on it), and errors a survivor gives for proposals that were in
    # flight at the dead leader. Requests sent during the election wait for the new leader
    # (~1.3 s, under the 3 s patience) and succeed. At 300/s that is the traffic of the
    # leader's reply latency at the kill: 0.5 s on a loaded debug build, 150 requests (8%).
    # Bound: at most a quarter of the 1,950 sent (a 1.6 s latency) fails.
    assert t["ok"] >= 0.75 * t["sent"], stdout
    final = cluster.wait_converged()
    # Every ok reply is one add, and at most the failed and error ones added more.
    assert t["ok"] <= final <= t["ok"] + t["errors"] + t["failed"], (final, t)
    print("\nloadgen leader kill: sent %d, ok %d, errors %d, failed %d, unsent %d, "
          "reconnects %d; final counter %d" % (t["sent"], t["ok"], t["errors"], t["failed"],
                                               t["unsent"], reconnects, final))


def test_follower_paused_past_a_snapshot_answers_every_request():
    """A follower frozen (SIGSTOP) with its client's adds in flight, while the others commit
    far more than the leader keeps after a snapshot, then resumed: it catches up by a
    snapshot and still answers every request its client sent (a reply each, none lost: the
    connection never died)."""
    cluster = Cluster(snapshot_every=100)
    try:
        leader = cluster.start().wait_for_leader()
        paused = next(m for m in cluster.live() if m is not leader)
        tally, stop = Tally(), threading.Event()
        # Its replies wait out the pause (a few seconds of the leader's work).
        on_paused = AddClient("p", [paused.port], tally, stop, reply_timeout=30)
        on_paused.start()
        busy, busy_stop = Tally(), threading.Event()
        on_leader = AddClient("l", [leader.port], busy, busy_stop, window=1,
                              limit=SNAPSHOT_ADDS)
        try:
            wait_for_acks(tally, 100, [on_paused])
            paused.engine.proc.send_signal(signal.SIGSTOP)
            try:
                on_leader.start()
                on_leader.join(60)
                finish([on_leader], busy_stop)
            finally:
                paused.engine.proc.send_signal(signal.SIGCONT)
            assert busy.count() == SNAPSHOT_ADDS, busy.summary("busy", -1)
            wait_for_acks(tally, tally.count() + 100, [on_paused], timeout=15)
            finish([on_paused], stop)
        except AssertionError as e:
            # The engine bug of the module docstring: say whether a snapshot was installed.
            stop.set()
            lines = [line for line in paused.log_text().splitlines() if "snapshot" in line]
            raise AssertionError("%s\npaused member's snapshot log lines: %s; its status: %r"
                                 % (e, lines[-3:], paused.status())) from e
        final = cluster.wait_converged()
        for t in (tally, busy):
            assert t.lost == 0 and t.missing == 0 and t.odd == []
        both = Tally()
        both.acked = tally.acked + busy.acked
        both.sent = tally.sent + busy.sent
        both.not_executed = tally.not_executed + busy.not_executed
        both.unknown = tally.unknown + busy.unknown
        check_accounting(both, final)
        snapshots = {m.node: m.status()["snapshot"] for m in cluster.live()}
        installed = "snapshot installed" in paused.log_text()
        print("\n" + both.summary("follower paused past a snapshot", final)
              + "; snapshot index by member %r; the paused one installed a snapshot: %s"
              % (snapshots, installed))
        assert installed, "the paused member caught up from the log: the case is not tested"
    finally:
        cluster.teardown()
