//! Fused float32 CPU forward and backward of the MLP ([`super::mlp`]) for training.
//!
//! One training step of a 3x256 MLP is a dozen small matrix products plus elementwise SiLU;
//! through a generic autodiff graph every op allocates and dispatches, which dominates at these
//! sizes. Here the forward keeps exactly what the backward needs (pre-activations' sigmoids and
//! activations) in buffers reused across steps, products go straight to `gemm` (the kernel burn's
//! flex backend uses), and bias/time additions and SiLU and its derivative are fused into single
//! passes. The gradients are checked against burn's autodiff in this module's tests.
//!
//! A kernel runs on one thread; the trainer parallelises by splitting the batch into fixed
//! shards (one kernel each) and summing their gradients in shard order, so results do not depend
//! on the number of threads and there is one fork-join per step instead of one per op.
//!
//! Backward, with `s = sigmoid(z)` and `silu'(z) = s (1 + z (1 - s))`:
//! `dW_out = h_L^T dout`, `dh_L = dout W_out^T`; per layer (L..1) `dz_l = dh_l * silu'(z_l)`,
//! `dW_l = h_{l-1}^T dz_l`, `db_l = sum_n dz_l`, `dtemb += dz_l`, `dh_{l-1} = dz_l W_l^T`;
//! then the time MLP the same way from `dtemb`.

use super::cpu::exp::sigmoid;
use super::cpu::gemm::matmul;
use super::mlp::{LinearSlot, MlpConfig, MlpParams};

/// `z = x W + b (+ add)` then, if `activate`, `s = sigmoid(z)` and `h = z s` (one pass).
#[allow(clippy::too_many_arguments)]
fn linear_forward(
    params: &[f32],
    slot: &LinearSlot,
    x: &[f32],
    n: usize,
    add: Option<&[f32]>,
    z: &mut [f32],
    act: Option<(&mut [f32], &mut [f32])>,
) {
    let (w, b) = (&params[slot.weight_range()], &params[slot.bias_range()]);
    let d = slot.d_out;
    matmul(z, x, false, w, false, n, slot.d_in, d, false);
    for (r, row) in z[..n * d].chunks_mut(d).enumerate() {
        for (v, bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
        if let Some(add) = add {
            for (v, a) in row.iter_mut().zip(&add[r * d..(r + 1) * d]) {
                *v += a;
            }
        }
    }
    if let Some((s, h)) = act {
        for ((zv, sv), hv) in z[..n * d].iter().zip(s.iter_mut()).zip(h.iter_mut()) {
            *sv = sigmoid(*zv);
            *hv = zv * *sv;
        }
    }
}

/// In place `dz = dh * silu'(z)` with `silu'(z) = s (1 + z (1 - s))`.
fn silu_backward(dh: &mut [f32], z: &[f32], s: &[f32]) {
    for ((g, zv), sv) in dh.iter_mut().zip(z).zip(s) {
        *g *= sv * (1.0 + zv * (1.0 - sv));
    }
}

/// `dW = x^T dz`, `db = sum_n dz` into the gradient vector.
fn linear_param_grads(grad: &mut [f32], slot: &LinearSlot, x: &[f32], dz: &[f32], n: usize) {
    let d = slot.d_out;
    matmul(
        &mut grad[slot.weight_range()],
        x,
        true,
        dz,
        false,
        slot.d_in,
        n,
        d,
        false,
    );
    let db = &mut grad[slot.bias_range()];
    db.iter_mut().for_each(|v| *v = 0.0);
    for row in dz[..n * d].chunks(d) {
        for (g, v) in db.iter_mut().zip(row) {
            *g += v;
        }
    }
}

/// Reusable buffers for one batch size: forward activations and backward scratch.
#[derive(Debug, Clone, Default)]
pub struct MlpKernel {
    n: usize,
    emb: Vec<f32>,
    x: Vec<f32>,
    t_z: Vec<f32>,
    t_s: Vec<f32>,
    t_h: Vec<f32>,
    temb: Vec<f32>,
    z: Vec<Vec<f32>>,
    s: Vec<Vec<f32>>,
    h: Vec<Vec<f32>>,
    out: Vec<f32>,
    dh: Vec<f32>,
    dh_prev: Vec<f32>,
    dtemb: Vec<f32>,
}

impl MlpKernel {
    /// An empty workspace; buffers grow on the first call.
    pub fn new() -> Self {
        Self::default()
    }

    fn resize(&mut self, cfg: &MlpConfig, n: usize) {
        let (h, l, d) = (cfg.hidden, cfg.depth, cfg.data_dim);
        self.n = n;
        for v in [
            &mut self.t_z,
            &mut self.t_s,
            &mut self.t_h,
            &mut self.temb,
            &mut self.dh,
            &mut self.dh_prev,
            &mut self.dtemb,
        ] {
            v.resize(n * h, 0.0);
        }
        self.out.resize(n * d, 0.0);
        self.x.resize(n * d, 0.0);
        self.emb.resize(n * cfg.time_embed_dim, 0.0);
        for v in [&mut self.z, &mut self.s, &mut self.h] {
            v.resize(l, Vec::new());
            v.iter_mut().for_each(|b| b.resize(n * h, 0.0));
        }
    }

    /// Forward pass for `x` (`[N, D]`) with time embeddings `emb` (`[N, E]`); returns `[N, D]`
    /// and keeps what [`Self::backward`] needs.
    pub fn forward(&mut self, params: &MlpParams, x: &[f32], emb: &[f32]) -> &[f32] {
        let cfg = &params.config;
        let n = x.len() / cfg.data_dim;
        assert_eq!(x.len(), n * cfg.data_dim, "x is not [N, D]");
        assert_eq!(emb.len(), n * cfg.time_embed_dim, "emb is not [N, E]");
        self.resize(cfg, n);
        self.x.copy_from_slice(x);
        self.emb.copy_from_slice(emb);
        let p = &params.values;
        let slots = &params.slots;
        linear_forward(
            p,
            &slots[0],
            &self.emb,
            n,
            None,
            &mut self.t_z,
            Some((&mut self.t_s, &mut self.t_h)),
        );
        linear_forward(p, &slots[1], &self.t_h, n, None, &mut self.temb, None);
        for l in 0..cfg.depth {
            let (done, rest) = self.h.split_at_mut(l);
            let input: &[f32] = if l == 0 { &self.x } else { &done[l - 1] };
            linear_forward(
                p,
                &slots[2 + l],
                input,
                n,
                Some(&self.temb),
                &mut self.z[l],
                Some((&mut self.s[l], &mut rest[0])),
            );
        }
        let last = &self.h[cfg.depth - 1];
        linear_forward(p, &slots[2 + cfg.depth], last, n, None, &mut self.out, None);
        &self.out
    }

    /// Backward pass of the last forward: writes dLoss/dparams into `grad` (same layout as
    /// `params.values`) given `d_out = dLoss/dout` (`[N, D]`).
    pub fn backward(&mut self, params: &MlpParams, d_out: &[f32], grad: &mut [f32]) {
        let cfg = &params.config;
        let (n, hdim, depth) = (self.n, cfg.hidden, cfg.depth);
        assert_eq!(d_out.len(), n * cfg.data_dim);
        assert_eq!(grad.len(), params.values.len());
        let p = &params.values;
        let slots = &params.slots;
        let out_slot = &slots[2 + depth];
        linear_param_grads(grad, out_slot, &self.h[depth - 1], d_out, n);
        matmul(
            &mut self.dh,
            d_out,
            false,
            &p[out_slot.weight_range()],
            true,
            n,
            cfg.data_dim,
            hdim,
            false,
        );
        self.dtemb.iter_mut().for_each(|v| *v = 0.0);
        for l in (0..depth).rev() {
            silu_backward(&mut self.dh, &self.z[l], &self.s[l]);
            for (g, v) in self.dtemb.iter_mut().zip(&self.dh) {
                *g += v;
            }
            let slot = &slots[2 + l];
            let input: &[f32] = if l == 0 { &self.x } else { &self.h[l - 1] };
            linear_param_grads(grad, slot, input, &self.dh, n);
            if l > 0 {
                matmul(
                    &mut self.dh_prev,
                    &self.dh,
                    false,
                    &p[slot.weight_range()],
                    true,
                    n,
                    hdim,
                    hdim,
                    false,
                );
                std::mem::swap(&mut self.dh, &mut self.dh_prev);
            }
        }
        // Time MLP: temb = W_t2 silu(z_t) + b_t2, z_t = W_t1 e + b_t1.
        linear_param_grads(grad, &slots[1], &self.t_h, &self.dtemb, n);
        matmul(
            &mut self.dh,
            &self.dtemb,
            false,
            &p[slots[1].weight_range()],
            true,
            n,
            hdim,
            hdim,
            false,
        );
        silu_backward(&mut self.dh, &self.t_z, &self.t_s);
        linear_param_grads(grad, &slots[0], &self.emb, &self.dh, n);
    }
}

/// Rows per shard of [`infer`]: enough work per task to amortise the fork-join.
const INFER_ROWS: usize = 256;

/// Inference forward of the MLP on the CPU (no autodiff): `x` `[N, D]` float32 and one timestep
/// value per row; returns `[N, D]`. What sampling calls at every step: the time MLP runs once
/// per distinct timestep (a sampler asks about one t per step, not one per sample), the layers
/// in row shards of [`INFER_ROWS`] in parallel, each product straight to `gemm`. Rows are
/// independent, so the result does not depend on the thread count.
pub fn infer(params: &MlpParams, x: &[f32], t: &[f64]) -> Vec<f32> {
    use rayon::prelude::*;
    let cfg = &params.config;
    let (d, h, e) = (cfg.data_dim, cfg.hidden, cfg.time_embed_dim);
    let n = t.len();
    assert_eq!(x.len(), n * d, "x is not [N, D] for N timesteps");
    // Distinct timesteps (by bit pattern) and each row's index among them.
    let mut distinct: Vec<f64> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let row_t: Vec<usize> = t
        .iter()
        .map(|&v| {
            *index.entry(v.to_bits()).or_insert_with(|| {
                distinct.push(v);
                distinct.len() - 1
            })
        })
        .collect();
    let u = distinct.len();
    let emb: Vec<f32> = super::embedding::sinusoidal_embedding(&distinct, e)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let (p, slots) = (&params.values, &params.slots);
    let (mut t_z, mut t_s, mut t_h) = (vec![0.0; u * h], vec![0.0; u * h], vec![0.0; u * h]);
    linear_forward(
        p,
        &slots[0],
        &emb,
        u,
        None,
        &mut t_z,
        Some((&mut t_s, &mut t_h)),
    );
    let mut temb = vec![0.0; u * h];
    linear_forward(p, &slots[1], &t_h, u, None, &mut temb, None);

    let mut out = vec![0f32; n * d];
    out.par_chunks_mut(INFER_ROWS * d)
        .zip(x.par_chunks(INFER_ROWS * d))
        .zip(row_t.par_chunks(INFER_ROWS))
        .for_each(|((out, x), row_t)| {
            let rows = row_t.len();
            let add: Vec<f32> = row_t
                .iter()
                .flat_map(|&k| temb[k * h..(k + 1) * h].iter().copied())
                .collect();
            let (mut z, mut s) = (vec![0.0; rows * h], vec![0.0; rows * h]);
            let (mut hid, mut next) = (vec![0.0; rows * h], vec![0.0; rows * h]);
            for l in 0..cfg.depth {
                let input: &[f32] = if l == 0 { x } else { &hid };
                linear_forward(
                    p,
                    &slots[2 + l],
                    input,
                    rows,
                    Some(&add),
                    &mut z,
                    Some((&mut s, &mut next)),
                );
                std::mem::swap(&mut hid, &mut next);
            }
            linear_forward(p, &slots[2 + cfg.depth], &hid, rows, None, out, None);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::embedding::sinusoidal_embedding;
    use crate::nn::mlp::MlpConfig;
    use crate::tensor::{from_rows, to_vec};
    use burn::nn::Linear;
    use burn::tensor::{DType, Tensor};

    fn small() -> (MlpParams, Vec<f32>, Vec<f64>) {
        let cfg = MlpConfig {
            data_dim: 3,
            hidden: 16,
            depth: 3,
            time_embed_dim: 8,
        };
        let params = MlpParams::init(&cfg, 5).unwrap();
        let x: Vec<f32> = (0..5 * 3).map(|i| ((i as f32) * 0.37).sin()).collect();
        let t = vec![0.0, 3.0, 250.0, 999.0, 17.5];
        (params, x, t)
    }

    #[test]
    fn matmul_transposes_match_naive_products() {
        // Integer-valued inputs: every product and sum is exact in float32, so equality is exact.
        let (m, k, n) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let naive = |i: usize, j: usize| (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>();
        let mut c = vec![0f32; m * n];
        matmul(&mut c, &a, false, &b, false, m, k, n, false);
        let at: Vec<f32> = (0..k * m).map(|q| a[(q % m) * k + q / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|q| b[(q % k) * n + q / k]).collect();
        let mut c2 = vec![1f32; m * n];
        matmul(&mut c2, &at, true, &bt, true, m, k, n, false);
        for i in 0..m {
            for j in 0..n {
                assert_eq!(c[i * n + j], naive(i, j));
                assert_eq!(c2[i * n + j], naive(i, j));
            }
        }
    }

    #[test]
    fn forward_matches_the_burn_module() {
        // Same float32 weights, same ops in a different order: agreement to 1e-5 relative.
        let (params, x, t) = small();
        let device = crate::device::cpu();
        let emb: Vec<f32> = sinusoidal_embedding(&t, 8)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut k = MlpKernel::new();
        let ours = k.forward(&params, &x, &emb).to_vec();
        let module = params.to_module(&device);
        let xt = from_rows(
            x.iter().map(|&v| v as f64).collect(),
            5,
            3,
            &device,
            DType::F32,
        );
        let theirs = to_vec(&module.forward_t(xt, &t));
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn gradients_match_burn_autodiff() {
        // Loss = sum(out * c) for fixed c, so dLoss/dout = c. burn's autodiff differentiates the
        // same network independently; float32 sums in different orders agree to ~1e-5 relative.
        let (params, x, t) = small();
        let device = crate::device::cpu().autodiff();
        let emb: Vec<f32> = sinusoidal_embedding(&t, 8)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let c: Vec<f32> = (0..15).map(|i| ((i as f32) * 0.71).cos()).collect();
        let mut k = MlpKernel::new();
        k.forward(&params, &x, &emb);
        let mut grad = vec![0f32; params.len()];
        k.backward(&params, &c, &mut grad);

        let module = params.to_module(&device);
        let xt = from_rows(
            x.iter().map(|&v| v as f64).collect(),
            5,
            3,
            &device,
            DType::F32,
        );
        let ct = from_rows(
            c.iter().map(|&v| v as f64).collect(),
            5,
            3,
            &device,
            DType::F32,
        );
        let loss: Tensor<1> = (module.forward_t(xt, &t) * ct).sum();
        let grads = loss.backward();
        let linears: Vec<&Linear> = [&module.time_linear_1, &module.time_linear_2]
            .into_iter()
            .chain(module.layers.iter())
            .chain([&module.output])
            .collect();
        let mut max_rel = 0f64;
        for (slot, lin) in params.slots.iter().zip(linears) {
            let gw = to_vec(&lin.weight.grad(&grads).unwrap());
            let gb: Vec<f64> = lin
                .bias
                .as_ref()
                .unwrap()
                .grad(&grads)
                .unwrap()
                .to_data()
                .iter::<f32>()
                .map(|v| v as f64)
                .collect();
            for (ours, theirs) in grad[slot.weight_range()]
                .iter()
                .zip(&gw)
                .chain(grad[slot.bias_range()].iter().zip(&gb))
            {
                let rel = (*ours as f64 - theirs).abs() / (1e-3 + theirs.abs());
                max_rel = max_rel.max(rel);
            }
        }
        assert!(max_rel < 1e-4, "max relative gradient difference {max_rel}");
    }

    #[test]
    fn inference_matches_the_burn_module_with_shared_and_distinct_timesteps() {
        // 600 rows (three shards, the last partial) of the default-width MLP, once with one
        // timestep for all rows (what samplers pass) and once with a timestep per row. Same
        // float32 weights, sums in another order: agreement to 1e-5 relative.
        let cfg = MlpConfig::new(2);
        let params = MlpParams::init(&cfg, 4).unwrap();
        let n = 600;
        let x: Vec<f32> = (0..n * 2)
            .map(|i| ((i as f32) * 0.37).sin() * 2.0)
            .collect();
        let device = crate::device::cpu();
        let module = params.to_module(&device);
        for t in [vec![417.0; n], (0..n).map(|i| (i % 1000) as f64).collect()] {
            let ours = infer(&params, &x, &t);
            let xt = from_rows(
                x.iter().map(|&v| v as f64).collect(),
                n,
                2,
                &device,
                DType::F32,
            );
            let theirs = to_vec(&module.forward_t(xt, &t));
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
