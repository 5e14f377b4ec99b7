"""The history checker (history.py) proves it can fail: each bad history below must be
reported with the violation it contains, each good one accepted, and on thousands of small
random histories its verdict must equal a brute-force search over every subset and order of
the adds. Pure logic: no engine, no network."""

import itertools
import random

import pytest

from history import LOST, MISSING, NOT_EXECUTED, OK, UNDETERMINED, UNKNOWN, Op, check


def ok(client, invoke, complete, value):
    return Op(client, 1, invoke, complete, OK, value)


def undetermined(client, invoke, complete, outcome=UNKNOWN):
    return Op(client, 1, invoke, complete, outcome)


def refused(client, invoke, complete):
    return Op(client, 1, invoke, complete, NOT_EXECUTED)


def sequential(n):
    """n adds one after the other, values 1..n."""
    return [ok("a", 2 * i, 2 * i + 1, i + 1) for i in range(n)]


BAD = {
    # The add invoked at 6, after 5 was acknowledged, saw a counter of 2: a stale state
    # (a deposed leader answering from its own log).
    "stale read": ([ok("a", 0, 1, 1), ok("b", 0.5, 5, 5), undetermined("u", 0, 2),
                    undetermined("v", 0, 2), ok("c", 6, 7, 3)], {1: 5}, "real-time order"),
    "duplicated value": ([ok("a", 0, 2, 1), ok("b", 1, 3, 2), ok("c", 1, 3, 2)], {1: 2},
                         "acknowledged twice"),
    # 5 was acknowledged; every member ends at 4.
    "lost ack": (sequential(5), {1: 4, 2: 4, 3: 4}, "not in the final counter"),
    # One member missed an acknowledged add the others have.
    "members disagree": (sequential(5), {1: 5, 2: 4, 3: 5}, "final counters differ"),
    # Two acks, one refusal, final 3: the refused add was applied.
    "not-executed applied": ([ok("a", 0, 1, 1), refused("b", 0, 1.5), ok("a", 2, 3, 2)],
                             {1: 3}, "(c)"),
    # b's add was acknowledged with 7 before a's was invoked, yet a's got 6.
    "real-time inversion": ([undetermined("u%d" % i, 0, 9) for i in range(5)]
                            + [ok("b", 0, 1, 7), ok("a", 2, 3, 6)], {1: 7}, "real-time"),
    # Value 2 was applied, but the only undetermined add was invoked after 3 was
    # acknowledged: it cannot have come before it.
    "undetermined add before an earlier ack": (
        [ok("a", 0, 1, 1), ok("b", 0, 2, 3), undetermined("u", 3, 4)], {1: 3}, "value 2"),
    # Two holes, two undetermined adds, but one of them was invoked after 3 completed, so
    # only one can take a hole below 3.
    "too few candidates for the low holes": (
        [ok("a", 0, 1, 1), undetermined("u", 0, 9), ok("b", 0, 2, 4),
         undetermined("v", 3, 9), ok("c", 5, 6, 5)], {1: 5}, "value 3"),
}

GOOD = {
    "empty": ([], {1: 0, 2: 0, 3: 0}),
    "all refused": ([refused("a", 0, 1), refused("b", 0, 3.5)], {1: 0, 2: 0}),
    "sequential": (sequential(50), {1: 50, 2: 50, 3: 50}),
    # Overlapping adds may take any order among themselves.
    "concurrent any order": ([ok("a", 0, 5, 3), ok("b", 1, 4, 1), ok("c", 2, 3, 2),
                              ok("a", 6, 7, 4)], {1: 4}),
    # Each hole taken by an undetermined add of any kind; a refusal applies nothing.
    "holes explained": ([ok("a", 0, 1, 1), undetermined("u", 0.5, 9, LOST),
                         undetermined("v", 0.5, None, MISSING), refused("w", 0, 4),
                         ok("b", 5, 6, 4), undetermined("x", 7, 8), ok("c", 9, 10, 5)],
                        {1: 5, 2: 5}),
    # An undetermined add not applied at all.
    "undetermined not applied": ([ok("a", 0, 1, 1), undetermined("u", 1, 2),
                                  ok("a", 3, 4, 2)], {1: 2}),
    # An "outcome unknown" answered at 1 may still commit later: after b's add, invoked at 2.
    "unknown applied after its reply": ([undetermined("u", 0, 1), ok("b", 2, 3, 1)], {1: 2}),
    # A lost add (its member killed at 0.1) committed by a new leader after three later
    # acks.
    "lost applied late": ([undetermined("k", -1, 0.1, LOST)] + sequential(3)
                          + [ok("c", 10, 11, 5)], {1: 5}),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_history_is_reported(name):
    ops, finals, expected = BAD[name]
    verdict = check(ops, finals)
    assert not verdict.ok, "%s accepted: %s" % (name, verdict)
    assert any(expected in v for v in verdict.violations), verdict.violations
    assert str(verdict).startswith(("VIOLATION", "no final counter")), str(verdict)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_history_is_accepted(name):
    ops, finals = GOOD[name]
    verdict = check(ops, finals)
    assert verdict.ok, "%s rejected: %s" % (name, verdict.violations)
    assert str(verdict).startswith("linearizable")


def brute_force(ops, final):
    """Linearizable by definition: some subset of the undetermined adds, with every OK one,
    `final` in all, in some order respecting real time, each OK add at its value."""
    oks = [op for op in ops if op.outcome == OK]
    open_ended = [op for op in ops if op.outcome in UNDETERMINED]
    if final < len(oks):
        return False
    for chosen in itertools.combinations(open_ended, final - len(oks)):
        for order in itertools.permutations(oks + list(chosen)):
            if all(op.value == i + 1 for i, op in enumerate(order) if op.outcome == OK) and \
                    all(not _before(order[j], order[i])
                        for i in range(len(order)) for j in range(i + 1, len(order))):
                return True
    return False


def _before(a, b):
    """a completed (for good) before b was invoked. An undetermined add never completes."""
    return a.outcome == OK and a.complete < b.invoke


def random_history(rng, n):
    """n adds, about half of them from a real linearizable run (so both verdicts occur)."""
    ops, counter, clock = [], 0, 0.0
    for i in range(n):
        clock += rng.choice([0.0, 0.5, 1.0])
        invoke = clock
        complete = invoke + rng.choice([0.2, 1.0, 2.5])
        outcome = rng.choice([OK, OK, OK, NOT_EXECUTED, UNKNOWN, LOST])
        applied = outcome == OK or (outcome in UNDETERMINED and rng.random() < 0.5)
        counter += applied
        value = counter if outcome == OK else None
        ops.append(Op("c%d" % i, 1, invoke, complete, outcome, value))
    if rng.random() < 0.5:  # damage it: another value, or another final counter
        targets = [op for op in ops if op.outcome == OK]
        if targets and rng.random() < 0.7:
            rng.choice(targets).value = rng.randint(1, n + 1)
        else:
            counter = rng.randint(0, n + 1)
    return ops, counter


def test_agrees_with_brute_force_on_small_random_histories():
    rng = random.Random(16)
    verdicts = {True: 0, False: 0}
    for _ in range(3000):
        ops, final = random_history(rng, rng.randint(1, 6))
        expected = brute_force(ops, final)
        got = check(ops, {1: final})
        assert got.ok == expected, (ops, final, got.violations)
        verdicts[expected] += 1
    assert min(verdicts.values()) > 500, verdicts  # both verdicts well exercised
