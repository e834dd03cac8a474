//! `diffuse eval`'s numbers: for each of several seeds, `n` model samples and two independent
//! fresh data sets of the same size; sliced Wasserstein and MMD (at fractions of the median
//! pairwise distance of the data) of model-vs-data next to the data-vs-data floor, and, for the
//! oracle mixture, the exact mean log-likelihood of the samples next to that of fresh data.

use super::distances::{median_distance, mmd_rbf, sliced_wasserstein};
use crate::data::DataSource;
use crate::denoiser::Denoiser;
use crate::error::{Error, Result};
use crate::oracle::GaussianMixture;
use crate::sample::registry::{sample, SamplerConfig};
use crate::schedule::Schedule;
use crate::tensor::to_vec;
use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};

/// Random projections of the sliced Wasserstein distance.
pub const N_PROJECTIONS: usize = 256;
/// MMD uses at most this many points per set (O(n^2) kernel sums).
pub const MMD_MAX_POINTS: usize = 2000;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub sampler: SamplerConfig,
    /// Samples per seed (and size of each fresh data set).
    pub n: usize,
    /// Seeds 0..num_seeds (offset by `seed`).
    pub num_seeds: u64,
    pub seed: u64,
    /// MMD bandwidths as fractions of the median pairwise distance of the data.
    pub bandwidth_fractions: Vec<f64>,
    /// Report the exact log-likelihood under the oracle mixture.
    pub mixture_loglik: bool,
}

/// Mean and sample standard deviation over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    /// The statistic of a list of per-seed values.
    pub fn of(v: &[f64]) -> Self {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Stat {
            mean,
            std: var.sqrt(),
        }
    }
}

/// A distance of the model and of the data-vs-data floor, and their ratio of means.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VsFloor {
    pub model: Stat,
    pub floor: Stat,
    pub ratio: f64,
}

impl VsFloor {
    fn new(model: &[f64], floor: &[f64]) -> Self {
        let (model, floor) = (Stat::of(model), Stat::of(floor));
        VsFloor {
            model,
            floor,
            ratio: model.mean / floor.mean,
        }
    }
}

/// MMD at one bandwidth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MmdEntry {
    pub fraction_of_median: f64,
    #[serde(flatten)]
    pub value: VsFloor,
}

/// The evaluation report (`eval.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub sampler: String,
    pub sampler_steps: usize,
    pub n: usize,
    pub seeds: Vec<u64>,
    pub sliced_wasserstein: VsFloor,
    pub mmd: Vec<MmdEntry>,
    /// Mean log p(sample) under the oracle mixture, for model samples and for fresh data.
    pub mixture_loglik: Option<(Stat, Stat)>,
}

/// Evaluates `denoiser` with the registry sampler of `opts` against `data` (both in the data's
/// standardised coordinates).
pub fn evaluate<D: Denoiser + ?Sized>(
    denoiser: &D,
    schedule: &Schedule,
    data: &DataSource,
    opts: &EvalOptions,
    device: &Device,
) -> Result<EvalReport> {
    let d = data.dim();
    let draw = |seed: u64| {
        let x = sample(
            &opts.sampler,
            denoiser,
            schedule,
            opts.n,
            d,
            device,
            DType::F32,
            seed,
            0,
            None,
            None,
        )?;
        Ok(to_vec(&x))
    };
    let (name, steps) = (opts.sampler.kind.name(), opts.sampler.steps);
    evaluate_with(draw, name, steps, data, opts)
}

/// Checks the sizes of an evaluation: at least 2 samples per seed (distances and the median
/// bandwidth compare points pairwise) and at least one seed (else every mean is 0/0).
pub fn check_sizes(n: usize, num_seeds: u64) -> Result<()> {
    if n < 2 {
        return Err(Error::config(
            "n",
            format!("{n} samples per seed: need at least 2 (distances compare point pairs)"),
        ));
    }
    if num_seeds == 0 {
        return Err(Error::config("seeds", "0 seeds: need at least 1"));
    }
    Ok(())
}

/// Evaluates the samples `draw(seed)` returns (`opts.n` rows) against `data`; `sampler` and
/// `steps` label the report.
pub fn evaluate_with<F: FnMut(u64) -> Result<Vec<f64>>>(
    mut draw: F,
    sampler: &str,
    steps: usize,
    data: &DataSource,
    opts: &EvalOptions,
) -> Result<EvalReport> {
    check_sizes(opts.n, opts.num_seeds)?;
    let d = data.dim();
    let k = opts.bandwidth_fractions.len();
    let (mut sw, mut sw_floor) = (Vec::new(), Vec::new());
    let (mut mmd, mut mmd_floor) = (vec![Vec::new(); k], vec![Vec::new(); k]);
    let (mut ll, mut ll_data) = (Vec::new(), Vec::new());
    let seeds: Vec<u64> = (0..opts.num_seeds).map(|i| opts.seed + i).collect();
    let mixture = GaussianMixture::toy_2d();
    for &seed in &seeds {
        let model = draw(seed)?;
        // Fresh data from streams far from the training streams (2 step, 2 step + 1).
        let reference = data.sample(opts.n, seed, u64::MAX - 2 * seed);
        let other = data.sample(opts.n, seed, u64::MAX - 2 * seed - 1);
        sw.push(sliced_wasserstein(
            &model,
            &reference,
            d,
            N_PROJECTIONS,
            seed,
        ));
        sw_floor.push(sliced_wasserstein(
            &other,
            &reference,
            d,
            N_PROJECTIONS,
            seed,
        ));
        let m = opts.n.min(MMD_MAX_POINTS) * d;
        let median = median_distance(&reference, d);
        let bw: Vec<f64> = opts
            .bandwidth_fractions
            .iter()
            .map(|f| f * median)
            .collect();
        for (j, v) in mmd_rbf(&model[..m], &reference[..m], d, &bw)
            .into_iter()
            .enumerate()
        {
            mmd[j].push(v);
        }
        for (j, v) in mmd_rbf(&other[..m], &reference[..m], d, &bw)
            .into_iter()
            .enumerate()
        {
            mmd_floor[j].push(v);
        }
        if opts.mixture_loglik {
            let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
            ll.push(mean(mixture.log_prob(&model)));
            ll_data.push(mean(mixture.log_prob(&reference)));
        }
    }
    Ok(EvalReport {
        sampler: sampler.to_string(),
        sampler_steps: steps,
        n: opts.n,
        seeds,
        sliced_wasserstein: VsFloor::new(&sw, &sw_floor),
        mmd: opts
            .bandwidth_fractions
            .iter()
            .enumerate()
            .map(|(j, f)| MmdEntry {
                fraction_of_median: *f,
                value: VsFloor::new(&mmd[j], &mmd_floor[j]),
            })
            .collect(),
        mixture_loglik: opts
            .mixture_loglik
            .then(|| (Stat::of(&ll), Stat::of(&ll_data))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ToyDataset;
    use crate::sample::registry::SamplerKind;

    fn options(n: usize, num_seeds: u64) -> EvalOptions {
        EvalOptions {
            sampler: SamplerConfig::new(SamplerKind::Ddim, 10),
            n,
            num_seeds,
            seed: 0,
            bandwidth_fractions: vec![0.5, 1.0],
            mixture_loglik: true,
        }
    }

    /// Evaluates fresh data as if it were the model's samples.
    fn evaluate_data(opts: &EvalOptions) -> Result<EvalReport> {
        let data = DataSource::Toy(ToyDataset::Mixture);
        let draw = |seed: u64| Ok(data.sample(opts.n, seed, 7));
        evaluate_with(draw, "data", 0, &data, opts)
    }

    #[test]
    fn too_few_samples_or_seeds_are_errors_naming_the_value() {
        for (n, seeds, name) in [(0, 2, "n"), (1, 2, "n"), (10, 0, "seeds")] {
            match evaluate_data(&options(n, seeds)) {
                Err(crate::Error::InvalidConfig { name: got, reason }) => {
                    assert_eq!(got, name, "n = {n}, seeds = {seeds}: {reason}")
                }
                other => panic!("n = {n}, seeds = {seeds}: expected an error, got {other:?}"),
            }
        }
        // The smallest valid sizes give finite numbers.
        let report = evaluate_data(&options(2, 1)).unwrap();
        assert!(report.sliced_wasserstein.model.mean.is_finite());
        assert!(report.mmd.iter().all(|m| m.value.model.mean.is_finite()));
    }
}
