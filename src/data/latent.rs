//! Latent data (SPEC §7): the training images of an image source encoded once by a trained
//! VAE, and batches of diffusion-space latents `s (z - shift)` drawn from them, with z the
//! posterior mean or a posterior sample z = mu + sigma eps. Batches depend only on
//! (seed, step), as for every source.
//!
//! A latent run names its VAE by folder and content hash ([`VaeRef`]): a missing folder or
//! one whose files changed is an error naming the folder, never a silent mismatch.

use super::images::ImageSet;
use super::Batch;
use crate::error::{Error, Result};
use crate::nn::unet::io::{CONFIG_NAME, WEIGHTS_NAME};
use crate::nn::vae::latents::{encode_images, LatentMoments};
use crate::nn::AutoencoderKL;
use burn::tensor::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which latent of an image the diffusion model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentDraw {
    /// A fresh posterior sample z = mu + sigma eps per draw (what diffusers trains on).
    Sample,
    /// The posterior mean mu.
    Mean,
}

impl LatentDraw {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sample" => Some(LatentDraw::Sample),
            "mean" => Some(LatentDraw::Mean),
            _ => None,
        }
    }
}

/// The VAE a latent run was configured with: a diffusers `AutoencoderKL` folder and the
/// content hash of its `config.json` and weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeRef {
    pub dir: PathBuf,
    /// FNV-1a 64 of config.json followed by the safetensors file, hex.
    pub content_hash: String,
}

/// FNV-1a, 64 bit: a fast content fingerprint (not a cryptographic hash).
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn vae_error(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Data {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

impl VaeRef {
    /// The VAE folder of `--vae ARG`: `ARG/vae` for a VAE run directory, else `ARG` itself
    /// (a diffusers `AutoencoderKL` folder).
    pub fn resolve(arg: &Path) -> PathBuf {
        let inner = arg.join(crate::train::checkpoint::VAE_DIR);
        if inner.join(CONFIG_NAME).is_file() {
            inner
        } else {
            arg.to_path_buf()
        }
    }

    fn hash_of(dir: &Path) -> Result<String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                vae_error(
                    dir,
                    format!(
                        "the latent run's VAE is missing or unreadable ({}: {e}); train one with \
                         `diffuse train --model vae` or pass its folder with --vae",
                        path.display()
                    ),
                )
            })
        };
        let (config, weights) = (read(CONFIG_NAME)?, read(WEIGHTS_NAME)?);
        Ok(format!("{:016x}", fnv1a64(&[&config, &weights])))
    }

    /// A reference to the VAE of `--vae ARG` as it is now.
    pub fn new(arg: &Path) -> Result<Self> {
        let dir = Self::resolve(arg);
        Ok(VaeRef {
            content_hash: Self::hash_of(&dir)?,
            dir,
        })
    }

    /// The VAE (float32, on `device`), after checking its files are the ones the run was
    /// configured with.
    pub fn load(&self, device: &Device) -> Result<AutoencoderKL> {
        let found = Self::hash_of(&self.dir)?;
        if found != self.content_hash {
            return Err(vae_error(
                &self.dir,
                format!(
                    "the VAE changed since the latent run was configured (content hash {found}, \
                     the run expects {}); latents of another VAE would not decode",
                    self.content_hash
                ),
            ));
        }
        AutoencoderKL::from_diffusers_dir(&self.dir, device, DType::F32)
    }
}

/// Encoded training images, ready to draw latent batches from.
#[derive(Debug, Clone)]
pub struct LatentSet {
    pub moments: LatentMoments,
    pub labels: Option<Vec<u32>>,
    pub draw: LatentDraw,
    /// s of `s (z - shift)`.
    pub scaling_factor: f64,
    pub shift_factor: f64,
}

impl LatentSet {
    /// Every image of `set` encoded by `vae`.
    pub fn encode(vae: &AutoencoderKL, set: &ImageSet, draw: LatentDraw) -> Self {
        let all: Vec<usize> = (0..set.len()).collect();
        LatentSet {
            moments: encode_images(vae, set, &all),
            labels: set.labels.clone(),
            draw,
            scaling_factor: vae.config.scaling_factor,
            shift_factor: vae.config.shift_factor.unwrap_or(0.0),
        }
    }

    pub fn dim(&self) -> usize {
        self.moments.dim()
    }

    /// `n` diffusion-space latents from stream `stream` of `seed`: uniform draws of images
    /// (with replacement), then the posterior noise of each, from the same stream.
    pub fn sample(&self, n: usize, seed: u64, stream: u64) -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let len = self.moments.len();
        let indices: Vec<usize> = (0..n).map(|_| rng.random_range(0..len)).collect();
        let d = self.dim();
        let (s, shift) = (self.scaling_factor, self.shift_factor);
        let mut x0 = Vec::with_capacity(n * d);
        for &i in &indices {
            let mean = &self.moments.mean[i * d..(i + 1) * d];
            let logvar = &self.moments.logvar[i * d..(i + 1) * d];
            for (&m, &lv) in mean.iter().zip(logvar) {
                let z = match self.draw {
                    LatentDraw::Mean => m as f64,
                    LatentDraw::Sample => {
                        let e: f64 = StandardNormal.sample(&mut rng);
                        m as f64 + (0.5 * lv as f64).exp() * e
                    }
                };
                x0.push(s * (z - shift));
            }
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i] as i64).collect());
        Batch { x0, labels }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_scaled_latents_and_depend_on_seed_and_step_only() {
        // Two latents of dim 2: means (1, 2) and (-1, 0), log-variances 0. s = 2, shift 0.5.
        let set = LatentSet {
            moments: LatentMoments {
                mean: vec![1.0, 2.0, -1.0, 0.0],
                logvar: vec![0.0; 4],
                shape: [2, 1, 1],
            },
            labels: Some(vec![3, 7]),
            draw: LatentDraw::Mean,
            scaling_factor: 2.0,
            shift_factor: 0.5,
        };
        let b = set.sample(4, 1, 0);
        for (row, label) in b.x0.chunks(2).zip(b.labels.unwrap()) {
            // Exact: s (z - shift) of float32-representable values.
            let want = if label == 3 { [1.0, 3.0] } else { [-3.0, -1.0] };
            assert_eq!(row, want);
        }
        let sampled = LatentSet {
            draw: LatentDraw::Sample,
            ..set
        };
        assert_eq!(sampled.sample(4, 1, 2), sampled.sample(4, 1, 2));
        assert_ne!(sampled.sample(4, 1, 2).x0, sampled.sample(4, 1, 4).x0);
    }

    #[test]
    fn missing_vae_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = VaeRef::new(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("VAE is missing"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }
}
