//! The few vector operations the math kernels need, behind one trait so each
//! algorithm is written once and instantiated per instruction set. `f32`
//! implements it too: that instance is the scalar path and the reference the
//! SIMD paths are tested against.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A vector of `LANES` f32.
///
/// # Safety
/// The x86 implementations may only be used on CPUs with their features
/// (callers check with `is_x86_feature_detected!` first); pointers must be
/// valid for `LANES` reads/writes.
pub(crate) trait Simd: Copy {
    const LANES: usize;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// `self * b + c` (fused where the ISA has FMA).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    unsafe fn div(self, b: Self) -> Self;
    /// Maximum; NaN in `self` propagates (`b` is a bound).
    unsafe fn max(self, b: Self) -> Self;
    /// Minimum; NaN in `self` propagates (`b` is a bound).
    unsafe fn min(self, b: Self) -> Self;
    /// Round to nearest, ties to even.
    unsafe fn round(self) -> Self;
    /// `2^self` for integral values in [-126, 127].
    unsafe fn pow2(self) -> Self;
    unsafe fn abs(self) -> Self;
    /// `|self|` with the sign of `sign`.
    unsafe fn copysign(self, sign: Self) -> Self;
    /// `t` where `a > b` (false for NaN), else `f`.
    unsafe fn select_gt(a: Self, b: Self, t: Self, f: Self) -> Self;
    /// `t` where `a` is NaN, else `f`.
    unsafe fn select_nan(a: Self, t: Self, f: Self) -> Self;
    unsafe fn reduce_add(self) -> f32;
    unsafe fn reduce_max(self) -> f32;
}

const SIGN: u32 = 0x8000_0000;

impl Simd for f32 {
    const LANES: usize = 1;
    unsafe fn splat(v: f32) -> f32 {
        v
    }
    unsafe fn load(p: *const f32) -> f32 {
        // Safety: the caller guarantees one readable f32.
        unsafe { *p }
    }
    unsafe fn store(self, p: *mut f32) {
        // Safety: the caller guarantees one writable f32.
        unsafe { *p = self }
    }
    unsafe fn add(self, b: f32) -> f32 {
        self + b
    }
    unsafe fn sub(self, b: f32) -> f32 {
        self - b
    }
    unsafe fn mul(self, b: f32) -> f32 {
        self * b
    }
    unsafe fn mul_add(self, b: f32, c: f32) -> f32 {
        // Not `f32::mul_add`: without hardware FMA that is a slow libm call.
        self * b + c
    }
    unsafe fn div(self, b: f32) -> f32 {
        self / b
    }
    unsafe fn max(self, b: f32) -> f32 {
        if self.is_nan() || self > b { self } else { b }
    }
    unsafe fn min(self, b: f32) -> f32 {
        if self.is_nan() || self < b { self } else { b }
    }
    unsafe fn round(self) -> f32 {
        // The 1.5 * 2^23 trick rounds ties to even for |x| < 2^22, which
        // covers every caller (exponents of f32 range).
        const R: f32 = 12_582_912.0;
        (self + R) - R
    }
    unsafe fn pow2(self) -> f32 {
        f32::from_bits(((self as i32 + 127) as u32) << 23)
    }
    unsafe fn abs(self) -> f32 {
        f32::abs(self)
    }
    unsafe fn copysign(self, sign: f32) -> f32 {
        f32::copysign(self, sign)
    }
    unsafe fn select_gt(a: f32, b: f32, t: f32, f: f32) -> f32 {
        if a > b { t } else { f }
    }
    unsafe fn select_nan(a: f32, t: f32, f: f32) -> f32 {
        if a.is_nan() { t } else { f }
    }
    unsafe fn reduce_add(self) -> f32 {
        self
    }
    unsafe fn reduce_max(self) -> f32 {
        self
    }
}

/// 16 lanes of AVX-512F.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m512);

#[cfg(target_arch = "x86_64")]
impl Simd for F32x16 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        unsafe { F32x16(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { F32x16(_mm512_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x16(_mm512_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_div_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // vmaxps returns its second operand when either is NaN.
        unsafe { F32x16(_mm512_max_ps(b.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_min_ps(b.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        unsafe {
            F32x16(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
    }
    #[inline(always)]
    unsafe fn pow2(self) -> Self {
        unsafe {
            let n = _mm512_cvtps_epi32(self.0);
            let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)));
            F32x16(_mm512_castsi512_ps(e))
        }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe {
            let m = _mm512_set1_epi32(!SIGN as i32);
            F32x16(_mm512_castsi512_ps(_mm512_and_si512(
                _mm512_castps_si512(self.0),
                m,
            )))
        }
    }
    #[inline(always)]
    unsafe fn copysign(self, sign: Self) -> Self {
        unsafe {
            let s = _mm512_and_si512(_mm512_castps_si512(sign.0), _mm512_set1_epi32(SIGN as i32));
            let m = _mm512_castps_si512(self.abs().0);
            F32x16(_mm512_castsi512_ps(_mm512_or_si512(m, s)))
        }
    }
    #[inline(always)]
    unsafe fn select_gt(a: Self, b: Self, t: Self, f: Self) -> Self {
        unsafe {
            let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a.0, b.0);
            F32x16(_mm512_mask_blend_ps(k, f.0, t.0))
        }
    }
    #[inline(always)]
    unsafe fn select_nan(a: Self, t: Self, f: Self) -> Self {
        unsafe {
            let k = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a.0, a.0);
            F32x16(_mm512_mask_blend_ps(k, f.0, t.0))
        }
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        unsafe { _mm512_reduce_add_ps(self.0) }
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        unsafe { _mm512_reduce_max_ps(self.0) }
    }
}

/// 8 lanes of AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct F32x8(__m256);

#[cfg(target_arch = "x86_64")]
impl Simd for F32x8 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        unsafe { F32x8(_mm256_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { F32x8(_mm256_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x8(_mm256_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_div_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_max_ps(b.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_min_ps(b.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        unsafe {
            F32x8(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
    }
    #[inline(always)]
    unsafe fn pow2(self) -> Self {
        unsafe {
            let n = _mm256_cvtps_epi32(self.0);
            let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127)));
            F32x8(_mm256_castsi256_ps(e))
        }
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        unsafe { F32x8(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0)) }
    }
    #[inline(always)]
    unsafe fn copysign(self, sign: Self) -> Self {
        unsafe {
            let neg = _mm256_set1_ps(-0.0);
            F32x8(_mm256_or_ps(
                _mm256_andnot_ps(neg, self.0),
                _mm256_and_ps(neg, sign.0),
            ))
        }
    }
    #[inline(always)]
    unsafe fn select_gt(a: Self, b: Self, t: Self, f: Self) -> Self {
        unsafe {
            let m = _mm256_cmp_ps::<_CMP_GT_OQ>(a.0, b.0);
            F32x8(_mm256_blendv_ps(f.0, t.0, m))
        }
    }
    #[inline(always)]
    unsafe fn select_nan(a: Self, t: Self, f: Self) -> Self {
        unsafe {
            let m = _mm256_cmp_ps::<_CMP_UNORD_Q>(a.0, a.0);
            F32x8(_mm256_blendv_ps(f.0, t.0, m))
        }
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        unsafe {
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), self.0);
            ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
        }
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        unsafe {
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), self.0);
            l.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        }
    }
}
