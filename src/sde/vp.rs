//! The variance-preserving SDE, continuous DDPM (SPEC §6):
//! `f = -1/2 beta(t) x`, `g = sqrt(beta(t))`, beta(t) = beta_min + t (beta_max - beta_min);
//! log m(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min, s(t)^2 = 1 - m(t)^2.
//! Discrete link: beta_i = beta(i/N)/N.

use super::{Discretization, Marginal, Sde};
use crate::error::{Error, Result};
use crate::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use serde::{Deserialize, Serialize};

/// The VP SDE with a linear beta(t).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VpSde {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl Default for VpSde {
    /// Song et al. 2021: beta_min = 0.1, beta_max = 20.
    fn default() -> Self {
        VpSde {
            beta_min: 0.1,
            beta_max: 20.0,
        }
    }
}

impl VpSde {
    /// Validated construction: 0 < beta_min <= beta_max < inf; the error names the parameter.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min > 0.0 && beta_min.is_finite()) {
            return Err(Error::config(
                "sde.beta_min",
                format!("{beta_min}: must be finite and > 0"),
            ));
        }
        if !(beta_max >= beta_min && beta_max.is_finite()) {
            return Err(Error::config(
                "sde.beta_max",
                format!("{beta_max}: must be finite and >= beta_min = {beta_min}"),
            ));
        }
        Ok(VpSde { beta_min, beta_max })
    }

    /// beta(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// log m(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min = -1/2 int_0^t beta(s) ds.
    pub fn log_mean_coeff(&self, t: f64) -> f64 {
        -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
    }

    /// The time t whose marginal has VE noise scale sigma = s(t)/m(t), i.e. m(t)^2 =
    /// 1/(1 + sigma^2) (SPEC §6 VE <-> VP): the root of
    /// 1/4 (beta_max - beta_min) t^2 + 1/2 beta_min t = 1/2 ln(1 + sigma^2).
    pub fn t_of_sigma(&self, sigma: f64) -> f64 {
        let c = 0.5 * sigma.mul_add(sigma, 1.0).ln();
        let (qa, qb) = (0.25 * (self.beta_max - self.beta_min), 0.5 * self.beta_min);
        if qa == 0.0 {
            c / qb
        } else {
            // Citardauq form, no cancellation for small c.
            2.0 * c / (qb + (qb * qb + 4.0 * qa * c).sqrt())
        }
    }

    /// The discrete betas beta_i = beta(i/N)/N, i = 1..N (SPEC §6), as a schedule whose
    /// code index i - 1 is step i (crate convention).
    pub fn discrete_schedule(&self, n: usize) -> Result<Schedule> {
        let betas = (1..=n)
            .map(|i| self.beta(i as f64 / n as f64) / n as f64)
            .collect();
        Ok(ScheduleConfig {
            beta_schedule: BetaSchedule::Custom { betas },
            num_train_timesteps: n,
            rescale_zero_terminal_snr: false,
        }
        .build()?)
    }
}

/// The VP marginal of log m(t) = `log_mean`: mean m, std s = sqrt(1 - m^2) (computed as
/// sqrt(-expm1(2 log m)), without cancellation at small t).
fn vp_marginal(log_mean: f64) -> Marginal {
    Marginal {
        mean_coeff: log_mean.exp(),
        std: (-(2.0 * log_mean).exp_m1()).sqrt(),
    }
}

/// The VP step x_t = a x_{t-dt} + b z with log a = log m(t) - log m(t - dt), b = sqrt(1 - a^2).
fn vp_step(log_a: f64) -> Discretization {
    Discretization {
        a: log_a.exp(),
        b: (-(2.0 * log_a).exp_m1()).sqrt(),
    }
}

impl Sde for VpSde {
    fn drift_coeff(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }

    fn diffusion(&self, t: f64) -> f64 {
        self.beta(t).sqrt()
    }

    fn marginal(&self, t: f64) -> Marginal {
        vp_marginal(self.log_mean_coeff(t))
    }

    /// DDPM's step between the marginal levels of t - dt and t: a = m(t)/m(t - dt),
    /// beta_i = 1 - a^2 = 1 - exp(-int_{t-dt}^t beta) (the subsampled-grid beta of SPEC §5,
    /// valid for any dt), b = sqrt(beta_i). To first order beta_i = beta(t) dt, the link
    /// beta_i = beta(i/N)/N of SPEC §6 (score_sde's `discretize`, which breaks once
    /// beta(t) dt > 1 on coarse grids).
    fn discretize(&self, t: f64, dt: f64) -> Discretization {
        vp_step(self.log_mean_coeff(t) - self.log_mean_coeff((t - dt).max(0.0)))
    }

    fn prior_std(&self) -> f64 {
        1.0
    }

    fn name(&self) -> &'static str {
        "vp"
    }
}

/// The VP SDE of a discrete schedule (SPEC §6's link beta_i = beta(i/N)/N, made exact): beta(t)
/// is constant on each step ((i-1)/N, i/N], equal to -N ln(1 - beta_i), so that
/// m(i/N)^2 = alpha_bar_i at every step i = 1..N. A discrete model read as a score of this SDE
/// is asked at t = i/N exactly about the noise level of its step i; [`VpSde::default`] is
/// this SDE only for DDPM's linear schedule at N = 1000.
///
/// Symbols: `log_mean[i]` = log m(i/N) = 1/2 ln alpha_bar_i (code index i - 1), log m(0) = 0;
/// log m is linear in t on each step.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleVpSde {
    log_mean: Vec<f64>,
}

impl ScheduleVpSde {
    /// The SDE of `schedule`. A zero-terminal-SNR schedule (alpha_bar_N = 0) has no such SDE:
    /// beta(t) is infinite on its last step.
    pub fn new(schedule: &Schedule) -> Result<Self> {
        if schedule.alpha_bar.last().is_none_or(|&a| a <= 0.0) {
            return Err(Error::config(
                "schedule",
                "its last alpha_bar is 0 (zero terminal SNR): beta(t) is infinite at t = 1, so \
                 it has no VP SDE to read the model as a score of; use the discrete samplers \
                 (and the discrete VLB for likelihoods)",
            ));
        }
        let log_mean = std::iter::once(0.0)
            .chain(schedule.alpha_bar.iter().map(|a| 0.5 * a.ln()))
            .collect();
        Ok(ScheduleVpSde { log_mean })
    }

    /// Number of steps N.
    fn steps(&self) -> usize {
        self.log_mean.len() - 1
    }

    /// t = 1/N, the time of the schedule's first step: the smallest noise level the network
    /// was trained at, where samplers stop and the likelihood starts (below it the network's
    /// timestep would be clamped to a level it never saw).
    pub fn first_step_time(&self) -> f64 {
        1.0 / self.steps() as f64
    }

    /// The step holding t (t = i/N is the start of step i + 1) and t's offset in it, in steps.
    fn locate(&self, t: f64) -> (usize, f64) {
        let u = t.clamp(0.0, 1.0) * self.steps() as f64;
        let i = (u.floor() as usize).min(self.steps() - 1);
        (i, u - i as f64)
    }

    /// log m(t), linear within each step.
    pub fn log_mean_coeff(&self, t: f64) -> f64 {
        let (i, w) = self.locate(t);
        (1.0 - w) * self.log_mean[i] + w * self.log_mean[i + 1]
    }

    /// beta(t) = -2 d log m / dt: -N ln(1 - beta_i) on step i.
    pub fn beta(&self, t: f64) -> f64 {
        let (i, _) = self.locate(t);
        -2.0 * self.steps() as f64 * (self.log_mean[i + 1] - self.log_mean[i])
    }
}

impl Sde for ScheduleVpSde {
    fn drift_coeff(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }

    fn diffusion(&self, t: f64) -> f64 {
        self.beta(t).sqrt()
    }

    fn marginal(&self, t: f64) -> Marginal {
        vp_marginal(self.log_mean_coeff(t))
    }

    /// The VP step between the marginals of t - dt and t, as [`VpSde`]'s.
    fn discretize(&self, t: f64, dt: f64) -> Discretization {
        vp_step(self.log_mean_coeff(t) - self.log_mean_coeff((t - dt).max(0.0)))
    }

    fn prior_std(&self) -> f64 {
        1.0
    }

    fn name(&self) -> &'static str {
        "vp_schedule"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoiser::{Denoised, Denoiser, NoiseLevel};
    use crate::oracle::GaussianMixture;
    use crate::rng::SampleRng;
    use crate::sde::score::{DenoiserScore, TimeInput};
    use crate::sde::solvers::{sample_ode, OdeOptions};
    use burn::tensor::Tensor;
    use std::cell::RefCell;

    fn schedules() -> Vec<(&'static str, Schedule)> {
        let build = |beta_schedule, n| {
            ScheduleConfig {
                beta_schedule,
                num_train_timesteps: n,
                rescale_zero_terminal_snr: false,
            }
            .build()
            .unwrap()
        };
        vec![
            ("linear", build(BetaSchedule::linear(), 1000)),
            ("scaled_linear", build(BetaSchedule::scaled_linear(), 1000)),
            ("cosine", build(BetaSchedule::cosine(), 1000)),
            ("sigmoid", build(BetaSchedule::sigmoid(), 1000)),
            ("cosine T=50", build(BetaSchedule::cosine(), 50)),
        ]
    }

    #[test]
    fn the_schedule_sde_has_the_schedules_marginals_at_its_steps() {
        for (name, schedule) in schedules() {
            let sde = ScheduleVpSde::new(&schedule).unwrap();
            let n = schedule.len();
            for i in 1..=n {
                let t = i as f64 / n as f64;
                // Marginal and one-step coefficients from logs and exp: float64 rounding of a
                // few ulps of values near 1; tolerance 1e-12 relative.
                let m = sde.marginal(t);
                let ab = schedule.alpha_bar[i - 1];
                assert!(
                    (m.mean_coeff.powi(2) / ab - 1.0).abs() < 1e-12,
                    "{name} step {i}"
                );
                let step = sde.discretize(t, 1.0 / n as f64);
                let alpha = 1.0 - schedule.beta[i - 1];
                assert!(
                    (step.a.powi(2) / alpha - 1.0).abs() < 1e-12,
                    "{name} step {i}"
                );
                // beta(t) = -2 d log m/dt inside the step (log m is linear there; the central
                // difference is exact up to rounding of log m / h: tolerance 1e-6 relative).
                let (mid, h) = (t - 0.5 / n as f64, 0.1 / n as f64);
                let slope = (sde.log_mean_coeff(mid + h) - sde.log_mean_coeff(mid - h)) / (2.0 * h);
                assert!(
                    (-2.0 * slope / sde.beta(mid) - 1.0).abs() < 1e-6,
                    "{name} step {i}"
                );
            }
        }
    }

    #[test]
    fn a_zero_terminal_snr_schedule_has_no_vp_sde() {
        let mut schedule = schedules().remove(0).1;
        *schedule.alpha_bar.last_mut().unwrap() = 0.0;
        let err = ScheduleVpSde::new(&schedule).unwrap_err().to_string();
        assert!(err.contains("zero terminal SNR"), "{err}");
    }

    /// A denoiser that records every noise level it is asked about.
    struct Recording<D> {
        inner: D,
        levels: RefCell<Vec<NoiseLevel>>,
    }

    impl<D: Denoiser> Denoiser for Recording<D> {
        fn denoise(
            &self,
            x_t: &Tensor<2>,
            levels: &[NoiseLevel],
            labels: Option<&[i64]>,
        ) -> Denoised {
            self.levels.borrow_mut().extend_from_slice(levels);
            self.inner.denoise(x_t, levels, labels)
        }
    }

    /// The noise levels (sigma, timestep) a discrete model read as a score of `sde` is asked
    /// about during a PF-ODE solve from 1 down to `eps` (the likelihood integrates the same
    /// interval upwards).
    fn levels_seen(sde: &dyn Sde, eps: f64, schedule: &Schedule) -> Vec<NoiseLevel> {
        let score = DenoiserScore {
            denoiser: Recording {
                inner: GaussianMixture::toy_2d(),
                levels: RefCell::new(Vec::new()),
            },
            sde,
            time: TimeInput::Discrete(Box::new(schedule.clone())),
        };
        let like = crate::tensor::from_rows(
            vec![0.0; 8],
            4,
            2,
            &Default::default(),
            burn::tensor::DType::F64,
        );
        let x1 = sde.prior_sample(&like, &mut SampleRng::new(0, 0, 4));
        let options = OdeOptions {
            rtol: 1e-3,
            atol: 1e-3,
            eps,
        };
        sample_ode(&sde, &score, x1, &options).expect("the ODE integrates");
        score.denoiser.levels.into_inner()
    }

    /// The first level outside the schedule's trained sigma range [sigma_1, sigma_N]
    /// (relative slack 1e-9 for the float64 round trip through log m), if any.
    fn outside_trained_range(levels: &[NoiseLevel], schedule: &Schedule) -> Option<NoiseLevel> {
        let (lo, hi) = (schedule.sigma[0], *schedule.sigma.last().unwrap());
        levels
            .iter()
            .copied()
            .find(|l| l.sigma < lo * (1.0 - 1e-9) || l.sigma > hi * (1.0 + 1e-9))
    }

    /// Bug 5 of issue 12: `eval --nll` read every discrete model as a score of the default VP
    /// SDE from t = 1e-5, so the network saw noise levels outside the ones it was trained at
    /// (its timestep clamped). The run's own schedule SDE from its first step does not.
    #[test]
    fn a_discrete_model_is_only_asked_about_its_trained_noise_levels() {
        for (name, schedule) in schedules() {
            let sde = ScheduleVpSde::new(&schedule).unwrap();
            let levels = levels_seen(&sde, sde.first_step_time(), &schedule);
            assert!(levels.len() > 10, "{name}: {} calls", levels.len());
            if let Some(l) = outside_trained_range(&levels, &schedule) {
                panic!("{name}: asked about sigma {} (timestep {})", l.sigma, l.t);
            }
            // And the check can fail: the old choice leaves the range on every schedule here.
            let old = levels_seen(&VpSde::default(), 1e-5, &schedule);
            assert!(outside_trained_range(&old, &schedule).is_some(), "{name}");
        }
    }
}
