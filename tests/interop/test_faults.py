"""Jepsen-style fault tests of the replicated log (issue 16): three members, each in a network
namespace of its own (netns.py), six clients pipelining `counter-add` (two per member), OOB
probes on every member, and one fault of FAULT_S at a time, then a heal and AFTER_HEAL_S more
(fault_run.py runs it and reads the figures):

    leader paused       SIGSTOP of the leader, then SIGCONT
    follower paused     the same for a follower
    leader partitioned  the leader cut off from both followers (nftables), then healed
    follower partitioned
    leader killed       kill -9 of the leader, then a restart with the same flags
    rolling partitions  each member cut off in turn, ROLLING_ROUNDS rounds

Each scenario prints one summary line (`pytest -s`): acknowledgements on the majority and on
the cut-off side during the fault, failover, how soon the majority acknowledges after it,
the longest leaderless stretch after the heal, the longest wait of any request, the slowest
OOB answer per member, and the history checker's verdict (history.py). It then asserts, all
at once so one run shows every miss: safety (the checker), and the issue's targets below.
A paused member is frozen: the requests it holds while stopped and its own OOB answers then
are left out of the bounds (the line reports the former apart); every other member, the
partitioned ones included, must keep them.

Needs root (namespaces, nftables): skipped otherwise, unless FAULTS_REQUIRED=1 (CI), which
makes that a failure; as root, a missing `ip` or `nft` fails. The engine is
target/debug/ooblane or $ENGINE_BIN. Every wait is bounded; the namespaces, the bridge and
every process go at teardown, and leftovers of a run that died are removed at the start.
"""

import os

import pytest

import netns
from fault_run import CUT, KILL, PAUSE, FaultRun, seconds

FAULT_S = 4.0  # the fault length: longer than an election and the 3-s patience
AFTER_HEAL_S = 2.5  # longer than LEADERLESS_AFTER_HEAL_S, so a longer stretch shows in full
ROLLING_ROUNDS = 2

# The targets.
MAJORITY_ACK_S = 0.5  # once a new leader exists, the majority side acknowledges adds
MAX_WAIT_S = 3.5  # no request waits longer for its answer or error
FAILOVER_S = 1.5  # after a pause, a partition or kill -9: as after kill -9 today
LEADERLESS_AFTER_HEAL_S = 2.0  # no longer stretch without a leader after a heal
# OOB answers on the parser thread in microseconds; what remains is this machine's: on the
# 2-core CI machine three debug engines, six Python clients and the probes share the cores,
# and the scheduler alone delays a thread by up to ~6 ms (results/README.md, cyclictest).
# 100 ms is two orders of magnitude above the engine's own cost and far below a failover,
# so a probe that waits on Raft, a lock or the executor still stands out.
OOB_BOUND_S = 0.1

SINGLE = {
    "leader paused": (PAUSE, "leader"),
    "follower paused": (PAUSE, "follower"),
    "leader partitioned": (CUT, "leader"),
    "follower partitioned": (CUT, "follower"),
    "leader killed": (KILL, "leader"),
}


@pytest.fixture(scope="module")
def net():
    if os.geteuid() != 0:
        why = "needs root: members run in network namespaces, partitions are nftables rules"
        if os.environ.get("FAULTS_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    missing = netns.missing_tools()
    if missing:
        pytest.fail("%s not installed (Debian iproute2, nftables)" % ", ".join(missing))
    network = netns.Network(3)
    try:
        yield network
    finally:
        network.teardown()


@pytest.fixture
def run(net):
    r = FaultRun(net)
    try:
        yield r
    finally:
        r.teardown()


@pytest.mark.parametrize("name", list(SINGLE))
def test_single_fault(run, name):
    kind, role = SINGLE[name]
    run.start()
    victim = run.leader() if role == "leader" else run.follower()
    fault = run.inject(kind, victim)
    run.hold(FAULT_S)
    run.heal(fault)
    run.hold(AFTER_HEAL_S)
    check(name, run.end())


def test_rolling_partitions(run):
    run.start()
    for _ in range(ROLLING_ROUNDS):
        for node in sorted(run.cluster.members):
            fault = run.inject(CUT, run.cluster.members[node])
            run.hold(FAULT_S)
            run.heal(fault)
            run.hold(AFTER_HEAL_S)
    check("rolling partitions", run.end())


def check(name, figures):
    """Prints the scenario's line, then asserts safety and every target at once."""
    print("\n" + figures.summary_line(name))
    if len(figures.faults) > 1:
        for f in figures.faults:
            print("    " + figures.fault_line(f))
    misses = list(figures.errors)
    if not figures.verdict.ok:
        misses.insert(0, "SAFETY: %s" % figures.verdict)
    wait, op = figures.longest_wait()
    if wait > MAX_WAIT_S:
        misses.append("a request waited %.2f s > %.1f s: %s"
                      % (wait, MAX_WAIT_S, figures.describe(op)))
    for f in figures.faults:
        for what, value, bound in (
                ("failover", figures.failover(f), FAILOVER_S),
                ("majority ack after the new leader", figures.majority_ack(f), MAJORITY_ACK_S),
                ("leaderless after heal", figures.leaderless_after_heal(f),
                 LEADERLESS_AFTER_HEAL_S)):
            if value > bound:
                misses.append("%s: %s %s > %.1f s" % (f.describe(), what, seconds(value), bound))
    for node, slowest in figures.oob_max().items():
        if slowest > OOB_BOUND_S:
            misses.append("member %d: an OOB answer took %.1f ms > %.0f ms"
                          % (node, 1000 * slowest, 1000 * OOB_BOUND_S))
    assert not misses, "%s:\n%s" % (name, "\n".join(misses))
