//! mu_theta from every parameterisation (SPEC §3) and x0 thresholding.
use super::*;
use crate::forward::{q_posterior_mean, q_sample};
use crate::prediction::{target, PredictionType};
use crate::rng::SampleRng;
use crate::schedule::ScheduleConfig;
use crate::tensor::{from_rows, to_vec};
use burn::tensor::DType;

#[test]
fn mu_theta_from_any_prediction_is_the_posterior_mean() {
    // A perfect prediction of any type must give mu_theta = mu_tilde(x_t, x_0) (SPEC §2-3):
    // tol 1e-9 relative, float64 conversions with a >= 0.08 and s >= 0.01.
    let s = ScheduleConfig::default().build().unwrap();
    let dev = crate::device::cpu();
    let mut rng = SampleRng::new(4, 0, 3);
    let x0 = from_rows(rng.normal(5), 3, 5, &dev, DType::F64);
    let eps = from_rows(rng.normal(5), 3, 5, &dev, DType::F64);
    for t in [1usize, 40, 600, 999] {
        let x_t = q_sample(&s, &x0, &[t], &eps);
        let want = to_vec(&q_posterior_mean(&s, &x0, &x_t, &[t]));
        let (a, sv) = ([s.sqrt_alpha_bar[t]], [s.sqrt_one_minus_alpha_bar[t]]);
        for p in [
            PredictionType::Eps,
            PredictionType::X0,
            PredictionType::V,
            PredictionType::Score,
        ] {
            let out = target(p, &x0, &eps, &a, &sv);
            let (x0_hat, _) = crate::prediction::x0_and_eps(p, &out, &x_t, &a, &sv);
            let (mean, _) = ddpm_mean_variance(
                &x_t,
                &x0_hat,
                None,
                s.alpha_bar[t],
                s.alpha_bar_prev(t),
                VarianceType::FixedSmall,
                None,
            )
            .unwrap();
            for (g, w) in to_vec(&mean).iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-9 * (1.0 + w.abs()),
                    "t={t} {p:?}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn dynamic_thresholding_matches_a_brute_force_quantile() {
    // Per row: s = clamp(quantile_0.9(|x|), 1, 3) by numpy's linear rule, then clamp and divide.
    let dev = crate::device::cpu();
    let rows = [
        vec![0.1, -0.2, 0.3, 0.05, 0.0], // quantile < 1: s = 1, values unchanged
        vec![4.0, -2.0, 1.5, -0.5, 2.5], // s inside (1, 3)
        vec![10.0, -9.0, 8.0, 7.0, -12.0], // s clamped at 3
    ];
    let x = from_rows(rows.concat(), 3, 5, &dev, DType::F64);
    let clip = X0Clip::Dynamic {
        ratio: 0.9,
        max_value: 3.0,
    };
    let got = to_vec(&clip.apply(x));
    for (r, row) in rows.iter().enumerate() {
        let mut abs: Vec<f64> = row.iter().map(|v| v.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let pos = 0.9 * 4.0;
        let q = abs[3] + (pos - 3.0) * (abs[4] - abs[3]);
        let s = q.clamp(1.0, 3.0);
        for (i, v) in row.iter().enumerate() {
            assert!((got[r * 5 + i] - v.clamp(-s, s) / s).abs() < 1e-12);
        }
    }
}

#[test]
fn dynamic_thresholding_with_max_value_below_one_uses_max_value() {
    // torch.clamp(q, min=1, max=s) is s when s < 1 (max wins): every row is clamped to
    // [-0.5, 0.5] and divided by 0.5, whatever its quantile (exact: one clamp, one division).
    let dev = crate::device::cpu();
    let rows = [vec![0.1, -0.2, 0.3, 0.05], vec![4.0, -2.0, 0.4, -0.6]];
    let x = from_rows(rows.concat(), 2, 4, &dev, DType::F64);
    let clip = X0Clip::Dynamic {
        ratio: 0.9,
        max_value: 0.5,
    };
    let got = to_vec(&clip.apply(x));
    let want: Vec<f64> = rows
        .concat()
        .iter()
        .map(|v| v.clamp(-0.5, 0.5) / 0.5)
        .collect();
    assert_eq!(got, want);
}
