//! PNG figures drawn with plotters on an in-memory bitmap, text in DejaVu Sans embedded in the
//! binary (the `dejavu` crate), so drawing needs no system font library and no font files.

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::Once;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;

/// Colours of the series, in order (the "tab10" palette).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are DejaVu Sans, a valid TrueType font; registration cannot fail on them.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// One curve: a name for the legend and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points, in order of x.
    pub points: Vec<(f64, f64)>,
}

/// One group of bars: a legend name and, per category, `(mean, std)` (std drawn as an error
/// bar; NaN for none).
#[derive(Debug, Clone, PartialEq)]
pub struct BarSeries {
    /// Legend entry.
    pub name: String,
    /// `(mean, std)` per category.
    pub values: Vec<(f64, f64)>,
}

impl BarSeries {
    /// One series per name of `names`, in order, each with no values yet.
    pub fn empty_each(names: &[&str]) -> Vec<Self> {
        names
            .iter()
            .map(|n| Self {
                name: (*n).to_string(),
                values: Vec::new(),
            })
            .collect()
    }
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = enc.write_header().context("PNG header")?;
        writer.write_image_data(rgb).context("PNG data")?;
    }
    Ok(out)
}

fn render(draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>) -> anyhow::Result<Vec<u8>> {
    register_font();
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    encode_png(&buf, WIDTH, HEIGHT)
}

/// A tick label: 3 significant digits, no trailing zeros, no exponent for usual magnitudes.
fn tick(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The legend corner with the fewest points of `series` near it (in the axis-relative
/// coordinates, y after the log when `log_y`).
fn quiet_corner(series: &[Series], x: (f64, f64), y: (f64, f64), log_y: bool) -> SeriesLabelPosition {
    let ty = |v: f64| if log_y { v.ln() } else { v };
    let (y0, y1) = (ty(y.0), ty(y.1));
    let mut count = [0usize; 4]; // upper right, upper left, lower right, lower left
    for p in series.iter().flat_map(|s| &s.points) {
        if !(p.0.is_finite() && p.1.is_finite()) || (log_y && p.1 <= 0.0) {
            continue;
        }
        let u = (p.0 - x.0) / (x.1 - x.0).max(1e-300);
        let v = (ty(p.1) - y0) / (y1 - y0).max(1e-300);
        let right = u > 0.6;
        let left = u < 0.4;
        let up = v > 0.6;
        let down = v < 0.4;
        for (i, hit) in [right && up, left && up, right && down, left && down]
            .into_iter()
            .enumerate()
        {
            count[i] += usize::from(hit);
        }
    }
    let best = (0..4).min_by_key(|&i| (count[i], i)).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A line chart of `series` as a PNG (900 × 540). With `log_y`, the y axis is logarithmic and
/// points with y ≤ 0 are left out. Non-finite points are left out.
///
/// # Errors
/// A drawing or encoding error.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> anyhow::Result<Vec<u8>> {
    let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let (x0, x1) = finite_range(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| keep(p)).map(|p| p.0)),
    )
    .unwrap_or((0.0, 1.0));
    let (y0, y1) = finite_range(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| keep(p)).map(|p| p.1)),
    )
    .unwrap_or((0.1, 1.0));
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let corner = quiet_corner(series, (x0, x1), (y0, y1), log_y);
    render(|root| {
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .light_line_style(RGBColor(240, 240, 240))
                    .x_label_formatter(&tick)
                    .y_label_formatter(&tick)
                    .y_labels(12)
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .label_style(("sans-serif", 14))
                    .axis_desc_style(("sans-serif", 16))
                    .draw()
                    .map_err(err)?;
                for (i, s) in series.iter().enumerate() {
                    let c = color(i);
                    chart
                        .draw_series(LineSeries::new(
                            s.points.iter().copied().filter(|p| keep(p)),
                            c.stroke_width(2),
                        ))
                        .map_err(err)?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
                }
                chart
                    .configure_series_labels()
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .position(corner.clone())
                    .draw()
                    .map_err(err)?;
            }};
        }
        if log_y {
            let (lo, hi) = if y1 > y0 { (y0, y1) } else { (y0 / 2.0, y0 * 2.0) };
            draw!(builder
                .build_cartesian_2d(x0..x1, (lo * 0.9..hi * 1.1).log_scale())
                .map_err(err)?);
        } else {
            let pad = if y1 > y0 { 0.05 * (y1 - y0) } else { 1.0 };
            draw!(builder
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
                .map_err(err)?);
        }
        Ok(())
    })
}

/// The range of a metric that has one: 0 to 1 for AP (also AP50, AP75, AP@[.5:.95]), ROC-AUC,
/// recall, precision, F1, accuracy, balanced accuracy, Dice, IoU and mean IoU (by name, any
/// case); `None` for the others.
pub fn metric_range(name: &str) -> Option<(f64, f64)> {
    const BOUNDED: [&str; 9] = [
        "ap",
        "roc_auc",
        "recall",
        "precision",
        "f1",
        "accuracy",
        "balanced_accuracy",
        "dice",
        "iou",
    ];
    let name = name.to_ascii_lowercase();
    (BOUNDED.contains(&name.as_str()) || name.starts_with("ap") || name == "mean iou").then_some((0.0, 1.0))
}

/// A grouped bar chart as a PNG (900 × 540): one group per category, one bar per series, with
/// ± std error bars.
///
/// When every series is a metric with a range ([`metric_range`]), the y axis is that range and
/// the error bars are clipped to it (the legend then sits right of the plot); otherwise the axis
/// fits the bars and error bars, with headroom for the legend.
///
/// # Errors
/// A drawing or encoding error.
pub fn bar_chart(title: &str, y_label: &str, categories: &[String], series: &[BarSeries]) -> anyhow::Result<Vec<u8>> {
    let range = series
        .iter()
        .map(|s| metric_range(&s.name))
        .reduce(|a, b| if a == b { a } else { None })
        .flatten();
    let clip = |v: f64| range.map_or(v, |(lo, hi)| v.clamp(lo, hi));
    let all = series.iter().flat_map(|s| {
        s.values.iter().flat_map(|&(m, sd)| {
            let sd = if sd.is_finite() { sd } else { 0.0 };
            [m - sd, m + sd, m]
        })
    });
    let (lo, hi) = finite_range(all.chain([0.0])).unwrap_or((0.0, 1.0));
    let pad = if hi > lo { 0.08 * (hi - lo) } else { 1.0 };
    let (lo, hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad);
    // headroom above the bars for the legend: about 20 px per entry of a ~420 px plot
    let frac = ((series.len() as f64 * 20.0 + 20.0) / 420.0).min(0.6);
    let hi = lo + (hi - lo) / (1.0 - frac);
    let (lo, hi) = range.unwrap_or((lo, hi));
    let legend_width = if range.is_some() { 170 } else { 0 };
    let ncat = categories.len().max(1);
    let nser = series.len().max(1);
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .margin_right(12 + legend_width)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(ncat as f64 - 0.5), lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(240, 240, 240))
            .y_label_formatter(&tick)
            .x_labels(0)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        let width = 0.8 / nser as f64;
        for (j, s) in series.iter().enumerate() {
            let c = color(j);
            let bars = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.0.is_finite())
                .map(|(i, &(m, _))| {
                    let left = i as f64 - 0.4 + j as f64 * width;
                    Rectangle::new([(left, 0.0), (left + width * 0.92, m)], c.filled())
                });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            let whiskers = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.0.is_finite() && v.1.is_finite() && v.1 > 0.0)
                .map(|(i, &(m, sd))| {
                    let x = i as f64 - 0.4 + (j as f64 + 0.46) * width;
                    PathElement::new(vec![(x, clip(m - sd)), (x, clip(m + sd))], BLACK.stroke_width(1))
                });
            chart.draw_series(whiskers).map_err(err)?;
        }
        if range.is_some() {
            // the legend right of the plot, on the root area (the plot area clips what leaves it)
            let (px, py) = chart.backend_coord(&(ncat as f64 - 0.5, hi));
            for (j, s) in series.iter().enumerate() {
                let y = py + 4 + 22 * j as i32;
                root.draw(&Rectangle::new([(px + 14, y), (px + 28, y + 12)], color(j).filled()))
                    .map_err(err)?;
                root.draw(&Text::new(
                    s.name.clone(),
                    (px + 34, y - 1),
                    ("sans-serif", 14).into_font(),
                ))
                .map_err(err)?;
            }
        } else {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }
        let style = TextStyle::from(("sans-serif", 15).into_font()).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        for (i, name) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64, lo));
            root.draw(&Text::new(name.clone(), (px, py + 8), style.clone()))
                .map_err(err)?;
        }
        Ok(())
    })
}
