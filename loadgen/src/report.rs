//! Text renderings of a run: the terminal table, HdrHistogram's `.hgrm` percentile
//! distribution, and the interval log as HdrHistogram `.hlog` and as CSV.
//!
//! Pure formatting over finished data (no I/O here; `output` writes the files). The `.hgrm`
//! layout is byte-compatible with Java HdrHistogram's `outputPercentileDistribution`
//! (values in milliseconds), which HdrHistogram's plotter and wrk2 users read.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::error_texts::{ErrorTexts, KEPT};
use crate::server_cost::ServerCost;
use crate::summary::{Percentiles, RowSummary, RunSummary};

/// Formats a latency given in µs with a unit chosen for 3-4 significant digits.
pub fn fmt_us(us: f64) -> String {
    match us {
        0.0 => "-".into(),
        x if x < 1.0 => format!("{:.0}ns", x * 1e3),
        x if x < 1e3 => format!("{x:.1}µs"),
        x if x < 1e6 => format!("{:.2}ms", x / 1e3),
        x => format!("{:.2}s", x / 1e6),
    }
}

/// Formats a count with thousands separators.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The terminal report.
pub(crate) fn table(s: &RunSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", headline(s));
    let _ = writeln!(
        out,
        "remotes: {}",
        s.remotes.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(", ")
    );
    out.push('\n');
    rows(&mut out, "lane", &s.lanes);
    // Each lane sends one command, so the per-command rows differ from the per-lane rows only
    // when lanes share a command; otherwise they would repeat the table above.
    if s.commands.len() < s.lanes.len() {
        out.push('\n');
        rows(&mut out, "command", &s.commands);
    } else {
        let _ = writeln!(out, "(per command: one lane per command, as above)");
    }
    out.push('\n');
    rows(&mut out, "all", std::slice::from_ref(&s.total));
    out.push('\n');
    let _ = writeln!(out, "{}", throughput_line(s));
    let lag = &s.send_lag;
    let _ = writeln!(
        out,
        "send lag (actual - intended send): p50 {}  p99 {}  p99.9 {}  max {}; early-wake spin {} ({})",
        fmt_us(lag.p50),
        fmt_us(lag.p99),
        fmt_us(lag.p999),
        fmt_us(lag.max),
        if s.spin.spin { "on" } else { "off" },
        s.spin.reason
    );
    if let Some(cost) = &s.server {
        let _ = writeln!(out, "{}", server_line(cost));
    }
    remotes(&mut out, s);
    let _ = writeln!(out, "{}", checks_line(s));
    error_texts(&mut out, &s.error_texts);
    let _ = writeln!(out, "{}", verification_line(s));
    out
}

/// What the error replies said: a line per lane and distinct text, most frequent first.
fn error_texts(out: &mut String, e: &ErrorTexts) {
    if e.is_empty() {
        return;
    }
    let _ = writeln!(out, "error replies by lane and text:");
    for t in &e.kept {
        let _ = writeln!(out, "  {:<10} {:>9}  {}", t.lane, fmt_count(t.count), t.text);
    }
    if e.others > 0 {
        let _ = writeln!(
            out,
            "  {:<10} {:>9}  (texts not kept: more than {KEPT} distinct ones)",
            "(rest)",
            fmt_count(e.others)
        );
    }
}

fn headline(s: &RunSummary) -> String {
    let mode = match s.depth {
        Some(depth) => format!("closed loop, depth {depth}"),
        None => "open loop (latency from intended send time)".into(),
    };
    format!(
        "loadgen {} [{}]: {} {}, {} connections, {:.1}s measured after {:.1}s warm-up",
        s.label, s.started, s.protocol, mode, s.connections, s.duration_s, s.warmup_s
    )
}

/// Column widths: name, cmd, lane, count, rate, bad, kind, then 7 latencies.
fn rows(out: &mut String, title: &str, rows: &[RowSummary]) {
    let _ = write!(
        out,
        "{title:<10} {:<14} {:>4} {:>10} {:>9} {:>6}  {:<9}",
        "command", "lane", "count", "rate/s", "bad", "latency"
    );
    for (label, _) in Percentiles::default().columns() {
        let _ = write!(out, " {label:>8}");
    }
    out.push('\n');
    for row in rows {
        let lane = if row.name == "total" {
            ""
        } else if row.oob {
            "oob"
        } else {
            "in"
        };
        let _ = write!(
            out,
            "{:<10} {:<14} {:>4} {:>10} {:>9.1} {:>6}  {:<9}",
            truncate(&row.name, 10),
            truncate(&row.command, 14),
            lane,
            fmt_count(row.corrected.count),
            row.rate,
            fmt_count(row.counts.bad()),
            "corrected"
        );
        latency_cells(out, &row.corrected);
        let _ = write!(out, "{:<58}  {:<9}", "", "service");
        latency_cells(out, &row.service);
    }
}

fn latency_cells(out: &mut String, p: &Percentiles) {
    for (_, value) in p.columns() {
        let _ = write!(out, " {:>8}", fmt_us(value));
    }
    out.push('\n');
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('~');
    cut
}

fn throughput_line(s: &RunSummary) -> String {
    let mut line = format!("throughput: {:.1} replies/s", s.total.rate);
    if let Some(target) = s.total.target_rate {
        let _ = write!(line, " (target {target:.1}/s)");
    }
    if let Some(ceiling) = s.ceiling_rate {
        let _ = write!(
            line,
            ", {:.1}% of this machine's loopback echo ceiling ({ceiling:.0}/s)",
            100.0 * s.total.rate / ceiling
        );
    }
    line
}

fn remotes(out: &mut String, s: &RunSummary) {
    for r in &s.remotes {
        let c = &r.counts;
        let _ = writeln!(
            out,
            "remote {}: {} attempts, {} sessions, {} reconnects, {} connect failures, {} disconnects, {} requests failed",
            r.address,
            c.attempts,
            c.sessions,
            c.reconnects,
            c.connect_failures,
            c.disconnects,
            c.failed_requests
        );
    }
}

/// The server-cost line of the table.
pub(crate) fn server_line(c: &ServerCost) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    format!(
        "server cost, {} over the {:.1}s measured window ({} samples{}): CPU {:.1}µs/reply \
         ({:.3}s CPU, {}), {:.1} context switches/1k replies ({} voluntary, {} \
         involuntary, {} threads); {}: peak RSS {:.1} MiB (VmHWM {:.1} MiB), peak fds {}",
        c.target,
        c.window_s,
        c.samples,
        if c.vanished { ", process vanished" } else { "" },
        c.cpu_us_per_reply,
        c.cpu_us / 1e6,
        match c.cpu_source.as_str() {
            "schedstat" => format!(
                "schedstat ns; {:.3}s in {} Hz ticks",
                c.ticks_cpu_us / 1e6,
                c.clock_tick_hz
            ),
            _ => format!("{} Hz ticks", c.clock_tick_hz),
        },
        c.switches_per_1k_replies,
        fmt_count(c.voluntary_switches),
        fmt_count(c.nonvoluntary_switches),
        c.threads,
        c.memory_scope,
        mib(c.peak_rss_kib),
        mib(c.hwm_kib),
        c.peak_fds
    )
}

fn checks_line(s: &RunSummary) -> String {
    let c = &s.checks;
    let ids = if c.ids {
        "every reply matched by id (duplicates, unknown ids, missing)"
    } else {
        "replies matched by position, the protocol has no ids (missing, surplus)"
    };
    let order =
        if c.order { "in-band order per connection checked" } else { "in-band order not checked" };
    format!("checks: {ids}; {order} ({})", c.order_reason)
}

fn verification_line(s: &RunSummary) -> String {
    let (v, t) = (&s.verification, &s.total.counts);
    let verdict =
        if s.passed() { "PASS".to_owned() } else { format!("FAIL: {}", s.failures.join("; ")) };
    format!(
        "verification: sent {}, ok {}, error replies {}, failed {}, missing {}, unsent {}, \
         duplicates {}, unknown ids {}, out of order {}, protocol errors {}, events {} => {verdict}",
        t.sent,
        t.ok,
        t.errors,
        t.failed,
        t.missing,
        t.unsent,
        v.duplicates,
        v.unknown_ids,
        if s.checks.order { v.out_of_order.to_string() } else { "not checked".into() },
        v.protocol_errors,
        v.events
    )
}

/// HdrHistogram percentile distribution of a nanosecond histogram, values in milliseconds.
pub(crate) fn hgrm(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1e6;
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / SCALE;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let (mean, stdev, max) =
        if h.is_empty() { (0.0, 0.0, 0.0) } else { (h.mean(), h.stdev(), h.max() as f64) };
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        mean / SCALE,
        stdev / SCALE
    );
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", max / SCALE, h.len());
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values() / h.buckets().max(1) as usize
    );
    out
}

/// Parses a `.hgrm` back into `(percentile 0..1, value µs)` points (for `compare`).
pub(crate) fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let value: f64 = cols.next()?.parse().ok()?;
            let q: f64 = cols.next()?.parse().ok()?;
            Some((q, value * 1e3))
        })
        .collect()
}

/// The interval log in HdrHistogram's `.hlog` format, one tagged histogram per lane per
/// interval (corrected latency, ns), readable by HdrHistogram's `HistogramLogProcessor`.
pub(crate) fn hlog(
    intervals: &[(u32, usize, Histogram<u64>)],
    lanes: &[String],
    period: Duration,
    start: std::time::SystemTime,
) -> Vec<u8> {
    let entries =
        intervals.iter().map(|(index, lane, h)| (lanes[*lane].clone(), h, period * *index, period));
    write_log("loadgen interval log: corrected latency in nanoseconds, tag = lane", start, entries)
}

/// The run's full-resolution histograms as one HdrHistogram log, for exact merging
/// (`loadgen merge`): per lane `corrected.<lane>` and `service.<lane>`, then `send_lag`, each
/// spanning the measured window.
pub(crate) fn histograms_log(
    lanes: &[(String, Histogram<u64>, Histogram<u64>)],
    lag: &Histogram<u64>,
    window: Duration,
    start: std::time::SystemTime,
) -> Vec<u8> {
    let per_lane = lanes.iter().flat_map(|(name, corrected, service)| {
        [("corrected", corrected), ("service", service)]
            .map(|(kind, h)| (format!("{kind}.{name}"), h, Duration::ZERO, window))
    });
    let entries = per_lane.chain([("send_lag".to_owned(), lag, Duration::ZERO, window)]);
    write_log("loadgen run histograms: latency in nanoseconds, tag = kind.lane", start, entries)
}

/// An HdrHistogram interval log (V2 deflate, values in ns, `max` in ms) of `(tag, histogram,
/// start offset, duration)` entries; empty if the log cannot be started.
fn write_log<'h>(
    comment: &str,
    start: std::time::SystemTime,
    entries: impl Iterator<Item = (String, &'h Histogram<u64>, Duration, Duration)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(comment)
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1e6);
    let Ok(mut log) = builder.begin_log_with(&mut out, &mut serializer) else { return Vec::new() };
    for (tag, h, offset, duration) in entries {
        let _ = log.write_histogram(h, offset, duration, Tag::new(&tag));
    }
    out
}

/// The interval log as CSV: one row per interval and lane.
pub(crate) fn intervals_csv(
    intervals: &[(u32, usize, Histogram<u64>)],
    lanes: &[String],
    period: Duration,
) -> String {
    let mut out =
        String::from("start_s,lane,count,rate_per_s,p50_us,p90_us,p99_us,p999_us,max_us\n");
    for (index, lane, h) in intervals {
        let p = Percentiles::of(h);
        let secs = period.as_secs_f64();
        let _ = writeln!(
            out,
            "{:.3},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1}",
            secs * *index as f64,
            lanes[*lane],
            p.count,
            p.count as f64 / secs,
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.max
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_counts_format_for_humans() {
        assert_eq!(fmt_us(0.25), "250ns");
        assert_eq!(fmt_us(12.34), "12.3µs");
        assert_eq!(fmt_us(1534.0), "1.53ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
        assert_eq!(fmt_us(0.0), "-");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(truncate("abcdefghijkl", 5), "abcd~");
    }

    #[test]
    fn hgrm_matches_the_hdrhistogram_layout_and_parses_back() {
        let mut h = crate::recorder::histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let text = hgrm(&h);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert_eq!(lines.next(), Some(""));
        assert_eq!(lines.next(), Some("       0.001 0.000000000000          1           1.00"));
        assert!(
            text.contains("#[Max     =        1.000, Total count    =         1000]"),
            "{text}"
        );
        let last = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        assert_eq!(last.split_whitespace().count(), 3, "the 100% line has no 1/(1-p) column");
        let points = parse_hgrm(&text);
        assert_eq!(points.first(), Some(&(0.0, 1.0)));
        assert_eq!(points.last().map(|p| p.0), Some(1.0));
    }

    #[test]
    fn interval_exports_have_one_row_per_lane_and_interval() {
        let mut h = crate::recorder::histogram();
        h.record(5_000).unwrap();
        let intervals = vec![(0, 0, h.clone()), (1, 0, h)];
        let lanes = vec!["work".to_owned()];
        let csv = intervals_csv(&intervals, &lanes, Duration::from_secs(1));
        assert_eq!(csv.lines().nth(2), Some("1.000,work,1,1.0,5.0,5.0,5.0,5.0,5.0"));
        let log = String::from_utf8(hlog(
            &intervals,
            &lanes,
            Duration::from_secs(1),
            std::time::UNIX_EPOCH,
        ))
        .unwrap();
        assert!(log.contains("Tag=work,0.000,1.000,"), "{log}");
        assert_eq!(log.lines().filter(|l| l.starts_with("Tag=")).count(), 2);
    }
}
