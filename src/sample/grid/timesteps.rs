//! Which training timesteps a sampler visits (SPEC §5): the spacings of diffusers'
//! `set_timesteps` (linspace / leading / trailing), numpy's rounding, and DPM-Solver's variant.

use crate::schedule::linspace;
use serde::{Deserialize, Serialize};

/// How inference timesteps are spread over the T training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// linspace(0, T-1, n), descending.
    #[default]
    Linspace,
    /// 0, T//n, 2T//n, ... (+ steps_offset), descending: the DDIM paper's choice.
    Leading,
    /// round(T, T - T/n, ...) - 1: always includes the last step T-1 (Lin et al. 2024).
    Trailing,
}

impl Spacing {
    /// Parses `linspace`, `leading` or `trailing`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "linspace" => Some(Self::Linspace),
            "leading" => Some(Self::Leading),
            "trailing" => Some(Self::Trailing),
            _ => None,
        }
    }
}

/// numpy's round (half to even), which diffusers' timestep tables use.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// `n` inference timesteps (code indices, descending) out of `num_train` steps. Linspace
/// values are left fractional (Euler keeps them); discrete samplers round them with
/// [`round_half_even`]. `steps_offset` only shifts `leading`, as in diffusers.
pub fn timesteps(spacing: Spacing, num_train: usize, n: usize, steps_offset: usize) -> Vec<f64> {
    let t_max = num_train as f64;
    match spacing {
        Spacing::Linspace => {
            let mut t = linspace(0.0, t_max - 1.0, n);
            t.reverse();
            t
        }
        Spacing::Leading => {
            let ratio = (num_train / n) as f64;
            (0..n)
                .rev()
                .map(|i| round_half_even(i as f64 * ratio) + steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => {
            // round(T - k T/n) - 1 for k = 0..n. diffusers writes np.arange(T, 0, -T/n), whose
            // float64 length is n + 1 for some n (61, 103, 121 at T = 1000): it then takes one
            // extra step at timestep -1, which indexes alphas_cumprod[-1] (pure noise). We keep
            // exactly n steps, ending at T/n - 1.
            let step = t_max / n as f64;
            (0..n)
                .map(|k| round_half_even(t_max - k as f64 * step) - 1.0)
                .collect()
        }
    }
}

/// Integer timesteps (discrete samplers: DDPM, DDIM).
pub fn discrete_timesteps(
    spacing: Spacing,
    num_train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<usize> {
    timesteps(spacing, num_train, n, steps_offset)
        .into_iter()
        .map(|t| round_half_even(t).max(0.0) as usize)
        .collect()
}

/// DPM-Solver's integer timesteps (diffusers' `DPMSolverMultistepScheduler.set_timesteps`):
/// linspace takes `linspace(0, T-1, n+1).round()[::-1][:-1]`, leading steps by `T // (n+1)`
/// (plus `steps_offset`), trailing as in [`timesteps`].
pub fn dpm_solver_timesteps(
    spacing: Spacing,
    num_train: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<usize> {
    dpm_solver_timesteps_below(spacing, num_train, num_train, n, steps_offset)
}

/// DPM-Solver's integer timesteps below `last_timestep` (T unless lambda is clipped):
/// linspace takes `linspace(0, last - 1, n + 1).round()[::-1][:-1]`, leading steps by
/// `last // (n + 1)` (plus `steps_offset`), trailing `arange(last, 0, -T/n).round() - 1` (which
/// has fewer than n entries when last < T).
pub fn dpm_solver_timesteps_below(
    spacing: Spacing,
    num_train: usize,
    last_timestep: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<usize> {
    match spacing {
        Spacing::Linspace => {
            let mut t: Vec<usize> = linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .map(|t| round_half_even(t) as usize)
                .collect();
            t.reverse();
            t.pop();
            t
        }
        Spacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n).rev().map(|i| i * ratio + steps_offset).collect()
        }
        Spacing::Trailing => {
            let step = num_train as f64 / n as f64;
            let len = (last_timestep as f64 / step).ceil() as usize;
            (0..len)
                .map(|k| (round_half_even(last_timestep as f64 - k as f64 * step) - 1.0) as usize)
                .collect()
        }
    }
}
