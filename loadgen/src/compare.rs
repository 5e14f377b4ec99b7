//! `loadgen compare RUN_A RUN_B ...`: saved runs side by side, with ratios to the first run
//! per percentile, and one overlaid percentile plot.
//!
//! Reads only the files a run writes (`summary.json`, `<lane>.hgrm`), so runs from older
//! loadgen versions or other machines compare as long as those files are there.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::plot::{Curve, write_plots};
use crate::report::{fmt_count, fmt_us, parse_hgrm};
use crate::summary::{Percentiles, RunSummary};

/// A saved run read back.
#[derive(Debug, Clone)]
pub struct SavedRun {
    /// Its directory.
    pub dir: PathBuf,
    /// Short name for tables and legends (the directory name).
    pub name: String,
    /// `summary.json`.
    pub summary: RunSummary,
}

/// Reads a run directory.
pub fn load(dir: &Path) -> Result<SavedRun, Error> {
    let bad = |why: String| Error::RunDir { path: dir.to_path_buf(), why };
    let text = fs::read_to_string(dir.join("summary.json"))
        .map_err(|e| bad(format!("summary.json: {e}")))?;
    let summary = serde_json::from_str(&text).map_err(|e| bad(format!("summary.json: {e}")))?;
    let name = dir
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(SavedRun { dir: dir.to_path_buf(), name, summary })
}

/// The comparison table: per lane, one row per run with its corrected percentiles, and
/// below each later run its ratio to the first.
pub(crate) fn table(runs: &[SavedRun]) -> String {
    let mut out = String::new();
    for (i, run) in runs.iter().enumerate() {
        let s = &run.summary;
        let _ = writeln!(
            out,
            "[{i}] {} : {} {} {} conns, {:.1}s, {}",
            run.name,
            s.protocol,
            s.mode,
            s.connections,
            s.duration_s,
            s.remotes.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(",")
        );
    }
    let Some(first) = runs.first() else { return out };
    server_rows(&mut out, runs);
    for (index, lane) in first.summary.lanes.iter().enumerate() {
        let _ =
            write!(out, "\nlane {:<12} {:>3} {:>10} {:>10}", lane.name, "run", "count", "rate/s");
        for (label, _) in Percentiles::default().columns() {
            let _ = write!(out, " {label:>8}");
        }
        out.push('\n');
        let base = &lane.corrected;
        for (i, run) in runs.iter().enumerate() {
            // Same lane name, else the lane in the same position (e.g. engine `work` against
            // QEMU `query-status`, both the first in-band lane).
            let same_name = run.summary.lanes.iter().find(|l| l.name == lane.name);
            let Some(row) = same_name.or_else(|| run.summary.lanes.get(index)) else {
                let _ = writeln!(out, "{:<17} [{i}] (no such lane)", "");
                continue;
            };
            let _ = write!(
                out,
                "{:<17} [{i}] {:>10} {:>10.1}",
                "",
                fmt_count(row.corrected.count),
                row.rate
            );
            for (_, v) in row.corrected.columns() {
                let _ = write!(out, " {:>8}", fmt_us(v));
            }
            out.push('\n');
            if i > 0 {
                let _ = write!(
                    out,
                    "{:<17} {:>3} {:>10} {:>10}",
                    "",
                    "",
                    "",
                    format!("x{:.2}", ratio(row.rate, lane.rate))
                );
                for ((_, v), (_, b)) in row.corrected.columns().iter().zip(base.columns()) {
                    let _ = write!(out, " {:>8}", format!("x{:.2}", ratio(*v, b)));
                }
                out.push('\n');
            }
        }
    }
    out
}

/// Server cost per run, with ratios to the first run that has one.
fn server_rows(out: &mut String, runs: &[SavedRun]) {
    let Some(base) = runs.iter().find_map(|r| r.summary.server.as_ref()) else { return };
    let _ = writeln!(
        out,
        "\nserver cost {:>5} {:>12} {:>14} {:>12} {:>9}  target",
        "run", "CPU µs/reply", "switches/1k", "peak RSS MiB", "peak fds"
    );
    for (i, run) in runs.iter().enumerate() {
        let Some(c) = &run.summary.server else {
            let _ = writeln!(out, "{:<11} [{i}] (not measured)", "");
            continue;
        };
        let _ = writeln!(
            out,
            "{:<11} [{i}] {:>12.2} {:>14.1} {:>12.1} {:>9}  {}",
            "",
            c.cpu_us_per_reply,
            c.switches_per_1k_replies,
            c.peak_rss_kib as f64 / 1024.0,
            c.peak_fds,
            c.target
        );
        if !std::ptr::eq(c, base) {
            let _ = writeln!(
                out,
                "{:<15} {:>12} {:>14}",
                "",
                format!("x{:.2}", ratio(c.cpu_us_per_reply, base.cpu_us_per_reply)),
                format!("x{:.2}", ratio(c.switches_per_1k_replies, base.switches_per_1k_replies))
            );
        }
    }
}

fn ratio(value: f64, base: f64) -> f64 {
    if base > 0.0 { value / base } else { f64::NAN }
}

/// Curves of every lane of every run, from the saved `.hgrm` files.
pub(crate) fn curves(runs: &[SavedRun]) -> Vec<Curve> {
    let mut curves = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        for lane in &run.summary.lanes {
            let Ok(text) = fs::read_to_string(run.dir.join(format!("{}.hgrm", lane.name))) else {
                continue;
            };
            let label = format!("[{i}] {} {}", run.name, lane.name);
            curves.push(Curve { label, points: parse_hgrm(&text), secondary: false });
        }
    }
    curves
}

/// Loads `dirs`, writes `compare.txt` and the overlaid plot into `out`, returns the table.
pub fn compare(dirs: &[PathBuf], out: &Path) -> Result<String, Error> {
    let runs = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>, _>>()?;
    let text = table(&runs);
    fs::create_dir_all(out).map_err(Error::io(format!("create {}", out.display())))?;
    fs::write(out.join("compare.txt"), &text).map_err(Error::io("write compare.txt"))?;
    write_plots(&curves(&runs), "latency by percentile (corrected)", out, "compare")?;
    Ok(text)
}
