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
- every member ends with the same `applied` index and the same counter;
- the history of every add (invoke, completion, outcome) is linearizable (history.py).

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

The members, the recording clients and the waits live in cluster_harness.py (shared with the
partition and pause tests of test_faults.py). The engine is target/debug/ooblane (or
$ENGINE_BIN), loadgen target/debug/loadgen (or $LOADGEN_BIN). Every wait is bounded; every
process is killed at teardown.
"""

import collections
import json
import os
import signal
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

import history
from cluster_harness import (ADD, CONVERGE_TIMEOUT, REPLY_TIMEOUT, AddClient, Cluster, Member,
                             Qmp, Tally, finish, wait_for_acks)
from conftest import ROOT

LOADGEN_BIN = os.environ.get("LOADGEN_BIN", os.path.join(ROOT, "target", "debug", "loadgen"))

SNAPSHOT_ADDS = 1500  # > 1,000 entries kept after a snapshot + 100 between snapshots


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        yield c.start()
    finally:
        c.teardown()


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
    verdict = history.check(tally.history(), {"final": final})
    assert verdict.ok, str(verdict)
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
        clients.append(AddClient("m%d" % n, [cluster.members[x] for x in order], tally, stop))
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
        client = AddClient("d", [node], tally, stop, window=32)
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
        q = Qmp(node.addr)
        assert q.call("quit") == {"return": {}, "id": "c-quit"}
        q.close()
        assert node.engine.proc.wait(timeout=15) == 0, node.engine.stderr_text()
        node.engine.kill()
        node.start()
        assert node.counter() == final
        q = Qmp(node.addr)
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
    q = Qmp(leader.addr)
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
    conn = Qmp(survivor.addr)
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
        # And on until the leader has dropped the entries after the lagging member's last
        # (openraft keeps entries a replication stream may still send: see wait_purged_past).
        tally, stop = Tally(), threading.Event()
        client = AddClient("s", [leader], tally, stop, window=1)
        client.start()
        wait_for_acks(tally, SNAPSHOT_ADDS, [client], timeout=60)
        seen = wait_purged_past(leader, lagging.node, [client])
        finish([client], stop)
        assert tally.count() >= SNAPSHOT_ADDS and tally.lost == 0, tally.summary("snapshot", -1)
        lagging.start()
        final = cluster.wait_converged()
        check_accounting(tally, final)
        snapshots = {m.node: m.status()["snapshot"] for m in cluster.live()}
        assert snapshots[leader.node] is not None, snapshots
        assert "snapshot installed" in lagging.log_text(), (
            "the restarted member caught up without a snapshot: %r" % snapshots)
        print("\nsnapshot catch-up: %d acks, final %d on every member, the restarted one by a "
              "snapshot; snapshot index by member %r; the leader's log at the restart: %s"
              % (tally.count(), final, snapshots, seen))
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
        on_paused = AddClient("p", [paused], tally, stop, reply_timeout=30)
        on_paused.start()
        busy, busy_stop = Tally(), threading.Event()
        on_leader = AddClient("l", [leader], busy, busy_stop, window=1)
        try:
            wait_for_acks(tally, 100, [on_paused])
            paused.engine.proc.send_signal(signal.SIGSTOP)
            try:
                on_leader.start()
                wait_for_acks(busy, SNAPSHOT_ADDS, [on_leader], timeout=60)
                seen = wait_purged_past(leader, paused.node, [on_leader])
                finish([on_leader], busy_stop)
            finally:
                paused.engine.proc.send_signal(signal.SIGCONT)
            assert busy.count() >= SNAPSHOT_ADDS and busy.lost == 0, busy.summary("busy", -1)
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
        both = Tally.merged(tally, busy)
        check_accounting(both, final)
        snapshots = {m.node: m.status()["snapshot"] for m in cluster.live()}
        installed = "snapshot installed" in paused.log_text()
        print("\n" + both.summary("follower paused past a snapshot", final)
              + "; snapshot index by member %r; the leader's log at the resume: %s"
              "; the paused one installed a snapshot: %s" % (snapshots, seen, installed))
        assert installed, "the paused member caught up from the log: the case is not tested"
    finally:
        cluster.teardown()


def wait_purged_past(leader, node, clients, timeout=60):
    """Waits (bounded) until `leader` no longer holds the entry after the last one it knows
    on `node`, so that `node` can only catch up by a snapshot. openraft keeps entries while a
    replication stream to a paused (or killed) member is in flight (measured: the first purge
    of a pause came about 4 s into it, whatever the number of entries), so a count of adds is
    not enough.
    Returns what the leader reported last."""
    deadline = time.monotonic() + timeout
    while True:
        status = leader.status()
        matched = [m["matched"] for m in status["members"] if m["node"] == node][0]
        seen = "purged %s, member %d matched %s" % (status["purged"], node, matched)
        if status["purged"] is not None and matched is not None and status["purged"] > matched:
            return seen
        for c in clients:
            assert c.is_alive() and c.error is None, "client %s stopped: %r" % (c.name, c.error)
        assert time.monotonic() < deadline, "the leader kept the paused member's entries: " + seen
        time.sleep(0.1)
