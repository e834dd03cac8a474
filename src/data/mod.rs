//! Training data (SPEC §9): the 2-D toy sets generated from a seed, and user point sets read
//! from CSV or .npy files. Every source is standardised and streamed in batches that depend only
//! on (seed, step), so a resumed run sees the same batches as a straight one.

pub mod file;
pub mod folder;
pub mod idx;
pub mod images;
pub mod toy;

pub use file::{load_points, PointSet};
pub use folder::{load_png_folder, FolderError, FolderErrorKind};
pub use idx::{
    find_fashion_mnist_dir, load_fashion_mnist, load_idx_images, read_idx, IdxArray, IdxError,
    IdxErrorKind, Split, FASHION_MNIST_CLASSES,
};
pub use images::{pixel_to_unit, unit_to_pixel, BatchPrefetcher, ImageBatch, ImageSet};
pub use toy::ToyDataset;

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a run trains on, as stored in config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// A built-in toy set.
    Toy { name: ToyDataset },
    /// Points from a CSV or .npy file, standardised with the stored per-column mean and std.
    File {
        path: PathBuf,
        mean: Vec<f64>,
        std: Vec<f64>,
    },
}

impl DataSpec {
    /// Parses `--data`: a toy set's name, or a path to a `.csv` / `.npy` file.
    pub fn from_arg(arg: &str) -> Result<Self> {
        if let Some(name) = ToyDataset::from_name(arg) {
            return Ok(DataSpec::Toy { name });
        }
        let path = PathBuf::from(arg);
        let points = load_points(&path)?;
        let (mean, std) = points.column_moments();
        Ok(DataSpec::File { path, mean, std })
    }

    /// A short name for plots and logs.
    pub fn name(&self) -> String {
        match self {
            DataSpec::Toy { name } => name.name().to_string(),
            DataSpec::File { path, .. } => path.display().to_string(),
        }
    }

    /// Opens the source for sampling batches.
    pub fn open(&self) -> Result<DataSource> {
        match self {
            DataSpec::Toy { name } => Ok(DataSource::Toy(*name)),
            DataSpec::File { path, mean, std } => {
                let points = load_points(path)?;
                if mean.len() != points.dim || std.len() != points.dim {
                    return Err(Error::config(
                        "data",
                        format!(
                            "{} has {} columns but the run was standardised for {}",
                            path.display(),
                            points.dim,
                            mean.len()
                        ),
                    ));
                }
                Ok(DataSource::Points(points.standardised(mean, std)))
            }
        }
    }
}

/// One training batch: `[N, D]` row-major samples and, for labelled data, one class per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub x0: Vec<f64>,
    pub labels: Option<Vec<i64>>,
}

/// An opened data source, in standardised coordinates.
#[derive(Debug, Clone)]
pub enum DataSource {
    Toy(ToyDataset),
    Points(PointSet),
}

impl DataSource {
    /// Data dimension.
    pub fn dim(&self) -> usize {
        match self {
            DataSource::Toy(t) => t.dim(),
            DataSource::Points(p) => p.dim,
        }
    }

    /// `n` points (row-major) from the stream `stream` of `seed`: fresh draws for toy sets,
    /// uniform draws with replacement for point sets.
    pub fn sample(&self, n: usize, seed: u64, stream: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        match self {
            DataSource::Toy(t) => t.sample(n, &mut rng),
            DataSource::Points(p) => {
                let count = p.len();
                let mut out = Vec::with_capacity(n * p.dim);
                for _ in 0..n {
                    let i = rng.random_range(0..count);
                    out.extend_from_slice(&p.values[i * p.dim..(i + 1) * p.dim]);
                }
                out
            }
        }
    }

    /// The training batch of step `step` with its class labels (for labelled data).
    pub fn training_batch(&self, batch_size: usize, seed: u64, step: u64) -> Batch {
        Batch {
            x0: self.batch(batch_size, seed, step),
            labels: None,
        }
    }

    /// The training batch of step `step` (stream `2 * step`; odd streams are left for noise).
    pub fn batch(&self, batch_size: usize, seed: u64, step: u64) -> Vec<f64> {
        self.sample(batch_size, seed, 2 * step)
    }
}
