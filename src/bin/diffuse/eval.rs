//! `diffuse eval`: sliced Wasserstein and multi-bandwidth MMD of a run's samples against fresh
//! data, each next to the data-vs-data floor, over several seeds; exact log-likelihood for the
//! oracle mixture. Prints a table and writes JSON.

use crate::run_dir::{open, sampler_config};
use anyhow::Context;
use burn::tensor::Device;
use diffuse::data::{DataSpec, ToyDataset};
use diffuse::eval::{evaluate, EvalOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `diffuse train`.
    #[arg(long)]
    run: PathBuf,
    #[arg(long, default_value = "ddim")]
    sampler: String,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Samples per seed (and size of the fresh data sets).
    #[arg(long, default_value_t = 4000)]
    n: usize,
    /// Number of seeds.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Report file (default: <run>/eval.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate the raw weights instead of the EMA.
    #[arg(long)]
    raw: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = Device::default();
    let run = open(&args.run, args.raw, &device)?;
    let opts = EvalOptions {
        sampler: sampler_config(&args.sampler, args.steps, args.eta)?,
        n: args.n,
        num_seeds: args.seeds,
        seed: args.seed,
        bandwidth_fractions: vec![0.25, 0.5, 1.0],
        mixture_loglik: run.config.data
            == DataSpec::Toy {
                name: ToyDataset::Mixture,
            },
    };
    let data = run.config.data.open()?;
    let report = evaluate(&run.denoiser, &run.schedule, &data, &opts, &device)?;
    let sw = &report.sliced_wasserstein;
    println!(
        "{} (step {}), {} {} steps, n = {}, seeds {:?}",
        args.run.display(),
        run.step,
        report.sampler,
        report.sampler_steps,
        report.n,
        report.seeds
    );
    println!("metric                 model                floor (data vs data)   model/floor");
    println!(
        "sliced W1              {:.4} ± {:.4}     {:.4} ± {:.4}        {:.2}",
        sw.model.mean, sw.model.std, sw.floor.mean, sw.floor.std, sw.ratio
    );
    for m in &report.mmd {
        println!(
            "MMD h={:.2}·median     {:.4} ± {:.4}     {:.4} ± {:.4}        {:.2}",
            m.fraction_of_median,
            m.value.model.mean,
            m.value.model.std,
            m.value.floor.mean,
            m.value.floor.std,
            m.value.ratio
        );
    }
    if let Some((model, data)) = &report.mixture_loglik {
        println!(
            "mean log p (exact)     {:.4} ± {:.4}     {:.4} ± {:.4} (data)",
            model.mean, model.std, data.mean, data.std
        );
    }
    let out = args.out.unwrap_or_else(|| args.run.join("eval.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
