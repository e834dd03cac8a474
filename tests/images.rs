//! Image training through the one trainer (SPEC §4, §9): a small UNet on the committed
//! Fashion-MNIST slice resumes bit for bit (learning-rate horizon, loss history and label
//! dropout included), the NaN guard works on the autodiff path, and a batch of 8 images overfits.

use diffuse::data::{DataSpec, ImageSource};
use diffuse::loss::{LossWeighting, TimestepSampling};
use diffuse::train::{fit, load_checkpoint, FitOptions, TrainError, Trainer};
use std::path::Path;

#[path = "common/images.rs"]
mod unet_fixture;
use unet_fixture::{fixture, fixture_data, image_run, tiny_unet};

#[test]
fn fixture_is_found_as_labelled_fashion_mnist() {
    let spec = fixture_data(false);
    let DataSpec::Images {
        source,
        shape,
        num_classes,
        ..
    } = &spec
    else {
        panic!("image data expected, got {spec:?}");
    };
    assert!(matches!(source, ImageSource::FashionMnist { .. }));
    assert_eq!((*shape, *num_classes), ([1, 28, 28], 10));
    let test = source.load_test().unwrap().unwrap();
    assert_eq!(test.len(), 100);
}

#[test]
fn unet_resume_is_bit_identical_to_a_straight_run() {
    // A class-conditional hybrid-loss UNet (learned variance, loss-aware t sampling, label
    // dropout, flips): 3 steps, the process "dies" (everything dropped), resume from disk for
    // 3 more; a straight 6-step run must give identical weights, EMA, AdamW moments and
    // sampler state bit for bit (same float32 ops in the same order: tolerance zero). The
    // cosine horizon is the config's 6 steps in both, so the learning rates agree too.
    let mut cfg = image_run(fixture_data(true), tiny_unet(Some(10), 2), 6, 6);
    cfg.train.loss = LossWeighting::Hybrid { lambda: 0.001 };
    cfg.train.timestep_sampling = TimestepSampling::LossAware;
    cfg.train.label_dropout = 0.3;
    let dir = tempfile::tempdir().unwrap();
    let opts = |until| FitOptions {
        until: Some(until),
        progress: false,
    };
    {
        let mut first = Trainer::new(cfg.clone()).unwrap();
        assert!(first.uses_autodiff());
        fit(&mut first, dir.path(), &opts(3)).unwrap();
    }
    assert!(dir
        .path()
        .join("unet/diffusion_pytorch_model.safetensors")
        .is_file());
    let mut resumed = Trainer::from_checkpoint(load_checkpoint(dir.path()).unwrap()).unwrap();
    assert_eq!(resumed.step, 3);
    fit(&mut resumed, dir.path(), &opts(6)).unwrap();

    let mut straight = Trainer::new(cfg).unwrap();
    let mut lrs = Vec::new();
    for _ in 0..6 {
        lrs.push(straight.train_step().unwrap().lr);
    }
    assert!(lrs[5] < lrs[2], "cosine decay within the horizon: {lrs:?}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed.params.values), bits(&straight.params.values));
    assert_eq!(bits(&resumed.ema.values), bits(&straight.ema.values));
    assert_eq!(bits(&resumed.optimizer.m), bits(&straight.optimizer.m));
    assert_eq!(bits(&resumed.optimizer.v), bits(&straight.optimizer.v));
    assert_eq!(resumed.sampler, straight.sampler);
}

#[test]
fn nan_guard_on_the_autodiff_path_names_the_step_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = image_run(fixture_data(false), tiny_unet(None, 1), 6, 4);
    cfg.train.checkpoint_every = 2;
    let mut t = Trainer::new(cfg).unwrap();
    t.inject_non_finite_loss_at(3);
    let err = fit(&mut t, dir.path(), &FitOptions::default()).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { step: 3, .. }),
        "{err}"
    );
    let ck = load_checkpoint(dir.path()).unwrap();
    assert_eq!(ck.state.step, 2);
    assert!(ck.raw.values.iter().all(|v| v.is_finite()));
}

/// Writes the first `n` fixture training images (and labels) as raw IDX files in `dir`.
fn write_first_images(dir: &Path, n: usize) {
    let set = diffuse::data::load_fashion_mnist(&fixture(), diffuse::data::Split::Train).unwrap();
    let mut images = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend_from_slice(&set.pixels[..n * 784]);
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).unwrap();
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    labels.extend(set.labels.unwrap()[..n].iter().map(|&l| l as u8));
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).unwrap();
}

#[test]
fn one_batch_of_eight_images_overfits() {
    // 8 fixed images, batch 8, 60 steps at lr 2e-3 (unconditional, T = 100). The eps loss of the
    // untrained net is ~1 (its outputs are small, the target has unit variance); on 8 images the
    // net learns to denoise them and the mean loss of the last 10 steps must fall below 0.45 x
    // the mean of the first 5 (measured ~0.2x; t is redrawn every step, so single steps vary by
    // ~2x and only window means are compared).
    let dir = tempfile::tempdir().unwrap();
    write_first_images(dir.path(), 8);
    let data = DataSpec::from_arg(dir.path().to_str().unwrap()).unwrap();
    let mut t = Trainer::new(image_run(data, tiny_unet(None, 1), 60, 8)).unwrap();
    let losses: Vec<f64> = (0..60).map(|_| t.train_step().unwrap().loss).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[50..]));
    eprintln!("loss {first:.4} -> {last:.4}");
    assert!(last < 0.45 * first, "loss {first} -> {last}: {losses:?}");
}

#[test]
fn frechet_distance_of_two_test_halves_is_small_against_a_class_split() {
    // The feature classifier trained on the 500 fixture images (3 epochs); in its features the
    // Fréchet distance between two random halves of the 100 test images is only the
    // finite-sample bias (~d^2/n for d = 128 features, n = 50), while splitting the same images
    // by class (tops/trousers/... 0-4 against shoes/bags 5-9) is a real difference. Bound:
    // halves < 0.2 x class split (measured 11.0 vs 388, 0.03x), and the classifier beats chance
    // (10%) by far (> 40% on 100 test images after 500 training images; measured 76%).
    use diffuse::eval::classifier::{train_classifier, ClassifierConfig, ClassifierTrainOptions};
    use diffuse::eval::frechet::{frechet_distance, GaussianStats};
    let train = diffuse::data::load_fashion_mnist(&fixture(), diffuse::data::Split::Train).unwrap();
    let test = diffuse::data::load_fashion_mnist(&fixture(), diffuse::data::Split::Test).unwrap();
    let labels = |s: &diffuse::data::ImageSet| -> Vec<i64> {
        s.labels
            .as_ref()
            .unwrap()
            .iter()
            .map(|&l| l as i64)
            .collect()
    };
    let all = |s: &diffuse::data::ImageSet| s.images_unit(&(0..s.len()).collect::<Vec<_>>());
    let device = diffuse::device::cpu();
    let clf = train_classifier(
        &all(&train),
        &labels(&train),
        ClassifierConfig::new(1, 28, 28, 10),
        ClassifierTrainOptions::default(),
        &device,
    )
    .unwrap();
    let test_labels = labels(&test);
    let acc = clf.accuracy(&all(&test), &test_labels).unwrap();
    assert!(acc > 0.4, "test accuracy {acc}");
    let f = clf.feature_dim();
    let stats = |idx: &[usize]| {
        GaussianStats::of(&clf.features(&test.images_unit(idx), idx.len()).unwrap(), f).unwrap()
    };
    let (even, odd): (Vec<usize>, Vec<usize>) = (0..100).partition(|i| i % 2 == 0);
    let (low, high): (Vec<usize>, Vec<usize>) = (0..100).partition(|&i| test_labels[i] < 5);
    let halves = frechet_distance(&stats(&even), &stats(&odd)).unwrap();
    let classes = frechet_distance(&stats(&low), &stats(&high)).unwrap();
    eprintln!("accuracy {acc:.3}; FD halves {halves:.3}, class split {classes:.3}");
    assert!(
        halves < 0.2 * classes,
        "halves {halves} vs class split {classes}"
    );
}
