//! Checkpoints: a run directory holds
//! - `model.safetensors`: the EMA weights under the plain parameter names
//!   (`layers.0.weight`, ...) and the raw weights under `raw.<name>`; metadata `step`;
//! - `config.json`: the [`RunConfig`];
//! - for UNet runs, `unet/`: the EMA weights as a diffusers folder (`config.json` +
//!   `diffusion_pytorch_model.safetensors`, PyTorch layout);
//! - `train_state.safetensors`: AdamW moments (`adamw.m`, `adamw.v`) and, in the metadata,
//!   the step, the AdamW update count, the RNG state and the loss history of t sampling.
//!
//! Every file is written atomically (temp file, fsync, rename), and a checkpoint as a whole is
//! committed by the rename of `model.safetensors`: config.json first (so a re-planned run is
//! recorded before weights trained under the new plan), then the state into its synced temp
//! file, the model (the commit), and the state's rename. A crash (kill -9) at any moment leaves
//! either the old checkpoint or the new model with its state in `train_state.safetensors.tmp`,
//! which the loader takes when its step is the model's, and the next save moves into place.
//! The loader checks that the model and the state come from the same step.
//!
//! Every safetensors header is written in a fixed order (`__metadata__` first, keys sorted,
//! then the tensors by name), so identical training gives byte-identical files.
//!
//! RNG state: every random draw of step `s` comes from counter-based ChaCha8 streams of the run
//! seed (data: stream `2s`, t and noise: stream `2s + 1`), so `(seed, step)` is the full state.

use super::adamw::AdamWState;
use super::config::RunConfig;
use crate::loss::TimestepSampler;
use crate::nn::FlatParams;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const STATE_FILE: &str = "train_state.safetensors";
/// The diffusers export of an image model's EMA weights inside a run directory.
pub const DIFFUSERS_DIR: &str = "unet";
/// Subfolder of a VAE run holding its EMA weights as a diffusers `AutoencoderKL` folder.
pub const VAE_DIR: &str = "vae";

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
    /// A write that failed (full disk, no permission, something in the way of the temp file);
    /// the file at `path` is as it was.
    #[error("writing {} (through {}): {reason}", path.display(), tmp.display())]
    Write {
        path: PathBuf,
        tmp: PathBuf,
        reason: std::io::Error,
    },
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
    let tmp = temp_path(path);
    write_temp(path, &tmp, write)?;
    commit(path, &tmp)
}

/// Where `path` is written before its rename: `path.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

fn write_error(path: &Path, tmp: &Path, reason: std::io::Error) -> CheckpointError {
    CheckpointError::Write {
        path: path.to_path_buf(),
        tmp: tmp.to_path_buf(),
        reason,
    }
}

/// Creates `tmp`, fills it with `write` and syncs it to disk; on an error removes it.
fn write_temp(
    path: &Path,
    tmp: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let result = (|| {
        let mut f = std::fs::File::create(tmp)?;
        write(&mut f)?;
        f.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        write_error(path, tmp, e)
    })
}

/// Renames the synced `tmp` over `path` and syncs the directory (best effort: not every file
/// system can sync a directory).
fn commit(path: &Path, tmp: &Path) -> Result<(), CheckpointError> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        write_error(path, tmp, e)
    })?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// safetensors bytes with the header in a fixed order: `__metadata__` first with its keys
/// sorted, then the tensors as safetensors orders them (by name; all are F32). safetensors'
/// own serializer writes the metadata in hash-map order, which differs from run to run.
fn serialize(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    metadata: BTreeMap<&str, String>,
) -> Result<Vec<u8>, CheckpointError> {
    let views: Result<Vec<(String, TensorView)>, _> = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (n.clone(), v))
        })
        .collect();
    let views = views.map_err(|e| invalid(path, e.to_string()))?;
    let plain = safetensors::serialize(views, None).map_err(|e| invalid(path, e.to_string()))?;
    // plain = [n: u64 LE][header JSON `{...}` padded with spaces to 8 bytes][data]; the data
    // offsets in the header are relative to the data, so splicing the header keeps them valid.
    let n = u64::from_le_bytes(plain[..8].try_into().expect("8 bytes")) as usize;
    let tensors_json = std::str::from_utf8(&plain[8..8 + n])
        .map_err(|e| invalid(path, e.to_string()))?
        .trim_end();
    let entries = &tensors_json[1..tensors_json.len() - 1];
    let md = serde_json::to_string(&metadata).map_err(|e| invalid(path, e.to_string()))?;
    let sep = if entries.is_empty() { "" } else { "," };
    let mut header = format!("{{\"__metadata__\":{md}{sep}{entries}}}").into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + header.len() + plain.len() - 8 - n);
    out.extend((header.len() as u64).to_le_bytes());
    out.extend(header);
    out.extend(&plain[8 + n..]);
    Ok(out)
}

/// Writes `config.json` atomically.
pub fn save_config(dir: &Path, config: &RunConfig) -> Result<(), CheckpointError> {
    let path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(config).map_err(|e| invalid(&path, e.to_string()))?;
    atomic_write(&path, |f| f.write_all(json.as_bytes()))
}

/// Writes the files of a checkpoint into `dir` (created if needed), committed by the rename
/// of `model.safetensors` (module doc); on an error the previous checkpoint stays loadable.
pub fn save_checkpoint(dir: &Path, ckpt: &Checkpoint) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    finish_interrupted_save(dir)?;
    save_config(dir, &ckpt.config)?;
    let step = ckpt.state.step.to_string();

    let state_path = dir.join(STATE_FILE);
    let state_tmp = temp_path(&state_path);
    let state_json =
        serde_json::to_string(&ckpt.state).map_err(|e| invalid(&state_path, e.to_string()))?;
    let n = ckpt.optimizer.m.len();
    let bytes = serialize(
        &state_path,
        vec![
            ("adamw.m".into(), vec![n], to_bytes(&ckpt.optimizer.m)),
            ("adamw.v".into(), vec![n], to_bytes(&ckpt.optimizer.v)),
        ],
        BTreeMap::from([("state", state_json), ("step", step.clone())]),
    )?;
    write_temp(&state_path, &state_tmp, |f| f.write_all(&bytes))?;

    let model_path = dir.join(MODEL_FILE);
    let mut tensors = Vec::new();
    for (prefix, params) in [("", &ckpt.ema), ("raw.", &ckpt.raw)] {
        for (name, shape, values) in params.named_tensors() {
            tensors.push((format!("{prefix}{name}"), shape, to_bytes(values)));
        }
    }
    let committed = serialize(
        &model_path,
        tensors,
        BTreeMap::from([
            ("step", step),
            ("format", format!("diffuse-{}", ckpt.config.model.kind())),
        ]),
    )
    .and_then(|bytes| atomic_write(&model_path, |f| f.write_all(&bytes)));
    if let Err(e) = committed {
        let _ = std::fs::remove_file(&state_tmp);
        return Err(e);
    }
    commit(&state_path, &state_tmp)?;

    // Image models also get a diffusers folder (config.json + diffusion_pytorch_model
    // .safetensors of the EMA weights), loadable by diffusers' `from_pretrained`.
    if let crate::nn::ModelConfig::Unet(_) = &ckpt.config.model {
        let export = dir.join(DIFFUSERS_DIR);
        crate::nn::Net::new(&ckpt.config.model, &ckpt.ema, &crate::device::cpu())
            .and_then(|net| match net {
                crate::nn::Net::Unet(unet) => unet.save_diffusers_dir(&export),
                _ => Ok(()),
            })
            .map_err(|e| invalid(&export, e.to_string()))?;
    }
    // A VAE run's EMA weights as a diffusers `AutoencoderKL` folder (what `--vae` reads).
    if let crate::nn::ModelConfig::Vae(vae) = &ckpt.config.model {
        let export = dir.join(VAE_DIR);
        crate::nn::AutoencoderKL::new(&vae.vae, 0, &crate::device::cpu(), burn::tensor::DType::F32)
            .and_then(|m| crate::nn::params::load_values(m, &ckpt.ema.values))
            .and_then(|m| m.save_diffusers_dir(&export))
            .map_err(|e| invalid(&export, e.to_string()))?;
    }
    Ok(())
}

/// A save killed after its commit point (the model's rename) left the new state in its synced
/// temp file: move it into place before this save overwrites the temp file. A temp file of an
/// uncommitted save (another step, or cut short) is left to be overwritten.
fn finish_interrupted_save(dir: &Path) -> Result<(), CheckpointError> {
    let state_path = dir.join(STATE_FILE);
    let tmp = temp_path(&state_path);
    if !tmp.is_file() {
        return Ok(());
    }
    let model_step = read(&dir.join(MODEL_FILE))
        .ok()
        .and_then(|bytes| metadata(&dir.join(MODEL_FILE), &bytes).ok())
        .and_then(|md| metadata_step(&dir.join(MODEL_FILE), &md).ok());
    let pending_step = read(&tmp)
        .ok()
        .and_then(|bytes| read_state_metadata(&tmp, &bytes).ok())
        .map(|state| state.step);
    match (model_step, pending_step) {
        (Some(m), Some(p)) if m == p => commit(&state_path, &tmp),
        _ => Ok(()),
    }
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

/// The training state in a state file's metadata.
fn read_state_metadata(path: &Path, bytes: &[u8]) -> Result<TrainState, CheckpointError> {
    Some(metadata(path, bytes)?)
        .as_ref()
        .and_then(|md| md.get("state"))
        .ok_or_else(|| invalid(path, "metadata has no training state"))
        .and_then(|s| {
            serde_json::from_str(s).map_err(|e| invalid(path, format!("training state: {e}")))
        })
}

/// The AdamW moments (of `n` parameters) and the training state in a state file.
fn read_state(path: &Path, n: usize) -> Result<(Vec<f32>, Vec<f32>, TrainState), CheckpointError> {
    state_parts(path, &read(path)?, n)
}

fn state_parts(
    path: &Path,
    bytes: &[u8],
    n: usize,
) -> Result<(Vec<f32>, Vec<f32>, TrainState), CheckpointError> {
    let st = parse_safetensors(path, bytes)?;
    let m = f32_tensor(path, &st, "adamw.m", &[n])?;
    let v = f32_tensor(path, &st, "adamw.v", &[n])?;
    Ok((m, v, read_state_metadata(path, bytes)?))
}

/// The AdamW moments and training state of `train_state.safetensors`' bytes (read already)
/// for a model of `n` parameters at step `model_step`; errors name `path` (the fuzz tests
/// call this; [`load_checkpoint`] also reads a committed temp file and checks the sampler).
pub fn state_from_bytes(
    path: &Path,
    bytes: &[u8],
    n: usize,
    model_step: u64,
) -> Result<(AdamWState, TrainState), CheckpointError> {
    let (m, v, state) = state_parts(path, bytes, n)?;
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

/// The timestep sampler must cover the config's T (and, loss-aware, hold one loss history per
/// timestep): otherwise training would index past the schedule's tables.
fn check_sampler(
    path: &Path,
    config: &RunConfig,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    let sampler = &state.timestep_sampler;
    let t = config.schedule.num_train_timesteps;
    if sampler.num_timesteps != t {
        return Err(invalid(
            path,
            format!(
                "the timestep sampler covers {} timesteps but {CONFIG_FILE} has T = {t}",
                sampler.num_timesteps
            ),
        ));
    }
    if sampler.kind != config.train.timestep_sampling {
        return Err(invalid(
            path,
            format!(
                "the timestep sampler is {:?} but {CONFIG_FILE} has train.timestep_sampling {:?}",
                sampler.kind, config.train.timestep_sampling
            ),
        ));
    }
    let loss_aware = sampler.kind == crate::loss::TimestepSampling::LossAware;
    if loss_aware && sampler.history.len() != t {
        return Err(invalid(
            path,
            format!(
                "the timestep sampler's loss history has {} entries for T = {t}",
                sampler.history.len()
            ),
        ));
    }
    Ok(())
}

/// Reads a whole checkpoint (for `--resume`).
pub fn load_checkpoint(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let config = load_config(dir)?;
    let (ema, raw, model_step) = load_model(dir, &config)?;
    let path = dir.join(STATE_FILE);
    let (path, (m, v, state)) = match read_state(&path, raw.len()) {
        Ok(found) if found.2.step == model_step => (path, found),
        // A save killed after its commit point (the first save: before the state file exists)
        // left the model's state in the temp file.
        primary => {
            let tmp = temp_path(&path);
            match read_state(&tmp, raw.len()) {
                Ok(pending) if pending.2.step == model_step => (tmp, pending),
                _ => {
                    let (_, _, state) = primary?;
                    return Err(invalid(
                        &path,
                        format!(
                            "training state is at step {} but {MODEL_FILE} is at step \
                             {model_step}",
                            state.step
                        ),
                    ));
                }
            }
        }
    };
    check_sampler(&path, &config, &state)?;
    Ok(Checkpoint {
        config,
        ema,
        raw,
        optimizer: AdamWState {
            m,
            v,
            updates: state.adamw_updates,
        },
        state,
    })
}
