//! The epilogue of one `rows × width` accumulator tile in zmm registers:
//! zero-point correction, bias, then requantization to u8/s8 or
//! dequantization to f32, stored as row-major rows. The portable
//! [`finish_row`](super::epilogue::finish_row) makes four passes over each
//! row through memory; for the short reductions of pointwise convolutions
//! (K = 16..96) that cost more than the products themselves. The
//! arithmetic is the same IEEE sequence, so the bytes are identical.

use super::epilogue::TileCtx;
use std::arch::x86_64::*;

#[inline(always)]
fn mask(width: usize, v: usize) -> __mmask16 {
    let left = width - 16 * v;
    if left >= 16 {
        0xffff
    } else {
        ((1u32 << left) - 1) as __mmask16
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
unsafe fn column_constant(t: &TileCtx, uniform: bool, cz: __m512i, bias: __m512i) -> __m512i {
    // Safety: the caller's features.
    unsafe {
        if t.cz.is_some() && uniform {
            _mm512_add_epi32(bias, _mm512_mullo_epi32(_mm512_set1_epi32(t.za[0]), cz))
        } else {
            bias
        }
    }
}

/// The corrected accumulator `acc + za·cz − rowsum·zb + bias` of row `r`
/// (`colc` holds `bias`, plus `za·cz` when every row has the same `za`), columns `16v..`.
///
/// # Safety
/// AVX-512F; the slices hold the columns the mask covers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn corrected(
    t: &TileCtx,
    tile: *const i32,
    r: usize,
    v: usize,
    cz: __m512i,
    zb: __m512i,
    colc: __m512i,
    uniform: bool,
) -> __m512i {
    // Safety: forwarded.
    unsafe {
        let mut acc = _mm512_loadu_si512(tile.add(r * t.stride + 16 * v).cast());
        if t.cz.is_some() && !uniform {
            acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(t.za[r]), cz));
        }
        if t.zb.is_some() {
            acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(t.rowsum[r]), zb));
        }
        _mm512_add_epi32(acc, colc)
    }
}

/// # Safety
/// AVX-512F; `p` plus `16v` valid for the columns of mask `m`.
#[inline(always)]
unsafe fn load_i32(p: Option<&[i32]>, v: usize, m: __mmask16) -> __m512i {
    match p {
        // Safety: the caller's bounds.
        Some(p) => unsafe { _mm512_maskz_loadu_epi32(m, p.as_ptr().add(16 * v)) },
        // Safety: AVX-512F is the caller's.
        None => unsafe { _mm512_setzero_si512() },
    }
}

/// Requantizes the tile into u8/s8 rows `out + r*ld`:
/// `clamp(acc·mult, lo−zp, hi−zp)` rounded half to even, plus `zp`.
///
/// # Safety
/// AVX-512F/BW; `tile` holds `rows` rows of `width` i32, `stride` apart;
/// `mult` has 1 value or `width`; `bias` `width`; `out` is valid for
/// `rows` rows of `width` bytes at stride `ld`.
#[target_feature(enable = "avx512f,avx512bw")]
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
    // Safety: the caller's contract covers every masked access.
    unsafe {
        let (flo, fhi) = (
            _mm512_set1_ps((lo - zp) as f32),
            _mm512_set1_ps((hi - zp) as f32),
        );
        let vzp = _mm512_set1_epi32(zp);
        let uniform = uniform_za(t);
        for v in 0..t.width.div_ceil(16) {
            let m = mask(t.width, v);
            let cz = load_i32(t.cz, v, m);
            let zb = load_i32(t.zb, v, m);
            let b = load_i32(bias, v, m);
            let s = if mult.len() == 1 {
                _mm512_set1_ps(mult[0])
            } else {
                _mm512_maskz_loadu_ps(m, mult.as_ptr().add(16 * v))
            };
            let colc = column_constant(t, uniform, cz, b);
            for r in 0..t.rows {
                let acc = corrected(t, tile, r, v, cz, zb, colc, uniform);
                let f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
                let f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(f), vzp);
                // In range already: the truncating narrow is exact for u8 and s8 alike.
                _mm512_mask_cvtepi32_storeu_epi8(out.add(r * ld + 16 * v).cast(), m, q);
            }
        }
    }
}

/// Dequantizes the tile into f32 rows `out + r*ld`:
/// `acc · (a_scale[r] · b_scale[n]) + bias[n]`.
///
/// # Safety
/// AVX-512F; `a_scale` has 1 value or one per row of the tile; `b_scale`
/// 1 or `width`; `bias` `width`; `out` valid for `rows` rows of `width` f32.
#[target_feature(enable = "avx512f")]
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
        let zero = _mm512_setzero_si512();
        let uniform = uniform_za(t);
        for v in 0..t.width.div_ceil(16) {
            let m = mask(t.width, v);
            let cz = load_i32(t.cz, v, m);
            let zb = load_i32(t.zb, v, m);
            let sb = if b_scale.len() == 1 {
                _mm512_set1_ps(b_scale[0])
            } else {
                _mm512_maskz_loadu_ps(m, b_scale.as_ptr().add(16 * v))
            };
            let b = match bias {
                Some(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(16 * v)),
                None => _mm512_setzero_ps(),
            };
            let colc = column_constant(t, uniform, cz, zero);
            for r in 0..t.rows {
                let acc = corrected(t, tile, r, v, cz, zb, colc, uniform);
                let sa = a_scale[if a_scale.len() == 1 { 0 } else { r }];
                // (sa·sb) first, then the product: the portable path's order.
                let s = _mm512_mul_ps(_mm512_set1_ps(sa), sb);
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), s);
                let y = if bias.is_some() {
                    _mm512_add_ps(y, b)
                } else {
                    y
                };
                _mm512_mask_storeu_ps(out.add(r * ld + 16 * v), m, y);
            }
        }
    }
}
