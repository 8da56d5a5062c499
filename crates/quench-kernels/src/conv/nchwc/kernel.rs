//! The NCHWc register-tile kernels, generic over the vector type.
//!
//! A tile is `T` consecutive output positions of one output row times `F`
//! blocks of 16 output channels: `T·F` accumulators stay in registers over
//! every input channel and tap, each step one broadcast input value times
//! `F` weight vectors. Taps that fall in the padding read a block of zeros
//! instead of branching, so border tiles run the same code.

use super::simd::{LANES, V16};
use crate::conv::Act;

/// Read by taps that fall outside the input.
pub(super) static ZEROS: [f32; LANES] = [0.0; LANES];

/// One convolution call's addressing (one image).
#[derive(Clone, Copy)]
pub(super) struct ConvCtx {
    pub x: *const f32,
    /// Channels per input block (16, or C for a small NHWC input).
    pub cb: usize,
    pub icb_stride: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
    pub y: *mut f32,
    /// Same layout as `y`, or null.
    pub res: *const f32,
    /// Output width (positions are numbered row by row).
    pub out_w: usize,
    /// Floats between output channel blocks.
    pub y_block: usize,
    pub act: Act,
}

/// Input pointers of the `T` positions for one tap (`ZEROS` where the tap
/// is in the padding); `org` is each position's top-left input corner.
#[inline(always)]
unsafe fn tap_ptrs<const T: usize>(
    c: &ConvCtx,
    xb: *const f32,
    org: &[(isize, isize); T],
    dy: isize,
    dx: isize,
) -> [*const f32; T] {
    // Plain loops, not `array::from_fn`: that one is not always inlined,
    // and a call in a tile spills all the accumulators around it.
    let mut p = [ZEROS.as_ptr(); T];
    for (p, &(oy, ox)) in p.iter_mut().zip(org) {
        let (iy, ix) = (oy + dy, ox + dx);
        if iy >= 0 && (iy as usize) < c.in_h && ix >= 0 && (ix as usize) < c.in_w {
            *p = xb.wrapping_add(iy as usize * c.row_stride + ix as usize * c.col_stride);
        }
    }
    p
}

/// Top-left input corner of output positions `q0..q0 + T` (flat index).
#[inline(always)]
fn origins<const T: usize>(c: &ConvCtx, q0: usize) -> [(isize, isize); T] {
    let (mut oy, mut ox) = (q0 / c.out_w, q0 % c.out_w);
    let mut org = [(0, 0); T];
    for o in org.iter_mut() {
        *o = (
            (oy * c.sh) as isize - c.ph as isize,
            (ox * c.sw) as isize - c.pw as isize,
        );
        ox += 1;
        if ox == c.out_w {
            ox = 0;
            oy += 1;
        }
    }
    org
}

/// Which part of the reduction a tile call computes.
#[derive(Clone, Copy)]
pub(super) struct Span {
    /// Input channel blocks `icb0..icb1`.
    pub icb0: usize,
    pub icb1: usize,
    /// Start from the bias (else from the partial sums already in `y`).
    pub first: bool,
    /// Apply the residual and activation.
    pub last: bool,
}

/// Stores one tile: partial sums as they are, final ones with the residual
/// added and the activation applied.
#[inline(always)]
unsafe fn store_tile<V: V16, const F: usize, const T: usize>(
    c: &ConvCtx,
    acc: [[V; F]; T],
    ocb0: usize,
    q0: usize,
    last: bool,
) {
    // The epilogue's loops index the tile at run time, which would keep the
    // accumulators in memory through the whole tile (a store per FMA):
    // they go to memory here, once.
    let acc = std::hint::black_box(acc);
    // Read here, not hoisted into registers the tile's loops need.
    let (act, res) = if last {
        (unsafe { std::ptr::read_volatile(&c.act) }, c.res)
    } else {
        (Act::None, std::ptr::null())
    };
    for f in 0..F {
        let base = (ocb0 + f) * c.y_block + q0 * LANES;
        for (t, a) in acc.iter().enumerate() {
            let off = base + t * LANES;
            unsafe {
                let mut v = a[f];
                if !res.is_null() {
                    v = v.add(V::load(res.add(off)));
                }
                v.act(act).store(c.y.add(off));
            }
        }
    }
}

/// One tile of a dense convolution: output positions `q0..q0 + T` (flat),
/// `F` output blocks from `ocb0`. `w` is the packed group
/// (`[icb][ky][kx][ci][F][16]`), `bias` its `F·16` values. `pf` is this
/// tile's share of the weights to fetch into L2 (`pf_lines` cache lines).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn conv_tile<V: V16, const F: usize, const T: usize>(
    c: &ConvCtx,
    w: *const f32,
    bias: *const f32,
    ocb0: usize,
    q0: usize,
    span: Span,
    pf: *const f32,
    pf_lines: usize,
) {
    let mut acc = [[unsafe { V::zero() }; F]; T];
    for f in 0..F {
        if span.first {
            let b = unsafe { V::load(bias.add(f * LANES)) };
            for a in acc.iter_mut() {
                a[f] = b;
            }
        } else {
            let base = (ocb0 + f) * c.y_block + q0 * LANES;
            for (t, a) in acc.iter_mut().enumerate() {
                a[f] = unsafe { V::load(c.y.add(base + t * LANES)) };
            }
        }
    }
    let org = origins::<T>(c, q0);
    // Every tap of every position inside the input: addresses are each
    // position's corner plus the tap's offset, with no checks (first layers
    // have few channels per tap to hide the checks behind).
    let (span_y, span_x) = ((c.kh - 1) * c.dh, (c.kw - 1) * c.dw);
    let inside = org.iter().all(|&(y, x)| {
        y >= 0 && x >= 0 && y as usize + span_y < c.in_h && x as usize + span_x < c.in_w
    });
    let wtap = c.cb * F * LANES;
    // One prefetch per step of the reduction, not a burst at the start of
    // the tile: a burst of misses to memory fills the line-fill buffers
    // and stalls the FMAs (the last line repeats once all are issued).
    let pf_last = pf.wrapping_add(pf_lines.saturating_sub(1) * LANES);
    let mut pfp = pf;
    let mut wp = w.wrapping_add(span.icb0 * c.kh * c.kw * wtap);
    for icb in span.icb0..span.icb1 {
        let xb = c.x.wrapping_add(icb * c.icb_stride);
        let mut corner = [xb; T];
        for (b, &(y, x)) in corner.iter_mut().zip(&org) {
            *b = xb.wrapping_add(
                (y.max(0) as usize) * c.row_stride + (x.max(0) as usize) * c.col_stride,
            );
        }
        for ky in 0..c.kh {
            for kx in 0..c.kw {
                let dy = (ky * c.dh) as isize;
                let dx = (kx * c.dw) as isize;
                let p = if inside {
                    let off = ky * c.dh * c.row_stride + kx * c.dw * c.col_stride;
                    let mut p = corner;
                    for b in p.iter_mut() {
                        *b = b.wrapping_add(off);
                    }
                    p
                } else {
                    unsafe { tap_ptrs::<T>(c, xb, &org, dy, dx) }
                };
                for ci in 0..c.cb {
                    unsafe { V::prefetch(pfp) };
                    pfp = pfp.wrapping_add(LANES).min(pf_last);
                    let wc = wp.wrapping_add(ci * F * LANES);
                    let wv: [V; F] = std::array::from_fn(|f| unsafe { V::load(wc.add(f * LANES)) });
                    for (a, &pt) in acc.iter_mut().zip(&p) {
                        let xv = unsafe { V::splat(pt.add(ci)) };
                        for f in 0..F {
                            a[f] = unsafe { a[f].fma(xv, wv[f]) };
                        }
                    }
                }
                wp = wp.wrapping_add(wtap);
            }
        }
    }
    unsafe { store_tile::<V, F, T>(c, acc, ocb0, q0, span.last) };
}

/// One tile of a depthwise convolution for channel block `cbk`, positions
/// `q0..q0 + T` of one output row; the input has the output's channel
/// blocks, `w` is `[ky][kx][16]` for this block. `inside`: every tap of
/// the tile is in the input (no padding), so addresses need no checks.
#[inline(always)]
pub(super) unsafe fn depthwise_tile<V: V16, const T: usize>(
    c: &ConvCtx,
    w: *const f32,
    bias: *const f32,
    cbk: usize,
    q0: usize,
    inside: bool,
) {
    let b = unsafe { V::load(bias) };
    let mut acc = [[b; 1]; T];
    let xb = c.x.wrapping_add(cbk * c.icb_stride);
    let org = origins::<T>(c, q0);
    let step = c.sw * LANES;
    for ky in 0..c.kh {
        let dy = (ky * c.dh) as isize;
        let iy = org[0].0 + dy;
        if iy < 0 || iy as usize >= c.in_h {
            continue;
        }
        for kx in 0..c.kw {
            let dx = (kx * c.dw) as isize;
            let wv = unsafe { V::load(w.add((ky * c.kw + kx) * LANES)) };
            if inside {
                let p =
                    xb.wrapping_add(iy as usize * c.row_stride + (org[0].1 + dx) as usize * LANES);
                for (t, a) in acc.iter_mut().enumerate() {
                    a[0] = unsafe { a[0].fma(V::load(p.add(t * step)), wv) };
                }
            } else {
                let p = unsafe { tap_ptrs::<T>(c, xb, &org, dy, dx) };
                for (a, &pt) in acc.iter_mut().zip(&p) {
                    a[0] = unsafe { a[0].fma(V::load(pt), wv) };
                }
            }
        }
    }
    unsafe { store_tile::<V, 1, T>(c, acc, cbk, q0, true) };
}
