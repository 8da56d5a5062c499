//! fp32 convolution in the blocked NCHWc layout (`[N][C/16][H][W][16]`,
//! channels padded with zeros to a multiple of 16), the layout ONNX Runtime
//! also switches CNNs to. Output channels are the vector dimension, so a
//! convolution needs neither im2col nor packing of its input: a register
//! tile of positions × 64 output channels reads each input value once per
//! tap as a broadcast, and 1×1, K×K, strided and depthwise convolutions
//! share one kernel shape. Weights are packed once, at build time.
//!
//! A network's first convolution usually has 3 input channels: padding them
//! to 16 would multiply its work by 5, so it reads an NHWC copy instead
//! (the "small input" packing, one block of C channels).

mod kernel;
mod reorder;
mod simd;

use super::Act;
use super::isa::{Isa, isa};
use kernel::{ConvCtx, Span, conv_tile, depthwise_tile};
use rayon::prelude::*;
pub use reorder::{nchw_to_nchwc, nchw_to_nhwc, nchwc_to_nchw};
pub use simd::LANES;
use simd::{Portable, V16};
use std::mem::MaybeUninit;

/// True when this CPU runs the NCHWc kernels with AVX-512 (elsewhere they
/// run portable code, correct but slower than the im2col + GEMM path).
pub fn fast() -> bool {
    isa() == Isa::Avx512
}

/// Channel blocks for `c` channels.
pub fn blocks(c: usize) -> usize {
    c.div_ceil(LANES)
}

/// Geometry of one 2-D convolution (`ph`/`pw`: padding before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom2 {
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
}

/// Most output blocks one tile covers (4 × 16 channels × 6 positions fills
/// 24 of the 32 zmm registers).
const MAX_F: usize = 4;

/// Widest tile for `f` output blocks.
fn max_t(f: usize) -> usize {
    match f {
        1 | 2 => 12,
        3 => 8,
        _ => 6,
    }
}

/// Dense (group 1) convolution weights packed for the NCHWc kernel.
#[derive(Clone, Debug)]
pub struct PackedConv {
    pub m: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    /// Input is NHWC with all `c` channels in one block (first layers).
    pub small_input: bool,
    cb: usize,
    n_icb: usize,
    /// (first output block, blocks, offset into `data`) of each group.
    groups: Vec<(usize, usize, usize)>,
    data: Vec<f32>,
    bias: Vec<f32>,
}

/// Inputs with at most this many channels are read as NHWC, unpadded.
pub const SMALL_INPUT: usize = 8;

impl PackedConv {
    /// Packs `w` (`[m][c][kh][kw]`, ONNX order) and `bias` (`m` values).
    pub fn new(w: &[f32], bias: Option<&[f32]>, m: usize, c: usize, kh: usize, kw: usize) -> Self {
        assert!(w.len() >= m * c * kh * kw, "PackedConv: weights too short");
        assert!(
            bias.is_none_or(|b| b.len() >= m),
            "PackedConv: bias too short"
        );
        let small_input = c <= SMALL_INPUT;
        let (cb, n_icb) = if small_input {
            (c, 1)
        } else {
            (LANES, blocks(c))
        };
        let n_ocb = blocks(m);
        let n_groups = n_ocb.div_ceil(MAX_F);
        let mut groups = Vec::with_capacity(n_groups);
        let mut data = aligned_vec(n_ocb * LANES * n_icb * cb * kh * kw);
        let mut ocb0 = 0;
        for gi in 0..n_groups {
            // Balanced: 6 blocks make 3 + 3, not 4 + 2.
            let f = (n_ocb - ocb0).div_ceil(n_groups - gi);
            groups.push((ocb0, f, data.len()));
            for icb in 0..n_icb {
                for ky in 0..kh {
                    for kx in 0..kw {
                        for ci in 0..cb {
                            let ic = icb * cb + ci;
                            for fb in 0..f {
                                for l in 0..LANES {
                                    let oc = (ocb0 + fb) * LANES + l;
                                    data.push(if oc < m && ic < c {
                                        w[((oc * c + ic) * kh + ky) * kw + kx]
                                    } else {
                                        0.0
                                    });
                                }
                            }
                        }
                    }
                }
            }
            ocb0 += f;
        }
        let mut b = vec![0.0; n_ocb * LANES];
        if let Some(bias) = bias {
            b[..m].copy_from_slice(&bias[..m]);
        }
        PackedConv {
            m,
            c,
            kh,
            kw,
            small_input,
            cb,
            n_icb,
            groups,
            data,
            bias: b,
        }
    }

    /// Floats of one input image in the layout this convolution reads.
    pub fn input_len(&self, g: &Geom2) -> usize {
        let per_pos = if self.small_input {
            self.c
        } else {
            self.n_icb * LANES
        };
        per_pos * g.in_h * g.in_w
    }
}

/// Depthwise (group = C = M) weights packed per channel block: `[cb][ky][kx][16]`.
#[derive(Clone, Debug)]
pub struct PackedDepthwise {
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    /// `data[off..]` is 64-byte aligned.
    off: usize,
    data: Vec<f32>,
    bias: Vec<f32>,
}

/// An empty vector for `n` more floats, padded with zeros up to the first
/// 64-byte boundary: every packed weight vector then sits in one cache line
/// (a vector split across two costs two loads, the kernels' main stream).
fn aligned_vec(n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n + LANES);
    let pad = (v.as_ptr() as usize).wrapping_neg() % 64 / 4;
    v.resize(pad, 0.0);
    v
}

impl PackedDepthwise {
    /// Packs `w` (`[c][1][kh][kw]`) and `bias` (`c` values).
    pub fn new(w: &[f32], bias: Option<&[f32]>, c: usize, kh: usize, kw: usize) -> Self {
        assert!(w.len() >= c * kh * kw, "PackedDepthwise: weights too short");
        assert!(
            bias.is_none_or(|b| b.len() >= c),
            "PackedDepthwise: bias too short"
        );
        let n = blocks(c);
        let mut data = aligned_vec(n * kh * kw * LANES);
        let off = data.len();
        data.resize(off + n * kh * kw * LANES, 0.0);
        for ch in 0..c {
            for t in 0..kh * kw {
                data[off + ((ch / LANES) * kh * kw + t) * LANES + ch % LANES] = w[ch * kh * kw + t];
            }
        }
        let mut b = vec![0.0; n * LANES];
        if let Some(bias) = bias {
            b[..c].copy_from_slice(&bias[..c]);
        }
        PackedDepthwise {
            c,
            kh,
            kw,
            off,
            data,
            bias: b,
        }
    }
}

/// Raw output pointer shared by the workers of one call; each writes
/// disjoint tiles.
#[derive(Clone, Copy)]
struct Shared(ConvCtx);
// Safety: workers only write disjoint tiles of `y` and read the rest.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// (A method, so closures capture the `Sync` wrapper, not its field.)
    fn ctx(&self) -> ConvCtx {
        self.0
    }
}

/// Input bytes one chunk of work should touch: the chunk's input and one
/// group's weights stay in the 2 MiB L2 while every group passes over it.
const CHUNK_BYTES: usize = 512 * 1024;

/// Weight bytes one pass keeps in the 48 KiB L1 (the partial sums go
/// through `y` between passes).
const L1_WEIGHTS: usize = 32 * 1024;

/// How many pieces of at most `max` items `n` items need (at least 1).
fn split(n: usize, max: usize) -> usize {
    n.div_ceil(max.max(1)).max(1)
}

/// Start and length of piece `i` of `n` items split into `parts` pieces.
fn piece(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let (base, extra) = (n / parts, n % parts);
    (i * base + i.min(extra), base + usize::from(i < extra))
}

/// One image of a dense convolution: `x` in the packing's input layout
/// (NCHWc, or NHWC for a small input), `y` (and `residual`) NCHWc with
/// `blocks(m)` blocks of `out_h × out_w`. Computes `act(conv + bias + residual)`.
pub fn conv(
    p: &PackedConv,
    g: &Geom2,
    x: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    y: &mut [f32],
    threads: usize,
) {
    conv_into(p, g, x, residual, act, as_uninit(y), threads)
}

/// Views initialised floats as possibly uninitialised ones (always sound).
fn as_uninit(y: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // Safety: same layout; MaybeUninit only widens what may be stored.
    unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// [`conv`] into an uninitialised output: every float of the first
/// `blocks(m)·16·out_h·out_w` is written (before any is read), so a fresh
/// buffer needs no zeroing pass.
pub fn conv_into(
    p: &PackedConv,
    g: &Geom2,
    x: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    y: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    assert!(g.kh == p.kh && g.kw == p.kw, "nchwc::conv: kernel mismatch");
    assert!(g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0);
    let out_len = blocks(p.m) * LANES * g.out_h * g.out_w;
    assert!(x.len() >= p.input_len(g), "nchwc::conv: input too short");
    assert!(y.len() >= out_len, "nchwc::conv: output too short");
    assert!(residual.is_none_or(|r| r.len() >= out_len));
    if out_len == 0 {
        return;
    }
    let col = if p.small_input { p.c } else { LANES };
    let ctx = ConvCtx {
        x: x.as_ptr(),
        cb: p.cb,
        icb_stride: g.in_h * g.in_w * LANES,
        row_stride: g.in_w * col,
        col_stride: col,
        in_h: g.in_h,
        in_w: g.in_w,
        kh: g.kh,
        kw: g.kw,
        sh: g.sh,
        sw: g.sw,
        dh: g.dh,
        dw: g.dw,
        ph: g.ph,
        pw: g.pw,
        y: y.as_mut_ptr() as *mut f32,
        res: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
        out_w: g.out_w,
        y_block: g.out_h * g.out_w * LANES,
        act,
    };
    // Work = (chunk of output positions, group); the chunk's input stays
    // in L2 while each group passes over it.
    let positions = g.out_h * g.out_w;
    let in_per_pos = p.n_icb * p.cb.max(1) * 4 * g.sh * g.sw;
    let n_chunks = split(positions, (CHUNK_BYTES / in_per_pos.max(1)).max(1));
    let n_groups = p.groups.len();
    let shared = Shared(ctx);
    let work = |chunk: usize, gi: usize| {
        let c = shared.ctx();
        let (ocb0, f, off) = p.groups[gi];
        let w = p.data[off..].as_ptr();
        let bias = p.bias[ocb0 * LANES..].as_ptr();
        let (q0, n) = piece(positions, n_chunks, chunk);
        // Input blocks per pass: that many blocks of this group's weights
        // stay in L1 while the pass goes over every position of the chunk.
        let per_icb = p.kh * p.kw * p.cb * f * LANES * 4;
        let step = (L1_WEIGHTS / per_icb.max(1)).max(1);
        let passes = split(p.n_icb, step);
        let pass_len = p.kh * p.kw * p.cb * f * LANES;
        for pass in 0..passes {
            let (icb0, k) = piece(p.n_icb, passes, pass);
            let span = Span {
                icb0,
                icb1: icb0 + k,
                first: pass == 0,
                last: pass + 1 == passes,
            };
            // The weights that follow this pass's (the next pass's, or the
            // next group's first): fetched into L2 while this pass computes,
            // so layers with more weights than L2 do not wait on memory.
            let next = (off + (icb0 + k) * pass_len).min(p.data.len());
            let end = (next + k * pass_len).min(p.data.len());
            let pf = &p.data[next..end];
            // Safety: the asserts above bound every access of the tiles.
            unsafe { run_tiles(&c, w, bias, f, ocb0, q0, n, span, pf.as_ptr(), pf.len()) };
        }
    };
    if threads > 1 {
        (0..n_chunks * n_groups)
            .into_par_iter()
            .for_each(|i| work(i / n_groups, i % n_groups));
    } else {
        for chunk in 0..n_chunks {
            for gi in 0..n_groups {
                work(chunk, gi);
            }
        }
    }
}

/// One image of a depthwise convolution, NCHWc in and out (`blocks(c)` blocks).
pub fn depthwise(
    p: &PackedDepthwise,
    g: &Geom2,
    x: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    y: &mut [f32],
    threads: usize,
) {
    depthwise_into(p, g, x, residual, act, as_uninit(y), threads)
}

/// [`depthwise`] into an uninitialised output (every float is written).
pub fn depthwise_into(
    p: &PackedDepthwise,
    g: &Geom2,
    x: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    y: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    assert!(
        g.kh == p.kh && g.kw == p.kw,
        "nchwc::depthwise: kernel mismatch"
    );
    assert!(g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0);
    let nb = blocks(p.c);
    let out_len = nb * LANES * g.out_h * g.out_w;
    assert!(
        x.len() >= nb * LANES * g.in_h * g.in_w,
        "nchwc::depthwise: input too short"
    );
    assert!(y.len() >= out_len, "nchwc::depthwise: output too short");
    assert!(residual.is_none_or(|r| r.len() >= out_len));
    if out_len == 0 {
        return;
    }
    let ctx = ConvCtx {
        x: x.as_ptr(),
        cb: LANES,
        icb_stride: g.in_h * g.in_w * LANES,
        row_stride: g.in_w * LANES,
        col_stride: LANES,
        in_h: g.in_h,
        in_w: g.in_w,
        kh: g.kh,
        kw: g.kw,
        sh: g.sh,
        sw: g.sw,
        dh: g.dh,
        dw: g.dw,
        ph: g.ph,
        pw: g.pw,
        y: y.as_mut_ptr() as *mut f32,
        res: residual.map_or(std::ptr::null(), |r| r.as_ptr()),
        out_w: g.out_w,
        y_block: g.out_h * g.out_w * LANES,
        act,
    };
    let shared = Shared(ctx);
    let taps = g.kh * g.kw * LANES;
    let work = |cbk: usize| {
        let c = shared.ctx();
        let w = p.data[p.off + cbk * taps..].as_ptr();
        let bias = p.bias[cbk * LANES..].as_ptr();
        // Safety: the asserts above bound every access of the tiles.
        unsafe { run_depthwise_plane(&c, w, bias, cbk, g.out_h, g.out_w) };
    };
    if threads > 1 {
        (0..nb).into_par_iter().for_each(work);
    } else {
        (0..nb).for_each(work);
    }
}

#[cfg(test)]
thread_local! {
    /// Tests run the portable kernels on this thread when set.
    static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn force_portable() -> bool {
    PORTABLE.with(|p| p.get())
}

#[cfg(not(test))]
#[inline(always)]
fn force_portable() -> bool {
    false
}

macro_rules! isa_dispatch {
    ($(#[$m:meta])* unsafe fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) {
                    unsafe { $body::<simd::Avx512>($($arg),*) }
                }
                if fast() && !force_portable() {
                    // Safety: AVX-512F was detected on this CPU.
                    return unsafe { avx512($($arg),*) };
                }
            }
            unsafe { $body::<Portable>($($arg),*) }
        }
    };
}

isa_dispatch!(
    /// Output positions `q0..q0 + n` for one group of `f` blocks.
    unsafe fn run_tiles(c: &ConvCtx, w: *const f32, bias: *const f32, f: usize, ocb0: usize, q0: usize, n: usize, span: Span, pf: *const f32, pf_len: usize) => tiles_impl
);

isa_dispatch!(
    /// Every row of one channel block of a depthwise convolution.
    unsafe fn run_depthwise_plane(c: &ConvCtx, w: *const f32, bias: *const f32, cbk: usize, out_h: usize, out_w: usize) => depthwise_impl
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles_impl<V: V16>(
    c: &ConvCtx,
    w: *const f32,
    bias: *const f32,
    f: usize,
    ocb0: usize,
    q0: usize,
    n: usize,
    span: Span,
    pf: *const f32,
    pf_len: usize,
) {
    let tiles = split(n, max_t(f));
    let lines = pf_len.div_ceil(LANES);
    for i in 0..tiles {
        // This tile's share of the prefetch, spread over its reduction.
        let (l0, nl) = piece(lines, tiles, i);
        let pft = pf.wrapping_add(l0 * LANES);
        let (s, t) = piece(n, tiles, i);
        let q = q0 + s;
        macro_rules! go {
            ($f:literal; $($t:literal)*) => {
                match t {
                    $($t => unsafe { conv_tile::<V, $f, $t>(c, w, bias, ocb0, q, span, pft, nl) },)*
                    _ => unreachable!("tile width {t}"),
                }
            };
        }
        match f {
            1 => go!(1; 1 2 3 4 5 6 7 8 9 10 11 12),
            2 => go!(2; 1 2 3 4 5 6 7 8 9 10 11 12),
            3 => go!(3; 1 2 3 4 5 6 7 8),
            4 => go!(4; 1 2 3 4 5 6),
            _ => unreachable!("group of {f} blocks"),
        }
    }
}

/// Depthwise tiles are 8 positions: 8 accumulators hide the FMA latency
/// and the K·K weight vectors stay in registers.
const DW_T: usize = 8;

#[inline(always)]
unsafe fn depthwise_impl<V: V16>(
    c: &ConvCtx,
    w: *const f32,
    bias: *const f32,
    cbk: usize,
    out_h: usize,
    out_w: usize,
) {
    // Columns whose every horizontal tap is inside the input.
    let (mut lo, mut hi) = (0, out_w);
    for kx in 0..c.kw {
        let off = (kx * c.dw) as isize - c.pw as isize;
        let (l, h) = super::valid_range(off, c.sw, c.in_w, out_w);
        lo = lo.max(l);
        hi = hi.min(h);
    }
    let hi = hi.max(lo);
    for oy in 0..out_h {
        let row = oy * out_w;
        for (x0, x1, inside) in [(0, lo, false), (lo, hi, true), (hi, out_w, false)] {
            let n = x1 - x0;
            if n == 0 {
                continue;
            }
            let tiles = split(n, DW_T);
            for i in 0..tiles {
                let (s, t) = piece(n, tiles, i);
                let q = row + x0 + s;
                macro_rules! go {
                    ($($t:literal)*) => {
                        match t {
                            $($t => unsafe { depthwise_tile::<V, $t>(c, w, bias, cbk, q, inside) },)*
                            _ => unreachable!("tile width {t}"),
                        }
                    };
                }
                go!(1 2 3 4 5 6 7 8)
            }
        }
    }
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;
