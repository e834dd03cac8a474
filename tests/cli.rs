//! The `diffuse` binary end to end in a temp dir: train -> sample -> eval (and --resume); the
//! files exist and parse.

use std::path::Path;
use std::process::Command;

#[path = "common/cli.rs"]
mod cli;
use cli::ok;

#[test]
fn train_sample_eval_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        &[
            "train",
            "--data",
            "moons",
            "--steps",
            "60",
            "--out",
            "run",
            "--hidden",
            "32",
            "--depth",
            "2",
            "--batch-size",
            "64",
            "--checkpoint-every",
            "30",
            "--quiet",
        ],
        d,
    );
    for f in [
        "model.safetensors",
        "config.json",
        "train_state.safetensors",
        "metrics.jsonl",
        "loss.png",
    ] {
        assert!(d.join("run").join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "a line every 10 steps");
    for key in ["step", "loss", "grad_norm", "lr", "time"] {
        assert!(lines[0][key].is_number(), "{key}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run/config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["hidden"], 32);

    // Resume to 80 steps: metrics are appended.
    ok(
        &[
            "train", "--out", "run", "--resume", "--steps", "80", "--quiet",
        ],
        d,
    );
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 8);

    ok(
        &[
            "sample",
            "--run",
            "run",
            "--sampler",
            "ddpm",
            "--steps",
            "20",
            "--n",
            "300",
            "--out",
            "s.png",
            "--points",
            "s.csv",
            "--points",
            "s.npy",
            "--trajectory",
            "traj.png",
        ],
        d,
    );
    assert!(d.join("s.png").exists() && d.join("traj.png").exists());
    let csv =
        diffuse::data::file::parse_csv(&std::fs::read_to_string(d.join("s.csv")).unwrap()).unwrap();
    assert_eq!((csv.dim, csv.len()), (2, 300));
    let npy = diffuse::data::file::parse_npy(&std::fs::read(d.join("s.npy")).unwrap()).unwrap();
    assert_eq!(npy, csv);

    let text = ok(
        &[
            "eval",
            "--run",
            "run",
            "--sampler",
            "ddpm",
            "--steps",
            "20",
            "--n",
            "300",
            "--seeds",
            "2",
        ],
        d,
    );
    assert!(text.contains("sliced W1"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run/eval.json")).unwrap()).unwrap();
    assert!(report["sliced_wasserstein"]["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(report["mmd"].as_array().unwrap().len(), 3);

    // An SDE sampler takes no eta: refused by name, not dropped (a regression guard; the
    // refusal is in the sampling path).
    let err = diffuse_fails(
        &[
            "eval",
            "--run",
            "run",
            "--sampler",
            "ode",
            "--eta",
            "0.5",
            "--n",
            "10",
        ],
        d,
    );
    assert!(err.contains("--eta 0.5") && err.contains("ode"), "{err}");
}

#[test]
fn clear_errors_for_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(["train", "--data", "nope.csv", "--out", "r", "--steps", "1"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nope.csv"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(["sample", "--run", "missing-run"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn trains_on_a_user_csv_and_samples_in_its_units() {
    // Points around (100, -50) with spread ~7: the run standardises them with the file's
    // column mean/std (stored in config.json) and `sample` writes points back in the file's
    // units. Checked exactly: the same sampler run through the library, de-standardised with
    // the stored constants, matches the CSV (tolerance 1e-9 relative: both are the same float32
    // samples; CSV holds shortest round-trip decimals).
    use burn::tensor::DType;
    use diffuse::data::DataSpec;
    use diffuse::denoiser::{NetworkDenoiser, Parameterization};
    use diffuse::sample::registry::{sample, SamplerConfig, SamplerKind};
    use diffuse::train::checkpoint::{load_config, load_model};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("x,y\n");
    for i in 0..200 {
        let a = i as f64 * 0.1;
        csv += &format!("{},{}\n", 100.0 + 10.0 * a.cos(), -50.0 + 10.0 * a.sin());
    }
    std::fs::write(d.join("points.csv"), csv).unwrap();
    ok(
        &[
            "train",
            "--data",
            "points.csv",
            "--steps",
            "30",
            "--out",
            "run",
            "--hidden",
            "16",
            "--depth",
            "1",
            "--batch-size",
            "32",
            "--quiet",
        ],
        d,
    );
    ok(
        &[
            "sample",
            "--run",
            "run",
            "--sampler",
            "ddpm",
            "--steps",
            "10",
            "--n",
            "50",
            "--out",
            "s.png",
        ],
        d,
    );
    let written =
        diffuse::data::file::parse_csv(&std::fs::read_to_string(d.join("s.csv")).unwrap()).unwrap();
    let run = d.join("run");
    let config = load_config(&run).unwrap();
    let DataSpec::File { mean, std, .. } = &config.data else {
        panic!("file data expected");
    };
    assert!(
        (mean[0] - 100.0).abs() < 1.0 && (mean[1] + 50.0).abs() < 1.0,
        "{mean:?}"
    );
    let (ema, _, _) = load_model(&run, &config).unwrap();
    let device = diffuse::device::cpu();
    let denoiser = NetworkDenoiser {
        net: diffuse::nn::Net::new(&config.model, &ema, &device).unwrap(),
        parameterization: Parameterization::Discrete {
            prediction: config.prediction,
            learned_variance: false,
        },
    };
    let schedule = config.schedule.build().unwrap();
    let cfg = SamplerConfig::new(SamplerKind::Ddpm, 10);
    let x = sample(
        &cfg,
        &denoiser,
        &schedule,
        50,
        2,
        &device,
        DType::F32,
        0,
        0,
        None,
        None,
    )
    .unwrap();
    let z = diffuse::tensor::to_vec(&x);
    for (k, (w, z)) in written.values.iter().zip(&z).enumerate() {
        let want = z * std[k % 2] + mean[k % 2];
        assert!(
            (w - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{w} vs {want}"
        );
    }
}

#[test]
fn score_sde_train_sample_eval_nll_end_to_end() {
    // SPEC §6 through the CLI: a DSM run under the VE SDE, sampled by predictor-corrector and
    // evaluated with the PF-ODE NLL; a discrete sampler on it is a clear error.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = [
        "train",
        "--data",
        "mixture",
        "--sde",
        "ve",
        "--steps",
        "80",
        "--out",
        "sde",
        "--hidden",
        "32",
        "--depth",
        "2",
        "--batch-size",
        "64",
        "--quiet",
    ];
    ok(&train, d);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("sde/config.json")).unwrap()).unwrap();
    assert_eq!(config["sde"]["kind"], "ve");
    let sample = [
        "sample",
        "--run",
        "sde",
        "--sampler",
        "pc",
        "--steps",
        "20",
        "--n",
        "200",
        "--out",
        "pc.png",
    ];
    ok(&sample, d);
    assert!(d.join("pc.png").exists() && d.join("pc.csv").exists());
    let eval = [
        "eval",
        "--run",
        "sde",
        "--sampler",
        "em",
        "--steps",
        "20",
        "--n",
        "200",
        "--seeds",
        "2",
        "--nll",
        "--nll-points",
        "30",
    ];
    let text = ok(&eval, d);
    assert!(text.contains("NLL (PF-ODE, ve SDE"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("sde/eval.json")).unwrap()).unwrap();
    let nll = report["nll"]["nll_nats"].as_f64().unwrap();
    assert!(nll.is_finite() && report["nll"]["true_nll_nats"].as_f64().is_some());
    assert!(report["nll"]["nfe"].as_u64().unwrap() > 0);
    let wrong = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args([
            "sample",
            "--run",
            "sde",
            "--sampler",
            "ddim",
            "--out",
            "x.png",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && err.contains("score-SDE model"),
        "{err}"
    );
}

/// Runs `diffuse` expecting failure; returns its output.
fn diffuse_fails(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("runs");
    assert!(!out.status.success(), "diffuse {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn image_train_sample_with_class_and_guidance() {
    // A class-conditional UNet on the committed Fashion-MNIST slice: train 4 steps, then a
    // class grid with guidance, the raw .npy and the trajectory strip. PNG sizes follow from
    // the grid layout (28 px x zoom 2 + 2 px gaps).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist");
    ok(
        &[
            "train",
            "--data",
            fixture.to_str().unwrap(),
            "--steps",
            "4",
            "--block-out-channels",
            "8,16",
            "--norm-groups",
            "4",
            "--batch-size",
            "4",
            "--out",
            "img",
            "--quiet",
            "--no-preview",
        ],
        d,
    );
    assert!(d.join("img/unet/config.json").exists());
    let unet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("img/unet/config.json")).unwrap())
            .unwrap();
    assert_eq!(unet["num_class_embeds"], 11, "10 classes + the null class");
    let out = ok(
        &[
            "sample",
            "--run",
            "img",
            "--sampler",
            "ddim",
            "--steps",
            "3",
            "--n",
            "20",
            "--out",
            "grid.png",
            "--npy",
            "s.npy",
            "--trajectory",
            "traj.png",
            "--guidance",
            "2",
        ],
        d,
    );
    assert!(out.contains("20 images"), "{out}");
    let grid = image::open(d.join("grid.png")).unwrap();
    // 10 columns (one per class), 2 rows.
    assert_eq!((grid.width(), grid.height()), (10 * 58 + 2, 2 * 58 + 2));
    let npy = std::fs::read(d.join("s.npy")).unwrap();
    let header = String::from_utf8_lossy(&npy[10..128]);
    assert!(header.contains("(20, 1, 28, 28)"), "{header}");
    assert!(d.join("traj.png").exists());
    ok(
        &[
            "sample",
            "--run",
            "img",
            "--steps",
            "2",
            "--n",
            "3",
            "--class",
            "7",
            "--out",
            "seven.png",
        ],
        d,
    );
    let err = diffuse_fails(
        &[
            "sample", "--run", "img", "--n", "2", "--class", "10", "--out", "x.png",
        ],
        d,
    );
    assert!(err.contains("class 10") && err.contains("0..10"), "{err}");
    let err = diffuse_fails(
        &[
            "sample",
            "--run",
            "img",
            "--sampler",
            "em",
            "--n",
            "2",
            "--class",
            "1",
            "--out",
            "x.png",
        ],
        d,
    );
    assert!(err.contains("SDE samplers"), "{err}");
}

#[test]
fn default_image_unet_is_the_benchmarked_one() {
    // `diffuse train --data <images>` with no model flags builds exactly the UNet of
    // bench/unet_default.json, which the PyTorch side of `bash bench/train_unet.sh` builds too.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/fashion-mnist");
    ok(
        &[
            "train",
            "--data",
            fixture.to_str().unwrap(),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--out",
            "run",
            "--quiet",
            "--no-preview",
        ],
        d,
    );
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let ours = read(&d.join("run/unet/config.json"));
    let bench = read(&root.join("bench/unet_default.json"));
    for key in [
        "sample_size",
        "in_channels",
        "out_channels",
        "down_block_types",
        "up_block_types",
        "mid_block_type",
        "block_out_channels",
        "layers_per_block",
        "attention_head_dim",
        "norm_num_groups",
        "num_class_embeds",
        "flip_sin_to_cos",
        "resnet_time_scale_shift",
    ] {
        assert_eq!(ours[key], bench[key], "{key}");
    }
}
