//! Hand-written float32 CPU kernels behind burn's backend-extension mechanism: the matrix
//! product they share, and the 2-D convolution and GroupNorm (+ SiLU), forward and backward,
//! that the UNet and the VAE route through on the flex backend (`conv_op`, `norm_op`), tested
//! against burn's own ops and float64 definitions. On any other backend (CUDA, wgpu), or with
//! [`set_enabled`] off, the networks run burn's own ops.

pub mod conv2d;
pub mod conv_op;
pub mod exp;
pub mod gemm;
pub mod group_norm;
pub mod norm_op;

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor, TensorData};
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the hand-written kernels on or off for the whole process (on by default); off, every
/// network runs on burn's own ops. For benchmarks that put both side by side
/// (`diffuse bench train-unet --burn-kernels`) and for tests against burn's reference ops.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the hand-written kernels are on ([`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether `x` can go through the kernels: they are on, and `x` is float32 on the flex device
/// (with or without autodiff).
pub fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    enabled() && x.dtype() == DType::F32 && crate::device::is_cpu(&x.device())
}

/// A flex tensor in row-major order (a copy only if it is not already contiguous).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

/// The values of a contiguous float32 flex tensor.
fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the CPU kernels take contiguous float32 tensors")
}

fn flex(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

/// What the kernels' tests against burn's ops share.
#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::Tensor;

    /// A tensor's values, row-major, as float64.
    pub fn flat<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
    }

    /// `|ours - burn| <= tol (1 + |burn|)` elementwise.
    pub fn assert_close(ours: &[f64], theirs: &[f64], tol: f64, what: &str) {
        assert_eq!(ours.len(), theirs.len(), "{what}");
        for (a, b) in ours.iter().zip(theirs) {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}: {a} vs burn {b}"
            );
        }
    }
}
