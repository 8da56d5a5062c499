//! A 16-lane f32 vector, so that each NCHWc kernel is written once and
//! compiled both with AVX-512 intrinsics and as portable Rust.

use crate::conv::Act;

/// Lanes per vector: the channel block of the NCHWc layout.
pub const LANES: usize = 16;

/// The operations the NCHWc kernels need. Every method is `unsafe`: pointers
/// must reach `LANES` valid floats, and the AVX-512 implementation must only
/// run where the CPU has it.
pub(crate) trait V16: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(p: *const f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `a * b + self`.
    unsafe fn fma(self, a: Self, b: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    /// The activation, with the scalar `Act::apply` semantics (NaN kept).
    unsafe fn act(self, act: Act) -> Self;
    /// Hints that the cache line at `p` will be read soon (into L2).
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}
}

/// Portable fallback (and the scalar reference of the kernels).
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; LANES]);

impl V16 for Portable {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        Portable([unsafe { *p }; LANES])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(unsafe { *(p as *const [f32; LANES]) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { *(p as *mut [f32; LANES]) = self.0 }
    }
    #[inline(always)]
    unsafe fn fma(self, a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], self.0[l])))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] + b.0[l]))
    }
    #[inline(always)]
    unsafe fn act(self, act: Act) -> Self {
        Portable(self.0.map(|v| act.apply(v)))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Act, V16};
    use std::arch::x86_64::*;

    /// One zmm register. Only constructed inside `avx512f` functions.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl V16 for Avx512 {
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p as *const i8) }
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(*p) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn fma(self, a: Self, b: Self) -> Self {
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx512(unsafe { _mm512_add_ps(self.0, b.0) })
        }
        #[inline(always)]
        unsafe fn act(self, act: Act) -> Self {
            // max/min return their second operand when either is NaN, so
            // `max(lo, v)` keeps a NaN `v` as the scalar code does.
            unsafe {
                match act {
                    Act::None => self,
                    Act::Relu => Avx512(_mm512_max_ps(_mm512_setzero_ps(), self.0)),
                    Act::Clip(lo, hi) => {
                        let v = _mm512_max_ps(_mm512_set1_ps(lo), self.0);
                        Avx512(_mm512_min_ps(_mm512_set1_ps(hi), v))
                    }
                    Act::LeakyRelu(a) => {
                        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, _mm512_setzero_ps());
                        Avx512(_mm512_mask_mul_ps(self.0, neg, self.0, _mm512_set1_ps(a)))
                    }
                }
            }
        }
    }
}
