//! The discrete variational bound in nats and bits/dim (SPEC §4, improved-diffusion's
//! `calc_bpd_loop`): L_vlb = L_T + sum_{t=2..T} L_{t-1} + L_0 with
//! - L_T = KL(q(x_T | x_0) || N(0, I)),
//! - L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) at one draw x_t ~ q(x_t | x_0)
//!   (an unbiased estimate of E_q[KL]),
//! - L_0 = -log p_theta(x_0 | x_1), the discretised Gaussian decoder over 256 bins.
//!
//! Model variances: fixed_small uses log beta_tilde clipped at t = 1 (beta_tilde_2, SPEC §2),
//! fixed_large uses beta_t except beta_tilde_2 at t = 1 (DDPM), learned_range interpolates
//! between log beta_t and the clipped log beta_tilde_t (SPEC §3). Math step t is code index
//! i = t - 1 (crate docs). All arithmetic is float64 on the host.

use super::terms::{discretized_gaussian_log_likelihood, normal_kl};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::forward::q_sample;
use crate::rng::NoiseSource;
use crate::schedule::Schedule;
use crate::tensor::to_vec;
use crate::variance::VarianceType;
use burn::tensor::Tensor;
use std::f64::consts::LN_2;

/// The terms of the bound, in nats.
#[derive(Debug, Clone)]
pub struct VlbTerms {
    /// L_T per sample.
    pub prior: Vec<f64>,
    /// L_0 per sample.
    pub decoder: Vec<f64>,
    /// sum_{t=2..T} L_{t-1} per sample.
    pub kl: Vec<f64>,
    /// Per code index i (math t = i + 1), the batch mean of that step's term: L_0 at i = 0,
    /// L_{t-1} after.
    pub per_step: Vec<f64>,
    /// L_vlb per sample.
    pub total: Vec<f64>,
    /// Data dimension D.
    pub dim: usize,
}

impl VlbTerms {
    /// L_vlb per sample in bits/dim (no dequantisation offset: the decoder is already
    /// discrete).
    pub fn bits_per_dim(&self) -> Vec<f64> {
        self.total
            .iter()
            .map(|v| v / (self.dim as f64 * LN_2))
            .collect()
    }
}

/// log sigma_t^2 of p_theta(x_{t-1} | x_t) at code index i, per element (`v` is the model's
/// variance output in [-1, 1] for learned_range).
fn model_log_variance(
    schedule: &Schedule,
    variance: VarianceType,
    i: usize,
    v: Option<&[f64]>,
    len: usize,
) -> Vec<f64> {
    let clipped_small = schedule.posterior_log_variance_clipped[i];
    match variance {
        VarianceType::FixedSmall => vec![clipped_small; len],
        VarianceType::FixedLarge => {
            let lv = if i == 0 && schedule.len() > 1 {
                schedule.posterior_variance[1].ln()
            } else {
                schedule.beta[i].ln()
            };
            vec![lv; len]
        }
        VarianceType::LearnedRange => {
            let v = v.expect("learned_range needs a model with a variance output");
            let max_log = schedule.beta[i].ln();
            v.iter()
                .map(|v| {
                    let frac = (v + 1.0) / 2.0;
                    frac * max_log + (1.0 - frac) * clipped_small
                })
                .collect()
        }
        VarianceType::Learned => {
            let v = v.expect("a learned variance needs a model with a variance output");
            v.iter().map(|v| v.ln()).collect()
        }
    }
}

/// The bound for each row of `x0` (8-bit data in [-1, 1], `[N, D]`), one x_t draw per step
/// from `noise`. Costs T denoiser calls.
pub fn vlb<D: Denoiser + ?Sized>(
    denoiser: &D,
    schedule: &Schedule,
    variance: VarianceType,
    x0: &Tensor<2>,
    noise: &mut dyn NoiseSource,
) -> VlbTerms {
    let [n, d] = x0.dims();
    let x0v = to_vec(x0);
    let big_t = schedule.len();
    let mut kl = vec![0.0; n];
    let mut decoder = vec![0.0; n];
    let mut per_step = vec![0.0; big_t];
    for i in 0..big_t {
        let eps = noise.noise_like(x0);
        let x_t = q_sample(schedule, x0, &[i], &eps);
        let out = denoiser.denoise(&x_t, &[NoiseLevel::discrete(schedule, i)], None);
        let (xt, x0_hat) = (to_vec(&x_t), to_vec(&out.x0));
        let v = out.variance_output.as_ref().map(to_vec);
        let log_var = model_log_variance(schedule, variance, i, v.as_deref(), n * d);
        let (c0, ct) = (
            schedule.posterior_mean_coef_x0[i],
            schedule.posterior_mean_coef_xt[i],
        );
        for r in 0..n {
            let mut term = 0.0;
            for j in r * d..(r + 1) * d {
                let model_mean = c0 * x0_hat[j] + ct * xt[j];
                if i == 0 {
                    term -=
                        discretized_gaussian_log_likelihood(x0v[j], model_mean, 0.5 * log_var[j]);
                } else {
                    let true_mean = c0 * x0v[j] + ct * xt[j];
                    term += normal_kl(
                        true_mean,
                        schedule.posterior_log_variance_clipped[i],
                        model_mean,
                        log_var[j],
                    );
                }
            }
            if i == 0 {
                decoder[r] = term;
            } else {
                kl[r] += term;
            }
            per_step[i] += term / n as f64;
        }
    }
    let (m_t, v_t) = (
        schedule.sqrt_alpha_bar[big_t - 1],
        1.0 - schedule.alpha_bar[big_t - 1],
    );
    let prior: Vec<f64> = x0v
        .chunks(d)
        .map(|row| {
            row.iter()
                .map(|x| normal_kl(m_t * x, v_t.ln(), 0.0, 0.0))
                .sum()
        })
        .collect();
    let total = (0..n).map(|r| prior[r] + kl[r] + decoder[r]).collect();
    VlbTerms {
        prior,
        decoder,
        kl,
        per_step,
        total,
        dim: d,
    }
}
