//! Row-major float32 matrix products through `gemm` (the kernel burn's flex backend uses), on
//! the calling thread: the CPU kernels parallelise over independent work (batch shards,
//! images) instead, one fork-join per op.

/// `dst[m, n] = (accumulate ? dst : 0) + op(a)[m, k] op(b)[k, n]`, all row-major; `op` is the
/// transpose when the flag is set (`a` then stored `[k, m]`, `b` stored `[n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    a: &[f32],
    a_transposed: bool,
    b: &[f32],
    b_transposed: bool,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let (a_rs, a_cs) = if a_transposed {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if b_transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the asserts above bound every index gemm forms from these sizes and strides;
    // dst does not alias a or b (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
