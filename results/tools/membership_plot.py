#!/usr/bin/env python3
"""Plots a membership run (results/tools/membership.py OUT_DIR) into OUT_DIR/membership.png
and .svg: commits/s over time (the leader's counter per 500 ms, and loadgen's replies per
500-ms interval), loadgen's p50 and p99 per interval, and who is a voter, a learner or the
leader, with the join and each removal marked. Needs matplotlib.

    results/tools/membership_plot.py OUT_DIR"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from membership_figures import BUCKET, Run, commit_rate, figures, intervals  # noqa: E402

STATE_STYLE = {"learner": ("tab:orange", 4), "voter": ("tab:blue", 8),
               "leader": ("tab:red", 8)}


def markers(f):
    """(t, colour, style, label or None) for each vertical marker: a removal's request,
    reply and exit fall within a few ms of each other, so they share one label unless the
    exit came much later; so do the join's start and vote when under a second apart."""
    j = f["join"]
    if j["voter_t"] is None:
        out = [(j["start_t"], "tab:green", "--", "member 4 starts (--join), never votes")]
    elif j["to_voter_s"] < 1.0:  # one label: two would overlap
        out = [(j["start_t"], "tab:green", "--", None),
               (j["voter_t"], "tab:green", "-",
                "member 4 starts (--join), votes %.1f s later" % j["to_voter_s"])]
    else:
        out = [(j["start_t"], "tab:green", "--", "member 4 starts (--join)"),
               (j["voter_t"], "tab:green", "-", "member 4 votes (+%.1f s)" % j["to_voter_s"])]
    for key, colour in (("remove_follower", "tab:purple"), ("remove_leader", "tab:red")):
        r = f[key]
        if r is not None:
            out += removal_markers(r, colour, "follower" if key == "remove_follower"
                                   else "leader")
    return out


def removal_markers(r, colour, what):
    label = "remove %s %s" % (what, r["node"])
    if r["reply_t"] is None:
        return [(r["request_t"], colour, "--", label + ": no reply")]
    label += ": reply in %.0f ms" % r["latency_ms"]
    out = [(r["request_t"], colour, "--", None)]
    stopped = r["stopped"]
    if stopped and stopped["t"] - r["reply_t"] < 1.0:
        label += ", exits %.1f s later" % (stopped["t"] - r["reply_t"])
    elif stopped:
        out.append((stopped["t"], colour, ":", "member %s exits: %s" % (
            r["node"], "SIGKILL, SIGTERM ignored for %.0f s" % stopped["after_s"]
            if stopped["exited"] == "SIGKILL" else "SIGTERM")))
    out.append((r["reply_t"], colour, "-", label))
    return out


def annotate(ax, f):
    """Says in words what the two troughs are, where the data show them."""
    r = f["remove_follower"]
    stopped = r and r["stopped"]
    if stopped and stopped["exited"] == "SIGKILL" and r["reply_t"] is not None:
        ax.text((r["reply_t"] + stopped["t"]) / 2, 1800,
                "removed member %s\nanswers none of its\nclients' pending requests"
                % r["node"], ha="center", fontsize=8, color="tab:purple")
    lc = f["leader_change"]
    if lc and lc["gap_s"] and lc["gap_s"] > 0.5:
        ax.text(lc["new_leads_t"] + 0.3, 1200, "no leader for %.1f s\n(the old one was "
                "stopped\nbefore handing over)" % lc["gap_s"], fontsize=8, color="tab:red")


def segments(run):
    """{node: [(start, width, state)]} from the leader's member list at each sample."""
    leads = sorted(run.leader_samples(), key=lambda s: s["t"])
    out = {}
    for s, nxt in zip(leads, leads[1:] + [None]):
        # A gap in the samples (no member leading) stays blank: at most two periods.
        width = min((nxt["t"] if nxt else s["t"] + 0.1) - s["t"], 0.2)
        for m in s["members"]:
            state = "leader" if m["node"] == s["node"] else (
                "voter" if m["voter"] else "learner")
            out.setdefault(m["node"], []).append((s["t"], width, state))
    return out


def draw_rate(ax, run, f):
    rate = commit_rate(run)
    ax.step([t for t, _ in rate], [r for _, r in rate], where="post", color="black",
            label="commits/s (leader's counter, per 500 ms)")
    lg = intervals(run.out)
    ax.step([t for t, *_ in lg], [c / BUCKET for _, c, _, _ in lg], where="post",
            color="tab:gray", alpha=0.7, linewidth=0.9,
            label="replies/s to loadgen (500-ms intervals, errors included)")
    ax.axhline(5000, color="tab:gray", linestyle=":", linewidth=0.8)
    ax.set_ylabel("per second")
    ax.set_ylim(0, max(r for _, r in rate) * 1.35)
    ax.legend(loc="lower left", fontsize=8)


def draw_latency(ax, run):
    lg = intervals(run.out)
    ts = [t for t, *_ in lg]
    ax.step(ts, [p50 / 1000 for *_, p50, _ in lg], where="post", label="p50", color="tab:blue")
    ax.step(ts, [p99 / 1000 for *_, p99 in lg], where="post", label="p99", color="tab:red")
    ax.set_yscale("log")
    ax.set_ylabel("add latency (ms,\ncorrected, per 500 ms)")
    ax.legend(loc="upper left", fontsize=8)


def draw_members(ax, run):
    segs = segments(run)
    nodes = sorted(segs)
    labelled = set()
    for i, node in enumerate(nodes):
        for state, (colour, width) in STATE_STYLE.items():
            spans = [(t, w) for t, w, s in segs[node] if s == state]
            if spans:
                ax.broken_barh(spans, (i - width / 40, width / 20), color=colour,
                               label=None if state in labelled else state)
                labelled.add(state)
    ax.set_yticks(range(len(nodes)))
    ax.set_yticklabels(["member %d" % n for n in nodes])
    ax.set_ylim(-0.7, len(nodes) - 0.3)
    ax.set_ylabel("leader's view")
    ax.legend(loc="lower left", fontsize=8, ncol=3)


def plot(out):
    run, f = Run(out), figures(out)
    fig, (ax_rate, ax_lat, ax_mem) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.4]})
    draw_rate(ax_rate, run, f)
    draw_latency(ax_lat, run)
    draw_members(ax_mem, run)
    top = ax_rate.get_ylim()[1]
    for t, colour, style, label in markers(f):
        for ax in (ax_rate, ax_lat, ax_mem):
            ax.axvline(t, color=colour, linestyle=style, linewidth=1)
        if label:
            ax_rate.text(t, top * 0.98, " " + label, rotation=90, va="top", fontsize=7,
                         color=colour, ha="right" if style == "--" else "left")
    annotate(ax_rate, f)
    for ax in (ax_rate, ax_lat, ax_mem):
        ax.grid(True, alpha=0.3)
    ax_mem.set_xlim(0, run.plan["end"])
    ax_mem.set_xlabel("seconds since loadgen's measured window began (5,000 counter-add/s "
                      "offered)")
    fig.suptitle("3 members + 1 joining, then a follower and the leader removed, under "
                 "5,000 adds/s")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "membership.png"), dpi=100)
    fig.savefig(os.path.join(out, "membership.svg"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    plot(sys.argv[1])
