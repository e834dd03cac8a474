//! Sigma-space samplers (Karras et al. 2022, SPEC §5): Euler, Heun and Euler ancestral, with
//! EDM's stochastic churn.
//!
//! Symbols: the state is in VE coordinates `x = x_0 + sigma eps` (`x = x_t / a`, SPEC §6), the
//! probability-flow ODE is `dx/dsigma = (x - D(x; sigma)) / sigma` with D the x_0 prediction,
//! `d_cur` / `d_prime` its slope at the start / end of a step, `sigma_hat = sigma (1 + gamma)`
//! the churned level and `x_hat` the state there. The denoiser works in VP scaling, so it is
//! called with `x_t = a x = x / sqrt(1 + sigma^2)` (diffusers' `scale_model_input`).
//!
//! Every grid level must have a finite sigma: x = x_t / a has no value at zero terminal SNR.
//! The grid builders ([`super::grid::sigma_space_grid`]) move such a level to
//! alpha_bar = 2^-24 (sigma ~ 4096), as diffusers does; these samplers panic on sigma = +inf.

use super::grid::TimeOfSigma;
use super::{report, Callback};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::rng::NoiseSource;
use crate::tensor::lincomb;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// EDM's stochastic churn (Karras et al. 2022, Algorithm 2) for Euler and Heun: at levels with
/// `s_tmin <= sigma <= s_tmax`, noise raises sigma to `sigma_hat = sigma (1 + gamma)`,
/// `gamma = min(s_churn / steps, sqrt(2) - 1)`, with noise scaled by `s_noise`.
/// Non-finite bounds (the default `s_tmax = +inf`) are stored as the strings `"inf"` / `"-inf"`,
/// since JSON has no infinity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Churn {
    #[serde(with = "number_or_string")]
    pub s_churn: f64,
    #[serde(with = "number_or_string")]
    pub s_tmin: f64,
    #[serde(with = "number_or_string")]
    pub s_tmax: f64,
    #[serde(with = "number_or_string")]
    pub s_noise: f64,
}

/// serde for an f64 that writes non-finite values as strings ("inf", "-inf", "NaN") and reads
/// either form back.
mod number_or_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&v.to_string())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(v) => Ok(v),
            Num::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Default for Churn {
    /// No churn: the deterministic samplers.
    fn default() -> Self {
        Churn {
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl Churn {
    /// gamma at level `sigma` of a `steps`-step run.
    pub fn gamma(&self, sigma: f64, steps: usize) -> f64 {
        if self.s_churn > 0.0 && (self.s_tmin..=self.s_tmax).contains(&sigma) {
            (self.s_churn / steps as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        }
    }

    /// Raises `x` from `level` to `sigma_hat = sigma (1 + gamma)`:
    /// `x_hat = x + sqrt(sigma_hat^2 - sigma^2) s_noise z`. As in EDM's Algorithm 2, the
    /// network is then evaluated at x_hat and sigma_hat, so the churned level gets the time
    /// input of sigma_hat (`time`), not the grid's timestep of `level`: a discrete-time network
    /// reads its noise level from t alone. (diffusers' `EulerDiscreteScheduler.step(s_churn)`
    /// differs: the caller has already run the model on the un-churned sample at the grid's
    /// sigma and timestep, and that output is reused at sigma_hat; the network never sees x_hat.)
    pub fn apply(
        &self,
        x: Tensor<2>,
        level: NoiseLevel,
        steps: usize,
        time: &TimeOfSigma,
        noise: &mut dyn NoiseSource,
    ) -> (Tensor<2>, NoiseLevel) {
        let gamma = self.gamma(level.sigma, steps);
        if gamma == 0.0 {
            return (x, level);
        }
        let sigma_hat = level.sigma * (1.0 + gamma);
        let z = noise.noise_like(&x);
        let std = (sigma_hat * sigma_hat - level.sigma * level.sigma).sqrt() * self.s_noise;
        let hat = NoiseLevel {
            sigma: sigma_hat,
            t: time.t(sigma_hat),
        };
        (x + z.mul_scalar(std), hat)
    }
}

/// D(x; sigma): the denoiser's x_0 prediction for a VE state, called with x_t = x / sqrt(1 + sigma^2).
pub fn denoise_ve<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: &Tensor<2>,
    level: NoiseLevel,
    labels: Option<&[i64]>,
) -> Tensor<2> {
    assert!(
        level.sigma.is_finite(),
        "sigma-space samplers need finite sigmas; build the grid with grid::sigma_space_grid"
    );
    let x_t = x.clone().mul_scalar(level.alpha());
    denoiser.denoise(&x_t, &[level], labels).x0
}

/// The ODE slope d = (x - D(x; sigma)) / sigma (SPEC §5).
pub fn ode_slope(x: &Tensor<2>, x0_hat: &Tensor<2>, sigma: f64) -> Tensor<2> {
    lincomb(&[1.0 / sigma], x, &[-1.0 / sigma], x0_hat)
}

/// An Euler step of the ODE: x + (sigma_next - sigma) d.
pub fn euler_step(x: &Tensor<2>, d: &Tensor<2>, sigma: f64, sigma_next: f64) -> Tensor<2> {
    lincomb(&[1.0], x, &[sigma_next - sigma], d)
}

/// Euler's method on the probability-flow ODE along `grid` (VE state `x` at `grid[0]`), with
/// optional churn (no churn: a deterministic first-order solver). `time` gives the network's
/// time input at churned levels (the rule the grid's own timesteps follow).
#[allow(clippy::too_many_arguments)]
pub fn sample_euler<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    churn: &Churn,
    time: &TimeOfSigma,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    callback: Callback,
) -> Tensor<2> {
    sample_karras(
        denoiser,
        x,
        grid,
        (churn, time),
        false,
        noise,
        labels,
        callback,
    )
}

/// Heun's method (EDM Algorithm 2): an Euler predictor, then the trapezoidal corrector
/// `x_next = x_hat + (sigma_next - sigma_hat) (d_cur + d_prime) / 2`; the last step, to
/// sigma = 0, is a plain Euler step. 2 steps - 1 denoiser calls. `time` as in [`sample_euler`].
#[allow(clippy::too_many_arguments)]
pub fn sample_heun<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    churn: &Churn,
    time: &TimeOfSigma,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    callback: Callback,
) -> Tensor<2> {
    sample_karras(
        denoiser,
        x,
        grid,
        (churn, time),
        true,
        noise,
        labels,
        callback,
    )
}

#[allow(clippy::too_many_arguments)]
fn sample_karras<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    (churn, time): (&Churn, &TimeOfSigma),
    heun: bool,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Tensor<2> {
    let steps = grid.len() - 1;
    let mut x = x;
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let (x_hat, hat) = churn.apply(x, cur, steps, time, noise);
        let x0_hat = denoise_ve(denoiser, &x_hat, hat, labels);
        let d_cur = ode_slope(&x_hat, &x0_hat, hat.sigma);
        x = euler_step(&x_hat, &d_cur, hat.sigma, next.sigma);
        if heun && next.sigma > 0.0 {
            let x0_next = denoise_ve(denoiser, &x, next, labels);
            let d_prime = ode_slope(&x, &x0_next, next.sigma);
            let d_mean = (d_cur + d_prime).mul_scalar(0.5);
            x = euler_step(&x_hat, &d_mean, hat.sigma, next.sigma);
        }
        report(&mut callback, k, steps, next, &x, &x0_hat);
    }
    x
}

/// The ancestral split of a step from sigma to sigma_next (k-diffusion's `get_ancestral_step`):
/// `sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))`,
/// `sigma_down = sqrt(sigma_next^2 - sigma_up^2)`.
pub fn ancestral_split(sigma: f64, sigma_next: f64, eta: f64) -> (f64, f64) {
    if sigma_next == 0.0 || eta == 0.0 {
        return (sigma_next, 0.0);
    }
    let up = (eta
        * (sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma))
            .max(0.0)
            .sqrt())
    .min(sigma_next);
    ((sigma_next * sigma_next - up * up).sqrt(), up)
}

/// Euler ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up, so each
/// step lands on the marginal at sigma_next (eta = 1: the ancestral sampler of k-diffusion).
#[allow(clippy::too_many_arguments)]
pub fn sample_euler_ancestral<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    eta: f64,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Tensor<2> {
    let steps = grid.len() - 1;
    let mut x = x;
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let x0_hat = denoise_ve(denoiser, &x, cur, labels);
        let d_cur = ode_slope(&x, &x0_hat, cur.sigma);
        let (sigma_down, sigma_up) = ancestral_split(cur.sigma, next.sigma, eta);
        x = euler_step(&x, &d_cur, cur.sigma, sigma_down);
        if sigma_up > 0.0 {
            let z = noise.noise_like(&x);
            x = x + z.mul_scalar(sigma_up);
        }
        report(&mut callback, k, steps, next, &x, &x0_hat);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestral_split_keeps_the_variance_of_the_next_level() {
        // sigma_down^2 + sigma_up^2 = sigma_next^2 exactly (float64 rounding, 1e-12).
        for (s, sn) in [(10.0, 3.0), (1.0, 0.5), (0.3, 0.01)] {
            let (down, up) = ancestral_split(s, sn, 1.0);
            assert!((down * down + up * up - sn * sn).abs() < 1e-12);
            assert!(down < sn && up > 0.0);
        }
        assert_eq!(ancestral_split(1.0, 0.0, 1.0), (0.0, 0.0));
        assert_eq!(ancestral_split(1.0, 0.5, 0.0), (0.5, 0.0));
    }

    #[test]
    fn churn_gamma_follows_edm() {
        let c = Churn {
            s_churn: 40.0,
            s_tmin: 0.05,
            s_tmax: 50.0,
            s_noise: 1.003,
        };
        // min(40/10, sqrt2 - 1) inside the band, 0 outside it.
        assert_eq!(c.gamma(1.0, 10), std::f64::consts::SQRT_2 - 1.0);
        assert_eq!(c.gamma(1.0, 1000), 0.04);
        assert_eq!(c.gamma(0.01, 10), 0.0);
        assert_eq!(c.gamma(80.0, 10), 0.0);
        assert_eq!(Churn::default().gamma(1.0, 10), 0.0);
    }

    #[test]
    fn churn_round_trips_through_json_with_infinite_bounds() {
        // JSON has no infinity: the default s_tmax = +inf is written as "inf" and read back.
        let json = serde_json::to_string(&Churn::default()).unwrap();
        assert!(json.contains("\"s_tmax\":\"inf\""), "{json}");
        assert_eq!(
            serde_json::from_str::<Churn>(&json).unwrap(),
            Churn::default()
        );
        let c = Churn {
            s_churn: 40.0,
            s_tmin: f64::NEG_INFINITY,
            s_tmax: 50.0,
            s_noise: 1.003,
        };
        let back: Churn = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        // Plain numbers and missing fields (defaults) read as before.
        let c: Churn = serde_json::from_str(r#"{"s_churn": 1, "s_tmax": 2.5}"#).unwrap();
        assert_eq!(
            (c.s_churn, c.s_tmin, c.s_tmax, c.s_noise),
            (1.0, 0.0, 2.5, 1.0)
        );
    }
}
