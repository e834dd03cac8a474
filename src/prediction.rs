//! What a network predicts and the conversions between predictions (SPEC §3).
//!
//! Symbols: with `a = sqrt(alpha_bar_t)` and `s = sqrt(1 - alpha_bar_t)`,
//! `x_t = a x_0 + s eps`; velocity `v = a eps - s x_0`; score `= -eps / s`.
//! Coefficient slices hold one value per sample (`[N]`) or one for the batch (`[1]`).

use crate::tensor::{lincomb, scale};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The quantity a network is trained to output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise eps (DDPM).
    #[default]
    #[serde(alias = "epsilon")]
    Eps,
    /// The clean sample x_0 (diffusers' "sample").
    #[serde(alias = "sample")]
    X0,
    /// The velocity v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (diffusers' "v_prediction").
    #[serde(alias = "v_prediction")]
    V,
    /// The score grad_x log p_t(x_t) = -eps / sqrt(1 - alpha_bar).
    Score,
}

impl PredictionType {
    /// Parses the names used here and by diffusers (`epsilon`, `sample`, `v_prediction`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "eps" | "epsilon" => Some(Self::Eps),
            "x0" | "sample" => Some(Self::X0),
            "v" | "v_prediction" => Some(Self::V),
            "score" => Some(Self::Score),
            _ => None,
        }
    }
}

/// Checks that `prediction` can be sampled on a schedule with `rescale_zero_terminal_snr`
/// (SPEC §1: zero terminal SNR requires a prediction that does not divide by
/// sqrt(alpha_bar)). At t = T alpha_bar = 0, so eps (and score) prediction's
/// x_0 = (x_t - s eps) / a divides by zero and every sample is NaN; v and x0 prediction give
/// x_0 and eps without that division ([`x0_and_eps`]). Called where a run's config is
/// validated (`RunConfig::validate`, which training and every loaded run go through).
pub fn check_zero_terminal_snr(
    prediction: PredictionType,
    rescale_zero_terminal_snr: bool,
) -> crate::Result<()> {
    match prediction {
        PredictionType::Eps | PredictionType::Score if rescale_zero_terminal_snr => {
            Err(crate::Error::config(
                "prediction",
                format!(
                    "{prediction:?} prediction with schedule.rescale_zero_terminal_snr = true \
                     divides by sqrt(alpha_bar_T) = 0 (NaN samples); use v or x0 prediction, or \
                     turn zero-terminal-SNR rescaling off"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// x_0 = (x_t - s eps) / a.
pub fn x0_from_eps(x_t: &Tensor<2>, eps: &Tensor<2>, a: &[f64], s: &[f64]) -> Tensor<2> {
    let inv_a: Vec<f64> = a.iter().map(|a| 1.0 / a).collect();
    let neg_s_over_a: Vec<f64> = a.iter().zip(s).map(|(a, s)| -s / a).collect();
    lincomb(&inv_a, x_t, &neg_s_over_a, eps)
}

/// eps = (x_t - a x_0) / s.
pub fn eps_from_x0(x_t: &Tensor<2>, x0: &Tensor<2>, a: &[f64], s: &[f64]) -> Tensor<2> {
    let inv_s: Vec<f64> = s.iter().map(|s| 1.0 / s).collect();
    let neg_a_over_s: Vec<f64> = a.iter().zip(s).map(|(a, s)| -a / s).collect();
    lincomb(&inv_s, x_t, &neg_a_over_s, x0)
}

/// v = a eps - s x_0.
pub fn v_from_x0_eps(x0: &Tensor<2>, eps: &Tensor<2>, a: &[f64], s: &[f64]) -> Tensor<2> {
    let neg_s: Vec<f64> = s.iter().map(|s| -s).collect();
    lincomb(a, eps, &neg_s, x0)
}

/// x_0 = a x_t - s v.
pub fn x0_from_v(x_t: &Tensor<2>, v: &Tensor<2>, a: &[f64], s: &[f64]) -> Tensor<2> {
    let neg_s: Vec<f64> = s.iter().map(|s| -s).collect();
    lincomb(a, x_t, &neg_s, v)
}

/// eps = s x_t + a v.
pub fn eps_from_v(x_t: &Tensor<2>, v: &Tensor<2>, a: &[f64], s: &[f64]) -> Tensor<2> {
    lincomb(s, x_t, a, v)
}

/// score = -eps / s.
pub fn score_from_eps(eps: &Tensor<2>, s: &[f64]) -> Tensor<2> {
    let c: Vec<f64> = s.iter().map(|s| -1.0 / s).collect();
    scale(&c, eps.clone())
}

/// eps = -s score.
pub fn eps_from_score(score: &Tensor<2>, s: &[f64]) -> Tensor<2> {
    let c: Vec<f64> = s.iter().map(|s| -s).collect();
    scale(&c, score.clone())
}

/// Both x_0 and eps from a network output of the given type. This is the one place that
/// branches on the prediction type. v gives both without division, so it stays finite at
/// alpha_bar = 0 (zero terminal SNR) and alpha_bar = 1.
pub fn x0_and_eps(
    prediction: PredictionType,
    output: &Tensor<2>,
    x_t: &Tensor<2>,
    a: &[f64],
    s: &[f64],
) -> (Tensor<2>, Tensor<2>) {
    match prediction {
        PredictionType::Eps => (x0_from_eps(x_t, output, a, s), output.clone()),
        PredictionType::X0 => (output.clone(), eps_from_x0(x_t, output, a, s)),
        PredictionType::V => (x0_from_v(x_t, output, a, s), eps_from_v(x_t, output, a, s)),
        PredictionType::Score => {
            let eps = eps_from_score(output, s);
            (x0_from_eps(x_t, &eps, a, s), eps)
        }
    }
}

/// The training target of a prediction type, given the clean sample and the noise.
pub fn target(
    prediction: PredictionType,
    x0: &Tensor<2>,
    eps: &Tensor<2>,
    a: &[f64],
    s: &[f64],
) -> Tensor<2> {
    match prediction {
        PredictionType::Eps => eps.clone(),
        PredictionType::X0 => x0.clone(),
        PredictionType::V => v_from_x0_eps(x0, eps, a, s),
        PredictionType::Score => score_from_eps(eps, s),
    }
}

#[cfg(test)]
mod tests;
