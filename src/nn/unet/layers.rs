//! Seeded construction of the burn-nn layers the UNet is made of, with PyTorch's default
//! initialisation (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for convolution and linear weights and
//! biases, `N(0, 1)` for embeddings, ones/zeros for group norms), so a fresh model starts as a
//! fresh diffusers model does, in distribution. The draws come from one ChaCha8 stream of the
//! seed, so the same seed gives the same weights whatever else runs in parallel.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Builds layers with seeded PyTorch-default weights of one dtype on one device.
pub struct Init {
    rng: ChaCha8Rng,
    device: Device,
    dtype: DType,
}

impl Init {
    pub fn new(seed: u64, device: &Device, dtype: DType) -> Self {
        Init {
            rng: ChaCha8Rng::seed_from_u64(seed),
            device: device.clone(),
            dtype,
        }
    }

    fn param<const D: usize>(&self, values: Vec<f64>, shape: [usize; D]) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            (&self.device, self.dtype),
        ))
    }

    fn uniform(&mut self, n: usize, fan_in: usize) -> Vec<f64> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect()
    }

    /// A `kernel x kernel` convolution `c_in -> c_out` with a bias.
    pub fn conv2d(
        &mut self,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: PaddingConfig2d,
    ) -> Conv2d {
        let fan_in = c_in * kernel * kernel;
        let weight = self.uniform(c_out * fan_in, fan_in);
        let bias = self.uniform(c_out, fan_in);
        Conv2d {
            weight: self.param(weight, [c_out, c_in, kernel, kernel]),
            bias: Some(self.param(bias, [c_out])),
            stride: [stride, stride],
            kernel_size: [kernel, kernel],
            dilation: [1, 1],
            groups: 1,
            padding,
        }
    }

    /// A 3x3 convolution with padding 1 (size-preserving at stride 1).
    pub fn conv3x3(&mut self, c_in: usize, c_out: usize) -> Conv2d {
        self.conv2d(c_in, c_out, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1))
    }

    /// A linear layer `d_in -> d_out` with a bias (burn's `[d_in, d_out]` weight layout).
    pub fn linear(&mut self, d_in: usize, d_out: usize) -> Linear {
        let weight = self.uniform(d_in * d_out, d_in);
        let bias = self.uniform(d_out, d_in);
        Linear {
            weight: self.param(weight, [d_in, d_out]),
            bias: Some(self.param(bias, [d_out])),
        }
    }

    /// An affine group norm.
    pub fn group_norm(&mut self, num_groups: usize, channels: usize, epsilon: f64) -> GroupNorm {
        GroupNorm {
            gamma: Some(self.param(vec![1.0; channels], [channels])),
            beta: Some(self.param(vec![0.0; channels], [channels])),
            num_groups,
            num_channels: channels,
            epsilon,
            affine: true,
        }
    }

    /// An `n x d` embedding table.
    pub fn embedding(&mut self, n: usize, d: usize) -> Embedding {
        let values = (0..n * d)
            .map(|_| self.rng.sample::<f64, _>(StandardNormal))
            .collect();
        Embedding {
            weight: self.param(values, [n, d]),
        }
    }
}
