//! Training-time previews: a fixed small batch drawn from the EMA weights with a fast sampler
//! and its own seeded noise ([`PREVIEW_SEED`] through [`SampleRng`]), never the training
//! streams, so a run with previews trains bit for bit as one without. The same noise at every
//! checkpoint lets a person watch one batch of samples improve.

use crate::data::DataSource;
use crate::denoiser::{NetworkDenoiser, Parameterization};
use crate::nn::Net;
use crate::rng::SampleRng;
use crate::sample::registry::{sample, SamplerConfig, SamplerKind};
use crate::sample::X0Clip;
use crate::sde::score::{NetworkScore, ScoreOutput, TimeInput, NETWORK_TIME_SCALE};
use crate::sde::SdeSampler;
use crate::tensor::{from_rows, to_vec};
use crate::train::Trainer;
use burn::tensor::DType;

/// The seed of every preview's noise (and of the data points shown beside 2-D previews).
pub const PREVIEW_SEED: u64 = 20_240_601;
/// Points in a 2-D preview.
pub const PREVIEW_POINTS: usize = 500;
/// DDIM steps of discrete-time previews.
pub const PREVIEW_DDIM_STEPS: usize = 20;
/// Euler–Maruyama steps of score-SDE previews (no deterministic 20-step SDE solver exists
/// here; the adaptive ODE would cost hundreds of calls).
pub const PREVIEW_EM_STEPS: usize = 50;
/// Columns of unconditional image previews.
pub const PREVIEW_COLUMNS: usize = 8;

/// One preview batch, in the model's coordinates (standardised points, images in [-1, 1]).
#[derive(Debug, Clone)]
pub struct PreviewSamples {
    /// Row-major `[n, D]`.
    pub values: Vec<f64>,
    pub n: usize,
    /// Sampler name and steps, for the caption.
    pub sampler: String,
    pub sampler_steps: usize,
    /// Images: the class name of each grid column (one column per class), if conditional.
    pub columns: Option<Vec<String>>,
    /// Images: `[C, H, W]`.
    pub image_shape: Option<[usize; 3]>,
}

/// The size and class labels of an image preview of `rows` rows: one column per class, or
/// [`PREVIEW_COLUMNS`] columns for an unconditional model.
fn preview_labels(
    trainer: &Trainer,
    rows: usize,
) -> (usize, Option<Vec<i64>>, Option<Vec<String>>) {
    let classes = trainer.config.model.num_classes().unwrap_or(0);
    if classes == 0 || trainer.config.sde.is_some() {
        // Score-SDE samplers draw unconditionally.
        return (rows * PREVIEW_COLUMNS, None, None);
    }
    let names = match &trainer.data {
        DataSource::Images { set, .. } if set.class_names.len() == classes => {
            set.class_names.clone()
        }
        _ => (0..classes).map(|k| format!("class {k}")).collect(),
    };
    let n = rows * classes;
    let labels = (0..n).map(|i| (i % classes) as i64).collect();
    (n, Some(labels), Some(names))
}

/// Draws the preview of the trainer's EMA weights (`image_rows` rows for image models).
pub fn draw_preview(trainer: &Trainer, image_rows: usize) -> crate::Result<PreviewSamples> {
    let cfg = &trainer.config;
    let device = crate::device::cpu();
    let net = Net::new(&cfg.model, &trainer.ema, &device)?;
    let d = cfg.model.data_dim();
    let image_shape = cfg.model.image_shape();
    // A latent run's previews are decoded by its VAE (SPEC §7), as `diffuse sample` does.
    let latent_vae = match &cfg.data {
        crate::data::DataSpec::Latent { vae, .. } => Some(vae.load(&device)?),
        _ => None,
    };
    let (n, labels, columns) = match image_shape {
        Some(_) => preview_labels(trainer, image_rows.max(1)),
        None => (PREVIEW_POINTS, None, None),
    };
    let (x, sampler, steps) = match &cfg.sde {
        // The eps network of a DSM run read as a score (as `diffuse sample` does, SPEC §6).
        Some(sde_cfg) => {
            let sde = sde_cfg.build();
            let score = NetworkScore {
                net: &net,
                sde: &*sde,
                output: ScoreOutput::Eps,
                time: TimeInput::Scaled(NETWORK_TIME_SCALE),
            };
            let chosen = SdeSampler::from_name("em", PREVIEW_EM_STEPS, sde_cfg.sampling_eps())?;
            let like = from_rows(vec![0.0; n * d], n, d, &device, DType::F32);
            let mut noise = SampleRng::new(PREVIEW_SEED, 0, n);
            let (x, _) = chosen
                .sample(
                    &*sde,
                    sde_cfg.sampling_eps(),
                    &score,
                    &like,
                    &mut noise,
                    None,
                )
                .map_err(|e| crate::Error::config("sampler", e.to_string()))?;
            (x, "em", PREVIEW_EM_STEPS)
        }
        None => {
            let denoiser = NetworkDenoiser {
                net,
                parameterization: Parameterization::Discrete {
                    prediction: cfg.prediction,
                    learned_variance: cfg.train.loss.learns_variance(),
                },
            };
            let mut sampler = SamplerConfig::new(SamplerKind::Ddim, PREVIEW_DDIM_STEPS);
            if image_shape.is_some() && latent_vae.is_none() {
                // Pixels live in [-1, 1]; clipping x0_hat keeps early previews readable.
                sampler.clip = X0Clip::Clip { range: 1.0 };
            }
            let x = sample(
                &sampler,
                &denoiser,
                &trainer.schedule,
                n,
                d,
                &device,
                DType::F32,
                PREVIEW_SEED,
                0,
                labels.as_deref(),
                None,
            )?;
            (x, "ddim", PREVIEW_DDIM_STEPS)
        }
    };
    let (values, image_shape) = match (&latent_vae, &cfg.data) {
        (
            Some(vae),
            crate::data::DataSpec::Latent {
                image_shape: pixels,
                latent_shape: [c, h, w],
                ..
            },
        ) => {
            let images = vae.decode(vae.from_diffusion(x).reshape([n, *c, *h, *w]));
            let dim = pixels.iter().product::<usize>();
            (to_vec(&images.reshape([n, dim])), Some(*pixels))
        }
        _ => (to_vec(&x), image_shape),
    };
    Ok(PreviewSamples {
        values,
        n,
        sampler: sampler.to_string(),
        sampler_steps: steps,
        columns,
        image_shape,
    })
}

/// The data points shown beside 2-D previews (model coordinates), from a stream no training
/// step uses.
pub fn preview_data(data: &DataSource) -> Vec<f64> {
    data.sample(PREVIEW_POINTS, PREVIEW_SEED, u64::MAX - 11)
}
