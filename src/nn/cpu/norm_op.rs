//! GroupNorm (+ SiLU) of [`super::group_norm`] as a burn backend extension for the flex backend
//! and autodiff over it, as [`super::conv_op`] does for the convolution. [`group_norm`] is what
//! the networks call; elsewhere it is burn's `GroupNorm::forward` (then SiLU).

use super::group_norm::{self, NormGeometry};
use super::{contiguous, flex, slice};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::Tensor;

#[backend_extension(Flex, Autodiff)]
pub trait CpuGroupNorm: Backend {
    /// GroupNorm of `x` `[N, C, ...]` with per-channel `gamma`, `beta`, then SiLU if `silu`.
    fn cpu_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self>;
}

fn geometry(x: &FlexTensor, groups: usize, eps: f64, silu: bool) -> NormGeometry {
    let shape = x.shape();
    NormGeometry {
        batch: shape[0],
        channels: shape[1],
        pixels: shape.iter().skip(2).product(),
        groups,
        eps,
        silu,
    }
}

/// The forward kernel on flex tensors: the output and the group statistics.
fn run(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    g: &NormGeometry,
) -> (FlexTensor, Vec<(f32, f32)>) {
    let (y, stats) = group_norm::forward(g, slice(x), slice(gamma), slice(beta));
    (flex(y, x.shape().as_slice()), stats)
}

impl CpuGroupNorm for Flex {
    fn cpu_group_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FlexTensor {
        let (x, gamma, beta) = (contiguous(&x), contiguous(&gamma), contiguous(&beta));
        run(&x, &gamma, &beta, &geometry(&x, groups, eps, silu)).0
    }
}

#[derive(Debug)]
struct CpuGroupNormBackward;

/// Saved for the backward pass: x, gamma, beta, the group statistics and the geometry.
type NormState = (
    FlexTensor,
    FlexTensor,
    FlexTensor,
    Vec<(f32, f32)>,
    NormGeometry,
);

impl Backward<Flex, 3> for CpuGroupNormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let (x, gamma, beta, stats, g) = ops.state;
        let (dx, dgamma, dbeta) = group_norm::backward(
            &g,
            slice(&x),
            slice(&gamma),
            slice(&beta),
            &stats,
            slice(&dy),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(dx, x.shape().as_slice()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex(dgamma, &[g.channels]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex(dbeta, &[g.channels]));
        }
    }
}

impl<C: CheckpointStrategy> CpuGroupNorm for Autodiff<Flex, C> {
    fn cpu_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        let prep = CpuGroupNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (xp, gp, bp) = (
            contiguous(x.primitive()),
            contiguous(gamma.primitive()),
            contiguous(beta.primitive()),
        );
        let g = geometry(&xp, groups, eps, silu);
        let (y, stats) = run(&xp, &gp, &bp, &g);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, bp, stats, g), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `norm.forward(x)`, then SiLU if `then_silu`: through the CPU kernel where it applies (float32
/// on flex, an affine norm whose groups divide the channels), else burn's ops.
pub fn group_norm<const D: usize>(norm: &GroupNorm, x: Tensor<D>, then_silu: bool) -> Tensor<D> {
    let dims = x.dims();
    let params = norm.gamma.as_ref().zip(norm.beta.as_ref());
    let fits = D >= 3
        && norm.num_groups > 0
        && dims[1] == norm.num_channels
        && norm.num_channels.is_multiple_of(norm.num_groups);
    match params {
        Some((gamma, beta)) if fits && super::applies(&x) && super::applies(&gamma.val()) => {
            let y = <Dispatch as CpuGroupNorm>::cpu_group_norm(
                x.into_dispatch(),
                gamma.val().into_dispatch(),
                beta.val().into_dispatch(),
                norm.num_groups,
                norm.epsilon,
                then_silu,
            );
            Tensor::from_dispatch(y)
        }
        _ => {
            let y = norm.forward(x);
            if then_silu {
                silu(y)
            } else {
                y
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::cpu::test_util::{assert_close, flat};
    use burn::module::Param;
    use burn::nn::GroupNormConfig;
    use burn::tensor::{Device, TensorData};

    fn wave(len: usize, f: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * f).sin() * 1.5 + 0.2).collect()
    }

    /// A GroupNorm(groups, channels) with seeded affine parameters, and an input [3, C, 5, 4].
    fn case(device: &Device, groups: usize, channels: usize) -> (GroupNorm, Tensor<4>) {
        let mut norm = GroupNormConfig::new(groups, channels).init(device);
        let param = |f| {
            Param::from_tensor(Tensor::from_data(
                TensorData::new(wave(channels, f), [channels]),
                device,
            ))
        };
        norm.gamma = Some(param(0.9));
        norm.beta = Some(param(2.1));
        let x = Tensor::from_data(
            TensorData::new(wave(3 * channels * 20, 0.37), [3, channels, 5, 4]),
            device,
        );
        (norm, x)
    }

    #[test]
    fn forward_and_gradients_match_burn_group_norm_and_silu() {
        // Against burn's GroupNorm (+ silu) on the same module: forward to 1e-5, gradients of
        // L = sum(y * c) with respect to x, gamma and beta to 1e-4 (float32 sums in another
        // order; burn normalises in float32, the kernel accumulates moments in float64).
        let device = crate::device::cpu().autodiff();
        for (groups, channels, then_silu) in [(2, 6, true), (4, 8, false), (1, 3, true)] {
            let (norm, x) = case(&device, groups, channels);
            assert!(super::super::applies(&x));
            let run = |use_kernel: bool| {
                let x = x.clone().require_grad();
                let y = match (use_kernel, then_silu) {
                    (true, _) => group_norm(&norm, x.clone(), then_silu),
                    (false, true) => silu(norm.forward(x.clone())),
                    (false, false) => norm.forward(x.clone()),
                };
                let c = y.clone().detach().cos();
                let grads = (y.clone() * c).sum().backward();
                (
                    flat(y),
                    flat(x.grad(&grads).unwrap()),
                    flat(norm.gamma.as_ref().unwrap().grad(&grads).unwrap()),
                    flat(norm.beta.as_ref().unwrap().grad(&grads).unwrap()),
                )
            };
            let (ours, theirs) = (run(true), run(false));
            assert_close(&ours.0, &theirs.0, 1e-5, "y");
            assert_close(&ours.1, &theirs.1, 1e-4, "dx");
            assert_close(&ours.2, &theirs.2, 1e-4, "dgamma");
            assert_close(&ours.3, &theirs.3, 1e-4, "dbeta");
        }
    }
}
