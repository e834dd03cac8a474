//! Unit checks of the SDEs (SPEC §6): marginals against Euler–Maruyama simulation, the discrete
//! links, the score adapters' conversions and the autodiff divergence.
use super::*;
use crate::denoiser::Network;
use crate::oracle::GaussianMixture;
use crate::schedule::ScheduleConfig;
use crate::tensor::{from_rows, to_vec};
use burn::tensor::DType;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Simulates the forward SDE from x(0) = x0 (+ sigma_min noise for VE, see `ve.rs`) to each of
/// `times` with `steps_per_unit` Euler–Maruyama steps per unit time; returns (mean, variance)
/// of `paths` scalar paths at each time.
fn simulate<S: Sde>(sde: &S, x0: f64, times: &[f64], paths: usize) -> Vec<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let start_std = if sde.name() == "ve" {
        sde.marginal(0.0).std
    } else {
        0.0
    };
    let dt = 1.0 / 4000.0;
    let mut x: Vec<f64> = (0..paths)
        .map(|_| {
            x0 + start_std
                * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)
        })
        .collect();
    let mut t = 0.0;
    let mut out = Vec::new();
    for &target in times {
        while t < target - 1e-12 {
            let (c, g) = (sde.drift_coeff(t), sde.diffusion(t));
            for v in x.iter_mut() {
                let z: f64 = StandardNormal.sample(&mut rng);
                *v += c * *v * dt + g * dt.sqrt() * z;
            }
            t += dt;
        }
        let n = paths as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        out.push((mean, var));
    }
    out
}

fn check_marginal<S: Sde>(sde: &S) {
    // 20000 paths: the mean's standard error is s/141, the variance's s^2 sqrt(2/20000) =
    // 0.01 s^2; bounds of 5 standard errors. EM bias at dt = 1/4000 is O(dt): <= 0.3% of the
    // variance for VE's fastest growth (rate 2 ln(5000) = 17 per unit time, bias ~ rate dt / 2),
    // added to the variance bound.
    let x0 = 1.5;
    let times = [0.1, 0.5, 1.0];
    let sim = simulate(sde, x0, &times, 20_000);
    for (&t, &(mean, var)) in times.iter().zip(&sim) {
        let m = sde.marginal(t);
        let (want_mean, want_var) = (m.mean_coeff * x0, m.std * m.std);
        let se_mean = m.std / (20_000f64).sqrt();
        assert!(
            (mean - want_mean).abs() < 5.0 * se_mean + 1e-3 * want_mean.abs(),
            "{} t = {t}: mean {mean} vs {want_mean}",
            sde.name()
        );
        assert!(
            (var - want_var).abs() < (5.0 * (2.0f64 / 20_000.0).sqrt() + 0.003) * want_var,
            "{} t = {t}: var {var} vs {want_var}",
            sde.name()
        );
    }
}

#[test]
fn marginals_match_euler_maruyama_simulation() {
    check_marginal(&VpSde::default());
    check_marginal(&SubVpSde::default());
    check_marginal(&VeSde::default());
}

#[test]
fn vp_discrete_link_is_ddpm_linear_schedule() {
    // SPEC §6: beta_i = beta(i/N)/N. Against DDPM's linspace(1e-4, 0.02, 1000) the difference is
    // 0.0199 (i/N - (i-1)/(N-1)) <= 0.0199/N exactly (linear interpolation on shifted grids).
    let vp = VpSde::default();
    let n = 1000;
    let disc = vp.discrete_schedule(n).unwrap();
    let ddpm = ScheduleConfig::default().build().unwrap();
    for i in 0..n {
        assert!((disc.beta[i] - ddpm.beta[i]).abs() <= 0.0199 / n as f64 + 1e-15);
        // The SDE's own discretisation at t = i/N, dt = 1/N has beta_i = 1 - exp(-int beta):
        // int_{t-1/N}^t beta = beta(t)/N - 19.9/(2N^2) and 1 - e^{-x} = x - x^2/2 + ..., so it
        // is within 19.9/(2N^2) + beta_i^2/2 of the link; a^2 + b^2 = 1 up to rounding.
        let step = vp.discretize((i + 1) as f64 / n as f64, 1.0 / n as f64);
        let bound = 19.9 / (2.0 * (n * n) as f64) + disc.beta[i].powi(2) / 2.0 + 1e-15;
        assert!((step.b * step.b - disc.beta[i]).abs() <= bound, "i {i}");
        assert!((step.a * step.a + step.b * step.b - 1.0).abs() < 1e-14);
    }
    // alpha_bar_i vs the marginal m(i/N)^2: ln alpha_bar = -sum beta_j - sum beta_j^2/2 - ...
    // while 2 ln m = -int beta; the right Riemann sum exceeds the integral by <= 19.9/(2N) and
    // the higher terms are <= sum beta_j^2 (beta_j < 0.02), so that sum bounds the gap.
    let mut sum_sq = 0.0;
    for i in 0..n {
        sum_sq += disc.beta[i].powi(2);
        let t = (i + 1) as f64 / n as f64;
        let gap = disc.alpha_bar[i].ln() - 2.0 * vp.log_mean_coeff(t);
        assert!(
            gap.abs() <= 19.9 / (2.0 * n as f64) + sum_sq,
            "i {i}: {gap}"
        );
    }
}

#[test]
fn ve_discretisation_telescopes_to_the_marginal() {
    // sum_i (sigma_i^2 - sigma_{i-1}^2) + sigma_min^2 = sigma(1)^2 (tol: rounding of 100 terms).
    let ve = VeSde::default();
    let n = 100;
    let total: f64 = (1..=n)
        .map(|i| ve.discretize(i as f64 / n as f64, 1.0 / n as f64).b.powi(2))
        .sum();
    let want = ve.sigma(1.0).powi(2) - ve.sigma_min.powi(2);
    assert!((total - want).abs() < 1e-9 * want);
    assert!((ve.t_of_sigma(ve.sigma(0.37)) - 0.37).abs() < 1e-12);
}

#[test]
fn subvp_variance_is_below_vp_and_g_matches_its_marginal() {
    // d s^2/dt = 2 c(t) s^2 + g(t)^2 for a linear SDE (Särkkä & Solin 5.51); check sub-VP's g
    // against central differences of its marginal variance (h = 1e-6: error ~1e-10).
    let sub = SubVpSde::default();
    let vp = VpSde::default();
    for t in [0.01, 0.2, 0.5, 0.9] {
        let var = |t: f64| sub.marginal(t).std.powi(2);
        let h = 1e-6;
        let dvar = (var(t + h) - var(t - h)) / (2.0 * h);
        let g2 = dvar - 2.0 * sub.drift_coeff(t) * var(t);
        assert!(
            (g2 - sub.diffusion(t).powi(2)).abs() < 1e-6 * (1.0 + g2),
            "t {t}"
        );
        assert!(sub.marginal(t).std.powi(2) <= vp.marginal(t).std.powi(2));
        assert_eq!(sub.marginal(t).mean_coeff, vp.marginal(t).mean_coeff);
    }
}

fn batch(values: Vec<f64>, d: usize) -> burn::tensor::Tensor<2> {
    let n = values.len() / d;
    from_rows(values, n, d, &crate::device::cpu(), DType::F64)
}

#[test]
fn denoiser_score_equals_the_ve_oracle_score_under_every_sde() {
    // The oracle as a VP-coordinates denoiser, mapped through each SDE's marginal, must give the
    // closed-form VE score mapped the other way (SPEC §6 VE <-> VP). Both are exact float64
    // computations; tol 1e-8 relative allows the two routes' rounding (1/s up to 1e3 at small t).
    let gm = GaussianMixture::toy_2d();
    let x = batch(vec![0.3, -0.2, -1.5, 0.7, 2.0, 2.5, 0.0, 0.0], 2);
    let sdes: Vec<Box<dyn Sde>> = vec![
        Box::new(VpSde::default()),
        Box::new(SubVpSde::default()),
        Box::new(VeSde::default()),
    ];
    for sde in &sdes {
        let via_denoiser = DenoiserScore {
            denoiser: &gm,
            sde: &**sde,
            time: TimeInput::Continuous,
        };
        let closed = OracleScore {
            mixture: &gm,
            sde: &**sde,
        };
        for t in [1e-3, 0.1, 0.5, 1.0] {
            let m = sde.marginal(t);
            let xt = x.clone().mul_scalar(m.mean_coeff.hypot(m.std));
            let a = to_vec(&via_denoiser.score(&xt, t));
            let b = to_vec(&closed.score(&xt, t));
            for (a, b) in a.iter().zip(&b) {
                assert!(
                    (a - b).abs() < 1e-8 * (1.0 + b.abs()),
                    "{} t {t}: {a} vs {b}",
                    sde.name()
                );
            }
        }
    }
}

/// A differentiable score built from tensor ops: s(x) = tanh(x W) - k x, whose Jacobian
/// diagonal is (1 - tanh^2((x W)_i)) W_ii - k, so its divergence is known in closed form.
struct TanhScore {
    w: Vec<f64>,
    k: f64,
}

impl ScoreFn for TanhScore {
    fn score(&self, x: &burn::tensor::Tensor<2>, _t: f64) -> burn::tensor::Tensor<2> {
        let w = from_rows(self.w.clone(), 2, 2, &x.device(), x.dtype());
        x.clone().matmul(w).tanh() - x.clone().mul_scalar(self.k)
    }
}

#[test]
fn autodiff_divergence_is_exact_and_hutchinson_unbiased() {
    let f = TanhScore {
        w: vec![0.5, -1.0, 0.3, 0.8],
        k: 1.3,
    };
    let xs = vec![0.3, -0.2, -1.5, 0.7, 2.0, 2.5];
    let x = batch(xs.clone(), 2);
    let div = Divergence::Exact.score_divergence(&f, &x, 0.5);
    for (r, row) in xs.chunks(2).enumerate() {
        let xw = [
            row[0] * f.w[0] + row[1] * f.w[2],
            row[0] * f.w[1] + row[1] * f.w[3],
        ];
        let want = (1.0 - xw[0].tanh().powi(2)) * f.w[0] + (1.0 - xw[1].tanh().powi(2)) * f.w[3]
            - 2.0 * f.k;
        // Float64 autodiff vs the closed form: rounding only, tol 1e-12.
        assert!(
            (div[r] - want).abs() < 1e-12,
            "row {r}: {} vs {want}",
            div[r]
        );
    }
    // Hutchinson with many Gaussian probes: unbiased, standard error ~ ||J_offdiag||_F sqrt(2/k);
    // with 4000 probes and |J| <= 1.3 that is < 0.05; tol 0.1.
    let hutch = Divergence::hutchinson(Probe::Gaussian, 4000, &x, 3);
    let est = hutch.score_divergence(&f, &x, 0.5);
    for (e, d) in est.iter().zip(&div) {
        assert!((e - d).abs() < 0.1, "{e} vs {d}");
    }
    // Rademacher probes have v_i^2 = 1, so they recover the diagonal part exactly; only the
    // off-diagonal products add noise. A single probe is still a finite per-sample estimate.
    let one = Divergence::hutchinson(Probe::Rademacher, 1, &x, 4).score_divergence(&f, &x, 0.5);
    assert!(one.iter().all(|v| v.is_finite()));
}

#[test]
fn oracle_divergence_matches_autodiff_free_finite_differences() {
    // The closed-form oracle divergence vs central differences of its score (h = 1e-5, error
    // ~1e-9); tol 1e-5 relative.
    let gm = GaussianMixture::toy_2d();
    let sde = VpSde::default();
    let s = OracleScore {
        mixture: &gm,
        sde: &sde,
    };
    let xs = vec![0.3, -0.2, -1.0, 0.7];
    let x = batch(xs.clone(), 2);
    for t in [1e-4, 0.3, 0.9] {
        let div = s.divergence(&x, t);
        for (r, row) in xs.chunks(2).enumerate() {
            let mut fd = 0.0;
            for i in 0..2 {
                let h = 1e-5;
                let (mut p, mut m) = (row.to_vec(), row.to_vec());
                p[i] += h;
                m[i] -= h;
                let sp = to_vec(&s.score(&batch(p, 2), t));
                let sm = to_vec(&s.score(&batch(m, 2), t));
                fd += (sp[i] - sm[i]) / (2.0 * h);
            }
            assert!((fd - div[r]).abs() < 1e-5 * (1.0 + fd.abs()), "t {t}");
        }
    }
}

/// A "network" that outputs the exact score -x of N(0, I) data under VP (whose every marginal
/// is N(0, I)).
struct StandardNormalScoreNet;

impl Network for StandardNormalScoreNet {
    fn forward(
        &self,
        x: burn::tensor::Tensor<2>,
        _t: &[f64],
        _labels: Option<&[i64]>,
    ) -> burn::tensor::Tensor<2> {
        -x
    }
}

#[test]
fn dsm_loss_of_the_exact_score_is_its_closed_form() {
    // Data N(0, I), VP: s score + z = -s (m x0 + s z) + z = -s m x0 + m^2 z, so the loss is
    // D m^2 (s^2 + m^2) = D m^2 per sample. 20000 samples in D = 2: the loss is a mean of
    // weighted chi-square terms with relative sd sqrt(2/(D N)) = 0.007; tol 5% covers 5 sd.
    let model = NetworkScore {
        net: StandardNormalScoreNet,
        sde: VpSde::default(),
        output: ScoreOutput::Score,
        time: TimeInput::Continuous,
    };
    let n = 20_000;
    let mut rng = crate::rng::SampleRng::new(5, 0, n);
    let x0 = batch(rng.normal(2), 2);
    let z = batch(rng.normal(2), 2);
    for t in [0.05, 0.3] {
        let loss = to_vec(&dsm_loss(&model, &x0, &vec![t; n], &z).reshape([1, 1]))[0];
        let m = model.sde.marginal(t).mean_coeff;
        let want = 2.0 * m * m;
        assert!((loss / want - 1.0).abs() < 0.05, "t {t}: {loss} vs {want}");
    }
}

/// A discrete eps-"network" conditioned on a fractional code index: the oracle's exact eps at
/// the schedule's sigma for that index (what a perfectly trained DDPM eps-model outputs).
struct DiscreteOracleEpsNet<'a> {
    gm: &'a GaussianMixture,
    schedule: &'a crate::schedule::Schedule,
}

impl Network for DiscreteOracleEpsNet<'_> {
    fn forward(
        &self,
        x: burn::tensor::Tensor<2>,
        t: &[f64],
        _labels: Option<&[i64]>,
    ) -> burn::tensor::Tensor<2> {
        use crate::denoiser::{Denoiser, NoiseLevel};
        let levels: Vec<NoiseLevel> = t
            .iter()
            .map(|&t| NoiseLevel {
                sigma: self.schedule.sigma_at(t),
                t,
            })
            .collect();
        self.gm.denoise(&x, &levels, None).eps
    }
}

#[test]
fn discrete_eps_model_is_a_vp_score_through_spec_3() {
    // SPEC §3: score = -eps / sqrt(1 - alpha_bar). A discrete eps-model behind NetworkDenoiser,
    // given the fractional index of the same sigma (TimeInput::Discrete), must give the exact VP
    // score at the continuous times whose sigma is a table entry. Float64 exact; tol 1e-8.
    use crate::denoiser::{NetworkDenoiser, Parameterization};
    use crate::prediction::PredictionType;
    let gm = GaussianMixture::toy_2d();
    let vp = VpSde::default();
    let schedule = vp.discrete_schedule(1000).unwrap();
    let score = DenoiserScore {
        denoiser: NetworkDenoiser {
            net: DiscreteOracleEpsNet {
                gm: &gm,
                schedule: &schedule,
            },
            parameterization: Parameterization::Discrete {
                prediction: PredictionType::Eps,
                learned_variance: false,
            },
        },
        sde: vp,
        time: TimeInput::Discrete(Box::new(schedule.clone())),
    };
    let exact = OracleScore {
        mixture: &gm,
        sde: vp,
    };
    let x = batch(vec![0.3, -0.2, -1.5, 0.7, 0.0, 0.0], 2);
    for i in [0usize, 10, 500, 999] {
        let t = vp.t_of_sigma(schedule.sigma[i]);
        assert!((vp.marginal(t).sigma() / schedule.sigma[i] - 1.0).abs() < 1e-12);
        let a = to_vec(&score.score(&x, t));
        let b = to_vec(&exact.score(&x, t));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-8 * (1.0 + b.abs()), "i {i}: {a} vs {b}");
        }
    }
}
