//! The score-SDE stack on the exact-score oracle (SPEC §6, §8): PF-ODE log-likelihoods against
//! the mixture's true density (exact and Hutchinson divergences, per SDE, with NFE), EM / PC /
//! PF-ODE sample quality against the number of steps, and the discrete VLB against the PF-ODE
//! NLL. Every number is seeded; `cargo run --release --example sde_nll`.

use burn::tensor::{DType, Tensor};
use diffuse::likelihood::{bits_per_dim, mean_ci95, pf_ode_log_likelihood, vlb};
use diffuse::oracle::{Covariance, GaussianMixture};
use diffuse::rng::SampleRng;
use diffuse::sde::solvers::{
    sample_euler_maruyama, sample_ode, sample_pc, time_grid, Langevin, OdeOptions, PcOptions,
    Predictor,
};
use diffuse::sde::{
    DenoiserScore, Divergence, OracleScore, Probe, Sde, SubVpSde, TimeInput, VeSde, VpSde,
};
use diffuse::tensor::{from_rows, to_vec};
use diffuse::variance::VarianceType;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;

const SEED: u64 = 2026;

fn batch(values: Vec<f64>, d: usize) -> Tensor<2> {
    let n = values.len() / d;
    from_rows(values, n, d, &diffuse::device::cpu(), DType::F64)
}

/// Sliced Wasserstein-1 over `k` random directions (seed 99) between two 2-D sets.
fn sliced_w1(a: &[f64], b: &[f64], k: usize) -> f64 {
    diffuse::eval::sliced_wasserstein(a, b, 2, k, 99)
}

fn true_log_p<S: Sde + ?Sized>(gm: &GaussianMixture, sde: &S, x: &[f64], t: f64) -> Vec<f64> {
    let m = sde.marginal(t);
    let y: Vec<f64> = x.iter().map(|v| v / m.mean_coeff).collect();
    gm.log_prob_ve(&y, m.sigma())
        .into_iter()
        .map(|l| l - gm.dim as f64 * m.mean_coeff.ln())
        .collect()
}

fn nll_table(gm: &GaussianMixture) {
    let n = 200;
    let xs = gm.sample(n, &mut ChaCha8Rng::seed_from_u64(SEED));
    let x = batch(xs.clone(), 2);
    println!("## PF-ODE log-likelihood of {n} mixture points (seed {SEED}), nats per sample");
    println!("| SDE | divergence | rtol=atol | true mean log p | PF-ODE mean log p | mean err ± 95% CI | RMS err | max abs err | max abs err, true prior | NFE |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let sdes: Vec<Box<dyn Sde>> = vec![
        Box::new(VpSde::default()),
        Box::new(SubVpSde::default()),
        Box::new(VeSde::default()),
    ];
    for sde in &sdes {
        let score = OracleScore {
            mixture: gm,
            sde: &**sde,
        };
        let want = true_log_p(gm, &**sde, &xs, 1e-5);
        let cases: Vec<(String, Divergence, f64)> = vec![
            ("exact".into(), Divergence::Exact, 1e-5),
            ("exact".into(), Divergence::Exact, 1e-7),
            (
                "Hutchinson Rademacher x4".into(),
                Divergence::hutchinson(Probe::Rademacher, 4, &x, SEED),
                1e-5,
            ),
            (
                "Hutchinson Gaussian x4".into(),
                Divergence::hutchinson(Probe::Gaussian, 4, &x, SEED),
                1e-5,
            ),
        ];
        for (name, div, tol) in cases {
            let opts = OdeOptions {
                rtol: tol,
                atol: tol,
                eps: 1e-5,
            };
            let res = pf_ode_log_likelihood(&**sde, &score, &x, &div, &opts)
                .expect("the PF-ODE integrates");
            let errs: Vec<f64> = res.log_p.iter().zip(&want).map(|(a, b)| a - b).collect();
            let (mean_err, ci) = mean_ci95(&errs);
            let max = errs.iter().map(|e| e.abs()).fold(0.0, f64::max);
            let rms = (errs.iter().map(|e| e * e).sum::<f64>() / n as f64).sqrt();
            // The same integral with the exact p_1 in place of the N(0, prior_std^2 I) prior:
            // what is left is the solver's and the divergence estimator's error.
            let true_prior = true_log_p(gm, &**sde, &res.z, 1.0);
            let solver_max = (0..n)
                .map(|i| (true_prior[i] + res.delta_log_p[i] - want[i]).abs())
                .fold(0.0, f64::max);
            println!(
                "| {} | {name} | {tol:.0e} | {:.4} | {:.4} | {mean_err:+.4} ± {ci:.4} | {rms:.2e} | {max:.2e} | {solver_max:.2e} | {} |",
                sde.name(),
                want.iter().sum::<f64>() / n as f64,
                res.log_p.iter().sum::<f64>() / n as f64,
                res.stats.nfe,
            );
        }
    }
}

/// |mean log p(samples) - mean log p(data)| and sliced W1 to fresh data.
fn quality(gm: &GaussianMixture, samples: &[f64]) -> (f64, f64) {
    let n = samples.len() / 2;
    let data = gm.sample(n, &mut ChaCha8Rng::seed_from_u64(SEED + 1));
    let lp = |x: &[f64]| gm.log_prob(x).iter().sum::<f64>() / n as f64;
    (lp(samples) - lp(&data), sliced_w1(samples, &data, 128))
}

fn sampling_table(gm: &GaussianMixture) {
    let n = 2000;
    println!();
    println!("## Sample quality, {n} samples (noise seed {SEED}); Δ log p = mean log p(samples) - mean log p(fresh data), SW1 = sliced Wasserstein-1 (128 directions) to fresh data");
    println!("| SDE | sampler | steps | NFE | Δ log p (nats) | SW1 |");
    println!("|---|---|---|---|---|---|");
    // The noise floor: another set of fresh data in place of samples.
    let other = gm.sample(n, &mut ChaCha8Rng::seed_from_u64(SEED + 2));
    let (dlp, sw) = quality(gm, &other);
    println!("| - | fresh data (noise floor) | - | - | {dlp:+.4} | {sw:.4} |");
    let sdes: Vec<(Box<dyn Sde>, f64)> = vec![
        (Box::new(VpSde::default()), 1e-3),
        (Box::new(SubVpSde::default()), 1e-3),
        (Box::new(VeSde::default()), 1e-5),
    ];
    for (sde, eps) in &sdes {
        let score = DenoiserScore {
            denoiser: gm,
            sde: &**sde,
            time: TimeInput::Continuous,
        };
        let like = batch(vec![0.0; 2 * n], 2);
        let pc = PcOptions {
            predictor: Predictor::ReverseDiffusion,
            corrector: Some(Langevin {
                snr: 0.16,
                n_steps: 1,
            }),
        };
        let em_pc = PcOptions {
            predictor: Predictor::EulerMaruyama,
            corrector: pc.corrector,
        };
        for steps in [10usize, 100, 1000] {
            let mut rows: Vec<(&str, usize, usize, Vec<f64>)> = Vec::new();
            for (name, k) in [("EM", steps), ("EM (equal NFE to PC)", 2 * steps)] {
                let mut rng = SampleRng::new(SEED, 0, n);
                let x1 = sde.prior_sample(&like, &mut rng);
                let grid = time_grid(k, *eps);
                let x = sample_euler_maruyama(&**sde, &score, x1, &grid, &mut rng, None);
                rows.push((name, k, k, to_vec(&x)));
            }
            for (name, opts) in [
                ("PC reverse-diffusion + Langevin", pc),
                ("PC EM + Langevin", em_pc),
            ] {
                let mut rng = SampleRng::new(SEED, 0, n);
                let x1 = sde.prior_sample(&like, &mut rng);
                let grid = time_grid(steps, *eps);
                let x = sample_pc(&**sde, &score, x1, &grid, &opts, &mut rng, None);
                rows.push((name, steps, steps * opts.nfe_per_step(), to_vec(&x)));
            }
            for (name, k, nfe, x) in rows {
                let (dlp, sw) = quality(gm, &x);
                println!(
                    "| {} | {name} | {k} | {nfe} | {dlp:+.4} | {sw:.4} |",
                    sde.name()
                );
            }
        }
        let mut rng = SampleRng::new(SEED, 0, n);
        let x1 = sde.prior_sample(&like, &mut rng);
        let (x, stats) = sample_ode(
            &**sde,
            &score,
            x1,
            &OdeOptions {
                rtol: 1e-5,
                atol: 1e-5,
                eps: *eps,
            },
        )
        .expect("the oracle's ODE stays finite");
        let (dlp, sw) = quality(gm, &to_vec(&x));
        println!(
            "| {} | PF-ODE RK45 (rtol=atol=1e-5) | {} accepted | {} | {dlp:+.4} | {sw:.4} |",
            sde.name(),
            stats.accepted,
            stats.nfe
        );
    }
}

fn vlb_table() {
    // The toy mixture scaled by 1/2 so that it lies in [-1, 1] like 8-bit data.
    let gm = GaussianMixture::toy_2d().scaled(0.5);
    let n = 200;
    // 8-bit data: quantise mixture draws to the 256 levels k/127.5 - 1.
    let xs: Vec<f64> = gm
        .sample(n, &mut ChaCha8Rng::seed_from_u64(SEED))
        .into_iter()
        .map(|x| ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) / 127.5 - 1.0)
        .collect();
    let x = batch(xs.clone(), 2);
    let vp = VpSde::default();
    let schedule = vp.discrete_schedule(1000).expect("valid");
    let mut rng = SampleRng::new(SEED, 0, n);
    let terms = vlb(&gm, &schedule, VarianceType::FixedSmall, &x, &mut rng);
    let (vlb_bpd, vlb_ci) = mean_ci95(&terms.bits_per_dim());
    let score = OracleScore {
        mixture: &gm,
        sde: &vp,
    };
    let res = pf_ode_log_likelihood(&vp, &score, &x, &Divergence::Exact, &OdeOptions::default())
        .expect("the PF-ODE integrates");
    let ode_bpd: Vec<f64> = res
        .log_p
        .iter()
        .map(|l| bits_per_dim(*l, 2, true))
        .collect();
    let (ode, ode_ci) = mean_ci95(&ode_bpd);
    let true_bpd: Vec<f64> = gm
        .log_prob(&xs)
        .iter()
        .map(|l| bits_per_dim(*l, 2, true))
        .collect();
    let (tru, _) = mean_ci95(&true_bpd);
    println!();
    println!("## Discrete VLB vs PF-ODE NLL, mixture scaled into [-1, 1], {n} 8-bit points (seed {SEED}), VP with beta_i = beta(i/1000)/1000, fixed_small");
    println!("| quantity | bits/dim |");
    println!("|---|---|");
    println!("| L_vlb (T = 1000) | {vlb_bpd:.4} ± {vlb_ci:.4} |");
    let d_ln2 = 2.0 * std::f64::consts::LN_2;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "|   of which L_T / sum L_(t-1) / L_0 | {:.5} / {:.4} / {:.4} |",
        mean(&terms.prior) / d_ln2,
        mean(&terms.kl) / d_ln2,
        mean(&terms.decoder) / d_ln2
    );
    println!(
        "| PF-ODE NLL + 7 (exact divergence, NFE {}) | {ode:.4} ± {ode_ci:.4} |",
        res.stats.nfe
    );
    println!("| true -log2 p(x) / D + 7 | {tru:.4} |");
}

/// Hutchinson against the exact divergence in D = 16 (a 3-component diagonal mixture), VP.
fn high_dim_table() {
    let d = 16;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    let means: Vec<Vec<f64>> = (0..3).map(|_| (0..d).map(|_| normal()).collect()).collect();
    let covs = (0..3)
        .map(|k| Covariance::Diag((0..d).map(|i| 0.05 + 0.02 * ((i + k) % 5) as f64).collect()))
        .collect();
    let gm = GaussianMixture::new(vec![0.5, 0.3, 0.2], means, covs).expect("valid");
    let n = 100;
    let xs = gm.sample(n, &mut ChaCha8Rng::seed_from_u64(SEED + 3));
    let x = batch(xs.clone(), d);
    let sde = VpSde::default();
    let score = OracleScore {
        mixture: &gm,
        sde: &sde,
    };
    let want = true_log_p(&gm, &sde, &xs, 1e-5);
    println!();
    println!("## Hutchinson vs exact divergence in D = {d} (3-component diagonal mixture, {n} points, seed {SEED}), VP, rtol=atol=1e-5");
    println!("| divergence | mean err ± 95% CI (nats) | RMS err | NFE |");
    println!("|---|---|---|---|");
    let cases: Vec<(&str, Divergence)> = vec![
        ("exact", Divergence::Exact),
        (
            "Rademacher x1",
            Divergence::hutchinson(Probe::Rademacher, 1, &x, SEED),
        ),
        (
            "Rademacher x4",
            Divergence::hutchinson(Probe::Rademacher, 4, &x, SEED),
        ),
        (
            "Gaussian x4",
            Divergence::hutchinson(Probe::Gaussian, 4, &x, SEED),
        ),
    ];
    for (name, div) in cases {
        let res = pf_ode_log_likelihood(&sde, &score, &x, &div, &OdeOptions::default())
            .expect("the PF-ODE integrates");
        let errs: Vec<f64> = res.log_p.iter().zip(&want).map(|(a, b)| a - b).collect();
        let (mean, ci) = mean_ci95(&errs);
        let rms = (errs.iter().map(|e| e * e).sum::<f64>() / n as f64).sqrt();
        println!(
            "| {name} | {mean:+.4} ± {ci:.4} | {rms:.3e} | {} |",
            res.stats.nfe
        );
    }
}

fn main() {
    let gm = GaussianMixture::toy_2d();
    let start = Instant::now();
    nll_table(&gm);
    high_dim_table();
    sampling_table(&gm);
    vlb_table();
    println!();
    println!("(total {:.0} s)", start.elapsed().as_secs_f64());
}
