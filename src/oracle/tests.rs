//! The oracle against finite differences, SPEC §3's conversions and the VE/VP link (SPEC §6, §8).
use super::*;
use crate::tensor::from_rows;
use burn::tensor::DType;
use rand::SeedableRng;

fn points() -> Vec<f64> {
    vec![0.3, -0.2, -1.5, 0.7, 2.0, 2.5, 0.0, 0.0, -0.9, -0.5]
}

#[test]
fn score_is_the_gradient_of_the_log_density() {
    // Central differences with h = 1e-5 have truncation error ~h^2 |f'''| ~ 1e-9 and rounding
    // ~1e-16/h = 1e-11; tol 1e-6 relative leaves a wide margin while catching any formula error.
    let gm = GaussianMixture::toy_2d();
    let x = points();
    for sigma in [0.0, 0.05, 0.5, 3.0, 40.0] {
        let score = gm.score_ve(&x, sigma);
        for (r, row) in x.chunks(2).enumerate() {
            for i in 0..2 {
                let h = 1e-5;
                let (mut p, mut m) = (row.to_vec(), row.to_vec());
                p[i] += h;
                m[i] -= h;
                let fd = (gm.log_prob_ve(&p, sigma)[0] - gm.log_prob_ve(&m, sigma)[0]) / (2.0 * h);
                let got = score[r * 2 + i];
                assert!(
                    (fd - got).abs() < 1e-6 * (1.0 + got.abs()),
                    "sigma {sigma}: {fd} vs {got}"
                );
            }
        }
    }
}

#[test]
fn eps_is_minus_s_times_the_score_and_x0_follows() {
    // SPEC §3 in VP coordinates: eps = -s score; x0 = (x_t - s eps)/a (Tweedie). tol 1e-12.
    let gm = GaussianMixture::toy_2d();
    let x = points();
    for ab in [0.999, 0.6, 0.1, 1e-4] {
        let level = NoiseLevel::from_alpha_bar(ab, 0.0);
        let (a, s) = (level.alpha(), level.sigma_vp());
        for (row, p) in x.chunks(2).zip(gm.posterior_vp(&x, level)) {
            for i in 0..2 {
                assert!((p.eps[i] + s * p.score[i]).abs() < 1e-12);
                let x0 = (row[i] - s * p.eps[i]) / a;
                assert!((x0 - p.x0[i]).abs() < 1e-9 * (1.0 + x0.abs()));
            }
        }
    }
}

#[test]
fn ve_and_vp_views_agree() {
    // SPEC §6: x_VP = x_VE / sqrt(1 + sigma^2) = a x_VE, so
    // log p_VE(x) = log p_VP(a x) + D log a, score_VE(x) = a score_VP(a x), and both views give
    // the same x0 prediction. tol 1e-10 (float64 with different association orders).
    let gm = GaussianMixture::toy_2d();
    let x = points();
    for sigma in [0.01, 0.7, 5.0, 80.0] {
        let level = NoiseLevel { sigma, t: 0.0 };
        let a = level.alpha();
        let x_vp: Vec<f64> = x.iter().map(|v| a * v).collect();
        let ve = gm.log_prob_ve(&x, sigma);
        let vp = gm.posterior_vp(&x_vp, level);
        let score_ve = gm.score_ve(&x, sigma);
        for (r, p) in vp.iter().enumerate() {
            assert!((ve[r] - (p.log_density + 2.0 * a.ln())).abs() < 1e-10 * (1.0 + ve[r].abs()));
            for i in 0..2 {
                assert!(
                    (score_ve[2 * r + i] - a * p.score[i]).abs() < 1e-10 * (1.0 + p.score[i].abs())
                );
                // Tweedie in VE: x0 = x + sigma^2 score_VE.
                let x0_ve = x[2 * r + i] + sigma * sigma * score_ve[2 * r + i];
                assert!((x0_ve - p.x0[i]).abs() < 1e-8 * (1.0 + x0_ve.abs()));
            }
        }
    }
}

#[test]
fn the_endpoints_are_exact() {
    // sigma = inf: p_T = N(0, I), so eps = x_t and x0_hat = the mixture mean. sigma = 0: the
    // clean mixture density, and x0_hat = x_t.
    let gm = GaussianMixture::toy_2d();
    let x = points();
    let inf = gm.posterior_vp(
        &x,
        NoiseLevel {
            sigma: f64::INFINITY,
            t: 0.0,
        },
    );
    let mean = gm.mean();
    for (row, p) in x.chunks(2).zip(&inf) {
        let logn = -0.5 * (row[0] * row[0] + row[1] * row[1]) - (2.0 * PI).ln();
        assert!((p.log_density - logn).abs() < 1e-12);
        for i in 0..2 {
            assert!((p.eps[i] - row[i]).abs() < 1e-12 && (p.x0[i] - mean[i]).abs() < 1e-12);
        }
    }
    let clean = gm.posterior_vp(&x, NoiseLevel::clean());
    for (row, p) in x.chunks(2).zip(&clean) {
        assert!((p.x0[0] - row[0]).abs() < 1e-12 && (p.x0[1] - row[1]).abs() < 1e-12);
    }
}

#[test]
fn denoiser_batches_mixed_levels_like_single_calls() {
    let gm = GaussianMixture::toy_2d();
    let x = points();
    let dev = crate::device::cpu();
    let xt = from_rows(x.clone(), 5, 2, &dev, DType::F64);
    let levels: Vec<NoiseLevel> = [0.1, 1.0, 0.1, 5.0, 1.0]
        .iter()
        .map(|&s| NoiseLevel { sigma: s, t: 0.0 })
        .collect();
    let out = to_vec(&gm.denoise(&xt, &levels, None).x0);
    for (r, lvl) in levels.iter().enumerate() {
        let p = &gm.posterior_vp(&x[2 * r..2 * r + 2], *lvl)[0];
        assert_eq!(&out[2 * r..2 * r + 2], &p.x0[..]);
    }
}

#[test]
fn samples_have_the_mixture_moments() {
    // 40000 draws: the mean's standard error is below 0.006 per coordinate; bound 0.03 (5 s.e.).
    let gm = GaussianMixture::toy_2d();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let x = gm.sample(40000, &mut rng);
    let m = gm.mean();
    for i in 0..2 {
        let got = x.iter().skip(i).step_by(2).sum::<f64>() / 40000.0;
        assert!((got - m[i]).abs() < 0.03, "dim {i}: {got} vs {}", m[i]);
    }
    // And the density integrates to 1 on a grid (tol 1e-3: grid step 0.02 over [-5, 5]^2).
    let h = 0.02;
    let grid: Vec<f64> = (0..500)
        .flat_map(|i| (0..500).flat_map(move |j| [-5.0 + h * i as f64, -5.0 + h * j as f64]))
        .collect();
    let mass: f64 = gm.log_prob(&grid).iter().map(|l| l.exp() * h * h).sum();
    assert!((mass - 1.0).abs() < 1e-3, "mass {mass}");
}

#[test]
fn invalid_mixtures_are_errors() {
    let bad_cov = GaussianMixture::new(
        vec![1.0],
        vec![vec![0.0, 0.0]],
        vec![Covariance::Full(vec![1.0, 2.0, 2.0, 1.0])],
    );
    assert!(bad_cov
        .unwrap_err()
        .to_string()
        .contains("positive definite"));
    assert!(GaussianMixture::new(
        vec![-1.0],
        vec![vec![0.0]],
        vec![Covariance::Diag(vec![1.0])]
    )
    .is_err());
    assert!(GaussianMixture::new(
        vec![1.0],
        vec![vec![0.0, 1.0]],
        vec![Covariance::Diag(vec![1.0])]
    )
    .is_err());
}

#[test]
fn score_hessian_is_the_jacobian_of_the_score() {
    // Central differences of score_ve with h = 1e-5: truncation ~h^2 (third derivative of the
    // score) ~ 1e-9, rounding ~1e-16/h = 1e-11 times the score scale; tol 1e-5 relative catches
    // any formula error.
    let gm = GaussianMixture::toy_2d();
    let x = points();
    for sigma in [0.0, 0.05, 0.5, 3.0] {
        let h_all = gm.score_hessian_ve(&x, sigma);
        for (r, row) in x.chunks(2).enumerate() {
            for j in 0..2 {
                let h = 1e-5;
                let (mut p, mut m) = (row.to_vec(), row.to_vec());
                p[j] += h;
                m[j] -= h;
                let (sp, sm) = (gm.score_ve(&p, sigma), gm.score_ve(&m, sigma));
                for i in 0..2 {
                    let fd = (sp[i] - sm[i]) / (2.0 * h);
                    let got = h_all[r * 4 + i * 2 + j];
                    assert!(
                        (fd - got).abs() < 1e-5 * (1.0 + got.abs()),
                        "sigma {sigma} row {r} ({i},{j}): fd {fd} vs {got}"
                    );
                }
            }
        }
    }
}

#[test]
fn scaling_follows_the_change_of_variables() {
    // y = c x has density p_x(y / c) / c^D: log p_y(c x) = log p_x(x) - D ln c (tol 1e-12,
    // the same float64 formula evaluated on rescaled factors).
    let gm = GaussianMixture::toy_2d();
    let half = gm.scaled(0.5);
    let x = points();
    let y: Vec<f64> = x.iter().map(|v| 0.5 * v).collect();
    for (lx, ly) in gm.log_prob(&x).iter().zip(half.log_prob(&y)) {
        assert!(
            (ly - (lx - 2.0 * 0.5f64.ln())).abs() < 1e-12,
            "{ly} vs {lx}"
        );
    }
}
