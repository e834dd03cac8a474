//! Picking a sampler by name and options (CLI / config), building its grid and start state,
//! and running it: the one entry point `diffuse sample` and `diffuse eval` use.

use super::ddim::{sample_ddim, DdimOptions};
use super::ddpm::{sample_ddpm, DdpmOptions};
use super::dpm_solver::sample_dpmpp_2m;
use super::grid::{
    discrete_grid, discrete_timesteps, dpm_solver_grid, sigma_space_grid, Spacing, TimeOfSigma,
};
pub use super::karras::Churn;
use super::karras::{sample_euler, sample_euler_ancestral, sample_heun};
use super::{Callback, ClippedX0, X0Clip};
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

/// A sampler and its options, as a user picks them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// Number of denoising steps (network calls, except Heun's 2 per step).
    pub steps: usize,
    /// DDIM's eta (0 = deterministic, 1 = DDPM-like); Euler ancestral's (1 = full ancestral).
    pub eta: f64,
    /// Timestep spacing of discrete grids.
    pub spacing: Spacing,
    /// Karras sigmas (rho = 7) for the sigma-space samplers.
    pub karras: bool,
    /// DDPM variance.
    pub variance: VarianceType,
    /// Clipping of the predicted x_0 (DDPM and DDIM clip in the step; the other samplers see
    /// a [`ClippedX0`] denoiser).
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
            eta: if kind == SamplerKind::EulerAncestral {
                1.0
            } else {
                0.0
            },
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

    /// Denoiser calls of one run (Heun: 2 per step but 1 on the last, which goes to sigma = 0).
    pub fn nfe(&self) -> usize {
        match self.kind {
            SamplerKind::Heun => 2 * self.steps - 1,
            _ => self.steps,
        }
    }

    /// Validates the options (steps >= 1 and <= T, eta in [0, 1], the clip, churn parameters).
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
        self.clip.validate()?;
        let c = &self.churn;
        if !(c.s_churn >= 0.0 && c.s_noise >= 0.0 && c.s_tmin <= c.s_tmax) {
            return Err(Error::config(
                "churn",
                format!("{c:?}: need s_churn >= 0, s_noise >= 0 and s_tmin <= s_tmax"),
            ));
        }
        Ok(())
    }
}

/// The option keys of the compact form, and which samplers take each.
const OPTION_KEYS: [(&str, &[SamplerKind]); 10] = {
    use SamplerKind::*;
    [
        ("steps", &[Ddpm, Ddim, Euler, EulerAncestral, Heun, DpmPp2m]),
        (
            "spacing",
            &[Ddpm, Ddim, Euler, EulerAncestral, Heun, DpmPp2m],
        ),
        ("eta", &[Ddim, EulerAncestral]),
        ("karras", &[Euler, EulerAncestral, Heun, DpmPp2m]),
        ("variance", &[Ddpm]),
        ("clip", &[Ddpm, Ddim, Euler, EulerAncestral, Heun, DpmPp2m]),
        ("s_churn", &[Euler, Heun]),
        ("s_tmin", &[Euler, Heun]),
        ("s_tmax", &[Euler, Heun]),
        ("s_noise", &[Euler, Heun]),
    ]
};

fn parse_f64(key: &'static str, value: &str) -> Result<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| !v.is_nan())
        .ok_or_else(|| Error::config(key, format!("{value:?} is not a number")))
}

impl SamplerConfig {
    /// Parses the compact form `name[:key=value,...]`, e.g. `ddim:eta=0.5,spacing=trailing` or
    /// `heun:karras=true,s_churn=40`. Keys: `steps`, `spacing` (linspace / leading / trailing),
    /// `eta`, `karras` (true / false), `variance` (fixed_small / fixed_large / learned_range),
    /// `clip` (none, a range such as 1, or `dynamic`), `s_churn`, `s_tmin`, `s_tmax`, `s_noise`.
    /// `steps` is the step count unless the string sets it. A key the sampler does not take is
    /// an error, as is an unknown key or value.
    pub fn parse(spec: &str, steps: usize) -> Result<Self> {
        Self::parse_with_flags(spec, steps, &[])
    }

    /// [`Self::parse`], then command-line flags given apart from the spec (`--eta 0.5`,
    /// `--spacing leading`) as the options of the same name. A flag is never dropped: one the
    /// sampler does not take, or one the spec already sets, is an error naming the flag.
    pub fn parse_with_flags(spec: &str, steps: usize, flags: &[(&str, &str)]) -> Result<Self> {
        let (name, opts) = match spec.split_once(':') {
            Some((n, o)) => (n.trim(), o),
            None => (spec.trim(), ""),
        };
        let kind = SamplerKind::from_name(name)?;
        let mut cfg = SamplerConfig::new(kind, steps);
        let mut set_by_spec = Vec::new();
        for pair in opts.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                Error::config("sampler", format!("{pair:?} is not of the form key=value"))
            })?;
            let (key, value) = (key.trim(), value.trim());
            cfg.set(key, value)?;
            set_by_spec.push((key, value));
        }
        for &(key, value) in flags {
            if let Some((_, spec_value)) = set_by_spec.iter().find(|(k, _)| *k == key) {
                return Err(Error::config(
                    "sampler",
                    format!(
                        "--{key} {value} conflicts with {key}={spec_value} in --sampler {spec:?}; \
                         give it once"
                    ),
                ));
            }
            cfg.set(key, value)
                .map_err(|e| Error::config("sampler", format!("--{key} {value}: {e}")))?;
        }
        Ok(cfg)
    }

    /// Sets one option of the compact form (see [`Self::parse`]).
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let kind = self.kind;
        let Some(&(key, takers)) = OPTION_KEYS.iter().find(|(k, _)| *k == key) else {
            let keys: Vec<&str> = OPTION_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(Error::config(
                "sampler",
                format!(
                    "unknown option {key:?}; expected one of {}",
                    keys.join(", ")
                ),
            ));
        };
        if !takers.contains(&kind) {
            return Err(Error::config(
                "sampler",
                format!("{} does not take the option {key:?}", kind.name()),
            ));
        }
        let cfg = self;
        match key {
            "steps" => {
                cfg.steps = value
                    .parse()
                    .map_err(|_| Error::config("steps", format!("{value:?} is not a step count")))?
            }
            "spacing" => {
                cfg.spacing = Spacing::from_name(value).ok_or_else(|| {
                    Error::config(
                        "spacing",
                        format!("{value:?}; expected linspace, leading or trailing"),
                    )
                })?
            }
            "eta" => cfg.eta = parse_f64("eta", value)?,
            "karras" => {
                cfg.karras = value.parse().map_err(|_| {
                    Error::config("karras", format!("{value:?}; expected true or false"))
                })?
            }
            "variance" => {
                cfg.variance = match value {
                    "fixed_small" => VarianceType::FixedSmall,
                    "fixed_large" => VarianceType::FixedLarge,
                    "learned_range" => VarianceType::LearnedRange,
                    "learned" => VarianceType::Learned,
                    _ => {
                        return Err(Error::config(
                            "variance",
                            format!(
                        "{value:?}; expected fixed_small, fixed_large, learned_range or learned"
                    ),
                        ))
                    }
                }
            }
            "clip" => {
                cfg.clip = match value {
                    "none" => X0Clip::None,
                    "dynamic" => X0Clip::Dynamic {
                        ratio: 0.995,
                        max_value: 1.0,
                    },
                    v => X0Clip::Clip {
                        range: parse_f64("clip", v)?,
                    },
                }
            }
            "s_churn" => cfg.churn.s_churn = parse_f64("s_churn", value)?,
            "s_tmin" => cfg.churn.s_tmin = parse_f64("s_tmin", value)?,
            "s_tmax" => cfg.churn.s_tmax = parse_f64("s_tmax", value)?,
            _ => cfg.churn.s_noise = parse_f64("s_noise", value)?,
        }
        Ok(())
    }
}

/// Runs the configured sampler from `x_t`, a draw of x_T ~ N(0, I) in VP scaling (the
/// sigma-space samplers start from the VE state x_t * sqrt(1 + sigma_max^2)). `noise` feeds
/// the stochastic samplers. Returns x_0.
pub fn run<D: Denoiser + ?Sized>(
    cfg: &SamplerConfig,
    denoiser: &D,
    schedule: &Schedule,
    x_t: Tensor<2>,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    callback: Callback,
) -> Result<Tensor<2>> {
    cfg.validate(schedule)?;
    let t_len = schedule.len();
    let x = match cfg.kind {
        SamplerKind::Ddpm | SamplerKind::Ddim => {
            let ts = discrete_timesteps(cfg.spacing, t_len, cfg.steps, 0);
            let grid = discrete_grid(schedule, &ts, 1.0);
            if cfg.kind == SamplerKind::Ddpm {
                let opts = DdpmOptions {
                    variance: cfg.variance,
                    clip: cfg.clip,
                };
                sample_ddpm(denoiser, x_t, &grid, &opts, noise, labels, callback)?
            } else {
                let opts = DdimOptions {
                    eta: cfg.eta,
                    clip: cfg.clip,
                };
                sample_ddim(denoiser, x_t, &grid, &opts, noise, labels, callback)
            }
        }
        SamplerKind::Euler | SamplerKind::EulerAncestral | SamplerKind::Heun => {
            let denoiser = &ClippedX0 {
                inner: denoiser,
                clip: cfg.clip,
            };
            let grid = sigma_space_grid(schedule, cfg.spacing, cfg.steps, 0, cfg.karras);
            let time = TimeOfSigma::index(schedule);
            let x = x_t.mul_scalar(grid[0].sigma.hypot(1.0));
            let churn = &cfg.churn;
            match cfg.kind {
                SamplerKind::Euler => {
                    sample_euler(denoiser, x, &grid, churn, &time, noise, labels, callback)
                }
                SamplerKind::Heun => {
                    sample_heun(denoiser, x, &grid, churn, &time, noise, labels, callback)
                }
                _ => sample_euler_ancestral(denoiser, x, &grid, cfg.eta, noise, labels, callback),
            }
        }
        SamplerKind::DpmPp2m => {
            let denoiser = &ClippedX0 {
                inner: denoiser,
                clip: cfg.clip,
            };
            let grid = dpm_solver_grid(schedule, cfg.spacing, cfg.steps, 0, cfg.karras);
            sample_dpmpp_2m(denoiser, x_t, &grid, labels, callback)
        }
    };
    Ok(x)
}

/// Draws `n` samples of dimension `d`: x_T from the per-sample streams of `seed` (sample `i`
/// is sample `first_index + i` of that seed, and its later noise comes from the same stream),
/// then the configured sampler. Returns x_0.
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
    run(cfg, denoiser, schedule, x_t, &mut rng, labels, callback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_form_parses_and_rejects_clearly() {
        let c = SamplerConfig::parse("ddim:eta=0.5,spacing=leading", 20).unwrap();
        assert_eq!(
            (c.kind, c.eta, c.spacing, c.steps),
            (SamplerKind::Ddim, 0.5, Spacing::Leading, 20)
        );
        let c = SamplerConfig::parse("heun: karras=true, s_churn=40, steps=18", 50).unwrap();
        assert!(c.karras && c.churn.s_churn == 40.0 && c.steps == 18);
        let c = SamplerConfig::parse("dpmpp-2m", 20).unwrap();
        assert_eq!(c, SamplerConfig::new(SamplerKind::DpmPp2m, 20));
        let c = SamplerConfig::parse("ddpm:variance=fixed_large,clip=1", 10).unwrap();
        assert_eq!(c.clip, X0Clip::Clip { range: 1.0 });
        for (bad, needle) in [
            ("dpm", "unknown sampler"),
            ("ddim:eta", "key=value"),
            ("ddim:etaa=1", "unknown option"),
            ("ddpm:eta=0.5", "does not take"),
            ("ddim:eta=x", "not a number"),
            ("euler:spacing=even", "expected linspace"),
            ("heun:karras=yes", "true or false"),
        ] {
            let err = SamplerConfig::parse(bad, 10).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let s = crate::schedule::ScheduleConfig::default().build().unwrap();
        assert!(SamplerConfig::parse("ddim:eta=1.5", 10)
            .unwrap()
            .validate(&s)
            .is_err());
        assert!(SamplerConfig::parse("ddim:steps=0", 10)
            .unwrap()
            .validate(&s)
            .is_err());
    }

    #[test]
    fn bad_sampler_inputs_are_errors_naming_the_value() {
        // Issue 12, bug 4: learned_range on a model without a variance output (the oracle has
        // none) and a negative clip range must be errors that name the value, not panics.
        let s = crate::schedule::ScheduleConfig::default().build().unwrap();
        let gm = crate::oracle::GaussianMixture::toy_2d();
        let run = |spec: &str| {
            let cfg = SamplerConfig::parse(spec, 4)?;
            let dev = crate::device::cpu();
            sample(&cfg, &gm, &s, 2, 2, &dev, DType::F64, 0, 0, None, None)
        };
        for (spec, needles) in [
            (
                "ddpm:variance=learned_range",
                &["learned_range", "variance output"][..],
            ),
            ("ddpm:variance=learned", &["learned", "variance output"]),
            ("ddim:clip=-1", &["clip", "-1"]),
            ("euler:clip=-0.5", &["clip", "-0.5"]),
        ] {
            let err = run(spec).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(needle), "{spec}: {err}");
            }
        }
        let dynamic = X0Clip::Dynamic {
            ratio: 1.5,
            max_value: 1.0,
        };
        let err = dynamic.validate().unwrap_err().to_string();
        assert!(err.contains("1.5"), "{err}");
    }

    #[test]
    fn flags_beside_the_compact_form_are_applied_or_refused_by_name() {
        // Issue 12, bug 4: `--eta` was dropped when --sampler used the compact form.
        let c = SamplerConfig::parse_with_flags("ddim:spacing=leading", 10, &[("eta", "0.5")]);
        assert_eq!(c.unwrap().eta, 0.5);
        let c = SamplerConfig::parse_with_flags("ddim", 10, &[("spacing", "leading")]).unwrap();
        assert_eq!(c.spacing, Spacing::Leading);
        // No flag: the sampler's default (euler-ancestral's eta is 1).
        let c = SamplerConfig::parse_with_flags("euler-ancestral", 10, &[]).unwrap();
        assert_eq!(c.eta, 1.0);
        for (spec, flag, needles) in [
            (
                "ddim:eta=0.3",
                ("eta", "0.5"),
                &["--eta 0.5", "eta=0.3"][..],
            ),
            ("ddpm", ("eta", "0.5"), &["--eta 0.5", "does not take"]),
            ("ddim", ("eta", "x"), &["--eta x", "not a number"]),
        ] {
            let err = SamplerConfig::parse_with_flags(spec, 10, &[flag])
                .unwrap_err()
                .to_string();
            for needle in needles {
                assert!(err.contains(needle), "{spec} {flag:?}: {err}");
            }
        }
    }

    #[test]
    fn sampler_configs_round_trip_through_json() {
        // The default churn has s_tmax = +inf, which JSON cannot hold as a number.
        for kind in SamplerKind::ALL {
            let cfg = SamplerConfig::new(kind, 12);
            let json = serde_json::to_string(&cfg).unwrap();
            let back: SamplerConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg, "{json}");
        }
    }
}
