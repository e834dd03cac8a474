//! Image data sets (SPEC §9): 8-bit images stored as bytes in NCHW order, scaled to [-1, 1]
//! only when a batch is drawn, and drawn in batches that depend only on (seed, step).
//!
//! Symbols: `p` an 8-bit pixel value, `x = p / 127.5 - 1` its value in [-1, 1].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A set of same-size 8-bit images, with optional class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// N * C * H * W bytes, image-major then channel, row, column (NCHW).
    pub pixels: Vec<u8>,
    /// One label per image, each below `class_names.len()`; `None` for unlabelled sets.
    pub labels: Option<Vec<u32>>,
    /// The class of each label value; empty for unlabelled sets.
    pub class_names: Vec<String>,
}

/// The value in [-1, 1] of an 8-bit pixel (SPEC §9): `x = p / 127.5 - 1`, so 0 -> -1 and
/// 255 -> 1 exactly.
pub fn pixel_to_unit(p: u8) -> f64 {
    p as f64 / 127.5 - 1.0
}

/// The 8-bit pixel nearest to `x` in [-1, 1]: `round((x + 1) * 127.5)` clamped to [0, 255]
/// (NaN gives 0). The inverse of [`pixel_to_unit`] on all 256 values.
pub fn unit_to_pixel(x: f64) -> u8 {
    ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// The training batch of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// n * D values in [-1, 1], one image after another (NCHW), flipped where drawn so.
    pub x: Vec<f32>,
    /// The labels of the drawn images, if the set has labels (i64 for integer tensors).
    pub labels: Option<Vec<i64>>,
    /// The drawn image indices, in batch order.
    pub indices: Vec<usize>,
}

impl ImageSet {
    /// Checks that the parts agree: `pixels` holds whole images, the labels (if any) are one
    /// per image and below the number of classes.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
    ) -> crate::Result<Self> {
        let set = ImageSet {
            channels,
            height,
            width,
            pixels,
            labels,
            class_names,
        };
        let dim = set.dim();
        if dim == 0 || !set.pixels.len().is_multiple_of(dim) {
            return Err(crate::Error::Shape(format!(
                "{} pixel bytes are not whole {channels}x{height}x{width} images",
                set.pixels.len()
            )));
        }
        if let Some(labels) = &set.labels {
            if labels.len() != set.len() {
                return Err(crate::Error::Shape(format!(
                    "{} labels for {} images",
                    labels.len(),
                    set.len()
                )));
            }
            if let Some(bad) = labels.iter().find(|&&l| l as usize >= set.num_classes()) {
                return Err(crate::Error::Shape(format!(
                    "label {bad} is not below the number of classes {}",
                    set.num_classes()
                )));
            }
        }
        Ok(set)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len().checked_div(self.dim()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per image, D = C * H * W.
    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of classes (0 for an unlabelled set).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The bytes of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let dim = self.dim();
        &self.pixels[i * dim..(i + 1) * dim]
    }

    /// The images at `indices` (a range, or `slice.iter().copied()`), in that order, with
    /// their labels and the same class names.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: impl IntoIterator<Item = usize>) -> ImageSet {
        let indices: Vec<usize> = indices.into_iter().collect();
        let mut pixels = Vec::with_capacity(indices.len() * self.dim());
        for &i in &indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|labels| indices.iter().map(|&i| labels[i]).collect()),
            class_names: self.class_names.clone(),
        }
    }

    /// The images at `indices` scaled to [-1, 1] with [`pixel_to_unit`], one after another.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn images_unit(&self, indices: &[usize]) -> Vec<f32> {
        let mut x = Vec::with_capacity(indices.len() * self.dim());
        for &i in indices {
            x.extend(self.image(i).iter().map(|&p| pixel_to_unit(p) as f32));
        }
        x
    }

    /// The batch of step `step`: `n` images drawn uniformly with replacement from stream
    /// `2 * step` of `seed` (even streams are data, odd ones noise, as in
    /// [`super::DataSource::batch`]), then, if `hflip`, each mirrored left-right with
    /// probability 1/2 from the same stream. All n indices are drawn before the flips, so the
    /// indices do not depend on `hflip`.
    ///
    /// # Panics
    /// If the set is empty and `n > 0` (the loaders refuse empty sets).
    pub fn batch(&self, n: usize, seed: u64, step: u64, hflip: bool) -> ImageBatch {
        assert!(
            n == 0 || !self.is_empty(),
            "cannot draw a batch from no images"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(2 * step);
        let count = self.len();
        let indices: Vec<usize> = (0..n).map(|_| rng.random_range(0..count)).collect();
        let mut x = self.images_unit(&indices);
        if hflip {
            let width = self.width;
            for image in x.chunks_exact_mut(self.dim().max(1)) {
                if rng.random_bool(0.5) {
                    image.chunks_exact_mut(width).for_each(|row| row.reverse());
                }
            }
        }
        let labels = self
            .labels
            .as_ref()
            .map(|labels| indices.iter().map(|&i| labels[i] as i64).collect());
        ImageBatch { x, labels, indices }
    }
}

/// Prepares the batches of consecutive steps on a background thread, so drawing and scaling
/// images overlaps the training step. Yields exactly what [`ImageSet::batch`] gives for steps
/// `start_step`, `start_step + 1`, ... Dropping it stops the thread.
pub struct BatchPrefetcher {
    set: Arc<ImageSet>,
    n: usize,
    seed: u64,
    hflip: bool,
    /// The step of the batch `next` returns.
    step: u64,
    receiver: Option<Receiver<ImageBatch>>,
    worker: Option<JoinHandle<()>>,
}

impl BatchPrefetcher {
    /// Starts the thread; it keeps up to `depth` batches ready (at least 1).
    pub fn new(
        set: Arc<ImageSet>,
        n: usize,
        seed: u64,
        start_step: u64,
        hflip: bool,
        depth: usize,
    ) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(depth.max(1));
        let worker_set = Arc::clone(&set);
        let worker = std::thread::Builder::new()
            .name("batch-prefetch".into())
            .spawn(move || prefetch(&worker_set, n, seed, start_step, hflip, &sender))
            .ok();
        BatchPrefetcher {
            set,
            n,
            seed,
            hflip,
            step: start_step,
            receiver: worker.as_ref().map(|_| receiver),
            worker,
        }
    }

    /// The step whose batch [`next`](Self::next) returns.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The batch of the next step.
    #[allow(clippy::should_implement_trait)] // The stream never ends: an Option would be noise.
    pub fn next(&mut self) -> ImageBatch {
        // Without a worker (it could not start, or it stopped) the batch is computed here, so
        // the result is the same, and a panic inside `batch` surfaces on this thread.
        let batch = match self.receiver.as_ref().map(|r| r.recv()) {
            Some(Ok(batch)) => batch,
            _ => self.set.batch(self.n, self.seed, self.step, self.hflip),
        };
        self.step += 1;
        batch
    }
}

/// The worker loop: sends batches in step order until the receiver is gone.
fn prefetch(
    set: &ImageSet,
    n: usize,
    seed: u64,
    start_step: u64,
    hflip: bool,
    sender: &SyncSender<ImageBatch>,
) {
    for step in start_step.. {
        if sender.send(set.batch(n, seed, step, hflip)).is_err() {
            return;
        }
    }
}

impl Drop for BatchPrefetcher {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, which ends its loop.
        self.receiver = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four 1x2x3 images with distinct pixels, labelled 0, 1, 2, 0.
    fn small_set() -> ImageSet {
        ImageSet::new(
            1,
            2,
            3,
            (0..24).map(|p| p * 10).collect(),
            Some(vec![0, 1, 2, 0]),
            vec!["a".into(), "b".into(), "c".into()],
        )
        .unwrap()
    }

    #[test]
    fn pixel_round_trip_is_exact() {
        assert_eq!(pixel_to_unit(0), -1.0);
        assert_eq!(pixel_to_unit(255), 1.0);
        for p in 0..=255u8 {
            let x = pixel_to_unit(p);
            assert!((-1.0..=1.0).contains(&x));
            assert_eq!(unit_to_pixel(x), p);
            // Through f32, as batches carry it: the f32 rounding error (< 1e-7) is far inside
            // the half-level (1 / 255) that rounding back tolerates.
            assert_eq!(unit_to_pixel(x as f32 as f64), p);
        }
        assert_eq!(unit_to_pixel(-3.0), 0);
        assert_eq!(unit_to_pixel(3.0), 255);
        assert_eq!(unit_to_pixel(f64::NAN), 0);
    }

    #[test]
    fn new_checks_the_parts_agree() {
        let names = || vec!["a".to_string()];
        assert!(ImageSet::new(1, 2, 2, vec![0; 7], None, vec![]).is_err());
        assert!(ImageSet::new(1, 2, 2, vec![0; 8], Some(vec![0]), names()).is_err());
        assert!(ImageSet::new(1, 2, 2, vec![0; 8], Some(vec![0, 1]), names()).is_err());
        let set = ImageSet::new(3, 2, 2, vec![0; 24], Some(vec![0, 0]), names()).unwrap();
        assert_eq!((set.len(), set.dim(), set.num_classes()), (2, 12, 1));
    }

    #[test]
    fn subset_keeps_images_and_labels_together() {
        let set = small_set();
        let picked = set.subset([3, 1]);
        assert_eq!(picked.len(), 2);
        assert_eq!(picked.image(0), set.image(3));
        assert_eq!(picked.image(1), set.image(1));
        assert_eq!(picked.labels, Some(vec![0, 1]));
        assert_eq!(picked.class_names, set.class_names);
        assert_eq!(set.subset(1..3), set.subset([1, 2]));
        let x = set.images_unit(&[2]);
        assert_eq!(x[0], pixel_to_unit(120) as f32);
    }

    #[test]
    fn batch_depends_only_on_seed_and_step() {
        let set = small_set();
        let a = set.batch(16, 7, 3, true);
        assert_eq!(a, set.batch(16, 7, 3, true));
        assert_ne!(a.indices, set.batch(16, 7, 4, true).indices);
        assert_ne!(a.indices, set.batch(16, 8, 3, true).indices);
        // Indices are drawn before flips, so they do not depend on hflip.
        assert_eq!(a.indices, set.batch(16, 7, 3, false).indices);
        let labels: Vec<i64> = a.indices.iter().map(|&i| [0, 1, 2, 0][i]).collect();
        assert_eq!(a.labels, Some(labels));
    }

    #[test]
    fn hflip_mirrors_some_images_and_keeps_the_others() {
        let set = small_set();
        let batch = set.batch(64, 1, 0, true);
        let mut flipped = 0;
        for (k, &i) in batch.indices.iter().enumerate() {
            let got = &batch.x[k * 6..(k + 1) * 6];
            let plain = set.images_unit(&[i]);
            let mut mirrored = plain.clone();
            mirrored.chunks_exact_mut(3).for_each(|row| row.reverse());
            // Rows of distinct pixels, so an image is exactly one of the two.
            assert!(got == plain.as_slice() || got == mirrored.as_slice());
            flipped += usize::from(got == mirrored.as_slice());
        }
        // Binomial(64, 1/2): outside [16, 48] has probability < 1e-4 (and the seed is fixed).
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped");
        let no_flip = set.batch(64, 1, 0, false);
        assert_eq!(no_flip.x, set.images_unit(&no_flip.indices));
    }

    #[test]
    fn prefetcher_matches_direct_batches() {
        let set = Arc::new(small_set());
        let mut prefetcher = BatchPrefetcher::new(Arc::clone(&set), 8, 42, 5, true, 2);
        for step in 5..25 {
            assert_eq!(prefetcher.step(), step);
            assert_eq!(prefetcher.next(), set.batch(8, 42, step, true));
        }
        drop(prefetcher);
        // The worker held the only other reference; it is gone once the drop has joined it.
        assert_eq!(Arc::strong_count(&set), 1);
    }
}
