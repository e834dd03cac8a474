//! GroupNorm with an optional SiLU after it, forward and backward in two passes over the
//! data, on float32 NCHW slices. Per image n and group g of M = (C / G) H W values:
//! ```text
//! mu, var = mean and (biased) variance over the group    (accumulated in float64)
//! r       = 1 / sqrt(var + eps)
//! xh      = (x - mu) r
//! a       = gamma_c xh + beta_c
//! y       = a            or  silu(a) = a sigmoid(a)
//! ```
//! Backward, from dy: `da = dy` or `dy s (1 + a (1 - s))` with `s = sigmoid(a)` (a recomputed
//! from x, mu, r); `dgamma_c = sum da xh`, `dbeta_c = sum da`; with `g = da gamma_c`,
//! `dx = r (g - mean(g) - xh mean(g xh))` over the group. Through burn's generic ops the same
//! is about nine recorded ops (reshape, mean, sub, square, mean, sqrt, div, mul, add) plus two
//! for SiLU, each a pass over the tensor. Images run in parallel; the parameter gradients are
//! summed per image in image order, so they do not depend on the thread count.

use super::exp::sigmoid;
use rayon::prelude::*;

/// Sizes of one GroupNorm call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormGeometry {
    pub batch: usize,
    pub channels: usize,
    /// H W (or any trailing size).
    pub pixels: usize,
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
}

impl NormGeometry {
    fn per_group(&self) -> usize {
        self.channels / self.groups * self.pixels
    }
}

/// `(sum f(x_i), sum g(x_i))` over `x`, in 8 float32 lanes (so the loop vectorises) whose
/// totals are added in float64.
#[inline(always)]
fn lane_sums(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for l in 0..8 {
            let (u, v) = f(xs[l], ys[l]);
            a[l] += u;
            b[l] += v;
        }
    }
    let mut total = (
        a.iter().map(|&v| v as f64).sum::<f64>(),
        b.iter().map(|&v| v as f64).sum::<f64>(),
    );
    for (&xv, &yv) in xr.iter().zip(yr) {
        let (u, v) = f(xv, yv);
        total.0 += u as f64;
        total.1 += v as f64;
    }
    total
}

/// `(mean, 1 / sqrt(var + eps))` of one group's values (two passes: the variance of the
/// centred values).
fn moments(v: &[f32], eps: f64) -> (f32, f32) {
    let m = v.len().max(1) as f64;
    let mean = (lane_sums(v, v, |x, _| (x, 0.0)).0 / m) as f32;
    let var = lane_sums(v, v, |x, _| ((x - mean) * (x - mean), 0.0)).0 / m;
    (mean, (1.0 / (var + eps).sqrt()) as f32)
}

/// `y` and the per-(image, group) `(mean, r)` the backward pass needs.
pub fn forward(
    g: &NormGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> (Vec<f32>, Vec<(f32, f32)>) {
    let (cp, gs, cpg) = (g.channels * g.pixels, g.per_group(), g.channels / g.groups);
    assert!(x.len() == g.batch * cp && gamma.len() == g.channels && beta.len() == g.channels);
    let mut y = vec![0f32; x.len()];
    let mut stats = vec![(0f32, 0f32); g.batch * g.groups];
    if cp == 0 {
        return (y, stats);
    }
    y.par_chunks_mut(cp)
        .zip(x.par_chunks(cp))
        .zip(stats.par_chunks_mut(g.groups))
        .for_each(|((y_n, x_n), st)| {
            for (k, (y_g, x_g)) in y_n.chunks_mut(gs).zip(x_n.chunks(gs)).enumerate() {
                let (mean, r) = moments(x_g, g.eps);
                st[k] = (mean, r);
                for (j, (yc, xc)) in y_g
                    .chunks_mut(g.pixels)
                    .zip(x_g.chunks(g.pixels))
                    .enumerate()
                {
                    let c = k * cpg + j;
                    let (scale, shift) = (gamma[c] * r, beta[c] - gamma[c] * r * mean);
                    // The branch outside the loop, so each loop vectorises.
                    if g.silu {
                        for (o, &v) in yc.iter_mut().zip(xc) {
                            let a = v * scale + shift;
                            *o = a * sigmoid(a);
                        }
                    } else {
                        for (o, &v) in yc.iter_mut().zip(xc) {
                            *o = v * scale + shift;
                        }
                    }
                }
            }
        });
    (y, stats)
}

/// `(dx, dgamma, dbeta)` of [`forward`] given `dy`.
pub fn backward(
    g: &NormGeometry,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &[(f32, f32)],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (cp, gs, cpg) = (g.channels * g.pixels, g.per_group(), g.channels / g.groups);
    assert!(x.len() == g.batch * cp && dy.len() == x.len() && stats.len() == g.batch * g.groups);
    let mut dx = vec![0f32; x.len()];
    // Per image: (dgamma, dbeta) partials, summed in image order below.
    let mut parts = vec![(vec![0f64; g.channels], vec![0f64; g.channels]); g.batch];
    if cp > 0 {
        dx.par_chunks_mut(cp)
            .zip(x.par_chunks(cp))
            .zip(dy.par_chunks(cp))
            .zip(stats.par_chunks(g.groups))
            .zip(parts.par_iter_mut())
            .for_each(|((((dx_n, x_n), dy_n), st), (dgamma, dbeta))| {
                let mut da = vec![0f32; gs];
                for k in 0..g.groups {
                    let (mean, r) = st[k];
                    let range = k * gs..(k + 1) * gs;
                    let (x_g, dy_g) = (&x_n[range.clone()], &dy_n[range.clone()]);
                    // Pass 1: da, the parameter gradients and the two group sums.
                    let (mut sum_g, mut sum_gxh) = (0f64, 0f64);
                    for j in 0..cpg {
                        let c = k * cpg + j;
                        let px = j * g.pixels..(j + 1) * g.pixels;
                        let (gc, bc) = (gamma[c], beta[c]);
                        let (da_c, x_c, dy_c) = (&mut da[px.clone()], &x_g[px.clone()], &dy_g[px]);
                        if g.silu {
                            for ((d, &v), &dyv) in da_c.iter_mut().zip(x_c).zip(dy_c) {
                                let a = gc * (v - mean) * r + bc;
                                let s = sigmoid(a);
                                *d = dyv * s * (1.0 + a * (1.0 - s));
                            }
                        } else {
                            da_c.copy_from_slice(dy_c);
                        }
                        let (dbc, dgc) = lane_sums(da_c, x_c, |d, v| (d, d * (v - mean) * r));
                        dgamma[c] += dgc;
                        dbeta[c] += dbc;
                        sum_g += gamma[c] as f64 * dbc;
                        sum_gxh += gamma[c] as f64 * dgc;
                    }
                    // Pass 2: dx = r (gamma da - mean(gamma da) - xh mean(gamma da xh)).
                    let m = gs as f64;
                    let (mg, mgx) = ((sum_g / m) as f32, (sum_gxh / m) as f32);
                    for j in 0..cpg {
                        let c = k * cpg + j;
                        let px = j * g.pixels..(j + 1) * g.pixels;
                        let out = &mut dx_n[k * gs..(k + 1) * gs][px.clone()];
                        for ((o, &v), &d) in out.iter_mut().zip(&x_g[px.clone()]).zip(&da[px]) {
                            let xh = (v - mean) * r;
                            *o = r * (gamma[c] * d - mg - xh * mgx);
                        }
                    }
                }
            });
    }
    let (mut dgamma, mut dbeta) = (vec![0f64; g.channels], vec![0f64; g.channels]);
    for (pg, pb) in &parts {
        dgamma.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
        dbeta.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect();
    (dx, f32s(dgamma), f32s(dbeta))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GroupNorm (+ SiLU) by its definition in float64.
    fn reference(g: &NormGeometry, x: &[f64], gamma: &[f64], beta: &[f64]) -> Vec<f64> {
        let (gs, cpg) = (g.per_group(), g.channels / g.groups);
        let mut y = vec![0.0; x.len()];
        for (ng, (y_g, x_g)) in y.chunks_mut(gs).zip(x.chunks(gs)).enumerate() {
            let mean = x_g.iter().sum::<f64>() / gs as f64;
            let var = x_g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / gs as f64;
            for (i, (o, v)) in y_g.iter_mut().zip(x_g).enumerate() {
                let c = (ng % g.groups) * cpg + i / g.pixels;
                let a = gamma[c] * (v - mean) / (var + g.eps).sqrt() + beta[c];
                *o = if g.silu { a / (1.0 + (-a).exp()) } else { a };
            }
        }
        y
    }

    fn wave(len: usize, f: f64) -> Vec<f64> {
        (0..len).map(|i| (i as f64 * f).sin() * 1.5 + 0.3).collect()
    }

    fn f32s(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    fn cases() -> Vec<NormGeometry> {
        [(3, 6, 10, 2, true), (2, 4, 9, 4, false), (1, 8, 7, 1, true)]
            .into_iter()
            .map(|(batch, channels, pixels, groups, silu)| NormGeometry {
                batch,
                channels,
                pixels,
                groups,
                eps: 1e-5,
                silu,
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition_in_float64() {
        // float32 normalised values of magnitude <= ~3: 1e-5 absolute.
        for g in cases() {
            let n = g.batch * g.channels * g.pixels;
            let (x, gamma, beta) = (wave(n, 0.7), wave(g.channels, 1.9), wave(g.channels, 0.4));
            let (y, _) = forward(&g, &f32s(&x), &f32s(&gamma), &f32s(&beta));
            for (a, e) in y.iter().zip(reference(&g, &x, &gamma, &beta)) {
                assert!((*a as f64 - e).abs() < 1e-5, "{g:?}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn backward_matches_central_differences_of_the_float64_definition() {
        // L = <c, y>; central differences with h = 1e-5 of the float64 definition are
        // accurate to ~1e-9; the float32 kernel to ~1e-5 relative: 2e-4 absolute bound.
        for g in cases() {
            let n = g.batch * g.channels * g.pixels;
            let (x, gamma, beta) = (wave(n, 0.7), wave(g.channels, 1.9), wave(g.channels, 0.4));
            let c = wave(n, 2.3);
            let (_, stats) = forward(&g, &f32s(&x), &f32s(&gamma), &f32s(&beta));
            let (dx, dgamma, dbeta) = backward(
                &g,
                &f32s(&x),
                &f32s(&gamma),
                &f32s(&beta),
                &stats,
                &f32s(&c),
            );
            let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
                reference(&g, x, gamma, beta)
                    .iter()
                    .zip(&c)
                    .map(|(y, c)| y * c)
                    .sum()
            };
            let h = 1e-5;
            let diff = |v: &[f64], i: usize, f: &dyn Fn(&[f64]) -> f64| {
                let (mut up, mut down) = (v.to_vec(), v.to_vec());
                up[i] += h;
                down[i] -= h;
                (f(&up) - f(&down)) / (2.0 * h)
            };
            for i in 0..n {
                let e = diff(&x, i, &|x| loss(x, &gamma, &beta));
                assert!(
                    (dx[i] as f64 - e).abs() < 2e-4,
                    "{g:?} dx[{i}]: {} vs {e}",
                    dx[i]
                );
            }
            for i in 0..g.channels {
                let e = diff(&gamma, i, &|gm| loss(&x, gm, &beta));
                assert!((dgamma[i] as f64 - e).abs() < 2e-4, "{g:?} dgamma[{i}]");
                let e = diff(&beta, i, &|b| loss(&x, &gamma, b));
                assert!((dbeta[i] as f64 - e).abs() < 2e-4, "{g:?} dbeta[{i}]");
            }
        }
    }
}
