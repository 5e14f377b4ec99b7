#!/usr/bin/env python3
"""Writes summary.md and README.md of a results/run.sh folder from the runs' summary.json.

usage: summarize.py RESULTS_DIR       (stdlib only)
"""
import json
import os
import sys

OUT = sys.argv[1]


def load(rel):
    path = os.path.join(OUT, rel, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def rate(run):
    return run["total"]["rate"] if run else None


def lane(run, name):
    if not run:
        return None
    return next((l for l in run["lanes"] if l["name"] == name), None)


def fmt_rate(r):
    return "n/a" if r is None else f"{r:,.0f}"


def fmt_us(v):
    return "n/a" if v is None else (f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} µs")


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def cost(run, key):
    return (run or {}).get("server", {}).get(key) if run and run.get("server") else None


def fmt_cost(v, digits):
    return "n/a" if v is None else f"{v:.{digits}f}"


def throughput_section(lines):
    lines += ["## 1. Throughput vs the loopback echo ceiling (engine, default flags)", "",
              "Closed loop; each run's ceiling is loadgen's echo server measured just before it "
              "with the same connections, depth and request bytes. CPU is the engine's "
              "utime+stime per reply, switches its threads' voluntary + involuntary context "
              "switches per 1,000 replies, from /proc over the measured window "
              "(`--server-pid`): they stay stable when throughput does not.", "",
              "| conns | depth | OOB ping/s | OOB % ceiling | OOB CPU µs | OOB cs/1k | in-band ping/s | in-band % ceiling | in-band CPU µs | in-band cs/1k | ceiling/s (OOB run) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    best = None
    for conns in (1, 4, 16):
        for depth in (1, 16, 64):
            oob = load(f"1-throughput/oob-ping-c{conns}-d{depth}")
            inb = load(f"1-throughput/inband-ping-c{conns}-d{depth}")
            if not oob and not inb:
                continue
            pct = lambda r: (f"{100 * r['total']['rate'] / r['ceiling_rate']:.0f}%"
                             if r and r.get("ceiling_rate") else "n/a")
            if oob and depth > 1 and oob.get("ceiling_rate"):
                frac = oob["total"]["rate"] / oob["ceiling_rate"]
                best = max(best or 0, frac)
            lines.append(f"| {conns} | {depth} | {fmt_rate(rate(oob))} | {pct(oob)} | "
                         f"{fmt_cost(cost(oob, 'cpu_us_per_reply'), 3)} | "
                         f"{fmt_cost(cost(oob, 'switches_per_1k_replies'), 1)} | "
                         f"{fmt_rate(rate(inb))} | {pct(inb)} | "
                         f"{fmt_cost(cost(inb, 'cpu_us_per_reply'), 3)} | "
                         f"{fmt_cost(cost(inb, 'switches_per_1k_replies'), 1)} | "
                         f"{fmt_rate(oob.get('ceiling_rate') if oob else None)} |")
    lines.append("")
    return best


def naive_section(lines):
    """The engine against the naive tokio + serde_json server, same shapes, same run."""
    lines += ["### The naive tokio + serde_json server (bench/src/bin/naive-qmp.rs)", "",
              "One task per connection, one request at a time, an mpsc channel to one executor "
              "task: what a Rust user writes first. 4 connections.", "",
              "| depth | lane | engine/s | naive/s | engine / naive | engine CPU µs | naive CPU µs | engine cs/1k | naive cs/1k |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    worst = None
    for depth in (1, 16, 64):
        for name, kind in (("in-band", "inband"), ("OOB", "oob")):
            eng = load(f"1-throughput/{kind}-ping-c4-d{depth}")
            nai = load(f"1-throughput/naive-{kind}-ping-c4-d{depth}")
            if not eng or not nai:
                continue
            if kind == "inband" and depth > 1:
                worst = min(worst or 1e18, rate(eng) / rate(nai))
            lines.append(f"| {depth} | {name} | {fmt_rate(rate(eng))} | {fmt_rate(rate(nai))} | "
                         f"{ratio(rate(eng), rate(nai))} | "
                         f"{fmt_cost(cost(eng, 'cpu_us_per_reply'), 3)} | {fmt_cost(cost(nai, 'cpu_us_per_reply'), 3)} | "
                         f"{fmt_cost(cost(eng, 'switches_per_1k_replies'), 1)} | {fmt_cost(cost(nai, 'switches_per_1k_replies'), 1)} |")
    lines.append("")
    return worst


PROBES = 4


def worst_probe(prefix, case, lane_name, kind):
    """Of a case's probe connections, the run whose `kind` ("service" or "corrected") p99.9 is
    highest: each probe lands on some parser thread, the worst one is what a user can get."""
    found = [load(f"{prefix}/{case}-p{p}") for p in range(1, PROBES + 1)]
    found = [r for r in found if lane(r, lane_name)]
    return max(found, key=lambda r: lane(r, lane_name)[kind]["p999"], default=None)


def isolation_rows(prefix, lane_name, cases, kind="service"):
    runs = {c: worst_probe(prefix, c, lane_name, kind) for c in cases}
    rows = []
    for q, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
        vals = {c: (lane(runs[c], lane_name) or {}).get(kind, {}).get(q) for c in cases}
        base = vals[cases[0]]
        cells = " | ".join(fmt_us(vals[c]) for c in cases)
        ratios = " | ".join(ratio(vals[c], base) for c in cases[1:])
        rows.append((label, vals, f"| {label} | {cells} | {ratios} |"))
    return runs, rows


def isolation_section(lines):
    cases = ("a-idle", "b-saturated", "c-stalled")
    runs, rows = isolation_rows("2-isolation", "ping", cases)
    _, corrected = isolation_rows("2-isolation", "ping", cases, "corrected")
    lines += ["## 2. OOB isolation (engine, default flags)", "",
              f"OOB `ping` at a fixed rate, service time (send to reply), from {PROBES} fresh "
              "probe connections in turn per case (each lands on some parser thread); the worst "
              "probe (highest p99.9) is shown. (a) idle executor, (b) executor saturated by a "
              "second client's closed-loop `work {\"us\":100}` (depth 8), (c) executor blocked by "
              "`stall` for the whole case. Clients are unpinned and sleep between sends "
              "(`--spin off`, timer slack 1 ns).", "",
              "| percentile | (a) idle | (b) saturated | (c) stalled | (b)/(a) | (c)/(a) |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [r[2] for r in rows] + [""]
    lines += ["The same worst probes, latency corrected for coordinated omission (from the "
              "intended send time, so the client's own send lag counts too):", "",
              "| percentile | (a) idle | (b) saturated | (c) stalled | (b)/(a) | (c)/(a) |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [r[2] for r in corrected] + [""]
    sat = lane(runs["b-saturated"], "ping")
    lines.append(f"Plot: [compare.png](2-isolation/compare/compare.png). "
                 f"OOB pings answered in (b): {sat['counts']['ok'] if sat else 'n/a'}.")
    lines.append("")
    v = {label: vals for label, vals, _ in rows}
    return v


def qemu_section(lines, iso):
    if not os.path.isdir(os.path.join(OUT, "3-qemu")):
        lines += ["## 3. QEMU's monitor", "", "Not run (--no-qemu).", ""]
        return None, None
    lines += ["## 3. Against QEMU's own monitor", "",
              "Same client, same shapes, one connection (QEMU serves one client per QMP "
              "chardev). QEMU runs in-band `query-status` and OOB `yank {\"instances\": []}`; "
              "the engine runs in-band and OOB `ping` (scenario 1, 1 connection).", "",
              "| depth | engine in-band/s | QEMU in-band/s | engine / QEMU | engine OOB/s | QEMU OOB/s | engine / QEMU |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    worst_inband = None
    for depth in (1, 16, 64):
        e_in = rate(load(f"1-throughput/inband-ping-c1-d{depth}"))
        q_in = rate(load(f"3-qemu/inband-query-status-c1-d{depth}"))
        e_oob = rate(load(f"1-throughput/oob-ping-c1-d{depth}"))
        q_oob = rate(load(f"3-qemu/oob-yank-c1-d{depth}"))
        if e_in and q_in:
            worst_inband = min(worst_inband or 1e18, e_in / q_in)
        lines.append(f"| {depth} | {fmt_rate(e_in)} | {fmt_rate(q_in)} | {ratio(e_in, q_in)} | "
                     f"{fmt_rate(e_oob)} | {fmt_rate(q_oob)} | {ratio(e_oob, q_oob)} |")
    lines.append("")
    _, qrows = isolation_rows("3-qemu", "yank", ("a-idle", "b-saturated"))
    lines += [f"Service time, worst of {PROBES} probe connections per case, as in scenario 2."]
    lines += ["OOB latency at the same fixed rate, QEMU's monitor saturated by a second client's "
              "closed-loop `query-status` (depth 8) on the other chardev. QEMU has no `stall`, "
              "so (c) has no QEMU counterpart.", "",
              "| percentile | QEMU (a) idle | QEMU (b) saturated | QEMU (b)/(a) | engine (b) | QEMU (b) / engine (b) |",
              "|---|---:|---:|---:|---:|---:|"]
    p99_ratio = None
    for label, vals, _ in qrows:
        qa, qb = vals["a-idle"], vals["b-saturated"]
        eb = iso[label]["b-saturated"]
        if label == "p99" and qb and eb:
            p99_ratio = qb / eb
        lines.append(f"| {label} | {fmt_us(qa)} | {fmt_us(qb)} | {ratio(qb, qa)} | {fmt_us(eb)} | {ratio(qb, eb)} |")
    lines += ["", "Plot: [compare-saturated.png](3-qemu/compare-saturated/compare.png).", ""]
    return worst_inband, p99_ratio


def scaling_section(lines, nproc):
    lines += ["## 4. Scaling with parser threads", "",
              f"This machine has **{nproc} cores**, so the curve has {nproc} points; the load "
              "generator runs on the same cores. Closed loop, 4 connections, depth 16.", "",
              "| parser threads | OOB ping/s | in-band ping/s | ceiling/s (OOB run) |", "|---:|---:|---:|---:|"]
    for t in range(1, nproc + 1):
        oob = load(f"4-scaling/oob-ping-t{t}")
        inb = load(f"4-scaling/inband-ping-t{t}")
        lines.append(f"| {t} | {fmt_rate(rate(oob))} | {fmt_rate(rate(inb))} | "
                     f"{fmt_rate(oob.get('ceiling_rate') if oob else None)} |")
    lines.append("")


def paced_section(lines):
    """Scenario 5: results/tools/paced.py wrote its own tables; they are taken in whole."""
    path = os.path.join(OUT, "5-paced", "summary.md")
    if not os.path.exists(path):
        return
    with open(path) as f:
        body = f.read().split("\n", 1)[1]  # its own title goes
    lines += ["## 5. Paced clients, the pipelined shape beside them, the idle engine", "",
              "From `results/tools/paced.py` ([5-paced/](5-paced), raw figures in "
              "`5-paced/runs.jsonl`).", body.replace("## Targets", "### Targets"), ""]


def failures():
    bad = []
    for root, _, files in os.walk(OUT):
        if "summary.json" in files:
            with open(os.path.join(root, "summary.json")) as f:
                s = json.load(f)
            if s.get("failures"):
                bad.append(f"{os.path.relpath(root, OUT)}: {s['failures']}")
    return bad


def main():
    facts = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(OUT, "machine.txt")) if "=" in line)
    nproc = int(facts["nproc"])
    lines = [f"# Summary: {os.path.basename(OUT)}", "",
             f"{facts['cpu']}, {nproc} cores, commit `{facts['commit'][:12]}` "
             f"(dirty: {facts['dirty']}), {facts['rustc']}. Details in [README.md](README.md).", ""]
    best_frac = throughput_section(lines)
    vs_naive = naive_section(lines)
    iso = isolation_section(lines)
    worst_inband, p99_ratio = qemu_section(lines, iso)
    scaling_section(lines, nproc)
    paced_section(lines)
    p99_a, p99_b = iso["p99"]["a-idle"], iso["p99"]["b-saturated"]
    p999_a, p999_b = iso["p99.9"]["a-idle"], iso["p99.9"]["b-saturated"]
    p999_c = iso["p99.9"]["c-stalled"]
    inb, oob = load("1-throughput/inband-ping-c4-d64"), load("1-throughput/oob-ping-c4-d64")
    ib_frac = None if not (inb and oob) else rate(inb) / rate(oob)
    cpu_ratio = (None if cost(inb, "cpu_us_per_reply") is None or not cost(oob, "cpu_us_per_reply")
                 else cost(inb, "cpu_us_per_reply") / cost(oob, "cpu_us_per_reply"))
    ib_cs = cost(inb, "switches_per_1k_replies")
    targets = [
        ("In-band `ping` ≥ 0.8 of OOB `ping` (4 conns x depth 64)", "n/a" if ib_frac is None else f"{ib_frac:.2f}x",
         verdict(None if ib_frac is None else ib_frac >= 0.8)),
        ("In-band CPU per request ≤ 1.3x OOB (4 x 64)", "n/a" if cpu_ratio is None else f"{cpu_ratio:.2f}x",
         verdict(None if cpu_ratio is None else cpu_ratio <= 1.3)),
        ("≤ 10 context switches per 1,000 in-band requests (4 x 64)", fmt_cost(ib_cs, 1),
         verdict(None if ib_cs is None else ib_cs <= 10)),
        ("In-band throughput ≥ 3x the naive tokio server (worst depth > 1)",
         "n/a" if vs_naive is None else f"{vs_naive:.2f}x", verdict(None if vs_naive is None else vs_naive >= 3)),
        ("OOB p99.9 service saturated ≤ 1.5x idle (worst probe)", f"{ratio(p999_b, p999_a)} ({fmt_us(p999_b)} vs {fmt_us(p999_a)})",
         verdict(None if not (p999_a and p999_b) else p999_b <= 1.5 * p999_a)),
        ("Pipelined OOB `ping` ≥ 70% of the echo ceiling (best depth > 1)",
         "n/a" if best_frac is None else f"{100 * best_frac:.0f}%",
         verdict(None if best_frac is None else best_frac >= 0.7)),
        ("OOB p99 saturated ≤ 2x idle", f"{ratio(p99_b, p99_a)} ({fmt_us(p99_b)} vs {fmt_us(p99_a)})",
         verdict(None if not (p99_a and p99_b) else p99_b <= 2 * p99_a)),
        ("OOB p99.9 service stalled < 1 ms", fmt_us(p999_c), verdict(None if p999_c is None else p999_c < 1000)),
        ("In-band throughput ≥ 20x QEMU (worst depth)", "n/a" if worst_inband is None else f"{worst_inband:.1f}x",
         verdict(None if worst_inband is None else worst_inband >= 20)),
        ("OOB p99 saturated ≥ 10x lower than QEMU's", "n/a" if p99_ratio is None else f"{p99_ratio:.1f}x",
         verdict(None if p99_ratio is None else p99_ratio >= 10)),
    ]
    lines += ["## Targets (loadgen scenarios; the peek targets are in criterion.txt / `cargo test -p bench`)", "",
              "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in targets] + [""]
    bad = failures()
    lines += ["## Verification", "",
              "Every loadgen run verifies every reply (ids, duplicates, order). " +
              ("All runs passed." if not bad else "Runs with failures:"), ""]
    lines += [f"- {b}" for b in bad] + [""]
    with open(os.path.join(OUT, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    write_readme(facts)


def write_readme(facts):
    commands = open(os.path.join(OUT, "commands.txt")).read()
    readme = f"""# Results run: {os.path.basename(OUT)}

Produced by `results/run.sh` ({'--quick' if facts['quick'] == '1' else 'full run'}); the tables
are in [summary.md](summary.md), generated by `results/tools/summarize.py` from the runs'
`summary.json`.

## Machine and build

| | |
|---|---|
| commit | `{facts['commit']}` (uncommitted changes: {facts['dirty']}, see git-status.txt) |
| rustc | `{facts['rustc']}` |
| CPU | {facts['cpu']} |
| cores | {facts['nproc']} (`nproc`) |
| kernel | {facts['kernel']} |
| QEMU | {facts.get('qemu', 'not run')} |
| pinning | the engine with default flags pins its parser threads and the executor alone on the last core; clients are unpinned, sharing every core, and sleep between sends in the isolation scenarios (`--spin off`); QEMU itself unpinned |
| load at start | {facts['load_at_start']} (1/5/15-min `/proc/loadavg`) |
| started / finished | {facts['started']} / {facts['finished']} (UTC) |
| durations | {facts['duration']} |

## Layout

- `5-paced/`: `results/tools/paced.py`'s runs (`runs/`), raw figures (`runs.jsonl`) and
  tables (`summary.md`).
- `1-throughput/`, `2-isolation/`, `3-qemu/`, `4-scaling/`: one loadgen run per folder
  (`summary.json`, `report.txt`, `<lane>.hgrm` raw histograms, `intervals.csv`,
  `percentiles.png`), its console output beside it as `<run>.txt`.
- `*/compare/`: `loadgen compare` side by side (`compare.txt`, `compare.png`).
- `criterion.txt`: `cargo bench -p bench` output (when run).
- `machine.txt`, `commands.txt`, `git-status.txt`, `engine.log`, `qemu.log`.

## Exact commands, in order

```
{commands}```
"""
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(readme)


if __name__ == "__main__":
    main()
