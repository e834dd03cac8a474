//! Picking a sampler by name and options (CLI / config), building its grid and start state,
//! and running it: the one entry point `diffuse sample` and `diffuse eval` use.

use super::ddpm::{sample_ddpm, DdpmOptions};
use super::grid::{discrete_grid, discrete_timesteps, Spacing};
use super::{Callback, X0Clip};
use crate::denoiser::Denoiser;
use crate::error::{Error, Result};
use crate::rng::{NoiseSource, SampleRng};
use crate::schedule::Schedule;
use crate::tensor::from_rows;
use crate::variance::VarianceType;
use burn::tensor::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// The sampler families of SPEC §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    Ddpm,
    Ddim,
    Euler,
    EulerAncestral,
    Heun,
    #[serde(rename = "dpmpp-2m")]
    DpmPp2m,
}

impl SamplerKind {
    /// Every sampler, for `--help` texts and conformance suites.
    pub const ALL: [SamplerKind; 6] = [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Heun,
        SamplerKind::DpmPp2m,
    ];

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-ancestral",
            SamplerKind::Heun => "heun",
            SamplerKind::DpmPp2m => "dpmpp-2m",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                Error::config(
                    "sampler",
                    format!(
                        "unknown sampler {name:?}; expected one of {}",
                        names.join(", ")
                    ),
                )
            })
    }
}

/// EDM's stochastic churn (Karras et al. 2022, Algorithm 2) for Euler and Heun.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Churn {
    pub s_churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

/// A sampler and its options, as a user picks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// Number of denoising steps (network calls, except Heun's 2 per step).
    pub steps: usize,
    /// DDIM's eta (0 = deterministic, 1 = DDPM-like).
    pub eta: f64,
    /// Timestep spacing of discrete grids.
    pub spacing: Spacing,
    /// Karras sigmas (rho = 7) for the sigma-space samplers.
    pub karras: bool,
    /// DDPM variance.
    pub variance: VarianceType,
    /// Clipping of the predicted x_0.
    pub clip: X0Clip,
    /// Euler/Heun stochastic churn.
    pub churn: Churn,
}

impl SamplerConfig {
    /// Defaults for a sampler kind with `steps` steps.
    pub fn new(kind: SamplerKind, steps: usize) -> Self {
        SamplerConfig {
            kind,
            steps,
            eta: 0.0,
            spacing: match kind {
                SamplerKind::Ddpm | SamplerKind::Ddim => Spacing::Trailing,
                _ => Spacing::Linspace,
            },
            karras: false,
            variance: VarianceType::FixedSmall,
            clip: X0Clip::None,
            churn: Churn::default(),
        }
    }

    /// Validates the options (steps >= 1 and <= T, eta in [0, 1]).
    pub fn validate(&self, schedule: &Schedule) -> Result<()> {
        if self.steps == 0 || self.steps > schedule.len() {
            return Err(Error::config(
                "steps",
                format!("{} is outside 1..={}", self.steps, schedule.len()),
            ));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::config(
                "eta",
                format!("{} is outside [0, 1]", self.eta),
            ));
        }
        Ok(())
    }
}

/// Draws `n` samples of dimension `d`: x_T from the per-sample streams of `seed` (sample `i`
/// is sample `first_index + i` of that seed), then the configured sampler. Returns x_0.
#[allow(clippy::too_many_arguments)]
pub fn sample<D: Denoiser + ?Sized>(
    cfg: &SamplerConfig,
    denoiser: &D,
    schedule: &Schedule,
    n: usize,
    d: usize,
    device: &Device,
    dtype: DType,
    seed: u64,
    first_index: u64,
    labels: Option<&[i64]>,
    callback: Callback,
) -> Result<Tensor<2>> {
    cfg.validate(schedule)?;
    let mut rng = SampleRng::new(seed, first_index, n);
    let x_t = from_rows(rng.normal(d), n, d, device, dtype);
    let noise: &mut dyn NoiseSource = &mut rng;
    match cfg.kind {
        SamplerKind::Ddpm => {
            let ts = discrete_timesteps(cfg.spacing, schedule.len(), cfg.steps, 0);
            let grid = discrete_grid(schedule, &ts, 1.0);
            let opts = DdpmOptions {
                variance: cfg.variance,
                clip: cfg.clip,
            };
            Ok(sample_ddpm(
                denoiser, x_t, &grid, &opts, noise, labels, callback,
            ))
        }
        other => Err(Error::config(
            "sampler",
            format!("{} is not wired into the registry yet", other.name()),
        )),
    }
}
