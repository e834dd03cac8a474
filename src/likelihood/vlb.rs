//! The discrete variational bound in nats and bits/dim (SPEC §4, improved-diffusion's
//! `calc_bpd_loop`): L_vlb = L_T + sum_{t=2..T} L_{t-1} + L_0 with
//! - L_T = KL(q(x_T | x_0) || N(0, I)),
//! - L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) at one draw x_t ~ q(x_t | x_0)
//!   (an unbiased estimate of E_q[KL]),
//! - L_0 = -log p_theta(x_0 | x_1), the discretised Gaussian decoder over 256 bins.
//!
//! Model variances ([`crate::variance`], SPEC §2-§3): fixed_small uses log beta_tilde clipped at
//! t = 1 (beta_tilde_2), fixed_large beta_t at every step (t = 1 included: DDPM's code used
//! beta_tilde_2 there, SPEC §3 says beta_t), learned_range interpolates between log beta_t and
//! the clipped log beta_tilde_t. Math step t is code index
//! i = t - 1 (crate docs). The terms are the tensor formulas of [`super::terms`], evaluated in the
//! dtype of `x0` (float64 for reported numbers).

use super::terms::{discretized_gaussian_log_likelihood, normal_kl};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::forward::{q_posterior_mean, q_sample};
use crate::rng::NoiseSource;
use crate::schedule::Schedule;
use crate::tensor::{column, to_vec};
use crate::variance::{learned_log_variance, VarianceRange, VarianceType};
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

/// `table[i]` for each code index of `steps` as a `[len, 1]` column shaped for `like`.
fn gathered(table: &[f64], steps: &[usize], like: &Tensor<2>) -> Tensor<2> {
    let values: Vec<f64> = steps.iter().map(|&i| table[i]).collect();
    column(&values, like)
}

/// log sigma_t^2 of p_theta(x_{t-1} | x_t) at code indices `steps` (one per sample, or one for
/// the batch): a `[len, 1]` column for the fixed variances, `[N, D]` for the learned ones,
/// whose `variance_output` is the network's v (in [-1, 1] for learned_range, sigma^2 itself
/// for learned). `like` gives dtype and device. The rules and their t = 1 convention are
/// [`crate::variance`]'s, on the schedule's [`Schedule::variance_range`].
///
/// # Panics
/// For a learned variance without `variance_output` (a model/config mismatch the caller checks).
pub fn model_log_variance(
    schedule: &Schedule,
    variance: VarianceType,
    steps: &[usize],
    variance_output: Option<Tensor<2>>,
    like: &Tensor<2>,
) -> Tensor<2> {
    let ranges: Vec<VarianceRange> = steps.iter().map(|&i| schedule.variance_range(i)).collect();
    let fixed: Option<Vec<f64>> = ranges
        .iter()
        .map(|r| r.fixed_log_variance(variance))
        .collect();
    match fixed {
        Some(lv) => column(&lv, like),
        None => {
            let v =
                variance_output.expect("a learned variance needs a model with a variance output");
            learned_log_variance(variance, v, &ranges).expect("a learned variance type")
        }
    }
}

/// The bound's term at code indices `steps` (one per sample, or one for the batch), per sample
/// in nats summed over dimensions (`[N]`): at i = 0 (t = 1) the decoder NLL
/// L_0 = -log p_theta(x_0 | x_1) of 8-bit `x0`, otherwise
/// L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || N(model_mean, e^{model_log_variance})). Both the float64
/// bound ([`vlb`]) and the hybrid training loss ([`crate::loss::hybrid`]) call this.
pub fn step_term(
    schedule: &Schedule,
    steps: &[usize],
    x0: &Tensor<2>,
    x_t: &Tensor<2>,
    model_mean: Tensor<2>,
    model_log_variance: Tensor<2>,
) -> Tensor<1> {
    let [n, _] = x0.dims();
    let any_decoder = steps.contains(&0);
    let all_decoder = steps.iter().all(|&i| i == 0);
    let decoder_nll = any_decoder.then(|| {
        discretized_gaussian_log_likelihood(
            x0.clone(),
            model_mean.clone(),
            model_log_variance.clone().mul_scalar(0.5),
        )
        .sum_dim(1)
        .neg()
    });
    let kl = (!all_decoder).then(|| {
        normal_kl(
            q_posterior_mean(schedule, x0, x_t, steps),
            gathered(&schedule.posterior_log_variance_clipped, steps, x0),
            model_mean,
            model_log_variance,
        )
        .sum_dim(1)
    });
    let term = match (decoder_nll, kl) {
        (Some(nll), None) => nll,
        (None, Some(kl)) => kl,
        (Some(nll), Some(kl)) => {
            let at_zero: Vec<f64> = steps.iter().map(|&i| f64::from(i == 0)).collect();
            kl.mask_where(column(&at_zero, x0).greater_elem(0.5), nll)
        }
        (None, None) => panic!("step_term needs at least one step"),
    };
    term.reshape([n])
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
    let big_t = schedule.len();
    let mut kl = vec![0.0; n];
    let mut decoder = vec![0.0; n];
    let mut per_step = vec![0.0; big_t];
    for i in 0..big_t {
        let eps = noise.noise_like(x0);
        let x_t = q_sample(schedule, x0, &[i], &eps);
        let out = denoiser.denoise(&x_t, &[NoiseLevel::discrete(schedule, i)], None);
        let log_var = model_log_variance(schedule, variance, &[i], out.variance_output, x0);
        let model_mean = q_posterior_mean(schedule, &out.x0, &x_t, &[i]);
        let term = step_term(schedule, &[i], x0, &x_t, model_mean, log_var);
        let term: Vec<f64> = term.to_data().try_into_vec_as().expect("float tensor");
        for (r, v) in term.iter().enumerate() {
            if i == 0 {
                decoder[r] = *v;
            } else {
                kl[r] += v;
            }
        }
        per_step[i] = term.iter().sum::<f64>() / n as f64;
    }
    // L_T = KL(N(sqrt(alpha_bar_T) x_0, 1 - alpha_bar_T) || N(0, 1)).
    let (m_t, v_t) = (
        schedule.sqrt_alpha_bar[big_t - 1],
        1.0 - schedule.alpha_bar[big_t - 1],
    );
    let prior = normal_kl(
        x0.clone().mul_scalar(m_t),
        column(&[v_t.ln()], x0),
        x0.zeros_like(),
        column(&[0.0], x0),
    )
    .sum_dim(1);
    let prior = to_vec(&prior);
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
