//! Checkpoints: a run directory holds
//! - `model.safetensors`: the EMA weights under the plain parameter names
//!   (`layers.0.weight`, ...) and the raw weights under `raw.<name>`; metadata `step`;
//! - `config.json`: the [`RunConfig`];
//! - for UNet runs, `unet/`: the EMA weights as a diffusers folder (`config.json` +
//!   `diffusion_pytorch_model.safetensors`, PyTorch layout);
//! - `train_state.safetensors`: AdamW moments (`adamw.m`, `adamw.v`) and, in the metadata,
//!   the step, the AdamW update count, the RNG state and the loss history of t sampling.
//!
//! Every file is written atomically (temp file, fsync, rename), state first and config last,
//! so a crash leaves each file either the old or the new version; the loader checks that the
//! model and the state come from the same step.
//!
//! RNG state: every random draw of step `s` comes from counter-based ChaCha8 streams of the run
//! seed (data: stream `2s`, t and noise: stream `2s + 1`), so `(seed, step)` is the full state.

use super::adamw::AdamWState;
use super::config::RunConfig;
use crate::loss::TimestepSampler;
use crate::nn::FlatParams;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "train_state.safetensors";
/// The diffusers export of an image model's EMA weights inside a run directory.
pub const DIFFUSERS_DIR: &str = "unet";

/// Why a checkpoint could not be written or read; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn invalid(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The counter-based RNG state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    /// The next step's streams are `2 * next_step` and `2 * next_step + 1`.
    pub next_step: u64,
}

/// Scalar training state kept in `train_state.safetensors`' metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub adamw_updates: u64,
    pub rng: RngState,
    pub timestep_sampler: TimestepSampler,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub config: RunConfig,
    pub ema: FlatParams,
    pub raw: FlatParams,
    pub optimizer: AdamWState,
    pub state: TrainState,
}

/// Writes `path` atomically: `write` fills `path.tmp`, which is synced and renamed over `path`.
/// On an error the temp file is removed and `path` is untouched.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn serialize(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let views: Result<Vec<(String, TensorView)>, _> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (n.clone(), v))
        })
        .collect();
    let views = views.map_err(|e| invalid(path, e.to_string()))?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| invalid(path, e.to_string()))
}

/// Writes the three files of a checkpoint into `dir` (created if needed).
pub fn save_checkpoint(dir: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let step = ckpt.state.step.to_string();

    let state_path = dir.join(STATE_FILE);
    let state_json =
        serde_json::to_string(&ckpt.state).map_err(|e| invalid(&state_path, e.to_string()))?;
    let n = ckpt.optimizer.m.len();
    let bytes = serialize(
        &state_path,
        vec![
            ("adamw.m".into(), vec![n], to_bytes(&ckpt.optimizer.m)),
            ("adamw.v".into(), vec![n], to_bytes(&ckpt.optimizer.v)),
        ],
        HashMap::from([
            ("state".to_string(), state_json),
            ("step".to_string(), step.clone()),
        ]),
    )?;
    atomic_write(&state_path, |f| f.write_all(&bytes))?;

    let model_path = dir.join(MODEL_FILE);
    let mut tensors = Vec::new();
    for (prefix, params) in [("", &ckpt.ema), ("raw.", &ckpt.raw)] {
        for (name, shape, values) in params.named_tensors() {
            tensors.push((format!("{prefix}{name}"), shape, to_bytes(values)));
        }
    }
    let bytes = serialize(
        &model_path,
        tensors,
        HashMap::from([
            ("step".to_string(), step),
            (
                "format".to_string(),
                format!("diffuse-{}", ckpt.config.model.kind()),
            ),
        ]),
    )?;
    atomic_write(&model_path, |f| f.write_all(&bytes))?;

    // Image models also get a diffusers folder (config.json + diffusion_pytorch_model
    // .safetensors of the EMA weights), loadable by diffusers' `from_pretrained`.
    if let crate::nn::ModelConfig::Unet(_) = &ckpt.config.model {
        let export = dir.join(DIFFUSERS_DIR);
        crate::nn::Net::new(
            &ckpt.config.model,
            &ckpt.ema,
            &burn::tensor::Device::default(),
        )
        .and_then(|net| match net {
            crate::nn::Net::Unet(unet) => unet.save_diffusers_dir(&export),
            _ => Ok(()),
        })
        .map_err(|e| invalid(&export, e.to_string()))?;
    }

    let config_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&ckpt.config)
        .map_err(|e| invalid(&config_path, e.to_string()))?;
    atomic_write(&config_path, |f| f.write_all(json.as_bytes()))
}

fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates `config.json`.
pub fn load_config(dir: &Path) -> Result<RunConfig, CheckpointError> {
    let path = dir.join(CONFIG_FILE);
    config_from_bytes(&path, &read(&path)?)
}

/// [`load_config`] on the bytes of `path` (read already); errors name `path`.
pub fn config_from_bytes(path: &Path, text: &[u8]) -> Result<RunConfig, CheckpointError> {
    let config: RunConfig =
        serde_json::from_slice(text).map_err(|e| invalid(path, e.to_string()))?;
    config
        .validate()
        .map_err(|e| invalid(path, e.to_string()))?;
    Ok(config)
}

fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>, CheckpointError> {
    SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn f32_tensor(
    path: &Path,
    st: &SafeTensors,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, CheckpointError> {
    let t = st
        .tensor(name)
        .map_err(|_| invalid(path, format!("tensor {name:?} is missing")))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(invalid(
            path,
            format!(
                "tensor {name:?} is {:?} {:?}, expected F32 {shape:?}",
                t.dtype(),
                t.shape()
            ),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The `__metadata__` map of a safetensors buffer (already validated by `deserialize`).
fn metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>, CheckpointError> {
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| CheckpointError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(md.metadata().clone().unwrap_or_default())
}

fn metadata_step(path: &Path, md: &HashMap<String, String>) -> Result<u64, CheckpointError> {
    Some(md)
        .and_then(|m| m.get("step"))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(path, "metadata has no step"))
}

/// Reads the model weights (EMA and raw) and their step.
pub fn load_model(
    dir: &Path,
    config: &RunConfig,
) -> Result<(FlatParams, FlatParams, u64), CheckpointError> {
    let path = dir.join(MODEL_FILE);
    model_from_bytes(&path, &read(&path)?, config)
}

/// [`load_model`] on the bytes of `path` (read already); errors name `path`.
pub fn model_from_bytes(
    path: &Path,
    bytes: &[u8],
    config: &RunConfig,
) -> Result<(FlatParams, FlatParams, u64), CheckpointError> {
    let path = path.to_path_buf();
    let st = parse_safetensors(&path, bytes)?;
    // The model the config describes is built (to name its tensors) only if the file can
    // hold its weights twice (EMA and raw, 4 bytes each): a config claiming a huge model
    // must not make the loader allocate it.
    if let Some(mlp) = config.model.as_mlp() {
        let claimed = mlp.num_params();
        if claimed.is_none_or(|n| n.saturating_mul(8) > bytes.len()) {
            return Err(invalid(
                &path,
                format!(
                    "the config's model has {} parameters; the file ({} bytes) cannot hold them",
                    claimed.map_or("more than 2^64".to_string(), |n| n.to_string()),
                    bytes.len()
                ),
            ));
        }
    }
    let slots = config
        .model
        .slots()
        .map_err(|e| invalid(&path, e.to_string()))?;
    let load = |prefix: &str| -> Result<FlatParams, CheckpointError> {
        let mut values = Vec::with_capacity(crate::nn::params::slots_len(&slots));
        for slot in &slots {
            values.extend(f32_tensor(
                &path,
                &st,
                &format!("{prefix}{}", slot.name),
                &slot.shape,
            )?);
        }
        Ok(FlatParams {
            slots: slots.clone(),
            values,
        })
    };
    let ema = load("")?;
    let raw = load("raw.")?;
    Ok((ema, raw, metadata_step(&path, &metadata(&path, bytes)?)?))
}

/// Reads a whole checkpoint (for `--resume`).
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let config = load_config(dir)?;
    let (ema, raw, model_step) = load_model(dir, &config)?;
    let path = dir.join(STATE_FILE);
    let (optimizer, state) = state_from_bytes(&path, &read(&path)?, raw.len(), model_step)?;
    Ok(Checkpoint {
        config,
        ema,
        raw,
        optimizer,
        state,
    })
}

/// The AdamW moments and training state of `train_state.safetensors`' bytes (read already)
/// for a model of `n` parameters at step `model_step`; errors name `path`.
pub fn state_from_bytes(
    path: &Path,
    bytes: &[u8],
    n: usize,
    model_step: u64,
) -> Result<(AdamWState, TrainState), CheckpointError> {
    let st = parse_safetensors(path, bytes)?;
    let m = f32_tensor(path, &st, "adamw.m", &[n])?;
    let v = f32_tensor(path, &st, "adamw.v", &[n])?;
    let state: TrainState = Some(metadata(path, bytes)?)
        .as_ref()
        .and_then(|md| md.get("state"))
        .ok_or_else(|| invalid(path, "metadata has no training state"))
        .and_then(|s| {
            serde_json::from_str(s).map_err(|e| invalid(path, format!("training state: {e}")))
        })?;
    if state.step != model_step {
        return Err(invalid(
            path,
            format!(
                "training state is at step {} but {MODEL_FILE} is at step {model_step}",
                state.step
            ),
        ));
    }
    let optimizer = AdamWState {
        m,
        v,
        updates: state.adamw_updates,
    };
    Ok((optimizer, state))
}
