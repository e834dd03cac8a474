//! diffusers' VAE `Encoder` and `Decoder` (`models/autoencoders/vae.py`), built from the
//! UNet's parts (resnet block without a time input, mid block, resamplers):
//! ```text
//! Encoder: h = conv_in(x); per level: resnets, Downsample2D (all levels but the last);
//!          mid block (resnet, attention, resnet); conv_out(silu(conv_norm_out(h)))
//!          -> 2 * latent_channels channels (mean and log-variance)
//! Decoder: h = conv_in(z); mid block; per level (widest first): layers_per_block + 1
//!          resnets, Upsample2D (all levels but the last); conv_out(silu(conv_norm_out(h)))
//! ```

use super::config::{AutoencoderKLConfig, NORM_EPS};
use crate::nn::cpu::conv_op::conv2d;
use crate::nn::cpu::norm_op::group_norm;
use crate::nn::unet::blocks::{Downsample2D, MidAttention, UNetMidBlock2D, Upsample2D};
use crate::nn::unet::layers::Init;
use crate::nn::unet::resnet::{ResnetBlock2D, ResnetOptions};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::Tensor;

/// The VAE's resnets: no time embedding, eps 1e-6, no dropout.
fn resnet_options(cfg: &AutoencoderKLConfig) -> ResnetOptions {
    ResnetOptions {
        groups: cfg.norm_num_groups,
        eps: NORM_EPS,
        dropout: 0.0,
        act_fn: cfg.act_fn,
        temb: None,
        output_scale_factor: 1.0,
    }
}

/// The mid block over the widest level: one head over all its channels (diffusers passes
/// `attention_head_dim = block_out_channels[-1]`), GroupNorm with the resnets' groups.
fn mid_block(init: &mut Init, cfg: &AutoencoderKLConfig) -> UNetMidBlock2D {
    let c = *cfg.block_out_channels.last().expect("validated: one level");
    let attention = cfg.mid_block_add_attention.then_some(MidAttention {
        head_dim: c,
        groups: Some(cfg.norm_num_groups),
        eps: NORM_EPS,
    });
    UNetMidBlock2D::with_options(init, c, &resnet_options(cfg), attention)
}

/// diffusers' `DownEncoderBlock2D`: resnets, then (except on the last level) a stride-2
/// convolution on the input padded by one on the right and bottom (`downsample_padding=0`).
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownEncoderBlock2D {
    /// `[B, C_in, H, W]` -> `[B, C_out, H/2, W/2]` (or `H, W` on the last level).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x;
        for resnet in &self.resnets {
            h = resnet.forward(h, None);
        }
        for down in &self.downsamplers {
            h = down.forward(h);
        }
        h
    }
}

/// diffusers' `UpDecoderBlock2D`: resnets, then (except on the last level) nearest x2 and a
/// 3x3 convolution.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Vec<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x;
        for resnet in &self.resnets {
            h = resnet.forward(h, None);
        }
        for up in &self.upsamplers {
            h = up.forward(h);
        }
        h
    }
}

/// diffusers' `Encoder` with `double_z=True`.
#[derive(Module, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: UNetMidBlock2D,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    pub fn new(init: &mut Init, cfg: &AutoencoderKLConfig) -> Self {
        let ch = &cfg.block_out_channels;
        let opts = resnet_options(cfg);
        let conv_in = init.conv3x3(cfg.in_channels, ch[0]);
        let mut out_ch = ch[0];
        let down_blocks = (0..ch.len())
            .map(|i| {
                let in_ch = out_ch;
                out_ch = ch[i];
                let resnets = (0..cfg.layers_per_block)
                    .map(|l| {
                        let c_in = if l == 0 { in_ch } else { out_ch };
                        ResnetBlock2D::with_options(init, &opts, c_in, out_ch)
                    })
                    .collect();
                let downsamplers = if i + 1 < ch.len() {
                    vec![Downsample2D::new(init, out_ch, 0)]
                } else {
                    vec![]
                };
                DownEncoderBlock2D {
                    resnets,
                    downsamplers,
                }
            })
            .collect();
        let mid_block = mid_block(init, cfg);
        let last = *ch.last().expect("validated: one level");
        Encoder {
            conv_in,
            down_blocks,
            mid_block,
            conv_norm_out: init.group_norm(cfg.norm_num_groups, last, NORM_EPS),
            conv_out: init.conv3x3(last, 2 * cfg.latent_channels),
        }
    }

    /// `[B, in_channels, H, W]` -> `[B, 2 latent_channels, h, w]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = conv2d(&self.conv_in, x);
        for block in &self.down_blocks {
            h = block.forward(h);
        }
        h = self.mid_block.forward(h, None);
        conv2d(&self.conv_out, group_norm(&self.conv_norm_out, h, true))
    }
}

/// diffusers' `Decoder` (`norm_type="group"`).
#[derive(Module, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: UNetMidBlock2D,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn new(init: &mut Init, cfg: &AutoencoderKLConfig) -> Self {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let opts = resnet_options(cfg);
        let conv_in = init.conv3x3(cfg.latent_channels, rev[0]);
        let mid_block = mid_block(init, cfg);
        let mut out_ch = rev[0];
        let up_blocks = (0..rev.len())
            .map(|i| {
                let prev_out = out_ch;
                out_ch = rev[i];
                let resnets = (0..cfg.layers_per_block + 1)
                    .map(|l| {
                        let c_in = if l == 0 { prev_out } else { out_ch };
                        ResnetBlock2D::with_options(init, &opts, c_in, out_ch)
                    })
                    .collect();
                let upsamplers = if i + 1 < rev.len() {
                    vec![Upsample2D::new(init, out_ch)]
                } else {
                    vec![]
                };
                UpDecoderBlock2D {
                    resnets,
                    upsamplers,
                }
            })
            .collect();
        let first = cfg.block_out_channels[0];
        Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: init.group_norm(cfg.norm_num_groups, first, NORM_EPS),
            conv_out: init.conv3x3(first, cfg.out_channels),
        }
    }

    /// `[B, latent_channels, h, w]` -> `[B, out_channels, h 2^(levels-1), w 2^(levels-1)]`.
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = conv2d(&self.conv_in, z);
        h = self.mid_block.forward(h, None);
        for block in &self.up_blocks {
            h = block.forward(h);
        }
        conv2d(&self.conv_out, group_norm(&self.conv_norm_out, h, true))
    }
}
