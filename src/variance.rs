//! Reverse-process variances (SPEC §3): `fixed_small` (beta_tilde), `fixed_large` (beta),
//! `learned_range` (improved DDPM) and `learned` (the network outputs sigma^2 itself). Each takes the two levels of a step, alpha_bar_t and
//! alpha_bar_prev, so the same formulas serve the full chain and subsampled grids, where
//! beta_t is replaced by `1 - alpha_bar_t / alpha_bar_prev`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which sigma_t^2 the reverse step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VarianceType {
    /// sigma^2 = beta_tilde_t, the lower bound (exact when x_0 is a point).
    #[default]
    FixedSmall,
    /// sigma^2 = beta_t, the upper bound (exact when x_0 ~ N(0, I)).
    FixedLarge,
    /// log sigma^2 = frac log beta_t + (1 - frac) log beta_tilde_t, frac = (v + 1)/2.
    LearnedRange,
    /// sigma^2 = v, the network's variance output itself (diffusers' `learned`).
    Learned,
}

/// beta of the step from alpha_bar_prev to alpha_bar_t: 1 - alpha_bar_t / alpha_bar_prev.
pub fn step_beta(alpha_bar_t: f64, alpha_bar_prev: f64) -> f64 {
    1.0 - alpha_bar_t / alpha_bar_prev
}

/// beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta (0 on the last step).
pub fn posterior_variance(alpha_bar_t: f64, alpha_bar_prev: f64) -> f64 {
    (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * step_beta(alpha_bar_t, alpha_bar_prev)
}

/// The fixed variance of a step (`None` for learned_range, which needs the network output).
pub fn fixed_variance(kind: VarianceType, alpha_bar_t: f64, alpha_bar_prev: f64) -> Option<f64> {
    match kind {
        VarianceType::FixedSmall => Some(posterior_variance(alpha_bar_t, alpha_bar_prev)),
        VarianceType::FixedLarge => Some(step_beta(alpha_bar_t, alpha_bar_prev)),
        VarianceType::LearnedRange | VarianceType::Learned => None,
    }
}

/// Smallest beta_tilde whose log is taken: on the last step beta_tilde = 0 and log 0 = -inf
/// would turn frac * log beta + (1 - frac) * (-inf) into NaN at frac = 1 (diffusers clamps the
/// same way). No noise is added on that step, so the value there never reaches a sample.
pub const MIN_POSTERIOR_VARIANCE: f64 = 1e-20;

/// learned_range: log sigma^2 = frac log beta + (1 - frac) log beta_tilde, frac = (v + 1)/2.
pub fn learned_range_log_variance(
    v: Tensor<2>,
    alpha_bar_t: f64,
    alpha_bar_prev: f64,
) -> Tensor<2> {
    let max_log = step_beta(alpha_bar_t, alpha_bar_prev).ln();
    let min_log = posterior_variance(alpha_bar_t, alpha_bar_prev)
        .max(MIN_POSTERIOR_VARIANCE)
        .ln();
    let frac = v.add_scalar(1.0).mul_scalar(0.5);
    frac.mul_scalar(max_log - min_log).add_scalar(min_log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;
    use crate::tensor::{from_rows, to_vec};
    use burn::tensor::{DType, Device};

    #[test]
    fn step_formulas_reproduce_the_full_chain_tables() {
        // With consecutive levels, 1 - ab_t/ab_{t-1} = beta_t and beta_tilde matches the table
        // (tol 1e-10 relative: one float64 division of nearly equal numbers, ~1e-13 error / beta).
        let s = ScheduleConfig::default().build().unwrap();
        for i in [1usize, 2, 100, 999] {
            let (ab, prev) = (s.alpha_bar[i], s.alpha_bar_prev(i));
            assert!((step_beta(ab, prev) - s.beta[i]).abs() < 1e-10 * s.beta[i]);
            let pv = posterior_variance(ab, prev);
            assert!((pv - s.posterior_variance[i]).abs() < 1e-10 * pv);
        }
        assert_eq!(posterior_variance(s.alpha_bar[0], 1.0), 0.0);
    }

    #[test]
    fn learned_range_interpolates_between_the_bounds() {
        let s = ScheduleConfig::default().build().unwrap();
        let (ab, prev) = (s.alpha_bar[500], s.alpha_bar[499]);
        let v = from_rows(vec![-1.0, 0.0, 1.0], 1, 3, &Device::default(), DType::F64);
        let lv = to_vec(&learned_range_log_variance(v, ab, prev));
        let (lo, hi) = (posterior_variance(ab, prev).ln(), step_beta(ab, prev).ln());
        assert!((lv[0] - lo).abs() < 1e-12);
        assert!((lv[1] - 0.5 * (lo + hi)).abs() < 1e-12);
        assert!((lv[2] - hi).abs() < 1e-12);
    }
}
