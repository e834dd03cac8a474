//! [`AutoencoderKLConfig`]: diffusers' `AutoencoderKL` config (its `config.json`), with
//! diffusers' key names and defaults, parsed as strictly as the UNet's: an unknown key (other
//! than `_`-prefixed bookkeeping) and every value this VAE does not implement
//! (`AttnDownEncoderBlock2D`, `act_fn = "gelu"`, non-null `latents_mean`, ...) is an error
//! naming the option.
//!
//! Fixed by diffusers' `Encoder` / `Decoder` (not config keys): the resnets' GroupNorm eps
//! 1e-6, no time embedding, a stride-2 `Downsample2D` padded (0, 1, 0, 1) after every
//! encoder level but the last, nearest x2 + conv after every decoder level but the last, and
//! `layers_per_block + 1` resnets per decoder level.

use crate::error::{Error, Result};
use crate::nn::diffusers_config::{
    check_counts, check_levels, parse_json_text, parse_strict, MAX_CHANNELS, MAX_LAYERS_PER_BLOCK,
};
use crate::nn::unet::config::{ActFn, SampleSize};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `_class_name` of the model these configs describe.
pub const CLASS_NAME: &str = "AutoencoderKL";
/// The diffusers version whose `AutoencoderKL` this reproduces (checked against its reference
/// vectors); written as `_diffusers_version`.
pub const DIFFUSERS_VERSION: &str = "0.42.1";
/// GroupNorm eps of every norm in diffusers' `Encoder` and `Decoder`.
pub const NORM_EPS: f64 = 1e-6;
/// Log-variance clamp of diffusers' `DiagonalGaussianDistribution` (SPEC §7).
pub const LOGVAR_RANGE: (f64, f64) = (-30.0, 20.0);

/// Encoder block types (only the attention-free one is implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownEncoderBlockType {
    DownEncoderBlock2D,
}

/// Decoder block types (only the attention-free one is implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpDecoderBlockType {
    UpDecoderBlock2D,
}

/// diffusers' `AutoencoderKL` config. Field names are diffusers' keys; `Default` is
/// diffusers' defaults (`AutoencoderKL.__init__`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    #[serde(rename = "_class_name")]
    pub class_name: String,
    #[serde(rename = "_diffusers_version")]
    pub diffusers_version: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<DownEncoderBlockType>,
    pub up_block_types: Vec<UpDecoderBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: ActFn,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    pub sample_size: SampleSize,
    /// s: diffusion runs on `s (z - shift_factor)` (SPEC §7); set to 1 / std of the training
    /// latents at the end of our VAE training.
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    /// Per-channel latent statistics (SDXL-style); must be null here.
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    /// Only about half-precision inference in diffusers; kept for the round trip.
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        AutoencoderKLConfig {
            class_name: CLASS_NAME.into(),
            diffusers_version: DIFFUSERS_VERSION.into(),
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: ActFn::Silu,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: SampleSize::Square(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

/// Every key the config has, as `&'static str` so errors can name it.
const KEYS: [&str; 20] = [
    "_class_name",
    "_diffusers_version",
    "in_channels",
    "out_channels",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "act_fn",
    "latent_channels",
    "norm_num_groups",
    "sample_size",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
    "use_quant_conv",
    "use_post_quant_conv",
    "mid_block_add_attention",
];

const CONTEXT: &str = "AutoencoderKL config";

impl AutoencoderKLConfig {
    /// Parses a diffusers `config.json` value and validates it; errors name the key.
    pub fn from_json(value: &Value) -> Result<Self> {
        let config: AutoencoderKLConfig = parse_strict(value, CONTEXT, "this VAE", &KEYS)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a `config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json(&parse_json_text(text, CONTEXT)?)
    }

    /// The config as diffusers writes it (pretty JSON, every key present).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config serializes")
    }

    /// Number of stride-2 downsamplers (one per level but the last).
    pub fn downsamples(&self) -> usize {
        self.block_out_channels.len() - 1
    }

    /// `[H, W]` of the images (`sample_size`).
    pub fn image_hw(&self) -> [usize; 2] {
        self.sample_size.hw()
    }

    /// `[C, h, w]` of the latent of a `sample_size` image: each downsample (3x3, stride 2,
    /// padded right/bottom by one) maps a side n to floor(n / 2).
    pub fn latent_shape(&self) -> [usize; 3] {
        let [h, w] = self.image_hw();
        let k = self.downsamples();
        [self.latent_channels, h >> k, w >> k]
    }

    /// Checks every option is usable; errors name the option.
    pub fn validate(&self) -> Result<()> {
        if self.class_name != CLASS_NAME {
            return Err(Error::config(
                "_class_name",
                format!("{:?} is not {CLASS_NAME}", self.class_name),
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
            ("latent_channels", self.latent_channels, MAX_CHANNELS),
            ("norm_num_groups", self.norm_num_groups, MAX_CHANNELS),
        ])?;
        let ch = &self.block_out_channels;
        if let Some(c) = ch.iter().find(|c| !c.is_multiple_of(self.norm_num_groups)) {
            return Err(Error::config(
                "norm_num_groups",
                format!(
                    "{} groups do not divide the {c} channels of a level",
                    self.norm_num_groups
                ),
            ));
        }
        for (name, v) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if v.is_some() {
                return Err(Error::config(
                    name,
                    "per-channel latent statistics are not implemented (only null)",
                ));
            }
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(Error::config(
                "scaling_factor",
                format!("{} is not a finite positive factor", self.scaling_factor),
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err(Error::config("shift_factor", "is not finite"));
        }
        // The decoder doubles the latent side once per level but the last; only sides that
        // halve exactly come back at their own size.
        let factor = 1usize << self.downsamples();
        for side in self.image_hw() {
            if side == 0 || !side.is_multiple_of(factor) {
                return Err(Error::config(
                    "sample_size",
                    format!(
                        "{side} is not a positive multiple of 2^(levels - 1) = {factor}, so the \
                         decoder would not give the image size back"
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
        let v = serde_json::to_value(AutoencoderKLConfig::default()).unwrap();
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut keys = KEYS.to_vec();
        fields.sort();
        keys.sort();
        assert_eq!(fields, keys);
    }

    #[test]
    fn fashion_mnist_latent_is_4x7x7() {
        // 28 -> 14 -> 7: three levels, two downsamplers (none after the last level).
        let cfg = AutoencoderKLConfig {
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![32, 64, 64],
            down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D; 3],
            up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D; 3],
            norm_num_groups: 8,
            sample_size: SampleSize::Square(28),
            ..AutoencoderKLConfig::default()
        };
        cfg.validate().unwrap();
        assert_eq!(cfg.latent_shape(), [4, 7, 7]);
    }

    #[test]
    fn unimplemented_options_fail_by_name() {
        use serde_json::json;
        let base = serde_json::to_value(AutoencoderKLConfig::default()).unwrap();
        for (patch, name) in [
            (
                json!({"down_block_types": ["AttnDownEncoderBlock2D"]}),
                "down_block_types",
            ),
            (json!({"act_fn": "gelu"}), "act_fn"),
            (
                json!({"latents_mean": [0.0, 0.0, 0.0, 0.0]}),
                "latents_mean",
            ),
            (json!({"norm_num_groups": 5}), "norm_num_groups"),
            (json!({"up_block_types": []}), "up_block_types"),
            (json!({"scaling_factor": 0.0}), "scaling_factor"),
            (
                json!({"sample_size": 31, "block_out_channels": [64, 64], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}),
                "sample_size",
            ),
            (json!({"_class_name": "VQModel"}), "_class_name"),
            (json!({"double_z": false}), "double_z"),
        ] {
            let mut v = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = AutoencoderKLConfig::from_json(&v).unwrap_err().to_string();
            assert!(err.contains(name), "{patch}: {err}");
        }
    }
}
