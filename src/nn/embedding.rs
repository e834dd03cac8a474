//! Sinusoidal timestep embedding (Transformer positional encoding as DDPM uses it):
//! with `half = dim / 2` and frequencies `f_j = exp(-ln(max_period) j / half)`, `j = 0..half`,
//! `emb(t) = [sin(t f_0), .., sin(t f_{half-1}), cos(t f_0), .., cos(t f_{half-1})]`.
//! Computed in float64 on the host (STYLE: math off tensors) and cast at the edge.

use crate::tensor::from_rows;
use burn::tensor::{DType, Device, Tensor};

/// The conventional period bound of the lowest frequency.
pub const MAX_PERIOD: f64 = 10_000.0;

/// Row-major `[t.len(), dim]` embeddings of the timestep values `t` (`dim` even).
pub fn sinusoidal_embedding(t: &[f64], dim: usize) -> Vec<f64> {
    assert!(
        dim >= 2 && dim.is_multiple_of(2),
        "embedding dim must be even, got {dim}"
    );
    sinusoidal_embedding_with(t, dim, false, 0.0)
}

/// diffusers' `Timesteps(dim, flip_sin_to_cos, downscale_freq_shift)` convention: the
/// frequencies are `f_j = exp(-ln(max_period) j / (half - freq_shift))`, the halves are
/// `[cos, sin]` when `flip_sin_to_cos`, and an odd `dim` gets one trailing zero column.
/// `(false, 0.0)` is [`sinusoidal_embedding`]. diffusers evaluates this in float32; here it is
/// float64 (the two differ by about `|t f_j| 2^-24` in the argument).
pub fn sinusoidal_embedding_with(
    t: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Vec<f64> {
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half)
        .map(|j| (-(MAX_PERIOD.ln()) * j as f64 / (half as f64 - freq_shift)).exp())
        .collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let sin = freqs.iter().map(|f| (ti * f).sin());
        let cos = freqs.iter().map(|f| (ti * f).cos());
        if flip_sin_to_cos {
            out.extend(cos);
            out.extend(sin);
        } else {
            out.extend(sin);
            out.extend(cos);
        }
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// The embedding as a `[N, dim]` tensor.
pub fn timestep_embedding(t: &[f64], dim: usize, device: &Device, dtype: DType) -> Tensor<2> {
    from_rows(sinusoidal_embedding(t, dim), t.len(), dim, device, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_matches_closed_form_values() {
        // t = 0 gives sin = 0, cos = 1; the first frequency is 1, the last 10000^(-(half-1)/half).
        // Exact float64 identities: tolerance 1e-12.
        let e = sinusoidal_embedding(&[0.0, 3.0], 8);
        assert_eq!(&e[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((e[8] - 3.0f64.sin()).abs() < 1e-12);
        assert!((e[12] - 3.0f64.cos()).abs() < 1e-12);
        let f_last = 10_000f64.powf(-3.0 / 4.0);
        assert!((e[11] - (3.0 * f_last).sin()).abs() < 1e-12);
        assert!((e[15] - (3.0 * f_last).cos()).abs() < 1e-12);
    }

    #[test]
    fn flip_and_shift_follow_diffusers_timesteps() {
        // flip swaps the halves; freq_shift = 1 makes the last frequency exactly 1/max_period
        // (exponent -ln(P) (half-1)/(half-1)); an odd dim appends a zero. Exact float64
        // identities up to one rounding of exp/sin/cos: tolerance 1e-12.
        let plain = sinusoidal_embedding_with(&[3.0], 8, false, 0.0);
        assert_eq!(plain, sinusoidal_embedding(&[3.0], 8));
        let flipped = sinusoidal_embedding_with(&[3.0], 8, true, 0.0);
        assert_eq!(&flipped[..4], &plain[4..]);
        assert_eq!(&flipped[4..], &plain[..4]);
        let shifted = sinusoidal_embedding_with(&[3.0], 8, false, 1.0);
        assert!((shifted[3] - (3.0 / MAX_PERIOD).sin()).abs() < 1e-12);
        assert!((shifted[7] - (3.0 / MAX_PERIOD).cos()).abs() < 1e-12);
        let odd = sinusoidal_embedding_with(&[3.0, 4.0], 9, true, 0.0);
        assert_eq!(odd.len(), 18);
        assert_eq!(odd[8], 0.0);
        assert_eq!(odd[17], 0.0);
        assert!((odd[0] - 3.0f64.cos()).abs() < 1e-12);
    }

    #[test]
    fn each_frequency_pair_has_unit_norm() {
        // sin^2 + cos^2 = 1 per frequency, so every row has squared norm dim/2 (tol 1e-12).
        let e = sinusoidal_embedding(&[0.5, 17.0, 999.0], 16);
        for row in e.chunks(16) {
            let sq: f64 = row.iter().map(|v| v * v).sum();
            assert!((sq - 8.0).abs() < 1e-12);
        }
    }
}
