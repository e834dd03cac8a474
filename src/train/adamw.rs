//! AdamW (Loshchilov & Hutter 2019, PyTorch's update order) on a flat float32 parameter
//! vector, with global gradient-norm clipping:
//! `p <- p (1 - lr wd)`; `m <- b1 m + (1 - b1) g`; `v <- b2 v + (1 - b2) g^2`;
//! `p <- p - lr (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps)` at the k-th update.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of one update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// The optimiser moments and update count.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamWState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Number of updates applied so far.
    pub updates: u64,
}

impl AdamWState {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> Self {
        AdamWState {
            m: vec![0.0; n],
            v: vec![0.0; n],
            updates: 0,
        }
    }

    /// One AdamW update of `params` with gradient `grad`.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], h: &AdamWParams) {
        self.updates += 1;
        let k = self.updates as i32;
        let bc1 = 1.0 - h.beta1.powi(k);
        let bc2 = 1.0 - h.beta2.powi(k);
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        let decay = (1.0 - h.lr * h.weight_decay) as f32;
        let step_size = (h.lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        let eps = h.eps as f32;
        // Elementwise, so splitting into parallel chunks changes no result.
        params
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *p *= decay;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= step_size * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
                }
            });
    }
}

/// Parameters per parallel task of the elementwise passes.
pub const CHUNK: usize = 16 * 1024;

/// The global L2 norm of a gradient (float64 partial sums over fixed chunks, added in order,
/// so the result does not depend on the thread count).
pub fn grad_norm(grad: &[f32]) -> f64 {
    let partial: Vec<f64> = grad
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|g| (*g as f64) * (*g as f64)).sum::<f64>())
        .collect();
    partial.iter().sum::<f64>().sqrt()
}

/// Scales `grad` so its norm is at most `max_norm` (PyTorch's `clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)` when it is below 1). Returns the norm before clipping.
pub fn clip_grad_norm(grad: &mut [f32], max_norm: f64) -> f64 {
    let norm = grad_norm(grad);
    if max_norm > 0.0 {
        let c = max_norm / (norm + 1e-6);
        if c < 1.0 {
            let c = c as f32;
            grad.par_chunks_mut(CHUNK)
                .for_each(|g| g.iter_mut().for_each(|g| *g *= c));
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_update_moves_each_weight_by_lr_times_sign() {
        // At k = 1, m_hat = g and v_hat = g^2, so the step is lr g/(|g| + eps) ~ lr sign(g);
        // with wd the weight first shrinks by (1 - lr wd). The float64 reference keeps eps
        // (1e-8 against |g| = 1e-3 moves the step by lr 1e-5 = 1e-7). The weights end below 2
        // in magnitude, where a float32 rounding costs at most 6e-8 (half an ulp); four
        // roundings: tol 2.5e-7 (measured 8.4e-8).
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = [0.3f32, -4.0, 1e-3];
        let mut s = AdamWState::new(3);
        let h = AdamWParams {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        s.step(&mut p, &g, &h);
        let want: Vec<f64> = [1.0f64, -2.0, 0.5]
            .iter()
            .zip(g)
            .map(|(p, g)| p * 0.999 - 0.01 * g as f64 / ((g as f64).abs() + 1e-8))
            .collect();
        for (a, b) in p.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 2.5e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn clipping_caps_the_norm() {
        // A 3-4-0 gradient has norm 5; clipped to 1 it becomes (0.6, 0.8, 0) up to the 1e-6
        // guard in the denominator (tol 1e-6).
        let mut g = vec![3.0f32, 4.0, 0.0];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        let mut small = vec![0.1f32];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small[0], 0.1);
    }
}
