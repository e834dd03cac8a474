//! Networks: the sinusoidal timestep embedding (shared by every denoiser net) and the MLP
//! denoiser for low-dimensional data, with a fused CPU training kernel, and the
//! diffusers-compatible image UNet.

pub mod embedding;
pub mod mlp;
pub mod mlp_kernel;
pub mod unet;

pub use embedding::sinusoidal_embedding;
pub use mlp::{Mlp, MlpConfig, MlpParams};
pub use unet::{UNet2DConfig, UNet2DModel};
