//! Grids of discrete training levels for the VP samplers (DDPM, DDIM and its inversion).

use crate::denoiser::NoiseLevel;
use crate::schedule::Schedule;

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
