//! [`AutoencoderKL`]: diffusers' `AutoencoderKL` as a burn module (SPEC §7).
//! ```text
//! moments      = quant_conv(encoder(x))             [B, 2C, h, w]   (quant_conv optional)
//! mu, logvar   = the two channel halves; logvar clamped to [-30, 20]
//! z            = mu + exp(logvar / 2) eps,  eps ~ N(0, I)   (reparameterisation)
//! x_hat        = decoder(post_quant_conv(z))                 (post_quant_conv optional)
//! KL           = sum over the latent of 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)
//! ```
//! Diffusion runs on `s (z - shift)` with s = `scaling_factor` ([`AutoencoderKL::to_diffusion`])
//! and decodes `z = x / s + shift` ([`AutoencoderKL::from_diffusion`]).

use super::blocks::{Decoder, Encoder};
use super::config::{AutoencoderKLConfig, LOGVAR_RANGE};
use crate::error::Result;
use crate::likelihood::terms::normal_kl;
use crate::nn::cpu::conv_op::conv2d;
use crate::nn::unet::layers::Init;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::{DType, Device, Tensor};

/// diffusers' `AutoencoderKL`. Field names are diffusers' parameter paths.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    #[module(skip)]
    pub config: AutoencoderKLConfig,
}

/// diffusers' `DiagonalGaussianDistribution`: the posterior q(z|x) = N(mean, diag e^logvar).
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// `[B, C, h, w]`.
    pub mean: Tensor<4>,
    /// `[B, C, h, w]`, clamped to [`LOGVAR_RANGE`].
    pub logvar: Tensor<4>,
}

impl DiagonalGaussian {
    /// Splits `[B, 2C, h, w]` encoder moments into mean and (clamped) log-variance.
    pub fn from_moments(moments: Tensor<4>) -> Self {
        let [b, c2, h, w] = moments.dims();
        let c = c2 / 2;
        let mean = moments.clone().slice([0..b, 0..c, 0..h, 0..w]);
        let logvar = moments
            .slice([0..b, c..c2, 0..h, 0..w])
            .clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1);
        DiagonalGaussian { mean, logvar }
    }

    /// sigma = exp(logvar / 2).
    pub fn std(&self) -> Tensor<4> {
        self.logvar.clone().mul_scalar(0.5).exp()
    }

    /// The reparameterised sample z = mean + sigma eps (differentiable in mean and logvar).
    pub fn sample(&self, eps: Tensor<4>) -> Tensor<4> {
        self.mean.clone() + self.std() * eps
    }

    /// KL(q(z|x) || N(0, I)) per element, in nats, `[B, C, h, w]`.
    pub fn kl_elements(&self) -> Tensor<4> {
        let zeros = self.mean.zeros_like();
        normal_kl(self.mean.clone(), self.logvar.clone(), zeros.clone(), zeros)
    }

    /// KL(q(z|x) || N(0, I)) per sample, summed over the latent, `[B]`.
    pub fn kl(&self) -> Tensor<1> {
        let [b, c, h, w] = self.mean.dims();
        self.kl_elements()
            .reshape([b, c * h * w])
            .sum_dim(1)
            .reshape([b])
    }
}

impl AutoencoderKL {
    /// A freshly initialised model (PyTorch's default initialisation, seeded) with `dtype`
    /// weights on `device`. The config is validated first.
    pub fn new(
        config: &AutoencoderKLConfig,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let mut init = Init::new(seed, device, dtype);
        let encoder = Encoder::new(&mut init, config);
        let decoder = Decoder::new(&mut init, config);
        let c2 = 2 * config.latent_channels;
        let c = config.latent_channels;
        let one = || PaddingConfig2d::Explicit(0, 0, 0, 0);
        let quant_conv = config
            .use_quant_conv
            .then(|| init.conv2d(c2, c2, 1, 1, one()));
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| init.conv2d(c, c, 1, 1, one()));
        Ok(AutoencoderKL {
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            config: config.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.encoder.conv_in.weight.val().dtype()
    }

    fn cast<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = self.dtype();
        if x.dtype() == dtype {
            x
        } else {
            x.cast(dtype)
        }
    }

    /// The posterior q(z|x) of images `[B, in_channels, H, W]` (in the weights' dtype).
    pub fn encode(&self, x: Tensor<4>) -> DiagonalGaussian {
        let moments = self.encoder.forward(self.cast(x));
        let moments = match &self.quant_conv {
            Some(conv) => conv2d(conv, moments),
            None => moments,
        };
        DiagonalGaussian::from_moments(moments)
    }

    /// Images `[B, out_channels, H, W]` of latents `[B, latent_channels, h, w]` (unscaled).
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = self.cast(z);
        let z = match &self.post_quant_conv {
            Some(conv) => conv2d(conv, z),
            None => z,
        };
        self.decoder.forward(z)
    }

    /// The diffusion-space latent `s (z - shift)` (SPEC §7).
    pub fn to_diffusion<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        z.sub_scalar(shift).mul_scalar(self.config.scaling_factor)
    }

    /// The VAE latent `x / s + shift` of a diffusion-space sample x.
    pub fn from_diffusion<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        x.div_scalar(self.config.scaling_factor).add_scalar(shift)
    }

    /// The model moved to `device`'s autodiff device with gradients enabled on every parameter.
    pub fn for_training(self, device: &Device) -> Self {
        self.to_device(&device.clone().autodiff()).train()
    }
}
