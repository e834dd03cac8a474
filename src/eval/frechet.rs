//! The Fréchet distance between two Gaussians fitted to feature sets (SPEC §9).
//!
//! With `mu_a, S_a` and `mu_b, S_b` the means and covariances of two feature sets:
//! ```text
//! d^2 = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})
//! ```
//! the squared 2-Wasserstein distance between N(mu_a, S_a) and N(mu_b, S_b). On the features
//! of a classifier trained on the data set ([`super::classifier`]) this is the "Fréchet
//! distance in the classifier's features" — FID's formula, but not FID (no Inception network).
//!
//! Why the symmetric form: pytorch-fid and friends take scipy's `sqrtm(S_a S_b)`, the square
//! root of a non-symmetric product, which for rank-deficient covariances returns complex values
//! and needs an `eps * I` offset and a discarded imaginary part. `S_a^{1/2} S_b S_a^{1/2}` is
//! symmetric positive semi-definite with the same eigenvalues as `S_a S_b`, so two symmetric
//! eigendecompositions (cyclic Jacobi, float64) give the trace exactly up to rounding; the only
//! correction is clamping eigenvalues that rounding pushed slightly below zero.

use crate::error::{Error, Result};

/// Mean and unbiased covariance of a feature set, in float64.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    /// Feature dimension.
    pub dim: usize,
    /// Mean, `dim` values.
    pub mean: Vec<f64>,
    /// Covariance, `dim * dim` row-major, normalised by `n - 1`.
    pub cov: Vec<f64>,
    /// Number of samples the statistics come from.
    pub n: usize,
}

impl GaussianStats {
    /// The statistics of `features` (`n * dim` row-major). Two passes (the mean first, then the
    /// centred products), so large offsets do not cancel the covariance. Errors for `n < 2`,
    /// ragged input or non-finite values.
    pub fn of(features: &[f64], dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Shape("feature dimension 0".into()));
        }
        if !features.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "{} feature values are not rows of {dim}",
                features.len()
            )));
        }
        let n = features.len() / dim;
        if n < 2 {
            return Err(Error::Shape(format!(
                "{n} feature rows; a covariance needs at least 2"
            )));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(Error::Shape(format!(
                "feature value {} (row {}, column {}) is not finite",
                features[i],
                i / dim,
                i % dim
            )));
        }
        let mut mean = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; dim * dim];
        let mut centred = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            for ((c, x), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = x - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                for (s, cj) in cov[i * dim..i * dim + i + 1].iter_mut().zip(&centred) {
                    *s += ci * cj;
                }
            }
        }
        for i in 0..dim {
            for j in 0..=i {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(GaussianStats { dim, mean, cov, n })
    }

    /// Statistics given directly (a known Gaussian). Errors unless `cov` is `dim * dim`,
    /// symmetric and finite.
    pub fn new(mean: Vec<f64>, cov: Vec<f64>, n: usize) -> Result<Self> {
        let dim = mean.len();
        if dim == 0 || cov.len() != dim * dim {
            return Err(Error::Shape(format!(
                "a mean of {dim} values needs a {dim} x {dim} covariance, got {} values",
                cov.len()
            )));
        }
        if mean.iter().chain(&cov).any(|v| !v.is_finite()) {
            return Err(Error::Shape("mean or covariance is not finite".into()));
        }
        for i in 0..dim {
            for j in 0..i {
                let (a, b) = (cov[i * dim + j], cov[j * dim + i]);
                if (a - b).abs() > 1e-12 * (1.0 + a.abs().max(b.abs())) {
                    return Err(Error::Shape(format!(
                        "covariance is not symmetric at ({i}, {j}): {a} vs {b}"
                    )));
                }
            }
        }
        Ok(GaussianStats { dim, mean, cov, n })
    }
}

/// The Fréchet distance `d^2` (module docs) between two fitted Gaussians; errors when the
/// dimensions differ. The result is clamped at 0 (rounding can leave `-1e-13` for equal inputs).
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<f64> {
    if a.dim != b.dim {
        return Err(Error::Shape(format!(
            "Fréchet distance between {}-dim and {}-dim statistics",
            a.dim, b.dim
        )));
    }
    let d = a.dim;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let sqrt_a = sqrt_psd(&a.cov, d)?;
    let mut m = matmul(&matmul(&sqrt_a, &b.cov, d), &sqrt_a, d);
    symmetrize(&mut m, d);
    let (mu, _) = symmetric_eigen(&m, d)?;
    let trace_sqrt: f64 = mu.iter().map(|&v| v.max(0.0).sqrt()).sum();
    Ok((mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * trace_sqrt).max(0.0))
}

/// `S^{1/2}` of a symmetric positive semi-definite `S` (negative rounding eigenvalues -> 0).
fn sqrt_psd(s: &[f64], d: usize) -> Result<Vec<f64>> {
    let (lambda, v) = symmetric_eigen(s, d)?;
    let root: Vec<f64> = lambda.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let x: f64 = (0..d).map(|k| v[i * d + k] * root[k] * v[j * d + k]).sum();
            out[i * d + j] = x;
            out[j * d + i] = x;
        }
    }
    Ok(out)
}

fn matmul(x: &[f64], y: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let xik = x[i * d + k];
            for (o, yk) in out[i * d..(i + 1) * d]
                .iter_mut()
                .zip(&y[k * d..(k + 1) * d])
            {
                *o += xik * yk;
            }
        }
    }
    out
}

fn symmetrize(m: &mut [f64], d: usize) {
    for i in 0..d {
        for j in 0..i {
            let v = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = v;
            m[j * d + i] = v;
        }
    }
}

/// Eigenvalues and eigenvectors (columns of the row-major `V`, `S = V diag(lambda) V^T`) of a
/// symmetric matrix by cyclic Jacobi rotations: each rotation zeroes one off-diagonal entry,
/// and sweeps repeat until the off-diagonal mass is at rounding level (quadratic convergence,
/// ~10 sweeps). Accurate to a few ulps of ||S|| for every eigenvalue, which is what the trace
/// of square roots needs; O(d^3) per sweep is nothing at feature sizes (d ~ 128).
fn symmetric_eigen(s: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    const MAX_SWEEPS: usize = 100;
    let mut a = s.to_vec();
    let mut v = vec![0.0; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j] * a[i * d + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm || off == 0.0 {
            let lambda = (0..d).map(|i| a[i * d + i]).collect();
            return Ok((lambda, v));
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // Rotation J (J_pp = J_qq = c, J_pq = s, J_qp = -s) with (J^T A J)_pq = 0:
                // t = tan(angle) is the smaller root of t^2 + 2 theta t - 1 = 0.
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    Err(Error::Shape(format!(
        "symmetric eigendecomposition of a {d} x {d} matrix did not converge in {MAX_SWEEPS} sweeps"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    /// A random orthogonal matrix (Gram-Schmidt of a Gaussian matrix), row-major.
    fn orthogonal(d: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < d {
            let mut x: Vec<f64> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            for u in &q {
                let dot: f64 = x.iter().zip(u).map(|(a, b)| a * b).sum();
                x.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
            }
            let n = x.iter().map(|a| a * a).sum::<f64>().sqrt();
            q.push(x.iter().map(|a| a / n).collect());
        }
        q.concat()
    }

    /// `Q diag(lambda) Q^T`.
    fn rotated(q: &[f64], lambda: &[f64]) -> Vec<f64> {
        let d = lambda.len();
        let mut out = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] = (0..d)
                    .map(|k| q[i * d + k] * lambda[k] * q[j * d + k])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn jacobi_reconstructs_the_matrix() {
        // S = V diag(lambda) V^T back to float64 rounding of a 6x6 with entries ~1: tol 1e-12.
        let q = orthogonal(6, 1);
        let s = rotated(&q, &[5.0, 2.0, 1.0, 0.5, 1e-3, 0.0]);
        let (lambda, v) = symmetric_eigen(&s, 6).unwrap();
        let back = rotated(&v, &lambda);
        for (x, y) in back.iter().zip(&s) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        let mut sorted = lambda.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for (l, want) in sorted.iter().zip([5.0, 2.0, 1.0, 0.5, 1e-3, 0.0]) {
            assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        }
    }

    #[test]
    fn diagonal_covariances_match_the_closed_form() {
        // SPEC §9. Diagonal S_a, S_b commute, so tr sqrt(S_a^{1/2} S_b S_a^{1/2}) =
        // sum sqrt(a_i b_i) and d^2 = ||mu_a - mu_b||^2 + sum (sqrt a_i - sqrt b_i)^2.
        // Float64 rounding on O(10) sums: tol 1e-12.
        let (va, vb) = ([1.0, 4.0, 0.25, 9.0], [2.0, 1.0, 0.25, 0.0]);
        let diag = |v: &[f64]| {
            let mut m = vec![0.0; v.len() * v.len()];
            v.iter()
                .enumerate()
                .for_each(|(i, x)| m[i * v.len() + i] = *x);
            m
        };
        let a = GaussianStats::new(vec![0.0, 1.0, 2.0, 3.0], diag(&va), 10).unwrap();
        let b = GaussianStats::new(vec![1.0, 1.0, 0.0, 3.0], diag(&vb), 10).unwrap();
        let want = 1.0
            + 4.0
            + va.iter()
                .zip(&vb)
                .map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn commuting_rotated_covariances_match_the_closed_form() {
        // SPEC §9. S_a = Q diag(a) Q^T, S_b = Q diag(b) Q^T share eigenvectors, so d^2 =
        // sum (sqrt a_i - sqrt b_i)^2 in any basis Q; exercises the Jacobi path on full 5x5
        // matrices. Rounding in two eigendecompositions of entries ~10: tol 1e-10.
        let q = orthogonal(5, 7);
        let (la, lb) = ([9.0, 4.0, 1.0, 0.3, 0.0], [1.0, 4.0, 2.0, 0.0, 0.7]);
        let a = GaussianStats::new(vec![0.0; 5], rotated(&q, &la), 10).unwrap();
        let b = GaussianStats::new(vec![0.0; 5], rotated(&q, &lb), 10).unwrap();
        let want: f64 = la
            .iter()
            .zip(&lb)
            .map(|(x, y): (&f64, &f64)| (x.sqrt() - y.sqrt()).powi(2))
            .sum();
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
    }

    #[test]
    fn non_commuting_2d_pair_matches_the_analytic_square_root() {
        // SPEC §9. For 2x2, S_a^{1/2} S_b S_a^{1/2} has the eigenvalues l1, l2 of S_a S_b, and
        // (sqrt l1 + sqrt l2)^2 = tr(S_a S_b) + 2 sqrt(det S_a det S_b), so
        // tr sqrt(.) = sqrt(tr(S_a S_b) + 2 sqrt(det S_a det S_b)) with no eigensolver at all.
        // Float64 rounding: tol 1e-12.
        let sa = [2.0, 0.8, 0.8, 1.0];
        let sb = [0.5, -0.3, -0.3, 3.0];
        let tr_ab = sa[0] * sb[0] + sa[1] * sb[2] + sa[2] * sb[1] + sa[3] * sb[3];
        let det = |m: &[f64; 4]| m[0] * m[3] - m[1] * m[2];
        let tr_sqrt = (tr_ab + 2.0 * (det(&sa) * det(&sb)).sqrt()).sqrt();
        let (mu_a, mu_b): ([f64; 2], [f64; 2]) = ([0.3, -1.0], [1.0, 0.5]);
        let want = (mu_a[0] - mu_b[0]).powi(2) + (mu_a[1] - mu_b[1]).powi(2) + sa[0] + sa[3]
            - 2.0 * tr_sqrt
            + sb[0]
            + sb[3];
        let a = GaussianStats::new(mu_a.to_vec(), sa.to_vec(), 10).unwrap();
        let b = GaussianStats::new(mu_b.to_vec(), sb.to_vec(), 10).unwrap();
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn symmetric_in_its_arguments_and_zero_on_equal_inputs() {
        // SPEC §9. tr sqrt(S_a^{1/2} S_b S_a^{1/2}) = tr sqrt(S_b^{1/2} S_a S_b^{1/2}) (both are
        // the eigenvalues of S_a S_b). Rounding of 8x8 eigendecompositions of entries ~10: the
        // two orders agree to 1e-10, and d(a, a) is within 1e-10 of 0 (the sqrt of the
        // rounding in the smallest eigenvalues is the dominant error).
        let q = orthogonal(8, 3);
        let sa = rotated(&q, &[9.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.1, 0.01]);
        let q2 = orthogonal(8, 4);
        let sb = rotated(&q2, &[4.0, 4.0, 3.0, 1.0, 1.0, 0.2, 0.2, 0.05]);
        let a = GaussianStats::new(vec![0.1; 8], sa, 10).unwrap();
        let b = GaussianStats::new(vec![-0.2; 8], sb, 10).unwrap();
        let (ab, ba) = (
            frechet_distance(&a, &b).unwrap(),
            frechet_distance(&b, &a).unwrap(),
        );
        assert!((ab - ba).abs() < 1e-10, "{ab} vs {ba}");
        assert!(ab > 1.0, "distinct Gaussians, d^2 = {ab}");
        let aa = frechet_distance(&a, &a).unwrap();
        assert!(aa.abs() < 1e-10, "d(a, a) = {aa}");
    }

    #[test]
    fn stats_of_samples_match_a_direct_computation() {
        // Two-pass mean and unbiased covariance of 4 rows against hand-computed values; the
        // 1e6 offset checks the centring (a one-pass sum of squares loses ~6 digits here).
        // Float64 rounding of values ~1e6: tol 1e-8.
        let rows = [[1.0, 2.0], [3.0, 2.0], [1.0, 6.0], [3.0, 6.0]];
        let features: Vec<f64> = rows.iter().flatten().map(|v| v + 1e6).collect();
        let s = GaussianStats::of(&features, 2).unwrap();
        assert_eq!((s.dim, s.n), (2, 4));
        for (got, want) in s.mean.iter().zip([1e6 + 2.0, 1e6 + 4.0]) {
            assert!((got - want).abs() < 1e-8, "{got} vs {want}");
        }
        // var x = 4 / 3, var y = 16 / 3, cov = 0.
        for (got, want) in s.cov.iter().zip([4.0 / 3.0, 0.0, 0.0, 16.0 / 3.0]) {
            assert!((got - want).abs() < 1e-8, "{got} vs {want}");
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert!(GaussianStats::of(&[1.0, 2.0], 2).is_err(), "one row");
        assert!(GaussianStats::of(&[1.0, 2.0, 3.0], 2).is_err(), "ragged");
        assert!(
            GaussianStats::of(&[1.0, 2.0, 3.0, 4.0], 0).is_err(),
            "dim 0"
        );
        assert!(
            GaussianStats::of(&[1.0, f64::NAN, 3.0, 4.0], 2).is_err(),
            "NaN"
        );
        assert!(GaussianStats::new(vec![0.0; 2], vec![1.0, 0.5, 0.0, 1.0], 2).is_err());
        assert!(GaussianStats::new(vec![0.0; 2], vec![1.0; 3], 2).is_err());
        let a = GaussianStats::new(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0], 2).unwrap();
        let b = GaussianStats::new(vec![0.0; 3], rotated(&orthogonal(3, 0), &[1.0; 3]), 2);
        assert!(
            frechet_distance(&a, &b.unwrap()).is_err(),
            "mismatched dims"
        );
    }

    #[test]
    fn same_gaussian_samples_give_the_predicted_small_distance() {
        // SPEC §9 (the data-vs-data floor). For two independent n-samples of N(mu, I_d):
        // E||m_a - m_b||^2 = 2d/n, and to second order the covariance part is
        // ||S_a - S_b||_F^2 / 4 (the Bures metric at I), whose mean is d(d + 1) / (2(n - 1))
        // (Var of an unbiased sample covariance entry: 1/(n-1) off the diagonal, 2/(n-1) on
        // it). So E d^2 ~ 2d/n + d(d+1)/(2(n-1)): the bias shrinks like d^2/n.
        // The estimate is a sum of ~d^2/2 chi-square terms (relative sd ~ sqrt(2/40) ~ 0.2 at
        // d = 8); averaged over 4 seeds ~0.1, so the band [0.6, 1.5] x prediction is >= 4 sd.
        let d = 8;
        let mean_fd = |n: usize| -> f64 {
            let mut total = 0.0;
            for seed in 0..4u64 {
                let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
                let mut draw = || -> Vec<f64> {
                    (0..n * d)
                        .map(|i| {
                            let z: f64 = StandardNormal.sample(&mut rng);
                            z + (i % d) as f64
                        })
                        .collect()
                };
                let (xa, xb) = (draw(), draw());
                let a = GaussianStats::of(&xa, d).unwrap();
                let b = GaussianStats::of(&xb, d).unwrap();
                total += frechet_distance(&a, &b).unwrap();
            }
            total / 4.0
        };
        let mut got_by_n = Vec::new();
        for n in [2000, 32000] {
            let predicted =
                2.0 * d as f64 / n as f64 + (d * (d + 1)) as f64 / (2.0 * (n - 1) as f64);
            let got = mean_fd(n);
            let ratio = got / predicted;
            assert!(
                (0.6..1.5).contains(&ratio),
                "n = {n}: d^2 = {got}, predicted {predicted}"
            );
            got_by_n.push(got);
        }
        // 16x the samples: the prediction shrinks 16x; the ratio of two 4-seed means has a
        // relative sd ~0.14, so > 8x is 3.5 sd (tighter than the bands alone, which allow 6.4x).
        assert!(got_by_n[0] > 8.0 * got_by_n[1], "{got_by_n:?}");
    }
}
