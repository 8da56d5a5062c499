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
#[allow(clippy::too_many_arguments)]
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
    // Safety: the caller's contract.
    unsafe {
        let r = Range {
            flo: _mm256_set1_ps((lo - zp) as f32),
            fhi: _mm256_set1_ps((hi - zp) as f32),
            zp: _mm256_set1_epi32(zp),
            signed: lo < 0,
        };
        let uniform = uniform_za(t);
        // Four vectors (32 columns) per chunk, so one pack sequence narrows them
        // all; the last columns one vector at a time.
        let nvec = t.width.div_ceil(8);
        let mut v0 = 0;
        while v0 + 4 <= nvec {
            requant_chunk::<4>(t, tile, bias, mult, &r, uniform, v0, out, ld);
            v0 += 4;
        }
        while v0 < nvec {
            requant_chunk::<1>(t, tile, bias, mult, &r, uniform, v0, out, ld);
            v0 += 1;
        }
    }
}

/// The output range of a requantization, as vectors.
struct Range {
    flo: __m256,
    fhi: __m256,
    zp: __m256i,
    /// The range goes below zero (s8 output): narrow with signed saturation.
    signed: bool,
}

/// [`requant`] of the `N` (1 or 4) vectors of columns from `8·v0`.
///
/// # Safety
/// As [`requant`]; AVX2 enabled by the caller.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn requant_chunk<const N: usize>(
    t: &TileCtx,
    tile: *const i32,
    bias: Option<&[i32]>,
    mult: &[f32],
    range: &Range,
    uniform: bool,
    v0: usize,
    out: *mut u8,
    ld: usize,
) {
    const { assert!(N == 1 || N == 4) };
    // Safety: the caller's contract covers every masked access; a whole chunk
    // stores 8·N bytes, a partial one copies only its columns.
    unsafe {
        let zero = _mm256_setzero_si256();
        let cols = (t.width - 8 * v0).min(8 * N);
        let (mut cz, mut zb, mut colc) = ([zero; N], [zero; N], [zero; N]);
        let mut s = [_mm256_setzero_ps(); N];
        for i in 0..N {
            let v = v0 + i;
            let m = mask(t.width, v);
            cz[i] = load_i32(t.cz, v, m);
            zb[i] = load_i32(t.zb, v, m);
            s[i] = if mult.len() == 1 {
                _mm256_set1_ps(mult[0])
            } else {
                _mm256_maskload_ps(mult.as_ptr().add(8 * v), m)
            };
            colc[i] = column_constant(t, uniform, cz[i], load_i32(bias, v, m));
        }
        for r in 0..t.rows {
            let mut q = [zero; 4];
            for i in 0..N {
                let acc = corrected(t, tile, r, v0 + i, cz[i], zb[i], colc[i], uniform);
                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), s[i]);
                let f = _mm256_min_ps(_mm256_max_ps(f, range.flo), range.fhi);
                q[i] = _mm256_add_epi32(_mm256_cvtps_epi32(f), range.zp);
            }
            // In range already, so the saturating packs are exact.
            let p01 = _mm256_packs_epi32(q[0], q[1]);
            let p23 = _mm256_packs_epi32(q[2], q[3]);
            let bytes = if range.signed {
                _mm256_packs_epi16(p01, p23)
            } else {
                _mm256_packus_epi16(p01, p23)
            };
            // Lane l held dwords [q0, q1, q2, q3] of half l: back into column order.
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let dst = out.add(r * ld + 8 * v0);
            if cols == 8 * N {
                if N == 4 {
                    _mm256_storeu_si256(dst.cast(), bytes);
                } else {
                    _mm_storel_epi64(dst.cast(), _mm256_castsi256_si128(bytes));
                }
            } else {
                let mut buf = [0u8; 32];
                _mm256_storeu_si256(buf.as_mut_ptr().cast(), bytes);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, cols);
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
