//! `diffuse train`: trains a denoiser (the MLP on a toy set or a point file, a UNet on images)
//! and writes a run directory (checkpoints, metrics.jsonl, loss.png); `--resume` continues one
//! ([`resume`]).

mod resume;

use anyhow::{bail, Context};
use diffuse::data::DataSpec;
use diffuse::loss::{LossWeighting, TimestepSampling};
use diffuse::nn::unet::{SampleSize, UNet2DConfig};
use diffuse::nn::{MlpConfig, ModelConfig};
use diffuse::prediction::PredictionType;
use diffuse::report::ReportOptions;
use diffuse::schedule::{BetaSchedule, ScheduleConfig};
use diffuse::sde::SdeConfig;
use diffuse::train::{fit_with_report, FitOptions, RunConfig, TrainConfig, Trainer};
use diffuse::variance::VarianceType;
use std::path::PathBuf;

#[derive(clap::Args)]
#[group(skip)] // No argument group named after the struct: --resume looks at every id given.
pub struct Args {
    /// moons | swiss_roll | 8gaussians | 25gaussians | checkerboard | mixture, a .csv/.npy file
    /// of N x D points; or images: fashion-mnist, fashion-mnist:DIR, a folder with IDX files,
    /// a *-idx3-ubyte[.gz] file, or a folder of PNGs (one subfolder per class gives labels).
    #[arg(long, default_value = "moons")]
    data: String,
    /// mlp | unet (default: mlp for points, unet for images).
    #[arg(long)]
    model: Option<String>,
    /// A diffusers-style UNet2DModel config.json (overrides the UNet flags below).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// UNet: channels of each resolution level.
    #[arg(long, value_delimiter = ',', default_value = "32,64,64")]
    block_out_channels: Vec<usize>,
    /// UNet: resnet blocks per level.
    #[arg(long, default_value_t = 1)]
    layers_per_block: usize,
    /// UNet: levels (0-based) with self-attention; the mid block always has it.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    attention_levels: Vec<usize>,
    /// UNet: GroupNorm groups.
    #[arg(long, default_value_t = 8)]
    norm_groups: usize,
    /// Train without class labels even when the data has them.
    #[arg(long)]
    unconditional: bool,
    /// Probability of replacing a label by the null class (classifier-free guidance).
    #[arg(long, default_value_t = 0.1)]
    label_dropout: f64,
    /// Random horizontal flips of training images.
    #[arg(long)]
    hflip: bool,
    /// lambda of the hybrid loss (--loss hybrid).
    #[arg(long, default_value_t = diffuse::loss::HYBRID_LAMBDA)]
    lambda: f64,
    /// Train through burn autodiff even for the MLP (which otherwise uses its fused kernel).
    #[arg(long)]
    autodiff: bool,
    /// Total optimisation steps [default: 5000]. With --resume, the new total: from the
    /// current step on, the learning rate follows the warmup + cosine schedule of a run planned
    /// for this total (after a finished run it rises again), recorded in config.json under
    /// train.replans; without --steps a resumed run continues its stored plan.
    #[arg(long)]
    steps: Option<u64>,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint with the configuration stored in its
    /// config.json (bit for bit what an uninterrupted run gives, on the same machine). Only
    /// --steps and --checkpoint-every may change; any other flag given must equal the stored
    /// value, or it is an error naming the flag.
    #[arg(long)]
    resume: bool,
    /// Batch size (default: 512 for points, 64 for images).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate of AdamW (default: 1e-3 for the MLP, 5e-4 for the UNet).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    #[arg(long, default_value_t = 0.999)]
    ema_decay: f64,
    /// Hidden width of the MLP.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Number of hidden layers.
    #[arg(long, default_value_t = 3)]
    depth: usize,
    /// What the network predicts: eps | x0 | v.
    #[arg(long, default_value = "eps")]
    prediction: String,
    /// Beta schedule: linear | scaled_linear | cosine | sigmoid.
    #[arg(long, default_value = "linear")]
    schedule: String,
    /// Number of diffusion timesteps T.
    #[arg(long, default_value_t = 1000)]
    timesteps: usize,
    /// Loss weighting: simple | vlb | min-snr | hybrid (learned variance, images).
    #[arg(long, default_value = "simple")]
    loss: String,
    /// gamma of min-SNR-gamma.
    #[arg(long, default_value_t = 5.0)]
    gamma: f64,
    /// Sample t by loss history (improved DDPM) instead of uniformly.
    #[arg(long)]
    importance_sampling: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Draw a fixed-seed preview for report.html at every K-th checkpoint (and at the end).
    #[arg(long, default_value_t = 1, value_name = "K")]
    preview_every: u64,
    /// No previews in report.html (the report is still written).
    #[arg(long)]
    no_preview: bool,
    /// Train a continuous-time score model of this SDE (vp | subvp | ve) by denoising score
    /// matching instead of a discrete-step model; sample it with --sampler em | pc | ode.
    #[arg(long)]
    sde: Option<String>,
}

fn run_config(args: &Args) -> anyhow::Result<RunConfig> {
    let data = DataSpec::from_arg(&args.data).with_context(|| format!("--data {}", args.data))?;
    let data = match data {
        DataSpec::Images {
            source,
            shape,
            num_classes,
            ..
        } => DataSpec::Images {
            source,
            shape,
            num_classes,
            hflip: args.hflip,
        },
        other => other,
    };
    let Some(prediction) = PredictionType::from_name(&args.prediction) else {
        bail!("--prediction {:?}: expected eps, x0 or v", args.prediction);
    };
    let Some(beta_schedule) = BetaSchedule::from_name(&args.schedule) else {
        bail!(
            "--schedule {:?}: expected linear, scaled_linear, cosine or sigmoid",
            args.schedule
        );
    };
    let loss = loss_weighting(args)?;
    let model = model_config(args, &data, loss.learns_variance())?;
    let is_unet = matches!(model, ModelConfig::Unet(_));
    let config = RunConfig {
        model,
        schedule: ScheduleConfig {
            beta_schedule,
            num_train_timesteps: args.timesteps,
            rescale_zero_terminal_snr: false,
        },
        prediction,
        data,
        train: TrainConfig {
            steps: args.steps.unwrap_or(DEFAULT_STEPS),
            batch_size: args.batch_size.unwrap_or(if is_unet { 64 } else { 512 }),
            lr: args.lr.unwrap_or(if is_unet { 5e-4 } else { 1e-3 }),
            label_dropout: args.label_dropout,
            autodiff: args.autodiff,
            warmup_steps: args.warmup,
            weight_decay: args.weight_decay,
            grad_clip: args.grad_clip,
            ema_decay: args.ema_decay,
            loss,
            timestep_sampling: if args.importance_sampling {
                TimestepSampling::LossAware
            } else {
                TimestepSampling::Uniform
            },
            checkpoint_every: args.checkpoint_every,
            ..TrainConfig::default()
        },
        seed: args.seed,
        sde: args
            .sde
            .as_deref()
            .map(SdeConfig::from_name)
            .transpose()
            .context("--sde")?,
    };
    config.validate().context("invalid training options")?;
    Ok(config)
}

/// The planned total of a fresh run without --steps.
const DEFAULT_STEPS: u64 = 5000;

/// The loss of `--loss` (with `--gamma`, `--lambda`).
fn loss_weighting(args: &Args) -> anyhow::Result<LossWeighting> {
    Ok(match args.loss.as_str() {
        "simple" => LossWeighting::Simple,
        "vlb" => LossWeighting::Vlb {
            variance: VarianceType::FixedSmall,
        },
        "min-snr" => LossWeighting::MinSnr { gamma: args.gamma },
        "hybrid" => LossWeighting::Hybrid {
            lambda: args.lambda,
        },
        other => bail!("--loss {other:?}: expected simple, vlb, min-snr or hybrid"),
    })
}

/// The network: the MLP for points; for images a UNet from `--model-config` or the flags
/// (class-conditional with one extra null class when the data has labels).
fn model_config(
    args: &Args,
    data: &DataSpec,
    learned_variance: bool,
) -> anyhow::Result<ModelConfig> {
    let image = data.image_shape();
    let kind = args
        .model
        .clone()
        .unwrap_or_else(|| if image.is_some() { "unet" } else { "mlp" }.into());
    match kind.as_str() {
        "mlp" => Ok(ModelConfig::Mlp(MlpConfig {
            hidden: args.hidden,
            depth: args.depth,
            ..MlpConfig::new(data.dim())
        })),
        "unet" => {
            let Some([c, h, w]) = image else {
                bail!("--model unet needs image data (--data fashion-mnist, an IDX file or a PNG folder)");
            };
            let mut cfg = match &args.model_config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("--model-config {}", path.display()))?;
                    UNet2DConfig::from_json_str(&text)
                        .with_context(|| format!("--model-config {}", path.display()))?
                }
                None => unet_from_flags(args)?,
            };
            cfg.sample_size = Some(if h == w {
                SampleSize::Square(h)
            } else {
                SampleSize::Rect([h, w])
            });
            cfg.in_channels = c;
            cfg.out_channels = if learned_variance { 2 * c } else { c };
            let classes = data.num_classes();
            cfg.num_class_embeds = (classes > 0 && !args.unconditional).then_some(classes + 1);
            Ok(ModelConfig::Unet(cfg))
        }
        other => bail!("--model {other:?}: expected mlp or unet"),
    }
}

fn unet_from_flags(args: &Args) -> anyhow::Result<UNet2DConfig> {
    use diffuse::nn::unet::config::{DownBlockType, UpBlockType};
    let levels = args.block_out_channels.len();
    if levels == 0 {
        bail!("--block-out-channels: give at least one level");
    }
    if let Some(&l) = args.attention_levels.iter().find(|&&l| l >= levels) {
        bail!("--attention-levels {l}: the UNet has levels 0..{levels}");
    }
    let attn = |l: usize| args.attention_levels.contains(&l);
    let attn_width = (0..levels)
        .filter(|&l| attn(l) || l + 1 == levels)
        .map(|l| args.block_out_channels[l])
        .min()
        .unwrap_or(32);
    Ok(UNet2DConfig {
        down_block_types: (0..levels)
            .map(|l| {
                if attn(l) {
                    DownBlockType::AttnDownBlock2D
                } else {
                    DownBlockType::DownBlock2D
                }
            })
            .collect(),
        up_block_types: (0..levels)
            .rev()
            .map(|l| {
                if attn(l) {
                    UpBlockType::AttnUpBlock2D
                } else {
                    UpBlockType::UpBlock2D
                }
            })
            .collect(),
        block_out_channels: args.block_out_channels.clone(),
        layers_per_block: args.layers_per_block,
        norm_num_groups: args.norm_groups,
        // Heads of 32 channels where the attention levels (and the mid block) are that wide.
        attention_head_dim: Some(attn_width.min(32)),
        ..UNet2DConfig::default()
    })
}

/// `given`: the train subcommand's matches, to tell flags given from defaults on --resume.
pub fn run(args: Args, given: &clap::ArgMatches) -> anyhow::Result<()> {
    let mut trainer = if args.resume {
        let trainer = resume::resume(&args, given)?;
        let train = &trainer.config.train;
        let replanned = match train.replans.last() {
            Some(r) if r.at_step == trainer.step && Some(r.to_steps) == args.steps => format!(
                " (re-planned from {}: the learning rate follows the schedule of {} steps)",
                r.from_steps, r.to_steps
            ),
            _ => String::new(),
        };
        eprintln!(
            "resuming {} at step {} of {}{replanned}",
            args.out.display(),
            trainer.step,
            train.steps
        );
        trainer
    } else {
        if args.out.join("model.safetensors").exists() {
            bail!(
                "{} already holds a run; pass --resume to continue it or pick another --out",
                args.out.display()
            );
        }
        Trainer::new(run_config(&args)?)?
    };
    let start = std::time::Instant::now();
    let first = trainer.step;
    let report = ReportOptions {
        preview_every: if args.no_preview {
            0
        } else {
            args.preview_every
        },
        ..ReportOptions::default()
    };
    fit_with_report(
        &mut trainer,
        &args.out,
        &FitOptions {
            until: None,
            progress: !args.quiet,
        },
        &report,
    )
    .with_context(|| format!("training into {}", args.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "trained {} steps in {secs:.1} s ({:.0} steps/s); wrote {}/{{model.safetensors, config.json, train_state.safetensors, metrics.jsonl, loss.png}}",
        trainer.step - first,
        (trainer.step - first) as f64 / secs,
        args.out.display()
    );
    Ok(())
}
