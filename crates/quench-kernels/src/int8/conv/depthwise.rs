//! Depthwise int8 convolution on NHWC u8 data, vectorised over channels
//! without a 32-bit multiply per tap: weights are packed at build as i16
//! pairs of taps, inputs of two taps are zero-extended and interleaved, and
//! one `vpmaddwd` sums both products. Taps outside the image read a row of
//! the input zero point, so every pixel runs the same tap list and the
//! `zx * Σw` term is one per-channel offset instead of a subtract per tap.

use super::Conv2d;
use crate::int8::epilogue::{self, Out, OutPtr, Post};
use std::ops::Range;

/// Depthwise weights `w[tap*c + ch]` (already minus their zero points)
/// packed as `[pair][ch][2]` i16, the second tap of an odd count zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwWeights {
    c: usize,
    taps: usize,
    pairs: Vec<i16>,
    /// Σ over taps of each channel's weights.
    sum: Vec<i32>,
    /// The same weights as s8 quads of taps for `vpdpbusd`, per 32-channel
    /// block in the lane order [`quad_channel`] gives; None when a weight
    /// is outside s8 (u8 weights minus a zero point) or c < 32.
    quads: Option<Vec<i8>>,
}

/// Channel of element `k` (0..32) of a 32-channel block in the order the
/// byte interleave of four tap rows leaves them: dword `e` of 128-bit lane
/// `L` of accumulator `j` (`k = 8j + 4L + e`) is channel `16L + 4j + e`.
#[inline(always)]
fn quad_channel(k: usize) -> usize {
    let (j, l, e) = (k / 8, (k % 8) / 4, k % 4);
    16 * l + 4 * j + e
}

impl DwWeights {
    /// None when a weight is outside ±255 (u8/s8 minus a zero point never is),
    /// which keeps pair sums and `zx * Σw` far from i32 overflow.
    pub fn new(w: &[i32], c: usize, taps: usize) -> Option<DwWeights> {
        if c == 0 || taps == 0 || w.len() != c * taps || w.iter().any(|v| v.abs() > 255) {
            return None;
        }
        let np = taps.div_ceil(2);
        let mut pairs = vec![0i16; np * c * 2];
        let mut sum = vec![0i32; c];
        for t in 0..taps {
            for ch in 0..c {
                let v = w[t * c + ch];
                pairs[((t / 2) * c + ch) * 2 + t % 2] = v as i16;
                sum[ch] += v;
            }
        }
        let quads = (c >= 32 && w.iter().all(|&v| (-128..=127).contains(&v))).then(|| {
            let (groups, blocks) = (taps.div_ceil(4), c / 32);
            let mut q = vec![0i8; groups * blocks * 128];
            for g in 0..groups {
                for b in 0..blocks {
                    for j in 0..4 {
                        for l in 0..2 {
                            for e in 0..4 {
                                for t in 0..4 {
                                    let tap = 4 * g + t;
                                    if tap < taps {
                                        let ch = 32 * b + 16 * l + 4 * j + e;
                                        let at =
                                            ((g * blocks + b) * 4 + j) * 32 + l * 16 + e * 4 + t;
                                        q[at] = w[tap * c + ch] as i8;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            q
        });
        Some(DwWeights {
            c,
            taps,
            pairs,
            sum,
            quads,
        })
    }

    /// Number of weights (`taps * c`).
    pub fn len(&self) -> usize {
        self.taps * self.c
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Instruction set a depthwise call uses; [`Level::detect`] picks the best.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512,
    /// AVX-512 with VNNI and VL: s8 weights go four taps per `vpdpbusd`.
    Avx512Vnni,
}

impl Level {
    pub fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                    return Level::Avx512Vnni;
                }
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Level::Avx2;
            }
        }
        Level::Scalar
    }

    /// This level if the CPU has it, else the best it has below.
    fn available(self) -> Level {
        match (self, Level::detect()) {
            (Level::Avx512Vnni, d) => d,
            (Level::Avx512, Level::Avx512Vnni) => Level::Avx512,
            (Level::Avx512, d) => d,
            (Level::Avx2, Level::Scalar) => Level::Scalar,
            (Level::Avx2, _) => Level::Avx2,
            (Level::Scalar, _) => Level::Scalar,
        }
    }
}

/// Depthwise convolution of one NHWC image (u8 domain, zero point `zx`),
/// finished by `post` into `out`: NCHW (`[c][oh*ow]`) when `trans`, else
/// NHWC rows (`[oh*ow][c]`). `level` is capped at what the CPU supports;
/// output rows are split over `threads`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    x: &[u8],
    zx: u8,
    w: &DwWeights,
    g: &Conv2d,
    post: &Post,
    mut out: Out,
    trans: bool,
    level: Level,
    threads: usize,
) {
    let c = g.c;
    let plane = g.oh * g.ow;
    assert!(w.c == c && w.taps == g.kh * g.kw && x.len() >= g.h * g.w * c);
    epilogue::check(post, &out, plane, c);
    assert!(out.len() >= c * plane);
    let ptr = out.ptr();
    let level = level.available();
    let run = |oys: Range<usize>| {
        // Safety: the level is supported; shapes were checked above; row ranges
        // of different jobs write disjoint output pixels.
        unsafe {
            match level {
                #[cfg(target_arch = "x86_64")]
                Level::Avx512Vnni => body_avx512_vnni(x, zx, w, g, post, ptr, trans, oys),
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => body_avx512(x, zx, w, g, post, ptr, trans, oys),
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => body_avx2(x, zx, w, g, post, ptr, trans, oys),
                _ => body::<0>(x, zx, w, g, post, ptr, trans, oys),
            }
        }
    };
    if threads <= 1 || plane * c * w.taps < 1 << 17 || g.oh < 2 {
        run(0..g.oh);
        return;
    }
    // Output rows split over the threads (two jobs each); every pixel is
    // computed the same way, so results do not depend on the split.
    use rayon::prelude::*;
    let per = g.oh.div_ceil((2 * threads).min(g.oh));
    (0..g.oh.div_ceil(per))
        .into_par_iter()
        .for_each(|i| run(i * per..((i + 1) * per).min(g.oh)));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn body_avx512(
    x: &[u8],
    zx: u8,
    w: &DwWeights,
    g: &Conv2d,
    post: &Post,
    out: OutPtr,
    trans: bool,
    oys: Range<usize>,
) {
    // Safety: the caller's contract.
    unsafe { body::<2>(x, zx, w, g, post, out, trans, oys) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn body_avx512_vnni(
    x: &[u8],
    zx: u8,
    w: &DwWeights,
    g: &Conv2d,
    post: &Post,
    out: OutPtr,
    trans: bool,
    oys: Range<usize>,
) {
    // Safety: the caller's contract.
    unsafe { body::<3>(x, zx, w, g, post, out, trans, oys) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn body_avx2(
    x: &[u8],
    zx: u8,
    w: &DwWeights,
    g: &Conv2d,
    post: &Post,
    out: OutPtr,
    trans: bool,
    oys: Range<usize>,
) {
    // Safety: the caller's contract.
    unsafe { body::<1>(x, zx, w, g, post, out, trans, oys) }
}

/// `L`: 0 scalar, 1 AVX2, 2 AVX-512, 3 AVX-512 + VNNI (inlined into the
/// matching wrapper).
///
/// # Safety
/// `out` covers `c * oh * ow` elements; the SIMD level `L` is supported.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn body<const L: u8>(
    x: &[u8],
    zx: u8,
    w: &DwWeights,
    g: &Conv2d,
    post: &Post,
    out: OutPtr,
    trans: bool,
    oys: Range<usize>,
) {
    let c = g.c;
    let plane = g.oh * g.ow;
    let ld = if trans { plane } else { c };
    let np = w.taps.div_ceil(2);
    let pad = vec![zx; c];
    // Start value of every accumulator: −zx·Σw, undoing the u8 offset of all taps.
    let start: Vec<i32> = w
        .sum
        .iter()
        .map(|&s| s.wrapping_mul(-(zx as i32)))
        .collect();
    let mut acc = vec![0i32; c];
    // SIMD, row-major u8/s8 output, whole vectors of channels: requantized
    // in registers straight from the sums (no i32 row through memory).
    #[cfg(target_arch = "x86_64")]
    let lanes = if L == 1 { 8 } else { 16 };
    #[cfg(target_arch = "x86_64")]
    let fused = match (L, trans, post, out) {
        (
            1..=3,
            false,
            &Post::Requant {
                bias,
                mult,
                zp,
                lo,
                hi,
            },
            OutPtr::U8(_) | OutPtr::I8(_),
        ) if c.is_multiple_of(lanes) => Some(x86::Requant {
            bias: bias.map(|b| b.as_ptr()),
            mult: mult.as_ptr(),
            per_channel: mult.len() > 1,
            zp,
            flo: (lo - zp) as f32,
            fhi: (hi - zp) as f32,
            signed: matches!(out, OutPtr::I8(_)),
            out: match out {
                OutPtr::U8(p) => p,
                OutPtr::I8(p) => p.cast(),
                _ => std::ptr::null_mut(),
            },
        }),
        _ => None,
    };
    // The VNNI path: 32-channel blocks, four taps per instruction, with the
    // per-channel vectors in the blocks' lane order.
    #[cfg(target_arch = "x86_64")]
    let vnni = match (&fused, &w.quads, post) {
        (Some(_), Some(q), &Post::Requant { bias, mult, .. }) if L == 3 => {
            let blocks = c / 32;
            fn permute<T: Copy>(v: &[T], blocks: usize) -> Vec<T> {
                (0..blocks * 32)
                    .map(|k| v[k / 32 * 32 + quad_channel(k % 32)])
                    .collect()
            }
            let bias = bias.map(|b| permute(b, blocks));
            let mult = if mult.len() > 1 {
                permute(mult, blocks)
            } else {
                vec![mult[0]; blocks * 32]
            };
            Some(x86::Quads {
                w: q,
                groups: w.taps.div_ceil(4),
                blocks,
                start: permute(&start, blocks),
                bias,
                mult,
            })
        }
        _ => None,
    };
    // Input row of each tap (the pad row outside the image or past an odd count).
    let mut rows: Vec<&[u8]> = vec![&pad[..]; w.taps.div_ceil(4) * 4];
    for oy in oys {
        for ox in 0..g.ow {
            for ky in 0..g.kh {
                let iy = Conv2d::src(oy, g.sh, ky, g.dh, g.pt, g.h);
                for kx in 0..g.kw {
                    let ix = Conv2d::src(ox, g.sw, kx, g.dw, g.pl, g.w);
                    rows[ky * g.kw + kx] = match (iy, ix) {
                        (Some(iy), Some(ix)) => &x[(iy * g.w + ix) * c..][..c],
                        _ => &pad[..],
                    };
                }
            }
            let mut c0 = 0;
            #[cfg(target_arch = "x86_64")]
            if let (Some(rq), 1) = (&fused, L) {
                // Safety: AVX2 is enabled by the caller; c is a multiple of 8, every row
                // holds c channels and the output row of the [plane][c] byte store c bytes.
                unsafe {
                    let o = rq.out.add((oy * g.ow + ox) * c);
                    while c0 + 32 <= c {
                        let a = x86::sums256::<4>(&rows[..np * 2], &w.pairs, &start, c, c0);
                        x86::requant_store256(&a, rq, c0, o);
                        c0 += 32;
                    }
                    while c0 < c {
                        let a = x86::sums256::<1>(&rows[..np * 2], &w.pairs, &start, c, c0);
                        x86::requant_store256(&a, rq, c0, o);
                        c0 += 8;
                    }
                }
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(rq) = &fused {
                // Safety: AVX-512BW is enabled by the caller (L is 2 or 3 here); c is a
                // multiple of 16, every row holds c channels and the output row
                // `row` of the [plane][c] byte store holds c bytes.
                unsafe {
                    let o = rq.out.add((oy * g.ow + ox) * c);
                    if let Some(qd) = &vnni {
                        for b in 0..qd.blocks {
                            x86::quads_requant_store(&rows, qd, b, rq, o);
                        }
                        c0 = qd.blocks * 32;
                    }
                    while c0 + 64 <= c {
                        let a = x86::sums512::<4>(&rows[..np * 2], &w.pairs, &start, c, c0);
                        x86::requant_store512(&a, rq, c0, o);
                        c0 += 64;
                    }
                    while c0 < c {
                        let a = x86::sums512::<1>(&rows[..np * 2], &w.pairs, &start, c, c0);
                        x86::requant_store512(&a, rq, c0, o);
                        c0 += 16;
                    }
                }
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if L >= 2 {
                // Safety: AVX-512BW is enabled by the caller; every row and the
                // packed weights hold c channels, and c0 + 16·B ≤ c.
                unsafe {
                    while c0 + 64 <= c {
                        x86::block512::<4>(&rows[..np * 2], &w.pairs, &start, &mut acc, c, c0);
                        c0 += 64;
                    }
                    while c0 + 16 <= c {
                        x86::block512::<1>(&rows[..np * 2], &w.pairs, &start, &mut acc, c, c0);
                        c0 += 16;
                    }
                }
            } else if L == 1 {
                // Safety: AVX2 is enabled by the caller; as above with 8·B.
                unsafe {
                    while c0 + 32 <= c {
                        x86::block256::<4>(&rows[..np * 2], &w.pairs, &start, &mut acc, c, c0);
                        c0 += 32;
                    }
                    while c0 + 8 <= c {
                        x86::block256::<1>(&rows[..np * 2], &w.pairs, &start, &mut acc, c, c0);
                        c0 += 8;
                    }
                }
            }
            for ch in c0..c {
                let mut a = start[ch];
                for p in 0..np {
                    let wp = &w.pairs[(p * c + ch) * 2..][..2];
                    let s = rows[2 * p][ch] as i32 * wp[0] as i32
                        + rows[2 * p + 1][ch] as i32 * wp[1] as i32;
                    a = a.wrapping_add(s);
                }
                acc[ch] = a;
            }
            let row = oy * g.ow + ox;
            // Safety: row `oy*ow + ox` of a [plane][c] store (transposed or not) is inside c × plane.
            unsafe { epilogue::finish_row(post, out, ld, trans, row, 0, &mut acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// What [`requant_store512`] needs: the epilogue's `Post::Requant` as pointers.
    pub(super) struct Requant {
        pub bias: Option<*const i32>,
        pub mult: *const f32,
        pub per_channel: bool,
        pub zp: i32,
        pub flo: f32,
        pub fhi: f32,
        pub signed: bool,
        pub out: *mut u8,
    }

    /// The VNNI path's weights and per-channel vectors, in block lane order.
    pub(super) struct Quads<'a> {
        pub w: &'a [i8],
        pub groups: usize,
        pub blocks: usize,
        pub start: Vec<i32>,
        pub bias: Option<Vec<i32>>,
        pub mult: Vec<f32>,
    }

    /// 32 channels of block `b` of one pixel: the tap rows interleaved four
    /// at a time into u8 quads (two unpack stages leave channel
    /// `16L + 4j + e` at dword `e` of lane `L` of register `j`), one
    /// `vpdpbusd` per register and tap group, then requantized and packed
    /// back into channel order (the two saturating packs undo the
    /// interleave), stored at `o + 32b`.
    ///
    /// # Safety
    /// AVX-512F/BW/VNNI/VL available; `rows` holds `4·groups` rows of at
    /// least `32·blocks` channels; `o` has room for them.
    #[inline(always)]
    pub(super) unsafe fn quads_requant_store(
        rows: &[&[u8]],
        q: &Quads,
        b: usize,
        rq: &Requant,
        o: *mut u8,
    ) {
        // Safety: the caller's contract.
        unsafe {
            let c0 = 32 * b;
            let mut acc = [_mm256_setzero_si256(); 4];
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_si256(q.start.as_ptr().add(c0 + 8 * j).cast());
            }
            for g in 0..q.groups {
                let r = &rows[4 * g..4 * g + 4];
                let t: [__m256i; 4] =
                    std::array::from_fn(|i| _mm256_loadu_si256(r[i].as_ptr().add(c0).cast()));
                let lo01 = _mm256_unpacklo_epi8(t[0], t[1]);
                let hi01 = _mm256_unpackhi_epi8(t[0], t[1]);
                let lo23 = _mm256_unpacklo_epi8(t[2], t[3]);
                let hi23 = _mm256_unpackhi_epi8(t[2], t[3]);
                let x = [
                    _mm256_unpacklo_epi16(lo01, lo23),
                    _mm256_unpackhi_epi16(lo01, lo23),
                    _mm256_unpacklo_epi16(hi01, hi23),
                    _mm256_unpackhi_epi16(hi01, hi23),
                ];
                let wp = q.w.as_ptr().add((g * q.blocks + b) * 128);
                for j in 0..4 {
                    let wv = _mm256_loadu_si256(wp.add(32 * j).cast());
                    acc[j] = _mm256_dpbusd_epi32(acc[j], x[j], wv);
                }
            }
            let (flo, fhi) = (_mm256_set1_ps(rq.flo), _mm256_set1_ps(rq.fhi));
            let zp = _mm256_set1_epi32(rq.zp);
            let mut y = [_mm256_setzero_si256(); 4];
            for j in 0..4 {
                let at = c0 + 8 * j;
                let v = match &q.bias {
                    Some(bv) => {
                        _mm256_add_epi32(acc[j], _mm256_loadu_si256(bv.as_ptr().add(at).cast()))
                    }
                    None => acc[j],
                };
                let f = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(v),
                    _mm256_loadu_ps(q.mult.as_ptr().add(at)),
                );
                let f = _mm256_min_ps(_mm256_max_ps(f, flo), fhi);
                y[j] = _mm256_add_epi32(_mm256_cvtps_epi32(f), zp);
            }
            // In range already: the saturating packs are exact.
            let p01 = _mm256_packs_epi32(y[0], y[1]);
            let p23 = _mm256_packs_epi32(y[2], y[3]);
            let bytes = if rq.signed {
                _mm256_packs_epi16(p01, p23)
            } else {
                _mm256_packus_epi16(p01, p23)
            };
            _mm256_storeu_si256(o.add(c0).cast(), bytes);
        }
    }

    /// Requantizes the sums of channels `c0..c0 + 16·B` into the bytes at
    /// `o + c0`: the IEEE sequence of the portable epilogue (bias, multiply,
    /// clamp, round half to even, add the zero point).
    ///
    /// # Safety
    /// AVX-512F/BW available; bias/mult (when per channel) and `o` hold the channels.
    #[inline(always)]
    pub(super) unsafe fn requant_store512<const B: usize>(
        a: &[__m512i; B],
        rq: &Requant,
        c0: usize,
        o: *mut u8,
    ) {
        // Safety: the caller's contract.
        unsafe {
            let (flo, fhi) = (_mm512_set1_ps(rq.flo), _mm512_set1_ps(rq.fhi));
            let zp = _mm512_set1_epi32(rq.zp);
            for (b, &v) in a.iter().enumerate() {
                let ch = c0 + 16 * b;
                let v = match rq.bias {
                    Some(p) => _mm512_add_epi32(v, _mm512_loadu_si512(p.add(ch).cast())),
                    None => v,
                };
                let s = if rq.per_channel {
                    _mm512_loadu_ps(rq.mult.add(ch))
                } else {
                    _mm512_set1_ps(*rq.mult)
                };
                let f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
                let f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(f), zp);
                _mm_storeu_si128(o.add(ch).cast(), _mm512_cvtepi32_epi8(q));
            }
        }
    }

    /// Channels `c0..c0 + 16·B` of one pixel: `acc = start + Σ pairs (x0·w0 + x1·w1)`.
    ///
    /// # Safety
    /// AVX-512BW available; every row and `pairs` (per pair) hold `c ≥ c0 + 16·B` channels.
    #[inline(always)]
    pub(super) unsafe fn block512<const B: usize>(
        rows: &[&[u8]],
        pairs: &[i16],
        start: &[i32],
        acc: &mut [i32],
        c: usize,
        c0: usize,
    ) {
        // Safety: the caller's contract.
        unsafe {
            let a = sums512::<B>(rows, pairs, start, c, c0);
            for (b, v) in a.iter().enumerate() {
                _mm512_storeu_si512(acc.as_mut_ptr().add(c0 + 16 * b) as *mut _, *v);
            }
        }
    }

    /// The sums of [`block512`] in registers.
    ///
    /// # Safety
    /// As [`block512`].
    #[inline(always)]
    pub(super) unsafe fn sums512<const B: usize>(
        rows: &[&[u8]],
        pairs: &[i16],
        start: &[i32],
        c: usize,
        c0: usize,
    ) -> [__m512i; B] {
        // Safety: the caller's contract.
        unsafe {
            let mut a = [_mm512_setzero_si512(); B];
            for (b, v) in a.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(start.as_ptr().add(c0 + 16 * b) as *const _);
            }
            for (p, r) in rows.chunks_exact(2).enumerate() {
                let (r0, r1) = (r[0].as_ptr().add(c0), r[1].as_ptr().add(c0));
                let wp = pairs.as_ptr().add((p * c + c0) * 2);
                for (b, v) in a.iter_mut().enumerate() {
                    let x0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(r0.add(16 * b) as *const _));
                    let x1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(r1.add(16 * b) as *const _));
                    let xy = _mm512_or_si512(x0, _mm512_slli_epi32::<16>(x1));
                    let wv = _mm512_loadu_si512(wp.add(32 * b) as *const _);
                    *v = _mm512_add_epi32(*v, _mm512_madd_epi16(xy, wv));
                }
            }
            a
        }
    }

    /// [`block512`] with 8 channels per register.
    ///
    /// # Safety
    /// AVX2 available; every row and `pairs` (per pair) hold `c ≥ c0 + 8·B` channels.
    #[inline(always)]
    pub(super) unsafe fn block256<const B: usize>(
        rows: &[&[u8]],
        pairs: &[i16],
        start: &[i32],
        acc: &mut [i32],
        c: usize,
        c0: usize,
    ) {
        // Safety: the caller's contract.
        unsafe {
            let a = sums256::<B>(rows, pairs, start, c, c0);
            for (b, v) in a.iter().enumerate() {
                _mm256_storeu_si256(acc.as_mut_ptr().add(c0 + 8 * b) as *mut _, *v);
            }
        }
    }

    /// The sums of [`block256`] in registers. The bytes of the two taps of a
    /// pair interleave (`vpunpck[lh]bw`) into (x0, x1) pairs before widening,
    /// one shuffle per 8 channels and tap fewer than widening each to i32.
    ///
    /// # Safety
    /// As [`block256`].
    #[inline(always)]
    pub(super) unsafe fn sums256<const B: usize>(
        rows: &[&[u8]],
        pairs: &[i16],
        start: &[i32],
        c: usize,
        c0: usize,
    ) -> [__m256i; B] {
        // Safety: the caller's contract; 16-byte loads only for two whole vectors.
        unsafe {
            let mut a = [_mm256_setzero_si256(); B];
            for (b, v) in a.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(start.as_ptr().add(c0 + 8 * b) as *const _);
            }
            for (p, r) in rows.chunks_exact(2).enumerate() {
                let (r0, r1) = (r[0].as_ptr().add(c0), r[1].as_ptr().add(c0));
                let wp = pairs.as_ptr().add((p * c + c0) * 2);
                let w = |b: usize| _mm256_loadu_si256(wp.add(16 * b) as *const _);
                let mut b = 0;
                while b + 2 <= B {
                    let x0 = _mm_loadu_si128(r0.add(8 * b) as *const _);
                    let x1 = _mm_loadu_si128(r1.add(8 * b) as *const _);
                    let lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1));
                    let hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(x0, x1));
                    a[b] = _mm256_add_epi32(a[b], _mm256_madd_epi16(lo, w(b)));
                    a[b + 1] = _mm256_add_epi32(a[b + 1], _mm256_madd_epi16(hi, w(b + 1)));
                    b += 2;
                }
                if b < B {
                    let x0 = _mm_loadl_epi64(r0.add(8 * b) as *const _);
                    let x1 = _mm_loadl_epi64(r1.add(8 * b) as *const _);
                    let xy = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1));
                    a[b] = _mm256_add_epi32(a[b], _mm256_madd_epi16(xy, w(b)));
                }
            }
            a
        }
    }

    /// [`requant_store512`] for 8-channel vectors: the same IEEE sequence,
    /// then saturating packs (exact: the values are in range) and one dword
    /// permute back into channel order, stored at `o + c0`.
    ///
    /// # Safety
    /// AVX2 available; bias/mult (when per channel) and `o` hold the channels; B is 1 or 4.
    #[inline(always)]
    pub(super) unsafe fn requant_store256<const B: usize>(
        a: &[__m256i; B],
        rq: &Requant,
        c0: usize,
        o: *mut u8,
    ) {
        const { assert!(B == 1 || B == 4) };
        // Safety: the caller's contract.
        unsafe {
            let (flo, fhi) = (_mm256_set1_ps(rq.flo), _mm256_set1_ps(rq.fhi));
            let zp = _mm256_set1_epi32(rq.zp);
            let mut q = [_mm256_setzero_si256(); 4];
            for (b, &v) in a.iter().enumerate() {
                let ch = c0 + 8 * b;
                let v = match rq.bias {
                    Some(p) => _mm256_add_epi32(v, _mm256_loadu_si256(p.add(ch).cast())),
                    None => v,
                };
                let s = if rq.per_channel {
                    _mm256_loadu_ps(rq.mult.add(ch))
                } else {
                    _mm256_set1_ps(*rq.mult)
                };
                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), s);
                let f = _mm256_min_ps(_mm256_max_ps(f, flo), fhi);
                q[b] = _mm256_add_epi32(_mm256_cvtps_epi32(f), zp);
            }
            // Lane l of the packs holds dwords [q0 l, q1 l, q2 l, q3 l] (4 bytes each).
            let p01 = _mm256_packs_epi32(q[0], q[1]);
            let p23 = _mm256_packs_epi32(q[2], q[3]);
            let bytes = if rq.signed {
                _mm256_packs_epi16(p01, p23)
            } else {
                _mm256_packus_epi16(p01, p23)
            };
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            if B == 4 {
                _mm256_storeu_si256(o.add(c0).cast(), bytes);
            } else {
                _mm_storel_epi64(o.add(c0).cast(), _mm256_castsi256_si128(bytes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (s >> 16) as u8
            })
            .collect()
    }

    /// Direct sums Σ (x − zx)·w over the taps inside the image, NHWC rows.
    fn reference(x: &[u8], zx: i32, w: &[i32], g: &Conv2d) -> Vec<i32> {
        let mut y = vec![0i32; g.oh * g.ow * g.c];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ch in 0..g.c {
                    let mut s = 0i32;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky * g.dh) as i64 - g.pt as i64;
                            let ix = (ox * g.sw + kx * g.dw) as i64 - g.pl as i64;
                            if iy < 0 || ix < 0 || iy >= g.h as i64 || ix >= g.w as i64 {
                                continue;
                            }
                            let xv = x[(iy as usize * g.w + ix as usize) * g.c + ch] as i32;
                            s += (xv - zx) * w[(ky * g.kw + kx) * g.c + ch];
                        }
                    }
                    y[(oy * g.ow + ox) * g.c + ch] = s;
                }
            }
        }
        y
    }

    fn geom(
        c: usize,
        h: usize,
        w: usize,
        k: (usize, usize),
        s: usize,
        d: usize,
        p: usize,
    ) -> Conv2d {
        let oh = (h + 2 * p - (k.0 - 1) * d - 1) / s + 1;
        let ow = (w + 2 * p - (k.1 - 1) * d - 1) / s + 1;
        Conv2d {
            c,
            h,
            w,
            kh: k.0,
            kw: k.1,
            sh: s,
            sw: s,
            dh: d,
            dw: d,
            pt: p,
            pl: p,
            oh,
            ow,
        }
    }

    #[test]
    fn all_levels_equal_direct_sums() {
        let cases = [
            geom(1, 5, 4, (3, 3), 1, 1, 1),
            geom(7, 6, 5, (3, 3), 2, 1, 1),
            geom(16, 7, 7, (3, 3), 1, 1, 1),
            geom(17, 6, 9, (2, 3), 1, 2, 2),
            geom(70, 6, 5, (3, 3), 2, 1, 1),
            geom(130, 5, 5, (5, 5), 1, 1, 2),
            geom(96, 4, 4, (1, 1), 1, 1, 0),
            geom(40, 9, 3, (4, 2), 3, 1, 0),
        ];
        for (i, g) in cases.iter().enumerate() {
            let taps = g.kh * g.kw;
            let mut x = bytes(g.h * g.w * g.c, 11 + i as u32);
            x[0] = 0;
            x[g.c - 1] = 255;
            let last = x.len() - 1;
            x[last] = 255;
            // Weights minus a zero point: the full ±255 range at the extremes.
            let mut w: Vec<i32> = bytes(taps * g.c, 5 + i as u32)
                .iter()
                .map(|&v| v as i32 - 128)
                .collect();
            w[0] = -255;
            w[taps * g.c - 1] = 255;
            let packed = DwWeights::new(&w, g.c, taps).unwrap();
            for zx in [0u8, 77, 255] {
                let want = reference(&x, zx as i32, &w, g);
                for level in [Level::Scalar, Level::Avx2, Level::Avx512, Level::Avx512Vnni] {
                    let mut y = vec![0i32; want.len()];
                    let post = Post::Raw { bias: None };
                    depthwise(&x, zx, &packed, g, &post, Out::I32(&mut y), false, level, 1);
                    assert_eq!(y, want, "case {i} zx {zx} {level:?}");
                }
            }
        }
    }

    #[test]
    fn requantized_levels_agree_and_transposed_store_matches_rows() {
        // 37 channels: the per-row epilogue; 32, 80 and 144: whole vectors, requantized in
        // registers (VNNI: 32-channel blocks, then a 16-channel tail); 24 and 40: AVX2's
        // 8-channel vectors, alone and after a 32-channel block; 5x5 taps: 7 groups of 4.
        for c in [37, 32, 80, 144, 24, 40] {
            requantized_levels_agree(geom(c, 9, 7, (3, 3), 2, 1, 1));
        }
        requantized_levels_agree(geom(64, 8, 6, (5, 5), 1, 1, 2));
        // Big enough to be split over threads.
        requantized_levels_agree(geom(64, 40, 40, (3, 3), 1, 1, 1));
    }

    fn requantized_levels_agree(g: Conv2d) {
        let x = bytes(g.h * g.w * g.c, 7);
        let taps = g.kh * g.kw;
        let mut w: Vec<i32> = bytes(taps * g.c, 3)
            .iter()
            .map(|&v| v as i8 as i32)
            .collect();
        w[0] = -128;
        w[1] = 127;
        let packed = DwWeights::new(&w, g.c, taps).unwrap();
        assert_eq!(
            packed.quads.is_some(),
            g.c >= 32,
            "s8 weights get the VNNI layout"
        );
        let mult: Vec<f32> = (0..g.c).map(|i| 0.001 + i as f32 * 1e-4).collect();
        let bias: Vec<i32> = (0..g.c as i32).map(|i| i * 37 - 300).collect();
        let post = Post::Requant {
            bias: Some(&bias),
            mult: &mult,
            zp: 3,
            lo: 0,
            hi: 255,
        };
        let plane = g.oh * g.ow;
        let run = |level, trans| {
            let mut y = vec![0u8; plane * g.c];
            depthwise(
                &x,
                128,
                &packed,
                &g,
                &post,
                Out::U8(&mut y),
                trans,
                level,
                1,
            );
            y
        };
        let rows = run(Level::Scalar, false);
        let mut t = vec![0u8; plane * g.c];
        super::super::transpose(&rows, plane, g.c, &mut t, false);
        for level in [Level::Scalar, Level::Avx2, Level::Avx512, Level::Avx512Vnni] {
            assert_eq!(run(level, false), rows, "{level:?}");
            assert_eq!(run(level, true), t, "{level:?}");
        }
        // s8 output, one multiplier, no bias, a fused ReLU (lo = zp).
        let post = Post::Requant {
            bias: None,
            mult: &mult[..1],
            zp: -4,
            lo: -4,
            hi: 127,
        };
        let run = |level| {
            let mut y = vec![0i8; plane * g.c];
            depthwise(&x, 9, &packed, &g, &post, Out::I8(&mut y), false, level, 1);
            y
        };
        let want = run(Level::Scalar);
        for level in [Level::Avx2, Level::Avx512, Level::Avx512Vnni] {
            assert_eq!(run(level), want, "s8 {level:?}");
        }
        // Rows split over threads give the same bytes.
        for threads in [2, 3] {
            let mut y = vec![0i8; plane * g.c];
            depthwise(
                &x,
                9,
                &packed,
                &g,
                &post,
                Out::I8(&mut y),
                false,
                Level::detect(),
                threads,
            );
            assert_eq!(y, want, "{threads} threads");
        }
    }

    #[test]
    fn rejects_out_of_range_or_mis_sized_weights() {
        assert!(DwWeights::new(&[256, 0], 2, 1).is_none());
        assert!(DwWeights::new(&[1, 2, 3], 2, 1).is_none());
        assert!(DwWeights::new(&[], 0, 1).is_none());
        assert_eq!(
            DwWeights::new(&[1, 2, 3, 4], 2, 2).map(|w| w.len()),
            Some(4)
        );
    }
}
