//! The convolution kernels of [`super::conv2d`] as a burn backend extension: an op trait
//! implemented for the flex backend (the forward kernel) and for autodiff over flex (the
//! forward kernel, and a backward step that calls the backward kernel), so a UNet or VAE on
//! the CPU trains through burn autodiff with these kernels. [`conv2d`] is what the networks
//! call: on any other device, dtype or convolution shape it is burn's own `Conv2d::forward`.

use super::conv2d::{self, ConvGeometry};
use super::{contiguous, flex, slice};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Flex, TensorMetadata};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::{DType, Tensor};

#[backend_extension(Flex, Autodiff)]
pub trait CpuConv2d: Backend {
    /// `conv(x, weight) + bias` with equal strides, symmetric padding, no dilation or groups.
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims::<4>()
}

fn geometry(x: &FlexTensor, weight: &FlexTensor, stride: usize, padding: usize) -> ConvGeometry {
    ConvGeometry::new(dims4(x), dims4(weight), stride, padding)
        .expect("cpu_conv2d: shapes checked by conv2d()")
}

impl CpuConv2d for Flex {
    fn cpu_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        padding: usize,
    ) -> FlexTensor {
        let g = geometry(&x, &weight, stride, padding);
        let (x, weight, bias) = (contiguous(&x), contiguous(&weight), contiguous(&bias));
        let y = conv2d::forward(&g, slice(&x), slice(&weight), slice(&bias));
        flex(y, &[g.batch, g.c_out, g.ho, g.wo])
    }
}

/// The backward step: the saved input and weight, and the geometry.
#[derive(Debug)]
struct CpuConv2dBackward;

impl Backward<Flex, 3> for CpuConv2dBackward {
    type State = (FlexTensor, FlexTensor, ConvGeometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = contiguous(&grads.consume::<Flex>(&ops.node));
        let (x, weight, g) = ops.state;
        let (dx, dw, db) =
            conv2d::backward(&g, slice(&x), slice(&weight), slice(&dy), node_x.is_some());
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, flex(dx, &[g.batch, g.c_in, g.h, g.w]));
        }
        if let Some(node) = node_weight {
            grads.register::<Flex>(node.id, flex(dw, &[g.c_out, g.c_in, g.kh, g.kw]));
        }
        if let Some(node) = node_bias {
            grads.register::<Flex>(node.id, flex(db, &[g.c_out]));
        }
    }
}

impl<C: CheckpointStrategy> CpuConv2d for Autodiff<Flex, C> {
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        match CpuConv2dBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (contiguous(x.primitive()), contiguous(weight.primitive()));
                let g = geometry(&x, &weight, stride, padding);
                let y = Flex::cpu_conv2d(
                    x.clone(),
                    weight.clone(),
                    bias.into_primitive(),
                    stride,
                    padding,
                );
                prep.finish((x, weight, g), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::cpu_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                stride,
                padding,
            )),
        }
    }
}

/// The (stride, padding) of `conv` when the CPU kernel computes it: float32 input on the flex
/// device (with or without autodiff), a bias, groups 1, dilation 1, equal strides and equal
/// explicit padding on all sides.
fn cpu_kernel_applies(conv: &Conv2d, x: &Tensor<4>) -> Option<(usize, usize)> {
    if !super::applies(x)
        || conv.weight.val().dtype() != DType::F32
        || conv.bias.is_none()
        || conv.groups != 1
        || conv.dilation != [1, 1]
        || conv.stride[0] != conv.stride[1]
    {
        return None;
    }
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(a, b, c, d) if a == b && b == c && c == d => a,
        PaddingConfig2d::Valid => 0,
        _ => return None,
    };
    ConvGeometry::new(x.dims(), conv.weight.dims(), conv.stride[0], padding)?;
    Some((conv.stride[0], padding))
}

/// `conv.forward(x)`, through the CPU kernel where it applies.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some((stride, padding)) = cpu_kernel_applies(conv, &x) else {
        return conv.forward(x);
    };
    let bias = conv.bias.as_ref().expect("checked").val();
    let y = <Dispatch as CpuConv2d>::cpu_conv2d(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.into_dispatch(),
        stride,
        padding,
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::cpu::test_util::{assert_close, flat};
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, TensorData};

    /// A conv of the given shape with seeded weights, and a seeded input, on `device`.
    fn case(
        device: &Device,
        [n, c, h, w]: [usize; 4],
        o: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> (Conv2d, Tensor<4>) {
        let mut conv = Conv2dConfig::new([c, o], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(device);
        let wave =
            |len: usize, f: f32| -> Vec<f32> { (0..len).map(|i| ((i as f32) * f).sin()).collect() };
        let weight = TensorData::new(wave(o * c * k * k, 0.37), [o, c, k, k]);
        conv.weight = Param::from_tensor(Tensor::from_data(weight, device));
        conv.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(wave(o, 1.3), [o]),
            device,
        )));
        let x = Tensor::from_data(
            TensorData::new(wave(n * c * h * w, 0.11), [n, c, h, w]),
            device,
        );
        (conv, x)
    }

    const SHAPES: [([usize; 4], usize, usize, usize, usize); 3] = [
        ([5, 3, 9, 8], 4, 3, 1, 1),
        ([3, 4, 7, 7], 4, 3, 2, 1),
        ([6, 4, 5, 5], 2, 1, 1, 0),
    ];

    #[test]
    fn the_kernel_applies_on_flex_float32_and_matches_burn_forward() {
        // Same float32 products in another order: 1e-5 relative.
        let device = crate::device::cpu();
        for (x_shape, o, k, s, p) in SHAPES {
            let (conv, x) = case(&device, x_shape, o, k, s, p);
            assert!(cpu_kernel_applies(&conv, &x).is_some());
            let ours = flat(conv2d(&conv, x.clone()));
            let theirs = flat(conv.forward(x));
            assert_close(&ours, &theirs, 1e-5, "forward");
        }
    }

    #[test]
    fn gradients_through_autodiff_match_burn_reference_backward() {
        // L = sum(y * c): dx, dW and db from the custom backward against burn's own conv2d
        // backward of the same module, 1e-4 relative (float32 sums of up to ~500 terms).
        let device = crate::device::cpu().autodiff();
        for (x_shape, o, k, s, p) in SHAPES {
            let (conv, x) = case(&device, x_shape, o, k, s, p);
            assert!(
                cpu_kernel_applies(&conv, &x).is_some(),
                "autodiff over flex"
            );
            let grads_of = |use_kernel: bool| {
                let x = x.clone().require_grad();
                let y = if use_kernel {
                    conv2d(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let c = y.clone().ones_like().mul_scalar(0.5) + y.clone().detach().cos();
                let grads = (y * c).sum().backward();
                let gx = flat(x.grad(&grads).unwrap());
                let gw = flat(conv.weight.grad(&grads).unwrap());
                let gb = flat(conv.bias.as_ref().unwrap().grad(&grads).unwrap());
                (gx, gw, gb)
            };
            let (ours, theirs) = (grads_of(true), grads_of(false));
            assert_close(&ours.0, &theirs.0, 1e-4, "dx");
            assert_close(&ours.1, &theirs.1, 1e-4, "dW");
            assert_close(&ours.2, &theirs.2, 1e-4, "db");
        }
    }

    #[test]
    fn other_convolutions_keep_burn_kernels() {
        let device = crate::device::cpu();
        let (mut conv, x) = case(&device, [2, 2, 6, 6], 2, 3, 1, 1);
        conv.padding = PaddingConfig2d::Explicit(1, 0, 1, 0);
        assert!(cpu_kernel_applies(&conv, &x).is_none());
        conv.padding = PaddingConfig2d::Same;
        assert!(cpu_kernel_applies(&conv, &x).is_none());
        conv.padding = PaddingConfig2d::Valid;
        conv.dilation = [2, 2];
        assert!(cpu_kernel_applies(&conv, &x).is_none());
    }
}
