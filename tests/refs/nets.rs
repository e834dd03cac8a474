//! `unet2d` and `autoencoder_kl` files in `nets/`: a diffusers `UNet2DModel` or
//! `AutoencoderKL` checkpoint folder and its fixed inputs and outputs (`shared/refs/README.md`,
//! section nets). Every option comes from the file's `config`; an option the model does not
//! implement fails the file, naming it.
//!
//! UNet tolerances below; the VAE's are at [`check_vae`].
//!
//! Tolerances (mixed error |got - ref| / max(1, |ref|), except where stated):
//! - `time_proj` (ours in float64, diffusers' in float32): an element-wise first-order bound
//!   of diffusers' float32 rounding, see [`f32_time_proj_bound`].
//! - `time_emb` and `output_f64` from diffusers' own projection, in float64: both sides are
//!   float64 with the same inputs and weights, so they differ by summation order only
//!   (measured 3e-15 on the shared files); tol 1e-11 leaves room for larger models and still
//!   catches any float32 rounding (1e-7) or a wrong layer.
//! - `output_f32` from diffusers' projection, in float32: each float32 run is within about
//!   the file's `f32_vs_f64_max_abs_dev` of the float64 output (ours measured 1.3x it), the
//!   two libraries accumulating in different orders; tol = 4 * f32_vs_f64_max_abs_dev.
//! - `output_f64` end to end (our float64 projection): the projections differ by up to
//!   `proj_dev` (the measured max |ours - diffusers'|, itself checked against the bound
//!   above); the network maps that difference with a gain of at most [`PROJECTION_GAIN`].

use crate::common::{num, nums, Checker};
use burn::tensor::{DType, Tensor, TensorData};
use diffuse::nn::embedding::MAX_PERIOD;
use diffuse::nn::unet::{UNet2DConfig, UNet2DModel};
use diffuse::nn::vae::{AutoencoderKL, AutoencoderKLConfig};
use diffuse::tensor::from_rows;
use serde_json::Value;
use std::path::Path;

/// Bound on how much the output moves (max abs) per unit max-abs change of the sinusoidal
/// projection: the projection passes the time MLP and one `time_emb_proj` per resnet, all of
/// default-init (roughly norm-preserving) weights. Measured 0.03 to 0.07 on the shared
/// files; 1 leaves a factor of 15.
const PROJECTION_GAIN: f64 = 1.0;

/// A JSON `{"shape", "data"}` array as a `[B, C, H, W]` tensor.
fn tensor4(v: &Value, dtype: DType) -> Tensor<4> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|s| s.as_u64().expect("dim") as usize)
        .collect();
    assert_eq!(shape.len(), 4, "sample shape {shape:?} is not [B, C, H, W]");
    let data = nums(&v["data"]);
    Tensor::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        (&diffuse::device::cpu(), dtype),
    )
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().expect("float data")
}

/// First-order bound of diffusers' float32 projection error, per element. diffusers computes
/// the exponent `e_j = -ln(P) j / (half - shift)` in float32 (three roundings: the constant,
/// the product, the quotient), then `f_j = exp(e_j)`, the argument `t f_j` and its sine or
/// cosine, one rounding each. So `|d arg| <= |t| f_j (3 |e_j| + 2) eps` and the output
/// differs by at most `|d arg| + eps` (eps = 2^-24, the unit roundoff). Twice that is allowed.
fn f32_time_proj_bound(cfg: &UNet2DConfig, t: &[f64]) -> Vec<f64> {
    let dim = cfg.time_proj_dim();
    let half = dim / 2;
    let eps = f64::from(f32::EPSILON) / 2.0;
    let mut out = Vec::with_capacity(t.len() * dim);
    for &ti in t {
        let per_freq: Vec<f64> = (0..half)
            .map(|j| {
                let e = -(MAX_PERIOD.ln()) * j as f64 / (half as f64 - cfg.freq_shift);
                2.0 * (ti.abs() * e.exp() * (3.0 * e.abs() + 2.0) * eps + eps)
            })
            .collect();
        out.extend(&per_freq);
        out.extend(&per_freq);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// Element-wise |got - want| <= bound.
fn within(c: &mut Checker, what: &str, got: &[f64], want: &[f64], bound: &[f64]) {
    c.comparisons += 1;
    if !c.same_len(what, got, want) {
        return;
    }
    for (i, ((g, w), b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g - w).abs();
        c.max_mixed_err = c.max_mixed_err.max(err / w.abs().max(1.0));
        c.max_ratio = c.max_ratio.max(err / b);
        if err.is_nan() || err > *b {
            c.failures.push(format!(
                "{what}: element {i} is {g} but the reference is {w} (error {err:.3e} > bound {b:.3e})"
            ));
            return;
        }
    }
}

pub fn check_unet(file: &Value, nets_dir: &Path, c: &mut Checker) {
    let cfg = UNet2DConfig::from_json(&file["config"])
        .unwrap_or_else(|e| panic!("unsupported UNet2DModel config: {e}"));
    let weights = nets_dir.join(file["weights"].as_str().expect("weights path"));
    let folder_config = weights.with_file_name("config.json");
    if folder_config.exists() {
        let text = std::fs::read_to_string(&folder_config).unwrap();
        let mut saved = UNet2DConfig::from_json_str(&text)
            .unwrap_or_else(|e| panic!("unsupported UNet2DModel config.json: {e}"));
        saved.diffusers_version = cfg.diffusers_version.clone();
        c.comparisons += 1;
        if saved != cfg {
            c.failures.push(format!(
                "{} differs from the file's config",
                folder_config.display()
            ));
        }
    }
    let t = nums(&file["timesteps"]);
    let labels: Option<Vec<i64>> = file.get("class_labels").map(|l| {
        l.as_array()
            .expect("class_labels")
            .iter()
            .map(|v| v.as_i64().expect("integer label"))
            .collect()
    });
    let labels = labels.as_deref();
    let ref_proj = nums(&file["time_proj"]["data"]);
    let batch = t.len();
    let proj_dim = cfg.time_proj_dim();
    let device = diffuse::device::cpu();

    let model = UNet2DModel::from_safetensors(&cfg, &weights, &device, DType::F64)
        .unwrap_or_else(|e| panic!("loading {}: {e}", weights.display()));
    let proj_bound = f32_time_proj_bound(&cfg, &t);
    let ours_proj = model.time_proj(&t, batch);
    within(c, "time_proj", &ours_proj, &ref_proj, &proj_bound);

    let proj64 = from_rows(ref_proj.clone(), batch, proj_dim, &device, DType::F64);
    let emb = model.time_embedding.forward(proj64.clone());
    c.close(
        "time_emb",
        &values(emb),
        &nums(&file["time_emb"]["data"]),
        1e-11,
    );

    let out = model.forward_with_time_proj(tensor4(&file["sample"], DType::F64), proj64, labels);
    let want64 = nums(&file["output_f64"]["data"]);
    c.close("output_f64", &values(out), &want64, 1e-11);

    let proj_dev = ours_proj
        .iter()
        .zip(&ref_proj)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let out = model.forward_images(tensor4(&file["sample"], DType::F64), &t, labels);
    let tol_e2e = (PROJECTION_GAIN * proj_dev).max(1e-11);
    c.close(
        "output_f64 (own projection)",
        &values(out),
        &want64,
        tol_e2e,
    );

    let model = UNet2DModel::from_safetensors(&cfg, &weights, &device, DType::F32)
        .unwrap_or_else(|e| panic!("loading {}: {e}", weights.display()));
    let proj32 = from_rows(ref_proj, batch, proj_dim, &device, DType::F32);
    let out = model.forward_with_time_proj(tensor4(&file["sample"], DType::F32), proj32, labels);
    let dev = num(&file["f32_vs_f64_max_abs_dev"]);
    c.close(
        "output_f32",
        &values(out),
        &nums(&file["output_f32"]["data"]),
        4.0 * dev,
    );
}

/// The folder's `config.json` (next to `weights`), if present, must be the file's config.
fn same_folder_config<T: PartialEq>(
    weights: &Path,
    c: &mut Checker,
    parse: impl Fn(&str) -> diffuse::Result<T>,
    want: &T,
) {
    let folder_config = weights.with_file_name("config.json");
    if folder_config.exists() {
        let text = std::fs::read_to_string(&folder_config).unwrap();
        let saved = parse(&text)
            .unwrap_or_else(|e| panic!("unsupported config.json {}: {e}", folder_config.display()));
        c.comparisons += 1;
        if saved != *want {
            c.failures.push(format!(
                "{} differs from the file's config",
                folder_config.display()
            ));
        }
    }
}

/// `autoencoder_kl`: posterior mean and (clamped) log-variance of `sample`, `decode(latent)`
/// and `decode(posterior_mean)`, each in float64 and (where the file has it) float32.
///
/// Tolerances (mixed error |got - ref| / max(1, |ref|)):
/// - `*_f64`: both sides run the same float64 arithmetic on the same inputs and weights and
///   differ by summation order only (convolutions, group norms, the attention's softmax), so
///   1e-11, as for the UNet: room for rounding growth through ~20 layers, and still far
///   below any float32 rounding (1e-7) or a wrong layer. `reconstruction_of_mean_f64` decodes
///   our own float64 mean, which agrees with the file's to that order, through a decoder of
///   O(1) gain.
/// - `*_f32`: each float32 run is within about the file's `f32_vs_f64_max_abs_dev` of the
///   float64 one, the two libraries accumulating in different orders, so 4 times that.
pub fn check_vae(file: &Value, nets_dir: &Path, c: &mut Checker) {
    let cfg = AutoencoderKLConfig::from_json(&file["config"])
        .unwrap_or_else(|e| panic!("unsupported AutoencoderKL config: {e}"));
    let weights = nets_dir.join(file["weights"].as_str().expect("weights path"));
    let with_version = |text: &str| {
        AutoencoderKLConfig::from_json_str(text).map(|mut saved| {
            saved.diffusers_version = cfg.diffusers_version.clone();
            saved
        })
    };
    same_folder_config(&weights, c, with_version, &cfg);
    let device = diffuse::device::cpu();
    let tol32 = 4.0 * num(&file["f32_vs_f64_max_abs_dev"]);
    for (dtype, suffix, tol) in [(DType::F64, "f64", 1e-11), (DType::F32, "f32", tol32)] {
        let model = AutoencoderKL::from_safetensors(&cfg, &weights, &device, dtype)
            .unwrap_or_else(|e| panic!("loading {}: {e}", weights.display()));
        let posterior = model.encode(tensor4(&file["sample"], dtype));
        let mut compare = |name: &str, got: Tensor<4>| {
            let key = format!("{name}_{suffix}");
            if let Some(want) = file.get(&key) {
                c.close(&key, &values(got), &nums(&want["data"]), tol);
            }
        };
        compare("posterior_mean", posterior.mean.clone());
        compare("posterior_logvar", posterior.logvar.clone());
        compare(
            "decoder_output",
            model.decode(tensor4(&file["latent"], dtype)),
        );
        compare("reconstruction_of_mean", model.decode(posterior.mean));
    }
    // Every comparison the README lists for float64 must have run.
    for key in [
        "posterior_mean_f64",
        "posterior_logvar_f64",
        "decoder_output_f64",
        "reconstruction_of_mean_f64",
    ] {
        if file.get(key).is_none() {
            c.failures.push(format!("the file has no `{key}`"));
        }
    }
}
