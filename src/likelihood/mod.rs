//! Likelihoods (SPEC §4, §6): log p(x_0) through the probability-flow ODE with the
//! instantaneous change of variables ([`pf_ode_log_likelihood`]), bits/dim with the
//! dequantisation offset ([`bits_per_dim`]), and the discrete variational bound ([`vlb`]).
//!
//! Change of variables: along the PF-ODE dx/dt = f~(x, t), d log p_t(x_t)/dt = -div f~(x_t, t),
//! so `log p_eps(x) = log p_1(x_1) + int_eps^1 div f~(x_t, t) dt` with
//! `div f~ = c(t) D - 1/2 g(t)^2 div score` ([`crate::sde::Reverse::ode_divergence`]).
//! The augmented state (x, int div) is integrated from t = eps to 1 by [`dopri5`].

pub mod terms;
pub mod vlb;

pub use vlb::{vlb, VlbTerms};

use crate::sde::solvers::{dopri5, OdeError, OdeOptions, OdeStats};
use crate::sde::{Divergence, Reverse, ScoreFn, Sde};
use crate::tensor::{from_rows_like, to_vec};
use burn::tensor::Tensor;
use std::f64::consts::LN_2;

/// Per-sample results of a PF-ODE likelihood computation (nats).
#[derive(Debug, Clone)]
pub struct PfOdeLikelihood {
    /// log p_eps(x) per sample.
    pub log_p: Vec<f64>,
    /// log p_1(x_1), the prior term.
    pub prior_log_p: Vec<f64>,
    /// int_eps^1 div f~ dt.
    pub delta_log_p: Vec<f64>,
    /// The latent x_1 = ODE(x) (row-major).
    pub z: Vec<f64>,
    /// Solver work; NFE counts right-hand-side evaluations, each one score call plus the
    /// divergence (D extra passes for exact, one per probe for Hutchinson).
    pub stats: OdeStats,
}

/// log p(x) of each row of `x` (data at time `options.eps`) through the PF-ODE of `sde` with
/// `score`, divergence by `divergence` (SPEC §6: RK45, rtol = atol = 1e-5, eps = 1e-5).
/// A non-finite score (a diverged model) is an [`OdeError`] naming the time and step.
pub fn pf_ode_log_likelihood<S: Sde + ?Sized, F: ScoreFn + ?Sized>(
    sde: &S,
    score: &F,
    x: &Tensor<2>,
    divergence: &Divergence,
    options: &OdeOptions,
) -> Result<PfOdeLikelihood, OdeError> {
    let [n, d] = x.dims();
    let rev = Reverse::ode(sde, score);
    let like = x.clone();
    let mut y0 = to_vec(x);
    y0.extend(std::iter::repeat_n(0.0, n));
    let (y, stats) = dopri5(
        |t, y| {
            let xt = from_rows_like(y[..n * d].to_vec(), &like);
            let mut dy = to_vec(&rev.drift(&xt, t).0);
            dy.extend(rev.ode_divergence(&xt, t, divergence));
            dy
        },
        options.eps,
        1.0,
        y0,
        options.rtol,
        options.atol,
    )?;
    let z = y[..n * d].to_vec();
    let delta_log_p = y[n * d..].to_vec();
    let prior_log_p = sde.prior_log_prob(&z, d);
    let log_p = prior_log_p
        .iter()
        .zip(&delta_log_p)
        .map(|(p, dl)| p + dl)
        .collect();
    Ok(PfOdeLikelihood {
        log_p,
        prior_log_p,
        delta_log_p,
        z,
        stats,
    })
}

/// Bits per dimension of a log-density in nats over `dim` dimensions: -log p / (D ln 2), plus
/// 7 for 8-bit data scaled to [-1, 1] under uniform dequantisation (SPEC §6: each of the 256
/// bins has width 1/128, so log P(bin) = log p + D ln(1/128)).
pub fn bits_per_dim(log_p: f64, dim: usize, eight_bit: bool) -> f64 {
    let offset = if eight_bit { 7.0 } else { 0.0 };
    -log_p / (dim as f64 * LN_2) + offset
}

/// Mean and the half-width of its normal 95% confidence interval (1.96 standard errors).
pub fn mean_ci95(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::INFINITY);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_dim_offset_and_ci() {
        // -log p = D ln 2 is one bit per dimension; the 8-bit offset adds log2(128) = 7.
        assert!((bits_per_dim(-3.0 * LN_2, 3, false) - 1.0).abs() < 1e-15);
        assert!((bits_per_dim(-3.0 * LN_2, 3, true) - 8.0).abs() < 1e-15);
        // Values 1, 2, 3: mean 2, sd 1, CI 1.96/sqrt(3).
        let (m, h) = mean_ci95(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-15 && (h - 1.96 / 3f64.sqrt()).abs() < 1e-12);
    }
}
