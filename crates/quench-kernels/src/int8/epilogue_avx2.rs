//! The register epilogue of [`epilogue_avx512`](super::epilogue_avx512) in
//! 8-lane ymm for CPUs without AVX-512: zero-point correction, bias, then
//! requantization to u8/s8 or dequantization to f32. AVX2 has masked
//! loads of 32-bit lanes but no masked byte stores, so the last partial
//! vector of a row goes through a small stack buffer. Same IEEE sequence as
//! the portable path, so the bytes are identical.

use super::epilogue::TileCtx;
use std::arch::x86_64::*;

/// Lanes `8v..` of a row `width` wide: all-ones for the lanes inside it.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn mask(width: usize, v: usize) -> __m256i {
    let left = (width - 8 * v).min(8) as i32;
    // Safety: AVX2 is the caller's.
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(left),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

/// # Safety
/// AVX2; `p` plus `8v` valid for the lanes of mask `m`.
#[inline(always)]
unsafe fn load_i32(p: Option<&[i32]>, v: usize, m: __m256i) -> __m256i {
    // Safety: the caller's bounds and features.
    unsafe {
        match p {
            Some(p) => _mm256_maskload_epi32(p.as_ptr().add(8 * v), m),
            None => _mm256_setzero_si256(),
        }
    }
}

/// Every row of the tile has the same A zero point (per-tensor activations):
/// `za·cz` is then one per-column constant, folded in once per column vector.
#[inline(always)]
fn uniform_za(t: &TileCtx) -> bool {
    t.za.iter().all(|&z| z == t.za[0])
}

/// The per-column constant of [`corrected`]: `bias + za·cz` when the rows
/// share `za` (`uniform`, from [`uniform_za`]), else `bias`.
///
/// # Safety
/// The vector features of this module.
#[inline(always)]
unsafe fn column_constant(t: &TileCtx, uniform: bool, cz: __m256i, bias: __m256i) -> __m256i {
    // Safety: the caller's features.
    unsafe {
        if t.cz.is_some() && uniform {
            _mm256_add_epi32(bias, _mm256_mullo_epi32(_mm256_set1_epi32(t.za[0]), cz))
        } else {
            bias
        }
    }
}

/// The corrected accumulator `acc + za·cz − rowsum·zb + bias` of row `r`
/// (`colc` holds `bias`, plus `za·cz` when every row has the same `za`), columns `8v..`.
///
/// # Safety
/// AVX2; the tile row holds 8 readable lanes from `8v` (it is `stride` ≥
/// `width` rounded up to 8 wide).
#[inline(always)]
unsafe fn corrected(
    t: &TileCtx,
    tile: *const i32,
    r: usize,
    v: usize,
    cz: __m256i,
    zb: __m256i,
    colc: __m256i,
    uniform: bool,
) -> __m256i {
    // Safety: forwarded.
    unsafe {
        let mut acc = _mm256_loadu_si256(tile.add(r * t.stride + 8 * v).cast());
        if t.cz.is_some() && !uniform {
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(t.za[r]), cz));
        }
        if t.zb.is_some() {
            acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(t.rowsum[r]), zb));
        }
        _mm256_add_epi32(acc, colc)
    }
}

/// Requantizes the tile into u8/s8 rows `out + r*ld`:
/// `clamp(acc·mult, lo−zp, hi−zp)` rounded half to even, plus `zp`.
///
/// # Safety
/// AVX2; `tile` holds `rows` rows of `width` i32 (readable up to a multiple
/// of 8), `stride` apart; `mult` has 1 value or `width`; `bias` `width`;
/// `out` is valid for `rows` rows of `width` bytes at stride `ld`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn requant(
    t: &TileCtx,
    tile: *const i32,
    bias: Option<&[i32]>,
    mult: &[f32],
    zp: i32,
    lo: i32,
    hi: i32,
    out: *mut u8,
    ld: usize,
) {
    // Safety: the caller's contract covers every masked access; full vectors
    // store 8 bytes, the partial last one copies only its lanes.
    unsafe {
        let (flo, fhi) = (
            _mm256_set1_ps((lo - zp) as f32),
            _mm256_set1_ps((hi - zp) as f32),
        );
        let vzp = _mm256_set1_epi32(zp);
        // The low byte of each i32 lane to the bottom of its 128-bit lane,
        // then the two lanes' four bytes side by side.
        let low_bytes = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let join = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
        let uniform = uniform_za(t);
        for v in 0..t.width.div_ceil(8) {
            let m = mask(t.width, v);
            let left = (t.width - 8 * v).min(8);
            let cz = load_i32(t.cz, v, m);
            let zb = load_i32(t.zb, v, m);
            let b = load_i32(bias, v, m);
            let s = if mult.len() == 1 {
                _mm256_set1_ps(mult[0])
            } else {
                _mm256_maskload_ps(mult.as_ptr().add(8 * v), m)
            };
            let colc = column_constant(t, uniform, cz, b);
            for r in 0..t.rows {
                let acc = corrected(t, tile, r, v, cz, zb, colc, uniform);
                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s);
                let f = _mm256_min_ps(_mm256_max_ps(f, flo), fhi);
                let q = _mm256_add_epi32(_mm256_cvtps_epi32(f), vzp);
                // In range already: keeping the low byte is exact for u8 and s8 alike.
                let q = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, low_bytes), join);
                let bytes = _mm_cvtsi128_si64(_mm256_castsi256_si128(q)).to_le_bytes();
                let dst = out.add(r * ld + 8 * v);
                if left == 8 {
                    dst.cast::<[u8; 8]>().write_unaligned(bytes);
                } else {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, left);
                }
            }
        }
    }
}

/// Dequantizes the tile into f32 rows `out + r*ld`:
/// `acc · (a_scale[r] · b_scale[n]) + bias[n]`.
///
/// # Safety
/// AVX2; `a_scale` has 1 value or one per row of the tile; `b_scale` 1 or
/// `width`; `bias` `width`; `out` valid for `rows` rows of `width` f32.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dequant(
    t: &TileCtx,
    tile: *const i32,
    a_scale: &[f32],
    b_scale: &[f32],
    bias: Option<&[f32]>,
    out: *mut f32,
    ld: usize,
) {
    // Safety: the caller's contract covers every masked access.
    unsafe {
        let zero = _mm256_setzero_si256();
        let uniform = uniform_za(t);
        for v in 0..t.width.div_ceil(8) {
            let m = mask(t.width, v);
            let cz = load_i32(t.cz, v, m);
            let zb = load_i32(t.zb, v, m);
            let sb = if b_scale.len() == 1 {
                _mm256_set1_ps(b_scale[0])
            } else {
                _mm256_maskload_ps(b_scale.as_ptr().add(8 * v), m)
            };
            let b = match bias {
                Some(b) => _mm256_maskload_ps(b.as_ptr().add(8 * v), m),
                None => _mm256_setzero_ps(),
            };
            let colc = column_constant(t, uniform, cz, zero);
            for r in 0..t.rows {
                let acc = corrected(t, tile, r, v, cz, zb, colc, uniform);
                let sa = a_scale[if a_scale.len() == 1 { 0 } else { r }];
                // (sa·sb) first, then the product: the portable path's order.
                let s = _mm256_mul_ps(_mm256_set1_ps(sa), sb);
                let y = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s);
                let y = if bias.is_some() {
                    _mm256_add_ps(y, b)
                } else {
                    y
                };
                _mm256_maskstore_ps(out.add(r * ld + 8 * v), m, y);
            }
        }
    }
}
