//! Exponential moving average of the weights with warmup: at (0-based) step `s` the decay is
//! `min(decay, (1 + s) / (10 + s))`, so early averages follow the fast-moving weights (a constant
//! 0.999 from step 0 would keep ~37% of the random initialisation after 1000 steps).

/// The effective decay at step `step`.
pub fn ema_decay(decay: f64, step: u64) -> f64 {
    decay.min((1.0 + step as f64) / (10.0 + step as f64))
}

/// `ema <- d ema + (1 - d) params` with `d = ema_decay(decay, step)`.
pub fn ema_update(ema: &mut [f32], params: &[f32], decay: f64, step: u64) {
    let d = ema_decay(decay, step) as f32;
    let one_minus = 1.0 - d;
    for (e, p) in ema.iter_mut().zip(params) {
        *e = d * *e + one_minus * p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_decay_and_cap() {
        // (1+s)/(10+s): 0.1 at s = 0, 0.5 at s = 8; capped at 0.999 from s = 8990 on (exact).
        assert_eq!(ema_decay(0.999, 0), 0.1);
        assert_eq!(ema_decay(0.999, 8), 0.5);
        assert_eq!(ema_decay(0.999, 100_000), 0.999);
        let mut e = vec![1.0f32];
        ema_update(&mut e, &[0.0], 0.999, 8);
        assert_eq!(e[0], 0.5);
    }
}
