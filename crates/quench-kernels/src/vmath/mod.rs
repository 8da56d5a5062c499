//! Vectorised f32 transcendental maths on slices: exp, erf, Gelu, sigmoid and
//! softmax rows. libm's `expf`/`erff` are opaque calls per element; these are
//! polynomial kernels run 16 (AVX-512) or 8 (AVX2+FMA) lanes at a time, with a
//! scalar instance of the same algorithm as the portable path and reference.

mod funcs;
mod simd;
#[cfg(test)]
mod tests;

use funcs::{Erf, Exp, Gelu, Sigmoid, Unary};
use std::sync::OnceLock;

/// The instruction sets the kernels come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Scalar,
}

impl Level {
    /// The best level this CPU supports (decided once).
    pub fn detect() -> Level {
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(|| Level::available()[0])
    }

    /// Every level this CPU supports, best first (`Scalar` always last).
    pub fn available() -> Vec<Level> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                v.push(Level::Avx512);
            }
            if has!("avx2") && has!("fma") {
                v.push(Level::Avx2);
            }
        }
        v.push(Level::Scalar);
        v
    }
}

/// Runs `F` over `x` into `y` at `level` (falls back to scalar when the level
/// is not an x86 one this build knows).
fn map_at<F: Unary>(level: Level, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use simd::{F32x8, F32x16};
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<F: Unary>(x: &[f32], y: &mut [f32]) {
            // Safety: AVX-512F is present (checked by the caller).
            unsafe { funcs::map::<F32x16, F>(x, y) }
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<F: Unary>(x: &[f32], y: &mut [f32]) {
            // Safety: AVX2 and FMA are present (checked by the caller).
            unsafe { funcs::map::<F32x8, F>(x, y) }
        }
        let ok = Level::available().contains(&level);
        match level {
            // Safety: `ok` says the CPU has the level's features.
            Level::Avx512 if ok => return unsafe { avx512::<F>(x, y) },
            Level::Avx2 if ok => return unsafe { avx2::<F>(x, y) },
            _ => {}
        }
    }
    let _ = level;
    // Safety: the scalar instance needs no CPU feature.
    unsafe { funcs::map::<f32, F>(x, y) }
}

/// `y[i] = e^{x[i]}` (over the shorter of the two slices).
pub fn exp(x: &[f32], y: &mut [f32]) {
    map_at::<Exp>(Level::detect(), x, y)
}

/// `y[i] = erf(x[i])`, within ~2 ulp.
pub fn erf(x: &[f32], y: &mut [f32]) {
    map_at::<Erf>(Level::detect(), x, y)
}

/// `y[i] = x/2 · (1 + erf(x/√2))` (exact, not the tanh approximation).
pub fn gelu(x: &[f32], y: &mut [f32]) {
    map_at::<Gelu>(Level::detect(), x, y)
}

/// `y[i] = 1 / (1 + e^{-x[i]})`.
pub fn sigmoid(x: &[f32], y: &mut [f32]) {
    map_at::<Sigmoid>(Level::detect(), x, y)
}

/// The element-wise kernels at an explicit level, for tests and benchmarks.
pub fn unary_at(level: Level, func: UnaryFn, x: &[f32], y: &mut [f32]) {
    match func {
        UnaryFn::Exp => map_at::<Exp>(level, x, y),
        UnaryFn::Erf => map_at::<Erf>(level, x, y),
        UnaryFn::Gelu => map_at::<Gelu>(level, x, y),
        UnaryFn::Sigmoid => map_at::<Sigmoid>(level, x, y),
    }
}

/// The element-wise functions of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryFn {
    Exp,
    Erf,
    Gelu,
    Sigmoid,
}

/// Softmax (`log`: LogSoftmax) of one contiguous row of `x` into `y`.
pub fn softmax_row(x: &[f32], y: &mut [f32], log: bool) {
    softmax_row_at(Level::detect(), x, y, log)
}

/// [`softmax_row`] at an explicit level.
pub fn softmax_row_at(level: Level, x: &[f32], y: &mut [f32], log: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use simd::{F32x8, F32x16};
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(x: &[f32], y: &mut [f32], log: bool) {
            // Safety: AVX-512F is present (checked by the caller).
            unsafe { funcs::softmax_row::<F32x16>(x, y, log) }
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(x: &[f32], y: &mut [f32], log: bool) {
            // Safety: AVX2 and FMA are present (checked by the caller).
            unsafe { funcs::softmax_row::<F32x8>(x, y, log) }
        }
        let ok = Level::available().contains(&level);
        match level {
            // Safety: `ok` says the CPU has the level's features.
            Level::Avx512 if ok => return unsafe { avx512(x, y, log) },
            Level::Avx2 if ok => return unsafe { avx2(x, y, log) },
            _ => {}
        }
    }
    let _ = level;
    // Safety: the scalar instance needs no CPU feature.
    unsafe { funcs::softmax_row::<f32>(x, y, log) }
}
