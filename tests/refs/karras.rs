//! `euler`, `heun` (sigma space, VE state) and `dpmsolver` (VP state) files (SPEC §5).
//!
//! Grids are rebuilt from each file's config (never read from the file) and the runs go
//! through our samplers with the analytic model; the states at which the denoiser was called
//! are compared with the files' samples (Heun: predictor points included).
//!
//! Tolerances: runs use the README rule. Tables use their own `f64_check` (sigmas: relative,
//! timesteps: absolute), never below 2 float32 ulps (diffusers stores both in float32). A table
//! without `f64_check` (heun.json) falls back to the README's stated float32 deviations:
//! sigmas 1e-4 relative or the float32 cancellation bound of the schedule's sigma_min
//! ([`f32_sigma_rel_tol`]), whichever is larger; converted (Karras, exponential, beta)
//! timesteps 1e-2 absolute ("up to a few 1e-3"), other timesteps 1e-3 absolute. DPM-Solver's
//! integer timesteps must be equal, except where float32 decides a rounding
//! ([`accept_float32_ties`]).

use crate::common::{
    analytic_denoiser, config, f32_sigma_rel_tol, num, nums, tensor, tensors, tolerance, Checker,
};
use diffuse::compat::DiffusersSchedulerConfig;
use diffuse::denoiser::NoiseLevel;
use diffuse::rng::Replay;
use diffuse::sample::dpm_solver::sample_dpm_solver;
use diffuse::sample::grid::{
    dpm_grid, euler_grid, init_noise_sigma, recovery_log_sigmas, round_half_even, DpmGridOptions,
    FinalSigma, Interpolation, ModelTime, SigmaConversion, TimeOfSigma,
};
use diffuse::sample::karras::{sample_euler, sample_heun, Churn};
use diffuse::sample::{ClippedX0, StepInfo};
use diffuse::schedule::{sigma_to_t_in, Schedule};
use diffuse::tensor::to_vec;
use serde_json::Value;
use std::collections::VecDeque;

/// A table's config: its own `config`, or the file's base config (which lists every option,
/// defaults included) with the keys the table sets beside its data (`timestep_spacing`,
/// `use_karras_sigmas`, or any other option).
fn table_config(table: &Value, base: &Value) -> DiffusersSchedulerConfig {
    let mut merged = match table.get("config") {
        Some(c) => c.clone(),
        None => base.clone(),
    };
    for (key, value) in table.as_object().unwrap() {
        if base.get(key).is_some() {
            merged[key] = value.clone();
        }
    }
    config(&merged)
}

fn grid_of(cfg: &DiffusersSchedulerConfig, n: usize) -> Vec<NoiseLevel> {
    let s = cfg.schedule().unwrap();
    euler_grid(&s, n, &cfg.sigma_grid_options().unwrap())
}

/// diffusers' `sigmas` array of a grid: the grid's sigmas, plus the final sigma that an
/// unconverted log-linear placement appends after its own n + 1 values (never stepped to).
fn diffusers_sigmas(cfg: &DiffusersSchedulerConfig, grid: &[NoiseLevel]) -> Vec<f64> {
    let mut sigmas: Vec<f64> = grid.iter().map(|l| l.sigma).collect();
    let opts = cfg.sigma_grid_options().unwrap();
    // (With continuous timesteps every placed sigma is already a level of the grid.)
    if opts.interpolation == Interpolation::LogLinear
        && opts.conversion == SigmaConversion::None
        && opts.model_time != ModelTime::LogSigma
    {
        let s = cfg.schedule().unwrap();
        sigmas.push(match opts.final_sigma {
            FinalSigma::Zero => 0.0,
            FinalSigma::SigmaMin => s.sigma[0],
        });
    }
    sigmas
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
    for table in file["tables"].as_array().into_iter().flatten() {
        let cfg = table_config(table, &file["config"]);
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
            None => (
                f32_sigma_rel_tol(&cfg.schedule().unwrap()).max(1e-4),
                if cfg.sigma_grid_options().unwrap().conversion != SigmaConversion::None {
                    1e-2
                } else {
                    1e-3
                },
            ),
        };
        let grid = grid_of(&cfg, n);
        // diffusers stores sigmas and timesteps in float32: never ask for more than 2 ulp.
        let f32_ulps = 2.0 * f64::from(f32::EPSILON);
        let sigma_tol = sigma_tol.max(f32_ulps);
        let t_max = grid.iter().map(|l| l.t.abs()).fold(1.0, f64::max);
        let t_tol = t_tol.max(f32_ulps * t_max);
        let (sigmas, ts) = if heun {
            interleave(&grid)
        } else {
            let sigmas = diffusers_sigmas(&cfg, &grid);
            // Continuous timesteps are ln(sigma)/4 of every sigma but the last.
            let ts = match cfg.sigma_grid_options().unwrap().model_time {
                ModelTime::LogSigma => sigmas[..sigmas.len() - 1]
                    .iter()
                    .map(|s| 0.25 * s.ln())
                    .collect(),
                _ => grid[..n].iter().map(|l| l.t).collect(),
            };
            (sigmas, ts)
        };
        c.equal(
            &format!("{name} number of sigmas"),
            &[sigmas.len() as f64],
            &[table["sigmas"].as_array().unwrap().len() as f64],
        );
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
        let init = init_noise_sigma(&grid, cfg.spacing().unwrap());
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
        // diffusers' Euler churn (step(s_churn=...)) evaluates the model before the churn noise
        // and reuses that output at sigma_hat; ours follows EDM (the denoiser at sigma_hat).
        if run.get("s_churn").map(num).unwrap_or(0.0) > 0.0 {
            panic!("{name}: unsupported s_churn > 0 (diffusers' Euler churn differs from EDM's)");
        }
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
        let time = TimeOfSigma::index(&cfg.schedule().unwrap());
        if heun {
            sample_heun(
                &clipped,
                x_init,
                &grid,
                &churn,
                &time,
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
                &time,
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
        // c_in = 1/sqrt(sigma^2 + 1) carries the float32 error of diffusers' sigma.
        let c_in_tol = f32_sigma_rel_tol(&cfg.schedule().unwrap()).max(1e-4);
        c.close(
            &format!("{name} c_in"),
            &c_in,
            &nums(&run["c_in"]),
            c_in_tol,
        );
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

/// Integer timesteps of converted sigmas are a rounding or an integer cast of a fractional
/// index that diffusers recovers from float32 sigmas: a relative sigma error up to
/// [`f32_sigma_rel_tol`] (the converted sigmas inherit the float32 error of the table ends they
/// span) moves that index over [t(sigma (1 - d)), t(sigma (1 + d))]. Compares our timesteps
/// with the file's: equal ones pass; a differing one is a float32 tie when the file's value is
/// the rounding or cast of a point of that interval, and a failure otherwise. Returns the ties
/// (step, ours, file's); our grid is never changed.
fn float32_ties(
    schedule: &Schedule,
    options: &DpmGridOptions,
    levels: &[NoiseLevel],
    want: &[f64],
    name: &str,
    c: &mut Checker,
) -> Vec<(usize, f64, f64)> {
    let logs = recovery_log_sigmas(schedule);
    let d = f32_sigma_rel_tol(schedule);
    let to_int = |t: f64| match options.model_time {
        ModelTime::TruncatedIndex => t.trunc(),
        _ => round_half_even(t),
    };
    let ts: Vec<f64> = levels.iter().map(|l| l.t).collect();
    let mut ties = Vec::new();
    let mut strict = Vec::new();
    for (k, (level, &w)) in levels.iter().zip(want).enumerate() {
        let lo = to_int(sigma_to_t_in(&logs, level.sigma * (1.0 - d)));
        let hi = to_int(sigma_to_t_in(&logs, level.sigma * (1.0 + d)));
        if level.t != w && lo <= w && w <= hi {
            ties.push((k, level.t, w));
            strict.push(w);
        } else {
            strict.push(level.t);
        }
    }
    // Every timestep that is not a tie must equal the file's.
    c.equal(&format!("{name} timesteps (ties excepted)"), &strict, want);
    if !ties.is_empty() {
        println!("TIE {name}: float32 decides the rounding at (step, ours, reference) {ties:?}; ours {ts:?}");
    }
    ties
}

pub fn check_dpm(file: &Value, c: &mut Checker) {
    for (r, run) in file["runs"].as_array().unwrap().iter().enumerate() {
        let cfg = config(&run["config"]);
        let s = cfg.schedule().unwrap();
        let n = run["num_inference_steps"].as_u64().unwrap() as usize;
        let name = format!(
            "dpmsolver run {r} ({} {} order {} karras={})",
            cfg.algorithm_type, cfg.prediction_type, cfg.solver_order, cfg.use_karras_sigmas
        );
        let grid_opts = cfg.dpm_grid_options().unwrap();
        let grid = dpm_grid(&s, n, &grid_opts);
        let opts = cfg.dpm_solver_options().unwrap();
        let steps = grid.len() - 1;
        let want_ts = nums(&run["timesteps"]);
        if grid_opts.conversion == SigmaConversion::None {
            let ts: Vec<f64> = grid[..steps].iter().map(|l| l.t).collect();
            c.equal(&format!("{name} timesteps"), &ts, &want_ts);
        } else {
            let ties = float32_ties(&s, &grid_opts, &grid[..steps], &want_ts, &name, c);
            // The run below uses our timesteps: with a tie the analytic model's t-dependent
            // output differs from the file's, and the states fail by name.
            c.ties += ties.len();
        }
        if let Some(want) = run.get("sigmas") {
            // diffusers stores float32 sigmas computed from float32 alpha_bar: the README's
            // largest stated deviation (sigma_min, about 1e-4) and the float32 cancellation
            // bound of the schedule.
            let got: Vec<f64> = grid.iter().map(|l| l.sigma).collect();
            let rel: Vec<f64> = got
                .iter()
                .zip(nums(want))
                .map(|(g, w)| if w == 0.0 { *g } else { g / w - 1.0 })
                .collect();
            c.close_abs(
                &format!("{name} sigmas (relative)"),
                &rel,
                &vec![0.0; got.len()],
                f32_sigma_rel_tol(&s).max(2e-4),
            );
        }
        let den = analytic_denoiser(file, &cfg);
        // DPM-Solver's `thresholding` applies to the data prediction.
        let clipped = ClippedX0 {
            inner: &den,
            clip: cfg.clip(),
        };
        // The SDE forms take the noise of each step from the file.
        let noises = run.get("noises").or_else(|| file.get("noises"));
        let mut noise = match (opts.sde, noises) {
            (true, Some(v)) => Replay(tensors(v).into()),
            (true, None) => panic!(
                "{name}: algorithm_type {} needs `noises`",
                cfg.algorithm_type
            ),
            (false, _) => Replay(VecDeque::new()),
        };
        let mut got: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        let mut cb = |i: &StepInfo| got.push((to_vec(i.x), to_vec(i.x0_hat)));
        let x_init = tensor(&run["x_init"]);
        sample_dpm_solver(
            &clipped,
            x_init,
            &grid,
            &opts,
            &mut noise,
            None,
            Some(&mut cb),
        );
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
        let final_zero = grid[steps].sigma == 0.0;
        let orders: Vec<f64> = (0..steps)
            .map(|k| opts.order_at(k, steps, final_zero) as f64)
            .collect();
        c.equal(&format!("{name} orders"), &orders, &nums(&run["orders"]));
    }
}
