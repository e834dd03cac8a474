//! Opening a trained run for sampling and evaluation.

use anyhow::Context;
use burn::tensor::Device;
use diffuse::denoiser::{NetworkDenoiser, Parameterization};
use diffuse::nn::Mlp;
use diffuse::schedule::Schedule;
use diffuse::train::checkpoint::{load_config, load_model};
use diffuse::train::RunConfig;
use std::path::Path;

/// A trained run, ready to sample.
pub struct Run {
    pub config: RunConfig,
    pub schedule: Schedule,
    pub denoiser: NetworkDenoiser<Mlp>,
    pub step: u64,
}

/// Loads `dir`'s config and EMA weights (or the raw weights with `raw`).
pub fn open(dir: &Path, raw: bool, device: &Device) -> anyhow::Result<Run> {
    let config = load_config(dir)?;
    let schedule = config
        .schedule
        .build()
        .with_context(|| format!("{}: schedule", dir.join("config.json").display()))?;
    let (ema, raw_params, step) = load_model(dir, &config)?;
    let params = if raw { raw_params } else { ema };
    let denoiser = NetworkDenoiser {
        net: params.to_module(device),
        parameterization: Parameterization::Discrete {
            prediction: config.prediction,
            learned_variance: false,
        },
    };
    Ok(Run {
        config,
        schedule,
        denoiser,
        step,
    })
}

/// A sampler configuration from command-line names.
pub fn sampler_config(
    name: &str,
    steps: usize,
    eta: f64,
) -> anyhow::Result<diffuse::sample::registry::SamplerConfig> {
    let kind = diffuse::sample::registry::SamplerKind::from_name(name)?;
    let mut cfg = diffuse::sample::registry::SamplerConfig::new(kind, steps);
    cfg.eta = eta;
    Ok(cfg)
}
