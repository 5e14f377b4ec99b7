#!/usr/bin/env python3
"""The tables of the layering evidence (layering_ab.sh summary), as markdown.

usage: summarize.py build SUMMARY_TXT      clean build times (layering_ab.sh build's summary.txt):
                                           per package and side, the median over rounds of wall
                                           and CPU seconds, and after/before as the median of
                                           the per-round ratios
       summarize.py bench MEDIANS_TSV      criterion benches (layering_ab.sh bench's medians.tsv):
                                           per benchmark, each side's median over rounds of
                                           criterion's median (range over rounds in brackets),
                                           and after/before as the median of the per-round
                                           ratios: both sides of a round ran back to back, so a
                                           round's ratio cancels what the machine was doing then
                                           (the cross-thread benches move 2x between rounds)
       summarize.py ab AB_DIR [AB_DIR...]  new engine against old over several ordered_lane_ab.sh
                                           sittings: throughput, server CPU per reply and
                                           context switches per 1,000 replies (median of each
                                           sitting's fresh servers, new / old), and OOB isolation
                                           per case (service p50 and p99.9 over the probes, worst
                                           and median probe) with the client's own send lag
                                           beside it: a p99.9 send lag in the milliseconds means
                                           the client was not scheduled either, so that case
                                           measured the machine
(stdlib only)
"""
import csv
import glob
import json
import os
import re
import statistics
import sys


def ratios_cell(ratios):
    return " ".join(f"{x:.2f}" for x in ratios)


# ---------------------------------------------------------------- build


def build(path):
    """summary.txt lines: '<side> <pkg> r<N> wall_s=<s> cpu_s=<s> load1=<a>-><b>'."""
    runs = {}
    pat = re.compile(r"^(before|after) (\S+) r(\d+) wall_s=([\d.]+) cpu_s=([\d.]+) load1=(\S+)->(\S+)$")
    with open(path) as f:
        for line in f:
            m = pat.match(line.strip())
            if m:
                side, pkg, rnd, wall, cpu, l0, l1 = m.groups()
                runs.setdefault(pkg, {}).setdefault(side, {})[int(rnd)] = (float(wall), float(cpu), l0, l1)
    out = ["| package | metric | before (da23fcf): median (min–max) | after: median (min–max) | "
           "after / before (median of rounds) | per-round after / before |",
           "|---|---|---:|---:|---:|---|"]
    for pkg in sorted(runs):
        b, a = runs[pkg].get("before", {}), runs[pkg].get("after", {})
        rounds = sorted(set(b) & set(a))
        for i, metric in ((0, "wall s"), (1, "CPU s")):
            bv, av = [b[n][i] for n in rounds], [a[n][i] for n in rounds]
            ratios = [a[n][i] / b[n][i] for n in rounds]
            out.append(f"| {pkg} | {metric} | {statistics.median(bv):.1f} ({min(bv):.1f}–{max(bv):.1f}) | "
                       f"{statistics.median(av):.1f} ({min(av):.1f}–{max(av):.1f}) | "
                       f"{statistics.median(ratios):.2f}x | {ratios_cell(ratios)} |")
    out += ["", f"Rounds: {', '.join(f'r{n}' for n in sorted({n for p in runs.values() for s in p.values() for n in s}))}; "
            "1-min load before -> after each build:", ""]
    for pkg in sorted(runs):
        for side in ("before", "after"):
            cells = [f"r{n} {v[2]}->{v[3]}" for n, v in sorted(runs[pkg].get(side, {}).items())]
            out.append(f"- {side} {pkg}: {', '.join(cells)}")
    return out


# ---------------------------------------------------------------- bench


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def bench(path):
    rows = {}
    with open(path) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            per = rows.setdefault(r["benchmark"], {}).setdefault(r["side"], {})
            per[int(r["round"])] = float(r["median_ns"])
    out = ["| benchmark | before (da23fcf) | after | after / before | per-round ratios |",
           "|---|---:|---:|---:|---|"]
    for name in sorted(rows):
        b, a = rows[name].get("before", {}), rows[name].get("after", {})
        rounds = sorted(set(b) & set(a))
        if not rounds:
            continue
        ratios = [a[n] / b[n] for n in rounds]
        bv, av = [b[n] for n in rounds], [a[n] for n in rounds]
        out.append(f"| {name} | {fmt_ns(statistics.median(bv))} ({fmt_ns(min(bv))}–{fmt_ns(max(bv))}) | "
                   f"{fmt_ns(statistics.median(av))} ({fmt_ns(min(av))}–{fmt_ns(max(av))}) | "
                   f"{statistics.median(ratios):.2f}x | {ratios_cell(ratios)} |")
    return out


# ---------------------------------------------------------------- ab (ordered_lane_ab.sh sittings)


def load(path):
    with open(os.path.join(path, "summary.json")) as f:
        return json.load(f)


def pick(d, what):
    server = d.get("server") or {}
    return {"rate": d["total"]["rate"], "cpu": server.get("cpu_us_per_reply"),
            "switches": server.get("switches_per_1k_replies")}[what]


def reps(ab, config, lane):
    return [load(p) for p in sorted(glob.glob(f"{ab}/throughput/{config}-{lane}-r*/"))]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def throughput(dirs):
    out = ["## Throughput and server cost, new / old (4 connections x depth 64)", "",
           "Each cell: the new engine's median over a sitting's fresh servers divided by the "
           "old one's, one figure per sitting; 'all' pools every server of every sitting.", "",
           "| layout | lane | metric | old (all) | new (all) | new / old per sitting | new / old (all) |",
           "|---|---|---|---:|---:|---|---:|"]
    fmt = {"rate": lambda v: f"{v:,.0f}/s", "cpu": lambda v: f"{v:.3f} µs",
           "switches": lambda v: f"{v:.1f}"}
    layouts = [("default", "default")] + [(c[4:], c[4:]) for c in sorted(
        {os.path.basename(p).rsplit("-", 2)[0] for p in glob.glob(f"{dirs[0]}/throughput/old-t*-r1")})]
    for label, suffix in layouts:
        for lane in ("inband", "oob"):
            for metric in ("rate", "cpu", "switches"):
                per, old_all, new_all = [], [], []
                for ab in dirs:
                    o = [pick(d, metric) for d in reps(ab, f"old-{suffix}", lane)]
                    n = [pick(d, metric) for d in reps(ab, f"new-{suffix}", lane)]
                    old_all += o
                    new_all += n
                    if med(o) and med(n) is not None:
                        per.append(f"{med(n) / med(o):.2f}")
                mo, mn = med(old_all), med(new_all)
                ratio = f"{mn / mo:.2f}x" if mo else "n/a"
                out.append(f"| {label} | {lane} | {metric} | {fmt[metric](mo)} | {fmt[metric](mn)} | "
                           f"{' '.join(per)} | {ratio} |")
    return out


def isolation(dirs):
    out = ["", "## OOB isolation: service time (send to reply), µs, per sitting", "",
           "OOB `ping` at 2,000/s from 4 fresh probe connections in turn; (b) with the executor "
           "saturated by a closed-loop `work {\"us\":20}` client. Send lag is the client's own "
           "delay (actual - intended send), worst probe's p99.9.", "",
           "| sitting | engine | case | p50 (median probe) | p99.9 median probe | p99.9 worst probe | send lag p99.9, worst probe |",
           "|---|---|---|---:|---:|---:|---:|"]
    for ab in dirs:
        for engine in ("old-default", "new-default"):
            for case in ("a-idle", "b-saturated"):
                probes = [load(p) for p in sorted(glob.glob(f"{ab}/isolation/{engine}-{case}-p*/"))]
                lanes = [next(l for l in d["lanes"] if l["name"] == "oob") for d in probes]
                if not lanes:
                    continue
                p50 = med([l["service"]["p50"] for l in lanes])
                p999 = [l["service"]["p999"] for l in lanes]
                lag = max(d["send_lag"]["p999"] for d in probes)
                out.append(f"| {os.path.basename(ab.rstrip('/'))} | {engine[:3]} | {case} | {p50:.0f} | "
                           f"{med(p999):.0f} | {max(p999):.0f} | {lag:.0f} |")
    return out



def ab(dirs):
    lines = throughput(dirs) + isolation(dirs)
    failures = [p for d in dirs for p in glob.glob(f"{d}/**/summary.json", recursive=True)
                if json.load(open(p)).get("failures")]
    lines += ["", "Verification: " + ("every reply of every run matched." if not failures
                                     else "failures in " + ", ".join(failures))]
    return lines


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("build", "bench", "ab"):
        sys.exit(__doc__)
    what, args = sys.argv[1], sys.argv[2:]
    lines = {"build": lambda: build(args[0]), "bench": lambda: bench(args[0]),
             "ab": lambda: ab(args)}[what]()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
