#!/usr/bin/env python3
"""Plots a soak (results/tools/soak.sh OUT_DIR): the engine's RSS and open descriptors
(samples.csv, from /proc) and loadgen's per-interval p99 by lane (soak/intervals.csv) over
time, into OUT_DIR/soak.png and soak.svg, and prints (and writes to drift.txt) how each moved:
first against last 5 minutes. Needs matplotlib.

    results/tools/soak_plot.py OUT_DIR"""

import csv
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WARMUP_S = 5  # soak.sh's --warmup: loadgen's interval times start after it
WINDOW_S = 300


def main():
    out = sys.argv[1]
    start = float(open(f"{out}/soak-start.txt").read())
    rows = list(csv.DictReader(open(f"{out}/samples.csv")))
    t = [(float(r["t"]) - start) / 60 for r in rows]
    rss = [int(r["rss_bytes"]) / 2**20 for r in rows]
    fds = [int(r["fds"]) for r in rows]
    lanes = {}
    for r in csv.DictReader(open(f"{out}/soak/intervals.csv")):
        lane = lanes.setdefault(r["lane"], ([], [], []))
        lane[0].append((float(r["start_s"]) + WARMUP_S) / 60)
        lane[1].append(float(r["p99_us"]) / 1000)
        lane[2].append(float(r["rate_per_s"]))

    fig, (ax_rss, ax_fd, ax_p99) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    ax_rss.plot(t, rss, color="tab:blue")
    ax_rss.set_ylabel("engine RSS (MiB)")
    ax_rss.set_ylim(0, max(rss) * 1.2)
    ax_fd.plot(t, fds, color="tab:green")
    ax_fd.set_ylabel("engine open fds")
    ax_fd.set_ylim(0, max(fds) * 1.5)
    for name, (x, p99, _) in lanes.items():
        ax_p99.plot(x, p99, label=f"{name} p99", linewidth=0.8)
    ax_p99.set_yscale("log")
    ax_p99.set_ylabel("p99 per 5 s interval (ms)")
    ax_p99.set_xlabel("minutes since the soak started")
    ax_p99.legend()
    fig.suptitle(open(f"{out}/rate.txt").read().strip())
    for ax in (ax_rss, ax_fd, ax_p99):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(f"{out}/soak.png", dpi=100)
    fig.savefig(f"{out}/soak.svg")

    end = t[-1]
    def window(xs, ys, first):
        lo, hi = (0, WINDOW_S / 60) if first else (end - WINDOW_S / 60, end)
        return [y for x, y in zip(xs, ys) if lo <= x <= hi] or [float("nan")]
    lines = [f"samples: {len(rows)} over {end:.1f} min"]
    for name, xs, ys, unit in [("RSS", t, rss, "MiB"), ("fds", t, fds, "")]:
        a, b = window(xs, ys, True), window(xs, ys, False)
        lines.append(f"{name}: min {min(ys):.1f} max {max(ys):.1f} {unit}; mean first 5 min "
                     f"{statistics.mean(a):.1f}, last 5 min {statistics.mean(b):.1f}")
    for name, (x, p99, rate) in lanes.items():
        a, b = window(x, p99, True), window(x, p99, False)
        lines.append(f"{name}: p99 median first 5 min {statistics.median(a):.3f} ms, last 5 min "
                     f"{statistics.median(b):.3f} ms, worst interval {max(p99):.3f} ms; "
                     f"rate mean {statistics.mean(rate):.0f}/s")
    text = "\n".join(lines)
    print(text)
    open(f"{out}/drift.txt", "w").write(text + "\n")


if __name__ == "__main__":
    main()
