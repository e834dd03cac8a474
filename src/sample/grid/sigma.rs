//! Sigma grids as diffusers' sigma-space schedulers (Euler, Heun) and DPM-Solver build them
//! from their configs (SPEC §5): which timesteps, how the n sigmas are placed between the ends
//! of the training table, what the last sigma is, and which timestep value the network sees.
//!
//! Symbols: `sigma(t)` is the schedule's VE noise table at code index t (a zero-terminal-SNR
//! table is first made finite, [`finite_sigma_schedule`]), `n` the number of inference steps,
//! `sigma_max` / `sigma_min` the ends a conversion spans, `lambda = -ln sigma` the half log-SNR.

use super::timesteps::{dpm_solver_timesteps_below, round_half_even, timesteps, Spacing};
use crate::denoiser::NoiseLevel;
use crate::schedule::{karras_sigmas, linspace, sigma_to_t_in, Schedule};
use crate::special::beta_ppf;
use serde::{Deserialize, Serialize};

/// alpha_bar that diffusers' sigma-space and DPM-Solver schedulers put in place of a zero
/// terminal alpha_bar (`2**-24`, the smallest positive float16), so that sigma_max is finite
/// (about 4096) instead of +inf.
pub const ZERO_SNR_ALPHA_BAR: f64 = 1.0 / 16_777_216.0;

/// The schedule as the sigma-space samplers see it: a zero-terminal-SNR last step (sigma = +inf,
/// where x = x_t / a is undefined) is moved to alpha_bar = [`ZERO_SNR_ALPHA_BAR`], as diffusers'
/// Euler, Heun and DPM-Solver schedulers do. Every table is rebuilt from that alpha_bar
/// ([`Schedule::with_last_alpha_bar`]; the rescaled alpha_bar just below is smaller still, so
/// the last beta is negative). Other schedules are returned unchanged.
pub fn finite_sigma_schedule(schedule: &Schedule) -> Schedule {
    if schedule.sigma[schedule.len() - 1].is_finite() {
        schedule.clone()
    } else {
        schedule.with_last_alpha_bar(ZERO_SNR_ALPHA_BAR)
    }
}

/// How the sigmas are first read off the table (diffusers' Euler `interpolation_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// sigma interpolated linearly in the table at the spacing's (fractional) timesteps.
    #[default]
    Linear,
    /// n + 1 sigmas log-linear from sigma(T-1) down to sigma(0), whatever the spacing. The
    /// network still sees the spacing's timesteps, and without a conversion the grid ends at
    /// the last of those n + 1 sigmas, sigma(0) (diffusers' `log_linear`).
    LogLinear,
}

/// A re-placement of the n sigmas between sigma_max and sigma_min.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigmaConversion {
    /// Keep the interpolated sigmas.
    #[default]
    None,
    /// Karras et al. (2022), rho = 7.
    Karras,
    /// exp(linspace(ln sigma_max, ln sigma_min, n)): uniform in lambda (diffusers' exponential
    /// sigmas, and DPM-Solver's `use_lu_lambdas`, which places the same points).
    Exponential,
    /// sigma_i = sigma_min + F^{-1}(1 - i/(n-1)) (sigma_max - sigma_min) with F the CDF of
    /// Beta(alpha, beta) (Lee et al. 2024; diffusers' `use_beta_sigmas`, alpha = beta = 0.6).
    Beta { alpha: f64, beta: f64 },
}

impl SigmaConversion {
    /// Karras sigmas when `karras`, else the interpolated ones (the CLI's on/off option).
    pub fn karras_if(karras: bool) -> Self {
        if karras {
            SigmaConversion::Karras
        } else {
            SigmaConversion::None
        }
    }

    /// The n converted sigmas from `sigma_max` down to `sigma_min` (`None` gives none).
    pub fn sigmas(self, sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
        match self {
            SigmaConversion::None => Vec::new(),
            SigmaConversion::Karras => karras_sigmas(sigma_min, sigma_max, n, 7.0),
            SigmaConversion::Exponential => linspace(sigma_max.ln(), sigma_min.ln(), n)
                .into_iter()
                .map(f64::exp)
                .collect(),
            SigmaConversion::Beta { alpha, beta } => linspace(0.0, 1.0, n)
                .into_iter()
                .map(|u| sigma_min + beta_ppf(1.0 - u, alpha, beta) * (sigma_max - sigma_min))
                .collect(),
        }
    }
}

/// The last sigma of a grid (diffusers' `final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigma {
    /// Clean data, sigma = 0.
    #[default]
    Zero,
    /// sigma(0), the smallest sigma of the training table.
    SigmaMin,
}

/// The timestep value a network is given at a converted sigma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelTime {
    /// The fractional table index of sigma, by log-sigma interpolation ([`Schedule::sigma_to_t`]).
    #[default]
    Index,
    /// That index rounded half to even (DPM-Solver with Karras sigmas or Lu lambdas).
    RoundedIndex,
    /// That index truncated to an integer (DPM-Solver's integer cast of unrounded indices).
    TruncatedIndex,
    /// ln(sigma) / 4 at every level (Euler's `timestep_type = continuous`, v-prediction).
    LogSigma,
}

impl ModelTime {
    /// The time input at `sigma`, timesteps recovered from `log_sigmas`
    /// ([`recovery_log_sigmas`]).
    pub fn of(self, log_sigmas: &[f64], sigma: f64) -> f64 {
        match self {
            ModelTime::Index => sigma_to_t_in(log_sigmas, sigma),
            ModelTime::RoundedIndex => round_half_even(sigma_to_t_in(log_sigmas, sigma)),
            ModelTime::TruncatedIndex => sigma_to_t_in(log_sigmas, sigma).trunc(),
            ModelTime::LogSigma => 0.25 * sigma.ln(),
        }
    }
}

/// The log-sigma table timesteps are recovered from: ln sigma(t) of the finite table, except
/// at a zero-terminal-SNR level made finite (alpha_bar = 2^-24). There diffusers' float32
/// tables hold sigma = 4096 exactly and log-sigma = ln 4096 rounded to float32, which is above
/// the log of a sigma_max query; and the rescaled table is not monotonic at the top (alpha_bar
/// of the steps just below is smaller than 2^-24). So sigma_max maps to where the table first
/// crosses it on its way up (about t = 995 for T = 1000), not to T - 1; this table reproduces
/// that.
pub fn recovery_log_sigmas(schedule: &Schedule) -> Vec<f64> {
    let s = finite_sigma_schedule(schedule);
    let mut logs: Vec<f64> = s.sigma.iter().map(|v| v.ln()).collect();
    let last = logs.len() - 1;
    if !schedule.sigma[last].is_finite() {
        logs[last] = f64::from(4096f64.ln() as f32);
    }
    logs
}

/// The network's time input at any sigma of a schedule, by one [`ModelTime`] rule: how a
/// sigma-space sampler times a level that is not on its grid (EDM churn's sigma_hat) the way
/// the grid builders time recovered levels.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeOfSigma {
    model_time: ModelTime,
    log_sigmas: Vec<f64>,
}

impl TimeOfSigma {
    /// `model_time` on the schedule's [`recovery_log_sigmas`].
    pub fn new(schedule: &Schedule, model_time: ModelTime) -> Self {
        TimeOfSigma {
            model_time,
            log_sigmas: recovery_log_sigmas(schedule),
        }
    }

    /// The fractional table index of sigma ([`ModelTime::Index`]), as [`euler_grid`] times
    /// Karras levels.
    pub fn index(schedule: &Schedule) -> Self {
        Self::new(schedule, ModelTime::Index)
    }

    /// The time input at `sigma`.
    pub fn t(&self, sigma: f64) -> f64 {
        self.model_time.of(&self.log_sigmas, sigma)
    }
}

/// The options of diffusers' `EulerDiscreteScheduler.set_timesteps` (Heun uses the subset
/// without `interpolation`, `sigma_min`, `sigma_max`, `final_sigma` and `model_time`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SigmaGridOptions {
    pub spacing: Spacing,
    /// Shifts `leading` timesteps.
    pub steps_offset: usize,
    pub interpolation: Interpolation,
    pub conversion: SigmaConversion,
    /// Overrides of the conversion's ends (default: the first and last interpolated sigma).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigma: FinalSigma,
    pub model_time: ModelTime,
}

/// The final level: `sigma` with the timestep a network would see there (-1 for clean data).
fn final_level(log_sigmas: &[f64], sigma: f64) -> NoiseLevel {
    if sigma == 0.0 {
        NoiseLevel::clean()
    } else {
        NoiseLevel {
            sigma,
            t: sigma_to_t_in(log_sigmas, sigma),
        }
    }
}

fn final_sigma(schedule: &Schedule, kind: FinalSigma) -> f64 {
    match kind {
        FinalSigma::Zero => 0.0,
        FinalSigma::SigmaMin => schedule.sigma[0],
    }
}

/// The grid of the sigma-space samplers for `n` steps (n + 1 levels):
/// 1. timesteps of the spacing (fractional for linspace);
/// 2. sigmas: interpolated at them, or log-linear over the table ([`Interpolation`]);
/// 3. optionally re-placed between sigma_max and sigma_min ([`SigmaConversion`]; the overrides
///    win over the interpolated ends), each timestep then recovered from its sigma;
/// 4. the final sigma ([`FinalSigma`]; after an unconverted log-linear placement, its own last
///    sigma).
pub fn euler_grid(schedule: &Schedule, n: usize, options: &SigmaGridOptions) -> Vec<NoiseLevel> {
    let s = finite_sigma_schedule(schedule);
    let logs = recovery_log_sigmas(schedule);
    let big_t = s.len();
    let ts = timesteps(options.spacing, big_t, n, options.steps_offset);
    let placed: Vec<f64> = match options.interpolation {
        Interpolation::Linear => ts.iter().map(|&t| s.sigma_at(t)).collect(),
        Interpolation::LogLinear => linspace(s.sigma[big_t - 1].ln(), s.sigma[0].ln(), n + 1)
            .into_iter()
            .map(f64::exp)
            .collect(),
    };
    let (mut grid, end) = if options.conversion == SigmaConversion::None {
        if options.model_time == ModelTime::LogSigma {
            // Continuous timesteps are ln(sigma)/4 of every placed sigma: after a log-linear
            // placement diffusers then runs n + 1 steps, the last to the final sigma.
            let levels = placed.iter().map(|&sigma| NoiseLevel { sigma, t: 0.0 });
            (levels.collect(), None)
        } else {
            let levels: Vec<NoiseLevel> = placed
                .iter()
                .zip(&ts)
                .map(|(&sigma, &t)| NoiseLevel { sigma, t })
                .collect();
            let end = (placed.len() > ts.len()).then(|| placed[ts.len()]);
            (levels, end)
        }
    } else {
        let sigma_max = options.sigma_max.unwrap_or(placed[0]);
        let sigma_min = options.sigma_min.unwrap_or(placed[placed.len() - 1]);
        let time = match options.model_time {
            ModelTime::LogSigma => ModelTime::Index,
            other => other,
        };
        let levels = options
            .conversion
            .sigmas(sigma_min, sigma_max, n)
            .into_iter()
            .map(|sigma| NoiseLevel {
                sigma,
                t: time.of(&logs, sigma),
            })
            .collect();
        (levels, None)
    };
    if options.model_time == ModelTime::LogSigma {
        for level in &mut grid {
            level.t = ModelTime::LogSigma.of(&logs, level.sigma);
        }
    }
    let last = end.unwrap_or_else(|| final_sigma(&s, options.final_sigma));
    grid.push(final_level(&logs, last));
    grid
}

/// The largest sigma of a grid: diffusers' `init_noise_sigma` is it for linspace and trailing
/// spacing and sqrt(sigma_max^2 + 1) for leading (the VE start state is `noise * init`).
pub fn init_noise_sigma(grid: &[NoiseLevel], spacing: Spacing) -> f64 {
    let sigma_max = grid.iter().map(|l| l.sigma).fold(0.0, f64::max);
    match spacing {
        Spacing::Leading => sigma_max.hypot(1.0),
        _ => sigma_max,
    }
}

/// A sigma-space grid at (possibly fractional) timesteps: sigma interpolated linearly in the
/// schedule's sigma table (diffusers' Euler/Heun), ending at sigma = 0.
pub fn interpolated_sigma_grid(schedule: &Schedule, timesteps: &[f64]) -> Vec<NoiseLevel> {
    let mut g: Vec<NoiseLevel> = timesteps
        .iter()
        .map(|&t| NoiseLevel {
            sigma: schedule.sigma_at(t),
            t,
        })
        .collect();
    g.push(NoiseLevel::clean());
    g
}

/// Karras sigmas (rho = `rho`, n values from sigma_max to sigma_min) with the fractional
/// timestep of each recovered by log-sigma interpolation, ending at sigma = 0. `round_t`
/// rounds those timesteps for models that only take integer steps (diffusers' DPM-Solver).
pub fn karras_grid(
    schedule: &Schedule,
    sigma_min: f64,
    sigma_max: f64,
    n: usize,
    rho: f64,
    round_t: bool,
) -> Vec<NoiseLevel> {
    let mut g: Vec<NoiseLevel> = karras_sigmas(sigma_min, sigma_max, n, rho)
        .into_iter()
        .map(|sigma| {
            let t = schedule.sigma_to_t(sigma);
            NoiseLevel {
                sigma,
                t: if round_t { round_half_even(t) } else { t },
            }
        })
        .collect();
    g.push(NoiseLevel::clean());
    g
}

/// The sigma grid of the sigma-space samplers (Euler, Heun, Euler ancestral), as diffusers'
/// `EulerDiscreteScheduler.set_timesteps(n)` with its default options: fractional
/// `timesteps(spacing)`, sigmas interpolated in the schedule's sigma table, optionally replaced
/// by Karras sigmas (rho = 7) between the first and last interpolated sigma with
/// log-sigma-interpolated timesteps; then sigma = 0. A zero-terminal-SNR schedule is first made
/// finite ([`finite_sigma_schedule`]). Every other option: [`euler_grid`].
pub fn sigma_space_grid(
    schedule: &Schedule,
    spacing: Spacing,
    n: usize,
    steps_offset: usize,
    karras: bool,
) -> Vec<NoiseLevel> {
    let options = SigmaGridOptions {
        spacing,
        steps_offset,
        conversion: SigmaConversion::karras_if(karras),
        ..SigmaGridOptions::default()
    };
    euler_grid(schedule, n, &options)
}

/// The options of diffusers' `DPMSolverMultistepScheduler.set_timesteps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmGridOptions {
    pub spacing: Spacing,
    /// Shifts `leading` timesteps.
    pub steps_offset: usize,
    /// Conversions span the whole table, sigma(T-1) down to sigma(0).
    pub conversion: SigmaConversion,
    /// Integer timesteps of converted sigmas: [`ModelTime::RoundedIndex`] or
    /// [`ModelTime::TruncatedIndex`].
    pub model_time: ModelTime,
    pub final_sigma: FinalSigma,
    /// Timesteps whose lambda is below this are left out of the spacing (diffusers clips the
    /// top of cosine schedules this way); -inf keeps all.
    pub lambda_min_clipped: f64,
}

impl Default for DpmGridOptions {
    fn default() -> Self {
        DpmGridOptions {
            spacing: Spacing::Linspace,
            steps_offset: 0,
            conversion: SigmaConversion::None,
            model_time: ModelTime::RoundedIndex,
            final_sigma: FinalSigma::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
        }
    }
}

/// DPM-Solver's grid (VP space) for `n` requested steps: the table's levels at
/// [`dpm_solver_timesteps_below`] the lambda clip, or n converted sigmas over the whole table
/// with integer timesteps ([`DpmGridOptions::model_time`]); then the final sigma.
pub fn dpm_grid(schedule: &Schedule, n: usize, options: &DpmGridOptions) -> Vec<NoiseLevel> {
    let s = finite_sigma_schedule(schedule);
    let logs = recovery_log_sigmas(schedule);
    let big_t = s.len();
    let mut grid: Vec<NoiseLevel> = if options.conversion == SigmaConversion::None {
        // diffusers' searchsorted on the ascending lambdas: how many are below the clip.
        let clipped = s
            .sigma
            .iter()
            .filter(|sigma| -sigma.ln() < options.lambda_min_clipped)
            .count();
        dpm_solver_timesteps_below(
            options.spacing,
            big_t,
            big_t - clipped,
            n,
            options.steps_offset,
        )
        .into_iter()
        .map(|i| NoiseLevel::discrete(&s, i))
        .collect()
    } else {
        options
            .conversion
            .sigmas(s.sigma[0], s.sigma[big_t - 1], n)
            .into_iter()
            .map(|sigma| NoiseLevel {
                sigma,
                t: options.model_time.of(&logs, sigma),
            })
            .collect()
    };
    grid.push(final_level(&logs, final_sigma(&s, options.final_sigma)));
    grid
}

/// DPM-Solver's grid (VP space) with diffusers' default options: the schedule's levels at
/// [`dpm_solver_timesteps`], or Karras sigmas (rho = 7) between the smallest and largest sigma
/// of the whole training table with rounded recovered timesteps; then sigma = 0. As in
/// diffusers, a zero-terminal-SNR table is made finite first ([`finite_sigma_schedule`]); the
/// solver itself also accepts sigma = +inf. Every other option: [`dpm_grid`].
pub fn dpm_solver_grid(
    schedule: &Schedule,
    spacing: Spacing,
    n: usize,
    steps_offset: usize,
    karras: bool,
) -> Vec<NoiseLevel> {
    let options = DpmGridOptions {
        spacing,
        steps_offset,
        conversion: SigmaConversion::karras_if(karras),
        ..DpmGridOptions::default()
    };
    dpm_grid(schedule, n, &options)
}

#[cfg(test)]
mod tests;
