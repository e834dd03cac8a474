//! The closed-form terms of the variational bound (SPEC §4), written once on burn tensors so
//! that the float64 bound ([`super::vlb`], F64 tensors on the host) and the hybrid training
//! loss ([`crate::loss::hybrid`], float32 with autodiff) share them: the KL between two
//! Gaussians and the discretised Gaussian decoder log-likelihood over 256 bins, with ln erfc
//! in log form so that neither tail underflows.
//!
//! Branches (the erfc tail, the upper/lower half of the normal, the two edge bins) are chosen
//! per element by mask, and every branch is evaluated on inputs clamped into its own domain:
//! an unselected branch is finite, so its (masked) gradient is zero and never NaN.
//!
//! Precision: in float64 ln erfc is accurate to ~1e-11 relative in erfc at worst (x just below
//! 3, where 1 - erf cancels) and ~1e-15 elsewhere, given an erf accurate to a few ulps (burn's
//! flex backend uses libm's). improved-diffusion clamps the bin mass as log(max(p, 1e-12)) in
//! float32; working in log form this code needs no such floor except one: when the two CDF
//! values of a bin round to the same number (a bin mass below one ulp of the larger CDF, which
//! happens in float32 only when sigma >> the bin width), the mass is floored at that ulp, i.e.
//! ln p >= ln Phi(hi) + ln(ulp) (about -16.6 in float32, -36.7 in float64).

#[cfg(test)]
use burn::tensor::TensorData;
use burn::tensor::{DType, Tensor};
use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats. Arguments broadcast
/// (a per-sample `[N, 1]` or shared `[1, 1]` log-variance against `[N, D]` means).
pub fn normal_kl<const D: usize>(
    mean1: Tensor<D>,
    logvar1: Tensor<D>,
    mean2: Tensor<D>,
    logvar2: Tensor<D>,
) -> Tensor<D> {
    let log_ratio = logvar1 - logvar2.clone();
    ((mean1 - mean2).square() * logvar2.neg().exp() + log_ratio.clone().exp() - log_ratio)
        .sub_scalar(1.0)
        .mul_scalar(0.5)
}

/// Where Laplace's continued fraction takes over from 1 - erf (erfc(3) = 2.2e-5, so at most
/// ~4.7 digits cancel below it).
const TAIL_START: f64 = 3.0;
/// Depth of the continued fraction: 30 levels already reach float64 rounding at x = 3.
const CONTINUED_FRACTION_DEPTH: usize = 40;

/// ln erfc(x) per element: ln(1 - erf(x)) for x < 3 (no cancellation for x <= 0, at most ~4.7
/// digits lost just below 3), and Laplace's continued fraction
/// erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/...))) in log form for x >= 3.
pub fn log_erfc<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let centre = x.clone().clamp_max(TAIL_START).erf().neg().log1p();
    let x_tail = x.clone().clamp_min(TAIL_START);
    let mut fraction = x_tail.clone();
    for n in (1..=CONTINUED_FRACTION_DEPTH).rev() {
        fraction = x_tail.clone() + fraction.recip().mul_scalar(n as f64 / 2.0);
    }
    let tail = (x_tail.square().neg() - fraction.log()).sub_scalar(0.5 * PI.ln());
    centre.mask_where(x.greater_equal_elem(TAIL_START), tail)
}

/// ln Phi(z), Phi the standard normal CDF: Phi(z) = erfc(-z/sqrt 2)/2.
pub fn log_std_normal_cdf<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    log_erfc(z.mul_scalar(-FRAC_1_SQRT_2)).add_scalar(0.5f64.ln())
}

/// The largest value below 1 of a float dtype: the cap on Phi(lo)/Phi(hi) in a bin.
fn largest_below_one(dtype: DType) -> f64 {
    let mantissa_bits = match dtype {
        DType::F64 => 53,
        DType::F16 => 11,
        DType::BF16 => 8,
        _ => 24,
    };
    1.0 - 0.5f64.powi(mantissa_bits)
}

/// ln (Phi(b) - Phi(a)) for a < b elementwise, without cancellation in either tail: where
/// a > 0 the interval is reflected, Phi(b) - Phi(a) = Phi(-a) - Phi(-b), so the larger CDF is
/// always the one nearer 1/2.
fn log_normal_interval<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    let reflect = a.clone().greater_elem(0.0);
    let lo = a.clone().mask_where(reflect.clone(), b.clone().neg());
    let hi = b.mask_where(reflect, a.neg());
    let cap = largest_below_one(lo.dtype());
    let (log_lo, log_hi) = (log_std_normal_cdf(lo), log_std_normal_cdf(hi));
    let ratio = (log_lo - log_hi.clone()).exp().clamp_max(cap);
    log_hi + ratio.neg().log1p()
}

/// Half the width of one of the 256 bins of 8-bit data x = k/127.5 - 1 (DDPM's 1/255).
pub const HALF_BIN: f64 = 1.0 / 255.0;

/// log p(x) per element for 8-bit values x in [-1, 1] under N(mean, e^{2 log_scale})
/// discretised to their bins (SPEC §4, DDPM's decoder): ln(Phi(x + 1/255) - Phi(x - 1/255)) in
/// standardised units, with the edge bins open to -inf (x = -1) and +inf (x = 1). `mean` and
/// `log_scale` broadcast against `x`.
pub fn discretized_gaussian_log_likelihood<const D: usize>(
    x: Tensor<D>,
    mean: Tensor<D>,
    log_scale: Tensor<D>,
) -> Tensor<D> {
    let inv_std = log_scale.neg().exp();
    let centred = x.clone() - mean;
    let plus = centred.clone().add_scalar(HALF_BIN) * inv_std.clone();
    let minus = centred.sub_scalar(HALF_BIN) * inv_std;
    let interior = log_normal_interval(minus.clone(), plus.clone());
    let lower_edge = log_std_normal_cdf(plus);
    let upper_edge = log_std_normal_cdf(minus.neg());
    interior
        .mask_where(x.clone().lower_elem(-0.999), lower_edge)
        .mask_where(x.greater_elem(0.999), upper_edge)
}

/// One float64 value as a `[1]` tensor on the default device.
#[cfg(test)]
fn scalar_tensor(x: f64) -> Tensor<1> {
    Tensor::from_data(
        TensorData::new(vec![x], [1]),
        (&crate::device::cpu(), DType::F64),
    )
}

pub use crate::special::erf;

#[cfg(test)]
mod tests {
    use super::*;

    fn log_erfc_f64(x: f64) -> f64 {
        log_erfc(scalar_tensor(x)).into_scalar::<f64>()
    }

    fn decoder_f64(x: f64, mean: f64, log_scale: f64) -> f64 {
        discretized_gaussian_log_likelihood(
            scalar_tensor(x),
            scalar_tensor(mean),
            scalar_tensor(log_scale),
        )
        .into_scalar::<f64>()
    }

    #[test]
    fn erf_matches_published_values() {
        // Reference values (Abramowitz & Stegun / mpmath to 16 digits); tol 1e-13 relative.
        let cases = [
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-1.5, -0.9661051464753108),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-13, "erf({x}) = {}", erf(x));
        }
        // The continued-fraction tail: tol 1e-12 relative (40 levels reach rounding at x = 3).
        let tails = [
            (3.0, 2.209049699858544e-05),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088487583762545e-45),
        ];
        for (x, want) in tails {
            let got = log_erfc_f64(x).exp();
            assert!((got / want - 1.0).abs() < 1e-12, "erfc({x}) = {got}");
        }
        // erfc(2.9) from 1 - erf (4.6 digits cancel: tol 1e-9) and erfc(-3) = 2 - erfc(3)
        // (a value near 2 through log1p and exp: tol 4e-15, a few ulps of 2).
        assert!((log_erfc_f64(2.9).exp() / 4.109787809945886e-05 - 1.0).abs() < 1e-9);
        assert!((log_erfc_f64(-3.0).exp() - (2.0 - 2.209049699858544e-05)).abs() < 4e-15);
    }

    #[test]
    fn normal_kl_closed_form_and_broadcast() {
        // KL(N(1, 4) || N(0, 1)) = 0.5 (4 + 1 - 1 - ln 4); identical Gaussians give 0 (tol
        // 1e-15: a handful of float64 operations on O(1) values).
        let dev = crate::device::cpu();
        let full = |v: Vec<f64>, n: usize, d: usize| -> Tensor<2> {
            Tensor::from_data(TensorData::new(v, [n, d]), (&dev, DType::F64))
        };
        let kl = normal_kl(
            full(vec![1.0, 0.3], 1, 2),
            full(vec![4f64.ln(), -1.0], 1, 2),
            full(vec![0.0, 0.3], 1, 2),
            full(vec![0.0, -1.0], 1, 2),
        );
        let kl: Vec<f64> = kl.to_data().try_into_vec_as().unwrap();
        assert!((kl[0] - 0.5 * (4.0 + 1.0 - 1.0 - 4f64.ln())).abs() < 1e-15);
        assert!(kl[1].abs() < 1e-15);
        // A shared [1, 1] log-variance broadcasts over a [2, 2] batch.
        let kl = normal_kl(
            full(vec![1.0, 0.0, 2.0, -1.0], 2, 2),
            full(vec![0.0], 1, 1),
            full(vec![0.0; 4], 2, 2),
            full(vec![0.0], 1, 1),
        );
        let kl: Vec<f64> = kl.to_data().try_into_vec_as().unwrap();
        assert_eq!(kl, vec![0.5, 0.0, 2.0, 0.5]);
    }

    #[test]
    fn decoder_bins_sum_to_one() {
        // The 256 bin probabilities of any Gaussian sum to 1 (edges open); tol 1e-12 covers the
        // accumulated rounding of 256 terms.
        for (mean, log_scale) in [(0.1, -3.0), (-0.95, -5.0), (0.4, 0.5), (0.999, -6.0)] {
            let total: f64 = (0..256)
                .map(|k| {
                    let x = k as f64 / 127.5 - 1.0;
                    decoder_f64(x, mean, log_scale).exp()
                })
                .sum();
            assert!((total - 1.0).abs() < 1e-12, "{mean} {log_scale}: {total}");
        }
        // Far tail stays finite (log form): a bin 50 standard deviations away, whose log mass
        // is ln(Phi(-49.61) - Phi(-50.39)) = -1234.8 (Mills ratio: ln(phi(z)/|z|) at z = -49.61
        // to 1e-3; the next bin's mass is e^{-39} smaller, tol 0.01).
        let far = decoder_f64(0.5, 0.0, (0.01f64).ln());
        let z = (0.5f64 - 1.0 / 255.0) / 0.01;
        let mills = -0.5 * z * z - (2.0 * PI).sqrt().ln() - z.ln();
        assert!((far - mills).abs() < 0.01, "{far} vs {mills}");
    }

    #[test]
    fn float32_decoder_is_finite_and_matches_float64() {
        // The same bins in float32 (the training dtype), 11 to 87 sigma out in the tails: within
        // 1e-3 relative of the float64 value (float32 rounding of z costs ~1e-7 |z|^2 in the
        // exponent, 1e-3 at most at z = 87 where the value is -3800).
        let dev = crate::device::cpu();
        let xs = [-1.0, -0.5, 0.0, 0.2, 1.0];
        let run32 = |mean: f64, log_scale: f64| -> Vec<f64> {
            let x = Tensor::<1>::from_data(TensorData::new(xs.to_vec(), [5]), (&dev, DType::F32));
            let m = x.zeros_like().add_scalar(mean);
            let ls = x.zeros_like().add_scalar(log_scale);
            discretized_gaussian_log_likelihood(x, m, ls)
                .to_data()
                .try_into_vec_as()
                .unwrap()
        };
        for (mean, log_scale) in [(0.0, -4.0), (0.6, -4.0), (-0.3, -1.0)] {
            for (x, got) in xs.iter().zip(run32(mean, log_scale)) {
                let want = decoder_f64(*x, mean, log_scale);
                assert!(
                    (got - want).abs() < 1e-3 * want.abs().max(1.0),
                    "x {x} mean {mean} log_scale {log_scale}: f32 {got} vs f64 {want}"
                );
            }
        }
        // sigma = e^12: an interior bin holds 2e-8 of Phi, below float32's ulp, so the two CDF
        // values round together; the mass is floored at one ulp instead of giving -inf:
        // ln p >= ln Phi(hi) + ln 2^-24 with Phi(hi) ~ 1/2 here (the exact value is -17.8, the
        // floor -17.3; tol 1e-3 for float32 rounding).
        let floor = 25.0 * 0.5f64.ln();
        for (x, got) in xs.iter().zip(run32(0.0, 12.0)) {
            assert!(got.is_finite() && got >= floor - 1e-3, "x {x}: {got}");
        }
    }
}
