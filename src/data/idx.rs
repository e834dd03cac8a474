//! IDX files (the MNIST / Fashion-MNIST container) and the Fashion-MNIST loader (SPEC §9:
//! 60k train / 10k test images of 28x28, labels 0..9).
//!
//! An IDX file is `00 00 <type> <rank>`, then `rank` big-endian u32 dimensions, then exactly
//! `prod(dims)` items. Only type `0x08` (unsigned bytes) is read. Files may be gzipped; that is
//! detected from the gzip magic `1f 8b`, not from the name.

use super::images::ImageSet;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The IDX type byte of unsigned 8-bit items, the only type read here.
const IDX_TYPE_U8: u8 = 0x08;
/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An IDX file that cannot be used, with the file it is about.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct IdxError {
    pub path: PathBuf,
    pub kind: IdxErrorKind,
}

/// What is wrong with an IDX file.
#[derive(Debug, thiserror::Error)]
pub enum IdxErrorKind {
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    #[error("neither {name} nor {name}.gz exists in this folder")]
    Missing { name: String },
    #[error("corrupt gzip stream: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("not an IDX file: magic {found:02x?} does not start with 00 00")]
    BadMagic { found: [u8; 2] },
    #[error("IDX item type 0x{found:02x} is not 0x08 (unsigned bytes)")]
    UnsupportedType { found: u8 },
    #[error("IDX rank {found}, expected {expected}")]
    WrongRank { expected: usize, found: usize },
    #[error("IDX dimensions {found:?}, expected {expected}")]
    WrongDims { expected: String, found: Vec<usize> },
    #[error("IDX dimensions {dims:?} hold more items than this machine can address")]
    TooLarge { dims: Vec<usize> },
    #[error("truncated: expected {expected} bytes of {part}, found {found}")]
    Truncated {
        part: &'static str,
        expected: u64,
        found: u64,
    },
    #[error("{extra} bytes after the {expected} bytes its dimensions announce")]
    TrailingBytes { expected: u64, extra: u64 },
    #[error("{labels} labels for the {images} images of {}", images_path.display())]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels: usize,
    },
    #[error("label {label} of item {index} is not below the number of classes {num_classes}")]
    LabelOutOfRange {
        index: usize,
        label: u8,
        num_classes: usize,
    },
    #[error("holds no images")]
    Empty,
}

impl IdxError {
    fn new(path: &Path, kind: IdxErrorKind) -> Self {
        IdxError {
            path: path.to_path_buf(),
            kind,
        }
    }
}

impl From<IdxError> for crate::Error {
    fn from(e: IdxError) -> Self {
        crate::Error::Data {
            path: e.path,
            reason: e.kind.to_string(),
        }
    }
}

/// The contents of a u8 IDX file: its dimensions and its items in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads a u8 IDX file, gzipped or raw. `expected_dims` has one entry per expected dimension
/// (so its length is the expected rank); `Some(d)` requires that dimension to be `d`.
pub fn read_idx(path: &Path, expected_dims: &[Option<usize>]) -> Result<IdxArray, IdxError> {
    let bytes = std::fs::read(path).map_err(|e| IdxError::new(path, IdxErrorKind::Io(e)))?;
    idx_from_bytes(path, &bytes, expected_dims)
}

/// [`read_idx`] on the bytes of `path` (read already); errors name `path`.
pub fn idx_from_bytes(
    path: &Path,
    bytes: &[u8],
    expected_dims: &[Option<usize>],
) -> Result<IdxArray, IdxError> {
    let err = |kind| IdxError::new(path, kind);
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut stream = MultiGzDecoder::new(bytes);
        read_idx_stream(&mut stream, expected_dims, IdxErrorKind::Gzip).map_err(err)
    } else {
        read_idx_stream(&mut &bytes[..], expected_dims, IdxErrorKind::Io).map_err(err)
    }
}

/// Parses an IDX stream; `io_error` wraps read failures (a corrupt gzip stream reads as one).
fn read_idx_stream(
    stream: &mut impl Read,
    expected_dims: &[Option<usize>],
    io_error: fn(std::io::Error) -> IdxErrorKind,
) -> Result<IdxArray, IdxErrorKind> {
    // Reads `len` bytes of `part`; `take` bounds what a header announcing terabytes costs.
    let mut read_part = |len: u64, part: &'static str| -> Result<Vec<u8>, IdxErrorKind> {
        let mut buf = Vec::new();
        stream
            .by_ref()
            .take(len)
            .read_to_end(&mut buf)
            .map_err(io_error)?;
        match buf.len() as u64 {
            found if found < len => Err(IdxErrorKind::Truncated {
                part,
                expected: len,
                found,
            }),
            _ => Ok(buf),
        }
    };
    let head = read_part(4, "header")?;
    if head[..2] != [0, 0] {
        return Err(IdxErrorKind::BadMagic {
            found: [head[0], head[1]],
        });
    }
    if head[2] != IDX_TYPE_U8 {
        return Err(IdxErrorKind::UnsupportedType { found: head[2] });
    }
    let rank = head[3] as usize;
    if rank != expected_dims.len() {
        return Err(IdxErrorKind::WrongRank {
            expected: expected_dims.len(),
            found: rank,
        });
    }
    let dim_bytes = read_part(4 * rank as u64, "dimensions")?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let dims_match = dims
        .iter()
        .zip(expected_dims)
        .all(|(d, want)| want.is_none_or(|w| w == *d));
    if !dims_match {
        let expected: Vec<String> = expected_dims
            .iter()
            .map(|d| d.map_or("*".to_string(), |d| d.to_string()))
            .collect();
        return Err(IdxErrorKind::WrongDims {
            expected: expected.join("x"),
            found: dims,
        });
    }
    let len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| IdxErrorKind::TooLarge { dims: dims.clone() })?;
    let data = read_part(len as u64, "items")?;
    let extra = std::io::copy(stream, &mut std::io::sink()).map_err(io_error)?;
    if extra > 0 {
        return Err(IdxErrorKind::TrailingBytes {
            expected: len as u64,
            extra,
        });
    }
    Ok(IdxArray { dims, data })
}

/// Reads an images file (rank 3: count x rows x cols) and, if given, its labels file (rank 1),
/// into a one-channel [`ImageSet`]. `image_hw` pins rows x cols; labels must be below
/// `class_names.len()`.
pub fn load_idx_images(
    images_path: &Path,
    labels_path: Option<&Path>,
    image_hw: Option<(usize, usize)>,
    class_names: &[&str],
) -> Result<ImageSet, IdxError> {
    let (h, w) = image_hw.unzip();
    let images = read_idx(images_path, &[None, h, w])?;
    let (count, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
    if count == 0 || height == 0 || width == 0 {
        return Err(IdxError::new(images_path, IdxErrorKind::Empty));
    }
    let labels = match labels_path {
        None => None,
        Some(labels_path) => {
            let labels = read_idx(labels_path, &[None])?;
            let err = |kind| IdxError::new(labels_path, kind);
            if labels.dims[0] != count {
                return Err(err(IdxErrorKind::CountMismatch {
                    images_path: images_path.to_path_buf(),
                    images: count,
                    labels: labels.dims[0],
                }));
            }
            if let Some((index, &label)) = labels
                .data
                .iter()
                .enumerate()
                .find(|(_, &l)| l as usize >= class_names.len())
            {
                return Err(err(IdxErrorKind::LabelOutOfRange {
                    index,
                    label,
                    num_classes: class_names.len(),
                }));
            }
            Some(labels.data.iter().map(|&l| l as u32).collect())
        }
    };
    Ok(ImageSet {
        channels: 1,
        height,
        width,
        pixels: images.data,
        class_names: match labels {
            Some(_) => class_names.iter().map(|s| s.to_string()).collect(),
            None => Vec::new(),
        },
        labels,
    })
}

/// The environment variable naming a Fashion-MNIST folder, looked at before the Debian path.
pub const FASHION_MNIST_ENV: &str = "DIFFUSE_FASHION_MNIST";
/// Where the Debian package `dataset-fashion-mnist` installs the four gzipped IDX files.
pub const FASHION_MNIST_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The Fashion-MNIST classes, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Fashion-MNIST images are 28 x 28 grey levels.
pub const FASHION_MNIST_SIZE: usize = 28;

/// The official Fashion-MNIST split (60k train, 10k test), kept as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// The prefix of the split's file names.
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// The Fashion-MNIST folder: `$DIFFUSE_FASHION_MNIST` if set, else the Debian package's folder
/// if it holds the training images, else `None`.
pub fn find_fashion_mnist_dir() -> Option<PathBuf> {
    fashion_mnist_dir_from(std::env::var_os(FASHION_MNIST_ENV).map(PathBuf::from))
}

/// [`find_fashion_mnist_dir`] given the environment variable's value.
fn fashion_mnist_dir_from(env_dir: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = env_dir.filter(|d| !d.as_os_str().is_empty()) {
        return Some(dir);
    }
    let debian = PathBuf::from(FASHION_MNIST_DEBIAN_DIR);
    idx_file(&debian, "train-images-idx3-ubyte")
        .is_ok()
        .then_some(debian)
}

/// `dir/name` or `dir/name.gz`, whichever exists (the plain name first).
fn idx_file(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    [plain, gz]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            IdxError::new(
                dir,
                IdxErrorKind::Missing {
                    name: name.to_string(),
                },
            )
        })
}

/// One split of Fashion-MNIST from `dir`, which holds the standard file names
/// (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ..., each with or without `.gz`).
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<ImageSet, IdxError> {
    let prefix = split.prefix();
    let images = idx_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = idx_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let size = FASHION_MNIST_SIZE;
    load_idx_images(
        &images,
        Some(&labels),
        Some((size, size)),
        &FASHION_MNIST_CLASSES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fashion-mnist")
    }

    /// A u8 IDX file's bytes: header for `dims`, then `payload`.
    fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, IDX_TYPE_U8, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(payload);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn gunzip(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Writes `bytes` as `name` in `dir` and returns its path.
    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn fixture_headers() {
        let dir = fixture_dir();
        let read =
            |name: &str, rank: usize| read_idx(&dir.join(name), &vec![None; rank]).unwrap().dims;
        assert_eq!(read("train-images-idx3-ubyte.gz", 3), [500, 28, 28]);
        assert_eq!(read("train-labels-idx1-ubyte.gz", 1), [500]);
        assert_eq!(read("t10k-images-idx3-ubyte.gz", 3), [100, 28, 28]);
        assert_eq!(read("t10k-labels-idx1-ubyte.gz", 1), [100]);
    }

    /// Values read from the Debian package's full files by an independent Python reader
    /// (gzip + struct), so they check both the fixture cut and this reader.
    #[test]
    fn fixture_known_values() {
        let px = |set: &ImageSet, i: usize, r: usize, c: usize| set.pixels[i * 784 + r * 28 + c];
        let train = load_fashion_mnist(&fixture_dir(), Split::Train).unwrap();
        assert_eq!(
            (train.len(), train.channels, train.height, train.width),
            (500, 1, 28, 28)
        );
        assert_eq!(train.class_names, FASHION_MNIST_CLASSES);
        let labels = train.labels.as_ref().unwrap();
        assert_eq!(labels[..10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
        assert_eq!(labels[499], 6);
        assert_eq!(labels.iter().sum::<u32>(), 2201);
        // Row 14 of image 0 is [0, 0, 1, 4, 6, 7, 2, 0, 0, 0, 0, 0, 237, 226, 217, 223, ...].
        assert_eq!(
            train.image(0)[14 * 28 + 2..14 * 28 + 16],
            [1, 4, 6, 7, 2, 0, 0, 0, 0, 0, 237, 226, 217, 223]
        );
        assert_eq!(px(&train, 1, 10, 10), 252);
        assert_eq!(px(&train, 499, 14, 14), 230);
        let sum = |s: &[u8]| s.iter().map(|&p| p as u64).sum::<u64>();
        assert_eq!(sum(&train.pixels[..784]), 76247);
        assert_eq!(sum(&train.pixels), 28368245);

        let test = load_fashion_mnist(&fixture_dir(), Split::Test).unwrap();
        assert_eq!((test.len(), test.height, test.width), (100, 28, 28));
        let labels = test.labels.as_ref().unwrap();
        assert_eq!(labels[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
        assert_eq!((labels[99], labels.iter().sum::<u32>()), (2, 428));
        assert_eq!((px(&test, 0, 14, 14), px(&test, 99, 14, 14)), (110, 202));
        assert_eq!(px(&test, 50, 3, 12), 203);
        assert_eq!(sum(&test.pixels[99 * 784..]), 93257);
        assert_eq!(sum(&test.pixels), 5854180);
    }

    /// The same folder with the `.gz` removed (files decompressed) loads the same set.
    #[test]
    fn gzip_and_raw_read_identically() {
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let path = entry.unwrap().path();
            if let Some(stem) = path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".gz")
            {
                write(tmp.path(), stem, &gunzip(&path));
            }
        }
        for split in [Split::Train, Split::Test] {
            let gz = load_fashion_mnist(&fixture_dir(), split).unwrap();
            let raw = load_fashion_mnist(tmp.path(), split).unwrap();
            assert_eq!(gz, raw);
        }
        // Detection is by content: a gzipped file without the suffix still reads.
        let gz_named_raw = write(
            tmp.path(),
            "images",
            &gzip(&idx_bytes(&[1, 2, 2], &[1, 2, 3, 4])),
        );
        let array = read_idx(&gz_named_raw, &[None; 3]).unwrap();
        assert_eq!((array.dims, array.data), (vec![1, 2, 2], vec![1, 2, 3, 4]));
    }

    /// Reads `bytes` written to a temp file and returns the error's kind, checking that the
    /// message names the file.
    fn error_of(bytes: &[u8], expected_dims: &[Option<usize>]) -> IdxErrorKind {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(tmp.path(), "bad-idx", bytes);
        let err = read_idx(&path, expected_dims).unwrap_err();
        assert!(err.to_string().contains("bad-idx"), "{err}");
        err.kind
    }

    #[test]
    fn bad_files_give_named_errors() {
        let any3 = [None; 3];
        let good = idx_bytes(&[2, 2, 2], &[7; 8]);
        assert!(matches!(
            error_of(&good[..good.len() - 3], &any3),
            IdxErrorKind::Truncated {
                part: "items",
                expected: 8,
                found: 5
            }
        ));
        assert!(matches!(
            error_of(&good[..3], &any3),
            IdxErrorKind::Truncated { part: "header", .. }
        ));
        assert!(matches!(
            error_of(&good[..10], &any3),
            IdxErrorKind::Truncated {
                part: "dimensions",
                expected: 12,
                found: 6
            }
        ));
        let gz = gzip(&good);
        assert!(matches!(
            error_of(&gz[..gz.len() / 2], &any3),
            IdxErrorKind::Gzip(_)
        ));
        let mut bad_magic = good.clone();
        bad_magic[1] = 1;
        assert!(matches!(
            error_of(&bad_magic, &any3),
            IdxErrorKind::BadMagic { found: [0, 1] }
        ));
        let mut float_type = good.clone();
        float_type[2] = 0x0d;
        assert!(matches!(
            error_of(&float_type, &any3),
            IdxErrorKind::UnsupportedType { found: 0x0d }
        ));
        assert!(matches!(
            error_of(&good, &[None]),
            IdxErrorKind::WrongRank {
                expected: 1,
                found: 3
            }
        ));
        let dims = [None, Some(2), Some(3)];
        match error_of(&good, &dims) {
            IdxErrorKind::WrongDims { expected, found } => {
                assert_eq!((expected.as_str(), found), ("*x2x3", vec![2, 2, 2]))
            }
            other => panic!("expected WrongDims, got {other:?}"),
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 5]);
        assert!(matches!(
            error_of(&trailing, &any3),
            IdxErrorKind::TrailingBytes {
                expected: 8,
                extra: 5
            }
        ));
        let huge = idx_bytes(&[u32::MAX; 3], &[]);
        assert!(matches!(
            error_of(&huge, &any3),
            IdxErrorKind::TooLarge { .. }
        ));
    }

    #[test]
    fn images_and_labels_must_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let images = write(tmp.path(), "images", &idx_bytes(&[3, 1, 2], &[0; 6]));
        let short = write(tmp.path(), "short", &idx_bytes(&[2], &[0, 1]));
        let err = load_idx_images(&images, Some(&short), None, &["a", "b"]).unwrap_err();
        assert_eq!(err.path, short);
        assert!(matches!(
            err.kind,
            IdxErrorKind::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ));
        let out_of_range = write(tmp.path(), "labels", &idx_bytes(&[3], &[0, 2, 1]));
        let err = load_idx_images(&images, Some(&out_of_range), None, &["a", "b"]).unwrap_err();
        assert!(matches!(
            err.kind,
            IdxErrorKind::LabelOutOfRange {
                index: 1,
                label: 2,
                num_classes: 2
            }
        ));
        let empty = write(tmp.path(), "empty", &idx_bytes(&[0, 1, 2], &[]));
        let err = load_idx_images(&empty, None, None, &[]).unwrap_err();
        assert!(matches!(err.kind, IdxErrorKind::Empty));
        let unlabelled = load_idx_images(&images, None, None, &[]).unwrap();
        assert_eq!((unlabelled.labels, unlabelled.class_names.len()), (None, 0));
        let err = load_fashion_mnist(tmp.path(), Split::Test).unwrap_err();
        assert!(matches!(err.kind, IdxErrorKind::Missing { .. }), "{err}");
        let err: crate::Error = err.into();
        assert!(err.to_string().contains("t10k-images-idx3-ubyte"), "{err}");
    }

    /// The full data set keeps the official split, balanced: 6000 / 1000 images per class.
    /// `scripts/setup.sh` (which CI runs) installs it.
    #[test]
    fn full_data_set_has_the_official_split() {
        let dir = find_fashion_mnist_dir()
            .expect("Fashion-MNIST not found: run scripts/setup.sh (dataset-fashion-mnist)");
        for (split, count) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let set = load_fashion_mnist(&dir, split).unwrap();
            assert_eq!((set.len(), set.dim()), (count, 784));
            let mut per_class = [0usize; 10];
            set.labels
                .unwrap()
                .iter()
                .for_each(|&l| per_class[l as usize] += 1);
            assert_eq!(per_class, [count / 10; 10]);
        }
    }

    #[test]
    fn the_environment_variable_comes_first() {
        let dir = PathBuf::from("/somewhere/fashion");
        assert_eq!(fashion_mnist_dir_from(Some(dir.clone())), Some(dir));
        // An empty value counts as unset.
        assert_eq!(
            fashion_mnist_dir_from(Some(PathBuf::new())),
            fashion_mnist_dir_from(None)
        );
    }
}
