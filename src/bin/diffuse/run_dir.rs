//! Opening a trained run for sampling and evaluation, and drawing from it with any sampler:
//! the discrete registry samplers (SPEC §5) or the SDE samplers em / pc / ode (SPEC §6).

use anyhow::{bail, Context};
use burn::tensor::{DType, Device, Tensor};
use diffuse::data::DataSpec;
use diffuse::denoiser::{Denoiser, Guided, NetworkDenoiser, Parameterization};
use diffuse::likelihood::{pf_ode_log_likelihood, PfOdeLikelihood};
use diffuse::nn::vae::latents::ENCODE_BATCH;
use diffuse::nn::AutoencoderKL;
use diffuse::nn::{FlatParams, Net};
use diffuse::rng::SampleRng;
use diffuse::sample::registry::{sample, SamplerConfig};
use diffuse::sample::Callback;
use diffuse::schedule::Schedule;
use diffuse::sde::score::{
    DenoiserScore, NetworkScore, ScoreOutput, TimeInput, NETWORK_TIME_SCALE,
};
use diffuse::sde::solvers::OdeOptions;
use diffuse::sde::Divergence;
use diffuse::sde::{ScheduleVpSde, ScoreFn, Sde, SdeSampler};
use diffuse::tensor::{from_rows, to_vec};
use diffuse::train::checkpoint::{load_config, load_model};
use diffuse::train::RunConfig;
use std::path::Path;

/// The SDE samplers' names.
pub const SDE_SAMPLERS: [&str; 3] = ["em", "pc", "ode"];

/// The SDE a run's score is read under ([`Run::score_sde`]).
pub struct RunSde {
    pub sde: Box<dyn Sde>,
    /// The time the SDE samplers stop at.
    pub sampling_eps: f64,
    /// The time the PF-ODE likelihood starts at (the data's time).
    pub likelihood_eps: f64,
}

/// A trained run, ready to sample.
pub struct Run {
    pub config: RunConfig,
    pub schedule: Schedule,
    pub params: FlatParams,
    pub denoiser: NetworkDenoiser<Net>,
    pub step: u64,
    /// The VAE that decodes a latent run's samples (SPEC §7).
    pub vae: Option<AutoencoderKL>,
    /// Where the network (and the VAE) run and the samplers' state lives.
    pub device: Device,
}

/// Loads `dir`'s config and EMA weights (or the raw weights with `raw`).
pub fn open(dir: &Path, raw: bool, device: &Device) -> anyhow::Result<Run> {
    let config = load_config(dir)?;
    let schedule = config
        .schedule
        .build()
        .with_context(|| format!("{}: schedule", dir.join("config.json").display()))?;
    if config.model.as_vae().is_some() {
        bail!(
            "{} is a VAE run, not a diffusion model: train a latent model on it with \
             `diffuse train --latent --vae {}`, or evaluate its reconstructions with `diffuse eval`",
            dir.display(),
            dir.display()
        );
    }
    let vae = match &config.data {
        DataSpec::Latent { vae, .. } => Some(
            vae.load(device)
                .with_context(|| format!("{}: the latent run's VAE", dir.display()))?,
        ),
        _ => None,
    };
    let (ema, raw_params, step) = load_model(dir, &config)?;
    let params = if raw { raw_params } else { ema };
    let denoiser = NetworkDenoiser {
        net: Net::new(&config.model, &params, device)?,
        parameterization: Parameterization::Discrete {
            prediction: config.prediction,
            learned_variance: config.train.loss.learns_variance(),
        },
    };
    Ok(Run {
        config,
        schedule,
        params,
        denoiser,
        step,
        vae,
        device: device.clone(),
    })
}

impl Run {
    /// `[C, H, W]` of the run's images: the model's samples, or for a latent run the images
    /// its VAE decodes them to.
    pub fn image_shape(&self) -> Option<[usize; 3]> {
        match &self.vae {
            Some(vae) => {
                let [h, w] = vae.config.image_hw();
                Some([vae.config.out_channels, h, w])
            }
            None => self.config.model.image_shape(),
        }
    }

    /// Row-major images `[N, C H W]` of samples `x` `[N, D]`: `x` itself, or for a latent run
    /// `decode(x / s + shift)` (SPEC §7).
    pub fn to_images(&self, x: &Tensor<2>) -> Vec<f64> {
        let Some(vae) = &self.vae else {
            return to_vec(x);
        };
        let x = x.clone().to_device(&self.device);
        let [n, _] = x.dims();
        let [c, h, w] = vae.config.latent_shape();
        let mut out = Vec::new();
        for start in (0..n).step_by(ENCODE_BATCH) {
            let end = (start + ENCODE_BATCH).min(n);
            let z = vae.from_diffusion(x.clone().slice([start..end, 0..c * h * w]));
            let images = vae.decode(z.reshape([end - start, c, h, w]));
            let d = images.dims()[1..].iter().product::<usize>();
            out.extend(to_vec(&images.reshape([end - start, d])));
        }
        out
    }

    /// The SDE a score sampler or the likelihood integrates, and where in time they end:
    /// the run's own SDE (samplers stop at its sampling eps, the likelihood starts at 1e-5,
    /// SPEC §6), or for a discrete model the VP SDE of the run's own schedule from its first
    /// step t = 1/T ([`ScheduleVpSde`]), so that the network is only asked about the noise
    /// levels it was trained at. A zero-terminal-SNR schedule has no such SDE: an error.
    pub fn score_sde(&self) -> anyhow::Result<RunSde> {
        Ok(match self.config.sde {
            Some(cfg) => RunSde {
                sde: cfg.build(),
                sampling_eps: cfg.sampling_eps(),
                likelihood_eps: OdeOptions::default().eps,
            },
            None => {
                let sde = ScheduleVpSde::new(&self.schedule)
                    .context("reading this discrete model as a score (SDE samplers, --nll)")?;
                let t_min = sde.first_step_time();
                RunSde {
                    sde: Box::new(sde),
                    sampling_eps: t_min,
                    likelihood_eps: t_min,
                }
            }
        })
    }

    /// log p(x) of the rows of `x` through the PF-ODE of [`Self::score_sde`] from its
    /// likelihood time (SPEC §6; RK45 at rtol = atol = 1e-5); returns the likelihood, the SDE's
    /// name and the start time.
    pub fn pf_ode_likelihood(
        &self,
        net: &Net,
        x: &Tensor<2>,
        divergence: &Divergence,
    ) -> anyhow::Result<(PfOdeLikelihood, &'static str, f64)> {
        let RunSde {
            sde,
            likelihood_eps,
            ..
        } = self.score_sde()?;
        let options = OdeOptions {
            eps: likelihood_eps,
            ..OdeOptions::default()
        };
        let like = self
            .with_score(net, &*sde, |score| {
                pf_ode_log_likelihood(&*sde, score, x, divergence, &options)
            })
            .context("the probability-flow ODE likelihood")?;
        Ok((like, sde.name(), likelihood_eps))
    }

    /// Calls `f` with the run's score function on `net` (the run's MLP on some device):
    /// a DSM-trained eps network, or the discrete model read as a VP score (SPEC §3).
    pub fn with_score<R>(&self, net: &Net, sde: &dyn Sde, f: impl FnOnce(&dyn ScoreFn) -> R) -> R {
        match self.config.sde {
            Some(_) => f(&NetworkScore {
                net,
                sde,
                output: ScoreOutput::Eps,
                time: TimeInput::Scaled(NETWORK_TIME_SCALE),
            }),
            None => {
                let denoiser = NetworkDenoiser {
                    net,
                    parameterization: self.denoiser.parameterization,
                };
                f(&DenoiserScore {
                    denoiser,
                    sde,
                    time: TimeInput::Discrete(Box::new(self.schedule.clone())),
                })
            }
        }
    }

    /// `n` samples (seed `seed`) with the named sampler; returns them and the network calls.
    pub fn draw(
        &self,
        sampler: &SamplerChoice,
        n: usize,
        seed: u64,
        callback: Callback,
    ) -> anyhow::Result<(Tensor<2>, usize)> {
        self.draw_conditional(sampler, n, seed, None, callback)
    }

    /// [`Run::draw`] with class labels (one per sample, -1 for unconditional) and a
    /// classifier-free guidance scale w (eps = eps_uncond + w (eps_cond - eps_uncond); w = 1 is
    /// plain conditional sampling).
    pub fn draw_conditional(
        &self,
        sampler: &SamplerChoice,
        n: usize,
        seed: u64,
        cond: Option<(&[i64], f64)>,
        callback: Callback,
    ) -> anyhow::Result<(Tensor<2>, usize)> {
        if let Some((labels, _)) = cond {
            let classes = self.config.model.num_classes().unwrap_or(0);
            if classes == 0 {
                bail!("this run's model is unconditional: it takes no --class or --guidance");
            }
            if let Some(l) = labels.iter().find(|&&l| l < -1 || l >= classes as i64) {
                bail!("class {l}: the model knows classes 0..{classes} (and -1, unconditional)");
            }
        }
        let SamplerChoice {
            name: sampler,
            steps,
            eta,
            spacing,
        } = sampler;
        let (sampler, steps, eta) = (sampler.as_str(), *steps, *eta);
        let d = self.config.model.data_dim();
        let device = &self.device;
        if SDE_SAMPLERS.contains(&sampler) {
            if cond.is_some() {
                bail!(
                    "--class / --guidance apply to the discrete samplers; the SDE samplers ({}) \
                     sample this model unconditionally",
                    SDE_SAMPLERS.join(", ")
                );
            }
            if let Some(eta) = eta {
                bail!("--eta {eta}: the SDE sampler {sampler} takes no eta");
            }
            let RunSde {
                sde, sampling_eps, ..
            } = self.score_sde()?;
            let chosen = SdeSampler::from_name(sampler, steps, sampling_eps)?;
            let like = from_rows(vec![0.0; n * d], n, d, device, DType::F32);
            let mut noise = SampleRng::new(seed, 0, n);
            let out = self.with_score(&self.denoiser.net, &*sde, |score| {
                chosen.sample(&*sde, sampling_eps, score, &like, &mut noise, callback)
            });
            return out.with_context(|| format!("sampling with {sampler}"));
        }
        if self.config.sde.is_some() {
            bail!(
                "this run is a score-SDE model: sample it with --sampler {}",
                SDE_SAMPLERS.join(" | ")
            );
        }
        let cfg = sampler_config(sampler, steps, eta, spacing.as_deref())?;
        let guided;
        let (denoiser, labels): (&dyn Denoiser, Option<&[i64]>) = match cond {
            Some((labels, w)) if w != 1.0 => {
                guided = Guided {
                    inner: &self.denoiser,
                    guidance_scale: w,
                };
                (&guided, Some(labels))
            }
            Some((labels, _)) => (&self.denoiser, Some(labels)),
            None => (&self.denoiser, None),
        };
        let x = sample(
            &cfg,
            denoiser,
            &self.schedule,
            n,
            d,
            device,
            DType::F32,
            seed,
            0,
            labels,
            callback,
        )
        .with_context(|| format!("sampling with {sampler}"))?;
        Ok((x, cfg.nfe()))
    }
}

/// The sampler options of `diffuse sample` and `diffuse eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplerChoice {
    /// ddpm | ddim | euler | euler-ancestral | heun | dpmpp-2m, or the compact form
    /// `ddim:eta=0.5,spacing=trailing`; or a score-SDE sampler em | pc | ode (the only ones for
    /// runs trained with --sde).
    #[arg(long = "sampler", default_value = "ddim")]
    pub name: String,
    /// Sampler steps (predictor steps for em / pc; ignored by the adaptive ode).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// eta of ddim (default 0) and euler-ancestral (default 1); an error with other samplers
    /// or when --sampler's compact form sets it too.
    #[arg(long)]
    pub eta: Option<f64>,
    /// Timestep spacing of ddpm / ddim: linspace | leading | trailing (default trailing).
    #[arg(long)]
    pub spacing: Option<String>,
}

/// A sampler configuration from command-line names: a registry name, or the compact form
/// `ddim:eta=0.5,spacing=trailing` (`spacing`: the sampler's default if None).
pub fn sampler_config(
    name: &str,
    steps: usize,
    eta: Option<f64>,
    spacing: Option<&str>,
) -> anyhow::Result<SamplerConfig> {
    let eta = eta.map(|e| e.to_string());
    let flags: Vec<(&str, &str)> = [("eta", eta.as_deref()), ("spacing", spacing)]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect();
    Ok(SamplerConfig::parse_with_flags(name, steps, &flags)?)
}
