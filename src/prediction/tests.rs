//! Every conversion round-trips (SPEC §3), checked in float64 tensors.
use super::*;
use crate::tensor::{from_rows, to_vec};
use burn::tensor::DType;

fn sample(seed: u64) -> (Tensor<2>, Tensor<2>, Vec<f64>, Vec<f64>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dev = crate::device::cpu();
    let x0: Vec<f64> = (0..12).map(|_| rng.random_range(-2.0..2.0)).collect();
    let eps: Vec<f64> = (0..12).map(|_| rng.random_range(-2.0..2.0)).collect();
    let alpha_bar = [0.9999, 0.5, 0.01, 0.3];
    let a: Vec<f64> = alpha_bar.iter().map(|ab: &f64| ab.sqrt()).collect();
    let s: Vec<f64> = alpha_bar.iter().map(|ab: &f64| (1.0 - ab).sqrt()).collect();
    (
        from_rows(x0, 4, 3, &dev, DType::F64),
        from_rows(eps, 4, 3, &dev, DType::F64),
        a,
        s,
    )
}

fn assert_close(a: &Tensor<2>, b: &Tensor<2>, tol: f64) {
    for (x, y) in to_vec(a).iter().zip(to_vec(b)) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn every_prediction_type_recovers_x0_and_eps() {
    // tol 1e-9: float64 with divisions by s >= 0.01 and a >= 0.1 (condition numbers <= 1e2).
    let (x0, eps, a, s) = sample(1);
    let x_t = lincomb(&a, &x0, &s, &eps);
    for p in [
        PredictionType::Eps,
        PredictionType::X0,
        PredictionType::V,
        PredictionType::Score,
    ] {
        let out = target(p, &x0, &eps, &a, &s);
        let (x0_hat, eps_hat) = x0_and_eps(p, &out, &x_t, &a, &s);
        assert_close(&x0_hat, &x0, 1e-9);
        assert_close(&eps_hat, &eps, 1e-9);
    }
}

#[test]
fn v_is_defined_at_zero_terminal_snr() {
    // alpha_bar = 0: x_t = eps, x_0 = -v, eps = x_t; no division happens.
    let (x0, eps, _, _) = sample(2);
    let (a, s) = (vec![0.0], vec![1.0]);
    let x_t = eps.clone();
    let v = v_from_x0_eps(&x0, &eps, &a, &s);
    let (x0_hat, eps_hat) = x0_and_eps(PredictionType::V, &v, &x_t, &a, &s);
    assert_close(&x0_hat, &x0, 1e-15);
    assert_close(&eps_hat, &eps, 1e-15);
}

#[test]
fn zero_terminal_snr_needs_a_prediction_without_division() {
    // At alpha_bar = 0 an eps output gives x_0 = (x_t - eps)/0: not finite (the NaN samples
    // the check prevents); x0 and v give finite x_0 and eps.
    let (x0, eps, _, _) = sample(3);
    let (a, s) = (vec![0.0], vec![1.0]);
    let x_t = eps.clone();
    for p in [PredictionType::Eps, PredictionType::X0, PredictionType::V] {
        let out = target(p, &x0, &eps, &a, &s);
        let (x0_hat, eps_hat) = x0_and_eps(p, &out, &x_t, &a, &s);
        let finite = to_vec(&x0_hat)
            .iter()
            .chain(&to_vec(&eps_hat))
            .all(|v| v.is_finite());
        assert_eq!(finite, p != PredictionType::Eps, "{p:?}");
        assert_eq!(check_zero_terminal_snr(p, true).is_ok(), finite, "{p:?}");
        assert!(check_zero_terminal_snr(p, false).is_ok());
    }
    let err = check_zero_terminal_snr(PredictionType::Score, true).unwrap_err();
    assert!(err.to_string().contains("Score"), "{err}");
    let msg = check_zero_terminal_snr(PredictionType::Eps, true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("prediction")
            && msg.contains("Eps")
            && msg.contains("rescale_zero_terminal_snr"),
        "{msg}"
    );
}

#[test]
fn score_is_minus_eps_over_s() {
    let (_, eps, _, s) = sample(3);
    let score = score_from_eps(&eps, &s);
    let v = to_vec(&score);
    let e = to_vec(&eps);
    for i in 0..12 {
        assert!((v[i] + e[i] / s[i / 3]).abs() < 1e-12);
    }
    assert_close(&eps_from_score(&score, &s), &eps, 1e-12);
}

#[test]
fn names_parse_like_diffusers() {
    assert_eq!(
        PredictionType::from_name("epsilon"),
        Some(PredictionType::Eps)
    );
    assert_eq!(
        PredictionType::from_name("sample"),
        Some(PredictionType::X0)
    );
    assert_eq!(
        PredictionType::from_name("v_prediction"),
        Some(PredictionType::V)
    );
    assert_eq!(PredictionType::from_name("bogus"), None);
}
