//! [`UNet2DConfig`]: diffusers' `UNet2DModel` config (its `config.json`), with diffusers' key
//! names and defaults, so a checkpoint folder's config parses unchanged and ours is read back
//! by diffusers.
//!
//! Parsing is strict: a key this crate does not know (other than `_`-prefixed bookkeeping such
//! as `_name_or_path`) and every option value the UNet does not implement
//! (`time_embedding_type = "fourier"`, `upsample_type = "resnet"`, `CrossAttnDownBlock2D`,
//! a non-null `class_embed_type`, ...) is an error naming the option, never silently ignored.

use crate::error::{Error, Result};
use crate::nn::diffusers_config::{
    check_counts, check_levels, parse_json_text, parse_strict, MAX_CHANNELS, MAX_LAYERS_PER_BLOCK,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `_class_name` of the model these configs describe.
pub const CLASS_NAME: &str = "UNet2DModel";
/// The diffusers version whose `UNet2DModel` this reproduces (checked against its reference
/// vectors); written as `_diffusers_version`.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// `sample_size`: one side of a square sample or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

impl SampleSize {
    /// `[height, width]`.
    pub fn hw(&self) -> [usize; 2] {
        match *self {
            SampleSize::Square(s) => [s, s],
            SampleSize::Rect(hw) => hw,
        }
    }
}

/// Down block types (diffusers' `get_down_block` also accepts a `UNetRes` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    #[serde(alias = "UNetResDownBlock2D")]
    DownBlock2D,
    #[serde(alias = "UNetResAttnDownBlock2D")]
    AttnDownBlock2D,
}

/// Up block types (diffusers' `get_up_block` also accepts a `UNetRes` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    #[serde(alias = "UNetResUpBlock2D")]
    UpBlock2D,
    #[serde(alias = "UNetResAttnUpBlock2D")]
    AttnUpBlock2D,
}

/// The mid block type (`null` in the config: no mid block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    UNetMidBlock2D,
}

/// `time_embedding_type`: only the sinusoidal (`positional`) projection is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeEmbeddingType {
    Positional,
}

/// `downsample_type` / `upsample_type`: only the convolutional resamplers are implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResampleType {
    Conv,
}

/// `act_fn` of the resnet blocks (`swish` is diffusers' other name for SiLU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActFn {
    Silu,
    Swish,
}

/// `resnet_time_scale_shift`: how a resnet block injects the time embedding.
/// `default`: `norm2(h + W temb)`; `scale_shift`: `norm2(h) (1 + scale) + shift` with
/// `[scale, shift] = W temb` (and no group norm in the mid-block attention unless
/// `attn_norm_num_groups` asks for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeScaleShift {
    Default,
    ScaleShift,
}

/// diffusers' `UNet2DModel` config. Field names are diffusers' keys; `Default` is diffusers'
/// defaults (`UNet2DModel.__init__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    #[serde(rename = "_diffusers_version")]
    pub diffusers_version: String,
    pub sample_size: Option<SampleSize>,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Maps the input `x` to `2 x - 1` first.
    pub center_input_sample: bool,
    pub time_embedding_type: TimeEmbeddingType,
    /// Width of the time embedding; `null` means `4 * block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
    /// `downscale_freq_shift` of the sinusoidal projection.
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<DownBlockType>,
    pub mid_block_type: Option<MidBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// Output scale of the mid block's resnets and attention (their output is divided by it).
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    pub downsample_type: ResampleType,
    pub upsample_type: ResampleType,
    pub dropout: f64,
    pub act_fn: ActFn,
    /// Channels per attention head; `null` means one head over all channels.
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    /// Groups of the mid-block attention's group norm (see [`TimeScaleShift`]).
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    pub resnet_time_scale_shift: TimeScaleShift,
    /// Attention in the mid block.
    pub add_attention: bool,
    /// Must be `null` (a learned table of `num_class_embeds` rows); other types are refused.
    pub class_embed_type: Option<String>,
    /// Rows of the class embedding table. This crate reserves the last row as the null class
    /// of classifier-free guidance (label -1), so a model of `k` classes has `k + 1` rows.
    pub num_class_embeds: Option<usize>,
    /// Only used by diffusers' `learned` time embedding; kept for the round trip.
    pub num_train_timesteps: Option<usize>,
}

impl Default for UNet2DConfig {
    fn default() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        UNet2DConfig {
            class_name: CLASS_NAME.into(),
            diffusers_version: DIFFUSERS_VERSION.into(),
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: TimeEmbeddingType::Positional,
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                DownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
                AttnDownBlock2D,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2D),
            up_block_types: vec![AttnUpBlock2D, AttnUpBlock2D, AttnUpBlock2D, UpBlock2D],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: ResampleType::Conv,
            upsample_type: ResampleType::Conv,
            dropout: 0.0,
            act_fn: ActFn::Silu,
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: TimeScaleShift::Default,
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

/// Every key the config has, as `&'static str` so errors can name it.
const KEYS: [&str; 30] = [
    "_class_name",
    "_diffusers_version",
    "sample_size",
    "in_channels",
    "out_channels",
    "center_input_sample",
    "time_embedding_type",
    "time_embedding_dim",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "mid_block_type",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "mid_block_scale_factor",
    "downsample_padding",
    "downsample_type",
    "upsample_type",
    "dropout",
    "act_fn",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "resnet_time_scale_shift",
    "add_attention",
    "class_embed_type",
    "num_class_embeds",
    "num_train_timesteps",
];

/// One resnet block: its input and output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResnetPlan {
    pub in_channels: usize,
    pub out_channels: usize,
}

/// One down or up block: its resnets, whether each is followed by attention, and whether the
/// block ends in a resampler (none after the last down block / the last up block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlan {
    pub resnets: Vec<ResnetPlan>,
    pub attention: bool,
    pub resample: bool,
    pub out_channels: usize,
}

impl UNet2DConfig {
    /// Parses a diffusers `config.json` value and validates it. Unknown keys (except `_`-prefixed
    /// ones) and unimplemented values are errors naming the key.
    pub fn from_json(value: &Value) -> Result<Self> {
        let config: UNet2DConfig = parse_strict(value, "UNet2DModel config", "this UNet", &KEYS)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a `config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json(&parse_json_text(text, "UNet2DModel config")?)
    }

    /// The config as diffusers writes it (pretty JSON, every key present).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config serializes")
    }

    /// Width of the time embedding (`time_embedding_dim` or `4 * block_out_channels[0]`).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels[0])
    }

    /// Width of the sinusoidal projection (`block_out_channels[0]`, as diffusers).
    pub fn time_proj_dim(&self) -> usize {
        self.block_out_channels[0]
    }

    /// Heads of an attention layer over `channels` channels.
    pub fn attention_heads(&self, channels: usize) -> usize {
        channels / self.attention_head_dim.unwrap_or(channels)
    }

    /// Groups of the mid-block attention's group norm (`None`: no group norm).
    pub fn mid_attention_groups(&self) -> Option<usize> {
        self.attn_norm_num_groups
            .or(match self.resnet_time_scale_shift {
                TimeScaleShift::Default => Some(self.norm_num_groups),
                TimeScaleShift::ScaleShift => None,
            })
    }

    /// The down blocks (diffusers' `UNet2DModel.__init__` channel bookkeeping).
    pub fn down_plans(&self) -> Vec<BlockPlan> {
        let ch = &self.block_out_channels;
        let mut out_ch = ch[0];
        (0..ch.len())
            .map(|i| {
                let in_ch = out_ch;
                out_ch = ch[i];
                BlockPlan {
                    resnets: (0..self.layers_per_block)
                        .map(|l| ResnetPlan {
                            in_channels: if l == 0 { in_ch } else { out_ch },
                            out_channels: out_ch,
                        })
                        .collect(),
                    attention: self.down_block_types[i] == DownBlockType::AttnDownBlock2D,
                    resample: i + 1 < ch.len(),
                    out_channels: out_ch,
                }
            })
            .collect()
    }

    /// The up blocks: `layers_per_block + 1` resnets each, whose inputs concatenate the
    /// previous output with a skip connection of the down path.
    pub fn up_plans(&self) -> Vec<BlockPlan> {
        let rev: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let layers = self.layers_per_block + 1;
        let mut out_ch = rev[0];
        (0..n)
            .map(|i| {
                let prev_out = out_ch;
                out_ch = rev[i];
                let in_ch = rev[(i + 1).min(n - 1)];
                BlockPlan {
                    resnets: (0..layers)
                        .map(|l| {
                            let skip = if l == layers - 1 { in_ch } else { out_ch };
                            let resnet_in = if l == 0 { prev_out } else { out_ch };
                            ResnetPlan {
                                in_channels: resnet_in + skip,
                                out_channels: out_ch,
                            }
                        })
                        .collect(),
                    attention: self.up_block_types[i] == UpBlockType::AttnUpBlock2D,
                    resample: i + 1 < n,
                    out_channels: out_ch,
                }
            })
            .collect()
    }

    /// Checks every option is usable; errors name the option.
    pub fn validate(&self) -> Result<()> {
        if self.class_name != CLASS_NAME {
            return Err(Error::config(
                "_class_name",
                format!("{:?} is not {CLASS_NAME}", self.class_name),
            ));
        }
        if let Some(t) = &self.class_embed_type {
            return Err(Error::config(
                "class_embed_type",
                format!("{t:?} is not implemented (only null: a table of num_class_embeds rows)"),
            ));
        }
        check_levels(
            &self.block_out_channels,
            self.down_block_types.len(),
            self.up_block_types.len(),
        )?;
        check_counts(&[
            ("in_channels", self.in_channels, MAX_CHANNELS),
            ("out_channels", self.out_channels, MAX_CHANNELS),
            (
                "layers_per_block",
                self.layers_per_block,
                MAX_LAYERS_PER_BLOCK,
            ),
            ("norm_num_groups", self.norm_num_groups, MAX_CHANNELS),
        ])?;
        let ch = &self.block_out_channels;
        for (name, v) in [
            ("time_embedding_dim", self.time_embedding_dim),
            ("attention_head_dim", self.attention_head_dim),
            ("attn_norm_num_groups", self.attn_norm_num_groups),
            ("num_class_embeds", self.num_class_embeds),
        ] {
            if v == Some(0) {
                return Err(Error::config(name, "must be >= 1 (or null)"));
            }
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(Error::config(
                "norm_eps",
                format!("{} is not > 0", self.norm_eps),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        if !(self.mid_block_scale_factor.is_finite() && self.mid_block_scale_factor != 0.0) {
            return Err(Error::config(
                "mid_block_scale_factor",
                format!(
                    "{} is not a finite nonzero divisor",
                    self.mid_block_scale_factor
                ),
            ));
        }
        let half = (self.time_proj_dim() / 2) as f64;
        if !self.freq_shift.is_finite() || (half > 0.0 && half == self.freq_shift) {
            return Err(Error::config(
                "freq_shift",
                format!(
                    "{} leaves no frequencies (half width {half})",
                    self.freq_shift
                ),
            ));
        }
        // Padding 1 halves even sizes; padding 0 pads right/bottom by one (diffusers). Others
        // change the size so the up path no longer meets its skip connections.
        if self.downsample_padding > 1 {
            return Err(Error::config(
                "downsample_padding",
                format!("{} is not implemented (0 or 1)", self.downsample_padding),
            ));
        }
        if let Some(size) = self.sample_size {
            let factor = 1usize << (ch.len() - 1);
            for side in size.hw() {
                if side == 0 || !side.is_multiple_of(factor) {
                    return Err(Error::config(
                        "sample_size",
                        format!("{side} is not a positive multiple of 2^(levels - 1) = {factor}"),
                    ));
                }
            }
        }
        self.validate_norms_and_heads()
    }

    /// Every group norm divides its channels; every attention has at least one head.
    fn validate_norms_and_heads(&self) -> Result<()> {
        let g = self.norm_num_groups;
        let mut norms: Vec<(String, usize)> =
            vec![("conv_norm_out".into(), self.block_out_channels[0])];
        let mut attns: Vec<(String, usize)> = Vec::new();
        for (kind, plans) in [
            ("down_blocks", self.down_plans()),
            ("up_blocks", self.up_plans()),
        ] {
            for (i, b) in plans.iter().enumerate() {
                for (j, r) in b.resnets.iter().enumerate() {
                    norms.push((format!("{kind}.{i}.resnets.{j}.norm1"), r.in_channels));
                    norms.push((format!("{kind}.{i}.resnets.{j}.norm2"), r.out_channels));
                    if b.attention {
                        norms.push((
                            format!("{kind}.{i}.attentions.{j}.group_norm"),
                            r.out_channels,
                        ));
                        attns.push((format!("{kind}.{i}.attentions.{j}"), r.out_channels));
                    }
                }
            }
        }
        let mid = *self.block_out_channels.last().unwrap();
        if self.mid_block_type.is_some() {
            norms.push(("mid_block.resnets.*.norm1/norm2".into(), mid));
        }
        for (path, c) in norms {
            if !c.is_multiple_of(g) {
                return Err(Error::config(
                    "norm_num_groups",
                    format!("{g} groups do not divide the {c} channels of {path}"),
                ));
            }
        }
        if self.mid_block_type.is_some() && self.add_attention {
            attns.push(("mid_block.attentions.0".into(), mid));
            if let Some(ga) = self.mid_attention_groups() {
                if !mid.is_multiple_of(ga) {
                    let name = if self.attn_norm_num_groups.is_some() {
                        "attn_norm_num_groups"
                    } else {
                        "norm_num_groups"
                    };
                    return Err(Error::config(
                        name,
                        format!("{ga} groups do not divide the {mid} channels of the mid-block attention"),
                    ));
                }
            }
        }
        for (path, c) in attns {
            if self.attention_heads(c) == 0 {
                return Err(Error::config(
                    "attention_head_dim",
                    format!(
                        "{} exceeds the {c} channels of {path} (no head)",
                        self.attention_head_dim.unwrap_or(c)
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_exactly_the_serialized_fields() {
        // KEYS names errors and filters unknown options: it must list every field, no more.
        let v = serde_json::to_value(UNet2DConfig::default()).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut keys = KEYS.to_vec();
        fields.sort();
        keys.sort();
        assert_eq!(fields, keys);
    }

    #[test]
    fn plans_follow_diffusers_channel_bookkeeping() {
        // unet_cond's layout (refs README): up-block resnet inputs 64, 56 | 56, 40 | 40, 32 with
        // two resnets per up block; no resampler after the last down or up block.
        let cfg = UNet2DConfig {
            block_out_channels: vec![16, 24, 32],
            down_block_types: vec![DownBlockType::DownBlock2D; 3],
            up_block_types: vec![UpBlockType::UpBlock2D; 3],
            layers_per_block: 1,
            norm_num_groups: 8,
            ..UNet2DConfig::default()
        };
        let ins: Vec<Vec<usize>> = cfg
            .up_plans()
            .iter()
            .map(|b| b.resnets.iter().map(|r| r.in_channels).collect())
            .collect();
        assert_eq!(ins, vec![vec![64, 56], vec![56, 40], vec![40, 32]]);
        let down: Vec<bool> = cfg.down_plans().iter().map(|b| b.resample).collect();
        assert_eq!(down, vec![true, true, false]);
        let up: Vec<bool> = cfg.up_plans().iter().map(|b| b.resample).collect();
        assert_eq!(up, vec![true, true, false]);
    }
}
