//! The grids against a float64 replica of diffusers 0.42.1's
//! `EulerDiscreteScheduler.set_timesteps` and `DPMSolverMultistepScheduler.set_timesteps`
//! (linear betas 1e-4..0.02, T = 1000): `scripts/gen_sigma_grid_values.py`, which follows
//! diffusers' code line by line (np.linspace, np.interp, `_sigma_to_t`, `_convert_to_karras`,
//! `_convert_to_exponential`) in plain Python and prints the expected lists used below.
//! Tolerances: sigmas 1e-12 relative (both sides are float64; Karras' (x^(1/7))^7 and exp/ln
//! round-trips cost ~1e-15 each; the script and ours differ by a few ulps), timesteps 1e-9
//! absolute (log-sigma interpolation of float64 tables), integer timesteps exact.
use super::*;
use crate::schedule::ScheduleConfig;

fn linear() -> Schedule {
    ScheduleConfig::default().build().unwrap()
}

fn assert_grid(grid: &[NoiseLevel], ts: &[f64], sigmas: &[f64]) {
    assert_eq!(grid.len(), sigmas.len(), "{grid:?}");
    for (k, (l, want)) in grid.iter().zip(sigmas).enumerate() {
        let err = if *want == 0.0 {
            l.sigma
        } else {
            l.sigma / want - 1.0
        };
        assert!(err.abs() < 1e-12, "sigma {k}: {} vs {want}", l.sigma);
    }
    for (k, (l, want)) in grid.iter().zip(ts).enumerate() {
        assert!((l.t - want).abs() < 1e-9, "t {k}: {} vs {want}", l.t);
    }
}

#[test]
fn euler_log_linear_keeps_the_spacing_timesteps_and_ends_at_sigma_min() {
    // interpolation_type = log_linear: n + 1 sigmas exp(linspace(ln sigma_999, ln sigma_0, 6));
    // diffusers appends a 0 that is never stepped to, so the grid ends at sigma_0.
    let opts = SigmaGridOptions {
        interpolation: Interpolation::LogLinear,
        ..Default::default()
    };
    let g = euler_grid(&linear(), 5, &opts);
    assert_grid(
        &g,
        &[999.0, 749.25, 499.5, 249.75],
        &[
            157.40728081040763,
            22.783697006558565,
            3.297794400704389,
            0.47733464442520407,
            0.06909113640312718,
            0.010000500037502575,
        ],
    );
}

#[test]
fn euler_karras_with_sigma_overrides_and_sigma_min_final() {
    let opts = SigmaGridOptions {
        conversion: SigmaConversion::Karras,
        sigma_min: Some(0.1),
        sigma_max: Some(10.0),
        final_sigma: FinalSigma::SigmaMin,
        ..Default::default()
    };
    let g = euler_grid(&linear(), 5, &opts);
    assert_grid(
        &g,
        &[
            673.6655066487325,
            529.9634357173535,
            331.39286479464454,
            125.70001425035477,
            26.40946682095291,
        ],
        &[
            10.000000000000002,
            4.0701040408635185,
            1.4507321135661928,
            0.432452803054104,
            0.10000000000000002,
            0.010000500037502575,
        ],
    );
    assert_eq!(init_noise_sigma(&g, Spacing::Linspace), g[0].sigma);
}

#[test]
fn euler_exponential_on_leading_spacing_with_offset() {
    // The exponential sigmas span the interpolated ends: sigma(801) down to sigma(1).
    let opts = SigmaGridOptions {
        spacing: Spacing::Leading,
        steps_offset: 1,
        conversion: SigmaConversion::Exponential,
        ..Default::default()
    };
    let g = euler_grid(&linear(), 5, &opts);
    assert_grid(
        &g,
        &[
            801.0,
            527.4209921248689,
            175.2209635594611,
            25.13646612622686,
            1.0,
        ],
        &[
            25.94542243625616,
            4.011784626953478,
            0.620318128664188,
            0.09591606143664057,
            0.014830923708982582,
            0.0,
        ],
    );
    // Leading spacing starts from sqrt(sigma_max^2 + 1).
    assert_eq!(
        init_noise_sigma(&g, Spacing::Leading),
        g[0].sigma.hypot(1.0)
    );
}

#[test]
fn euler_log_linear_then_karras_and_continuous_time() {
    let mut opts = SigmaGridOptions {
        spacing: Spacing::Trailing,
        interpolation: Interpolation::LogLinear,
        conversion: SigmaConversion::Karras,
        ..Default::default()
    };
    let want_sigmas = [
        157.40728081040749,
        21.105410301025287,
        1.2463257094660058,
        0.010000500037502566,
        0.0,
    ];
    let g = euler_grid(&linear(), 4, &opts);
    assert_grid(
        &g,
        &[998.9999999999999, 775.13315450661, 300.98479150007955, 0.0],
        &want_sigmas,
    );
    // timestep_type = continuous (v-prediction): the network sees ln(sigma)/4.
    opts.model_time = ModelTime::LogSigma;
    let g = euler_grid(&linear(), 4, &opts);
    let ts: Vec<f64> = want_sigmas[..4].iter().map(|s| 0.25 * s.ln()).collect();
    assert_grid(&g, &ts, &want_sigmas);
}

#[test]
fn dpm_lambda_min_clipped_shortens_every_spacing() {
    // A clip just below lambda(900) removes t = 901..999: last_timestep = 901.
    let s = linear();
    let clip = -s.sigma[900].ln() - 1e-9;
    let opts = |spacing, steps_offset| DpmGridOptions {
        spacing,
        steps_offset,
        lambda_min_clipped: clip,
        ..Default::default()
    };
    let ts = |g: Vec<NoiseLevel>| g[..g.len() - 1].iter().map(|l| l.t).collect::<Vec<_>>();
    assert_eq!(
        ts(dpm_grid(&s, 5, &opts(Spacing::Linspace, 0))),
        [900.0, 720.0, 540.0, 360.0, 180.0]
    );
    // Trailing keeps the stride T/n from the clipped start.
    assert_eq!(
        ts(dpm_grid(&s, 5, &opts(Spacing::Trailing, 0))),
        [900.0, 700.0, 500.0, 300.0, 100.0]
    );
    assert_eq!(
        ts(dpm_grid(&s, 5, &opts(Spacing::Leading, 1))),
        [751.0, 601.0, 451.0, 301.0, 151.0]
    );
    // -inf clips nothing.
    let g = dpm_grid(&s, 5, &DpmGridOptions::default());
    assert_eq!(g[0].t, 999.0);
}

#[test]
fn dpm_converted_sigmas_and_their_integer_timesteps() {
    let s = linear();
    let karras = DpmGridOptions {
        conversion: SigmaConversion::Karras,
        ..Default::default()
    };
    assert_grid(
        &dpm_grid(&s, 6, &karras),
        &[999.0, 880.0, 711.0, 434.0, 77.0, 0.0],
        &[
            157.40728081040749,
            50.58067064629097,
            13.037830600505087,
            2.4228336361888956,
            0.26312714164280754,
            0.010000500037502566,
            0.0,
        ],
    );
    // Exponential sigmas keep diffusers' integer cast (truncation) of the recovered index.
    let exponential = DpmGridOptions {
        conversion: SigmaConversion::Exponential,
        model_time: ModelTime::TruncatedIndex,
        final_sigma: FinalSigma::SigmaMin,
        ..Default::default()
    };
    let g = dpm_grid(&s, 6, &exponential);
    assert_grid(
        &g,
        &[999.0, 784.0, 492.0, 138.0, 16.0, 0.0],
        &[
            157.40728081040763,
            22.783697006558565,
            3.297794400704389,
            0.47733464442520407,
            0.06909113640312718,
            0.010000500037502575,
            0.010000500037502575,
        ],
    );
}

#[test]
fn zero_snr_tables_are_made_finite_before_any_placement() {
    // diffusers' Euler and DPM-Solver set the last alpha_bar to 2^-24 when rescaled: every
    // placement then starts at sqrt((1 - 2^-24) / 2^-24) (1e-12 relative, as above).
    let z = ScheduleConfig {
        rescale_zero_terminal_snr: true,
        ..ScheduleConfig::default()
    }
    .build()
    .unwrap();
    let top = ((1.0 - ZERO_SNR_ALPHA_BAR) / ZERO_SNR_ALPHA_BAR).sqrt();
    for interpolation in [Interpolation::Linear, Interpolation::LogLinear] {
        for conversion in [
            SigmaConversion::None,
            SigmaConversion::Karras,
            SigmaConversion::Exponential,
        ] {
            let opts = SigmaGridOptions {
                spacing: Spacing::Trailing,
                interpolation,
                conversion,
                ..Default::default()
            };
            let g = euler_grid(&z, 8, &opts);
            assert!((g[0].sigma / top - 1.0).abs() < 1e-12, "{opts:?}");
        }
    }
    let g = dpm_grid(&z, 8, &DpmGridOptions::default());
    assert!((g[0].sigma / top - 1.0).abs() < 1e-12);
}

#[test]
fn zero_snr_sigma_max_maps_where_diffusers_puts_it() {
    // diffusers 0.42.1, EulerDiscreteScheduler(rescale_betas_zero_snr=True,
    // use_karras_sigmas=True).set_timesteps(3): timesteps[0] = 995.2574 (float32 tables; its
    // float32 log-sigma of the 2^-24 level lies above ln 4096, and the rescaled table crosses
    // 4096 between t = 995 and 996 on its way up to sigma(998) ~ 15406). Ours comes from
    // float64 tables, whose top values differ from float32 ones by ~1e-3 relative there:
    // 0.05 absolute.
    let z = ScheduleConfig {
        rescale_zero_terminal_snr: true,
        ..ScheduleConfig::default()
    }
    .build()
    .unwrap();
    let opts = SigmaGridOptions {
        conversion: SigmaConversion::Karras,
        ..Default::default()
    };
    let g = euler_grid(&z, 3, &opts);
    assert!((g[0].t - 995.2574).abs() < 0.05, "{}", g[0].t);
}
