"""What the cluster tests share (test_cluster.py: kill -9 on loopback; test_faults.py:
pauses and partitions between network namespaces): a negotiated QMP connection, engine
members and clusters that restart with exactly the same flags, and clients pipelining
`counter-add` that record every operation for the history checker (history.py).

A member listens where its cluster says: on loopback with ports from `free_port` by default,
or at a fixed address inside a network namespace (`net`, see netns.py), started through the
net's wrapper command (`ip netns exec NS`). Every wait is bounded.
"""

import collections
import json
import os
import select
import shutil
import socket
import tempfile
import threading
import time

from conftest import Engine, free_port
from history import LOST, MISSING, NOT_EXECUTED, OK, UNKNOWN, Op

FORM_TIMEOUT = 15.0  # three debug engines electing a first leader
CONVERGE_TIMEOUT = 15.0  # a restarted member replaying its log and catching up
REPLY_TIMEOUT = 15.0  # > 3 s leader patience + 3 s commit deadline, with room for a slow CI
PROGRESS_TIMEOUT = 15.0  # for a run to reach its next milestone
WINDOW = 16  # counter-adds in flight per client connection
ADD = {"delta": 1}


def address(addr):
    """(host, port) from (host, port) or a bare loopback port."""
    return addr if isinstance(addr, tuple) else ("127.0.0.1", addr)


class Qmp:
    """A negotiated QMP connection (oob enabled) with line framing, to `addr`: (host, port)
    or a loopback port."""

    def __init__(self, addr, timeout=5.0):
        self.sock = socket.create_connection(address(addr), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        greeting = self.read(timeout)
        assert greeting is not None, "no greeting within %.0f s" % timeout
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


def ask(addr, cmd, oob=True, timeout=5.0):
    """`cmd`'s return value from the member at `addr`, on a connection of its own."""
    q = Qmp(addr, timeout)
    try:
        reply = q.call(cmd, oob=oob, timeout=timeout)
    finally:
        q.close()
    assert "return" in reply, reply
    return reply["return"]


class Member:
    """One engine of a cluster (or the durable single node): fixed address and data dir, so a
    restart uses exactly the same flags. `wrap` prefixes the command line (`ip netns exec
    NS`, which execs the engine: the process is the engine's)."""

    def __init__(self, workdir, node, cluster_arg, snapshot_every=None, host="127.0.0.1",
                 port=None, wrap=()):
        self.node = node
        self.workdir = workdir
        self.host = host
        self.port = port or free_port()
        self.wrap = tuple(wrap)
        self.data = os.path.join(workdir, "data-%d" % node)
        self.args = ["--data", self.data]
        if cluster_arg:
            self.args += ["--cluster", cluster_arg, "--node", str(node)]
        if snapshot_every:
            self.args += ["--snapshot-every", str(snapshot_every)]
        self.engine = None

    @property
    def addr(self):
        return (self.host, self.port)

    def start(self):
        self.engine = Engine(qmp=["tcp:%s:%d" % self.addr], workdir=self.workdir,
                             extra_args=self.args, wrap=self.wrap)
        return self

    def kill9(self):
        self.engine.kill()

    def alive(self):
        return self.engine is not None and self.engine.returncode is None

    def status(self):
        return ask(self.addr, "query-cluster")

    def log_text(self):
        """Everything this start of the engine wrote to stderr (its tracing log)."""
        with open(self.engine.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def counter(self):
        return ask(self.addr, "query-counter")["value"]


class Cluster:
    """`size` members on loopback, or, with `net` (netns.Network), member N at `net.host(N)`
    in its own namespace, QMP on `net.QMP_PORT` and Raft on `net.RAFT_PORT`."""

    def __init__(self, size=3, snapshot_every=None, net=None):
        self.workdir = tempfile.mkdtemp(prefix="cluster-")
        nodes = range(1, size + 1)
        if net is None:
            raft = {n: ("127.0.0.1", free_port()) for n in nodes}
            where = {n: {} for n in nodes}
        else:
            raft = {n: (net.host(n), net.RAFT_PORT) for n in nodes}
            where = {n: {"host": net.host(n), "port": net.QMP_PORT, "wrap": net.wrap(n)}
                     for n in nodes}
        arg = ",".join("%d=tcp:%s:%d" % (n, h, p) for n, (h, p) in raft.items())
        self.members = {n: Member(self.workdir, n, arg, snapshot_every, **where[n])
                        for n in nodes}

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


class Tally:
    """What the clients of one run saw, shared between their threads: counts, and every
    operation as a history.Op (`ops`) for the history checker."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.acked = []  # (value, sent_at, answered_at)
        self.not_executed = 0
        self.unknown = 0
        self.lost = 0  # in flight on a connection that died
        self.sent = 0
        self.odd = []  # replies that are none of the above (must stay empty)
        self.missing = 0  # no reply on a live connection before the drain bound

    @classmethod
    def merged(cls, *tallies):
        both = cls()
        for t in tallies:
            with t.lock:
                both.ops += t.ops
                both.acked += t.acked
                both.odd += t.odd
                for field in ("not_executed", "unknown", "lost", "sent", "missing"):
                    setattr(both, field, getattr(both, field) + getattr(t, field))
        return both

    def record(self, op):
        """One operation's outcome (called with `lock` held)."""
        self.ops.append(op)
        if op.outcome == OK:
            self.acked.append((op.value, op.invoke, op.complete))
        else:
            field = {NOT_EXECUTED: "not_executed", UNKNOWN: "unknown", LOST: "lost",
                     MISSING: "missing"}[op.outcome]
            setattr(self, field, getattr(self, field) + 1)

    def values(self):
        with self.lock:
            return [v for v, _, _ in self.acked]

    def count(self):
        with self.lock:
            return len(self.acked)

    def history(self):
        with self.lock:
            return list(self.ops)

    def summary(self, name, final):
        return ("%s: sent %d, acks %d, not-executed %d, unknown %d, lost %d, final %d (k = %d)"
                % (name, self.sent, len(self.acked), self.not_executed, self.unknown,
                   self.lost, final, final - len(self.acked)))


class AddClient(threading.Thread):
    """Pipelines `counter-add` (up to `window` in flight, unique ids; at most `rate` sends a
    second if given) to `members[0]`; if the connection dies, records what was in flight as
    lost and moves on to the next member (none left: stops). After `stop` it sends nothing
    more and drains the replies owed (bounded). A request unanswered for `reply_timeout` on a
    live connection is recorded as missing, with the rest in flight, and fails the client."""

    def __init__(self, name, members, tally, stop, window=WINDOW, limit=None,
                 reply_timeout=REPLY_TIMEOUT, rate=None):
        super().__init__(name=name, daemon=True)
        self.reply_timeout = reply_timeout
        self.members = collections.deque(members)
        self.tally = tally
        self.stop = stop
        self.window = window
        self.period = 1.0 / rate if rate else 0.0
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
        while self.members:
            try:
                conn = Qmp(self.members[0].addr)
            except OSError:
                self.members.popleft()  # that member is down: try the next
                continue
            if self._serve(conn, self.members[0].node):
                return
            self.reconnects += 1
            self.members.popleft()  # the dead member: not tried again

    def _done_sending(self):
        return self.stop.is_set() or (self.limit is not None and self.next_id >= self.limit)

    def _send_due(self, conn, node, in_flight, next_send):
        """Sends while the window and the rate allow; returns the next send time."""
        while not self._done_sending() and len(in_flight) < self.window:
            now = time.monotonic()
            if now < next_send:
                break
            rid = "%s-%d" % (self.name, self.next_id)
            self.next_id += 1
            in_flight[rid] = now
            conn.send({"execute": "counter-add", "arguments": ADD, "id": rid})
            with self.tally.lock:
                self.tally.sent += 1
            next_send = max(next_send + self.period, now) if self.period else now
        return next_send

    def _serve(self, conn, node):
        """Runs one connection; True when the run is over, False if the connection died."""
        in_flight = {}  # id -> invoke time
        next_send = time.monotonic()
        drain_deadline = None
        try:
            while True:
                next_send = self._send_due(conn, node, in_flight, next_send)
                now = time.monotonic()
                wait = self.reply_timeout
                if self._done_sending():
                    if not in_flight:
                        return True
                    drain_deadline = drain_deadline or now + self.reply_timeout
                    wait = drain_deadline - now
                    if wait <= 0:
                        self._close_out(in_flight, node, MISSING, None)
                        return True
                elif len(in_flight) < self.window:
                    wait = min(wait, max(0.0, next_send - now))
                reply = conn.read(wait)
                if reply is not None:
                    self._record(reply, in_flight, node)
                elif in_flight and time.monotonic() - min(in_flight.values()) > self.reply_timeout:
                    n = len(in_flight)
                    self._close_out(in_flight, node, MISSING, None)
                    raise AssertionError("%s: no reply for %.0f s with %d in flight"
                                         % (self.name, self.reply_timeout, n))
        except (EOFError, ConnectionError):
            self._close_out(in_flight, node, LOST, time.monotonic())
            return False
        finally:
            conn.close()

    def _close_out(self, in_flight, node, outcome, at):
        with self.tally.lock:
            for rid, invoke in in_flight.items():
                self.tally.record(Op(self.name, node, invoke, at, outcome, desc=rid))
        in_flight.clear()

    def _record(self, reply, in_flight, node):
        if "event" in reply:
            return
        now = time.monotonic()
        invoke = in_flight.pop(reply.get("id"), None)
        with self.tally.lock:
            if invoke is None:
                self.tally.odd.append(("unknown or duplicate id", reply))
            elif "return" in reply:
                self.tally.record(Op(self.name, node, invoke, now, OK, reply["return"]["value"]))
            else:
                desc = reply.get("error", {}).get("desc", "")
                outcome = (NOT_EXECUTED if desc.startswith("not executed")
                           else UNKNOWN if desc.startswith("outcome unknown") else None)
                if outcome is None:
                    self.tally.odd.append(("unexpected reply", reply))
                else:
                    self.tally.record(Op(self.name, node, invoke, now, outcome, desc=desc))


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
