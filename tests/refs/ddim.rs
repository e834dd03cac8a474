//! `ddim_timesteps`, `ddim_step`, `ddim_run` and `ddim_inverse` files (SPEC §5 DDIM).
//!
//! diffusers' DDIMScheduler steps from t to `prev_t = t - T // n` whatever the spacing, and
//! DDIMInverseScheduler from `from_t = min(t - T // n, T - 1)` up to t. Where those levels are
//! the neighbours on the timestep list (every file here), the runs go through our samplers
//! (`sample_ddim`, `ddim_invert` on `ddim_inversion_grid`); otherwise they are replayed step by
//! step with `ddim_step` at diffusers' levels (as are runs with `use_clipped_model_output`).

use crate::common::{analytic_denoiser, config, num, nums, tensor, tensors, tolerance, Checker};
use diffuse::compat::DiffusersSchedulerConfig;
use diffuse::denoiser::{Denoiser, NoiseLevel};
use diffuse::prediction::{eps_from_x0, x0_and_eps};
use diffuse::rng::Replay;
use diffuse::sample::ddim::{ddim_invert, ddim_sigma, ddim_step, sample_ddim, DdimOptions};
use diffuse::sample::grid::{ddim_inversion_grid, discrete_grid, discrete_timesteps};
use diffuse::sample::{ClippedX0, StepInfo};
use diffuse::tensor::to_vec;
use serde_json::Value;

/// Whether a case or run called `step(..., use_clipped_model_output=True)`, which recomputes
/// eps_hat = (x_t - a x0_hat) / s from the clipped x0_hat.
fn clipped_model_output(v: &Value) -> bool {
    v.get("use_clipped_model_output")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn timesteps_of(cfg: &DiffusersSchedulerConfig, n: usize) -> Vec<usize> {
    discrete_timesteps(
        cfg.spacing().expect("spacing"),
        cfg.num_train_timesteps,
        n,
        cfg.steps_offset,
    )
}

pub fn check_timesteps(file: &Value, c: &mut Checker) {
    let base = config(&file["config"]);
    for case in file["cases"].as_array().unwrap() {
        let spacing = case["timestep_spacing"].as_str().unwrap();
        let cfg = DiffusersSchedulerConfig {
            timestep_spacing: spacing.into(),
            steps_offset: case["steps_offset"].as_u64().unwrap() as usize,
            ..base.clone()
        };
        let n = case["num_inference_steps"].as_u64().unwrap() as usize;
        let got: Vec<f64> = timesteps_of(&cfg, n).iter().map(|&t| t as f64).collect();
        c.equal(
            &format!("ddim_timesteps {spacing} offset={} n={n}", cfg.steps_offset),
            &got,
            &nums(&case["timesteps"]),
        );
    }
}

pub fn check_step(file: &Value, c: &mut Checker) {
    let inputs = &file["inputs"];
    let (x_t, out, noise) = (
        tensor(&inputs["sample"]),
        tensor(&inputs["model_output"]),
        tensor(&inputs["noise"]),
    );
    for case in file["cases"].as_array().unwrap() {
        let cfg = config(&case["config"]);
        let s = cfg.schedule().unwrap();
        let n = case["num_inference_steps"].as_u64().unwrap() as i64;
        let t = case["t"].as_i64().unwrap();
        let eta = num(&case["eta"]);
        let prev = t - cfg.num_train_timesteps as i64 / n;
        let name = format!(
            "ddim_step t={t} eta={eta} {} clip={} alpha_to_one={}",
            cfg.prediction_type, cfg.clip_sample, cfg.set_alpha_to_one
        );
        c.equal(
            &format!("{name} prev_t"),
            &[prev as f64],
            &[num(&case["prev_t"])],
        );
        let tol = tolerance(case);
        let cur = NoiseLevel::discrete(&s, t as usize);
        let alpha_bar_prev = s.alpha_bar_at(prev, cfg.final_alpha_bar(&s));
        let (x0_hat, eps_hat) = x0_and_eps(
            cfg.prediction().unwrap(),
            &out,
            &x_t,
            &[cur.alpha()],
            &[cur.sigma_vp()],
        );
        let x0_hat = cfg.clip().apply(x0_hat);
        // step(use_clipped_model_output=True) recomputes eps_hat from the clipped x0_hat.
        let eps_hat = if clipped_model_output(case) {
            eps_from_x0(&x_t, &x0_hat, &[cur.alpha()], &[cur.sigma_vp()])
        } else {
            eps_hat
        };
        c.close_t(
            &format!("{name} pred_original_sample"),
            &x0_hat,
            &tensor(&case["pred_original_sample"]),
            tol,
        );
        c.close(
            &format!("{name} std_dev_t"),
            &[ddim_sigma(cur.alpha_bar(), alpha_bar_prev, eta)],
            &[num(&case["std_dev_t"])],
            tol,
        );
        let prev_sample = ddim_step(
            &x0_hat,
            &eps_hat,
            cur.alpha_bar(),
            alpha_bar_prev,
            eta,
            Some(noise.clone()),
        );
        c.close_t(
            &format!("{name} prev_sample"),
            &prev_sample,
            &tensor(&case["prev_sample"]),
            tol,
        );
    }
}

pub fn check_run(file: &Value, c: &mut Checker) {
    let x_init = tensor(&file["x_init"]);
    for (r, run) in file["runs"].as_array().unwrap().iter().enumerate() {
        let cfg = config(&run["config"]);
        let s = cfg.schedule().unwrap();
        let n = run["num_inference_steps"].as_u64().unwrap() as usize;
        let eta = num(&run["eta"]);
        let name = format!("ddim_run {r} ({} eta={eta})", cfg.prediction_type);
        let ts = timesteps_of(&cfg, n);
        let ts_f: Vec<f64> = ts.iter().map(|&t| t as f64).collect();
        c.equal(
            &format!("{name} timesteps"),
            &ts_f,
            &nums(&run["timesteps"]),
        );
        let den = analytic_denoiser(file, &cfg);
        let final_ab = cfg.final_alpha_bar(&s);
        let opts = DdimOptions {
            eta,
            clip: cfg.clip(),
        };
        let noises = if eta > 0.0 {
            tensors(&file["noises"])
        } else {
            Vec::new()
        };
        let stride = (cfg.num_train_timesteps / n) as i64;
        let prevs: Vec<i64> = ts.iter().map(|&t| t as i64 - stride).collect();
        let on_grid = (0..n).all(|k| match ts.get(k + 1) {
            Some(&next) => prevs[k] == next as i64,
            None => prevs[k] < 0,
        });
        let mut got: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        let recompute_eps = clipped_model_output(run);
        if on_grid && !recompute_eps {
            let grid = discrete_grid(&s, &ts, final_ab);
            let mut cb = |i: &StepInfo| got.push((to_vec(i.x), to_vec(i.x0_hat)));
            let mut noise = Replay(noises.into());
            sample_ddim(
                &den,
                x_init.clone(),
                &grid,
                &opts,
                &mut noise,
                None,
                Some(&mut cb),
            );
        } else {
            let mut x = x_init.clone();
            for (k, &t) in ts.iter().enumerate() {
                let cur = NoiseLevel::discrete(&s, t);
                let out = den.denoise(&x, &[cur], None);
                let x0_hat = opts.clip.apply(out.x0);
                let eps_hat = if recompute_eps {
                    eps_from_x0(&x, &x0_hat, &[cur.alpha()], &[cur.sigma_vp()])
                } else {
                    out.eps
                };
                let alpha_bar_prev = s.alpha_bar_at(prevs[k], final_ab);
                let z = (eta > 0.0).then(|| noises[k].clone());
                x = ddim_step(&x0_hat, &eps_hat, cur.alpha_bar(), alpha_bar_prev, eta, z);
                got.push((to_vec(&x), to_vec(&x0_hat)));
            }
        }
        let tol = tolerance(run);
        let (samples, x0s) = (
            tensors(&run["samples"]),
            tensors(&run["pred_original_samples"]),
        );
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
            c.close(&format!("{name} x0_hat {k}"), x0, &to_vec(&x0s[k]), tol);
        }
    }
}

pub fn check_inverse(file: &Value, c: &mut Checker) {
    let inputs = &file["inputs"];
    let (x, out) = (tensor(&inputs["sample"]), tensor(&inputs["model_output"]));
    for case in file["cases"].as_array().unwrap() {
        let cfg = config(&case["config"]);
        let s = cfg.schedule().unwrap();
        let n = case["num_inference_steps"].as_u64().unwrap() as i64;
        let t = case["t"].as_i64().unwrap();
        let big_t = cfg.num_train_timesteps as i64;
        let from_t = (t - big_t / n).min(big_t - 1);
        let name = format!("ddim_inverse t={t} {}", cfg.prediction_type);
        c.equal(
            &format!("{name} from_t"),
            &[from_t as f64],
            &[num(&case["from_t"])],
        );
        let from = NoiseLevel::from_alpha_bar(s.alpha_bar_at(from_t, cfg.final_alpha_bar(&s)), 0.0);
        let (x0_hat, eps_hat) = x0_and_eps(
            cfg.prediction().unwrap(),
            &out,
            &x,
            &[from.alpha()],
            &[from.sigma_vp()],
        );
        let x0_hat = cfg.clip().apply(x0_hat);
        let tol = tolerance(case);
        c.close_t(
            &format!("{name} pred_original_sample"),
            &x0_hat,
            &tensor(&case["pred_original_sample"]),
            tol,
        );
        let next = ddim_step(
            &x0_hat,
            &eps_hat,
            from.alpha_bar(),
            s.alpha_bar[t as usize],
            0.0,
            None,
        );
        c.close_t(
            &format!("{name} next_sample"),
            &next,
            &tensor(&case["next_sample"]),
            tol,
        );
    }
    if let Some(run) = file.get("run") {
        check_inverse_run(run, c);
    }
}

fn check_inverse_run(run: &Value, c: &mut Checker) {
    let cfg = config(&run["config"]);
    let s = cfg.schedule().unwrap();
    let n = run["num_inference_steps"].as_u64().unwrap() as usize;
    let big_t = cfg.num_train_timesteps as i64;
    let desc = timesteps_of(&cfg, n);
    let up: Vec<usize> = desc.iter().rev().copied().collect();
    c.equal(
        "ddim_inverse run timesteps",
        &up.iter().map(|&t| t as f64).collect::<Vec<_>>(),
        &nums(&run["timesteps"]),
    );
    let den = analytic_denoiser(run, &cfg);
    // DDIMInverseScheduler clips x0_hat with clip_sample (its default is true).
    let den = ClippedX0 {
        inner: den,
        clip: cfg.clip(),
    };
    let final_ab = cfg.final_alpha_bar(&s);
    let froms: Vec<i64> = up
        .iter()
        .map(|&t| (t as i64 - big_t / n as i64).min(big_t - 1))
        .collect();
    let on_grid = (0..n).all(|k| match k {
        0 => froms[0] < 0,
        _ => froms[k] == up[k - 1] as i64,
    });
    let x_init = tensor(&run["x_init"]);
    let mut got: Vec<Vec<f64>> = Vec::new();
    if on_grid {
        let grid = ddim_inversion_grid(&s, &desc, final_ab);
        let mut cb = |i: &StepInfo| got.push(to_vec(i.x));
        ddim_invert(&den, x_init, &grid, None, Some(&mut cb));
    } else {
        let mut x = x_init;
        for (k, &t) in up.iter().enumerate() {
            let ab_from = s.alpha_bar_at(froms[k], final_ab);
            let from = NoiseLevel::from_alpha_bar(ab_from, t as f64);
            let out = den.denoise(&x, &[from], None);
            x = ddim_step(&out.x0, &out.eps, ab_from, s.alpha_bar[t], 0.0, None);
            got.push(to_vec(&x));
        }
    }
    let samples = tensors(&run["samples"]);
    let tol = tolerance(run);
    c.equal(
        "ddim_inverse run steps",
        &[got.len() as f64],
        &[(samples.len() - 1) as f64],
    );
    for (k, x) in got.iter().enumerate() {
        c.close(
            &format!("ddim_inverse run sample {}", k + 1),
            x,
            &to_vec(&samples[k + 1]),
            tol,
        );
    }
}
