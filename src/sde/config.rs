//! Named SDEs and SDE samplers as serde configs, so the CLI (`--sde vp|subvp|ve`,
//! `--sampler pc|em|ode`) and checkpoints' config.json stay thin: parse, build, call.

use super::solvers::{
    sample_euler_maruyama, sample_ode, sample_pc, time_grid, OdeError, OdeOptions, OdeStats,
    PcOptions,
};
use super::{ScoreFn, Sde, SubVpSde, VeSde, VpSde};
use crate::error::{Error, Result};
use crate::rng::NoiseSource;
use crate::sample::Callback;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// One of the three SDEs with its parameters (defaults: SPEC §6 and [`VeSde::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SdeConfig {
    Vp(VpSde),
    Subvp(SubVpSde),
    Ve(VeSde),
}

impl SdeConfig {
    /// `vp`, `subvp` (or `sub_vp`, `sub-vp`), `ve` with default parameters.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "vp" => Ok(SdeConfig::Vp(VpSde::default())),
            "subvp" | "sub_vp" | "sub-vp" => Ok(SdeConfig::Subvp(SubVpSde::default())),
            "ve" => Ok(SdeConfig::Ve(VeSde::default())),
            other => Err(Error::config(
                "sde",
                format!("unknown SDE {other:?} (expected vp, subvp or ve)"),
            )),
        }
    }

    /// Checks every parameter (a config.json is user input); the error names the parameter
    /// (`sde.sigma_min`, ...). sigma_min = 0, say, would make every VE quantity NaN.
    pub fn validate(&self) -> Result<()> {
        match *self {
            SdeConfig::Vp(VpSde { beta_min, beta_max })
            | SdeConfig::Subvp(SubVpSde {
                vp: VpSde { beta_min, beta_max },
            }) => VpSde::new(beta_min, beta_max).map(|_| ()),
            SdeConfig::Ve(VeSde {
                sigma_min,
                sigma_max,
            }) => VeSde::new(sigma_min, sigma_max).map(|_| ()),
        }
    }

    /// The SDE as a trait object.
    pub fn build(&self) -> Box<dyn Sde> {
        match *self {
            SdeConfig::Vp(s) => Box::new(s),
            SdeConfig::Subvp(s) => Box::new(s),
            SdeConfig::Ve(s) => Box::new(s),
        }
    }

    /// The end time samplers stop at (score_sde: 1e-3 for VP and sub-VP, 1e-5 for VE).
    pub fn sampling_eps(&self) -> f64 {
        match self {
            SdeConfig::Ve(_) => 1e-5,
            _ => 1e-3,
        }
    }
}

/// An SDE sampler with its options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SdeSampler {
    /// Euler–Maruyama with `steps` steps.
    Em { steps: usize },
    /// Predictor–corrector with `steps` predictor steps.
    Pc { steps: usize, options: PcOptions },
    /// The adaptive RK45 probability-flow ODE.
    Ode { options: OdeOptions },
}

impl SdeSampler {
    /// `em`, `pc`, `ode` with `steps` (ignored by `ode`, which uses the SPEC tolerances and
    /// stops at `eps`, the SDE's sampling eps: [`SdeConfig::sampling_eps`]).
    pub fn from_name(name: &str, steps: usize, eps: f64) -> Result<Self> {
        if steps == 0 && name != "ode" {
            return Err(Error::config("steps", "must be at least 1"));
        }
        match name {
            "em" => Ok(SdeSampler::Em { steps }),
            "pc" => Ok(SdeSampler::Pc {
                steps,
                options: PcOptions::default(),
            }),
            "ode" => Ok(SdeSampler::Ode {
                options: OdeOptions {
                    eps,
                    ..OdeOptions::default()
                },
            }),
            other => Err(Error::config(
                "sampler",
                format!("unknown SDE sampler {other:?} (expected em, pc or ode)"),
            )),
        }
    }

    /// Draws x_1 from the prior (shaped like `like`) and runs the sampler; returns the samples
    /// and the number of score calls.
    pub fn sample<F: ScoreFn + ?Sized>(
        &self,
        sde: &dyn Sde,
        eps: f64,
        score: &F,
        like: &Tensor<2>,
        noise: &mut dyn NoiseSource,
        callback: Callback,
    ) -> std::result::Result<(Tensor<2>, usize), OdeError> {
        let x1 = sde.prior_sample(like, noise);
        match *self {
            SdeSampler::Em { steps } => {
                let grid = time_grid(steps, eps);
                let x = sample_euler_maruyama(&sde, score, x1, &grid, noise, callback);
                Ok((x, steps))
            }
            SdeSampler::Pc { steps, options } => {
                let grid = time_grid(steps, eps);
                let x = sample_pc(&sde, score, x1, &grid, &options, noise, callback);
                Ok((x, steps * options.nfe_per_step()))
            }
            SdeSampler::Ode { options } => {
                let (x, OdeStats { nfe, .. }) = sample_ode(&sde, score, x1, &options)?;
                Ok((x, nfe))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sde_parameter_is_validated_by_name() {
        let vp = |beta_min, beta_max| VpSde { beta_min, beta_max };
        let ve = |sigma_min, sigma_max| VeSde {
            sigma_min,
            sigma_max,
        };
        let cases = [
            (SdeConfig::Ve(ve(0.0, 50.0)), "sde.sigma_min"),
            (SdeConfig::Ve(ve(-1.0, 50.0)), "sde.sigma_min"),
            (SdeConfig::Ve(ve(f64::NAN, 50.0)), "sde.sigma_min"),
            (SdeConfig::Ve(ve(0.01, 0.01)), "sde.sigma_max"),
            (SdeConfig::Ve(ve(0.01, f64::INFINITY)), "sde.sigma_max"),
            (SdeConfig::Vp(vp(0.0, 20.0)), "sde.beta_min"),
            (SdeConfig::Vp(vp(f64::NAN, 20.0)), "sde.beta_min"),
            (SdeConfig::Vp(vp(0.1, 0.05)), "sde.beta_max"),
            (SdeConfig::Vp(vp(0.1, f64::INFINITY)), "sde.beta_max"),
            (
                SdeConfig::Subvp(SubVpSde { vp: vp(0.0, 20.0) }),
                "sde.beta_min",
            ),
        ];
        for (cfg, want) in cases {
            match cfg.validate() {
                Err(Error::InvalidConfig { name, reason }) => {
                    assert_eq!(name, want, "{cfg:?}: {reason}")
                }
                other => panic!("{cfg:?}: expected an error naming {want}, got {other:?}"),
            }
        }
        for name in ["vp", "subvp", "ve"] {
            SdeConfig::from_name(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn names_parse_and_configs_round_trip() {
        for name in ["vp", "subvp", "ve"] {
            let c = SdeConfig::from_name(name).unwrap();
            assert_eq!(c.build().name(), name);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<SdeConfig>(&json).unwrap(), c);
        }
        assert!(SdeConfig::from_name("vpp").is_err());
        let vp = SdeConfig::from_name("vp").unwrap().sampling_eps();
        assert!(matches!(
            SdeSampler::from_name("pc", 10, vp).unwrap(),
            SdeSampler::Pc { steps: 10, .. }
        ));
        assert!(SdeSampler::from_name("heun", 10, vp).is_err());
        assert!(SdeSampler::from_name("em", 0, vp).is_err());
    }
}
