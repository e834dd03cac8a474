//! Trains the evaluation classifier (SPEC §9) on Fashion-MNIST and prints its test accuracy,
//! the training time, and the data-vs-data floors of the Fréchet distance in its features.
//!
//! ```text
//! cargo run --release --example classifier_fashion_mnist -- [DATA_DIR] [EPOCHS] [BATCH] [SAVE_DIR]
//! ```
//! `DATA_DIR` holds the four gzipped IDX files (default: Debian's `dataset-fashion-mnist`,
//! `/usr/share/datasets/fashion-mnist`).

use anyhow::{bail, Context, Result};
use diffuse::eval::classifier::{train_classifier, ClassifierConfig, ClassifierTrainOptions};
use diffuse::eval::frechet::{frechet_distance, GaussianStats};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// The payload of a gzipped IDX file of unsigned bytes with `rank` dimensions.
fn read_idx_u8(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut bytes)?;
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() < 4 + 4 * rank || be(0) != 0x0800 + rank as u32 {
        bail!("{}: not a rank-{rank} u8 IDX file", path.display());
    }
    let dims: Vec<usize> = (0..rank).map(|k| be(4 + 4 * k) as usize).collect();
    let data = bytes[4 + 4 * rank..].to_vec();
    if data.len() != dims.iter().product::<usize>() {
        bail!("{}: {} bytes for dims {dims:?}", path.display(), data.len());
    }
    Ok((dims, data))
}

/// Images scaled to [-1, 1] and their labels.
fn load(dir: &Path, prefix: &str) -> Result<(Vec<f32>, Vec<i64>)> {
    let (_, pixels) = read_idx_u8(&dir.join(format!("{prefix}-images-idx3-ubyte.gz")), 3)?;
    let (_, labels) = read_idx_u8(&dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), 1)?;
    let images = pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
    Ok((images, labels.iter().map(|&y| y as i64).collect()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(
        args.first()
            .map(String::as_str)
            .unwrap_or("/usr/share/datasets/fashion-mnist"),
    );
    let defaults = ClassifierTrainOptions::default();
    let epochs: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(defaults.epochs);
    let batch_size: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(defaults.batch_size);
    let (train_images, train_labels) = load(dir, "train")?;
    let (test_images, test_labels) = load(dir, "t10k")?;
    let device = diffuse::device::cpu();
    let opts = ClassifierTrainOptions {
        epochs,
        batch_size,
        progress: true,
        ..defaults
    };
    println!(
        "training on {} images, {epochs} epochs of batch {batch_size}, {} threads",
        train_labels.len(),
        rayon::current_num_threads()
    );
    let start = Instant::now();
    let classifier = train_classifier(
        &train_images,
        &train_labels,
        ClassifierConfig::new(1, 28, 28, 10),
        opts,
        &device,
    )?;
    let train_secs = start.elapsed().as_secs_f64();
    let accuracy = classifier.accuracy(&test_images, &test_labels)?;
    println!("test accuracy {accuracy:.4} after {train_secs:.1} s of training");

    let f = classifier.feature_dim();
    let start = Instant::now();
    let test_features = classifier.features(&test_images, test_labels.len())?;
    let train_features = classifier.features(&train_images[..5000 * 784], 5000)?;
    let stats = |x: &[f64]| GaussianStats::of(x, f);
    let (half_a, half_b) = test_features.split_at(5000 * f);
    let halves = frechet_distance(&stats(half_a)?, &stats(half_b)?)?;
    let train_5k = stats(&train_features)?;
    let test_vs_train = frechet_distance(&stats(&test_features)?, &train_5k)?;
    let half_vs_train = frechet_distance(&stats(half_a)?, &train_5k)?;
    println!(
        "Fréchet distance in the classifier's {f} features ({:.1} s):\n  \
         test[0..5000] vs test[5000..10000]: {halves:.4}\n  \
         test (10000) vs train[0..5000]:     {test_vs_train:.4}\n  \
         test[0..5000] vs train[0..5000]:    {half_vs_train:.4}",
        start.elapsed().as_secs_f64()
    );
    if let Some(save) = args.get(3) {
        classifier.save(Path::new(save))?;
        println!("saved to {save}");
    }
    Ok(())
}
