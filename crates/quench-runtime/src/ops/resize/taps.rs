//! Per-axis sampling plans for Resize, following the ONNX reference: each
//! output coordinate maps to a source coordinate (`x_ori`), then to either one
//! source index (nearest) or a window of weighted source indices.

use crate::ops::shape::common::FILL;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Opset < 11 (and Upsample): truncate, or ceil when downsampling.
    Simple,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Interp {
    Linear,
    Cubic(f64),
}

/// One axis's geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub in_w: usize,
    pub out_w: usize,
    pub scale: f64,
    /// Region of interest start/end, normalised (tf_crop_and_resize only).
    pub roi: (f64, f64),
}

impl Axis {
    /// The source coordinate of output index `y`, or `None` when
    /// tf_crop_and_resize samples outside the input (extrapolation).
    pub fn source(&self, coord: Coord, y: usize) -> Option<f64> {
        let (y, in_w) = (y as f64, self.in_w as f64);
        let out_f = self.scale * in_w;
        Some(match coord {
            Coord::HalfPixel => (y + 0.5) / self.scale - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = self.out_w as f64 / out_f;
                let offset = in_w / 2.0 * (1.0 - adjustment);
                offset + (y + 0.5) / self.scale - 0.5
            }
            Coord::PytorchHalfPixel if out_f == 1.0 => -0.5,
            Coord::PytorchHalfPixel => (y + 0.5) / self.scale - 0.5,
            Coord::AlignCorners if out_f == 1.0 => 0.0,
            Coord::AlignCorners => y * (in_w - 1.0) / (out_f - 1.0),
            Coord::Asymmetric => y / self.scale,
            Coord::TfHalfPixelForNn => (y + 0.5) / self.scale,
            Coord::TfCropAndResize => {
                let (s, e) = self.roi;
                let x = if out_f == 1.0 {
                    (e - s) * (in_w - 1.0) / 2.0
                } else {
                    y * (e - s) * (in_w - 1.0) / (out_f - 1.0)
                } + s * (in_w - 1.0);
                if x < 0.0 || x > in_w - 1.0 {
                    return None;
                }
                x
            }
        })
    }

    /// Source index of every output index for nearest mode ([`FILL`] where
    /// extrapolated).
    pub fn nearest_map(&self, coord: Coord, mode: Nearest) -> Vec<usize> {
        let last = self.in_w as i64 - 1;
        (0..self.out_w)
            .map(|y| match self.source(coord, y) {
                None => FILL,
                Some(x) => {
                    let f = x.floor();
                    let r = x - f;
                    let i = if r == 0.0 {
                        f
                    } else {
                        match mode {
                            Nearest::RoundPreferFloor if r <= 0.5 => f,
                            Nearest::RoundPreferCeil if r < 0.5 => f,
                            Nearest::RoundPreferFloor | Nearest::RoundPreferCeil => f + 1.0,
                            Nearest::Floor => f,
                            Nearest::Ceil => f + 1.0,
                            Nearest::Simple if self.scale < 1.0 => f + 1.0,
                            Nearest::Simple => f,
                        }
                    };
                    (i as i64).clamp(0, last.max(0)) as usize
                }
            })
            .collect()
    }

    /// The weighted windows of linear or cubic interpolation.
    pub fn taps(
        &self,
        coord: Coord,
        interp: Interp,
        antialias: bool,
        exclude_outside: bool,
    ) -> Taps {
        let n = window(interp, antialias, self.scale);
        let mut t = Taps {
            n,
            idx: Vec::with_capacity(self.out_w * n),
            w: Vec::with_capacity(self.out_w * n),
            extrapolated: vec![false; self.out_w],
        };
        let last = self.in_w as i64 - 1;
        let mut c = vec![0.0; n];
        for y in 0..self.out_w {
            let Some(x) = self.source(coord, y) else {
                t.extrapolated[y] = true;
                t.idx.extend(std::iter::repeat_n(0, n));
                t.w.extend(std::iter::repeat_n(0.0, n));
                continue;
            };
            let f = x.floor();
            let ratio = if x == f { 1.0 } else { x - f };
            coeffs(interp, antialias, ratio, self.scale, &mut c);
            // The n indices nearest to x, ties towards the smaller ones.
            let pad = n.div_ceil(2) as f64;
            let xp = x + pad;
            let p = xp.floor();
            let frac = xp - p;
            let half = (n / 2) as i64;
            let off = if n.is_multiple_of(2) {
                if frac == 0.0 { -half } else { -half + 1 }
            } else {
                let base = -(((n - 1) / 2) as i64);
                if frac <= 0.5 { base } else { base + 1 }
            };
            let start = p as i64 + off - pad as i64;
            if exclude_outside {
                for (k, ck) in c.iter_mut().enumerate() {
                    let i = start + k as i64;
                    if i < 0 || i > last {
                        *ck = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                c.iter_mut().for_each(|ck| *ck /= sum);
            }
            for (k, &ck) in c.iter().enumerate() {
                t.idx
                    .push((start + k as i64).clamp(0, last.max(0)) as usize);
                t.w.push(ck);
            }
        }
        t
    }
}

/// Window size of the interpolation kernel.
fn window(interp: Interp, antialias: bool, scale: f64) -> usize {
    let s = scale.min(1.0);
    match (interp, antialias) {
        (Interp::Linear, false) => 2,
        (Interp::Cubic(_), false) => 4,
        (Interp::Linear, true) => (2 - 2 * ((-1.0 / s).floor() as i64 + 1)) as usize,
        (Interp::Cubic(_), true) => (2 - 2 * ((-2.0 / s).floor() as i64 + 1)) as usize,
    }
}

fn cubic(a: f64, x: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// Kernel weights for a source coordinate `ratio` past its window's anchor.
fn coeffs(interp: Interp, antialias: bool, ratio: f64, scale: f64, out: &mut [f64]) {
    let s = scale.min(1.0);
    match (interp, antialias) {
        (Interp::Linear, false) => {
            out[0] = 1.0 - ratio;
            out[1] = ratio;
        }
        (Interp::Cubic(a), false) => {
            for (k, o) in out.iter_mut().enumerate() {
                *o = cubic(a, k as f64 - 1.0 - ratio);
            }
        }
        (Interp::Linear, true) => {
            let start = (-1.0 / s).floor() as i64 + 1;
            for (k, o) in out.iter_mut().enumerate() {
                let arg = ((start + k as i64) as f64 - ratio) * s;
                *o = (1.0 - arg.abs()).clamp(0.0, 1.0);
            }
        }
        (Interp::Cubic(a), true) => {
            let start = (-2.0 / s).floor() as i64 + 1;
            for (k, o) in out.iter_mut().enumerate() {
                *o = cubic(a, s * ((start + k as i64) as f64 - ratio));
            }
        }
    }
    if antialias {
        let sum: f64 = out.iter().sum();
        if sum != 0.0 {
            out.iter_mut().for_each(|o| *o /= sum);
        }
    }
}

/// `n` (index, weight) pairs per output index; indices are clamped in range.
#[derive(Debug)]
pub(crate) struct Taps {
    pub n: usize,
    pub idx: Vec<usize>,
    pub w: Vec<f64>,
    pub extrapolated: Vec<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(in_w: usize, out_w: usize) -> Axis {
        Axis {
            in_w,
            out_w,
            scale: out_w as f64 / in_w as f64,
            roi: (0.0, 1.0),
        }
    }

    #[test]
    fn nearest_upsample_by_two() {
        let a = axis(2, 4);
        assert_eq!(
            a.nearest_map(Coord::Asymmetric, Nearest::Floor),
            vec![0, 0, 1, 1]
        );
        assert_eq!(
            a.nearest_map(Coord::HalfPixel, Nearest::RoundPreferFloor),
            vec![0, 0, 1, 1]
        );
        assert_eq!(
            a.nearest_map(Coord::AlignCorners, Nearest::RoundPreferCeil),
            vec![0, 0, 1, 1]
        );
    }

    #[test]
    fn linear_half_pixel_weights() {
        let t = axis(2, 4).taps(Coord::HalfPixel, Interp::Linear, false, false);
        // x_ori = -0.25, 0.25, 0.75, 1.25
        assert_eq!(t.idx, vec![0, 0, 0, 1, 0, 1, 1, 1]);
        assert_eq!(t.w, vec![0.25, 0.75, 0.75, 0.25, 0.25, 0.75, 0.75, 0.25]);
    }

    #[test]
    fn cubic_at_integer_picks_the_sample() {
        let t = axis(4, 4).taps(Coord::Asymmetric, Interp::Cubic(-0.75), false, false);
        assert_eq!(&t.w[4..8], &[0.0, 0.0, 1.0, 0.0]);
        assert_eq!(&t.idx[4..8], &[0, 0, 1, 2]);
    }
}
