//! Hand-written float32 CPU kernels behind burn's backend-extension mechanism: the matrix
//! product they share, and the 2-D convolution (forward and backward) that the UNet and the
//! VAE route through on the flex backend (`op`), tested against burn's own ops. On any other
//! backend (CUDA, wgpu) the networks keep burn's kernels.

pub mod conv2d;
pub mod gemm;
pub mod op;

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
