//! `diffuse sample`: draws from a trained run with any registered sampler. Points: a scatter
//! plot beside fresh data, the points (CSV and/or NPY), optionally the trajectory. Images: a
//! PNG grid (one row per class for conditional models), optionally the raw images as .npy and a
//! strip of x_t and x0_hat at several noise levels.

use crate::run_dir::{open, SamplerChoice};
use anyhow::Context;
use diffuse::data::file::{npy_bytes_shaped, write_file, write_points};
use diffuse::data::{DataSpec, PointSet};
use diffuse::sample::StepInfo;
use diffuse::tensor::to_vec;
use diffuse::viz::{image_grid, scatter_panels};
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
    /// Images of a class-conditional model: draw only this class (default: every class in
    /// turn, one grid row each).
    #[arg(long)]
    class: Option<i64>,
    /// Classifier-free guidance scale w (1 = plain conditional, 0 = unconditional).
    #[arg(long, default_value_t = 1.0)]
    guidance: f64,
    /// Images: also write the raw samples, [N, C, H, W] in [-1, 1], to this .npy file.
    #[arg(long)]
    npy: Option<PathBuf>,
}

/// The labels of `n` samples: `class` for all, or classes 0..k in turn (None: unconditional).
pub fn sample_labels(class: Option<i64>, classes: Option<usize>, n: usize) -> Option<Vec<i64>> {
    match (class, classes) {
        (Some(c), _) => Some(vec![c; n]),
        (None, Some(k)) if k > 0 => Some((0..n).map(|i| (i % k) as i64).collect()),
        _ => None,
    }
}

/// Image runs (and latent runs, whose samples are decoded to images by their VAE, SPEC §7).
fn run_images(args: &Args, run: &crate::run_dir::Run, shape: [usize; 3]) -> anyhow::Result<()> {
    let sde = crate::run_dir::SDE_SAMPLERS.contains(&args.sampler.name.as_str());
    // The SDE samplers draw unconditionally unless a class is asked for (which they refuse).
    let classes = run
        .config
        .model
        .num_classes()
        .filter(|_| !sde || args.class.is_some());
    let labels = sample_labels(args.class, classes, args.n);
    let mut snapshots: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    let keep = args.sampler.steps.div_ceil(6).max(1);
    // Values per sample as the sampler sees them (latents for a latent run).
    let per = run.config.model.data_dim();
    let show = args.n.min(4);
    let mut record = |info: &StepInfo| {
        if info.step.is_multiple_of(keep) || info.step + 1 == info.steps {
            let x = to_vec(info.x);
            let x0 = to_vec(info.x0_hat);
            snapshots.push((x[..show * per].to_vec(), x0[..show * per].to_vec()));
        }
    };
    let callback: diffuse::sample::Callback = if args.trajectory.is_some() {
        Some(&mut record)
    } else {
        None
    };
    let cond = labels.as_deref().map(|l| (l, args.guidance));
    let (x, nfe) = run.draw_conditional(&args.sampler, args.n, args.seed, cond, callback)?;
    eprintln!(
        "{} images with {} ({nfe} network calls)",
        args.n, args.sampler.name
    );
    let images = run.to_images(&x);
    let cols = match (args.class, classes) {
        (None, Some(k)) if k > 0 => k,
        _ => (args.n as f64).sqrt().ceil() as usize,
    };
    image_grid(&args.out, &images, shape, cols, 2)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    if let Some(path) = &args.npy {
        let [c, h, w] = shape;
        write_file(path, &npy_bytes_shaped(&images, &[args.n, c, h, w]))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.trajectory {
        // Rows: for each shown sample, x_t at the kept steps, then x0_hat at the same steps
        // (decoded, for a latent run).
        let mut strip = Vec::new();
        for j in 0..show {
            for (x, _) in &snapshots {
                strip.extend_from_slice(&x[j * per..(j + 1) * per]);
            }
            for (_, x0) in &snapshots {
                strip.extend_from_slice(&x0[j * per..(j + 1) * per]);
            }
        }
        let rows = strip.len() / per;
        let strip = run.to_images(&diffuse::tensor::from_rows(
            strip,
            rows,
            per,
            &diffuse::device::cpu(),
            burn::tensor::DType::F32,
        ));
        image_grid(path, &strip, shape, snapshots.len(), 2)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} (x_t rows, then x0_hat rows, at {} noise levels)",
            path.display(),
            snapshots.len()
        );
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let run = open(&args.run, args.raw, &device)?;
    if let Some(shape) = run.image_shape() {
        return run_images(&args, &run, shape);
    }
    if args.class.is_some() || args.npy.is_some() {
        anyhow::bail!("--class and --npy apply to image runs; this run models points");
    }
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
        _ => points,
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
