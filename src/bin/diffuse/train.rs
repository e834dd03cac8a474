//! `diffuse train`: trains a denoiser (the MLP on a toy set or a point file, a UNet on images)
//! and writes a run directory (checkpoints, metrics.jsonl, loss.png); `--resume` continues one
//! ([`resume`]).

mod resume;

use anyhow::{bail, Context};
use diffuse::data::{DataSpec, LatentDraw};
use diffuse::loss::{LossWeighting, TimestepSampling};
use diffuse::nn::unet::{SampleSize, UNet2DConfig};
use diffuse::nn::vae::latents::latent_scaling_factor;
use diffuse::nn::vae::{AutoencoderKLConfig, Reconstruction, VaeLoss};
use diffuse::nn::{MlpConfig, ModelConfig, VaeModelConfig};
use diffuse::prediction::PredictionType;
use diffuse::report::ReportOptions;
use diffuse::schedule::{BetaSchedule, ScheduleConfig};
use diffuse::sde::SdeConfig;
use diffuse::train::checkpoint::save_checkpoint;
use diffuse::train::{fit_with_report, FitOptions, RunConfig, TrainConfig, Trainer};
use diffuse::variance::VarianceType;
use std::path::PathBuf;

#[derive(clap::Args)]
#[group(skip)] // No argument group named after the struct: --resume looks at every id given.
pub struct Args {
    #[command(flatten)]
    pub device: crate::device_arg::DeviceArg,
    /// Data-parallel training on several GPUs of this machine, e.g. `cuda:0,cuda:1`: each step
    /// splits the batch between them and sums their gradients (instead of --device).
    #[arg(long, value_delimiter = ',', value_parser = crate::device_arg::parse_device,
          conflicts_with = "device")]
    pub devices: Vec<diffuse::device::DeviceSpec>,
    /// moons | swiss_roll | 8gaussians | 25gaussians | checkerboard | mixture, a .csv/.npy file
    /// of N x D points; or images: fashion-mnist, fashion-mnist:DIR, a folder with IDX files,
    /// a *-idx3-ubyte[.gz] file, or a folder of PNGs (one subfolder per class gives labels).
    #[arg(long, default_value = "moons")]
    data: String,
    /// mlp | unet | vae (default: mlp for points, unet for images and latents).
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
    // Boxed: the subcommand enum's variants stay of similar size.
    #[command(flatten)]
    vae: Box<VaeArgs>,
}

/// Options of VAE runs (`--model vae`) and of latent diffusion (`--latent --vae DIR`).
#[derive(clap::Args)]
pub struct VaeArgs {
    /// VAE: latent channels (the encoder's levels set the latent size: 28 -> 7 with three).
    #[arg(long, default_value_t = 4)]
    latent_channels: usize,
    /// VAE: reconstruction term, l1 | l2.
    #[arg(long, default_value = "l2")]
    recon: String,
    /// VAE: weight of the summed KL against the summed reconstruction error.
    #[arg(long, default_value_t = diffuse::nn::VaeLoss::default().beta)]
    beta: f64,
    /// VAE: training images (a seeded subset) that set the latent scaling factor at the end.
    #[arg(long, default_value_t = 5000)]
    scale_images: usize,
    /// VAE: test images of the end-of-training report (MSE, PSNR, KL per latent dimension).
    #[arg(long, default_value_t = 1000)]
    report_images: usize,
    /// Train the diffusion model on the latents of the VAE given by --vae.
    #[arg(long)]
    latent: bool,
    /// The VAE of a latent run: a `diffuse train --model vae` run directory or a diffusers
    /// AutoencoderKL folder.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Latent runs: learn posterior samples (sample) or posterior means (mean).
    #[arg(long, default_value = "sample")]
    latents: String,
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
    let data = match (&args.vae.vae, args.vae.latent) {
        (Some(vae), true) => {
            let Some(draw) = LatentDraw::from_name(&args.vae.latents) else {
                bail!("--latents {:?}: expected sample or mean", args.vae.latents);
            };
            DataSpec::latent(data, vae, draw).with_context(|| format!("--vae {}", vae.display()))?
        }
        (None, true) => bail!("--latent needs --vae DIR (a `diffuse train --model vae` run)"),
        (Some(_), false) => bail!("--vae applies to latent runs: add --latent"),
        (None, false) => data,
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
    let is_unet = matches!(model, ModelConfig::Unet(_) | ModelConfig::Vae(_));
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
            let factor = 1usize << (cfg.block_out_channels.len() - 1);
            if let DataSpec::Latent { latent_shape, .. } = data {
                if !(h.is_multiple_of(factor) && w.is_multiple_of(factor)) {
                    bail!(
                        "the latents are {latent_shape:?}: a UNet of {} levels needs sides that \
                         are multiples of {factor}; use fewer levels, e.g. --block-out-channels 64 \
                         --attention-levels 0 for 7x7 latents",
                        cfg.block_out_channels.len()
                    );
                }
            }
            let classes = data.num_classes();
            cfg.num_class_embeds = (classes > 0 && !args.unconditional).then_some(classes + 1);
            Ok(ModelConfig::Unet(cfg))
        }
        "vae" => {
            let Some([c, h, w]) = image.filter(|_| !args.vae.latent) else {
                bail!("--model vae needs image data (--data fashion-mnist, an IDX file or a PNG folder)");
            };
            Ok(ModelConfig::Vae(vae_from_flags(args, c, [h, w])?))
        }
        other => bail!("--model {other:?}: expected mlp, unet or vae"),
    }
}

/// The VAE of `--model vae`: diffusers' AutoencoderKL with `--block-out-channels` levels
/// (a downsample after each but the last), `--layers-per-block`, `--norm-groups`,
/// `--latent-channels`, and the objective of `--recon` and `--beta`.
fn vae_from_flags(args: &Args, channels: usize, hw: [usize; 2]) -> anyhow::Result<VaeModelConfig> {
    use diffuse::nn::vae::config::{DownEncoderBlockType, UpDecoderBlockType};
    let levels = args.block_out_channels.len();
    let Some(reconstruction) = Reconstruction::from_name(&args.vae.recon) else {
        bail!("--recon {:?}: expected l1 or l2", args.vae.recon);
    };
    let vae = AutoencoderKLConfig {
        in_channels: channels,
        out_channels: channels,
        down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D; levels],
        up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D; levels],
        block_out_channels: args.block_out_channels.clone(),
        layers_per_block: args.layers_per_block,
        latent_channels: args.vae.latent_channels,
        norm_num_groups: args.norm_groups,
        sample_size: if hw[0] == hw[1] {
            SampleSize::Square(hw[0])
        } else {
            SampleSize::Rect(hw)
        },
        ..AutoencoderKLConfig::default()
    };
    Ok(VaeModelConfig {
        vae,
        loss: VaeLoss {
            reconstruction,
            beta: args.vae.beta,
        },
    })
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
        crate::device_arg::place(Trainer::new(run_config(&args)?)?, &args)?
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
    if trainer.config.model.as_vae().is_some() {
        finish_vae(&mut trainer, &args)?;
    }
    Ok(())
}

/// The end of a VAE run (SPEC §7): the latent scaling factor s = 1 / std(z) of the training
/// latents goes into the VAE's diffusers config (the checkpoint and `vae/` are rewritten with
/// it), then the test-set report and the reconstruction PNG.
fn finish_vae(trainer: &mut Trainer, args: &Args) -> anyhow::Result<()> {
    let Some((source, _)) = trainer.config.data.image_source() else {
        bail!("a VAE run trains on images");
    };
    let train = source.load_train()?;
    let vae = crate::eval_images::ema_vae(&trainer.config, &trainer.ema, &trainer.device)?;
    let s = latent_scaling_factor(&vae, &train, args.vae.scale_images, trainer.config.seed);
    let mut config = vae.config.clone();
    config.scaling_factor = s;
    if let ModelConfig::Vae(v) = &mut trainer.config.model {
        v.vae = config;
    }
    save_checkpoint(&args.out, &trainer.checkpoint())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "latent scaling factor 1/std(z) = {s:.5} (over {} training images); wrote {}/vae/",
        args.vae.scale_images.min(train.len()),
        args.out.display()
    );
    crate::eval_images::vae_report(
        &args.out,
        &trainer.config,
        &trainer.ema,
        trainer.step,
        args.vae.report_images,
        &trainer.device,
    )
}
