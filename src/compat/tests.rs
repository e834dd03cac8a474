//! diffusers configs onto our options; every unreproducible value is refused by name.
use super::*;

fn parse(json: &str) -> DiffusersSchedulerConfig {
    DiffusersSchedulerConfig::from_json(&serde_json::from_str(json).unwrap()).unwrap()
}

#[test]
fn dpm_solver_config_maps_onto_solver_and_grid_options() {
    // As diffusers writes it: JSON has no infinity, so -inf is a string; sigma_min may be null.
    let cfg = parse(
        r#"{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "squaredcos_cap_v2",
            "solver_order": 3, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun",
            "lower_order_final": false, "euler_at_final": true, "use_karras_sigmas": true,
            "final_sigmas_type": "sigma_min", "lambda_min_clipped": "-inf", "sigma_min": null,
            "timestep_spacing": "trailing"}"#,
    );
    cfg.check_supported().unwrap();
    let opts = cfg.dpm_solver_options().unwrap();
    assert_eq!(
        opts,
        DpmSolverOptions {
            order: 3,
            algorithm: DpmAlgorithm::DataPrediction,
            sde: true,
            solver_type: DpmSolverType::Heun,
            lower_order_final: false,
            euler_at_final: true,
        }
    );
    let grid = cfg.dpm_grid_options().unwrap();
    assert_eq!(grid.lambda_min_clipped, f64::NEG_INFINITY);
    assert_eq!(grid.conversion, SigmaConversion::Karras);
    // diffusers rounds Karras timesteps except on squaredcos_cap_v2 (integer cast there).
    assert_eq!(grid.model_time, ModelTime::TruncatedIndex);
    assert_eq!(grid.final_sigma, FinalSigma::SigmaMin);
    let linear = parse(r#"{"use_karras_sigmas": true, "lambda_min_clipped": -5.1}"#);
    let grid = linear.dpm_grid_options().unwrap();
    assert_eq!(
        (grid.model_time, grid.lambda_min_clipped),
        (ModelTime::RoundedIndex, -5.1)
    );
}

#[test]
fn euler_config_maps_onto_grid_options() {
    let cfg = parse(
        r#"{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear",
            "use_exponential_sigmas": true, "sigma_min": 0.1, "sigma_max": "inf",
            "timestep_type": "continuous", "prediction_type": "v_prediction",
            "timestep_spacing": "leading", "steps_offset": 1}"#,
    );
    cfg.check_supported().unwrap();
    let o = cfg.sigma_grid_options().unwrap();
    assert_eq!(o.interpolation, Interpolation::LogLinear);
    assert_eq!(o.conversion, SigmaConversion::Exponential);
    assert_eq!((o.sigma_min, o.sigma_max), (Some(0.1), Some(f64::INFINITY)));
    assert_eq!(o.model_time, ModelTime::LogSigma);
    assert_eq!((o.spacing, o.steps_offset), (Spacing::Leading, 1));
    // Continuous timesteps only come with v-prediction (diffusers' condition).
    let eps = parse(r#"{"timestep_type": "continuous"}"#);
    assert_eq!(
        eps.sigma_grid_options().unwrap().model_time,
        ModelTime::Index
    );
    let beta = parse(r#"{"use_beta_sigmas": true}"#);
    assert!(matches!(
        beta.sigma_grid_options().unwrap().conversion,
        SigmaConversion::Beta { .. }
    ));
}

#[test]
fn ddpm_variance_types() {
    for (name, want, learned) in [
        ("fixed_small", VarianceType::FixedSmall, false),
        ("fixed_small_log", VarianceType::FixedSmall, false),
        ("fixed_large", VarianceType::FixedLarge, false),
        ("learned", VarianceType::Learned, true),
        ("learned_range", VarianceType::LearnedRange, true),
    ] {
        let cfg = parse(&format!(r#"{{"variance_type": "{name}"}}"#));
        assert_eq!(cfg.variance().unwrap(), want, "{name}");
        assert_eq!(cfg.learned_variance(), learned, "{name}");
    }
}

#[test]
fn unsupported_values_fail_naming_the_option() {
    let cases = [
        (r#"{"use_flow_sigmas": true}"#, "use_flow_sigmas"),
        (r#"{"use_dynamic_shifting": true}"#, "use_dynamic_shifting"),
        (
            r#"{"use_karras_sigmas": true, "use_beta_sigmas": true}"#,
            "use_karras_sigmas",
        ),
        (r#"{"interpolation_type": "cubic"}"#, "interpolation_type"),
        (r#"{"timestep_type": "sometimes"}"#, "timestep_type"),
        (r#"{"final_sigmas_type": "one"}"#, "final_sigmas_type"),
        (r#"{"timestep_spacing": "karras"}"#, "timestep_spacing"),
        (
            r#"{"prediction_type": "flow_prediction"}"#,
            "prediction_type",
        ),
        (r#"{"beta_schedule": "quadratic"}"#, "beta_schedule"),
        (r#"{"solver_order": 4}"#, "solver_order"),
        (r#"{"algorithm_type": "deis"}"#, "algorithm_type"),
        (r#"{"solver_type": "bh2"}"#, "solver_type"),
        (
            r#"{"algorithm_type": "sde-dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"}"#,
            "solver_order",
        ),
        (r#"{"algorithm_type": "dpmsolver"}"#, "final_sigmas_type"),
        (
            r#"{"_class_name": "DDPMScheduler", "variance_type": "fixed_large_log"}"#,
            "variance_type",
        ),
        (
            r#"{"_class_name": "DDIMInverseScheduler", "timestep_spacing": "linspace"}"#,
            "timestep_spacing",
        ),
    ];
    for (json, option) in cases {
        let err = parse(json).check_supported().unwrap_err().to_string();
        assert!(err.contains(option), "{json}: {err}");
    }
    // The same options on another scheduler class are not checked against DPM-Solver's rules.
    let euler = parse(r#"{"_class_name": "EulerDiscreteScheduler", "solver_order": 4}"#);
    euler.check_supported().unwrap();
}

#[test]
fn exp_and_laplace_schedules_are_named() {
    for name in ["exp", "laplace"] {
        let cfg = parse(&format!(
            r#"{{"beta_schedule": "{name}", "num_train_timesteps": 50}}"#
        ));
        let s = cfg.schedule().unwrap();
        assert_eq!(s.len(), 50);
    }
    // exp: alpha_bar(u) = e^{-12u}, so every beta is 1 - e^{-12/T}. Tolerance 1e-14: the
    // exponents -12 t/T (up to 12) are rounded to ~2e-15 before the ratio is taken.
    let s = parse(r#"{"beta_schedule": "exp", "num_train_timesteps": 50}"#)
        .schedule()
        .unwrap();
    let want = -(-12.0f64 / 50.0).exp_m1();
    assert!(s.beta.iter().all(|b| (b - want).abs() < 1e-14));
}

#[test]
fn missing_keys_take_the_class_defaults() {
    let heun = parse(r#"{"_class_name": "HeunDiscreteScheduler"}"#);
    assert_eq!((heun.beta_start, heun.beta_end), (0.00085, 0.012));
    assert_eq!(heun.timestep_spacing, "linspace");
    assert!(!heun.clip_sample);
    assert!(parse(r#"{"_class_name": "DDIMScheduler"}"#).clip_sample);
    assert!(!parse(r#"{"_class_name": "DDIMScheduler", "clip_sample": false}"#).clip_sample);
    let dpm = parse(r#"{"_class_name": "DPMSolverMultistepScheduler"}"#);
    assert_eq!(dpm.timestep_spacing, "linspace");
    assert_eq!(parse("{}").timestep_spacing, "leading");
}

#[test]
fn thresholding_with_sample_max_value_below_one_runs_every_sampler() {
    // Bug 2 of issue 12: diffusers computes s = torch.clamp(q, min=1, max=sample_max_value),
    // which is sample_max_value when it is < 1; f64::clamp(1, 0.5) panicked instead. The config
    // is accepted, and every sampler runs with it: x0_hat is clamp(x0, -0.5, 0.5) / 0.5, so the
    // DDPM and DDIM samples (x_0 = the last x0_hat, the last level being clean) lie in [-1, 1].
    use crate::oracle::GaussianMixture;
    use crate::sample::registry::{sample, SamplerConfig, SamplerKind};
    use burn::tensor::DType;
    let cfg = parse(
        r#"{"_class_name": "DDPMScheduler", "thresholding": true,
            "dynamic_thresholding_ratio": 0.995, "sample_max_value": 0.5}"#,
    );
    cfg.check_supported().unwrap();
    let s = cfg.schedule().unwrap();
    let gm = GaussianMixture::toy_2d().scaled(3.0);
    for kind in SamplerKind::ALL {
        let mut sampler = SamplerConfig::new(kind, 6);
        sampler.clip = cfg.clip();
        let dev = crate::device::cpu();
        let x = sample(&sampler, &gm, &s, 8, 2, &dev, DType::F64, 1, 0, None, None).unwrap();
        let x = crate::tensor::to_vec(&x);
        assert!(x.iter().all(|v| v.is_finite()), "{}: {x:?}", kind.name());
        if matches!(kind, SamplerKind::Ddpm | SamplerKind::Ddim) {
            assert!(x.iter().all(|v| v.abs() <= 1.0), "{}: {x:?}", kind.name());
        }
    }
}

#[test]
fn negative_clip_ranges_are_refused_by_value() {
    // A negative clip_sample_range (clamp(-r, r) with r < 0 panicked in the samplers) and
    // out-of-range thresholding parameters are config errors naming the value.
    for (json, needle) in [
        (r#"{"clip_sample": true, "clip_sample_range": -1.0}"#, "-1"),
        (
            r#"{"thresholding": true, "dynamic_thresholding_ratio": 1.5}"#,
            "1.5",
        ),
        (r#"{"thresholding": true, "sample_max_value": -2.0}"#, "-2"),
    ] {
        let err = parse(json).check_supported().unwrap_err().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
    // Off, the range is not used and not checked (diffusers' default configs carry one).
    parse(r#"{"clip_sample": false, "clip_sample_range": -1.0}"#)
        .check_supported()
        .unwrap();
}
