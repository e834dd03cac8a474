//! The forward (noising) process on tensors (SPEC §2), with per-sample timesteps (code indices,
//! see the crate docs): a training batch mixes steps.

use crate::schedule::Schedule;
use crate::tensor::lincomb;
use burn::tensor::Tensor;

fn gather(table: &[f64], t: &[usize]) -> Vec<f64> {
    t.iter().map(|&i| table[i]).collect()
}

/// x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a sample of q(x_t | x_0).
pub fn q_sample(schedule: &Schedule, x0: &Tensor<2>, t: &[usize], eps: &Tensor<2>) -> Tensor<2> {
    lincomb(
        &gather(&schedule.sqrt_alpha_bar, t),
        x0,
        &gather(&schedule.sqrt_one_minus_alpha_bar, t),
        eps,
    )
}

/// Mean coefficient and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
pub fn q_mean_variance(schedule: &Schedule, t: usize) -> (f64, f64) {
    (
        schedule.sqrt_alpha_bar[t],
        schedule.sqrt_one_minus_alpha_bar[t].powi(2),
    )
}

/// One forward step: x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise ~ q(x_t | x_{t-1}).
pub fn q_step_sample(
    schedule: &Schedule,
    x_prev: &Tensor<2>,
    t: &[usize],
    noise: &Tensor<2>,
) -> Tensor<2> {
    let a: Vec<f64> = t.iter().map(|&i| schedule.alpha[i].sqrt()).collect();
    let b: Vec<f64> = t.iter().map(|&i| schedule.beta[i].sqrt()).collect();
    lincomb(&a, x_prev, &b, noise)
}

/// Posterior mean mu_tilde(x_t, x_0) = coef_x0 x_0 + coef_xt x_t of q(x_{t-1} | x_t, x_0).
pub fn q_posterior_mean(
    schedule: &Schedule,
    x0: &Tensor<2>,
    x_t: &Tensor<2>,
    t: &[usize],
) -> Tensor<2> {
    lincomb(
        &gather(&schedule.posterior_mean_coef_x0, t),
        x0,
        &gather(&schedule.posterior_mean_coef_xt, t),
        x_t,
    )
}

/// The same mean in its eps form, mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t):
/// the form mu_theta takes with a noise prediction (SPEC §3).
pub fn q_posterior_mean_from_eps(
    schedule: &Schedule,
    x_t: &Tensor<2>,
    eps: &Tensor<2>,
    t: &[usize],
) -> Tensor<2> {
    let c_xt: Vec<f64> = t.iter().map(|&i| 1.0 / schedule.alpha[i].sqrt()).collect();
    let c_eps: Vec<f64> = t
        .iter()
        .map(|&i| {
            -schedule.beta[i] / (schedule.sqrt_one_minus_alpha_bar[i] * schedule.alpha[i].sqrt())
        })
        .collect();
    lincomb(&c_xt, x_t, &c_eps, eps)
}

/// Posterior variance beta_tilde_t and its clipped log (t = 1 uses beta_tilde_2, SPEC §2).
pub fn q_posterior_variance(schedule: &Schedule, t: usize) -> (f64, f64) {
    (
        schedule.posterior_variance[t],
        schedule.posterior_log_variance_clipped[t],
    )
}

#[cfg(test)]
mod tests;
