//! `diffuse bench train-unet`: the UNet's inference forward (what one sampler step costs) and
//! its training step through the one trainer, at each batch size, with the process's peak RSS
//! and a breakdown of the step: the inference forward, the rest of the loss-and-gradient pass
//! (graph recording, backward, gradient read-out) and the optimiser (AdamW, EMA, clipping).
//! The forward runs first, so its peak RSS is not inflated by training buffers. (A forward on
//! the autodiff device without a backward is not timed on its own: burn keeps such graphs
//! alive, and repeating it exhausts memory.)

use anyhow::Context;
use burn::tensor::{DType, Device};
use diffuse::data::DataSpec;
use diffuse::denoiser::Network;
use diffuse::nn::{ModelConfig, Net, UNet2DConfig};
use diffuse::tensor::from_rows;
use diffuse::train::{RunConfig, TrainConfig, Trainer};
use std::path::Path;
use std::time::Instant;

/// The UNet of `bench/unet_default.json` unless `--config` names another.
const DEFAULT_CONFIG: &str = "bench/unet_default.json";

/// Peak resident set size of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Which kernels the networks run on: diffuse's CPU kernels or burn's own ops.
pub fn kernels() -> &'static str {
    if diffuse::nn::cpu::enabled() {
        "diffuse"
    } else {
        "burn"
    }
}

/// Median milliseconds of `f` over at least 3 runs and about `seconds`, after one warm-up.
fn median_ms(seconds: f64, mut f: impl FnMut()) -> (f64, usize) {
    f();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times.len())
}

pub fn run(
    data: &str,
    config: Option<&Path>,
    batches: &[usize],
    seconds: f64,
    device: &Device,
    device_name: &str,
) -> anyhow::Result<()> {
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let unet = UNet2DConfig::from_json_str(&text).with_context(|| path.display().to_string())?;
    let model = ModelConfig::Unet(unet);
    let data = DataSpec::from_arg(data).with_context(|| format!("--data {data}"))?;
    let threads = rayon::current_num_threads();
    let params = model.init_params(0)?;
    let d = model.data_dim();
    for &batch in batches {
        // Inference: one forward at t = 500 with labels cycling through the classes.
        let net = Net::new(&model, &params, device)?;
        let x = from_rows(vec![0.1; batch * d], batch, d, device, DType::F32);
        let classes = model.num_classes().unwrap_or(0) as i64;
        let labels: Vec<i64> = (0..batch as i64)
            .map(|i| if classes > 0 { i % classes } else { -1 })
            .collect();
        let labels = (classes > 0).then_some(labels.as_slice());
        let t = vec![500.0; batch];
        let (ms, n) = median_ms(seconds, || {
            let _ = net.forward(x.clone(), &t, labels).into_data();
        });
        println!(
            "{}",
            serde_json::json!({"impl": "diffuse", "what": "sample", "device": device_name, "batch": batch, "threads": threads,
                "ms_per_forward": ms, "runs": n, "kernels": kernels(), "peak_rss_mb": peak_rss_mb(), "params": params.len()})
        );

        // Training: the trainer's full step, and its parts.
        let config = RunConfig {
            model: model.clone(),
            schedule: Default::default(),
            prediction: Default::default(),
            data: data.clone(),
            train: TrainConfig {
                batch_size: batch,
                steps: u64::MAX,
                lr: 2e-4,
                ..TrainConfig::default()
            },
            seed: 0,
            sde: None,
        };
        let mut trainer = Trainer::new(config)?.on_device(device.clone())?;
        let (step_ms, n) = median_ms(seconds, || {
            trainer.train_step().expect("finite training step");
        });
        let (grad_ms, _) = median_ms(seconds / 2.0, || {
            trainer.loss_and_gradient().expect("finite training step");
        });
        println!(
            "{}",
            serde_json::json!({"impl": "diffuse", "what": "train", "device": device_name, "batch": batch, "threads": threads,
            "ms_per_step": step_ms, "steps": n, "kernels": kernels(), "peak_rss_mb": peak_rss_mb(), "params": params.len(),
            "breakdown_ms": {
                "forward_inference": ms,
                "backward_and_gradients_est": grad_ms - ms,
                "optimizer_ema_clip": step_ms - grad_ms,
            }})
        );
    }
    Ok(())
}
