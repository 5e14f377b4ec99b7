//! One run from configuration to [`Run`]: embedded engine if no remote is given, pre-flight
//! reachability check, driver threads, merge, summary.
//!
//! Runs on the caller's thread, which only spawns and joins the drivers; the caller may poll
//! [`LiveStats`] from another thread meanwhile.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use crate::Address;
use crate::config::{Mode, RunConfig, Spin};
use crate::conn::Shared;
use crate::driver::{Driver, StartLine};
use crate::live::{LiveStats, Phase};
use crate::protocol::Template;
use crate::recorder::{LaneCounts, Recorder, histogram};
use crate::server_cost::{Target, Window, sample_window};
use crate::summary::{Checks, Percentiles, RemoteSummary, RowSummary, RunSummary, SpinUsed};
use crate::workload::resolve_rates;
use crate::{Error, embedded};

/// A finished run: the summary plus the histograms behind it.
#[derive(Debug)]
pub struct Run {
    /// The numbers.
    pub summary: RunSummary,
    /// Per lane: name, corrected and service histograms (ns).
    pub(crate) lanes: Vec<(String, Histogram<u64>, Histogram<u64>)>,
    /// Actual − intended send time of every request (ns).
    pub(crate) lag: Histogram<u64>,
    /// Interval log: (index, lane, corrected histogram).
    pub(crate) intervals: Vec<(u32, usize, Histogram<u64>)>,
    /// Interval period.
    pub(crate) interval: Duration,
    /// Wall-clock start.
    pub(crate) started: SystemTime,
}

impl Run {
    /// Records the loopback ceiling measured for this run's shape.
    pub fn set_ceiling(&mut self, rate: f64) {
        self.summary.ceiling_rate = Some(rate);
    }

    /// Records the command line that produced the run.
    pub fn set_command(&mut self, command: String) {
        self.summary.command = Some(command);
    }
}

/// Runs `cfg` to completion.
pub fn run(cfg: &RunConfig) -> Result<Run, Error> {
    run_with(cfg, &LiveStats::default())
}

/// Runs `cfg` to completion, publishing progress to `live`.
pub fn run_with(cfg: &RunConfig, live: &LiveStats) -> Result<Run, Error> {
    cfg.validate()?;
    let mut cfg = cfg.clone();
    let target = match (cfg.server_pids.is_empty(), cfg.remotes.is_empty()) {
        (_, true) => Some(Target::EngineThreads),
        (false, false) => Some(Target::Processes(cfg.server_pids.clone())),
        (true, false) => None,
    };
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let (spin, spin_reason) = cfg.spin_decision(cores);
    cfg.spin = if spin { Spin::On } else { Spin::Off };
    let _engine = if cfg.remotes.is_empty() {
        let engine = embedded::Embedded::start(cfg.protocol)?;
        cfg.remotes = engine.remotes(cfg.protocol);
        Some(engine)
    } else {
        None
    };
    preflight(&cfg.remotes, cfg.connect_timeout)?;
    let rates = resolve_rates(&cfg.lanes, cfg.rate);
    let shared = Shared {
        protocol: cfg.protocol,
        remotes: cfg.remotes.clone(),
        templates: cfg.lanes.iter().map(|l| Template::new(cfg.protocol, l)).collect(),
        oob: cfg.lanes.iter().map(|l| l.oob).collect(),
        check_order: cfg.order_check().0,
        lane_names: cfg.lanes.iter().map(|l| l.name.clone()).collect(),
    };
    let (merged, window, started) = drive_all(&cfg, &shared, &rates, live, target);
    live.set_phase(Phase::Done);
    let mut run = build(&cfg, &rates, merged?, started);
    run.summary.spin = SpinUsed { spin, reason: spin_reason };
    run.summary.server = window.map(|w| w.cost(run.summary.total.corrected.count));
    Ok(run)
}

/// Spawns one driver per thread (and the server-cost sampler when there is a `target`),
/// joins them and merges their recorders.
fn drive_all(
    cfg: &RunConfig,
    sh: &Shared,
    rates: &[f64],
    live: &LiveStats,
    target: Option<Target>,
) -> (Result<Recorder, Error>, Option<Window>, SystemTime) {
    let start = StartLine::new(cfg.threads + usize::from(target.is_some()), cfg.start_at);
    let drivers = (0..cfg.threads)
        .map(|t| {
            Driver::new(cfg, sh, rates, (t..cfg.connections).step_by(cfg.threads).collect(), live)
        })
        .collect::<Result<Vec<_>, _>>();
    let drivers = match drivers {
        Ok(drivers) => drivers,
        Err(e) => return (Err(e), None, SystemTime::now()),
    };
    let (results, window): (Vec<Result<Recorder, Error>>, _) = thread::scope(|s| {
        let start = &start;
        let sampler = target.map(|target| {
            thread::Builder::new().name("loadgen-sampler".into()).spawn_scoped(s, move || {
                let zero = start.meet();
                let from = zero + cfg.warmup;
                sample_window(target, from, from + cfg.duration, || start.aborted())
            })
        });
        let handles: Vec<_> = drivers
            .into_iter()
            .enumerate()
            .map(|(t, d)| {
                thread::Builder::new()
                    .name(format!("loadgen-driver-{t}"))
                    .spawn_scoped(s, move || d.run(start))
                    .map_err(Error::io("spawn driver thread"))
            })
            .collect();
        let results = handles
            .into_iter()
            .map(|h| {
                h?.join().unwrap_or_else(|_| Err(Error::Config("a driver thread panicked".into())))
            })
            .collect();
        let window = match sampler {
            Some(Ok(h)) => h.join().ok().flatten(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot spawn the server-cost sampler");
                None
            }
            None => None,
        };
        (results, window)
    });
    (merge(results), window, start.zero().1)
}

/// Merges the drivers' recorders; the first error wins.
fn merge(results: Vec<Result<Recorder, Error>>) -> Result<Recorder, Error> {
    let mut merged: Option<Recorder> = None;
    for result in results {
        let rec = result?;
        match merged.as_mut() {
            Some(m) => m.merge(rec),
            None => merged = Some(rec),
        }
    }
    merged.ok_or_else(|| Error::Config("no driver threads".into()))
}

/// Connects once to every remote (blocking, with a timeout); fails only if none answers.
fn preflight(remotes: &[Address], timeout: Duration) -> Result<(), Error> {
    let mut failures = Vec::new();
    for remote in remotes {
        let result = match remote {
            Address::Tcp(addr) => TcpStream::connect_timeout(addr, timeout).map(drop),
            Address::Unix(path) => UnixStream::connect(path).map(drop),
        };
        if let Err(e) = result {
            tracing::warn!(%remote, error = %e, "remote unreachable at start");
            failures.push(format!("  {remote}: {e}"));
        }
    }
    if failures.len() == remotes.len() {
        return Err(Error::Unreachable(failures.join("\n")));
    }
    Ok(())
}

/// Turns merged measurements into a [`Run`].
fn build(cfg: &RunConfig, rates: &[f64], mut rec: Recorder, started: SystemTime) -> Run {
    let secs = cfg.duration.as_secs_f64();
    let open = cfg.mode == Mode::Open;
    let lane_rows: Vec<RowSummary> = cfg
        .lanes
        .iter()
        .zip(&rec.lanes)
        .zip(rates)
        .map(|((lane, r), &rate)| {
            row(
                &lane.name,
                &lane.cmd,
                lane.oob,
                open.then_some(rate),
                r.counts,
                &r.corrected,
                &r.service,
                secs,
            )
        })
        .collect();
    let mut commands: Vec<String> = cfg.lanes.iter().map(|l| l.cmd.clone()).collect();
    commands.dedup();
    commands.sort();
    commands.dedup();
    let command_rows = commands
        .iter()
        .map(|cmd| {
            let members: Vec<usize> =
                (0..cfg.lanes.len()).filter(|&i| &cfg.lanes[i].cmd == cmd).collect();
            merged_row(cmd, cmd, cfg, rates, &rec, &members, open, secs)
        })
        .collect();
    let all: Vec<usize> = (0..cfg.lanes.len()).collect();
    let total = merged_row("total", "", cfg, rates, &rec, &all, open, secs);
    let failures = RunSummary::judge(&total.counts, &rec.verify, cfg.expect_errors);
    let summary = RunSummary {
        label: cfg.label.clone(),
        started: humantime::format_rfc3339_seconds(started).to_string(),
        command: None,
        version: env!("CARGO_PKG_VERSION").into(),
        protocol: cfg.protocol.name().into(),
        mode: if open { "open" } else { "closed" }.into(),
        depth: match cfg.mode {
            Mode::Closed { depth } => Some(depth),
            Mode::Open => None,
        },
        connections: cfg.connections,
        threads: cfg.threads,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s: secs,
        lanes: lane_rows,
        commands: command_rows,
        total,
        remotes: cfg
            .remotes
            .iter()
            .zip(&rec.remotes)
            .map(|(a, c)| RemoteSummary { address: a.to_string(), counts: *c })
            .collect(),
        verification: rec.verify,
        error_texts: std::mem::take(&mut rec.error_texts).sorted(),
        checks: {
            let (order, why) = cfg.order_check();
            Checks { ids: cfg.protocol.replies_carry_ids(), order, order_reason: why.into() }
        },
        send_lag: if open { Percentiles::of(&rec.lag) } else { Percentiles::default() },
        ceiling_rate: None,
        expect_errors: cfg.expect_errors,
        failures,
        server: None,
        spin: SpinUsed::default(),
    };
    let intervals = rec.merged_intervals();
    let lag = rec.lag;
    let lanes = cfg
        .lanes
        .iter()
        .zip(rec.lanes)
        .map(|(l, r)| (l.name.clone(), r.corrected, r.service))
        .collect();
    Run { summary, lanes, lag, intervals, interval: cfg.interval, started }
}

/// A report row over several lanes.
#[allow(clippy::too_many_arguments, reason = "private helper taking the run's parts")]
fn merged_row(
    name: &str,
    cmd: &str,
    cfg: &RunConfig,
    rates: &[f64],
    rec: &Recorder,
    members: &[usize],
    open: bool,
    secs: f64,
) -> RowSummary {
    let (mut corrected, mut service, mut counts) =
        (histogram(), histogram(), LaneCounts::default());
    for &i in members {
        let _ = corrected.add(&rec.lanes[i].corrected);
        let _ = service.add(&rec.lanes[i].service);
        let c = rec.lanes[i].counts;
        counts = LaneCounts {
            sent: counts.sent + c.sent,
            ok: counts.ok + c.ok,
            errors: counts.errors + c.errors,
            failed: counts.failed + c.failed,
            missing: counts.missing + c.missing,
            unsent: counts.unsent + c.unsent,
        };
    }
    let oob = !members.is_empty() && members.iter().all(|&i| cfg.lanes[i].oob);
    let rate: f64 = members.iter().map(|&i| rates[i]).sum();
    row(name, cmd, oob, open.then_some(rate), counts, &corrected, &service, secs)
}

/// One report row from its parts (also used by `merge`).
#[allow(clippy::too_many_arguments, reason = "one row's fields, named at the call")]
pub(crate) fn row(
    name: &str,
    cmd: &str,
    oob: bool,
    target_rate: Option<f64>,
    counts: LaneCounts,
    corrected: &Histogram<u64>,
    service: &Histogram<u64>,
    secs: f64,
) -> RowSummary {
    RowSummary {
        name: name.into(),
        command: cmd.into(),
        oob,
        target_rate,
        counts,
        rate: corrected.len() as f64 / secs,
        corrected: Percentiles::of(corrected),
        service: Percentiles::of(service),
    }
}
