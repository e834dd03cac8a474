//! DPM-Solver++(2M) (Lu et al. 2022, SPEC §5): a second-order multistep solver of the
//! probability-flow ODE in the data-prediction form, stepping in lambda = log(a / s) = -ln sigma.
//!
//! Symbols: `a = sqrt(alpha_bar)`, `s = sqrt(1 - alpha_bar)` of the levels a step moves
//! between (`_s` the current one, `_t` the next), `h = lambda_t - lambda_s`, `x0_hat` the
//! denoiser's x_0 prediction, `r = h_prev / h`. The state is in VP scaling (x_T ~ N(0, I)).
//!
//! `x_t = (s_t / s_s) x_s - a_t (e^{-h} - 1) D`, `D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev`
//! (first step: D = x0_hat). The last step, to sigma = 0 (lambda = +inf), returns the x_0
//! prediction (a first-order step). A first level at zero terminal SNR (sigma = +inf,
//! lambda = -inf, a = 0, s = 1) is handled: h = +inf gives e^{-h} = 0, so that step is
//! `x_t = s_t x_s + a_t x0_hat`, and the next one falls back to first order (r = +inf).

use super::{report, Callback, StepInfo};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::tensor::lincomb;
use burn::tensor::Tensor;

/// One first-order DPM-Solver++ step from level `from` to `to` with the data estimate `d`:
/// `(s_t / s_s) x - a_t (e^{-h} - 1) d`.
pub fn dpm_pp_step(x: &Tensor<2>, d: &Tensor<2>, from: NoiseLevel, to: NoiseLevel) -> Tensor<2> {
    let h = to.lambda() - from.lambda();
    let (s_s, s_t, a_t) = (from.sigma_vp(), to.sigma_vp(), to.alpha());
    lincomb(&[s_t / s_s], x, &[-a_t * (-h).exp_m1()], d)
}

/// The 2M data estimate: `D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev` with `r = h_prev / h`.
pub fn dpm_pp_2m_estimate(x0_hat: &Tensor<2>, x0_prev: &Tensor<2>, r: f64) -> Tensor<2> {
    let c = 0.5 / r;
    lincomb(&[1.0 + c], x0_hat, &[-c], x0_prev)
}

/// DPM-Solver++(2M) along `grid` (levels from noisy to clean; VP state `x` at `grid[0]`).
pub fn sample_dpmpp_2m<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Tensor<2> {
    let steps = grid.len() - 1;
    let mut x = x;
    // History in local variables: the previous x_0 prediction and its step size h_prev.
    let mut prev: Option<(Tensor<2>, f64)> = None;
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let x0_hat = denoiser.denoise(&x, &[cur], labels).x0;
        let h = next.lambda() - cur.lambda();
        x = if next.sigma == 0.0 {
            x0_hat.clone()
        } else {
            let d = match &prev {
                Some((x0_prev, h_prev)) if h_prev.is_finite() => {
                    dpm_pp_2m_estimate(&x0_hat, x0_prev, h_prev / h)
                }
                _ => x0_hat.clone(),
            };
            dpm_pp_step(&x, &d, cur, next)
        };
        report(
            &mut callback,
            StepInfo {
                step: k,
                steps,
                level: next,
                x: &x,
                x0_hat: &x0_hat,
            },
        );
        prev = Some((x0_hat, h));
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{from_rows, to_vec};
    use burn::tensor::{DType, Device};

    fn t(v: Vec<f64>) -> Tensor<2> {
        let n = v.len();
        from_rows(v, 1, n, &Device::default(), DType::F64)
    }

    #[test]
    fn first_order_step_is_exact_for_a_constant_x0_prediction() {
        // With D fixed, the exact ODE solution in VP form is x_t = s_t/s_s x_s + (a_t - a_s s_t/s_s) D,
        // which equals the step's (s_t/s_s) x - a_t (e^{-h} - 1) D since e^{-h} = (a_s s_t)/(a_t s_s).
        let from = NoiseLevel { sigma: 2.0, t: 0.0 };
        let to = NoiseLevel { sigma: 0.5, t: 0.0 };
        let (x, d) = (t(vec![1.0, -2.0]), t(vec![0.3, 0.7]));
        let got = to_vec(&dpm_pp_step(&x, &d, from, to));
        let ratio = to.sigma_vp() / from.sigma_vp();
        for i in 0..2 {
            let xi = [1.0, -2.0][i];
            let di = [0.3, 0.7][i];
            let want = ratio * xi + (to.alpha() - from.alpha() * ratio) * di;
            assert!((got[i] - want).abs() < 1e-14, "{} vs {want}", got[i]);
        }
        // From sigma = +inf (zero terminal SNR): x_t = s_t x + a_t D.
        let inf = NoiseLevel {
            sigma: f64::INFINITY,
            t: 0.0,
        };
        let got = to_vec(&dpm_pp_step(&x, &d, inf, to));
        let want = to.sigma_vp() * 1.0 + to.alpha() * 0.3;
        assert!((got[0] - want).abs() < 1e-14);
    }
}
