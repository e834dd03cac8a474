//! [`UNet2DModel`]: diffusers' `UNet2DModel` (`models/unets/unet_2d.py`) as a burn module.
//! ```text
//! x      = 2 x - 1                              if center_input_sample
//! p      = Timesteps(t)                         sinusoidal, width block_out_channels[0]
//! emb    = linear_2(silu(linear_1(p)))          + class_embedding[label] (conditional)
//! h      = conv_in(x);  skips = [h]
//! h      = down blocks (each pushes its skips); mid block
//! h      = up blocks (each pops one skip per resnet)
//! out    = conv_out(silu(conv_norm_out(h)))
//! ```
//! Class labels: label -1 means "no label" and selects the LAST row of the class embedding:
//! this crate reserves that row as the null class of classifier-free guidance (SPEC §5), so a
//! model of `k` classes is built with `num_class_embeds = k + 1`. Missing labels (`None`) on
//! a conditional model mean "no label" for every sample.

use super::blocks::{DownBlock, UNetMidBlock2D, UpBlock};
use super::config::UNet2DConfig;
use super::layers::Init;
use crate::denoiser::Network;
use crate::error::Result;
use crate::nn::cpu::conv_op::conv2d;
use crate::nn::cpu::norm_op::group_norm;
use crate::nn::embedding::sinusoidal_embedding_with;
use crate::tensor::from_rows;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, GroupNorm, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

/// diffusers' `TimestepEmbedding`: the MLP from the sinusoidal projection to the time
/// embedding (always SiLU, whatever `act_fn` is).
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    /// `[B, block_out_channels[0]]` -> `[B, time_embed_dim]`.
    pub fn forward(&self, time_proj: Tensor<2>) -> Tensor<2> {
        self.linear_2
            .forward(silu(self.linear_1.forward(time_proj)))
    }
}

/// diffusers' `UNet2DModel`. Field names are diffusers' parameter paths, so a diffusers
/// checkpoint maps onto it with no rename table (see [`super::io`]).
#[derive(Module, Debug)]
pub struct UNet2DModel {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub class_embedding: Option<Embedding>,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: Option<UNetMidBlock2D>,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    #[module(skip)]
    pub config: UNet2DConfig,
}

impl UNet2DModel {
    /// A freshly initialised model (PyTorch's default initialisation, seeded) with `dtype`
    /// weights on `device`. The config is validated first.
    pub fn new(config: &UNet2DConfig, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let mut init = Init::new(seed, device, dtype);
        let c0 = cfg.block_out_channels[0];
        let temb = cfg.time_embed_dim();
        let conv_in = init.conv3x3(cfg.in_channels, c0);
        let time_embedding = TimestepEmbedding {
            linear_1: init.linear(cfg.time_proj_dim(), temb),
            linear_2: init.linear(temb, temb),
        };
        let class_embedding = cfg.num_class_embeds.map(|n| init.embedding(n, temb));
        let down_blocks = cfg
            .down_plans()
            .iter()
            .map(|p| DownBlock::new(&mut init, cfg, p))
            .collect();
        let mid_block = cfg
            .mid_block_type
            .map(|_| UNetMidBlock2D::new(&mut init, cfg));
        let up_blocks = cfg
            .up_plans()
            .iter()
            .map(|p| UpBlock::new(&mut init, cfg, p))
            .collect();
        Ok(UNet2DModel {
            conv_in,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: init.group_norm(cfg.norm_num_groups, c0, cfg.norm_eps),
            conv_out: init.conv3x3(c0, cfg.out_channels),
            config: config.clone(),
        })
    }

    /// The model moved to `device`'s autodiff device with gradients enabled on every
    /// parameter (`to_device(&device.autodiff()).train()`: a parameter built off an autodiff
    /// device only records that it wants gradients until `train` applies it).
    pub fn for_training(self, device: &Device) -> Self {
        self.to_device(&device.clone().autodiff()).train()
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.conv_in.weight.val().dtype()
    }

    /// diffusers' `Timesteps` projection of `t` (one value per sample, or one for all `batch`),
    /// row-major `[batch, block_out_channels[0]]`, in float64 (diffusers uses float32).
    pub fn time_proj(&self, t: &[f64], batch: usize) -> Vec<f64> {
        assert!(
            t.len() == batch || t.len() == 1,
            "{} timesteps for a batch of {batch}",
            t.len()
        );
        let t: Vec<f64> = if t.len() == batch {
            t.to_vec()
        } else {
            vec![t[0]; batch]
        };
        let cfg = &self.config;
        sinusoidal_embedding_with(&t, cfg.time_proj_dim(), cfg.flip_sin_to_cos, cfg.freq_shift)
    }

    /// The row of the class embedding each sample uses: label `l >= 0` is row `l`, label -1
    /// (and a missing label list) the last row, the null class. `None` for an unconditional
    /// model, which accepts only -1 labels.
    ///
    /// Panics on a label outside `-1..num_class_embeds` (a caller bug).
    pub fn class_rows(&self, labels: Option<&[i64]>, batch: usize) -> Option<Vec<i64>> {
        let Some(n) = self.config.num_class_embeds else {
            if let Some(l) = labels.and_then(|l| l.iter().find(|&&l| l != -1)) {
                panic!("class label {l} given to a UNet without a class embedding");
            }
            return None;
        };
        let null = n as i64 - 1;
        let labels = labels.unwrap_or(&[-1]);
        assert!(
            labels.len() == batch || labels.len() == 1,
            "{} class labels for a batch of {batch}",
            labels.len()
        );
        Some(
            (0..batch)
                .map(|i| {
                    let l = labels[if labels.len() == 1 { 0 } else { i }];
                    match l {
                        -1 => null,
                        0.. if l < n as i64 => l,
                        _ => panic!("class label {l} is outside -1..{n} (num_class_embeds {n})"),
                    }
                })
                .collect(),
        )
    }

    /// The embedding the resnets see: time MLP of the projection plus the class embedding.
    /// `time_proj`: `[B, block_out_channels[0]]` in the model's dtype; returns `[B, E]`.
    pub fn embedding(&self, time_proj: Tensor<2>, labels: Option<&[i64]>) -> Tensor<2> {
        let [b, _] = time_proj.dims();
        let device = time_proj.device();
        let emb = self.time_embedding.forward(time_proj);
        match (&self.class_embedding, self.class_rows(labels, b)) {
            (Some(table), Some(rows)) => {
                let idx = Tensor::<2, Int>::from_data(TensorData::new(rows, [b, 1]), &device);
                let e = emb.dims()[1];
                emb + table.forward(idx).reshape([b, e])
            }
            _ => emb,
        }
    }

    /// `x`: `[B, in_channels, H, W]` (H, W multiples of 2^(levels - 1)); `t`: one timestep value
    /// per sample or one for all (fractional values are used as they are); `labels`: see the
    /// module docs. Returns `[B, out_channels, H, W]` in `x`'s dtype.
    pub fn forward_images(&self, x: Tensor<4>, t: &[f64], labels: Option<&[i64]>) -> Tensor<4> {
        let b = x.dims()[0];
        let proj = from_rows(
            self.time_proj(t, b),
            b,
            self.config.time_proj_dim(),
            &x.device(),
            self.dtype(),
        );
        self.forward_with_time_proj(x, proj, labels)
    }

    /// [`Self::forward_images`] with the sinusoidal projection given (`[B, block_out_channels[0]]`),
    /// e.g. diffusers' own float32 projection when comparing against diffusers. Inputs of
    /// another dtype than the weights are cast to it (and the output back to `x`'s).
    pub fn forward_with_time_proj(
        &self,
        x: Tensor<4>,
        time_proj: Tensor<2>,
        labels: Option<&[i64]>,
    ) -> Tensor<4> {
        let [_, c, h, w] = x.dims();
        let levels = self.config.block_out_channels.len();
        let factor = 1usize << (levels - 1);
        assert!(
            c == self.config.in_channels && h % factor == 0 && w % factor == 0,
            "UNet input [_, {c}, {h}, {w}]: needs {} channels and sides that are multiples of {factor}",
            self.config.in_channels
        );
        let (in_dtype, dtype) = (x.dtype(), self.dtype());
        let x = if in_dtype == dtype { x } else { x.cast(dtype) };
        let time_proj = if time_proj.dtype() == dtype {
            time_proj
        } else {
            time_proj.cast(dtype)
        };
        let x = if self.config.center_input_sample {
            x.mul_scalar(2.0).sub_scalar(1.0)
        } else {
            x
        };
        let temb = self.embedding(time_proj, labels);
        let mut h = conv2d(&self.conv_in, x);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            let (out, res) = block.forward(h, &temb);
            h = out;
            skips.extend(res);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(h, Some(&temb));
        }
        for block in &self.up_blocks {
            h = block.forward(h, &mut skips, &temb);
        }
        let out = conv2d(&self.conv_out, group_norm(&self.conv_norm_out, h, true));
        if in_dtype == dtype {
            out
        } else {
            out.cast(in_dtype)
        }
    }

    /// `[H, W]` of the flat samples the [`Network`] interface passes: `sample_size`, or the
    /// square side `sqrt(D / in_channels)` when the config has none.
    pub fn sample_hw(&self, flat_dim: usize) -> [usize; 2] {
        if let Some(s) = self.config.sample_size {
            return s.hw();
        }
        let pixels = flat_dim / self.config.in_channels;
        let side = (pixels as f64).sqrt().round() as usize;
        assert!(
            side * side * self.config.in_channels == flat_dim,
            "flat sample of {flat_dim} values is not {} square channels (no sample_size set)",
            self.config.in_channels
        );
        [side, side]
    }
}

/// Flat samples at the denoiser boundary: `x` is `[N, in_channels * H * W]` (channel-major
/// images, as `reshape` of `[N, C, H, W]`), the output `[N, out_channels * H * W]`.
impl Network for UNet2DModel {
    fn forward(&self, x: Tensor<2>, t: &[f64], labels: Option<&[i64]>) -> Tensor<2> {
        let [n, d] = x.dims();
        let [h, w] = self.sample_hw(d);
        let c = self.config.in_channels;
        assert_eq!(
            d,
            c * h * w,
            "flat sample of {d} values for [{c}, {h}, {w}] images"
        );
        let out = self.forward_images(x.reshape([n, c, h, w]), t, labels);
        out.reshape([n, self.config.out_channels * h * w])
    }
}
