//! A diffusers-compatible `AutoencoderKL` (the VAE of latent diffusion, SPEC §7): the config
//! ([`config`]), the encoder and decoder ([`blocks`], built from the UNet's resnet block, mid
//! block and resamplers), the model with its Gaussian posterior ([`model`]), checkpoint
//! folders ([`io`]), the training objective ([`loss`]) and the model applied to image sets:
//! latents, the scaling factor, the reconstruction report ([`latents`]).
//!
//! Field names reproduce diffusers' parameter paths (`encoder.down_blocks.0.resnets.0.conv1
//! .weight`, `decoder.mid_block.attentions.0.to_q.weight`, `quant_conv.weight`, ...). Checked
//! against diffusers 0.42.1 by `tests/refs/nets.rs` (`shared/refs/nets/vae_tiny`).

pub mod blocks;
pub mod config;
pub mod io;
pub mod latents;
pub mod loss;
pub mod model;

pub use config::AutoencoderKLConfig;
pub use loss::{Reconstruction, VaeLoss};
pub use model::{AutoencoderKL, DiagonalGaussian};

#[cfg(test)]
mod tests;
