//! The VAE's step contract on the one trainer (SPEC §7): the batch's images x, the
//! reparameterisation noise eps ~ N(0, I) of the latent's shape from stream `2 s + 1` of the
//! seed (the stream diffusion runs draw their noise from), and the objective of
//! [`crate::nn::vae::loss`] differentiated by burn autodiff. The trainer then applies the same
//! NaN guard, clipping, AdamW and EMA as for every model.

use super::engine::BatchGrad;
use crate::nn::vae::loss::vae_objective;
use crate::nn::{Net, VaeModelConfig};
use burn::tensor::{DType, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Loss and gradient of the VAE objective for `n` images `x0` (row-major `[N, C H W]` in
/// [-1, 1]) at step `step`; `template` is the VAE on an autodiff device. `per_sample` holds
/// each image's reconstruction term.
pub fn vae_grad(
    template: &Net,
    params: &[f32],
    cfg: &VaeModelConfig,
    x0: &[f64],
    n: usize,
    seed: u64,
    step: u64,
) -> crate::Result<BatchGrad> {
    let net = template.with_values(params)?;
    let Net::Vae(model) = &net else {
        return Err(crate::Error::config("model", "the VAE step needs a VAE"));
    };
    let device = net.device();
    let c = cfg.vae.in_channels;
    let [h, w] = cfg.vae.image_hw();
    let latent = cfg.vae.latent_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2 * step + 1);
    let eps: Vec<f32> = (0..n * latent.iter().product::<usize>())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let x: Vec<f32> = x0.iter().map(|&v| v as f32).collect();
    let x = Tensor::<4>::from_data(TensorData::new(x, [n, c, h, w]), (&device, DType::F32));
    let [lc, lh, lw] = latent;
    let eps = Tensor::<4>::from_data(TensorData::new(eps, [n, lc, lh, lw]), (&device, DType::F32));
    let terms = vae_objective(model, x, eps, &cfg.loss);
    let to_f64 = |t: &Tensor<1>| -> crate::Result<Vec<f64>> {
        t.to_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .map_err(|e| crate::Error::Shape(format!("{e:?}")))
    };
    let loss = to_f64(&terms.loss)?[0];
    let per_sample = to_f64(&terms.reconstruction)?;
    let grads = terms.loss.backward();
    Ok(BatchGrad {
        loss,
        per_sample,
        grad: net.gradients(&grads),
    })
}
