//! The training loop (DDPM Algorithm 1 with the weightings of [`crate::loss`]):
//! x_0 from the data stream, t from the timestep sampler, eps ~ N(0, I),
//! x_t = q_sample(x_0, t, eps), loss = mean_n w_n ||target_n - net(x_t, t)_n||^2 / D; then
//! backward (fused kernel), NaN guard, gradient-norm clipping, AdamW at the scheduled
//! learning rate, EMA. All randomness of step s comes from streams of (seed, s), so a run
//! resumed from a checkpoint repeats a straight run bit for bit.

use super::adamw::{clip_grad_norm, AdamWParams, AdamWState, CHUNK};
use super::checkpoint::{save_checkpoint, Checkpoint, CheckpointError, RngState, TrainState};
use super::config::RunConfig;
use super::ema::ema_update;
use super::lr::learning_rate;
use crate::data::DataSource;
use crate::loss::{loss_weight, per_sample_mse, TimestepSampler};
use crate::nn::embedding::sinusoidal_embedding;
use crate::nn::mlp_kernel::MlpKernel;
use crate::nn::MlpParams;
use crate::prediction::target;
use crate::schedule::Schedule;
use crate::sde::score::NETWORK_TIME_SCALE;
use crate::tensor::{from_rows, lincomb, to_vec};
use burn::tensor::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "non-finite {what} ({value}) at step {step}; training stopped, the last checkpoint is kept"
    )]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Config(#[from] crate::Error),
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// 1-based number of the step just taken.
    pub step: u64,
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// A run in memory: config, weights, optimiser and sampler state, and the step counter.
pub struct Trainer {
    pub config: RunConfig,
    pub schedule: Schedule,
    pub data: DataSource,
    pub params: MlpParams,
    pub ema: MlpParams,
    pub optimizer: AdamWState,
    pub sampler: TimestepSampler,
    /// Steps taken so far.
    pub step: u64,
    /// One kernel and gradient buffer per batch shard ([`shard_count`]).
    kernels: Vec<MlpKernel>,
    shard_grads: Vec<Vec<f32>>,
    /// Sinusoidal embedding of every integer timestep, `[T, E]`.
    emb_table: Vec<f32>,
    grad: Vec<f32>,
    /// Fault injection for tests: a non-finite loss at this (1-based) step.
    inject_non_finite_at: Option<u64>,
}

impl Trainer {
    /// A fresh run (weights initialised from the seed).
    pub fn new(config: RunConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let params = MlpParams::init(&config.model, config.seed)?;
        let n = params.len();
        let sampler = TimestepSampler::new(
            config.train.timestep_sampling,
            config.schedule.num_train_timesteps,
        );
        Self::assemble(
            config,
            params.clone(),
            params,
            AdamWState::new(n),
            sampler,
            0,
        )
    }

    /// A run continued from a checkpoint.
    pub fn from_checkpoint(ckpt: Checkpoint) -> Result<Self, TrainError> {
        Self::assemble(
            ckpt.config,
            ckpt.raw,
            ckpt.ema,
            ckpt.optimizer,
            ckpt.state.timestep_sampler,
            ckpt.state.step,
        )
    }

    fn assemble(
        config: RunConfig,
        params: MlpParams,
        ema: MlpParams,
        optimizer: AdamWState,
        sampler: TimestepSampler,
        step: u64,
    ) -> Result<Self, TrainError> {
        let schedule = config.schedule.build().map_err(crate::Error::from)?;
        let data = config.data.open()?;
        let t_all: Vec<f64> = (0..schedule.len()).map(|i| i as f64).collect();
        let emb_table = sinusoidal_embedding(&t_all, config.model.time_embed_dim)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let grad = vec![0.0; params.len()];
        Ok(Trainer {
            config,
            schedule,
            data,
            params,
            ema,
            optimizer,
            sampler,
            step,
            kernels: Vec::new(),
            shard_grads: Vec::new(),
            emb_table,
            grad,
            inject_non_finite_at: None,
        })
    }

    /// Test hook: make the loss of (1-based) step `step` non-finite.
    pub fn inject_non_finite_loss_at(&mut self, step: u64) {
        self.inject_non_finite_at = Some(step);
    }

    /// Everything needed to continue this run.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            config: self.config.clone(),
            ema: self.ema.clone(),
            raw: self.params.clone(),
            optimizer: self.optimizer.clone(),
            state: TrainState {
                step: self.step,
                adamw_updates: self.optimizer.updates,
                rng: RngState {
                    seed: self.config.seed,
                    next_step: self.step,
                },
                timestep_sampler: self.sampler.clone(),
            },
        }
    }

    /// One optimisation step.
    pub fn train_step(&mut self) -> Result<StepStats, TrainError> {
        let cfg = &self.config;
        let (n, d) = (cfg.train.batch_size, cfg.model.data_dim);
        let s = self.step;
        let number = s + 1;
        let x0 = self.data.batch(n, cfg.seed, s);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(2 * s + 1);
        let levels = self.draw_levels(n, &mut rng);
        let eps: Vec<f64> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();

        // x_t = a x_0 + s eps and the target in float64 (SPEC §2, §3), cast to float32 at the
        // kernel's edge.
        let device = Device::default();
        let x0_t = from_rows(x0, n, d, &device, DType::F64);
        let eps_t = from_rows(eps, n, d, &device, DType::F64);
        let (a, sd) = (&levels.a, &levels.s);
        let x_t = lincomb(a, &x0_t, sd, &eps_t);
        let tgt = target(cfg.prediction, &x0_t, &eps_t, a, sd);
        let x_t: Vec<f32> = to_vec(&x_t).into_iter().map(|v| v as f32).collect();
        let tgt: Vec<f32> = to_vec(&tgt).into_iter().map(|v| v as f32).collect();
        let (emb, w, e) = (levels.emb, levels.weight, cfg.model.time_embed_dim);

        // Forward, per-sample loss and backward of each shard in parallel; dLoss/dout =
        // 2 w_n (out - target) / (N D).
        let shards = shard_count(n);
        let rows = n.div_ceil(shards);
        self.kernels.resize_with(shards, MlpKernel::new);
        self.shard_grads
            .resize_with(shards, || vec![0.0; self.params.len()]);
        let params = &self.params;
        let mse_parts: Vec<Vec<f64>> = self
            .kernels
            .par_iter_mut()
            .zip(self.shard_grads.par_iter_mut())
            .enumerate()
            .map(|(k, (kernel, grad))| {
                let (r0, r1) = (k * rows, ((k + 1) * rows).min(n));
                let out = kernel.forward(params, &x_t[r0 * d..r1 * d], &emb[r0 * e..r1 * e]);
                let tgt = &tgt[r0 * d..r1 * d];
                let mse = per_sample_mse(out, tgt, d);
                let d_out: Vec<f32> = out
                    .chunks(d)
                    .zip(tgt.chunks(d))
                    .zip(&w[r0..r1])
                    .flat_map(|((o, y), w)| {
                        let c = (2.0 * w / (n * d) as f64) as f32;
                        o.iter().zip(y).map(move |(o, y)| c * (o - y))
                    })
                    .collect();
                kernel.backward(params, &d_out, grad);
                mse
            })
            .collect();
        let mse: Vec<f64> = mse_parts.concat();
        let mut loss = mse.iter().zip(&w).map(|(m, w)| m * w).sum::<f64>() / n as f64;
        if self.inject_non_finite_at == Some(number) {
            loss = f64::NAN;
        }
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: number,
                what: "loss",
                value: loss,
            });
        }
        // Sum the shard gradients in shard order (parallel over parameter chunks).
        let shard_grads = &self.shard_grads;
        self.grad
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, g)| {
                let range = c * CHUNK..c * CHUNK + g.len();
                g.copy_from_slice(&shard_grads[0][range.clone()]);
                for sg in &shard_grads[1..] {
                    for (a, b) in g.iter_mut().zip(&sg[range.clone()]) {
                        *a += b;
                    }
                }
            });
        let grad_norm = clip_grad_norm(&mut self.grad, cfg.train.grad_clip);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: number,
                what: "gradient norm",
                value: grad_norm,
            });
        }
        let lr = learning_rate(&cfg.train, s);
        let h = AdamWParams {
            lr,
            beta1: cfg.train.beta1,
            beta2: cfg.train.beta2,
            eps: cfg.train.adam_eps,
            weight_decay: cfg.train.weight_decay,
        };
        self.optimizer.step(&mut self.params.values, &self.grad, &h);
        ema_update(
            &mut self.ema.values,
            &self.params.values,
            cfg.train.ema_decay,
            s,
        );
        if let Some(t) = &levels.steps {
            self.sampler.update(t, &mse);
        }
        self.step = number;
        Ok(StepStats {
            step: number,
            loss,
            grad_norm,
            lr,
        })
    }
}

/// How many shards a batch is split into for parallel forward/backward: a function of the batch
/// size only (at most 256 rows per shard, at least 2 shards from 64 rows on), so the summation
/// order, and with it every result, is the same on any number of threads.
pub fn shard_count(batch: usize) -> usize {
    if batch < 64 {
        1
    } else {
        batch.div_ceil(256).max(2)
    }
}

/// The noise levels of one training batch: x_t = a x_0 + s eps, the network's time embedding
/// `[N, E]`, the loss weight of each sample, and the discrete steps (for the importance sampler).
struct BatchLevels {
    a: Vec<f64>,
    s: Vec<f64>,
    emb: Vec<f32>,
    weight: Vec<f64>,
    steps: Option<Vec<usize>>,
}

/// Smallest training time of SDE runs (score_sde's eps: the marginal at t = 0 is degenerate).
pub const SDE_TRAIN_EPS: f64 = 1e-5;

impl Trainer {
    /// Discrete runs: t from the timestep sampler (uniform or importance), the schedule's
    /// coefficients and the configured loss weight. SDE runs: t ~ U(eps, 1), the SDE's marginal
    /// (m(t), s(t)) and weight 1, since DSM with lambda(t) = s(t)^2 on an eps network is
    /// ||s score_theta + z||^2 = ||eps_theta - z||^2 (SPEC §4).
    fn draw_levels(&self, n: usize, rng: &mut ChaCha8Rng) -> BatchLevels {
        let cfg = &self.config;
        let e = cfg.model.time_embed_dim;
        match &cfg.sde {
            None => {
                let (t, importance) = self.sampler.sample(n, rng);
                let mut emb = Vec::with_capacity(n * e);
                for &i in &t {
                    emb.extend_from_slice(&self.emb_table[i * e..(i + 1) * e]);
                }
                let s = &self.schedule;
                BatchLevels {
                    a: t.iter().map(|&i| s.sqrt_alpha_bar[i]).collect(),
                    s: t.iter().map(|&i| s.sqrt_one_minus_alpha_bar[i]).collect(),
                    emb,
                    weight: t
                        .iter()
                        .zip(&importance)
                        .map(|(&i, iw)| iw * loss_weight(cfg.train.loss, cfg.prediction, s, i))
                        .collect(),
                    steps: Some(t),
                }
            }
            Some(sde_cfg) => {
                let sde = sde_cfg.build();
                let t: Vec<f64> = (0..n)
                    .map(|_| SDE_TRAIN_EPS + (1.0 - SDE_TRAIN_EPS) * rng.random::<f64>())
                    .collect();
                let marginals: Vec<_> = t.iter().map(|&t| sde.marginal(t)).collect();
                let scaled: Vec<f64> = t.iter().map(|t| NETWORK_TIME_SCALE * t).collect();
                BatchLevels {
                    a: marginals.iter().map(|m| m.mean_coeff).collect(),
                    s: marginals.iter().map(|m| m.std).collect(),
                    emb: sinusoidal_embedding(&scaled, e)
                        .into_iter()
                        .map(|v| v as f32)
                        .collect(),
                    weight: vec![1.0; n],
                    steps: None,
                }
            }
        }
    }
}

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
/// checkpoints every `checkpoint_every` steps and at the end, and `loss.png`.
pub fn fit(trainer: &mut Trainer, out: &Path, opts: &FitOptions) -> Result<(), TrainError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
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
        }
    }
    metrics.flush().map_err(io_err(&metrics_path))?;
    save_checkpoint(out, &trainer.checkpoint())?;
    bar.finish();
    plot_loss_curve(&metrics_path, &out.join("loss.png"))
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
