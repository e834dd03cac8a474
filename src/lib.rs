//! diffuse: diffusion models (DDPM, DDIM, score SDEs) trained, sampled and evaluated in Rust.
//!
//! # Time-index convention (the one place it is written down)
//!
//! The math (SPEC §1) numbers diffusion steps `t = 1..T`, with `alpha_bar_0 = 1` for clean data.
//! The code numbers them `i = 0..T-1`: **code index `i` is math step `t = i + 1`**. So
//! `schedule.alpha_bar[i]` is `alpha_bar_{i+1}`, `schedule.beta[0]` is `beta_1`, and the clean
//! level `alpha_bar_0 = 1` is what [`schedule::Schedule::alpha_bar_prev`] returns for `i = 0`.
//! A network conditioned on a discrete timestep receives the code index (as diffusers does), and
//! the reference vectors in `shared/refs/` use the same 0-based indices.
//!
//! Noise levels that leave the discrete grid (sigma-space samplers, SDEs) are carried as a
//! [`denoiser::NoiseLevel`]: the VE noise scale `sigma = sqrt((1 - alpha_bar) / alpha_bar)`
//! together with the (possibly fractional) timestep value the network is given.

pub mod compat;
pub mod data;
pub mod denoiser;
pub mod device;
pub mod error;
pub mod eval;
pub mod forward;
pub mod likelihood;
pub mod loss;
pub mod nn;
pub mod oracle;
pub mod prediction;
pub mod report;
pub mod rng;
pub mod sample;
pub mod schedule;
pub mod sde;
pub mod special;
pub mod tensor;
pub mod train;
pub mod variance;
pub mod viz;

pub use denoiser::{Denoised, Denoiser, NoiseLevel};
pub use error::{Error, Result};
pub use schedule::{BetaSchedule, Schedule, ScheduleConfig};
