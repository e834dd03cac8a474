//! The VAE applied to image sets (SPEC §7): posterior moments of many images in batches, the
//! latent scaling factor s = 1 / std(z) over training latents, and the test-set report
//! (reconstruction MSE and PSNR, KL per latent dimension) with a PNG of inputs beside their
//! reconstructions.

use super::model::AutoencoderKL;
use crate::data::ImageSet;
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::Path;

/// Images per encoder call.
pub const ENCODE_BATCH: usize = 128;

/// Posterior moments of some images: `[N, C h w]` row-major, float32.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentMoments {
    pub mean: Vec<f32>,
    pub logvar: Vec<f32>,
    /// `[C, h, w]` of one latent.
    pub shape: [usize; 3],
}

impl LatentMoments {
    /// Values per latent.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of latents.
    pub fn len(&self) -> usize {
        self.mean.len() / self.dim()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }
}

fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor")
}

/// `[n, C, H, W]` of images `indices` of `set` in [-1, 1] on `device`.
fn image_tensor(set: &ImageSet, indices: &[usize], device: &Device) -> Tensor<4> {
    let x = set.images_unit(indices);
    Tensor::from_data(
        TensorData::new(x, [indices.len(), set.channels, set.height, set.width]),
        (device, burn::tensor::DType::F32),
    )
}

/// The posterior moments of images `indices` of `set`, [`ENCODE_BATCH`] at a time.
pub fn encode_images(model: &AutoencoderKL, set: &ImageSet, indices: &[usize]) -> LatentMoments {
    let device = model.encoder.conv_in.weight.val().device();
    let (mut mean, mut logvar) = (Vec::new(), Vec::new());
    for chunk in indices.chunks(ENCODE_BATCH) {
        let q = model.encode(image_tensor(set, chunk, &device));
        mean.extend(f32s(q.mean));
        logvar.extend(f32s(q.logvar));
    }
    LatentMoments {
        mean,
        logvar,
        shape: model.config.latent_shape(),
    }
}

/// `n` distinct indices of `0..len` from `seed` (all of them when `n >= len`).
pub fn pick(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..len).collect();
    if n < len {
        all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        all.truncate(n);
    }
    all
}

/// diffusers' `scaling_factor` from data: 1 / std of posterior samples z = mu + sigma eps
/// (seeded eps) over every element of the latents of up to `max_images` training images (a
/// seeded subset; the std of ~10^5 values is accurate to ~0.3%, so a subset suffices).
pub fn latent_scaling_factor(
    model: &AutoencoderKL,
    train: &ImageSet,
    max_images: usize,
    seed: u64,
) -> f64 {
    let idx = pick(train.len(), max_images, seed);
    let q = encode_images(model, train, &idx);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let z: Vec<f64> = q
        .mean
        .iter()
        .zip(&q.logvar)
        .map(|(&m, &lv)| {
            let e: f64 = StandardNormal.sample(&mut rng);
            m as f64 + (0.5 * lv as f64).exp() * e
        })
        .collect();
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    1.0 / var.sqrt()
}

/// How well the VAE reconstructs held-out images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconstructionReport {
    pub images: usize,
    /// Mean squared error per pixel of decode(mu) in [-1, 1] units.
    pub mse: f64,
    /// 10 log10(peak^2 / MSE) with the peak-to-peak range 2 of [-1, 1] images (the same as
    /// PSNR on [0, 1] images).
    pub psnr: f64,
    /// Mean over images and latent elements of KL(q(z_j|x) || N(0, 1)), nats.
    pub kl_per_dim: f64,
}

impl ReconstructionReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "images": self.images, "mse": self.mse, "psnr_db": self.psnr,
            "kl_per_latent_dim_nats": self.kl_per_dim,
        })
    }
}

/// Reconstruction MSE, PSNR and KL per latent dimension over images `indices` of `set`
/// (reconstructions decode the posterior mean).
pub fn reconstruction_report(
    model: &AutoencoderKL,
    set: &ImageSet,
    indices: &[usize],
) -> ReconstructionReport {
    let device = model.encoder.conv_in.weight.val().device();
    let (mut sq, mut kl, mut latent) = (0.0f64, 0.0f64, 0usize);
    for chunk in indices.chunks(ENCODE_BATCH) {
        let x = image_tensor(set, chunk, &device);
        let q = model.encode(x.clone());
        latent = q.mean.dims()[1..].iter().product();
        kl += f32s(q.kl()).iter().map(|&v| v as f64).sum::<f64>();
        let x_hat = model.decode(q.mean);
        sq += f32s((x_hat - x).square().sum())[0] as f64;
    }
    let n = indices.len() as f64;
    let mse = sq / (n * set.dim() as f64);
    ReconstructionReport {
        images: indices.len(),
        mse,
        psnr: 10.0 * (4.0 / mse).log10(),
        kl_per_dim: kl / (n * latent as f64),
    }
}

/// A PNG grid: rows of `cols` input images, each followed by the row of their reconstructions
/// (decode(mu)), for images `indices` of `set`.
pub fn reconstruction_grid(
    model: &AutoencoderKL,
    set: &ImageSet,
    indices: &[usize],
    cols: usize,
    path: &Path,
) -> anyhow::Result<()> {
    let device = model.encoder.conv_in.weight.val().device();
    let per = set.dim();
    let mut cells: Vec<f64> = Vec::new();
    for row in indices.chunks(cols) {
        let x = image_tensor(set, row, &device);
        let x_hat = model.decode(model.encode(x.clone()).mean);
        let (x, x_hat) = (f32s(x), f32s(x_hat));
        for src in [&x, &x_hat] {
            cells.extend(src.iter().map(|&v| v as f64));
            // Pad a short last row so reconstructions stay under their inputs.
            cells.extend(std::iter::repeat_n(-1.0, (cols - row.len()) * per));
        }
    }
    crate::viz::image_grid(path, &cells, [set.channels, set.height, set.width], cols, 2)
}
