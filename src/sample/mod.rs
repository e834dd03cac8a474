//! Samplers (SPEC §5): each a plain function of a denoiser, a starting state, a time grid, a
//! noise source and typed options, returning the final state. No hidden state: multistep
//! solvers keep their history in local variables. Grids are built by [`grid`].
//!
//! A grid is a slice of [`NoiseLevel`]s in sampling order, from the starting level to the
//! final one (usually `sigma = 0`): step `k` moves the state from `grid[k]` to `grid[k + 1]`,
//! so `grid.len()` is the number of steps plus one.
//!
//! | file | samplers | state | grid builder |
//! |---|---|---|---|
//! | `ddpm.rs` | DDPM ancestral (Algorithm 2) | VP, `x_t` | [`grid::discrete_grid`] |
//! | `ddim.rs` | DDIM (eta in [0, 1]), DDIM inversion | VP, `x_t` | [`grid::discrete_grid`], [`grid::ddim_inversion_grid`] |
//! | `karras.rs` | Euler, Heun (+ churn), Euler ancestral | VE, `x = x_t / a` | [`grid::sigma_space_grid`], [`grid::euler_grid`] |
//! | `dpm_solver.rs` | DPM-Solver(++) orders 1-3, ODE and SDE forms; DPM-Solver++(2M) | VP, `x_t` | [`grid::dpm_solver_grid`], [`grid::dpm_grid`] |
//!
//! `grid/sigma.rs` builds the grids of every diffusers config option (log-linear placement,
//! Karras / exponential / beta sigmas, sigma overrides, final sigma, continuous timesteps,
//! lambda clipping); [`crate::compat`] maps a diffusers config onto those options.
//!
//! Zero terminal SNR (sigma = +inf, a = 0 at the first level): the VP samplers step from it as
//! is; the VE samplers cannot hold x = x_t / a there, so their grid builders move that level to
//! alpha_bar = 2^-24 (sigma ~ 4096), as diffusers does. No sampler branches on the prediction
//! type: the [`crate::denoiser::Denoiser`] gives x0 and eps, and [`ClippedX0`] adds clipping.

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod grid;
pub mod karras;
pub mod registry;

use crate::denoiser::NoiseLevel;
use burn::tensor::Tensor;

/// What a sampler reports after each step (for progress bars and trajectory pictures).
pub struct StepInfo<'a> {
    /// Step number, 0-based.
    pub step: usize,
    /// Total number of steps.
    pub steps: usize,
    /// The level the state is now at.
    pub level: NoiseLevel,
    /// The state after this step.
    pub x: &'a Tensor<2>,
    /// The denoiser's x_0 prediction used by this step.
    pub x0_hat: &'a Tensor<2>,
}

/// An optional per-step observer.
pub type Callback<'a> = Option<&'a mut dyn FnMut(&StepInfo)>;

/// Calls the callback, if any, after step `step` of `steps` reached `level` with state `x`.
pub(crate) fn report(
    callback: &mut Callback,
    step: usize,
    steps: usize,
    level: NoiseLevel,
    x: &Tensor<2>,
    x0_hat: &Tensor<2>,
) {
    if let Some(cb) = callback.as_mut() {
        cb(&StepInfo {
            step,
            steps,
            level,
            x,
            x0_hat,
        });
    }
}

/// Clamping of the predicted x_0 (SPEC §5: optional clipping to the data range).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum X0Clip {
    /// No clipping.
    #[default]
    None,
    /// Clamp to [-range, range].
    Clip { range: f64 },
    /// Imagen's dynamic thresholding: per sample, s = the `ratio` quantile of |x0|, clamped to
    /// [1, max_value] as diffusers' `torch.clamp(q, min=1, max=max_value)` does (so s =
    /// max_value when max_value < 1); x0 <- clamp(x0, -s, s) / s.
    Dynamic { ratio: f64, max_value: f64 },
}

impl X0Clip {
    /// Checks the parameters: a clip range > 0, a dynamic ratio in (0, 1] and a max_value > 0
    /// (NaN fails every check).
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad = |name, reason: String| Err(crate::error::Error::config(name, reason));
        match *self {
            X0Clip::None => Ok(()),
            X0Clip::Clip { range } if range.is_nan() || range <= 0.0 => {
                bad("clip", format!("range {range} must be > 0"))
            }
            X0Clip::Dynamic { ratio, .. } if !(ratio > 0.0 && ratio <= 1.0) => bad(
                "dynamic thresholding",
                format!("ratio {ratio} must be in (0, 1]"),
            ),
            X0Clip::Dynamic { max_value, .. } if max_value.is_nan() || max_value <= 0.0 => bad(
                "dynamic thresholding",
                format!("sample_max_value {max_value} must be > 0"),
            ),
            _ => Ok(()),
        }
    }

    /// Applies the clipping to a batch of x_0 predictions.
    pub fn apply(&self, x0: Tensor<2>) -> Tensor<2> {
        match *self {
            X0Clip::None => x0,
            X0Clip::Clip { range } => x0.clamp(-range, range),
            X0Clip::Dynamic { ratio, max_value } => {
                let [_, d] = x0.dims();
                let v = crate::tensor::to_vec(&x0);
                let mut out = Vec::with_capacity(v.len());
                for row in v.chunks(d) {
                    let mut abs: Vec<f64> = row.iter().map(|x| x.abs()).collect();
                    abs.sort_by(f64::total_cmp);
                    let s = clamp_min_then_max(quantile_sorted(&abs, ratio), 1.0, max_value);
                    out.extend(row.iter().map(|x| x.clamp(-s, s) / s));
                }
                crate::tensor::from_rows_like(out, &x0)
            }
        }
    }
}

/// A denoiser whose x_0 prediction is clipped ([`X0Clip`]) and whose eps prediction is left as
/// the inner denoiser gave it (as diffusers does: eps_hat is not recomputed from the clipped
/// x0_hat). Gives clipping and dynamic thresholding to every sampler (Heun's and DPM-Solver's
/// `clip_sample` / `thresholding` in diffusers) without a branch in the samplers.
pub struct ClippedX0<D> {
    pub inner: D,
    pub clip: X0Clip,
}

impl<D: crate::denoiser::Denoiser> crate::denoiser::Denoiser for ClippedX0<D> {
    fn denoise(
        &self,
        x_t: &Tensor<2>,
        levels: &[NoiseLevel],
        labels: Option<&[i64]>,
    ) -> crate::denoiser::Denoised {
        let mut out = self.inner.denoise(x_t, levels, labels);
        out.x0 = self.clip.apply(out.x0);
        out
    }
}

/// `torch.clamp(x, min, max)`: the lower bound first, then the upper one, so `max` wins when
/// `min > max` (where `f64::clamp` panics).
fn clamp_min_then_max(x: f64, min: f64, max: f64) -> f64 {
    x.max(min).min(max)
}

/// Linear-interpolation quantile of sorted values (numpy's default method).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}
