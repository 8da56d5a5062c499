//! Pieces of an int8 2-D convolution done as GEMM on NHWC data: the
//! NCHW→NHWC copy (which also moves s8 into the u8 domain), im2col with the
//! K order (ky, kx, c), and a depthwise kernel vectorised over channels.
//! Output goes back to NCHW through the GEMM epilogue's transposed store.

use super::epilogue::{self, Out, Post};

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
    const B: usize = 16;
    let mut copy = |get: &dyn Fn(usize) -> u8| {
        for p0 in (0..hw).step_by(B) {
            let p1 = (p0 + B).min(hw);
            for ch in 0..c {
                for p in p0..p1 {
                    dst[p * c + ch] = get(ch * hw + p);
                }
            }
        }
    };
    match src {
        super::AData::U8(v) => {
            assert!(v.len() >= c * hw);
            copy(&|i| v[i]);
        }
        super::AData::I8(v) => {
            assert!(v.len() >= c * hw);
            copy(&|i| v[i] as u8 ^ 0x80);
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
            for ky in 0..g.kh {
                let iy = Conv2d::src(oy, g.sh, ky, g.dh, g.pt, g.h);
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

/// Depthwise convolution of one NHWC image (u8 domain, zero point `zx`)
/// with weights `w[(ky*kw + kx)*c + ch]` already minus their zero points,
/// finished by `post` into `out` as NCHW (`[c][oh*ow]`).
pub fn depthwise_nhwc(x: &[u8], zx: i32, w: &[i32], g: &Conv2d, post: &Post, mut out: Out) {
    let c = g.c;
    let plane = g.oh * g.ow;
    assert!(x.len() >= g.h * g.w * c && w.len() >= g.kh * g.kw * c);
    epilogue::check(post, &out, plane, c);
    assert!(out.len() >= c * plane);
    let ptr = out.ptr();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        // Safety: the features were just detected; the output covers c × plane.
        unsafe { depthwise_avx512(x, zx, w, g, post, ptr) };
        return;
    }
    // Safety: as above.
    unsafe { depthwise_body(x, zx, w, g, post, ptr) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn depthwise_avx512(
    x: &[u8],
    zx: i32,
    w: &[i32],
    g: &Conv2d,
    post: &Post,
    out: epilogue::OutPtr,
) {
    // Safety: the caller's contract.
    unsafe { depthwise_body(x, zx, w, g, post, out) }
}

/// # Safety
/// `out` must cover `c * oh * ow` elements.
#[inline(always)]
unsafe fn depthwise_body(
    x: &[u8],
    zx: i32,
    w: &[i32],
    g: &Conv2d,
    post: &Post,
    out: epilogue::OutPtr,
) {
    let c = g.c;
    let plane = g.oh * g.ow;
    let mut acc = vec![0i32; c];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            acc.fill(0);
            for ky in 0..g.kh {
                let Some(iy) = Conv2d::src(oy, g.sh, ky, g.dh, g.pt, g.h) else {
                    continue;
                };
                for kx in 0..g.kw {
                    let Some(ix) = Conv2d::src(ox, g.sw, kx, g.dw, g.pl, g.w) else {
                        continue;
                    };
                    let xs = &x[(iy * g.w + ix) * c..][..c];
                    let ws = &w[(ky * g.kw + kx) * c..][..c];
                    for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a = a.wrapping_add((xv as i32 - zx).wrapping_mul(wv));
                    }
                }
            }
            // Safety: row `oy*ow + ox` of a transposed [plane][c] store is inside c × plane.
            unsafe { epilogue::finish_row(post, out, plane, true, oy * g.ow + ox, 0, &mut acc) };
        }
    }
}
