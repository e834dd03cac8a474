//! The exact-score oracle (SPEC §8): a Gaussian mixture sum_k w_k N(m_k, S_k) whose every
//! noised marginal is again a mixture, so its score, eps- and x0-predictions and log-density
//! are closed form. It implements [`Denoiser`], so any sampler runs on it with no training.
//!
//! With `a = sqrt(alpha_bar)`, `s = sqrt(1 - alpha_bar)` (VP coordinates, `x_t = a x_0 + s eps`)
//! component k of p_t is N(a m_k, C_k), `C_k = a^2 S_k + s^2 I`, and for `r = x_t - a m_k`:
//! `E[x_0 | x_t, k] = m_k + a S_k C_k^{-1} r`, `E[eps | x_t, k] = s C_k^{-1} r`,
//! `grad log N = -C_k^{-1} r`; mixing by the responsibilities gives the exact quantities.
//! The VE view (`x = x_0 + sigma eps`) is the same marginal scaled by `1/a` (SPEC §6).

use crate::denoiser::{Denoised, Denoiser, NoiseLevel};
use crate::error::{Error, Result};
use crate::tensor::{from_rows_like, to_vec};
use burn::tensor::Tensor;
use rand::Rng;
use rand_distr::StandardNormal;
use std::f64::consts::PI;

/// A component covariance: diagonal (any dimension, O(D)) or full (row-major D x D).
#[derive(Debug, Clone, PartialEq)]
pub enum Covariance {
    Diag(Vec<f64>),
    Full(Vec<f64>),
}

/// A Gaussian mixture in D dimensions.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    pub dim: usize,
    pub weights: Vec<f64>,
    pub means: Vec<Vec<f64>>,
    pub covs: Vec<Covariance>,
    /// Cholesky factors of the clean covariances, for sampling.
    chol: Vec<Factor>,
}

/// A factorised SPD matrix: C = diag(c) or C = L L^T.
#[derive(Debug, Clone)]
enum Factor {
    Diag(Vec<f64>),
    Chol { l: Vec<f64>, d: usize },
}

impl Factor {
    fn new(cov: &Covariance, d: usize, scale: f64, jitter: f64) -> Option<Factor> {
        match cov {
            Covariance::Diag(v) => {
                let c: Vec<f64> = v.iter().map(|x| scale * x + jitter).collect();
                c.iter().all(|&x| x > 0.0).then_some(Factor::Diag(c))
            }
            Covariance::Full(m) => {
                let mut a: Vec<f64> = m.iter().map(|x| scale * x).collect();
                for i in 0..d {
                    a[i * d + i] += jitter;
                }
                cholesky(&a, d).map(|l| Factor::Chol { l, d })
            }
        }
    }

    fn log_det(&self) -> f64 {
        match self {
            Factor::Diag(c) => c.iter().map(|x| x.ln()).sum(),
            Factor::Chol { l, d } => (0..*d).map(|i| 2.0 * l[i * d + i].ln()).sum(),
        }
    }

    /// C^{-1} r.
    fn solve(&self, r: &[f64]) -> Vec<f64> {
        match self {
            Factor::Diag(c) => r.iter().zip(c).map(|(r, c)| r / c).collect(),
            Factor::Chol { l, d } => {
                let d = *d;
                let mut y = r.to_vec();
                for i in 0..d {
                    let s: f64 = (0..i).map(|j| l[i * d + j] * y[j]).sum();
                    y[i] = (y[i] - s) / l[i * d + i];
                }
                for i in (0..d).rev() {
                    let s: f64 = (i + 1..d).map(|j| l[j * d + i] * y[j]).sum();
                    y[i] = (y[i] - s) / l[i * d + i];
                }
                y
            }
        }
    }

    /// L z (a draw from N(0, C) when z ~ N(0, I)).
    fn mul_l(&self, z: &[f64]) -> Vec<f64> {
        match self {
            Factor::Diag(c) => z.iter().zip(c).map(|(z, c)| z * c.sqrt()).collect(),
            Factor::Chol { l, d } => (0..*d)
                .map(|i| (0..=i).map(|j| l[i * d + j] * z[j]).sum())
                .collect(),
        }
    }
}

fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

fn cov_mul(cov: &Covariance, y: &[f64]) -> Vec<f64> {
    match cov {
        Covariance::Diag(v) => y.iter().zip(v).map(|(y, v)| y * v).collect(),
        Covariance::Full(m) => {
            let d = y.len();
            (0..d)
                .map(|i| (0..d).map(|j| m[i * d + j] * y[j]).sum())
                .collect()
        }
    }
}

/// The noised mixture at one level, factorised once and reused for every sample at that level.
struct NoisedMixture<'a> {
    gm: &'a GaussianMixture,
    a: f64,
    s: f64,
    factors: Vec<Factor>,
    log_norm: Vec<f64>,
}

/// Exact posterior quantities at one point.
#[derive(Debug, Clone)]
pub struct Posterior {
    pub log_density: f64,
    pub x0: Vec<f64>,
    pub eps: Vec<f64>,
    pub score: Vec<f64>,
}

impl NoisedMixture<'_> {
    /// Per component k: the responsibility r_k = p(k | x) and C_k^{-1} (x - a m_k); and log p(x).
    fn components(&self, x: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>, f64) {
        let gm = self.gm;
        let k = gm.weights.len();
        let mut logs = Vec::with_capacity(k);
        let mut solved = Vec::with_capacity(k);
        for c in 0..k {
            let r: Vec<f64> = x
                .iter()
                .zip(&gm.means[c])
                .map(|(x, m)| x - self.a * m)
                .collect();
            let cr = self.factors[c].solve(&r);
            let quad: f64 = r.iter().zip(&cr).map(|(r, c)| r * c).sum();
            logs.push(gm.weights[c].ln() + self.log_norm[c] - 0.5 * quad);
            solved.push(cr);
        }
        let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let log_density = max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        let resp = logs.iter().map(|l| (l - log_density).exp()).collect();
        (resp, solved, log_density)
    }

    fn at(&self, x: &[f64]) -> Posterior {
        let gm = self.gm;
        let (resp, solved, log_density) = self.components(x);
        let d = gm.dim;
        let (mut x0, mut eps, mut score) = (vec![0.0; d], vec![0.0; d], vec![0.0; d]);
        for (c, (r, cr)) in resp.iter().zip(&solved).enumerate() {
            let s_cr = cov_mul(&gm.covs[c], cr);
            for i in 0..d {
                x0[i] += r * (gm.means[c][i] + self.a * s_cr[i]);
                eps[i] += r * self.s * cr[i];
                score[i] -= r * cr[i];
            }
        }
        Posterior {
            log_density,
            x0,
            eps,
            score,
        }
    }
}

impl NoisedMixture<'_> {
    /// Hessian of log p_t at one point, row-major D x D (used for exact divergences of the
    /// score, SPEC §6). With responsibilities r_k, per-component scores u_k = -C_k^{-1} res_k
    /// and the mixture score u = sum_k r_k u_k:
    /// `H = sum_k r_k (u_k u_k^T - C_k^{-1}) - u u^T`.
    fn hessian_at(&self, x: &[f64]) -> Vec<f64> {
        let d = self.gm.dim;
        let (resp, solved, _) = self.components(x);
        let u: Vec<Vec<f64>> = solved
            .iter()
            .map(|cr| cr.iter().map(|v| -v).collect())
            .collect();
        let mut h = vec![0.0; d * d];
        let mut score = vec![0.0; d];
        for (c, &resp) in resp.iter().enumerate() {
            for j in 0..d {
                // Column j of C_k^{-1}.
                let mut e = vec![0.0; d];
                e[j] = 1.0;
                let inv_col = self.factors[c].solve(&e);
                for i in 0..d {
                    h[i * d + j] += resp * (u[c][i] * u[c][j] - inv_col[i]);
                }
            }
            for i in 0..d {
                score[i] += resp * u[c][i];
            }
        }
        for i in 0..d {
            for j in 0..d {
                h[i * d + j] -= score[i] * score[j];
            }
        }
        h
    }
}

impl GaussianMixture {
    /// Hessian of log p_sigma (the VE marginal N(m_k, S_k + sigma^2 I)) per row of `x`:
    /// row-major D x D blocks, concatenated. Its trace is the divergence of [`Self::score_ve`].
    pub fn score_hessian_ve(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        let nm = self.noised(1.0, sigma);
        x.chunks(self.dim)
            .flat_map(|row| nm.hessian_at(row))
            .collect()
    }
}

impl GaussianMixture {
    /// Validates and builds a mixture: weights positive (normalised to sum 1), one mean of
    /// length D and one SPD covariance per component.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, covs: Vec<Covariance>) -> Result<Self> {
        let k = weights.len();
        if k == 0 || means.len() != k || covs.len() != k {
            return Err(Error::config(
                "mixture",
                "weights, means and covariances must have the same non-zero count",
            ));
        }
        if weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(Error::config("mixture weights", "must be finite and > 0"));
        }
        let total: f64 = weights.iter().sum();
        let weights = weights.iter().map(|w| w / total).collect();
        let dim = means[0].len();
        let mut chol = Vec::with_capacity(k);
        for (c, (m, cov)) in means.iter().zip(&covs).enumerate() {
            let len = match cov {
                Covariance::Diag(v) => v.len(),
                Covariance::Full(v) => (v.len() as f64).sqrt() as usize,
            };
            if m.len() != dim
                || len != dim
                || matches!(cov, Covariance::Full(v) if v.len() != dim * dim)
            {
                return Err(Error::config(
                    "mixture",
                    format!("component {c} does not have dimension {dim}"),
                ));
            }
            chol.push(Factor::new(cov, dim, 1.0, 0.0).ok_or_else(|| {
                Error::config(
                    "mixture",
                    format!("covariance {c} is not positive definite"),
                )
            })?);
        }
        Ok(GaussianMixture {
            dim,
            weights,
            means,
            covs,
            chol,
        })
    }

    /// The 2-D test mixture used across the suite: three anisotropic components with unequal
    /// weights, standardised scale (overall variance ~1 per dimension).
    pub fn toy_2d() -> Self {
        GaussianMixture::new(
            vec![0.5, 0.3, 0.2],
            vec![vec![-0.9, -0.5], vec![0.9, -0.3], vec![0.1, 1.1]],
            vec![
                Covariance::Full(vec![0.10, 0.06, 0.06, 0.08]),
                Covariance::Full(vec![0.03, -0.02, -0.02, 0.09]),
                Covariance::Diag(vec![0.15, 0.02]),
            ],
        )
        .expect("valid built-in mixture")
    }

    fn noised(&self, a: f64, s: f64) -> NoisedMixture<'_> {
        let d = self.dim as f64;
        let factors: Vec<Factor> = self
            .covs
            .iter()
            .map(|c| Factor::new(c, self.dim, a * a, s * s).expect("noised covariance stays SPD"))
            .collect();
        let log_norm = factors
            .iter()
            .map(|f| -0.5 * (f.log_det() + d * (2.0 * PI).ln()))
            .collect();
        NoisedMixture {
            gm: self,
            a,
            s,
            factors,
            log_norm,
        }
    }

    /// Exact posterior quantities of the VP-noised marginal at `level` for every row of `x`
    /// (row-major, D columns).
    pub fn posterior_vp(&self, x: &[f64], level: NoiseLevel) -> Vec<Posterior> {
        let nm = self.noised(level.alpha(), level.sigma_vp());
        x.chunks(self.dim).map(|row| nm.at(row)).collect()
    }

    /// log p_t(x_t) of the VP marginal, per row.
    pub fn log_prob_vp(&self, x: &[f64], level: NoiseLevel) -> Vec<f64> {
        self.posterior_vp(x, level)
            .into_iter()
            .map(|p| p.log_density)
            .collect()
    }

    /// log p_sigma(x) of the VE marginal N(m_k, S_k + sigma^2 I), per row.
    pub fn log_prob_ve(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        let nm = self.noised(1.0, sigma);
        x.chunks(self.dim)
            .map(|row| nm.at(row).log_density)
            .collect()
    }

    /// Score of the VE marginal at noise level sigma, per row (row-major output).
    pub fn score_ve(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        let nm = self.noised(1.0, sigma);
        x.chunks(self.dim)
            .flat_map(|row| nm.at(row).score)
            .collect()
    }

    /// log-density of clean data (sigma = 0), per row.
    pub fn log_prob(&self, x: &[f64]) -> Vec<f64> {
        self.log_prob_ve(x, 0.0)
    }

    /// The law of `c x` for x from this mixture (`c > 0`): means times c, covariances times
    /// c^2 (e.g. c = 1/2 maps the 2-D toy mixture into [-1, 1] like 8-bit image data).
    pub fn scaled(&self, c: f64) -> Self {
        let scale = |v: &[f64], f: f64| v.iter().map(|x| x * f).collect::<Vec<f64>>();
        let covs = self
            .covs
            .iter()
            .map(|cov| match cov {
                Covariance::Full(v) => Covariance::Full(scale(v, c * c)),
                Covariance::Diag(v) => Covariance::Diag(scale(v, c * c)),
            })
            .collect();
        let means = self.means.iter().map(|m| scale(m, c)).collect();
        GaussianMixture::new(self.weights.clone(), means, covs)
            .expect("a scaled SPD mixture is valid")
    }

    /// The mixture mean sum_k w_k m_k.
    pub fn mean(&self) -> Vec<f64> {
        (0..self.dim)
            .map(|i| {
                self.weights
                    .iter()
                    .zip(&self.means)
                    .map(|(w, m)| w * m[i])
                    .sum()
            })
            .collect()
    }

    /// `n` draws (row-major) from the clean mixture.
    pub fn sample<R: Rng>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let u: f64 = rng.random();
            let mut c = 0;
            let mut acc = self.weights[0];
            while u >= acc && c + 1 < self.weights.len() {
                c += 1;
                acc += self.weights[c];
            }
            let z: Vec<f64> = (0..self.dim).map(|_| rng.sample(StandardNormal)).collect();
            let lz = self.chol[c].mul_l(&z);
            out.extend(self.means[c].iter().zip(&lz).map(|(m, l)| m + l));
        }
        out
    }
}

impl Denoiser for GaussianMixture {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], _labels: Option<&[i64]>) -> Denoised {
        let x = to_vec(x_t);
        let d = self.dim;
        assert_eq!(
            x_t.dims()[1],
            d,
            "oracle of dimension {d} given a batch of width {}",
            x_t.dims()[1]
        );
        let n = x.len() / d;
        let mut x0 = Vec::with_capacity(n * d);
        let mut eps = Vec::with_capacity(n * d);
        if levels.len() == 1 {
            for p in self.posterior_vp(&x, levels[0]) {
                x0.extend(p.x0);
                eps.extend(p.eps);
            }
        } else {
            // Factorise once per distinct level (training batches repeat few levels).
            let mut cache: Vec<(f64, NoisedMixture)> = Vec::new();
            for (row, level) in x.chunks(d).zip(levels) {
                let pos = match cache.iter().position(|(s, _)| *s == level.sigma) {
                    Some(p) => p,
                    None => {
                        cache.push((level.sigma, self.noised(level.alpha(), level.sigma_vp())));
                        cache.len() - 1
                    }
                };
                let p = cache[pos].1.at(row);
                x0.extend(p.x0);
                eps.extend(p.eps);
            }
        }
        Denoised {
            x0: from_rows_like(x0, x_t),
            eps: from_rows_like(eps, x_t),
            variance_output: None,
        }
    }
}

/// The class-conditional oracle of a mixture whose components are the classes: label k
/// denoises with component k alone (the exact conditional posterior, a single Gaussian),
/// label -1 or no label with the whole mixture (the exact unconditional one). Gives
/// classifier-free guidance closed forms to test against (SPEC §5, §8).
#[derive(Debug, Clone)]
pub struct ClassConditional {
    pub mixture: GaussianMixture,
    classes: Vec<GaussianMixture>,
}

impl ClassConditional {
    pub fn new(mixture: GaussianMixture) -> Self {
        let classes = (0..mixture.weights.len())
            .map(|k| {
                GaussianMixture::new(
                    vec![1.0],
                    vec![mixture.means[k].clone()],
                    vec![mixture.covs[k].clone()],
                )
                .expect("a component of a valid mixture is a valid mixture")
            })
            .collect();
        ClassConditional { mixture, classes }
    }

    /// The law of class `label` (-1: the whole mixture).
    pub fn class(&self, label: i64) -> &GaussianMixture {
        match usize::try_from(label) {
            Ok(k) => self.classes.get(k).unwrap_or_else(|| {
                panic!(
                    "label {label}: the oracle has classes 0..{} (and -1)",
                    self.classes.len()
                )
            }),
            Err(_) => &self.mixture,
        }
    }
}

impl Denoiser for ClassConditional {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        let Some(labels) = labels else {
            return self.mixture.denoise(x_t, levels, None);
        };
        let x = to_vec(x_t);
        let d = self.mixture.dim;
        let (mut x0, mut eps) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        for (i, row) in x.chunks(d).enumerate() {
            let level = levels[if levels.len() == 1 { 0 } else { i }];
            let p = self.class(labels[i]).posterior_vp(row, level).remove(0);
            x0.extend(p.x0);
            eps.extend(p.eps);
        }
        Denoised {
            x0: from_rows_like(x0, x_t),
            eps: from_rows_like(eps, x_t),
            variance_output: None,
        }
    }
}

#[cfg(test)]
mod tests;
