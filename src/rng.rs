//! Seeded noise, one stream per sample (STYLE: as EDM's generator does), so sample `i` of seed
//! `s` is the same whether it is drawn in a batch of 1 or of 1000.

use crate::tensor::from_rows_like;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Where a stochastic sampler gets its Gaussian noise from.
pub trait NoiseSource {
    /// Standard normal noise shaped like `x` (same dtype and device).
    fn noise_like(&mut self, x: &Tensor<2>) -> Tensor<2>;
}

/// Independent ChaCha8 streams, one per sample: stream `first_index + i` of `seed` for row `i`.
#[derive(Debug, Clone)]
pub struct SampleRng {
    streams: Vec<ChaCha8Rng>,
}

impl SampleRng {
    /// Streams for `n` samples, the first being sample number `first_index` of `seed`.
    pub fn new(seed: u64, first_index: u64, n: usize) -> Self {
        let streams = (0..n as u64)
            .map(|i| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(first_index + i);
                rng
            })
            .collect();
        SampleRng { streams }
    }

    /// Number of samples (streams).
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when there are no streams.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// `n * d` standard normals, row `i` from stream `i`.
    pub fn normal(&mut self, d: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.streams.len() * d);
        for rng in &mut self.streams {
            out.extend((0..d).map(|_| -> f64 { StandardNormal.sample(rng) }));
        }
        out
    }

    /// Mutable access to sample `i`'s stream (for per-sample non-Gaussian draws).
    pub fn stream(&mut self, i: usize) -> &mut ChaCha8Rng {
        &mut self.streams[i]
    }
}

impl NoiseSource for SampleRng {
    fn noise_like(&mut self, x: &Tensor<2>) -> Tensor<2> {
        let [n, d] = x.dims();
        assert_eq!(
            n,
            self.streams.len(),
            "SampleRng has {} streams for a batch of {n}",
            self.streams.len()
        );
        from_rows_like(self.normal(d), x)
    }
}

/// Replays stored noise tensors in order (reference tests, DDIM with given noise).
pub struct Replay(pub std::collections::VecDeque<Tensor<2>>);

impl NoiseSource for Replay {
    fn noise_like(&mut self, x: &Tensor<2>) -> Tensor<2> {
        let t = self.0.pop_front().expect("Replay ran out of stored noise");
        assert_eq!(t.dims(), x.dims(), "stored noise has the wrong shape");
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_i_is_independent_of_batch_size() {
        let mut big = SampleRng::new(7, 0, 100);
        let all = big.normal(3);
        let mut one = SampleRng::new(7, 42, 1);
        assert_eq!(one.normal(3), all[42 * 3..43 * 3].to_vec());
        let mut other_seed = SampleRng::new(8, 42, 1);
        assert_ne!(other_seed.normal(3), all[42 * 3..43 * 3].to_vec());
    }

    #[test]
    fn streams_are_standard_normal() {
        // 20000 draws: the mean's standard error is 0.007, the variance's 0.01; 5 sigma bounds.
        let mut r = SampleRng::new(1, 0, 20);
        let x = r.normal(1000);
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.035, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
