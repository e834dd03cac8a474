//! VAE tests: shapes (28 -> 7 latent), the checkpoint round trip, the KL against a float64
//! closed form, the reparameterised sample's moments, and the objective's reduction.

use super::config::{DownEncoderBlockType, UpDecoderBlockType};
use super::loss::{vae_objective, Reconstruction, VaeLoss};
use super::{AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian};
use crate::nn::unet::SampleSize;
use burn::tensor::{DType, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A small 1-channel VAE: `channels` per level, square `size`.
fn small(channels: &[usize], size: usize) -> AutoencoderKLConfig {
    AutoencoderKLConfig {
        in_channels: 1,
        out_channels: 1,
        block_out_channels: channels.to_vec(),
        down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D; channels.len()],
        up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D; channels.len()],
        norm_num_groups: 4,
        sample_size: SampleSize::Square(size),
        ..AutoencoderKLConfig::default()
    }
}

fn t4(values: Vec<f64>, shape: [usize; 4], dtype: DType) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(values, shape),
        (&crate::device::cpu(), dtype),
    )
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().unwrap()
}

fn images(n: usize, size: usize, dtype: DType) -> Tensor<4> {
    let v = (0..n * size * size)
        .map(|i| (i as f64 * 0.37).sin())
        .collect();
    t4(v, [n, 1, size, size], dtype)
}

#[test]
fn fashion_mnist_shapes_28_to_4x7x7_and_back() {
    let cfg = small(&[8, 8, 16], 28);
    let m = AutoencoderKL::new(&cfg, 1, &crate::device::cpu(), DType::F32).unwrap();
    let q = m.encode(images(2, 28, DType::F32));
    assert_eq!(q.mean.dims(), [2, 4, 7, 7]);
    assert_eq!(q.logvar.dims(), [2, 4, 7, 7]);
    let x_hat = m.decode(q.mean);
    assert_eq!(x_hat.dims(), [2, 1, 28, 28]);
    assert!(values(x_hat).iter().all(|v| v.is_finite()));
}

#[test]
fn save_load_round_trip_is_exact() {
    // Weights are written as float32 and the model is float32: every tensor and the outputs
    // must come back bit for bit (no tolerance).
    let cfg = AutoencoderKLConfig {
        scaling_factor: 0.7,
        use_quant_conv: false,
        ..small(&[4, 8], 8)
    };
    let device = crate::device::cpu();
    let m = AutoencoderKL::new(&cfg, 3, &device, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save_diffusers_dir(dir.path()).unwrap();
    let back = AutoencoderKL::from_diffusers_dir(dir.path(), &device, DType::F32).unwrap();
    assert_eq!(back.config, cfg);
    assert_eq!(back.named_tensors(), m.named_tensors());
    let x = images(2, 8, DType::F32);
    let (a, b) = (m.encode(x.clone()), back.encode(x));
    assert_eq!(values(a.mean.clone()), values(b.mean));
    assert_eq!(
        values(m.decode(a.mean.clone())),
        values(back.decode(a.mean))
    );
    // A file missing a tensor fails, naming it.
    let other = AutoencoderKLConfig {
        use_quant_conv: true,
        ..cfg
    };
    let err = AutoencoderKL::from_safetensors(
        &other,
        &dir.path().join(crate::nn::unet::io::WEIGHTS_NAME),
        &device,
        DType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing tensor `quant_conv.weight`"), "{err}");
}

#[test]
fn kl_matches_float64_closed_form_and_logvar_is_clamped() {
    // moments [1, 4, 2, 2]: channels 0-1 the mean, 2-3 the log-variance (one of them 25,
    // clamped to 20, and one -40, clamped to -30). KL = 0.5 sum (mu^2 + e^lv - 1 - lv) in
    // float64; the tensor path sums 8 terms of size <= 5e8, so 1e-12 relative is ~100 ulps.
    let mean = [0.3, -1.2, 0.0, 2.5, 0.7, -0.1, 1.9, -3.0];
    let logvar = [0.1, -2.0, 25.0, -40.0, 0.5, -0.3, 1.2, -5.0];
    let moments: Vec<f64> = mean.iter().chain(&logvar).copied().collect();
    let q = DiagonalGaussian::from_moments(t4(moments, [1, 4, 2, 2], DType::F64));
    let lv: Vec<f64> = logvar.iter().map(|v| v.clamp(-30.0, 20.0)).collect();
    assert_eq!(values(q.logvar.clone()), lv);
    let want: f64 = mean
        .iter()
        .zip(&lv)
        .map(|(m, l)| 0.5 * (m * m + l.exp() - 1.0 - l))
        .sum();
    let got = values(q.kl())[0];
    assert!(
        (got - want).abs() <= 1e-12 * want.abs(),
        "KL {got} vs closed form {want}"
    );
}

#[test]
fn reparameterised_sample_has_the_posterior_moments() {
    // M = 40000 draws of z = mu + sigma eps per latent element (mu = 1.5, sigma^2 = e^-1;
    // mu = -0.5, sigma^2 = e^1). Seeded eps. Bounds: 5 standard errors, sigma / sqrt(M) for
    // the mean and sigma^2 sqrt(2 / (M - 1)) for the variance (Gaussian sample variance).
    let m = 40_000;
    let (mu, lv) = ([1.5, -0.5], [-1.0, 1.0]);
    let mut moments = Vec::with_capacity(m * 4);
    for _ in 0..m {
        moments.extend_from_slice(&[mu[0], mu[1], lv[0], lv[1]]);
    }
    let q = DiagonalGaussian::from_moments(t4(moments, [m, 4, 1, 1], DType::F64));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let eps: Vec<f64> = (0..2 * m)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let z = values(q.sample(t4(eps, [m, 2, 1, 1], DType::F64)));
    for c in 0..2 {
        let zc: Vec<f64> = z.iter().skip(c).step_by(2).copied().collect();
        let mean = zc.iter().sum::<f64>() / m as f64;
        let var = zc.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
        let sigma2 = f64::exp(lv[c]);
        let se_mean = (sigma2 / m as f64).sqrt();
        let se_var = sigma2 * (2.0 / (m - 1) as f64).sqrt();
        assert!(
            (mean - mu[c]).abs() < 5.0 * se_mean,
            "channel {c}: mean {mean}"
        );
        assert!(
            (var - sigma2).abs() < 5.0 * se_var,
            "channel {c}: var {var} vs {sigma2}"
        );
    }
}

#[test]
fn objective_is_the_documented_reduction() {
    // L = mean_n [sum rho + beta sum KL] / D, recomputed from the model's own parts in float64
    // (same operations, different grouping: 1e-12 relative).
    let cfg = small(&[4, 8], 8);
    let m = AutoencoderKL::new(&cfg, 2, &crate::device::cpu(), DType::F64).unwrap();
    let x = images(3, 8, DType::F64);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let eps: Vec<f64> = (0..3 * 4 * 4 * 4)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let eps = t4(eps, [3, 4, 4, 4], DType::F64);
    for (reconstruction, beta) in [(Reconstruction::L2, 0.1), (Reconstruction::L1, 2.0)] {
        let loss = VaeLoss {
            reconstruction,
            beta,
        };
        let terms = vae_objective(&m, x.clone(), eps.clone(), &loss);
        let q = m.encode(x.clone());
        let x_hat = values(m.decode(q.sample(eps.clone())));
        let xs = values(x.clone());
        let kl = values(q.kl());
        let d = 64.0;
        let want: f64 = (0..3)
            .map(|n| {
                let rho: f64 = (0..64)
                    .map(|i| {
                        let e = x_hat[n * 64 + i] - xs[n * 64 + i];
                        match reconstruction {
                            Reconstruction::L1 => e.abs(),
                            Reconstruction::L2 => e * e,
                        }
                    })
                    .sum();
                (rho + beta * kl[n]) / d
            })
            .sum::<f64>()
            / 3.0;
        let got = values(terms.loss)[0];
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
    }
}
