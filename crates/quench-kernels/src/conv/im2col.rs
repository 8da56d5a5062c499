//! im2col (input image → GEMM operand) and its adjoint col2im.

use super::isa::multiversion;
use super::{Geom3, valid_range};

/// Unfolds `channels` planes of `x` (`channels × in_size`) into `col`
/// (`channels·kernel_size × out_size`, row-major), zeros where a tap falls
/// in the padding.
pub fn im2col(g: &Geom3, channels: usize, x: &[f32], col: &mut [f32]) {
    let (in_size, out_size, ks) = (g.in_size(), g.out_size(), g.kernel_size());
    assert!(x.len() >= channels * in_size, "im2col: input too small");
    assert!(
        col.len() >= channels * ks * out_size,
        "im2col: col too small"
    );
    im2col_dispatch(g, channels, x, col);
}

multiversion!(fn im2col_dispatch(g: &Geom3, channels: usize, x: &[f32], col: &mut [f32]) => im2col_impl);

#[inline(always)]
fn im2col_impl(g: &Geom3, channels: usize, x: &[f32], col: &mut [f32]) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.strides;
    let [dd, dh, dw] = g.dilations;
    let [pd, ph, pw] = g.pads;
    let (in_size, out_size) = (g.in_size(), g.out_size());
    let mut row = 0;
    for c in 0..channels {
        let xc = &x[c * in_size..(c + 1) * in_size];
        for a in 0..kd {
            for b in 0..kh {
                for e in 0..kw {
                    let dst = &mut col[row * out_size..(row + 1) * out_size];
                    row += 1;
                    let off_w = (e * dw) as isize - pw as isize;
                    let (lo, hi) = valid_range(off_w, sw, iw, ow);
                    for z in 0..od {
                        let pz = (z * sd + a * dd) as isize - pd as isize;
                        let plane = &mut dst[z * oh * ow..(z + 1) * oh * ow];
                        if pz < 0 || pz >= id as isize {
                            plane.fill(0.0);
                            continue;
                        }
                        for y in 0..oh {
                            let py = (y * sh + b * dh) as isize - ph as isize;
                            let drow = &mut plane[y * ow..(y + 1) * ow];
                            if py < 0 || py >= ih as isize {
                                drow.fill(0.0);
                                continue;
                            }
                            let src = &xc[(pz as usize * ih + py as usize) * iw..][..iw];
                            drow[..lo].fill(0.0);
                            drow[hi..].fill(0.0);
                            if lo < hi {
                                let start = (lo * sw) as isize + off_w;
                                let start = start as usize;
                                if sw == 1 {
                                    drow[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                                } else {
                                    for (d, s) in
                                        drow[lo..hi].iter_mut().zip(src[start..].iter().step_by(sw))
                                    {
                                        *d = *s;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: adds every element of `col`
/// (`channels·kernel_size × out_size`) into the tap of `x`
/// (`channels × in_size`) it was read from; taps in the padding are dropped.
pub fn col2im(g: &Geom3, channels: usize, col: &[f32], x: &mut [f32]) {
    let (in_size, out_size, ks) = (g.in_size(), g.out_size(), g.kernel_size());
    assert!(x.len() >= channels * in_size, "col2im: image too small");
    assert!(
        col.len() >= channels * ks * out_size,
        "col2im: col too small"
    );
    col2im_dispatch(g, channels, col, x);
}

multiversion!(fn col2im_dispatch(g: &Geom3, channels: usize, col: &[f32], x: &mut [f32]) => col2im_impl);

#[inline(always)]
fn col2im_impl(g: &Geom3, channels: usize, col: &[f32], x: &mut [f32]) {
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.strides;
    let [dd, dh, dw] = g.dilations;
    let [pd, ph, pw] = g.pads;
    let (in_size, out_size) = (g.in_size(), g.out_size());
    let mut row = 0;
    for c in 0..channels {
        let xc = &mut x[c * in_size..(c + 1) * in_size];
        for a in 0..kd {
            for b in 0..kh {
                for e in 0..kw {
                    let src = &col[row * out_size..(row + 1) * out_size];
                    row += 1;
                    let off_w = (e * dw) as isize - pw as isize;
                    let (lo, hi) = valid_range(off_w, sw, iw, ow);
                    if lo >= hi {
                        continue;
                    }
                    for z in 0..od {
                        let pz = (z * sd + a * dd) as isize - pd as isize;
                        if pz < 0 || pz >= id as isize {
                            continue;
                        }
                        for y in 0..oh {
                            let py = (y * sh + b * dh) as isize - ph as isize;
                            if py < 0 || py >= ih as isize {
                                continue;
                            }
                            let srow = &src[(z * oh + y) * ow..][lo..hi];
                            let drow = &mut xc[(pz as usize * ih + py as usize) * iw..][..iw];
                            let start = ((lo * sw) as isize + off_w) as usize;
                            if sw == 1 {
                                for (d, s) in drow[start..start + hi - lo].iter_mut().zip(srow) {
                                    *d += *s;
                                }
                            } else {
                                for (d, s) in drow[start..].iter_mut().step_by(sw).zip(srow) {
                                    *d += *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference;

    fn geom(input: &[usize], k: &[usize], s: &[usize], d: &[usize], p: &[usize]) -> Geom3 {
        let out: Vec<usize> = (0..input.len())
            .map(|i| (input[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) / s[i] + 1)
            .collect();
        Geom3::lift(input, k, &out, s, d, p).unwrap()
    }

    fn check_conv(g: &Geom3, c: usize, m: usize) {
        let x: Vec<f32> = (0..c * g.in_size())
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let k = c * g.kernel_size();
        let w: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5) % 7) as f32 * 0.25 - 0.5)
            .collect();
        let mut col = vec![f32::NAN; k * g.out_size()];
        im2col(g, c, &x, &mut col);
        let mut y = vec![0.0; m * g.out_size()];
        crate::gemm::sgemm(m, g.out_size(), k, &w, &col, &mut y, 0.0, 1);
        let mut want = vec![0.0; m * g.out_size()];
        reference::conv(g, c, m, &x, &w, &mut want);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b} in {g:?}");
        }
    }

    #[test]
    fn im2col_gemm_matches_direct_conv() {
        check_conv(&geom(&[7, 6], &[3, 3], &[1, 1], &[1, 1], &[1, 1]), 2, 3);
        check_conv(&geom(&[9, 8], &[3, 2], &[2, 3], &[1, 2], &[2, 1]), 3, 2);
        check_conv(&geom(&[10], &[4], &[3], &[2], &[3]), 2, 2);
        check_conv(
            &geom(&[4, 5, 6], &[2, 3, 3], &[1, 2, 1], &[2, 1, 1], &[1, 0, 2]),
            2,
            2,
        );
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for all x, c.
        let g = geom(&[6, 7], &[3, 2], &[2, 1], &[1, 2], &[1, 2]);
        let ch = 2;
        let x: Vec<f32> = (0..ch * g.in_size())
            .map(|i| (i % 5) as f32 - 2.0)
            .collect();
        let n = ch * g.kernel_size() * g.out_size();
        let c: Vec<f32> = (0..n).map(|i| (i % 3) as f32 - 1.0).collect();
        let mut col = vec![0.0; n];
        im2col(&g, ch, &x, &mut col);
        let mut img = vec![0.0; x.len()];
        col2im(&g, ch, &c, &mut img);
        let lhs: f32 = col.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&img).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
    }
}
