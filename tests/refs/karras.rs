//! `euler`, `heun` (sigma space, VE state) and `dpmsolver` (VP state) files (SPEC §5).
//!
//! Grids are rebuilt from each file's config (never read from the file) and the runs go
//! through our samplers with the analytic model; the states at which the denoiser was called
//! are compared with the files' samples (Heun: predictor points included).
//!
//! Tolerances: runs use the README rule. Tables use their own `f64_check` (sigmas: relative,
//! timesteps: absolute). A table without `f64_check` (heun.json) falls back to the README's
//! stated float32 deviations: sigmas 1e-4 relative (float32 tables; the largest measured
//! deviation in euler.json is 1.3e-5), fractional Karras timesteps 1e-2 absolute ("up to a few
//! 1e-3"), other timesteps 1e-3 absolute (float32 storage of values below 1000: ulp 6e-5).

use crate::common::{analytic_denoiser, config, num, nums, tensor, tensors, tolerance, Checker};
use diffuse::compat::DiffusersSchedulerConfig;
use diffuse::denoiser::NoiseLevel;
use diffuse::rng::Replay;
use diffuse::sample::dpm_solver::sample_dpmpp_2m;
use diffuse::sample::grid::{dpm_solver_grid, sigma_space_grid};
use diffuse::sample::karras::{sample_euler, sample_heun, Churn};
use diffuse::sample::{ClippedX0, StepInfo};
use diffuse::tensor::to_vec;
use serde_json::Value;
use std::collections::VecDeque;

fn spacing_of(v: &Value, cfg: &DiffusersSchedulerConfig) -> DiffusersSchedulerConfig {
    let mut cfg = cfg.clone();
    if let Some(s) = v.get("timestep_spacing").and_then(Value::as_str) {
        cfg.timestep_spacing = s.into();
    }
    if let Some(k) = v.get("use_karras_sigmas").and_then(Value::as_bool) {
        cfg.use_karras_sigmas = k;
    }
    cfg
}

fn grid_of(cfg: &DiffusersSchedulerConfig, n: usize) -> Vec<NoiseLevel> {
    let s = cfg.schedule().unwrap();
    sigma_space_grid(
        &s,
        cfg.spacing().unwrap(),
        n,
        cfg.steps_offset,
        cfg.use_karras_sigmas,
    )
}

/// diffusers' interleaved Heun schedule: sigma_0, then sigma_1..sigma_{n-1} twice, then 0;
/// timesteps t_0, then t_1..t_{n-1} twice.
fn interleave(grid: &[NoiseLevel]) -> (Vec<f64>, Vec<f64>) {
    let n = grid.len() - 1;
    let (mut sig, mut ts) = (vec![grid[0].sigma], vec![grid[0].t]);
    for l in &grid[1..n] {
        sig.extend([l.sigma, l.sigma]);
        ts.extend([l.t, l.t]);
    }
    sig.push(0.0);
    (sig, ts)
}

fn check_tables(file: &Value, heun: bool, c: &mut Checker) {
    let base = config(&file["config"]);
    for table in file["tables"].as_array().into_iter().flatten() {
        let cfg = spacing_of(table, &base);
        let n = table["num_inference_steps"].as_u64().unwrap() as usize;
        let name = format!(
            "{} table {} karras={} n={n}",
            file["kind"].as_str().unwrap(),
            cfg.timestep_spacing,
            cfg.use_karras_sigmas
        );
        let (sigma_tol, t_tol) = match table.get("f64_check") {
            Some(chk) => (
                (2.0 * num(&chk["sigmas_max_rel_dev"])).max(1e-9),
                (2.0 * num(&chk["timesteps_max_abs_dev"])).max(1e-9),
            ),
            None => (1e-4, if cfg.use_karras_sigmas { 1e-2 } else { 1e-3 }),
        };
        let grid = grid_of(&cfg, n);
        let (sigmas, ts) = if heun {
            interleave(&grid)
        } else {
            (
                grid.iter().map(|l| l.sigma).collect(),
                grid[..n].iter().map(|l| l.t).collect(),
            )
        };
        let want_sigmas = nums(&table["sigmas"]);
        // Relative check for sigmas (mixed error <= relative error).
        let rel: Vec<f64> = sigmas
            .iter()
            .zip(&want_sigmas)
            .map(|(g, w)| if *w == 0.0 { *g } else { g / w - 1.0 })
            .collect();
        c.close_abs(
            &format!("{name} sigmas (relative)"),
            &rel,
            &vec![0.0; rel.len()],
            sigma_tol,
        );
        c.close_abs(
            &format!("{name} timesteps"),
            &ts,
            &nums(&table["timesteps"]),
            t_tol,
        );
        let sigma_max = grid[0].sigma;
        let init = if cfg.timestep_spacing == "leading" {
            sigma_max.hypot(1.0)
        } else {
            sigma_max
        };
        c.close(
            &format!("{name} init_noise_sigma"),
            &[init],
            &[num(&table["init_noise_sigma"])],
            sigma_tol,
        );
    }
}

fn check_sigma_runs(file: &Value, heun: bool, c: &mut Checker) {
    for (r, run) in file["runs"].as_array().unwrap().iter().enumerate() {
        let cfg = config(&run["config"]);
        let n = run["num_inference_steps"].as_u64().unwrap() as usize;
        let name = format!(
            "{} run {r} ({} karras={})",
            file["kind"].as_str().unwrap(),
            cfg.prediction_type,
            cfg.use_karras_sigmas
        );
        let grid = grid_of(&cfg, n);
        let den = analytic_denoiser(file, &cfg);
        // Heun's clip_sample (diffusers' Euler has none; the config then reads false).
        let clipped = ClippedX0 {
            inner: &den,
            clip: cfg.clip(),
        };
        let mut got: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        let mut cb = |i: &StepInfo| got.push((to_vec(i.x), to_vec(i.x0_hat)));
        let x_init = tensor(&run["x_init"]);
        let mut no_noise = Replay(VecDeque::new());
        let churn = Churn::default();
        if heun {
            sample_heun(
                &clipped,
                x_init,
                &grid,
                &churn,
                &mut no_noise,
                None,
                Some(&mut cb),
            );
        } else {
            sample_euler(
                &clipped,
                x_init,
                &grid,
                &churn,
                &mut no_noise,
                None,
                Some(&mut cb),
            );
        }
        let tol = tolerance(run);
        let samples = tensors(&run["samples"]);
        let inputs = tensors(&run["model_inputs"]);
        let (recorded, levels) = (den.inputs.borrow(), den.levels.borrow());
        c.equal(
            &format!("{name} model evaluations"),
            &[recorded.len() as f64],
            &[inputs.len() as f64],
        );
        // The state each evaluation saw (x_t / c_in) is the file's samples[e]: the model inputs
        // themselves also carry diffusers' float32 c_in, which is checked on its own below with
        // the float32 sigma bound.
        for (e, (x_t, level)) in recorded.iter().zip(levels.iter()).enumerate() {
            let x: Vec<f64> = x_t.iter().map(|v| v / level.alpha()).collect();
            c.close(
                &format!("{name} state at evaluation {e}"),
                &x,
                &to_vec(&samples[e]),
                tol,
            );
        }
        let c_in: Vec<f64> = levels.iter().map(|l| l.alpha()).collect();
        c.close(&format!("{name} c_in"), &c_in, &nums(&run["c_in"]), 1e-4);
        // State after step k: after evaluation k (Euler), or after the corrector evaluation
        // 2k + 1 (Heun; the last step, a single Euler evaluation, is evaluation 2n - 2).
        for (k, (x, x0)) in got.iter().enumerate() {
            let idx = if heun {
                (2 * k + 2).min(2 * n - 1)
            } else {
                k + 1
            };
            c.close(
                &format!("{name} sample {idx}"),
                x,
                &to_vec(&samples[idx]),
                tol,
            );
            if let Some(x0s) = run.get("pred_original_samples") {
                c.close(
                    &format!("{name} x0_hat {k}"),
                    x0,
                    &to_vec(&tensors(x0s)[k]),
                    tol,
                );
            }
        }
        if heun {
            let orders: Vec<f64> = (0..n)
                .flat_map(|k| {
                    if grid[k + 1].sigma > 0.0 {
                        vec![1.0, 2.0]
                    } else {
                        vec![1.0]
                    }
                })
                .collect();
            c.equal(&format!("{name} orders"), &orders, &nums(&run["orders"]));
        }
    }
}

pub fn check_euler(file: &Value, c: &mut Checker) {
    check_tables(file, false, c);
    check_sigma_runs(file, false, c);
}

pub fn check_heun(file: &Value, c: &mut Checker) {
    check_tables(file, true, c);
    check_sigma_runs(file, true, c);
}

pub fn check_dpm(file: &Value, c: &mut Checker) {
    for (r, run) in file["runs"].as_array().unwrap().iter().enumerate() {
        let cfg = config(&run["config"]);
        let s = cfg.schedule().unwrap();
        let n = run["num_inference_steps"].as_u64().unwrap() as usize;
        let name = format!(
            "dpmsolver run {r} ({} karras={})",
            cfg.prediction_type, cfg.use_karras_sigmas
        );
        let grid = dpm_solver_grid(
            &s,
            cfg.spacing().unwrap(),
            n,
            cfg.steps_offset,
            cfg.use_karras_sigmas,
        );
        let ts: Vec<f64> = grid[..n].iter().map(|l| l.t).collect();
        c.equal(&format!("{name} timesteps"), &ts, &nums(&run["timesteps"]));
        let den = analytic_denoiser(file, &cfg);
        // DPM-Solver's `thresholding` applies to the data prediction.
        let clipped = ClippedX0 {
            inner: &den,
            clip: cfg.clip(),
        };
        let mut got: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        let mut cb = |i: &StepInfo| got.push((to_vec(i.x), to_vec(i.x0_hat)));
        sample_dpmpp_2m(&clipped, tensor(&run["x_init"]), &grid, None, Some(&mut cb));
        let tol = tolerance(run);
        let (samples, denoised) = (tensors(&run["samples"]), tensors(&run["denoised"]));
        c.equal(
            &format!("{name} steps"),
            &[got.len() as f64],
            &[(samples.len() - 1) as f64],
        );
        for (k, (x, x0)) in got.iter().enumerate() {
            c.close(
                &format!("{name} sample {}", k + 1),
                x,
                &to_vec(&samples[k + 1]),
                tol,
            );
            c.close(
                &format!("{name} denoised {k}"),
                x0,
                &to_vec(&denoised[k]),
                tol,
            );
        }
        // Orders: first order on the first step, on the last (to sigma = 0) and after a step
        // from sigma = +inf; second order elsewhere.
        let orders: Vec<f64> = (0..n)
            .map(|k| {
                let first = k == 0 || grid[k + 1].sigma == 0.0 || grid[k - 1].sigma.is_infinite();
                if first {
                    1.0
                } else {
                    2.0
                }
            })
            .collect();
        c.equal(&format!("{name} orders"), &orders, &nums(&run["orders"]));
    }
}
