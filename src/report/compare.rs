//! The comparison page of several runs (`diffuse compare`): their curves overlaid, the config
//! fields in which they differ, and their evaluation figures side by side.

use super::html::{escape, href, page, table};
use super::page::{
    column, compact, config_rows, duration, raw_and_smoothed, smooth, smoothing_weight, timing,
};
use super::run_data::RunData;
use super::svg::{Axis, Line, LinePlot};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Component, Path, PathBuf};

/// `to` relative to the folder `from` (both made absolute), for links between local files.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| {
        p.canonicalize().unwrap_or_else(|_| {
            std::env::current_dir()
                .map(|c| c.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        })
    };
    let (from, to) = (abs(from), abs(to));
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Config leaves as dotted keys (`train.lr`), for the table of differences.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), compact(other));
        }
    }
}

fn overlay(
    runs: &[RunData],
    id: &str,
    title: &str,
    y: Axis,
    pick: fn(&super::run_data::MetricRow) -> Option<f64>,
    raw: bool,
) -> Option<LinePlot> {
    let mut lines = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        let (s, v) = column(&run.metrics, pick);
        if v.is_empty() {
            continue;
        }
        if raw {
            let mut pair = raw_and_smoothed(&run.name, s, v, k);
            // One legend entry per run: its smoothed line (or its only line).
            if pair.len() == 2 {
                pair[0].name.clear();
                pair[1].name = run.name.clone();
            }
            lines.extend(pair);
        } else {
            lines.push(Line::new(run.name.clone(), s, v, k));
        }
    }
    (!lines.is_empty()).then(|| LinePlot {
        id: id.into(),
        title: title.into(),
        x: Axis::integer("step"),
        y,
        lines,
    })
}

/// The comparison page; `out` is where it will be written (links are relative to it).
pub fn compare_page(runs: &[RunData], out: &Path) -> String {
    let out_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut body = format!("<h1>Comparison of {} runs</h1>", runs.len());
    // Overview.
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let link = relative_path(out_dir, &r.dir.join(super::REPORT_FILE));
            let tm = timing(r);
            let last_loss = r.metrics.last().map_or("-".into(), |_| {
                let (_, loss) = column(&r.metrics, |m| Some(m.loss));
                let w = smoothing_weight(loss.len());
                format!(
                    "{:.4}",
                    smooth(&loss, w).last().copied().unwrap_or(f64::NAN)
                )
            });
            let step = r
                .checkpoint_step
                .or(r.metrics.last().map(|m| m.step))
                .unwrap_or(0);
            let cfg: BTreeMap<&str, String> = config_rows(r).into_iter().collect();
            vec![
                format!(
                    "<a href=\"{}\">{}</a>",
                    href(&link.to_string_lossy()),
                    escape(&r.name)
                ),
                format!("{step} / {}", r.config.train.steps),
                escape(&cfg["model"]),
                escape(&cfg["data"]),
                escape(&cfg["loss"]),
                last_loss,
                escape(&duration(tm.seconds)),
                tm.steps_per_second
                    .map_or("-".into(), |v| format!("{v:.2}")),
            ]
        })
        .collect();
    let _ = write!(
        body,
        "<h2>Runs</h2>{}",
        table(
            "runs",
            &[
                "run (report)",
                "step",
                "model",
                "data",
                "loss",
                "final loss (smoothed)",
                "time",
                "steps/s"
            ],
            &rows
        )
    );
    // Config differences.
    let flat: Vec<BTreeMap<String, String>> = runs
        .iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            flatten(
                "",
                &serde_json::to_value(&r.config).unwrap_or(Value::Null),
                &mut m,
            );
            m
        })
        .collect();
    let keys: std::collections::BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    let diff: Vec<Vec<String>> = keys
        .into_iter()
        .filter(|k| {
            let vals: Vec<Option<&String>> = flat.iter().map(|m| m.get(*k)).collect();
            vals.windows(2).any(|w| w[0] != w[1])
        })
        .map(|k| {
            let mut row = vec![format!("<code>{}</code>", escape(k))];
            row.extend(
                flat.iter()
                    .map(|m| escape(m.get(k).map_or("-", String::as_str))),
            );
            row
        })
        .collect();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let mut header = vec!["config field"];
    header.extend(&names);
    body.push_str("<h2>Config fields that differ</h2>");
    if diff.is_empty() {
        body.push_str("<p class=\"muted\">The configs are identical.</p>");
    } else {
        body.push_str(&table("diff", &header, &diff));
    }
    // Curves.
    body.push_str("<h2>Training curves</h2><div class=\"plots\">");
    let plots = [
        overlay(
            runs,
            "loss",
            "Training loss (smoothed over raw)",
            Axis::log("loss (log scale)"),
            |m| Some(m.loss),
            true,
        ),
        overlay(
            runs,
            "lr",
            "Learning rate",
            Axis::linear("learning rate (per step)"),
            |m| m.lr,
            false,
        ),
        overlay(
            runs,
            "grad_norm",
            "Gradient norm (before clipping)",
            Axis::log("global L2 norm (log scale)"),
            |m| m.grad_norm,
            true,
        ),
    ];
    for p in plots.into_iter().flatten() {
        body.push_str(&p.to_html());
    }
    body.push_str("</div>");
    // Evaluations side by side: the latest figure of each (metric, sampler) per run.
    let mut evals: BTreeMap<(String, String), Vec<Option<String>>> = BTreeMap::new();
    for (k, r) in runs.iter().enumerate() {
        for e in &r.evals {
            let cell = format!(
                "{:.4}{}{}",
                e.model.mean,
                e.model
                    .spread
                    .filter(|s| s.is_finite())
                    .map_or(String::new(), |s| format!(" ± {s:.4} ({})", e.spread_kind)),
                e.floor
                    .as_ref()
                    .map_or(String::new(), |f| format!("; floor {:.4}", f.mean))
            );
            evals
                .entry((e.metric.clone(), e.sampler.clone()))
                .or_insert_with(|| vec![None; runs.len()])[k] = Some(cell);
        }
    }
    body.push_str("<h2>Evaluation</h2>");
    if evals.is_empty() {
        body.push_str("<p class=\"muted\">None of the runs has evaluation results.</p>");
    } else {
        let rows: Vec<Vec<String>> = evals
            .into_iter()
            .map(|((metric, sampler), cells)| {
                let mut row = vec![escape(&metric), escape(&sampler)];
                row.extend(
                    cells
                        .into_iter()
                        .map(|c| escape(c.as_deref().unwrap_or("-"))),
                );
                row
            })
            .collect();
        let mut header = vec!["metric", "sampler"];
        header.extend(&names);
        body.push_str(&table("evals", &header, &rows));
    }
    page("diffuse run comparison", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_the_page_folder() {
        let p = relative_path(Path::new("/a/b/out"), Path::new("/a/runs/x/report.html"));
        assert_eq!(p, PathBuf::from("../../runs/x/report.html"));
        let p = relative_path(Path::new("/a"), Path::new("/a/x/report.html"));
        assert_eq!(p, PathBuf::from("x/report.html"));
    }
}
