//! Training data (SPEC §9): the 2-D toy sets generated from a seed, user point sets read
//! from CSV or .npy files, and 8-bit images (Fashion-MNIST, IDX files, PNG folders) scaled to
//! [-1, 1]. Every source is streamed in batches that depend only on (seed, step), so a resumed
//! run sees the same batches as a straight one.

pub mod file;
pub mod folder;
pub mod idx;
pub mod images;
pub mod latent;
pub mod toy;

pub use file::{load_points, PointSet};
pub use folder::{decode_png, load_png_folder, FolderError, FolderErrorKind};
pub use idx::{
    find_fashion_mnist_dir, idx_from_bytes, load_fashion_mnist, load_idx_images, read_idx,
    IdxArray, IdxError, IdxErrorKind, Split, FASHION_MNIST_CLASSES,
};
pub use images::{pixel_to_unit, unit_to_pixel, BatchPrefetcher, ImageBatch, ImageSet};
pub use latent::{LatentDraw, LatentSet, VaeRef};
pub use toy::ToyDataset;

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// 8-bit images in [-1, 1] (SPEC §9), with their shape and class count as found when the
    /// run was configured (checked again when opened).
    Images {
        source: ImageSource,
        shape: [usize; 3],
        num_classes: usize,
        /// Random horizontal flips of training images.
        #[serde(default)]
        hflip: bool,
    },
    /// The images of `source` encoded by a trained VAE (SPEC §7): samples are the
    /// diffusion-space latents `s (z - shift)` of shape `latent_shape`.
    Latent {
        source: ImageSource,
        /// `[C, H, W]` of the images (and of the VAE's decoded samples).
        image_shape: [usize; 3],
        num_classes: usize,
        vae: VaeRef,
        latent_shape: [usize; 3],
        draw: LatentDraw,
    },
}

/// Where images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageSource {
    /// A folder with the four standard Fashion-MNIST IDX files (train and t10k splits).
    FashionMnist { dir: PathBuf },
    /// One IDX image file with an optional IDX label file.
    Idx {
        images: PathBuf,
        labels: Option<PathBuf>,
    },
    /// A folder of PNGs (one subfolder per class gives labels).
    Folder { path: PathBuf },
}

impl ImageSource {
    /// A short name: `fashion-mnist`, or the file or folder.
    pub fn name(&self) -> String {
        match self {
            ImageSource::FashionMnist { .. } => "fashion-mnist".to_string(),
            ImageSource::Idx { images, .. } => images.display().to_string(),
            ImageSource::Folder { path } => path.display().to_string(),
        }
    }

    /// The training images.
    pub fn load_train(&self) -> Result<ImageSet> {
        Ok(match self {
            ImageSource::FashionMnist { dir } => load_fashion_mnist(dir, Split::Train)?,
            ImageSource::Idx { images, labels } => {
                load_idx_images(images, labels.as_deref(), None, &[])?
            }
            ImageSource::Folder { path } => load_png_folder(path)?,
        })
    }

    /// The held-out test images, where the source has a split (Fashion-MNIST's t10k files).
    pub fn load_test(&self) -> Result<Option<ImageSet>> {
        Ok(match self {
            ImageSource::FashionMnist { dir } => Some(load_fashion_mnist(dir, Split::Test)?),
            _ => None,
        })
    }

    /// Parses `--data` for images: `fashion-mnist` (the Debian package or
    /// `$DIFFUSE_FASHION_MNIST`), `fashion-mnist:DIR`, a folder holding the standard IDX file
    /// names, a `*-idx3-ubyte[.gz]` file (labels from the matching `-labels-idx1-` file if
    /// present), or a folder of PNGs. `None` if `arg` names none of these.
    pub fn from_arg(arg: &str) -> Result<Option<Self>> {
        if arg == "fashion-mnist" {
            let dir = find_fashion_mnist_dir().ok_or_else(|| {
                Error::config(
                    "data",
                    "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist \
                     (bash scripts/setup.sh) or set DIFFUSE_FASHION_MNIST to a folder holding its \
                     IDX files",
                )
            })?;
            return Ok(Some(ImageSource::FashionMnist { dir }));
        }
        if let Some(dir) = arg.strip_prefix("fashion-mnist:") {
            return Ok(Some(ImageSource::FashionMnist { dir: dir.into() }));
        }
        let path = Path::new(arg);
        if path.is_dir() {
            let standard = ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"];
            if standard.iter().any(|f| path.join(f).is_file()) {
                return Ok(Some(ImageSource::FashionMnist { dir: path.into() }));
            }
            return Ok(Some(ImageSource::Folder { path: path.into() }));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        if let Some(name) = name.filter(|n| n.contains("-idx3-ubyte")) {
            let labels = path.with_file_name(name.replace("-images-idx3-", "-labels-idx1-"));
            return Ok(Some(ImageSource::Idx {
                images: path.into(),
                labels: labels.is_file().then_some(labels),
            }));
        }
        Ok(None)
    }
}

impl DataSpec {
    /// Parses `--data`: a toy set's name, or a path to a `.csv` / `.npy` file.
    pub fn from_arg(arg: &str) -> Result<Self> {
        if let Some(name) = ToyDataset::from_name(arg) {
            return Ok(DataSpec::Toy { name });
        }
        if let Some(source) = ImageSource::from_arg(arg)? {
            let set = source.load_train()?;
            return Ok(DataSpec::Images {
                shape: [set.channels, set.height, set.width],
                num_classes: set.num_classes(),
                source,
                hflip: false,
            });
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
            DataSpec::Images { source, .. } => source.name(),
            DataSpec::Latent { source, .. } => format!("latent-{}", source.name()),
        }
    }

    /// Latent data of the images of `images` (a [`DataSpec::Images`]) encoded by the VAE of
    /// `--vae vae_arg` (a VAE run directory or a diffusers `AutoencoderKL` folder).
    pub fn latent(images: DataSpec, vae_arg: &Path, draw: LatentDraw) -> Result<Self> {
        let DataSpec::Images {
            source,
            shape,
            num_classes,
            ..
        } = images
        else {
            return Err(Error::config(
                "data",
                "latent diffusion needs image data (--data fashion-mnist, an IDX file or a PNG folder)",
            ));
        };
        let vae = VaeRef::new(vae_arg)?;
        let model = vae.load(&crate::device::cpu())?;
        let cfg = &model.config;
        let [h, w] = cfg.image_hw();
        if [cfg.in_channels, h, w] != shape {
            return Err(Error::config(
                "vae",
                format!(
                    "the VAE in {} encodes {:?} images but the data holds {shape:?}",
                    vae.dir.display(),
                    [cfg.in_channels, h, w]
                ),
            ));
        }
        Ok(DataSpec::Latent {
            source,
            image_shape: shape,
            num_classes,
            latent_shape: cfg.latent_shape(),
            vae,
            draw,
        })
    }

    /// The image source and image shape behind image or latent data.
    pub fn image_source(&self) -> Option<(&ImageSource, [usize; 3])> {
        match self {
            DataSpec::Images { source, shape, .. } => Some((source, *shape)),
            DataSpec::Latent {
                source,
                image_shape,
                ..
            } => Some((source, *image_shape)),
            _ => None,
        }
    }

    /// Flat dimension of one sample (`C*H*W` for images).
    pub fn dim(&self) -> usize {
        match self {
            DataSpec::Toy { name } => name.dim(),
            DataSpec::File { mean, .. } => mean.len(),
            DataSpec::Images { shape, .. } => shape.iter().product(),
            DataSpec::Latent { latent_shape, .. } => latent_shape.iter().product(),
        }
    }

    /// `[C, H, W]` of image data (of the latents, for latent data: what the model sees).
    pub fn image_shape(&self) -> Option<[usize; 3]> {
        match self {
            DataSpec::Images { shape, .. } => Some(*shape),
            DataSpec::Latent { latent_shape, .. } => Some(*latent_shape),
            _ => None,
        }
    }

    /// Number of classes of labelled image data (0 when unlabelled or not images).
    pub fn num_classes(&self) -> usize {
        match self {
            DataSpec::Images { num_classes, .. } | DataSpec::Latent { num_classes, .. } => {
                *num_classes
            }
            _ => 0,
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
            DataSpec::Images {
                source,
                shape,
                num_classes,
                hflip,
            } => {
                let set = source.load_train()?;
                let found = [set.channels, set.height, set.width];
                if found != *shape || set.num_classes() != *num_classes {
                    return Err(Error::config(
                        "data",
                        format!(
                            "{} holds {found:?} images in {} classes but the run was configured for \
                             {shape:?} in {num_classes}",
                            self.name(),
                            set.num_classes()
                        ),
                    ));
                }
                Ok(DataSource::Images {
                    set: Arc::new(set),
                    hflip: *hflip,
                })
            }
            DataSpec::Latent {
                source,
                image_shape,
                num_classes,
                vae,
                latent_shape,
                draw,
            } => {
                let images = DataSpec::Images {
                    source: source.clone(),
                    shape: *image_shape,
                    num_classes: *num_classes,
                    hflip: false,
                };
                let DataSource::Images { set, .. } = images.open()? else {
                    unreachable!("image data opens as images")
                };
                let model = vae.load(&crate::device::cpu())?;
                if model.config.latent_shape() != *latent_shape {
                    return Err(Error::config(
                        "data.latent_shape",
                        format!(
                            "{latent_shape:?}, but the VAE in {} gives {:?}",
                            vae.dir.display(),
                            model.config.latent_shape()
                        ),
                    ));
                }
                Ok(DataSource::Latent(Arc::new(LatentSet::encode(
                    &model, &set, *draw,
                ))))
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

impl From<ImageBatch> for Batch {
    fn from(b: ImageBatch) -> Self {
        Batch {
            x0: b.x.into_iter().map(f64::from).collect(),
            labels: b.labels,
        }
    }
}

/// An opened data source, in standardised coordinates.
#[derive(Debug, Clone)]
pub enum DataSource {
    Toy(ToyDataset),
    Points(PointSet),
    Images { set: Arc<ImageSet>, hflip: bool },
    Latent(Arc<LatentSet>),
}

impl DataSource {
    /// Data dimension.
    pub fn dim(&self) -> usize {
        match self {
            DataSource::Toy(t) => t.dim(),
            DataSource::Points(p) => p.dim,
            DataSource::Images { set, .. } => set.dim(),
            DataSource::Latent(set) => set.dim(),
        }
    }

    /// `n` points (row-major) from the stream `stream` of `seed`: fresh draws for toy sets,
    /// uniform draws with replacement for point sets.
    pub fn sample(&self, n: usize, seed: u64, stream: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        match self {
            DataSource::Toy(t) => t.sample(n, &mut rng),
            DataSource::Images { set, .. } => {
                let indices: Vec<usize> = (0..n).map(|_| rng.random_range(0..set.len())).collect();
                set.images_unit(&indices)
                    .into_iter()
                    .map(f64::from)
                    .collect()
            }
            DataSource::Points(p) => {
                let count = p.len();
                let mut out = Vec::with_capacity(n * p.dim);
                for _ in 0..n {
                    let i = rng.random_range(0..count);
                    out.extend_from_slice(&p.values[i * p.dim..(i + 1) * p.dim]);
                }
                out
            }
            DataSource::Latent(set) => set.sample(n, seed, stream).x0,
        }
    }

    /// The training batch of step `step` with its class labels (for labelled data).
    pub fn training_batch(&self, batch_size: usize, seed: u64, step: u64) -> Batch {
        match self {
            DataSource::Images { set, hflip } => set.batch(batch_size, seed, step, *hflip).into(),
            DataSource::Latent(set) => set.sample(batch_size, seed, 2 * step),
            _ => Batch {
                x0: self.batch(batch_size, seed, step),
                labels: None,
            },
        }
    }

    /// The training batch of step `step` (stream `2 * step`; odd streams are left for noise).
    pub fn batch(&self, batch_size: usize, seed: u64, step: u64) -> Vec<f64> {
        self.sample(batch_size, seed, 2 * step)
    }
}
