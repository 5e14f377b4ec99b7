#!/usr/bin/env python3
"""The tables of a commit_latency.py sitting: reads OUT_DIR/sitting.json (with the floor
measurements) and every point's loadgen summary.json, writes OUT_DIR/summary.json (medians and ranges over the
repetitions, ratios) and OUT_DIR/README.md. commit_latency.py calls it at the end; run it
alone to regenerate them. OUT_DIR/notes.md, if present (written by hand after the sitting:
what the run shows), is included after the header.

    results/tools/commit_latency_summary.py OUT_DIR
"""

import json
import os
import statistics
import sys

# Metrics of one point, as read from loadgen's summary.json, its p50 over the floor measured
# just before its system started, and loadgen's own CPU per request sent (whole run).
METRICS = ("rate", "p50_ms", "p99_ms", "cpu_us", "switches", "p50_vs_floor", "client_cpu_us")

# What the issue asks of the engine at these points (3 members unless said).
P50_MAX_MS, P99_MAX_MS, DURABLE_P50_MAX_MS = 1.0, 3.0, 0.6
FLOOR_RATIO_MAX, CPU_MAX_US, PIPELINED_MIN, PIPELINED_VS_ETCD = 2.5, 100.0, 190_000, 15.0


def point_figures(out, point, floors):
    """The figures of one run, or None if it left no summary."""
    path = os.path.join(out, point["dir"], "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        s = json.load(f)
    total, cost = s["total"], s.get("server") or {}
    switches = cost.get("switches_per_1k_replies")
    p50_ms = total["corrected"]["p50"] / 1e3
    floor = floor_ms(parts(floors[point["floor"]]), point["members"], point["via"])
    return {
        "rate": total["rate"],
        "p50_ms": p50_ms,
        "p99_ms": total["corrected"]["p99"] / 1e3,
        "cpu_us": cost.get("cpu_us_per_reply"),
        "cpu_source": cost.get("cpu_source"),
        "switches": None if switches is None else switches / 1e3,
        "p50_vs_floor": None if point["point"].startswith("pipelined") else p50_ms / floor,
        "client_cpu_us": div(point.get("client_cpu_s", 0) * 1e6, total["counts"]["sent"]) or None,
        "failures": s["failures"],
    }


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(out, sitting):
    """{(system, point): {metric: spread, "runs": n, "failures": [...]}} plus the order seen."""
    groups, order = {}, []
    for p in sitting["points"]:
        key = (p["system"], p["point"])
        if key not in groups:
            groups[key] = {"runs": [], "members": p["members"], "via": p["via"]}
            order.append(key)
        figures = point_figures(out, p, sitting["floors"])
        groups[key]["runs"].append(figures or {"failures": ["no summary.json"]})
    for g in groups.values():
        for m in METRICS:
            g[m] = spread([r.get(m) for r in g["runs"]])
        g["failures"] = [f for r in g["runs"] for f in r["failures"]]
    return groups, order


def parts(floor):
    """The parts of a commit's floor from one floor measurement: p50s, µs."""
    return {"fdatasync_us": floor["fdatasync_overwrite"]["p50_us"],
            "rtt_us": floor["loopback_round_trip"]["p50_us"]}


def floor_ms(floor_parts, members, via):
    """A commit's floor: the leader's and a follower's fsync run in parallel, so one fsync,
    plus the client's round trip, the leader-follower round trip, and one more when the
    client talks to a follower; a single node: one fsync and the client's round trip."""
    trips = 1 if members == 1 else (2 if via == "leader" else 3)
    return (floor_parts["fdatasync_us"] + trips * floor_parts["rtt_us"]) / 1e3


def etcd_of(system, members):
    return None if system.startswith("etcd") else ("etcd-3" if members > 1 else "etcd-1")


def ratios(groups):
    """Per (system, point): p50 and throughput against etcd's same point; pipelined
    throughput against etcd's best closed-loop throughput."""
    out = {}
    for (system, point), g in groups.items():
        r = {}
        med = lambda grp, m: (grp.get(m) or {}).get("median")
        etcd = etcd_of(system, g["members"])
        if etcd and (etcd, point) in groups:
            e = groups[(etcd, point)]
            r["p50_vs_etcd"] = div(med(g, "p50_ms"), med(e, "p50_ms"))
            r["rate_vs_etcd"] = div(med(g, "rate"), med(e, "rate"))
        elif etcd and best_point(groups, etcd):
            r["rate_vs_etcd_best"] = div(med(g, "rate"), med(groups[(etcd, best_point(groups, etcd))], "rate"))
        out[(system, point)] = r
    return out


def best_point(groups, system):
    """The closed-loop point where SYSTEM committed the most (median), or None."""
    rates = [((g.get("rate") or {}).get("median") or 0, p) for (s, p), g in groups.items()
             if s == system and not p.startswith("paced")]
    return max(rates, default=(0, None))[1]


def div(a, b):
    return None if a is None or not b else a / b


# -- rendering ------------------------------------------------------------------------------

def name(system, sitting):
    builds = {s.split("-")[0] for s in sitting["systems"] if not s.startswith("etcd")}
    kind, _, shape = system.partition("-")
    if kind == "etcd":
        return "etcd 3.4, %s" % ("3 members" if shape == "3" else "1 member")
    build = "engine" if len(builds) == 1 else "engine (%s)" % kind
    return "%s, %s" % (build, "3 members" if shape == "cluster" else "durable, 1")


def cell(s, fmt):
    if s is None:
        return "–"
    if s["min"] == s["max"]:
        return fmt(s["median"])
    return "%s [%s–%s]" % (fmt(s["median"]), fmt(s["min"]), fmt(s["max"]))


def ms(v):
    return "%.2f" % v if v < 100 else "%.0f" % v


def count(v):
    return "{:,.0f}".format(v)


def one(v):
    return "%.1f" % v


def x(v):
    return "–" if v is None else "%.2fx" % v


def results_table(groups, order, rat, sitting):
    lines = ["| point | system | commits/s | p50 ms | p99 ms | CPU µs/commit | switches/commit "
             "| p50 ÷ etcd | commits/s ÷ etcd | p50 ÷ floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    points = []
    for _, point in order:
        if point not in points:
            points.append(point)
    systems = sitting["systems"]
    for point in points:
        for system in systems:
            g = groups.get((system, point))
            if g is None:
                continue
            r = rat[(system, point)]
            bad = " **FAIL**" if g["failures"] else ""
            lines.append("| %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                point, name(system, sitting), bad, cell(g["rate"], count), cell(g["p50_ms"], ms),
                cell(g["p99_ms"], ms), cell(g["cpu_us"], one), cell(g["switches"], one),
                x(r.get("p50_vs_etcd")),
                x(r.get("rate_vs_etcd", r.get("rate_vs_etcd_best"))), cell(g["p50_vs_floor"], x)))
    return lines


def headline(groups, sitting):
    """The issue's table: each engine build's cluster beside etcd's, medians [ranges]."""
    builds = [s[:-len("-cluster")] for s in sitting["systems"] if s.endswith("-cluster")]
    columns = [(b + "-cluster", b + "-durable") for b in builds] + [("etcd-3", "etcd-1")]
    get = lambda system, point, m: (groups.get((system, point)) or {}).get(m)
    pair = lambda system, point: "%s / %s" % (cell(get(system, point, "p50_ms"), ms),
                                              cell(get(system, point, "p99_ms"), ms))

    def best(system):
        point = best_point(groups, system)
        return "%s (%s)" % (cell(get(system, point, "rate"), count), point) if point else "–"

    rows = [
        ("64 connections x one outstanding: commits/s", lambda c, d: cell(get(c, "closed-c64", "rate"), count)),
        ("the same: p50 / p99 ms", lambda c, d: pair(c, "closed-c64")),
        ("best throughput, commits/s (point)", lambda c, d: best(c)),
        ("paced 1,000/s via the leader, 16 connections: p50 / p99 ms", lambda c, d: pair(c, "paced-1000-c16-leader")),
        ("paced 1,000/s via a follower, 16 connections: p50 / p99 ms", lambda c, d: pair(c, "paced-1000-c16-follower")),
        ("paced 5,000/s via the leader, 16 connections: p50 / p99 ms", lambda c, d: pair(c, "paced-5000-c16-leader")),
        ("paced 5,000/s via a follower, 16 connections: p50 / p99 ms", lambda c, d: pair(c, "paced-5000-c16-follower")),
        ("paced 5,000/s via the leader, 64 connections: p50 / p99 ms", lambda c, d: pair(c, "paced-5000-c64-leader")),
        ("server CPU µs per commit, all members, paced 1,000/s", lambda c, d: cell(get(c, "paced-1000-c16-leader", "cpu_us"), one)),
        ("context switches per commit, all members, paced 1,000/s", lambda c, d: cell(get(c, "paced-1000-c16-leader", "switches"), one)),
        ("loadgen's own CPU µs per request, paced 1,000/s (closed, 64 connections)",
         lambda c, d: "%s (%s)" % (cell(get(c, "paced-1000-c16-leader", "client_cpu_us"), one),
                                   cell(get(c, "closed-c64", "client_cpu_us"), one))),
        ("durable single node (etcd: 1 member), paced 1,000/s: p50 / p99 ms", lambda c, d: pair(d, "paced-1000-c16-leader")),
        ("durable single node (etcd: 1 member), 64 x one outstanding: commits/s", lambda c, d: cell(get(d, "closed-c64", "rate"), count)),
    ]
    heads = [name(c, sitting).replace(", 3 members", "") for c, _ in columns]
    lines = ["", "### Side by side (3 members unless said; median [range])", "",
             "| | %s |" % " | ".join(heads), "|---|%s" % ("---:|" * len(heads))]
    for label, f in rows:
        lines.append("| %s | %s |" % (label, " | ".join(f(c, d) for c, d in columns)))
    return lines


def build_table(groups, order, sitting):
    """New build ÷ old build at every engine point."""
    if not any(s.startswith("old-") for s in sitting["systems"]):
        return []
    lines = ["", "## New engine build ÷ old, same sitting", "",
             "| point | system | commits/s | p50 | p99 | CPU/commit | switches/commit |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for system, point in order:
        if not system.startswith("new-") or ("old" + system[3:], point) not in groups:
            continue
        new, old = groups[(system, point)], groups[("old" + system[3:], point)]
        r = lambda m: x(div((new[m] or {}).get("median"), (old[m] or {}).get("median")))
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            point, system[4:], r("rate"), r("p50_ms"), r("p99_ms"), r("cpu_us"), r("switches")))
    return lines


def targets_table(groups, rat, sitting):
    build = "new" if any(s.startswith("new-") for s in sitting["systems"]) else "engine"
    med = lambda system, point, m: ((groups.get((system, point)) or {}).get(m) or {}).get("median")
    rows = []
    for point in ("paced-1000-c16-leader", "paced-1000-c16-follower", "paced-5000-c16-leader",
                  "paced-5000-c16-follower"):
        p50, p99 = med(build + "-cluster", point, "p50_ms"), med(build + "-cluster", point, "p99_ms")
        ratio = med(build + "-cluster", point, "p50_vs_floor")
        rows.append(("3 members, %s: p50 ≤ %.1f ms and ≤ %.1fx floor, p99 ≤ %.0f ms"
                     % (point, P50_MAX_MS, FLOOR_RATIO_MAX, P99_MAX_MS),
                     "p50 %s ms (%s floor), p99 %s ms" % (fmt(p50, ms), x(ratio), fmt(p99, ms)),
                     met(p50 is not None and p99 is not None and ratio is not None
                         and p50 <= P50_MAX_MS and ratio <= FLOOR_RATIO_MAX and p99 <= P99_MAX_MS)))
    p50 = med(build + "-durable", "paced-1000-c16-leader", "p50_ms")
    rows.append(("durable, paced 1,000/s: p50 ≤ %.1f ms" % DURABLE_P50_MAX_MS,
                 "%s ms" % fmt(p50, ms), met(p50 is not None and p50 <= DURABLE_P50_MAX_MS)))
    cpu = med(build + "-cluster", "paced-1000-c16-leader", "cpu_us")
    rows.append(("3 members, CPU per commit at 1,000/s ≤ %.0f µs (all members)" % CPU_MAX_US,
                 "%s µs" % fmt(cpu, one), met(cpu is not None and cpu <= CPU_MAX_US)))
    rate = med(build + "-cluster", "pipelined-c4x256", "rate")
    vs = rat.get((build + "-cluster", "pipelined-c4x256"), {}).get("rate_vs_etcd_best")
    rows.append(("3 members, pipelined ≥ %s/s and ≥ %.0fx etcd's best" % (count(PIPELINED_MIN), PIPELINED_VS_ETCD),
                 "%s/s, %s etcd's best" % (fmt(rate, count), x(vs)),
                 met(rate is not None and vs is not None and rate >= PIPELINED_MIN and vs >= PIPELINED_VS_ETCD)))
    lines = ["", "## Against the issue's targets (%s build, medians)" % build, "",
             "| target | measured | |", "|---|---|---|"]
    return lines + ["| %s | %s | %s |" % row for row in rows]


def fmt(v, f):
    return "–" if v is None else f(v)


def met(ok):
    return "met" if ok else "**missed**"


def floor_section(sitting):
    floors = list(sitting["floors"].values())
    lines = ["## The floor, measured in this sitting", "",
             "`floor DATA_ROOT --count 500` (bench/src/bin/floor.rs) on the filesystem of the "
             "data directories (%s), right before every system started and once at the end: "
             "%d measurements, median [range] of their p50s and p99s." % (
                 sitting["meta"]["machine"]["data_fs"], len(floors)), "",
             "| measurement | p50 µs | p99 µs |", "|---|---:|---:|"]
    labels = (("fdatasync_overwrite", "fdatasync of a 64 B overwrite in a preallocated file"),
              ("fdatasync_append", "fdatasync of a 64 B append (file grows: journal commit too)"),
              ("loopback_round_trip", "loopback TCP round trip, 64 B, both sides asleep in read"))
    for key, label in labels:
        lines.append("| %s | %s | %s |" % (label, cell(spread([f[key]["p50_us"] for f in floors]), one),
                                           cell(spread([f[key]["p99_us"] for f in floors]), one)))
    commit = lambda members, via: cell(spread([floor_ms(parts(f), members, via) for f in floors]), ms)
    lines += ["", "A commit's floor, from one measurement's p50s: the leader's and one follower's "
              "fdatasync (overwrite: a log that preallocates, as etcd's WAL does) run in "
              "parallel, plus the client's and the leader-follower round trips: **%s ms** via "
              "the leader, **%s ms** via a follower (one round trip more); a single durable "
              "node, one fdatasync and the client's round trip: **%s ms**. Each point's "
              "\"p50 ÷ floor\" uses the measurement taken just before its system started." % (
                  commit(3, "leader"), commit(3, "follower"), commit(1, "leader"))]
    return lines


def header(sitting):
    m = sitting["meta"]
    mach = m["machine"]
    engines = ["`%s` (%s%s)" % (b["path"], b["version"], ", COMMIT " + b["commit_file"][:9]
                                if b.get("commit_file") else "")
               for b in (m.get("old_engine"), m["engine"]) if b]
    lines = ["# Commit latency beside etcd and the physical floor", "",
             "```sh", "flock /tmp/loadtest.lock %s" % m["command"], "```", "",
             "- date: %s; elapsed: %d s; %d repetition(s) of every point, %s measured after %s "
             "warm-up" % (m["date"], m["elapsed_s"], m["reps"], m["durations"]["measured"],
                          m["durations"]["warmup"]),
             "- repository commit: %s; %s" % (m["commit"], m["rustc"]),
             "- machine: %s, %d cores, %s GiB, Linux %s; data on %s" % (
                 mach["cpu"], mach["cores"], mach["memory_gib"], mach["kernel"], mach["data_fs"]),
             "- engine builds (old first when two): %s" % "; ".join(engines),
             "- loadgen: `%s`; %s" % (m["loadgen"]["path"], " ".join(m["etcd"])),
             "- load average (1, 5, 15 min) at start %s, at end %s; pressure at end: %s" % (
                 " ".join(m["load_start"]), " ".join(m["load_end"]),
                 "; ".join("%s %s" % kv for kv in m.get("pressure_end", {}).items())), ""]
    return lines


NOTES = """Every system ran alone, started fresh (new data directories) for every repetition, the
repetitions in alternating order; each point is a loadgen run folder under `runs/` (its
`report.txt`, `summary.json`, raw `.hgrm` histograms, SVG plot) with its console output
beside it (`runs/NAME.txt`); every command is in [commands.txt](commands.txt); the floor
measurements are in `floor/`. Cells are the median of the repetitions with the range in
brackets. Engine: QMP `counter-add {"delta":1}` (replicated); etcd: `POST /v3/kv/put` of a
1-byte value through the HTTP/JSON gateway (loadgen `--protocol etcd`), default settings
(an fsync per commit). Points: `closed-cN`, N connections x one request outstanding;
`pipelined-c4x256`, 4 connections x 256 outstanding; `paced-R-cN-via`, R commits/s over N
connections on constant-rate schedules, through the leader or a follower; all latencies
CO-corrected (from each request's intended send time). CPU per commit is the server CPU
(schedstat ns) of all the system's members summed, divided by the replies; switches per
commit are the voluntary and involuntary context switches of all their threads. "÷ etcd"
compares with etcd's same point (3 members with 3, durable with 1; pipelined throughput with
etcd's best closed point); "÷ floor" with the commit floor measured just before the system
started (median [range] of the repetitions)."""


def notes(out):
    path = os.path.join(out, "notes.md")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [f.read().rstrip("\n"), ""]


def verification(out, sitting):
    """Why each failed run failed (from its summary), and systems that did not start."""
    failed = []
    for p in sitting["points"]:
        if p["rc"] == 0:
            continue
        figures = point_figures(out, p, sitting["floors"])
        why = "; ".join(figures["failures"]) if figures else "no summary.json"
        failed.append("- `%s`: %s (see [%s.txt](%s.txt))" % (p["dir"], why, p["dir"], p["dir"]))
    lines = ["", "## Verification", ""]
    if not failed and not sitting["failures"]:
        return lines + ["Every run passed loadgen's verification (every reply matched, none "
                        "missing or an error)."]
    return lines + ["%d of %d runs failed loadgen's verification:" % (len(failed), len(sitting["points"])),
                    ""] + failed + ["- " + f for f in sitting["failures"]]


def caveats(sitting):
    m = sitting["meta"]
    cores = m["machine"]["cores"]
    secs = float(m["durations"]["measured"].rstrip("s"))
    return ["", "## Caveats", "",
            "- All of it shares this machine's %d cores: three members (or one), loadgen and "
            "whatever else the machine runs. loadgen's own CPU (its event loop over 16–64 "
            "connections; per request in the side-by-side table, from its rusage over the "
            "whole run) is taken from the cores the servers need, so every latency here is an "
            "upper bound on the server's and every throughput a lower bound." % cores,
            "- The floor is measured on the same disk in the same sitting, but disk latency "
            "drifts with other I/O on the machine (the floor's ranges above): a point's "
            "\"÷ floor\" uses the measurement next to it, and is still only as steady as "
            "the disk was between the two.",
            "- etcd's HTTP/JSON gateway answers one request at a time per HTTP/1.1 connection "
            "(etcd's own gRPC clients multiplex over HTTP/2): at 5,000/s over 16 connections "
            "each connection must finish a commit every 3.2 ms or its queue grows, so "
            "`paced-5000-c16` measures that cap as much as etcd; `paced-5000-c64` lifts it.",
            "- At 1,000/s a %s run holds %s samples: its p99 rests on the %s worst."
            % (m["durations"]["measured"], count(1000 * secs), count(10 * secs))] + same_build(sitting)


def same_build(sitting):
    """When both engine builds are one binary, the new ÷ old table is an A/A test."""
    m = sitting["meta"]
    old, new = m.get("old_engine"), m["engine"]
    if not old or not (old["path"] == new["path"] or old.get("sha256", 1) == new.get("sha256", 2)):
        return []
    return ["- Both engine builds are the same binary: the \"new ÷ old\" table is an A/A "
            "test, and its spread (how far from 1.00x) is what this machine's noise alone "
            "does to a side-by-side comparison in one sitting."]


def write(out):
    with open(os.path.join(out, "sitting.json")) as f:
        sitting = json.load(f)
    groups, order = aggregate(out, sitting)
    rat = ratios(groups)
    floors = sitting["floors"]
    summary = {"meta": sitting["meta"],
               "floor": {tag: dict(parts(f), commit_ms={
                   "3-leader": floor_ms(parts(f), 3, "leader"),
                   "3-follower": floor_ms(parts(f), 3, "follower"),
                   "1": floor_ms(parts(f), 1, "leader")}) for tag, f in floors.items()},
               "points": [dict({"system": s, "point": p, "ratios": rat[(s, p)]},
                               **{k: v for k, v in groups[(s, p)].items()})
                          for s, p in order],
               "failures": sitting["failures"]}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    lines = (header(sitting) + notes(out) + floor_section(sitting)
             + ["", "## Results", "", NOTES] + headline(groups, sitting)
             + ["", "### Every point", ""] + results_table(groups, order, rat, sitting)
             + build_table(groups, order, sitting) + targets_table(groups, rat, sitting)
             + verification(out, sitting) + caveats(sitting))
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    write(sys.argv[1])
