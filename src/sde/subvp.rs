//! The sub-VP SDE (SPEC §6): the VP drift with
//! `g(t)^2 = beta(t) (1 - exp(-2 int_0^t beta(s) ds))`; marginal mean m(t) as VP and
//! std s(t) = 1 - m(t)^2 (not its square root), so s(t)^2 <= the VP variance.
//! Its discretisation is the Euler–Maruyama step (score_sde has no DDPM-like one).

use super::{Discretization, Marginal, Sde, VpSde};
use serde::{Deserialize, Serialize};

/// The sub-VP SDE, parameterised by the VP SDE it shares its drift with.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SubVpSde {
    pub vp: VpSde,
}

impl SubVpSde {
    /// With beta_min, beta_max (validated as for VP).
    pub fn new(beta_min: f64, beta_max: f64) -> crate::Result<Self> {
        Ok(SubVpSde {
            vp: VpSde::new(beta_min, beta_max)?,
        })
    }
}

impl Sde for SubVpSde {
    fn drift_coeff(&self, t: f64) -> f64 {
        self.vp.drift_coeff(t)
    }

    fn diffusion(&self, t: f64) -> f64 {
        // int_0^t beta = -2 log m(t), so 1 - exp(-2 int) = 1 - exp(4 log m).
        let discount = -(4.0 * self.vp.log_mean_coeff(t)).exp_m1();
        (self.vp.beta(t) * discount).sqrt()
    }

    fn marginal(&self, t: f64) -> Marginal {
        let lm = self.vp.log_mean_coeff(t);
        Marginal {
            mean_coeff: lm.exp(),
            std: -(2.0 * lm).exp_m1(),
        }
    }

    /// Euler–Maruyama: a = 1 + c(t) dt, b = g(t) sqrt(dt).
    fn discretize(&self, t: f64, dt: f64) -> Discretization {
        Discretization {
            a: 1.0 + self.drift_coeff(t) * dt,
            b: self.diffusion(t) * dt.sqrt(),
        }
    }

    fn prior_std(&self) -> f64 {
        1.0
    }

    fn name(&self) -> &'static str {
        "subvp"
    }
}
