//! `diffuse eval`: sliced Wasserstein and multi-bandwidth MMD of a run's samples against fresh
//! data, each next to the data-vs-data floor, over several seeds; exact log-likelihood for the
//! oracle mixture. Prints a table and writes JSON.

use crate::run_dir::{open, sampler_config, Run, SamplerChoice, SDE_SAMPLERS};
use burn::tensor::DType;
use diffuse::data::file::write_file;
use diffuse::data::{DataSpec, ToyDataset};
use diffuse::eval::{check_sizes, evaluate_with, EvalOptions};
use diffuse::likelihood::{bits_per_dim, mean_ci95};
use diffuse::oracle::GaussianMixture;
use diffuse::sde::score::Probe;
use diffuse::sde::Divergence;
use diffuse::tensor::{from_rows, to_vec};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `diffuse train`.
    #[arg(long)]
    run: PathBuf,
    #[command(flatten)]
    sampler: SamplerChoice,
    #[command(flatten)]
    device: crate::device_arg::DeviceArg,
    /// Samples per seed (and size of the fresh data sets); default 4000 for points, 500 for
    /// images.
    #[arg(long)]
    n: Option<usize>,
    /// Number of seeds (default 5 for points, 3 for images).
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Report file (default: <run>/eval.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate the raw weights instead of the EMA.
    #[arg(long)]
    raw: bool,
    /// Also the negative log-likelihood of fresh data through the probability-flow ODE
    /// (SPEC §6; exact divergence up to 8 dimensions, else Hutchinson with 4 Rademacher probes).
    #[arg(long)]
    nll: bool,
    /// Data points for --nll.
    #[arg(long, default_value_t = 500)]
    nll_points: usize,
    /// Images: classifier-free guidance scale of the class-conditional samples.
    #[arg(long, default_value_t = 1.0)]
    guidance: f64,
    /// Images: the feature classifier's folder (trained there on first use; default
    /// runs/classifier-<image data>, shared by pixel and latent runs on the same images).
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Images: test images for bits/dim (0 skips it).
    #[arg(long, default_value_t = 32)]
    bpd_images: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    // A VAE run: its test-set reconstructions (SPEC §7), not samples.
    let config = diffuse::train::checkpoint::load_config(&args.run)?;
    if config.model.as_vae().is_some() {
        let (ema, raw, step) = diffuse::train::checkpoint::load_model(&args.run, &config)?;
        let params = if args.raw { raw } else { ema };
        return crate::eval_images::vae_report(
            &args.run,
            &config,
            &params,
            step,
            args.n.unwrap_or(1000),
            &device,
        );
    }
    let run = open(&args.run, args.raw, &device)?;
    let images = run.image_shape().is_some();
    let default_sizes = if images { (500, 3) } else { (4000, 5) };
    let (n, seeds) = (
        args.n.unwrap_or(default_sizes.0),
        args.seeds.unwrap_or(default_sizes.1),
    );
    check_sizes(n, seeds)?;
    if args.nll && args.nll_points < 2 {
        anyhow::bail!(
            "--nll-points {}: need at least 2 points for a confidence interval",
            args.nll_points
        );
    }
    if images {
        return crate::eval_images::run(
            &run,
            &crate::eval_images::ImageEvalArgs {
                run_dir: &args.run,
                sampler: &args.sampler,
                n,
                seeds,
                seed: args.seed,
                guidance: args.guidance,
                classifier: args.classifier.clone(),
                bpd_images: args.bpd_images,
            },
        );
    }
    let choice = &args.sampler;
    let sampler = match SDE_SAMPLERS.contains(&choice.name.as_str()) {
        // The registry config only labels discrete runs; SDE samplers are drawn by name.
        true => sampler_config("ddim", choice.steps, choice.eta, None)?,
        false => sampler_config(
            &choice.name,
            choice.steps,
            choice.eta,
            choice.spacing.as_deref(),
        )?,
    };
    let opts = EvalOptions {
        sampler,
        n,
        num_seeds: seeds,
        seed: args.seed,
        bandwidth_fractions: vec![0.25, 0.5, 1.0],
        mixture_loglik: run.config.data
            == DataSpec::Toy {
                name: ToyDataset::Mixture,
            },
    };
    let data = run.config.data.open()?;
    let draw = |seed: u64| -> diffuse::Result<Vec<f64>> {
        let (x, _) = run
            .draw(choice, n, seed, None)
            .map_err(|e| diffuse::Error::config("sampler", format!("{e:#}")))?;
        Ok(to_vec(&x))
    };
    let report = evaluate_with(draw, &choice.name, choice.steps, &data, &opts)?;
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
    let mut json = serde_json::to_value(&report)?;
    if args.nll {
        json["nll"] = nll(&run, &data, &args)?;
    }
    let out = args.out.unwrap_or_else(|| args.run.join("eval.json"));
    write_file(&out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// PF-ODE NLL of `--nll-points` fresh data points (nats per sample, 95% CI), printed and
/// returned for the JSON report. For the oracle mixture the true NLL of the same points too.
fn nll(
    run: &Run,
    data: &diffuse::data::DataSource,
    args: &Args,
) -> anyhow::Result<serde_json::Value> {
    let d = data.dim();
    let n = args.nll_points;
    let points = data.sample(n, args.seed, u64::MAX - 1_000_003);
    // Gradients of the score with respect to x need the network on an autodiff device.
    let device = run.device.clone().autodiff();
    let net = diffuse::nn::Net::new(&run.config.model, &run.params, &device)?;
    let x = from_rows(points.clone(), n, d, &device, DType::F32);
    let (divergence, how) = if d <= 8 {
        (Divergence::Exact, "exact divergence".to_string())
    } else {
        (
            Divergence::hutchinson(Probe::Rademacher, 4, &x, args.seed),
            "Hutchinson x4".to_string(),
        )
    };
    let (like, sde_name, likelihood_eps) = run.pf_ode_likelihood(&net, &x, &divergence)?;
    let nll: Vec<f64> = like.log_p.iter().map(|l| -l).collect();
    let (mean, ci) = mean_ci95(&nll);
    println!(
        "NLL (PF-ODE, {} SDE from t = {likelihood_eps}, {how}, rtol=atol=1e-5, {n} points): {mean:.4} ± {ci:.4} nats/sample = {:.4} bits/dim (continuous data: no dequantisation offset), NFE {}",
        sde_name,
        bits_per_dim(-mean, d, false),
        like.stats.nfe
    );
    let mut out = serde_json::json!({
        "sde": sde_name, "t_min": likelihood_eps, "divergence": how, "points": n,
        "nll_nats": mean, "ci95_nats": ci, "bits_per_dim": bits_per_dim(-mean, d, false),
        "nfe": like.stats.nfe,
    });
    if run.config.data
        == (DataSpec::Toy {
            name: ToyDataset::Mixture,
        })
    {
        let truth: Vec<f64> = GaussianMixture::toy_2d()
            .log_prob(&points)
            .iter()
            .map(|l| -l)
            .collect();
        let (t_mean, t_ci) = mean_ci95(&truth);
        println!(
            "true NLL of the same points (oracle mixture): {t_mean:.4} ± {t_ci:.4} nats/sample"
        );
        out["true_nll_nats"] = serde_json::json!(t_mean);
    }
    Ok(out)
}
