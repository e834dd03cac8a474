//! Sampler conformance suite (SPEC §5, §8): one set of checks run over every sampler of the
//! registry — shape kept, same seed => same output, per-sample noise streams (batch-size
//! independence, also for an image-shaped convolutional denoiser), correct marginals on the
//! exact-score oracle, error shrinking with steps —
//! plus the convergence orders of the deterministic solvers, the DDIM inversion round trip
//! and zero-terminal-SNR grids.

#[path = "samplers/convergence.rs"]
mod convergence;
#[path = "samplers/guidance.rs"]
mod guidance;
#[path = "common/metrics.rs"]
mod metrics;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorData;
use burn::tensor::{DType, Tensor};
use diffuse::denoiser::{
    Denoised, Denoiser, Guided, Network, NetworkDenoiser, NoiseLevel, Parameterization,
};
use diffuse::oracle::{ClassConditional, Covariance, GaussianMixture};
use diffuse::prediction::PredictionType;
use diffuse::rng::{Replay, SampleRng};
use diffuse::sample::ddim::{ddim_invert, sample_ddim, DdimOptions};
use diffuse::sample::dpm_solver::sample_dpmpp_2m;
use diffuse::sample::grid::{
    ddim_inversion_grid, discrete_grid, discrete_timesteps, Spacing, TimeOfSigma,
};
use diffuse::sample::karras::{sample_euler, sample_heun, Churn};
use diffuse::sample::registry::{sample, SamplerConfig, SamplerKind};
use diffuse::sample::StepInfo;
use diffuse::schedule::{karras_sigmas, Schedule, ScheduleConfig};
use diffuse::tensor::{from_rows, from_rows_like, to_vec};
use metrics::{fresh, oracle_samples, Truth};
use std::collections::VecDeque;

fn linear() -> Schedule {
    ScheduleConfig::default().build().unwrap()
}

/// A second test mixture: strongly anisotropic, correlated, weights 0.7 / 0.2 / 0.1.
fn lopsided_mixture() -> GaussianMixture {
    GaussianMixture::new(
        vec![0.7, 0.2, 0.1],
        vec![vec![0.0, 0.7], vec![-1.0, -0.8], vec![1.2, -0.6]],
        vec![
            Covariance::Full(vec![0.25, -0.12, -0.12, 0.1]),
            Covariance::Diag(vec![0.05, 0.3]),
            Covariance::Full(vec![0.02, 0.01, 0.01, 0.06]),
        ],
    )
    .unwrap()
}

/// Every sampler of the registry, with the stochastic variants, in compact form.
const SPECS: [&str; 10] = [
    "ddpm",
    "ddpm:variance=fixed_large",
    "ddim",
    "ddim:eta=0.5",
    "euler:karras=true",
    "euler:karras=true,s_churn=10,s_tmin=0.05,s_tmax=10",
    "euler-ancestral:karras=true",
    "heun:karras=true",
    "heun:karras=true,s_churn=10,s_tmin=0.05,s_tmax=10",
    "dpmpp-2m:karras=true",
];

#[test]
fn specs_cover_every_sampler_kind() {
    for kind in SamplerKind::ALL {
        assert!(
            SPECS
                .iter()
                .any(|s| SamplerConfig::parse(s, 1).unwrap().kind == kind),
            "{} is not in the suite",
            kind.name()
        );
    }
}

/// Counts denoiser calls.
struct Counting<'a> {
    inner: &'a GaussianMixture,
    calls: std::cell::Cell<usize>,
}

impl Denoiser for Counting<'_> {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        self.calls.set(self.calls.get() + 1);
        self.inner.denoise(x_t, levels, labels)
    }
}

#[test]
fn callbacks_and_nfe() {
    // Each sampler reports once per step, ends at sigma = 0, and calls the denoiser
    // `SamplerConfig::nfe` times (Heun: 2 steps - 1).
    let (gm, s) = (GaussianMixture::toy_2d(), linear());
    for spec in SPECS {
        let cfg = SamplerConfig::parse(spec, 7).unwrap();
        let den = Counting {
            inner: &gm,
            calls: std::cell::Cell::new(0),
        };
        let mut seen = Vec::new();
        let mut cb = |i: &StepInfo| seen.push((i.step, i.steps, i.level.sigma));
        let x = sample(
            &cfg,
            &den,
            &s,
            3,
            2,
            &diffuse::device::cpu(),
            DType::F64,
            1,
            0,
            None,
            Some(&mut cb),
        )
        .unwrap();
        assert_eq!(x.dims(), [3, 2]);
        assert_eq!(den.calls.get(), cfg.nfe(), "{spec}: denoiser calls");
        assert_eq!(seen.len(), 7, "{spec}: callbacks");
        assert!(seen.iter().enumerate().all(|(k, s)| s.0 == k && s.1 == 7));
        assert_eq!(seen[6].2, 0.0, "{spec}: final level");
    }
}

/// A denoiser that uses the timestep: it checks that every call's time input `t` is the
/// schedule's timestep of the call's `sigma` (a discrete-time network reads its noise level
/// from t alone), recording the worst mismatch in steps.
struct TimeChecked<'a> {
    inner: &'a GaussianMixture,
    schedule: &'a Schedule,
    worst: std::cell::Cell<(f64, NoiseLevel)>,
}

impl Denoiser for TimeChecked<'_> {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        for &level in levels {
            let off = (self.schedule.sigma_to_t(level.sigma) - level.t).abs();
            if off > self.worst.get().0 {
                self.worst.set((off, level));
            }
        }
        self.inner.denoise(x_t, levels, labels)
    }
}

#[test]
fn every_sampler_gives_the_network_the_timestep_of_its_sigma() {
    // Bug 1 of issue 12: churn evaluated the denoiser at sigma_hat with the un-churned t, a
    // timestep ~40% off in sigma. Bound: under 1 step. The grids place sigma by linear
    // interpolation of the sigma table at fractional t (linspace) while `sigma_to_t` inverts by
    // log-sigma interpolation, so both land in the same unit interval; DPM-Solver rounds
    // recovered timesteps (+-0.5); discrete grids and recovered Karras timesteps are exact.
    let (gm, s) = (GaussianMixture::toy_2d(), linear());
    for spec in SPECS {
        for steps in [8, 25] {
            let cfg = SamplerConfig::parse(spec, steps).unwrap();
            let den = TimeChecked {
                inner: &gm,
                schedule: &s,
                worst: std::cell::Cell::new((0.0, NoiseLevel::clean())),
            };
            let dev = diffuse::device::cpu();
            sample(&cfg, &den, &s, 4, 2, &dev, DType::F64, 2, 0, None, None).unwrap();
            let (off, level) = den.worst.get();
            assert!(
                off < 1.0,
                "{spec} @ {steps} steps: the network saw t = {} at sigma = {} (timestep {}), \
                 {off:.2} steps off",
                level.t,
                level.sigma,
                s.sigma_to_t(level.sigma)
            );
        }
    }
}

#[test]
fn shape_seed_and_batch_size_independence() {
    // Exact equality: every sampler works row by row, and sample i draws all of its noise
    // (x_T, churn, ancestral noise) from stream i of the seed.
    let (gm, s) = (GaussianMixture::toy_2d(), linear());
    let draw = |cfg: &SamplerConfig, n: usize, seed: u64, first: u64| -> Tensor<2> {
        let x = sample(
            cfg,
            &gm,
            &s,
            n,
            2,
            &diffuse::device::cpu(),
            DType::F64,
            seed,
            first,
            None,
            None,
        );
        x.unwrap()
    };
    for spec in SPECS {
        let cfg = SamplerConfig::parse(spec, 8).unwrap();
        let a = draw(&cfg, 6, 11, 0);
        assert_eq!(a.dims(), [6, 2], "{spec}: shape");
        let a = to_vec(&a);
        assert_eq!(a, to_vec(&draw(&cfg, 6, 11, 0)), "{spec}: same seed");
        let other = to_vec(&draw(&cfg, 6, 12, 0));
        for i in 0..6 {
            assert_ne!(
                a[2 * i..2 * i + 2],
                other[2 * i..2 * i + 2],
                "{spec}: seed 12 row {i}"
            );
        }
        let alone = to_vec(&draw(&cfg, 1, 11, 4));
        assert_eq!(alone, a[8..10].to_vec(), "{spec}: sample 4 drawn alone");
        let first3 = to_vec(&draw(&cfg, 3, 11, 0));
        assert_eq!(first3, a[..6].to_vec(), "{spec}: batch of 3");
    }
}

/// An image-shaped eps network on flat `[N, C*H*W]` batches: it reshapes to `[N, C, H, W]`
/// (NCHW), applies a fixed 3x3 convolution mixing the channels (zero padding 1), a tanh and a
/// timestep-dependent gain, and flattens back. Every output pixel depends on its neighbours,
/// but never on another sample.
struct ConvEpsNet {
    channels: usize,
    height: usize,
    width: usize,
}

impl Network for ConvEpsNet {
    fn forward(&self, x: Tensor<2>, t: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
        let [n, d] = x.dims();
        let (c, h, w) = (self.channels, self.height, self.width);
        let kernel: Vec<f64> = (0..c * c * 9)
            .map(|k| 0.15 * ((k as f64) * 0.77).sin())
            .collect();
        let weight = Tensor::<4>::from_data(
            TensorData::new(kernel, [c, c, 3, 3]),
            (&x.device(), x.dtype()),
        );
        let image: Tensor<4> = x.reshape([n, c, h, w]);
        let y = conv2d(
            image,
            weight,
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let gain: Vec<f64> = t.iter().map(|t| 0.5 + 0.3 * (t / 1000.0)).collect();
        let gain = from_rows(gain, n, 1, &y.device(), y.dtype());
        y.reshape([n, d]).tanh() * gain
    }
}

#[test]
fn image_shaped_denoiser_under_every_sampler() {
    // Batches are flat [N, D] with D = C*H*W (2x4x4): a network that reshapes to NCHW and
    // convolves must keep the shape under every sampler, give finite samples, and keep sample i
    // the same in batches of 6, 3 (first three rows) and 1 (row 4 alone, from stream 4), exactly
    // as the oracle does in `shape_seed_and_batch_size_independence`: the convolution acts per
    // sample, so batching must not change a single bit.
    let s = linear();
    let den = NetworkDenoiser {
        net: ConvEpsNet {
            channels: 2,
            height: 4,
            width: 4,
        },
        parameterization: Parameterization::Discrete {
            prediction: PredictionType::Eps,
            learned_variance: false,
        },
    };
    let d = 2 * 4 * 4;
    let draw = |spec: &str, n: usize, first: u64| -> Vec<f64> {
        let cfg = SamplerConfig::parse(spec, 8).unwrap();
        let dev = diffuse::device::cpu();
        let x = sample(
            &cfg,
            &den,
            &s,
            n,
            d,
            &dev,
            DType::F64,
            11,
            first,
            None,
            None,
        )
        .unwrap();
        assert_eq!(x.dims(), [n, d], "{spec}: shape");
        to_vec(&x)
    };
    for spec in SPECS {
        let six = draw(spec, 6, 0);
        assert!(
            six.iter().all(|v| v.is_finite()),
            "{spec}: non-finite samples"
        );
        assert_eq!(
            draw(spec, 3, 0),
            six[..3 * d].to_vec(),
            "{spec}: batch of 3"
        );
        assert_eq!(
            draw(spec, 1, 4),
            six[4 * d..5 * d].to_vec(),
            "{spec}: sample 4 alone"
        );
    }
}

/// x_T ~ N(0, I) (VP scaling) for `m` points of dimension 2.
fn x_t(m: usize, seed: u64) -> Tensor<2> {
    let mut rng = SampleRng::new(seed, 0, m);
    from_rows(rng.normal(2), m, 2, &diffuse::device::cpu(), DType::F64)
}

#[test]
fn ddim_inversion_round_trip() {
    // x_0 -> x_T -> x_0 with the oracle on the full 1000-step chain. Each direction is a
    // first-order solver of the same ODE, so the round trip errs by O(1/steps): the bound
    // 2e-2 (max over 200 points, data scale ~1) is about 4x the measured error.
    let (gm, s) = (GaussianMixture::toy_2d(), linear());
    let x0 = from_rows(
        fresh(&gm, 200, 9),
        200,
        2,
        &diffuse::device::cpu(),
        DType::F64,
    );
    let ts = discrete_timesteps(Spacing::Trailing, 1000, 1000, 0);
    let x_big_t = ddim_invert(
        &gm,
        x0.clone(),
        &ddim_inversion_grid(&s, &ts, 1.0),
        None,
        None,
    );
    let mut none = Replay(VecDeque::new());
    let grid = discrete_grid(&s, &ts, 1.0);
    let back = sample_ddim(
        &gm,
        x_big_t,
        &grid,
        &DdimOptions::default(),
        &mut none,
        None,
        None,
    );
    let (a, b) = (to_vec(&x0), to_vec(&back));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    println!("DDIM inversion round trip: max error {max:.3e}");
    assert!(max < 2e-2, "round trip max error {max}");
}

/// Steps at which each sampler of [`SPECS`] is converged on the oracle to within the
/// statistical bound (from the ladders in `examples/sampler_table.rs`): the ancestral samplers
/// (DDPM: +0.09 nats at 256 steps; Euler ancestral: sliced W1 twice the floor at 400 steps on
/// the second mixture) converge slowest, the Karras-grid ODE solvers fastest.
fn converged_steps(spec: &str) -> usize {
    if spec.contains("s_churn") {
        return 200;
    }
    match spec.split(':').next().unwrap() {
        "ddpm" => 1000,
        "ddim" => 400,
        "euler-ancestral" => 1000,
        "euler" => 100,
        _ => 50,
    }
}

#[test]
fn oracle_marginals_match_the_mixture() {
    // SPEC §8: from x_T ~ N(0, I), every sampler reproduces the mixture. Two mixtures, both
    // anisotropic with unequal weights; 2000 samples each. Bounds: the mean log-likelihood
    // error is within 4 standard errors of zero (se ~ 0.024 nats: samples and the 50000-draw
    // estimate of E log p combined), and the sliced W1 to fresh data is at most 1.6x the
    // data-vs-data floor at the same sample size: the floor's mean over 8 independent pairs of
    // fresh sets plus 4 of their standard deviations (under the null hypothesis that the
    // samples follow the mixture, sampler-vs-data is distributed as data-vs-data).
    let s = linear();
    let n = 2000;
    for (m, gm) in [GaussianMixture::toy_2d(), lopsided_mixture()]
        .iter()
        .enumerate()
    {
        let truth = Truth::new(gm, n, 50_000, 100 + m as u64);
        for spec in SPECS {
            let cfg = SamplerConfig::parse(spec, converged_steps(spec)).unwrap();
            let x = oracle_samples(&cfg, gm, &s, n, 7 + m as u64);
            let score = truth.score(gm, &x, 7);
            println!("mixture {m} {spec} @ {}: {score:?}", cfg.steps);
            assert!(
                score.ll_err.abs() <= 4.0 * score.ll_se,
                "mixture {m} {spec}: log-likelihood error {:.4} > 4 se ({:.4})",
                score.ll_err,
                score.ll_se
            );
            assert!(
                score.sw <= score.sw_bound(),
                "mixture {m} {spec}: sliced W1 {:.4} > floor {:.4} + 4 sd {:.4}",
                score.sw,
                score.sw_floor,
                score.sw_floor_sd
            );
        }
    }
}

#[test]
fn error_shrinks_as_steps_grow() {
    // Sliced W1 to fresh data (2000 samples, same x_T and noise seed at every step count)
    // must fall at every rung of 4 -> 16 -> 64 steps, and by at least 3x overall (measured
    // 5x-60x). The log-likelihood error is not monotone at small step counts (it changes
    // sign: too-diffuse samples at 4 steps, too-sharp ones at 16), so it is bounded in
    // `oracle_marginals_match_the_mixture` instead.
    let (gm, s) = (GaussianMixture::toy_2d(), linear());
    let truth = Truth::new(&gm, 2000, 1000, 300);
    for spec in SPECS {
        let sw: Vec<f64> = [4, 16, 64]
            .iter()
            .map(|&steps| {
                let cfg = SamplerConfig::parse(spec, steps).unwrap();
                truth
                    .score(&gm, &oracle_samples(&cfg, &gm, &s, 2000, 21), 21)
                    .sw
            })
            .collect();
        println!("{spec}: sliced W1 at 4/16/64 steps {sw:?}");
        assert!(sw.windows(2).all(|w| w[1] < w[0]), "{spec}: {sw:?}");
        assert!(sw[2] * 3.0 < sw[0], "{spec}: {sw:?}");
    }
}

#[test]
fn zero_terminal_snr_grids() {
    // A zero-terminal-SNR schedule puts sigma = +inf (a = 0) at its last step. DDPM, DDIM and
    // DPM-Solver++ in VP space step from it directly (trailing grids start there); the
    // sigma-space samplers get the diffusers grid with alpha_bar_T = 2^-24 (sigma ~ 4096). All
    // must give finite samples with the right distribution: sliced W1 within the data-vs-data
    // floor + 4 sd (1000 samples, 200 steps).
    let cfg_s = ScheduleConfig {
        rescale_zero_terminal_snr: true,
        ..ScheduleConfig::default()
    };
    let s = cfg_s.build().unwrap();
    assert!(s.sigma[999].is_infinite());
    let gm = GaussianMixture::toy_2d();
    let truth = Truth::new(&gm, 1000, 1000, 400);
    let check = |what: &str, x: Vec<f64>| {
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{what}: non-finite samples"
        );
        let score = truth.score(&gm, &x, 3);
        println!("zero SNR {what}: {score:?}");
        assert!(score.sw <= score.sw_bound(), "{what}: {score:?}");
    };
    for spec in [
        "ddpm",
        "ddim",
        "euler:karras=true",
        "heun:karras=true",
        "dpmpp-2m",
    ] {
        let cfg = SamplerConfig::parse(spec, 200).unwrap();
        check(spec, oracle_samples(&cfg, &gm, &s, 1000, 5));
    }
    // DPM-Solver++(2M) on a grid that starts at sigma = +inf itself.
    let ts = discrete_timesteps(Spacing::Trailing, 1000, 200, 0);
    let grid = discrete_grid(&s, &ts, 1.0);
    assert!(grid[0].sigma.is_infinite());
    let x = sample_dpmpp_2m(&gm, x_t(1000, 5), &grid, None, None);
    check("dpmpp-2m from sigma = inf", to_vec(&x));
}

#[test]
fn sliced_wasserstein_helper_is_a_distance() {
    // In 1-D every projection is +-1, so a shift by c costs exactly |c| (float64, 1e-12);
    // identical sets cost 0; unequal sizes use the CDF integral: {0, 2} vs {1} is 1.
    let a: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
    let b: Vec<f64> = a.iter().map(|x| x + 0.25).collect();
    assert!((metrics::sliced_wasserstein(&a, &b, 1, 4, 0) - 0.25).abs() < 1e-12);
    assert_eq!(metrics::sliced_wasserstein(&a, &a, 1, 4, 0), 0.0);
    assert!((metrics::sliced_wasserstein(&[0.0, 2.0], &[1.0], 1, 1, 0) - 1.0).abs() < 1e-12);
    // In 2-D, a shift s costs E|u . s| = 2|s|/pi over uniform directions; 64 projections
    // estimate it to ~10% (the spread of |cos| is 0.31 of its mean, / sqrt(64)).
    let a2: Vec<f64> = fresh(&GaussianMixture::toy_2d(), 500, 1);
    let b2: Vec<f64> = a2
        .chunks(2)
        .flat_map(|r| [r[0] + 0.3, r[1] - 0.4])
        .collect();
    let sw = metrics::sliced_wasserstein(&a2, &b2, 2, 64, 0);
    let want = 2.0 * 0.5 / std::f64::consts::PI;
    assert!((sw / want - 1.0).abs() < 0.12, "{sw} vs {want}");
}
