//! A folder of PNG images as an [`ImageSet`] (SPEC §9: "any folder of PNGs").
//!
//! Either the folder holds the PNGs directly (an unlabelled set), or it holds one subfolder
//! per class, each with that class's PNGs; the sorted subfolder names are the class names and
//! a label is its subfolder's position among them. All images must have the same size and the
//! same mode: grayscale (1 channel) or RGB (3 channels). 16-bit images are reduced to 8 bits;
//! an alpha channel is accepted only if every pixel is opaque. Files and subfolders whose
//! names start with `.` are skipped, and so are files that do not end in `.png`.

use super::images::ImageSet;
use image::DynamicImage;
use std::path::{Path, PathBuf};

/// A PNG folder that cannot be used, with the file or folder it is about.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct FolderError {
    pub path: PathBuf,
    pub kind: FolderErrorKind,
}

/// What is wrong with a PNG folder.
#[derive(Debug, thiserror::Error)]
pub enum FolderErrorKind {
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    #[error("cannot decode: {0}")]
    Decode(#[source] image::ImageError),
    #[error("holds no .png files")]
    Empty,
    #[error("holds both .png files and class subfolders; use one layout")]
    MixedLayout,
    #[error("name is not valid UTF-8")]
    BadName,
    #[error("is {found_w}x{found_h} but {} is {w}x{h}", first.display())]
    MixedSize {
        first: PathBuf,
        w: u32,
        h: u32,
        found_w: u32,
        found_h: u32,
    },
    #[error("has {found} channel(s) but {} has {channels}", first.display())]
    MixedMode {
        first: PathBuf,
        channels: usize,
        found: usize,
    },
    #[error("has transparent pixels; only opaque grayscale or RGB images are read")]
    Transparent,
}

impl FolderError {
    fn new(path: &Path, kind: FolderErrorKind) -> Self {
        FolderError {
            path: path.to_path_buf(),
            kind,
        }
    }
}

impl From<FolderError> for crate::Error {
    fn from(e: FolderError) -> Self {
        crate::Error::Data {
            path: e.path,
            reason: e.kind.to_string(),
        }
    }
}

/// Reads every PNG of `dir` (or of its class subfolders) into one set, classes in sorted
/// order and files sorted by name within each.
pub fn load_png_folder(dir: &Path) -> Result<ImageSet, FolderError> {
    let (pngs, subdirs) = list(dir)?;
    let mut files: Vec<(PathBuf, Option<u32>)> = Vec::new();
    let mut class_names = Vec::new();
    if subdirs.is_empty() {
        files.extend(pngs.into_iter().map(|p| (p, None)));
    } else {
        if !pngs.is_empty() {
            return Err(FolderError::new(dir, FolderErrorKind::MixedLayout));
        }
        for (label, subdir) in subdirs.iter().enumerate() {
            let (class_pngs, _) = list(subdir)?;
            if class_pngs.is_empty() {
                return Err(FolderError::new(subdir, FolderErrorKind::Empty));
            }
            let name = subdir.file_name().and_then(|n| n.to_str());
            let name = name.ok_or_else(|| FolderError::new(subdir, FolderErrorKind::BadName))?;
            class_names.push(name.to_string());
            files.extend(class_pngs.into_iter().map(|p| (p, Some(label as u32))));
        }
    }
    if files.is_empty() {
        return Err(FolderError::new(dir, FolderErrorKind::Empty));
    }

    let mut pixels = Vec::new();
    let mut shape: Option<(usize, u32, u32)> = None;
    for (path, _) in &files {
        let err = |kind| FolderError::new(path, kind);
        let bytes = std::fs::read(path).map_err(|e| err(FolderErrorKind::Io(e)))?;
        let image = decode_png(path, &bytes)?;
        let (w, h) = (image.width(), image.height());
        let channels = if image.color().has_color() { 3 } else { 1 };
        match shape {
            None => shape = Some((channels, w, h)),
            Some((first_channels, first_w, first_h)) => {
                if (w, h) != (first_w, first_h) {
                    return Err(err(FolderErrorKind::MixedSize {
                        first: files[0].0.clone(),
                        w: first_w,
                        h: first_h,
                        found_w: w,
                        found_h: h,
                    }));
                }
                if channels != first_channels {
                    return Err(err(FolderErrorKind::MixedMode {
                        first: files[0].0.clone(),
                        channels: first_channels,
                        found: channels,
                    }));
                }
            }
        }
        if image.color().has_alpha() && !is_opaque(&image) {
            return Err(err(FolderErrorKind::Transparent));
        }
        append_chw(&image, channels, &mut pixels);
    }
    let (channels, width, height) = shape.expect("at least one image was read");
    let labels: Option<Vec<u32>> = files.iter().map(|(_, label)| *label).collect();
    Ok(ImageSet {
        channels,
        height: height as usize,
        width: width as usize,
        pixels,
        labels,
        class_names,
    })
}

/// Decodes one PNG file's bytes (errors name `path`). The decoder may allocate at most what
/// the file can hold: deflate expands at most ~1032-fold, so a header claiming more pixels
/// than 1100 x the file size (+ 64 KiB) is refused before the pixel buffer is allocated.
pub fn decode_png(path: &Path, bytes: &[u8]) -> Result<DynamicImage, FolderError> {
    let err = |e| FolderError::new(path, FolderErrorKind::Decode(e));
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(1100 * bytes.len() as u64 + (64 << 10));
    reader.limits(limits);
    reader.decode().map_err(err)
}

/// The `.png` files and the subfolders of `dir`, each sorted by name, hidden entries skipped.
fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), FolderError> {
    let io_err = |e| FolderError::new(dir, FolderErrorKind::Io(e));
    let mut pngs = Vec::new();
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            subdirs.push(path);
        } else if name.to_ascii_lowercase().ends_with(".png") {
            pngs.push(path);
        }
    }
    pngs.sort();
    subdirs.sort();
    Ok((pngs, subdirs))
}

/// Whether every alpha value is the maximum.
fn is_opaque(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgba8(_) => {
            image.to_rgba8().pixels().all(|p| p[3] == u8::MAX)
        }
        _ => image.to_rgba16().pixels().all(|p| p[3] == u16::MAX),
    }
}

/// Appends the image's 8-bit values channel by channel (CHW).
fn append_chw(image: &DynamicImage, channels: usize, pixels: &mut Vec<u8>) {
    if channels == 1 {
        pixels.extend_from_slice(image.to_luma8().as_raw());
    } else {
        let rgb = image.to_rgb8();
        for c in 0..3 {
            pixels.extend(rgb.pixels().map(|p| p[c]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb, RgbImage, RgbaImage};

    fn gray(dir: &Path, name: &str, w: u32, h: u32, first: u8) -> Vec<u8> {
        std::fs::create_dir_all(dir).unwrap();
        let raw: Vec<u8> = (0..w * h).map(|k| first.wrapping_add(k as u8)).collect();
        let image = GrayImage::from_raw(w, h, raw.clone()).unwrap();
        image.save(dir.join(name)).unwrap();
        raw
    }

    #[test]
    fn class_subfolders_give_labels_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // Written out of order: classes and files are read sorted by name.
        let b1 = gray(&root.join("boots"), "1.png", 3, 2, 50);
        let s0 = gray(&root.join("shirts"), "0.png", 3, 2, 100);
        let b0 = gray(&root.join("boots"), "0.png", 3, 2, 0);
        std::fs::write(root.join("shirts/notes.txt"), "not an image").unwrap();
        gray(&root.join(".hidden"), "x.png", 5, 5, 0);
        let set = load_png_folder(root).unwrap();
        assert_eq!(
            (set.len(), set.channels, set.height, set.width),
            (3, 1, 2, 3)
        );
        assert_eq!(set.class_names, ["boots", "shirts"]);
        assert_eq!(set.labels, Some(vec![0, 0, 1]));
        assert_eq!(set.image(0), b0.as_slice());
        assert_eq!(set.image(1), b1.as_slice());
        assert_eq!(set.image(2), s0.as_slice());
    }

    #[test]
    fn flat_rgb_folder_is_unlabelled_and_chw() {
        let tmp = tempfile::tempdir().unwrap();
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(0, 0, Rgb([1, 2, 3]));
        image.put_pixel(1, 0, Rgb([4, 5, 6]));
        image.save(tmp.path().join("a.png")).unwrap();
        // An opaque alpha channel is accepted and dropped.
        let mut rgba = RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([7, 8, 9, 255]));
        rgba.put_pixel(1, 0, image::Rgba([10, 11, 12, 255]));
        rgba.save(tmp.path().join("b.PNG")).unwrap();
        let set = load_png_folder(tmp.path()).unwrap();
        assert_eq!(
            (set.len(), set.channels, set.height, set.width),
            (2, 3, 1, 2)
        );
        assert_eq!((&set.labels, set.num_classes()), (&None, 0));
        assert_eq!(set.pixels, [1, 4, 2, 5, 3, 6, 7, 10, 8, 11, 9, 12]);
    }

    fn error_kind(dir: &Path) -> FolderErrorKind {
        load_png_folder(dir).unwrap_err().kind
    }

    #[test]
    fn inconsistent_folders_give_named_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let sizes = tmp.path().join("sizes");
        gray(&sizes, "a.png", 3, 2, 0);
        gray(&sizes, "b.png", 2, 3, 0);
        let err = load_png_folder(&sizes).unwrap_err();
        assert_eq!(err.path, sizes.join("b.png"));
        assert!(matches!(
            err.kind,
            FolderErrorKind::MixedSize {
                w: 3,
                h: 2,
                found_w: 2,
                found_h: 3,
                ..
            }
        ));

        let modes = tmp.path().join("modes");
        gray(&modes, "a.png", 2, 2, 0);
        RgbImage::new(2, 2).save(modes.join("b.png")).unwrap();
        assert!(matches!(
            error_kind(&modes),
            FolderErrorKind::MixedMode {
                channels: 1,
                found: 3,
                ..
            }
        ));

        let transparent = tmp.path().join("transparent");
        std::fs::create_dir_all(&transparent).unwrap();
        RgbaImage::new(2, 2)
            .save(transparent.join("a.png"))
            .unwrap();
        assert!(matches!(
            error_kind(&transparent),
            FolderErrorKind::Transparent
        ));

        let layout = tmp.path().join("layout");
        gray(&layout, "a.png", 2, 2, 0);
        gray(&layout.join("class"), "b.png", 2, 2, 0);
        assert!(matches!(error_kind(&layout), FolderErrorKind::MixedLayout));

        let empty_class = tmp.path().join("empty_class");
        gray(&empty_class.join("a"), "a.png", 2, 2, 0);
        std::fs::create_dir_all(empty_class.join("b")).unwrap();
        let err = load_png_folder(&empty_class).unwrap_err();
        assert_eq!(err.path, empty_class.join("b"));
        assert!(matches!(err.kind, FolderErrorKind::Empty));

        let not_png = tmp.path().join("not_png");
        std::fs::create_dir_all(&not_png).unwrap();
        std::fs::write(not_png.join("a.png"), "not a png").unwrap();
        let err: crate::Error = load_png_folder(&not_png).unwrap_err().into();
        assert!(err.to_string().contains("a.png"), "{err}");

        let missing = tmp.path().join("missing");
        assert!(matches!(error_kind(&missing), FolderErrorKind::Io(_)));
    }
}
