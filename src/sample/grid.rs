//! Time grids for the samplers: timestep spacings as diffusers' `set_timesteps` builds them,
//! discrete-step grids and sigma-space grids (interpolated or Karras, SPEC §5).

use super::sigma_grid::{
    dpm_grid, dpm_solver_timesteps_below, euler_grid, DpmGridOptions, SigmaConversion,
    SigmaGridOptions,
};
use crate::denoiser::NoiseLevel;
use crate::schedule::{karras_sigmas, linspace, Schedule};
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

/// The grid of discrete levels `timesteps` followed by a final level of `final_alpha_bar`
/// (1 for clean data; diffusers' `set_alpha_to_one = False` uses alpha_bar of step 1).
pub fn discrete_grid(
    schedule: &Schedule,
    timesteps: &[usize],
    final_alpha_bar: f64,
) -> Vec<NoiseLevel> {
    let mut g: Vec<NoiseLevel> = timesteps
        .iter()
        .map(|&i| NoiseLevel::discrete(schedule, i))
        .collect();
    g.push(NoiseLevel::from_alpha_bar(final_alpha_bar, -1.0));
    g
}

/// The full chain T-1, ..., 0 and then clean data: DDPM's 1000-step grid.
pub fn full_grid(schedule: &Schedule) -> Vec<NoiseLevel> {
    let ts: Vec<usize> = (0..schedule.len()).rev().collect();
    discrete_grid(schedule, &ts, 1.0)
}

/// A sigma-space grid at (possibly fractional) timesteps: sigma interpolated linearly in the
/// schedule's sigma table (diffusers' Euler/Heun), ending at sigma = 0.
pub fn interpolated_sigma_grid(schedule: &Schedule, timesteps: &[f64]) -> Vec<NoiseLevel> {
    let mut g: Vec<NoiseLevel> = timesteps
        .iter()
        .map(|&t| NoiseLevel {
            sigma: schedule.sigma_at(t),
            t,
        })
        .collect();
    g.push(NoiseLevel::clean());
    g
}

/// Karras sigmas (rho = `rho`, n values from sigma_max to sigma_min) with the fractional
/// timestep of each recovered by log-sigma interpolation, ending at sigma = 0. `round_t`
/// rounds those timesteps for models that only take integer steps (diffusers' DPM-Solver).
pub fn karras_grid(
    schedule: &Schedule,
    sigma_min: f64,
    sigma_max: f64,
    n: usize,
    rho: f64,
    round_t: bool,
) -> Vec<NoiseLevel> {
    let mut g: Vec<NoiseLevel> = karras_sigmas(sigma_min, sigma_max, n, rho)
        .into_iter()
        .map(|sigma| {
            let t = schedule.sigma_to_t(sigma);
            NoiseLevel {
                sigma,
                t: if round_t { round_half_even(t) } else { t },
            }
        })
        .collect();
    g.push(NoiseLevel::clean());
    g
}

/// alpha_bar that diffusers' sigma-space and DPM-Solver schedulers put in place of a zero
/// terminal alpha_bar (`2**-24`, the smallest positive float16), so that sigma_max is finite
/// (about 4096) instead of +inf.
pub const ZERO_SNR_ALPHA_BAR: f64 = 1.0 / 16_777_216.0;

/// The schedule as the sigma-space samplers see it: a zero-terminal-SNR last step (sigma = +inf,
/// where x = x_t / a is undefined) is moved to alpha_bar = [`ZERO_SNR_ALPHA_BAR`], as diffusers'
/// Euler, Heun and DPM-Solver schedulers do. Other schedules are returned unchanged.
pub fn finite_sigma_schedule(schedule: &Schedule) -> Schedule {
    let mut s = schedule.clone();
    let last = s.len() - 1;
    if !s.sigma[last].is_finite() {
        let ab = ZERO_SNR_ALPHA_BAR;
        s.alpha_bar[last] = ab;
        s.sigma[last] = ((1.0 - ab) / ab).sqrt();
    }
    s
}

/// The sigma grid of the sigma-space samplers (Euler, Heun, Euler ancestral), as diffusers'
/// `EulerDiscreteScheduler.set_timesteps(n)` with its default options: fractional
/// `timesteps(spacing)`, sigmas interpolated in the schedule's sigma table, optionally replaced
/// by Karras sigmas (rho = 7) between the first and last interpolated sigma with
/// log-sigma-interpolated timesteps; then sigma = 0. A zero-terminal-SNR schedule is first made
/// finite ([`finite_sigma_schedule`]). Every other option: [`super::sigma_grid::euler_grid`].
pub fn sigma_space_grid(
    schedule: &Schedule,
    spacing: Spacing,
    n: usize,
    steps_offset: usize,
    karras: bool,
) -> Vec<NoiseLevel> {
    let options = SigmaGridOptions {
        spacing,
        steps_offset,
        conversion: SigmaConversion::karras_if(karras),
        ..SigmaGridOptions::default()
    };
    euler_grid(schedule, n, &options)
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

/// DPM-Solver's grid (VP space) with diffusers' default options: the schedule's levels at
/// [`dpm_solver_timesteps`], or Karras sigmas (rho = 7) between the smallest and largest sigma
/// of the whole training table with rounded recovered timesteps; then sigma = 0. As in
/// diffusers, a zero-terminal-SNR table is made finite first ([`finite_sigma_schedule`]); the
/// solver itself also accepts sigma = +inf. Every other option: [`super::sigma_grid::dpm_grid`].
pub fn dpm_solver_grid(
    schedule: &Schedule,
    spacing: Spacing,
    n: usize,
    steps_offset: usize,
    karras: bool,
) -> Vec<NoiseLevel> {
    let options = DpmGridOptions {
        spacing,
        steps_offset,
        conversion: SigmaConversion::karras_if(karras),
        ..DpmGridOptions::default()
    };
    dpm_grid(schedule, n, &options)
}

/// The ascending grid of DDIM inversion (clean to noisy) for sampling `timesteps` (descending
/// code indices): level k has the noise of the state before inversion step k (the clean level
/// `final_alpha_bar` first, then `timesteps` in ascending order) and, as in diffusers'
/// `DDIMInverseScheduler`, the timestep value of the step's target level, since the clean level
/// has no timestep a network was trained on. The last level is the end state, x_T.
pub fn ddim_inversion_grid(
    schedule: &Schedule,
    timesteps: &[usize],
    final_alpha_bar: f64,
) -> Vec<NoiseLevel> {
    let up: Vec<usize> = timesteps.iter().rev().copied().collect();
    let mut g = Vec::with_capacity(up.len() + 1);
    for (k, &t) in up.iter().enumerate() {
        let sigma = if k == 0 {
            NoiseLevel::from_alpha_bar(final_alpha_bar, 0.0).sigma
        } else {
            schedule.sigma[up[k - 1]]
        };
        g.push(NoiseLevel { sigma, t: t as f64 });
    }
    if let Some(&last) = up.last() {
        g.push(NoiseLevel::discrete(schedule, last));
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;

    #[test]
    fn trailing_spacing_has_exactly_n_steps() {
        for n in [1usize, 10, 16, 61, 103, 121, 999, 1000] {
            let t = discrete_timesteps(Spacing::Trailing, 1000, n, 0);
            assert_eq!(t.len(), n, "n = {n}");
            assert_eq!(t[0], 999);
            assert_eq!(
                *t.last().unwrap(),
                round_half_even(1000.0 / n as f64) as usize - 1
            );
        }
    }

    #[test]
    fn spacings_match_their_definitions() {
        assert_eq!(
            discrete_timesteps(Spacing::Leading, 1000, 10, 0),
            vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(discrete_timesteps(Spacing::Leading, 1000, 10, 1)[0], 901);
        assert_eq!(
            discrete_timesteps(Spacing::Trailing, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(
            discrete_timesteps(Spacing::Linspace, 1000, 4, 0),
            vec![999, 666, 333, 0]
        );
        assert_eq!(round_half_even(812.5), 812.0);
        assert_eq!(round_half_even(813.5), 814.0);
        assert_eq!(round_half_even(-0.5), 0.0);
    }

    #[test]
    fn dpm_solver_and_inversion_grids() {
        // diffusers: linspace(0, 999, 11).round()[::-1][:-1] (499.5 rounds to 500).
        assert_eq!(
            dpm_solver_timesteps(Spacing::Linspace, 1000, 10, 0),
            vec![999, 899, 799, 699, 599, 500, 400, 300, 200, 100]
        );
        assert_eq!(
            dpm_solver_timesteps(Spacing::Leading, 1000, 4, 1),
            vec![801, 601, 401, 201]
        );
        let s = ScheduleConfig::default().build().unwrap();
        // Inversion: level k carries the noise of the state before step k and the target's t.
        let g = ddim_inversion_grid(&s, &[900, 500, 100], 1.0);
        assert_eq!(g.len(), 4);
        assert_eq!((g[0].sigma, g[0].t), (0.0, 100.0));
        assert_eq!((g[1].sigma, g[1].t), (s.sigma[100], 500.0));
        assert_eq!((g[2].sigma, g[2].t), (s.sigma[500], 900.0));
        assert_eq!(g[3].sigma, s.sigma[900]);
        // Zero terminal SNR: the sigma-space table is made finite as diffusers does.
        let z = ScheduleConfig {
            rescale_zero_terminal_snr: true,
            ..ScheduleConfig::default()
        }
        .build()
        .unwrap();
        let f = finite_sigma_schedule(&z);
        let want = ((1.0 - ZERO_SNR_ALPHA_BAR) / ZERO_SNR_ALPHA_BAR).sqrt();
        assert!(z.sigma[999].is_infinite() && f.sigma[999] == want);
        assert_eq!(f.sigma[..999], z.sigma[..999]);
        // The Karras grid starts there (up to the rounding of (s^(1/7))^7: 1e-12 relative).
        let g = sigma_space_grid(&z, Spacing::Trailing, 10, 0, true);
        assert!((g[0].sigma / want - 1.0).abs() < 1e-12);
    }

    #[test]
    fn grids_end_clean_and_decrease() {
        let s = ScheduleConfig::default().build().unwrap();
        for g in [
            full_grid(&s),
            interpolated_sigma_grid(&s, &timesteps(Spacing::Linspace, 1000, 25, 0)),
            karras_grid(&s, s.sigma[0], s.sigma[999], 25, 7.0, false),
        ] {
            assert_eq!(g.last().unwrap().sigma, 0.0);
            assert!(g.windows(2).all(|w| w[1].sigma < w[0].sigma));
        }
    }
}
