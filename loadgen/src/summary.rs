//! `RunSummary`: the numbers of a finished run as plain, serializable data.
//!
//! This is what `summary.json` holds, what the terminal table prints, what `compare` reads
//! back and what integration tests assert on. Built once from the merged recorders after
//! the run; latencies in microseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error_texts::ErrorTexts;
use crate::recorder::{LaneCounts, RemoteCounts, Verification};
use crate::server_cost::ServerCost;

/// Latency percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Reads the percentiles of a nanosecond histogram.
    pub(crate) fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        let q = |q: f64| us(h.value_at_quantile(q));
        Percentiles {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1e3,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: us(h.max()),
        }
    }

    /// `(label, value)` pairs in table order.
    pub fn columns(&self) -> [(&'static str, f64); 7] {
        [
            ("min", self.min),
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p999),
            ("p99.99", self.p9999),
            ("max", self.max),
        ]
    }
}

/// One row of the report: a lane, a command (lanes merged), or the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSummary {
    /// Lane name, command name, or `total`.
    pub name: String,
    /// Command name (for a lane row).
    pub command: String,
    /// Sent out-of-band.
    pub oob: bool,
    /// Intended rate in requests/s (open loop).
    pub target_rate: Option<f64>,
    /// Whole-run counters.
    pub counts: LaneCounts,
    /// Replies recorded in the measured window per second of it.
    pub rate: f64,
    /// Latency from the intended send time.
    pub corrected: Percentiles,
    /// Latency from the actual send time.
    pub service: Percentiles,
}

/// One remote's connection history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteSummary {
    /// Address as given.
    pub address: String,
    /// Counters.
    pub counts: RemoteCounts,
}

/// Which verification checks a run made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checks {
    /// Every reply matched to its request by id (duplicates, unknown ids and missing replies
    /// are errors). On unless the protocol's replies carry no id (etcd's HTTP gateway), where
    /// each reply answers the oldest request outstanding on its connection.
    pub ids: bool,
    /// In-band replies checked to come back in request order on each connection.
    pub order: bool,
    /// Why `order` is on or off (`the protocol promises it`, `--no-verify-order`, ...).
    pub order_reason: String,
}

impl Default for Checks {
    /// What summaries written before the checks were recorded did: both checks.
    fn default() -> Self {
        Checks { ids: true, order: true, order_reason: "always (older loadgen)".into() }
    }
}

/// Whether the drivers spun before sends, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpinUsed {
    /// The drivers spun through the last stretch before each send.
    pub spin: bool,
    /// Why (`auto: local server, 2 cores <= 4`, `--spin on`, ...).
    pub reason: String,
}

/// Everything a run measured, plus what it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Free-form label.
    pub label: String,
    /// Wall-clock start (RFC 3339, UTC).
    pub started: String,
    /// The command line, when run from the binary.
    pub command: Option<String>,
    /// `loadgen` version.
    pub version: String,
    /// Protocol (`qmp`, `jsonrpc`, `echo`).
    pub protocol: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Closed-loop depth per connection.
    pub depth: Option<usize>,
    /// Client connections.
    pub connections: usize,
    /// Driver threads.
    pub threads: usize,
    /// Warm-up in seconds.
    pub warmup_s: f64,
    /// Measured window in seconds.
    pub duration_s: f64,
    /// Lanes, in configuration order.
    pub lanes: Vec<RowSummary>,
    /// Lanes merged by command.
    pub commands: Vec<RowSummary>,
    /// All lanes merged.
    pub total: RowSummary,
    /// Per-remote connection history.
    pub remotes: Vec<RemoteSummary>,
    /// Protocol findings.
    pub verification: Verification,
    /// Which checks produced them.
    #[serde(default)]
    pub checks: Checks,
    /// What the error replies said, per lane, most frequent first.
    #[serde(default)]
    pub error_texts: ErrorTexts,
    /// Actual − intended send time over all requests (how far the sender lagged).
    pub send_lag: Percentiles,
    /// Loopback echo ceiling in requests/s for the same shape, if measured.
    pub ceiling_rate: Option<f64>,
    /// Whether errors were expected (`--expect-errors`).
    pub expect_errors: bool,
    /// Why the run failed verification; empty when it passed.
    pub failures: Vec<String>,
    /// The server's cost over the measured window (`--server-pid`, or the embedded engine).
    #[serde(default)]
    pub server: Option<ServerCost>,
    /// The drivers' early-wake spin.
    #[serde(default)]
    pub spin: SpinUsed,
}

impl RunSummary {
    /// True when verification found nothing wrong.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Reasons the run fails, given its counters.
    pub(crate) fn judge(total: &LaneCounts, v: &Verification, expect_errors: bool) -> Vec<String> {
        let mut failures = Vec::new();
        let mut check = |n: u64, what: &str| {
            if n > 0 {
                failures.push(format!("{n} {what}"));
            }
        };
        check(v.duplicates, "duplicate replies");
        check(v.unknown_ids, "replies with unknown ids");
        check(v.out_of_order, "in-band replies out of order");
        check(v.protocol_errors, "protocol errors");
        if !expect_errors {
            check(total.errors, "error replies");
            check(total.failed, "requests failed on dropped connections");
            check(total.missing, "requests without a reply at the end");
            check(total.unsent, "requests never sent (no connection)");
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_separates_violations_from_expected_errors() {
        let total = LaneCounts { sent: 10, ok: 7, failed: 3, ..LaneCounts::default() };
        let clean = Verification::default();
        assert_eq!(
            RunSummary::judge(&total, &clean, false),
            vec!["3 requests failed on dropped connections"]
        );
        assert!(RunSummary::judge(&total, &clean, true).is_empty());
        let dup = Verification { duplicates: 2, ..Verification::default() };
        assert_eq!(RunSummary::judge(&total, &dup, true), vec!["2 duplicate replies"]);
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = crate::recorder::histogram();
        for ns in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(ns).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 4);
        assert!((p.min - 1.0).abs() < 0.01 && (p.p50 - 2.0).abs() < 0.01);
        assert!((p.max - 1000.0).abs() < 1.0);
    }
}
