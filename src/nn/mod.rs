//! Networks: the sinusoidal timestep embedding (shared by every denoiser net) and the MLP
//! denoiser for low-dimensional data, with a fused CPU training kernel.

pub mod embedding;
pub mod mlp;
pub mod mlp_kernel;
pub mod model;
pub mod params;

pub use embedding::sinusoidal_embedding;
pub use mlp::{Mlp, MlpConfig, MlpParams};
pub use model::{ModelConfig, Net};
pub use params::{FlatParams, TensorSlot};
