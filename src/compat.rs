//! Reading diffusers scheduler configs (`scheduler_config.json`, and the `config` objects of
//! the reference vectors) into this crate's types, so a diffusers setup maps onto ours.

use crate::error::{Error, Result};
use crate::prediction::PredictionType;
use crate::sample::dpm_solver::{DpmAlgorithm, DpmSolverOptions, DpmSolverType};
use crate::sample::grid::{
    DpmGridOptions, FinalSigma, Interpolation, ModelTime, SigmaConversion, SigmaGridOptions,
    Spacing,
};
use crate::sample::X0Clip;
use crate::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use crate::variance::VarianceType;
use serde::{Deserialize, Deserializer};

/// The fields of a diffusers scheduler config that this crate reads. Fields it does not know are
/// ignored; [`DiffusersSchedulerConfig::check_supported`] rejects, by name, every known option
/// whose value this crate cannot reproduce. Defaults are diffusers' (0.42) where the schedulers
/// agree; `timestep_spacing` defaults to DDPM/DDIM's `leading`, which the sigma-space and
/// DPM-Solver configs always spell out.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DiffusersSchedulerConfig {
    /// The scheduler class (`DDPMScheduler`, `EulerDiscreteScheduler`, ...).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
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
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub use_dynamic_shifting: bool,
    /// Euler: `linear` (sigma interpolated at the timesteps) or `log_linear`.
    pub interpolation_type: String,
    /// Euler: overrides of the ends of Karras / exponential sigmas.
    #[serde(deserialize_with = "optional_number")]
    pub sigma_min: Option<f64>,
    #[serde(deserialize_with = "optional_number")]
    pub sigma_max: Option<f64>,
    /// Euler: `discrete` (table index) or `continuous` (ln(sigma)/4, with v-prediction only).
    pub timestep_type: String,
    /// Euler / DPM-Solver: the last sigma of the grid, `zero` or `sigma_min`.
    pub final_sigmas_type: String,
    pub solver_order: usize,
    pub algorithm_type: String,
    pub solver_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    #[serde(deserialize_with = "number")]
    pub lambda_min_clipped: f64,
}

/// diffusers' (0.42) defaults of one scheduler class where they differ from
/// [`DiffusersSchedulerConfig::default`] (DDPM/DDIM clip x0 by default; the sigma-space and
/// DPM-Solver schedulers space timesteps by linspace; Heun's betas are Stable Diffusion's).
pub fn class_defaults(class: &str) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    match class {
        "DDPMScheduler" | "DDIMScheduler" | "DDIMInverseScheduler" => {
            vec![("clip_sample", json!(true))]
        }
        "EulerDiscreteScheduler" | "DPMSolverMultistepScheduler" => {
            vec![("timestep_spacing", json!("linspace"))]
        }
        "HeunDiscreteScheduler" => vec![
            ("timestep_spacing", json!("linspace")),
            ("beta_start", json!(0.00085)),
            ("beta_end", json!(0.012)),
        ],
        _ => Vec::new(),
    }
}

/// diffusers' beta sigmas: `_convert_to_beta` with its defaults alpha = beta = 0.6.
const BETA_SIGMAS: SigmaConversion = SigmaConversion::Beta {
    alpha: 0.6,
    beta: 0.6,
};

/// The error for a config value this crate does not reproduce.
fn unsupported(option: &'static str, value: &str) -> Error {
    Error::config(option, format!("unsupported value {value}"))
}

/// A JSON number or a non-finite number written as a string (`"-inf"`).
fn number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::F(v) => Ok(v),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// [`number`] or null.
fn optional_number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "number")] f64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
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
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            use_dynamic_shifting: false,
            interpolation_type: "linear".into(),
            sigma_min: None,
            sigma_max: None,
            timestep_type: "discrete".into(),
            final_sigmas_type: "zero".into(),
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            class_name: None,
        }
    }
}

impl DiffusersSchedulerConfig {
    /// Parses a config from JSON.
    /// Parses a config from JSON. Keys it leaves out take diffusers' default for its
    /// `_class_name` (they differ between classes: [`class_defaults`]).
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let mut value = value.clone();
        if let Some(obj) = value.as_object_mut() {
            let class = obj
                .get("_class_name")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string();
            for (key, default) in class_defaults(&class) {
                obj.entry(key).or_insert(default);
            }
        }
        serde_json::from_value(value)
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
            (None, name @ ("exp" | "laplace")) => {
                BetaSchedule::from_name(name).expect("named alpha_bar schedule")
            }
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

    /// The DDPM variance type (`fixed_small` when absent). `fixed_small_log` is `fixed_small`:
    /// diffusers draws its noise with std exp(log(beta_tilde) / 2), the same sigma.
    /// `fixed_large_log` is refused: diffusers' step multiplies the noise by sqrt(log beta_t),
    /// the square root of a negative number (NaN samples), which no formula here reproduces.
    pub fn variance(&self) -> Result<VarianceType> {
        match self.variance_type.as_deref() {
            None | Some("fixed_small") | Some("fixed_small_log") => Ok(VarianceType::FixedSmall),
            Some("fixed_large") => Ok(VarianceType::FixedLarge),
            Some("learned") => Ok(VarianceType::Learned),
            Some("learned_range") => Ok(VarianceType::LearnedRange),
            Some("fixed_large_log") => Err(unsupported(
                "variance_type",
                "\"fixed_large_log\" (diffusers' DDPM step scales the noise by sqrt(log beta), which is NaN)",
            )),
            Some(other) => Err(unsupported("variance_type", &format!("{other:?}"))),
        }
    }

    /// Whether the network also outputs a variance (`learned` / `learned_range`: twice the
    /// channels, the prediction first).
    pub fn learned_variance(&self) -> bool {
        matches!(
            self.variance_type.as_deref(),
            Some("learned") | Some("learned_range")
        )
    }

    /// Rejects, by option name, every value this crate does not reproduce for the config's
    /// scheduler class (`_class_name`; without one, every option is checked). Called before a
    /// config is used, so an unsupported config fails loudly instead of running as another.
    pub fn check_supported(&self) -> Result<()> {
        let class = self.class_name.as_deref().unwrap_or("");
        self.schedule_config()?;
        self.prediction()?;
        self.spacing()?;
        if class == "DDPMScheduler" {
            self.variance()?;
        }
        if class == "DDIMInverseScheduler" && self.timestep_spacing == "linspace" {
            return Err(unsupported(
                "timestep_spacing",
                "\"linspace\" (DDIMInverseScheduler has only leading and trailing)",
            ));
        }
        let flags = [
            (
                "use_flow_sigmas",
                self.use_flow_sigmas,
                "flow-matching sigmas are not a VP schedule",
            ),
            (
                "use_dynamic_shifting",
                self.use_dynamic_shifting,
                "flow-matching time shift",
            ),
        ];
        for (name, set, why) in flags {
            if set {
                return Err(unsupported(name, &format!("true ({why})")));
            }
        }
        let conversions = [
            self.use_karras_sigmas,
            self.use_exponential_sigmas,
            self.use_beta_sigmas,
            self.use_lu_lambdas,
        ];
        if conversions.iter().filter(|&&b| b).count() > 1 {
            return Err(Error::config(
                "use_karras_sigmas",
                "at most one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas and use_lu_lambdas may be set",
            ));
        }
        self.sigma_grid_options()?;
        self.clip().validate()?;
        if class == "DPMSolverMultistepScheduler" || class.is_empty() {
            self.dpm_solver_options()?;
            self.dpm_grid_options()?;
        }
        Ok(())
    }

    fn final_sigma(&self) -> Result<FinalSigma> {
        match self.final_sigmas_type.as_str() {
            "zero" => Ok(FinalSigma::Zero),
            "sigma_min" => Ok(FinalSigma::SigmaMin),
            other => Err(unsupported("final_sigmas_type", &format!("{other:?}"))),
        }
    }

    /// The grid options of `EulerDiscreteScheduler` / `HeunDiscreteScheduler` (Heun's config
    /// lacks the Euler-only fields, whose defaults then apply, as in diffusers).
    pub fn sigma_grid_options(&self) -> Result<SigmaGridOptions> {
        let interpolation = match self.interpolation_type.as_str() {
            "linear" => Interpolation::Linear,
            "log_linear" => Interpolation::LogLinear,
            other => return Err(unsupported("interpolation_type", &format!("{other:?}"))),
        };
        let continuous = match self.timestep_type.as_str() {
            "discrete" => false,
            "continuous" => true,
            other => return Err(unsupported("timestep_type", &format!("{other:?}"))),
        };
        let conversion = if self.use_karras_sigmas {
            SigmaConversion::Karras
        } else if self.use_exponential_sigmas {
            SigmaConversion::Exponential
        } else if self.use_beta_sigmas {
            BETA_SIGMAS
        } else {
            SigmaConversion::None
        };
        Ok(SigmaGridOptions {
            spacing: self.spacing()?,
            steps_offset: self.steps_offset,
            interpolation,
            conversion,
            sigma_min: self.sigma_min,
            sigma_max: self.sigma_max,
            final_sigma: self.final_sigma()?,
            // diffusers uses ln(sigma)/4 only together with v-prediction.
            model_time: if continuous && self.prediction_type == "v_prediction" {
                ModelTime::LogSigma
            } else {
                ModelTime::Index
            },
        })
    }

    /// The grid options of `DPMSolverMultistepScheduler`. Converted sigmas get rounded
    /// timesteps for Karras sigmas and Lu lambdas (except on `squaredcos_cap_v2`, as diffusers)
    /// and truncated ones otherwise (diffusers' integer cast).
    pub fn dpm_grid_options(&self) -> Result<DpmGridOptions> {
        let conversion = if self.use_karras_sigmas {
            SigmaConversion::Karras
        } else if self.use_exponential_sigmas || self.use_lu_lambdas {
            SigmaConversion::Exponential
        } else if self.use_beta_sigmas {
            BETA_SIGMAS
        } else {
            SigmaConversion::None
        };
        let rounded = (self.use_karras_sigmas || self.use_lu_lambdas)
            && self.beta_schedule != "squaredcos_cap_v2";
        Ok(DpmGridOptions {
            spacing: self.spacing()?,
            steps_offset: self.steps_offset,
            conversion,
            model_time: if rounded {
                ModelTime::RoundedIndex
            } else {
                ModelTime::TruncatedIndex
            },
            final_sigma: self.final_sigma()?,
            lambda_min_clipped: self.lambda_min_clipped,
        })
    }

    /// The solver options of `DPMSolverMultistepScheduler`.
    pub fn dpm_solver_options(&self) -> Result<DpmSolverOptions> {
        let (algorithm, sde) = match self.algorithm_type.as_str() {
            "dpmsolver++" => (DpmAlgorithm::DataPrediction, false),
            "sde-dpmsolver++" => (DpmAlgorithm::DataPrediction, true),
            "dpmsolver" => (DpmAlgorithm::NoisePrediction, false),
            "sde-dpmsolver" => (DpmAlgorithm::NoisePrediction, true),
            other => return Err(unsupported("algorithm_type", &format!("{other:?}"))),
        };
        let solver_type = match self.solver_type.as_str() {
            "midpoint" => DpmSolverType::Midpoint,
            "heun" => DpmSolverType::Heun,
            other => return Err(unsupported("solver_type", &format!("{other:?}"))),
        };
        if !(1..=3).contains(&self.solver_order) {
            return Err(unsupported(
                "solver_order",
                &format!("{} (1, 2 or 3)", self.solver_order),
            ));
        }
        if self.solver_order == 3 && algorithm == DpmAlgorithm::NoisePrediction && sde {
            return Err(unsupported(
                "solver_order",
                "3 with sde-dpmsolver (diffusers has no such update)",
            ));
        }
        if algorithm == DpmAlgorithm::NoisePrediction && self.final_sigmas_type == "zero" {
            return Err(unsupported(
                "final_sigmas_type",
                "\"zero\" with the noise-prediction algorithms (diffusers refuses it too)",
            ));
        }
        Ok(DpmSolverOptions {
            order: self.solver_order,
            algorithm,
            sde,
            solver_type,
            lower_order_final: self.lower_order_final,
            euler_at_final: self.euler_at_final,
        })
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

#[cfg(test)]
mod tests;
