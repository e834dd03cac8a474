//! The MLP denoiser for low-dimensional data (2-D toy sets, N x D point clouds).
//!
//! With `e = emb(t)` the sinusoidal embedding ([`super::embedding`]) and `silu(z) = z sigmoid(z)`:
//! ```text
//! temb = W_t2 silu(W_t1 e + b_t1) + b_t2            time MLP, E -> H -> H
//! h_0  = x                                          [N, D]
//! h_l  = silu(W_l h_{l-1} + b_l + temb),  l = 1..L   hidden layers of width H
//! out  = W_out h_L + b_out                          [N, D]: eps, x_0 or v as configured
//! ```
//! The weights live in one flat float32 vector ([`MlpParams`], the training state the fused
//! kernel in [`super::mlp_kernel`] updates); [`Mlp`] is the same network as a burn module
//! (for sampling on any device), built from those weights. Parameter names follow diffusers
//! (`time_embedding.linear_1.weight`, ...); weights are stored `[in, out]` (burn's layout).

use crate::denoiser::Network;
use crate::error::{Error, Result};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Shape of the MLP. Defaults: 3 hidden layers of width 256, a 64-dim time embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Data dimension D (input and output width).
    pub data_dim: usize,
    /// Hidden width H.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Number of hidden layers L.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Sinusoidal embedding dimension E (even).
    #[serde(default = "default_time_embed_dim")]
    pub time_embed_dim: usize,
}

fn default_hidden() -> usize {
    256
}
fn default_depth() -> usize {
    3
}
fn default_time_embed_dim() -> usize {
    64
}

impl MlpConfig {
    /// The default MLP for `data_dim`-dimensional data.
    pub fn new(data_dim: usize) -> Self {
        MlpConfig {
            data_dim,
            hidden: default_hidden(),
            depth: default_depth(),
            time_embed_dim: default_time_embed_dim(),
        }
    }

    /// Checks every size is usable.
    pub fn validate(&self) -> Result<()> {
        if self.data_dim == 0 {
            return Err(Error::config("model.data_dim", "must be >= 1"));
        }
        if self.hidden == 0 {
            return Err(Error::config("model.hidden", "must be >= 1"));
        }
        if self.depth == 0 {
            return Err(Error::config("model.depth", "must be >= 1"));
        }
        if self.time_embed_dim < 2 || !self.time_embed_dim.is_multiple_of(2) {
            return Err(Error::config(
                "model.time_embed_dim",
                format!("{} is not an even number >= 2", self.time_embed_dim),
            ));
        }
        Ok(())
    }

    /// The number of parameters (weights and biases of [`Self::linear_shapes`]) without
    /// listing the layers; `None` if it overflows (a config is user input: a loader checks
    /// this against the file before building the model).
    pub fn num_params(&self) -> Option<usize> {
        let (d, h, e) = (self.data_dim, self.hidden, self.time_embed_dim);
        let linear = |d_in: usize, d_out: usize| d_in.checked_mul(d_out)?.checked_add(d_out);
        let hidden_layers = self.depth.checked_sub(1)?.checked_mul(linear(h, h)?)?;
        [
            linear(e, h)?,
            linear(h, h)?,
            linear(d, h)?,
            hidden_layers,
            linear(h, d)?,
        ]
        .into_iter()
        .try_fold(0usize, |acc, n| acc.checked_add(n))
    }

    /// `(name, [in, out])` of every linear layer, in storage order.
    pub fn linear_shapes(&self) -> Vec<(String, [usize; 2])> {
        let (d, h, e) = (self.data_dim, self.hidden, self.time_embed_dim);
        let mut v = vec![
            ("time_embedding.linear_1".to_string(), [e, h]),
            ("time_embedding.linear_2".to_string(), [h, h]),
        ];
        for l in 0..self.depth {
            v.push((format!("layers.{l}"), [if l == 0 { d } else { h }, h]));
        }
        v.push(("output".to_string(), [h, d]));
        v
    }
}

/// Where one linear layer's weight `[in, out]` and bias `[out]` sit in the flat vector.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSlot {
    pub name: String,
    pub d_in: usize,
    pub d_out: usize,
    pub weight: usize,
    pub bias: usize,
}

impl LinearSlot {
    /// The weight's range in the flat vector.
    pub fn weight_range(&self) -> std::ops::Range<usize> {
        self.weight..self.weight + self.d_in * self.d_out
    }

    /// The bias's range in the flat vector.
    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.bias..self.bias + self.d_out
    }
}

/// The flat layout of an MLP's parameters.
pub fn layout(cfg: &MlpConfig) -> (Vec<LinearSlot>, usize) {
    let mut offset = 0;
    let slots = cfg
        .linear_shapes()
        .into_iter()
        .map(|(name, [d_in, d_out])| {
            let weight = offset;
            let bias = weight + d_in * d_out;
            offset = bias + d_out;
            LinearSlot {
                name,
                d_in,
                d_out,
                weight,
                bias,
            }
        })
        .collect();
    (slots, offset)
}

/// An MLP's weights as one flat float32 vector (the layout of [`layout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpParams {
    pub config: MlpConfig,
    pub slots: Vec<LinearSlot>,
    pub values: Vec<f32>,
}

impl MlpParams {
    /// PyTorch's default Linear initialisation, U(-1/sqrt(in), 1/sqrt(in)) for weights and
    /// biases, from a seeded stream.
    pub fn init(config: &MlpConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let (slots, len) = layout(config);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = vec![0f32; len];
        for s in &slots {
            let bound = 1.0 / (s.d_in as f64).sqrt();
            for v in &mut values[s.weight..s.bias + s.d_out] {
                *v = rng.random_range(-bound..bound) as f32;
            }
        }
        Ok(MlpParams {
            config: config.clone(),
            slots,
            values,
        })
    }

    /// Weights from stored values (checked against the config's layout).
    pub fn from_values(config: &MlpConfig, values: Vec<f32>) -> Result<Self> {
        config.validate()?;
        let (slots, len) = layout(config);
        if values.len() != len {
            return Err(Error::Shape(format!(
                "{} parameter values for a model that has {len}",
                values.len()
            )));
        }
        Ok(MlpParams {
            config: config.clone(),
            slots,
            values,
        })
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for an empty vector (never, for a valid config).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `(name, shape, values)` of every tensor (`<layer>.weight`, `<layer>.bias`).
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((
                format!("{}.weight", s.name),
                vec![s.d_in, s.d_out],
                &self.values[s.weight_range()],
            ));
            out.push((
                format!("{}.bias", s.name),
                vec![s.d_out],
                &self.values[s.bias_range()],
            ));
        }
        out
    }

    /// The burn module with these weights, for inference on `device`.
    pub fn to_module(&self, device: &Device) -> Mlp {
        let linear = |s: &LinearSlot| {
            let w = TensorData::new(self.values[s.weight_range()].to_vec(), [s.d_in, s.d_out]);
            let b = TensorData::new(self.values[s.bias_range()].to_vec(), [s.d_out]);
            Linear {
                weight: Param::from_tensor(Tensor::from_data(w, (device, DType::F32))),
                bias: Some(Param::from_tensor(Tensor::from_data(
                    b,
                    (device, DType::F32),
                ))),
            }
        };
        let depth = self.config.depth;
        Mlp {
            time_linear_1: linear(&self.slots[0]),
            time_linear_2: linear(&self.slots[1]),
            layers: self.slots[2..2 + depth].iter().map(linear).collect(),
            output: linear(&self.slots[2 + depth]),
            time_embed_dim: self.config.time_embed_dim,
        }
    }
}

/// The MLP as a burn module (see the module docs for the equations).
#[derive(Module, Debug)]
pub struct Mlp {
    pub time_linear_1: Linear,
    pub time_linear_2: Linear,
    pub layers: Vec<Linear>,
    pub output: Linear,
    #[module(skip)]
    pub time_embed_dim: usize,
}

impl Mlp {
    /// `x`: `[N, D]`, `t`: one timestep value per sample; returns `[N, D]`.
    pub fn forward_t(&self, x: Tensor<2>, t: &[f64]) -> Tensor<2> {
        let e =
            super::embedding::timestep_embedding(t, self.time_embed_dim, &x.device(), x.dtype());
        // [N, E] -> [N, H]
        let temb = self
            .time_linear_2
            .forward(silu(self.time_linear_1.forward(e)));
        let mut h = x;
        for layer in &self.layers {
            // [N, in] -> [N, H]
            h = silu(layer.forward(h) + temb.clone());
        }
        // [N, H] -> [N, D]
        self.output.forward(h)
    }
}

impl Mlp {
    /// The module's weights as a flat vector (read back from its tensors, so always current).
    pub fn to_params(&self) -> Result<MlpParams> {
        let [hidden, data_dim] = self.output.weight.dims();
        let config = MlpConfig {
            data_dim,
            hidden,
            depth: self.layers.len(),
            time_embed_dim: self.time_embed_dim,
        };
        let (slots, len) = layout(&config);
        let mut values = vec![0f32; len];
        let linears = [&self.time_linear_1, &self.time_linear_2]
            .into_iter()
            .chain(&self.layers)
            .chain([&self.output]);
        for (slot, linear) in slots.iter().zip(linears) {
            let read = |t: Tensor<2>, range: std::ops::Range<usize>, values: &mut [f32]| {
                let data = t.into_data().convert::<f32>();
                let v = data
                    .as_slice::<f32>()
                    .map_err(|e| Error::Shape(format!("{e:?}")))?;
                if v.len() != range.len() {
                    return Err(Error::Shape(format!("{}: {} values", slot.name, v.len())));
                }
                values[range].copy_from_slice(v);
                Ok(())
            };
            read(linear.weight.val(), slot.weight_range(), &mut values)?;
            let bias = linear.bias.as_ref().map(|b| b.val().unsqueeze::<2>());
            let bias = bias.ok_or_else(|| Error::Shape(format!("{}: no bias", slot.name)))?;
            read(bias, slot.bias_range(), &mut values)?;
        }
        MlpParams::from_values(&config, values)
    }
}

/// Whether `x` can take the fused CPU inference path: float32 on the flex device without
/// autodiff (a caller differentiating through the network, such as the exact PF-ODE
/// divergence, keeps burn's ops).
fn fused_cpu_inference(x: &Tensor<2>) -> bool {
    let device = x.device();
    x.dtype() == DType::F32 && !device.is_autodiff() && crate::device::is_cpu(&device)
}

impl Network for Mlp {
    fn forward(&self, x: Tensor<2>, t: &[f64], _labels: Option<&[i64]>) -> Tensor<2> {
        let n = x.dims()[0];
        let t = if t.len() == 1 && n != 1 {
            vec![t[0]; n]
        } else {
            t.to_vec()
        };
        if fused_cpu_inference(&x) {
            if let Ok(params) = self.to_params() {
                let device = x.device();
                let d = params.config.data_dim;
                let data = x.into_data().convert::<f32>();
                let values = data.as_slice::<f32>().expect("float32 data").to_vec();
                let out = super::mlp_kernel::infer(&params, &values, &t);
                return Tensor::from_data(TensorData::new(out, [n, d]), (&device, DType::F32));
            }
        }
        self.forward_t(x, &t)
    }
}
