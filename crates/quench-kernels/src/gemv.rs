//! fp32 matrix-vector product, for the batch-1 recurrences of LSTM/GRU where
//! a GEMM call costs more in packing than the product itself.

/// `y[r] = beta * y[r] + Σ_c a[r*cols + c] * x[c]`, `a` row-major `rows×cols`.
///
/// `beta == 0` overwrites `y` without reading it.
pub fn sgemv(rows: usize, cols: usize, a: &[f32], x: &[f32], y: &mut [f32], beta: f32) {
    assert!(a.len() >= rows * cols, "sgemv: a too small");
    assert!(
        x.len() >= cols && y.len() >= rows,
        "sgemv: x or y too small"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // Safety: the features the function is compiled for were just detected.
        unsafe { sgemv_fma(rows, cols, a, x, y, beta) };
        return;
    }
    sgemv_body::<false>(rows, cols, a, x, y, beta)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sgemv_fma(rows: usize, cols: usize, a: &[f32], x: &[f32], y: &mut [f32], beta: f32) {
    sgemv_body::<true>(rows, cols, a, x, y, beta)
}

#[inline(always)]
fn sgemv_body<const FMA: bool>(
    rows: usize,
    cols: usize,
    a: &[f32],
    x: &[f32],
    y: &mut [f32],
    beta: f32,
) {
    let x = &x[..cols];
    for (r, out) in y[..rows].iter_mut().enumerate() {
        let d = dot::<FMA>(&a[r * cols..(r + 1) * cols], x);
        *out = if beta == 0.0 { d } else { beta * *out + d };
    }
}

/// Dot product with 16 independent accumulators so the compiler can keep
/// two vector registers busy.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ac, ar) = a.split_at(a.len() / L * L);
    let (bc, br) = b.split_at(ac.len());
    for (ca, cb) in ac.chunks_exact(L).zip(bc.chunks_exact(L)) {
        for j in 0..L {
            acc[j] = if FMA {
                ca[j].mul_add(cb[j], acc[j])
            } else {
                acc[j] + ca[j] * cb[j]
            };
        }
    }
    let mut s = 0.0;
    for (p, q) in ar.iter().zip(br) {
        s += p * q;
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0] + s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product() {
        for (rows, cols) in [(1, 1), (3, 5), (7, 16), (9, 37), (64, 128)] {
            let a: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let x: Vec<f32> = (0..cols).map(|i| (i % 5) as f32 * 0.25 - 0.5).collect();
            let mut y = vec![2.0; rows];
            sgemv(rows, cols, &a, &x, &mut y, 0.5);
            for r in 0..rows {
                let want = 1.0 + (0..cols).map(|c| a[r * cols + c] * x[c]).sum::<f32>();
                assert!((y[r] - want).abs() < 1e-3, "{rows}x{cols} row {r}");
            }
        }
    }
}
