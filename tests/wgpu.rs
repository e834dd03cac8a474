//! The GPU code path on a real cubecl device (burn's wgpu backend, WGSL through naga), checked
//! against the CPU: CI runs these on Mesa's software Vulkan driver (lavapipe,
//! `mesa-vulkan-drivers`), so they are small. Only built with `--features wgpu`.
//!
//! Tolerances: both devices compute in float32 with different reduction orders (GPU tree
//! reductions, tiled matmuls, a different exp), so values agree to a few float32 ulps per
//! operation, growing with depth. Network outputs and sampled points: 1e-4 of their scale.
//! Gradients: 1e-3 of the largest one (sums over the batch and all pixels). Training losses
//! after a few AdamW steps: 1e-3 relative (the updates carry the gradient differences on).
#![cfg(feature = "wgpu")]

use burn::tensor::{DType, Device, Tensor};
use diffuse::data::{DataSpec, ToyDataset};
use diffuse::denoiser::{Network, NetworkDenoiser, Parameterization};
use diffuse::device::{cpu, DeviceSpec, WgpuAdapter};
use diffuse::nn::{MlpConfig, MlpParams, ModelConfig, Net};
use diffuse::sample::registry::{sample, SamplerConfig};
use diffuse::schedule::ScheduleConfig;
use diffuse::sde::score::NETWORK_TIME_SCALE;
use diffuse::sde::{Divergence, NetworkScore, Probe, ScoreOutput, TimeInput, VpSde};
use diffuse::tensor::{from_rows, to_vec};
use diffuse::train::{RunConfig, TrainConfig, Trainer};

#[path = "common/images.rs"]
mod unet_fixture;
use unet_fixture::{fixture_data, image_run, tiny_unet};
#[path = "common/cli.rs"]
mod cli;

fn gpu() -> Device {
    DeviceSpec::Wgpu(WgpuAdapter::Default)
        .open()
        .expect("a wgpu adapter (CI installs Mesa's lavapipe: mesa-vulkan-drivers)")
}

/// max |a - b| over max(1, max |b|): the error relative to the values' scale.
fn scaled_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn pattern(n: usize, seed: f64) -> Vec<f64> {
    (0..n).map(|i| ((i as f64 + seed) * 0.37).sin()).collect()
}

#[test]
fn device_names_a_wgpu_adapter() {
    let d = gpu();
    assert!(!diffuse::device::is_cpu(&d), "{d:?}");
}

#[test]
fn unet_forward_and_gradients_match_the_cpu() {
    let model = ModelConfig::Unet(tiny_unet(Some(10), 1));
    let params = model.init_params(3).unwrap();
    let (n, d) = (2, model.data_dim());
    let x = pattern(n * d, 0.0);
    let w = pattern(n * d, 5.0);
    let t = [10.0, 500.0];
    let labels = [1i64, -1];
    let forward = |device: &Device| {
        let net = Net::new(&model, &params, device).unwrap();
        let x = from_rows(x.clone(), n, d, device, DType::F32);
        to_vec(&net.forward(x, &t, Some(&labels)))
    };
    let gradients = |device: &Device| {
        let device = device.clone().autodiff();
        let net = Net::new(&model, &params, &device).unwrap();
        let x = from_rows(x.clone(), n, d, &device, DType::F32);
        let w = from_rows(w.clone(), n, d, &device, DType::F32);
        let loss: Tensor<1> = (net.forward(x, &t, Some(&labels)) * w).sum();
        let g = net.gradients(&loss.backward());
        g.into_iter().map(f64::from).collect::<Vec<_>>()
    };
    let e = scaled_error(&forward(&gpu()), &forward(&cpu()));
    assert!(e < 1e-4, "forward: scaled error {e:e}");
    let (g_gpu, g_cpu) = (gradients(&gpu()), gradients(&cpu()));
    assert_eq!(g_gpu.len(), params.len());
    let e = scaled_error(&g_gpu, &g_cpu);
    assert!(e < 1e-3, "gradients: scaled error {e:e}");
}

/// Losses of the first `steps` training steps of `config` on `device`.
fn losses(config: RunConfig, device: Device, steps: usize) -> Vec<f64> {
    let mut trainer = Trainer::new(config).unwrap().on_device(device).unwrap();
    (0..steps)
        .map(|_| trainer.train_step().unwrap().loss)
        .collect()
}

fn assert_same_curve(gpu: &[f64], cpu: &[f64], what: &str) {
    for (k, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * b.abs(),
            "{what}: step {} loss {a} on wgpu vs {b} on the CPU",
            k + 1
        );
    }
}

#[test]
fn mlp_training_gives_the_cpu_loss_curve() {
    // On the CPU the MLP trains through the fused kernel, on wgpu through burn autodiff: two
    // implementations of the same step.
    let config = RunConfig {
        model: ModelConfig::Mlp(MlpConfig::new(2)),
        schedule: Default::default(),
        prediction: Default::default(),
        data: DataSpec::Toy {
            name: ToyDataset::Moons,
        },
        train: TrainConfig {
            batch_size: 64,
            steps: 100,
            lr: 1e-3,
            ..TrainConfig::default()
        },
        seed: 0,
        sde: None,
    };
    let (g, c) = (losses(config.clone(), gpu(), 5), losses(config, cpu(), 5));
    assert_same_curve(&g, &c, "MLP");
}

#[test]
fn unet_training_gives_the_cpu_loss_curve() {
    let config = image_run(fixture_data(false), tiny_unet(Some(10), 1), 100, 4);
    let (g, c) = (losses(config.clone(), gpu(), 3), losses(config, cpu(), 3));
    assert_same_curve(&g, &c, "UNet");
}

#[test]
fn ddim_and_ddpm_sampling_match_the_cpu() {
    let params = MlpParams::init(&MlpConfig::new(2), 0).unwrap();
    let schedule = ScheduleConfig::default().build().unwrap();
    let draw = |name: &str, device: &Device| {
        let denoiser = NetworkDenoiser {
            net: params.to_module(device),
            parameterization: Parameterization::Discrete {
                prediction: Default::default(),
                learned_variance: false,
            },
        };
        let cfg = SamplerConfig::parse(name, 10).unwrap();
        let x = sample(
            &cfg,
            &denoiser,
            &schedule,
            32,
            2,
            device,
            DType::F32,
            7,
            0,
            None,
            None,
        )
        .unwrap();
        to_vec(&x)
    };
    for name in ["ddim", "ddpm"] {
        let e = scaled_error(&draw(name, &gpu()), &draw(name, &cpu()));
        assert!(e < 1e-4, "{name}: scaled error {e:e}");
    }
}

#[test]
fn train_and_sample_from_the_command_line_on_wgpu() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cli::ok(
        &[
            "train",
            "--data",
            "moons",
            "--steps",
            "20",
            "--batch-size",
            "64",
            "--out",
            "r",
            "--device",
            "wgpu",
            "--no-preview",
            "--quiet",
        ],
        d,
    );
    let text = cli::ok(
        &[
            "sample",
            "--run",
            "r",
            "--sampler",
            "ddim",
            "--steps",
            "5",
            "--n",
            "100",
            "--out",
            "s.png",
            "--device",
            "wgpu",
        ],
        d,
    );
    assert!(text.contains("100 samples"), "{text}");
    assert!(d.join("s.png").exists() && d.join("s.csv").exists());
    // eval (sample quality against fresh data) on the device; the PF-ODE NLL's score
    // divergence is checked below (the full adaptive solve takes ~700 network calls, ~100 s on
    // lavapipe).
    cli::ok(
        &[
            "eval",
            "--run",
            "r",
            "--device",
            "wgpu",
            "--sampler",
            "ddim",
            "--steps",
            "5",
            "--n",
            "200",
            "--seeds",
            "2",
        ],
        d,
    );
    assert!(d.join("r/eval.json").exists());
    // Benchmark rows name the device they were measured on.
    let text = cli::ok(
        &[
            "bench",
            "train-mlp",
            "--device",
            "wgpu",
            "--batch",
            "64",
            "--seconds",
            "0",
        ],
        d,
    );
    let row: serde_json::Value = text
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON row in:\n{text}"));
    assert_eq!(row["device"], "wgpu", "{row}");
    assert!(
        row["ms_per_step"].as_f64().is_some_and(|ms| ms > 0.0),
        "{row}"
    );
}

#[test]
fn score_divergence_matches_the_cpu() {
    // The likelihood's inner term (SPEC §6): div_x of the network's score, exactly (one
    // reverse-mode pass per dimension) and by Hutchinson probes, through autodiff on the device.
    // Same scale-relative float32 tolerance as the network outputs (1e-4): a divergence is a
    // sum of D = 2 Jacobian entries, each a gradient of one output.
    let params = MlpParams::init(&MlpConfig::new(2), 3).unwrap();
    let n = 16;
    let x = pattern(n * 2, 0.7);
    let divergences = |device: &Device| -> Vec<f64> {
        let ad = device.clone().autodiff();
        let score = NetworkScore {
            net: params.to_module(&ad),
            sde: VpSde::default(),
            output: ScoreOutput::Eps,
            time: TimeInput::Scaled(NETWORK_TIME_SCALE),
        };
        let x = from_rows(x.clone(), n, 2, &ad, DType::F32);
        let probes = Divergence::hutchinson(Probe::Rademacher, 2, &x, 5);
        [0.05, 0.5, 0.95]
            .iter()
            .flat_map(|&t| {
                let mut v = Divergence::Exact.score_divergence(&score, &x, t);
                v.extend(probes.score_divergence(&score, &x, t));
                v
            })
            .collect()
    };
    let e = scaled_error(&divergences(&gpu()), &divergences(&cpu()));
    assert!(e < 1e-4, "scaled error {e:e}");
}
