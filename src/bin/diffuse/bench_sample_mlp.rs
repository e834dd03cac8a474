//! `diffuse bench sample-mlp`: seconds to sample `--n` 2-D points (default 4000) from the
//! default MLP of the main job with DDIM-50 and DDPM-1000 (eps prediction, linear schedule,
//! T = 1000), the whole loop as `diffuse sample` runs it (network calls, sampler updates,
//! per-sample noise streams). The weights are a seeded initialisation: the time of a step
//! does not depend on them. `bench/sample_mlp.sh` runs the same loop in PyTorch beside it.

use burn::tensor::{DType, Device};
use diffuse::denoiser::{NetworkDenoiser, Parameterization};
use diffuse::nn::{MlpConfig, MlpParams};
use diffuse::sample::registry::{sample, SamplerConfig};
use diffuse::schedule::ScheduleConfig;
use std::time::Instant;

/// The two loops of the issue: DDIM with 50 steps and ancestral DDPM with all 1000.
const LOOPS: [(&str, usize); 2] = [("ddim", 50), ("ddpm", 1000)];

pub fn run(n: usize, device: &Device, device_name: &str) -> anyhow::Result<()> {
    let params = MlpParams::init(&MlpConfig::new(2), 0)?;
    let denoiser = NetworkDenoiser {
        net: params.to_module(device),
        parameterization: Parameterization::Discrete {
            prediction: Default::default(),
            learned_variance: false,
        },
    };
    let schedule = ScheduleConfig::default().build()?;
    let threads = rayon::current_num_threads();
    for (name, steps) in LOOPS {
        let cfg = SamplerConfig::parse(name, steps)?;
        let start = Instant::now();
        let x = sample(
            &cfg,
            &denoiser,
            &schedule,
            n,
            2,
            device,
            DType::F32,
            0,
            0,
            None,
            None,
        )?;
        let _ = x.into_data();
        println!(
            "{}",
            serde_json::json!({"impl": "diffuse", "what": "sample-mlp", "device": device_name, "sampler": name,
                "steps": steps, "n": n, "seconds": start.elapsed().as_secs_f64(),
                "threads": threads})
        );
    }
    Ok(())
}
