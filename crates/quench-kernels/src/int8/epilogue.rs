//! What happens to an i32 accumulator tile once the K loop is done: the
//! zero-point correction, then raw i32, requantization to u8/s8, or
//! dequantization to f32, stored row-major or transposed (NCHW from an
//! NHWC product).

/// What to do with each exact accumulator `acc[m][n]`.
#[derive(Clone, Copy, Debug)]
pub enum Post<'a> {
    /// `acc + bias[n]`, as i32 (wrapping).
    Raw { bias: Option<&'a [i32]> },
    /// `clamp(round_half_even((acc + bias[n]) as f32 * mult[n]) + zp, lo, hi)`:
    /// ORT's requantization, i.e. QuantizeLinear of the float value. `mult`
    /// has 1 or n values; `lo..=hi` is the output type's range, narrowed for
    /// a fused ReLU/Clip.
    Requant {
        bias: Option<&'a [i32]>,
        mult: &'a [f32],
        zp: i32,
        lo: i32,
        hi: i32,
    },
    /// `acc as f32 * (a_scale[m] * b_scale[n]) + bias[n]`; the scales have 1
    /// value or one per row / column.
    Dequant {
        a_scale: &'a [f32],
        b_scale: &'a [f32],
        bias: Option<&'a [f32]>,
    },
}

/// Where results go: element (m, n) lands at `m * ld + n`, or at
/// `n * ld + m` when `trans`.
#[derive(Debug)]
pub enum Out<'a> {
    I32(&'a mut [i32]),
    U8(&'a mut [u8]),
    I8(&'a mut [i8]),
    F32(&'a mut [f32]),
}

/// Raw output pointer shared by the threads, each writing disjoint elements.
#[derive(Clone, Copy)]
pub(crate) enum OutPtr {
    I32(*mut i32),
    U8(*mut u8),
    I8(*mut i8),
    F32(*mut f32),
}

// Safety: threads write disjoint (row, column) blocks through it.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl Out<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Out::I32(v) => v.len(),
            Out::U8(v) => v.len(),
            Out::I8(v) => v.len(),
            Out::F32(v) => v.len(),
        }
    }

    pub(crate) fn ptr(&mut self) -> OutPtr {
        match self {
            Out::I32(v) => OutPtr::I32(v.as_mut_ptr()),
            Out::U8(v) => OutPtr::U8(v.as_mut_ptr()),
            Out::I8(v) => OutPtr::I8(v.as_mut_ptr()),
            Out::F32(v) => OutPtr::F32(v.as_mut_ptr()),
        }
    }
}

/// Checks that `post` can write into `out` and that its vectors fit.
pub(crate) fn check(post: &Post, out: &Out, m: usize, n: usize) {
    let fits = |v: usize, full: usize| v == 1 || v == full;
    match (post, out) {
        (Post::Raw { bias }, Out::I32(_)) => assert!(bias.is_none_or(|b| b.len() == n)),
        (
            Post::Requant {
                bias,
                mult,
                zp,
                lo,
                hi,
            },
            Out::U8(_) | Out::I8(_),
        ) => {
            assert!(bias.is_none_or(|b| b.len() == n) && fits(mult.len(), n));
            // The rounding trick in finish_row needs |bound - zp| < 2^22.
            let (tlo, thi) = if matches!(out, Out::U8(_)) {
                (0, 255)
            } else {
                (-128, 127)
            };
            assert!(tlo <= *lo && lo <= hi && *hi <= thi && (zp - lo).abs() < 1 << 22);
        }
        (
            Post::Dequant {
                a_scale,
                b_scale,
                bias,
            },
            Out::F32(_),
        ) => assert!(
            fits(a_scale.len(), m) && fits(b_scale.len(), n) && bias.is_none_or(|b| b.len() == n)
        ),
        _ => panic!("int8 epilogue {post:?} cannot write {out:?}"),
    }
}

/// What the register epilogues (`epilogue_avx512`, `epilogue_avx2`) need
/// besides the tile: per-column data of the panel (already offset to its
/// first column) and per-row data of the tile (offset to its first row).
pub(crate) struct TileCtx<'a> {
    pub rows: usize,
    pub width: usize,
    /// i32 elements from one tile row to the next.
    pub stride: usize,
    pub za: &'a [i32],
    /// Row sums of A (only with `zb`).
    pub rowsum: &'a [i32],
    /// `K·zb − Σb` per column (None: nothing to correct for A's zero point).
    pub cz: Option<&'a [i32]>,
    pub zb: Option<&'a [i32]>,
}

const ROUND: f32 = 12_582_912.0;

#[inline(always)]
fn pick<T: Copy>(v: &[T], i: usize) -> T {
    v[if v.len() == 1 { 0 } else { i }]
}

/// Finishes one row segment: `acc[j]` is the exact accumulator of
/// (row `m`, column `n0 + j`).
///
/// # Safety
/// `out` must be valid for every element this row segment addresses.
#[inline(always)]
pub(crate) unsafe fn finish_row(
    post: &Post,
    out: OutPtr,
    ld: usize,
    trans: bool,
    m: usize,
    n0: usize,
    acc: &mut [i32],
) {
    let at = |j: usize| {
        if trans {
            (n0 + j) * ld + m
        } else {
            m * ld + n0 + j
        }
    };
    let nw = acc.len();
    // Safety (all writes): the caller guarantees every `at(j)` is in bounds.
    match *post {
        Post::Raw { bias } => {
            if let Some(b) = bias {
                for (x, &bv) in acc.iter_mut().zip(&b[n0..n0 + nw]) {
                    *x = x.wrapping_add(bv);
                }
            }
            if let OutPtr::I32(p) = out {
                if trans {
                    for (j, &x) in acc.iter().enumerate() {
                        unsafe { *p.add(at(j)) = x };
                    }
                } else {
                    unsafe { std::slice::from_raw_parts_mut(p.add(at(0)), nw) }
                        .copy_from_slice(acc);
                }
            }
        }
        Post::Requant {
            bias,
            mult,
            zp,
            lo,
            hi,
        } => {
            if let Some(b) = bias {
                for (x, &bv) in acc.iter_mut().zip(&b[n0..n0 + nw]) {
                    *x = x.wrapping_add(bv);
                }
            }
            let (flo, fhi) = ((lo - zp) as f32, (hi - zp) as f32);
            if mult.len() == 1 {
                requant(acc, std::iter::repeat(mult[0]), flo, fhi, zp);
            } else {
                requant(acc, mult[n0..n0 + nw].iter().copied(), flo, fhi, zp);
            }
            match out {
                OutPtr::U8(p) if !trans => {
                    let o = unsafe { std::slice::from_raw_parts_mut(p.add(at(0)), nw) };
                    for (o, &x) in o.iter_mut().zip(acc.iter()) {
                        *o = x as u8;
                    }
                }
                OutPtr::I8(p) if !trans => {
                    let o = unsafe { std::slice::from_raw_parts_mut(p.add(at(0)), nw) };
                    for (o, &x) in o.iter_mut().zip(acc.iter()) {
                        *o = x as i8;
                    }
                }
                OutPtr::U8(p) => {
                    for (j, &x) in acc.iter().enumerate() {
                        unsafe { *p.add(at(j)) = x as u8 };
                    }
                }
                OutPtr::I8(p) => {
                    for (j, &x) in acc.iter().enumerate() {
                        unsafe { *p.add(at(j)) = x as i8 };
                    }
                }
                _ => {}
            }
        }
        Post::Dequant {
            a_scale,
            b_scale,
            bias,
        } => {
            if let OutPtr::F32(p) = out {
                let sa = pick(a_scale, m);
                let mut y = [0f32; 64];
                for (c0, part) in acc.chunks(64).enumerate() {
                    let y = &mut y[..part.len()];
                    let j0 = n0 + c0 * 64;
                    if b_scale.len() == 1 {
                        let s = sa * b_scale[0];
                        for (y, &x) in y.iter_mut().zip(part) {
                            *y = x as f32 * s;
                        }
                    } else {
                        for ((y, &x), &sb) in y.iter_mut().zip(part).zip(&b_scale[j0..]) {
                            *y = x as f32 * (sa * sb);
                        }
                    }
                    if let Some(b) = bias {
                        for (y, &bv) in y.iter_mut().zip(&b[j0..]) {
                            *y += bv;
                        }
                    }
                    if trans {
                        for (j, &v) in y.iter().enumerate() {
                            unsafe { *p.add(at(c0 * 64 + j)) = v };
                        }
                    } else {
                        unsafe { std::slice::from_raw_parts_mut(p.add(at(c0 * 64)), y.len()) }
                            .copy_from_slice(y);
                    }
                }
            }
        }
    }
}

/// `acc = round_half_even(clamp(acc * mult, flo, fhi)) + zp`. Once
/// |f| < 2^22, the bits of `f + 1.5·2^23` minus those of `1.5·2^23` are `f`
/// rounded half to even (default FP mode): exact, and it vectorizes where
/// `roundeven` and saturating casts would not. Clamping before rounding
/// equals rounding then clamping since the bounds are integers.
#[inline(always)]
fn requant(acc: &mut [i32], mult: impl Iterator<Item = f32>, flo: f32, fhi: f32, zp: i32) {
    let rbits = ROUND.to_bits() as i32;
    for (x, s) in acc.iter_mut().zip(mult) {
        let f = (*x as f32 * s).max(flo).min(fhi);
        *x = ((f + ROUND).to_bits() as i32 - rbits) + zp;
    }
}
