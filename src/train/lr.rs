//! Learning-rate schedule: linear warmup from 0 to the peak, then cosine decay to `min_lr` at the
//! last step: `lr(s) = lr * (s + 1) / warmup` for `s < warmup`, else
//! `min_lr + (lr - min_lr) (1 + cos(pi p)) / 2` with `p = (s - warmup) / (steps - warmup)`.
//!
//! The rate is a function of the step and the current planned total only: a resumed run whose
//! total is re-planned (`train --resume --steps N`, recorded in `train.replans`) follows from
//! then on the schedule of an N-step run, so extending a finished run raises the rate again.

use super::config::TrainConfig;
use std::f64::consts::PI;

/// The learning rate of (0-based) step `step`.
pub fn learning_rate(cfg: &TrainConfig, step: u64) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    let span = cfg.steps.saturating_sub(cfg.warmup_steps).max(1);
    let p = ((step - cfg.warmup_steps) as f64 / span as f64).min(1.0);
    cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + (PI * p).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        // Closed-form points (tol 1e-15): end of warmup is the peak, the midpoint of the decay
        // is halfway, the end is min_lr.
        let cfg = TrainConfig {
            steps: 1100,
            warmup_steps: 100,
            lr: 1e-3,
            min_lr: 1e-5,
            ..TrainConfig::default()
        };
        assert!((learning_rate(&cfg, 0) - 1e-5).abs() < 1e-15);
        assert!((learning_rate(&cfg, 99) - 1e-3).abs() < 1e-15);
        assert!((learning_rate(&cfg, 100) - 1e-3).abs() < 1e-15);
        assert!((learning_rate(&cfg, 600) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-15);
        assert!((learning_rate(&cfg, 1100) - 1e-5).abs() < 1e-15);
    }
}
