//! Inline SVG plots for the HTML report: line plots on linear or log10 axes and square 2-D
//! scatter plots, each with a title, axis labels (with units), tick labels (integers on integer
//! axes) and a legend. A line plot carries the numbers it draws in a JSON block
//! (`<script type="application/json" class="plot-data">`: per line its name, x and y), so a
//! reader, or a test, can check them against the run's files.

use super::html::{escape, json_script};
use std::fmt::Write;

/// How an axis maps values to positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// log10; values <= 0 are not drawn.
    Log10,
}

/// An axis: its label (name and unit), scale, and whether its values are integers (then its
/// ticks are whole numbers printed without decimals).
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub scale: Scale,
    pub integer: bool,
}

impl Axis {
    pub fn linear(label: impl Into<String>) -> Self {
        Axis {
            label: label.into(),
            scale: Scale::Linear,
            integer: false,
        }
    }

    pub fn log(label: impl Into<String>) -> Self {
        Axis {
            scale: Scale::Log10,
            ..Axis::linear(label)
        }
    }

    pub fn integer(label: impl Into<String>) -> Self {
        Axis {
            integer: true,
            ..Axis::linear(label)
        }
    }

    fn transform(&self, v: f64) -> Option<f64> {
        let t = match self.scale {
            Scale::Linear => v,
            Scale::Log10 if v > 0.0 => v.log10(),
            Scale::Log10 => return None,
        };
        t.is_finite().then_some(t)
    }
}

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend entry (empty: none).
    pub name: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    /// Index into the palette.
    pub color: usize,
    pub opacity: f64,
    pub width: f64,
    /// A dot at each point (for short series such as per-bucket losses).
    pub markers: bool,
}

impl Line {
    pub fn new(name: impl Into<String>, x: Vec<f64>, y: Vec<f64>, color: usize) -> Self {
        Line {
            name: name.into(),
            x,
            y,
            color,
            opacity: 1.0,
            width: 1.8,
            markers: false,
        }
    }

    /// Drawn thin and pale (raw values under their smoothed line).
    pub fn faint(self) -> Self {
        Line {
            opacity: 0.3,
            width: 1.0,
            ..self
        }
    }

    pub fn with_markers(self) -> Self {
        Line {
            markers: true,
            ..self
        }
    }
}

/// A titled line plot.
#[derive(Debug, Clone)]
pub struct LinePlot {
    /// The `data-plot` name of the figure.
    pub id: String,
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub lines: Vec<Line>,
}

/// Colours of lines and points (Tableau 10).
pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

pub fn color(k: usize) -> &'static str {
    PALETTE[k % PALETTE.len()]
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 74.0;
const RIGHT: f64 = 18.0;
const TITLE: f64 = 30.0;
const LEGEND_ROW: f64 = 17.0;
const BOTTOM: f64 = 52.0;

/// Ticks of an axis over the transformed range `[lo, hi]`: (transformed position, label).
fn ticks(axis: &Axis, lo: f64, hi: f64) -> Vec<(f64, String)> {
    match axis.scale {
        // Under half a decade no 1-2-3-5 tick may fall inside: evenly spaced values instead.
        Scale::Log10 if hi - lo < 0.5 => {
            let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
            let step = nice_step((b - a) / 4.0, false);
            let values: Vec<f64> = ((a / step).ceil() as i64..=(b / step).floor() as i64)
                .map(|k| k as f64 * step)
                .filter(|v| *v > 0.0)
                .collect();
            let labels = linear_labels(&values, step, axis.integer);
            values.iter().map(|v| v.log10()).zip(labels).collect()
        }
        Scale::Log10 => log_ticks(lo, hi),
        Scale::Linear => {
            let step = nice_step((hi - lo) / 5.0, axis.integer);
            let first = (lo / step).ceil() as i64;
            let last = (hi / step + 1e-9).floor() as i64;
            let values: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
            let labels = linear_labels(&values, step, axis.integer);
            values.into_iter().zip(labels).collect()
        }
    }
}

/// Labels of evenly spaced ticks, one format for the whole axis: integers on integer axes,
/// `2e-4`-style where the values are tiny or huge, else as many decimals as the step needs.
fn linear_labels(values: &[f64], step: f64, integer: bool) -> Vec<String> {
    let largest = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    values
        .iter()
        .map(|&v| {
            if integer {
                format!("{}", v.round() as i64)
            } else if v == 0.0 {
                "0".to_string()
            } else if !(1e-2..1e5).contains(&largest) {
                let k = v.abs().log10().floor() as i32;
                let digits = (k - step.log10().floor() as i32).max(0) as usize;
                let m = format!("{:.digits$}", v / 10f64.powi(k));
                let m = if m.contains('.') {
                    m.trim_end_matches('0').trim_end_matches('.')
                } else {
                    &m
                };
                format!("{m}e{k}")
            } else {
                let decimals = (-step.log10().floor()).max(0.0) as usize;
                format!("{v:.decimals$}")
            }
        })
        .collect()
}

/// 1, 2 or 5 times a power of ten near `raw` (at least 1 on integer axes).
fn nice_step(raw: f64, integer: bool) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let step = p * if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    if integer {
        step.round().max(1.0)
    } else {
        step
    }
}

/// `m * 10^k` printed exactly ("0.05", "200", "1e-6").
fn power_label(m: u32, k: i32) -> String {
    match k {
        0..=4 => format!("{m}{}", "0".repeat(k as usize)),
        -4..=-1 => format!("0.{}{m}", "0".repeat((-k - 1) as usize)),
        _ => format!("{m}e{k}"),
    }
}

/// Decades on a log10 axis (`lo`, `hi` are log10 values); 2 and 5 (and 3 within one decade)
/// too when few decades show.
fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let (k0, k1) = (lo.floor() as i32, hi.ceil() as i32);
    let mantissas: &[u32] = match hi - lo {
        s if s <= 1.2 => &[1, 2, 3, 5],
        s if s <= 2.5 => &[1, 2, 5],
        _ => &[1],
    };
    let mut out = Vec::new();
    for k in k0..=k1 {
        for &m in mantissas {
            let t = (m as f64).log10() + k as f64;
            if t >= lo - 1e-9 && t <= hi + 1e-9 {
                out.push((t, power_label(m, k)));
            }
        }
    }
    out
}

/// The drawn range of transformed values: data extent, padded on linear value axes.
fn range(values: impl Iterator<Item = f64>, axis: &Axis, pad: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = if axis.scale == Scale::Log10 {
            0.5
        } else {
            lo.abs().max(1.0) * 0.1
        };
        return (lo - d, hi + d);
    }
    match (axis.scale, pad) {
        // Wide log data spans whole decades; narrower data is padded like linear data (its
        // ticks then include 2, 3 and 5 times the powers of ten).
        (Scale::Log10, _) => {
            if hi - lo <= 2.5 {
                (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
            } else {
                (lo.floor(), hi.ceil())
            }
        }
        (Scale::Linear, true) => (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)),
        (Scale::Linear, false) => (lo, hi),
    }
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

impl LinePlot {
    /// The plot as a `<figure>` holding the SVG and its data block.
    pub fn to_html(&self) -> String {
        let points: Vec<Vec<(f64, f64)>> = self
            .lines
            .iter()
            .map(|l| {
                l.x.iter()
                    .zip(&l.y)
                    .filter_map(|(&x, &y)| Some((self.x.transform(x)?, self.y.transform(y)?)))
                    .collect()
            })
            .collect();
        let all = || points.iter().flatten();
        let (x0, x1) = range(all().map(|p| p.0), &self.x, false);
        let (y0, y1) = range(all().map(|p| p.1), &self.y, true);
        let legend = self.legend_layout();
        let rows = legend.last().map_or(0, |e| e.row + 1);
        let top = TITLE + LEGEND_ROW * rows as f64 + 4.0;
        let (pw, ph) = (W - LEFT - RIGHT, H - top - BOTTOM);
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" \
             aria-label=\"{}\" font-family=\"system-ui, sans-serif\" font-size=\"12\">",
            escape(&self.title)
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"600\">{}</text>",
            num(LEFT + pw / 2.0),
            escape(&self.title)
        );
        let _ = write!(
            s,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"#fbfcfe\" stroke=\"#9aa3b2\"/>",
            num(pw),
            num(ph)
        );
        for (t, label) in ticks(&self.y, y0, y1) {
            let y = num(py(t));
            let _ = write!(
                s,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#e4e7ed\"/>\
                 <text x=\"{}\" y=\"{y}\" dy=\"4\" text-anchor=\"end\" class=\"tick-y\">{}</text>",
                num(LEFT + pw),
                num(LEFT - 6.0),
                escape(&label)
            );
        }
        for (t, label) in ticks(&self.x, x0, x1) {
            let x = num(px(t));
            let _ = write!(
                s,
                "<line x1=\"{x}\" x2=\"{x}\" y1=\"{top}\" y2=\"{}\" stroke=\"#e4e7ed\"/>\
                 <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" class=\"tick-x\">{}</text>",
                num(top + ph),
                num(top + ph + 17.0),
                escape(&label)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis-label\">{}</text>",
            num(LEFT + pw / 2.0),
            num(H - 10.0),
            escape(&self.x.label)
        );
        let _ = write!(
            s,
            "<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\" class=\"axis-label\">{}</text>",
            num(top + ph / 2.0),
            escape(&self.y.label)
        );
        for (line, pts) in self.lines.iter().zip(&points) {
            let c = color(line.color);
            let coords: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{},{}", num(px(x)), num(py(y))))
                .collect();
            let _ = write!(
                s,
                "<polyline class=\"series\" data-name=\"{}\" fill=\"none\" stroke=\"{c}\" \
                 stroke-width=\"{}\" stroke-opacity=\"{}\" stroke-linejoin=\"round\" points=\"{}\"/>",
                escape(&line.name),
                line.width,
                line.opacity,
                coords.join(" ")
            );
            if line.markers {
                for xy in &coords {
                    let (x, y) = xy.split_once(',').expect("x,y");
                    let _ = write!(s, "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.6\" fill=\"{c}\"/>");
                }
            }
        }
        draw_legend(&mut s, &legend);
        s.push_str("</svg>");
        let data = serde_json::json!({
            "id": self.id,
            "x_label": self.x.label,
            "y_label": self.y.label,
            "lines": self.lines.iter().map(|l| serde_json::json!({
                "name": l.name, "x": l.x, "y": l.y,
            })).collect::<Vec<_>>(),
        });
        format!(
            "<figure class=\"plot\" data-plot=\"{}\">{s}{}</figure>",
            escape(&self.id),
            json_script("plot-data", &data)
        )
    }

    /// Legend entries in rows under the title, left to right, wrapping at the plot's width.
    fn legend_layout(&self) -> Vec<LegendEntry<'_>> {
        let mut out = Vec::new();
        let (mut x, mut row) = (LEFT, 0);
        for l in self.lines.iter().filter(|l| !l.name.is_empty()) {
            let w = 34.0 + 6.6 * l.name.chars().count() as f64;
            if x + w > W - RIGHT && x > LEFT {
                (x, row) = (LEFT, row + 1);
            }
            out.push(LegendEntry { line: l, x, row });
            x += w;
        }
        out
    }
}

struct LegendEntry<'a> {
    line: &'a Line,
    x: f64,
    row: usize,
}

fn draw_legend(s: &mut String, entries: &[LegendEntry]) {
    if entries.is_empty() {
        return;
    }
    s.push_str("<g class=\"legend\">");
    for e in entries {
        let y = TITLE + LEGEND_ROW * e.row as f64 + 8.0;
        let _ = write!(
            s,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2.5\" \
             stroke-opacity=\"{}\"/><text x=\"{}\" y=\"{}\" dy=\"4\">{}</text>",
            num(e.x),
            num(e.x + 18.0),
            num(y),
            num(y),
            color(e.line.color),
            e.line.opacity.max(0.5),
            num(e.x + 23.0),
            num(y),
            escape(&e.line.name)
        );
    }
    s.push_str("</g>");
}

/// A square scatter plot of row-major (x, y) points over `[-range, range]^2`.
pub fn scatter(title: &str, points: &[f64], range: f64, color_index: usize) -> String {
    let (size, pad) = (300.0, 28.0);
    let inner = size - 2.0 * pad;
    let p = |v: f64| pad + (v + range) / (2.0 * range) * inner;
    let q = |v: f64| pad + (range - v) / (2.0 * range) * inner;
    let mut s = format!(
        "<svg viewBox=\"0 0 {size} {size}\" role=\"img\" \
         aria-label=\"{}\" font-family=\"system-ui, sans-serif\" font-size=\"11\">\
         <text x=\"{}\" y=\"17\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"600\">{}</text>\
         <rect x=\"{pad}\" y=\"{pad}\" width=\"{inner}\" height=\"{inner}\" fill=\"#fbfcfe\" stroke=\"#9aa3b2\"/>",
        escape(title),
        size / 2.0,
        escape(title)
    );
    let ticks = ticks(&Axis::linear(""), -range, range);
    for (v, label) in &ticks {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#5a6272\">{}</text>\
             <text x=\"{}\" y=\"{}\" dy=\"4\" text-anchor=\"end\" fill=\"#5a6272\">{}</text>",
            num(p(*v)),
            num(size - pad + 13.0),
            escape(label),
            num(pad - 3.0),
            num(q(*v)),
            escape(label)
        );
    }
    // One path of zero-length segments with round caps: a dot per point, compactly.
    let mut d = String::new();
    let mut shown = 0;
    for xy in points.chunks_exact(2) {
        if xy[0].is_finite() && xy[1].is_finite() && xy[0].abs() <= range && xy[1].abs() <= range {
            let _ = write!(d, "M{} {}h0", num(p(xy[0])), num(q(xy[1])));
            shown += 1;
        }
    }
    let outside = points.len() / 2 - shown;
    if outside > 0 {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#b03030\">{outside} of {} points outside the frame</text>",
            size / 2.0,
            pad + 14.0,
            points.len() / 2
        );
    }
    let _ = write!(
        s,
        "<path class=\"points\" data-count=\"{shown}\" d=\"{d}\" stroke=\"{}\" stroke-opacity=\"0.55\" \
         stroke-width=\"2.6\" stroke-linecap=\"round\" fill=\"none\"/></svg>",
        color(color_index)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_axes_print_integers_and_log_axes_decades() {
        let steps = Axis::integer("step");
        let t = ticks(&steps, 0.0, 7.0);
        assert!(
            t.iter().all(|(v, l)| v.fract() == 0.0 && !l.contains('.')),
            "{t:?}"
        );
        assert_eq!(t.first().map(|x| x.1.as_str()), Some("0"));
        // A 3-step run must not get ticks at 0.5.
        assert!(ticks(&steps, 1.0, 3.0)
            .iter()
            .all(|(v, _)| v.fract() == 0.0));
        let labels: Vec<String> = log_ticks(-3.0, 1.0).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.001", "0.01", "0.1", "1", "10"]);
        let labels: Vec<String> = log_ticks(-1.5, -0.2).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.05", "0.1", "0.2", "0.5"]);
        let labels: Vec<String> = log_ticks(-1.05, 0.02).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.3", "0.5", "1"]);
        // Within a fraction of a decade the log axis still gets labelled ticks.
        let narrow = ticks(&Axis::log("loss"), 0.9f64.log10(), 1.0f64.log10());
        assert!(narrow.len() >= 2, "{narrow:?}");
        // A learning-rate axis: one format, no "0.0010" next to "8.0e-4".
        let lr = ticks(&Axis::linear("lr"), 0.0, 1e-3);
        let labels: Vec<&str> = lr.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0", "2e-4", "4e-4", "6e-4", "8e-4", "1e-3"]);
        assert_eq!(power_label(2, -6), "2e-6");
    }

    #[test]
    fn a_plot_draws_each_finite_point_once_and_keeps_its_numbers() {
        let plot = LinePlot {
            id: "loss".into(),
            title: "loss <raw>".into(),
            x: Axis::integer("step"),
            y: Axis::log("loss"),
            lines: vec![Line::new(
                "raw",
                vec![1.0, 2.0, 3.0],
                vec![0.5, -1.0, 0.25],
                0,
            )],
        };
        let html = plot.to_html();
        assert!(html.contains("loss &lt;raw&gt;"));
        let pts = html.split("points=\"").nth(1).unwrap();
        let pts = &pts[..pts.find('"').unwrap()];
        // The non-positive y cannot be drawn on a log axis: two vertices.
        assert_eq!(pts.split(' ').count(), 2, "{pts}");
        assert!(html.contains("\"y\":[0.5,-1.0,0.25]"), "{html}");
    }
}
