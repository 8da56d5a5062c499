//! Quantizing f32 to u8 the way ONNX QuantizeLinear does, in a loop the
//! compiler vectorises: `f32::round_ties_even` is a libm call (`rintf`) on a
//! baseline x86-64 build, which made activation quantization cost more than
//! the int8 GEMM it feeds.

use crate::vmath::Level;

/// Rounds half to even, like `f32::round_ties_even`, without a libm call.
///
/// Adding and subtracting 2²³ to |x| leaves it rounded to an integer in the
/// default (nearest-even) mode, exactly for |x| < 2²³; the sign is put back
/// after. Larger floats are already integers and are returned as they are.
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = x.abs();
    if a < TWO_23 {
        ((a + TWO_23) - TWO_23).copysign(x)
    } else {
        x
    }
}

/// `dst[i] = saturate_u8(round_half_even(src[i] / scale) + zero_point)`, as
/// DynamicQuantizeLinear and ORT's dynamic MatMul quantize activations.
/// Hand-vectorised for AVX-512 and AVX2 (Rust's saturating `as u8` keeps
/// the plain loop scalar); every path does the same IEEE operations
/// (divide, round to nearest even, add, clamp), so results are identical.
pub fn quantize_u8(src: &[f32], scale: f32, zero_point: u8, dst: &mut [u8]) {
    quantize_u8_at(Level::detect(), src, scale, zero_point, dst)
}

/// [`quantize_u8`] with the instruction set chosen by the caller (tests,
/// benchmarks); a level the CPU lacks falls back to scalar.
pub fn quantize_u8_at(level: Level, src: &[f32], scale: f32, zero_point: u8, dst: &mut [u8]) {
    let n = src.len().min(dst.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if Level::available().contains(&level) {
        match level {
            // Safety: the level is available on this CPU.
            Level::Avx512 => unsafe {
                done = simd::quantize_u8_avx512(&src[..n], scale, zero_point, &mut dst[..n])
            },
            Level::Avx2 => unsafe {
                done = simd::quantize_u8_avx2(&src[..n], scale, zero_point, &mut dst[..n])
            },
            Level::Scalar => {}
        }
    }
    let _ = level;
    quantize_u8_loop(&src[done..n], scale, zero_point, &mut dst[done..n])
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Quantizes whole vectors of 16; returns how many elements were done.
    #[target_feature(enable = "avx512f")]
    pub(super) fn quantize_u8_avx512(src: &[f32], scale: f32, zp: u8, dst: &mut [u8]) -> usize {
        let n = src.len() / 16 * 16;
        let (s, z) = (_mm512_set1_ps(scale), _mm512_set1_ps(f32::from(zp)));
        let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
        for i in (0..n).step_by(16) {
            // Safety: i + 16 <= n <= both lengths.
            unsafe {
                let v = _mm512_div_ps(_mm512_loadu_ps(src.as_ptr().add(i)), s);
                let v =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                // vmaxps returns its second operand for NaN: NaN -> 0, as `as u8`.
                let v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, z), lo), hi);
                let b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), b);
            }
        }
        n
    }

    /// Quantizes whole vectors of 8; returns how many elements were done.
    #[target_feature(enable = "avx2")]
    pub(super) fn quantize_u8_avx2(src: &[f32], scale: f32, zp: u8, dst: &mut [u8]) -> usize {
        let n = src.len() / 8 * 8;
        let (s, z) = (_mm256_set1_ps(scale), _mm256_set1_ps(f32::from(zp)));
        let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
        for i in (0..n).step_by(8) {
            // Safety: i + 8 <= n <= both lengths.
            unsafe {
                let v = _mm256_div_ps(_mm256_loadu_ps(src.as_ptr().add(i)), s);
                let v = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                let v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, z), lo), hi);
                let w = _mm256_cvtps_epi32(v);
                let w16 =
                    _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                let b = _mm_packus_epi16(w16, w16);
                _mm_storel_epi64(dst.as_mut_ptr().add(i).cast(), b);
            }
        }
        n
    }
}

#[inline(always)]
fn quantize_u8_loop(src: &[f32], scale: f32, zero_point: u8, dst: &mut [u8]) {
    let zp = f32::from(zero_point);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (round_half_even(v / scale) + zp).clamp(0.0, 255.0) as u8;
    }
}

/// `(min, max)` of `src`, or `None` when it holds a NaN (or is empty).
/// Sixteen running lanes so the loop vectorises (a plain `fold(f32::max)`
/// is one long dependency chain that also skips NaN silently).
pub fn min_max(src: &[f32]) -> Option<(f32, f32)> {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(src: &[f32]) -> Option<(f32, f32)> {
            min_max_loop(src)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(src: &[f32]) -> Option<(f32, f32)> {
            min_max_loop(src)
        }
        match Level::detect() {
            // Safety: the level was detected on this CPU.
            Level::Avx512 => return unsafe { avx512(src) },
            Level::Avx2 => return unsafe { avx2(src) },
            Level::Scalar => {}
        }
    }
    min_max_loop(src)
}

#[inline(always)]
fn min_max_loop(src: &[f32]) -> Option<(f32, f32)> {
    if src.is_empty() {
        return None;
    }
    let (mut lo, mut hi) = ([f32::INFINITY; 16], [f32::NEG_INFINITY; 16]);
    // NaN is flagged lane-wise, checked once at the end.
    let mut nan = [0u32; 16];
    let chunks = src.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            let v = c[i];
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
            nan[i] |= u32::from(v.is_nan());
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
        nan[i] |= u32::from(v.is_nan());
    }
    if nan.iter().any(|&n| n != 0) {
        return None;
    }
    let lo = lo.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = hi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_round_ties_even_everywhere_it_matters() {
        let mut xs: Vec<f32> = vec![
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            0.49999997,
            4_194_303.5,
            4_194_304.5,
            8_388_609.0,
            1e30,
            -1e30,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut s = 0x2545_f491u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            xs.push(f32::from_bits(s) % 1e7);
            xs.push((s % 2000) as f32 / 4.0 - 250.0);
        }
        for x in xs {
            if x.is_nan() {
                continue;
            }
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn quantize_u8_saturates_and_rounds_ties_to_even() {
        let src = [
            0.0,
            0.25,
            0.75,
            1.25,
            -100.0,
            100.0,
            f32::NAN,
            f32::INFINITY,
        ];
        let mut dst = [0u8; 8];
        quantize_u8(&src, 0.5, 10, &mut dst);
        assert_eq!(dst, [10, 10, 12, 12, 0, 210, 0, 255]);
        // The SIMD build of the loop agrees with the scalar one everywhere.
        let mut src: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.35).collect();
        src.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.35,
            -0.35,
            1e30,
            -1e30,
        ]);
        src.extend((0..40).map(|i| i as f32 * 0.35 - 7.0));
        let (mut a, mut b) = (vec![0u8; src.len()], vec![0u8; src.len()]);
        quantize_u8_loop(&src, 0.7, 128, &mut b);
        for level in Level::available() {
            quantize_u8_at(level, &src, 0.7, 128, &mut a);
            assert_eq!(a, b, "{level:?}");
        }
    }

    #[test]
    fn min_max_finds_the_range_and_refuses_nan() {
        let mut v: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919) % 1009) as f32 - 300.0)
            .collect();
        let want = (
            v.iter().copied().fold(f32::INFINITY, f32::min),
            v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        );
        assert_eq!(min_max(&v), Some(want));
        assert_eq!(min_max_loop(&v), Some(want));
        assert_eq!(min_max(&[2.0]), Some((2.0, 2.0)));
        assert_eq!(min_max(&[]), None);
        v[999] = f32::NAN;
        assert_eq!(min_max(&v), None);
        v[999] = 0.0;
        v[3] = f32::NAN;
        assert_eq!(min_max(&v), None);
    }
}
