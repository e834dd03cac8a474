//! `diffuse bench runs --run A --run B ...`: what trained runs cost, side by side in one
//! process (the latent-vs-pixel comparison of SPEC §7 among them):
//! - sampling: `--n` images with the chosen sampler (conditional runs: labels cycling through
//!   the classes, guidance 1), split into the sampler's network calls and, for a latent run,
//!   the VAE decode; reported per image;
//! - training: the run's own training step (its model, batch size, loss and optimiser, through
//!   the one trainer) on the images of `--data` (only their shape and labels matter for the
//!   time; a latent run's images are encoded by its own VAE).
//!
//! Rounds alternate between the runs and each run keeps its best round, because this
//! machine's cores are shared with other jobs. Peak RSS is reset (`/proc/self/clear_refs`)
//! before each measurement, so each line's peak is its own. One JSON line per measurement.

use crate::bench_unet::peak_rss_mb;
use crate::run_dir::{open, Run, SamplerChoice};
use anyhow::Context;
use burn::tensor::Device;
use diffuse::data::DataSpec;
use diffuse::train::{RunConfig, Trainer};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Resets this process's peak RSS (Linux: `5` in clear_refs), so the next reading is the peak
/// of what follows. Elsewhere a no-op: the reading is then the process's lifetime peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The run's training config on the images of `data` (same shape and classes), for timing.
fn timing_config(run: &Run, data: &str) -> anyhow::Result<RunConfig> {
    let mut config = run.config.clone();
    let DataSpec::Images { source, .. } =
        DataSpec::from_arg(data).with_context(|| format!("--data {data}"))?
    else {
        anyhow::bail!("--data {data}: image runs are timed on images");
    };
    match &mut config.data {
        DataSpec::Images { source: s, .. } | DataSpec::Latent { source: s, .. } => *s = source,
        _ => anyhow::bail!("bench runs times image and latent runs; this run models points"),
    }
    config.train.steps = u64::MAX;
    Ok(config)
}

/// Best-of-rounds timings of one run.
#[derive(Default, Clone, Copy)]
struct Best {
    denoise_ms: f64,
    decode_ms: f64,
    sample_rss_mb: f64,
    step_ms: f64,
    train_rss_mb: f64,
}

fn keep_min(best: &mut f64, value: f64) {
    if *best == 0.0 || value < *best {
        *best = value;
    }
}

/// Median step time over about `seconds` (at least 3 steps) after one warm-up step.
fn step_ms(trainer: &mut Trainer, seconds: f64) -> anyhow::Result<f64> {
    trainer.train_step()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        trainer.train_step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub struct Options<'a> {
    pub runs: &'a [PathBuf],
    pub sampler: &'a SamplerChoice,
    pub n: usize,
    pub rounds: usize,
    pub data: &'a str,
    pub seconds: f64,
    pub device: &'a Device,
    /// The device as `--device` named it, recorded in every row.
    pub device_name: &'a str,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if opts.runs.is_empty() || opts.n == 0 || opts.rounds == 0 {
        anyhow::bail!("bench runs needs --run DIR (repeatable), --n >= 1 and --rounds >= 1");
    }
    let device = opts.device;
    let threads = rayon::current_num_threads();
    let mut runs = Vec::new();
    for dir in opts.runs {
        let run = open(dir, false, device)?;
        if run.image_shape().is_none() {
            anyhow::bail!("{}: bench runs times image and latent runs", dir.display());
        }
        let trainer = Trainer::new(timing_config(&run, opts.data)?)
            .and_then(|t| t.on_device(device.clone()))
            .with_context(|| format!("{}: building its trainer", dir.display()))?;
        runs.push((dir.as_path(), run, trainer, Best::default()));
    }
    for round in 0..opts.rounds {
        for (dir, run, trainer, best) in runs.iter_mut() {
            let classes = run.config.model.num_classes();
            let labels = crate::sample::sample_labels(None, classes, opts.n);
            let cond = labels.as_deref().map(|l| (l, 1.0));
            reset_peak_rss();
            let t = Instant::now();
            let (x, nfe) = run.draw_conditional(opts.sampler, opts.n, round as u64, cond, None)?;
            let denoise = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let images = run.to_images(&x);
            let decode = t.elapsed().as_secs_f64() * 1e3;
            let sample_rss = peak_rss_mb();
            anyhow::ensure!(
                images.iter().all(|v| v.is_finite()),
                "{}: non-finite samples",
                dir.display()
            );
            reset_peak_rss();
            let step = step_ms(trainer, opts.seconds)
                .with_context(|| format!("{}: training step", dir.display()))?;
            let train_rss = peak_rss_mb();
            keep_min(&mut best.denoise_ms, denoise);
            keep_min(&mut best.decode_ms, decode);
            keep_min(&mut best.step_ms, step);
            best.sample_rss_mb = best.sample_rss_mb.max(sample_rss);
            best.train_rss_mb = best.train_rss_mb.max(train_rss);
            println!(
                "{}",
                serde_json::json!({"run": dir.display().to_string(), "device": opts.device_name, "round": round,
                    "sampler": opts.sampler.name, "sampler_steps": opts.sampler.steps, "nfe": nfe,
                    "n": opts.n, "denoise_ms": denoise, "decode_ms": decode,
                    "ms_per_image": (denoise + decode) / opts.n as f64,
                    "batch": trainer.config.train.batch_size, "ms_per_train_step": step,
                    "sample_peak_rss_mb": sample_rss, "train_peak_rss_mb": train_rss,
                    "threads": threads})
            );
        }
    }
    for (dir, run, trainer, best) in &runs {
        println!("{}", summary(dir, run, trainer, best, opts, threads));
    }
    Ok(())
}

fn summary(
    dir: &Path,
    run: &Run,
    trainer: &Trainer,
    best: &Best,
    opts: &Options,
    threads: usize,
) -> String {
    let n = opts.n;
    serde_json::json!({"run": dir.display().to_string(), "device": opts.device_name, "best_of_rounds": true,
        "latent": run.vae.is_some(), "model_params": run.params.len(),
        "model_input": run.config.model.image_shape(),
        "denoise_ms_per_image": best.denoise_ms / n as f64,
        "decode_ms_per_image": best.decode_ms / n as f64,
        "ms_per_image": (best.denoise_ms + best.decode_ms) / n as f64,
        "batch": trainer.config.train.batch_size, "ms_per_train_step": best.step_ms,
        "sample_peak_rss_mb": best.sample_rss_mb, "train_peak_rss_mb": best.train_rss_mb,
        "threads": threads})
    .to_string()
}
