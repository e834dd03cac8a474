//! Training objectives (SPEC §4): per-sample weights that turn the plain squared error on the
//! configured target into L_simple, the exact L_{t-1}, min-SNR-gamma or the simple part of the
//! hybrid objective; the hybrid's L_vlb term on tensors ([`hybrid`]); and the sampling of t
//! (uniform, or by loss history as improved DDPM does for L_vlb).
//!
//! Symbols (code index `i` is math step `t = i + 1`): `alpha_t`, `alpha_bar_t`,
//! `beta_t = 1 - alpha_t`, `snr_t = alpha_bar_t / (1 - alpha_bar_t)`, `sigma_t^2` the reverse
//! variance. For a prediction type p the errors are related by
//! `||eps - eps_hat||^2 = c_p ||p - p_hat||^2` with `c_eps = 1`, `c_x0 = snr`,
//! `c_v = alpha_bar`, `c_score = 1 - alpha_bar` ([`eps_error_factor`]).

pub mod hybrid;

pub use hybrid::{hybrid_vlb_term, term_values};

use crate::prediction::PredictionType;
use crate::schedule::Schedule;
use crate::variance::VarianceType;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// improved DDPM's weight of L_vlb in the hybrid objective (Nichol & Dhariwal 2021).
pub const HYBRID_LAMBDA: f64 = 0.001;

fn default_hybrid_lambda() -> f64 {
    HYBRID_LAMBDA
}

/// How the per-sample squared errors are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossWeighting {
    /// L_simple: the unweighted mean squared error on the target (DDPM Algorithm 1).
    #[default]
    Simple,
    /// The exact L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) of a fixed variance,
    /// up to the parameter-free term: weight `beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))`
    /// on the eps error (summed over dimensions, in nats).
    Vlb { variance: VarianceType },
    /// min-SNR-gamma (Hang et al. 2023): x_0-error weight `min(snr, gamma)`.
    MinSnr { gamma: f64 },
    /// improved DDPM's hybrid L_simple + lambda L_vlb with a learned_range variance (SPEC §3,
    /// §4): the simple part has weight 1, the L_vlb term ([`hybrid_vlb_term`]) weight
    /// `lambda T` ([`LossWeighting::vlb_term_weight`]); the net outputs the prediction and v.
    Hybrid {
        #[serde(default = "default_hybrid_lambda")]
        lambda: f64,
    },
}

impl LossWeighting {
    /// Checks the parameters (gamma > 0, lambda > 0 and finite; learned variance has no fixed
    /// weight).
    pub fn validate(&self) -> crate::Result<()> {
        match *self {
            LossWeighting::MinSnr { gamma } if !(gamma > 0.0 && gamma.is_finite()) => Err(
                crate::Error::config("loss.gamma", format!("{gamma} is not > 0")),
            ),
            LossWeighting::Hybrid { lambda } if !(lambda > 0.0 && lambda.is_finite()) => Err(
                crate::Error::config("loss.lambda", format!("{lambda} is not finite and > 0")),
            ),
            LossWeighting::Vlb {
                variance: VarianceType::LearnedRange | VarianceType::Learned,
            } => Err(crate::Error::config(
                "loss.variance",
                "the L_{t-1} weighting needs a fixed variance (fixed_small or fixed_large)",
            )),
            _ => Ok(()),
        }
    }

    /// Whether the network learns the reverse variance: its output then has 2D columns, the
    /// prediction and v in [-1, 1] (learned_range, SPEC §3).
    pub fn learns_variance(&self) -> bool {
        matches!(self, LossWeighting::Hybrid { .. })
    }

    /// The weight of the per-sample L_vlb term [`hybrid_vlb_term`] in the objective:
    /// `lambda T` for hybrid, 0 otherwise. A uniform draw of t times T estimates the sum over t,
    /// so with lambda = 0.001 and T = 1000 this is improved-diffusion's
    /// `mse + vb * num_timesteps / 1000`.
    pub fn vlb_term_weight(&self, num_timesteps: usize) -> f64 {
        match *self {
            LossWeighting::Hybrid { lambda } => lambda * num_timesteps as f64,
            _ => 0.0,
        }
    }
}

/// The per-sample losses the loss-aware t sampler records ([`TimestepSampler::update`]):
/// improved DDPM's importance sampling is on L_vlb, so hybrid runs record their L_vlb term
/// (`vlb_term`, bits/dim, e.g. from [`term_values`]); other runs record the squared error.
pub fn sampler_losses<'a>(
    weighting: LossWeighting,
    mse: &'a [f64],
    vlb_term: Option<&'a [f64]>,
) -> &'a [f64] {
    match (weighting, vlb_term) {
        (LossWeighting::Hybrid { .. }, Some(term)) => term,
        _ => mse,
    }
}

/// `c_p` with `||eps err||^2 = c_p ||p err||^2` at `alpha_bar`.
pub fn eps_error_factor(prediction: PredictionType, alpha_bar: f64) -> f64 {
    match prediction {
        PredictionType::Eps => 1.0,
        PredictionType::X0 => alpha_bar / (1.0 - alpha_bar),
        PredictionType::V => alpha_bar,
        PredictionType::Score => 1.0 - alpha_bar,
    }
}

/// sigma_t^2 of a fixed-variance reverse step at code index `i`, as the bound's Gaussians use it
/// ([`crate::variance::VarianceRange::fixed_log_variance`]: fixed_small's beta_tilde clipped at
/// t = 1 where beta_tilde_1 = 0, fixed_large beta_t).
///
/// # Panics
/// For a learned variance (rejected by [`LossWeighting::validate`]).
pub fn reverse_variance(schedule: &Schedule, i: usize, variance: VarianceType) -> f64 {
    schedule
        .variance_range(i)
        .fixed_log_variance(variance)
        .expect("the L_{t-1} weighting has a fixed variance (validated)")
        .exp()
}

/// The L_{t-1} weight on the squared eps error: `beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))`.
pub fn vlb_eps_weight(schedule: &Schedule, i: usize, variance: VarianceType) -> f64 {
    let beta = schedule.beta[i];
    let one_minus_alpha_bar = schedule.sqrt_one_minus_alpha_bar[i].powi(2);
    beta * beta
        / (2.0 * reverse_variance(schedule, i, variance) * schedule.alpha[i] * one_minus_alpha_bar)
}

/// The weight of the squared error on `prediction`'s target at code index `i`.
pub fn loss_weight(
    weighting: LossWeighting,
    prediction: PredictionType,
    schedule: &Schedule,
    i: usize,
) -> f64 {
    let alpha_bar = schedule.alpha_bar[i];
    match weighting {
        LossWeighting::Simple | LossWeighting::Hybrid { .. } => 1.0,
        LossWeighting::Vlb { variance } => {
            vlb_eps_weight(schedule, i, variance) * eps_error_factor(prediction, alpha_bar)
        }
        LossWeighting::MinSnr { gamma } => {
            // eps-space weight min(snr, gamma)/snr, written to stay finite at snr = 0.
            let snr = schedule.snr[i];
            let eps_weight = if snr <= gamma { 1.0 } else { gamma / snr };
            eps_weight * eps_error_factor(prediction, alpha_bar)
        }
    }
}

/// Mean squared error per sample of row-major `[N, D]` predictions and targets.
pub fn per_sample_mse(pred: &[f32], target: &[f32], dim: usize) -> Vec<f64> {
    pred.chunks(dim)
        .zip(target.chunks(dim))
        .map(|(p, t)| {
            p.iter()
                .zip(t)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>()
                / dim as f64
        })
        .collect()
}

/// How training draws t (code indices `0..T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSampling {
    /// t ~ U{1..T}.
    #[default]
    Uniform,
    /// Improved DDPM's loss-second-moment resampler: p_t ∝ sqrt(E[L_t^2]) over the last 10
    /// losses of each t, mixed with 0.1% uniform; importance weights 1/(T p_t) keep the loss
    /// unbiased. Uniform until every t has 10 recorded losses.
    LossAware,
}

/// Losses kept per timestep by the loss-aware sampler.
pub const HISTORY_PER_T: usize = 10;
/// Uniform mixing of the loss-aware distribution.
pub const UNIFORM_PROB: f64 = 0.001;

/// The state of t sampling (the loss history, saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimestepSampler {
    pub kind: TimestepSampling,
    pub num_timesteps: usize,
    /// The last [`HISTORY_PER_T`] losses of each t (loss-aware only), oldest first.
    pub history: Vec<Vec<f64>>,
}

impl TimestepSampler {
    /// A sampler over `0..num_timesteps`.
    pub fn new(kind: TimestepSampling, num_timesteps: usize) -> Self {
        let history = match kind {
            TimestepSampling::Uniform => Vec::new(),
            TimestepSampling::LossAware => vec![Vec::new(); num_timesteps],
        };
        TimestepSampler {
            kind,
            num_timesteps,
            history,
        }
    }

    /// The current distribution over t, or `None` while it is uniform.
    pub fn probabilities(&self) -> Option<Vec<f64>> {
        if self.kind == TimestepSampling::Uniform
            || self.history.iter().any(|h| h.len() < HISTORY_PER_T)
        {
            return None;
        }
        let w: Vec<f64> = self
            .history
            .iter()
            .map(|h| (h.iter().map(|l| l * l).sum::<f64>() / h.len() as f64).sqrt())
            .collect();
        let total: f64 = w.iter().sum();
        let n = self.num_timesteps as f64;
        Some(
            w.iter()
                .map(|x| {
                    let p = if total > 0.0 { x / total } else { 1.0 / n };
                    p * (1.0 - UNIFORM_PROB) + UNIFORM_PROB / n
                })
                .collect(),
        )
    }

    /// Draws `n` timesteps and their importance weights `1 / (T p_t)` (all 1 when uniform).
    pub fn sample<R: Rng>(&self, n: usize, rng: &mut R) -> (Vec<usize>, Vec<f64>) {
        let t_max = self.num_timesteps;
        match self.probabilities() {
            None => (
                (0..n).map(|_| rng.random_range(0..t_max)).collect(),
                vec![1.0; n],
            ),
            Some(p) => {
                let mut cdf = Vec::with_capacity(t_max);
                let mut acc = 0.0;
                for v in &p {
                    acc += v;
                    cdf.push(acc);
                }
                let mut ts = Vec::with_capacity(n);
                let mut ws = Vec::with_capacity(n);
                for _ in 0..n {
                    let u = rng.random::<f64>() * acc;
                    let i = cdf.partition_point(|c| *c <= u).min(t_max - 1);
                    ts.push(i);
                    ws.push(1.0 / (t_max as f64 * p[i]));
                }
                (ts, ws)
            }
        }
    }

    /// Records the losses of a batch (loss-aware only).
    pub fn update(&mut self, t: &[usize], losses: &[f64]) {
        if self.kind == TimestepSampling::Uniform {
            return;
        }
        for (&i, &l) in t.iter().zip(losses) {
            let h = &mut self.history[i];
            if h.len() == HISTORY_PER_T {
                h.remove(0);
            }
            h.push(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// KL of two one-dimensional Gaussians through the crate's one tensor formula.
    fn gaussian_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
        let one = |v: f64| {
            burn::tensor::Tensor::<1>::from_data(
                burn::tensor::TensorData::new(vec![v], [1]),
                (&crate::device::cpu(), burn::tensor::DType::F64),
            )
        };
        crate::likelihood::terms::normal_kl(one(mean1), one(logvar1), one(mean2), one(logvar2))
            .into_scalar::<f64>()
    }

    #[test]
    fn vlb_weight_times_eps_error_is_the_gaussian_kl() {
        // SPEC §4: with mu_theta = (x_t - beta/sqrt(1-ab) eps_hat)/sqrt(alpha) and the true
        // posterior mean in the same form with eps, KL(q || p_theta) with equal variances is
        // w ||eps - eps_hat||^2. Independent check through the Gaussian KL on the two means
        // (float64, relative tol 1e-9: cancellation in mean1 - mean2 of ~1e-12 relative).
        let s = ScheduleConfig::default().build().unwrap();
        for i in [0usize, 1, 10, 500, 999] {
            let (x_t, eps, eps_hat) = (0.7, -0.4, 0.3);
            let c = s.beta[i] / s.sqrt_one_minus_alpha_bar[i];
            let mean = |e: f64| (x_t - c * e) / s.alpha[i].sqrt();
            let logvar = s.posterior_log_variance_clipped[i];
            let kl = gaussian_kl(mean(eps), logvar, mean(eps_hat), logvar);
            let w = vlb_eps_weight(&s, i, VarianceType::FixedSmall);
            let ours = w * (eps - eps_hat).powi(2);
            assert!((ours - kl).abs() < 1e-9 * kl, "i={i}: {ours} vs {kl}");
        }
    }

    #[test]
    fn weights_are_consistent_across_targets() {
        // An eps error e corresponds to an x0 error -e s/a and a v error e/a: every weighting
        // must give the same loss whichever target the network predicts (tol 1e-12 relative).
        let s = ScheduleConfig::default().build().unwrap();
        for weighting in [
            LossWeighting::Vlb {
                variance: VarianceType::FixedLarge,
            },
            LossWeighting::MinSnr { gamma: 5.0 },
        ] {
            for i in [0usize, 200, 999] {
                let (a, sd) = (s.sqrt_alpha_bar[i], s.sqrt_one_minus_alpha_bar[i]);
                let e = 0.3;
                let l_eps = loss_weight(weighting, PredictionType::Eps, &s, i) * e * e;
                let l_x0 = loss_weight(weighting, PredictionType::X0, &s, i) * (e * sd / a).powi(2);
                let l_v = loss_weight(weighting, PredictionType::V, &s, i) * (e / a).powi(2);
                assert!(
                    (l_x0 - l_eps).abs() < 1e-12 * l_eps,
                    "{weighting:?} x0 i={i}"
                );
                assert!((l_v - l_eps).abs() < 1e-12 * l_eps, "{weighting:?} v i={i}");
            }
        }
    }

    #[test]
    fn hybrid_weighting_config_and_weights() {
        // SPEC §4 hybrid: serde form {"kind":"hybrid","lambda":...}, lambda defaulting to
        // improved DDPM's 0.001; simple part weight 1 for every target; L_vlb term weight
        // lambda T, exactly 1 for 0.001 and T = 1000 (improved-diffusion's vb * T / 1000).
        let h: LossWeighting = serde_json::from_str(r#"{"kind":"hybrid","lambda":0.01}"#).unwrap();
        assert_eq!(h, LossWeighting::Hybrid { lambda: 0.01 });
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"kind":"hybrid","lambda":0.01}"#);
        let d: LossWeighting = serde_json::from_str(r#"{"kind":"hybrid"}"#).unwrap();
        assert_eq!(
            d,
            LossWeighting::Hybrid {
                lambda: HYBRID_LAMBDA
            }
        );
        assert!(h.validate().is_ok() && h.learns_variance());
        assert!(!LossWeighting::Simple.learns_variance());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                LossWeighting::Hybrid { lambda: bad }.validate().is_err(),
                "{bad}"
            );
        }
        let s = ScheduleConfig::default().build().unwrap();
        for p in [PredictionType::Eps, PredictionType::X0, PredictionType::V] {
            assert_eq!(loss_weight(d, p, &s, 500), 1.0);
        }
        assert_eq!(d.vlb_term_weight(1000), 1.0);
        assert_eq!(LossWeighting::Simple.vlb_term_weight(1000), 0.0);
        let (mse, term) = ([1.0, 2.0], [3.0, 4.0]);
        assert_eq!(sampler_losses(d, &mse, Some(&term)), &term);
        assert_eq!(
            sampler_losses(LossWeighting::Simple, &mse, Some(&term)),
            &mse
        );
    }

    #[test]
    fn min_snr_caps_the_x0_weight_at_gamma() {
        // x0-space weight is min(snr, gamma): exact arithmetic up to one rounding (tol 1e-12).
        let s = ScheduleConfig::default().build().unwrap();
        let g = 5.0;
        for i in [0usize, 50, 999] {
            let w = loss_weight(
                LossWeighting::MinSnr { gamma: g },
                PredictionType::X0,
                &s,
                i,
            );
            let want = s.snr[i].min(g);
            assert!(
                (w - want).abs() < 1e-12 * want.max(1e-300),
                "i={i} {w} {want}"
            );
        }
    }

    #[test]
    fn loss_aware_sampler_favours_high_loss_steps_and_stays_unbiased() {
        // T = 4 with loss 3 at t = 2 and 1 elsewhere: p = (1,1,3,1)/6 mixed with 0.1% uniform.
        let mut s = TimestepSampler::new(TimestepSampling::LossAware, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(s.probabilities().is_none());
        for _ in 0..HISTORY_PER_T {
            s.update(&[0, 1, 2, 3], &[1.0, 1.0, 3.0, 1.0]);
        }
        let p = s.probabilities().unwrap();
        let want = 3.0 / 6.0 * (1.0 - UNIFORM_PROB) + UNIFORM_PROB / 4.0;
        assert!((p[2] - want).abs() < 1e-12);
        // Empirically (100k draws): frequency of t = 2 within 5 sd (0.0016) of 0.4998.
        let n = 100_000;
        let (ts, ws) = s.sample(n, &mut rng);
        let freq = ts.iter().filter(|&&t| t == 2).count() as f64 / n as f64;
        assert!((freq - want).abs() < 0.008, "{freq}");
        // The weights sample() returns make the estimator unbiased: mean_n w_n f(t_n) estimates
        // mean_t f(t) = 2.5 for f = (1, 2, 3, 4). Its sd per draw is sqrt(E_p[(f/(T p))^2] -
        // 2.5^2) (exactly 1.66 here), so the 100k-draw mean is within 5 standard errors
        // (0.026) of 2.5; unweighted draws would give E_p f = 2.67. The weights themselves
        // average to 1 (sd 0.5 per draw: bound 5 sd / sqrt(n) = 0.008).
        let f = [1.0, 2.0, 3.0, 4.0];
        let second: f64 = (0..4).map(|t| p[t] * (f[t] / (4.0 * p[t])).powi(2)).sum();
        let se = ((second - 2.5 * 2.5) / n as f64).sqrt();
        let estimate = ts.iter().zip(&ws).map(|(&t, w)| w * f[t]).sum::<f64>() / n as f64;
        assert!((estimate - 2.5).abs() < 5.0 * se, "{estimate} (se {se})");
        let mean_w = ws.iter().sum::<f64>() / n as f64;
        assert!((mean_w - 1.0).abs() < 0.008, "mean weight {mean_w}");
    }
}
