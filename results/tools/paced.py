#!/usr/bin/env python3
"""The paced section of the results suite: servers side by side in one sitting, loaded by
clients that sleep between sends (loadgen --spin off: 1 ns timer slack, no early-wake spin)
at fixed rates, plus the pipelined shape beside it and the idle server's CPU.

For every run the server's CPU comes from /proc/PID/task/*/schedstat (ns on the CPU, not
tick-based utime/stime) and its context switches from /proc/PID/task/*/status (voluntary +
involuntary), both read at the start and the end of loadgen's measured window (the runs are
aligned with --start-at), and divided by the replies loadgen recorded in that window.

Usage:
  results/tools/paced.py OUT_DIR --server LABEL=KIND:COMMAND ... [options]
    KIND engine: COMMAND is an engine binary and its flags (`--qmp tcp:127.0.0.1:0` added)
    KIND tokio:  COMMAND is a bench QMP server (naive-qmp, tuned-qmp) and its flags
                 (`tcp:127.0.0.1:0` added); OOB cases are skipped for it unless --tokio-oob
    COMMAND may start with `env VAR=VALUE`.
  options: --rates 1000,5000,20000  --connections 4  --duration 10  --warmup 2  --reps 3
           --pipelined (4 connections x depth 64, both lanes)  --idle SECONDS (0: none)
           --isolation (per engine: OOB ping 2,000/s from 4 fresh connections, executor idle
           and saturated by closed-loop `work`; worst probe's service p99.9)
           --lanes inband,oob  --loadgen PATH  --client-cpus LIST (taskset -c for loadgen)
           --summarize-only (rewrite summary.md from runs.jsonl)
Servers run one at a time, a fresh process per run; within a case the servers alternate,
rep by rep, so drift on a shared machine spreads over all of them. Prints summary.md.
Wrap it in `flock /tmp/loadtest.lock` on a machine where others run load tests. Stdlib only.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

from engine_proc import thread_times

LANES = {"inband": "name=ping,cmd=ping", "oob": "name=ping,cmd=ping,oob"}


def snapshot(pid):
    """(CPU ns, context switches, per-thread {comm: [ns, voluntary, involuntary]}) summed
    over the tasks."""
    cpu = switches = 0
    threads = {}
    for comm, ns, vol, invol in thread_times(pid).values():
        cpu += ns
        switches += vol + invol
        t = threads.setdefault(comm, [0, 0, 0])
        t[0] += ns
        t[1] += vol
        t[2] += invol
    return cpu, switches, threads


def diff(a, b):
    threads = {k: [x - y for x, y in zip(v, a[2].get(k, [0, 0, 0]))] for k, v in b[2].items()}
    return b[0] - a[0], b[1] - a[1], threads


def sleep_until(t):
    while True:
        left = t - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


class Server:
    def __init__(self, spec):
        label, rest = spec.split("=", 1)
        kind, command = rest.split(":", 1)
        if kind not in ("engine", "tokio"):
            sys.exit(f"paced.py: unknown server kind {kind!r} in {spec!r}")
        self.label, self.kind, self.argv = label, kind, shlex.split(command)
        self.proc = None

    def start(self, log):
        # `env VAR=VALUE binary ...` works too: env execs the server under the same pid.
        argv = ([*self.argv, "--qmp", "tcp:127.0.0.1:0"] if self.kind == "engine"
                else [*self.argv, "tcp:127.0.0.1:0"])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
        line = self.proc.stdout.readline().decode().strip()
        self.addr = "tcp:" + line.rsplit("tcp:", 1)[1]
        return argv

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def run_load(args, server, out, name, lane, extra):
    """One loadgen run against a fresh server; returns the measured record."""
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    folder = os.path.join(out, "runs", name)
    with open(os.path.join(out, "servers.log"), "ab") as log:
        argv = server.start(log)
        try:
            start_at = time.time() + 1.0  # connections are made first
            pin = ["taskset", "-c", args.client_cpus] if args.client_cpus else []
            cmd = [*pin, args.loadgen, "-r", server.addr, "-c", str(args.connections), "--lane", lane,
                   *extra, "-d", f"{args.duration}s", "--warmup", f"{args.warmup}s",
                   "--spin", "off", "--start-at", f"{start_at:.6f}", "--label", name, "-o", folder]
            with open(os.path.join(out, "commands.txt"), "a") as f:
                f.write(shlex.join(argv) + "\n" + shlex.join(cmd) + "\n")
            load_before = loadavg()
            with open(folder + ".txt", "w") as report:
                gen = subprocess.Popen(cmd, stdout=report, stderr=subprocess.STDOUT)
                sleep_until(start_at + args.warmup)
                a = snapshot(server.proc.pid)
                sleep_until(start_at + args.warmup + args.duration)
                b = snapshot(server.proc.pid)
                rc = gen.wait()
        finally:
            server.stop()
    cpu, switches, threads = diff(a, b)
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    lane_summary = summary["lanes"][0]
    replies = lane_summary["corrected"]["count"]
    counts = lane_summary["counts"]
    ok = rc == 0 and counts["ok"] == counts["sent"]
    return {
        "name": name, "server": server.label, "loadgen_rc": rc, "ok": ok,
        "replies": replies, "rate": lane_summary["rate"], "cpu_ns": cpu, "switches": switches,
        "cpu_us_per_req": cpu / 1e3 / max(replies, 1),
        "switches_per_req": switches / max(replies, 1),
        "p50_us": lane_summary["corrected"]["p50"], "service_p50_us": lane_summary["service"]["p50"],
        "p99_us": lane_summary["corrected"]["p99"], "threads": threads,
        "load_before": load_before, "load_after": loadavg(),
    }


PROBES = 4
PROBE_S = 4


def isolation(args, server, out):
    """OOB `ping` at 2,000/s from PROBES fresh connections in turn (each lands on some parser
    thread), with the executor (a) idle and (b) saturated by a closed-loop `work` client;
    the worst probe's service-time p99.9 of each case."""
    folder = os.path.join(out, "isolation")
    os.makedirs(folder, exist_ok=True)
    worst = {}
    with open(os.path.join(out, "servers.log"), "ab") as log:
        argv = server.start(log)
        cmds = [shlex.join(argv)]
        try:
            for case in ("a-idle", "b-saturated"):
                saturator = None
                if case == "b-saturated":
                    sat = [args.loadgen, "-r", server.addr, "-c", "1", "--depth", "16", "--lane",
                           'name=work,cmd=work,args={"us":20}', "-d", f"{PROBES * (PROBE_S + 2) + 3}s",
                           "--warmup", "0s", "--spin", "off", "--no-save"]
                    cmds.append(shlex.join(sat) + " &")
                    saturator = subprocess.Popen(sat, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                    time.sleep(1)
                values = []
                for probe in range(1, PROBES + 1):
                    name = f"{server.label}-{case}-p{probe}"
                    cmd = [args.loadgen, "-r", server.addr, "-c", "1", "--lane",
                           "name=oob,cmd=ping,oob,rate=2000", "-d", f"{PROBE_S}s", "--warmup", "500ms",
                           "--spin", "off", "--label", name, "-o", os.path.join(folder, name)]
                    cmds.append(shlex.join(cmd))
                    with open(os.path.join(folder, name + ".txt"), "w") as report:
                        subprocess.run(cmd, stdout=report, stderr=subprocess.STDOUT)
                    with open(os.path.join(folder, name, "summary.json")) as f:
                        values.append(json.load(f)["lanes"][0]["service"]["p999"])
                if saturator:
                    saturator.kill()
                    saturator.wait()
                worst[case] = max(values)
        finally:
            server.stop()
    with open(os.path.join(out, "commands.txt"), "a") as f:
        f.write("\n".join(cmds) + "\n")
    return {"name": f"isolation-{server.label}", "server": server.label, "isolation": worst,
            "ratio": worst["b-saturated"] / worst["a-idle"], "load": loadavg()}


def idle(args, server, out):
    with open(os.path.join(out, "servers.log"), "ab") as log:
        argv = server.start(log)
        with open(os.path.join(out, "commands.txt"), "a") as f:
            f.write(shlex.join(argv) + f"  # idle, no client, {args.idle} s\n")
        try:
            time.sleep(2)
            a = snapshot(server.proc.pid)
            time.sleep(args.idle)
            b = snapshot(server.proc.pid)
        finally:
            server.stop()
    cpu, switches, threads = diff(a, b)
    return {"name": f"idle-{server.label}", "server": server.label, "seconds": args.idle,
            "cpu_ns": cpu, "core_percent": cpu / 1e9 / args.idle * 100,
            "switches_per_s": switches / args.idle, "threads": threads, "load": loadavg()}


def median(records, key):
    values = [r[key] for r in records]
    return statistics.median(values) if values else None


def fmt_range(records, key, digits):
    values = sorted(r[key] for r in records)
    if not values:
        return "-"
    med = f"{statistics.median(values):.{digits}f}"
    return med if len(values) == 1 else f"{med} [{values[0]:.{digits}f}–{values[-1]:.{digits}f}]"


def summarize(args, servers, records, idles, isolations=()):
    lines = [f"# Paced section ({time.strftime('%Y-%m-%d', time.gmtime())})", "",
             f"{args.connections} connections, loadgen --spin off, {args.duration} s measured after "
             f"{args.warmup} s warm-up, median of {args.reps} fresh servers [min–max]; CPU from "
             "schedstat, context switches from status, per reply in the measured window; p50 of "
             "the latency from the intended send time.", ""]
    cases = []
    for rate in args.rates:
        for lane in args.lanes:
            cases.append((f"paced {rate}/s {lane}", f"paced-{rate}-{lane}"))
    if args.pipelined:
        for lane in args.lanes:
            cases.append((f"pipelined 4x64 {lane}", f"pipelined-{lane}"))
    lines += ["| case | server | CPU µs/req | switches/req | p50 µs | replies/s | ok |",
              "|---|---|---:|---:|---:|---:|---|"]
    for title, key in cases:
        for s in servers:
            rs = [r for r in records if r["case"] == key and r["server"] == s.label]
            if not rs:
                continue
            lines.append(f"| {title} | {s.label} | {fmt_range(rs, 'cpu_us_per_req', 2)} | "
                         f"{fmt_range(rs, 'switches_per_req', 3)} | {fmt_range(rs, 'p50_us', 1)} | "
                         f"{fmt_range(rs, 'rate', 0)} | {all(r['ok'] for r in rs)} |")
    if idles:
        lines += ["", f"Idle server, no client, {args.idle:g} s:", "",
                  "| server | CPU, % of a core | context switches/s |", "|---|---:|---:|"]
        for r in idles:
            lines.append(f"| {r['server']} | {r['core_percent']:.3f} | {r['switches_per_s']:.1f} |")
    if isolations:
        lines += ["", f"OOB `ping` at 2,000/s, service time p99.9, worst of {PROBES} fresh probe "
                  "connections, executor idle and saturated by a closed-loop `work` client:", "",
                  "| server | idle µs | saturated µs | saturated / idle |", "|---|---:|---:|---:|"]
        for r in isolations:
            lines.append(f"| {r['server']} | {r['isolation']['a-idle']:.1f} | "
                         f"{r['isolation']['b-saturated']:.1f} | {r['ratio']:.2f}x |")
    lines += targets(args, servers, records, idles, isolations)
    return "\n".join(lines) + "\n"


def targets(args, servers, records, idles, isolations):
    """Issue 19's targets for every engine server, against the first tokio server: medians
    of the same sitting."""
    tokio = next((s.label for s in servers if s.kind == "tokio"), None)

    def med(case, server, key):
        rs = [r for r in records if r["case"] == case and r["server"] == server]
        return median(rs, key)

    def check(value, ok, fmt):
        if value is None:
            return "n/a", "n/a"
        return fmt.format(value), "met" if ok(value) else "**missed**"

    def ratio(a, b):
        return None if a is None or not b else a / b

    out = ["", "## Targets (issue 19), medians of this sitting", "",
           "| server | target | measured | verdict |", "|---|---|---|---|"]
    for s in (s for s in servers if s.kind == "engine"):
        rows = []
        for rate in args.rates:
            ib, oob = f"paced-{rate}-inband", f"paced-{rate}-oob"
            cpu = med(ib, s.label, "cpu_us_per_req")
            rows.append((f"{rate}/s: in-band CPU ≤ 1.5x OOB's",
                         *check(ratio(cpu, med(oob, s.label, "cpu_us_per_req")), lambda v: v <= 1.5, "{:.2f}x")))
            if tokio:
                rows.append((f"{rate}/s: in-band CPU ≤ 0.5x {tokio}'s",
                             *check(ratio(cpu, med(ib, tokio, "cpu_us_per_req")), lambda v: v <= 0.5, "{:.2f}x")))
            rows.append((f"{rate}/s: ≤ 1.3 context switches per in-band request",
                         *check(med(ib, s.label, "switches_per_req"), lambda v: v <= 1.3, "{:.2f}")))
            p50, oob_p50 = med(ib, s.label, "p50_us"), med(oob, s.label, "p50_us")
            gap = None if p50 is None or oob_p50 is None else p50 - oob_p50
            rows.append((f"{rate}/s: in-band p50 ≤ OOB p50 + 25 µs",
                         *check(gap, lambda v: v <= 25, "{:+.1f} µs")))
        if args.pipelined:
            ib, oob = "pipelined-inband", "pipelined-oob"
            rate = med(ib, s.label, "rate")
            rows.append(("pipelined: in-band ≥ 0.75 of OOB",
                         *check(ratio(rate, med(oob, s.label, "rate")), lambda v: v >= 0.75, "{:.2f}x")))
            if tokio:
                rows.append((f"pipelined: in-band ≥ 1.8x {tokio}",
                             *check(ratio(rate, med(ib, tokio, "rate")), lambda v: v >= 1.8, "{:.2f}x")))
            rows.append(("pipelined: in-band CPU ≤ 1.5x OOB's",
                         *check(ratio(med(ib, s.label, "cpu_us_per_req"), med(oob, s.label, "cpu_us_per_req")),
                                lambda v: v <= 1.5, "{:.2f}x")))
        idle = next((r for r in idles if r["server"] == s.label), None)
        if idle:
            rows.append((f"idle {args.idle:g} s: ≤ 0.5% of a core",
                         *check(idle["core_percent"], lambda v: v <= 0.5, "{:.3f}%")))
        iso = next((r for r in isolations if r["server"] == s.label), None)
        if iso:
            rows.append(("OOB service p99.9 saturated ≤ 2.5x idle (worst probe)",
                         *check(iso["ratio"], lambda v: v <= 2.5, "{:.2f}x")))
        out += [f"| {s.label} | {t} | {m} | {v} |" for t, m, v in rows]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--server", action="append", required=True)
    p.add_argument("--rates", default="1000,5000,20000")
    p.add_argument("--lanes", default="inband,oob")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pipelined", action="store_true")
    p.add_argument("--no-paced", action="store_true")
    p.add_argument("--idle", type=float, default=0)
    p.add_argument("--isolation", action="store_true",
                   help="OOB isolation per engine server: idle vs saturated executor")
    p.add_argument("--tokio-oob", action="store_true")
    p.add_argument("--loadgen", default="target/release/loadgen")
    p.add_argument("--client-cpus", help="pin loadgen to these CPUs (taskset -c)")
    p.add_argument("--summarize-only", action="store_true",
                   help="rewrite summary.md from OUT_DIR/runs.jsonl without running anything")
    args = p.parse_args()
    args.rates = [] if args.no_paced else [int(r) for r in args.rates.split(",") if r]
    args.lanes = args.lanes.split(",")
    servers = [Server(s) for s in args.server]
    if args.summarize_only:
        with open(os.path.join(args.out, "runs.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        text = summarize(args, servers, [r for r in rows if "case" in r],
                         [r for r in rows if "core_percent" in r],
                         [r for r in rows if "isolation" in r])
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(text)
        print(text)
        return
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "machine.txt"), "a") as f:
        f.write(f"started={time.strftime('%FT%TZ', time.gmtime())}\nload_at_start={loadavg()}\n")
    records, idles, isolations = [], [], []
    raw = open(os.path.join(args.out, "runs.jsonl"), "a")

    def note(record):
        raw.write(json.dumps(record) + "\n")
        raw.flush()
        print(f"{record['name']}: " + ", ".join(
            f"{k} {record[k]:.3f}" if isinstance(record[k], float) else f"{k} {record[k]}"
            for k in ("cpu_us_per_req", "switches_per_req", "p50_us", "rate", "ok", "load_before")
            if k in record), file=sys.stderr)

    shapes = [(f"paced-{rate}-{lane}", LANES[lane], ["--rate", str(rate)])
              for rate in args.rates for lane in args.lanes]
    if args.pipelined:
        shapes += [(f"pipelined-{lane}", LANES[lane], ["--depth", "64"]) for lane in args.lanes]
    for case, lane, extra in shapes:
        for rep in range(1, args.reps + 1):
            for s in servers:
                if s.kind == "tokio" and "oob" in case and not args.tokio_oob:
                    continue
                record = run_load(args, s, args.out, f"{case}-{s.label}-r{rep}", lane, extra)
                record["case"] = case
                records.append(record)
                note(record)
    if args.idle > 0:
        for s in servers:
            record = idle(args, s, args.out)
            idles.append(record)
            raw.write(json.dumps(record) + "\n")
            print(f"{record['name']}: {record['core_percent']:.3f}% of a core", file=sys.stderr)
    if args.isolation:
        for s in (s for s in servers if s.kind == "engine"):
            record = isolation(args, s, args.out)
            isolations.append(record)
            raw.write(json.dumps(record) + "\n")
            raw.flush()
            print(f"{record['name']}: {record['isolation']}", file=sys.stderr)
    with open(os.path.join(args.out, "machine.txt"), "a") as f:
        f.write(f"finished={time.strftime('%FT%TZ', time.gmtime())}\nload_at_end={loadavg()}\n")
    text = summarize(args, servers, records, idles, isolations)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
