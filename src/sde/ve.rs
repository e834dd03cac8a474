//! The variance-exploding SDE, continuous NCSN (SPEC §6): `f = 0`,
//! `g(t) = sqrt(d sigma^2/dt) = sigma(t) sqrt(2 ln(sigma_max/sigma_min))`,
//! sigma(t) = sigma_min (sigma_max/sigma_min)^t, marginal x_t = x_0 + sigma(t) z.
//!
//! As in score_sde, "x_0" is the data convolved with N(0, sigma_min^2): the SDE itself only adds
//! sigma(t)^2 - sigma_min^2 of variance between 0 and t.
//!
//! sigma_max must be about the largest distance between data points (Song & Ermon 2020,
//! technique 1) so that p_1 is close to N(0, sigma_max^2 I): for 2-D data standardised to unit
//! variance, pairwise distances stay below ~10, and the default 50 leaves a wide margin
//! ([`VeSde::default`]). Images in [-1, 1] use 50 (CIFAR-10) to 378 (256x256).

use super::{Discretization, Marginal, Sde};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The VE SDE with a geometric sigma(t).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VeSde {
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Default for VeSde {
    /// sigma_min = 0.01, sigma_max = 50 (2-D standardised data, see the module docs).
    fn default() -> Self {
        VeSde {
            sigma_min: 0.01,
            sigma_max: 50.0,
        }
    }
}

impl VeSde {
    /// Validated construction: 0 < sigma_min < sigma_max < inf; the error names the parameter.
    pub fn new(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        if !(sigma_min > 0.0 && sigma_min.is_finite()) {
            return Err(Error::config(
                "sde.sigma_min",
                format!("{sigma_min}: must be finite and > 0"),
            ));
        }
        if !(sigma_max > sigma_min && sigma_max.is_finite()) {
            return Err(Error::config(
                "sde.sigma_max",
                format!("{sigma_max}: must be finite and > sigma_min = {sigma_min}"),
            ));
        }
        Ok(VeSde {
            sigma_min,
            sigma_max,
        })
    }

    /// sigma(t) = sigma_min (sigma_max/sigma_min)^t.
    pub fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }

    /// t(sigma), the inverse of [`VeSde::sigma`].
    pub fn t_of_sigma(&self, sigma: f64) -> f64 {
        (sigma / self.sigma_min).ln() / (self.sigma_max / self.sigma_min).ln()
    }
}

impl Sde for VeSde {
    fn drift_coeff(&self, _t: f64) -> f64 {
        0.0
    }

    fn diffusion(&self, t: f64) -> f64 {
        self.sigma(t) * (2.0 * (self.sigma_max / self.sigma_min).ln()).sqrt()
    }

    fn marginal(&self, t: f64) -> Marginal {
        Marginal {
            mean_coeff: 1.0,
            std: self.sigma(t),
        }
    }

    /// NCSN's step: a = 1, b = sqrt(sigma(t)^2 - sigma(t - dt)^2) (SPEC §6).
    fn discretize(&self, t: f64, dt: f64) -> Discretization {
        let prev = self.sigma((t - dt).max(0.0));
        Discretization {
            a: 1.0,
            b: (self.sigma(t).powi(2) - prev * prev).max(0.0).sqrt(),
        }
    }

    fn prior_std(&self) -> f64 {
        self.sigma_max
    }

    fn name(&self) -> &'static str {
        "ve"
    }
}
