//! `diffuse eval` on an image run (SPEC §9): the Fréchet distance between generated and test
//! images in the features of a classifier trained here on the same data set (not FID: no
//! Inception network can be downloaded), next to its floor (test images against held-out
//! training images of the same N); the classifier's accuracy on class-conditional samples; and
//! test bits/dim through the discrete VLB (discretised decoder) or, for score-SDE runs, the
//! PF-ODE with Hutchinson's divergence. Each figure is a mean over seeds with a 95% interval;
//! everything is printed and appended to `<run>/eval.jsonl` as JSON lines.

use crate::run_dir::{Run, SamplerChoice};
use crate::sample::sample_labels;
use anyhow::{bail, Context};
use burn::tensor::{DType, Device};
use diffuse::data::{DataSpec, ImageSet};
use diffuse::eval::classifier::{
    train_classifier, Classifier, ClassifierConfig, ClassifierTrainOptions,
};
use diffuse::eval::frechet::{frechet_distance, GaussianStats};
use diffuse::likelihood::vlb::vlb;
use diffuse::likelihood::{bits_per_dim, mean_ci95};
use diffuse::nn::vae::latents::{reconstruction_grid, reconstruction_report};
use diffuse::nn::{AutoencoderKL, FlatParams, Net};
use diffuse::rng::SampleRng;
use diffuse::sde::score::Probe;
use diffuse::sde::Divergence;
use diffuse::tensor::from_rows;
use diffuse::train::RunConfig;
use diffuse::variance::VarianceType;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What an image evaluation needs besides the run.
pub struct ImageEvalArgs<'a> {
    pub run_dir: &'a Path,
    pub sampler: &'a SamplerChoice,
    pub n: usize,
    pub seeds: u64,
    pub seed: u64,
    pub guidance: f64,
    pub classifier: Option<PathBuf>,
    pub bpd_images: usize,
}

/// The data's train and test images (test: the data set's own split, else the last fifth of
/// the training images, which the classifier then does not see).
fn splits(spec: &DataSpec) -> anyhow::Result<(ImageSet, ImageSet, bool)> {
    let Some((source, _)) = spec.image_source() else {
        bail!("not an image run");
    };
    let train = source.load_train()?;
    Ok(match source.load_test()? {
        Some(test) => (train, test, true),
        None => {
            let cut = train.len() * 4 / 5;
            (train.subset(0..cut), train.subset(cut..train.len()), false)
        }
    })
}

fn labels_i64(set: &ImageSet) -> Option<Vec<i64>> {
    set.labels
        .as_ref()
        .map(|l| l.iter().map(|&v| v as i64).collect())
}

/// The classifier in `dir`, trained (3 epochs) and saved there first if absent.
fn classifier(dir: &Path, train: &ImageSet, device: &Device) -> anyhow::Result<Classifier> {
    if dir.join("model.safetensors").exists() {
        return Classifier::load(dir, device)
            .with_context(|| format!("loading the classifier in {}", dir.display()));
    }
    let Some(labels) = labels_i64(train) else {
        bail!("the Fréchet distance needs a classifier, and this data set has no labels");
    };
    eprintln!(
        "training the feature classifier on {} images (once; saved to {})",
        train.len(),
        dir.display()
    );
    let all: Vec<usize> = (0..train.len()).collect();
    let cfg = ClassifierConfig::new(
        train.channels,
        train.height,
        train.width,
        train.num_classes(),
    );
    let opts = ClassifierTrainOptions {
        progress: true,
        ..ClassifierTrainOptions::default()
    };
    let c = train_classifier(&train.images_unit(&all), &labels, cfg, opts, device)?;
    c.save(dir)
        .with_context(|| format!("saving the classifier to {}", dir.display()))?;
    Ok(c)
}

/// `n` distinct indices of `0..len` from `seed`.
fn pick(len: usize, n: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut all: Vec<usize> = (0..len).collect();
    all.shuffle(&mut rng);
    all.truncate(n);
    all
}

/// Mean, 95% half-width and the per-seed values, as JSON.
fn stat(values: &[f64]) -> serde_json::Value {
    let (mean, ci) = mean_ci95(values);
    serde_json::json!({"mean": mean, "ci95": ci, "per_seed": values})
}

pub fn run(run: &Run, args: &ImageEvalArgs) -> anyhow::Result<()> {
    let device = run.device.clone();
    let shape = run.image_shape().expect("image run");
    let (train, test, own_split) = splits(&run.config.data)?;
    let n = args.n;
    if n < 2 || n > test.len() || n > train.len() {
        bail!(
            "--n {n}: the Fréchet distance needs 2 <= n <= the {} test and {} training images",
            test.len(),
            train.len()
        );
    }
    // One classifier per image source: a latent run's decoded samples are scored in the same
    // features as a pixel run on the same images, so their distances compare.
    let dir = args.classifier.clone().unwrap_or_else(|| {
        let name = match run.config.data.image_source() {
            Some((source, _)) => source.name(),
            None => run.config.data.name(),
        };
        PathBuf::from("runs").join(format!("classifier-{}", name.replace(['/', ':'], "_")))
    });
    let clf = classifier(&dir, &train, &device)?;
    let test_all: Vec<usize> = (0..test.len()).collect();
    let test_images = test.images_unit(&test_all);
    let test_acc = match labels_i64(&test) {
        Some(l) => Some(clf.accuracy(&test_images, &l)?),
        None => None,
    };
    let f = clf.feature_dim();
    let classes = run.config.model.num_classes();
    let mut fd = Vec::new();
    let mut floor = Vec::new();
    let mut cond_acc = Vec::new();
    for s in args.seed..args.seed + args.seeds {
        let labels = sample_labels(None, classes, n);
        let cond = labels.as_deref().map(|l| (l, args.guidance));
        let (x, _) = run.draw_conditional(args.sampler, n, s, cond, None)?;
        // Latent runs are evaluated on their decoded images.
        let samples: Vec<f32> = run.to_images(&x).into_iter().map(|v| v as f32).collect();
        let stats = |images: &[f32]| -> anyhow::Result<GaussianStats> {
            Ok(GaussianStats::of(&clf.features(images, n)?, f)?)
        };
        let gen = stats(&samples)?;
        let test_pick = test.images_unit(&pick(test.len(), n, s, 1));
        let train_pick = train.images_unit(&pick(train.len(), n, s, 2));
        let test_stats = stats(&test_pick)?;
        fd.push(frechet_distance(&gen, &test_stats)?);
        floor.push(frechet_distance(&stats(&train_pick)?, &test_stats)?);
        if let Some(l) = &labels {
            cond_acc.push(clf.accuracy(&samples, l)?);
        }
    }
    let (fd_m, fd_ci) = mean_ci95(&fd);
    let (fl_m, fl_ci) = mean_ci95(&floor);
    println!(
        "{} (step {}), {} {} steps, guidance {}, n = {n} per seed, seeds {}..{}",
        args.run_dir.display(),
        run.step,
        args.sampler.name,
        args.sampler.steps,
        args.guidance,
        args.seed,
        args.seed + args.seeds
    );
    if let Some(acc) = test_acc {
        println!(
            "feature classifier ({}): test accuracy {:.4} on {} images",
            dir.display(),
            acc,
            test.len()
        );
    }
    println!(
        "Fréchet distance in the classifier's {f}-d features (not FID): {fd_m:.3} ± {fd_ci:.3}; floor (held-out train vs test, same n): {fl_m:.3} ± {fl_ci:.3}"
    );
    let mut lines = vec![serde_json::json!({
        "metric": "frechet_distance_classifier_features", "step": run.step,
        "sampler": args.sampler.name, "sampler_steps": args.sampler.steps, "guidance": args.guidance,
        "n": n, "seeds": [args.seed, args.seed + args.seeds], "feature_dim": f,
        "model": stat(&fd), "floor": stat(&floor), "test_split": if own_split { "data set's test split" } else { "last fifth of the training images" },
        "classifier": dir, "classifier_test_accuracy": test_acc,
    })];
    if !cond_acc.is_empty() {
        let (m, ci) = mean_ci95(&cond_acc);
        println!("classifier accuracy on class-conditional samples: {m:.4} ± {ci:.4} (test images: {:.4})", test_acc.unwrap_or(f64::NAN));
        lines.push(serde_json::json!({
            "metric": "conditional_accuracy", "step": run.step, "n": n, "guidance": args.guidance,
            "sampler": args.sampler.name, "sampler_steps": args.sampler.steps,
            "model": stat(&cond_acc), "test_images": test_acc,
        }));
    }
    if args.bpd_images > 0 && run.vae.is_some() {
        eprintln!("no bits/dim for a latent run: its likelihood is of latents, not of pixels");
    } else if args.bpd_images > 0 {
        lines.push(bits_per_dim_line(run, &test, shape, args)?);
    }
    let path = args.run_dir.join("eval.jsonl");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    for l in &lines {
        writeln!(out, "{l}").with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("appended {} lines to {}", lines.len(), path.display());
    Ok(())
}

/// A VAE run's EMA (or other) weights as the `AutoencoderKL` module on `device`.
pub fn ema_vae(
    config: &RunConfig,
    params: &FlatParams,
    device: &Device,
) -> anyhow::Result<AutoencoderKL> {
    match Net::new(&config.model, params, device)? {
        Net::Vae(vae) => Ok(vae),
        _ => bail!("not a VAE run"),
    }
}

/// Test-set report of a VAE run (SPEC §7): reconstruction MSE and PSNR and KL per latent
/// dimension over `images` test images (a seeded subset; the data set's test split, else the
/// last fifth of the training images), printed and appended to `<run>/eval.jsonl`, and
/// `<run>/reconstructions.png` (rows of inputs, each above its reconstructions).
pub fn vae_report(
    run_dir: &Path,
    config: &RunConfig,
    params: &FlatParams,
    step: u64,
    images: usize,
    device: &Device,
) -> anyhow::Result<()> {
    let vae = ema_vae(config, params, device)?;
    let (_, test, own_split) = splits(&config.data)?;
    let idx = pick(test.len(), images.min(test.len()), config.seed, 4);
    let report = reconstruction_report(&vae, &test, &idx);
    let png = run_dir.join("reconstructions.png");
    reconstruction_grid(&vae, &test, &idx[..idx.len().min(32)], 8, &png)
        .with_context(|| format!("writing {}", png.display()))?;
    println!(
        "{} (step {step}): test reconstruction MSE {:.5} (PSNR {:.2} dB on [-1, 1] images), KL {:.4} nats per latent dimension ({} images); latent {:?}, scaling factor {:.5}",
        run_dir.display(),
        report.mse,
        report.psnr,
        report.kl_per_dim,
        report.images,
        vae.config.latent_shape(),
        vae.config.scaling_factor,
    );
    let mut line = report.to_json();
    line["metric"] = "vae_reconstruction".into();
    line["step"] = step.into();
    line["latent_shape"] = serde_json::json!(vae.config.latent_shape());
    line["scaling_factor"] = vae.config.scaling_factor.into();
    line["test_split"] = if own_split {
        "data set's test split"
    } else {
        "last fifth of the training images"
    }
    .into();
    let path = run_dir.join("eval.jsonl");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(out, "{line}").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} and a line to {}", png.display(), path.display());
    Ok(())
}

/// Test bits/dim: the discrete VLB (T network calls per batch, the decoder over 256 bins) for
/// discrete runs; the PF-ODE with one Rademacher Hutchinson probe and uniform dequantisation
/// (+7 bits, SPEC §6) for score-SDE runs.
fn bits_per_dim_line(
    run: &Run,
    test: &ImageSet,
    shape: [usize; 3],
    args: &ImageEvalArgs,
) -> anyhow::Result<serde_json::Value> {
    let m = args.bpd_images.min(test.len());
    let d: usize = shape.iter().product();
    let idx = pick(test.len(), m, args.seed, 3);
    let x0: Vec<f64> = test.images_unit(&idx).into_iter().map(f64::from).collect();
    let (bpd, how) = match run.config.sde {
        None => {
            let variance = if run.config.train.loss.learns_variance() {
                VarianceType::LearnedRange
            } else {
                VarianceType::FixedSmall
            };
            let x = from_rows(x0, m, d, &run.device, DType::F32);
            let mut noise = SampleRng::new(args.seed, 0, m);
            let terms = vlb(&run.denoiser, &run.schedule, variance, &x, &mut noise);
            (
                terms.bits_per_dim(),
                format!(
                    "discrete VLB, {variance:?} variance, T = {}",
                    run.schedule.len()
                ),
            )
        }
        Some(_) => {
            let device = run.device.clone().autodiff();
            let net = diffuse::nn::Net::new(&run.config.model, &run.params, &device)?;
            // Uniform dequantisation on the 1/128-wide bins of the +7 offset.
            let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
            let deq: Vec<f64> = x0
                .iter()
                .map(|v| {
                    let p = diffuse::data::unit_to_pixel(*v) as f64;
                    (p + rand::Rng::random::<f64>(&mut rng)) / 128.0 - 1.0
                })
                .collect();
            let x = from_rows(deq, m, d, &device, DType::F32);
            let divergence = Divergence::hutchinson(Probe::Rademacher, 1, &x, args.seed);
            let (like, _, _) = run.pf_ode_likelihood(&net, &x, &divergence)?;
            let bpd = like
                .log_p
                .iter()
                .map(|&l| bits_per_dim(l, d, true))
                .collect();
            (
                bpd,
                format!("PF-ODE, Hutchinson x1, NFE {}", like.stats.nfe),
            )
        }
    };
    let (mean, ci) = mean_ci95(&bpd);
    println!("test bits/dim ({how}, {m} images): {mean:.4} ± {ci:.4}");
    Ok(serde_json::json!({
        "metric": "test_bits_per_dim", "step": run.step, "how": how, "images": m,
        "seed": args.seed, "model": stat(&bpd),
    }))
}
