//! Direct depthwise 2-D convolution (one filter per channel), the layer
//! MobileNet-style networks spend their non-GEMM time in. im2col would
//! multiply memory traffic by the kernel size for a GEMM with K = 9.

use super::isa::multiversion;
use super::{Geom3, valid_range};
use rayon::prelude::*;

/// `y[c] = bias[c] + x[c] ⋆ w[c]` for each of `channels` planes.
///
/// `g` must have depth 1 (input, kernel and output); `x` is
/// `channels × in_size`, `w` is `channels × kernel_size`, `y` is
/// `channels × out_size`. `threads > 1` splits channels over the rayon pool.
pub fn depthwise2d(
    g: &Geom3,
    channels: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    threads: usize,
) {
    assert!(
        g.input[0] == 1 && g.kernel[0] == 1 && g.output[0] == 1,
        "depthwise2d: 3-D geometry"
    );
    let (is, os, ks) = (g.in_size(), g.out_size(), g.kernel_size());
    assert!(x.len() >= channels * is && w.len() >= channels * ks && y.len() >= channels * os);
    assert!(bias.is_none_or(|b| b.len() >= channels));
    if os == 0 || channels == 0 {
        return;
    }
    let plane = |(c, yc): (usize, &mut [f32]), scratch: &mut Vec<f32>| {
        let b = bias.map_or(0.0, |b| b[c]);
        plane_dispatch(
            g,
            &x[c * is..(c + 1) * is],
            &w[c * ks..(c + 1) * ks],
            b,
            yc,
            scratch,
        );
    };
    if threads > 1 {
        y[..channels * os]
            .par_chunks_mut(os)
            .enumerate()
            .for_each_init(Vec::new, |s, a| plane(a, s));
    } else {
        let mut scratch = Vec::new();
        for a in y[..channels * os].chunks_mut(os).enumerate() {
            plane(a, &mut scratch);
        }
    }
}

multiversion!(fn plane_dispatch(g: &Geom3, x: &[f32], w: &[f32], bias: f32, y: &mut [f32], scratch: &mut Vec<f32>) => plane_impl);

const LANES: usize = 16;

/// One channel. With stride `s` > 1 each input row is first split into its
/// `s` phases (`x[s·i + r]`), so every tap becomes a unit-stride read.
#[inline(always)]
fn plane_impl(g: &Geom3, x: &[f32], w: &[f32], bias: f32, y: &mut [f32], scratch: &mut Vec<f32>) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    let [_, sh, sw] = g.strides;
    let [_, dh, dw] = g.dilations;
    let [_, ph, pw] = g.pads;
    y.fill(bias);

    // Phase r of a row starts at phase_start[r] in the deinterleaved copy.
    let phase_start: Vec<usize> = (0..=sw)
        .scan(0, |acc, r| {
            let s = *acc;
            *acc += if r < iw { (iw - r).div_ceil(sw) } else { 0 };
            Some(s)
        })
        .collect();
    let src: &[f32] = if sw == 1 {
        x
    } else {
        scratch.clear();
        scratch.resize(ih * iw, 0.0);
        for (row, out) in x.chunks_exact(iw).zip(scratch.chunks_exact_mut(iw)) {
            for r in 0..sw.min(iw) {
                for (d, s) in out[phase_start[r]..]
                    .iter_mut()
                    .zip(row[r..].iter().step_by(sw))
                {
                    *d = *s;
                }
            }
        }
        scratch
    };

    // Columns where every horizontal tap is inside the image.
    let ranges: Vec<(isize, usize, usize)> = (0..kw)
        .map(|e| {
            let off = (e * dw) as isize - pw as isize;
            let (lo, hi) = valid_range(off, sw, iw, ow);
            (off, lo, hi)
        })
        .collect();
    let lo = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.2).min().unwrap_or(0).max(lo);

    let mut taps: Vec<(&[f32], f32)> = Vec::with_capacity(kh * kw);
    for oy in 0..oh {
        let yrow = &mut y[oy * ow..(oy + 1) * ow];
        taps.clear();
        for b in 0..kh {
            let py = (oy * sh + b * dh) as isize - ph as isize;
            if py < 0 || py >= ih as isize {
                continue;
            }
            let xrow = &x[py as usize * iw..][..iw];
            let prow = &src[py as usize * iw..][..iw];
            for (e, &(off, elo, ehi)) in ranges.iter().enumerate() {
                let wv = w[b * kw + e];
                // Border columns: scalar, with the bounds already known.
                for o in (elo..ehi).filter(|&o| o < lo || o >= hi) {
                    yrow[o] += wv * xrow[((o * sw) as isize + off) as usize];
                }
                if lo < hi {
                    let q = off.div_euclid(sw as isize);
                    let r = off.rem_euclid(sw as isize) as usize;
                    let start = (phase_start[r] as isize + lo as isize + q) as usize;
                    taps.push((&prow[start..start + (hi - lo)], wv));
                }
            }
        }
        if lo < hi {
            accumulate(&mut yrow[lo..hi], &taps);
        }
    }
}

/// `acc[j] += Σ w·s[j]` over taps, a register block of outputs at a time.
#[inline(always)]
fn accumulate(acc: &mut [f32], taps: &[(&[f32], f32)]) {
    let n = acc.len();
    let mut j = 0;
    while j + LANES <= n {
        let mut a = [0.0f32; LANES];
        a.copy_from_slice(&acc[j..j + LANES]);
        for &(s, wv) in taps {
            let s = &s[j..j + LANES];
            for l in 0..LANES {
                a[l] += wv * s[l];
            }
        }
        acc[j..j + LANES].copy_from_slice(&a);
        j += LANES;
    }
    for (i, v) in acc[j..].iter_mut().enumerate() {
        for &(s, wv) in taps {
            *v += wv * s[j + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference;

    fn check(ih: usize, iw: usize, k: [usize; 2], s: [usize; 2], d: [usize; 2], p: [usize; 2]) {
        let c = 3;
        let oh = (ih + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1;
        let ow = (iw + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1;
        let g = Geom3::lift(&[ih, iw], &k, &[oh, ow], &s, &d, &p).unwrap();
        let x: Vec<f32> = (0..c * ih * iw)
            .map(|i| ((i * 7) % 13) as f32 - 6.0)
            .collect();
        let w: Vec<f32> = (0..c * k[0] * k[1])
            .map(|i| (i % 5) as f32 * 0.5 - 1.0)
            .collect();
        let bias = [0.5, -1.0, 2.0];
        for threads in [1, 2] {
            let mut y = vec![f32::NAN; c * oh * ow];
            depthwise2d(&g, c, &x, &w, Some(&bias), &mut y, threads);
            for ch in 0..c {
                let mut want = vec![0.0; oh * ow];
                let (xs, ws) = (&x[ch * ih * iw..], &w[ch * k[0] * k[1]..]);
                reference::conv(&g, 1, 1, xs, ws, &mut want);
                for (a, b) in y[ch * oh * ow..][..oh * ow].iter().zip(&want) {
                    assert!((a - (b + bias[ch])).abs() < 1e-3, "{a} vs {b}: {g:?}");
                }
            }
        }
    }

    #[test]
    fn matches_reference_for_mobilenet_shapes() {
        check(40, 37, [3, 3], [1, 1], [1, 1], [1, 1]);
        check(40, 37, [3, 3], [2, 2], [1, 1], [1, 1]);
        check(41, 38, [3, 3], [2, 2], [1, 1], [1, 1]);
    }

    #[test]
    fn matches_reference_for_odd_geometries() {
        check(9, 11, [5, 3], [3, 2], [2, 3], [2, 1]);
        check(3, 2, [3, 3], [1, 1], [1, 1], [2, 2]);
        check(1, 1, [1, 1], [1, 1], [1, 1], [0, 0]);
        check(6, 20, [1, 7], [1, 3], [1, 1], [0, 3]);
    }
}
