//! Small helpers at the edge between float64 host math and burn tensors.
//!
//! Sample batches are flat `[N, D]` tensors: a network that needs an image shape reshapes
//! internally. Per-sample coefficients (a batch may mix timesteps) become `[N, 1]` columns that
//! broadcast over `D`.

use burn::tensor::{DType, Device, Tensor, TensorData};

/// A `[n, d]` tensor from row-major float64 values, stored with `dtype` on `device`.
pub fn from_rows(values: Vec<f64>, n: usize, d: usize, device: &Device, dtype: DType) -> Tensor<2> {
    assert_eq!(
        values.len(),
        n * d,
        "from_rows: {} values for [{n}, {d}]",
        values.len()
    );
    Tensor::from_data(TensorData::new(values, [n, d]), (device, dtype))
}

/// A tensor shaped like `like` (same dtype and device) from row-major float64 values.
pub fn from_rows_like(values: Vec<f64>, like: &Tensor<2>) -> Tensor<2> {
    let [n, d] = like.dims();
    from_rows(values, n, d, &like.device(), like.dtype())
}

/// A `[n, 1]` column of per-sample coefficients, matching `like`'s dtype and device.
pub fn column(values: &[f64], like: &Tensor<2>) -> Tensor<2> {
    let n = values.len();
    from_rows(values.to_vec(), n, 1, &like.device(), like.dtype())
}

/// The tensor's values as row-major float64 (whatever its dtype).
pub fn to_vec(x: &Tensor<2>) -> Vec<f64> {
    x.to_data()
        .try_into_vec_as::<f64>()
        .expect("float tensor converts to f64")
}

/// `a * x + b * y` with per-sample (`[N]`) or shared (`[1]`) coefficients.
pub fn lincomb(a: &[f64], x: &Tensor<2>, b: &[f64], y: &Tensor<2>) -> Tensor<2> {
    scale(a, x.clone()) + scale(b, y.clone())
}

/// `c * x` with one coefficient per sample (`c.len() == N`) or one for all (`c.len() == 1`).
pub fn scale(c: &[f64], x: Tensor<2>) -> Tensor<2> {
    if c.len() == 1 {
        x.mul_scalar(c[0])
    } else {
        let col = column(c, &x);
        x * col
    }
}
