//! The two ways a training step gets its loss and gradient, behind one contract
//! ([`BatchGrad`] from a [`StepBatch`]): burn autodiff on any model and any device, and the
//! fused CPU kernel of the 2-D MLP ([`crate::nn::mlp_kernel`]), a fast path of the same step.
//!
//! Both minimise `mean_n w_n ||target_n - pred_n||^2 / D` (SPEC §4; `w_n` from
//! [`crate::loss::loss_weight`]); the autodiff path adds the hybrid loss's
//! `lambda T L_vlb term` for learned-variance models (improved DDPM).

use super::adamw::CHUNK;
use crate::denoiser::Network;
use crate::loss::per_sample_mse;
use crate::nn::mlp_kernel::MlpKernel;
use crate::nn::{MlpParams, Net};
use crate::tensor::{column, to_vec};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// One batch, ready for the network: x_t and the regression target (float32, `[N, D]`
/// row-major), the network's time input, the per-sample loss weight and the class labels.
pub struct StepBatch<'a> {
    pub n: usize,
    pub dim: usize,
    pub x_t: &'a [f32],
    pub target: &'a [f32],
    /// The timestep value the network is conditioned on, one per sample.
    pub t_input: &'a [f64],
    /// The fused kernel's time embedding `[N, E]` (MLP only).
    pub emb: &'a [f32],
    pub weight: &'a [f64],
    pub labels: Option<&'a [i64]>,
}

/// What a step's engine returns.
pub struct BatchGrad {
    pub loss: f64,
    /// Per-sample squared error (mean over D), what the loss-aware timestep sampler records.
    pub per_sample: Vec<f64>,
    /// d loss / d params in the flat layout.
    pub grad: Vec<f32>,
}

/// An extra loss term on the network output computed by the caller (the hybrid L_vlb term):
/// given the output `[N, out_dim]` (autodiff), returns a scalar tensor to add to the loss and
/// optionally replaces the per-sample values the timestep sampler records.
pub type ExtraLoss<'a> = &'a dyn Fn(&Tensor<2>) -> (Tensor<1>, Option<Vec<f64>>);

/// Loss and gradient through burn autodiff: `template` is the network on an autodiff device;
/// `params` are loaded into it as fresh leaves.
pub fn autodiff_grad(
    template: &Net,
    params: &[f32],
    batch: &StepBatch,
    extra: Option<ExtraLoss>,
) -> crate::Result<BatchGrad> {
    let net = template.with_values(params)?;
    let device = net.device();
    let (n, d) = (batch.n, batch.dim);
    let tensor = |v: &[f32]| {
        Tensor::<2>::from_data(
            TensorData::new(v.to_vec(), [n, d]),
            (&device, burn::tensor::DType::F32),
        )
    };
    let x_t = tensor(batch.x_t);
    let target = tensor(batch.target);
    let out = net.forward(x_t, batch.t_input, batch.labels);
    let pred = if out.dims()[1] == d {
        out.clone()
    } else {
        out.clone().slice([0..n, 0..d])
    };
    // [N, D] -> [N, 1]: mean squared error per sample.
    let mse = (pred - target).powi_scalar(2).mean_dim(1);
    let w = column(batch.weight, &mse);
    let mut loss: Tensor<1> = (mse.clone() * w).mean();
    let mut per_sample = to_vec(&mse);
    if let Some(extra) = extra {
        let (term, recorded) = extra(&out);
        loss = loss + term;
        if let Some(r) = recorded {
            per_sample = r;
        }
    }
    let value = loss
        .to_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .map_err(|e| crate::Error::Shape(format!("{e:?}")))?[0];
    let grads = loss.backward();
    Ok(BatchGrad {
        loss: value,
        per_sample,
        grad: net.gradients(&grads),
    })
}

/// How many shards a batch is split into for the kernel's parallel forward/backward: a
/// function of the batch size only (at most 256 rows per shard, at least 2 shards from 64 rows
/// on), so the summation order, and with it every result, is the same on any number of threads.
pub fn shard_count(batch: usize) -> usize {
    if batch < 64 {
        1
    } else {
        batch.div_ceil(256).max(2)
    }
}

/// The fused MLP kernel's buffers, one per batch shard.
#[derive(Default)]
pub struct MlpEngine {
    kernels: Vec<MlpKernel>,
    shard_grads: Vec<Vec<f32>>,
}

impl MlpEngine {
    /// Loss and gradient of `params` on `batch`; dLoss/dout = 2 w_n (out - target) / (N D).
    pub fn grad(&mut self, params: &MlpParams, batch: &StepBatch) -> BatchGrad {
        let (n, d, e) = (batch.n, batch.dim, batch.emb.len() / batch.n.max(1));
        let shards = shard_count(n);
        let rows = n.div_ceil(shards);
        self.kernels.resize_with(shards, MlpKernel::new);
        self.shard_grads
            .resize_with(shards, || vec![0.0; params.len()]);
        let (x_t, tgt, emb, w) = (batch.x_t, batch.target, batch.emb, batch.weight);
        let mse_parts: Vec<Vec<f64>> = self
            .kernels
            .par_iter_mut()
            .zip(self.shard_grads.par_iter_mut())
            .enumerate()
            .map(|(k, (kernel, grad))| {
                let (r0, r1) = (k * rows, ((k + 1) * rows).min(n));
                let out = kernel.forward(params, &x_t[r0 * d..r1 * d], &emb[r0 * e..r1 * e]);
                let tgt = &tgt[r0 * d..r1 * d];
                let mse = per_sample_mse(out, tgt, d);
                let d_out: Vec<f32> = out
                    .chunks(d)
                    .zip(tgt.chunks(d))
                    .zip(&w[r0..r1])
                    .flat_map(|((o, y), w)| {
                        let c = (2.0 * w / (n * d) as f64) as f32;
                        o.iter().zip(y).map(move |(o, y)| c * (o - y))
                    })
                    .collect();
                kernel.backward(params, &d_out, grad);
                mse
            })
            .collect();
        let mse: Vec<f64> = mse_parts.concat();
        let loss = mse.iter().zip(w).map(|(m, w)| m * w).sum::<f64>() / n as f64;
        // Sum the shard gradients in shard order (parallel over parameter chunks).
        let mut total = vec![0.0f32; params.len()];
        let shard_grads = &self.shard_grads;
        total.par_chunks_mut(CHUNK).enumerate().for_each(|(c, g)| {
            let range = c * CHUNK..c * CHUNK + g.len();
            g.copy_from_slice(&shard_grads[0][range.clone()]);
            for sg in &shard_grads[1..] {
                for (a, b) in g.iter_mut().zip(&sg[range.clone()]) {
                    *a += b;
                }
            }
        });
        BatchGrad {
            loss,
            per_sample: mse,
            grad: total,
        }
    }
}

impl StepBatch<'_> {
    /// Rows `lo..hi` of the batch.
    fn rows(&self, lo: usize, hi: usize) -> StepBatch<'_> {
        let (n, d) = (self.n, self.dim);
        let e = self.emb.len().checked_div(n).unwrap_or(0);
        StepBatch {
            n: hi - lo,
            dim: d,
            x_t: &self.x_t[lo * d..hi * d],
            target: &self.target[lo * d..hi * d],
            t_input: &self.t_input[lo..hi],
            emb: &self.emb[lo * e..hi * e],
            weight: &self.weight[lo..hi],
            labels: self.labels.map(|l| &l[lo..hi]),
        }
    }
}

/// Data-parallel loss and gradient over several devices, one `template` (autodiff) per device:
/// the batch is split into contiguous shards, one per device, run at once (one host thread
/// each), and reduced on the host in device order. The loss is a mean over the batch (SPEC §4),
/// so the full-batch loss and gradient are the shard-size-weighted means of the shards'; the
/// weights, the optimiser and the checkpoint stay the one-device ones.
pub fn data_parallel_grad(
    templates: &[Net],
    params: &[f32],
    batch: &StepBatch,
) -> crate::Result<BatchGrad> {
    let n = batch.n;
    let rows = n.div_ceil(templates.len().max(1));
    let shards: Vec<(usize, usize)> = (0..templates.len())
        .map(|k| ((k * rows).min(n), ((k + 1) * rows).min(n)))
        .filter(|(lo, hi)| lo < hi)
        .collect();
    let parts: Vec<crate::Result<BatchGrad>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .zip(templates)
            .map(|(&(lo, hi), template)| {
                scope.spawn(move || autodiff_grad(template, params, &batch.rows(lo, hi), None))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a device's gradient thread panicked"))
            .collect()
    });
    let mut total = BatchGrad {
        loss: 0.0,
        per_sample: Vec::with_capacity(n),
        grad: vec![0.0; params.len()],
    };
    for (part, &(lo, hi)) in parts.into_iter().zip(&shards) {
        let part = part?;
        let share = (hi - lo) as f64 / n as f64;
        total.loss += share * part.loss;
        total.per_sample.extend(part.per_sample);
        for (g, p) in total.grad.iter_mut().zip(&part.grad) {
            *g += share as f32 * p;
        }
    }
    Ok(total)
}
