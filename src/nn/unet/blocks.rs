//! The UNet's blocks, as diffusers builds them (`unet_2d_blocks.py`):
//! - a down block (`DownBlock2D`, or `AttnDownBlock2D` with an attention after each resnet)
//!   runs its resnets, keeps every output as a skip connection, and ends in a stride-2
//!   [`Downsample2D`] (whose output is a skip connection too), except the last block;
//! - the mid block (`UNetMidBlock2D`) is `resnet, (attention, resnet) x 1`;
//! - an up block (`UpBlock2D` / `AttnUpBlock2D`) concatenates, before each of its
//!   `layers_per_block + 1` resnets, the most recent remaining skip connection along channels,
//!   and ends in a nearest x2 [`Upsample2D`], except the last block.

use super::attention::Attention;
use super::config::{BlockPlan, UNet2DConfig};
use super::layers::Init;
use super::resnet::{ResnetBlock2D, ResnetOptions};
use crate::nn::cpu::conv_op::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::Tensor;

/// diffusers' `Downsample2D` (`use_conv=True`): a 3x3 stride-2 convolution. With padding 0
/// the input is first padded by one on the right and bottom (diffusers' convention).
#[derive(Module, Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn new(init: &mut Init, channels: usize, padding: usize) -> Self {
        let pad = if padding == 0 {
            PaddingConfig2d::Explicit(0, 0, 1, 1)
        } else {
            PaddingConfig2d::Explicit(padding, padding, padding, padding)
        };
        Downsample2D {
            conv: init.conv2d(channels, channels, 3, 2, pad),
        }
    }

    /// `[B, C, H, W]` -> `[B, C, H/2, W/2]` for even sides (odd sides: `floor` with padding 0,
    /// `ceil` with padding 1).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(&self.conv, x)
    }
}

/// diffusers' `Upsample2D` (`use_conv=True`): nearest-neighbour x2, then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn new(init: &mut Init, channels: usize) -> Self {
        Upsample2D {
            conv: init.conv3x3(channels, channels),
        }
    }

    /// `[B, C, H, W]` -> `[B, C, 2H, 2W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(&self.conv, nearest_2x(x))
    }
}

/// Nearest-neighbour upsampling by 2: every pixel becomes a 2x2 block (exact, and its gradient
/// is the 2x2 block sum).
pub fn nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// The attention after a resnet of a down or up block (groups `norm_num_groups`).
fn block_attention(init: &mut Init, cfg: &UNet2DConfig, channels: usize) -> Attention {
    Attention::new(
        init,
        channels,
        cfg.attention_head_dim.unwrap_or(channels),
        Some((cfg.norm_num_groups, cfg.norm_eps)),
        1.0,
    )
}

/// A down block: `DownBlock2D` (no `attentions`) or `AttnDownBlock2D`.
#[derive(Module, Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownBlock {
    pub fn new(init: &mut Init, cfg: &UNet2DConfig, plan: &BlockPlan) -> Self {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for r in &plan.resnets {
            resnets.push(ResnetBlock2D::new(
                init,
                cfg,
                r.in_channels,
                r.out_channels,
                1.0,
            ));
            if plan.attention {
                attentions.push(block_attention(init, cfg, r.out_channels));
            }
        }
        let downsamplers = if plan.resample {
            vec![Downsample2D::new(
                init,
                plan.out_channels,
                cfg.downsample_padding,
            )]
        } else {
            vec![]
        };
        DownBlock {
            resnets,
            attentions,
            downsamplers,
        }
    }

    /// Returns the block's output and its skip connections (one per resnet, plus the
    /// downsampled output).
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut h = x;
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(h);
            }
            skips.push(h.clone());
        }
        for down in &self.downsamplers {
            h = down.forward(h);
            skips.push(h.clone());
        }
        (h, skips)
    }
}

/// diffusers' `UNetMidBlock2D` with one layer: resnet, attention (if `add_attention`), resnet;
/// every part's output is divided by `mid_block_scale_factor`.
#[derive(Module, Debug)]
pub struct UNetMidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
}

impl UNetMidBlock2D {
    pub fn new(init: &mut Init, cfg: &UNet2DConfig) -> Self {
        let c = *cfg.block_out_channels.last().expect("validated: one level");
        let scale = cfg.mid_block_scale_factor;
        let attention = cfg.add_attention.then(|| MidAttention {
            head_dim: cfg.attention_head_dim.unwrap_or(c),
            groups: cfg.mid_attention_groups(),
            eps: cfg.norm_eps,
        });
        Self::with_options(init, c, &ResnetOptions::of_unet(cfg, scale), attention)
    }

    /// A mid block over `channels` channels; the attention's output is divided by the
    /// resnets' `output_scale_factor` too (diffusers passes one factor to both).
    pub fn with_options(
        init: &mut Init,
        channels: usize,
        resnet: &ResnetOptions,
        attention: Option<MidAttention>,
    ) -> Self {
        let c = channels;
        let first = ResnetBlock2D::with_options(init, resnet, c, c);
        let attentions = attention
            .map(|a| {
                Attention::new(
                    init,
                    c,
                    a.head_dim,
                    a.groups.map(|g| (g, a.eps)),
                    resnet.output_scale_factor,
                )
            })
            .into_iter()
            .collect();
        let second = ResnetBlock2D::with_options(init, resnet, c, c);
        UNetMidBlock2D {
            resnets: vec![first, second],
            attentions,
        }
    }

    /// `temb`: `None` for a mid block without a time input (the VAE's).
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        let mut h = self.resnets[0].forward(x, temb);
        for attn in &self.attentions {
            h = attn.forward(h);
        }
        self.resnets[1].forward(h, temb)
    }
}

/// The mid block's attention: channels per head, group-norm groups (`None`: no group norm)
/// and the norm's eps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MidAttention {
    pub head_dim: usize,
    pub groups: Option<usize>,
    pub eps: f64,
}

/// An up block: `UpBlock2D` (no `attentions`) or `AttnUpBlock2D`.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub upsamplers: Vec<Upsample2D>,
}

impl UpBlock {
    pub fn new(init: &mut Init, cfg: &UNet2DConfig, plan: &BlockPlan) -> Self {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for r in &plan.resnets {
            resnets.push(ResnetBlock2D::new(
                init,
                cfg,
                r.in_channels,
                r.out_channels,
                1.0,
            ));
            if plan.attention {
                attentions.push(block_attention(init, cfg, r.out_channels));
            }
        }
        let upsamplers = if plan.resample {
            vec![Upsample2D::new(init, plan.out_channels)]
        } else {
            vec![]
        };
        UpBlock {
            resnets,
            attentions,
            upsamplers,
        }
    }

    /// `skips` holds (at least) this block's skip connections, oldest first; the block takes
    /// one from the end per resnet.
    pub fn forward(&self, x: Tensor<4>, skips: &mut Vec<Tensor<4>>, temb: &Tensor<2>) -> Tensor<4> {
        let mut h = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("a skip connection per up-block resnet");
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(h);
            }
        }
        for up in &self.upsamplers {
            h = up.forward(h);
        }
        h
    }
}
