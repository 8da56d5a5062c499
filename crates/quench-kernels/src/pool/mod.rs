//! Pooling kernels over planes (`N·C` of them) with spatial rank 1..=3,
//! lifted to 3-D like the convolution kernels.

use crate::conv::Geom3;
use rayon::prelude::*;

mod nchwc;
mod nhwc8;
pub use nchwc::max_pool_nchwc;
pub use nhwc8::{PoolByte, max_pool_nhwc8};

/// Pooling geometry: the convolution geometry plus the padding after each
/// dim, which bounds the window that `count_include_pad` counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub g: Geom3,
    pub pads_end: [usize; 3],
}

/// Taps `j` in `0..k` of a window starting at `start` that fall in `0..n`.
#[inline]
fn taps(start: isize, k: usize, d: usize, n: usize) -> (usize, usize) {
    let d = d as isize;
    let lo = if start >= 0 { 0 } else { (-start + d - 1) / d };
    let last = n as isize - 1 - start;
    let hi = if last < 0 { 0 } else { last / d + 1 };
    let hi = (hi as usize).min(k);
    ((lo as usize).min(hi), hi)
}

/// Window of output position `o` along `dim`: first tap position and the
/// valid tap range.
#[inline]
fn window(g: &Geom3, dim: usize, o: usize) -> (isize, usize, usize) {
    let start = (o * g.strides[dim]) as isize - g.pads[dim] as isize;
    let (lo, hi) = taps(start, g.kernel[dim], g.dilations[dim], g.input[dim]);
    (start, lo, hi)
}

/// Runs `f(plane, y_plane, idx_plane)` over planes, in parallel when asked.
fn for_planes<T: Send, F>(y: &mut [T], idx: Option<&mut [i64]>, os: usize, threads: usize, f: F)
where
    F: Fn(usize, &mut [T], Option<&mut [i64]>) + Sync,
{
    if os == 0 {
        return;
    }
    match idx {
        Some(idx) if threads > 1 => y
            .par_chunks_mut(os)
            .zip(idx.par_chunks_mut(os))
            .enumerate()
            .for_each(|(p, (yp, ip))| f(p, yp, Some(ip))),
        Some(idx) => y
            .chunks_mut(os)
            .zip(idx.chunks_mut(os))
            .enumerate()
            .for_each(|(p, (yp, ip))| f(p, yp, Some(ip))),
        None if threads > 1 => y
            .par_chunks_mut(os)
            .enumerate()
            .for_each(|(p, yp)| f(p, yp, None)),
        None => y
            .chunks_mut(os)
            .enumerate()
            .for_each(|(p, yp)| f(p, yp, None)),
    }
}

/// Max pooling of `planes` planes. Windows with no tap inside the image give
/// `lowest`. `indices`, when given, receives the flat input index (over all
/// planes) of each maximum, with the spatial part row-major, or column-major
/// when `col_major` (ONNX `storage_order = 1`).
#[allow(clippy::too_many_arguments)]
pub fn max_pool<T: Copy + PartialOrd + Send + Sync>(
    g: &Geom3,
    planes: usize,
    x: &[T],
    y: &mut [T],
    indices: Option<&mut [i64]>,
    col_major: bool,
    lowest: T,
    threads: usize,
) {
    let (is, os) = (g.in_size(), g.out_size());
    assert!(x.len() >= planes * is && y.len() >= planes * os);
    assert!(indices.as_ref().is_none_or(|i| i.len() >= planes * os));
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [_, dh, dw] = g.dilations;
    let dd = g.dilations[0];
    let y = &mut y[..planes * os];
    if indices.is_none() && id == 1 && g.kernel[0] == 1 {
        for_planes(y, None, os, threads, |p, yp, _| {
            max_pool2d_rows(g, &x[p * is..(p + 1) * is], yp, lowest)
        });
        return;
    }
    let indices = indices.map(|i| &mut i[..planes * os]);
    for_planes(y, indices, os, threads, |p, yp, mut ip| {
        let xp = &x[p * is..(p + 1) * is];
        let mut o = 0;
        for z in 0..od {
            let (sz, zl, zh) = window(g, 0, z);
            for yy in 0..oh {
                let (sy, yl, yh) = window(g, 1, yy);
                for xx in 0..ow {
                    let (sx, xl, xh) = window(g, 2, xx);
                    let mut best = lowest;
                    let mut at = 0usize;
                    let mut found = false;
                    for a in zl..zh {
                        let pz = (sz + (a * dd) as isize) as usize;
                        for b in yl..yh {
                            let py = (sy + (b * dh) as isize) as usize;
                            let row = (pz * ih + py) * iw;
                            for e in xl..xh {
                                let px = (sx + (e * dw) as isize) as usize;
                                let v = xp[row + px];
                                if !found || v > best {
                                    best = v;
                                    found = true;
                                    at = if col_major {
                                        pz + py * id + px * id * ih
                                    } else {
                                        row + px
                                    };
                                }
                            }
                        }
                    }
                    yp[o] = best;
                    if let Some(ip) = ip.as_deref_mut() {
                        ip[o] = (p * is + at) as i64;
                    }
                    o += 1;
                }
            }
        }
    });
}

/// 2-D max pooling of one plane: per output row, the running maximum of
/// its window's input rows (one contiguous pass each, which vectorises),
/// then the horizontal taps over that row. Maxima are taken by select,
/// not branch: on real data the comparison is unpredictable.
fn max_pool2d_rows<T: Copy + PartialOrd>(g: &Geom3, x: &[T], y: &mut [T], lowest: T) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    let [_, sh, sw] = g.strides;
    let [_, dh, dw] = g.dilations;
    let [_, ph, pw] = g.pads;
    #[inline(always)]
    fn max<T: PartialOrd>(a: T, b: T) -> T {
        if b > a { b } else { a }
    }
    let mut acc = vec![lowest; iw];
    for (oy, yrow) in y.chunks_exact_mut(ow).enumerate().take(oh) {
        yrow.fill(lowest);
        acc.fill(lowest);
        let mut any = false;
        for b in 0..kh {
            let py = (oy * sh + b * dh) as isize - ph as isize;
            if py < 0 || py >= ih as isize {
                continue;
            }
            any = true;
            let xrow = &x[py as usize * iw..][..iw];
            for (a, &v) in acc.iter_mut().zip(xrow) {
                *a = max(*a, v);
            }
        }
        if !any {
            continue;
        }
        for e in 0..kw {
            let off = (e * dw) as isize - pw as isize;
            let (lo, hi) = crate::conv::valid_range(off, sw, iw, ow);
            if lo >= hi {
                continue;
            }
            let start = ((lo * sw) as isize + off) as usize;
            if sw == 1 {
                for (o, &v) in yrow[lo..hi].iter_mut().zip(&acc[start..]) {
                    *o = max(*o, v);
                }
            } else {
                for (o, &v) in yrow[lo..hi].iter_mut().zip(acc[start..].iter().step_by(sw)) {
                    *o = max(*o, v);
                }
            }
        }
    }
}

/// Average pooling. With `count_include_pad` the divisor counts taps in the
/// declared padding (not the extra room `ceil_mode` adds); otherwise only
/// taps inside the image. Empty windows give 0.
pub fn avg_pool<T>(
    pg: &PoolGeom,
    planes: usize,
    x: &[T],
    y: &mut [T],
    count_include_pad: bool,
    threads: usize,
) where
    T: Copy
        + Send
        + Sync
        + Default
        + From<f32>
        + std::ops::Add<Output = T>
        + std::ops::Div<Output = T>,
{
    let g = &pg.g;
    let (is, os) = (g.in_size(), g.out_size());
    assert!(x.len() >= planes * is && y.len() >= planes * os);
    let [_, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [dd, dh, dw] = g.dilations;
    // Taps of a window counted with count_include_pad: inside `in + pad_end`.
    let padded = |dim: usize, start: isize| {
        let n = g.input[dim] + pg.pads_end[dim] + g.pads[dim];
        let (lo, hi) = taps(
            start + g.pads[dim] as isize,
            g.kernel[dim],
            g.dilations[dim],
            n,
        );
        hi - lo
    };
    let y = &mut y[..planes * os];
    for_planes(y, None, os, threads, |p, yp, _| {
        let xp = &x[p * is..(p + 1) * is];
        let mut o = 0;
        for z in 0..od {
            let (sz, zl, zh) = window(g, 0, z);
            for yy in 0..oh {
                let (sy, yl, yh) = window(g, 1, yy);
                for xx in 0..ow {
                    let (sx, xl, xh) = window(g, 2, xx);
                    let mut sum = T::default();
                    for a in zl..zh {
                        let pz = (sz + (a * dd) as isize) as usize;
                        for b in yl..yh {
                            let py = (sy + (b * dh) as isize) as usize;
                            let row = (pz * ih + py) * iw;
                            for e in xl..xh {
                                sum = sum + xp[row + (sx + (e * dw) as isize) as usize];
                            }
                        }
                    }
                    let count = if count_include_pad {
                        padded(0, sz) * padded(1, sy) * padded(2, sx)
                    } else {
                        (zh - zl) * (yh - yl) * (xh - xl)
                    };
                    yp[o] = if count == 0 {
                        T::default()
                    } else {
                        sum / T::from(count as f32)
                    };
                    o += 1;
                }
            }
        }
    });
}

/// Global average (`max == false`) or max over each plane of `size` elements.
pub fn global_pool_f32(planes: usize, size: usize, x: &[f32], y: &mut [f32], max: bool) {
    assert!(x.len() >= planes * size && y.len() >= planes);
    for (p, out) in y[..planes].iter_mut().enumerate() {
        let xp = &x[p * size..(p + 1) * size];
        *out = if max {
            xp.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        } else {
            // Eight partial sums: vectorisable and more accurate than one.
            let mut acc = [0.0f32; 8];
            let mut chunks = xp.chunks_exact(8);
            for c in &mut chunks {
                for l in 0..8 {
                    acc[l] += c[l];
                }
            }
            let tail: f32 = chunks.remainder().iter().sum();
            (acc.iter().sum::<f32>() + tail) / size as f32
        };
    }
}

#[cfg(test)]
mod tests;
