//! `RunConfig`: everything needed to rebuild a run's model, schedule and data (config.json).

use crate::data::DataSpec;
use crate::error::{Error, Result};
use crate::loss::{LossWeighting, TimestepSampling};
use crate::nn::ModelConfig;
use crate::prediction::PredictionType;
use crate::schedule::ScheduleConfig;
use serde::{Deserialize, Serialize};

/// Optimisation hyper-parameters. Defaults: the usual toy recipe (batch 512, AdamW 1e-3 with
/// 100 warmup steps and cosine decay to 0, clip 1.0, EMA 0.999 with warmup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Total optimisation steps (the cosine horizon).
    pub steps: u64,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Linear warmup steps from 0 to `lr`.
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Clip the global gradient norm to this value (0 disables).
    pub grad_clip: f64,
    /// EMA decay; the effective decay at step s is min(decay, (1 + s)/(10 + s)).
    pub ema_decay: f64,
    pub loss: LossWeighting,
    pub timestep_sampling: TimestepSampling,
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end.
    pub checkpoint_every: u64,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
    /// Probability that a training label is replaced by the null class (classifier-free
    /// guidance; only for class-conditional models).
    pub label_dropout: f64,
    /// Train through burn autodiff even where a fused kernel exists (the 2-D MLP).
    pub autodiff: bool,
    /// Changes of `steps` made by `train --resume --steps N`, oldest first (see [`Replan`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replans: Vec<Replan>,
}

/// A change of the planned total made when a run is resumed: from step `at_step` on, the
/// learning rate follows the warmup + cosine schedule of a run planned for `to_steps` from the
/// start ([`super::lr::learning_rate`] with the new total), instead of the `from_steps` plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replan {
    pub at_step: u64,
    pub from_steps: u64,
    pub to_steps: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 5000,
            batch_size: 512,
            lr: 1e-3,
            min_lr: 0.0,
            warmup_steps: 100,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            grad_clip: 1.0,
            ema_decay: 0.999,
            loss: LossWeighting::Simple,
            timestep_sampling: TimestepSampling::Uniform,
            checkpoint_every: 1000,
            log_every: 10,
            label_dropout: 0.1,
            autodiff: false,
            replans: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Re-plans the total at step `at_step` of a resumed run: from there on the learning rate
    /// follows the schedule of `steps` total steps; the change is recorded in `replans`. A
    /// total below the step already reached is an error.
    pub fn replan(&mut self, at_step: u64, steps: u64) -> Result<()> {
        if steps < at_step {
            return Err(Error::config(
                "train.steps",
                format!("{steps} is below the step the run has reached ({at_step})"),
            ));
        }
        if steps != self.steps {
            self.replans.push(Replan {
                at_step,
                from_steps: self.steps,
                to_steps: steps,
            });
            self.steps = steps;
        }
        Ok(())
    }
}

/// One run: model, schedule, target, data, optimisation and seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub schedule: ScheduleConfig,
    pub prediction: PredictionType,
    pub data: DataSpec,
    pub train: TrainConfig,
    pub seed: u64,
    /// Train a continuous-time score model of this SDE by denoising score matching (SPEC §4,
    /// lambda(t) = s(t)^2) instead of a discrete-step model of `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sde: Option<crate::sde::SdeConfig>,
}

impl RunConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.schedule.build()?;
        self.train.loss.validate()?;
        if let Some(sde) = &self.sde {
            sde.validate()?;
        }
        crate::prediction::check_zero_terminal_snr(
            self.prediction,
            self.schedule.rescale_zero_terminal_snr,
        )?;
        if self.prediction == PredictionType::Score {
            return Err(Error::config(
                "prediction",
                "score prediction is not trainable with the discrete MLP (use eps, x0 or v)",
            ));
        }
        if self.sde.is_some() && self.prediction != PredictionType::Eps {
            return Err(Error::config(
                "prediction",
                "an SDE run trains an eps network (DSM with lambda = s^2); use --prediction eps",
            ));
        }
        let (d, out) = (self.model.data_dim(), self.model.output_dim());
        if self.train.loss.learns_variance() {
            if out != 2 * d {
                return Err(Error::config(
                    "train.loss",
                    "the hybrid loss learns the reverse variance: the model needs twice the data's \
                     channels as output (a UNet with out_channels = 2 in_channels)",
                ));
            }
            if self.sde.is_some() {
                return Err(Error::config(
                    "train.loss",
                    "the hybrid loss is a discrete-time objective; it does not apply to --sde runs",
                ));
            }
        } else if out != d {
            return Err(Error::config(
                "model.out_channels",
                format!(
                    "the model outputs {out} values per sample for {d}-dimensional data; a \
                     learned-variance output (twice the channels) needs --loss hybrid"
                ),
            ));
        }
        let t = &self.train;
        let checks: [(&'static str, bool, String); 8] = [
            (
                "train.label_dropout",
                (0.0..1.0).contains(&t.label_dropout),
                format!("{} is not in [0, 1)", t.label_dropout),
            ),
            ("train.batch_size", t.batch_size >= 1, "must be >= 1".into()),
            (
                "train.lr",
                t.lr > 0.0 && t.lr.is_finite(),
                format!("{} is not > 0", t.lr),
            ),
            (
                "train.min_lr",
                t.min_lr >= 0.0 && t.min_lr <= t.lr,
                format!("{} is not in [0, lr]", t.min_lr),
            ),
            (
                "train.beta1",
                (0.0..1.0).contains(&t.beta1) && (0.0..1.0).contains(&t.beta2),
                format!("betas ({}, {}) must lie in [0, 1)", t.beta1, t.beta2),
            ),
            (
                "train.ema_decay",
                (0.0..1.0).contains(&t.ema_decay),
                format!("{} is not in [0, 1)", t.ema_decay),
            ),
            (
                "train.grad_clip",
                t.grad_clip >= 0.0,
                format!("{} is negative", t.grad_clip),
            ),
            (
                "train.adam_eps",
                t.adam_eps > 0.0 && t.weight_decay >= 0.0,
                "adam_eps must be > 0 and weight_decay >= 0".into(),
            ),
        ];
        for (name, ok, reason) in checks {
            if !ok {
                return Err(Error::config(name, reason));
            }
        }
        if self.model.data_dim() != self.data.dim() {
            return Err(Error::config(
                "model.data_dim",
                format!("{} does not match the data", self.model.data_dim()),
            ));
        }
        Ok(())
    }
}
