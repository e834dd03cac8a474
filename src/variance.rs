//! Reverse-process variances (SPEC §3), the one place their formulas live: `fixed_small`
//! (beta_tilde), `fixed_large` (beta), `learned_range` (improved DDPM) and `learned` (the
//! network outputs sigma^2 itself). The sampler, the bound and the loss weights all take a
//! step's [`VarianceRange`] and these functions.
//!
//! A step runs from alpha_bar_t to alpha_bar_prev, so the same formulas serve the full chain and
//! subsampled grids, where beta_t is replaced by `1 - alpha_bar_t / alpha_bar_prev`.
//!
//! Convention at t = 1 (the chain's last step, alpha_bar_prev = 1, where beta_tilde_1 = 0), from
//! SPEC §2-§3: sigma^2 itself follows §3 (fixed_small 0, fixed_large beta_1); wherever the log
//! of beta_tilde is taken (fixed_small's log-variance in the bound, learned_range's lower end),
//! it is clipped to ln beta_tilde_2, the posterior variance of the step before on the same chain
//! (improved-diffusion does the same on respaced chains), or ln beta_1 on a chain of one step.

use crate::tensor::column;
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

/// ln beta_tilde with SPEC §2's clip: where beta_tilde = 0 (t = 1) the posterior variance of
/// the step before on the chain (`beta_tilde_above`, beta_tilde_2) is used instead, or `beta`
/// on a chain of one step.
pub fn clipped_log_posterior_variance(
    beta_tilde: f64,
    beta: f64,
    beta_tilde_above: Option<f64>,
) -> f64 {
    if beta_tilde > 0.0 {
        beta_tilde.ln()
    } else {
        beta_tilde_above.unwrap_or(beta).ln()
    }
}

/// The two ends of a step's variance range (SPEC §3): beta (fixed_large) and beta_tilde
/// (fixed_small), with beta_tilde's log clipped at t = 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceRange {
    pub beta: f64,
    pub beta_tilde: f64,
    /// ln beta_tilde, clipped at t = 1 ([`clipped_log_posterior_variance`]).
    pub log_beta_tilde_clipped: f64,
}

impl VarianceRange {
    /// The step alpha_bar_t -> alpha_bar_prev of a chain whose step before it starts at
    /// `alpha_bar_above` (None: this is the chain's first step from the top).
    pub fn of_step(alpha_bar_t: f64, alpha_bar_prev: f64, alpha_bar_above: Option<f64>) -> Self {
        let beta = step_beta(alpha_bar_t, alpha_bar_prev);
        let beta_tilde = posterior_variance(alpha_bar_t, alpha_bar_prev);
        let above = alpha_bar_above.map(|a| posterior_variance(a, alpha_bar_t));
        VarianceRange {
            beta,
            beta_tilde,
            log_beta_tilde_clipped: clipped_log_posterior_variance(beta_tilde, beta, above),
        }
    }

    /// sigma^2 of a fixed variance (`None` for the learned ones, which need the network).
    pub fn fixed_variance(&self, kind: VarianceType) -> Option<f64> {
        match kind {
            VarianceType::FixedSmall => Some(self.beta_tilde),
            VarianceType::FixedLarge => Some(self.beta),
            VarianceType::LearnedRange | VarianceType::Learned => None,
        }
    }

    /// ln sigma^2 of a fixed variance, what the bound's Gaussians need: fixed_small's is the
    /// clipped ln beta_tilde (finite at t = 1), fixed_large's ln beta.
    pub fn fixed_log_variance(&self, kind: VarianceType) -> Option<f64> {
        match kind {
            VarianceType::FixedSmall => Some(self.log_beta_tilde_clipped),
            VarianceType::FixedLarge => Some(self.beta.ln()),
            VarianceType::LearnedRange | VarianceType::Learned => None,
        }
    }
}

/// ln sigma^2 of a learned variance from the network's variance output `v` (`[N, D]`):
/// learned_range `frac ln beta + (1 - frac) ln beta_tilde` with frac = (v + 1)/2 and the clipped
/// ln beta_tilde, learned `ln v`. `ranges` holds one range per row of `v`, or one for all rows.
/// `None` for the fixed variances.
pub fn learned_log_variance(
    kind: VarianceType,
    v: Tensor<2>,
    ranges: &[VarianceRange],
) -> Option<Tensor<2>> {
    match kind {
        VarianceType::LearnedRange => {
            let log_beta: Vec<f64> = ranges.iter().map(|r| r.beta.ln()).collect();
            let min_log: Vec<f64> = ranges.iter().map(|r| r.log_beta_tilde_clipped).collect();
            let (max_log, min_log) = (column(&log_beta, &v), column(&min_log, &v));
            let frac = v.add_scalar(1.0).mul_scalar(0.5);
            Some(frac * (max_log - min_log.clone()) + min_log)
        }
        VarianceType::Learned => Some(v.log()),
        VarianceType::FixedSmall | VarianceType::FixedLarge => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;
    use crate::tensor::{from_rows, to_vec};
    use burn::tensor::DType;

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

    /// alpha_bar of a three-step chain with betas 0.1, 0.2, 0.3, in closed form.
    const AB: [f64; 3] = [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7];

    #[test]
    fn ranges_follow_the_spec_at_every_step_of_a_small_chain() {
        // SPEC §2-§3 by hand for betas (0.1, 0.2, 0.3): beta_tilde_2 = 0.1/0.28 * 0.2,
        // beta_tilde_3 = 0.28/0.496 * 0.3; at t = 1 sigma^2 stays 0 (fixed_small) and beta_1
        // (fixed_large) while the log of beta_tilde is clipped to ln beta_tilde_2. tol 1e-14
        // relative: a few float64 operations on O(0.1) values.
        let bt2 = 0.1 / (1.0 - AB[1]) * 0.2;
        let bt3 = (1.0 - AB[1]) / (1.0 - AB[2]) * 0.3;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * b.abs();
        let r1 = VarianceRange::of_step(AB[0], 1.0, Some(AB[1]));
        let r2 = VarianceRange::of_step(AB[1], AB[0], Some(AB[2]));
        let r3 = VarianceRange::of_step(AB[2], AB[1], None);
        assert!(close(r1.beta, 0.1) && r1.beta_tilde == 0.0);
        assert!(close(r1.log_beta_tilde_clipped, bt2.ln()));
        assert!(close(r2.beta, 0.2) && close(r2.beta_tilde, bt2));
        assert!(close(r2.log_beta_tilde_clipped, bt2.ln()));
        assert!(close(r3.beta, 0.3) && close(r3.log_beta_tilde_clipped, bt3.ln()));
        assert_eq!(r1.fixed_variance(VarianceType::FixedSmall), Some(0.0));
        assert!(close(
            r1.fixed_variance(VarianceType::FixedLarge).unwrap(),
            0.1
        ));
        assert!(close(
            r1.fixed_log_variance(VarianceType::FixedSmall).unwrap(),
            bt2.ln()
        ));
        assert!(close(
            r1.fixed_log_variance(VarianceType::FixedLarge).unwrap(),
            0.1f64.ln()
        ));
        assert_eq!(r1.fixed_variance(VarianceType::LearnedRange), None);
        // A chain of one step has no beta_tilde_2: the clip falls back to beta_1.
        let lone = VarianceRange::of_step(0.9, 1.0, None);
        assert!(close(lone.log_beta_tilde_clipped, 0.1f64.ln()));
        // A subsampled grid 3 -> 1 -> 0: its last step's clip is the grid's step above it.
        let grid_last = VarianceRange::of_step(AB[0], 1.0, Some(AB[2]));
        let above = (1.0 - AB[0]) / (1.0 - AB[2]) * (1.0 - AB[2] / AB[0]);
        assert!(close(grid_last.log_beta_tilde_clipped, above.ln()));
    }

    #[test]
    fn learned_range_interpolates_between_the_clipped_bounds() {
        // frac = (v + 1)/2 in [0, 1]: v = -1 gives ln beta_tilde (clipped at t = 1), v = 1
        // ln beta, v = 0 the midpoint; one range per row (rows at t = 1 and t = 2 of the chain
        // above) or one for all rows. tol 1e-14 absolute on O(1) logs.
        let bt2 = 0.1 / (1.0 - AB[1]) * 0.2;
        let ranges = [
            VarianceRange::of_step(AB[0], 1.0, Some(AB[1])),
            VarianceRange::of_step(AB[1], AB[0], Some(AB[2])),
        ];
        let v = from_rows(
            vec![-1.0, 0.0, 1.0, -1.0, 0.0, 1.0],
            2,
            3,
            &crate::device::cpu(),
            DType::F64,
        );
        let lv =
            to_vec(&learned_log_variance(VarianceType::LearnedRange, v.clone(), &ranges).unwrap());
        let want = [
            bt2.ln(),
            0.5 * (bt2.ln() + 0.1f64.ln()),
            0.1f64.ln(),
            bt2.ln(),
            0.5 * (bt2.ln() + 0.2f64.ln()),
            0.2f64.ln(),
        ];
        for (g, w) in lv.iter().zip(want) {
            assert!((g - w).abs() < 1e-14, "{g} vs {w}");
        }
        let shared = to_vec(
            &learned_log_variance(VarianceType::LearnedRange, v.clone(), &ranges[1..]).unwrap(),
        );
        assert!((shared[0] - bt2.ln()).abs() < 1e-14 && (shared[2] - 0.2f64.ln()).abs() < 1e-14);
        let learned =
            to_vec(&learned_log_variance(VarianceType::Learned, v.clone().exp(), &ranges).unwrap());
        assert!((learned[2] - 1.0).abs() < 1e-14);
        assert!(learned_log_variance(VarianceType::FixedSmall, v, &ranges).is_none());
    }
}
