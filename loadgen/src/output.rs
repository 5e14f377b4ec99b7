//! Writes a finished run to its results directory.
//!
//! Layout (documented in the README; `compare` reads it back):
//! `report.txt` (the terminal table), `summary.json` ([`RunSummary`]), `<lane>.hgrm` and
//! `<lane>.service.hgrm` (HdrHistogram percentile distributions, ms), `intervals.hlog`
//! (HdrHistogram interval log, tag = lane), `histograms.hlog` (the full-resolution run
//! histograms, tags `corrected.<lane>`, `service.<lane>`, `send_lag`, which `merge` adds
//! exactly), `intervals.csv` (the same as a table),
//! `percentiles.svg` / `percentiles.png` (the plot). Directories are never overwritten:
//! results are dated records.
//!
//! [`RunSummary`]: crate::RunSummary

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hdrhistogram::Histogram;

use crate::plot::{Curve, write_plots};
use crate::report::{hgrm, histograms_log, hlog, intervals_csv, table};
use crate::{Error, Run};

/// `results/<YYYY-MM-DD>-<HHMMSS>-<label>` (UTC) under the current directory.
pub fn default_dir(label: &str, at: SystemTime) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    // "2026-01-02T03:04:05Z" -> "2026-01-02-030405"
    let stamp: String = stamp.trim_end_matches('Z').replacen('T', "-", 1).replace(':', "");
    Path::new("results").join(format!("{stamp}-{label}"))
}

/// `(percentile, µs)` points of a nanosecond histogram, HdrHistogram's 5 ticks per half.
pub(crate) fn curve_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e3))
        .collect()
}

impl Run {
    /// The terminal report.
    pub fn table(&self) -> String {
        table(&self.summary)
    }

    /// The plot's curves: corrected latency per lane, service time dashed beside it.
    pub fn curves(&self) -> Vec<Curve> {
        let mut curves = Vec::new();
        for (name, corrected, service) in self.lanes.iter().filter(|(_, c, _)| !c.is_empty()) {
            curves.push(Curve {
                label: name.clone(),
                points: curve_points(corrected),
                secondary: false,
            });
            let label = format!("{name} (service time)");
            curves.push(Curve { label, points: curve_points(service), secondary: true });
        }
        curves
    }

    /// Writes every artifact into `dir` (created; must not exist yet). Returns the files.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<PathBuf>, Error> {
        if dir.exists() {
            return Err(Error::Config(format!(
                "{} exists; results are never overwritten",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let mut files = Vec::new();
        let mut put = |name: &str, bytes: &[u8]| -> Result<(), Error> {
            let path = dir.join(name);
            fs::write(&path, bytes).map_err(Error::io(format!("write {}", path.display())))?;
            files.push(path);
            Ok(())
        };
        put("report.txt", self.table().as_bytes())?;
        let json =
            serde_json::to_vec_pretty(&self.summary).map_err(|e| Error::Config(e.to_string()))?;
        put("summary.json", &json)?;
        for (name, corrected, service) in &self.lanes {
            put(&format!("{name}.hgrm"), hgrm(corrected).as_bytes())?;
            put(&format!("{name}.service.hgrm"), hgrm(service).as_bytes())?;
        }
        let names: Vec<String> = self.lanes.iter().map(|(n, ..)| n.clone()).collect();
        let window = std::time::Duration::from_secs_f64(self.summary.duration_s);
        let all = histograms_log(&self.lanes, &self.lag, window, self.started);
        put("histograms.hlog", &all)?;
        put("intervals.hlog", &hlog(&self.intervals, &names, self.interval, self.started))?;
        put("intervals.csv", intervals_csv(&self.intervals, &names, self.interval).as_bytes())?;
        let title = format!(
            "{} — {} {}, latency by percentile",
            self.summary.label, self.summary.protocol, self.summary.mode
        );
        match write_plots(&self.curves(), &title, dir, "percentiles") {
            Ok(()) => files.extend([dir.join("percentiles.svg"), dir.join("percentiles.png")]),
            Err(e) => tracing::warn!(error = %e, "plot not written"),
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn default_dir_is_dated_and_labelled() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(default_dir("smoke", at), Path::new("results/2023-11-14-221320-smoke"));
    }
}
