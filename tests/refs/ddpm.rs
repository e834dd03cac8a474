//! `ddpm_step` and `ddpm_run` files (SPEC §2, §3, §5 DDPM ancestral).

use crate::common::{config, num, nums, tensor, tensors, tolerance, AnalyticModel, Checker};
use diffuse::compat::DiffusersSchedulerConfig;
use diffuse::denoiser::Denoiser;
use diffuse::denoiser::{NetworkDenoiser, NoiseLevel, Parameterization};
use diffuse::forward::q_sample;
use diffuse::prediction::{v_from_x0_eps, x0_and_eps};
use diffuse::rng::Replay;
use diffuse::sample::ddpm::{ddpm_mean_variance, sample_ddpm, DdpmOptions};
use diffuse::sample::grid::{discrete_grid, discrete_timesteps};
use diffuse::schedule::Schedule;
use diffuse::tensor::{from_rows_like, to_vec};
use serde_json::Value;

/// prev_t as DDPMScheduler takes it: t - 1 on the full chain; after set_timesteps(n) or with
/// custom timesteps (a case's `timesteps` list), the next entry of the timestep list (-1 after
/// the last), i.e. the next level of our grid.
fn prev_t(cfg: &DiffusersSchedulerConfig, case: &Value, t: i64) -> i64 {
    let custom = case
        .get("custom_timesteps")
        .or_else(|| case.get("timesteps"))
        .filter(|v| v.is_array());
    let list = match (custom, case["num_inference_steps"].as_u64()) {
        (Some(ts), _) => Some(nums(ts).into_iter().map(|t| t as usize).collect()),
        (None, Some(n)) => Some(discrete_timesteps(
            cfg.spacing().unwrap(),
            cfg.num_train_timesteps,
            n as usize,
            cfg.steps_offset,
        )),
        (None, None) => None,
    };
    match list {
        Some(ts) => {
            let k = ts
                .iter()
                .position(|&x| x as i64 == t)
                .expect("t is on the inference grid");
            ts.get(k + 1).map_or(-1, |&x| x as i64)
        }
        None => t - 1,
    }
}

fn levels(s: &Schedule, t: i64, prev: i64) -> (NoiseLevel, NoiseLevel) {
    let cur = NoiseLevel::discrete(s, t as usize);
    let next = if prev < 0 {
        NoiseLevel::clean()
    } else {
        NoiseLevel::discrete(s, prev as usize)
    };
    (cur, next)
}

fn step_case(file: &Value, case: &Value, c: &mut Checker) {
    let cfg = config(&case["config"]);
    let s = cfg.schedule().expect("schedule");
    let inputs = &file["inputs"];
    let (x_t, out, noise) = (
        tensor(&inputs["sample"]),
        tensor(&inputs["model_output"]),
        tensor(&inputs["noise"]),
    );
    let t = case["t"].as_i64().unwrap();
    let prev = prev_t(&cfg, case, t);
    let name = format!(
        "ddpm_step t={t} {:?} {:?} clip={}",
        cfg.prediction_type, cfg.variance_type, cfg.clip_sample
    );
    c.equal(
        &format!("{name} prev_t"),
        &[prev as f64],
        &[num(&case["prev_t"])],
    );
    let tol = tolerance(case);
    let (cur, next) = levels(&s, t, prev);
    let (a, sv) = (vec![cur.alpha()], vec![cur.sigma_vp()]);
    let (x0, _) = x0_and_eps(cfg.prediction().unwrap(), &out, &x_t, &a, &sv);
    let x0 = cfg.clip().apply(x0);
    let variance_kind = cfg.variance().unwrap();
    // learned / learned_range: the model's variance channels are the file's predicted_variance.
    let var_out = cfg
        .learned_variance()
        .then(|| tensor(&inputs["predicted_variance"]));
    let (mean, var) = ddpm_mean_variance(
        &x_t,
        &x0,
        var_out.as_ref(),
        cur.alpha_bar(),
        next.alpha_bar(),
        variance_kind,
        // The level of the chain's step before the last one (t = 1 -> 2), whose beta_tilde
        // clips ln beta_tilde on the last step (SPEC §2); other steps never use it.
        (prev < 0 && ((2 * t - prev) as usize) < s.len())
            .then(|| s.alpha_bar[(2 * t - prev) as usize]),
    )
    .unwrap();
    if let Some(want) = case.get("pred_original_sample") {
        c.close_t(
            &format!("{name} pred_original_sample"),
            &x0,
            &tensor(want),
            tol,
        );
    }
    c.close_t(
        &format!("{name} prev_sample_mean"),
        &mean,
        &tensor(&case["prev_sample_mean"]),
        tol,
    );
    if let diffuse::sample::ddpm::StepVariance::Fixed(v) = &var {
        // The variance the step used: none on the last step (t = 0); elsewhere diffusers clamps
        // beta_tilde at 1e-20.
        let used = if t > 0 { v.max(1e-20) } else { 0.0 };
        let want = num(&case["variance"]);
        // fixed_small_log: diffusers' _get_variance returns the standard deviation
        // exp(log(beta_tilde)/2); a file may record that instead of sigma^2.
        let used = if cfg.variance_type.as_deref() == Some("fixed_small_log")
            && (used.sqrt() - want).abs() < (used - want).abs()
        {
            used.sqrt()
        } else {
            used
        };
        c.close(&format!("{name} variance"), &[used], &[want], tol);
    }
    // On the last step (prev_t = -1) diffusers floors beta_tilde at 1e-20 (ln -46) where SPEC §2
    // clips ln beta_tilde to ln beta_tilde_2 (crate::variance, tests/vlb.rs checks ours against a
    // float64 closed form); no noise is added there (t = 0), so only the mean and the sample
    // are compared on that step.
    if let (Some(want), diffuse::sample::ddpm::StepVariance::LogTensor(lv), true) =
        (case.get("log_variance"), &var, prev >= 0)
    {
        c.close_t(&format!("{name} log_variance"), lv, &tensor(want), tol);
    }
    let prev_sample = if t > 0 {
        var.add_noise(mean, noise)
    } else {
        mean
    };
    c.close_t(
        &format!("{name} prev_sample"),
        &prev_sample,
        &tensor(&case["prev_sample"]),
        tol,
    );
}

pub fn check_step(file: &Value, c: &mut Checker) {
    // Every case list (`cases`, `learned_range_cases`, ...): each case's own config says
    // which variance it uses.
    for (key, cases) in file.as_object().unwrap() {
        if key == "cases" || key.ends_with("_cases") {
            for case in cases.as_array().unwrap() {
                step_case(file, case, c);
            }
        }
    }
    if let Some(fwd) = file.get("forward") {
        let cfg = config(&file["config"]);
        let s = cfg.schedule().unwrap();
        let ts: Vec<usize> = fwd["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as usize)
            .collect();
        let (x0, eps) = (tensor(&fwd["original_sample"]), tensor(&fwd["noise"]));
        let tol = tolerance(fwd);
        c.close_t(
            "forward add_noise",
            &q_sample(&s, &x0, &ts, &eps),
            &tensor(&fwd["noisy_sample"]),
            tol,
        );
        let a: Vec<f64> = ts.iter().map(|&t| s.sqrt_alpha_bar[t]).collect();
        let sv: Vec<f64> = ts.iter().map(|&t| s.sqrt_one_minus_alpha_bar[t]).collect();
        c.close_t(
            "forward get_velocity",
            &v_from_x0_eps(&x0, &eps, &a, &sv),
            &tensor(&fwd["velocity"]),
            tol,
        );
    }
}

pub fn check_run(file: &Value, c: &mut Checker) {
    let cfg = config(&file["config"]);
    let s = cfg.schedule().unwrap();
    let want_ts: Vec<f64> = nums(&file["timesteps"]);
    // set_timesteps(timesteps=[...]) (a `custom_timesteps` list) or set_timesteps(n).
    let ts: Vec<usize> = match file.get("custom_timesteps") {
        Some(custom) => nums(custom).into_iter().map(|t| t as usize).collect(),
        None => discrete_timesteps(
            cfg.spacing().unwrap(),
            cfg.num_train_timesteps,
            file["num_inference_steps"].as_u64().unwrap() as usize,
            cfg.steps_offset,
        ),
    };
    let n = ts.len();
    c.equal(
        "ddpm_run timesteps",
        &ts.iter().map(|&t| t as f64).collect::<Vec<_>>(),
        &want_ts,
    );
    let grid = discrete_grid(&s, &ts, 1.0);
    let model = AnalyticModel::from_json(&file["model"], cfg.num_train_timesteps);
    let den = NetworkDenoiser {
        net: model,
        parameterization: Parameterization::Discrete {
            prediction: cfg.prediction().unwrap(),
            learned_variance: false,
        },
    };
    let opts = DdpmOptions {
        variance: cfg.variance().unwrap(),
        clip: cfg.clip(),
    };
    let samples = tensors(&file["samples"]);
    let x0s = tensors(&file["pred_original_samples"]);
    let noises = tensors(&file["noises"]);
    let mut noise = Replay(noises.clone().into());
    let tol = tolerance(file);
    let mut got = Vec::new();
    let mut cb = |info: &diffuse::sample::StepInfo| got.push((to_vec(info.x), to_vec(info.x0_hat)));
    sample_ddpm(
        &den,
        samples[0].clone(),
        &grid,
        &opts,
        &mut noise,
        None,
        Some(&mut cb),
    )
    .unwrap();
    // diffusers adds noise whenever t > 0, also on the last step (trailing spacing or
    // steps_offset end above t = 0), where our sampler (DDPM Algorithm 2) returns the mean.
    let last_t = ts[n - 1];
    if last_t > 0 {
        let x_before = if n > 1 {
            from_rows_like(got[n - 2].0.clone(), &samples[0])
        } else {
            samples[0].clone()
        };
        let cur = NoiseLevel::discrete(&s, last_t);
        let out = den.denoise(&x_before, &[cur], None);
        let x0_hat = opts.clip.apply(out.x0);
        let (mean, var) = ddpm_mean_variance(
            &x_before,
            &x0_hat,
            None,
            cur.alpha_bar(),
            1.0,
            opts.variance,
            (n > 1).then(|| NoiseLevel::discrete(&s, ts[n - 2]).alpha_bar()),
        )
        .unwrap();
        got[n - 1].0 = to_vec(&var.add_noise(mean, noises[n - 1].clone()));
    }
    for (k, (x, x0)) in got.iter().enumerate() {
        c.close(
            &format!("ddpm_run sample {}", k + 1),
            x,
            &to_vec(&samples[k + 1]),
            tol,
        );
        c.close(&format!("ddpm_run x0_hat {k}"), x0, &to_vec(&x0s[k]), tol);
    }
    c.equal(
        "ddpm_run steps",
        &[got.len() as f64],
        &[(samples.len() - 1) as f64],
    );
}
