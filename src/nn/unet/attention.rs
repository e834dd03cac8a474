//! diffusers' spatial self-attention (`Attention` with `residual_connection=True`, built by the
//! UNet blocks): the `H W` positions of a `[B, C, H, W]` map are the tokens.
//! ```text
//! h        = group_norm(x) viewed as [B, HW, C]         (group_norm may be absent)
//! q, k, v  = to_q(h), to_k(h), to_v(h)                  [B, HW, heads * d], d = head dim
//! a        = softmax(q_i k_i^T / sqrt(d)) v_i            per head i
//! out      = (to_out.0(a) viewed as [B, C, H, W] + x) / rescale_output_factor
//! ```

use super::layers::Init;
use crate::nn::cpu::norm_op::group_norm;
use burn::module::Module;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::Tensor;

/// diffusers' `Attention` as the UNet blocks use it; field names are its parameter names
/// (`to_out` is a list whose first entry is the output projection, as in diffusers).
#[derive(Module, Debug)]
pub struct Attention {
    pub group_norm: Option<GroupNorm>,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Vec<Linear>,
    #[module(skip)]
    pub heads: usize,
    #[module(skip)]
    pub head_dim: usize,
    #[module(skip)]
    pub rescale_output_factor: f64,
}

impl Attention {
    /// Self-attention over `channels` channels with `heads` heads of `channels / heads`
    /// (diffusers: `heads = channels // attention_head_dim`, inner width `heads * head_dim`).
    pub fn new(
        init: &mut Init,
        channels: usize,
        head_dim: usize,
        norm: Option<(usize, f64)>,
        rescale_output_factor: f64,
    ) -> Self {
        let heads = channels / head_dim;
        let inner = heads * head_dim;
        Attention {
            group_norm: norm.map(|(g, eps)| init.group_norm(g, channels, eps)),
            to_q: init.linear(channels, inner),
            to_k: init.linear(channels, inner),
            to_v: init.linear(channels, inner),
            to_out: vec![init.linear(inner, channels)],
            heads,
            head_dim,
            rescale_output_factor,
        }
    }

    /// `x`: `[B, C, H, W]`; returns the same shape.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, hgt, wid] = x.dims();
        let l = hgt * wid;
        let (heads, d) = (self.heads, self.head_dim);
        // [B, C, HW], normalised over groups of channels, then tokens first: [B, HW, C]
        let h = x.clone().reshape([b, c, l]);
        let h = match &self.group_norm {
            Some(norm) => group_norm(norm, h, false),
            None => h,
        };
        let h = h.swap_dims(1, 2);
        // [B, HW, heads d] -> [B, heads, HW, d]
        let split = |t: Tensor<3>| t.reshape([b, l, heads, d]).swap_dims(1, 2);
        let q = split(self.to_q.forward(h.clone()));
        let k = split(self.to_k.forward(h.clone()));
        let v = split(self.to_v.forward(h));
        // [B, heads, HW, HW]
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (d as f64).sqrt());
        let a = softmax(scores, 3).matmul(v);
        // [B, heads, HW, d] -> [B, HW, heads d] -> [B, HW, C] -> [B, C, H, W]
        let a = a.swap_dims(1, 2).reshape([b, l, heads * d]);
        let out = self.to_out[0]
            .forward(a)
            .swap_dims(1, 2)
            .reshape([b, c, hgt, wid]);
        let out = out + x;
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.rescale_output_factor)
        }
    }
}
