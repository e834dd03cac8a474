//! Latent diffusion end to end on the committed Fashion-MNIST slice (SPEC §7): a short VAE
//! training through the one trainer reduces the reconstruction error; `diffuse train --model
//! vae` -> `diffuse train --latent --vae` -> `diffuse sample` decodes to a PNG of 28x28 images;
//! a latent run names its VAE, and a missing or changed VAE is a clear error.

use diffuse::data::DataSpec;
use diffuse::nn::unet::SampleSize;
use diffuse::nn::vae::config::{DownEncoderBlockType, UpDecoderBlockType};
use diffuse::nn::vae::latents::reconstruction_report;
use diffuse::nn::{AutoencoderKLConfig, ModelConfig, Net, VaeModelConfig};
use diffuse::train::{RunConfig, TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist")
}

/// A three-level VAE (4, 8, 8 channels): 1x28x28 -> 4x7x7.
fn tiny_vae() -> AutoencoderKLConfig {
    AutoencoderKLConfig {
        in_channels: 1,
        out_channels: 1,
        down_block_types: vec![DownEncoderBlockType::DownEncoderBlock2D; 3],
        up_block_types: vec![UpDecoderBlockType::UpDecoderBlock2D; 3],
        block_out_channels: vec![4, 8, 8],
        norm_num_groups: 4,
        sample_size: SampleSize::Square(28),
        ..AutoencoderKLConfig::default()
    }
}

#[test]
fn short_vae_training_reduces_test_reconstruction_error() {
    // 40 AdamW steps of batch 8 on the 500-image slice; the test MSE of decode(mu) on the 100
    // test images must fall by at least 2x. A fresh decoder outputs values near 0 against
    // mostly -1 backgrounds (MSE ~0.5-0.8); learning the background and the coarse shapes
    // brings it to ~0.2 within these steps (measured ~3x), so 2x leaves margin yet fails if
    // the gradient does not reach the decoder or the encoder.
    let data = DataSpec::from_arg(fixture().to_str().unwrap()).unwrap();
    let test = data.image_source().unwrap().0.load_test().unwrap().unwrap();
    let cfg = RunConfig {
        model: ModelConfig::Vae(VaeModelConfig {
            vae: tiny_vae(),
            loss: Default::default(),
        }),
        schedule: Default::default(),
        prediction: diffuse::prediction::PredictionType::Eps,
        data,
        train: TrainConfig {
            steps: 40,
            batch_size: 8,
            lr: 3e-3,
            warmup_steps: 2,
            checkpoint_every: 0,
            ..TrainConfig::default()
        },
        seed: 3,
        sde: None,
    };
    let mut trainer = Trainer::new(cfg).unwrap();
    let all: Vec<usize> = (0..test.len()).collect();
    let mse = |trainer: &Trainer| {
        let net = Net::new(&trainer.config.model, &trainer.params, &Default::default()).unwrap();
        let Net::Vae(vae) = net else { panic!("a VAE") };
        reconstruction_report(&vae, &test, &all).mse
    };
    let before = mse(&trainer);
    for _ in 0..40 {
        trainer.train_step().unwrap();
    }
    let after = mse(&trainer);
    eprintln!(
        "test MSE {before:.4} -> {after:.4} ({:.2}x)",
        before / after
    );
    assert!(
        after < before / 2.0,
        "test MSE {before:.4} -> {after:.4}: not reduced 2x"
    );
}

fn diffuse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_diffuse"))
        .args(args)
        .output()
        .expect("the diffuse binary runs")
}

fn ok(args: &[&str]) {
    let out = diffuse(args);
    assert!(
        out.status.success(),
        "diffuse {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn err(args: &[&str]) -> String {
    let out = diffuse(args);
    assert!(!out.status.success(), "diffuse {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn vae_then_latent_unet_then_decoded_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let data = fixture().to_str().unwrap().to_string();
    let (vae, ldm) = (p("vae"), p("ldm"));
    ok(&[
        "train",
        "--model",
        "vae",
        "--data",
        &data,
        "--block-out-channels",
        "4,8,8",
        "--norm-groups",
        "4",
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--warmup",
        "1",
        "--scale-images",
        "100",
        "--report-images",
        "20",
        "--quiet",
        "--out",
        &vae,
    ]);
    // The exported diffusers config holds the measured scaling factor, not the default.
    let text = std::fs::read_to_string(tmp.path().join("vae/vae/config.json")).unwrap();
    let cfg = AutoencoderKLConfig::from_json_str(&text).unwrap();
    assert_ne!(
        cfg.scaling_factor,
        AutoencoderKLConfig::default().scaling_factor
    );
    assert!(tmp.path().join("vae/reconstructions.png").is_file());
    let eval = std::fs::read_to_string(tmp.path().join("vae/eval.jsonl")).unwrap();
    assert!(
        eval.contains("\"psnr_db\"") && eval.contains("kl_per_latent_dim"),
        "{eval}"
    );

    ok(&[
        "train",
        "--latent",
        "--vae",
        &vae,
        "--data",
        &data,
        "--block-out-channels",
        "8",
        "--attention-levels",
        "0",
        "--norm-groups",
        "4",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--warmup",
        "1",
        "--timesteps",
        "50",
        "--quiet",
        "--out",
        &ldm,
    ]);
    // The run config names its VAE folder and content hash.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("ldm/config.json")).unwrap())
            .unwrap();
    assert_eq!(run["data"]["kind"], "latent");
    assert_eq!(run["data"]["latent_shape"], serde_json::json!([4, 7, 7]));
    assert!(run["data"]["vae"]["dir"]
        .as_str()
        .unwrap()
        .ends_with("vae/vae"));
    assert_eq!(
        run["data"]["vae"]["content_hash"].as_str().unwrap().len(),
        16
    );

    // Class-conditional with guidance: 4 samples in one row of 28x28 images at zoom 2
    // (4 (56 + 2) + 2 = 234 wide, 60 high; undecoded 7x7 latents would give 66 x 18).
    let (png, npy) = (p("s.png"), p("s.npy"));
    ok(&[
        "sample",
        "--run",
        &ldm,
        "--n",
        "4",
        "--steps",
        "3",
        "--guidance",
        "2",
        "--out",
        &png,
        "--npy",
        &npy,
    ]);
    assert_eq!(image::image_dimensions(&png).unwrap(), (234, 60));
    let header = std::fs::read(&npy).unwrap();
    let header = String::from_utf8_lossy(&header[..100]);
    assert!(header.contains("(4, 1, 28, 28)"), "{header}");
    // Every sampler works unchanged on latents.
    ok(&[
        "sample",
        "--run",
        &ldm,
        "--n",
        "2",
        "--sampler",
        "euler",
        "--steps",
        "2",
        "--out",
        &png,
    ]);
    // The image metrics apply to decoded samples: a Fréchet line over decoded 28x28 images.
    ok(&[
        "eval",
        "--run",
        &ldm,
        "--n",
        "8",
        "--seeds",
        "2",
        "--steps",
        "2",
        "--bpd-images",
        "0",
        "--classifier",
        &p("classifier"),
    ]);
    let eval = std::fs::read_to_string(tmp.path().join("ldm/eval.jsonl")).unwrap();
    assert!(
        eval.contains("frechet_distance_classifier_features"),
        "{eval}"
    );
    // `bench runs` times its sampling (network calls, then the VAE decode) and training step.
    let out = diffuse(&[
        "bench",
        "runs",
        "--run",
        &ldm,
        "--n",
        "2",
        "--steps",
        "2",
        "--rounds",
        "1",
        "--seconds",
        "0",
        "--data",
        &data,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let best = lines.last().unwrap();
    assert_eq!(best["latent"], true, "{best}");
    assert!(lines.iter().all(|l| l["device"] == "cpu"), "{lines:?}");
    for key in [
        "denoise_ms_per_image",
        "decode_ms_per_image",
        "ms_per_train_step",
    ] {
        assert!(best[key].as_f64().unwrap() > 0.0, "{key}: {best}");
    }

    // A changed VAE is refused, naming the folder.
    let vae_config = tmp.path().join("vae/vae/config.json");
    std::fs::write(
        &vae_config,
        text.replace("\"force_upcast\": true", "\"force_upcast\": false"),
    )
    .unwrap();
    let e = err(&["sample", "--run", &ldm, "--n", "2", "--out", &png]);
    assert!(
        e.contains("the VAE changed") && e.contains("vae/vae"),
        "{e}"
    );
    // A missing one too, at sampling and at configuration time.
    std::fs::remove_dir_all(tmp.path().join("vae")).unwrap();
    let e = err(&["sample", "--run", &ldm, "--n", "2", "--out", &png]);
    assert!(e.contains("VAE is missing"), "{e}");
    let e = err(&[
        "train",
        "--latent",
        "--vae",
        &vae,
        "--data",
        &data,
        "--steps",
        "1",
        "--out",
        &p("x"),
    ]);
    assert!(e.contains("VAE is missing") && e.contains(&vae), "{e}");
}
