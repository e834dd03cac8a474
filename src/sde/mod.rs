//! Score-based SDEs in continuous time t in [0, 1] (SPEC §6).
//!
//! Symbols: forward SDE `dx = f(x, t) dt + g(t) dw`; every SDE here has a linear drift
//! `f(x, t) = c(t) x` ([`Sde::drift_coeff`]); marginal `x_t = m(t) x_0 + s(t) z`
//! ([`Marginal`]: `mean_coeff` m and `std` s); score `grad_x log p_t(x)`.
//! The reverse SDE and the probability-flow ODE are derived once, in [`Reverse`], from any
//! [`Sde`] and any [`ScoreFn`]; samplers and the likelihood only see those two traits.
//!
//! Implementations: [`VpSde`] (continuous DDPM), [`ScheduleVpSde`] (the VP SDE of any discrete
//! schedule), [`SubVpSde`], [`VeSde`] (continuous NCSN).

pub mod config;
pub mod score;
pub mod solvers;
pub mod subvp;
pub mod ve;
pub mod vp;

pub use config::{SdeConfig, SdeSampler};
pub use score::{
    dsm_loss, DenoiserScore, Divergence, NetworkScore, OracleScore, Probe, ScoreFn, ScoreOutput,
    TimeInput,
};
pub use subvp::SubVpSde;
pub use ve::VeSde;
pub use vp::{ScheduleVpSde, VpSde};

use crate::rng::NoiseSource;
use burn::tensor::Tensor;
use std::f64::consts::PI;

/// The marginal q(x_t | x_0) = N(mean_coeff x_0, std^2 I).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marginal {
    pub mean_coeff: f64,
    pub std: f64,
}

impl Marginal {
    /// The same marginal in VE coordinates x / m = x_0 + (s / m) z: its noise scale s / m.
    pub fn sigma(&self) -> f64 {
        self.std / self.mean_coeff
    }
}

/// One discrete forward step from t - dt to t implied by the SDE:
/// `x_t = a x_{t-dt} + b z` (SPEC §6: VP's beta_i = beta(t) dt, VE's sigma_i^2 - sigma_{i-1}^2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Discretization {
    pub a: f64,
    pub b: f64,
}

/// A forward SDE `dx = c(t) x dt + g(t) dw` on t in [0, 1].
pub trait Sde {
    /// c(t) in f(x, t) = c(t) x.
    fn drift_coeff(&self, t: f64) -> f64;
    /// g(t).
    fn diffusion(&self, t: f64) -> f64;
    /// The marginal of x_t given x_0.
    fn marginal(&self, t: f64) -> Marginal;
    /// The discrete step from t - dt to t.
    fn discretize(&self, t: f64, dt: f64) -> Discretization;
    /// Standard deviation of the prior p_1 = N(0, prior_std^2 I).
    fn prior_std(&self) -> f64;
    /// A short name (`vp`, `subvp`, `ve`).
    fn name(&self) -> &'static str;

    /// f(x, t) = c(t) x.
    fn drift(&self, x: &Tensor<2>, t: f64) -> Tensor<2> {
        x.clone().mul_scalar(self.drift_coeff(t))
    }

    /// div_x f(x, t) = c(t) D.
    fn drift_divergence(&self, t: f64, dim: usize) -> f64 {
        self.drift_coeff(t) * dim as f64
    }

    /// Draws from the prior p_1 shaped like `like` (`[N, D]`).
    fn prior_sample(&self, like: &Tensor<2>, noise: &mut dyn NoiseSource) -> Tensor<2> {
        noise.noise_like(like).mul_scalar(self.prior_std())
    }

    /// log p_1(x) per row of the row-major `x` with `dim` columns.
    fn prior_log_prob(&self, x: &[f64], dim: usize) -> Vec<f64> {
        let s2 = self.prior_std().powi(2);
        let log_norm = -0.5 * dim as f64 * (2.0 * PI * s2).ln();
        x.chunks(dim)
            .map(|row| log_norm - 0.5 * row.iter().map(|v| v * v).sum::<f64>() / s2)
            .collect()
    }

    /// The reverse-time process with `score` (the reverse SDE, or with `probability_flow` the
    /// PF-ODE), score_sde's `sde.reverse(score_fn, probability_flow)`.
    fn reverse<'a, F: ScoreFn + ?Sized>(
        &'a self,
        score: &'a F,
        probability_flow: bool,
    ) -> Reverse<'a, Self, F>
    where
        Self: Sized,
    {
        Reverse {
            sde: self,
            score,
            probability_flow,
        }
    }

    /// x_t = m x_0 + s z, a draw of the marginal given x_0 and z ~ N(0, I).
    fn marginal_sample(&self, x0: &Tensor<2>, t: f64, z: &Tensor<2>) -> Tensor<2> {
        let m = self.marginal(t);
        x0.clone().mul_scalar(m.mean_coeff) + z.clone().mul_scalar(m.std)
    }
}

impl<S: Sde + ?Sized> Sde for &S {
    fn drift_coeff(&self, t: f64) -> f64 {
        (**self).drift_coeff(t)
    }
    fn diffusion(&self, t: f64) -> f64 {
        (**self).diffusion(t)
    }
    fn marginal(&self, t: f64) -> Marginal {
        (**self).marginal(t)
    }
    fn discretize(&self, t: f64, dt: f64) -> Discretization {
        (**self).discretize(t, dt)
    }
    fn prior_std(&self) -> f64 {
        (**self).prior_std()
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// The reverse-time process of `sde` given a score (SPEC §6), written once:
/// reverse SDE `dx = [f - g^2 score] dt + g dw_bar`, or with `probability_flow` the ODE
/// `dx = [f - 1/2 g^2 score] dt` (no noise). Time runs from 1 to 0.
pub struct Reverse<'a, S: ?Sized, F: ?Sized> {
    pub sde: &'a S,
    pub score: &'a F,
    pub probability_flow: bool,
}

impl<'a, S: Sde + ?Sized, F: ScoreFn + ?Sized> Reverse<'a, S, F> {
    /// The reverse SDE.
    pub fn sde(sde: &'a S, score: &'a F) -> Self {
        Reverse {
            sde,
            score,
            probability_flow: false,
        }
    }

    /// The probability-flow ODE.
    pub fn ode(sde: &'a S, score: &'a F) -> Self {
        Reverse {
            sde,
            score,
            probability_flow: true,
        }
    }

    /// The weight of g^2 score in the drift: 1 (SDE) or 1/2 (ODE).
    fn score_weight(&self) -> f64 {
        if self.probability_flow {
            0.5
        } else {
            1.0
        }
    }

    /// Reverse drift f(x, t) - w g(t)^2 score(x, t), and the score it used.
    pub fn drift(&self, x: &Tensor<2>, t: f64) -> (Tensor<2>, Tensor<2>) {
        let score = self.score.score(x, t);
        let g2 = self.sde.diffusion(t).powi(2);
        let drift = self.sde.drift(x, t) - score.clone().mul_scalar(self.score_weight() * g2);
        (drift, score)
    }

    /// Reverse diffusion: g(t) (SDE) or 0 (ODE).
    pub fn diffusion(&self, t: f64) -> f64 {
        if self.probability_flow {
            0.0
        } else {
            self.sde.diffusion(t)
        }
    }

    /// The discretised reverse step from t to t - dt (score_sde's `reverse.discretize`):
    /// `x_{t-dt} = x_t - [(a - 1) x_t - w b^2 score] + (b or 0) z`; returns the mean part,
    /// the noise scale and the score.
    pub fn discretize(&self, x: &Tensor<2>, t: f64, dt: f64) -> (Tensor<2>, f64, Tensor<2>) {
        let Discretization { a, b } = self.sde.discretize(t, dt);
        let score = self.score.score(x, t);
        let f = x.clone().mul_scalar(a - 1.0);
        let rev_f = f - score.clone().mul_scalar(self.score_weight() * b * b);
        let mean = x.clone() - rev_f;
        let noise_scale = if self.probability_flow { 0.0 } else { b };
        (mean, noise_scale, score)
    }

    /// Divergence of the probability-flow drift, per sample:
    /// div f~ = c(t) D - 1/2 g(t)^2 div score (SPEC §6, instantaneous change of variables).
    pub fn ode_divergence(&self, x: &Tensor<2>, t: f64, method: &Divergence) -> Vec<f64> {
        let dim = x.dims()[1];
        let g2 = self.sde.diffusion(t).powi(2);
        let c = self.sde.drift_divergence(t, dim);
        method
            .score_divergence(self.score, x, t)
            .into_iter()
            .map(|d| c - 0.5 * g2 * d)
            .collect()
    }
}

#[cfg(test)]
mod tests;
