//! `loadgen sweep`: the same workload at a series of rates, to find the knee of the
//! latency-versus-throughput curve.
//!
//! The rates are given, or double from a start rate until the server saturates: the achieved
//! rate falls below [`SweepPlan::min_achieved`] of the target, or some lane's corrected p99
//! passes [`SweepPlan::p99_bound`]. Each step is a normal run written to its own folder
//! (`step-NN-RATE/`); the sweep folder gets `sweep.md` (table), `sweep.txt` (the same for a
//! terminal), `sweep.json` and one plot (`sweep.svg`, `sweep.png`: p50, p99 and p99.9 per
//! lane against the achieved rate). The knee is the last step before the first saturated
//! one. Runs on the caller's thread, step after step.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Mode, RunConfig};
use crate::plot::{SweepSeries, write_sweep_plots};
use crate::report::fmt_us;
use crate::summary::RunSummary;
use crate::{Error, Run};

/// Share of the target rate below which a step counts as saturated.
pub const DEFAULT_MIN_ACHIEVED: f64 = 0.95;

/// Steps a doubling sweep takes at most: 2^11 times the start rate is beyond any server.
pub const DEFAULT_MAX_STEPS: usize = 12;

/// Which rates a sweep runs.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepRates {
    /// These total rates, in order; every one is run.
    List(Vec<f64>),
    /// `start`, `2 × start`, ... until saturated or `max_steps` steps.
    Doubling {
        /// First total rate.
        start: f64,
        /// Most steps.
        max_steps: usize,
    },
}

/// A sweep's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPlan {
    /// The rates.
    pub rates: SweepRates,
    /// A lane whose corrected p99 passes this is saturated.
    pub p99_bound: Duration,
    /// Achieved / target below this is saturated.
    pub min_achieved: f64,
}

/// One finished step.
#[derive(Debug, Clone, Serialize)]
pub struct SweepStep {
    /// Total target rate (requests/s).
    pub target: f64,
    /// Its run folder.
    pub dir: PathBuf,
    /// Its summary.
    pub summary: RunSummary,
    /// Why it counts as saturated, if it does.
    pub saturated: Option<String>,
}

/// A finished sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// Steps in the order run.
    pub steps: Vec<SweepStep>,
    /// Index of the knee: the last step before the first saturated one.
    pub knee: Option<usize>,
}

/// Runs the sweep, each step through `run_step` (the binary wraps it in a progress bar),
/// writing everything under `out` (created; must not exist).
pub fn sweep(
    cfg: &RunConfig,
    plan: &SweepPlan,
    out: &Path,
    mut run_step: impl FnMut(&RunConfig) -> Result<Run, Error>,
) -> Result<Sweep, Error> {
    check(cfg, plan)?;
    if out.exists() {
        return Err(Error::Config(format!(
            "{} exists; results are never overwritten",
            out.display()
        )));
    }
    fs::create_dir_all(out).map_err(Error::io(format!("create {}", out.display())))?;
    let mut steps: Vec<SweepStep> = Vec::new();
    for (i, target) in rates(&plan.rates).enumerate() {
        let step_cfg =
            RunConfig { rate: target, label: format!("{}-{target:.0}", cfg.label), ..cfg.clone() };
        let mut run = run_step(&step_cfg)?;
        run.set_command(format!("loadgen sweep step {i}: --rate {target}"));
        let dir = out.join(format!("step-{i:02}-{target:.0}"));
        run.write_to(&dir)?;
        let saturated = saturation(&run.summary, target, plan);
        tracing::info!(
            step = i,
            target,
            achieved = run.summary.total.rate,
            ?saturated,
            "sweep step"
        );
        let stop = saturated.is_some() && matches!(plan.rates, SweepRates::Doubling { .. });
        steps.push(SweepStep { target, dir, summary: run.summary, saturated });
        if stop {
            break;
        }
    }
    let knee = match steps.iter().position(|s| s.saturated.is_some()) {
        Some(0) => None,
        Some(first) => Some(first - 1),
        None => None,
    };
    let sweep = Sweep { steps, knee };
    write(&sweep, cfg, plan, out)?;
    Ok(sweep)
}

fn check(cfg: &RunConfig, plan: &SweepPlan) -> Result<(), Error> {
    cfg.validate()?;
    let fail = |why: &str| Err(Error::Config(why.into()));
    if cfg.mode != Mode::Open {
        return fail("sweep needs the open loop (no --depth): it sets the rate");
    }
    if let Some(lane) = cfg.lanes.iter().find(|l| l.rate.is_some()) {
        return Err(Error::Config(format!(
            "sweep scales --rate; lane '{}' has a fixed rate= (use share= instead)",
            lane.name
        )));
    }
    match &plan.rates {
        SweepRates::List(list) if list.is_empty() => fail("--rates needs at least one rate"),
        SweepRates::List(list) if list.iter().any(|r| !(r.is_finite() && *r > 0.0)) => {
            fail("--rates must be positive numbers")
        }
        SweepRates::Doubling { max_steps: 0, .. } => fail("--max-steps must be at least 1"),
        _ if !(plan.min_achieved > 0.0 && plan.min_achieved <= 1.0) => {
            fail("the achieved share must be in (0, 1]")
        }
        _ => Ok(()),
    }
}

/// The rates in order (a doubling sweep stops early once saturated).
fn rates(rates: &SweepRates) -> Box<dyn Iterator<Item = f64> + '_> {
    match rates {
        SweepRates::List(list) => Box::new(list.iter().copied()),
        SweepRates::Doubling { start, max_steps } => {
            Box::new((0..*max_steps).map(move |i| start * f64::from(1u32 << i.min(31))))
        }
    }
}

/// Why a step counts as saturated, if it does.
pub(crate) fn saturation(s: &RunSummary, target: f64, plan: &SweepPlan) -> Option<String> {
    if s.total.rate < plan.min_achieved * target {
        return Some(format!(
            "achieved {:.0}/s < {:.0}% of {target:.0}/s",
            s.total.rate,
            plan.min_achieved * 100.0
        ));
    }
    let bound_us = plan.p99_bound.as_secs_f64() * 1e6;
    s.lanes
        .iter()
        .find(|l| l.corrected.p99 > bound_us)
        .map(|l| format!("{} p99 {} > {}", l.name, fmt_us(l.corrected.p99), fmt_us(bound_us)))
}

/// The step table as markdown.
pub(crate) fn markdown(sweep: &Sweep) -> String {
    let lanes = lane_names(sweep);
    let mut out = String::from("| step | target/s | achieved/s |");
    for lane in &lanes {
        let _ = write!(out, " {lane} p50 | {lane} p99 | {lane} p99.9 |");
    }
    out.push_str(" server CPU/reply | verdict |\n|---:|---:|---:|");
    out.push_str(&"---:|".repeat(lanes.len() * 3));
    out.push_str("---:|---|\n");
    for (i, step) in sweep.steps.iter().enumerate() {
        let s = &step.summary;
        let _ = write!(out, "| {i} | {:.0} | {:.0} |", step.target, s.total.rate);
        for lane in &lanes {
            match s.lanes.iter().find(|l| &l.name == lane) {
                Some(l) => {
                    let p = &l.corrected;
                    let _ = write!(
                        out,
                        " {} | {} | {} |",
                        fmt_us(p.p50),
                        fmt_us(p.p99),
                        fmt_us(p.p999)
                    );
                }
                None => out.push_str(" - | - | - |"),
            }
        }
        let cpu = s.server.as_ref().map_or("-".into(), |c| format!("{:.1}µs", c.cpu_us_per_reply));
        let _ = writeln!(out, " {cpu} | {} |", verdict(sweep, i));
    }
    let _ = writeln!(out, "\n{}", knee_line(sweep));
    out
}

/// The step table for a terminal (fixed-width columns).
pub(crate) fn terminal(sweep: &Sweep) -> String {
    let lanes = lane_names(sweep);
    let mut out = format!("{:>4} {:>10} {:>10}", "step", "target/s", "achieved/s");
    for lane in &lanes {
        for p in ["p50", "p99", "p99.9"] {
            let _ = write!(out, " {:>10}", format!("{}.{p}", truncate(lane, 10 - p.len() - 1)));
        }
    }
    let _ = writeln!(out, " {:>9}  verdict", "CPU/reply");
    for (i, step) in sweep.steps.iter().enumerate() {
        let s = &step.summary;
        let _ = write!(out, "{i:>4} {:>10.0} {:>10.0}", step.target, s.total.rate);
        for lane in &lanes {
            let p =
                s.lanes.iter().find(|l| &l.name == lane).map(|l| l.corrected).unwrap_or_default();
            let _ =
                write!(out, " {:>10} {:>10} {:>10}", fmt_us(p.p50), fmt_us(p.p99), fmt_us(p.p999));
        }
        let cpu = s.server.as_ref().map_or("-".into(), |c| format!("{:.1}µs", c.cpu_us_per_reply));
        let _ = writeln!(out, " {cpu:>9}  {}", verdict(sweep, i));
    }
    let _ = writeln!(out, "{}", knee_line(sweep));
    out
}

fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

fn verdict(sweep: &Sweep, i: usize) -> String {
    match (&sweep.steps[i].saturated, sweep.knee == Some(i)) {
        (Some(why), _) => format!("SATURATED: {why}"),
        (None, true) => "<- knee".into(),
        (None, false) if !sweep.steps[i].summary.passed() => "verification failed".into(),
        (None, false) => "ok".into(),
    }
}

fn knee_line(sweep: &Sweep) -> String {
    match (sweep.knee, sweep.steps.first().and_then(|s| s.saturated.as_ref())) {
        (Some(k), _) => format!(
            "knee: step {k}, {:.0} replies/s achieved (target {:.0}/s); the next step saturated",
            sweep.steps[k].summary.total.rate, sweep.steps[k].target
        ),
        (None, Some(_)) => "knee: below the first rate (already saturated there)".into(),
        (None, None) => "knee: not reached (no step saturated)".into(),
    }
}

fn lane_names(sweep: &Sweep) -> Vec<String> {
    sweep
        .steps
        .first()
        .map_or_else(Vec::new, |s| s.summary.lanes.iter().map(|l| l.name.clone()).collect())
}

/// The plot's series: p50, p99, p99.9 per lane against the achieved total rate.
fn series(sweep: &Sweep) -> Vec<SweepSeries> {
    let mut out = Vec::new();
    for (lane_index, lane) in lane_names(sweep).iter().enumerate() {
        for (rank, (label, pick)) in [
            ("p50", (|p: &crate::Percentiles| p.p50) as fn(&crate::Percentiles) -> f64),
            ("p99", |p| p.p99),
            ("p99.9", |p| p.p999),
        ]
        .into_iter()
        .enumerate()
        {
            let points = sweep
                .steps
                .iter()
                .filter_map(|s| {
                    let row = s.summary.lanes.iter().find(|l| &l.name == lane)?;
                    (row.corrected.count > 0).then(|| (s.summary.total.rate, pick(&row.corrected)))
                })
                .collect();
            out.push(SweepSeries {
                label: format!("{lane} {label}"),
                lane: lane_index,
                rank,
                points,
            });
        }
    }
    out
}

fn write(sweep: &Sweep, cfg: &RunConfig, plan: &SweepPlan, out: &Path) -> Result<(), Error> {
    let put = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        fs::write(&path, bytes).map_err(Error::io(format!("write {}", path.display())))
    };
    put("sweep.md", markdown(sweep).as_bytes())?;
    put("sweep.txt", terminal(sweep).as_bytes())?;
    let json = serde_json::to_vec_pretty(sweep).map_err(|e| Error::Config(e.to_string()))?;
    put("sweep.json", &json)?;
    let knee = sweep.knee.map(|k| sweep.steps[k].summary.total.rate);
    let title = format!(
        "{}: corrected latency vs throughput ({} connections, p99 bound {})",
        cfg.label,
        cfg.connections,
        fmt_us(plan.p99_bound.as_secs_f64() * 1e6)
    );
    write_sweep_plots(&series(sweep), knee, &title, out, "sweep")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_rates_and_saturation_reasons() {
        let r: Vec<f64> = rates(&SweepRates::Doubling { start: 100.0, max_steps: 4 }).collect();
        assert_eq!(r, vec![100.0, 200.0, 400.0, 800.0]);
        let plan = SweepPlan {
            rates: SweepRates::List(vec![1.0]),
            p99_bound: Duration::from_millis(10),
            min_achieved: 0.95,
        };
        let mut s: RunSummary = serde_json::from_str(SUMMARY).unwrap();
        assert_eq!(saturation(&s, 1000.0, &plan), None);
        s.total.rate = 940.0;
        assert_eq!(saturation(&s, 1000.0, &plan).unwrap(), "achieved 940/s < 95% of 1000/s");
        s.total.rate = 1000.0;
        s.lanes[0].corrected.p99 = 12_000.0;
        assert_eq!(saturation(&s, 1000.0, &plan).unwrap(), "work p99 12.00ms > 10.00ms");
    }

    #[test]
    fn the_knee_is_the_step_before_the_first_saturated_one() {
        let base: RunSummary = serde_json::from_str(SUMMARY).unwrap();
        let step = |target: f64, saturated: Option<&str>| SweepStep {
            target,
            dir: PathBuf::new(),
            summary: base.clone(),
            saturated: saturated.map(str::to_owned),
        };
        let sweep = Sweep {
            steps: vec![step(1.0, None), step(2.0, None), step(4.0, Some("x"))],
            knee: Some(1),
        };
        let md = markdown(&sweep);
        assert_eq!(md.lines().filter(|l| l.contains("<- knee")).count(), 1, "{md}");
        assert!(md.lines().nth(3).unwrap().starts_with("| 1 | 2 | 1000 |"), "{md}");
        assert!(md.contains("SATURATED: x") && md.contains("knee: step 1"), "{md}");
        assert!(terminal(&sweep).contains("work.p99.9"), "{}", terminal(&sweep));
        let s = series(&sweep);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].points, vec![(1000.0, 300.0); 3]);
    }

    const SUMMARY: &str = r#"{"label":"t","started":"","command":null,"version":"","protocol":"qmp",
      "mode":"open","depth":null,"connections":1,"threads":1,"warmup_s":0,"duration_s":1,
      "lanes":[{"name":"work","command":"work","oob":false,"target_rate":1000,
        "counts":{"sent":1000,"ok":1000,"errors":0,"failed":0,"missing":0,"unsent":0},"rate":1000,
        "corrected":{"count":1000,"min":1,"mean":2,"p50":100,"p90":200,"p99":300,"p999":400,"p9999":500,"max":600},
        "service":{"count":1000,"min":1,"mean":2,"p50":1,"p90":2,"p99":3,"p999":4,"p9999":5,"max":6}}],
      "commands":[],
      "total":{"name":"total","command":"","oob":false,"target_rate":1000,
        "counts":{"sent":1000,"ok":1000,"errors":0,"failed":0,"missing":0,"unsent":0},"rate":1000,
        "corrected":{"count":1000,"min":1,"mean":2,"p50":100,"p90":200,"p99":300,"p999":400,"p9999":500,"max":600},
        "service":{"count":1000,"min":1,"mean":2,"p50":1,"p90":2,"p99":3,"p999":4,"p9999":5,"max":6}},
      "remotes":[],"verification":{"duplicates":0,"unknown_ids":0,"out_of_order":0,"protocol_errors":0,"events":0},
      "send_lag":{"count":0,"min":0,"mean":0,"p50":0,"p90":0,"p99":0,"p999":0,"p9999":0,"max":0},
      "ceiling_rate":null,"expect_errors":false,"failures":[]}"#;
}
