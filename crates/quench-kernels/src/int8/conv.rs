//! Pieces of an int8 2-D convolution done as GEMM on NHWC data: the
//! NCHW→NHWC copy (which also moves s8 into the u8 domain), im2col with the
//! K order (ky, kx, c), and a depthwise kernel vectorised over channels.
//! Output goes back to NCHW through the GEMM epilogue's transposed store.

pub mod depthwise;

pub use depthwise::{DwWeights, Level, depthwise};

use super::epilogue::{Out, Post};

/// [`depthwise`] from unpacked weights `w[(ky*kw + kx)*c + ch]` (minus their
/// zero points, within ±255), writing NCHW: packs on every call, so only for
/// tests and one-off use.
pub fn depthwise_nhwc(x: &[u8], zx: i32, w: &[i32], g: &Conv2d, post: &Post, out: Out) {
    let zx = u8::try_from(zx).expect("input zero point must be in the u8 domain");
    let w = DwWeights::new(w, g.c, g.kh * g.kw).expect("depthwise weights outside ±255");
    depthwise(x, zx, &w, g, post, out, true, Level::detect(), 1)
}

/// Resolved geometry of one 2-D convolution on one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Padding before the first row / column.
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Conv2d {
    /// Input row/column a kernel tap reads for an output position, if inside.
    #[inline(always)]
    fn src(o: usize, s: usize, k: usize, d: usize, p: usize, len: usize) -> Option<usize> {
        (o * s + k * d).checked_sub(p).filter(|&i| i < len)
    }

    /// Whether the product needs no im2col: 1×1, stride 1, no padding.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt == 0
            && self.pl == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// One image `[c][hw]` → `[hw][c]` in the u8 domain (s8 values get `+128`).
pub fn to_nhwc_u8(src: super::AData, c: usize, hw: usize, dst: &mut [u8]) {
    assert!(dst.len() >= c * hw);
    match src {
        super::AData::U8(v) => transpose(v, c, hw, dst, false),
        super::AData::I8(v) => {
            assert!(v.len() >= c * hw);
            // Safety: i8 and u8 have the same size and every bit pattern is valid in both.
            let v = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, c * hw) };
            transpose(v, c, hw, dst, true)
        }
    }
}

/// A one-byte element the transpose moves.
pub trait Byte: Copy {
    /// The value with its top bit flipped (s8 ↔ u8 domain).
    fn flip(self) -> Self;
}

impl Byte for u8 {
    #[inline(always)]
    fn flip(self) -> u8 {
        self ^ 0x80
    }
}

impl Byte for i8 {
    #[inline(always)]
    fn flip(self) -> i8 {
        (self as u8 ^ 0x80) as i8
    }
}

/// `dst[j * rows + i] = src[i * cols + j]` (with the top bit flipped when
/// `flip`): the NCHW ↔ NHWC byte transposes around the NHWC kernels, done
/// in 16×16 blocks of SSE2 unpacks, so it costs a fraction of the
/// convolution instead of one scattered byte access per element.
pub fn transpose<T: Byte>(src: &[T], rows: usize, cols: usize, dst: &mut [T], flip: bool) {
    let n = rows * cols;
    assert!(src.len() >= n && dst.len() >= n);
    let (r16, c16) = (rows / 16 * 16, cols / 16 * 16);
    #[cfg(target_arch = "x86_64")]
    for r0 in (0..r16).step_by(16) {
        for c0 in (0..c16).step_by(16) {
            // Safety: the block r0..r0+16 × c0..c0+16 lies inside both matrices (checked above).
            unsafe {
                x86::block16(
                    src.as_ptr().add(r0 * cols + c0) as *const u8,
                    cols,
                    dst.as_mut_ptr().add(c0 * rows + r0) as *mut u8,
                    rows,
                    flip,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let (r16, c16) = (0, 0);
    let f = |v: T| if flip { v.flip() } else { v };
    // Right edge (all rows of the last columns), then the bottom rows.
    for i in 0..r16 {
        for j in c16..cols {
            dst[j * rows + i] = f(src[i * cols + j]);
        }
    }
    for i0 in (r16..rows).step_by(16) {
        for j0 in (0..cols).step_by(64) {
            for j in j0..(j0 + 64).min(cols) {
                for i in i0..(i0 + 16).min(rows) {
                    dst[j * rows + i] = f(src[i * cols + j]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Transposes one 16×16 byte block: rows `ls` apart at `s`, to rows `ld` apart at `d`.
    ///
    /// # Safety
    /// The 16 rows of 16 bytes at `s` (stride `ls`) and at `d` (stride `ld`) must be valid.
    #[inline(always)]
    pub(super) unsafe fn block16(s: *const u8, ls: usize, d: *mut u8, ld: usize, flip: bool) {
        // Safety: the caller's bounds; SSE2 is part of x86_64.
        unsafe {
            let m = _mm_set1_epi8(if flip { -128 } else { 0 });
            let mut x = [_mm_setzero_si128(); 16];
            for (i, v) in x.iter_mut().enumerate() {
                *v = _mm_xor_si128(_mm_loadu_si128(s.add(i * ls) as *const __m128i), m);
            }
            // Each stage interleaves pairs of registers at twice the width of the last,
            // so after 4 stages register c holds column c.
            let mut t = [_mm_setzero_si128(); 16];
            for k in 0..8 {
                t[k] = _mm_unpacklo_epi8(x[2 * k], x[2 * k + 1]);
                t[k + 8] = _mm_unpackhi_epi8(x[2 * k], x[2 * k + 1]);
            }
            // t[h*8 + p]: cols h*8..h*8+8 of rows 2p, 2p+1 as 16-bit units.
            for h in 0..2 {
                for q in 0..4 {
                    let (a, b) = (t[h * 8 + 2 * q], t[h * 8 + 2 * q + 1]);
                    x[h * 8 + q] = _mm_unpacklo_epi16(a, b);
                    x[h * 8 + 4 + q] = _mm_unpackhi_epi16(a, b);
                }
            }
            // x[h*8 + s*4 + q]: cols h*8+s*4..+4 of rows 4q..4q+4 as 32-bit units.
            for hs in 0..4 {
                for r in 0..2 {
                    let (a, b) = (x[hs * 4 + 2 * r], x[hs * 4 + 2 * r + 1]);
                    t[hs * 4 + r] = _mm_unpacklo_epi32(a, b);
                    t[hs * 4 + 2 + r] = _mm_unpackhi_epi32(a, b);
                }
            }
            // t[hs*4 + u*2 + r]: cols hs*4+u*2..+2 of rows 8r..8r+8 as 64-bit units.
            for hsu in 0..8 {
                let (a, b) = (t[hsu * 2], t[hsu * 2 + 1]);
                let c = hsu * 2;
                _mm_storeu_si128(d.add(c * ld) as *mut __m128i, _mm_unpacklo_epi64(a, b));
                _mm_storeu_si128(
                    d.add((c + 1) * ld) as *mut __m128i,
                    _mm_unpackhi_epi64(a, b),
                );
            }
        }
    }
}

/// im2col of an NHWC image: row `oy*ow + ox` holds, at column
/// `(ky*kw + kx)*c + ch`, the input it multiplies, or `pad` (the input's
/// zero point, so padding contributes nothing). Rows are `lda` apart.
pub fn im2col_nhwc(x: &[u8], g: &Conv2d, pad: u8, dst: &mut [u8], lda: usize) {
    let k = g.kh * g.kw * g.c;
    assert!(lda >= k && x.len() >= g.h * g.w * g.c && dst.len() >= g.oh * g.ow * lda);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let row = &mut dst[(oy * g.ow + ox) * lda..][..k];
            // With dw = 1 and every tap of a kernel row inside the image, the
            // row's kw·c bytes are contiguous in x: one copy (a 7×7 stem on
            // 3 channels would otherwise copy 3 bytes at a time).
            let first = (ox * g.sw).checked_sub(g.pl);
            let whole = g.dw == 1 && first.is_some_and(|ix| ix + g.kw <= g.w);
            for ky in 0..g.kh {
                let iy = Conv2d::src(oy, g.sh, ky, g.dh, g.pt, g.h);
                if let (true, Some(iy), Some(ix)) = (whole, iy, first) {
                    let n = g.kw * g.c;
                    row[ky * n..][..n].copy_from_slice(&x[(iy * g.w + ix) * g.c..][..n]);
                    continue;
                }
                for kx in 0..g.kw {
                    let d = &mut row[(ky * g.kw + kx) * g.c..][..g.c];
                    match (iy, Conv2d::src(ox, g.sw, kx, g.dw, g.pl, g.w)) {
                        (Some(iy), Some(ix)) => {
                            d.copy_from_slice(&x[(iy * g.w + ix) * g.c..][..g.c])
                        }
                        _ => d.fill(pad),
                    }
                }
            }
        }
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

    #[test]
    fn transpose_matches_scalar_on_odd_sizes() {
        for &(r, c) in &[
            (1, 1),
            (3, 50),
            (16, 16),
            (17, 33),
            (32, 48),
            (96, 197),
            (40, 16),
        ] {
            let src = bytes(r * c, (r * 31 + c) as u32);
            for flip in [false, true] {
                let mut dst = vec![0u8; r * c];
                transpose(&src, r, c, &mut dst, flip);
                for i in 0..r {
                    for j in 0..c {
                        let want = if flip {
                            src[i * c + j] ^ 0x80
                        } else {
                            src[i * c + j]
                        };
                        assert_eq!(dst[j * r + i], want, "{r}x{c} ({i}, {j}) flip {flip}");
                    }
                }
            }
        }
        // s8 input moves into the u8 domain.
        let v: Vec<i8> = vec![-128, 127, 0, -1, 5, 6];
        let mut d = vec![0u8; 6];
        to_nhwc_u8(super::super::AData::I8(&v), 2, 3, &mut d);
        assert_eq!(d, vec![0, 127, 255, 133, 128, 134]);
    }
}
