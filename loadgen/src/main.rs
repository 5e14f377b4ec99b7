//! The `loadgen` binary: CLI, progress bar, logging, printing and saving the report.
//!
//! Everything measurable lives in the library; this file maps the command line onto a
//! [`RunConfig`](loadgen::RunConfig), runs it on a worker thread while the main thread draws
//! the progress bar from [`LiveStats`], then prints and saves. Exit status: 0 pass,
//! 1 verification failure or a run that could not start, 2 usage error (clap).

mod cli;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use loadgen::{LiveStats, Phase, Run, RunConfig};

use crate::cli::{Cli, Command, CompareArgs, MergeArgs, RunArgs, SweepArgs};

/// Progress bar refresh period.
const TICK: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "loadgen=info,ooblane=warn".into()),
        )
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        None => main_run(&cli.run, false),
        Some(Command::Ceiling(args)) => main_run(args, true),
        Some(Command::Compare(args)) => main_compare(args),
        Some(Command::Sweep(args)) => main_sweep(args),
        Some(Command::Merge(args)) => main_merge(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A measured run (or, with `ceiling_only`, just the ceiling).
fn main_run(args: &RunArgs, ceiling_only: bool) -> anyhow::Result<ExitCode> {
    let cfg = args.to_config()?;
    let ceiling = if args.ceiling || ceiling_only {
        let mut ceiling_cfg = cfg.clone();
        if ceiling_only {
            ceiling_cfg.label = format!("{}-ceiling", cfg.label);
        }
        Some(with_progress(
            &loadgen::ceiling_config(&ceiling_cfg, echo_placeholder()),
            "ceiling",
            || loadgen::measure_ceiling(&ceiling_cfg),
        )?)
    } else {
        None
    };
    let mut run = match (ceiling_only, ceiling) {
        (true, Some(run)) => run,
        (_, ceiling) => {
            let live = LiveStats::default();
            let mut run = with_live(&cfg, &live, "run", || loadgen::run_with(&cfg, &live))?;
            if let Some(c) = ceiling {
                run.set_ceiling(c.summary.total.rate);
            }
            run
        }
    };
    run.set_command(std::env::args().collect::<Vec<_>>().join(" "));
    report(&run, args)?;
    Ok(if run.summary.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The ceiling config is only used for its durations by the progress bar.
fn echo_placeholder() -> loadgen::Address {
    loadgen::Address::Tcp(([127, 0, 0, 1], 0).into())
}

/// Runs `f` with a progress bar over `cfg`'s duration (no live counters).
fn with_progress<T>(cfg: &RunConfig, what: &str, f: impl FnOnce() -> T + Send) -> T
where
    T: Send,
{
    let live = LiveStats::default();
    with_live(cfg, &live, what, f)
}

/// Runs `f` on a worker thread while drawing `live` as a progress bar on stderr.
fn with_live<T: Send>(
    cfg: &RunConfig,
    live: &LiveStats,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> T {
    let total = cfg.warmup + cfg.duration;
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total.as_millis() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    thread::scope(|s| {
        let worker = s.spawn(f);
        let (mut last, mut last_at, mut started) = (live.snapshot(), Instant::now(), None);
        while !worker.is_finished() {
            thread::sleep(TICK);
            let now = Instant::now();
            let snap = live.snapshot();
            if snap.phase >= Phase::Warmup && started.is_none() {
                started = Some(now);
            }
            let elapsed = started.map_or(Duration::ZERO, |t| now - t);
            bar.set_position(elapsed.min(total).as_millis() as u64);
            let rate = (snap.replies - last.replies) as f64 / (now - last_at).as_secs_f64();
            bar.set_message(format!(
                "{:?}: {rate:.0} replies/s, {} sent, {} bad, {} reconnects",
                snap.phase, snap.sent, snap.bad, snap.reconnects
            ));
            (last, last_at) = (snap, now);
        }
        bar.finish_and_clear();
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Prints the report and writes the results directory.
fn report(run: &Run, args: &RunArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&run.summary)?)?;
    } else {
        write!(out, "{}", run.table())?;
    }
    if args.no_save {
        return Ok(());
    }
    let dir: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| loadgen::default_dir(&run.summary.label, SystemTime::now()));
    run.write_to(&dir).with_context(|| format!("saving results to {}", dir.display()))?;
    writeln!(std::io::stderr(), "results written to {}", dir.display())?;
    Ok(())
}

/// `loadgen sweep`.
fn main_sweep(args: &SweepArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.run.to_config()?;
    let out = args.run.out.clone().unwrap_or_else(|| {
        loadgen::default_dir(&format!("{}-sweep", cfg.label), SystemTime::now())
    });
    let sweep = loadgen::sweep(&cfg, &args.plan(), &out, |step| {
        let live = LiveStats::default();
        let what = format!("{:.0}/s", step.rate);
        with_live(step, &live, &what, || loadgen::run_with(step, &live))
    })?;
    write!(std::io::stdout().lock(), "{}", std::fs::read_to_string(out.join("sweep.txt"))?)?;
    writeln!(std::io::stderr(), "sweep written to {}", out.display())?;
    let passed = sweep.steps.iter().all(|s| s.summary.passed());
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `loadgen merge`.
fn main_merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let run = loadgen::merge(&args.runs)?;
    write!(std::io::stdout().lock(), "{}", run.table())?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| loadgen::default_dir(&run.summary.label, SystemTime::now()));
    run.write_to(&dir).with_context(|| format!("saving results to {}", dir.display()))?;
    writeln!(std::io::stderr(), "merged run written to {}", dir.display())?;
    Ok(if run.summary.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `loadgen compare`.
fn main_compare(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let out =
        args.out.clone().unwrap_or_else(|| loadgen::default_dir("compare", SystemTime::now()));
    let table = loadgen::compare(&args.runs, &out)?;
    write!(std::io::stdout().lock(), "{table}")?;
    writeln!(std::io::stderr(), "comparison written to {}", out.display())?;
    Ok(ExitCode::SUCCESS)
}
