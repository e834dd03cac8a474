//! Every trainable denoiser network behind one config type and one module type, so the
//! trainer, the checkpoint code and the samplers serve every model the same way.
//!
//! A model's weights live as a [`FlatParams`] vector ([`super::params`]); [`Net`] is the burn
//! module built from such a vector on a device (for sampling, or on an autodiff device for a
//! training step).

use super::params::{
    contiguous_slots, load_values, module_gradients, module_params, module_slots, FlatParams,
    TensorSlot,
};
use super::unet::{UNet2DConfig, UNet2DModel};
use super::vae::{AutoencoderKL, AutoencoderKLConfig, VaeLoss};
use super::{Mlp, MlpConfig, MlpParams};
use crate::denoiser::Network;
use crate::error::Result;
use burn::module::Module;
use burn::tensor::{DType, Device, Gradients, Tensor};
use serde::{Deserialize, Serialize};

/// Which network a run trains, with its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // One per run: boxing would buy nothing.
pub enum ModelConfig {
    /// The MLP for low-dimensional data.
    Mlp(MlpConfig),
    /// diffusers' `UNet2DModel` for images (its config.json keys).
    Unet(UNet2DConfig),
    /// diffusers' `AutoencoderKL` with its training objective (SPEC §7).
    Vae(VaeModelConfig),
}

/// A VAE run's network: the diffusers config and the objective the trainer minimises
/// instead of the diffusion loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeModelConfig {
    pub vae: AutoencoderKLConfig,
    #[serde(default)]
    pub loss: VaeLoss,
}

impl VaeModelConfig {
    fn validate(&self) -> Result<()> {
        self.vae.validate()?;
        self.loss.validate()?;
        if self.vae.in_channels != self.vae.out_channels {
            return Err(crate::Error::config(
                "model.vae.out_channels",
                format!(
                    "{} output channels for {} input channels: a VAE reconstructs its input",
                    self.vae.out_channels, self.vae.in_channels
                ),
            ));
        }
        Ok(())
    }

    /// The (F32) module of this config on `device`, seeded.
    fn module(&self, seed: u64, device: &Device) -> Result<AutoencoderKL> {
        AutoencoderKL::new(&self.vae, seed, device, DType::F32)
    }
}

impl ModelConfig {
    /// Checks every size; the error names the field.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Mlp(c) => c.validate(),
            ModelConfig::Vae(c) => c.validate(),
            ModelConfig::Unet(c) => {
                c.validate()?;
                if c.sample_size.is_none() {
                    return Err(crate::Error::config(
                        "model.sample_size",
                        "a UNet run needs the image size (sample_size)",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Flat data dimension D of one sample (`C*H*W` for images).
    pub fn data_dim(&self) -> usize {
        match self {
            ModelConfig::Mlp(c) => c.data_dim,
            ModelConfig::Unet(c) => unet_hw(c).iter().product::<usize>() * c.in_channels,
            ModelConfig::Vae(c) => c.vae.image_hw().iter().product::<usize>() * c.vae.in_channels,
        }
    }

    /// Width of the network's output per sample (2 D for a learned-variance model).
    pub fn output_dim(&self) -> usize {
        match self {
            ModelConfig::Mlp(c) => c.data_dim,
            ModelConfig::Unet(c) => unet_hw(c).iter().product::<usize>() * c.out_channels,
            ModelConfig::Vae(c) => c.vae.image_hw().iter().product::<usize>() * c.vae.out_channels,
        }
    }

    /// Image shape `[C, H, W]` of one sample, for image models.
    pub fn image_shape(&self) -> Option<[usize; 3]> {
        match self {
            ModelConfig::Mlp(_) => None,
            ModelConfig::Unet(c) => {
                let [h, w] = unet_hw(c);
                Some([c.in_channels, h, w])
            }
            ModelConfig::Vae(c) => {
                let [h, w] = c.vae.image_hw();
                Some([c.vae.in_channels, h, w])
            }
        }
    }

    /// Number of classes a conditional model knows (without the null class), if any.
    pub fn num_classes(&self) -> Option<usize> {
        match self {
            ModelConfig::Mlp(_) => None,
            // The last row of the class table is the null class (classifier-free guidance).
            ModelConfig::Unet(c) => c.num_class_embeds.map(|k| k.saturating_sub(1)),
            ModelConfig::Vae(_) => None,
        }
    }

    /// The MLP's config, for its fused training kernel.
    pub fn as_mlp(&self) -> Option<&MlpConfig> {
        match self {
            ModelConfig::Mlp(c) => Some(c),
            _ => None,
        }
    }

    /// Names and shapes of the parameters (the checkpoint's tensors), in storage order.
    pub fn slots(&self) -> Result<Vec<TensorSlot>> {
        match self {
            ModelConfig::Mlp(c) => Ok(mlp_slots(&MlpParams::init(c, 0)?)),
            ModelConfig::Unet(c) => Ok(module_slots(&UNet2DModel::new(
                c,
                0,
                &crate::device::cpu(),
                DType::F32,
            )?)),
            ModelConfig::Vae(c) => Ok(module_slots(&c.module(0, &crate::device::cpu())?)),
        }
    }

    /// Freshly initialised weights from a seeded stream (PyTorch's default init rules).
    pub fn init_params(&self, seed: u64) -> Result<FlatParams> {
        match self {
            ModelConfig::Mlp(c) => {
                let p = MlpParams::init(c, seed)?;
                Ok(FlatParams {
                    slots: mlp_slots(&p),
                    values: p.values,
                })
            }
            ModelConfig::Unet(c) => Ok(module_params(&UNet2DModel::new(
                c,
                seed,
                &crate::device::cpu(),
                DType::F32,
            )?)),
            ModelConfig::Vae(c) => Ok(module_params(&c.module(seed, &crate::device::cpu())?)),
        }
    }

    /// The kind's name (`mlp`, `unet`, `vae`), as in config.json.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::Unet(_) => "unet",
            ModelConfig::Vae(_) => "vae",
        }
    }

    /// The VAE's config, for VAE runs.
    pub fn as_vae(&self) -> Option<&VaeModelConfig> {
        match self {
            ModelConfig::Vae(c) => Some(c),
            _ => None,
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            ModelConfig::Mlp(c) => format!(
                "MLP {} x {} (time embedding {})",
                c.depth, c.hidden, c.time_embed_dim
            ),
            ModelConfig::Unet(c) => format!(
                "UNet {:?} x {} layers/block{}",
                c.block_out_channels,
                c.layers_per_block,
                match c.num_class_embeds {
                    Some(k) => format!(", {} classes + null", k - 1),
                    None => String::new(),
                }
            ),
            ModelConfig::Vae(c) => format!(
                "VAE {:?} x {} layers/block, latent {:?}, {:?} + beta {} KL",
                c.vae.block_out_channels,
                c.vae.layers_per_block,
                c.vae.latent_shape(),
                c.loss.reconstruction,
                c.loss.beta
            ),
        }
    }
}

/// `[H, W]` of a UNet's samples (validated to be present).
fn unet_hw(c: &UNet2DConfig) -> [usize; 2] {
    c.sample_size.map_or([0, 0], |s| s.hw())
}

/// The MLP's checkpoint names (`time_embedding.linear_1.weight`, ...) over its flat layout.
fn mlp_slots(p: &MlpParams) -> Vec<TensorSlot> {
    contiguous_slots(p.named_tensors().into_iter().map(|(n, s, _)| (n, s)))
}

/// A network of any kind as a burn module on some device.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // A handful per process.
pub enum Net {
    Mlp(Mlp),
    Unet(UNet2DModel),
    Vae(AutoencoderKL),
}

impl Net {
    /// The network of `config` with weights `params`, on `device` (an autodiff device gives
    /// trainable leaves).
    pub fn new(config: &ModelConfig, params: &FlatParams, device: &Device) -> Result<Net> {
        match config {
            ModelConfig::Mlp(c) => {
                let p = MlpParams::from_values(c, params.values.clone())?;
                let net = Net::Mlp(p.to_module(device));
                if device.is_autodiff() {
                    // Rebuild through the loader so the weights are gradient-tracking leaves.
                    net.with_values(&params.values)
                } else {
                    Ok(net)
                }
            }
            ModelConfig::Unet(c) => {
                let template = UNet2DModel::new(c, 0, device, DType::F32)?;
                Ok(Net::Unet(load_values(template, &params.values)?))
            }
            ModelConfig::Vae(c) => Ok(Net::Vae(load_values(c.module(0, device)?, &params.values)?)),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        match self {
            Net::Mlp(m) => m.devices()[0].clone(),
            Net::Unet(m) => m.devices()[0].clone(),
            Net::Vae(m) => m.devices()[0].clone(),
        }
    }

    /// The same architecture (and device) with other weights, in the layout of its slots.
    pub fn with_values(&self, values: &[f32]) -> Result<Net> {
        Ok(match self {
            Net::Mlp(m) => Net::Mlp(load_values(m.clone(), values)?),
            Net::Unet(m) => Net::Unet(load_values(m.clone(), values)?),
            Net::Vae(m) => Net::Vae(load_values(m.clone(), values)?),
        })
    }

    /// The gradients of every parameter after a backward pass, in the flat layout.
    pub fn gradients(&self, grads: &Gradients) -> Vec<f32> {
        match self {
            Net::Mlp(m) => module_gradients(m, grads),
            Net::Unet(m) => module_gradients(m, grads),
            Net::Vae(m) => module_gradients(m, grads),
        }
    }
}

/// A VAE is no denoiser: as a [`Network`] it maps flat images to their reconstruction
/// `decode(mean(q(z|x)))`, ignoring `t` and the labels (the CLI does not sample VAE runs).
impl Network for Net {
    fn forward(&self, x: Tensor<2>, t: &[f64], labels: Option<&[i64]>) -> Tensor<2> {
        match self {
            Net::Mlp(m) => m.forward(x, t, labels),
            Net::Unet(m) => m.forward(x, t, labels),
            Net::Vae(m) => {
                let [n, d] = x.dims();
                let c = m.config.in_channels;
                let [h, w] = m.config.image_hw();
                let x_hat = m.decode(m.encode(x.reshape([n, c, h, w])).mean);
                x_hat.reshape([n, d])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::module_params;

    #[test]
    fn mlp_module_visits_parameters_in_the_flat_layout() {
        // The fused kernel's flat layout and the burn module's visiting order must agree, or the
        // autodiff path would update the wrong weights: compare element for element (exact).
        let cfg = ModelConfig::Mlp(MlpConfig {
            data_dim: 2,
            hidden: 8,
            depth: 2,
            time_embed_dim: 4,
        });
        let p = cfg.init_params(3).unwrap();
        let net = Net::new(&cfg, &p, &crate::device::cpu()).unwrap();
        let Net::Mlp(m) = &net else { panic!("an MLP") };
        let from_module = module_params(m);
        assert_eq!(from_module.values, p.values);
        let shapes: Vec<_> = from_module.slots.iter().map(|s| s.shape.clone()).collect();
        let expected: Vec<_> = p.slots.iter().map(|s| s.shape.clone()).collect();
        assert_eq!(shapes, expected);
    }
}
