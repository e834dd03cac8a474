//! Adapters: network parameterisations reproduce the oracle; CFG's end points (SPEC §5).
use super::*;
use crate::oracle::GaussianMixture;
use crate::prediction::target;
use crate::tensor::{from_rows, to_vec};
use burn::tensor::DType;

/// A "network" that outputs the oracle's exact prediction of a given type; wrapping it in
/// the matching parameterisation must give back the oracle's x0 and eps.
struct OracleNet {
    gm: GaussianMixture,
    prediction: PredictionType,
    sigma_of_t: fn(f64) -> f64,
}

impl Network for OracleNet {
    fn forward(&self, x: Tensor<2>, t: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
        let levels: Vec<NoiseLevel> = t
            .iter()
            .map(|&t| NoiseLevel {
                sigma: (self.sigma_of_t)(t),
                t,
            })
            .collect();
        let d = self.gm.denoise(&x, &levels, None);
        let (a, s) = vp_coefficients(&levels);
        target(self.prediction, &d.x0, &d.eps, &a, &s)
    }
}

fn batch() -> (Tensor<2>, Vec<NoiseLevel>) {
    let x = from_rows(
        vec![0.3, -0.2, -1.5, 0.7, 2.0, 2.5],
        3,
        2,
        &crate::device::cpu(),
        DType::F64,
    );
    let levels = [0.05, 1.0, 7.0]
        .iter()
        .map(|&s: &f64| NoiseLevel { sigma: s, t: s })
        .collect();
    (x, levels)
}

fn close(a: &Tensor<2>, b: &Tensor<2>, tol: f64) -> bool {
    to_vec(a)
        .iter()
        .zip(to_vec(b))
        .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn every_discrete_parameterisation_reproduces_the_oracle() {
    // tol 1e-9: float64 conversions divide by a >= 0.14 and s >= 0.05.
    let (x, levels) = batch();
    let gm = GaussianMixture::toy_2d();
    let exact = gm.denoise(&x, &levels, None);
    for p in [
        PredictionType::Eps,
        PredictionType::X0,
        PredictionType::V,
        PredictionType::Score,
    ] {
        let den = NetworkDenoiser {
            net: OracleNet {
                gm: gm.clone(),
                prediction: p,
                sigma_of_t: |t| t,
            },
            parameterization: Parameterization::Discrete {
                prediction: p,
                learned_variance: false,
            },
        };
        let got = den.denoise(&x, &levels, None);
        assert!(close(&got.x0, &exact.x0, 1e-9), "{p:?}");
        assert!(close(&got.eps, &exact.eps, 1e-9), "{p:?}");
    }
}

/// F for EDM: given c_in x and c_noise, return (D - c_skip x)/c_out from the oracle's D.
struct EdmOracleNet {
    gm: GaussianMixture,
    sigma_data: f64,
}

impl Network for EdmOracleNet {
    fn forward(&self, x_in: Tensor<2>, c_noise: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
        let sd2 = self.sigma_data * self.sigma_data;
        let x = to_vec(&x_in);
        let mut out = Vec::new();
        for (row, cn) in x.chunks(2).zip(c_noise) {
            let sigma = (4.0 * cn).exp();
            let x_ve: Vec<f64> = row
                .iter()
                .map(|v| v * (sigma * sigma + sd2).sqrt())
                .collect();
            // Oracle D(x; sigma) in VE coordinates: x0 prediction at x_vp = a x.
            let level = NoiseLevel { sigma, t: 0.0 };
            let a = level.alpha();
            let x_vp: Vec<f64> = x_ve.iter().map(|v| a * v).collect();
            let d = &self.gm.posterior_vp(&x_vp, level)[0].x0;
            let c_skip = sd2 / (sigma * sigma + sd2);
            let c_out = sigma * self.sigma_data / (sigma * sigma + sd2).sqrt();
            out.extend((0..2).map(|i| (d[i] - c_skip * x_ve[i]) / c_out));
        }
        from_rows(out, c_noise.len(), 2, &crate::device::cpu(), DType::F64)
    }
}

#[test]
fn edm_preconditioning_reproduces_the_oracle() {
    let (x, levels) = batch();
    let gm = GaussianMixture::toy_2d();
    let exact = gm.denoise(&x, &levels, None);
    let den = NetworkDenoiser {
        net: EdmOracleNet {
            gm,
            sigma_data: 0.5,
        },
        parameterization: Parameterization::Edm { sigma_data: 0.5 },
    };
    let got = den.denoise(&x, &levels, None);
    assert!(close(&got.x0, &exact.x0, 1e-9));
    assert!(close(&got.eps, &exact.eps, 1e-9));
}

/// A conditional toy denoiser whose prediction depends on x and the label, with its own
/// form for the null label -1: x0 = tanh(x_t) (1 + label/10) + label/20 for a class, and
/// x0 = x_t / 2 unconditionally; eps from x0 and the per-sample level.
struct LabelDependent;
impl Denoiser for LabelDependent {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        let [n, d] = x_t.dims();
        let labels = labels.expect("a conditional denoiser");
        let x = to_vec(x_t);
        let x0: Vec<f64> = (0..n * d)
            .map(|j| match labels[j / d] {
                -1 => 0.5 * x[j],
                l => x[j].tanh() * (1.0 + l as f64 / 10.0) + l as f64 / 20.0,
            })
            .collect();
        let x0 = from_rows(x0, n, d, &x_t.device(), x_t.dtype());
        let (a, s) = vp_coefficients(levels);
        let eps = crate::prediction::eps_from_x0(x_t, &x0, &a, &s);
        Denoised {
            x0,
            eps,
            variance_output: None,
        }
    }
}

#[test]
fn guidance_interpolates_and_extrapolates_from_the_unconditional_prediction() {
    // SPEC §5 with the adapter's convention: w weighs the conditional direction from the
    // unconditional prediction, pred = uncond + w (cond - uncond), for x0 and eps alike (so w = 0
    // is unconditional, w = 1 conditional, w = 2 the extrapolation 2 cond - uncond). Per-sample
    // levels exercise the adapter's doubling of the level slice. Float64, tol 1e-12 relative to
    // 1 + |value|: one multiply-add on O(1) values (eps = (x_t - a x0)/s with s >= 0.05 stays
    // below ~50).
    let (x, levels) = batch();
    let labels = [3i64, 0, 7];
    let cond = LabelDependent.denoise(&x, &levels, Some(&labels));
    let uncond = LabelDependent.denoise(&x, &levels, Some(&[-1, -1, -1]));
    assert!(
        !close(&cond.x0, &uncond.x0, 1e-3),
        "the test needs cond != uncond"
    );
    let guided = |w: f64| {
        Guided {
            inner: LabelDependent,
            guidance_scale: w,
        }
        .denoise(&x, &levels, Some(&labels))
    };
    let (w0, w1, w2) = (guided(0.0), guided(1.0), guided(2.0));
    assert!(close(&w0.x0, &uncond.x0, 1e-12) && close(&w0.eps, &uncond.eps, 1e-12));
    assert!(close(&w1.x0, &cond.x0, 1e-12) && close(&w1.eps, &cond.eps, 1e-12));
    let extrapolated =
        |c: &Tensor<2>, u: &Tensor<2>| u.clone() + (c.clone() - u.clone()).mul_scalar(2.0);
    assert!(close(&w2.x0, &extrapolated(&cond.x0, &uncond.x0), 1e-12));
    assert!(close(&w2.eps, &extrapolated(&cond.eps, &uncond.eps), 1e-12));
    // The extrapolation, by hand on the first element: 2 cond - uncond.
    let (c0, u0) = (to_vec(&cond.x0)[0], to_vec(&uncond.x0)[0]);
    assert!((to_vec(&w2.x0)[0] - (2.0 * c0 - u0)).abs() < 1e-12 * (1.0 + c0.abs()));
}

#[test]
fn noise_level_coefficients() {
    let l = NoiseLevel { sigma: 2.0, t: 0.0 };
    assert!((l.alpha() - 1.0 / 5f64.sqrt()).abs() < 1e-15);
    assert!((l.sigma_vp() - 2.0 / 5f64.sqrt()).abs() < 1e-15);
    assert!((l.alpha_bar() - 0.2).abs() < 1e-15);
    let inf = NoiseLevel {
        sigma: f64::INFINITY,
        t: 0.0,
    };
    assert_eq!((inf.alpha(), inf.sigma_vp()), (0.0, 1.0));
    let z = NoiseLevel::clean();
    assert_eq!((z.alpha(), z.sigma_vp()), (1.0, 0.0));
}
