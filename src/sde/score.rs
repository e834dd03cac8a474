//! Score functions for the SDE samplers and the likelihood, and divergences of them.
//!
//! A [`ScoreFn`] returns grad_x log p_t(x) for a batch at one time t. Adapters:
//! - [`DenoiserScore`]: any [`Denoiser`] (the oracle, a discrete eps-net behind
//!   [`crate::denoiser::NetworkDenoiser`], ...) under any SDE. With the SDE's marginal
//!   `x_t = m x_0 + s z`, dividing by `sqrt(m^2 + s^2)` gives VP coordinates
//!   `x_vp = a x_0 + s_vp z` with `a = m / sqrt(m^2 + s^2)`, `s_vp = s / sqrt(m^2 + s^2)`,
//!   i.e. the noise level sigma = s / m; the denoiser's eps is E[z | x_t] and
//!   `score = -E[z | x_t] / s` (Tweedie, SPEC §3). This holds for sub-VP too, whose
//!   `m^2 + s^2 != 1`: nothing here assumes VP.
//! - [`NetworkScore`]: a continuous-time network predicting the score, or eps (score = -eps/s),
//!   with its time input t in [0, 1] or ln sigma; [`dsm_loss`] trains it (SPEC §4).
//! - [`OracleScore`]: the Gaussian mixture's score in closed form from its VE view
//!   (`score_t(x) = score_ve(x / m; sigma = s / m) / m`), with a closed-form Jacobian, so exact
//!   divergences of the oracle need no autodiff (and no finite differences).
//!
//! Divergences ([`Divergence`]): exact (sum over the D unit vectors of e_i^T J e_i, one autograd
//! pass each) or Hutchinson's estimator mean_k v_k^T J v_k over fixed seeded probes.

use super::{Marginal, Sde};
use crate::denoiser::{Denoiser, Network, NoiseLevel};
use crate::oracle::GaussianMixture;
use crate::prediction::{target, PredictionType};
use crate::rng::SampleRng;
use crate::schedule::Schedule;
use crate::tensor::{from_rows_like, lincomb, scale, to_vec};
use burn::tensor::Tensor;
use rand::Rng;

/// grad_x log p_t(x) for every row of x at time t.
pub trait ScoreFn {
    /// The score, shaped like `x`.
    fn score(&self, x: &Tensor<2>, t: f64) -> Tensor<2>;

    /// `v_i^T J_i v_i` per sample, J_i the Jacobian of the score at row i. The default is one
    /// reverse-mode pass with burn autodiff: x is moved to an autodiff device, so the score must
    /// be built from tensor ops on x's device (a network's parameters included).
    fn probe_jacobian(&self, x: &Tensor<2>, t: f64, v: &Tensor<2>) -> Vec<f64> {
        let x_ad = x.clone().detach().autodiff().require_grad();
        let v_ad = v.clone().detach().autodiff();
        let s = self.score(&x_ad, t);
        let grads = (s * v_ad).sum().backward();
        // d/dx sum_i v_i . s(x_i) = J_i^T v_i per row; dotted with v_i gives v_i^T J_i v_i.
        let jt_v = x_ad.grad(&grads).expect("score depends on x");
        to_vec(&(jt_v * v.clone().detach()).sum_dim(1))
    }

    /// Exact divergence tr J per sample: one probe per unit vector (D passes).
    fn divergence(&self, x: &Tensor<2>, t: f64) -> Vec<f64> {
        let [n, d] = x.dims();
        let mut div = vec![0.0; n];
        for j in 0..d {
            let mut e = vec![0.0; n * d];
            for i in 0..n {
                e[i * d + j] = 1.0;
            }
            let q = self.probe_jacobian(x, t, &from_rows_like(e, x));
            for (acc, q) in div.iter_mut().zip(q) {
                *acc += q;
            }
        }
        div
    }
}

impl<F: ScoreFn + ?Sized> ScoreFn for &F {
    fn score(&self, x: &Tensor<2>, t: f64) -> Tensor<2> {
        (**self).score(x, t)
    }
    fn probe_jacobian(&self, x: &Tensor<2>, t: f64, v: &Tensor<2>) -> Vec<f64> {
        (**self).probe_jacobian(x, t, v)
    }
    fn divergence(&self, x: &Tensor<2>, t: f64) -> Vec<f64> {
        (**self).divergence(x, t)
    }
}

/// Hutchinson probe distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// Entries +-1 with probability 1/2 (lowest variance for a fixed Jacobian).
    Rademacher,
    /// Entries N(0, 1).
    Gaussian,
}

/// How the divergence of the score is computed.
#[derive(Debug, Clone)]
pub enum Divergence {
    /// tr J exactly (low dimension).
    Exact,
    /// Hutchinson: tr J ~ mean_k v_k^T J v_k with probes fixed for the whole ODE solve.
    Hutchinson { probes: Vec<Tensor<2>> },
}

impl Divergence {
    /// `count` probes shaped like `like`, row i from sample stream i of `seed` (so a sample's
    /// estimate does not depend on the batch it is in). `count = 0` is treated as 1.
    pub fn hutchinson(kind: Probe, count: usize, like: &Tensor<2>, seed: u64) -> Self {
        let count = count.max(1);
        let [n, d] = like.dims();
        let mut rng = SampleRng::new(seed, 0, n);
        let probes = (0..count)
            .map(|_| {
                let v = match kind {
                    Probe::Gaussian => rng.normal(d),
                    Probe::Rademacher => {
                        let mut v = Vec::with_capacity(n * d);
                        for i in 0..n {
                            let s = rng.stream(i);
                            v.extend((0..d).map(|_| if s.random::<bool>() { 1.0 } else { -1.0 }));
                        }
                        v
                    }
                };
                from_rows_like(v, like)
            })
            .collect();
        Divergence::Hutchinson { probes }
    }

    /// div score per sample.
    pub fn score_divergence<F: ScoreFn + ?Sized>(
        &self,
        score: &F,
        x: &Tensor<2>,
        t: f64,
    ) -> Vec<f64> {
        match self {
            Divergence::Exact => score.divergence(x, t),
            Divergence::Hutchinson { probes } => {
                let mut acc = vec![0.0; x.dims()[0]];
                for v in probes {
                    for (a, q) in acc.iter_mut().zip(score.probe_jacobian(x, t, v)) {
                        *a += q;
                    }
                }
                acc.iter().map(|a| a / probes.len() as f64).collect()
            }
        }
    }
}

/// The timestep value a network is given at time t.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeInput {
    /// t in [0, 1] as is.
    Continuous,
    /// `scale * t`: what continuous-time networks trained here see ([`NETWORK_TIME_SCALE`]),
    /// so their sinusoidal embedding spans the frequencies a discrete-step model's does.
    Scaled(f64),
    /// ln sigma, sigma = s(t) / m(t) the VE noise scale (VE networks).
    LogSigma,
    /// The fractional code index of a discrete schedule with the same sigma (a discrete
    /// eps-model used as a continuous score, SPEC §3; see [`Schedule::sigma_to_t`]).
    Discrete(Box<Schedule>),
}

impl TimeInput {
    /// The value for time t whose marginal is `m`.
    pub fn value(&self, t: f64, m: Marginal) -> f64 {
        match self {
            TimeInput::Continuous => t,
            TimeInput::Scaled(scale) => scale * t,
            TimeInput::LogSigma => m.sigma().ln(),
            TimeInput::Discrete(schedule) => schedule.sigma_to_t(m.sigma()),
        }
    }
}

/// Time scale of the continuous-time networks diffuse trains (score_sde's DDPM++ convention:
/// the network sees 999 t for t in [0, 1]).
pub const NETWORK_TIME_SCALE: f64 = 999.0;

/// The noise level the denoiser interface uses for time t of an SDE.
pub fn noise_level<S: Sde + ?Sized>(sde: &S, t: f64, time: &TimeInput) -> NoiseLevel {
    let m = sde.marginal(t);
    NoiseLevel {
        sigma: m.sigma(),
        t: time.value(t, m),
    }
}

/// A [`Denoiser`] used as the score of an SDE (see the module docs for the conversion).
pub struct DenoiserScore<D, S> {
    pub denoiser: D,
    pub sde: S,
    pub time: TimeInput,
}

impl<D: Denoiser, S: Sde> ScoreFn for DenoiserScore<D, S> {
    fn score(&self, x: &Tensor<2>, t: f64) -> Tensor<2> {
        let m = self.sde.marginal(t);
        let norm = m.mean_coeff.hypot(m.std);
        let level = noise_level(&self.sde, t, &self.time);
        let x_vp = x.clone().div_scalar(norm);
        let eps = self.denoiser.denoise(&x_vp, &[level], None).eps;
        eps.mul_scalar(-1.0 / m.std)
    }
}

/// What a continuous-time score network outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreOutput {
    /// The score itself.
    Score,
    /// The noise z of x_t = m x_0 + s z; score = -output / s.
    Eps,
}

/// A continuous-time network used as a score: input x_t (SDE coordinates) and the time value.
pub struct NetworkScore<N, S> {
    pub net: N,
    pub sde: S,
    pub output: ScoreOutput,
    pub time: TimeInput,
}

impl<N: Network, S: Sde> NetworkScore<N, S> {
    /// The network's time inputs for one time per sample.
    fn time_inputs(&self, t: &[f64]) -> Vec<f64> {
        t.iter()
            .map(|&t| self.time.value(t, self.sde.marginal(t)))
            .collect()
    }

    /// The score with one time per sample (training batches mix times).
    pub fn score_at(&self, x: &Tensor<2>, t: &[f64]) -> Tensor<2> {
        let out = self.net.forward(x.clone(), &self.time_inputs(t), None);
        match self.output {
            ScoreOutput::Score => out,
            ScoreOutput::Eps => {
                let c: Vec<f64> = t.iter().map(|&t| -1.0 / self.sde.marginal(t).std).collect();
                scale(&c, out)
            }
        }
    }
}

impl<N: Network, S: Sde> ScoreFn for NetworkScore<N, S> {
    fn score(&self, x: &Tensor<2>, t: f64) -> Tensor<2> {
        let n = x.dims()[0];
        self.score_at(x, &vec![t; n])
    }
}

impl ScoreOutput {
    /// The same quantity as a discrete prediction type (its training target).
    pub fn prediction(self) -> PredictionType {
        match self {
            ScoreOutput::Score => PredictionType::Score,
            ScoreOutput::Eps => PredictionType::Eps,
        }
    }
}

/// Denoising score matching (SPEC §4) with lambda(t) = s(t)^2, as the weighted regression the
/// trainer minimises: for x_t = m x_0 + s z the per-sample loss
/// `lambda ||score_theta(x_t, t) + z / s||^2` equals `weight ||output - target||^2` with the
/// target of [`crate::prediction::target`] and
/// - an eps output (score_theta = -output / s): target z, weight lambda / s^2 = 1;
/// - a score output: target -z / s, weight lambda = s^2.
#[derive(Debug, Clone, PartialEq)]
pub struct DsmRegression {
    /// m(t) per sample: x_t = m x_0 + s z.
    pub mean_coeff: Vec<f64>,
    /// s(t) per sample.
    pub std: Vec<f64>,
    /// The weight of the squared error on the target, per sample.
    pub weight: Vec<f64>,
}

/// The DSM regression ([`DsmRegression`]) at times `t` (one per sample, drawn from U(eps, 1)
/// by the caller) for a network with `output`. The trainer and [`dsm_loss`] both use it.
pub fn dsm_regression<S: Sde + ?Sized>(sde: &S, output: ScoreOutput, t: &[f64]) -> DsmRegression {
    let marginals: Vec<Marginal> = t.iter().map(|&t| sde.marginal(t)).collect();
    let std: Vec<f64> = marginals.iter().map(|m| m.std).collect();
    DsmRegression {
        mean_coeff: marginals.iter().map(|m| m.mean_coeff).collect(),
        weight: std
            .iter()
            .map(|s| match output {
                ScoreOutput::Eps => 1.0,
                ScoreOutput::Score => s * s,
            })
            .collect(),
        std,
    }
}

/// The DSM loss of `model` on clean `x0` at times `t` with noise `z` ([`dsm_regression`]):
/// `weight ||output - target||^2` summed over dimensions and averaged over the batch (the
/// trainer averages over dimensions too, dividing this by D).
pub fn dsm_loss<N: Network, S: Sde>(
    model: &NetworkScore<N, S>,
    x0: &Tensor<2>,
    t: &[f64],
    z: &Tensor<2>,
) -> Tensor<1> {
    let r = dsm_regression(&model.sde, model.output, t);
    let (m, s) = (&r.mean_coeff, &r.std);
    let x_t = lincomb(m, x0, s, z);
    let target = target(model.output.prediction(), x0, z, m, s);
    let out = model.net.forward(x_t, &model.time_inputs(t), None);
    scale(&r.weight, (out - target).powi_scalar(2))
        .sum_dim(1)
        .mean()
}

/// The Gaussian-mixture oracle's exact score under an SDE, from its VE view.
pub struct OracleScore<'a, S> {
    pub mixture: &'a GaussianMixture,
    pub sde: S,
}

impl<S: Sde> OracleScore<'_, S> {
    /// (m, sigma = s / m) at time t.
    fn view(&self, t: f64) -> (f64, f64) {
        let m = self.sde.marginal(t);
        (m.mean_coeff, m.sigma())
    }
}

impl<S: Sde> ScoreFn for OracleScore<'_, S> {
    fn score(&self, x: &Tensor<2>, t: f64) -> Tensor<2> {
        let (m, sigma) = self.view(t);
        let y: Vec<f64> = to_vec(x).iter().map(|v| v / m).collect();
        let s = self.mixture.score_ve(&y, sigma);
        from_rows_like(s.into_iter().map(|v| v / m).collect(), x)
    }

    /// v^T H v with the closed-form Hessian H_t(x) = H_ve(x / m) / m^2.
    fn probe_jacobian(&self, x: &Tensor<2>, t: f64, v: &Tensor<2>) -> Vec<f64> {
        let (m, sigma) = self.view(t);
        let d = self.mixture.dim;
        let y: Vec<f64> = to_vec(x).iter().map(|v| v / m).collect();
        let h = self.mixture.score_hessian_ve(&y, sigma);
        let v = to_vec(v);
        v.chunks(d)
            .zip(h.chunks(d * d))
            .map(|(v, h)| {
                let mut q = 0.0;
                for i in 0..d {
                    for j in 0..d {
                        q += v[i] * h[i * d + j] * v[j];
                    }
                }
                q / (m * m)
            })
            .collect()
    }

    /// tr H_t(x) in closed form.
    fn divergence(&self, x: &Tensor<2>, t: f64) -> Vec<f64> {
        let (m, sigma) = self.view(t);
        let d = self.mixture.dim;
        let y: Vec<f64> = to_vec(x).iter().map(|v| v / m).collect();
        self.mixture
            .score_hessian_ve(&y, sigma)
            .chunks(d * d)
            .map(|h| (0..d).map(|i| h[i * d + i]).sum::<f64>() / (m * m))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sde::{VeSde, VpSde};
    use crate::tensor::from_rows;
    use burn::tensor::DType;

    /// A fixed "network" whose output depends on x and its time input: 0.3 tanh(x) + 0.01 t.
    struct Toy;

    impl Network for Toy {
        fn forward(&self, x: Tensor<2>, t: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
            let t = crate::tensor::column(t, &x);
            x.tanh().mul_scalar(0.3) + t.mul_scalar(0.01)
        }
    }

    #[test]
    fn dsm_regression_is_lambda_times_the_score_error() {
        // SPEC §4 in float64, per sample and element: lambda ||score_theta + z/s||^2 with
        // lambda = s^2 and score_theta = -out/s (eps output) or out (score output), m and s from
        // the VP closed form log m = -t^2 (20 - 0.1)/4 - 0.1 t/2 (VE: m = 1); against dsm_loss
        // (one mean over rows of D-sums). tol 1e-12 relative: a handful of float64 operations.
        let dev = crate::device::cpu();
        let (n, d) = (4, 3);
        let x0v: Vec<f64> = (0..n * d).map(|k| (k as f64 * 0.37).sin()).collect();
        let zv: Vec<f64> = (0..n * d).map(|k| (k as f64 * 1.3 + 0.2).cos()).collect();
        let (x0, z) = (
            from_rows(x0v.clone(), n, d, &dev, DType::F64),
            from_rows(zv.clone(), n, d, &dev, DType::F64),
        );
        let t = [1e-3, 0.1, 0.5, 1.0];
        let vp_m = |t: f64| (-0.25 * t * t * 19.9 - 0.05 * t).exp();
        for output in [ScoreOutput::Eps, ScoreOutput::Score] {
            let model = NetworkScore {
                net: Toy,
                sde: VpSde::default(),
                output,
                time: TimeInput::Scaled(NETWORK_TIME_SCALE),
            };
            let r = dsm_regression(&model.sde, output, &t);
            let mut want_loss = 0.0;
            for (k, &tk) in t.iter().enumerate() {
                let m = vp_m(tk);
                let s = (1.0 - m * m).sqrt();
                assert!((r.mean_coeff[k] - m).abs() < 1e-12 * m);
                assert!((r.std[k] - s).abs() < 1e-12 * s);
                let mut row = 0.0;
                for j in k * d..(k + 1) * d {
                    let x_t = m * x0v[j] + s * zv[j];
                    let out = 0.3 * x_t.tanh() + 0.01 * NETWORK_TIME_SCALE * tk;
                    let score = match output {
                        ScoreOutput::Eps => -out / s,
                        ScoreOutput::Score => out,
                    };
                    row += s * s * (score + zv[j] / s).powi(2);
                }
                want_loss += row / n as f64;
            }
            let got = dsm_loss(&model, &x0, &t, &z).into_scalar::<f64>();
            assert!(
                (got - want_loss).abs() < 1e-12 * want_loss,
                "{output:?}: {got} vs {want_loss}"
            );
        }
        // VE: m = 1, s = sigma(t); an eps output's weight is 1 whatever s is.
        let r = dsm_regression(&VeSde::default(), ScoreOutput::Eps, &t);
        assert!(r.mean_coeff.iter().all(|&m| m == 1.0) && r.weight.iter().all(|&w| w == 1.0));
    }
}
