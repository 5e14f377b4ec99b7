//! Percentile plots: latency (log scale) against percentile on a "nines" axis, one line per
//! curve, written as SVG and PNG with plotters.
//!
//! The x axis is `-log10(1 - p)`, so 90%, 99%, 99.9%, ... are evenly spaced, as in
//! HdrHistogram's plotter: the tail gets as much room as the median. Text is rendered with
//! DejaVu Sans embedded from the `dejavu` crate (plotters' `ab_glyph` feature), so plotting
//! needs no system fonts or font libraries. Runs once after a run; never on a driver thread.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Error;
use crate::report::fmt_us;

/// One line: a label and `(percentile in 0..1, latency in µs)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Points in increasing percentile order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed and thinner (service time beside corrected latency).
    pub secondary: bool,
}

/// Plot size in pixels: wide enough for six nines and a legend.
const SIZE: (u32, u32) = (1100, 650);

/// Line colours, colour-blind safe (Okabe-Ito), cycled per primary curve.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Highest percentile shown, in nines (99.9999%): beyond that no run of reasonable length has
/// samples.
const MAX_NINES: f64 = 6.0;

/// The x coordinate of percentile `p` (0..1).
pub(crate) fn nines(p: f64) -> f64 {
    -(1.0 - p).max(1e-9).log10()
}

/// Axis label of an integer number of nines: 0 → "0%", 1 → "90%", 3 → "99.9%".
pub(crate) fn nines_label(x: f64) -> String {
    let n = x.round() as i32;
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

/// Writes `stem.svg` and `stem.png`; the SVG is written even if the PNG fails.
pub(crate) fn write_plots(
    curves: &[Curve],
    title: &str,
    dir: &Path,
    stem: &str,
) -> Result<(), Error> {
    write_svg_and_png(&PercentileChart { curves, title }, dir, stem)
}

/// A chart that can be drawn on any plotters backend, so one routine writes it as SVG and PNG.
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Latency by percentile, one curve per lane.
struct PercentileChart<'a> {
    curves: &'a [Curve],
    title: &'a str,
}

impl Chart for PercentileChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        draw(root, self.curves, self.title)
    }
}

/// Latency against achieved rate over a sweep's steps.
struct SweepChart<'a> {
    series: &'a [SweepSeries],
    knee: Option<f64>,
    title: &'a str,
}

impl Chart for SweepChart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<(), String> {
        draw_sweep(root, self.series, self.knee, self.title)
    }
}

/// Writes `stem.svg`, then `stem.png` (the SVG stays even if the PNG fails).
fn write_svg_and_png(chart: &impl Chart, dir: &Path, stem: &str) -> Result<(), Error> {
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let plot_err = |path: &Path| {
        let path = path.to_path_buf();
        move |why: String| Error::Plot { path, why }
    };
    register_font();
    chart.draw(SVGBackend::new(&svg, SIZE).into_drawing_area()).map_err(plot_err(&svg))?;
    chart.draw(BitMapBackend::new(&png, SIZE).into_drawing_area()).map_err(plot_err(&png))
}

/// Registers the embedded font as plotters' "sans-serif", once per process.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            tracing::warn!("the embedded DejaVu font did not load; plot text may be missing");
        }
    });
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve],
    title: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (x_max, y_min, y_max) = bounds(curves);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_right(48)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| fmt_us(*y))
        .x_desc("percentile")
        .y_desc("latency")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(err)?;
    let mut colour = 0;
    for (i, curve) in curves.iter().enumerate() {
        if !curve.secondary && i > 0 {
            colour += 1;
        }
        let color = PALETTE[colour % PALETTE.len()];
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .filter(|(p, _)| *p < 1.0 && nines(*p) <= x_max)
            .map(|&(p, v)| (nines(p), v.max(y_min)))
            .collect();
        let style =
            if curve.secondary { color.mix(0.55).stroke_width(1) } else { color.stroke_width(2) };
        let series = chart.draw_series(LineSeries::new(points, style)).map_err(err)?;
        series
            .label(curve.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// One line of a sweep plot: a percentile of one lane against the achieved rate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SweepSeries {
    /// Legend text (`work p99`).
    pub(crate) label: String,
    /// Lane index: picks the colour.
    pub(crate) lane: usize,
    /// 0 = p50, 1 = p99, 2 = p99.9: picks the marker and line weight.
    pub(crate) rank: usize,
    /// `(achieved replies/s, latency µs)` per step.
    pub(crate) points: Vec<(f64, f64)>,
}

/// Writes `stem.svg` and `stem.png` of a sweep: latency (log) against achieved rate, with a
/// vertical line at the knee.
pub(crate) fn write_sweep_plots(
    series: &[SweepSeries],
    knee: Option<f64>,
    title: &str,
    dir: &Path,
    stem: &str,
) -> Result<(), Error> {
    write_svg_and_png(&SweepChart { series, knee, title }, dir, stem)
}

fn draw_sweep<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    series: &[SweepSeries],
    knee: Option<f64>,
    title: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1.0) * 1.08;
    let y_lo = all.clone().map(|p| p.1).fold(f64::MAX, f64::min).clamp(0.01, 1e12) / 1.5;
    let y_hi = (all.map(|p| p.1).fold(0.0f64, f64::max) * 1.5).max(y_lo * 10.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .margin_right(48)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| fmt_us(*y))
        .x_desc("achieved throughput (replies/s)")
        .y_desc("latency (corrected)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(err)?;
    if let Some(x) = knee {
        let style = BLACK.mix(0.5).stroke_width(1);
        chart
            .draw_series(LineSeries::new([(x, y_lo), (x, y_hi)], style))
            .map_err(err)?
            .label(format!("knee ({x:.0}/s)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    for s in series {
        let color = PALETTE[s.lane % PALETTE.len()];
        let style =
            color.mix([0.55, 0.8, 1.0][s.rank.min(2)]).stroke_width([1, 2, 2][s.rank.min(2)]);
        let rank = s.rank;
        chart.draw_series(LineSeries::new(s.points.clone(), style)).map_err(err)?;
        chart
            .draw_series(s.points.iter().map(|&p| marker(p, rank, style)))
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| marker((x + 12, y), rank, style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The marker of a percentile: circle (p50), triangle (p99), cross (p99.9).
fn marker<C, DB: DrawingBackend>(
    at: C,
    rank: usize,
    style: ShapeStyle,
) -> DynElement<'static, DB, C>
where
    C: Clone + 'static,
{
    match rank {
        0 => Circle::new(at, 4, style).into_dyn(),
        1 => TriangleMarker::new(at, 5, style.filled()).into_dyn(),
        _ => Cross::new(at, 5, style.stroke_width(2)).into_dyn(),
    }
}

/// x range end (whole nines covering the data) and y range (a little beyond the data).
fn bounds(curves: &[Curve]) -> (f64, f64, f64) {
    let finite = curves.iter().flat_map(|c| c.points.iter()).filter(|(p, _)| *p < 1.0);
    let (mut x, mut lo, mut hi) = (1.0f64, f64::MAX, 0.0f64);
    for &(p, v) in finite {
        x = x.max(nines(p));
        lo = lo.min(v);
        hi = hi.max(v);
    }
    for c in curves {
        if let Some(&(_, v)) = c.points.last() {
            hi = hi.max(v);
        }
    }
    if lo == f64::MAX || hi <= 0.0 {
        return (2.0, 1.0, 1000.0);
    }
    let lo = (lo.max(0.01) / 1.5).max(0.01);
    let hi = (hi * 1.5).max(lo * 10.0);
    (x.ceil().clamp(1.0, MAX_NINES), lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_spaces_each_nine_evenly() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
    }

    #[test]
    fn bounds_cover_the_data_in_whole_nines() {
        let c = Curve {
            label: "a".into(),
            points: vec![(0.0, 10.0), (0.995, 100.0), (1.0, 5000.0)],
            secondary: false,
        };
        let (x, lo, hi) = bounds(&[c]);
        assert_eq!(x, 3.0);
        assert!(lo < 10.0 && hi >= 5000.0);
    }
}
