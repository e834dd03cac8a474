//! improved DDPM's hybrid objective (Nichol & Dhariwal 2021; SPEC §4):
//! `L_hybrid = L_simple + lambda L_vlb`, with the network also learning the reverse variance
//! by learned_range (SPEC §3): log sigma^2 = frac log beta_t + (1 - frac) log beta_tilde_t,
//! frac = (v + 1)/2, beta_tilde clipped at t = 1 as in the bound.
//!
//! The L_vlb part is the bound's own term at the drawn step ([`crate::likelihood::vlb`]'s
//! `step_term`: the decoder NLL at t = 1, KL(q(x_{t-1}|x_t,x_0) || p_theta) after), in bits/dim,
//! with the gradient stopped on the mean: L_simple trains the mean, L_vlb only the variance.
//! For a batch with steps t_n drawn with importance weights w_n (all 1 when uniform), the
//! objective the trainer minimises is
//! `mean_n w_n (mse_n + lambda T term_n)` — a uniform draw of t times T estimates the sum
//! over t, so lambda = 0.001 at T = 1000 is improved-diffusion's `mse + vb * T / 1000`.
//!
//! Network output layout (the trainer splits it): flat `[N, 2D]`, the first D columns the
//! prediction, the next D the variance output v in [-1, 1]; for images `[N, 2C, H, W]` in NCHW
//! order that is channels 0..C then C..2C.

use crate::forward::q_posterior_mean;
use crate::likelihood::vlb::{model_log_variance, step_term};
use crate::prediction::{x0_and_eps, PredictionType};
use crate::schedule::Schedule;
use crate::variance::VarianceType;
use burn::tensor::Tensor;
use std::f64::consts::LN_2;

/// Per-sample L_vlb term at the drawn code indices `steps` (one per sample), in bits/dim
/// (`[N]`), with the gradient stopped on the mean: `mean_output` (the net's prediction part,
/// `[N, D]`) is detached before it gives x0_hat and the model mean mu_theta =
/// mu_tilde(x0_hat, x_t), so only `variance_output` (v in [-1, 1], `[N, D]`) receives a
/// gradient. `x0` must be 8-bit data in [-1, 1] (the t = 1 term is the discretised decoder).
/// As in improved-diffusion's training loss, x0_hat is not clipped.
pub fn hybrid_vlb_term(
    schedule: &Schedule,
    steps: &[usize],
    prediction: PredictionType,
    x0: &Tensor<2>,
    x_t: &Tensor<2>,
    mean_output: &Tensor<2>,
    variance_output: &Tensor<2>,
) -> Tensor<1> {
    let [_, d] = x0.dims();
    let a: Vec<f64> = steps.iter().map(|&i| schedule.sqrt_alpha_bar[i]).collect();
    let s: Vec<f64> = steps
        .iter()
        .map(|&i| schedule.sqrt_one_minus_alpha_bar[i])
        .collect();
    let (x0_hat, _) = x0_and_eps(prediction, &mean_output.clone().detach(), x_t, &a, &s);
    let model_mean = q_posterior_mean(schedule, &x0_hat, x_t, steps);
    let log_variance = model_log_variance(
        schedule,
        VarianceType::LearnedRange,
        steps,
        Some(variance_output.clone()),
        x_t,
    );
    step_term(schedule, steps, x0, x_t, model_mean, log_variance).div_scalar(d as f64 * LN_2)
}

/// The values of a per-sample term as float64 (for the loss-aware sampler and the logs).
pub fn term_values(term: &Tensor<1>) -> Vec<f64> {
    term.to_data()
        .try_into_vec_as::<f64>()
        .expect("float tensor converts to f64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoiser::{Network, NetworkDenoiser, Parameterization};
    use crate::forward::q_sample;
    use crate::likelihood::vlb;
    use crate::rng::{Replay, SampleRng};
    use crate::schedule::ScheduleConfig;
    use crate::tensor::{column, from_rows, to_vec};
    use burn::tensor::{DType, Device};

    const N: usize = 3;
    const DIM: usize = 4;

    /// A fixed "network" with a variance head: prediction 0.3 tanh(x + 0.01 t), v = cos(1.3 x
    /// + 0.05 t) in [-1, 1]; output `[N, 2D]` as the trainer's nets give it.
    struct ToyNet;

    impl Network for ToyNet {
        fn forward(&self, x: Tensor<2>, t: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
            let t = column(t, &x);
            let pred = (x.clone() + t.clone().mul_scalar(0.01))
                .tanh()
                .mul_scalar(0.3);
            let v = (x.mul_scalar(1.3) + t.mul_scalar(0.05)).cos();
            Tensor::cat(vec![pred, v], 1)
        }
    }

    fn schedule() -> Schedule {
        ScheduleConfig {
            num_train_timesteps: 50,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap()
    }

    /// 8-bit data in [-1, 1], both edge bins included.
    fn x0_values() -> Vec<f64> {
        [0, 37, 128, 255, 200, 64, 10, 250, 90, 160, 3, 255]
            .iter()
            .map(|&k| k as f64 / 127.5 - 1.0)
            .collect()
    }

    /// The net's two halves at x_t for the given steps.
    fn halves(x_t: &Tensor<2>, steps: &[usize]) -> (Tensor<2>, Tensor<2>) {
        let t: Vec<f64> = steps.iter().map(|&i| i as f64).collect();
        let out = ToyNet.forward(x_t.clone(), &t, None);
        (
            out.clone().slice([0..N, 0..DIM]),
            out.slice([0..N, DIM..2 * DIM]),
        )
    }

    #[test]
    fn equals_the_bounds_per_step_term() {
        // SPEC §4: the hybrid's term is the float64 VLB's L_{t-1} (L_0 at step 0) for the same
        // x0, noise and model, in bits/dim (nats / (D ln 2)). Both are float64 through the same
        // formulas but different routes to a and s (schedule tables vs the denoiser's sigma):
        // tol 1e-12 relative on the batch mean (measured 1.7e-15 at most). A batch mixing steps
        // 0, 17 and 49 gives each row the value of its own step (tol 1e-12 relative).
        let s = schedule();
        let dev = crate::device::cpu();
        let x0 = from_rows(x0_values(), N, DIM, &dev, DType::F64);
        let mut rng = SampleRng::new(3, 0, N);
        let noise: Vec<Tensor<2>> = (0..s.len())
            .map(|_| from_rows(rng.normal(DIM), N, DIM, &dev, DType::F64))
            .collect();
        for p in [PredictionType::Eps, PredictionType::X0, PredictionType::V] {
            let den = NetworkDenoiser {
                net: ToyNet,
                parameterization: Parameterization::Discrete {
                    prediction: p,
                    learned_variance: true,
                },
            };
            let bound = vlb(
                &den,
                &s,
                VarianceType::LearnedRange,
                &x0,
                &mut Replay(noise.clone().into()),
            );
            let mut rows_at = Vec::new();
            for i in [0usize, 1, 17, 49] {
                let steps = [i; N];
                let x_t = q_sample(&s, &x0, &steps, &noise[i]);
                let (pred, v) = halves(&x_t, &steps);
                let term = term_values(&hybrid_vlb_term(&s, &steps, p, &x0, &x_t, &pred, &v));
                let mean_nats = term.iter().sum::<f64>() / N as f64 * DIM as f64 * LN_2;
                let want = bound.per_step[i];
                let rel = (mean_nats - want).abs() / want.abs();
                println!("{p:?} step {i}: hybrid {mean_nats:.12e} nats, bound {want:.12e}, rel {rel:.1e}");
                assert!(
                    (mean_nats - want).abs() <= 1e-12 * want.abs(),
                    "{p:?} step {i}: {mean_nats} vs {want}"
                );
                rows_at.push((i, term));
            }
            let steps = [0usize, 17, 49];
            let eps_rows: Vec<f64> = steps
                .iter()
                .enumerate()
                .flat_map(|(r, &i)| to_vec(&noise[i])[r * DIM..(r + 1) * DIM].to_vec())
                .collect();
            let eps = from_rows(eps_rows, N, DIM, &dev, DType::F64);
            let x_t = q_sample(&s, &x0, &steps, &eps);
            let (pred, v) = halves(&x_t, &steps);
            let mixed = term_values(&hybrid_vlb_term(&s, &steps, p, &x0, &x_t, &pred, &v));
            for (r, &i) in steps.iter().enumerate() {
                let alone = &rows_at.iter().find(|(j, _)| *j == i).unwrap().1;
                assert!(
                    (mixed[r] - alone[r]).abs() <= 1e-12 * alone[r].abs(),
                    "{p:?} row {r} step {i}: {} vs {}",
                    mixed[r],
                    alone[r]
                );
            }
        }
    }

    /// ln of the N(mean, sd^2) mass of [lo, hi] by composite Simpson (20000 intervals) on
    /// exp(-(z^2 - z_ref^2)/2), z_ref the point of the interval nearest 0, so far tails do not
    /// underflow; infinite ends are cut 40 sd out.
    fn log_mass_by_quadrature(lo: f64, hi: f64, mean: f64, sd: f64) -> f64 {
        let (z_lo, z_hi) = (((lo - mean) / sd).max(-40.0), ((hi - mean) / sd).min(40.0));
        let z_ref = 0f64.clamp(z_lo, z_hi);
        let m = 20_000;
        let h = (z_hi - z_lo) / m as f64;
        let f = |z: f64| (-(z * z - z_ref * z_ref) / 2.0).exp();
        let mut sum = f(z_lo) + f(z_hi);
        for k in 1..m {
            sum += f(z_lo + k as f64 * h) * if k % 2 == 1 { 4.0 } else { 2.0 };
        }
        (sum * h / 3.0).ln() - z_ref * z_ref / 2.0 - (2.0 * std::f64::consts::PI).sqrt().ln()
    }

    #[test]
    fn matches_a_scalar_float64_reference() {
        // SPEC §2-§4 recomputed per element on the host for the eps-prediction net: x0_hat =
        // (x_t - s eps_hat)/a, mu = c0 x0_hat + ct x_t, learned_range log-variance, then the
        // closed-form Gaussian KL (steps 5, 30) and the decoder mass by quadrature (step 0,
        // edge bins integrated from/to 40 sd). Tol 1e-9 relative on each sample's bits/dim:
        // the quadrature's error (~1e-11 relative in the mass) dominates (measured 5e-14 at most).
        let s = schedule();
        let dev = crate::device::cpu();
        let xs = x0_values();
        let x0 = from_rows(xs.clone(), N, DIM, &dev, DType::F64);
        let eps: Vec<f64> = SampleRng::new(4, 0, N).normal(DIM);
        for i in [0usize, 5, 30] {
            let steps = [i; N];
            let x_t = q_sample(
                &s,
                &x0,
                &steps,
                &from_rows(eps.clone(), N, DIM, &dev, DType::F64),
            );
            let (pred, v) = halves(&x_t, &steps);
            let got = term_values(&hybrid_vlb_term(
                &s,
                &steps,
                PredictionType::Eps,
                &x0,
                &x_t,
                &pred,
                &v,
            ));
            let (xt, eps_hat, v) = (to_vec(&x_t), to_vec(&pred), to_vec(&v));
            let (a, sd) = (s.sqrt_alpha_bar[i], s.sqrt_one_minus_alpha_bar[i]);
            let (c0, ct) = (s.posterior_mean_coef_x0[i], s.posterior_mean_coef_xt[i]);
            let lv_post = s.posterior_log_variance_clipped[i];
            for r in 0..N {
                let mut nats = 0.0;
                for j in r * DIM..(r + 1) * DIM {
                    let x0_hat = (xt[j] - sd * eps_hat[j]) / a;
                    let mu = c0 * x0_hat + ct * xt[j];
                    let frac = (v[j] + 1.0) / 2.0;
                    let lv = frac * s.beta[i].ln() + (1.0 - frac) * lv_post;
                    if i == 0 {
                        let lo = if xs[j] < -0.999 {
                            f64::NEG_INFINITY
                        } else {
                            xs[j] - 1.0 / 255.0
                        };
                        let hi = if xs[j] > 0.999 {
                            f64::INFINITY
                        } else {
                            xs[j] + 1.0 / 255.0
                        };
                        nats -= log_mass_by_quadrature(lo, hi, mu, (0.5 * lv).exp());
                    } else {
                        let mu_true = c0 * xs[j] + ct * xt[j];
                        let (v1, v2) = (lv_post.exp(), lv.exp());
                        nats += 0.5 * ((v2 / v1).ln() + (v1 + (mu_true - mu).powi(2)) / v2 - 1.0);
                    }
                }
                let want = nats / (DIM as f64 * LN_2);
                let rel = (got[r] - want).abs() / want.abs();
                println!(
                    "step {i} row {r}: {:.12} vs reference {want:.12}, rel {rel:.1e}",
                    got[r]
                );
                assert!(
                    (got[r] - want).abs() <= 1e-9 * want.abs(),
                    "step {i} row {r}: {} vs {want}",
                    got[r]
                );
            }
        }
    }

    /// A batch at mixed steps (0, 3, 30) on `device`, with the net's outputs as gradient leaves.
    struct Leaves {
        s: Schedule,
        steps: [usize; N],
        x0: Tensor<2>,
        x_t: Tensor<2>,
        pred: Tensor<2>,
        v: Tensor<2>,
    }

    fn leaves(device: &Device) -> Leaves {
        let s = schedule();
        let steps = [0usize, 3, 30];
        let x0 = from_rows(x0_values(), N, DIM, device, DType::F64);
        let eps = from_rows(
            SampleRng::new(5, 0, N).normal(DIM),
            N,
            DIM,
            device,
            DType::F64,
        );
        let x_t = q_sample(&s, &x0, &steps, &eps);
        let (pred, v) = halves(&x_t, &steps);
        let pred = from_rows(to_vec(&pred), N, DIM, device, DType::F64).require_grad();
        let v = from_rows(to_vec(&v), N, DIM, device, DType::F64).require_grad();
        Leaves {
            s,
            steps,
            x0,
            x_t,
            pred,
            v,
        }
    }

    #[test]
    fn gradient_flows_to_the_variance_only() {
        // improved DDPM's stop-gradient: d term / d mean_output is exactly zero (no path in the
        // graph: None, or an all-zero tensor), d term / d v is finite and non-zero everywhere.
        let device = crate::device::cpu().autodiff();
        let Leaves {
            s,
            steps,
            x0,
            x_t,
            pred,
            v,
        } = leaves(&device);
        for p in [PredictionType::Eps, PredictionType::V] {
            let term = hybrid_vlb_term(&s, &steps, p, &x0, &x_t, &pred, &v);
            let grads = term.sum().backward();
            if let Some(g) = pred.grad(&grads) {
                assert!(
                    to_vec(&g).iter().all(|g| *g == 0.0),
                    "{p:?}: mean gradient {g}"
                );
            }
            let gv = to_vec(&v.grad(&grads).expect("v is a leaf of the term"));
            assert!(
                gv.iter().all(|g| g.is_finite() && *g != 0.0),
                "{p:?}: variance gradient {gv:?}"
            );
        }
    }

    #[test]
    fn variance_gradient_matches_finite_differences() {
        // d term_r / d v_rj by autodiff against central differences in float64 with h = 1e-5
        // (steps 0, 3, 30: the decoder and the KL). Rounding of the summed term (~2 bits/dim)
        // costs ~4e-16 * 2 / h ~ 1e-10 absolute, truncation h^2 f'''/6 less; tol 1e-7 relative
        // to max(|g|, 1e-3), at least 1e-10 absolute (measured: 1.7e-10 at most, |g| ~ 1e-2).
        let device = crate::device::cpu().autodiff();
        let Leaves {
            s,
            steps,
            x0,
            x_t,
            pred,
            v,
        } = leaves(&device);
        let p = PredictionType::Eps;
        let grads = hybrid_vlb_term(&s, &steps, p, &x0, &x_t, &pred, &v)
            .sum()
            .backward();
        let g = to_vec(&v.grad(&grads).unwrap());
        let v0 = to_vec(&v);
        let total = |vals: Vec<f64>| -> f64 {
            let v = from_rows(vals, N, DIM, &device, DType::F64);
            term_values(&hybrid_vlb_term(&s, &steps, p, &x0, &x_t, &pred, &v))
                .iter()
                .sum()
        };
        let h = 1e-5;
        for j in 0..N * DIM {
            let (mut up, mut down) = (v0.clone(), v0.clone());
            up[j] += h;
            down[j] -= h;
            let fd = (total(up) - total(down)) / (2.0 * h);
            assert!(
                (fd - g[j]).abs() <= 1e-7 * g[j].abs().max(1e-3),
                "element {j} (step {}): autodiff {} vs finite difference {fd}",
                steps[j / DIM],
                g[j]
            );
        }
    }
}
