//! The closed-form terms of the variational bound (SPEC §4), in float64: the KL between two
//! Gaussians and the discretised Gaussian decoder NLL over 256 bins, with the error function
//! they need (Rust's std has none).
//!
//! (These belong to `loss.rs` in STYLE's layout; they live here so that the SDE work and the
//! training work do not both create that file. Move them when the two merge.)

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) for one dimension, in nats.
pub fn normal_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
    0.5 * (-1.0 + logvar2 - logvar1
        + (logvar1 - logvar2).exp()
        + (mean1 - mean2).powi(2) * (-logvar2).exp())
}

/// ln erfc(x) for all x, accurate to ~1e-13 relative in erfc: the all-positive series
/// erf(x) = 2/sqrt(pi) e^{-x^2} sum_n 2^n x^{2n+1} / (1 3 5 ... (2n+1)) for |x| < 3, and
/// Laplace's continued fraction erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/...)))
/// for x >= 3 (in log form, so the far tail does not underflow).
pub fn log_erfc(x: f64) -> f64 {
    if x >= 3.0 {
        let mut k = x;
        for n in (1..=80).rev() {
            k = x + (n as f64 / 2.0) / k;
        }
        -x * x - 0.5 * PI.ln() - k.ln()
    } else if x <= -3.0 {
        // erfc(x) = 2 - erfc(-x), erfc(-x) < 2.3e-5.
        (2.0 - log_erfc(-x).exp()).ln()
    } else {
        (1.0 - erf_series(x)).ln()
    }
}

/// erf(x) by the positive series above (|x| < 3 keeps it to ~40 terms).
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / PI.sqrt() * (-x2).exp() * sum
}

/// erf(x).
pub fn erf(x: f64) -> f64 {
    if x.abs() < 3.0 {
        erf_series(x)
    } else {
        x.signum() * (1.0 - log_erfc(x.abs()).exp())
    }
}

/// ln Phi(z), Phi the standard normal CDF: Phi(z) = erfc(-z/sqrt 2)/2.
pub fn log_std_normal_cdf(z: f64) -> f64 {
    0.5f64.ln() + log_erfc(-z * FRAC_1_SQRT_2)
}

/// ln (Phi(b) - Phi(a)) for a < b, without cancellation in either tail.
fn log_normal_interval(a: f64, b: f64) -> f64 {
    // In the upper tail use the survival function 1 - Phi(z) = Phi(-z).
    let (hi, lo) = if a > 0.0 {
        (log_std_normal_cdf(-a), log_std_normal_cdf(-b))
    } else {
        (log_std_normal_cdf(b), log_std_normal_cdf(a))
    };
    hi + (-(lo - hi).exp()).ln_1p()
}

/// Half the width of one of the 256 bins of 8-bit data x = k/127.5 - 1 (DDPM's 1/255).
pub const HALF_BIN: f64 = 1.0 / 255.0;

/// log p(x) of one 8-bit value x in [-1, 1] under the Gaussian N(mean, e^{2 log_scale})
/// discretised to its bin (SPEC §4, DDPM's decoder): ln(Phi(x + 1/255) - Phi(x - 1/255)) in
/// standardised units, with the edge bins extended to -inf (x = -1) and +inf (x = 1).
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let inv_std = (-log_scale).exp();
    let plus = inv_std * (x - mean + HALF_BIN);
    let minus = inv_std * (x - mean - HALF_BIN);
    if x < -0.999 {
        log_std_normal_cdf(plus)
    } else if x > 0.999 {
        log_std_normal_cdf(-minus)
    } else {
        log_normal_interval(minus, plus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let tails = [
            (3.0, 2.209049699858544e-05),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088487583762545e-45),
        ];
        for (x, want) in tails {
            let got = log_erfc(x).exp();
            assert!((got / want - 1.0).abs() < 1e-12, "erfc({x}) = {got}");
        }
        // erfc(2.9) from the series side and erfc(-3) = 2 - erfc(3).
        assert!((log_erfc(2.9).exp() / 4.109787809945886e-05 - 1.0).abs() < 1e-9);
        assert!((log_erfc(-3.0).exp() - (2.0 - 2.209049699858544e-05)).abs() < 1e-15);
    }

    #[test]
    fn normal_kl_closed_form() {
        // KL(N(1, 4) || N(0, 1)) = 0.5 (4 + 1 - 1 - ln 4); identical Gaussians give 0.
        let kl = normal_kl(1.0, 4f64.ln(), 0.0, 0.0);
        assert!((kl - 0.5 * (4.0 + 1.0 - 1.0 - 4f64.ln())).abs() < 1e-15);
        assert!(normal_kl(0.3, -1.0, 0.3, -1.0).abs() < 1e-15);
    }

    #[test]
    fn decoder_bins_sum_to_one() {
        // The 256 bin probabilities of any Gaussian sum to 1 (edges open); tol 1e-12 covers the
        // accumulated rounding of 256 terms.
        for (mean, log_scale) in [(0.1, -3.0), (-0.95, -5.0), (0.4, 0.5)] {
            let total: f64 = (0..256)
                .map(|k| {
                    let x = k as f64 / 127.5 - 1.0;
                    discretized_gaussian_log_likelihood(x, mean, log_scale).exp()
                })
                .sum();
            assert!((total - 1.0).abs() < 1e-12, "{mean} {log_scale}: {total}");
        }
        // Far tail stays finite (log form): a bin 50 standard deviations away.
        let far = discretized_gaussian_log_likelihood(0.5, 0.0, (0.01f64).ln());
        assert!(far.is_finite() && far < -1000.0, "{far}");
    }
}
