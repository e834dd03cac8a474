//! Classifier-free guidance under every sampler (SPEC §5): on a mixture whose components are
//! the classes, the conditional oracle is exact, so w = 0, 1 and an extrapolating w have
//! closed forms.

use super::*;

/// A 1-D mixture of two classes, N(-1, 0.09) (weight 0.6) and N(1.5, 0.25).
fn two_classes() -> ClassConditional {
    ClassConditional::new(
        GaussianMixture::new(
            vec![0.6, 0.4],
            vec![vec![-1.0], vec![1.5]],
            vec![Covariance::Diag(vec![0.09]), Covariance::Diag(vec![0.25])],
        )
        .unwrap(),
    )
}

/// Classifier-free guidance on [`two_classes`] written out by hand (SPEC §5, §8): per
/// component, C_k = a^2 v_k + s^2 and E[x_0 | x_t, k] = m_k + a v_k (x_t - a m_k) / C_k; the
/// unconditional x0 mixes them by p(k | x_t) ~ w_k N(x_t; a m_k, C_k); guided
/// x0 = x0_uncond + w (x0_class - x0_uncond), eps = (x_t - a x0) / s.
struct HandGuided {
    label: usize,
    w: f64,
}

impl Denoiser for HandGuided {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], _: Option<&[i64]>) -> Denoised {
        let (weights, means, vars) = ([0.6, 0.4], [-1.0, 1.5], [0.09, 0.25]);
        let x = to_vec(x_t);
        let (mut x0, mut eps) = (Vec::new(), Vec::new());
        for (i, &x) in x.iter().enumerate() {
            let level = levels[if levels.len() == 1 { 0 } else { i }];
            let (a, s) = (level.alpha(), level.sigma_vp());
            let c: Vec<f64> = vars.iter().map(|v| a * a * v + s * s).collect();
            let x0_k: Vec<f64> = (0..2)
                .map(|k| means[k] + a * vars[k] * (x - a * means[k]) / c[k])
                .collect();
            let lik: Vec<f64> = (0..2)
                .map(|k| {
                    weights[k] * (-(x - a * means[k]).powi(2) / (2.0 * c[k])).exp() / c[k].sqrt()
                })
                .collect();
            let uncond = (lik[0] * x0_k[0] + lik[1] * x0_k[1]) / (lik[0] + lik[1]);
            let guided = uncond + self.w * (x0_k[self.label] - uncond);
            x0.push(guided);
            eps.push((x - a * guided) / s);
        }
        Denoised {
            x0: from_rows_like(x0, x_t),
            eps: from_rows_like(eps, x_t),
            variance_output: None,
        }
    }
}

#[test]
fn guidance_under_every_sampler_matches_its_closed_form() {
    // Classifier-free guidance on a label-dependent oracle (the classes are the mixture's
    // components, so cond and uncond are exact and differ): under every sampler, the guided run
    // at w = 0 is the unconditional run, at w = 1 the run of the class's own Gaussian, and at
    // an extrapolating w = 3 the run of the hand-written closed form [`HandGuided`]. Tolerance
    // 1e-9 (absolute, samples of scale ~1): the paths differ only by rounding (uncond + w (cond
    // - uncond) against cond itself; the oracle's Cholesky against the scalar formulas),
    // amplified by at most a few steps of O(1) Lipschitz maps.
    let (oracle, s) = (two_classes(), linear());
    let dev = diffuse::device::cpu();
    let labels = [1i64, 0, 1, 0];
    let close = |a: &Tensor<2>, b: &Tensor<2>| {
        to_vec(a)
            .iter()
            .zip(to_vec(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    for spec in SPECS {
        let cfg = SamplerConfig::parse(spec, 6).unwrap();
        let run = |den: &dyn Denoiser, labels: Option<&[i64]>| {
            sample(&cfg, den, &s, 4, 1, &dev, DType::F64, 3, 0, labels, None).unwrap()
        };
        let guided = |w: f64| {
            let g = Guided {
                inner: &oracle,
                guidance_scale: w,
            };
            run(&g, Some(&labels))
        };
        let uncond = run(&oracle.mixture, None);
        let err = close(&guided(0.0), &uncond);
        assert!(err < 1e-9, "{spec}: w = 0 vs unconditional: {err:e}");
        // w = 1: each row follows its class alone (rows are independent streams, so the
        // class-k rows of a class-k-only run are the reference).
        for class in [0i64, 1] {
            let alone = run(oracle.class(class), None);
            let (g, a) = (to_vec(&guided(1.0)), to_vec(&alone));
            for (i, _) in labels.iter().enumerate().filter(|(_, &l)| l == class) {
                assert!(
                    (g[i] - a[i]).abs() < 1e-9,
                    "{spec}: w = 1 row {i}: {} vs {}",
                    g[i],
                    a[i]
                );
            }
        }
        for class in [0usize, 1] {
            let hand = run(
                &HandGuided {
                    label: class,
                    w: 3.0,
                },
                None,
            );
            let (g, h) = (to_vec(&guided(3.0)), to_vec(&hand));
            for (i, _) in labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == class as i64)
            {
                assert!(
                    (g[i] - h[i]).abs() < 1e-9,
                    "{spec}: w = 3 row {i}: {} vs {}",
                    g[i],
                    h[i]
                );
            }
        }
    }
}

#[test]
fn conditional_oracle_samples_its_class() {
    // w = 1 is the conditional model: 2000 DDIM samples (200 steps; one Gaussian, so DDIM's
    // bias is far below the noise) of class 1 have its mean 1.5 and variance 0.25 within 4
    // standard errors (se of the mean sqrt(0.25/2000) = 0.0112; of the variance
    // 0.25 sqrt(2/1999) = 0.0079).
    let (oracle, s) = (two_classes(), linear());
    let g = Guided {
        inner: &oracle,
        guidance_scale: 1.0,
    };
    let n = 2000;
    let labels = vec![1i64; n];
    let cfg = SamplerConfig::parse("ddim", 200).unwrap();
    let dev = diffuse::device::cpu();
    let x = to_vec(
        &sample(
            &cfg,
            &g,
            &s,
            n,
            1,
            &dev,
            DType::F64,
            8,
            0,
            Some(&labels),
            None,
        )
        .unwrap(),
    );
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    assert!((mean - 1.5).abs() < 4.0 * 0.0112, "mean {mean}");
    assert!((var - 0.25).abs() < 4.0 * 0.0079, "variance {var}");
}
