//! diffusers' `ResnetBlock2D` (pre-norm, with the time embedding injected between the convs):
//! ```text
//! h   = conv1(act(norm1(x)))
//! e   = time_emb_proj(act(temb))[:, :, None, None]
//! h   = norm2(h + e)                                  resnet_time_scale_shift = default
//!     = norm2(h) (1 + scale) + shift, [scale, shift] = e   ... = scale_shift
//! h   = conv2(dropout(act(h)))
//! out = (conv_shortcut(x) or x + h) / output_scale_factor
//! ```
//! `conv_shortcut` (1x1) exists when the channel count changes.

use super::config::{ActFn, TimeScaleShift, UNet2DConfig};
use super::layers::Init;
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
    pub time_emb_proj: Linear,
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

impl ResnetBlock2D {
    /// A block `c_in -> c_out` with the config's groups, eps, dropout and time injection.
    pub fn new(
        init: &mut Init,
        cfg: &UNet2DConfig,
        c_in: usize,
        c_out: usize,
        output_scale_factor: f64,
    ) -> Self {
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let temb_out = match cfg.resnet_time_scale_shift {
            TimeScaleShift::Default => c_out,
            TimeScaleShift::ScaleShift => 2 * c_out,
        };
        ResnetBlock2D {
            norm1: init.group_norm(g, c_in, eps),
            conv1: init.conv3x3(c_in, c_out),
            time_emb_proj: init.linear(cfg.time_embed_dim(), temb_out),
            norm2: init.group_norm(g, c_out, eps),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            conv2: init.conv3x3(c_out, c_out),
            conv_shortcut: (c_in != c_out)
                .then(|| init.conv2d(c_in, c_out, 1, 1, PaddingConfig2d::Explicit(0, 0, 0, 0))),
            time_scale_shift: cfg.resnet_time_scale_shift,
            act_fn: cfg.act_fn,
            output_scale_factor,
        }
    }

    /// `x`: `[B, C_in, H, W]`, `temb`: `[B, E]` (before the activation); returns `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<4>, temb: &Tensor<2>) -> Tensor<4> {
        let h = self
            .conv1
            .forward(act(self.act_fn, self.norm1.forward(x.clone())));
        let [b, c, _, _] = h.dims();
        // [B, E] -> [B, C] or [B, 2C]
        let e = self.time_emb_proj.forward(act(self.act_fn, temb.clone()));
        let h = match self.time_scale_shift {
            TimeScaleShift::Default => self.norm2.forward(h + e.reshape([b, c, 1, 1])),
            TimeScaleShift::ScaleShift => {
                let scale = e.clone().slice([0..b, 0..c]).reshape([b, c, 1, 1]);
                let shift = e.slice([0..b, c..2 * c]).reshape([b, c, 1, 1]);
                self.norm2.forward(h) * (scale.add_scalar(1.0)) + shift
            }
        };
        let h = self
            .conv2
            .forward(self.dropout.forward(act(self.act_fn, h)));
        let skip = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
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
