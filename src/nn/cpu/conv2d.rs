//! 2-D convolution on float32 slices in NCHW layout, forward and backward, as matrix products:
//! with `col_n = im2col(x_n)` (`[C kh kw, Ho Wo]`) and `W` viewed as `[O, C kh kw]`,
//! ```text
//! y_n  = W col_n + b                    forward, per image
//! dW   = sum_n dy_n col_n^T             weight gradient
//! db   = sum_n sum_hw dy_n              bias gradient
//! dx_n = col2im(W^T dy_n)               input gradient
//! ```
//! Images run in parallel; each product goes straight to `gemm` on one thread, so the
//! products have good shapes (m = O, n = Ho Wo or C kh kw) instead of the narrow, batch-long
//! ones of a convolution over swapped batch and channel dims. The weight and bias gradients are
//! summed over fixed groups of [`GROUP`] images in group order, so they do not depend on the
//! thread count. Columns are rebuilt in the backward pass rather than kept from the forward
//! (keeping them would cost C kh kw / C times the input's memory per layer).
//! Groups = 1, dilation = 1, equal strides and symmetric padding on both axes: what the UNet and
//! the VAE use ([`ConvGeometry::new`] refuses the rest, and callers fall back to burn's op).

use super::gemm::matmul;
use rayon::prelude::*;

/// Images per partial weight gradient.
pub const GROUP: usize = 4;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeometry {
    /// `None` when the kernel (dilated by nothing) does not fit the padded input.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        [batch, c_in, h, w]: [usize; 4],
        [c_out, c_w, kh, kw]: [usize; 4],
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        if c_w != c_in || stride == 0 || kh == 0 || kw == 0 {
            return None;
        }
        let out = |size: usize, k: usize| (size + 2 * pad).checked_sub(k).map(|d| d / stride + 1);
        Some(ConvGeometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            pad,
            ho: out(h, kh)?,
            wo: out(w, kw)?,
        })
    }

    /// Rows of a column matrix: C kh kw.
    pub fn col_rows(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per channel: Ho Wo.
    pub fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// A 1x1 convolution without stride or padding: the input already is its column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Input coordinate of output coordinate `o` at kernel offset `k`, if inside the image.
    #[inline]
    fn source(&self, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride + k)
            .checked_sub(self.pad)
            .filter(|&i| i < size)
    }
}

impl ConvGeometry {
    /// The output columns `lo..hi` whose input column `ox s + j - pad` lies inside the image,
    /// for kernel column `j`.
    #[inline]
    fn valid_columns(&self, j: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(j).div_ceil(self.stride);
        let hi = (self.w + self.pad).saturating_sub(j).div_ceil(self.stride);
        (lo.min(self.wo), hi.min(self.wo).max(lo.min(self.wo)))
    }
}

/// `col = im2col(x)` for one image `x` `[C, H, W]` into `col` `[C kh kw, Ho Wo]`: each row is
/// the image shifted by one kernel offset, with zeros where it reads the padding.
fn im2col(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    let (hw, p, s) = (g.h * g.w, g.out_pixels(), g.stride);
    for c in 0..g.c_in {
        let plane = &x[c * hw..(c + 1) * hw];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((c * g.kh + i) * g.kw + j) * p..][..p];
                let (lo, hi) = g.valid_columns(j);
                for oy in 0..g.ho {
                    let out = &mut row[oy * g.wo..(oy + 1) * g.wo];
                    let Some(y) = g.source(oy, i, g.h) else {
                        out.fill(0.0);
                        continue;
                    };
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    if lo < hi {
                        let first = lo * s + j - g.pad;
                        let src = &plane[y * g.w + first..];
                        if s == 1 {
                            out[lo..hi].copy_from_slice(&src[..hi - lo]);
                        } else {
                            for (v, x) in out[lo..hi].iter_mut().zip(src.iter().step_by(s)) {
                                *v = *x;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dx += col2im(dcol)` for one image: the adjoint of [`im2col`].
fn col2im(g: &ConvGeometry, dcol: &[f32], dx: &mut [f32]) {
    let (hw, p, s) = (g.h * g.w, g.out_pixels(), g.stride);
    for c in 0..g.c_in {
        let plane = &mut dx[c * hw..(c + 1) * hw];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &dcol[((c * g.kh + i) * g.kw + j) * p..][..p];
                let (lo, hi) = g.valid_columns(j);
                if lo >= hi {
                    continue;
                }
                for oy in 0..g.ho {
                    let Some(y) = g.source(oy, i, g.h) else {
                        continue;
                    };
                    let first = lo * s + j - g.pad;
                    let dst = &mut plane[y * g.w + first..];
                    let src = &row[oy * g.wo + lo..oy * g.wo + hi];
                    if s == 1 {
                        for (d, v) in dst[..hi - lo].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (d, v) in dst.iter_mut().step_by(s).zip(src) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// The column matrix of image `x`: `x` itself for a pointwise convolution, else `buf` filled.
fn columns<'a>(g: &ConvGeometry, x: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if g.is_pointwise() {
        return x;
    }
    buf.resize(g.col_rows() * g.out_pixels(), 0.0);
    im2col(g, x, buf);
    buf
}

/// `y = conv(x, weight) + bias`: `x` `[N, C, H, W]`, `weight` `[O, C, kh, kw]`, `bias` `[O]`;
/// returns `[N, O, Ho, Wo]`.
pub fn forward(g: &ConvGeometry, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (chw, p, k) = (g.c_in * g.h * g.w, g.out_pixels(), g.col_rows());
    assert!(x.len() == g.batch * chw && weight.len() == g.c_out * k && bias.len() == g.c_out);
    let mut y = vec![0f32; g.batch * g.c_out * p];
    if p == 0 {
        return y;
    }
    y.par_chunks_mut(g.c_out * p)
        .zip(x.par_chunks(chw.max(1)))
        .for_each_init(Vec::new, |buf, (y_n, x_n)| {
            for (row, b) in y_n.chunks_mut(p).zip(bias) {
                row.fill(*b);
            }
            let col = columns(g, x_n, buf);
            matmul(y_n, weight, false, col, false, g.c_out, k, p, true);
        });
    y
}

/// Gradients of [`forward`] given `dy` `[N, O, Ho, Wo]`: `(dx, dweight, dbias)`; `dx` only
/// when `need_dx` (the first layer's input needs none).
pub fn backward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let (chw, p, k) = (g.c_in * g.h * g.w, g.out_pixels(), g.col_rows());
    let opk = g.c_out * p;
    assert!(x.len() == g.batch * chw && dy.len() == g.batch * opk);
    let groups = g.batch.div_ceil(GROUP);
    let mut dx = vec![0f32; if need_dx { g.batch * chw } else { 0 }];
    let mut parts = vec![(vec![0f32; g.c_out * k], vec![0f32; g.c_out]); groups];
    // One task per group of images: its slice of dx (if any) and its partial gradients.
    let mut dx_groups: Vec<&mut [f32]> = if need_dx {
        dx.chunks_mut(GROUP * chw.max(1)).collect()
    } else {
        (0..groups).map(|_| &mut [][..]).collect()
    };
    if p > 0 && g.batch > 0 {
        parts
            .par_iter_mut()
            .zip(dx_groups.par_iter_mut())
            .enumerate()
            .for_each(|(gi, ((dw, db), dx_g))| {
                let (mut buf, mut dcol) = (Vec::new(), vec![0f32; if need_dx { k * p } else { 0 }]);
                let first = gi * GROUP;
                for n in first..(first + GROUP).min(g.batch) {
                    let (x_n, dy_n) = (&x[n * chw..(n + 1) * chw], &dy[n * opk..(n + 1) * opk]);
                    for (acc, row) in db.iter_mut().zip(dy_n.chunks(p)) {
                        *acc += row.iter().sum::<f32>();
                    }
                    let col = columns(g, x_n, &mut buf);
                    // dW += dy_n [O, P] col^T ([P, K], col stored [K, P]).
                    matmul(dw, dy_n, false, col, true, g.c_out, p, k, true);
                    if need_dx {
                        let dx_n = &mut dx_g[(n - first) * chw..(n - first + 1) * chw];
                        if g.is_pointwise() {
                            matmul(dx_n, weight, true, dy_n, false, k, g.c_out, p, false);
                        } else {
                            matmul(&mut dcol, weight, true, dy_n, false, k, g.c_out, p, false);
                            col2im(g, &dcol, dx_n);
                        }
                    }
                }
            });
    }
    drop(dx_groups);
    let (mut dw, mut db) = (vec![0f32; g.c_out * k], vec![0f32; g.c_out]);
    for (pw, pb) in &parts {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (need_dx.then_some(dx), dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The convolution by its definition, in float64.
    fn direct(g: &ConvGeometry, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.batch * g.c_out * g.out_pixels()];
        for n in 0..g.batch {
            for o in 0..g.c_out {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut s = b[o];
                        for c in 0..g.c_in {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let (Some(yy), Some(xx)) =
                                        (g.source(oy, i, g.h), g.source(ox, j, g.w))
                                    else {
                                        continue;
                                    };
                                    s += w[((o * g.c_in + c) * g.kh + i) * g.kw + j]
                                        * x[((n * g.c_in + c) * g.h + yy) * g.w + xx];
                                }
                            }
                        }
                        y[((n * g.c_out + o) * g.ho + oy) * g.wo + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| a as f64).collect()
    }

    /// Shapes the networks use: 3x3 pad 1, 3x3 stride 2 pad 1 (downsampling), 1x1; plus a
    /// batch that is not a multiple of GROUP and an odd image size.
    fn cases() -> Vec<ConvGeometry> {
        [
            ([5, 3, 7, 6], [4, 3, 3, 3], 1, 1),
            ([3, 2, 7, 7], [3, 2, 3, 3], 2, 1),
            ([6, 4, 5, 5], [2, 4, 1, 1], 1, 0),
            ([2, 2, 6, 5], [3, 2, 3, 3], 1, 0),
        ]
        .into_iter()
        .map(|(x, w, s, p)| ConvGeometry::new(x, w, s, p).unwrap())
        .collect()
    }

    #[test]
    fn forward_matches_the_definition_in_float64() {
        // float32 products of |values| <= 1 summed over at most 36 terms: 1e-5 absolute.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for g in cases() {
            let x = random(g.batch * g.c_in * g.h * g.w, &mut rng);
            let w = random(g.c_out * g.col_rows(), &mut rng);
            let b = random(g.c_out, &mut rng);
            let ours = forward(&g, &x, &w, &b);
            let want = direct(&g, &f64s(&x), &f64s(&w), &f64s(&b));
            for (a, e) in ours.iter().zip(&want) {
                assert!((*a as f64 - e).abs() < 1e-5, "{g:?}: {a} vs {e}");
            }
        }
    }

    #[test]
    fn backward_is_the_adjoint_of_forward_in_float64() {
        // For L = <c, y(x, W, b)>, every gradient entry equals the central difference of the
        // float64 definition (exact for a function linear in each argument, up to rounding):
        // checked on all entries of dW and db and a sample of dx, to 1e-4 (float32 sums).
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for g in cases() {
            let x = random(g.batch * g.c_in * g.h * g.w, &mut rng);
            let w = random(g.c_out * g.col_rows(), &mut rng);
            let b = random(g.c_out, &mut rng);
            let c = random(g.batch * g.c_out * g.out_pixels(), &mut rng);
            let (dx, dw, db) = backward(&g, &x, &w, &c, true);
            let dx = dx.unwrap();
            let (x64, w64, b64, c64) = (f64s(&x), f64s(&w), f64s(&b), f64s(&c));
            let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
                direct(&g, x, w, b)
                    .iter()
                    .zip(&c64)
                    .map(|(y, c)| y * c)
                    .sum()
            };
            let h = 0.5;
            let diff = |v: &[f64], i: usize, f: &dyn Fn(&[f64]) -> f64| {
                let (mut up, mut down) = (v.to_vec(), v.to_vec());
                up[i] += h;
                down[i] -= h;
                (f(&up) - f(&down)) / (2.0 * h)
            };
            for i in 0..w.len() {
                let e = diff(&w64, i, &|w| loss(&x64, w, &b64));
                assert!(
                    (dw[i] as f64 - e).abs() < 1e-4,
                    "{g:?} dW[{i}]: {} vs {e}",
                    dw[i]
                );
            }
            for i in 0..b.len() {
                let e = diff(&b64, i, &|b| loss(&x64, &w64, b));
                assert!(
                    (db[i] as f64 - e).abs() < 1e-4,
                    "{g:?} db[{i}]: {} vs {e}",
                    db[i]
                );
            }
            for i in (0..x.len()).step_by(7) {
                let e = diff(&x64, i, &|x| loss(x, &w64, &b64));
                assert!(
                    (dx[i] as f64 - e).abs() < 1e-4,
                    "{g:?} dx[{i}]: {} vs {e}",
                    dx[i]
                );
            }
            let (none, dw2, db2) = backward(&g, &x, &w, &c, false);
            assert!(none.is_none());
            assert_eq!((dw2, db2), (dw, db), "dW and db do not depend on need_dx");
        }
    }

    #[test]
    fn gradients_do_not_depend_on_the_thread_count() {
        let g = cases()[0];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = random(g.batch * g.c_in * g.h * g.w, &mut rng);
        let w = random(g.c_out * g.col_rows(), &mut rng);
        let dy = random(g.batch * g.c_out * g.out_pixels(), &mut rng);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let a = one.install(|| backward(&g, &x, &w, &dy, true));
        let b = three.install(|| backward(&g, &x, &w, &dy, true));
        assert_eq!(a, b);
    }
}
