//! `schedule` files: betas and alphas_cumprod of a DDPMScheduler config (SPEC §1).

use crate::common::{config, nums, Checker};
use diffuse::sample::grid::finite_sigma_schedule;
use serde_json::Value;

pub fn check(file: &Value, c: &mut Checker) {
    let cfg = config(&file["config"]);
    let s = cfg.schedule().expect("schedule builds");
    // Euler and DPM-Solver store alpha_bar = 2^-24 in place of a zero terminal alpha_bar.
    let finite_last = matches!(
        cfg.class_name.as_deref(),
        Some("EulerDiscreteScheduler" | "DPMSolverMultistepScheduler")
    );
    let s = if finite_last {
        finite_sigma_schedule(&s)
    } else {
        s
    };
    let f64_check = &file["f64_check"];
    // Elementwise relative bounds: diffusers' float32 tables differ from float64 by at most the
    // measured f64_check deviations; allow twice that, as the README advises.
    let tol = |key: &str| (2.0 * f64_check[key].as_f64().unwrap_or(0.0)).max(1e-12);
    relative(
        c,
        "betas",
        &s.beta,
        &nums(&file["betas"]),
        tol("betas_max_rel_dev"),
        tol("betas_max_abs_dev"),
    );
    relative(
        c,
        "alphas_cumprod",
        &s.alpha_bar,
        &nums(&file["alphas_cumprod"]),
        tol("alphas_cumprod_max_rel_dev"),
        tol("alphas_cumprod_max_abs_dev"),
    );
}

/// |got - want| <= rel * |want| or <= abs (the two measured maxima of a correct float64 table).
fn relative(c: &mut Checker, what: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    c.comparisons += 1;
    if !c.same_len(what, got, want) {
        return;
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        c.max_mixed_err = c.max_mixed_err.max(err / w.abs().max(1.0));
        c.max_ratio = c.max_ratio.max((err / (rel * w.abs())).min(err / abs));
        if err > rel * w.abs() && err > abs {
            c.failures.push(format!(
                "{what}[{i}] = {g}, reference {w} (rel tol {rel:.2e}, abs tol {abs:.2e})"
            ));
            return;
        }
    }
}
