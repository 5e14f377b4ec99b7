//! `loadgen merge RUN_DIR... --out DIR`: several runs (processes, machines) made into one.
//!
//! One loadgen process cannot saturate a big server; several, started with the same
//! `--start-at`, can. Merging adds their saved full-resolution histograms
//! (`histograms.hlog`: HdrHistogram addition, exact, never averaged percentiles) and their
//! interval logs (`intervals.hlog`, aligned by each run's wall-clock start), and sums their
//! request, verification and per-remote counters. The result is an ordinary [`Run`], written
//! with the usual report, files and plot. Server cost: when the runs started at the same
//! time (`--start-at`, within [`ALIGNED`]) and those that sampled the server sampled the
//! same target, that process's CPU and switches over the common window are divided by all
//! the runs' replies (two samplers of one server over one window measure the same CPU, so
//! they are never added); otherwise the merged run has none.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use crate::recorder::histogram;
use crate::run::row;
use crate::server_cost::ServerCost;
use crate::summary::{Percentiles, RemoteSummary, RowSummary, RunSummary};
use crate::{Error, Run};

/// Runs whose time zero differs by less than this count as aligned for the server cost.
pub(crate) const ALIGNED: Duration = Duration::from_millis(100);

/// One saved run's histogram log entry: tag, offset from the log's start, histogram.
type Entry = (String, Duration, Duration, Histogram<u64>);

/// A saved run read back for merging.
struct Part {
    summary: RunSummary,
    /// Wall-clock time zero (the logs' StartTime).
    started: SystemTime,
    /// `histograms.hlog` by tag.
    histograms: BTreeMap<String, Histogram<u64>>,
    /// `intervals.hlog`: (offset from the measure start, period, lane, histogram).
    intervals: Vec<Entry>,
}

/// Merges the runs saved in `dirs` (at least two) into one run.
pub fn merge(dirs: &[PathBuf]) -> Result<Run, Error> {
    if dirs.len() < 2 {
        return Err(Error::Config("merge needs at least two run directories".into()));
    }
    let parts = dirs.iter().map(|d| read_part(d)).collect::<Result<Vec<_>, _>>()?;
    check_same_workload(&parts, dirs)?;
    let first = &parts[0].summary;
    let lanes: Vec<(String, Histogram<u64>, Histogram<u64>)> = first
        .lanes
        .iter()
        .map(|l| {
            let sum = |kind: &str| {
                add_all(parts.iter().map(|p| &p.histograms[&format!("{kind}.{}", l.name)]))
            };
            (l.name.clone(), sum("corrected"), sum("service"))
        })
        .collect();
    let lag = add_all(parts.iter().map(|p| &p.histograms["send_lag"]));
    let started = parts.iter().map(|p| p.started).min().unwrap_or(UNIX_EPOCH);
    let (intervals, interval) = merge_intervals(&parts, &first.lanes, started);
    let summary = merged_summary(&parts, &lanes, &lag, dirs, started);
    Ok(Run { summary, lanes, lag, intervals, interval, started })
}

fn read_part(dir: &Path) -> Result<Part, Error> {
    let bad = |why: String| Error::RunDir { path: dir.to_path_buf(), why };
    let summary = crate::compare::load(dir)?.summary;
    let (started, entries) = read_log(&dir.join("histograms.hlog")).map_err(&bad)?;
    let mut histograms = BTreeMap::new();
    for (tag, _, _, h) in entries {
        histograms.insert(tag, h);
    }
    let needed = summary
        .lanes
        .iter()
        .flat_map(|l| [format!("corrected.{}", l.name), format!("service.{}", l.name)]);
    if let Some(missing) =
        needed.chain(["send_lag".to_owned()]).find(|t| !histograms.contains_key(t))
    {
        return Err(bad(format!("histograms.hlog has no '{missing}' histogram")));
    }
    let (_, intervals) = read_log(&dir.join("intervals.hlog")).map_err(bad)?;
    Ok(Part { summary, started, histograms, intervals })
}

/// Reads an HdrHistogram log: its StartTime and every tagged histogram.
fn read_log(path: &Path) -> Result<(SystemTime, Vec<Entry>), String> {
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let bytes = fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let (mut started, mut entries) = (None, Vec::new());
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.map_err(|e| format!("{name}: {e:?}"))? {
            LogEntry::StartTime(since_epoch) => started = Some(UNIX_EPOCH + since_epoch),
            LogEntry::BaseTime(_) => {}
            LogEntry::Interval(h) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(h.encoded_histogram())
                    .map_err(|e| format!("{name}: base64: {e}"))?;
                let hist: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut raw.as_slice())
                    .map_err(|e| format!("{name}: histogram: {e:?}"))?;
                let tag = h.tag().map_or_else(String::new, |t| t.as_str().to_owned());
                entries.push((tag, h.start_timestamp(), h.duration(), hist));
            }
        }
    }
    Ok((started.ok_or(format!("{name}: no StartTime"))?, entries))
}

/// Lanes must match by name, command and kind, or the sums mean nothing.
fn check_same_workload(parts: &[Part], dirs: &[PathBuf]) -> Result<(), Error> {
    let shape = |s: &RunSummary| {
        s.lanes.iter().map(|l| (l.name.clone(), l.command.clone(), l.oob)).collect::<Vec<_>>()
    };
    let want = shape(&parts[0].summary);
    for (part, dir) in parts.iter().zip(dirs).skip(1) {
        if shape(&part.summary) != want || part.summary.protocol != parts[0].summary.protocol {
            return Err(Error::RunDir {
                path: dir.clone(),
                why: "its lanes or protocol differ from the first run's".into(),
            });
        }
    }
    Ok(())
}

fn add_all<'a>(hs: impl Iterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut sum = histogram();
    for h in hs {
        // Same bounds as every saved run histogram: addition cannot fail short of a corrupt
        // file, and a saturated sample stays at the bound.
        let _ = sum.add(h);
    }
    sum
}

/// Interval logs added by wall-clock interval: each run's measure start is its StartTime
/// plus its warm-up; the index is counted from the earliest.
fn merge_intervals(
    parts: &[Part],
    lanes: &[RowSummary],
    started: SystemTime,
) -> (Vec<(u32, usize, Histogram<u64>)>, Duration) {
    let period = parts
        .iter()
        .flat_map(|p| p.intervals.iter().map(|e| e.2))
        .find(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(1));
    let mut acc: BTreeMap<(u32, usize), Histogram<u64>> = BTreeMap::new();
    let measure_start = |p: &Part| p.started + Duration::from_secs_f64(p.summary.warmup_s);
    let origin = parts.iter().map(measure_start).min().unwrap_or(started);
    for part in parts {
        let shift = measure_start(part).duration_since(origin).unwrap_or_default();
        for (tag, offset, _, h) in &part.intervals {
            let Some(lane) = lanes.iter().position(|l| &l.name == tag) else { continue };
            let index = ((shift + *offset).as_secs_f64() / period.as_secs_f64()).round() as u32;
            match acc.get_mut(&(index, lane)) {
                Some(sum) => {
                    let _ = sum.add(h);
                }
                None => {
                    acc.insert((index, lane), h.clone());
                }
            }
        }
    }
    (acc.into_iter().map(|((i, l), h)| (i, l, h)).collect(), period)
}

/// The merged run's summary: counters summed, rows rebuilt from the added histograms.
fn merged_summary(
    parts: &[Part],
    lanes: &[(String, Histogram<u64>, Histogram<u64>)],
    lag: &Histogram<u64>,
    dirs: &[PathBuf],
    started: SystemTime,
) -> RunSummary {
    let first = &parts[0].summary;
    let secs = parts.iter().map(|p| p.summary.duration_s).fold(0.0, f64::max);
    let lane_rows: Vec<RowSummary> = first
        .lanes
        .iter()
        .enumerate()
        .zip(lanes)
        .map(|((i, l), (_, corrected, service))| {
            let counts = parts
                .iter()
                .fold(Default::default(), |acc, p| add_counts(acc, &p.summary.lanes[i].counts));
            let target = l
                .target_rate
                .map(|_| parts.iter().filter_map(|p| p.summary.lanes[i].target_rate).sum());
            row(&l.name, &l.command, l.oob, target, counts, corrected, service, secs)
        })
        .collect();
    let group = |name: &str, cmd: &str, members: &[usize]| {
        let (mut corrected, mut service) = (histogram(), histogram());
        for &i in members {
            let _ = corrected.add(&lanes[i].1);
            let _ = service.add(&lanes[i].2);
        }
        let counts = members
            .iter()
            .fold(Default::default(), |acc, &i| add_counts(acc, &lane_rows[i].counts));
        let target = members.iter().map(|&i| lane_rows[i].target_rate).sum::<Option<f64>>();
        let oob = !members.is_empty() && members.iter().all(|&i| lane_rows[i].oob);
        row(name, cmd, oob, target, counts, &corrected, &service, secs)
    };
    let mut commands: Vec<String> = lane_rows.iter().map(|l| l.command.clone()).collect();
    commands.sort();
    commands.dedup();
    let command_rows = commands
        .iter()
        .map(|cmd| {
            let members: Vec<usize> =
                (0..lane_rows.len()).filter(|&i| &lane_rows[i].command == cmd).collect();
            group(cmd, cmd, &members)
        })
        .collect();
    let all: Vec<usize> = (0..lane_rows.len()).collect();
    let total = group("total", "", &all);
    let mut verification = first.verification;
    let mut error_texts = first.error_texts.clone();
    for p in &parts[1..] {
        verification.add(&p.summary.verification);
        error_texts.merge(&p.summary.error_texts);
    }
    let expect_errors = parts.iter().all(|p| p.summary.expect_errors);
    let failures = RunSummary::judge(&total.counts, &verification, expect_errors);
    RunSummary {
        label: format!("{}-merged", first.label),
        started: humantime::format_rfc3339_seconds(started).to_string(),
        command: Some(format!(
            "loadgen merge {}",
            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" ")
        )),
        connections: parts.iter().map(|p| p.summary.connections).sum(),
        threads: parts.iter().map(|p| p.summary.threads).sum(),
        duration_s: secs,
        lanes: lane_rows,
        commands: command_rows,
        total,
        remotes: merged_remotes(parts),
        verification,
        error_texts: error_texts.sorted(),
        send_lag: if first.mode == "open" { Percentiles::of(lag) } else { Percentiles::default() },
        ceiling_rate: None,
        expect_errors,
        failures,
        server: merged_server(parts),
        ..first.clone()
    }
}

/// The server cost of aligned runs (see the module docs), divided by all their replies.
fn merged_server(parts: &[Part]) -> Option<ServerCost> {
    let (earliest, latest) =
        (parts.iter().map(|p| p.started).min()?, parts.iter().map(|p| p.started).max()?);
    let costs: Vec<&ServerCost> = parts.iter().filter_map(|p| p.summary.server.as_ref()).collect();
    let first = *costs.first()?;
    // Each embedded engine is its own server: those costs never describe one server.
    if latest.duration_since(earliest).unwrap_or_default() >= ALIGNED
        || !first.target.starts_with("pid")
        || costs.iter().any(|c| c.target != first.target)
    {
        return None;
    }
    let cost = costs.iter().copied().max_by(|a, b| a.window_s.total_cmp(&b.window_s))?;
    let replies: u64 = parts.iter().map(|p| p.summary.total.corrected.count).sum();
    let per = |x: f64| if replies == 0 { 0.0 } else { x / replies as f64 };
    let switches = (cost.voluntary_switches + cost.nonvoluntary_switches) as f64;
    Some(ServerCost {
        target: format!("{} (sampled by {} of {} runs)", cost.target, costs.len(), parts.len()),
        replies,
        cpu_us_per_reply: per(cost.cpu_us),
        switches_per_1k_replies: per(1000.0 * switches),
        peak_rss_kib: costs.iter().map(|c| c.peak_rss_kib).max().unwrap_or(0),
        peak_fds: costs.iter().map(|c| c.peak_fds).max().unwrap_or(0),
        ..cost.clone()
    })
}

fn add_counts(mut a: crate::LaneCounts, b: &crate::LaneCounts) -> crate::LaneCounts {
    a.add(b);
    a
}

/// Remotes summed by address, in order of first appearance.
fn merged_remotes(parts: &[Part]) -> Vec<RemoteSummary> {
    let mut out: Vec<RemoteSummary> = Vec::new();
    for r in parts.iter().flat_map(|p| &p.summary.remotes) {
        match out.iter_mut().find(|o| o.address == r.address) {
            Some(o) => o.counts.add(&r.counts),
            None => out.push(r.clone()),
        }
    }
    out
}
