//! Schedule tables against brute-force float64 computations (SPEC §1).
use super::*;

fn all_named() -> Vec<Schedule> {
    ["linear", "scaled_linear", "cosine", "sigmoid"]
        .iter()
        .map(|n| {
            ScheduleConfig {
                beta_schedule: BetaSchedule::from_name(n).unwrap(),
                ..Default::default()
            }
            .build()
            .unwrap()
        })
        .collect()
}

#[test]
fn alpha_bar_is_the_running_product_of_alphas() {
    // Brute force: recompute each prefix product from scratch. Both are float64 products of
    // the same numbers in the same order, so they agree to a few ulps (tol 1e-14 relative).
    for s in all_named() {
        for i in (0..s.len()).step_by(37) {
            let brute: f64 = s.beta[..=i].iter().map(|b| 1.0 - b).product();
            assert!((s.alpha_bar[i] - brute).abs() <= 1e-14 * brute.max(1e-300));
            assert!((s.alpha_bar_prev(i + 1) - brute).abs() <= 1e-14 * brute);
        }
        assert_eq!(s.alpha_bar_prev(0), 1.0);
    }
}

#[test]
fn derived_tables_match_their_definitions() {
    // Each table against its definition from alpha_bar in float64. 1 - alpha_bar is computed
    // without cancellation (expm1 of the summed ln(1 - beta)) while the naive 1 - alpha_bar
    // here loses ~1e-16 / (1 - alpha_bar) relative: up to ~1e-12 at t = 1 where
    // 1 - alpha_bar = 1e-4 (the sqrt, sigma, snr and log tables inherit it). The bound, 1e-11
    // relative, is that worst case with a 10x margin (measured 6.3e-13).
    for s in all_named() {
        for i in 0..s.len() {
            let ab = s.alpha_bar[i];
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-11 * b.abs().max(1e-300);
            assert!(close(s.sqrt_alpha_bar[i], ab.sqrt()), "sqrt_alpha_bar {i}");
            assert!(
                close(s.sqrt_one_minus_alpha_bar[i].powi(2), 1.0 - ab),
                "1 - ab {i}"
            );
            assert!(close(s.sigma[i], ((1.0 - ab) / ab).sqrt()), "sigma {i}");
            assert!(close(s.snr[i], ab / (1.0 - ab)), "snr {i}");
            assert!(close(s.log_snr[i].exp(), s.snr[i]), "log_snr {i}");
            assert!(
                close(s.log_one_minus_alpha_bar[i].exp(), 1.0 - ab),
                "log(1 - ab) {i}"
            );
        }
    }
}

#[test]
fn cosine_alpha_bar_follows_f_over_f0_until_the_clip() {
    // SPEC §1: alpha_bar_t = f(t)/f(0) wherever no beta was clipped at 0.999.
    let s = ScheduleConfig {
        beta_schedule: BetaSchedule::cosine(),
        ..Default::default()
    }
    .build()
    .unwrap();
    let f = |t: f64| (((t / 1000.0 + 0.008) / 1.008) * PI / 2.0).cos().powi(2);
    for i in 0..990 {
        let expect = f((i + 1) as f64) / f(0.0);
        assert!((s.alpha_bar[i] - expect).abs() <= 1e-12, "i = {i}");
    }
    assert_eq!(s.beta[999], 0.999, "the last beta is clipped");
    // Unlike an integer-division bug, the betas are spread over all steps.
    assert!(s.beta[..999].iter().all(|&b| b > 0.0 && b < 0.999));
}

#[test]
fn zero_terminal_snr_rescaling() {
    let base = ScheduleConfig {
        beta_schedule: BetaSchedule::scaled_linear(),
        ..Default::default()
    };
    let plain = base.build().unwrap();
    let z = ScheduleConfig {
        rescale_zero_terminal_snr: true,
        ..base
    }
    .build()
    .unwrap();
    // sqrt(alpha_bar_1) unchanged (1e-12: a shift-and-scale that maps it to itself).
    assert!((z.sqrt_alpha_bar[0] - plain.sqrt_alpha_bar[0]).abs() < 1e-12);
    assert_eq!(z.alpha_bar[999], 0.0);
    assert_eq!(z.beta[999], 1.0);
    assert_eq!(z.sigma[999], f64::INFINITY);
    assert_eq!(z.snr[999], 0.0);
    // Affine in sqrt(alpha_bar): (s - s_T) * s_1 / (s_1 - s_T) at every step.
    let (s1, st) = (plain.sqrt_alpha_bar[0], plain.sqrt_alpha_bar[999]);
    for i in (0..1000).step_by(50) {
        let expect = (plain.sqrt_alpha_bar[i] - st) * s1 / (s1 - st);
        assert!((z.sqrt_alpha_bar[i] - expect).abs() < 1e-12, "i = {i}");
    }
}

#[test]
fn invalid_schedules_are_named_errors() {
    let build = |betas: Vec<f64>| Schedule::from_betas(betas, false);
    assert_eq!(build(vec![]), Err(ScheduleError::Empty));
    assert_eq!(
        build(vec![0.1, 0.0, 0.2]),
        Err(ScheduleError::OutOfRange {
            index: 1,
            value: 0.0
        })
    );
    assert_eq!(
        build(vec![0.1, 1.0]),
        Err(ScheduleError::OutOfRange {
            index: 1,
            value: 1.0
        })
    );
    assert_eq!(
        build(vec![-0.5]),
        Err(ScheduleError::OutOfRange {
            index: 0,
            value: -0.5
        })
    );
    assert!(matches!(
        build(vec![0.1, f64::NAN]),
        Err(ScheduleError::NonFinite { index: 1, .. })
    ));
    assert!(matches!(
        build(vec![f64::INFINITY]),
        Err(ScheduleError::NonFinite { index: 0, .. })
    ));
    let msg = build(vec![0.1, 0.0]).unwrap_err().to_string();
    assert!(msg.contains("index 1") && msg.contains("t = 2"), "{msg}");
    let zero_t = ScheduleConfig {
        num_train_timesteps: 0,
        ..Default::default()
    };
    assert_eq!(zero_t.build(), Err(ScheduleError::Empty));
    let bad_end = ScheduleConfig {
        beta_schedule: BetaSchedule::Linear {
            beta_start: 1e-4,
            beta_end: 1.5,
        },
        ..Default::default()
    };
    assert!(matches!(
        bad_end.build(),
        Err(ScheduleError::Parameter {
            name: "beta_end",
            ..
        })
    ));
    // A custom array whose length disagrees with T is an error, not a silent truncation.
    let mismatch = ScheduleConfig {
        beta_schedule: BetaSchedule::Custom {
            betas: vec![0.1; 3],
        },
        num_train_timesteps: 4,
        rescale_zero_terminal_snr: false,
    };
    assert!(mismatch.build().is_err());
}

#[test]
fn posterior_tables_at_the_first_step() {
    let s = ScheduleConfig::default().build().unwrap();
    assert_eq!(s.posterior_variance[0], 0.0);
    assert_eq!(
        s.posterior_log_variance_clipped[0],
        s.posterior_variance[1].ln()
    );
    // At t = 1 the posterior mean is x_0 itself: coef_x0 = 1, coef_xt = 0.
    assert!((s.posterior_mean_coef_x0[0] - 1.0).abs() < 1e-12);
    assert_eq!(s.posterior_mean_coef_xt[0], 0.0);
}

#[test]
fn karras_grid_end_points_and_spacing() {
    let g = karras_sigmas(0.002, 80.0, 18, 7.0);
    assert!((g[0] - 80.0).abs() < 1e-12 && (g[17] - 0.002).abs() < 1e-15);
    // Linear in sigma^(1/rho): constant first differences (tol 1e-12, float64 rounding).
    let r: Vec<f64> = g.iter().map(|s| s.powf(1.0 / 7.0)).collect();
    let d0 = r[1] - r[0];
    for w in r.windows(2) {
        assert!((w[1] - w[0] - d0).abs() < 1e-12);
    }
}

#[test]
fn sigma_to_t_inverts_the_table_at_integer_steps() {
    let s = ScheduleConfig::default().build().unwrap();
    for i in [0usize, 1, 17, 500, 998, 999] {
        assert!(
            (s.sigma_to_t(s.sigma[i]) - i as f64).abs() < 1e-9,
            "i = {i}"
        );
    }
    // Between two steps the result is fractional and monotone.
    let mid = (s.sigma[10] * s.sigma[11]).sqrt();
    let t = s.sigma_to_t(mid);
    assert!(t > 10.0 && t < 11.0);
}
