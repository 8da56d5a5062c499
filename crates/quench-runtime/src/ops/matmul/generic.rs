//! Naive products for the non-fp32 types ONNX allows in MatMul and Gemm
//! (double and 32/64-bit integers). Correctness over speed: models that
//! matter run in fp32.

use quench_ir::Elem;

/// Element arithmetic for the generic path; integers wrap like numpy.
pub(super) trait LinElem: Elem {
    fn zero() -> Self;
    fn mul_add(acc: Self, a: Self, b: Self) -> Self;
    fn add(self, o: Self) -> Self;
    /// `self * s`, through f64 for integers (Gemm's alpha/beta are floats).
    fn scale(self, s: f32) -> Self;
}

impl LinElem for f64 {
    fn zero() -> Self {
        0.0
    }
    fn mul_add(acc: Self, a: Self, b: Self) -> Self {
        acc + a * b
    }
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn scale(self, s: f32) -> Self {
        self * s as f64
    }
}

macro_rules! impl_int {
    ($($t:ty),*) => {$(
        impl LinElem for $t {
            fn zero() -> Self {
                0
            }
            fn mul_add(acc: Self, a: Self, b: Self) -> Self {
                acc.wrapping_add(a.wrapping_mul(b))
            }
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn scale(self, s: f32) -> Self {
                if s == 1.0 { self } else { (self as f64 * s as f64) as $t }
            }
        }
    )*};
}
impl_int!(i32, i64, u32, u64);

/// `c[m×n] = a · b` where element (i, p) of `a` is at `i*a_rs + p*a_cs`
/// and (p, j) of `b` at `p*b_rs + j*b_cs`. Callers have checked the bounds.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_naive<T: LinElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_rs: usize,
    a_cs: usize,
    b: &[T],
    b_rs: usize,
    b_cs: usize,
    c: &mut [T],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::zero();
            for p in 0..k {
                acc = T::mul_add(acc, a[i * a_rs + p * a_cs], b[p * b_rs + j * b_cs]);
            }
            c[i * n + j] = acc;
        }
    }
}
