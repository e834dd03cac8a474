//! `diffuse bench train-mlp`: milliseconds per training step (forward + backward + AdamW) of
//! the default MLP (3 x 256, time embedding 64) on 2-D data, at each batch size; the same step
//! through burn's generic autodiff + burn's AdamW for comparison (`--burn`).
//! `diffuse bench train-unet`: one inference forward and one training step of a UNet (default:
//! the Fashion-MNIST UNet of `diffuse train`, or `--config` a diffusers config.json) at batch 64,
//! with peak RSS and where the step's time goes. `diffuse bench runs --run A --run B`: the
//! sampling cost per image and the training step of trained runs side by side (`bench_runs`).
//! `diffuse bench sample-mlp`: DDIM-50 and DDPM-1000 sampling of the 2-D MLP
//! (`bench_sample_mlp`). Prints one JSON line per measurement (bench/train_mlp.sh and bench/train_unet.sh put
//! PyTorch beside it; bench/latent_vs_pixel.sh compares a pixel and a latent UNet).

use anyhow::bail;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{DType, Tensor};
use diffuse::data::{DataSpec, ToyDataset};
use diffuse::nn::{MlpConfig, MlpParams};
use diffuse::tensor::from_rows;
use diffuse::train::{RunConfig, TrainConfig, Trainer};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// What to time: train-mlp, train-unet, runs or sample-mlp.
    what: String,
    #[command(flatten)]
    device: crate::device_arg::DeviceArg,
    /// Batch sizes (repeatable).
    #[arg(long = "batch", default_values_t = vec![512, 64])]
    batches: Vec<usize>,
    /// Seconds of timed steps per measurement (after 20 warm-up steps).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also time the same step through burn autodiff and burn's AdamW.
    #[arg(long)]
    burn: bool,
    /// train-unet / runs: run the networks on burn's own ops instead of diffuse's CPU kernels
    /// (the "before" rows of the speed table).
    #[arg(long)]
    burn_kernels: bool,
    /// train-unet: a diffusers UNet2DModel config.json (default: diffuse's Fashion-MNIST UNet).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// train-unet: images to train on (only their shape and labels matter for timing).
    #[arg(long, default_value = "tests/fixtures/fashion-mnist")]
    data: String,
    /// runs: a run directory to time (repeatable).
    #[arg(long = "run")]
    runs: Vec<std::path::PathBuf>,
    /// runs: the sampler whose cost per image is timed.
    #[command(flatten)]
    sampler: crate::run_dir::SamplerChoice,
    /// runs: images sampled per timing (default 64); sample-mlp: points (default 4000).
    #[arg(long)]
    n: Option<usize>,
    /// runs: alternating rounds (each run keeps its best).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Runs `step` for about `seconds` (at least once) after a warm-up; returns ms per step.
fn time(seconds: f64, mut step: impl FnMut()) -> (f64, u64) {
    for _ in 0..20 {
        step();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || start.elapsed().as_secs_f64() < seconds {
        step();
        n += 1;
    }
    (start.elapsed().as_secs_f64() * 1e3 / n as f64, n)
}

fn config(batch: usize) -> RunConfig {
    RunConfig {
        model: diffuse::nn::ModelConfig::Mlp(MlpConfig::new(2)),
        schedule: Default::default(),
        prediction: Default::default(),
        data: DataSpec::Toy {
            name: ToyDataset::Moons,
        },
        train: TrainConfig {
            batch_size: batch,
            steps: u64::MAX,
            ..TrainConfig::default()
        },
        seed: 0,
        sde: None,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    diffuse::nn::cpu::set_enabled(!args.burn_kernels);
    let device = args.device.open()?;
    // Every JSON row names the device it was measured on (`--device` as given).
    let device_name = args.device.device.to_string();
    if args.what == "train-unet" {
        // The MLP's default batch sizes do not apply: the UNet is timed at batch 64 unless asked.
        let batches = if args.batches == [512, 64] {
            vec![64]
        } else {
            args.batches.clone()
        };
        return crate::bench_unet::run(
            &args.data,
            args.config.as_deref(),
            &batches,
            args.seconds,
            &device,
            &device_name,
        );
    }
    if args.what == "sample-mlp" {
        return crate::bench_sample_mlp::run(args.n.unwrap_or(4000), &device, &device_name);
    }
    if args.what == "runs" {
        return crate::bench_runs::run(&crate::bench_runs::Options {
            runs: &args.runs,
            sampler: &args.sampler,
            n: args.n.unwrap_or(64),
            rounds: args.rounds,
            data: &args.data,
            seconds: args.seconds,
            device: &device,
            device_name: &device_name,
        });
    }
    if args.what != "train-mlp" {
        bail!(
            "unknown benchmark {:?}: expected train-mlp, train-unet, runs or sample-mlp",
            args.what
        );
    }
    let threads = rayon::current_num_threads();
    for &batch in &args.batches {
        let mut trainer = Trainer::new(config(batch))?.on_device(device.clone())?;
        let (ms, steps) = time(args.seconds, || {
            trainer.train_step().expect("finite training step");
        });
        println!(
            "{}",
            serde_json::json!({"impl": "diffuse", "device": device_name, "batch": batch, "ms_per_step": ms, "steps": steps, "threads": threads})
        );
        if args.burn {
            let device = diffuse::device::cpu().autodiff();
            let params = MlpParams::init(&MlpConfig::new(2), 0)?;
            let mut model = params.to_module(&device);
            let mut optim = AdamWConfig::new()
                .with_weight_decay(0.01)
                .with_epsilon(1e-8)
                .init();
            let x = from_rows(vec![0.5; batch * 2], batch, 2, &device, DType::F32);
            let y = from_rows(vec![0.1; batch * 2], batch, 2, &device, DType::F32);
            let t: Vec<f64> = (0..batch).map(|i| (i % 1000) as f64).collect();
            let (ms, steps) = time(args.seconds, || {
                let out = model.forward_t(x.clone(), &t);
                let loss: Tensor<1> = (out - y.clone()).square().mean();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(1e-3, model.clone(), grads);
            });
            println!(
                "{}",
                serde_json::json!({"impl": "burn-autodiff", "device": "cpu", "batch": batch, "ms_per_step": ms, "steps": steps, "threads": threads})
            );
        }
    }
    Ok(())
}
