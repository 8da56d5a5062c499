//! Packed-weight paths of QLinearConv and ConvInteger for 2-D convolutions:
//! group 1 as one int8 GEMM per image on NHWC data (1×1 stride 1 without
//! im2col, others through a u8 im2col), depthwise through a kernel
//! vectorised over channels. Output returns to NCHW in the epilogue.
//! `Ok(None)` sends the node to the scalar reference (other groups, 1-D/3-D,
//! non-constant weights), which also reports malformed inputs.

use super::conv::{AutoPad, ConvAttrs, MAX_ATTR};
use super::fast::{FastB, column_zero_points, ints};
use quench_ir::{Tensor, TensorData};
use quench_kernels::int8::conv::{
    Conv2d, DwWeights, Level, depthwise, im2col_nhwc, to_nhwc_u8, transpose,
};
use quench_kernels::int8::{self, AData, AMat, Out, PackedB, Post};

/// Weights prepared at build.
#[derive(Debug)]
pub(crate) enum FastW {
    /// group 1: `B[(ky*kw + kx)*C + ic][oc]`.
    Gemm { b: FastB, kh: usize, kw: usize },
    /// group = C = M: `w[(ky*kw + kx)*C + c] - zw[c]`, packed in tap pairs.
    Depthwise { w: DwWeights, kh: usize, kw: usize },
}

impl FastW {
    /// Prepares constant 4-D u8/s8 weights `[M, C/group, kh, kw]` with their
    /// zero point (absent, one value, or one per output channel).
    pub fn new(w: &Tensor, zp: Option<&Tensor>, group: usize) -> Option<FastW> {
        let &[m, cg, kh, kw] = w.shape() else {
            return None;
        };
        if m == 0 || cg == 0 || kh == 0 || kw == 0 {
            return None;
        }
        let zps = column_zero_points(zp, w.dtype(), m)?;
        let zp_of = |oc: usize| zps[if zps.len() == 1 { 0 } else { oc }];
        let taps = kh * kw;
        let vals = ints(w)?;
        if group == 1 {
            let k = taps * cg;
            let get = |kk: usize, oc: usize| vals[(oc * cg + kk % cg) * taps + kk / cg];
            let packed = match w.data() {
                TensorData::I8(_) => PackedB::from_fn(k, m, |kk, oc| get(kk, oc) as i8, &zps),
                _ => {
                    let z: Vec<i32> = zps.iter().map(|z| z - 128).collect();
                    PackedB::from_fn(k, m, |kk, oc| (get(kk, oc) - 128) as i8, &z)
                }
            };
            let b = FastB { packed };
            return Some(FastW::Gemm { b, kh, kw });
        }
        if group == m && cg == 1 {
            let shifted: Vec<i32> = (0..taps * m)
                .map(|i| vals[(i % m) * taps + i / m] - zp_of(i % m))
                .collect();
            let w = DwWeights::new(&shifted, m, taps)?;
            return Some(FastW::Depthwise { w, kh, kw });
        }
        None
    }

    fn kernel(&self) -> (usize, usize) {
        match self {
            FastW::Gemm { kh, kw, .. } | FastW::Depthwise { kh, kw, .. } => (*kh, *kw),
        }
    }

    fn out_channels(&self, c: usize) -> usize {
        match self {
            FastW::Gemm { b, .. } => b.n(),
            FastW::Depthwise { .. } => c,
        }
    }
}

/// The 2-D geometry for `x` of shape `[N, C, H, W]`, as the reference's
/// `geometry` resolves it; None for anything it would reject.
fn resolve(a: &ConvAttrs, h: usize, w: usize, kh: usize, kw: usize, c: usize) -> Option<Conv2d> {
    let two = |v: &Option<Vec<i64>>, len: usize, dflt: i64, min: i64| -> Option<Vec<i64>> {
        match v {
            None => Some(vec![dflt; len]),
            Some(v) if v.len() == len && v.iter().all(|&x| x >= min && x <= MAX_ATTR) => {
                Some(v.clone())
            }
            Some(_) => None,
        }
    };
    if let Some(ks) = &a.kernel_shape
        && ks.as_slice() != [kh as i64, kw as i64]
    {
        return None;
    }
    let s = two(&a.strides, 2, 1, 1)?;
    let d = two(&a.dilations, 2, 1, 1)?;
    let mut p = two(&a.pads, 4, 0, 0)?;
    let input = [h as i64, w as i64];
    let kernel = [kh as i64, kw as i64];
    let mut out = [0usize; 2];
    for i in 0..2 {
        let dk = (kernel[i] - 1) * d[i] + 1;
        match a.auto_pad {
            AutoPad::NotSet => {}
            AutoPad::Valid => {
                p[i] = 0;
                p[i + 2] = 0;
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = (input[i] + s[i] - 1) / s[i];
                let total = ((o - 1) * s[i] + dk - input[i]).max(0);
                let small = total / 2;
                (p[i], p[i + 2]) = if a.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
        }
        let span = input[i] + p[i] + p[i + 2];
        if span < dk {
            return None;
        }
        out[i] = ((span - dk) / s[i] + 1) as usize;
    }
    let u = |v: i64| v as usize;
    Some(Conv2d {
        c,
        h,
        w,
        kh,
        kw,
        sh: u(s[0]),
        sw: u(s[1]),
        dh: u(d[0]),
        dw: u(d[1]),
        pt: u(p[0]),
        pl: u(p[1]),
        oh: out[0],
        ow: out[1],
    })
}

/// What the output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutKind {
    I32,
    U8,
    I8,
}

/// Per-thread work buffers of [`run`].
#[derive(Default)]
struct Scratch {
    nhwc: Vec<u8>,
    cols: Vec<u8>,
    rows_u8: Vec<u8>,
    rows_i8: Vec<i8>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

/// Runs the convolution of `x` (zero point `x_zp`, one value) with the
/// prepared weights, finished by `post`. With `nhwc`, X is `[N, H, W, C]`
/// and u8/s8 results are `[N, OH, OW, M]` (no transposes at all).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    fw: &FastW,
    attrs: &ConvAttrs,
    x: &Tensor,
    x_zp: i32,
    post: &Post,
    kind: OutKind,
    threads: usize,
    nhwc: bool,
) -> Result<Option<Tensor>, quench_ir::IrError> {
    let (n, c, h, w) = match *x.shape() {
        [n, h, w, c] if nhwc => (n, c, h, w),
        [n, c, h, w] if !nhwc => (n, c, h, w),
        _ => return Ok(None),
    };
    if nhwc && kind == OutKind::I32 {
        return Ok(None);
    }
    let (kh, kw) = fw.kernel();
    let (data, shift) = match x.data() {
        TensorData::U8(v) => (AData::U8(v), 0),
        TensorData::I8(v) => (AData::I8(v), 128),
        _ => return Ok(None),
    };
    let m = fw.out_channels(c);
    let groups_ok = match fw {
        FastW::Gemm { b, .. } => b.k() == kh * kw * c,
        FastW::Depthwise { w, .. } => w.len() == kh * kw * c,
    };
    let Some(g) = resolve(attrs, h, w, kh, kw, c).filter(|_| groups_ok && c > 0) else {
        return Ok(None);
    };
    let zx = x_zp + shift;
    if !(0..=255).contains(&zx) {
        return Ok(None);
    }
    let (hw, plane) = (h * w, g.oh * g.ow);
    let shape = if nhwc {
        vec![n, g.oh, g.ow, m]
    } else {
        vec![n, m, g.oh, g.ow]
    };
    let total = quench_ir::tensor::checked_numel(&shape)?;
    // Reused per thread: the kernels overwrite every byte they read back,
    // so fresh zero-filled buffers per call were pure memset time.
    let mut sc = SCRATCH.with(|s| s.take());
    let Scratch {
        nhwc: nhwc_buf,
        cols,
        rows_u8,
        rows_i8,
    } = &mut sc;
    if !nhwc || matches!(data, AData::I8(_)) {
        nhwc_buf.resize(hw * c, 0);
    }
    let mut out_i32 = Vec::new();
    let mut out_u8 = Vec::new();
    let mut out_i8 = Vec::new();
    match kind {
        OutKind::I32 => out_i32 = vec![0i32; total],
        OutKind::U8 => out_u8 = vec![0u8; total],
        OutKind::I8 => out_i8 = vec![0i8; total],
    }
    // u8/s8 results are written NHWC (whole rows) and transposed once:
    // per-element transposed stores cost more than the product itself.
    match kind {
        OutKind::U8 if !nhwc => rows_u8.resize(m * plane, 0),
        OutKind::I8 if !nhwc => rows_i8.resize(m * plane, 0),
        _ => {}
    }
    for img in 0..n {
        let src = match data {
            AData::U8(v) => AData::U8(&v[img * c * hw..(img + 1) * c * hw]),
            AData::I8(v) => AData::I8(&v[img * c * hw..(img + 1) * c * hw]),
        };
        // The kernels read u8 NHWC rows: NCHW input is transposed, NHWC s8 shifted.
        let x_rows: &[u8] = match (nhwc, src) {
            (true, AData::U8(v)) => v,
            (true, AData::I8(v)) => {
                for (d, &s) in nhwc_buf.iter_mut().zip(v) {
                    *d = s as u8 ^ 0x80;
                }
                &nhwc_buf[..]
            }
            (false, _) => {
                to_nhwc_u8(src, c, hw, nhwc_buf);
                &nhwc_buf[..]
            }
        };
        let range = img * m * plane..(img + 1) * m * plane;
        let (out, trans) = match (kind, nhwc) {
            (OutKind::I32, _) => (Out::I32(&mut out_i32[range.clone()]), true),
            (OutKind::U8, true) => (Out::U8(&mut out_u8[range.clone()]), false),
            (OutKind::I8, true) => (Out::I8(&mut out_i8[range.clone()]), false),
            (OutKind::U8, false) => (Out::U8(&mut rows_u8[..m * plane]), false),
            (OutKind::I8, false) => (Out::I8(&mut rows_i8[..m * plane]), false),
        };
        let ld = if trans { plane } else { m };
        match fw {
            FastW::Gemm { b, .. } => {
                let k = b.k();
                let a = if g.is_pointwise() {
                    &x_rows[..hw * c]
                } else {
                    // 4 spare bytes: the kernels read the last row in whole groups of 4.
                    cols.resize(plane * k + 4, 0);
                    cols[plane * k..].fill(0);
                    im2col_nhwc(x_rows, &g, zx as u8, cols, k);
                    &cols[..]
                };
                let am = AMat {
                    data: AData::U8(a),
                    m: plane,
                    k,
                    lda: k,
                    zero_points: &[zx],
                };
                int8::gemm(&am, &b.packed, post, out, ld, trans, threads);
            }
            FastW::Depthwise { w, .. } => depthwise(
                &x_rows[..hw * c],
                zx as u8,
                w,
                &g,
                post,
                out,
                trans,
                Level::detect(),
                threads,
            ),
        }
        match kind {
            OutKind::U8 if !nhwc => {
                transpose(&rows_u8[..m * plane], plane, m, &mut out_u8[range], false)
            }
            OutKind::I8 if !nhwc => {
                transpose(&rows_i8[..m * plane], plane, m, &mut out_i8[range], false)
            }
            _ => {}
        }
    }
    SCRATCH.with(|s| s.set(sc));
    super::fast::hit();
    Ok(Some(match kind {
        OutKind::I32 => Tensor::from_vec(shape, out_i32)?,
        OutKind::U8 => Tensor::from_vec(shape, out_u8)?,
        OutKind::I8 => Tensor::from_vec(shape, out_i8)?,
    }))
}
