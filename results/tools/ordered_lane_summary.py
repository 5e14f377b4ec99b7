#!/usr/bin/env python3
"""Tables and target verdicts of an ordered_lane_ab.sh run, as markdown on stdout.

usage: ordered_lane_summary.py OUT_DIR REPS PROBES      (stdlib only)
"""
import json
import os
import statistics
import sys

OUT, REPS, PROBES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def load(rel):
    path = os.path.join(OUT, rel, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def runs(config, lane):
    found = [load(f"throughput/{config}-{lane}-r{rep}") for rep in range(1, REPS + 1)]
    return [r for r in found if r]


def metric(rs, pick):
    values = [v for v in (pick(r) for r in rs) if v is not None]
    return statistics.median(values) if values else None


def rate(r):
    return r["total"]["rate"]


def cpu(r):
    return (r.get("server") or {}).get("cpu_us_per_reply")


def switches(r):
    return (r.get("server") or {}).get("switches_per_1k_replies")


def spread(rs, pick, fmt):
    values = [v for v in (pick(r) for r in rs) if v is not None]
    if not values:
        return "n/a"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def configs():
    names = []
    for entry in sorted(os.listdir(os.path.join(OUT, "throughput"))):
        if entry.endswith("-r1") and os.path.isdir(os.path.join(OUT, "throughput", entry)):
            name = entry.rsplit("-", 2)[0]
            if name not in names:
                names.append(name)
    order = {"old-default": 0, "new-default": 1, "naive": 9}
    return sorted(names, key=lambda n: (order.get(n, 5), n))


def ratio(a, b):
    return None if not a or not b else a / b


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}x"


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def throughput_table(lines):
    lines += [
        "## Throughput and server cost (4 connections x depth 64, closed loop)", "",
        f"Median of {REPS} runs (range in brackets), each on a fresh server. CPU is the "
        "server's utime+stime per reply and switches are voluntary + involuntary context "
        "switches of all its threads per 1,000 replies, both from /proc over the measured "
        "window (loadgen `--server-pid`).", "",
        "| server | lane | replies/s | CPU µs / reply | ctx switches / 1k replies |",
        "|---|---|---:|---:|---:|",
    ]
    for config in configs():
        for lane in ("inband", "oob"):
            rs = runs(config, lane)
            if not rs:
                continue
            lines.append(
                f"| {config} | {lane} | {spread(rs, rate, lambda v: f'{v:,.0f}')} | "
                f"{spread(rs, cpu, lambda v: f'{v:.3f}')} | "
                f"{spread(rs, switches, lambda v: f'{v:.1f}')} |")
    lines.append("")


def isolation_table(lines):
    lines += [
        "## OOB isolation: service time (send to reply), µs", "",
        f"OOB `ping` at 2,000/s, {PROBES} fresh probe connections in turn per case; (b) has the "
        "executor saturated by a closed-loop `work {\"us\":20}` client (depth 16). Worst probe "
        "is the one with the highest p99.9.", "",
        "| server | case | probe | p50 | p99 | p99.9 | max | corrected p99.9 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    worst = {}
    for label in ("old-default", "new-default"):
        for case in ("a-idle", "b-saturated"):
            for probe in range(1, PROBES + 1):
                r = load(f"isolation/{label}-{case}-p{probe}")
                lane = next((l for l in (r or {}).get("lanes", []) if l["name"] == "oob"), None)
                if not lane:
                    continue
                s, c = lane["service"], lane["corrected"]
                lines.append(f"| {label} | {case} | {probe} | {s['p50']:.0f} | {s['p99']:.0f} | "
                             f"{s['p999']:.0f} | {s['max']:.0f} | {c['p999']:.0f} |")
                key = (label, case)
                worst[key] = max(worst.get(key, 0), s["p999"])
    lines.append("")
    return worst


def main():
    lines = ["# The ordered lane: old design vs new, one sitting", ""]
    with open(os.path.join(OUT, "machine.txt")) as f:
        lines += ["```", f.read().rstrip(), "```", ""]
    throughput_table(lines)
    worst = isolation_table(lines)
    med = lambda config, lane, pick: metric(runs(config, lane), pick)
    nproc = os.cpu_count()
    ib_oob = ratio(med("new-default", "inband", rate), med("new-default", "oob", rate))
    cpu_ratio = ratio(med("new-default", "inband", cpu), med("new-default", "oob", cpu))
    cs = med("new-default", "inband", switches)
    vs_naive = ratio(med("new-default", "inband", rate), med("naive", "inband", rate))
    oob_t1 = ratio(med("new-t1", "oob", rate), med("old-t1", "oob", rate))
    oob_tn = ratio(med(f"new-t{nproc}", "oob", rate), med(f"old-t{nproc}", "oob", rate))
    oob_default = ratio(med("new-default", "oob", rate), med("old-default", "oob", rate))
    iso = ratio(worst.get(("new-default", "b-saturated")), worst.get(("new-default", "a-idle")))
    iso_old = ratio(worst.get(("old-default", "b-saturated")), worst.get(("old-default", "a-idle")))
    targets = [
        ("in-band ping throughput ≥ 0.8 of OOB (new, default)", fmt_ratio(ib_oob),
         verdict(None if ib_oob is None else ib_oob >= 0.8)),
        ("in-band CPU per request ≤ 1.3x OOB (new, default)", fmt_ratio(cpu_ratio),
         verdict(None if cpu_ratio is None else cpu_ratio <= 1.3)),
        ("≤ 10 context switches per 1,000 in-band requests (new, default)",
         "n/a" if cs is None else f"{cs:.1f}", verdict(None if cs is None else cs <= 10)),
        ("in-band throughput ≥ 3x naive tokio + serde_json", fmt_ratio(vs_naive),
         verdict(None if vs_naive is None else vs_naive >= 3)),
        ("OOB p99.9 service saturated ≤ 1.5x idle, worst probe (new, default)",
         f"{fmt_ratio(iso)} (old design: {fmt_ratio(iso_old)})",
         verdict(None if iso is None else iso <= 1.5)),
        ("OOB throughput new / old, --threads 1", fmt_ratio(oob_t1), "(keep ≈ 1)"),
        (f"OOB throughput new / old, --threads {nproc}", fmt_ratio(oob_tn), "(keep ≈ 1)"),
        ("OOB throughput new default / old default (one parser thread traded for the "
         "executor's core)", fmt_ratio(oob_default), "(the cost of the layout)"),
    ]
    lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in targets] + [""]
    bad = []
    for root, _, files in os.walk(OUT):
        if "summary.json" in files:
            with open(os.path.join(root, "summary.json")) as f:
                if json.load(f).get("failures"):
                    bad.append(os.path.relpath(root, OUT))
    lines.append("Verification: " + ("every reply of every run matched." if not bad
                                     else "failures in " + ", ".join(bad)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
