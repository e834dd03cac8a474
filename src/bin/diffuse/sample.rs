//! `diffuse sample`: draws points from a trained run with any registered sampler; writes a
//! scatter plot beside fresh data, the points (CSV and/or NPY), and optionally the trajectory.

use crate::run_dir::{open, SamplerChoice};
use anyhow::Context;
use burn::tensor::Device;
use diffuse::data::file::write_points;
use diffuse::data::{DataSpec, PointSet};
use diffuse::sample::StepInfo;
use diffuse::tensor::to_vec;
use diffuse::viz::scatter_panels;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `diffuse train`.
    #[arg(long)]
    run: PathBuf,
    #[command(flatten)]
    sampler: SamplerChoice,
    /// Number of points.
    #[arg(long, default_value_t = 4000)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scatter plot (PNG) of the samples beside fresh data.
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Points file(s): .csv or .npy (repeatable). Default: the PNG's name with .csv.
    #[arg(long)]
    points: Vec<PathBuf>,
    /// Also draw the cloud at several noise levels into this PNG.
    #[arg(long)]
    trajectory: Option<PathBuf>,
    /// Use the raw weights instead of the EMA.
    #[arg(long)]
    raw: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = Device::default();
    let run = open(&args.run, args.raw, &device)?;
    let d = run.config.model.data_dim();
    let mut snapshots: Vec<(String, Vec<f64>)> = Vec::new();
    let keep: Vec<usize> = (0..4).map(|k| k * args.sampler.steps / 4).collect();
    let mut record = |info: &StepInfo| {
        if keep.contains(&info.step) {
            snapshots.push((format!("sigma = {:.2}", info.level.sigma), to_vec(info.x)));
        }
    };
    let callback: diffuse::sample::Callback = if args.trajectory.is_some() {
        Some(&mut record)
    } else {
        None
    };
    let (x, nfe) = run.draw(&args.sampler, args.n, args.seed, callback)?;
    eprintln!(
        "{} samples with {} ({nfe} network calls)",
        args.n, args.sampler.name
    );
    let points = to_vec(&x);
    let data = run.config.data.open()?.sample(args.n, args.seed, u64::MAX);
    if d == 2 {
        let range = points
            .iter()
            .chain(&data)
            .filter(|v| v.is_finite())
            .fold(0f64, |m, v| m.max(v.abs()))
            .clamp(1.0, 6.0)
            * 1.05;
        let title = format!(
            "{} {} steps (step {})",
            args.sampler.name, args.sampler.steps, run.step
        );
        scatter_panels(
            &args.out,
            &[("data", &data), (title.as_str(), &points)],
            range,
        )
        .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("wrote {}", args.out.display());
        if let Some(path) = &args.trajectory {
            let mut panels: Vec<(&str, &[f64])> = snapshots
                .iter()
                .map(|(t, p)| (t.as_str(), p.as_slice()))
                .collect();
            panels.push(("x_0", &points));
            scatter_panels(path, &panels, 3.5)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    } else {
        eprintln!("data is {d}-D: no scatter plot");
    }
    // Points in the data's own units (file data is de-standardised).
    let values = match &run.config.data {
        DataSpec::File { mean, std, .. } => points
            .chunks(d)
            .flat_map(|r| {
                r.iter()
                    .zip(mean.iter().zip(std))
                    .map(|(v, (m, s))| v * s + m)
            })
            .collect(),
        DataSpec::Toy { .. } => points,
    };
    let set = PointSet { dim: d, values };
    let files = if args.points.is_empty() {
        vec![args.out.with_extension("csv")]
    } else {
        args.points.clone()
    };
    for f in files {
        write_points(&f, &set).with_context(|| format!("writing {}", f.display()))?;
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
