//! A diffusers-compatible `UNet2DModel` (the image denoiser of DDPM and its successors): the
//! config ([`config`]), the resnet block ([`resnet`]), spatial self-attention ([`attention`]),
//! the down/mid/up blocks with their resamplers ([`blocks`]), the model ([`model`]) and
//! diffusers checkpoint folders ([`io`]).
//!
//! Field names reproduce diffusers' parameter paths (`down_blocks.0.resnets.0.conv1.weight`,
//! `mid_block.attentions.0.to_q.weight`, ...), so `save_pretrained` folders load with no rename
//! table and ours load in diffusers. Checked against diffusers 0.42.1 by
//! `tests/refs/nets.rs` (`shared/refs/nets/`). The resnet block, the attention, the mid block,
//! the resamplers and the checkpoint reader/writer also build diffusers' `AutoencoderKL`
//! ([`crate::nn::vae`]), whose parameter paths use the same names.

pub mod attention;
pub mod blocks;
pub mod config;
pub mod io;
pub(crate) mod layers;
pub mod model;
pub mod resnet;

pub use config::{SampleSize, UNet2DConfig};
pub use model::UNet2DModel;

#[cfg(test)]
mod tests;
