//! fp32 convolution kernels: im2col/col2im feeding the GEMM, and a direct
//! depthwise kernel. Spatial ranks 1..=3 are lifted to 3-D (leading extents
//! of 1) so that one code path serves Conv1d, Conv2d and Conv3d.

mod depthwise;
mod epilogue;
mod im2col;
pub(crate) mod isa;
pub mod nchwc;

pub use depthwise::depthwise2d;
pub use epilogue::{Act, epilogue};
pub use im2col::{col2im, im2col};

/// Spatial geometry of one convolution, lifted to (depth, height, width).
///
/// `input`/`output` are the spatial extents of the convolution's input and
/// output; for a transposed convolution they are swapped (its output is the
/// image the adjoint col2im writes into).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geom3 {
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub output: [usize; 3],
    pub strides: [usize; 3],
    pub dilations: [usize; 3],
    /// Padding before each spatial dim (padding after only shapes `output`).
    pub pads: [usize; 3],
}

impl Geom3 {
    /// Lifts per-dim attributes of rank 1..=3 to 3-D; `None` for other ranks.
    pub fn lift(
        input: &[usize],
        kernel: &[usize],
        output: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads: &[usize],
    ) -> Option<Geom3> {
        let r = input.len();
        if r == 0 || r > 3 {
            return None;
        }
        let all = [kernel, output, strides, dilations, pads];
        if all.iter().any(|v| v.len() != r) {
            return None;
        }
        let lift = |v: &[usize], fill: usize| {
            let mut a = [fill; 3];
            a[3 - r..].copy_from_slice(v);
            a
        };
        Some(Geom3 {
            input: lift(input, 1),
            kernel: lift(kernel, 1),
            output: lift(output, 1),
            strides: lift(strides, 1),
            dilations: lift(dilations, 1),
            pads: lift(pads, 0),
        })
    }

    pub fn in_size(&self) -> usize {
        self.input.iter().product()
    }

    pub fn out_size(&self) -> usize {
        self.output.iter().product()
    }

    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }

    /// True when the convolution reads its input exactly as a GEMM operand
    /// (1×1 kernel, stride 1, no padding): im2col would be a copy.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1; 3] && self.strides == [1; 3] && self.pads == [0; 3] && {
            self.input == self.output
        }
    }
}

/// Output positions `o` in `0..n_out` whose tap `o * stride + off` lies in
/// `0..n_in`, as a half-open range (empty when none do).
#[inline]
pub fn valid_range(off: isize, stride: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let last = n_in as isize - 1 - off;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    let hi = (hi as usize).min(n_out);
    let lo = (lo as usize).min(hi);
    (lo, hi)
}

#[cfg(test)]
pub(crate) mod reference {
    use super::Geom3;

    /// Direct convolution of one group: `x` is `c × in`, `w` is `m × c × k`.
    pub fn conv(g: &Geom3, c: usize, m: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
        let [od, oh, ow] = g.output;
        let [kd, kh, kw] = g.kernel;
        let [id, ih, iw] = g.input;
        for mo in 0..m {
            for z in 0..od {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let mut acc = 0.0f32;
                        for ci in 0..c {
                            for a in 0..kd {
                                for b in 0..kh {
                                    for e in 0..kw {
                                        let pz = (z * g.strides[0] + a * g.dilations[0]) as isize
                                            - g.pads[0] as isize;
                                        let py = (yy * g.strides[1] + b * g.dilations[1]) as isize
                                            - g.pads[1] as isize;
                                        let px = (xx * g.strides[2] + e * g.dilations[2]) as isize
                                            - g.pads[2] as isize;
                                        if pz < 0
                                            || py < 0
                                            || px < 0
                                            || pz >= id as isize
                                            || py >= ih as isize
                                            || px >= iw as isize
                                        {
                                            continue;
                                        }
                                        let xi = ((ci * id + pz as usize) * ih + py as usize) * iw
                                            + px as usize;
                                        let wi = (((mo * c + ci) * kd + a) * kh + b) * kw + e;
                                        acc += x[xi] * w[wi];
                                    }
                                }
                            }
                        }
                        y[((mo * od + z) * oh + yy) * ow + xx] = acc;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for off in -5isize..5 {
            for stride in 1..4 {
                for n_in in 0..6 {
                    for n_out in 0..7 {
                        let ok: Vec<usize> = (0..n_out)
                            .filter(|&o| {
                                let p = (o * stride) as isize + off;
                                p >= 0 && p < n_in as isize
                            })
                            .collect();
                        let (lo, hi) = valid_range(off, stride, n_in, n_out);
                        assert_eq!(ok, (lo..hi).collect::<Vec<_>>(), "{off} {stride} {n_in}");
                    }
                }
            }
        }
    }

    #[test]
    fn lift_refuses_bad_ranks() {
        assert!(Geom3::lift(&[], &[], &[], &[], &[], &[]).is_none());
        assert!(Geom3::lift(&[4], &[3, 3], &[2], &[1], &[1], &[0]).is_none());
        let g = Geom3::lift(&[5], &[3], &[3], &[1], &[1], &[0]).unwrap();
        assert_eq!(g.input, [1, 1, 5]);
    }
}
