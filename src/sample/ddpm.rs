//! DDPM ancestral sampling (Algorithm 2, SPEC §5): x_{t-1} = mu_theta(x_t, t) + sigma_t z, with
//! z = 0 on the last step. On a subsampled grid, beta_t becomes 1 - alpha_bar_t/alpha_bar_prev.

use super::{report, Callback, X0Clip};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::error::{Error, Result};
use crate::rng::NoiseSource;
use crate::tensor::lincomb;
use crate::variance::{learned_log_variance, step_beta, VarianceRange, VarianceType};
use burn::tensor::Tensor;

/// Options of the DDPM sampler.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DdpmOptions {
    pub variance: VarianceType,
    pub clip: X0Clip,
}

/// Posterior-mean coefficients (coef_x0, coef_xt) of the step from alpha_bar_t to
/// alpha_bar_prev (SPEC §2 with beta_t = 1 - alpha_bar_t/alpha_bar_prev).
pub fn posterior_mean_coefs(alpha_bar_t: f64, alpha_bar_prev: f64) -> (f64, f64) {
    let beta = step_beta(alpha_bar_t, alpha_bar_prev);
    let alpha = 1.0 - beta;
    let one_minus = 1.0 - alpha_bar_t;
    (
        alpha_bar_prev.sqrt() * beta / one_minus,
        alpha.sqrt() * (1.0 - alpha_bar_prev) / one_minus,
    )
}

/// One DDPM step from `x_t` given the denoiser's (already clipped) x0_hat. Returns the mean
/// mu_theta and the log-variance (scalar for fixed variances, a tensor for learned_range).
/// A learned variance with no `variance_output` (a model without variance channels) is an
/// error naming the variance type.
/// `alpha_bar_above` is the level the grid's step before this one started from (None on the
/// first step): the variance rules clip ln beta_tilde on the last step with it
/// ([`crate::variance`]).
pub fn ddpm_mean_variance(
    x_t: &Tensor<2>,
    x0_hat: &Tensor<2>,
    variance_output: Option<&Tensor<2>>,
    alpha_bar_t: f64,
    alpha_bar_prev: f64,
    variance: VarianceType,
    alpha_bar_above: Option<f64>,
) -> Result<(Tensor<2>, StepVariance)> {
    let (c0, ct) = posterior_mean_coefs(alpha_bar_t, alpha_bar_prev);
    let mean = lincomb(&[c0], x0_hat, &[ct], x_t);
    let range = VarianceRange::of_step(alpha_bar_t, alpha_bar_prev, alpha_bar_above);
    let var = match range.fixed_variance(variance) {
        Some(v) => StepVariance::Fixed(v),
        None => {
            let v = variance_output.ok_or_else(|| missing_variance_output(variance))?;
            let log_var = learned_log_variance(variance, v.clone(), &[range])
                .ok_or_else(|| missing_variance_output(variance))?;
            StepVariance::LogTensor(Box::new(log_var))
        }
    };
    Ok((mean, var))
}

fn missing_variance_output(variance: VarianceType) -> Error {
    let name = serde_json::to_value(variance)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{variance:?}"));
    Error::config(
        "variance",
        format!(
            "{name} needs a model with a variance output (trained with a learned variance); \
             this model predicts none: use fixed_small or fixed_large"
        ),
    )
}

/// The variance of one reverse step.
pub enum StepVariance {
    /// sigma_t^2, shared by all elements.
    Fixed(f64),
    /// log sigma_t^2 per element (learned_range, learned).
    LogTensor(Box<Tensor<2>>),
}

impl StepVariance {
    /// mean + sigma * noise.
    pub fn add_noise(&self, mean: Tensor<2>, noise: Tensor<2>) -> Tensor<2> {
        match self {
            StepVariance::Fixed(v) => mean + noise.mul_scalar(v.sqrt()),
            StepVariance::LogTensor(lv) => mean + noise * (**lv).clone().mul_scalar(0.5).exp(),
        }
    }
}

/// DDPM ancestral sampling along `grid` (levels from noisy to clean, see [`super`]). Fails
/// (before any noise is drawn) when the variance needs a model output the denoiser lacks.
pub fn sample_ddpm<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    options: &DdpmOptions,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Result<Tensor<2>> {
    let steps = grid.len() - 1;
    let mut x = x;
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let out = denoiser.denoise(&x, &[cur], labels);
        let x0_hat = options.clip.apply(out.x0);
        let (mean, var) = ddpm_mean_variance(
            &x,
            &x0_hat,
            out.variance_output.as_ref(),
            cur.alpha_bar(),
            next.alpha_bar(),
            options.variance,
            k.checked_sub(1).map(|j| grid[j].alpha_bar()),
        )?;
        x = if k + 1 < steps {
            let z = noise.noise_like(&mean);
            var.add_noise(mean, z)
        } else {
            mean
        };
        report(&mut callback, k, steps, next, &x, &x0_hat);
    }
    Ok(x)
}

#[cfg(test)]
mod tests;
