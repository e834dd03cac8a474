//! Prints the README table "Samplers on the exact-score oracle": every sampler run on the
//! Gaussian-mixture oracle (SPEC §8, `GaussianMixture::toy_2d`, linear schedule T = 1000) from
//! x_T ~ N(0, I), scored by the mean log-likelihood error against the true density and the
//! sliced Wasserstein-1 distance to fresh data (next to the data-vs-data floor).
//!
//! `cargo run --release --example sampler_table [seed]`

#[path = "../tests/common/metrics.rs"]
mod metrics;

use diffuse::oracle::GaussianMixture;
use diffuse::sample::registry::SamplerConfig;
use diffuse::schedule::ScheduleConfig;
use metrics::{oracle_samples, Truth};

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("seed is an integer"))
        .unwrap_or(2026);
    let n = 4000;
    let gm = GaussianMixture::toy_2d();
    let schedule = ScheduleConfig::default().build().expect("linear schedule");
    let truth = Truth::new(&gm, n, 100_000, seed + 1000);
    println!(
        "Oracle: toy_2d mixture, linear schedule (T = 1000), {n} samples, seed {seed}; \
         true mean log-likelihood {:.4} ± {:.4} nats (100000 draws); sliced W1 (64 projections) \
         between two fresh data sets of {n}: {:.4} ± {:.4} (mean ± sd over {} pairs).\n",
        truth.ll,
        truth.ll_se,
        truth.sw_floor,
        truth.sw_floor_sd,
        metrics::FLOOR_PAIRS
    );
    println!("| sampler | steps | NFE | log-lik. error (nats, ± s.e.) | sliced W1 (floor {:.4}) | seed |", truth.sw_floor);
    println!("|---|---:|---:|---:|---:|---:|");
    let specs = [
        "ddpm",
        "ddim",
        "euler",
        "euler:karras=true",
        "euler-ancestral:karras=true",
        "heun:karras=true",
        "heun:karras=true,s_churn=10,s_tmin=0.05,s_tmax=10",
        "dpmpp-2m",
        "dpmpp-2m:karras=true",
    ];
    let steps_list: Vec<usize> = std::env::var("STEPS")
        .ok()
        .map(|s| s.split(',').map(|v| v.parse().unwrap()).collect())
        .unwrap_or_else(|| vec![10, 25, 100]);
    let only: Option<String> = std::env::var("SPECS").ok();
    for spec in specs {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(';').any(|x| x == spec))
        {
            continue;
        }
        for &steps in &steps_list {
            let cfg = SamplerConfig::parse(spec, steps).expect("valid spec");
            let x = oracle_samples(&cfg, &gm, &schedule, n, seed);
            let s = truth.score(&gm, &x, seed);
            println!(
                "| `{spec}` | {steps} | {} | {:+.4} ± {:.4} | {:.4} | {seed} |",
                cfg.nfe(),
                s.ll_err,
                s.ll_se,
                s.sw
            );
        }
    }
}
