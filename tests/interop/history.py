"""Histories of `counter-add {"delta": 1}` operations and an exact linearizability checker
for them.

Every operation a client sends is recorded as an `Op`: the member it was sent to, its invoke
time (taken just before the send), its completion time (just after its reply was read, or
when its connection died), both `time.monotonic()` in one process, and its outcome:

- `OK`: acknowledged with the counter after the add (`value`);
- `NOT_EXECUTED`: the engine answered `not executed: ...`: certainly not applied;
- `UNKNOWN`: the engine answered `outcome unknown: ...`: applied or not;
- `LOST`: in flight on a connection that died: applied or not;
- `MISSING`: no reply on a live connection by the end of the run: applied or not (a liveness
  failure, which the scenarios report; for safety it is one more undetermined operation).

The last three are "undetermined". An undetermined add may take effect at any time after its
invoke, even after its error reply or its connection's death (a follower may have forwarded it
to a leader that commits it later), so its effect interval is [invoke, infinity).

# What `check` decides

The object is a single counter starting at 0; each applied add increments it and returns the
new value. Given the history and the final counter of every member, the history is
linearizable iff there is a total order of the applied adds that respects real time (if an
add completed before another was invoked, it comes first) in which the add at position p
returned p, where the applied adds are every `OK` one, none of the `NOT_EXECUTED` ones and any
subset of the undetermined ones, and there are exactly `final` of them. `check` decides it
exactly, in O(n log n), in three parts:

(a) **Linearizable.** In such an order an `OK` add sits at position = its value, so:
    - the acknowledged values are distinct and in 1..final;
    - real time: if `OK` add A completed before `OK` add B was invoked, value(A) < value(B)
      (checked for every pair by one sweep: B's value must exceed the largest value
      completed before B's invoke);
    - every position h in 1..final that no `OK` add holds (a "hole") is taken by a distinct
      undetermined add U whose interval allows it: U must come after every add that
      completed before U was invoked, so h > lo(U), the largest acknowledged value completed
      before invoke(U); nothing bounds it from above (its effect interval is open-ended).
    The last point is a bipartite matching between holes and undetermined adds in which each
    add accepts the holes above a threshold. Such threshold families are nested, so Hall's
    condition reduces to a count: a matching exists iff for every hole h, the undetermined
    adds with lo < h are at least as many as the holes <= h. The sweep checks exactly that
    (it is the greedy matching: take holes in ascending order, give each any unused add
    already available) and names the first hole that fails.
    These conditions are also sufficient: put each `OK` add at its value and the matched
    undetermined adds at their holes; `OK`-`OK` pairs respect real time by the sweep, an
    undetermined add follows every add that completed before its invoke because h > lo(U),
    and nothing has to precede an undetermined add's invoke since it never completes. The
    unmatched undetermined adds and the `NOT_EXECUTED` ones are the adds not applied.
(b) **Nothing acknowledged lost.** Every member's final counter is the same, and no
    acknowledged value exceeds it (reported before (a)'s matching, which it would also fail).
(c) **"Not executed" never applied.** final - acks <= undetermined adds: more applied adds
    than the acknowledged and undetermined ones together means a refused add (or an add
    twice) was applied. Reported by itself, since (a)'s matching would fail with it too.

The clock arguments are conservative: an invoke is recorded before the bytes leave and a
completion after the reply is read, so "A completed before B was invoked" in the record
implies it in reality, and a violation reported is a real one.

Pure logic, no I/O: the clients of cluster_harness.py record the ops (`Tally.ops`), the
scenarios (test_faults.py, test_cluster.py) check them, and test_history.py feeds it bad and
good histories.
"""

import bisect
import dataclasses

OK = "ok"
NOT_EXECUTED = "not-executed"
UNKNOWN = "unknown"
LOST = "lost"
MISSING = "missing"
UNDETERMINED = (UNKNOWN, LOST, MISSING)


@dataclasses.dataclass
class Op:
    """One `counter-add` as a client saw it. `complete` is None for `MISSING` (no reply by
    the end); `value` is set for `OK` only."""

    client: str
    node: int
    invoke: float
    complete: float | None
    outcome: str
    value: int | None = None
    desc: str = ""

    def wait(self):
        """Seconds from invoke to the reply (or the connection's death); None if missing."""
        return None if self.complete is None else self.complete - self.invoke


@dataclasses.dataclass
class Verdict:
    violations: list
    acks: int
    not_executed: int
    undetermined: int
    final: int | None

    @property
    def ok(self):
        return not self.violations

    def __str__(self):
        if self.final is None:
            return "no final counter: " + "; ".join(self.violations)
        applied = self.final - self.acks
        head = ("%d acks, %d not executed, %d undetermined of which %d applied, final %d"
                % (self.acks, self.not_executed, self.undetermined, applied, self.final))
        if self.ok:
            return "linearizable (" + head + ")"
        return "VIOLATION (%s): %s" % (head, "; ".join(self.violations[:5]))


def check(ops, finals):
    """Checks `ops` against `finals` (member -> its final counter); see the module doc."""
    oks = [op for op in ops if op.outcome == OK]
    refused = sum(op.outcome == NOT_EXECUTED for op in ops)
    undetermined = [op for op in ops if op.outcome in UNDETERMINED]
    odd = [op for op in ops if op.outcome not in (OK, NOT_EXECUTED) + UNDETERMINED]
    violations = ["unknown outcome %r of %s" % (op.outcome, op.client) for op in odd[:3]]
    if len(set(finals.values())) != 1:
        return Verdict(violations + ["final counters differ: %r" % finals], len(oks), refused,
                       len(undetermined), None)
    final = next(iter(finals.values()))
    violations += _distinct_in_range(oks, final)
    violations += _real_time(oks)
    if final - len(oks) > len(undetermined):
        violations.append("(c) %d adds applied without an ack, only %d undetermined: a "
                          "not-executed add (or one add twice) was applied"
                          % (final - len(oks), len(undetermined)))
    elif not violations:
        violations += _holes_matched(oks, undetermined, final)
    return Verdict(violations, len(oks), refused, len(undetermined), final)


def _distinct_in_range(oks, final):
    found, seen = [], {}
    for op in oks:
        if op.value in seen:
            found.append("(a) value %d acknowledged twice (%s and %s)"
                         % (op.value, seen[op.value].client, op.client))
        seen[op.value] = op
        if op.value > final:
            found.append("(b) acknowledged value %d (%s) is not in the final counter %d"
                         % (op.value, op.client, final))
        elif op.value < 1:
            found.append("(a) acknowledged value %d (%s) below 1" % (op.value, op.client))
    return found


def _real_time(oks):
    """Every OK add's value exceeds every value acknowledged before it was invoked."""
    by_completion = sorted(oks, key=lambda op: op.complete)
    found, i, best = [], 0, None
    for op in sorted(oks, key=lambda op: op.invoke):
        while i < len(by_completion) and by_completion[i].complete < op.invoke:
            if best is None or by_completion[i].value > best.value:
                best = by_completion[i]
            i += 1
        if best is not None and best.value >= op.value:
            found.append("(a) real-time order: %s got %d at %.3f, yet %s invoked later "
                         "(%.3f) got %d" % (best.client, best.value, best.complete, op.client,
                                            op.invoke, op.value))
    return found


def _holes_matched(oks, undetermined, final):
    """Each unacknowledged value h in 1..final taken by a distinct undetermined add U with
    lo(U) < h, lo(U) being the largest value acknowledged before U was invoked (module doc:
    the greedy matching, exact because the admissible sets are nested)."""
    done = sorted((op.complete, op.value) for op in oks)
    completions = [c for c, _ in done]
    prefix_max, best = [], 0
    for _, value in done:
        best = max(best, value)
        prefix_max.append(best)

    def lo(op):
        k = bisect.bisect_left(completions, op.invoke)  # acks completed strictly before
        return prefix_max[k - 1] if k else 0

    thresholds = sorted(lo(op) for op in undetermined)
    acked = {op.value for op in oks}
    used = 0
    for hole in (v for v in range(1, final + 1) if v not in acked):
        available = bisect.bisect_left(thresholds, hole)  # adds with lo < hole
        if available <= used:
            return ["(a) value %d was applied but no undetermined add can explain it: the "
                    "%d whose interval allows it are all needed for lower values"
                    % (hole, available)]
        used += 1
    return []
