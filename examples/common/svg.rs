//! The examples' line charts, drawn by `plotters` (its SVG backend alone: no font files and no
//! system library; the SVG names a sans-serif family and the viewer draws the text): panels side
//! by side, each with a title, axes, ticks, a grid, axis labels and a legend in the inside corner
//! that covers the fewest data points.

use std::io;
use std::path::Path;

use plotters::prelude::*;

/// Colours for successive lines (matplotlib's first five), for charts that do not pick their own.
pub const PALETTE: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];

/// One line of a chart.
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// An SVG colour written `"#rrggbb"` (`"#1f77b4"`).
    pub color: &'static str,
    /// Drawn dashed (for instance the training curve beside a solid test curve).
    pub dashed: bool,
    /// `(x, y)` points in order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A solid line.
    pub fn new(label: impl Into<String>, color: &'static str, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.into(), color, dashed: false, points }
    }

    /// The same line, dashed.
    pub fn dashed(mut self) -> Series {
        self.dashed = true;
        self
    }

    /// The finite points.
    fn finite(&self) -> impl Iterator<Item = (f64, f64)> + Clone + '_ {
        self.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite())
    }
}

/// One panel: a title, axis labels and its lines.
pub struct Chart {
    /// Above the panel.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The lines, in legend order.
    pub series: Vec<Series>,
    /// The y axis starts at 0 (losses) instead of just below the smallest value (accuracies).
    pub y_from_zero: bool,
}

impl Chart {
    /// An empty panel.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: vec![],
            y_from_zero: false,
        }
    }

    /// Adds a line.
    pub fn series(mut self, series: Series) -> Chart {
        self.series.push(series);
        self
    }

    /// Starts the y axis at 0.
    pub fn y_from_zero(mut self) -> Chart {
        self.y_from_zero = true;
        self
    }

    /// Every finite point of every line.
    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.series.iter().flat_map(Series::finite)
    }
}

const PANEL_W: u32 = 540;
const PANEL_H: u32 = 400;
const HEADER_H: u32 = 36;
/// The plotting area's margins inside a panel: left (tick labels and the y label), right, top
/// (the panel's title), bottom (tick labels and the x label), in pixels.
const MARGINS: (u32, u32, u32, u32) = (72, 24, 34, 56);

/// Writes `charts` side by side under `title` to `path` as SVG (creating its folder).
///
/// # Errors
/// A colour that is not `"#rrggbb"`, or the file cannot be written.
pub fn write(path: &Path, title: &str, charts: &[Chart]) -> io::Result<()> {
    let svg = render(title, charts)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)
}

/// The SVG document of `charts` side by side under `title`.
///
/// # Errors
/// A colour that is not `"#rrggbb"` (or anything plotters reports while drawing).
pub fn render(title: &str, charts: &[Chart]) -> io::Result<String> {
    let mut svg = String::new();
    {
        let size = (PANEL_W * charts.len().max(1) as u32, PANEL_H + HEADER_H);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let body = root.titled(title, ("sans-serif", 17).into_font().style(FontStyle::Bold)).map_err(drawing_error)?;
        for (chart, area) in charts.iter().zip(body.split_evenly((1, charts.len().max(1)))) {
            panel(&area, chart)?;
        }
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// Draws one chart on `area`.
fn panel(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, chart: &Chart) -> io::Result<()> {
    let (x_range, y_range) = ranges(chart);
    let (left, right, top, bottom) = MARGINS;
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 15).into_font().style(FontStyle::Bold))
        .margin_top(top - 26)
        .margin_right(right)
        .x_label_area_size(bottom - 6)
        .y_label_area_size(left - 8)
        .build_cartesian_2d(x_range.clone(), y_range.clone())
        .map_err(drawing_error)?;
    let integer_x = chart.points().all(|(x, _)| x.fract() == 0.0);
    // Whole epochs get whole ticks: at most one label per unit of x.
    let x_labels = if integer_x { ((x_range.end - x_range.start) as usize + 1).clamp(2, 10) } else { 8 };
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_labels(x_labels)
        .y_labels(7)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .bold_line_style(RGBColor(0xe4, 0xe4, 0xe4))
        .light_line_style(TRANSPARENT)
        .axis_style(RGBColor(0x33, 0x33, 0x33))
        .draw()
        .map_err(drawing_error)?;
    for line in &chart.series {
        let style = color(line.color)?.stroke_width(2);
        let annotated = if line.dashed {
            ctx.draw_series(DashedLineSeries::new(line.finite(), 7, 4, style)).map_err(drawing_error)?
        } else {
            ctx.draw_series(LineSeries::new(line.finite(), style)).map_err(drawing_error)?
        };
        // The legend's sample: three pieces of a 26-pixel line, with gaps when dashed.
        let pieces = if line.dashed { [(0, 7), (10, 17), (20, 26)] } else { [(0, 9), (9, 18), (18, 26)] };
        annotated.label(&line.label).legend(move |(x, y)| {
            let piece = |(a, b): (i32, i32)| PathElement::new(vec![(a, 0), (b, 0)], style);
            EmptyElement::at((x, y)) + piece(pieces[0]) + piece(pieces[1]) + piece(pieces[2])
        });
        // A dot per point when there are few, so single epochs stay visible.
        if line.finite().count() <= 40 {
            let fill = color(line.color)?.filled();
            ctx.draw_series(line.finite().map(|p| Circle::new(p, 2.6, fill))).map_err(drawing_error)?;
        }
    }
    if !chart.series.is_empty() {
        ctx.configure_series_labels()
            .position(legend_corner(chart, &x_range, &y_range))
            .label_font(("sans-serif", 12))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(0x99, 0x99, 0x99))
            .draw()
            .map_err(drawing_error)?;
    }
    Ok(())
}

/// The axes' ranges: x spans the data exactly (epochs 1..N), y is widened to whole ticks (and
/// starts at 0 when asked); a single value gets a little room either side.
fn ranges(chart: &Chart) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x_lo, mut x_hi) = bounds(chart.points().map(|p| p.0));
    let (mut y_lo, mut y_hi) = bounds(chart.points().map(|p| p.1));
    if chart.y_from_zero {
        y_lo = y_lo.min(0.0);
    }
    if x_hi <= x_lo {
        (x_lo, x_hi) = (x_lo - 1.0, x_hi + 1.0);
    }
    if y_hi <= y_lo {
        (y_lo, y_hi) = (y_lo - 0.5 * y_lo.abs().max(1e-3), y_hi + 0.5 * y_hi.abs().max(1e-3));
    }
    let step = nice_step(y_hi - y_lo, 6);
    (x_lo..x_hi, (y_lo / step).floor() * step..(y_hi / step).ceil() * step)
}

/// The inside corner whose legend box would cover the fewest points of the lines (sampled along
/// each segment, so a line crossing the box counts, not only its vertices).
fn legend_corner(chart: &Chart, x: &std::ops::Range<f64>, y: &std::ops::Range<f64>) -> SeriesLabelPosition {
    // The plotting area's size in pixels, and the legend's, as plotters lays them out.
    let (left, right, top, bottom) = MARGINS;
    let (w, h) = (f64::from(PANEL_W - left - right), f64::from(PANEL_H - top - bottom));
    let chars = chart.series.iter().map(|l| l.label.chars().count()).max().unwrap_or(0) as f64;
    let (box_w, box_h) = ((44.0 + 6.6 * chars) / w, (8.0 + 18.0 * chart.series.len() as f64) / h);
    // Points in the unit square, (0, 0) bottom left.
    let unit = |(px, py): (f64, f64)| ((px - x.start) / (x.end - x.start), (py - y.start) / (y.end - y.start));
    let mut samples = vec![];
    for line in &chart.series {
        let pts: Vec<(f64, f64)> = line.finite().map(unit).collect();
        samples.extend(pts.windows(2).flat_map(|pair| {
            let (a, b) = (pair[0], pair[1]);
            (0..=10).map(move |t| {
                let t = f64::from(t) / 10.0;
                (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
            })
        }));
        samples.extend(pts);
    }
    let (mx, my) = (8.0 / w, 8.0 / h);
    let corners = [
        (SeriesLabelPosition::UpperRight, 1.0 - mx - box_w, 1.0 - my - box_h),
        (SeriesLabelPosition::LowerRight, 1.0 - mx - box_w, my),
        (SeriesLabelPosition::UpperLeft, mx, 1.0 - my - box_h),
        (SeriesLabelPosition::LowerLeft, mx, my),
    ];
    let covered = |&(_, bx, by): &(SeriesLabelPosition, f64, f64)| {
        samples
            .iter()
            .filter(|(sx, sy)| *sx >= bx - mx && *sx <= bx + box_w + mx && *sy >= by - my && *sy <= by + box_h + my)
            .count()
    };
    corners.into_iter().min_by_key(covered).map_or(SeriesLabelPosition::UpperRight, |c| c.0)
}

/// The smallest and largest of `values` (0, 1 when there are none).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `target` ticks over `range`.
fn nice_step(range: f64, target: usize) -> f64 {
    let raw = range / target as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw);
    step.unwrap_or(10.0 * magnitude)
}

/// A tick label: whole numbers without decimals, others with at most four, trailing zeros cut.
fn tick(v: &f64) -> String {
    if v.fract() == 0.0 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `"#rrggbb"` as a plotters colour.
fn color(hex: &str) -> io::Result<RGBColor> {
    let digits = hex.strip_prefix('#').filter(|d| d.len() == 6 && d.chars().all(|c| c.is_ascii_hexdigit()));
    let channel = |d: &str, i: usize| u8::from_str_radix(&d[2 * i..2 * i + 2], 16).unwrap_or(0);
    match digits {
        Some(d) => Ok(RGBColor(channel(d, 0), channel(d, 1), channel(d, 2))),
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("colour {hex:?}: expected \"#rrggbb\""))),
    }
}

/// A plotters drawing error as an I/O error (the SVG is written to a string, so a failure here
/// is a layout or style problem, reported as such).
fn drawing_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing the plot: {e}"))
}
