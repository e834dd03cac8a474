//! What training records for its report ([`RunRecorder`], called by
//! [`crate::train::fit`]): a session line at the start, at checkpoints the loss per timestep
//! bucket and (every K-th checkpoint, and at the end) a preview, then `report.html`.

use super::preview::{draw_preview, preview_data};
use super::{
    append_line, code_version, write_report, ReportError, PREVIEW_DIR, PREVIEW_INDEX,
    SESSIONS_FILE, TIMESTEP_LOSS_FILE,
};
use crate::data::file::{write_points, PointSet};
use crate::loss::TimestepSampler;
use crate::train::Trainer;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Report options of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Draw a preview at every this many checkpoints (and at the end); 0 = no previews.
    pub preview_every: u64,
    /// Rows of an image preview (each row one image per class, or 8 unconditional images).
    pub image_rows: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            preview_every: 1,
            image_rows: 2,
        }
    }
}

impl ReportOptions {
    /// The report without previews.
    pub fn no_previews() -> Self {
        ReportOptions {
            preview_every: 0,
            ..ReportOptions::default()
        }
    }
}

/// Timestep buckets of the per-t loss plot.
pub const TIMESTEP_BUCKETS: usize = 10;

/// Writes a run's report files as training goes.
pub struct RunRecorder {
    dir: PathBuf,
    options: ReportOptions,
    last_preview: Option<u64>,
}

impl RunRecorder {
    /// Starts a training session in `dir`: records it in `sessions.jsonl` and previews the
    /// untrained model of a fresh run (the report follows at the first checkpoint).
    pub fn start(
        trainer: &Trainer,
        dir: &Path,
        options: &ReportOptions,
    ) -> Result<Self, ReportError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        append_line(
            &dir.join(SESSIONS_FILE),
            &serde_json::json!({
                "start_step": trainer.step,
                "planned_steps": trainer.config.train.steps,
                "code_version": code_version(),
                "device": format!("{:?}", trainer.device),
                "threads": threads,
                "started_unix": started,
            }),
        )?;
        let mut recorder = RunRecorder {
            dir: dir.to_path_buf(),
            options: options.clone(),
            last_preview: None,
        };
        if trainer.step == 0 && options.preview_every > 0 {
            recorder.preview(trainer)?;
        }
        Ok(recorder)
    }

    /// After a checkpoint: the per-bucket losses, a preview if this checkpoint is a K-th one
    /// (or `last`), and the report.
    pub fn checkpoint(&mut self, trainer: &Trainer, last: bool) -> Result<(), ReportError> {
        if let Some(line) = timestep_loss_line(trainer) {
            append_line(&self.dir.join(TIMESTEP_LOSS_FILE), &line)?;
        }
        let every = trainer.config.train.checkpoint_every;
        let k = self.options.preview_every;
        let due = k > 0
            && (last || (every > 0 && (trainer.step / every).is_multiple_of(k)))
            && self.last_preview != Some(trainer.step);
        if due {
            self.preview(trainer)?;
        }
        write_report(&self.dir)?;
        Ok(())
    }

    /// Draws and stores the preview of the current step.
    fn preview(&mut self, trainer: &Trainer) -> Result<(), ReportError> {
        let step = trainer.step;
        let dir = self.dir.join(PREVIEW_DIR);
        std::fs::create_dir_all(&dir).map_err(ReportError::io(&dir))?;
        let start = Instant::now();
        let p = draw_preview(trainer, self.options.image_rows).map_err(|source| {
            ReportError::Preview {
                path: dir.clone(),
                step,
                source,
            }
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let file = match p.image_shape {
            Some(shape) => {
                let file = format!("step-{step:08}.png");
                let cols = p.columns.as_ref().map_or(8, |c| c.len());
                let path = dir.join(&file);
                // Small images (Fashion-MNIST's 28 px) shown 3x, larger ones 2x or 1x.
                let zoom = match shape[1].max(shape[2]) {
                    0..=32 => 3,
                    33..=64 => 2,
                    _ => 1,
                };
                crate::viz::image_grid(&path, &p.values, shape, cols, zoom)
                    .map_err(|e| ReportError::invalid(&path, e.to_string()))?;
                file
            }
            None => {
                let d = trainer.config.model.data_dim();
                let data_path = dir.join("data.csv");
                if !data_path.exists() {
                    let data = PointSet {
                        dim: d,
                        values: preview_data(&trainer.data),
                    };
                    write_points(&data_path, &data)
                        .map_err(|e| ReportError::invalid(&data_path, e.to_string()))?;
                }
                let file = format!("step-{step:08}.csv");
                let path = dir.join(&file);
                let points = PointSet {
                    dim: d,
                    values: p.values,
                };
                write_points(&path, &points)
                    .map_err(|e| ReportError::invalid(&path, e.to_string()))?;
                file
            }
        };
        append_line(
            &dir.join(PREVIEW_INDEX),
            &serde_json::json!({
                "step": step, "file": file, "n": p.n, "sampler": p.sampler,
                "sampler_steps": p.sampler_steps, "seed": super::preview::PREVIEW_SEED,
                "columns": p.columns, "seconds": seconds,
            }),
        )?;
        self.last_preview = Some(step);
        Ok(())
    }
}

/// The mean loss the loss-aware t sampler has recorded in each of [`TIMESTEP_BUCKETS`] equal
/// ranges of t, or None when it records nothing (uniform sampling).
fn timestep_loss_line(trainer: &Trainer) -> Option<serde_json::Value> {
    let TimestepSampler {
        history,
        num_timesteps,
        ..
    } = &trainer.sampler;
    if history.iter().all(|h| h.is_empty()) {
        return None;
    }
    let t = *num_timesteps;
    let buckets = TIMESTEP_BUCKETS.min(t);
    let rows: Vec<serde_json::Value> = (0..buckets)
        .map(|b| {
            let (t0, t1) = (b * t / buckets, (b + 1) * t / buckets);
            let values: Vec<f64> = history[t0..t1].iter().flatten().copied().collect();
            let mean =
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
            serde_json::json!({"t0": t0, "t1": t1, "mean": mean, "count": values.len()})
        })
        .collect();
    // What the sampler records (loss::sampler_losses): the hybrid loss's L_vlb term, else the
    // per-sample squared error of the prediction target.
    let what = if trainer.config.train.loss.learns_variance() {
        "L_vlb term (bits/dim)"
    } else {
        "squared error of the target"
    };
    Some(serde_json::json!({"step": trainer.step, "what": what, "buckets": rows}))
}
