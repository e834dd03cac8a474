//! `diffuse train`: trains the MLP denoiser on a toy set or a point file and writes a run
//! directory (checkpoints, metrics.jsonl, loss.png).

use anyhow::{bail, Context};
use diffuse::data::DataSpec;
use diffuse::loss::{LossWeighting, TimestepSampling};
use diffuse::nn::{MlpConfig, ModelConfig};
use diffuse::prediction::PredictionType;
use diffuse::schedule::{BetaSchedule, ScheduleConfig};
use diffuse::sde::SdeConfig;
use diffuse::train::checkpoint::load_checkpoint;
use diffuse::train::{fit, FitOptions, RunConfig, TrainConfig, Trainer};
use diffuse::variance::VarianceType;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// moons | swiss_roll | 8gaussians | 25gaussians | checkerboard | mixture, or a .csv/.npy file
    /// of N x D points.
    #[arg(long, default_value = "moons")]
    data: String,
    /// Total optimisation steps.
    #[arg(long, default_value_t = 5000)]
    steps: u64,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint (--steps sets the new total).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
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
    /// Loss weighting: simple | vlb | min-snr.
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
    /// Train a continuous-time score model of this SDE (vp | subvp | ve) by denoising score
    /// matching instead of a discrete-step model; sample it with --sampler em | pc | ode.
    #[arg(long)]
    sde: Option<String>,
}

fn run_config(args: &Args) -> anyhow::Result<RunConfig> {
    let data = DataSpec::from_arg(&args.data).with_context(|| format!("--data {}", args.data))?;
    let data_dim = match &data {
        DataSpec::Toy { name } => name.dim(),
        DataSpec::File { mean, .. } => mean.len(),
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
    let loss = match args.loss.as_str() {
        "simple" => LossWeighting::Simple,
        "vlb" => LossWeighting::Vlb {
            variance: VarianceType::FixedSmall,
        },
        "min-snr" => LossWeighting::MinSnr { gamma: args.gamma },
        other => bail!("--loss {other:?}: expected simple, vlb or min-snr"),
    };
    let config = RunConfig {
        model: ModelConfig::Mlp(MlpConfig {
            hidden: args.hidden,
            depth: args.depth,
            ..MlpConfig::new(data_dim)
        }),
        schedule: ScheduleConfig {
            beta_schedule,
            num_train_timesteps: args.timesteps,
            rescale_zero_terminal_snr: false,
        },
        prediction,
        data,
        train: TrainConfig {
            steps: args.steps,
            batch_size: args.batch_size,
            lr: args.lr,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut trainer = if args.resume {
        let ckpt = load_checkpoint(&args.out)
            .with_context(|| format!("resuming from {}", args.out.display()))?;
        let mut trainer = Trainer::from_checkpoint(ckpt)?;
        trainer.config.train.steps = args.steps;
        eprintln!(
            "resuming {} at step {} of {}",
            args.out.display(),
            trainer.step,
            args.steps
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
    fit(
        &mut trainer,
        &args.out,
        &FitOptions {
            until: None,
            progress: !args.quiet,
        },
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
