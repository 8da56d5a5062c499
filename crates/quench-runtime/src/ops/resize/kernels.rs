//! Separable interpolation passes: one axis at a time, viewing the tensor as
//! `[outer, width, inner]`. When `inner > 1` each output row is a weighted sum
//! of whole contiguous input rows, which vectorises well (the H pass of an
//! NCHW upsample); when `inner == 1` it is a short gather per element.

use super::taps::Taps;
use rayon::prelude::*;

/// The float types interpolation computes in.
pub(crate) trait Real:
    Copy + Send + Sync + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + 'static
{
    fn of(x: f64) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
}

/// Work (output elements) below which a pass stays on one thread.
const PAR_MIN: usize = 1 << 16;

/// Resamples the middle axis of `src` viewed as `[outer, in_w, inner]`.
pub(crate) fn pass<F: Real>(
    src: &[F],
    outer: usize,
    in_w: usize,
    inner: usize,
    taps: &Taps,
    fill: F,
    threads: usize,
) -> Vec<F> {
    let out_w = taps.extrapolated.len();
    let n = taps.n;
    let w: Vec<F> = taps.w.iter().map(|&x| F::of(x)).collect();
    let mut out = vec![F::default(); outer * out_w * inner];
    if out.is_empty() {
        return out;
    }
    let block = |(o, dst): (usize, &mut [F])| {
        let s = &src[o * in_w * inner..(o + 1) * in_w * inner];
        for y in 0..out_w {
            let d = &mut dst[y * inner..(y + 1) * inner];
            if taps.extrapolated[y] {
                d.fill(fill);
                continue;
            }
            let (idx, wy) = (&taps.idx[y * n..(y + 1) * n], &w[y * n..(y + 1) * n]);
            match (inner, n) {
                (1, 2) => d[0] = wy[0] * s[idx[0]] + wy[1] * s[idx[1]],
                (1, _) => {
                    let mut acc = F::default();
                    for k in 0..n {
                        acc = acc + wy[k] * s[idx[k]];
                    }
                    d[0] = acc;
                }
                (_, 2) => {
                    let r0 = &s[idx[0] * inner..(idx[0] + 1) * inner];
                    let r1 = &s[idx[1] * inner..(idx[1] + 1) * inner];
                    for ((dv, &a), &b) in d.iter_mut().zip(r0).zip(r1) {
                        *dv = wy[0] * a + wy[1] * b;
                    }
                }
                _ => {
                    let r0 = &s[idx[0] * inner..(idx[0] + 1) * inner];
                    for (dv, &sv) in d.iter_mut().zip(r0) {
                        *dv = wy[0] * sv;
                    }
                    for k in 1..n {
                        let rk = &s[idx[k] * inner..(idx[k] + 1) * inner];
                        for (dv, &sv) in d.iter_mut().zip(rk) {
                            *dv = *dv + wy[k] * sv;
                        }
                    }
                }
            }
        }
    };
    let chunk = out_w * inner;
    if threads > 1 && out.len() >= PAR_MIN && outer > 1 {
        out.par_chunks_mut(chunk).enumerate().for_each(block);
    } else {
        out.chunks_mut(chunk).enumerate().for_each(block);
    }
    out
}

/// Nearest upsampling of the last two axes of `[planes, h, w]` by index
/// maps: each output row is built once and copied for repeated source rows.
pub(crate) fn nearest_2d<T: Clone + Send + Sync>(
    src: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (hmap, wmap): (&[usize], &[usize]),
    threads: usize,
) -> Vec<T> {
    let (oh, ow) = (hmap.len(), wmap.len());
    let plane = |p: usize, out: &mut Vec<T>| {
        let s = &src[p * h * w..(p + 1) * h * w];
        let mut prev: Option<usize> = None;
        for &iy in hmap {
            if prev == Some(iy) {
                let start = out.len() - ow;
                out.extend_from_within(start..);
            } else {
                let row = &s[iy * w..(iy + 1) * w];
                out.extend(wmap.iter().map(|&ix| row[ix].clone()));
            }
            prev = Some(iy);
        }
    };
    if threads > 1 && planes > 1 && planes * oh * ow >= PAR_MIN {
        let parts: Vec<Vec<T>> = (0..planes)
            .into_par_iter()
            .map(|p| {
                let mut v = Vec::with_capacity(oh * ow);
                plane(p, &mut v);
                v
            })
            .collect();
        parts.concat()
    } else {
        let mut out = Vec::with_capacity(planes * oh * ow);
        for p in 0..planes {
            plane(p, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_matches_scalar_sum() {
        let taps = Taps {
            n: 2,
            idx: vec![0, 1, 1, 1],
            w: vec![0.5, 0.5, 1.0, 0.0],
            extrapolated: vec![false, false],
        };
        // [outer=1, in_w=2, inner=2]
        let y = pass(&[1f32, 2.0, 3.0, 4.0], 1, 2, 2, &taps, 0.0, 1);
        assert_eq!(y, vec![2.0, 3.0, 3.0, 4.0]);
        // [outer=2, in_w=2, inner=1]
        let y = pass(&[1f64, 3.0, 5.0, 7.0], 2, 2, 1, &taps, 0.0, 1);
        assert_eq!(y, vec![2.0, 3.0, 6.0, 7.0]);
    }

    #[test]
    fn nearest_2d_repeats_rows() {
        let y = nearest_2d(&[1, 2, 3, 4], 1, (2, 2), (&[0, 0, 1, 1], &[0, 0, 1, 1]), 1);
        assert_eq!(y, vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    }
}
