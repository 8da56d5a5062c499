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

/// One channel: square 3×3 and 5×5 kernels take the padded fast path.
#[inline(always)]
fn plane_impl(g: &Geom3, x: &[f32], w: &[f32], bias: f32, y: &mut [f32], scratch: &mut Vec<f32>) {
    match g.kernel {
        [1, 3, 3] => plane_padded::<3, 9>(g, x, w, bias, y, scratch),
        [1, 5, 5] => plane_padded::<5, 25>(g, x, w, bias, y, scratch),
        _ => plane_general(g, x, w, bias, y, scratch),
    }
}

/// K×K kernel (`KK` = K·K): the plane is copied into a zero-bordered scratch,
/// each padded row split into its `stride` phases, so that every tap of
/// every output is an in-bounds unit-stride read and the K·K taps of a block
/// of outputs stay in registers.
#[inline(always)]
fn plane_padded<const K: usize, const KK: usize>(
    g: &Geom3,
    x: &[f32],
    w: &[f32],
    bias: f32,
    y: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, sh, sw] = g.strides;
    let [_, dh, dw] = g.dilations;
    let [_, ph, pw] = g.pads;
    let hp = (ih + ph).max((oh - 1) * sh + (K - 1) * dh + 1);
    let wp = (iw + pw).max((ow - 1) * sw + (K - 1) * dw + 1);
    // Phase r of a padded row holds its columns r, r + sw, r + 2·sw, ...
    let mut phase_start = [0usize; 8];
    let phased = sw <= 7;
    if phased {
        for r in 1..=sw {
            phase_start[r] = phase_start[r - 1] + wp.saturating_sub(r - 1).div_ceil(sw);
        }
    }
    scratch.clear();
    scratch.resize(hp * wp, 0.0);
    for (r, row) in x.chunks_exact(iw).take(ih).enumerate() {
        let dst = &mut scratch[(r + ph) * wp..(r + ph + 1) * wp];
        if sw == 1 || !phased {
            dst[pw..pw + iw].copy_from_slice(row);
        } else if sw == 2 {
            split_phases2(row, pw, phase_start[1], dst);
        } else {
            for (r, &start) in phase_start.iter().take(sw).enumerate() {
                // Input columns i with (i + pw) % sw == r, in order.
                let i0 = (r + sw - pw % sw) % sw;
                if i0 >= iw {
                    continue;
                }
                let at = start + (i0 + pw) / sw;
                for (d, &v) in dst[at..].iter_mut().zip(row[i0..].iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
    }
    if !phased {
        return plane_general(g, x, w, bias, y, scratch);
    }
    let mut wk = [0.0f32; KK];
    wk.copy_from_slice(&w[..KK]);
    let pad = &scratch[..];
    for (oy, yrow) in y.chunks_exact_mut(ow).enumerate().take(oh) {
        let mut taps: [&[f32]; KK] = [&[]; KK];
        for (t, tap) in taps.iter_mut().enumerate() {
            let (b, e) = (t / K, t % K);
            let row = &pad[(oy * sh + b * dh) * wp..][..wp];
            let c = e * dw;
            let start = if sw == 1 {
                c
            } else {
                phase_start[c % sw] + c / sw
            };
            *tap = &row[start..start + ow];
        }
        padded_row::<KK>(yrow, &taps, &wk, bias);
    }
}

/// Stride-2 phase split of one input row into a padded row `dst` whose
/// even padded columns start at 0 and odd ones at `odd_at`. Written as
/// pairs so it vectorises (the general `step_by` form does not).
#[inline(always)]
fn split_phases2(row: &[f32], pw: usize, odd_at: usize, dst: &mut [f32]) {
    let (even, odd) = dst.split_at_mut(odd_at);
    // Padded column q = i + pw goes to phase q % 2 at position q / 2.
    let i0 = (pw % 2).min(row.len());
    if i0 == 1 {
        odd[pw / 2] = row[0];
    }
    let body = &row[i0..];
    let base = (i0 + pw) / 2;
    let pairs = body.chunks_exact(2);
    let last = pairs.remainder();
    let n = body.len() / 2;
    for ((e, o), p) in even[base..base + n]
        .iter_mut()
        .zip(&mut odd[base..base + n])
        .zip(pairs)
    {
        *e = p[0];
        *o = p[1];
    }
    if let [v] = last {
        even[base + n] = *v;
    }
}

/// `y[j] = bias + Σ_t w[t]·taps[t][j]`, in overlapping register blocks.
#[inline(always)]
fn padded_row<const KK: usize>(y: &mut [f32], taps: &[&[f32]; KK], w: &[f32; KK], bias: f32) {
    let n = y.len();
    if n >= 16 {
        padded_blocks::<KK, 16>(y, taps, w, bias);
    } else if n >= 8 {
        padded_blocks::<KK, 8>(y, taps, w, bias);
    } else if n >= 4 {
        padded_blocks::<KK, 4>(y, taps, w, bias);
    } else {
        for (j, o) in y.iter_mut().enumerate() {
            *o = bias + (0..KK).map(|t| w[t] * taps[t][j]).sum::<f32>();
        }
    }
}

#[inline(always)]
fn padded_blocks<const KK: usize, const L: usize>(
    y: &mut [f32],
    taps: &[&[f32]; KK],
    w: &[f32; KK],
    bias: f32,
) {
    let n = y.len();
    let mut j = 0;
    loop {
        // The last block overlaps the previous one; it recomputes the same values.
        let at = j.min(n - L);
        let mut a = [bias; L];
        for t in 0..KK {
            let s = &taps[t][at..at + L];
            for l in 0..L {
                a[l] += w[t] * s[l];
            }
        }
        y[at..at + L].copy_from_slice(&a);
        if at + L >= n {
            break;
        }
        j += L;
    }
}

/// One channel, any kernel. With stride `s` > 1 each input row is first split into its
/// `s` phases (`x[s·i + r]`), so every tap becomes a unit-stride read.
#[inline(always)]
fn plane_general(
    g: &Geom3,
    x: &[f32],
    w: &[f32],
    bias: f32,
    y: &mut [f32],
    scratch: &mut Vec<f32>,
) {
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
                let left = elo..lo.min(ehi);
                let right = hi.max(elo)..ehi;
                for o in left.chain(right) {
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
    if n >= 16 {
        accumulate_blocks::<16>(acc, taps);
    } else if n >= 8 {
        accumulate_blocks::<8>(acc, taps);
    } else {
        for (j, v) in acc.iter_mut().enumerate() {
            for &(s, wv) in taps {
                *v += wv * s[j];
            }
        }
    }
}

/// One block of `L` outputs starting at `j`, from the values in `acc`.
#[inline(always)]
fn block<const L: usize>(acc: &[f32], taps: &[(&[f32], f32)], j: usize) -> [f32; L] {
    let mut a = [0.0f32; L];
    a.copy_from_slice(&acc[j..j + L]);
    for &(s, wv) in taps {
        let s = &s[j..j + L];
        for l in 0..L {
            a[l] += wv * s[l];
        }
    }
    a
}

/// Whole blocks, then a last block overlapping the previous one; it is
/// computed first, from the untouched values, so nothing is added twice.
#[inline(always)]
fn accumulate_blocks<const L: usize>(acc: &mut [f32], taps: &[(&[f32], f32)]) {
    let n = acc.len();
    let full = n / L * L;
    let tail = (full < n).then(|| block::<L>(acc, taps, n - L));
    for j in (0..full).step_by(L) {
        let a = block::<L>(acc, taps, j);
        acc[j..j + L].copy_from_slice(&a);
    }
    if let Some(t) = tail {
        acc[full..].copy_from_slice(&t[L - (n - full)..]);
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
        check(7, 7, [3, 3], [1, 1], [1, 1], [1, 1]);
        check(14, 14, [3, 3], [2, 2], [1, 1], [1, 1]);
        check(5, 3, [3, 3], [1, 1], [1, 1], [1, 1]);
        check(12, 13, [5, 5], [2, 2], [1, 1], [2, 2]);
        check(12, 13, [3, 3], [3, 2], [2, 1], [0, 2]);
        check(12, 20, [3, 3], [1, 9], [1, 1], [1, 1]);
        check(3, 1, [3, 3], [2, 2], [1, 1], [1, 1]);
        check(4, 2, [3, 3], [3, 3], [1, 1], [2, 2]);
    }

    #[test]
    fn matches_reference_for_odd_geometries() {
        check(9, 11, [5, 3], [3, 2], [2, 3], [2, 1]);
        check(3, 2, [3, 3], [1, 1], [1, 1], [2, 2]);
        check(1, 1, [1, 1], [1, 1], [1, 1], [0, 0]);
        check(6, 20, [1, 7], [1, 3], [1, 1], [0, 3]);
        check(9, 10, [3, 3], [2, 2], [1, 1], [0, 0]);
        check(9, 2, [3, 3], [2, 2], [1, 1], [0, 3]);
    }
}
