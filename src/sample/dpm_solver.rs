//! DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b), SPEC §5: multistep solvers
//! of the probability-flow ODE (and, in their `sde` forms, of the reverse SDE) stepping in
//! lambda = log(a / s) = -ln sigma, as diffusers' `DPMSolverMultistepScheduler` runs them.
//!
//! Symbols: `a = sqrt(alpha_bar)`, `s = sqrt(1 - alpha_bar)` of the levels a step moves
//! between (`_s` the current one, `_t` the next), `h = lambda_t - lambda_s`, `m0, m1, m2` the
//! model terms at the current and the two previous levels (x0_hat for the data-prediction
//! form `++`, eps_hat for the noise-prediction form), `h_0, h_1` the previous step sizes,
//! `r0 = h_0 / h`, `r1 = h_1 / h`, and `D0 = m0`, `D1`, `D2` the divided differences:
//! order 2: `D1 = (m0 - m1) / r0`; order 3: `D1_0 = (m0 - m1) / r0`, `D1_1 = (m1 - m2) / r1`,
//! `D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1)`, `D2 = (D1_0 - D1_1) / (r0 + r1)`.
//!
//! DPM-Solver++(2M) (SPEC §5) is order 2, data prediction, midpoint:
//! `x_t = (s_t / s_s) x_s - a_t (e^{-h} - 1) (D0 + D1 / 2)`. The step to sigma = 0
//! (lambda = +inf) is first order and returns the x_0 prediction. A first level at zero
//! terminal SNR (sigma = +inf, lambda = -inf, a = 0, s = 1) is handled in the data-prediction
//! ODE form: h = +inf gives e^{-h} = 0, so that step is `x_t = s_t x_s + a_t x0_hat`, and
//! differences with it are never used (the order falls back as if the history started after it).

use super::{report, Callback};
use crate::denoiser::{Denoiser, NoiseLevel};
use crate::prediction::eps_from_x0;
use crate::rng::NoiseSource;
use crate::tensor::lincomb;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which model term the solver integrates (diffusers' `algorithm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpmAlgorithm {
    /// DPM-Solver++: the data prediction x0_hat (`dpmsolver++`).
    #[default]
    DataPrediction,
    /// DPM-Solver: the noise prediction eps_hat = (x - a x0_hat) / s, so that a clipped x0_hat
    /// is honoured as diffusers' thresholding does (`dpmsolver`).
    NoisePrediction,
}

/// The second-order correction (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpmSolverType {
    #[default]
    Midpoint,
    Heun,
}

/// Options of [`sample_dpm_solver`]; the default is DPM-Solver++(2M).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DpmSolverOptions {
    /// 1, 2 or 3.
    pub order: usize,
    pub algorithm: DpmAlgorithm,
    /// The SDE variant (`sde-dpmsolver++` / `sde-dpmsolver`): fresh noise on every step.
    pub sde: bool,
    pub solver_type: DpmSolverType,
    /// Lower the order on the last steps of runs shorter than 15 steps.
    pub lower_order_final: bool,
    /// First order on the last step.
    pub euler_at_final: bool,
}

impl Default for DpmSolverOptions {
    fn default() -> Self {
        DpmSolverOptions {
            order: 2,
            algorithm: DpmAlgorithm::DataPrediction,
            sde: false,
            solver_type: DpmSolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
        }
    }
}

impl DpmSolverOptions {
    /// The order of step `k` of `steps` as diffusers chooses it: at most the number of model
    /// terms so far (k + 1) and `order`; first order on the last step when `euler_at_final`, when
    /// `lower_order_final` and steps < 15, or when the last level is sigma = 0; at most second
    /// order on the step before it when `lower_order_final` and steps < 15.
    pub fn order_at(&self, k: usize, steps: usize, final_sigma_zero: bool) -> usize {
        let short = self.lower_order_final && steps < 15;
        let last_first_order = k + 1 == steps && (self.euler_at_final || short || final_sigma_zero);
        let second_last = k + 2 == steps && short;
        let history = k.min(self.order);
        if self.order == 1 || history < 1 || last_first_order {
            1
        } else if self.order == 2 || history < 2 || second_last {
            2
        } else {
            3
        }
    }
}

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

/// One multistep update of order `terms.len()` (1 to 3) from `levels[0]` (current) to `to`:
/// `terms[j]` is the model term at `levels[j]` (`levels[1]`, `levels[2]` the previous levels).
/// `z` is the noise of the SDE forms. Coefficients: see the module doc and Lu et al.
pub fn dpm_solver_update(
    x: &Tensor<2>,
    terms: &[&Tensor<2>],
    levels: &[NoiseLevel],
    to: NoiseLevel,
    options: &DpmSolverOptions,
    z: Option<&Tensor<2>>,
) -> Tensor<2> {
    let (a_s, s_s) = (levels[0].alpha(), levels[0].sigma_vp());
    let (a_t, s_t) = (to.alpha(), to.sigma_vp());
    let h = to.lambda() - levels[0].lambda();
    if h == 0.0 {
        // A zero-length step (Karras or Lu sigmas ending at sigma_min with a sigma_min final
        // level): the exact solution is x itself, where the divided differences are 0/0.
        return x.clone();
    }
    let m0 = terms[0];
    // Divided differences D1, D2 (absent below second / third order).
    let (d1, d2) = match terms.len() {
        1 => (None, None),
        2 => {
            let r0 = (levels[0].lambda() - levels[1].lambda()) / h;
            (Some(lincomb(&[1.0 / r0], m0, &[-1.0 / r0], terms[1])), None)
        }
        _ => {
            let r0 = (levels[0].lambda() - levels[1].lambda()) / h;
            let r1 = (levels[1].lambda() - levels[2].lambda()) / h;
            let d1_0 = lincomb(&[1.0 / r0], m0, &[-1.0 / r0], terms[1]);
            let d1_1 = lincomb(&[1.0 / r1], terms[1], &[-1.0 / r1], terms[2]);
            let diff = d1_0.clone() - d1_1;
            let d1 = d1_0 + diff.clone().mul_scalar(r0 / (r0 + r1));
            (Some(d1), Some(diff.mul_scalar(1.0 / (r0 + r1))))
        }
    };
    let heun = options.solver_type == DpmSolverType::Heun || terms.len() == 3;
    // (coefficient of x, of D0, of D1, of D2, of z)
    let (cx, c0, c1, c2, cz) = match (options.algorithm, options.sde) {
        (DpmAlgorithm::DataPrediction, false) => {
            let em1 = (-h).exp_m1(); // e^{-h} - 1
            let c1 = if heun {
                a_t * (em1 / h + 1.0)
            } else {
                -0.5 * a_t * em1
            };
            let c2 = -a_t * ((em1 + h) / (h * h) - 0.5);
            (s_t / s_s, -a_t * em1, c1, c2, 0.0)
        }
        (DpmAlgorithm::DataPrediction, true) => {
            let om = -(-2.0 * h).exp_m1(); // 1 - e^{-2h}
            let c1 = if heun {
                a_t * (om / (-2.0 * h) + 1.0)
            } else {
                0.5 * a_t * om
            };
            let c2 = a_t * ((om - 2.0 * h) / (4.0 * h * h) - 0.5);
            (s_t / s_s * (-h).exp(), a_t * om, c1, c2, s_t * om.sqrt())
        }
        (DpmAlgorithm::NoisePrediction, false) => {
            let ep1 = h.exp_m1(); // e^{h} - 1
            let c1 = if heun {
                -s_t * (ep1 / h - 1.0)
            } else {
                -0.5 * s_t * ep1
            };
            let c2 = -s_t * ((ep1 - h) / (h * h) - 0.5);
            (a_t / a_s, -s_t * ep1, c1, c2, 0.0)
        }
        (DpmAlgorithm::NoisePrediction, true) => {
            let ep1 = h.exp_m1();
            let c1 = if heun {
                -2.0 * s_t * (ep1 / h - 1.0)
            } else {
                -s_t * ep1
            };
            let c2 = f64::NAN; // diffusers has no third-order sde-dpmsolver; rejected by configs
            (
                a_t / a_s,
                -2.0 * s_t * ep1,
                c1,
                c2,
                s_t * (2.0 * h).exp_m1().sqrt(),
            )
        }
    };
    // x * cx is dropped when cx = 0 (the step to sigma = 0), so that it cannot turn 0 * inf
    // into NaN.
    let mut out = m0.clone().mul_scalar(c0);
    if cx != 0.0 {
        out = out + x.clone().mul_scalar(cx);
    }
    if let Some(d1) = d1 {
        out = out + d1.mul_scalar(c1);
    }
    if let Some(d2) = d2 {
        out = out + d2.mul_scalar(c2);
    }
    match z {
        Some(z) if cz != 0.0 => out + z.clone().mul_scalar(cz),
        _ => out,
    }
}

/// DPM-Solver++(2M) along `grid` (levels from noisy to clean; VP state `x` at `grid[0]`).
pub fn sample_dpmpp_2m<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    labels: Option<&[i64]>,
    callback: Callback,
) -> Tensor<2> {
    let mut no_noise = crate::rng::Replay(Default::default());
    let options = DpmSolverOptions::default();
    sample_dpm_solver(denoiser, x, grid, &options, &mut no_noise, labels, callback)
}

/// DPM-Solver along `grid` (levels from noisy to clean; VP state `x` at `grid[0]`) with the
/// order schedule of [`DpmSolverOptions::order_at`]. `noise` is drawn on every step of the SDE
/// forms (also the last, as diffusers does) and never by the ODE forms.
#[allow(clippy::too_many_arguments)]
pub fn sample_dpm_solver<D: Denoiser + ?Sized>(
    denoiser: &D,
    x: Tensor<2>,
    grid: &[NoiseLevel],
    options: &DpmSolverOptions,
    noise: &mut dyn NoiseSource,
    labels: Option<&[i64]>,
    mut callback: Callback,
) -> Tensor<2> {
    let steps = grid.len() - 1;
    let final_sigma_zero = grid[steps].sigma == 0.0;
    let mut x = x;
    // History in local variables: the model terms and levels of the last steps, newest first.
    let mut terms: Vec<Tensor<2>> = Vec::new();
    let mut levels: Vec<NoiseLevel> = Vec::new();
    for k in 0..steps {
        let (cur, next) = (grid[k], grid[k + 1]);
        let x0_hat = denoiser.denoise(&x, &[cur], labels).x0;
        let term = match options.algorithm {
            DpmAlgorithm::DataPrediction => x0_hat.clone(),
            DpmAlgorithm::NoisePrediction => {
                eps_from_x0(&x, &x0_hat, &[cur.alpha()], &[cur.sigma_vp()])
            }
        };
        terms.insert(0, term);
        levels.insert(0, cur);
        terms.truncate(3);
        levels.truncate(3);
        // Differences need finite lambdas: a level at sigma = +inf ends the usable history.
        let finite = levels
            .iter()
            .take_while(|l| l.sigma.is_finite())
            .count()
            .max(1);
        let order = options.order_at(k, steps, final_sigma_zero).min(finite);
        let z = options.sde.then(|| noise.noise_like(&x));
        let refs: Vec<&Tensor<2>> = terms.iter().take(order).collect();
        x = dpm_solver_update(&x, &refs, &levels[..order], next, options, z.as_ref());
        report(&mut callback, k, steps, next, &x, &x0_hat);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{from_rows, to_vec};
    use burn::tensor::DType;

    fn t(v: Vec<f64>) -> Tensor<2> {
        let n = v.len();
        from_rows(v, 1, n, &crate::device::cpu(), DType::F64)
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

    #[test]
    fn order_schedule_follows_diffusers() {
        // diffusers' step(): first order until one model term exists, at most `order` terms;
        // first order on the last step (euler_at_final, lower_order_final with < 15 steps, or
        // final sigma 0), at most second order on the step before it (lower_order_final, < 15).
        let orders = |o: DpmSolverOptions, steps, zero| -> Vec<usize> {
            (0..steps).map(|k| o.order_at(k, steps, zero)).collect()
        };
        let third = DpmSolverOptions {
            order: 3,
            ..Default::default()
        };
        assert_eq!(orders(third, 8, true), [1, 2, 3, 3, 3, 3, 2, 1]);
        let no_lower = DpmSolverOptions {
            lower_order_final: false,
            ..third
        };
        assert_eq!(orders(no_lower, 7, true), [1, 2, 3, 3, 3, 3, 1]);
        // sigma_min final with >= 15 steps: the last step keeps third order unless euler_at_final.
        assert_eq!(orders(third, 16, false)[13..], [3, 3, 3]);
        let euler_final = DpmSolverOptions {
            euler_at_final: true,
            ..third
        };
        assert_eq!(orders(euler_final, 16, false)[13..], [3, 3, 1]);
        assert_eq!(
            orders(DpmSolverOptions::default(), 6, false),
            [1, 2, 2, 2, 2, 1]
        );
        let first = DpmSolverOptions {
            order: 1,
            ..Default::default()
        };
        assert_eq!(orders(first, 4, true), [1, 1, 1, 1]);
    }

    #[test]
    fn second_order_update_is_the_2m_formula() {
        // dpm_solver_update with two data terms (midpoint) equals the first-order step with the
        // 2M estimate D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev (SPEC §5); 1e-13: a few float64
        // roundings of O(1) terms.
        let levels = [
            NoiseLevel { sigma: 2.0, t: 0.0 },
            NoiseLevel { sigma: 5.0, t: 0.0 },
        ];
        let to = NoiseLevel { sigma: 0.7, t: 0.0 };
        let (x, m0, m1) = (t(vec![1.0, -2.0]), t(vec![0.3, 0.7]), t(vec![-0.1, 0.4]));
        let opts = DpmSolverOptions::default();
        let got = to_vec(&dpm_solver_update(
            &x,
            &[&m0, &m1],
            &levels,
            to,
            &opts,
            None,
        ));
        let r = (levels[0].lambda() - levels[1].lambda()) / (to.lambda() - levels[0].lambda());
        let d = dpm_pp_2m_estimate(&m0, &m1, r);
        let want = to_vec(&dpm_pp_step(&x, &d, levels[0], to));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-13, "{g} vs {w}");
        }
        // Noise prediction, first order: x_t = (a_t/a_s) x - s_t (e^h - 1) eps (DPM-Solver-1,
        // which is DDIM): check against the DDIM form sqrt(ab_t) x0 + sqrt(1 - ab_t) eps.
        let noise_opts = DpmSolverOptions {
            algorithm: DpmAlgorithm::NoisePrediction,
            ..opts
        };
        let eps = m0.clone();
        let got = to_vec(&dpm_solver_update(
            &x,
            &[&eps],
            &levels[..1],
            to,
            &noise_opts,
            None,
        ));
        let from = levels[0];
        for i in 0..2 {
            let (xi, ei) = ([1.0, -2.0][i], [0.3, 0.7][i]);
            let x0 = (xi - from.sigma_vp() * ei) / from.alpha();
            let want = to.alpha() * x0 + to.sigma_vp() * ei;
            assert!((got[i] - want).abs() < 1e-13, "{} vs {want}", got[i]);
        }
    }
}
