//! Samplers for the reverse SDE and the probability-flow ODE (SPEC §6), plain functions like
//! [`crate::sample`]: (sde, score, x_init, time grid or tolerances, noise, options, callback).
//!
//! A time grid is a decreasing slice `1 = t_0 > t_1 > ... > t_N = eps` ([`time_grid`]); step k
//! moves the state from t_k to t_{k+1} with dt = t_k - t_{k+1}. As in score_sde, the last step
//! adds no noise (the returned state is the mean of the last update, "noise removal").
//! Network calls (NFE) per step: Euler–Maruyama and reverse diffusion 1, each Langevin corrector
//! step 1 more.

use super::{Reverse, ScoreFn, Sde};
use crate::denoiser::NoiseLevel;
use crate::rng::NoiseSource;
use crate::sample::{Callback, StepInfo};
use crate::tensor::{from_rows_like, to_vec};
use burn::tensor::Tensor;

/// `n + 1` times from 1 down to `eps` (score_sde: eps = 1e-3 for VP/sub-VP, 1e-5 for VE).
/// `n = 0` gives the single time 1 (no steps).
pub fn time_grid(n: usize, eps: f64) -> Vec<f64> {
    if n == 0 {
        return vec![1.0];
    }
    (0..=n)
        .map(|k| 1.0 + (eps - 1.0) * k as f64 / n as f64)
        .collect()
}

/// Reports a step to the callback, with the Tweedie estimate x0_hat = (x + s^2 score) / m.
fn report_step<S: Sde + ?Sized>(
    callback: &mut Callback,
    sde: &S,
    step: usize,
    steps: usize,
    t: f64,
    x: &Tensor<2>,
    score: &Tensor<2>,
) {
    if let Some(cb) = callback.as_mut() {
        let m = sde.marginal(t);
        let x0_hat = (x.clone() + score.clone().mul_scalar(m.std * m.std)).div_scalar(m.mean_coeff);
        cb(&StepInfo {
            step,
            steps,
            level: NoiseLevel {
                sigma: m.sigma(),
                t,
            },
            x,
            x0_hat: &x0_hat,
        });
    }
}

/// One Euler–Maruyama step of the reverse SDE from t to t - dt:
/// x_mean = x - [f(x, t) - g(t)^2 score] dt, x = x_mean + g(t) sqrt(dt) z.
fn em_step<S: Sde + ?Sized, F: ScoreFn + ?Sized>(
    rev: &Reverse<S, F>,
    x: &Tensor<2>,
    t: f64,
    dt: f64,
    noise: Option<&mut dyn NoiseSource>,
) -> (Tensor<2>, Tensor<2>) {
    let (drift, score) = rev.drift(x, t);
    let mean = x.clone() - drift.mul_scalar(dt);
    let x = match noise {
        Some(noise) => {
            let z = noise.noise_like(&mean);
            mean + z.mul_scalar(rev.diffusion(t) * dt.sqrt())
        }
        None => mean,
    };
    (x, score)
}

/// Euler–Maruyama on the reverse SDE along `grid` (SPEC §6). One score call per step.
pub fn sample_euler_maruyama<S: Sde + ?Sized, F: ScoreFn + ?Sized>(
    sde: &S,
    score: &F,
    x: Tensor<2>,
    grid: &[f64],
    noise: &mut dyn NoiseSource,
    mut callback: Callback,
) -> Tensor<2> {
    let rev = Reverse::sde(sde, score);
    let steps = grid.len() - 1;
    let mut x = x;
    for k in 0..steps {
        let (t, dt) = (grid[k], grid[k] - grid[k + 1]);
        let last = k + 1 == steps;
        let (next, s) = em_step(&rev, &x, t, dt, (!last).then_some(&mut *noise));
        x = next;
        report_step(&mut callback, sde, k, steps, grid[k + 1], &x, &s);
    }
    x
}

/// The predictor of a predictor–corrector sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predictor {
    /// The discretised reverse SDE (ancestral-like, [`Reverse::discretize`]).
    ReverseDiffusion,
    /// An Euler–Maruyama step.
    EulerMaruyama,
    /// No predictor (corrector only, score_sde's "none"): the state moves by Langevin alone.
    None,
}

/// Langevin corrector (Song et al. 2021, Algorithm 4/5): `n_steps` steps of
/// x <- x + e score + sqrt(2 e) z with e = 2 alpha (snr ||z|| / ||score||)^2, where alpha is
/// the discrete 1 - beta_i for VP-type SDEs (a^2 of [`Sde::discretize`] at dt = 1/1000,
/// [`LANGEVIN_REFERENCE_STEPS`]) and 1 for VE.
///
/// As in score_sde, ||z|| and ||score|| are averaged over the batch: the step size is shared
/// by the batch, so (as with the adaptive ODE solve, unlike EM) a sample depends on the batch
/// it is drawn in.
/// Per-sample norms are unstable in low dimension: at a mode ||score|| -> 0 and the step size
/// diverges.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Langevin {
    /// Target signal-to-noise ratio (0.16 for VE on CIFAR-10 in score_sde).
    pub snr: f64,
    /// Corrector steps per predictor step.
    pub n_steps: usize,
}

impl Default for Langevin {
    fn default() -> Self {
        Langevin {
            snr: 0.16,
            n_steps: 1,
        }
    }
}

/// The discretisation (N = 1000, score_sde's `num_scales`) whose 1 - beta_i sets Langevin's
/// alpha, independent of the sampling grid.
pub const LANGEVIN_REFERENCE_STEPS: f64 = 1000.0;

/// Options of the predictor–corrector sampler.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PcOptions {
    pub predictor: Predictor,
    /// `None`: predictor only.
    pub corrector: Option<Langevin>,
}

impl Default for PcOptions {
    /// Reverse diffusion + one Langevin step at snr 0.16 (score_sde's PC sampler).
    fn default() -> Self {
        PcOptions {
            predictor: Predictor::ReverseDiffusion,
            corrector: Some(Langevin::default()),
        }
    }
}

impl PcOptions {
    /// Score calls per step.
    pub fn nfe_per_step(&self) -> usize {
        let p = usize::from(self.predictor != Predictor::None);
        p + self.corrector.map_or(0, |c| c.n_steps)
    }
}

/// One Langevin step at time t with discrete alpha (see [`Langevin`]).
fn langevin_step<F: ScoreFn + ?Sized>(
    score: &F,
    x: Tensor<2>,
    t: f64,
    alpha: f64,
    snr: f64,
    noise: &mut dyn NoiseSource,
) -> Tensor<2> {
    let grad = score.score(&x, t);
    let z = noise.noise_like(&x);
    let mean_norm = |v: &Tensor<2>| {
        let sq = to_vec(&v.clone().powi_scalar(2).sum_dim(1));
        sq.iter().map(|s| s.sqrt()).sum::<f64>() / sq.len() as f64
    };
    let step = 2.0 * alpha * (snr * mean_norm(&z) / mean_norm(&grad).max(1e-30)).powi(2);
    x + grad.mul_scalar(step) + z.mul_scalar((2.0 * step).sqrt())
}

/// Predictor–corrector sampling along `grid` (SPEC §6): at each t_k, the corrector's Langevin
/// steps at t_k, then the predictor from t_k to t_{k+1}.
pub fn sample_pc<S: Sde + ?Sized, F: ScoreFn + ?Sized>(
    sde: &S,
    score: &F,
    x: Tensor<2>,
    grid: &[f64],
    options: &PcOptions,
    noise: &mut dyn NoiseSource,
    mut callback: Callback,
) -> Tensor<2> {
    let rev = Reverse::sde(sde, score);
    let steps = grid.len() - 1;
    let mut x = x;
    for k in 0..steps {
        let (t, dt) = (grid[k], grid[k] - grid[k + 1]);
        let last = k + 1 == steps;
        if let Some(c) = options.corrector {
            // score_sde takes alpha from the SDE's own N = 1000 discretisation whatever the
            // sampling grid; a^2 of a coarse step can be negative (beta(t) dt > 1).
            let alpha = sde.discretize(t, 1.0 / LANGEVIN_REFERENCE_STEPS).a.powi(2);
            for _ in 0..c.n_steps {
                x = langevin_step(score, x, t, alpha, c.snr, noise);
            }
        }
        let s = match options.predictor {
            Predictor::EulerMaruyama => {
                let (next, s) = em_step(&rev, &x, t, dt, (!last).then_some(&mut *noise));
                x = next;
                s
            }
            Predictor::ReverseDiffusion => {
                let (mean, b, s) = rev.discretize(&x, t, dt);
                x = if last {
                    mean
                } else {
                    let z = noise.noise_like(&mean);
                    mean + z.mul_scalar(b)
                };
                s
            }
            Predictor::None => score.score(&x, grid[k + 1]),
        };
        report_step(&mut callback, sde, k, steps, grid[k + 1], &x, &s);
    }
    x
}

/// Tolerances and end time of the adaptive probability-flow solvers.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OdeOptions {
    pub rtol: f64,
    pub atol: f64,
    /// The small end time (SPEC §6: 1e-5 for the likelihood; score_sde samples to 1e-3).
    pub eps: f64,
}

impl Default for OdeOptions {
    /// rtol = atol = 1e-5, eps = 1e-5 (SPEC §6).
    fn default() -> Self {
        OdeOptions {
            rtol: 1e-5,
            atol: 1e-5,
            eps: 1e-5,
        }
    }
}

/// Work done by an adaptive solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OdeStats {
    /// Right-hand-side evaluations (score calls for the PF-ODE).
    pub nfe: usize,
    pub accepted: usize,
    pub rejected: usize,
}

/// Dormand–Prince 5(4) nodes, stage matrix, 5th-order weights and the difference to the
/// embedded 4th-order ones (7th stage = FSAL; Hairer, Nørsett & Wanner II.5, Table 5.2).
const C: [f64; 6] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0];
const A: [[f64; 5]; 6] = [
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
];
const B: [f64; 6] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
];
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// One Dormand–Prince step of size `h` (signed) from (t, y) with slope `f` = rhs(t, y): the
/// 5th-order solution, its slope (the next step's `f`, FSAL) and the embedded error estimate
/// y5 - y4, per component.
pub fn dopri5_step(
    rhs: &mut impl FnMut(f64, &[f64]) -> Vec<f64>,
    t: f64,
    y: &[f64],
    f: &[f64],
    h: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = y.len();
    let mut k = vec![f.to_vec()];
    for s in 1..6 {
        let ys: Vec<f64> = (0..n)
            .map(|i| y[i] + h * (0..s).map(|j| A[s][j] * k[j][i]).sum::<f64>())
            .collect();
        k.push(rhs(t + C[s] * h, &ys));
    }
    let y_new: Vec<f64> = (0..n)
        .map(|i| y[i] + h * (0..6).map(|j| B[j] * k[j][i]).sum::<f64>())
        .collect();
    k.push(rhs(t + h, &y_new));
    let err = (0..n)
        .map(|i| h * (0..7).map(|j| E[j] * k[j][i]).sum::<f64>())
        .collect();
    (y_new, k.pop().expect("seven stages"), err)
}

/// Why an adaptive solve stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OdeError {
    /// The right-hand side (the model) returned NaN or an infinity.
    #[error(
        "the ODE right-hand side is not finite in the step from t = {t} (step {step}, after \
         {nfe} evaluations): the model returned NaN or inf"
    )]
    NonFinite { t: f64, step: usize, nfe: usize },
    /// The step size fell below 1e-14 of the interval (a stiff or discontinuous right-hand side).
    #[error("the ODE step size underflowed to {h:e} at t = {t} (step {step})")]
    StepUnderflow { t: f64, h: f64, step: usize },
}

/// Integrates dy/dt = rhs(t, y) from t0 to t1 (either direction) with the Dormand–Prince 5(4)
/// pair (FSAL, 6 evaluations per attempted step after the first), local error controlled in the
/// RMS norm of err_i / (atol + rtol max(|y_i|, |y_new_i|)) (Hairer, Nørsett & Wanner II.4,
/// as scipy's RK45), initial step by Hairer's heuristic.
///
/// # Errors
/// [`OdeError::NonFinite`] when the right-hand side returns NaN or inf (named by the time and
/// step), [`OdeError::StepUnderflow`] when the step size falls below 1e-14 of the interval.
pub fn dopri5(
    mut rhs: impl FnMut(f64, &[f64]) -> Vec<f64>,
    t0: f64,
    t1: f64,
    y0: Vec<f64>,
    rtol: f64,
    atol: f64,
) -> Result<(Vec<f64>, OdeStats), OdeError> {
    let n = y0.len();
    let dir = if t1 >= t0 { 1.0 } else { -1.0 };
    let mut stats = OdeStats::default();
    let mut eval = |t: f64, y: &[f64], stats: &mut OdeStats| {
        stats.nfe += 1;
        rhs(t, y)
    };
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / n.max(1) as f64).sqrt();
    let mut t = t0;
    let mut y = y0;
    let mut f = eval(t, &y, &mut stats);
    let non_finite = |t: f64, stats: &OdeStats| OdeError::NonFinite {
        t,
        step: stats.accepted + stats.rejected,
        nfe: stats.nfe,
    };
    if f.iter().any(|v| !v.is_finite()) {
        return Err(non_finite(t, &stats));
    }
    // Initial step (Hairer's heuristic): h0 = 0.01 ||y||/||f||, refined by one Euler step.
    let sc: Vec<f64> = y.iter().map(|v| atol + rtol * v.abs()).collect();
    let d0 = rms(&y.iter().zip(&sc).map(|(v, s)| v / s).collect::<Vec<_>>());
    let d1 = rms(&f.iter().zip(&sc).map(|(v, s)| v / s).collect::<Vec<_>>());
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let y1: Vec<f64> = y.iter().zip(&f).map(|(y, f)| y + dir * h0 * f).collect();
    let f1 = eval(t + dir * h0, &y1, &mut stats);
    let d2 = rms(&f1
        .iter()
        .zip(&f)
        .zip(&sc)
        .map(|((a, b), s)| (a - b) / s)
        .collect::<Vec<_>>())
        / h0;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(1.0 / 5.0)
    };
    let span = (t1 - t0).abs();
    let mut h = (100.0 * h0).min(h1).min(span);
    while dir * (t1 - t) > 0.0 {
        h = h.min((t1 - t).abs());
        let t_new = if (t1 - t).abs() <= h { t1 } else { t + dir * h };
        let mut counted = |t: f64, y: &[f64]| eval(t, y, &mut stats);
        let (y_new, f_new, err) = dopri5_step(&mut counted, t, &y, &f, t_new - t);
        if y_new
            .iter()
            .chain(&f_new)
            .chain(&err)
            .any(|v| !v.is_finite())
        {
            return Err(non_finite(t, &stats));
        }
        let err: Vec<f64> = (0..n)
            .map(|i| err[i] / (atol + rtol * y[i].abs().max(y_new[i].abs())))
            .collect();
        let err_norm = rms(&err);
        if err_norm <= 1.0 {
            stats.accepted += 1;
            t = t_new;
            y = y_new;
            f = f_new;
            let factor = if err_norm == 0.0 {
                10.0
            } else {
                (0.9 * err_norm.powf(-0.2)).min(10.0)
            };
            h *= factor;
        } else {
            stats.rejected += 1;
            h *= (0.9 * err_norm.powf(-0.2)).max(0.2);
            if h <= 1e-14 * span {
                return Err(OdeError::StepUnderflow {
                    t,
                    h,
                    step: stats.accepted + stats.rejected,
                });
            }
        }
    }
    Ok((y, stats))
}

/// Samples by integrating the probability-flow ODE from t = 1 to `options.eps` with
/// [`dopri5`] (the whole batch is one system, as in score_sde). Returns x and the work done
/// (NFE = score calls), or the solver's error (a non-finite model output names its time).
pub fn sample_ode<S: Sde + ?Sized, F: ScoreFn + ?Sized>(
    sde: &S,
    score: &F,
    x: Tensor<2>,
    options: &OdeOptions,
) -> Result<(Tensor<2>, OdeStats), OdeError> {
    let rev = Reverse::ode(sde, score);
    let like = x.clone();
    let (y, stats) = dopri5(
        |t, y| to_vec(&rev.drift(&from_rows_like(y.to_vec(), &like), t).0),
        1.0,
        options.eps,
        to_vec(&x),
        options.rtol,
        options.atol,
    )?;
    Ok((from_rows_like(y, &like), stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dopri5_integrates_exponential_and_oscillator() {
        // y' = -2 y on [0, 1]: y = e^{-2}; harmonic oscillator backwards from 2 to 0. At
        // rtol = atol = 1e-8 the global error is ~1e-8; tol 1e-6 states it with margin.
        let (y, st) = dopri5(|_, y| vec![-2.0 * y[0]], 0.0, 1.0, vec![1.0], 1e-8, 1e-8).unwrap();
        assert!((y[0] - (-2.0f64).exp()).abs() < 1e-6, "{y:?}");
        assert!(st.nfe > 7 && st.accepted > 0);
        let (y, _) = dopri5(
            |_, y| vec![y[1], -y[0]],
            2.0,
            0.0,
            vec![2.0f64.cos(), -(2.0f64).sin()],
            1e-8,
            1e-8,
        )
        .unwrap();
        assert!((y[0] - 1.0).abs() < 1e-6 && y[1].abs() < 1e-6, "{y:?}");
    }

    #[test]
    fn dopri5_names_the_time_of_a_non_finite_model_output() {
        // Issue 12, bug 4: a model returning NaN tripped an assert (step size underflow).
        // Now an error names where: NaN from t < 0.5 on is caught in the step that starts
        // before it.
        let rhs = |t: f64, y: &[f64]| vec![if t < 0.5 { f64::NAN } else { -y[0] }];
        let err = dopri5(rhs, 1.0, 0.0, vec![1.0], 1e-6, 1e-6).unwrap_err();
        match err {
            OdeError::NonFinite { t, step, .. } => assert!((0.5..=1.0).contains(&t) && step > 0),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("not finite"), "{err}");
        let at_start = dopri5(|_, _| vec![f64::INFINITY], 0.0, 1.0, vec![1.0], 1e-6, 1e-6);
        assert!(matches!(
            at_start,
            Err(OdeError::NonFinite {
                t: 0.0,
                step: 0,
                nfe: 1
            })
        ));
    }

    /// Least-squares slope of ln e against ln h.
    fn slope(h: &[f64], e: &[f64]) -> f64 {
        let xs: Vec<f64> = h.iter().map(|v| v.ln()).collect();
        let ys: Vec<f64> = e.iter().map(|v| v.ln()).collect();
        let mx = xs.iter().sum::<f64>() / xs.len() as f64;
        let my = ys.iter().sum::<f64>() / ys.len() as f64;
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        sxy / xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>()
    }

    #[test]
    fn dopri5_tableau_is_fifth_order() {
        // y' = cos(3t) y, y(0) = 1: y(t) = exp(sin(3t)/3). One fixed step of size h from t = 0.4
        // has local error C h^6 for a 5th-order method, so the order is the fitted log-log slope
        // minus 1: 5 +- 0.3 over h = 0.1 .. 0.0125 (local errors down to ~1e-14, still 50x the
        // float64 rounding of y ~ 1; at h = 0.2 the estimate is pre-asymptotic, slope 5.5). The embedded 4th-order estimate y5 - y4 must scale like h^5 (slope 5 +- 0.3).
        // A single wrong coefficient in A, B or E breaks one of the two.
        let exact = |t: f64| ((3.0 * t).sin() / 3.0).exp();
        let mut rhs = |t: f64, y: &[f64]| vec![(3.0 * t).cos() * y[0]];
        let t0 = 0.4;
        let hs = [0.1, 0.05, 0.025, 0.0125];
        let (mut local, mut estimate) = (Vec::new(), Vec::new());
        for &h in &hs {
            let y0 = [exact(t0)];
            let f0 = rhs(t0, &y0);
            let (y, _, err) = dopri5_step(&mut rhs, t0, &y0, &f0, h);
            local.push((y[0] - exact(t0 + h)).abs());
            estimate.push(err[0].abs());
        }
        let order = slope(&hs, &local) - 1.0;
        let est = slope(&hs, &estimate);
        assert!(
            (order - 5.0).abs() <= 0.3,
            "order {order:.3}, errors {local:?}"
        );
        assert!(
            (est - 5.0).abs() <= 0.3,
            "estimate slope {est:.3}, {estimate:?}"
        );
        // Fixed steps of y' = y over [0, 1]: the global error falls as h^5 (measured slope
        // 4.91 over 8..64 steps, errors 2e-8 .. 7e-13; on the oscillating problem above global
        // errors cancel between steps and are not monotone).
        let mut growth = |_: f64, y: &[f64]| vec![y[0]];
        let ladder = [8usize, 16, 32, 64];
        let global: Vec<f64> = ladder
            .iter()
            .map(|&n| {
                let h = 1.0 / n as f64;
                let (mut t, mut y) = (0.0, vec![1.0]);
                let mut f = growth(t, &y);
                for _ in 0..n {
                    let (y_new, f_new, _) = dopri5_step(&mut growth, t, &y, &f, h);
                    (t, y, f) = (t + h, y_new, f_new);
                }
                (y[0] - std::f64::consts::E).abs()
            })
            .collect();
        let steps: Vec<f64> = ladder.iter().map(|&n| n as f64).collect();
        let order = -slope(&steps, &global);
        assert!(
            (order - 5.0).abs() <= 0.3,
            "global order {order:.3}, {global:?}"
        );
    }

    #[test]
    fn time_grid_runs_from_one_to_eps() {
        let g = time_grid(4, 1e-3);
        assert_eq!(g.len(), 5);
        assert_eq!(g[0], 1.0);
        assert!((g[4] - 1e-3).abs() < 1e-15);
        assert!(g.windows(2).all(|w| w[0] > w[1]));
    }
}
