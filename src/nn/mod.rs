//! Networks: the sinusoidal timestep embedding (shared by every denoiser net), the MLP
//! denoiser for low-dimensional data with a fused CPU training kernel, the diffusers-compatible
//! UNet for images, the diffusers-compatible VAE of latent diffusion, and the flat-parameter bridge the one trainer uses for all of them.

pub mod cpu;
pub mod diffusers_config;
pub mod embedding;
pub mod mlp;
pub mod mlp_kernel;
pub mod model;
pub mod params;
pub mod unet;
pub mod vae;

pub use embedding::sinusoidal_embedding;
pub use mlp::{Mlp, MlpConfig, MlpParams};
pub use model::{ModelConfig, Net, VaeModelConfig};
pub use params::{FlatParams, TensorSlot};
pub use unet::{UNet2DConfig, UNet2DModel};
pub use vae::{AutoencoderKL, AutoencoderKLConfig, VaeLoss};
