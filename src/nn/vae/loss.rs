//! The VAE's training objective (SPEC §7): reconstruction + beta KL(q(z|x) || N(0, I)).
//!
//! Reduction: with D pixels per image (C H W),
//! `L = (1 / N) sum_n [ sum_i rho(x_ni - x_hat_ni) + beta sum_j KL_nj ] / D`,
//! i.e. the per-image summed objective divided by D, so its scale (and the learning rate) is
//! that of a per-pixel mean loss; rho = |.| (L1, a Laplace decoder) or (.)^2 (L2, a Gaussian
//! decoder), up to constants. With rho the Gaussian NLL and beta = 1 this is -ELBO / D; small
//! beta (1e-6..1e-3) keeps detail. x_hat decodes the reparameterised sample z = mu + sigma eps.

use super::model::AutoencoderKL;
use serde::{Deserialize, Serialize};

/// The reconstruction term's per-pixel penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconstruction {
    L1,
    L2,
}

impl Reconstruction {
    /// `l1` or `l2`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "l1" => Some(Reconstruction::L1),
            "l2" => Some(Reconstruction::L2),
            _ => None,
        }
    }
}

/// The objective's options. Default: L2 with beta = 1e-3.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaeLoss {
    pub reconstruction: Reconstruction,
    /// Weight of the summed KL against the summed reconstruction error.
    pub beta: f64,
}

impl Default for VaeLoss {
    fn default() -> Self {
        VaeLoss {
            reconstruction: Reconstruction::L2,
            beta: 1e-3,
        }
    }
}

impl VaeLoss {
    /// beta must be finite and >= 0.
    pub fn validate(&self) -> crate::Result<()> {
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(crate::Error::config(
                "model.loss.beta",
                format!("{} is not a finite value >= 0", self.beta),
            ));
        }
        Ok(())
    }
}

/// The objective on one batch, with its two parts per sample.
pub struct VaeTerms<B> {
    /// The scalar loss L (shape `[1]`).
    pub loss: B,
    /// Per sample: sum_i rho(x_i - x_hat_i) / D, `[N]`.
    pub reconstruction: B,
    /// Per sample: sum_j KL_j (nats), `[N]`.
    pub kl: B,
}

/// L of images `x` `[N, C, H, W]` with the reparameterisation noise `eps` (the latent's
/// shape), differentiable in the model's weights on an autodiff device.
pub fn vae_objective(
    model: &AutoencoderKL,
    x: burn::tensor::Tensor<4>,
    eps: burn::tensor::Tensor<4>,
    loss: &VaeLoss,
) -> VaeTerms<burn::tensor::Tensor<1>> {
    let [n, c, h, w] = x.dims();
    let d = c * h * w;
    let posterior = model.encode(x.clone());
    let x_hat = model.decode(posterior.sample(eps));
    let diff = (x_hat - x).reshape([n, d]);
    let rho = match loss.reconstruction {
        Reconstruction::L1 => diff.abs(),
        Reconstruction::L2 => diff.square(),
    };
    let reconstruction = rho.mean_dim(1).reshape([n]);
    let kl = posterior.kl();
    let total = (reconstruction.clone() + kl.clone().mul_scalar(loss.beta / d as f64)).mean();
    VaeTerms {
        loss: total,
        reconstruction,
        kl,
    }
}
