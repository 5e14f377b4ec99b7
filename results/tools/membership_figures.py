#!/usr/bin/env python3
"""The figures of a membership run (results/tools/membership.py OUT_DIR), from what it saved:
events.jsonl, samples.jsonl, witness.jsonl, facts.json, load/ and reads-*/ (loadgen), logs/.
Writes OUT_DIR/figures.json and OUT_DIR/summary.md and prints the summary: issue 17's
targets first, each with its measured value and met or missed, then every figure, then
OUT_DIR/notes.md (hand-written, if there is one). Stdlib only.

    results/tools/membership_figures.py OUT_DIR

Commit rate: the increase of the leader's counter (sampled every 100 ms, OOB `query-counter`
on whichever member says it leads) per 500-ms bucket, interpolated at the bucket edges.
"""

import collections
import csv
import json
import os
import re
import sys

BUCKET = 0.5  # seconds: the commit rate over time, per 500 ms
BASELINE_FROM = 1.0  # the first second after time zero is left out of the baseline
JOIN_TARGET_S = 10.0  # issue 17: a member joins (votes) within 10 s ...
JOIN_LOG_ENTRIES = 10_000  # ... with a 10,000-entry log ...
JOIN_RATE = 5_000  # ... under 5,000 adds/s
READ_RATIO_TARGET = 2.0  # in-band read p50 at most 2x a replicated add's, same rate
STOP_TARGET_S = 5.0  # a removed member exits (status 0) within this long of SIGTERM


def jsonl(out, name):
    with open(os.path.join(out, name)) as f:
        return [json.loads(line) for line in f if line.strip()]


class Run:
    """Everything a membership run saved, loaded once."""

    def __init__(self, out):
        self.out = out
        self.events = jsonl(out, "events.jsonl")
        self.samples = jsonl(out, "samples.jsonl")
        self.witness = jsonl(out, "witness.jsonl")
        with open(os.path.join(out, "facts.json")) as f:
            self.facts = json.load(f)
        self.plan = self.facts["plan"]
        with open(os.path.join(out, "load", "summary.json")) as f:
            self.load = json.load(f)

    def at(self, name):
        """The first event called `name`, or None."""
        return next((e for e in self.events if e["event"] == name), None)

    def leader_samples(self):
        return [s for s in self.samples if s["role"] == "leader"]


def intervals(out, name="load"):
    """loadgen's interval log of run `name`: [(start_s, count, p50_us, p99_us)]."""
    with open(os.path.join(out, name, "intervals.csv")) as f:
        return [(float(r["start_s"]), int(r["count"]), float(r["p50_us"]), float(r["p99_us"]))
                for r in csv.DictReader(f)]


def commit_series(run):
    """[(t, counter)] from the member that said it led at each sample, in time order."""
    return sorted((s["t"], s["counter"]) for s in run.leader_samples())


def interpolate(series, t):
    for (t0, c0), (t1, c1) in zip(series, series[1:]):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
    return None


def commit_rate(run):
    """[(bucket start, commits/s)] over loadgen's measured window."""
    series = commit_series(run)
    rows, t = [], 0.0
    while t + BUCKET <= run.plan["end"] + 1e-9:
        a, b = interpolate(series, t), interpolate(series, t + BUCKET)
        if a is not None and b is not None:
            rows.append((round(t, 3), (b - a) / BUCKET))
        t += BUCKET
    return rows


def first(samples, pred):
    return next((s for s in samples if pred(s)), None)


def member(s, node):
    return next((m for m in s["members"] if m["node"] == node), None)


def join_figures(run):
    """When member 4 was listed as a learner and as a voter (the leader's view), how it
    caught up (a snapshot or the log), and the log it joined."""
    start = run.at("join-start")["t"]
    leads = [s for s in run.leader_samples() if s["t"] >= start]
    learner = first(leads, lambda s: member(s, 4) is not None)
    voter = first(leads, lambda s: (member(s, 4) or {}).get("voter"))
    before = [s for s in run.leader_samples() if s["t"] <= start]
    log = before[-1] if before else None
    own = [s for s in run.samples if s["node"] == 4]
    caught = first(own, lambda s: log is not None and (s["applied"] or 0) >= log["commit"])
    installed = snapshot_installs(run.out, 4)
    return {
        "start_t": start,
        "log_at_join": log and {k: log[k] for k in ("node", "last-log", "commit", "snapshot",
                                                     "applied", "counter")},
        "learner_t": learner and learner["t"],
        "voter_t": voter and voter["t"],
        "to_voter_s": voter and round(voter["t"] - start, 3),
        "caught_up_t": caught and caught["t"],
        "snapshot_installed": installed,
        "how": "snapshot (index %s)" % installed[0] if installed else "log",
        "first_own_sample": own and {k: own[0][k] for k in ("t", "role", "applied", "snapshot")},
    }


def snapshot_installs(out, node):
    path = os.path.join(out, "logs", "member-%d.log" % node)
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return [int(m.group(1)) for m in re.finditer(r"snapshot installed index=(\d+)", f.read())]


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def dip_figures(run, join):
    """Commit rate and loadgen's p99 before the join, and during it (join start to one
    second after it voted)."""
    rate = commit_rate(run)
    start = join["start_t"]
    end = (join["voter_t"] or start + 10) + 1.0
    base = [r for t, r in rate if BASELINE_FROM <= t and t + BUCKET <= start]
    during = [(t, r) for t, r in rate if t + BUCKET > start and t < end]
    low_t, low = min(during, key=lambda x: x[1]) if during else (None, float("nan"))
    lg = intervals(run.out)
    base_p99 = [p99 for t, _, _, p99 in lg if BASELINE_FROM <= t and t + BUCKET <= start]
    during_p99 = [p99 for t, _, _, p99 in lg if t + BUCKET > start and t < end]
    return {"window": [start, round(end, 3)], "baseline_per_s": round(mean(base)),
            "during_mean_per_s": round(mean([r for _, r in during])),
            "lowest_bucket": {"t": low_t, "per_s": round(low)},
            "lowest_pct_of_baseline": round(100 * low / mean(base), 1),
            "baseline_p99_ms": round(max(base_p99) / 1000, 2) if base_p99 else None,
            "during_p99_ms": round(max(during_p99) / 1000, 2) if during_p99 else None}


def removal_figures(run, label):
    req, rep = run.at(label + "-request"), run.at(label + "-reply")
    if req is None:
        return None
    probe = run.at(label + "-probe")
    own = [x for x in run.samples if x["node"] == req["node"] and x["t"] >= req["t"]]
    last = own[-1] if own else None
    return {"last_sample": last and {k: last[k] for k in ("t", "role", "leader", "commit",
                                                             "applied", "counter")},
            "node": req["node"], "via": req["via"], "request_t": req["t"],
            "reply_t": rep and rep["t"], "latency_ms": rep and rep["latency_ms"],
            "reply": rep and rep["reply"], "probe": probe and probe["replies"],
            "sigterm_t": (run.at(label + "-sigterm") or {}).get("t"),
            "stopped": run.at(label + "-stopped")}


def leader_change(run, old):
    """The last sample of `old` leading and the first of another member leading after it."""
    last = max((s["t"] for s in run.leader_samples() if s["node"] == old), default=None)
    new = first(sorted(run.leader_samples(), key=lambda s: s["t"]),
                lambda s: last is not None and s["t"] > last and s["node"] != old)
    return {"old": old, "last_led_t": last, "new": new and new["node"],
            "new_leads_t": new and new["t"],
            "gap_s": new and last is not None and round(new["t"] - last, 3)}


def error_figures(run):
    lane = run.load["lanes"][0]
    texts = collections.Counter()
    for w in run.witness:
        if w["result"] != "ok":
            texts[(w["node"], w["result"])] += 1
    return {"loadgen": lane["counts"], "verification": run.load["verification"],
            "remotes": run.load["remotes"], "loadgen_corrected_ms": {
                k: round(lane["corrected"][k] / 1000, 2) for k in ("p50", "p99", "p999", "max")},
            "witness_sent": len(run.witness),
            "witness_ok": sum(w["result"] == "ok" for w in run.witness),
            "witness_failures": [{"node": n, "result": r, "count": c}
                                 for (n, r), c in sorted(texts.items())]}


def accounting(run, errors):
    """Every add acknowledged is in the final counter once; the ones not acknowledged may or
    may not be."""
    end = run.facts.get("end", {})
    finals = {c for _, _, c in end.get("members", [])}
    probes = [run.at(x + "-probe") for x in ("remove-follower", "remove-leader")]
    probe_ok = sum("return" in (p["replies"]["counter-add"]) for p in probes if p)
    lg = errors["loadgen"]
    acked = lg["ok"] + errors["witness_ok"] + probe_ok
    unsure = lg["errors"] + lg["failed"] + lg["missing"] + (
        errors["witness_sent"] - errors["witness_ok"])
    added = (finals.pop() if len(finals) == 1 else None)
    delta = None if added is None else added - run.facts["fill"]["counter"]
    ok = delta is not None and acked <= delta <= acked + unsure
    return {"converged": end.get("converged"), "members": end.get("members"),
            "counter_after_fill": run.facts["fill"]["counter"], "final_counter": added,
            "added": delta, "acknowledged": acked, "not_acknowledged": unsure,
            "nothing_lost_or_doubled": ok}


def read_figures(out):
    rows = []
    for name in ("reads-mixed", "reads-add", "reads-read", "reads-oob"):
        path = os.path.join(out, name, "summary.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            s = json.load(f)
        for lane in s["lanes"]:
            c, v, k = lane["corrected"], lane["service"], lane["counts"]
            rows.append({"run": name, "lane": lane["name"], "rate": round(lane["rate"]),
                         "p50_ms": round(c["p50"] / 1000, 3), "p99_ms": round(c["p99"] / 1000, 3),
                         "service_p50_ms": round(v["p50"] / 1000, 3),
                         "service_p99_ms": round(v["p99"] / 1000, 3),
                         "bad": k["errors"] + k["failed"] + k["missing"]})
    return rows


def figures(out):
    run = Run(out)
    join = join_figures(run)
    errors = error_figures(run)
    removed_leader = removal_figures(run, "remove-leader")
    return {
        "fill": run.facts["fill"], "join": join, "dip": dip_figures(run, join),
        "remove_follower": removal_figures(run, "remove-follower"),
        "remove_leader": removed_leader,
        "leader_change": removed_leader and leader_change(run, removed_leader["node"]),
        "errors": errors, "accounting": accounting(run, errors),
        "reads": {"members": run.facts.get("reads"), "rows": read_figures(out)},
    }


def verdict(ok):
    return "**met**" if ok else "**missed**"


def target_lines(f):
    """Issue 17's targets, each with what this run measured and whether it was met."""
    j, d = f["join"], f["dip"]
    log = j["log_at_join"] or {}
    last_log = log.get("last-log") or 0
    to_voter = j["to_voter_s"]
    rows = [(
        "a member joins (votes) within %g s with a %s-entry log under %s adds/s"
        % (JOIN_TARGET_S, format(JOIN_LOG_ENTRIES, ","), format(JOIN_RATE, ",")),
        "voter %s s after it started; the log at the join: last-log %s (snapshot %s); "
        "commits before the join %s/s" % (to_voter, last_log, log.get("snapshot"),
                                          d["baseline_per_s"]),
        verdict(to_voter is not None and to_voter <= JOIN_TARGET_S
                and last_log >= JOIN_LOG_ENTRIES and d["baseline_per_s"] >= 0.95 * JOIN_RATE)),
        ("commits continue during the join (dip reported)",
         "t=%.1f–%.1f s: mean %s/s, lowest 500-ms bucket %s/s (%s%% of before); loadgen p99 "
         "worst 500 ms %s during vs %s before" % (
             d["window"][0], d["window"][1], d["during_mean_per_s"],
             d["lowest_bucket"]["per_s"], d["lowest_pct_of_baseline"],
             ms(d["during_p99_ms"]), ms(d["baseline_p99_ms"])),
         verdict(d["lowest_bucket"]["per_s"] > 0))]
    by = {(r["run"], r["lane"]): r for r in f["reads"]["rows"]}
    for label, add, read in (
            ("with adds and OOB reads, 1,000/s each", ("reads-mixed", "add"),
             ("reads-mixed", "read")),
            ("each alone at 1,000/s", ("reads-add", "add"), ("reads-read", "read"))):
        if add in by and read in by:
            ratio = by[read]["p50_ms"] / by[add]["p50_ms"]
            rows.append((
                "in-band read on a follower: p50 at most %gx a replicated `counter-add`'s at "
                "the same rate (%s)" % (READ_RATIO_TARGET, label),
                "read p50 %s, add p50 %s: %.2fx" % (ms(by[read]["p50_ms"]),
                                                     ms(by[add]["p50_ms"]), ratio),
                verdict(ratio <= READ_RATIO_TARGET)))
    oob_alone, oob_mixed = by.get(("reads-oob", "oob-read")), by.get(("reads-mixed", "oob-read"))
    if oob_alone and oob_mixed:
        rows.append((
            "OOB reads unchanged (local, never behind a read barrier)",
            "alone p50 %s, p99 %s; beside 1,000/s adds and 1,000/s in-band reads p50 %s, "
            "p99 %s" % (ms(oob_alone["p50_ms"]), ms(oob_alone["p99_ms"]),
                        ms(oob_mixed["p50_ms"]), ms(oob_mixed["p99_ms"])),
            "not compared: no build before issue 17 in this run"))
    for what in ("follower", "leader"):
        r = f["remove_" + what]
        stopped = (r or {}).get("stopped") or {}
        ok = (stopped.get("exited") == "SIGTERM" and stopped.get("rc") == 0
              and stopped.get("after_s", 1e9) <= STOP_TARGET_S)
        rows.append((
            "a removed %s exits with status 0 within %g s of SIGTERM (this run's bound)"
            % (what, STOP_TARGET_S),
            "not reached" if r is None else "%s, %s s after SIGTERM%s" % (
                "exit status %s" % stopped.get("rc") if stopped.get("exited") == "SIGTERM"
                else "SIGKILLed", stopped.get("after_s"), "" if ok else " (%s)" % stopped.get(
                    "why", "")),
            verdict(ok)))
    lines = ["## Issue 17's targets", "", "| target | measured | |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % row for row in rows]
    return lines + [""]


def ms(v):
    return "–" if v is None else "%.2f ms" % v


def summary(f):
    j, d, a, e = f["join"], f["dip"], f["accounting"], f["errors"]
    log = j["log_at_join"] or {}
    lines = ["# Membership under load", ""] + target_lines(f) + [
        "## Figures", "",
        "| figure | value |", "|---|---|",
        "| log after the fill (leader %s) | last-log %s, snapshot %s, counter %s |" % (
            f["fill"]["leader"], f["fill"]["last-log"], f["fill"]["snapshot"],
            f["fill"]["counter"]),
        "| log at the join (leader %s, t=%.2f s) | last-log %s, snapshot %s |" % (
            log.get("node"), j["start_t"], log.get("last-log"), log.get("snapshot")),
        "| member 4 listed as a learner | t=%s s |" % j["learner_t"],
        "| member 4 caught up to the leader's commit at the join | t=%s s |" % j["caught_up_t"],
        "| member 4 a voter (leader's view, 100-ms samples) | t=%s s: **%s s** after its start |"
        % (j["voter_t"], j["to_voter_s"]),
        "| how it caught up | %s |" % j["how"],
        "| commit rate before the join (t=%.0f s to the join) | %s/s |" % (
            BASELINE_FROM, d["baseline_per_s"]),
        "| during the join (t=%.1f–%.1f s): mean, lowest 500-ms bucket | %s/s, %s/s at t=%s s "
        "(%s%% of before) |" % (d["window"][0], d["window"][1], d["during_mean_per_s"],
                               d["lowest_bucket"]["per_s"], d["lowest_bucket"]["t"],
                               d["lowest_pct_of_baseline"]),
        "| loadgen p99 per 500 ms, worst before / during the join | %s / %s |" % (
            ms(d["baseline_p99_ms"]), ms(d["during_p99_ms"])),
    ]
    lines += removal_lines("follower", f["remove_follower"])
    lines += removal_lines("leader", f["remove_leader"])
    lc = f["leader_change"]
    if lc:
        lines.append("| leader %s last seen leading / member %s seen leading | t=%s s / t=%s s "
                     "(gap %s s) |" % (lc["old"], lc["new"], lc["last_led_t"],
                                       lc["new_leads_t"], lc["gap_s"]))
    lg = e["loadgen"]
    lines += [
        "| loadgen (whole run) | sent %s, ok %s, error replies %s, failed %s, missing %s, "
        "unsent %s |" % (lg["sent"], lg["ok"], lg["errors"], lg["failed"], lg["missing"],
                         lg["unsent"]),
        "| loadgen latency (measured window, corrected) | p50 %s, p99 %s, p99.9 %s, max %s |" % (
            tuple(ms(e["loadgen_corrected_ms"][k]) for k in ("p50", "p99", "p999", "max"))),
        "| loadgen verification | %s |" % ", ".join(
            "%s %s" % kv for kv in e["verification"].items()),
        "| witness adds (20/s a member) | %s sent, %s ok |" % (e["witness_sent"],
                                                            e["witness_ok"]),
    ]
    for w in e["witness_failures"]:
        lines.append("| witness on member %s: %s× | `%s` |" % (w["node"], w["count"],
                                                              w["result"]))
    lines += [
        "| members at the end (node, applied, counter) | %s: %s |" % (
            "converged" if a["converged"] else "**not converged**", a["members"]),
        "| counter: added during the run / acknowledged / not acknowledged | %s / %s / %s: %s |"
        % (a["added"], a["acknowledged"], a["not_acknowledged"],
           "nothing lost or applied twice" if a["nothing_lost_or_doubled"]
           else "**does not add up**"),
    ]
    lines += read_lines(f["reads"])
    return "\n".join(lines) + "\n"


def notes(out):
    """The run's hand-written notes.md, if any."""
    path = os.path.join(out, "notes.md")
    if not os.path.exists(path):
        return ""
    with open(path) as fh:
        return "\n" + fh.read()


def removal_lines(what, r):
    if r is None:
        return ["| removal of the %s | not reached |" % what]
    lines = ["| remove the %s (member %s, sent to member %s at t=%.2f s) | reply after **%s**: "
             "`%s` |" % (what, r["node"], r["via"], r["request_t"], ms(r["latency_ms"]),
                         json.dumps(r["reply"]))]
    for cmd, reply in (r["probe"] or {}).items():
        lines.append("| then member %s asked `%s` | `%s` |" % (r["node"], cmd, json.dumps(reply)))
    stopped = r["stopped"] or {}
    lines.append("| then SIGTERM at t=%s s | %s |" % (r["sigterm_t"], ", ".join(
        "%s %s" % (k, v) for k, v in stopped.items() if k not in ("t", "event", "node"))))
    if r["last_sample"]:
        lines.append("| member %s's last sample | `%s` |" % (r["node"],
                                                          json.dumps(r["last_sample"])))
    return lines


def read_lines(reads):
    m = reads["members"] or {}
    lines = ["", "## Reads through follower %s (leader %s), 1,000/s a lane, 4 connections" % (
        m.get("follower"), m.get("leader")), "",
        "| run | lane | replies/s | p50 | p99 | service p50 | service p99 | errors+failed+missing |",
        "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in reads["rows"]:
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["run"], r["lane"], r["rate"], ms(r["p50_ms"]), ms(r["p99_ms"]),
            ms(r["service_p50_ms"]), ms(r["service_p99_ms"]), r["bad"]))
    by = {(r["run"], r["lane"]): r for r in reads["rows"]}
    for run, add, read in (("reads-mixed", ("reads-mixed", "add"), ("reads-mixed", "read")),
                           ("alone", ("reads-add", "add"), ("reads-read", "read"))):
        if add in by and read in by:
            lines.append("\nin-band read p50 / add p50 (%s): %.2f (target: at most 2)" % (
                run, by[read]["p50_ms"] / by[add]["p50_ms"]))
    return lines


def write(out):
    f = figures(out)
    with open(os.path.join(out, "figures.json"), "w") as fh:
        json.dump(f, fh, indent=1)
    text = summary(f) + notes(out)
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(text)
    print(text)
    return f


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write(sys.argv[1])
