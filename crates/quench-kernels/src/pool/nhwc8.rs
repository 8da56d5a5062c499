//! 2-D max pooling of 8-bit NHWC images, so a MaxPool inside an integer
//! NHWC chain (ResNet's stem) needs no transposes to NCHW and back: each
//! tap is a byte maximum over a pixel's contiguous channels.

use crate::conv::Geom3;
use rayon::prelude::*;

/// A byte lane of a quantized tensor, with the value an empty window gives.
pub trait PoolByte: Copy + Ord + Send + Sync + 'static {
    const LOWEST: Self;
}

impl PoolByte for u8 {
    const LOWEST: u8 = u8::MIN;
}

impl PoolByte for i8 {
    const LOWEST: i8 = i8::MIN;
}

/// Max pooling of one `[H, W, C]` image into `[OH, OW, C]`; `g` is 2-D
/// (depth 1, kernel depth 1). Same results as the NCHW kernel
/// ([`super::max_pool`]): windows with no tap inside the image give
/// `T::LOWEST`. Output rows go to the rayon pool when `threads > 1`.
pub fn max_pool_nhwc8<T: PoolByte>(g: &Geom3, c: usize, x: &[T], y: &mut [T], threads: usize) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    assert!(g.input[0] == 1 && g.kernel[0] == 1 && g.output[0] == 1);
    assert!(x.len() >= ih * iw * c && y.len() >= oh * ow * c);
    let row_len = ow * c;
    if row_len == 0 {
        return;
    }
    let y = &mut y[..oh * row_len];
    let run = |oy: usize, row: &mut [T]| dispatch(g, c, x, oy, row);
    if threads > 1 {
        y.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(oy, row)| run(oy, row));
    } else {
        y.chunks_mut(row_len)
            .enumerate()
            .for_each(|(oy, row)| run(oy, row));
    }
}

/// The widest byte-max instructions this CPU has, for the same loop.
fn dispatch<T: PoolByte>(g: &Geom3, c: usize, x: &[T], oy: usize, row: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bw") {
            // Safety: AVX-512BW is available.
            return unsafe { row_avx512(g, c, x, oy, row) };
        }
        if is_x86_feature_detected!("avx2") {
            // Safety: AVX2 is available.
            return unsafe { row_avx2(g, c, x, oy, row) };
        }
    }
    pool_row(g, c, x, oy, row)
}

/// # Safety
/// AVX-512BW must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
unsafe fn row_avx512<T: PoolByte>(g: &Geom3, c: usize, x: &[T], oy: usize, row: &mut [T]) {
    pool_row(g, c, x, oy, row)
}

/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2<T: PoolByte>(g: &Geom3, c: usize, x: &[T], oy: usize, row: &mut [T]) {
    pool_row(g, c, x, oy, row)
}

/// Valid taps `lo..hi` of a window starting at `start` along an extent `n`.
#[inline(always)]
fn taps(start: isize, k: usize, d: usize, n: usize) -> (usize, usize) {
    let lo = (0..k).find(|&j| start + (j * d) as isize >= 0).unwrap_or(k);
    let hi = (lo..k)
        .find(|&j| start + (j * d) as isize >= n as isize)
        .unwrap_or(k);
    (lo, hi)
}

/// Output row `oy`: per pixel, the first tap copied and the rest folded in
/// with a byte maximum (vectorised by the compiler at each level).
#[inline(always)]
fn pool_row<T: PoolByte>(g: &Geom3, c: usize, x: &[T], oy: usize, row: &mut [T]) {
    let [_, ih, iw] = g.input;
    let [_, kh, kw] = g.kernel;
    let [_, sh, sw] = g.strides;
    let [_, dh, dw] = g.dilations;
    let [_, ph, pw] = g.pads;
    let sy = (oy * sh) as isize - ph as isize;
    let (ylo, yhi) = taps(sy, kh, dh, ih);
    for (ox, out) in row.chunks_exact_mut(c).enumerate() {
        let sx = (ox * sw) as isize - pw as isize;
        let (xlo, xhi) = taps(sx, kw, dw, iw);
        let mut first = true;
        for j in ylo..yhi {
            let iy = (sy + (j * dh) as isize) as usize;
            for i in xlo..xhi {
                let ix = (sx + (i * dw) as isize) as usize;
                let px = &x[(iy * iw + ix) * c..][..c];
                if first {
                    out.copy_from_slice(px);
                    first = false;
                } else {
                    for (a, &v) in out.iter_mut().zip(px) {
                        *a = (*a).max(v);
                    }
                }
            }
        }
        if first {
            out.fill(T::LOWEST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::max_pool;

    fn geom(h: usize, w: usize, k: usize, s: usize, d: usize, p: usize) -> Geom3 {
        let out = |n: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
        Geom3 {
            input: [1, h, w],
            kernel: [1, k, k],
            output: [1, out(h), out(w)],
            strides: [1, s, s],
            dilations: [1, d, d],
            pads: [0, p, p],
        }
    }

    /// `[C, H, W]` → `[H, W, C]`.
    fn to_nhwc<T: Copy>(x: &[T], c: usize, hw: usize) -> Vec<T> {
        (0..hw * c).map(|i| x[(i % c) * hw + i / c]).collect()
    }

    fn case<T: PoolByte + Default + std::fmt::Debug>(from: fn(usize) -> T) {
        // (c, h, w, k, s, d, pad): ResNet's stem, odd channel counts (vector
        // tails), dilation, and pads wide enough to leave empty windows.
        for &(c, h, w, k, s, d, p) in &[
            (64, 12, 12, 3, 2, 1, 1),
            (20, 7, 9, 3, 1, 1, 1),
            (5, 6, 5, 2, 2, 1, 0),
            (97, 9, 8, 3, 2, 2, 2),
            (3, 4, 4, 5, 1, 1, 4),
        ] {
            let g = geom(h, w, k, s, d, p);
            let x: Vec<T> = (0..c * h * w).map(|i| from(i * 7919 % 251)).collect();
            let os = g.out_size();
            let mut want = vec![T::default(); c * os];
            max_pool(&g, c, &x, &mut want, None, false, T::LOWEST, 1);
            let xn = to_nhwc(&x, c, h * w);
            for threads in [1, 2] {
                let mut got = vec![T::default(); c * os];
                max_pool_nhwc8(&g, c, &xn, &mut got, threads);
                assert_eq!(got, to_nhwc(&want, c, os), "c {c} h {h} w {w} k {k} p {p}");
                // The portable loop on the same data.
                let mut scalar = vec![T::default(); c * os];
                for (oy, row) in scalar.chunks_mut(g.output[2] * c).enumerate() {
                    pool_row(&g, c, &xn, oy, row);
                }
                assert_eq!(scalar, got);
            }
        }
    }

    #[test]
    fn matches_the_nchw_kernel_u8_and_i8() {
        case::<u8>(|v| v as u8);
        case::<i8>(|v| (v as i32 - 128) as i8);
    }
}
