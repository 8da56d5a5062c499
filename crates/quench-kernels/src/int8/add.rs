//! QLinearAdd's element-wise arithmetic, the way ONNX Runtime's x86 kernel
//! does it, so residual chains give ORT's integers bit for bit: with
//! `ra = sa / sc`, `rb = sb / sc` and `fixed = zc - fma(ra, za, rb * zb)`,
//! `c = saturate(round_half_even(fma(a, ra, fma(b, rb, fixed))))`.
//!
//! Hand-vectorised for AVX-512 and AVX2+FMA: the scalar loop compiled for a
//! baseline x86-64 is a libm call for the `fma` and another for the
//! rounding per element, which made one residual Add of ResNet-50 cost as
//! much as the convolution before it. Every path does the same IEEE
//! operations (two fused multiply-adds, a clamp to the integer range, a
//! round to nearest even), so all give identical bytes.

use super::round::round_half_even;
use crate::vmath::Level;

/// An 8-bit quantized element: u8 or s8.
pub trait QByte: Copy + Default + Send + Sync + 'static {
    /// Saturation bounds of the type.
    const LO: f32;
    const HI: f32;
    /// Whether it is s8 (for the widening and narrowing instructions).
    const SIGNED: bool;
    fn to_f32(self) -> f32;
    /// From a value already rounded and clamped to `LO..=HI`.
    fn from_f32(v: f32) -> Self;
}

impl QByte for u8 {
    const LO: f32 = 0.0;
    const HI: f32 = 255.0;
    const SIGNED: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> u8 {
        v as u8
    }
}

impl QByte for i8 {
    const LO: f32 = -128.0;
    const HI: f32 = 127.0;
    const SIGNED: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> i8 {
        v as i8
    }
}

/// `fixed` for [`qadd`]: `zc - fma(ra, za, rb * zb)`.
pub fn add_fixed(ra: f32, za: i32, rb: f32, zb: i32, zc: i32) -> f32 {
    zc as f32 - ra.mul_add(za as f32, rb * zb as f32)
}

/// `dst[i] = sat(round(fma(a[i], ra, fma(b[i], rb, fixed))))`; the three
/// slices have one length.
pub fn qadd<T: QByte>(a: &[T], ra: f32, b: &[T], rb: f32, fixed: f32, dst: &mut [T]) {
    qadd_at(Level::detect(), a, ra, b, rb, fixed, dst)
}

/// [`qadd`] with the instruction set chosen by the caller (tests); a level
/// the CPU lacks falls back to scalar.
pub fn qadd_at<T: QByte>(
    level: Level,
    a: &[T],
    ra: f32,
    b: &[T],
    rb: f32,
    fixed: f32,
    dst: &mut [T],
) {
    assert!(
        a.len() == b.len() && a.len() == dst.len(),
        "qadd: lengths differ"
    );
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if Level::available().contains(&level) {
        // Safety: the level is available on this CPU; the lengths were checked.
        unsafe {
            match level {
                Level::Avx512 => done = simd::add_avx512(a, ra, b, rb, fixed, dst),
                Level::Avx2 => done = simd::add_avx2(a, ra, b, rb, fixed, dst),
                Level::Scalar => {}
            }
        }
    }
    let _ = level;
    for ((d, &x), &y) in dst[done..].iter_mut().zip(&a[done..]).zip(&b[done..]) {
        *d = finish(x.to_f32().mul_add(ra, y.to_f32().mul_add(rb, fixed)));
    }
}

/// `dst[i] = sat(round(fma(a[i], r, f)))`: QLinearAdd with one scalar
/// operand folded into `f`.
pub fn qaffine<T: QByte>(a: &[T], r: f32, f: f32, dst: &mut [T]) {
    qaffine_at(Level::detect(), a, r, f, dst)
}

/// [`qaffine`] with the instruction set chosen by the caller.
pub fn qaffine_at<T: QByte>(level: Level, a: &[T], r: f32, f: f32, dst: &mut [T]) {
    assert!(a.len() == dst.len(), "qaffine: lengths differ");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if Level::available().contains(&level) {
        // Safety: as in qadd_at. With b = a and rb = 0 the inner fma is
        // `0·b + f = f` exactly (b is finite), so this is the same formula.
        unsafe {
            match level {
                Level::Avx512 => done = simd::add_avx512(a, r, a, 0.0, f, dst),
                Level::Avx2 => done = simd::add_avx2(a, r, a, 0.0, f, dst),
                Level::Scalar => {}
            }
        }
    }
    let _ = level;
    for (d, &x) in dst[done..].iter_mut().zip(&a[done..]) {
        *d = finish(x.to_f32().mul_add(r, f));
    }
}

#[inline(always)]
fn finish<T: QByte>(t: f32) -> T {
    T::from_f32(round_half_even(t).clamp(T::LO, T::HI))
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::QByte;
    use std::arch::x86_64::*;

    /// Whole vectors of 16; returns how many elements were done. Clamping
    /// before rounding gives the same integers as after (the bounds are
    /// integers) and keeps the conversion in i32 range.
    ///
    /// # Safety
    /// AVX-512F must be available; `b` and `dst` at least as long as `a`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_avx512<T: QByte>(
        a: &[T],
        ra: f32,
        b: &[T],
        rb: f32,
        fixed: f32,
        dst: &mut [T],
    ) -> usize {
        let n = a.len() / 16 * 16;
        let (va, vb, vf) = (
            _mm512_set1_ps(ra),
            _mm512_set1_ps(rb),
            _mm512_set1_ps(fixed),
        );
        let (lo, hi) = (_mm512_set1_ps(T::LO), _mm512_set1_ps(T::HI));
        let widen = |p: *const T| {
            // Safety: the caller's bounds cover 16 bytes at p.
            let v = unsafe { _mm_loadu_si128(p.cast()) };
            _mm512_cvtepi32_ps(if T::SIGNED {
                _mm512_cvtepi8_epi32(v)
            } else {
                _mm512_cvtepu8_epi32(v)
            })
        };
        for i in (0..n).step_by(16) {
            // Safety: i + 16 <= n <= every length.
            unsafe {
                let x = widen(a.as_ptr().add(i));
                let y = widen(b.as_ptr().add(i));
                let t = _mm512_fmadd_ps(x, va, _mm512_fmadd_ps(y, vb, vf));
                let t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
                let q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t));
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), q);
            }
        }
        n
    }

    /// Whole vectors of 8; returns how many elements were done.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `b` and `dst` at least as long as `a`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn add_avx2<T: QByte>(
        a: &[T],
        ra: f32,
        b: &[T],
        rb: f32,
        fixed: f32,
        dst: &mut [T],
    ) -> usize {
        let n = a.len() / 8 * 8;
        let (va, vb, vf) = (
            _mm256_set1_ps(ra),
            _mm256_set1_ps(rb),
            _mm256_set1_ps(fixed),
        );
        let (lo, hi) = (_mm256_set1_ps(T::LO), _mm256_set1_ps(T::HI));
        let widen = |p: *const T| {
            // Safety: the caller's bounds cover 8 bytes at p.
            let v = unsafe { _mm_loadl_epi64(p.cast()) };
            _mm256_cvtepi32_ps(if T::SIGNED {
                _mm256_cvtepi8_epi32(v)
            } else {
                _mm256_cvtepu8_epi32(v)
            })
        };
        for i in (0..n).step_by(8) {
            // Safety: i + 8 <= n <= every length.
            unsafe {
                let x = widen(a.as_ptr().add(i));
                let y = widen(b.as_ptr().add(i));
                let t = _mm256_fmadd_ps(x, va, _mm256_fmadd_ps(y, vb, vf));
                let t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
                let w = _mm256_cvtps_epi32(t);
                let (l, h) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                // The values are in range already: the saturating packs are exact.
                let w16 = _mm_packs_epi32(l, h);
                let q = if T::SIGNED {
                    _mm_packs_epi16(w16, w16)
                } else {
                    _mm_packus_epi16(w16, w16)
                };
                _mm_storel_epi64(dst.as_mut_ptr().add(i).cast(), q);
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (s >> 16) as u8
            })
            .collect()
    }

    /// The formula in f64-free scalar form, written out independently.
    fn reference<T: QByte>(x: T, ra: f32, y: T, rb: f32, fixed: f32) -> T {
        let t = x.to_f32().mul_add(ra, y.to_f32().mul_add(rb, fixed));
        T::from_f32(t.round_ties_even().clamp(T::LO, T::HI))
    }

    fn check<T: QByte + PartialEq + std::fmt::Debug>(conv: impl Fn(u8) -> T) {
        // Ratios that saturate, that land on .5 ties, and ordinary ones.
        let cases = [
            (0.5f32, 0.5f32, 3, 7, 100),
            (1.0, 1.0, 0, 0, 0),
            (0.031_25, 2.0, 128, 128, 128),
            (0.73, 0.41, 10, 250, 3),
        ];
        for (ci, &(ra, rb, za, zb, zc)) in cases.iter().enumerate() {
            let fixed = add_fixed(ra, za, rb, zb, zc);
            for n in [0, 1, 7, 8, 15, 16, 17, 100, 263] {
                let a: Vec<T> = bytes(n, 3 + ci as u32).into_iter().map(&conv).collect();
                let b: Vec<T> = bytes(n, 99 + n as u32).into_iter().map(&conv).collect();
                let want: Vec<T> = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| reference(x, ra, y, rb, fixed))
                    .collect();
                let want1: Vec<T> = a.iter().map(|&x| reference(x, ra, x, 0.0, fixed)).collect();
                for level in Level::available() {
                    let mut got = vec![T::default(); n];
                    qadd_at(level, &a, ra, &b, rb, fixed, &mut got);
                    assert_eq!(got, want, "{level:?} case {ci} n {n}");
                    qaffine_at(level, &a, ra, fixed, &mut got);
                    assert_eq!(got, want1, "{level:?} affine case {ci} n {n}");
                }
            }
        }
    }

    #[test]
    fn every_level_matches_the_scalar_formula_u8() {
        check(|v| v);
    }

    #[test]
    fn every_level_matches_the_scalar_formula_i8() {
        check(|v| v as i8);
    }

    #[test]
    fn ties_round_to_even() {
        // 1·0.5 + 0 = 0.5 -> 0, 3·0.5 = 1.5 -> 2, 5·0.5 = 2.5 -> 2.
        for level in Level::available() {
            let a = [1u8, 3, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 5];
            let mut d = [0u8; 19];
            qaffine_at(level, &a, 0.5, 0.0, &mut d);
            assert_eq!(&d[..3], &[0, 2, 2], "{level:?}");
            assert_eq!(&d[16..], &[0, 2, 2], "{level:?}");
        }
    }
}
