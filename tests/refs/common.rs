//! Shared pieces of the reference-vector test: JSON arrays, the analytic model of the run
//! files, and the tolerance rule of `shared/refs/README.md`.

use burn::tensor::{DType, Tensor};
use diffuse::compat::DiffusersSchedulerConfig;
use diffuse::denoiser::{
    Denoised, Denoiser, Network, NetworkDenoiser, NoiseLevel, Parameterization,
};
use diffuse::tensor::{from_rows, to_vec};
use serde_json::Value;
use std::cell::RefCell;

/// A JSON `{"shape": [...], "data": [...]}` array as a float64 `[shape[0], rest]` tensor
/// (scheduler steps are elementwise, so the trailing dimensions flatten without loss).
pub fn tensor(v: &Value) -> Tensor<2> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|s| s.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(num)
        .collect();
    let n = shape[0];
    from_rows(
        data.clone(),
        n,
        data.len() / n,
        &diffuse::device::cpu(),
        DType::F64,
    )
}

/// A JSON number (or "inf"/"-inf"/"nan" string) as f64.
pub fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("numeric string"),
        _ => v.as_f64().expect("number"),
    }
}

/// A list of numbers.
pub fn nums(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(num).collect()
}

/// A list of arrays.
pub fn tensors(v: &Value) -> Vec<Tensor<2>> {
    v.as_array().expect("array").iter().map(tensor).collect()
}

/// The diffusers config of a case. A config with an option this crate does not reproduce
/// panics with the option's name (the file then fails; it is never skipped).
pub fn config(v: &Value) -> DiffusersSchedulerConfig {
    let cfg = DiffusersSchedulerConfig::from_json(v).expect("diffusers config parses");
    if let Err(e) = cfg.check_supported() {
        panic!(
            "unsupported {} config: {e}",
            cfg.class_name.as_deref().unwrap_or("scheduler")
        );
    }
    cfg
}

/// The README's sound bound: tol = max(1e-9, 2 * f64_replay_max_mixed_dev) of the case or run.
pub fn tolerance(case: &Value) -> f64 {
    let dev = case.get("f64_replay_max_mixed_dev").map(num).unwrap_or(0.0);
    (2.0 * dev).max(1e-9)
}

/// Accumulates comparisons of one file: the largest mixed error seen, and failures.
#[derive(Default)]
pub struct Checker {
    pub comparisons: usize,
    pub max_mixed_err: f64,
    /// The largest error as a fraction of its tolerance.
    pub max_ratio: f64,
    pub failures: Vec<String>,
    /// Timesteps where float32 decided a rounding (reported by name, see `karras.rs`).
    pub ties: usize,
}

impl Checker {
    /// |got - want| <= tol * max(1, |want|) for every element.
    pub fn close(&mut self, what: &str, got: &[f64], want: &[f64], tol: f64) {
        self.comparisons += 1;
        if !self.same_len(what, got, want) {
            return;
        }
        let mut worst = (0.0f64, 0usize);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (g - w).abs() / w.abs().max(1.0);
            let err = if err.is_nan() { f64::INFINITY } else { err };
            if err > worst.0 {
                worst = (err, i);
            }
        }
        self.max_mixed_err = self.max_mixed_err.max(worst.0);
        self.max_ratio = self.max_ratio.max(worst.0 / tol);
        if worst.0 > tol {
            let i = worst.1;
            self.failures.push(format!(
                "{what}: element {i} is {} but the reference is {} (mixed error {:.3e} > tol {:.3e})",
                got[i], want[i], worst.0, tol
            ));
        }
    }

    /// Tensor form of [`Checker::close`].
    pub fn close_t(&mut self, what: &str, got: &Tensor<2>, want: &Tensor<2>, tol: f64) {
        self.close(what, &to_vec(got), &to_vec(want), tol);
    }

    /// Exact equality of integer-like lists (timesteps).
    pub fn equal(&mut self, what: &str, got: &[f64], want: &[f64]) {
        self.comparisons += 1;
        if got != want {
            self.failures
                .push(format!("{what}: got {got:?}, expected {want:?}"));
        }
    }
}

/// The analytic model of the run files: output = a * x_in + b + c * t / T.
pub struct AnalyticModel {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub num_train: f64,
}

impl AnalyticModel {
    pub fn from_json(model: &Value, num_train: usize) -> Self {
        AnalyticModel {
            a: num(&model["a"]),
            b: num(&model["b"]),
            c: num(&model["c"]),
            num_train: num_train as f64,
        }
    }
}

impl Network for AnalyticModel {
    fn forward(&self, x: Tensor<2>, t: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
        let shift: Vec<f64> = t
            .iter()
            .map(|t| self.b + self.c * t / self.num_train)
            .collect();
        let [n, d] = x.dims();
        let shift = if shift.len() == 1 {
            vec![shift[0]; n]
        } else {
            shift
        };
        let col = from_rows(shift, n, 1, &x.device(), x.dtype());
        x.mul_scalar(self.a) + col.expand([n, d])
    }
}

impl Checker {
    /// Records a failure (and returns false) when the two lists differ in length.
    pub fn same_len(&mut self, what: &str, got: &[f64], want: &[f64]) -> bool {
        if got.len() != want.len() {
            self.failures.push(format!(
                "{what}: {} values, expected {}",
                got.len(),
                want.len()
            ));
        }
        got.len() == want.len()
    }

    /// |got - want| <= tol for every element (absolute: fractional timesteps).
    pub fn close_abs(&mut self, what: &str, got: &[f64], want: &[f64], tol: f64) {
        self.comparisons += 1;
        if !self.same_len(what, got, want) {
            return;
        }
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let err = (g - w).abs();
            let err = if err.is_nan() { f64::INFINITY } else { err };
            self.max_ratio = self.max_ratio.max(err / tol);
            if err > tol {
                self.failures.push(format!(
                    "{what}: element {i} is {g} but the reference is {w} (error {err:.3e} > tol {tol:.3e})"
                ));
                return;
            }
        }
    }
}

/// A denoiser wrapper that records every input x_t it is called with (the files' `model_inputs`)
/// and the level of each call.
pub struct Recording<D> {
    pub inner: D,
    pub inputs: RefCell<Vec<Vec<f64>>>,
    pub levels: RefCell<Vec<NoiseLevel>>,
}

impl<D> Recording<D> {
    pub fn new(inner: D) -> Self {
        Recording {
            inner,
            inputs: RefCell::new(Vec::new()),
            levels: RefCell::new(Vec::new()),
        }
    }
}

impl<D: Denoiser> Denoiser for Recording<D> {
    fn denoise(&self, x_t: &Tensor<2>, levels: &[NoiseLevel], labels: Option<&[i64]>) -> Denoised {
        self.inputs.borrow_mut().push(to_vec(x_t));
        self.levels.borrow_mut().push(levels[0]);
        self.inner.denoise(x_t, levels, labels)
    }
}

/// The analytic model of a run file as a denoiser of the config's prediction type.
pub fn analytic_denoiser(
    file: &Value,
    cfg: &DiffusersSchedulerConfig,
) -> Recording<NetworkDenoiser<AnalyticModel>> {
    Recording::new(NetworkDenoiser {
        net: AnalyticModel::from_json(&file["model"], cfg.num_train_timesteps),
        parameterization: Parameterization::Discrete {
            prediction: cfg.prediction().expect("prediction type"),
            // The analytic model has no variance channels: with a learned variance_type
            // diffusers' DPM-Solver keeps the first 3 channels of the output, all of them here.
            learned_variance: false,
        },
    })
}

/// The relative error of a sigma that diffusers derives from a float32 alpha_bar: float32
/// storage (2 ulp) and the cancellation in 1 - alpha_bar, 4 eps_f32 / (1 - alpha_bar), which the
/// README names as the cause of its largest deviations. Evaluated at the schedule's smallest
/// sigma (sigma(0)), where it is largest, it bounds every sigma of a grid.
pub fn f32_sigma_rel_tol(schedule: &diffuse::schedule::Schedule) -> f64 {
    let one_minus_alpha_bar = 1.0 - schedule.alpha_bar[0];
    (4.0 * f64::from(f32::EPSILON) / one_minus_alpha_bar).max(2.0 * f64::from(f32::EPSILON))
}
