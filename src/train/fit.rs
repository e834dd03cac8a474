//! The loop around [`Trainer::train_step`]: metrics lines, a progress bar, periodic atomic
//! checkpoints and the loss plot.

use super::checkpoint::save_checkpoint;
use super::trainer::{TrainError, Trainer};
use crate::report::{ReportOptions, RunRecorder};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Options of [`fit`] that are not part of the run's configuration.
#[derive(Debug, Clone, Default)]
pub struct FitOptions {
    /// Stop after this many total steps (default: the config's `train.steps`).
    pub until: Option<u64>,
    /// Show an indicatif progress bar.
    pub progress: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Trains to the configured step count, writing `metrics.jsonl` (appended on resume),
/// checkpoints every `checkpoint_every` steps and at the end, `loss.png`, and the run report
/// ([`crate::report`]; without previews: [`fit_with_report`] chooses).
pub fn fit(trainer: &mut Trainer, out: &Path, opts: &FitOptions) -> Result<(), TrainError> {
    fit_with_report(trainer, out, opts, &ReportOptions::no_previews())
}

/// [`fit`] with the report's options (previews every K checkpoints).
pub fn fit_with_report(
    trainer: &mut Trainer,
    out: &Path,
    opts: &FitOptions,
    report: &ReportOptions,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut recorder = RunRecorder::start(trainer, out, report)?;
    let until = opts.until.unwrap_or(trainer.config.train.steps);
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(io_err(&metrics_path))?,
    );
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(until);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(trainer.step);
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = Instant::now();
    let every = trainer.config.train.checkpoint_every;
    let log_every = trainer.config.train.log_every.max(1);
    let mut since_log = (0.0, 0u64);
    while trainer.step < until {
        let stats = trainer.train_step()?;
        since_log.0 += stats.loss;
        since_log.1 += 1;
        if stats.step % log_every == 0 || stats.step == until {
            let mean = since_log.0 / since_log.1 as f64;
            let line = serde_json::json!({
                "step": stats.step,
                "loss": mean,
                "grad_norm": stats.grad_norm,
                "lr": stats.lr,
                "time": start.elapsed().as_secs_f64(),
            });
            writeln!(metrics, "{line}").map_err(io_err(&metrics_path))?;
            bar.set_message(format!("loss {mean:.4}"));
            since_log = (0.0, 0);
        }
        bar.set_position(stats.step);
        if every > 0 && stats.step % every == 0 && stats.step != until {
            metrics.flush().map_err(io_err(&metrics_path))?;
            save_checkpoint(out, &trainer.checkpoint())?;
            recorder.checkpoint(trainer, false)?;
        }
    }
    metrics.flush().map_err(io_err(&metrics_path))?;
    save_checkpoint(out, &trainer.checkpoint())?;
    bar.finish();
    plot_loss_curve(&metrics_path, &out.join("loss.png"))?;
    Ok(recorder.checkpoint(trainer, true)?)
}

/// Plots the `loss` column of a metrics file (log scale on y).
pub fn plot_loss_curve(metrics: &Path, png: &Path) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(metrics).map_err(io_err(metrics))?;
    let points: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?.max(1e-12).log10())))
        .collect();
    let series = vec![crate::viz::Series {
        name: "loss",
        points,
    }];
    crate::viz::line_panels(png, &[("training loss", "step", "log10 loss", series)]).map_err(|e| {
        TrainError::Io {
            path: png.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }
    })
}
