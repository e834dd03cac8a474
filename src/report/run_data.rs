//! A run directory read for its report: config, metrics, sessions, previews, per-timestep
//! losses, evaluation results and the list of files. Unreadable lines of the JSON-lines files
//! (a line cut short by a crash) are skipped and named in `warnings`.

use super::{
    ReportError, PREVIEW_DIR, PREVIEW_INDEX, REPORT_FILE, SESSIONS_FILE, TIMESTEP_LOSS_FILE,
};
use crate::data::file::load_points;
use crate::train::checkpoint::{load_config, CONFIG_FILE, MODEL_FILE};
use crate::train::RunConfig;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MetricRow {
    pub step: u64,
    pub loss: f64,
    pub grad_norm: Option<f64>,
    pub lr: Option<f64>,
    /// Seconds since the session started.
    pub time: Option<f64>,
}

/// One line of `sessions.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Session {
    pub start_step: u64,
    pub code_version: String,
    pub device: String,
    pub threads: Option<usize>,
}

/// One preview (a line of `previews/index.jsonl`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PreviewRecord {
    pub step: u64,
    /// Inside `previews/`.
    pub file: String,
    pub n: usize,
    pub sampler: String,
    pub sampler_steps: usize,
    pub seed: u64,
    pub columns: Option<Vec<String>>,
    pub seconds: Option<f64>,
}

/// One bucket of `timestep_loss.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Bucket {
    pub t0: usize,
    pub t1: usize,
    pub mean: Option<f64>,
    pub count: usize,
}

/// One line of `timestep_loss.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TimestepLoss {
    pub step: u64,
    pub what: String,
    pub buckets: Vec<Bucket>,
}

/// A figure with its spread: the spread is a 95% interval half-width or a standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub mean: f64,
    pub spread: Option<f64>,
}

/// One evaluation result, from `eval.jsonl` or `eval.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub source: String,
    pub metric: String,
    pub step: Option<u64>,
    /// Sampler and its steps.
    pub sampler: String,
    pub n: Option<u64>,
    pub seeds: String,
    pub model: Figure,
    /// "95% CI" or "sd".
    pub spread_kind: &'static str,
    /// The data-vs-data floor (or the reference value) next to the figure.
    pub floor: Option<Figure>,
    pub note: String,
}

/// Everything the report shows, read from a run directory.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    /// The directory's last component.
    pub name: String,
    pub config: RunConfig,
    pub config_json: String,
    /// Parameters of the model.
    pub parameters: Option<usize>,
    /// The training history: each step once, the latest write winning (a resumed run rewrites
    /// the steps after its checkpoint).
    pub metrics: Vec<MetricRow>,
    /// The metrics rows of each training session, for timing.
    pub segments: Vec<Vec<MetricRow>>,
    pub sessions: Vec<Session>,
    pub checkpoint_step: Option<u64>,
    pub previews: Vec<PreviewRecord>,
    /// The data points shown beside 2-D previews.
    pub preview_data: Option<Vec<f64>>,
    pub timestep_loss: Vec<TimestepLoss>,
    pub evals: Vec<EvalRow>,
    /// Names (folders end in `/`) and sizes in bytes of the directory's entries.
    pub files: Vec<(String, u64)>,
    pub warnings: Vec<String>,
}

/// Parses each line of a JSON-lines file; a missing file is empty.
fn read_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<T>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReportError::io(path)(e)),
    };
    let mut out = Vec::new();
    for (k, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(e) => warnings.push(format!(
                "{} line {}: skipped ({e})",
                path.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into()),
                k + 1
            )),
        }
    }
    Ok(out)
}

/// The effective history and its sessions: a row whose step does not follow the last kept
/// one starts a new session and replaces the rows from that step on; a row whose time went
/// backwards starts a new session too.
pub fn history(rows: Vec<MetricRow>) -> (Vec<MetricRow>, Vec<Vec<MetricRow>>) {
    let mut kept: Vec<MetricRow> = Vec::new();
    let mut segments: Vec<Vec<MetricRow>> = Vec::new();
    for row in rows {
        let prev = kept.last();
        let rewinds = prev.is_some_and(|p| row.step <= p.step);
        let restarted = prev
            .and_then(|p| Some(row.time? < p.time?))
            .unwrap_or(false);
        if rewinds {
            kept.retain(|r| r.step < row.step);
        }
        if segments.is_empty() || rewinds || restarted {
            segments.push(Vec::new());
        }
        segments.last_mut().expect("pushed").push(row.clone());
        kept.push(row);
    }
    (kept, segments)
}

/// Figures of `eval.jsonl` lines (image runs): `{metric, step, sampler, sampler_steps, n |
/// images, seeds | seed, model: {mean, ci95}, floor?: {mean, ci95}, ...}`.
fn eval_line(v: &Value) -> Option<EvalRow> {
    let figure = |f: &Value| -> Option<Figure> {
        Some(Figure {
            mean: f["mean"].as_f64()?,
            spread: f["ci95"].as_f64(),
        })
    };
    let seeds = match (&v["seeds"], &v["seed"]) {
        (Value::Array(r), _) if r.len() == 2 => format!("{}..{}", r[0], r[1]),
        (Value::Null, Value::Number(s)) => s.to_string(),
        (other, _) => other.to_string(),
    };
    let floor = figure(&v["floor"]).or_else(|| {
        v["test_images"]
            .as_f64()
            .map(|mean| Figure { mean, spread: None })
    });
    let skip = [
        "metric",
        "step",
        "sampler",
        "sampler_steps",
        "n",
        "images",
        "seeds",
        "seed",
        "model",
        "floor",
        "test_images",
    ];
    let note: Vec<String> = v
        .as_object()?
        .iter()
        .filter(|(k, x)| !skip.contains(&k.as_str()) && !x.is_null())
        .map(|(k, x)| match x {
            Value::String(s) => format!("{k}: {s}"),
            x => format!("{k}: {x}"),
        })
        .collect();
    Some(EvalRow {
        source: "eval.jsonl".into(),
        metric: v["metric"].as_str()?.to_string(),
        step: v["step"].as_u64(),
        sampler: format!(
            "{} {}",
            v["sampler"].as_str().unwrap_or("-"),
            v["sampler_steps"]
                .as_u64()
                .map_or(String::new(), |s| format!("x{s}"))
        ),
        n: v["n"].as_u64().or_else(|| v["images"].as_u64()),
        seeds,
        model: figure(&v["model"])?,
        spread_kind: "95% CI",
        floor,
        note: note.join("; "),
    })
}

/// Figures of `eval.json` (points runs, [`crate::eval::EvalReport`] plus an optional `nll`):
/// mean and sd over seeds next to the data-vs-data floor.
fn eval_report(v: &Value) -> Vec<EvalRow> {
    let stat = |s: &Value| -> Option<Figure> {
        Some(Figure {
            mean: s["mean"].as_f64()?,
            spread: s["std"].as_f64(),
        })
    };
    let seeds = match v["seeds"].as_array() {
        Some(s) if !s.is_empty() => format!(
            "{}..{}",
            s[0],
            s.last().and_then(Value::as_u64).map_or(0, |l| l + 1)
        ),
        _ => "-".into(),
    };
    let sampler = format!(
        "{} x{}",
        v["sampler"].as_str().unwrap_or("-"),
        v["sampler_steps"]
    );
    let row = |metric: String, f: &Value, note: String| -> Option<EvalRow> {
        Some(EvalRow {
            source: "eval.json".into(),
            metric,
            step: None,
            sampler: sampler.clone(),
            n: v["n"].as_u64(),
            seeds: seeds.clone(),
            model: stat(&f["model"])?,
            spread_kind: "sd",
            floor: stat(&f["floor"]),
            note,
        })
    };
    let mut out = Vec::new();
    out.extend(row(
        "sliced_wasserstein".into(),
        &v["sliced_wasserstein"],
        String::new(),
    ));
    for m in v["mmd"].as_array().into_iter().flatten() {
        let h = m["fraction_of_median"].as_f64().unwrap_or(f64::NAN);
        out.extend(row(format!("mmd (h = {h} median)"), m, String::new()));
    }
    if let Some([model, data]) = v["mixture_loglik"].as_array().map(Vec::as_slice) {
        let pair = serde_json::json!({"model": model, "floor": data});
        out.extend(row(
            "mean log p (oracle mixture)".into(),
            &pair,
            "floor: fresh data".into(),
        ));
    }
    if let Some(mean) = v["nll"]["nll_nats"].as_f64() {
        out.push(EvalRow {
            source: "eval.json".into(),
            metric: "NLL, PF-ODE (nats/sample)".into(),
            step: None,
            sampler: "ode".into(),
            n: v["nll"]["points"].as_u64(),
            seeds: "-".into(),
            model: Figure {
                mean,
                spread: v["nll"]["ci95_nats"].as_f64(),
            },
            spread_kind: "95% CI",
            floor: v["nll"]["true_nll_nats"]
                .as_f64()
                .map(|mean| Figure { mean, spread: None }),
            note: format!("{} bits/dim; floor: true NLL", v["nll"]["bits_per_dim"]),
        });
    }
    out
}

/// The step in the metadata of `model.safetensors`, if readable.
fn checkpoint_step(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(MODEL_FILE)).ok()?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    md.metadata().as_ref()?.get("step")?.parse().ok()
}

fn list_files(dir: &Path) -> Result<Vec<(String, u64)>, ReportError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(ReportError::io(dir))? {
        let entry = entry.map_err(ReportError::io(dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            continue;
        }
        let meta = entry.metadata().map_err(ReportError::io(&entry.path()))?;
        if meta.is_dir() {
            files.push((format!("{name}/"), 0));
        } else {
            files.push((name, meta.len()));
        }
    }
    if !files.iter().any(|(n, _)| n == REPORT_FILE) {
        files.push((REPORT_FILE.to_string(), 0));
    }
    files.sort();
    Ok(files)
}

/// Reads the run in `dir` (which must hold a `config.json`).
pub fn read_run(dir: &Path) -> Result<RunData, ReportError> {
    let config = load_config(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let config_json =
        std::fs::read_to_string(&config_path).map_err(ReportError::io(&config_path))?;
    let mut warnings = Vec::new();
    let rows: Vec<MetricRow> = read_lines(&dir.join("metrics.jsonl"), &mut warnings)?;
    let (metrics, segments) = history(rows);
    let sessions = read_lines(&dir.join(SESSIONS_FILE), &mut warnings)?;
    let previews_dir = dir.join(PREVIEW_DIR);
    let mut previews: Vec<PreviewRecord> =
        read_lines(&previews_dir.join(PREVIEW_INDEX), &mut warnings)?;
    // One preview per step, the latest write winning (a session restarted at that step).
    let mut seen = std::collections::HashSet::new();
    previews.reverse();
    previews.retain(|p| seen.insert(p.step));
    previews.reverse();
    previews.sort_by_key(|p| p.step);
    let data_path = previews_dir.join("data.csv");
    let preview_data = match data_path.exists() {
        true => match load_points(&data_path) {
            Ok(p) => Some(p.values),
            Err(e) => {
                warnings.push(format!("previews/data.csv: {e}"));
                None
            }
        },
        false => None,
    };
    let timestep_loss = read_lines(&dir.join(TIMESTEP_LOSS_FILE), &mut warnings)?;
    let eval_lines: Vec<Value> = read_lines(&dir.join("eval.jsonl"), &mut warnings)?;
    let mut evals: Vec<EvalRow> = eval_lines.iter().filter_map(eval_line).collect();
    let eval_json = dir.join("eval.json");
    if eval_json.exists() {
        match std::fs::read_to_string(&eval_json)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => evals.extend(eval_report(&v)),
            Err(e) => warnings.push(format!("eval.json: skipped ({e})")),
        }
    }
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
    Ok(RunData {
        dir: dir.to_path_buf(),
        name,
        parameters: config
            .model
            .slots()
            .ok()
            .map(|s| crate::nn::params::slots_len(&s)),
        config,
        config_json,
        metrics,
        segments,
        sessions,
        checkpoint_step: checkpoint_step(dir),
        previews,
        preview_data,
        timestep_loss,
        evals,
        files: list_files(dir)?,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, loss: f64, time: f64) -> MetricRow {
        MetricRow {
            step,
            loss,
            grad_norm: None,
            lr: None,
            time: Some(time),
        }
    }

    #[test]
    fn a_resumed_history_keeps_each_step_once_and_splits_sessions() {
        // Session 1 logged steps 10..30 but its last checkpoint was at 20; session 2 resumed
        // there and rewrote step 30: the history keeps session 2's value.
        let rows = vec![
            row(10, 1.0, 1.0),
            row(20, 0.9, 2.0),
            row(30, 0.8, 3.0),
            row(30, 0.7, 1.0),
            row(40, 0.6, 2.0),
        ];
        let (kept, segments) = history(rows);
        let steps: Vec<u64> = kept.iter().map(|r| r.step).collect();
        assert_eq!(steps, [10, 20, 30, 40]);
        assert_eq!(kept[2].loss, 0.7);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[1].len(), 2);
        // A plain resume (steps go on, the clock restarts) is a new session too.
        let (_, segments) = history(vec![row(10, 1.0, 5.0), row(20, 1.0, 1.0)]);
        assert_eq!(segments.len(), 2);
    }

    #[test]
    fn eval_lines_of_both_formats_become_rows() {
        let line = serde_json::json!({
            "metric": "frechet_distance_classifier_features", "step": 1000, "sampler": "ddim",
            "sampler_steps": 20, "n": 500, "seeds": [0, 2], "feature_dim": 128,
            "model": {"mean": 12.5, "ci95": 0.5, "per_seed": [12.0, 13.0]},
            "floor": {"mean": 1.5, "ci95": 0.1},
        });
        let r = eval_line(&line).unwrap();
        assert_eq!(
            (r.step, r.n, r.seeds.as_str()),
            (Some(1000), Some(500), "0..2")
        );
        assert_eq!(r.floor.unwrap().mean, 1.5);
        assert!(r.note.contains("feature_dim: 128"), "{}", r.note);
        let report = serde_json::json!({
            "sampler": "ddim", "sampler_steps": 50, "n": 4000, "seeds": [0, 1, 2],
            "sliced_wasserstein": {"model": {"mean": 0.1, "std": 0.01},
                                   "floor": {"mean": 0.05, "std": 0.005}, "ratio": 2.0},
            "mmd": [{"fraction_of_median": 0.5, "model": {"mean": 0.2, "std": 0.0},
                     "floor": {"mean": 0.1, "std": 0.0}, "ratio": 2.0}],
            "mixture_loglik": null,
        });
        let rows = eval_report(&report);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].seeds, "0..3");
        assert_eq!(rows[0].spread_kind, "sd");
    }
}
