//! Sigma grids as diffusers' sigma-space schedulers (Euler, Heun) and DPM-Solver build them
//! from their configs (SPEC §5): which timesteps, how the n sigmas are placed between the ends
//! of the training table, what the last sigma is, and which timestep value the network sees.
//!
//! Symbols: `sigma(t)` is the schedule's VE noise table at code index t (a zero-terminal-SNR
//! table is first made finite, [`finite_sigma_schedule`]), `n` the number of inference steps,
//! `sigma_max` / `sigma_min` the ends a conversion spans, `lambda = -ln sigma` the half log-SNR.

use super::grid::{finite_sigma_schedule, round_half_even, timesteps, Spacing};
use crate::denoiser::NoiseLevel;
use crate::schedule::{karras_sigmas, linspace, sigma_to_t_in, Schedule};
use serde::{Deserialize, Serialize};

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

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms: about 1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let sum: f64 = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function I_x(a, b), the CDF of Beta(a, b), by its continued
/// fraction (modified Lentz), on the side of x where it converges fast.
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_cdf(1.0 - x, b, a);
    }
    let ln_front = a * x.ln() + b * (-x).ln_1p() - ln_gamma(a) - ln_gamma(b) + ln_gamma(a + b);
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < tiny { tiny } else { d };
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            d = 1.0 / if d.abs() < tiny { tiny } else { d };
            c = 1.0 + numerator / c;
            c = if c.abs() < tiny { tiny } else { c };
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-16 {
            break;
        }
    }
    ln_front.exp() * f / a
}

/// The quantile function of Beta(a, b): the x in [0, 1] with I_x(a, b) = p, by bisection to
/// the resolution of f64 (I_x is increasing).
pub fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_cdf(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
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

/// DPM-Solver's integer timesteps below `last_timestep` (T unless lambda is clipped):
/// linspace takes `linspace(0, last - 1, n + 1).round()[::-1][:-1]`, leading steps by
/// `last // (n + 1)` (plus `steps_offset`), trailing `arange(last, 0, -T/n).round() - 1` (which
/// has fewer than n entries when last < T).
pub fn dpm_solver_timesteps_below(
    spacing: Spacing,
    num_train: usize,
    last_timestep: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<usize> {
    match spacing {
        Spacing::Linspace => {
            let mut t: Vec<usize> = linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .map(|t| round_half_even(t) as usize)
                .collect();
            t.reverse();
            t.pop();
            t
        }
        Spacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n).rev().map(|i| i * ratio + steps_offset).collect()
        }
        Spacing::Trailing => {
            let step = num_train as f64 / n as f64;
            let len = (last_timestep as f64 / step).ceil() as usize;
            (0..len)
                .map(|k| (round_half_even(last_timestep as f64 - k as f64 * step) - 1.0) as usize)
                .collect()
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

#[cfg(test)]
mod tests;
