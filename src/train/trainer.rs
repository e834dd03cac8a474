//! The training loop's step (DDPM Algorithm 1 with the weightings of [`crate::loss`]), one for
//! every model: x_0 (and labels) from the data stream, t from the timestep sampler,
//! eps ~ N(0, I), x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, the configured target;
//! loss and gradient from the step's engine ([`super::engine`]: burn autodiff, or the MLP's fused
//! kernel); then the NaN guard, global-norm clipping, AdamW at the scheduled learning rate and
//! EMA, all on the flat parameter vector. Every random draw of step s comes from streams of
//! (seed, s), so a run resumed from a checkpoint repeats a straight run bit for bit.

use super::adamw::{clip_grad_norm, AdamWParams, AdamWState};
use super::checkpoint::{Checkpoint, CheckpointError, RngState, TrainState};
use super::config::RunConfig;
use super::ema::ema_update;
use super::engine::{
    autodiff_grad, data_parallel_grad, BatchGrad, ExtraLoss, MlpEngine, StepBatch,
};
use super::lr::learning_rate;
use super::vae_step::vae_grad;
use crate::data::{BatchPrefetcher, DataSource};
use crate::loss::{hybrid_vlb_term, loss_weight, term_values, TimestepSampler};
use crate::nn::embedding::sinusoidal_embedding;
use crate::nn::{FlatParams, MlpParams, Net};
use crate::prediction::target;
use crate::schedule::Schedule;
use crate::sde::score::{dsm_regression, ScoreOutput, NETWORK_TIME_SCALE};
use crate::tensor::{from_rows, lincomb, to_vec};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::PathBuf;
use std::sync::Arc;

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

/// How a step computes its gradient.
#[allow(clippy::large_enum_variant)] // One per trainer.
enum Engine {
    /// The 2-D MLP's fused float32 kernel; `mlp` holds the layout (its values are swapped with
    /// the trainer's during a step) and `emb_table` the embedding of every integer timestep.
    Mlp {
        mlp: MlpParams,
        kernel: MlpEngine,
        emb_table: Vec<f32>,
    },
    /// burn autodiff on the network `template` (on an autodiff device).
    Autodiff { template: Net },
    /// burn autodiff on several devices, the batch split between them (one template each).
    DataParallel { templates: Vec<Net> },
}

/// A run in memory: config, weights, optimiser and sampler state, and the step counter.
pub struct Trainer {
    pub config: RunConfig,
    pub schedule: Schedule,
    pub data: DataSource,
    pub params: FlatParams,
    pub ema: FlatParams,
    pub optimizer: AdamWState,
    pub sampler: TimestepSampler,
    /// Steps taken so far.
    pub step: u64,
    /// The device training runs on.
    pub device: Device,
    engine: Engine,
    /// Batches of the coming steps, prepared off the training thread (image data).
    prefetch: Option<BatchPrefetcher>,
    /// Fault injection for tests: a non-finite loss at this (1-based) step.
    inject_non_finite_at: Option<u64>,
}

impl Engine {
    /// The 2-D MLP's fused CPU kernel on the CPU (unless the config asks for burn autodiff);
    /// burn autodiff on `device` for everything else.
    fn new(
        config: &RunConfig,
        schedule: &Schedule,
        params: &FlatParams,
        device: &Device,
    ) -> Result<Engine, TrainError> {
        Ok(match config.model.as_mlp() {
            Some(mlp) if !config.train.autodiff && crate::device::is_cpu(device) => {
                let t_all: Vec<f64> = (0..schedule.len()).map(|i| i as f64).collect();
                let emb_table = sinusoidal_embedding(&t_all, mlp.time_embed_dim)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                Engine::Mlp {
                    mlp: MlpParams::from_values(mlp, vec![0.0; params.len()])?,
                    kernel: MlpEngine::default(),
                    emb_table,
                }
            }
            _ => Engine::Autodiff {
                template: Net::new(&config.model, params, &device.clone().autodiff())?,
            },
        })
    }
}

impl Trainer {
    /// A fresh run (weights initialised from the seed) on the CPU.
    pub fn new(config: RunConfig) -> Result<Self, TrainError> {
        config.validate()?;
        let params = config.model.init_params(config.seed)?;
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

    /// The same run training on `device` (the CPU by default; float64 work stays on the CPU).
    pub fn on_device(mut self, device: Device) -> Result<Self, TrainError> {
        self.engine = Engine::new(&self.config, &self.schedule, &self.params, &device)?;
        self.device = device;
        Ok(self)
    }

    /// The same run training data-parallel on `devices` (one: [`Trainer::on_device`]): each
    /// step splits the batch between them and reduces their gradients on the host
    /// ([`data_parallel_grad`]). The VAE objective and the hybrid (learned-variance) loss are
    /// not split yet: an error.
    pub fn on_devices(self, devices: &[Device]) -> Result<Self, TrainError> {
        let (first, rest) = devices.split_first().ok_or_else(|| {
            crate::Error::config(
                "devices",
                "data-parallel training needs at least one device",
            )
        })?;
        let mut trainer = self.on_device(first.clone())?;
        if rest.is_empty() {
            return Ok(trainer);
        }
        let config = &trainer.config;
        let single_device_only = if config.model.as_vae().is_some() {
            Some("a VAE")
        } else if config.train.loss.vlb_term_weight(trainer.schedule.len()) > 0.0 {
            Some("the hybrid (learned-variance) loss")
        } else {
            None
        };
        if let Some(what) = single_device_only {
            return Err(crate::Error::config(
                "devices",
                format!("{what} trains on one device only"),
            )
            .into());
        }
        let templates = devices
            .iter()
            .map(|d| {
                Net::new(
                    &trainer.config.model,
                    &trainer.params,
                    &d.clone().autodiff(),
                )
            })
            .collect::<crate::Result<Vec<_>>>()?;
        trainer.engine = Engine::DataParallel { templates };
        Ok(trainer)
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
        params: FlatParams,
        ema: FlatParams,
        optimizer: AdamWState,
        sampler: TimestepSampler,
        step: u64,
    ) -> Result<Self, TrainError> {
        let schedule = config.schedule.build().map_err(crate::Error::from)?;
        let data = config.data.open()?;
        let device = crate::device::cpu();
        let engine = Engine::new(&config, &schedule, &params, &device)?;
        Ok(Trainer {
            config,
            schedule,
            data,
            params,
            ema,
            optimizer,
            sampler,
            step,
            device,
            engine,
            prefetch: None,
            inject_non_finite_at: None,
        })
    }

    /// Test hook: make the loss of (1-based) step `step` non-finite.
    pub fn inject_non_finite_loss_at(&mut self, step: u64) {
        self.inject_non_finite_at = Some(step);
    }

    /// True when steps run through burn autodiff (false: the MLP's fused kernel).
    pub fn uses_autodiff(&self) -> bool {
        matches!(
            self.engine,
            Engine::Autodiff { .. } | Engine::DataParallel { .. }
        )
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

    /// The loss and gradient of the current weights on the batch of the current step, without
    /// updating anything (what [`Trainer::train_step`] then applies).
    pub fn loss_and_gradient(&mut self) -> Result<(BatchGrad, Option<Vec<usize>>), TrainError> {
        let cfg = &self.config;
        let (n, d) = (cfg.train.batch_size, cfg.model.data_dim());
        let s = self.step;
        let batch = match &self.data {
            // Images are drawn and scaled on a background thread, one step ahead.
            DataSource::Images { set, hflip } => {
                let stale = self.prefetch.as_ref().is_none_or(|p| p.step() != s);
                if stale {
                    self.prefetch = Some(BatchPrefetcher::new(
                        Arc::clone(set),
                        n,
                        cfg.seed,
                        s,
                        *hflip,
                        2,
                    ));
                }
                let prefetch = self.prefetch.as_mut().expect("just set");
                prefetch.next().into()
            }
            data => data.training_batch(n, cfg.seed, s),
        };
        // A VAE minimises its own objective (SPEC §7) on the same batches.
        if let Some(vae) = cfg.model.as_vae() {
            let Engine::Autodiff { template } = &self.engine else {
                unreachable!("a VAE trains through autodiff (it has no fused kernel)")
            };
            let grad = vae_grad(
                template,
                &self.params.values,
                vae,
                &batch.x0,
                n,
                cfg.seed,
                s,
            )?;
            return Ok((grad, None));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(2 * s + 1);
        let levels = self.draw_levels(n, &mut rng);
        let eps: Vec<f64> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        // Label dropout to the null class (-1) for classifier-free guidance; drawn after the
        // noise so unconditional runs keep their streams.
        let labels: Option<Vec<i64>> = match (&batch.labels, cfg.model.num_classes()) {
            (Some(labels), Some(_)) => Some(
                labels
                    .iter()
                    .map(|&l| {
                        if rng.random::<f64>() < cfg.train.label_dropout {
                            -1
                        } else {
                            l
                        }
                    })
                    .collect(),
            ),
            _ => None,
        };

        // x_t = a x_0 + s eps and the target in float64 (SPEC §2, §3), cast to float32 at the
        // network's edge.
        let host = crate::device::cpu();
        let x0_f32: Vec<f32> = batch.x0.iter().map(|&v| v as f32).collect();
        let x0_t = from_rows(batch.x0, n, d, &host, DType::F64);
        let eps_t = from_rows(eps, n, d, &host, DType::F64);
        let (a, sd) = (&levels.a, &levels.s);
        let x_t = lincomb(a, &x0_t, sd, &eps_t);
        let tgt = target(cfg.prediction, &x0_t, &eps_t, a, sd);
        let x_t: Vec<f32> = to_vec(&x_t).into_iter().map(|v| v as f32).collect();
        let tgt: Vec<f32> = to_vec(&tgt).into_iter().map(|v| v as f32).collect();

        let emb = match &self.engine {
            Engine::Mlp { mlp, emb_table, .. } => {
                let e = mlp.config.time_embed_dim;
                match &levels.steps {
                    Some(steps) => steps
                        .iter()
                        .flat_map(|&i| emb_table[i * e..(i + 1) * e].iter().copied())
                        .collect(),
                    None => sinusoidal_embedding(&levels.t_input, e)
                        .into_iter()
                        .map(|v| v as f32)
                        .collect(),
                }
            }
            Engine::Autodiff { .. } | Engine::DataParallel { .. } => Vec::new(),
        };
        let step_batch = StepBatch {
            n,
            dim: d,
            x_t: &x_t,
            target: &tgt,
            t_input: &levels.t_input,
            emb: &emb,
            weight: &levels.weight,
            labels: labels.as_deref(),
        };
        let grad = match &mut self.engine {
            Engine::Mlp { mlp, kernel, .. } => {
                std::mem::swap(&mut mlp.values, &mut self.params.values);
                let g = kernel.grad(mlp, &step_batch);
                std::mem::swap(&mut mlp.values, &mut self.params.values);
                g
            }
            Engine::Autodiff { template } => {
                let vlb_weight = cfg.train.loss.vlb_term_weight(self.schedule.len());
                let schedule = &self.schedule;
                let (steps, weight, prediction) =
                    (levels.steps.as_deref(), &levels.weight, cfg.prediction);
                // The hybrid loss's L_vlb part, mean_n w_n lambda T term_n (improved DDPM), on
                // the variance half of the output; the sampler records the term.
                let hybrid = |out: &Tensor<2>| {
                    let device = out.device();
                    let f32_rows = |v: &[f32]| {
                        Tensor::<2>::from_data(
                            TensorData::new(v.to_vec(), [n, d]),
                            (&device, DType::F32),
                        )
                    };
                    let (x0, xt) = (f32_rows(&x0_f32), f32_rows(&x_t));
                    let mean = out.clone().slice([0..n, 0..d]);
                    let var = out.clone().slice([0..n, d..2 * d]);
                    let steps = steps.expect("hybrid runs are discrete (validated)");
                    let term = hybrid_vlb_term(schedule, steps, prediction, &x0, &xt, &mean, &var);
                    let w = Tensor::<1>::from_data(
                        TensorData::new(weight.iter().map(|&w| w as f32).collect(), [n]),
                        (&device, DType::F32),
                    );
                    let values = term_values(&term);
                    ((term * w).mean().mul_scalar(vlb_weight), Some(values))
                };
                let extra: Option<ExtraLoss> = (vlb_weight > 0.0).then_some(&hybrid as ExtraLoss);
                autodiff_grad(template, &self.params.values, &step_batch, extra)?
            }
            Engine::DataParallel { templates } => {
                data_parallel_grad(templates, &self.params.values, &step_batch)?
            }
        };
        Ok((grad, levels.steps))
    }

    /// One optimisation step.
    pub fn train_step(&mut self) -> Result<StepStats, TrainError> {
        let number = self.step + 1;
        let (mut g, steps) = self.loss_and_gradient()?;
        if self.inject_non_finite_at == Some(number) {
            g.loss = f64::NAN;
        }
        if !g.loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: number,
                what: "loss",
                value: g.loss,
            });
        }
        let cfg = &self.config;
        let grad_norm = clip_grad_norm(&mut g.grad, cfg.train.grad_clip);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: number,
                what: "gradient norm",
                value: grad_norm,
            });
        }
        let lr = learning_rate(&cfg.train, self.step);
        let h = AdamWParams {
            lr,
            beta1: cfg.train.beta1,
            beta2: cfg.train.beta2,
            eps: cfg.train.adam_eps,
            weight_decay: cfg.train.weight_decay,
        };
        self.optimizer.step(&mut self.params.values, &g.grad, &h);
        ema_update(
            &mut self.ema.values,
            &self.params.values,
            cfg.train.ema_decay,
            self.step,
        );
        if let Some(t) = &steps {
            self.sampler.update(t, &g.per_sample);
        }
        self.step = number;
        Ok(StepStats {
            step: number,
            loss: g.loss,
            grad_norm,
            lr,
        })
    }
}

/// The noise levels of one training batch: x_t = a x_0 + s eps, the network's time input, the
/// loss weight of each sample, and the discrete steps (for the importance sampler).
struct BatchLevels {
    a: Vec<f64>,
    s: Vec<f64>,
    t_input: Vec<f64>,
    weight: Vec<f64>,
    steps: Option<Vec<usize>>,
}

/// Smallest training time of SDE runs (score_sde's eps: the marginal at t = 0 is degenerate).
pub const SDE_TRAIN_EPS: f64 = 1e-5;

impl Trainer {
    /// Discrete runs: t from the timestep sampler (uniform or importance), the schedule's
    /// coefficients and the configured loss weight. SDE runs: t ~ U(eps, 1) and DSM with
    /// lambda(t) = s(t)^2 on an eps network as [`dsm_regression`] gives it (SPEC §4).
    fn draw_levels(&self, n: usize, rng: &mut ChaCha8Rng) -> BatchLevels {
        let cfg = &self.config;
        match &cfg.sde {
            None => {
                let (t, importance) = self.sampler.sample(n, rng);
                let s = &self.schedule;
                BatchLevels {
                    a: t.iter().map(|&i| s.sqrt_alpha_bar[i]).collect(),
                    s: t.iter().map(|&i| s.sqrt_one_minus_alpha_bar[i]).collect(),
                    t_input: t.iter().map(|&i| i as f64).collect(),
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
                let dsm = dsm_regression(&*sde, ScoreOutput::Eps, &t);
                BatchLevels {
                    a: dsm.mean_coeff,
                    s: dsm.std,
                    t_input: t.iter().map(|t| NETWORK_TIME_SCALE * t).collect(),
                    weight: dsm.weight,
                    steps: None,
                }
            }
        }
    }
}
