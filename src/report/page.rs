//! The run report page: config and timing, training curves, the loss per timestep bucket,
//! previews as training goes, evaluation results and the run's files.

use super::html::{escape, href, page, table};
use super::run_data::{EvalRow, Figure, MetricRow, RunData};
use super::svg::{Axis, Line, LinePlot};
use serde_json::Value;
use std::fmt::Write;

/// TensorBoard-style smoothing: an exponential moving average debiased at the start,
/// `s_k = w s_{k-1} + (1 - w) v_k`, shown as `s_k / (1 - w^k)`.
pub fn smooth(values: &[f64], weight: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut norm = 0.0;
    values
        .iter()
        .map(|&v| {
            acc = weight * acc + (1.0 - weight) * v;
            norm = weight * norm + (1.0 - weight);
            acc / norm
        })
        .collect()
}

/// The smoothing weight for a series of `n` points: an averaging window `1 / (1 - w)` of
/// about a fifth of the series, at most 20 points; none under 6 points.
pub fn smoothing_weight(n: usize) -> f64 {
    (1.0 - 5.0 / n.max(1) as f64).clamp(0.0, 0.95)
}

/// A metric column over the history: steps and values where present.
pub fn column(rows: &[MetricRow], f: impl Fn(&MetricRow) -> Option<f64>) -> (Vec<f64>, Vec<f64>) {
    rows.iter()
        .filter_map(|r| Some((r.step as f64, f(r)?)))
        .unzip()
}

/// Training time and speed, from the sessions' metrics rows (each row's `time` is seconds
/// since its session started): total seconds, steps per second overall and in the last session.
pub struct Timing {
    pub seconds: f64,
    pub steps_per_second: Option<f64>,
    pub last_steps_per_second: Option<f64>,
}

pub fn timing(run: &RunData) -> Timing {
    let mut seconds = 0.0;
    let mut steps = 0.0;
    let mut last = None;
    for (k, seg) in run.segments.iter().enumerate() {
        let (Some(first), Some(end)) = (seg.first(), seg.last()) else {
            continue;
        };
        let end_time = end.time.unwrap_or(0.0);
        seconds += end_time;
        // The session's first step: from sessions.jsonl, else one logging interval before its
        // first row.
        let start = run
            .sessions
            .get(k)
            .map(|s| s.start_step)
            .filter(|&s| s < first.step)
            .unwrap_or_else(|| first.step.saturating_sub(run.config.train.log_every.max(1)));
        let n = (end.step - start) as f64;
        steps += n;
        last = (end_time > 0.0).then(|| n / end_time);
    }
    Timing {
        seconds,
        steps_per_second: (seconds > 0.0).then(|| steps / seconds),
        last_steps_per_second: last,
    }
}

/// "1 h 02 min", "3 min 05 s", "12.3 s".
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// A config value in one line: strings as they are, `{"kind": k, a: 1}` as `k (a 1)`.
pub fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Object(m) => {
            let kind = m.get("kind").and_then(Value::as_str);
            let rest: Vec<String> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, x)| format!("{k} {}", compact(x)))
                .collect();
            match (kind, rest.is_empty()) {
                (Some(k), true) => k.to_string(),
                (Some(k), false) => format!("{k} ({})", rest.join(", ")),
                (None, _) => rest.join(", "),
            }
        }
        other => other.to_string(),
    }
}

/// The config rows everyone looks for first: (label, value).
pub fn config_rows(run: &RunData) -> Vec<(&'static str, String)> {
    let c = &run.config;
    let v = serde_json::to_value(c).unwrap_or(Value::Null);
    let t = &c.train;
    let params = run
        .parameters
        .map_or(String::new(), |p| format!(", {p} parameters"));
    vec![
        ("model", format!("{}{params}", c.model.describe())),
        (
            "schedule",
            match &c.sde {
                Some(_) => format!("score SDE: {}", compact(&v["sde"])),
                None => format!(
                    "{}, T = {}{}",
                    compact(&v["schedule"]["beta_schedule"]),
                    c.schedule.num_train_timesteps,
                    if c.schedule.rescale_zero_terminal_snr {
                        ", zero terminal SNR"
                    } else {
                        ""
                    }
                ),
            },
        ),
        ("prediction", compact(&v["prediction"])),
        (
            "loss",
            match &c.sde {
                // What the trainer does for SDE runs (SPEC §4), whatever train.loss says.
                Some(_) => format!(
                    "denoising score matching, lambda(t) = s(t)^2, t ~ U({}, 1)",
                    crate::train::trainer::SDE_TRAIN_EPS
                ),
                None => format!(
                    "{}; t sampling {}",
                    compact(&v["train"]["loss"]),
                    compact(&v["train"]["timestep_sampling"])
                ),
            },
        ),
        ("data", c.data.name()),
        (
            "optimiser",
            format!(
                "AdamW lr {} (warmup {} steps, cosine to {}), batch {}, weight decay {}, clip {}, EMA {}",
                t.lr, t.warmup_steps, t.min_lr, t.batch_size, t.weight_decay, t.grad_clip, t.ema_decay
            ),
        ),
        ("steps", format!("{} planned, checkpoint every {}", t.steps, t.checkpoint_every)),
        ("seed", c.seed.to_string()),
    ]
}

fn kv_table(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table class=\"kv\"><tbody>");
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    }
    s.push_str("</tbody></table>");
    s
}

fn summary(run: &RunData) -> String {
    let mut rows = config_rows(run);
    let versions: Vec<String> = dedup(run.sessions.iter().map(|s| s.code_version.clone()));
    let devices: Vec<String> = dedup(run.sessions.iter().map(|s| {
        format!(
            "{}{}",
            s.device,
            s.threads
                .map_or(String::new(), |t| format!(", {t} threads"))
        )
    }));
    let listed = |items: Vec<String>| {
        if items.is_empty() {
            "unknown (no sessions.jsonl)".to_string()
        } else {
            items.join("; ")
        }
    };
    rows.push(("code version", listed(versions)));
    rows.push(("device", listed(devices)));
    let tm = timing(run);
    let speed = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} steps/s"));
    rows.push((
        "timing",
        format!(
            "{} in {} session(s); {} overall, {} in the last session",
            duration(tm.seconds),
            run.segments.len(),
            speed(tm.steps_per_second),
            speed(tm.last_steps_per_second)
        ),
    ));
    let mut s = kv_table(&rows);
    let _ = write!(
        s,
        "<details><summary>config.json</summary><pre>{}</pre></details>",
        escape(&run.config_json)
    );
    s
}

fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// A series drawn faint with its smoothed line over it (`name` prefixes the legend), or just
/// the series where it is too short to smooth.
pub fn raw_and_smoothed(name: &str, x: Vec<f64>, y: Vec<f64>, color: usize) -> Vec<Line> {
    let w = smoothing_weight(y.len());
    let label = |what: &str| match (name.is_empty(), what.is_empty()) {
        (true, _) => what.to_string(),
        (false, true) => name.to_string(),
        (false, false) => format!("{name} {what}"),
    };
    if w == 0.0 {
        return vec![Line::new(label(""), x, y, color)];
    }
    let smoothed = smooth(&y, w);
    vec![
        Line::new(label("raw"), x.clone(), y, color).faint(),
        Line::new(label(&format!("smoothed (EMA {w:.2})")), x, smoothed, color),
    ]
}

/// The loss (raw and smoothed), learning-rate and gradient-norm plots of one run.
pub fn curves(run: &RunData) -> Vec<LinePlot> {
    let (steps, loss) = column(&run.metrics, |r| Some(r.loss));
    let mut plots = vec![LinePlot {
        id: "loss".into(),
        title: "Training loss".into(),
        x: Axis::integer("step"),
        y: Axis::log("loss (mean over the logging interval, log scale)"),
        lines: raw_and_smoothed("", steps, loss, 0),
    }];
    let (s, lr) = column(&run.metrics, |r| r.lr);
    if !lr.is_empty() {
        plots.push(LinePlot {
            id: "lr".into(),
            title: "Learning rate".into(),
            x: Axis::integer("step"),
            y: Axis::linear("learning rate (per step)"),
            lines: vec![Line::new("lr", s, lr, 2)],
        });
    }
    let (s, g) = column(&run.metrics, |r| r.grad_norm);
    if !g.is_empty() {
        let mut lines = raw_and_smoothed("", s.clone(), g, 1);
        let clip = run.config.train.grad_clip;
        if clip > 0.0 && s.len() >= 2 {
            let ends = vec![s[0], s[s.len() - 1]];
            lines.push(Line::new(format!("clip = {clip}"), ends, vec![clip; 2], 7));
        }
        plots.push(LinePlot {
            id: "grad_norm".into(),
            title: "Gradient norm (before clipping)".into(),
            x: Axis::integer("step"),
            y: Axis::log("global L2 norm (log scale)"),
            lines,
        });
    }
    plots
}

fn timestep_plot(run: &RunData) -> Option<LinePlot> {
    let last = run.timestep_loss.last()?;
    // At most 5 checkpoints, evenly spread, the last included.
    let picks = spread(run.timestep_loss.len(), 5);
    let lines = picks
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let tl = &run.timestep_loss[i];
            let (x, y): (Vec<f64>, Vec<f64>) = tl
                .buckets
                .iter()
                .filter_map(|b| Some(((b.t0 + b.t1) as f64 / 2.0, b.mean?)))
                .unzip();
            let line = Line::new(format!("step {}", tl.step), x, y, 3 + k).with_markers();
            if i + 1 == run.timestep_loss.len() {
                line
            } else {
                Line {
                    opacity: 0.45,
                    ..line
                }
            }
        })
        .collect();
    Some(LinePlot {
        id: "timestep_loss".into(),
        title: "Loss by timestep (the loss-aware sampler's history)".into(),
        x: Axis::integer("timestep t (code index, bucket centre)"),
        y: Axis::log(format!("mean recorded {} (log scale)", last.what)),
        lines,
    })
}

/// `k` indices of `0..n` evenly spread, first and last included.
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut out: Vec<usize> = (0..k).map(|j| j * (n - 1) / (k - 1).max(1)).collect();
    out.dedup();
    out
}

fn figure(f: &Figure, kind: &str) -> String {
    match f.spread {
        Some(s) if s.is_finite() => format!("{:.4} ± {:.4} ({kind})", f.mean, s),
        _ => format!("{:.4}", f.mean),
    }
}

/// The evaluation table.
pub fn eval_table(evals: &[EvalRow]) -> String {
    if evals.is_empty() {
        return "<p class=\"muted\">No evaluations recorded (<code>diffuse eval --run DIR</code> \
                writes eval.jsonl or eval.json here).</p>"
            .into();
    }
    let rows: Vec<Vec<String>> = evals
        .iter()
        .map(|e| {
            let ratio = e
                .floor
                .as_ref()
                .filter(|f| f.mean != 0.0)
                .map_or("-".into(), |f| format!("{:.2}", e.model.mean / f.mean));
            vec![
                escape(&e.metric),
                e.step.map_or("-".into(), |s| s.to_string()),
                escape(&e.sampler),
                e.n.map_or("-".into(), |n| n.to_string()),
                escape(&e.seeds),
                escape(&figure(&e.model, e.spread_kind)),
                e.floor
                    .as_ref()
                    .map_or("-".into(), |f| escape(&figure(f, e.spread_kind))),
                ratio,
                format!(
                    "{} <span class=\"muted\">({})</span>",
                    escape(&e.note),
                    escape(&e.source)
                ),
            ]
        })
        .collect();
    table(
        "evals",
        &[
            "metric",
            "step",
            "sampler",
            "n",
            "seeds",
            "model",
            "floor",
            "model / floor",
            "notes",
        ],
        &rows,
    )
}

fn files(run: &RunData) -> String {
    let mut s = String::from("<ul class=\"files\">");
    for (name, size) in &run.files {
        let size = match *size {
            0 => String::new(),
            b if b < 10_000 => format!(" ({b} B)"),
            b if b < 10_000_000 => format!(" ({} kB)", b / 1000),
            b => format!(" ({} MB)", b / 1_000_000),
        };
        let _ = write!(
            s,
            "<li><a href=\"{}\">{}</a>{}</li>",
            href(name),
            escape(name),
            escape(&size)
        );
    }
    s.push_str("</ul>");
    s
}

/// The whole report of one run.
pub fn report_page(run: &RunData) -> String {
    let mut body = String::new();
    let step = run
        .checkpoint_step
        .or(run.metrics.last().map(|r| r.step))
        .unwrap_or(0);
    let _ = write!(
        body,
        "<h1>Run <code>{}</code></h1><p class=\"sub\">step {} of {} planned · {} · written by \
         diffuse {}</p>",
        escape(&run.name),
        step,
        run.config.train.steps,
        escape(&run.dir.display().to_string()),
        escape(&super::code_version())
    );
    for w in &run.warnings {
        let _ = write!(body, "<p class=\"warn\">{}</p>", escape(w));
    }
    let _ = write!(body, "<h2>Configuration and timing</h2>{}", summary(run));
    body.push_str("<h2>Training curves</h2>");
    if run.metrics.is_empty() {
        body.push_str("<p class=\"muted\">No metrics yet.</p>");
    } else {
        body.push_str("<div class=\"plots\">");
        for p in curves(run) {
            body.push_str(&p.to_html());
        }
        if let Some(p) = timestep_plot(run) {
            body.push_str(&p.to_html());
        }
        body.push_str("</div>");
    }
    if run.timestep_loss.is_empty() {
        body.push_str(
            "<p class=\"muted\">Loss by timestep: recorded only with loss-aware t sampling \
             (<code>--importance-sampling</code>).</p>",
        );
    }
    let _ = write!(
        body,
        "<h2>Samples as training goes</h2>{}",
        super::gallery::previews(run)
    );
    if run.config.model.image_shape().is_none() && run.config.model.data_dim() != 2 {
        body.push_str("<p class=\"muted\">The scatter plots show the first two coordinates.</p>");
    }
    let _ = write!(body, "<h2>Evaluation</h2>{}", eval_table(&run.evals));
    let _ = write!(body, "<h2>Files</h2>{}", files(run));
    page(&format!("diffuse run {}", run.name), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_debiased_and_tracks_a_constant() {
        // A constant series smooths to itself from the first point (debiasing), exactly up
        // to rounding (1e-12).
        let s = smooth(&[2.0; 5], 0.9);
        assert!(s.iter().all(|v| (v - 2.0).abs() < 1e-12), "{s:?}");
        let s = smooth(&[0.0, 1.0], 0.5);
        // (0.5 * 0 * 0.5 + 0.5 * 1) / (1 - 0.25) = 2/3.
        assert!((s[1] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(spread(30, 5), [0, 7, 14, 21, 29]);
        assert_eq!(duration(3725.0), "1 h 02 min");
    }
}
