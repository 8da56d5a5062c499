//! fp32 matrix multiplication through the `gemm` crate (AVX-512/AVX2/FMA chosen at run time).

/// `c[m×n] = alpha * a[m×k] · b[k×n] + beta * c`, all row-major and contiguous.
///
/// `threads` > 1 splits the work over the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    beta: f32,
    threads: usize,
) {
    sgemm_strided(
        m, n, k, a, k as isize, 1, b, n as isize, 1, c, beta, threads,
    )
}

/// Like [`sgemm`] with explicit row/column strides for `a` and `b` (so transposed
/// operands need no copy). `c` is row-major `m×n`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: isize,
    a_cs: isize,
    b: &[f32],
    b_rs: isize,
    b_cs: isize,
    c: &mut [f32],
    beta: f32,
    threads: usize,
) {
    assert!(c.len() >= m * n, "sgemm: output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|x| *x *= beta);
        return;
    }
    let span = |rows: usize, rs: isize, cols: usize, cs: isize| {
        (rows as isize - 1) * rs + (cols as isize - 1) * cs + 1
    };
    assert!(
        a.len() as isize >= span(m, a_rs, k, a_cs),
        "sgemm: a too small"
    );
    assert!(
        b.len() as isize >= span(k, b_rs, n, b_cs),
        "sgemm: b too small"
    );
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let read_dst = beta != 0.0;
    // Safety: the asserts above bound every element the strides can reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 1.0).collect();
        let mut c = vec![1.0; m * n];
        sgemm(m, n, k, &a, &b, &mut c, 1.0, 1);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
