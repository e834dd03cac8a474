//! Beta schedules and their float64 tables (SPEC §1), plus Karras sigma grids (SPEC §5).
//!
//! Symbols (code index `i` is math step `t = i + 1`, see the crate docs):
//! - `beta[i]` = beta_t, `alpha[i]` = alpha_t = 1 - beta_t
//! - `alpha_bar[i]` = prod_{s <= t} alpha_s; `alpha_bar_prev(i)` = alpha_bar_{t-1} (1 at i = 0)
//! - `sigma[i]` = sqrt((1 - alpha_bar_t) / alpha_bar_t), the VE noise scale of step t
//! - `snr[i]` = alpha_bar_t / (1 - alpha_bar_t), `log_snr[i]` = ln snr
//! - `posterior_variance[i]` = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
//!
//! Every table is computed once, in float64; casting happens at the tensor edge.

use crate::variance::{clipped_log_posterior_variance, VarianceRange};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use thiserror::Error;

/// Why a schedule is invalid.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScheduleError {
    /// T = 0.
    #[error("the schedule has no steps (T must be >= 1)")]
    Empty,
    /// A beta is NaN or infinite.
    #[error("beta at index {index} (t = {}) is not finite: {value}", index + 1)]
    NonFinite { index: usize, value: f64 },
    /// A beta is outside (0, 1) (or (0, 1] for the last step under zero-terminal-SNR).
    #[error("beta at index {index} (t = {}) is {value}, outside (0, 1)", index + 1)]
    OutOfRange { index: usize, value: f64 },
    /// A schedule parameter is invalid (e.g. beta_start > beta_end, s < 0).
    #[error("schedule parameter {name} = {value} is invalid: {reason}")]
    Parameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
}

/// The named beta schedules users expect (SPEC §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// DDPM: beta linear from `beta_start` to `beta_end`.
    Linear { beta_start: f64, beta_end: f64 },
    /// Stable Diffusion: sqrt(beta) linear from sqrt(beta_start) to sqrt(beta_end).
    ScaledLinear { beta_start: f64, beta_end: f64 },
    /// Improved DDPM: alpha_bar_t = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2),
    /// beta_t = min(1 - alpha_bar_t/alpha_bar_{t-1}, max_beta).
    Cosine { s: f64, max_beta: f64 },
    /// beta = sigmoid(linspace(-6, 6, T)) (beta_end - beta_start) + beta_start.
    Sigmoid { beta_start: f64, beta_end: f64 },
    /// alpha_bar(u) = exp(-12 u) for u = t/T (diffusers' `exp`): a constant beta_t = 1 - e^{-12/T},
    /// capped at `max_beta`.
    Exp { max_beta: f64 },
    /// diffusers' `laplace`: lambda(u) = -sign(1/2 - u) ln(1 - 2|1/2 - u| + 1e-6) / 2 for
    /// u = t/T, alpha_bar(u) = sqrt(snr / (1 + snr)) with snr = exp(lambda),
    /// beta_t = min(1 - alpha_bar(t/T)/alpha_bar((t-1)/T), max_beta).
    Laplace { max_beta: f64 },
    /// A user-given array of T betas.
    Custom { betas: Vec<f64> },
}

impl BetaSchedule {
    /// DDPM's linear schedule, 1e-4 to 0.02.
    pub fn linear() -> Self {
        BetaSchedule::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }
    /// Stable Diffusion's scaled-linear schedule, 0.00085 to 0.012.
    pub fn scaled_linear() -> Self {
        BetaSchedule::ScaledLinear {
            beta_start: 0.00085,
            beta_end: 0.012,
        }
    }
    /// Improved DDPM's cosine schedule (s = 0.008, betas capped at 0.999).
    pub fn cosine() -> Self {
        BetaSchedule::Cosine {
            s: 0.008,
            max_beta: 0.999,
        }
    }
    /// The sigmoid schedule with DDPM's end points.
    pub fn sigmoid() -> Self {
        BetaSchedule::Sigmoid {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// Parses a schedule name as used on the command line and in diffusers configs.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "linear" => Some(Self::linear()),
            "scaled_linear" => Some(Self::scaled_linear()),
            "cosine" | "squaredcos_cap_v2" => Some(Self::cosine()),
            "sigmoid" => Some(Self::sigmoid()),
            "exp" => Some(BetaSchedule::Exp { max_beta: 0.999 }),
            "laplace" => Some(BetaSchedule::Laplace { max_beta: 0.999 }),
            _ => None,
        }
    }

    /// The betas of this schedule for `T` steps, before validation.
    pub fn betas(&self, num_steps: usize) -> Result<Vec<f64>, ScheduleError> {
        let t_max = num_steps;
        let check_ends = |start: f64, end: f64| {
            if !(start > 0.0 && start.is_finite()) {
                return Err(ScheduleError::Parameter {
                    name: "beta_start",
                    value: start,
                    reason: "must be finite and > 0",
                });
            }
            if !(end >= start && end < 1.0) {
                return Err(ScheduleError::Parameter {
                    name: "beta_end",
                    value: end,
                    reason: "must satisfy beta_start <= beta_end < 1",
                });
            }
            Ok(())
        };
        Ok(match self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => {
                check_ends(*beta_start, *beta_end)?;
                linspace(*beta_start, *beta_end, t_max)
            }
            BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            } => {
                check_ends(*beta_start, *beta_end)?;
                linspace(beta_start.sqrt(), beta_end.sqrt(), t_max)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::Sigmoid {
                beta_start,
                beta_end,
            } => {
                check_ends(*beta_start, *beta_end)?;
                linspace(-6.0, 6.0, t_max)
                    .into_iter()
                    .map(|z| sigmoid(z) * (beta_end - beta_start) + beta_start)
                    .collect()
            }
            BetaSchedule::Cosine { s, max_beta } => {
                if !(*s >= 0.0 && s.is_finite()) {
                    return Err(ScheduleError::Parameter {
                        name: "s",
                        value: *s,
                        reason: "must be finite and >= 0",
                    });
                }
                if !(*max_beta > 0.0 && *max_beta < 1.0) {
                    return Err(ScheduleError::Parameter {
                        name: "max_beta",
                        value: *max_beta,
                        reason: "must be in (0, 1)",
                    });
                }
                let f = |t: f64| {
                    (((t / t_max as f64 + s) / (1.0 + s)) * PI / 2.0)
                        .cos()
                        .powi(2)
                };
                // alpha_bar_t = f(t)/f(0); the f(0) cancels in the ratio of consecutive steps.
                (0..t_max)
                    .map(|i| (1.0 - f((i + 1) as f64) / f(i as f64)).min(*max_beta))
                    .collect()
            }
            BetaSchedule::Exp { max_beta } => {
                check_max_beta(*max_beta)?;
                alpha_bar_betas(t_max, *max_beta, |u| (-12.0 * u).exp())
            }
            BetaSchedule::Laplace { max_beta } => {
                check_max_beta(*max_beta)?;
                alpha_bar_betas(t_max, *max_beta, |u: f64| {
                    let lambda =
                        -0.5 * 1f64.copysign(0.5 - u) * (1.0 - 2.0 * (0.5 - u).abs() + 1e-6).ln();
                    let snr = lambda.exp();
                    (snr / (1.0 + snr)).sqrt()
                })
            }
            BetaSchedule::Custom { betas } => betas.clone(),
        })
    }
}

/// The largest T a schedule is built for.
pub const MAX_TRAIN_TIMESTEPS: usize = 1 << 20;

/// Everything needed to build a [`Schedule`]; a serde type stored in checkpoints' config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// Which betas.
    pub beta_schedule: BetaSchedule,
    /// T, the number of training timesteps.
    #[serde(default = "default_num_steps")]
    pub num_train_timesteps: usize,
    /// Rescale to zero terminal SNR (Lin et al. 2024); requires v-prediction to be useful.
    #[serde(default)]
    pub rescale_zero_terminal_snr: bool,
}

fn default_num_steps() -> usize {
    1000
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            beta_schedule: BetaSchedule::linear(),
            num_train_timesteps: 1000,
            rescale_zero_terminal_snr: false,
        }
    }
}

impl ScheduleConfig {
    /// Builds and validates the schedule.
    pub fn build(&self) -> Result<Schedule, ScheduleError> {
        if self.num_train_timesteps == 0 {
            return Err(ScheduleError::Empty);
        }
        // T is user input (config.json): bound it before ~15 tables of T floats are allocated.
        if self.num_train_timesteps > MAX_TRAIN_TIMESTEPS {
            return Err(ScheduleError::Parameter {
                name: "num_train_timesteps",
                value: self.num_train_timesteps as f64,
                reason: "is above 2^20 steps (diffusion models train with ~1000)",
            });
        }
        if let BetaSchedule::Custom { betas } = &self.beta_schedule {
            if betas.len() != self.num_train_timesteps {
                return Err(ScheduleError::Parameter {
                    name: "num_train_timesteps",
                    value: self.num_train_timesteps as f64,
                    reason: "must equal the length of the custom beta array",
                });
            }
        }
        let betas = self.beta_schedule.betas(self.num_train_timesteps)?;
        Schedule::from_betas(betas, self.rescale_zero_terminal_snr)
    }
}

/// Float64 tables of one beta schedule (SPEC §1–2). Index `i` is math step `t = i + 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub beta: Vec<f64>,
    pub alpha: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    pub sqrt_alpha_bar: Vec<f64>,
    pub sqrt_one_minus_alpha_bar: Vec<f64>,
    pub log_one_minus_alpha_bar: Vec<f64>,
    /// sqrt((1 - alpha_bar) / alpha_bar); +inf at a zero-SNR terminal step.
    pub sigma: Vec<f64>,
    pub snr: Vec<f64>,
    pub log_snr: Vec<f64>,
    /// beta_tilde_t (0 at t = 1).
    pub posterior_variance: Vec<f64>,
    /// log beta_tilde_t with t = 1 clipped to beta_tilde_2 (as DDPM does).
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Coefficient of x_0 in mu_tilde: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t).
    pub posterior_mean_coef_x0: Vec<f64>,
    /// Coefficient of x_t in mu_tilde: sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).
    pub posterior_mean_coef_xt: Vec<f64>,
}

impl Schedule {
    /// Validates `betas` (finite, in (0, 1); the last may be exactly 1 only when rescaled to
    /// zero terminal SNR) and builds every table.
    pub fn from_betas(
        betas: Vec<f64>,
        rescale_zero_terminal_snr: bool,
    ) -> Result<Self, ScheduleError> {
        if betas.is_empty() {
            return Err(ScheduleError::Empty);
        }
        validate_betas(&betas, false)?;
        let betas = if rescale_zero_terminal_snr {
            let b = rescale_zero_terminal_snr_betas(&betas);
            validate_betas(&b, true)?;
            b
        } else {
            betas
        };
        Ok(Self::tables(betas))
    }

    fn tables(beta: Vec<f64>) -> Self {
        let n = beta.len();
        let alpha: Vec<f64> = beta.iter().map(|b| 1.0 - b).collect();
        let mut alpha_bar = Vec::with_capacity(n);
        let mut prod = 1.0;
        for a in &alpha {
            prod *= a;
            alpha_bar.push(prod);
        }
        // 1 - alpha_bar without cancellation: 1 - prod(1 - beta) = -expm1(sum ln(1 - beta)).
        let mut log_alpha_bar = 0.0;
        let one_minus_alpha_bar: Vec<f64> = beta
            .iter()
            .map(|b| {
                log_alpha_bar += (-b).ln_1p();
                -log_alpha_bar.exp_m1()
            })
            .collect();
        let sqrt_alpha_bar = alpha_bar.iter().map(|a| a.sqrt()).collect();
        let sqrt_one_minus_alpha_bar = one_minus_alpha_bar.iter().map(|v| v.sqrt()).collect();
        let log_one_minus_alpha_bar = one_minus_alpha_bar.iter().map(|v| v.ln()).collect();
        let sigma = (0..n)
            .map(|i| (one_minus_alpha_bar[i] / alpha_bar[i]).sqrt())
            .collect();
        let snr: Vec<f64> = (0..n)
            .map(|i| alpha_bar[i] / one_minus_alpha_bar[i])
            .collect();
        let log_snr = snr.iter().map(|s| s.ln()).collect();
        let prev = |i: usize| if i == 0 { 1.0 } else { alpha_bar[i - 1] };
        let one_minus_prev = |i: usize| {
            if i == 0 {
                0.0
            } else {
                one_minus_alpha_bar[i - 1]
            }
        };
        let posterior_variance: Vec<f64> = (0..n)
            .map(|i| one_minus_prev(i) / one_minus_alpha_bar[i] * beta[i])
            .collect();
        // beta_tilde_1 = 0: its log is clipped to beta_tilde_2 (SPEC §2; beta_1 on one step).
        let posterior_log_variance_clipped = (0..n)
            .map(|i| {
                let above = posterior_variance.get(i + 1).copied();
                clipped_log_posterior_variance(posterior_variance[i], beta[i], above)
            })
            .collect();
        let posterior_mean_coef_x0 = (0..n)
            .map(|i| prev(i).sqrt() * beta[i] / one_minus_alpha_bar[i])
            .collect();
        let posterior_mean_coef_xt = (0..n)
            .map(|i| alpha[i].sqrt() * one_minus_prev(i) / one_minus_alpha_bar[i])
            .collect();
        Schedule {
            beta,
            alpha,
            alpha_bar,
            sqrt_alpha_bar,
            sqrt_one_minus_alpha_bar,
            log_one_minus_alpha_bar,
            sigma,
            snr,
            log_snr,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef_x0,
            posterior_mean_coef_xt,
        }
    }

    /// This schedule with its last alpha_bar replaced by `alpha_bar` and every table rebuilt
    /// from beta_T = 1 - alpha_bar / alpha_bar_{T-1}, so that all of them stay consistent with
    /// the new alpha_bar. Not validated: beta_T may leave (0, 1) (diffusers' finite stand-in for
    /// a zero terminal SNR, `crate::sample::grid::finite_sigma_schedule`, makes it negative).
    pub fn with_last_alpha_bar(&self, alpha_bar: f64) -> Self {
        let mut beta = self.beta.clone();
        let last = beta.len() - 1;
        beta[last] = 1.0 - alpha_bar / self.alpha_bar_prev(last);
        Self::tables(beta)
    }

    /// T, the number of steps.
    pub fn len(&self) -> usize {
        self.beta.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.beta.is_empty()
    }

    /// The variance range of step `i` of the full chain (beta_t, beta_tilde_t and its clipped
    /// log), what every variance rule of [`crate::variance`] takes.
    pub fn variance_range(&self, i: usize) -> VarianceRange {
        VarianceRange {
            beta: self.beta[i],
            beta_tilde: self.posterior_variance[i],
            log_beta_tilde_clipped: self.posterior_log_variance_clipped[i],
        }
    }

    /// alpha_bar_{t-1} for code index `i` (math step t = i + 1): 1 at i = 0.
    pub fn alpha_bar_prev(&self, i: usize) -> f64 {
        if i == 0 {
            1.0
        } else {
            self.alpha_bar[i - 1]
        }
    }

    /// alpha_bar at a possibly negative code index, as samplers that step past t = 1 need:
    /// `final_alpha_bar` below index 0 (1 for clean data; diffusers' `set_alpha_to_one=False`
    /// uses `alpha_bar[0]`).
    pub fn alpha_bar_at(&self, index: i64, final_alpha_bar: f64) -> f64 {
        if index < 0 {
            final_alpha_bar
        } else {
            self.alpha_bar[index as usize]
        }
    }

    /// The (possibly fractional) timestep whose log-sigma interpolates `sigma` linearly in
    /// the table's log-sigmas (diffusers' `_sigma_to_t`); clamped to [0, T-1].
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigmas: Vec<f64> = self.sigma.iter().map(|s| s.ln()).collect();
        sigma_to_t_in(&log_sigmas, sigma)
    }

    /// sigma at a fractional timestep, by linear interpolation of the sigma table (as diffusers'
    /// `np.interp(timesteps, arange(T), sigmas)`).
    pub fn sigma_at(&self, t: f64) -> f64 {
        let n = self.sigma.len();
        let t = t.clamp(0.0, (n - 1) as f64);
        let low = (t.floor() as usize).min(n - 1);
        let high = (low + 1).min(n - 1);
        let w = t - low as f64;
        (1.0 - w) * self.sigma[low] + w * self.sigma[high]
    }
}

/// diffusers' `_sigma_to_t` on a table of log-sigmas: take the last index whose log-sigma is
/// <= ln(sigma) (clamped to T-2; the first index if none is), and interpolate linearly in
/// log-sigma towards the next one, with the weight clamped to [0, 1].
pub fn sigma_to_t_in(log_sigmas: &[f64], sigma: f64) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    if n == 1 {
        return 0.0;
    }
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let high = low + 1;
    let w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

fn check_max_beta(max_beta: f64) -> Result<(), ScheduleError> {
    if max_beta > 0.0 && max_beta < 1.0 {
        Ok(())
    } else {
        Err(ScheduleError::Parameter {
            name: "max_beta",
            value: max_beta,
            reason: "must be in (0, 1)",
        })
    }
}

/// beta_t = min(1 - alpha_bar(t/T) / alpha_bar((t-1)/T), max_beta) for t = 1..T: the betas of a
/// continuous alpha_bar(u), u in [0, 1] (diffusers' `betas_for_alpha_bar`).
fn alpha_bar_betas(t_max: usize, max_beta: f64, alpha_bar: impl Fn(f64) -> f64) -> Vec<f64> {
    let n = t_max as f64;
    (0..t_max)
        .map(|i| (1.0 - alpha_bar((i + 1) as f64 / n) / alpha_bar(i as f64 / n)).min(max_beta))
        .collect()
}

fn validate_betas(betas: &[f64], allow_last_one: bool) -> Result<(), ScheduleError> {
    let last = betas.len() - 1;
    for (index, &value) in betas.iter().enumerate() {
        if !value.is_finite() {
            return Err(ScheduleError::NonFinite { index, value });
        }
        let ok = value > 0.0 && (value < 1.0 || (allow_last_one && index == last && value == 1.0));
        if !ok {
            return Err(ScheduleError::OutOfRange { index, value });
        }
    }
    Ok(())
}

/// Zero-terminal-SNR rescaling (Lin et al. 2024): shift and scale sqrt(alpha_bar) so the last
/// value is 0 and the first is unchanged, then recover the betas.
pub fn rescale_zero_terminal_snr_betas(betas: &[f64]) -> Vec<f64> {
    let mut prod = 1.0;
    let sqrt_ab: Vec<f64> = betas
        .iter()
        .map(|b| {
            prod *= 1.0 - b;
            prod.sqrt()
        })
        .collect();
    let first = sqrt_ab[0];
    let last = *sqrt_ab.last().expect("non-empty");
    if first == last {
        // T = 1: there is nothing to shift against; the single step goes to pure noise.
        return vec![1.0];
    }
    let alpha_bar: Vec<f64> = sqrt_ab
        .iter()
        .map(|s| ((s - last) * first / (first - last)).powi(2))
        .collect();
    let mut out = Vec::with_capacity(betas.len());
    out.push(1.0 - alpha_bar[0]);
    for i in 1..alpha_bar.len() {
        out.push(1.0 - alpha_bar[i] / alpha_bar[i - 1]);
    }
    out
}

/// Karras et al. (2022) sigmas, rho-spaced from sigma_max down to sigma_min (n values, no
/// trailing zero): sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize, rho: f64) -> Vec<f64> {
    let inv = 1.0 / rho;
    let (a, b) = (sigma_max.powf(inv), sigma_min.powf(inv));
    (0..n)
        .map(|i| {
            let frac = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            (a + frac * (b - a)).powf(rho)
        })
        .collect()
}

/// `n` evenly spaced values from `start` to `end` inclusive (numpy's linspace).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i == n - 1 {
                        end
                    } else {
                        start + step * i as f64
                    }
                })
                .collect()
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests;
