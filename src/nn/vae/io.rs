//! diffusers checkpoint folders of the VAE: `config.json` + `diffusion_pytorch_model.safetensors`
//! (float32, PyTorch layout), read and written by the UNet's checkpoint code, since the
//! parameter paths follow the same rules.

use super::config::AutoencoderKLConfig;
use super::model::AutoencoderKL;
use crate::error::Result;
use crate::nn::unet::io::{
    data_error, load_safetensors, read_config_text, write_diffusers_dir, CONFIG_NAME, WEIGHTS_NAME,
};
use burn::tensor::{DType, Device};
use std::path::Path;

impl AutoencoderKL {
    /// Reads a diffusers `AutoencoderKL` folder into a model with `dtype` weights on `device`.
    pub fn from_diffusers_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config_path = dir.join(CONFIG_NAME);
        let text = read_config_text(&config_path)?;
        let config = AutoencoderKLConfig::from_json_str(&text)
            .map_err(|e| data_error(&config_path, e.to_string()))?;
        Self::from_safetensors(&config, &dir.join(WEIGHTS_NAME), device, dtype)
    }

    /// A model of `config` with the weights of a diffusers safetensors file, which must hold
    /// exactly the model's tensors (diffusers' names, PyTorch shapes).
    pub fn from_safetensors(
        config: &AutoencoderKLConfig,
        path: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let model = AutoencoderKL::new(config, 0, device, dtype)?;
        load_safetensors(model, path, device, dtype, "this VAE")
    }

    /// `(diffusers name, PyTorch shape, values)` of every parameter, in module order.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        crate::nn::unet::io::diffusers_tensors(self)
    }

    /// Writes `config.json` and `diffusion_pytorch_model.safetensors` into `dir` (created if
    /// needed), each atomically: weights first, config last.
    pub fn save_diffusers_dir(&self, dir: &Path) -> Result<()> {
        write_diffusers_dir(self, &self.config.to_json_string(), dir)
    }
}
