//! The variance-preserving SDE, continuous DDPM (SPEC §6):
//! `f = -1/2 beta(t) x`, `g = sqrt(beta(t))`, beta(t) = beta_min + t (beta_max - beta_min);
//! log m(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min, s(t)^2 = 1 - m(t)^2.
//! Discrete link: beta_i = beta(i/N)/N.

use super::{Discretization, Marginal, Sde};
use crate::error::{Error, Result};
use crate::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use serde::{Deserialize, Serialize};

/// The VP SDE with a linear beta(t).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VpSde {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl Default for VpSde {
    /// Song et al. 2021: beta_min = 0.1, beta_max = 20.
    fn default() -> Self {
        VpSde {
            beta_min: 0.1,
            beta_max: 20.0,
        }
    }
}

impl VpSde {
    /// Validated construction: 0 < beta_min <= beta_max < inf; the error names the parameter.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min > 0.0 && beta_min.is_finite()) {
            return Err(Error::config(
                "sde.beta_min",
                format!("{beta_min}: must be finite and > 0"),
            ));
        }
        if !(beta_max >= beta_min && beta_max.is_finite()) {
            return Err(Error::config(
                "sde.beta_max",
                format!("{beta_max}: must be finite and >= beta_min = {beta_min}"),
            ));
        }
        Ok(VpSde { beta_min, beta_max })
    }

    /// beta(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// log m(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min = -1/2 int_0^t beta(s) ds.
    pub fn log_mean_coeff(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
    }

    /// The time t whose marginal has VE noise scale sigma = s(t)/m(t), i.e. m(t)^2 =
    /// 1/(1 + sigma^2) (SPEC §6 VE <-> VP): the root of
    /// 1/4 (beta_max - beta_min) t^2 + 1/2 beta_min t = 1/2 ln(1 + sigma^2).
    pub fn t_of_sigma(&self, sigma: f64) -> f64 {
        let c = 0.5 * sigma.mul_add(sigma, 1.0).ln();
        let (qa, qb) = (0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min);
        if qa == 0.0 {
            c / qb
        } else {
            // Citardauq form, no cancellation for small c.
            2.0 * c / (qb + (qb * qb + 4.0 * qa * c).sqrt())
        }
    }

    /// The discrete betas beta_i = beta(i/N)/N, i = 1..N (SPEC §6), as a schedule whose
    /// code index i - 1 is step i (crate convention).
    pub fn discrete_schedule(&self, n: usize) -> Result<Schedule> {
        let betas = (1..=n)
            .map(|i| self.beta(i as f64 / n as f64) / n as f64)
            .collect();
        Ok(ScheduleConfig {
            beta_schedule: BetaSchedule::Custom { betas },
            num_train_timesteps: n,
            rescale_zero_terminal_snr: false,
        }
        .build()?)
    }
}

impl Sde for VpSde {
    fn drift_coeff(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }

    fn diffusion(&self, t: f64) -> f64 {
        self.beta(t).sqrt()
    }

    fn marginal(&self, t: f64) -> Marginal {
        let lm = self.log_mean_coeff(t);
        Marginal {
            mean_coeff: lm.exp(),
            // 1 - exp(2 lm) without cancellation at small t.
            std: (-(2.0 * lm).exp_m1()).sqrt(),
        }
    }

    /// DDPM's step between the marginal levels of t - dt and t: a = m(t)/m(t - dt),
    /// beta_i = 1 - a^2 = 1 - exp(-int_{t-dt}^t beta) (the subsampled-grid beta of SPEC §5,
    /// valid for any dt), b = sqrt(beta_i). To first order beta_i = beta(t) dt, the link
    /// beta_i = beta(i/N)/N of SPEC §6 (score_sde's `discretize`, which breaks once
    /// beta(t) dt > 1 on coarse grids).
    fn discretize(&self, t: f64, dt: f64) -> Discretization {
        let log_a = self.log_mean_coeff(t) - self.log_mean_coeff((t - dt).max(0.0));
        Discretization {
            a: log_a.exp(),
            b: (-(2.0 * log_a).exp_m1()).sqrt(),
        }
    }

    fn prior_std(&self) -> f64 {
        1.0
    }

    fn name(&self) -> &'static str {
        "vp"
    }
}
