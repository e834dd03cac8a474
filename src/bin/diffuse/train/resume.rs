//! `diffuse train --resume`: the run continues with the configuration stored in its
//! config.json. `--steps N` re-plans the total (from the current step on, the learning rate
//! follows the warmup + cosine schedule of an N-step run; recorded in `train.replans`),
//! `--checkpoint-every` is applied and recorded, and every other flag given on the command line
//! must equal the stored value: one that differs is an error naming it, never dropped.

use super::{loss_weighting, Args};
use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::ArgMatches;
use diffuse::data::DataSpec;
use diffuse::loss::{LossWeighting, TimestepSampling};
use diffuse::nn::unet::config::{DownBlockType, UpBlockType};
use diffuse::nn::unet::UNet2DConfig;
use diffuse::nn::{MlpConfig, ModelConfig};
use diffuse::prediction::PredictionType;
use diffuse::schedule::BetaSchedule;
use diffuse::sde::SdeConfig;
use diffuse::train::checkpoint::{load_checkpoint, save_config, CONFIG_FILE};
use diffuse::train::{RunConfig, Trainer};
use serde_json::Value;

/// Flags that are not part of the run's configuration (previews only feed report.html and
/// never touch the training streams).
/// `--device` / `--devices` pick where this process trains; the run does not depend on them.
const NOT_CONFIG: [&str; 7] = [
    "out",
    "resume",
    "quiet",
    "preview_every",
    "no_preview",
    "device",
    "devices",
];

/// Loads the run in `--out`, checks the given flags against it, applies `--steps` and
/// `--checkpoint-every`, and records the new plan in config.json before training goes on.
pub fn resume(args: &Args, given: &ArgMatches) -> anyhow::Result<Trainer> {
    let dir = &args.out;
    let ckpt = load_checkpoint(dir).with_context(|| format!("resuming from {}", dir.display()))?;
    let stored = ckpt.config.clone();
    let on_command_line = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    for id in given.ids().map(|id| id.as_str()) {
        if !on_command_line(id) || NOT_CONFIG.contains(&id) {
            continue;
        }
        if id == "steps" || id == "checkpoint_every" {
            continue;
        }
        check_flag(id, args, given, &stored, dir)?;
    }
    let mut config = stored.clone();
    if on_command_line("checkpoint_every") {
        config.train.checkpoint_every = args.checkpoint_every;
    }
    if let Some(steps) = args.steps {
        config
            .train
            .replan(ckpt.state.step, steps)
            .with_context(|| format!("--steps {steps}"))?;
    }
    if config != stored {
        save_config(dir, &config)?;
    }
    let mut trainer = crate::device_arg::place(Trainer::from_checkpoint(ckpt)?, args)?;
    trainer.config = config;
    Ok(trainer)
}

/// `--lr 0.01`, `--importance-sampling`: the flag as given.
fn as_given(id: &str, given: &ArgMatches) -> String {
    let flag = format!("--{}", id.replace('_', "-"));
    let values: Vec<String> = given
        .get_raw(id)
        .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if values.is_empty() {
        flag
    } else {
        format!("{flag} {}", values.join(","))
    }
}

fn check_flag(
    id: &str,
    args: &Args,
    given: &ArgMatches,
    stored: &RunConfig,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let flag = as_given(id, given);
    let config_path = dir.join(CONFIG_FILE);
    let keeps = "a resumed run keeps its stored configuration; only --steps and \
                 --checkpoint-every may change";
    let mut requested = stored.clone();
    if let Err(why) = apply(id, args, &mut requested) {
        bail!("{flag}: {why:#} (in {}); {keeps}", config_path.display());
    }
    let mut differences = Vec::new();
    let json = |c: &RunConfig| serde_json::to_value(c).expect("configs serialise");
    diff(&json(stored), &json(&requested), "", &mut differences);
    if !differences.is_empty() {
        bail!(
            "{flag} conflicts with {} ({}); {keeps}",
            config_path.display(),
            differences.join(", ")
        );
    }
    Ok(())
}

/// The stored leaves of `a` where `b` differs, as `path = value`.
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff(u, v, &sub, out),
                    (Some(u), None) => out.push(format!("{sub} = {u}")),
                    (None, Some(_)) => out.push(format!("{sub} unset")),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(format!("{path} = {a}")),
        _ => {}
    }
}

fn mlp(cfg: &mut RunConfig) -> anyhow::Result<&mut MlpConfig> {
    match &mut cfg.model {
        ModelConfig::Mlp(m) => Ok(m),
        other => bail!("the run's model is {}, not the MLP", other.kind()),
    }
}

fn unet(cfg: &mut RunConfig) -> anyhow::Result<&mut UNet2DConfig> {
    match &mut cfg.model {
        ModelConfig::Unet(u) => Ok(u),
        other => bail!("the run's model is {}, not a UNet", other.kind()),
    }
}

/// Sets what flag `id` sets in a fresh run's config (on a copy of the stored one); an error
/// where the flag has no counterpart in this run.
fn apply(id: &str, args: &Args, cfg: &mut RunConfig) -> anyhow::Result<()> {
    let t = &mut cfg.train;
    match id {
        "lr" => t.lr = args.lr.expect("given"),
        "batch_size" => t.batch_size = args.batch_size.expect("given"),
        "warmup" => t.warmup_steps = args.warmup,
        "weight_decay" => t.weight_decay = args.weight_decay,
        "grad_clip" => t.grad_clip = args.grad_clip,
        "ema_decay" => t.ema_decay = args.ema_decay,
        "label_dropout" => t.label_dropout = args.label_dropout,
        "autodiff" => t.autodiff = args.autodiff,
        "importance_sampling" => t.timestep_sampling = TimestepSampling::LossAware,
        "loss" => {
            let loss = loss_weighting(args)?;
            // The kind; --gamma / --lambda are checked on their own.
            if std::mem::discriminant(&loss) != std::mem::discriminant(&t.loss) {
                t.loss = loss;
            }
        }
        "gamma" => match &mut t.loss {
            LossWeighting::MinSnr { gamma } => *gamma = args.gamma,
            _ => bail!("the run's loss is not min-snr"),
        },
        "lambda" => match &mut t.loss {
            LossWeighting::Hybrid { lambda } => *lambda = args.lambda,
            _ => bail!("the run's loss is not hybrid"),
        },
        "seed" => cfg.seed = args.seed,
        "timesteps" => cfg.schedule.num_train_timesteps = args.timesteps,
        "schedule" => {
            cfg.schedule.beta_schedule =
                BetaSchedule::from_name(&args.schedule).context("unknown schedule")?
        }
        "prediction" => {
            cfg.prediction =
                PredictionType::from_name(&args.prediction).context("unknown prediction")?
        }
        "sde" => cfg.sde = args.sde.as_deref().map(SdeConfig::from_name).transpose()?,
        "data" => {
            let mut spec = DataSpec::from_arg(&args.data)?;
            if let (DataSpec::Images { hflip, .. }, DataSpec::Images { hflip: stored, .. }) =
                (&mut spec, &cfg.data)
            {
                *hflip = *stored; // --hflip is checked on its own.
            }
            cfg.data = spec;
        }
        "hflip" => match &mut cfg.data {
            DataSpec::Images { hflip, .. } => *hflip = true,
            _ => bail!("the run's data are not images"),
        },
        "model" => {
            let kind = args.model.as_deref().expect("given");
            if kind != cfg.model.kind() {
                bail!("the run's model is {}", cfg.model.kind());
            }
        }
        "hidden" => mlp(cfg)?.hidden = args.hidden,
        "depth" => mlp(cfg)?.depth = args.depth,
        "block_out_channels" => unet(cfg)?.block_out_channels = args.block_out_channels.clone(),
        "layers_per_block" => unet(cfg)?.layers_per_block = args.layers_per_block,
        "norm_groups" => unet(cfg)?.norm_num_groups = args.norm_groups,
        "attention_levels" => {
            let u = unet(cfg)?;
            let attn = |l: usize| args.attention_levels.contains(&l);
            let levels = u.down_block_types.len();
            u.down_block_types = (0..levels)
                .map(|l| match attn(l) {
                    true => DownBlockType::AttnDownBlock2D,
                    false => DownBlockType::DownBlock2D,
                })
                .collect();
            u.up_block_types = (0..levels)
                .rev()
                .map(|l| match attn(l) {
                    true => UpBlockType::AttnUpBlock2D,
                    false => UpBlockType::UpBlock2D,
                })
                .collect();
        }
        "unconditional" => {
            if let ModelConfig::Unet(u) = &mut cfg.model {
                u.num_class_embeds = None;
            }
        }
        "model_config" => bail!("the model of a resumed run is the one in its config.json"),
        _ => bail!("this flag is not checked against a stored run; drop it when resuming"),
    }
    Ok(())
}
