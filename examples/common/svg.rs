//! A small SVG line-chart writer for the examples' plots: panels side by side, each with a
//! title, axes, "nice" ticks, a grid, axis labels and a legend placed in the emptiest corner.
//! No dependency and no font library: the SVG names a sans-serif family and the viewer draws
//! the text.

use std::fmt::Write as _;
use std::path::Path;

/// One line of a chart.
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// An SVG colour (`"#1f77b4"`).
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
}

const PANEL_W: f64 = 540.0;
const PANEL_H: f64 = 400.0;
const HEADER_H: f64 = 36.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";

/// Writes `charts` side by side under `title` to `path` (creating its folder).
pub fn write(path: &Path, title: &str, charts: &[Chart]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, render(title, charts))
}

/// The SVG document for `charts` side by side under `title`.
pub fn render(title: &str, charts: &[Chart]) -> String {
    let width = PANEL_W * charts.len().max(1) as f64;
    let height = PANEL_H + HEADER_H;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="{FONT}">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="17" font-weight="bold" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, chart) in charts.iter().enumerate() {
        panel(&mut s, chart, PANEL_W * i as f64, HEADER_H);
    }
    s.push_str("</svg>\n");
    s
}

/// Draws one chart with its top-left corner at (`x0`, `y0`).
fn panel(s: &mut String, chart: &Chart, x0: f64, y0: f64) {
    let (left, right, top, bottom) = (x0 + 72.0, x0 + PANEL_W - 24.0, y0 + 34.0, y0 + PANEL_H - 56.0);
    let points = || chart.series.iter().flat_map(|l| l.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_lo, mut x_hi) = bounds(points().map(|p| p.0));
    let (mut y_lo, mut y_hi) = bounds(points().map(|p| p.1));
    if chart.y_from_zero {
        y_lo = y_lo.min(0.0);
    }
    if x_hi <= x_lo {
        (x_lo, x_hi) = (x_lo - 1.0, x_hi + 1.0);
    }
    if y_hi <= y_lo {
        (y_lo, y_hi) = (y_lo - 0.5 * y_lo.abs().max(1e-3), y_hi + 0.5 * y_hi.abs().max(1e-3));
    }
    // x spans the data exactly (epochs 1..N); y is widened to whole ticks.
    let mut x_step = nice_step(x_hi - x_lo, 8);
    if x_step < 1.0 && points().all(|p| p.0.fract() == 0.0) {
        x_step = 1.0;
    }
    let y_step = nice_step(y_hi - y_lo, 6);
    let (y_lo, y_hi) = ((y_lo / y_step).floor() * y_step, (y_hi / y_step).ceil() * y_step);
    let px = |x: f64| left + (x - x_lo) / (x_hi - x_lo) * (right - left);
    let py = |y: f64| bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top);

    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        top - 12.0,
        escape(&chart.title)
    );
    // Grid and tick labels.
    let y_decimals = decimals(y_step);
    let mut k = 0;
    loop {
        let y = y_lo + k as f64 * y_step;
        if y > y_hi + y_step * 1e-6 {
            break;
        }
        let v = py(y);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{v:.1}" x2="{right}" y2="{v:.1}" stroke="#e4e4e4"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" font-size="12" text-anchor="end">{:.*}</text>"#,
            left - 6.0,
            v + 4.0,
            y_decimals,
            y
        );
        k += 1;
    }
    let x_decimals = decimals(x_step);
    let mut x = (x_lo / x_step).ceil() * x_step;
    while x <= x_hi + x_step * 1e-6 {
        let h = px(x);
        let _ = writeln!(s, r##"<line x1="{h:.1}" y1="{top}" x2="{h:.1}" y2="{bottom}" stroke="#efefef"/>"##);
        let _ = writeln!(s, r##"<line x1="{h:.1}" y1="{bottom}" x2="{h:.1}" y2="{}" stroke="#333"/>"##, bottom + 5.0);
        let _ = writeln!(
            s,
            r#"<text x="{h:.1}" y="{}" font-size="12" text-anchor="middle">{:.*}</text>"#,
            bottom + 19.0,
            x_decimals,
            x
        );
        x += x_step;
    }
    // Axes and their labels.
    let _ = writeln!(
        s,
        r##"<polyline points="{left},{top} {left},{bottom} {right},{bottom}" fill="none" stroke="#333" stroke-width="1.2"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-size="13" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 40.0,
        escape(&chart.x_label)
    );
    let (lx, ly) = (x0 + 18.0, (top + bottom) / 2.0);
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{ly}" font-size="13" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(&chart.y_label)
    );
    // The lines, with a dot per point when there are few.
    for line in &chart.series {
        let pts: Vec<(f64, f64)> =
            line.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash = if line.dashed { r#" stroke-dasharray="7 4""# } else { "" };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            coords.join(" "),
            line.color
        );
        if pts.len() <= 40 {
            for (x, y) in &pts {
                let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.6" fill="{}"/>"#, line.color);
            }
        }
    }
    legend(s, chart, (left, right, top, bottom), &px, &py);
}

/// The legend box, in whichever inside corner covers the fewest data points.
fn legend(s: &mut String, chart: &Chart, area: (f64, f64, f64, f64), px: &dyn Fn(f64) -> f64, py: &dyn Fn(f64) -> f64) {
    if chart.series.is_empty() {
        return;
    }
    let (left, right, top, bottom) = area;
    let chars = chart.series.iter().map(|l| l.label.chars().count()).max().unwrap_or(0) as f64;
    let (w, h) = (44.0 + 6.6 * chars, 8.0 + 18.0 * chart.series.len() as f64);
    // Sample along every segment so a line crossing a box counts, not only its vertices.
    let mut samples = vec![];
    for line in &chart.series {
        let pts: Vec<(f64, f64)> =
            line.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        for pair in pts.windows(2) {
            for t in 0..=10 {
                let t = t as f64 / 10.0;
                samples.push((pair[0].0 + t * (pair[1].0 - pair[0].0), pair[0].1 + t * (pair[1].1 - pair[0].1)));
            }
        }
        samples.extend(pts.iter().copied());
    }
    let corners = [
        (right - w - 8.0, top + 8.0),
        (right - w - 8.0, bottom - h - 8.0),
        (left + 8.0, top + 8.0),
        (left + 8.0, bottom - h - 8.0),
    ];
    let covered = |&(bx, by): &(f64, f64)| {
        samples
            .iter()
            .filter(|(x, y)| *x >= bx - 4.0 && *x <= bx + w + 4.0 && *y >= by - 4.0 && *y <= by + h + 4.0)
            .count()
    };
    let (bx, by) = corners.iter().copied().min_by_key(covered).unwrap_or(corners[0]);
    let _ = writeln!(
        s,
        r##"<rect x="{bx:.1}" y="{by:.1}" width="{w:.1}" height="{h:.1}" fill="white" fill-opacity="0.9" stroke="#999"/>"##
    );
    for (i, line) in chart.series.iter().enumerate() {
        let y = by + 16.0 + 18.0 * i as f64;
        let dash = if line.dashed { r#" stroke-dasharray="7 4""# } else { "" };
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            bx + 8.0,
            y - 4.0,
            bx + 34.0,
            y - 4.0,
            line.color
        );
        let _ = writeln!(s, r#"<text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"#, bx + 40.0, escape(&line.label));
    }
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

/// Decimal places needed to print multiples of `step`.
fn decimals(step: f64) -> usize {
    (-step.log10().floor()).max(0.0) as usize
}

/// Escapes text for an SVG text node.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
