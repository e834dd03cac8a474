//! diffusers checkpoint folders: `config.json` + `diffusion_pytorch_model.safetensors`, as
//! `save_pretrained` writes them (PyTorch layout, float32).
//!
//! The module tree's parameter paths are diffusers' names with two burn spellings mapped on
//! the way: a group norm's `gamma`/`beta` are PyTorch's `weight`/`bias`, and a linear weight is
//! stored `[in, out]` in burn but `[out, in]` in PyTorch (transposed here). Every missing,
//! unexpected or misshapen tensor is an error naming the tensor and the file.

use super::config::UNet2DConfig;
use super::model::UNet2DModel;
use crate::error::{Error, Result};
use crate::train::checkpoint::atomic_write;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

/// diffusers' config file name.
pub const CONFIG_NAME: &str = "config.json";
/// diffusers' safetensors weights file name.
pub const WEIGHTS_NAME: &str = "diffusion_pytorch_model.safetensors";

pub(crate) fn data_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The diffusers name of the parameter at `path` (field names, innermost last, each with the
/// type of the struct holding it), and whether it is a linear weight (transposed in PyTorch).
fn diffusers_key(path: &[(String, String)]) -> (String, bool) {
    let (leaf, parent) = path.last().expect("a parameter has a name");
    let leaf = match (parent.as_str(), leaf.as_str()) {
        ("Struct:GroupNorm", "gamma") => "weight",
        ("Struct:GroupNorm", "beta") => "bias",
        _ => leaf.as_str(),
    };
    let mut names: Vec<&str> = path[..path.len() - 1]
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    names.push(leaf);
    (
        names.join("."),
        parent == "Struct:Linear" && leaf == "weight",
    )
}

/// Swaps the two axes of a row-major `[rows, cols]` matrix.
fn transpose(values: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

fn decode(view: &TensorView<'_>) -> std::result::Result<Vec<f64>, String> {
    let bytes = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect()),
        Dtype::F64 => Ok(bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()),
        other => Err(format!("dtype {other:?} is not supported (F32 or F64)")),
    }
}

/// Replaces every float parameter by the file's tensor of the same diffusers name.
struct Loader<'a> {
    file: &'a SafeTensors<'a>,
    device: Device,
    dtype: DType,
    path: Vec<(String, String)>,
    used: BTreeSet<String>,
    errors: Vec<String>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (key, is_linear) = diffusers_key(&self.path);
        let ours = param.val().dims();
        // PyTorch's shape of our parameter.
        let want: Vec<usize> = if is_linear {
            vec![ours[1], ours[0]]
        } else {
            ours.to_vec()
        };
        let view = match self.file.tensor(&key) {
            Ok(v) => v,
            Err(_) => {
                self.errors
                    .push(format!("missing tensor `{key}` (shape {want:?})"));
                return param;
            }
        };
        self.used.insert(key.clone());
        if view.shape() != want.as_slice() {
            self.errors.push(format!(
                "tensor `{key}` has shape {:?}, the model expects {want:?}",
                view.shape()
            ));
            return param;
        }
        let values = match decode(&view) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(format!("tensor `{key}`: {e}"));
                return param;
            }
        };
        let values = if is_linear {
            transpose(&values, want[0], want[1])
        } else {
            values
        };
        let tensor = Tensor::from_data(TensorData::new(values, ours), (&self.device, self.dtype));
        param.map(|_| tensor)
    }
}

/// Collects `(diffusers name, PyTorch shape, values)` of every float parameter.
struct Collector {
    path: Vec<(String, String)>,
    tensors: Vec<(String, Vec<usize>, Vec<f64>)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (key, is_linear) = diffusers_key(&self.path);
        let tensor = param.val();
        let dims = tensor.dims();
        let values: Vec<f64> = tensor
            .into_data()
            .try_into_vec_as::<f64>()
            .expect("float data converts to f64");
        if is_linear {
            let (d_in, d_out) = (dims[0], dims[1]);
            self.tensors
                .push((key, vec![d_out, d_in], transpose(&values, d_in, d_out)));
        } else {
            self.tensors.push((key, dims.to_vec(), values));
        }
    }
}

impl UNet2DModel {
    /// Reads a diffusers checkpoint folder (`config.json` + `diffusion_pytorch_model.safetensors`)
    /// into a model with `dtype` weights on `device` (the float32 weights are exact in F64).
    pub fn from_diffusers_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = Self::diffusers_config(dir)?;
        Self::from_safetensors(&config, &dir.join(WEIGHTS_NAME), device, dtype)
    }

    /// The validated `config.json` of a diffusers folder; errors name the file.
    pub fn diffusers_config(dir: &Path) -> Result<UNet2DConfig> {
        let path = dir.join(CONFIG_NAME);
        let bytes = std::fs::read(&path).map_err(|e| data_error(&path, e.to_string()))?;
        Self::config_from_bytes(&path, &bytes)
    }

    /// [`Self::diffusers_config`] on the bytes of `path` (read already).
    pub fn config_from_bytes(path: &Path, bytes: &[u8]) -> Result<UNet2DConfig> {
        let text = std::str::from_utf8(bytes).map_err(|e| data_error(path, e.to_string()))?;
        UNet2DConfig::from_json_str(text).map_err(|e| data_error(path, e.to_string()))
    }

    /// A model of `config` with the weights of a diffusers safetensors file. The file must hold
    /// exactly the model's tensors, with diffusers' names and PyTorch shapes.
    pub fn from_safetensors(
        config: &UNet2DConfig,
        path: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| data_error(path, e.to_string()))?;
        Self::from_safetensors_bytes(config, path, &bytes, device, dtype)
    }

    /// [`Self::from_safetensors`] on the bytes of `path` (read already).
    pub fn from_safetensors_bytes(
        config: &UNet2DConfig,
        path: &Path,
        bytes: &[u8],
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let model = UNet2DModel::new(config, 0, device, dtype)?;
        load_safetensors_bytes(model, path, bytes, device, dtype, "this UNet")
    }

    /// `(diffusers name, PyTorch shape, values)` of every parameter, in module order.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f64>)> {
        diffusers_tensors(self)
    }

    /// Writes `config.json` and `diffusion_pytorch_model.safetensors` (float32, PyTorch layout)
    /// into `dir` (created if needed), each atomically (temp file, then rename): weights
    /// first, config last, so a folder with a new config has its weights.
    pub fn save_diffusers_dir(&self, dir: &Path) -> Result<()> {
        write_diffusers_dir(self, &self.config.to_json_string(), dir)
    }
}

/// The text of a folder's `config.json`, the error naming the file.
pub(crate) fn read_config_text(config_path: &Path) -> Result<String> {
    std::fs::read_to_string(config_path).map_err(|e| data_error(config_path, e.to_string()))
}

/// `model` with every float parameter replaced by the safetensors file's tensor of the same
/// diffusers name (`what` names the model in errors). The file must hold exactly the model's
/// tensors, with diffusers' names and PyTorch shapes.
pub(crate) fn load_safetensors<M: Module>(
    model: M,
    path: &Path,
    device: &Device,
    dtype: DType,
    what: &str,
) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| data_error(path, e.to_string()))?;
    load_safetensors_bytes(model, path, &bytes, device, dtype, what)
}

/// [`load_safetensors`] on the bytes of `path` (read already; the fuzz tests call this).
pub(crate) fn load_safetensors_bytes<M: Module>(
    model: M,
    path: &Path,
    bytes: &[u8],
    device: &Device,
    dtype: DType,
    what: &str,
) -> Result<M> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| data_error(path, format!("not a safetensors file: {e}")))?;
    let mut loader = Loader {
        file: &file,
        device: device.clone(),
        dtype,
        path: Vec::new(),
        used: BTreeSet::new(),
        errors: Vec::new(),
    };
    let model = model.map(&mut loader);
    // Loaded values replace the parameters' tensors; on an autodiff device `train`
    // re-applies their gradient requirement.
    let model = if device.is_autodiff() {
        model.train()
    } else {
        model
    };
    for name in file.names() {
        if !loader.used.contains(name) {
            loader.errors.push(format!(
                "unexpected tensor `{name}` (not a parameter of {what})"
            ));
        }
    }
    if !loader.errors.is_empty() {
        loader.errors.sort();
        return Err(data_error(path, loader.errors.join("; ")));
    }
    Ok(model)
}

/// `(diffusers name, PyTorch shape, values)` of every parameter of `model`, in module order.
pub(crate) fn diffusers_tensors<M: Module>(model: &M) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let mut collector = Collector {
        path: Vec::new(),
        tensors: Vec::new(),
    };
    model.visit(&mut collector);
    collector.tensors
}

/// Writes `model`'s weights (float32, PyTorch layout) and `config_json` into `dir` as
/// `save_pretrained` does, each file atomically: weights first, config last.
pub(crate) fn write_diffusers_dir<M: Module>(
    model: &M,
    config_json: &str,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| data_error(dir, e.to_string()))?;
    let weights_path = dir.join(WEIGHTS_NAME);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = diffusers_tensors(model)
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = values
                .iter()
                .flat_map(|&v| (v as f32).to_le_bytes())
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| data_error(&weights_path, e.to_string()))?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| data_error(&weights_path, e.to_string()))?;
    write_atomic(&weights_path, &bytes)?;
    write_atomic(&dir.join(CONFIG_NAME), config_json.as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write(path, |f| f.write_all(bytes)).map_err(|e| data_error(path, e.to_string()))
}
