//! diffusers' `ResnetBlock2D` (pre-norm, with the time embedding injected between the convs):
//! ```text
//! h   = conv1(act(norm1(x)))
//! e   = time_emb_proj(act(temb))[:, :, None, None]
//! h   = norm2(h + e)                                  resnet_time_scale_shift = default
//!     = norm2(h) (1 + scale) + shift, [scale, shift] = e   ... = scale_shift
//! h   = conv2(dropout(act(h)))
//! out = (conv_shortcut(x) or x + h) / output_scale_factor
//! ```
//! `conv_shortcut` (1x1) exists when the channel count changes. Without a time embedding
//! (`temb_channels=None`, the VAE's blocks) there is no `time_emb_proj` and `h = norm2(h)`.

use super::config::{ActFn, TimeScaleShift, UNet2DConfig};
use super::layers::Init;
use crate::nn::cpu::conv_op::conv2d;
use crate::nn::cpu::norm_op::group_norm;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::Tensor;

/// The resnet nonlinearity (`act_fn`).
pub fn act<const D: usize>(act_fn: ActFn, x: Tensor<D>) -> Tensor<D> {
    match act_fn {
        ActFn::Silu | ActFn::Swish => silu(x),
    }
}

/// diffusers' `ResnetBlock2D`; field names are its parameter names.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub dropout: Dropout,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
    #[module(skip)]
    pub time_scale_shift: TimeScaleShift,
    #[module(skip)]
    pub act_fn: ActFn,
    #[module(skip)]
    pub output_scale_factor: f64,
}

/// The options of a resnet block that do not depend on its channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResnetOptions {
    pub groups: usize,
    pub eps: f64,
    pub dropout: f64,
    pub act_fn: ActFn,
    /// Width of the time embedding and how it is injected; `None`: no time input.
    pub temb: Option<(usize, TimeScaleShift)>,
    pub output_scale_factor: f64,
}

impl ResnetOptions {
    /// The UNet's resnets: its groups, eps, dropout and time injection.
    pub fn of_unet(cfg: &UNet2DConfig, output_scale_factor: f64) -> Self {
        ResnetOptions {
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            dropout: cfg.dropout,
            act_fn: cfg.act_fn,
            temb: Some((cfg.time_embed_dim(), cfg.resnet_time_scale_shift)),
            output_scale_factor,
        }
    }
}

impl ResnetBlock2D {
    /// A UNet block `c_in -> c_out` with the config's groups, eps, dropout and time injection.
    pub fn new(
        init: &mut Init,
        cfg: &UNet2DConfig,
        c_in: usize,
        c_out: usize,
        output_scale_factor: f64,
    ) -> Self {
        Self::with_options(
            init,
            &ResnetOptions::of_unet(cfg, output_scale_factor),
            c_in,
            c_out,
        )
    }

    /// A block `c_in -> c_out` with the given options.
    pub fn with_options(init: &mut Init, opts: &ResnetOptions, c_in: usize, c_out: usize) -> Self {
        let (g, eps) = (opts.groups, opts.eps);
        // Drawn in field order (norm1, conv1, time_emb_proj, ...): a seed gives the weights it
        // always gave.
        let norm1 = init.group_norm(g, c_in, eps);
        let conv1 = init.conv3x3(c_in, c_out);
        let time_emb_proj = opts.temb.map(|(dim, shift)| {
            let temb_out = match shift {
                TimeScaleShift::Default => c_out,
                TimeScaleShift::ScaleShift => 2 * c_out,
            };
            init.linear(dim, temb_out)
        });
        ResnetBlock2D {
            norm1,
            conv1,
            time_emb_proj,
            norm2: init.group_norm(g, c_out, eps),
            dropout: DropoutConfig::new(opts.dropout).init(),
            conv2: init.conv3x3(c_out, c_out),
            conv_shortcut: (c_in != c_out)
                .then(|| init.conv2d(c_in, c_out, 1, 1, PaddingConfig2d::Explicit(0, 0, 0, 0))),
            time_scale_shift: opts
                .temb
                .map_or(TimeScaleShift::Default, |(_, shift)| shift),
            act_fn: opts.act_fn,
            output_scale_factor: opts.output_scale_factor,
        }
    }

    /// `x`: `[B, C_in, H, W]`, `temb`: `[B, E]` (before the activation; `None` for a block
    /// without a time input); returns `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>, temb: Option<&Tensor<2>>) -> Tensor<4> {
        // SiLU is the only activation (`act`), so norm + activation is one fused op.
        let h = conv2d(&self.conv1, group_norm(&self.norm1, x.clone(), true));
        let [b, c, _, _] = h.dims();
        let h = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => {
                // [B, E] -> [B, C] or [B, 2C]
                let e = proj.forward(act(self.act_fn, temb.clone()));
                match self.time_scale_shift {
                    TimeScaleShift::Default => {
                        group_norm(&self.norm2, h + e.reshape([b, c, 1, 1]), true)
                    }
                    TimeScaleShift::ScaleShift => {
                        let scale = e.clone().slice([0..b, 0..c]).reshape([b, c, 1, 1]);
                        let shift = e.slice([0..b, c..2 * c]).reshape([b, c, 1, 1]);
                        let h = group_norm(&self.norm2, h, false);
                        act(self.act_fn, h * (scale.add_scalar(1.0)) + shift)
                    }
                }
            }
            (None, None) => group_norm(&self.norm2, h, true),
            (proj, _) => panic!(
                "resnet block with{} a time projection called with{} a time embedding",
                if proj.is_some() { "" } else { "out" },
                if proj.is_some() { "out" } else { "" },
            ),
        };
        let h = conv2d(&self.conv2, self.dropout.forward(h));
        let skip = match &self.conv_shortcut {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        let out = skip + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        }
    }
}
