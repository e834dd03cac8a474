//! The forward process against closed forms, brute force and Monte Carlo (SPEC §2).
use super::*;
use crate::rng::SampleRng;
use crate::schedule::{BetaSchedule, ScheduleConfig};
use crate::tensor::{from_rows, to_vec};
use burn::tensor::DType;

fn schedules() -> Vec<Schedule> {
    ["linear", "cosine", "scaled_linear", "sigmoid"]
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

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n)
}

#[test]
fn composing_one_step_transitions_gives_the_closed_form_exactly() {
    // Gaussian composition rule: N(m, v) pushed through x -> sqrt(alpha) x + sqrt(beta) z has
    // mean sqrt(alpha) m and variance alpha v + beta. Starting from the point x_0 (m = 1, v = 0)
    // this must reproduce sqrt(alpha_bar_t) and 1 - alpha_bar_t (tol 1e-12, float64 rounding of
    // up to 1000 multiply-adds).
    for s in schedules() {
        let (mut m, mut v) = (1.0f64, 0.0f64);
        for t in 0..s.len() {
            m *= s.alpha[t].sqrt();
            v = s.alpha[t] * v + s.beta[t];
            let (mc, var) = q_mean_variance(&s, t);
            assert!((m - mc).abs() < 1e-12 && (v - var).abs() < 1e-12, "t = {t}");
        }
    }
}

#[test]
fn composing_one_step_samples_matches_q_xt_given_x0() {
    // Monte Carlo: 20000 chains from x_0 = 0.7 through 200 one-step transitions. Standard errors:
    // mean sqrt(var/n) <= 0.0071, variance var*sqrt(2/n) <= 0.01; bounds are 5 standard errors.
    let s = ScheduleConfig::default().build().unwrap();
    let dev = crate::device::cpu();
    let n = 20000;
    let mut rng = SampleRng::new(3, 0, n);
    let mut x = from_rows(vec![0.7; n], n, 1, &dev, DType::F64);
    for t in 0..200 {
        let z = from_rows(rng.normal(1), n, 1, &dev, DType::F64);
        x = q_step_sample(&s, &x, &[t], &z);
    }
    let (m, v) = mean_var(&to_vec(&x));
    let (mc, var) = q_mean_variance(&s, 199);
    let se_m = (var / n as f64).sqrt();
    let se_v = var * (2.0 / n as f64).sqrt();
    assert!(
        (m - 0.7 * mc).abs() < 5.0 * se_m,
        "mean {m} vs {}",
        0.7 * mc
    );
    assert!((v - var).abs() < 5.0 * se_v, "var {v} vs {var}");
}

#[test]
fn unit_variance_data_keeps_unit_variance() {
    // SPEC §2 energy preservation with non-Gaussian data: Rademacher x_0 (E x^2 = 1). The sample
    // variance of n = 40000 points has standard error ~ sqrt(2/n) = 0.007; bound 0.035 (5 s.e.).
    let s = ScheduleConfig::default().build().unwrap();
    let dev = crate::device::cpu();
    let n = 40000;
    let mut rng = SampleRng::new(5, 0, n);
    let x0: Vec<f64> = rng.normal(1).iter().map(|z| z.signum()).collect();
    let x0 = from_rows(x0, n, 1, &dev, DType::F64);
    for t in [0usize, 10, 100, 500, 999] {
        let eps = from_rows(rng.normal(1), n, 1, &dev, DType::F64);
        let x_t = q_sample(&s, &x0, &vec![t; n], &eps);
        let (_, v) = mean_var(&to_vec(&x_t));
        assert!((v - 1.0).abs() < 0.035, "t = {t}: var {v}");
    }
}

#[test]
fn posterior_matches_bayes_rule_on_a_grid() {
    // q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), evaluated on a fine 1-D grid
    // spanning ±12 posterior standard deviations; the Riemann sums of a smooth Gaussian converge
    // geometrically, so mean and variance agree to 1e-9 relative.
    for s in schedules() {
        for t in [1usize, 5, 100, 700] {
            let (x0, xt) = (0.3, -0.8);
            let ab_prev = s.alpha_bar_prev(t);
            let (a, b) = (s.alpha[t], s.beta[t]);
            let log_p = |x: f64| {
                -(xt - a.sqrt() * x).powi(2) / (2.0 * b)
                    - (x - ab_prev.sqrt() * x0).powi(2) / (2.0 * (1.0 - ab_prev))
            };
            let (mu, var) = (
                to_vec(&q_posterior_mean(
                    &s,
                    &from_rows(vec![x0], 1, 1, &crate::device::cpu(), DType::F64),
                    &from_rows(vec![xt], 1, 1, &crate::device::cpu(), DType::F64),
                    &[t],
                ))[0],
                q_posterior_variance(&s, t).0,
            );
            let sd = var.sqrt();
            let m = 200_001;
            let xs: Vec<f64> = (0..m)
                .map(|k| mu - 12.0 * sd + 24.0 * sd * k as f64 / (m - 1) as f64)
                .collect();
            let lmax = xs.iter().map(|&x| log_p(x)).fold(f64::MIN, f64::max);
            let w: Vec<f64> = xs.iter().map(|&x| (log_p(x) - lmax).exp()).collect();
            let z: f64 = w.iter().sum();
            let gm = xs.iter().zip(&w).map(|(x, w)| x * w).sum::<f64>() / z;
            let gv = xs
                .iter()
                .zip(&w)
                .map(|(x, w)| (x - gm).powi(2) * w)
                .sum::<f64>()
                / z;
            assert!(
                (gm - mu).abs() < 1e-9 * (1.0 + mu.abs()),
                "t = {t}: mean {gm} vs {mu}"
            );
            assert!((gv - var).abs() < 1e-7 * var, "t = {t}: var {gv} vs {var}");
        }
    }
}

#[test]
fn the_two_posterior_mean_forms_agree() {
    // mu_tilde(x_t, x_0) with x_0 = (x_t - s eps)/a equals (x_t - beta/s eps)/sqrt(alpha):
    // tol 1e-9 relative (float64; at t = 1 the x_0 form divides by a ~ 1).
    let dev = crate::device::cpu();
    for s in schedules() {
        let mut rng = SampleRng::new(9, 0, 4);
        let x0 = from_rows(rng.normal(3), 4, 3, &dev, DType::F64);
        let eps = from_rows(rng.normal(3), 4, 3, &dev, DType::F64);
        let t = [0usize, 3, 400, 998];
        let x_t = q_sample(&s, &x0, &t, &eps);
        let a = to_vec(&q_posterior_mean(&s, &x0, &x_t, &t));
        let b = to_vec(&q_posterior_mean_from_eps(&s, &x_t, &eps, &t));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-9 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}
