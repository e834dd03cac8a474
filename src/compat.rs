//! Reading diffusers scheduler configs (`scheduler_config.json`, and the `config` objects of
//! the reference vectors) into this crate's types, so a diffusers setup maps onto ours.

use crate::error::{Error, Result};
use crate::prediction::PredictionType;
use crate::sample::grid::Spacing;
use crate::sample::X0Clip;
use crate::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use crate::variance::VarianceType;
use serde::Deserialize;

/// The fields of a diffusers scheduler config that this crate uses; unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DiffusersSchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: String,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: String,
    pub variance_type: Option<String>,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub timestep_spacing: String,
    pub rescale_betas_zero_snr: bool,
    pub use_karras_sigmas: bool,
}

impl Default for DiffusersSchedulerConfig {
    fn default() -> Self {
        DiffusersSchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            trained_betas: None,
            prediction_type: "epsilon".into(),
            variance_type: None,
            clip_sample: false,
            clip_sample_range: 1.0,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            timestep_spacing: "leading".into(),
            rescale_betas_zero_snr: false,
            use_karras_sigmas: false,
        }
    }
}

impl DiffusersSchedulerConfig {
    /// Parses a config from JSON.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(value.clone())
            .map_err(|e| Error::config("diffusers scheduler config", e.to_string()))
    }

    /// Our schedule configuration for it.
    pub fn schedule_config(&self) -> Result<ScheduleConfig> {
        let (beta_start, beta_end) = (self.beta_start, self.beta_end);
        let beta_schedule = match (&self.trained_betas, self.beta_schedule.as_str()) {
            (Some(betas), _) => BetaSchedule::Custom {
                betas: betas.clone(),
            },
            (None, "linear") => BetaSchedule::Linear {
                beta_start,
                beta_end,
            },
            (None, "scaled_linear") => BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            },
            (None, "squaredcos_cap_v2") => BetaSchedule::cosine(),
            (None, "sigmoid") => BetaSchedule::Sigmoid {
                beta_start,
                beta_end,
            },
            (None, other) => {
                return Err(Error::config(
                    "beta_schedule",
                    format!("{other:?} is not supported"),
                ))
            }
        };
        Ok(ScheduleConfig {
            beta_schedule,
            num_train_timesteps: self.num_train_timesteps,
            rescale_zero_terminal_snr: self.rescale_betas_zero_snr,
        })
    }

    /// The schedule tables.
    pub fn schedule(&self) -> Result<Schedule> {
        Ok(self.schedule_config()?.build()?)
    }

    /// The network's prediction type.
    pub fn prediction(&self) -> Result<PredictionType> {
        PredictionType::from_name(&self.prediction_type).ok_or_else(|| {
            Error::config(
                "prediction_type",
                format!("{:?} is not supported", self.prediction_type),
            )
        })
    }

    /// The timestep spacing.
    pub fn spacing(&self) -> Result<Spacing> {
        Spacing::from_name(&self.timestep_spacing).ok_or_else(|| {
            Error::config(
                "timestep_spacing",
                format!("{:?} is not supported", self.timestep_spacing),
            )
        })
    }

    /// The DDPM variance type (`fixed_small` when absent).
    pub fn variance(&self) -> Result<VarianceType> {
        match self.variance_type.as_deref() {
            None | Some("fixed_small") => Ok(VarianceType::FixedSmall),
            Some("fixed_large") => Ok(VarianceType::FixedLarge),
            Some("learned_range") => Ok(VarianceType::LearnedRange),
            Some(other) => Err(Error::config(
                "variance_type",
                format!("{other:?} is not supported"),
            )),
        }
    }

    /// The x0 clipping: dynamic thresholding wins over plain clipping, as in diffusers.
    pub fn clip(&self) -> X0Clip {
        if self.thresholding {
            X0Clip::Dynamic {
                ratio: self.dynamic_thresholding_ratio,
                max_value: self.sample_max_value,
            }
        } else if self.clip_sample {
            X0Clip::Clip {
                range: self.clip_sample_range,
            }
        } else {
            X0Clip::None
        }
    }

    /// alpha_bar of the level below step 1: 1, or alpha_bar_1 with `set_alpha_to_one = false`.
    pub fn final_alpha_bar(&self, schedule: &Schedule) -> f64 {
        if self.set_alpha_to_one {
            1.0
        } else {
            schedule.alpha_bar[0]
        }
    }
}
