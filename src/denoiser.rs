//! The one interface samplers see: a denoiser that, given x_t and the noise level of each
//! sample, returns the predicted clean sample and noise (STYLE: "one network interface").
//!
//! Coordinates: `x_t` is always in VP scaling, `x_t = a x_0 + s eps` with
//! `a = sqrt(alpha_bar) = 1/sqrt(1 + sigma^2)` and `s = sqrt(1 - alpha_bar) = sigma a`.
//! Samplers that work in VE/sigma space (`x = x_0 + sigma eps`, SPEC §5) convert with
//! `x_t = a x` at the call (diffusers' `scale_model_input`).

use crate::prediction::{x0_and_eps, PredictionType};
use crate::schedule::Schedule;
use crate::tensor::scale;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The noise level of one sample: the VE noise scale `sigma = sqrt((1 - alpha_bar)/alpha_bar)`
/// (0 for clean data, +inf at zero terminal SNR) and the timestep value `t` a network is
/// conditioned on (a code index, possibly fractional, or continuous time for SDE models).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    pub sigma: f64,
    pub t: f64,
}

impl NoiseLevel {
    /// The level of discrete step `i` (code index) of a schedule.
    pub fn discrete(schedule: &Schedule, i: usize) -> Self {
        NoiseLevel {
            sigma: schedule.sigma[i],
            t: i as f64,
        }
    }

    /// A level given by alpha_bar (and the timestep value a network would see).
    pub fn from_alpha_bar(alpha_bar: f64, t: f64) -> Self {
        NoiseLevel {
            sigma: ((1.0 - alpha_bar) / alpha_bar).sqrt(),
            t,
        }
    }

    /// Clean data: sigma = 0.
    pub fn clean() -> Self {
        NoiseLevel {
            sigma: 0.0,
            t: -1.0,
        }
    }

    /// a = sqrt(alpha_bar) = 1/sqrt(1 + sigma^2) (0 at sigma = inf).
    pub fn alpha(&self) -> f64 {
        if self.sigma.is_infinite() {
            0.0
        } else {
            1.0 / self.sigma.hypot(1.0)
        }
    }

    /// s = sqrt(1 - alpha_bar) = sigma/sqrt(1 + sigma^2) (1 at sigma = inf).
    pub fn sigma_vp(&self) -> f64 {
        if self.sigma.is_infinite() {
            1.0
        } else {
            self.sigma / self.sigma.hypot(1.0)
        }
    }

    /// alpha_bar = 1/(1 + sigma^2).
    pub fn alpha_bar(&self) -> f64 {
        self.alpha() * self.alpha()
    }

    /// lambda = log(a / s) = -log(sigma), the half log-SNR DPM-Solver steps in.
    pub fn lambda(&self) -> f64 {
        -self.sigma.ln()
    }
}

/// The `a` and `s` coefficients of a slice of levels.
pub fn vp_coefficients(levels: &[NoiseLevel]) -> (Vec<f64>, Vec<f64>) {
    (
        levels.iter().map(NoiseLevel::alpha).collect(),
        levels.iter().map(NoiseLevel::sigma_vp).collect(),
    )
}

/// What a denoiser returns for `x_t`: the clean-sample and noise predictions (related by
/// `x_t = a x0 + s eps`), and, for learned-variance models, the raw variance output in [-1, 1]
/// (SPEC §3, `learned_range`).
#[derive(Debug, Clone)]
pub struct Denoised {
    pub x0: Tensor<2>,
    pub eps: Tensor<2>,
    pub variance_output: Option<Tensor<2>>,
}

/// A denoiser: exact (the oracle) or a network behind a parameterisation adapter.
pub trait Denoiser {
    /// Predicts x_0 and eps for `x_t` (`[N, D]`, VP scaling) at `levels` (one per sample, or
    /// one for the whole batch). `labels` are class labels for conditional models; -1 means
    /// "no label" (the null class classifier-free guidance trains with).
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised;
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        (**self).denoise(x_t, levels, labels)
    }
}

/// A raw network: output for input `x` (`[N, D]`) at timestep values `t` (one per sample).
pub trait Network {
    fn forward(&self, x: Tensor<2>, t: &[f64], labels: Option<&[i64]>) -> Tensor<2>;
}

impl<N: Network + ?Sized> Network for &N {
    fn forward(&self, x: Tensor<2>, t: &[f64], labels: Option<&[i64]>) -> Tensor<2> {
        (**self).forward(x, t, labels)
    }
}

/// How a network's input and output relate to the denoiser's prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Parameterization {
    /// The net sees x_t (VP scaling) and the timestep value, and predicts `prediction`.
    /// With `learned_variance` its output has 2D columns: the prediction, then v in [-1, 1].
    Discrete {
        prediction: PredictionType,
        learned_variance: bool,
    },
    /// EDM preconditioning (Karras et al. 2022, SPEC §5): in VE coordinates x = x_t / a,
    /// D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), c_noise = ln(sigma)/4.
    Edm { sigma_data: f64 },
}

/// A network wrapped into a [`Denoiser`] by its parameterisation.
pub struct NetworkDenoiser<N> {
    pub net: N,
    pub parameterization: Parameterization,
}

impl<N: Network> Denoiser for NetworkDenoiser<N> {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        let [n, d] = x_t.dims();
        let levels_n: Vec<NoiseLevel> = if levels.len() == 1 {
            vec![levels[0]; n]
        } else {
            levels.to_vec()
        };
        let (a, s) = vp_coefficients(levels);
        match self.parameterization {
            Parameterization::Discrete {
                prediction,
                learned_variance,
            } => {
                let t: Vec<f64> = levels_n.iter().map(|l| l.t).collect();
                let out = self.net.forward(x_t.clone(), &t, labels);
                let (out, variance_output) = if learned_variance {
                    let pred = out.clone().slice([0..n, 0..d]);
                    let var = out.slice([0..n, d..2 * d]);
                    (pred, Some(var))
                } else {
                    (out, None)
                };
                let (x0, eps) = x0_and_eps(prediction, &out, x_t, &a, &s);
                Denoised {
                    x0,
                    eps,
                    variance_output,
                }
            }
            Parameterization::Edm { sigma_data } => {
                let sd2 = sigma_data * sigma_data;
                let sig: Vec<f64> = levels.iter().map(|l| l.sigma).collect();
                // x = x_t / a, so c_in x = x_t / (a sqrt(sigma^2 + sd^2)) and c_skip x likewise.
                let c_in: Vec<f64> = sig
                    .iter()
                    .zip(&a)
                    .map(|(s, a)| 1.0 / (a * (s * s + sd2).sqrt()))
                    .collect();
                let c_skip: Vec<f64> = sig
                    .iter()
                    .zip(&a)
                    .map(|(s, a)| sd2 / ((s * s + sd2) * a))
                    .collect();
                let c_out: Vec<f64> = sig
                    .iter()
                    .map(|s| s * sigma_data / (s * s + sd2).sqrt())
                    .collect();
                let c_noise: Vec<f64> = levels_n.iter().map(|l| l.sigma.ln() / 4.0).collect();
                let f = self
                    .net
                    .forward(scale(&c_in, x_t.clone()), &c_noise, labels);
                let x0 = scale(&c_skip, x_t.clone()) + scale(&c_out, f);
                let eps = crate::prediction::eps_from_x0(x_t, &x0, &a, &s);
                Denoised {
                    x0,
                    eps,
                    variance_output: None,
                }
            }
        }
    }
}

/// Classifier-free guidance (SPEC §5) as a denoiser adapter: one batched call on
/// `[x; x]` with `[labels; -1]`, then eps = eps_uncond + w (eps_cond - eps_uncond) (and the same
/// combination of the x0 predictions, which keeps x_t = a x0 + s eps).
pub struct Guided<D> {
    pub inner: D,
    pub guidance_scale: f64,
}

impl<D: Denoiser> Denoiser for Guided<D> {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        let Some(labels) = labels else {
            return self.inner.denoise(x_t, levels, None);
        };
        let [n, d] = x_t.dims();
        let x2 = Tensor::cat(vec![x_t.clone(), x_t.clone()], 0);
        let levels2: Vec<NoiseLevel> = if levels.len() == 1 {
            levels.to_vec()
        } else {
            levels.iter().chain(levels).copied().collect()
        };
        let labels2: Vec<i64> = labels
            .iter()
            .copied()
            .chain(std::iter::repeat_n(-1, n))
            .collect();
        let out = self.inner.denoise(&x2, &levels2, Some(&labels2));
        let w = self.guidance_scale;
        let combine = |t: Tensor<2>| {
            let cond = t.clone().slice([0..n, 0..d]);
            let uncond = t.slice([n..2 * n, 0..d]);
            uncond.clone() + (cond - uncond).mul_scalar(w)
        };
        Denoised {
            x0: combine(out.x0),
            eps: combine(out.eps),
            variance_output: out.variance_output.map(|v| v.slice([0..n, 0..d])),
        }
    }
}

#[cfg(test)]
mod tests;
