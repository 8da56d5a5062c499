//! 2-D max pooling in the blocked NCHWc layout (`[blocks][H][W][16]`), so a
//! MaxPool between two NCHWc convolutions (ResNet's stem) needs no reorder
//! to NCHW and back. Each tap is one 16-lane maximum.

use crate::conv::Geom3;
use crate::conv::nchwc::LANES;

/// Max pooling of `blocks` channel blocks; `g` is 2-D (depth 1, kernel
/// depth 1). Same semantics as the NCHW 2-D path: the maximum by select
/// starting from `-inf` (a NaN input loses to it), `-inf` for windows with
/// no tap inside the image.
pub fn max_pool_nchwc(g: &Geom3, blocks: usize, x: &[f32], y: &mut [f32]) {
    let [_, ih, iw] = g.input;
    let [_, oh, ow] = g.output;
    let [_, kh, kw] = g.kernel;
    let [_, sh, sw] = g.strides;
    let [_, dh, dw] = g.dilations;
    let [_, ph, pw] = g.pads;
    let (is, os) = (ih * iw * LANES, oh * ow * LANES);
    assert!(g.input[0] == 1 && g.kernel[0] == 1 && g.output[0] == 1);
    assert!(x.len() >= blocks * is && y.len() >= blocks * os);
    // Valid taps `lo..hi` of a window starting at `start` along an extent `n`.
    let taps = |start: isize, k: usize, d: usize, n: usize| {
        let lo = (0..k).find(|&j| start + (j * d) as isize >= 0).unwrap_or(k);
        let hi = (lo..k)
            .find(|&j| start + (j * d) as isize >= n as isize)
            .unwrap_or(k);
        (lo, hi)
    };
    for b in 0..blocks {
        let xb = &x[b * is..(b + 1) * is];
        let yb = &mut y[b * os..(b + 1) * os];
        for oy in 0..oh {
            let sy = (oy * sh) as isize - ph as isize;
            let (ylo, yhi) = taps(sy, kh, dh, ih);
            for ox in 0..ow {
                let sx = (ox * sw) as isize - pw as isize;
                let (xlo, xhi) = taps(sx, kw, dw, iw);
                let mut acc = [f32::NEG_INFINITY; LANES];
                for j in ylo..yhi {
                    let row = (sy + (j * dh) as isize) as usize * iw;
                    for i in xlo..xhi {
                        let px = (sx + (i * dw) as isize) as usize;
                        let v = &xb[(row + px) * LANES..][..LANES];
                        for (a, &v) in acc.iter_mut().zip(v) {
                            *a = if v > *a { v } else { *a };
                        }
                    }
                }
                yb[(oy * ow + ox) * LANES..][..LANES].copy_from_slice(&acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::max_pool;

    /// Against the NCHW kernel on the same data, reordered.
    #[test]
    fn matches_nchw_max_pool() {
        // (c, h, w, k, s, d, pad)
        for &(c, h, w, k, s, d, p) in &[
            (64, 12, 12, 3, 2, 1, 1),
            (20, 7, 9, 3, 1, 1, 1),
            (5, 6, 5, 2, 2, 1, 0),
            (17, 9, 8, 3, 2, 2, 2),
            (16, 4, 4, 5, 1, 1, 2),
        ] {
            let out = |n: usize| (n + 2 * p - d * (k - 1) - 1) / s + 1;
            let g = Geom3 {
                input: [1, h, w],
                kernel: [1, k, k],
                output: [1, out(h), out(w)],
                strides: [1, s, s],
                dilations: [1, d, d],
                pads: [0, p, p],
            };
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 100.0)
                .collect();
            let os = g.out_size();
            let mut want = vec![0.0; c * os];
            max_pool(&g, c, &x, &mut want, None, false, f32::NEG_INFINITY, 1);
            let nb = c.div_ceil(LANES);
            let mut xb = vec![0.0; nb * LANES * h * w];
            crate::conv::nchwc::nchw_to_nchwc(&x, c, h * w, &mut xb);
            let mut yb = vec![0.0; nb * LANES * os];
            max_pool_nchwc(&g, nb, &xb, &mut yb);
            let mut got = vec![0.0; c * os];
            crate::conv::nchwc::nchwc_to_nchw(&yb, c, os, &mut got);
            assert_eq!(got, want, "c {c} h {h} w {w} k {k} s {s} d {d} p {p}");
        }
    }

    #[test]
    #[should_panic]
    fn short_output_panics() {
        let g = Geom3 {
            input: [1, 4, 4],
            kernel: [1, 2, 2],
            output: [1, 2, 2],
            strides: [1, 2, 2],
            dilations: [1, 1, 1],
            pads: [0, 0, 0],
        };
        max_pool_nchwc(&g, 1, &[0.0; 256], &mut [0.0; 16]);
    }
}
