//! Sample-quality measures on the exact-score oracle (SPEC §8, §9), shared by the sampler
//! conformance suite (`tests/samplers.rs`) and `examples/sampler_table.rs`.

#![allow(dead_code)]

use burn::tensor::DType;
use diffuse::oracle::GaussianMixture;
use diffuse::sample::registry::{sample, SamplerConfig};
use diffuse::schedule::Schedule;
use diffuse::tensor::to_vec;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use diffuse::eval::sliced_wasserstein;

/// Mean and standard error of the mean.
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// Fresh draws from the mixture with a seeded stream.
pub fn fresh(gm: &GaussianMixture, n: usize, seed: u64) -> Vec<f64> {
    gm.sample(n, &mut ChaCha8Rng::seed_from_u64(seed))
}

/// How one sampler does on the oracle.
#[derive(Debug, Clone, Copy)]
pub struct OracleScore {
    /// Mean log p(x) of the samples minus E_p[log p] (estimated on fresh data), nats.
    pub ll_err: f64,
    /// Standard error of `ll_err` (both sample sets).
    pub ll_se: f64,
    /// Sliced W1 from the samples to fresh data.
    pub sw: f64,
    /// Mean sliced W1 between two fresh data sets of the same sizes (the statistical floor).
    pub sw_floor: f64,
    /// Standard deviation of that data-vs-data distance over independent pairs.
    pub sw_floor_sd: f64,
}

impl OracleScore {
    /// The sliced-W1 bound of a sample set that matches the data: under that null hypothesis
    /// the sampler-vs-data distance is distributed as data-vs-data, so floor + 4 sd.
    pub fn sw_bound(&self) -> f64 {
        self.sw_floor + 4.0 * self.sw_floor_sd
    }
}

/// The reference quantities of a mixture: true mean log-likelihood (with its standard error)
/// on `n_true` fresh draws, a fresh data set of `n` to compare samples with, and the
/// data-vs-data sliced-W1 floor (mean and sd over `FLOOR_PAIRS` independent pairs of size `n`).
pub struct Truth {
    pub ll: f64,
    pub ll_se: f64,
    pub data_a: Vec<f64>,
    pub sw_floor: f64,
    pub sw_floor_sd: f64,
}

pub const FLOOR_PAIRS: u64 = 8;

pub const N_PROJECTIONS: usize = 64;

impl Truth {
    pub fn new(gm: &GaussianMixture, n: usize, n_true: usize, seed: u64) -> Self {
        let (ll, ll_se) = mean_se(&gm.log_prob(&fresh(gm, n_true, seed)));
        let data_a = fresh(gm, n, seed + 1);
        let floors: Vec<f64> = (0..FLOOR_PAIRS)
            .map(|k| {
                let (b, c) = (
                    fresh(gm, n, seed + 10 + 2 * k),
                    fresh(gm, n, seed + 11 + 2 * k),
                );
                sliced_wasserstein(&b, &c, gm.dim, N_PROJECTIONS, seed + 3)
            })
            .collect();
        let (sw_floor, floor_se) = mean_se(&floors);
        Truth {
            ll,
            ll_se,
            data_a,
            sw_floor,
            sw_floor_sd: floor_se * (FLOOR_PAIRS as f64).sqrt(),
        }
    }

    /// Scores a sample set against the truth.
    pub fn score(&self, gm: &GaussianMixture, x: &[f64], seed: u64) -> OracleScore {
        let (ll, se) = mean_se(&gm.log_prob(x));
        OracleScore {
            ll_err: ll - self.ll,
            ll_se: (se * se + self.ll_se * self.ll_se).sqrt(),
            sw: sliced_wasserstein(x, &self.data_a, gm.dim, N_PROJECTIONS, seed + 3),
            sw_floor: self.sw_floor,
            sw_floor_sd: self.sw_floor_sd,
        }
    }
}

/// `n` samples of the configured sampler on the oracle, x_T ~ N(0, I) from `seed`.
pub fn oracle_samples(
    cfg: &SamplerConfig,
    gm: &GaussianMixture,
    schedule: &Schedule,
    n: usize,
    seed: u64,
) -> Vec<f64> {
    let x = sample(
        cfg,
        gm,
        schedule,
        n,
        gm.dim,
        &diffuse::device::cpu(),
        DType::F64,
        seed,
        0,
        None,
        None,
    )
    .expect("valid sampler config");
    to_vec(&x)
}
