//! DDIM (Song et al. 2021, SPEC §5): a non-Markovian reverse process with the DDPM marginals.
//!
//! Symbols: `alpha_bar_t` / `alpha_bar_prev` are the levels a step moves between, `x0_hat` and
//! `eps_hat` the denoiser's predictions at `x_t`, `eta` in [0, 1] the stochasticity, and
//! `sigma = eta sqrt((1 - alpha_bar_prev)/(1 - alpha_bar_t)) sqrt(1 - alpha_bar_t/alpha_bar_prev)`
//! the standard deviation of the injected noise.
//!
//! `x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z`.
//! With eta = 0 this is a first-order solver of the probability-flow ODE, and run towards more
//! noise (alpha_bar_prev < alpha_bar_t) it is DDIM inversion, x_0 -> x_T.
//!
//! Zero terminal SNR (alpha_bar_t = 0, sigma = +inf) needs no special case: the step never
//! divides by alpha_bar_t, and the denoiser gives x0_hat and eps_hat directly.

use super::{report, Callback, X0Clip};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::rng::NoiseSource;
use crate::tensor::lincomb;
use burn::tensor::Tensor;

/// Options of the DDIM sampler.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DdimOptions {
    /// 0: deterministic (ODE); 1: DDPM-like ancestral noise.
    pub eta: f64,
    /// Clipping of x0_hat. eps_hat is not recomputed from the clipped x0_hat (as diffusers).
    pub clip: X0Clip,
}

/// The standard deviation of DDIM's injected noise (SPEC §5):
/// `eta sqrt((1 - alpha_bar_prev)/(1 - alpha_bar_t)) sqrt(1 - alpha_bar_t/alpha_bar_prev)`.
pub fn ddim_sigma(alpha_bar_t: f64, alpha_bar_prev: f64, eta: f64) -> f64 {
    if eta == 0.0 {
        return 0.0;
    }
    let var = (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev);
    eta * var.max(0.0).sqrt()
}

/// One DDIM step (SPEC §5) from level alpha_bar_t to alpha_bar_prev:
/// `sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma noise`.
/// `noise` is used only when sigma > 0 (pass `None` for eta = 0). x_t itself is not needed: the
/// denoiser's x0_hat and eps_hat already carry it (x_t = a x0_hat + s eps_hat before clipping).
pub fn ddim_step(
    x0_hat: &Tensor<2>,
    eps_hat: &Tensor<2>,
    alpha_bar_t: f64,
    alpha_bar_prev: f64,
    eta: f64,
    noise: Option<Tensor<2>>,
) -> Tensor<2> {
    let sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta);
    let c_eps = (1.0 - alpha_bar_prev - sigma * sigma).max(0.0).sqrt();
    let x_prev = lincomb(&[alpha_bar_prev.sqrt()], x0_hat, &[c_eps], eps_hat);
    match noise {
        Some(z) if sigma > 0.0 => x_prev + z.mul_scalar(sigma),
        _ => x_prev,
    }
}

/// DDIM sampling along `grid` (levels from noisy to clean, see [`super`]); noise is drawn only
/// on steps whose sigma is positive.
pub fn sample_ddim<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    options: &DdimOptions,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Tensor<2> {
    let steps = grid.len() - 1;
    let mut x = x;
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let out = denoiser.denoise(&x, &[cur], labels);
        let x0_hat = options.clip.apply(out.x0);
        let (alpha_bar_t, alpha_bar_prev) = (cur.alpha_bar(), next.alpha_bar());
        let z = (ddim_sigma(alpha_bar_t, alpha_bar_prev, options.eta) > 0.0)
            .then(|| noise.noise_like(&x));
        x = ddim_step(
            &x0_hat,
            &out.eps,
            alpha_bar_t,
            alpha_bar_prev,
            options.eta,
            z,
        );
        report(&mut callback, k, steps, next, &x, &x0_hat);
    }
    x
}

/// Deterministic DDIM inversion x_0 -> x_T along an ascending `grid` (clean to noisy, e.g. from
/// [`super::grid::ddim_inversion_grid`]): step k evaluates the denoiser at `grid[k]` and moves
/// the state to the level of `grid[k + 1]` with the eta = 0 DDIM step.
pub fn ddim_invert<D: Denoiser + ?Sized>(
    denoiser: &D,
    x0: Tensor<2>,
    grid: &[NoiseLevel],
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Tensor<2> {
    let steps = grid.len() - 1;
    let mut x = x0;
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let out = denoiser.denoise(&x, &[cur], labels);
        x = ddim_step(
            &out.x0,
            &out.eps,
            cur.alpha_bar(),
            next.alpha_bar(),
            0.0,
            None,
        );
        report(&mut callback, k, steps, next, &x, &out.x0);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{from_rows, to_vec};
    use burn::tensor::DType;

    fn t(v: Vec<f64>) -> Tensor<2> {
        let n = v.len();
        from_rows(v, 1, n, &crate::device::cpu(), DType::F64)
    }

    #[test]
    fn eta_one_matches_the_ddpm_posterior_variance() {
        // SPEC §5: with eta = 1, sigma^2 = beta_tilde = (1 - ab_prev)/(1 - ab_t) (1 - ab_t/ab_prev).
        let (ab_t, ab_prev) = (0.3, 0.8);
        let s = ddim_sigma(ab_t, ab_prev, 1.0);
        let beta_tilde = crate::variance::posterior_variance(ab_t, ab_prev);
        assert!((s * s - beta_tilde).abs() < 1e-15, "{s} vs {beta_tilde}");
        assert_eq!(ddim_sigma(ab_t, ab_prev, 0.0), 0.0);
    }

    #[test]
    fn deterministic_step_keeps_the_forward_marginal_form() {
        // x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps, by hand (float64, 1e-15).
        let (x0, eps) = (t(vec![0.5, -1.0]), t(vec![1.5, 0.25]));
        let got = to_vec(&ddim_step(&x0, &eps, 0.2, 0.9, 0.0, None));
        let want = [
            0.9f64.sqrt() * 0.5 + 0.1f64.sqrt() * 1.5,
            -(0.9f64.sqrt()) + 0.1f64.sqrt() * 0.25,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15);
        }
        // Zero terminal SNR: alpha_bar_t = 0 is a finite step.
        let got = to_vec(&ddim_step(
            &x0,
            &eps,
            0.0,
            0.9,
            1.0,
            Some(t(vec![1.0, 1.0])),
        ));
        assert!(got.iter().all(|v| v.is_finite()));
    }
}
