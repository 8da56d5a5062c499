//! int8 GEMM: u8 (or s8) activations × s8 weights → exact i32, then a fused
//! epilogue (requantize, dequantize, or raw i32).
//!
//! Weights are packed once ([`PackedB`]) into the VNNI layout; zero points
//! are not subtracted in the inner loop but folded in afterwards:
//! `Σ(a-za)(b-zb) = Σab - zb·Σa + za·(K·zb - Σb)`, with the column sums made
//! at packing and the row sums of A made while it is prepared. s8
//! activations become u8 by `+128` (`xor 0x80`), with `za + 128`. All of this
//! is exact in wrapping i32, so every path matches the scalar reference bit
//! for bit, and threads (which split output tiles) never change a result.

pub mod add;
pub mod conv;
mod epilogue;
#[cfg(target_arch = "x86_64")]
mod epilogue_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod epilogue_avx512;
mod kernels;
mod pack;
mod round;
#[cfg(test)]
mod tests;

pub use epilogue::{Out, Post};
pub use pack::PackedB;
pub use round::{min_max, quantize_u8, quantize_u8_at, round_half_even};

use epilogue::OutPtr;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

/// Columns per packed panel (4 zmm of 16 i32 lanes).
pub const PANEL: usize = 64;
/// Rows per micro-tile; fewer rows (M = 1..5, a batch-1 Linear) use the
/// same kernels with fewer accumulators, streaming the packed weights.
pub const MR: usize = 6;

/// Instruction sets the micro-kernel exists for, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// zmm `vpdpbusd`: 64 u8·s8 MACs per instruction.
    Avx512Vnni,
    /// ymm `vpdpbusd` (VEX encoded).
    AvxVnni,
    /// `vpmovsxbw` + `vpmaddwd`: exact, no VNNI needed.
    Avx2,
    Scalar,
}

impl Isa {
    /// The best set this CPU supports (decided once).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| Isa::available()[0])
    }

    /// Every set this CPU supports, best first (`Scalar` always last).
    pub fn available() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                v.push(Isa::Avx512Vnni);
            }
            if has!("avx2") && has!("avxvnni") {
                v.push(Isa::AvxVnni);
            }
            if has!("avx2") {
                v.push(Isa::Avx2);
            }
        }
        v.push(Isa::Scalar);
        v
    }
}

/// The activations: element (i, kk) at `data[i * lda + kk]`.
#[derive(Clone, Copy, Debug)]
pub enum AData<'a> {
    U8(&'a [u8]),
    I8(&'a [i8]),
}

/// Left operand `m×k` with its zero point(s): 1 value, or one per row.
#[derive(Clone, Copy, Debug)]
pub struct AMat<'a> {
    pub data: AData<'a>,
    pub m: usize,
    pub k: usize,
    pub lda: usize,
    pub zero_points: &'a [i32],
}

/// A as the kernels read it: u8, rows of at least `k4` readable bytes.
struct PreparedA<'a> {
    data: Cow<'a, [u8]>,
    lda: usize,
    /// Zero point per row, in the u8 domain.
    za: Vec<i32>,
    /// Σ_k A[i][k] per row (only when B has zero points).
    rowsum: Vec<i32>,
    /// `m` rows of `k4` i16 (zero-padded) for the AVX2 kernel, else empty.
    wide: Vec<i16>,
}

impl PreparedA<'_> {
    /// Row `i` on, as the kernel of `isa` reads it, with its row stride.
    fn rows(&self, isa: Isa, i: usize, k4: usize) -> (kernels::ARows, usize) {
        if isa == Isa::Avx2 {
            (kernels::ARows::Wide(self.wide[i * k4..].as_ptr()), k4)
        } else {
            (
                kernels::ARows::U8(self.data[i * self.lda..].as_ptr()),
                self.lda,
            )
        }
    }
}

fn prepare_a<'a>(a: &AMat<'a>, k4: usize, need_rowsum: bool, wide: bool) -> PreparedA<'a> {
    let (m, k) = (a.m, a.k);
    assert!(a.zero_points.len() == 1 || a.zero_points.len() == m);
    assert!(a.lda >= k);
    let len = match a.data {
        AData::U8(v) => v.len(),
        AData::I8(v) => v.len(),
    };
    assert!(
        m == 0 || len >= (m - 1) * a.lda + k,
        "int8 gemm: A too small"
    );
    let shift = matches!(a.data, AData::I8(_)) as i32 * 128;
    let za = (0..m)
        .map(|i| a.zero_points[if a.zero_points.len() == 1 { 0 } else { i }] + shift)
        .collect();
    let (data, lda): (Cow<[u8]>, usize) = match a.data {
        AData::U8(v) if m == 0 || len >= (m - 1) * a.lda + k4 => (Cow::Borrowed(v), a.lda),
        _ => {
            let mut buf = vec![0u8; m * k4];
            for i in 0..m {
                let dst = &mut buf[i * k4..i * k4 + k];
                match a.data {
                    AData::U8(v) => dst.copy_from_slice(&v[i * a.lda..i * a.lda + k]),
                    AData::I8(v) => {
                        for (d, &s) in dst.iter_mut().zip(&v[i * a.lda..i * a.lda + k]) {
                            *d = s as u8 ^ 0x80;
                        }
                    }
                }
            }
            (Cow::Owned(buf), k4)
        }
    };
    let rowsum = if need_rowsum {
        (0..m)
            .map(|i| data[i * lda..i * lda + k].iter().map(|&x| x as i32).sum())
            .collect()
    } else {
        Vec::new()
    };
    let wide = if wide {
        // Built by extending: a zero-filled buffer would be written twice.
        let mut w = Vec::with_capacity(m * k4);
        for i in 0..m {
            w.extend(data[i * lda..i * lda + k].iter().map(|&s| s as i16));
            w.extend(std::iter::repeat_n(0, k4 - k));
        }
        w
    } else {
        Vec::new()
    };
    PreparedA {
        data,
        lda,
        za,
        rowsum,
        wide,
    }
}

/// `out = post(A · B)` with the best kernels of this CPU; `ld`/`trans` as in [`Out`].
pub fn gemm(a: &AMat, b: &PackedB, post: &Post, out: Out, ld: usize, trans: bool, threads: usize) {
    gemm_with(Isa::detect(), a, b, post, out, ld, trans, threads)
}

/// [`gemm`] with an explicit instruction set (it must be in [`Isa::available`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    isa: Isa,
    a: &AMat,
    b: &PackedB,
    post: &Post,
    mut out: Out,
    ld: usize,
    trans: bool,
    threads: usize,
) {
    assert!(
        Isa::available().contains(&isa),
        "{isa:?} is not supported here"
    );
    assert_eq!(a.k, b.k, "int8 gemm: A has K = {}, B has {}", a.k, b.k);
    let (m, n) = (a.m, b.n);
    epilogue::check(post, &out, m, n);
    if m == 0 || n == 0 {
        return;
    }
    let need = if trans {
        (n - 1) * ld + m
    } else {
        (m - 1) * ld + n
    };
    assert!(
        out.len() >= need && ld >= if trans { m } else { n },
        "int8 gemm: output too small"
    );
    let pa = prepare_a(a, b.k4, b.has_zp, isa == Isa::Avx2);
    let ctx = Ctx {
        isa,
        a: &pa,
        b,
        post,
        out: out.ptr(),
        ld,
        trans,
    };
    let mblocks = m.div_ceil(MR);
    let npanels = b.panels.len();
    let work = m * n * b.k4;
    if threads <= 1 || work < 1 << 16 {
        ctx.run(0..mblocks, 0..npanels);
        return;
    }
    use rayon::prelude::*;
    // Split the dimension with more blocks; a few jobs per thread even out uneven tiles.
    let jobs = threads * 4;
    if npanels >= mblocks {
        let per = npanels.div_ceil(jobs.min(npanels));
        (0..npanels.div_ceil(per)).into_par_iter().for_each(|j| {
            ctx.run(0..mblocks, j * per..((j + 1) * per).min(npanels));
        });
    } else {
        let per = mblocks.div_ceil(jobs.min(mblocks));
        (0..mblocks.div_ceil(per)).into_par_iter().for_each(|j| {
            ctx.run(j * per..((j + 1) * per).min(mblocks), 0..npanels);
        });
    }
}

struct Ctx<'a> {
    isa: Isa,
    a: &'a PreparedA<'a>,
    b: &'a PackedB,
    post: &'a Post<'a>,
    out: OutPtr,
    ld: usize,
    trans: bool,
}

// Safety: `out` is only written at disjoint tiles by different jobs; the rest is shared read-only.
unsafe impl Sync for Ctx<'_> {}

impl Ctx<'_> {
    /// Computes and finishes the tiles of row blocks `mb` × panels `pb`.
    fn run(&self, mb: Range<usize>, pb: Range<usize>) {
        // Safety (both): the ISA was checked against this CPU in gemm_with.
        #[cfg(target_arch = "x86_64")]
        match self.isa {
            Isa::Avx512Vnni => return unsafe { self.run_avx512(mb, pb) },
            Isa::AvxVnni | Isa::Avx2 => return unsafe { self.run_avx2(mb, pb) },
            Isa::Scalar => {}
        }
        self.run_body(mb, pb)
    }

    /// The same loop compiled for AVX2, so the epilogue vectorizes with it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, mb: Range<usize>, pb: Range<usize>) {
        self.run_body(mb, pb)
    }

    /// The same loop compiled for AVX-512, so the epilogue vectorizes with it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn run_avx512(&self, mb: Range<usize>, pb: Range<usize>) {
        self.run_body(mb, pb)
    }

    /// Panel-major, so a panel stays in cache while A's rows stream past.
    #[inline(always)]
    fn run_body(&self, mb: Range<usize>, pb: Range<usize>) {
        let m = self.a.za.len();
        let b = self.b;
        let groups = b.k4 / 4;
        let mut tile: kernels::Tile = [0; MR * PANEL];
        for p in pb {
            let (off, width, real) = b.panels[p];
            let n0 = p * PANEL;
            for blk in mb.clone() {
                let m0 = blk * MR;
                let rows = (m - m0).min(MR);
                let (arows, lda) = self.a.rows(self.isa, m0, b.k4);
                // Safety: prepare_a guarantees `rows` rows of k4 elements at stride lda
                // from row m0; the panel holds groups*width*4 bytes from `off`.
                unsafe {
                    kernels::tile(
                        self.isa,
                        arows,
                        lda,
                        rows,
                        b.data.as_ptr().add(off),
                        groups,
                        width,
                        &mut tile,
                    );
                }
                #[cfg(target_arch = "x86_64")]
                if !self.trans {
                    // Safety: each epilogue's features are this ISA's; the tile, panel and
                    // output bounds are those of the portable path below.
                    let done = unsafe {
                        match self.isa {
                            Isa::Avx512Vnni => self.finish_vec::<Zmm>(&tile, m0, rows, n0, real),
                            Isa::AvxVnni | Isa::Avx2 => {
                                self.finish_vec::<Ymm>(&tile, m0, rows, n0, real)
                            }
                            Isa::Scalar => false,
                        }
                    };
                    if done {
                        continue;
                    }
                }
                for r in 0..rows {
                    let i = m0 + r;
                    let acc = &mut tile[r * PANEL..r * PANEL + real];
                    let za = self.a.za[i];
                    let cz = &b.cz[n0..n0 + real];
                    if b.has_zp {
                        let rs = self.a.rowsum[i];
                        let zb = &b.zb[n0..n0 + real];
                        for ((x, &c), &z) in acc.iter_mut().zip(cz).zip(zb) {
                            *x = x
                                .wrapping_add(za.wrapping_mul(c))
                                .wrapping_sub(rs.wrapping_mul(z));
                        }
                    } else {
                        for (x, &c) in acc.iter_mut().zip(cz) {
                            *x = x.wrapping_add(za.wrapping_mul(c));
                        }
                    }
                    // Safety: gemm_with checked the output covers every (i, n) with ld/trans.
                    unsafe {
                        epilogue::finish_row(self.post, self.out, self.ld, self.trans, i, n0, acc)
                    };
                }
            }
        }
    }
}

/// A register epilogue: one module of requant/dequant tile functions.
#[cfg(target_arch = "x86_64")]
trait VecEpilogue {
    /// # Safety
    /// As `epilogue_avx512::requant`, with this epilogue's features.
    #[allow(clippy::too_many_arguments)]
    unsafe fn requant(
        t: &epilogue::TileCtx,
        tile: *const i32,
        bias: Option<&[i32]>,
        mult: &[f32],
        zp: i32,
        lo: i32,
        hi: i32,
        out: *mut u8,
        ld: usize,
    );
    /// # Safety
    /// As `epilogue_avx512::dequant`, with this epilogue's features.
    unsafe fn dequant(
        t: &epilogue::TileCtx,
        tile: *const i32,
        a_scale: &[f32],
        b_scale: &[f32],
        bias: Option<&[f32]>,
        out: *mut f32,
        ld: usize,
    );
}

/// [`epilogue_avx512`]: AVX-512F/BW.
#[cfg(target_arch = "x86_64")]
struct Zmm;
/// [`epilogue_avx2`]: AVX2.
#[cfg(target_arch = "x86_64")]
struct Ymm;

macro_rules! vec_epilogue {
    ($t:ty, $m:ident) => {
        #[cfg(target_arch = "x86_64")]
        impl VecEpilogue for $t {
            #[inline(always)]
            unsafe fn requant(
                t: &epilogue::TileCtx,
                tile: *const i32,
                bias: Option<&[i32]>,
                mult: &[f32],
                zp: i32,
                lo: i32,
                hi: i32,
                out: *mut u8,
                ld: usize,
            ) {
                // Safety: forwarded.
                unsafe { $m::requant(t, tile, bias, mult, zp, lo, hi, out, ld) }
            }
            #[inline(always)]
            unsafe fn dequant(
                t: &epilogue::TileCtx,
                tile: *const i32,
                a_scale: &[f32],
                b_scale: &[f32],
                bias: Option<&[f32]>,
                out: *mut f32,
                ld: usize,
            ) {
                // Safety: forwarded.
                unsafe { $m::dequant(t, tile, a_scale, b_scale, bias, out, ld) }
            }
        }
    };
}
vec_epilogue!(Zmm, epilogue_avx512);
vec_epilogue!(Ymm, epilogue_avx2);

impl Ctx<'_> {
    /// The register epilogue `E` for row-major u8/s8 requantized or f32
    /// dequantized output; false for the other cases.
    ///
    /// # Safety
    /// `E`'s features available; `tile` holds rows `m0..m0+rows` × columns
    /// `n0..n0+real` and the output covers them (checked in `gemm_with`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish_vec<E: VecEpilogue>(
        &self,
        tile: &kernels::Tile,
        m0: usize,
        rows: usize,
        n0: usize,
        real: usize,
    ) -> bool {
        let b = self.b;
        let cols = n0..n0 + real;
        let t = epilogue::TileCtx {
            rows,
            width: real,
            stride: PANEL,
            za: &self.a.za[m0..m0 + rows],
            rowsum: if b.has_zp {
                &self.a.rowsum[m0..m0 + rows]
            } else {
                &[]
            },
            cz: Some(&b.cz[cols.clone()]),
            zb: b.has_zp.then(|| &b.zb[cols.clone()]),
        };
        let at = m0 * self.ld + n0;
        // Safety: the caller's contract; `at` addresses row m0, column n0.
        unsafe {
            match (*self.post, self.out) {
                (
                    Post::Requant {
                        bias,
                        mult,
                        zp,
                        lo,
                        hi,
                    },
                    OutPtr::U8(_) | OutPtr::I8(_),
                ) => {
                    let p = match self.out {
                        OutPtr::U8(p) => p.add(at),
                        OutPtr::I8(p) => p.add(at).cast(),
                        _ => return false,
                    };
                    let mult = if mult.len() == 1 {
                        mult
                    } else {
                        &mult[cols.clone()]
                    };
                    let bias = bias.map(|v| &v[cols.clone()]);
                    E::requant(&t, tile.as_ptr(), bias, mult, zp, lo, hi, p, self.ld);
                    true
                }
                (
                    Post::Dequant {
                        a_scale,
                        b_scale,
                        bias,
                    },
                    OutPtr::F32(p),
                ) => {
                    let a_scale = if a_scale.len() == 1 {
                        a_scale
                    } else {
                        &a_scale[m0..m0 + rows]
                    };
                    let b_scale = if b_scale.len() == 1 {
                        b_scale
                    } else {
                        &b_scale[cols.clone()]
                    };
                    let bias = bias.map(|v| &v[cols.clone()]);
                    E::dequant(
                        &t,
                        tile.as_ptr(),
                        a_scale,
                        b_scale,
                        bias,
                        p.add(at),
                        self.ld,
                    );
                    true
                }
                _ => false,
            }
        }
    }
}

/// Runs the bare micro-kernel `reps` times on full `MR×PANEL` tiles over
/// the first panel of `b` (A: `MR` rows of `b.k` bytes), for measuring it
/// apart from packing and epilogues. Returns a checksum.
#[doc(hidden)]
pub fn microkernel_reps(isa: Isa, a: &[u8], b: &PackedB, reps: usize) -> i64 {
    assert!(Isa::available().contains(&isa));
    assert!(
        b.k.is_multiple_of(4)
            && a.len() >= MR * b.k
            && b.panels.first().is_some_and(|p| p.1 == PANEL)
    );
    let am = AMat {
        data: AData::U8(&a[..MR * b.k]),
        m: MR,
        k: b.k,
        lda: b.k,
        zero_points: &[0],
    };
    let pa = prepare_a(&am, b.k4, false, isa == Isa::Avx2);
    let (arows, lda) = pa.rows(isa, 0, b.k4);
    let mut tile: kernels::Tile = [0; MR * PANEL];
    let mut sum = 0i64;
    for _ in 0..reps {
        // Safety: A holds MR rows of k elements; panel 0 is PANEL wide and k4 deep.
        unsafe {
            kernels::tile(
                isa,
                arows,
                lda,
                MR,
                b.data.as_ptr(),
                b.k / 4,
                PANEL,
                &mut tile,
            );
        }
        sum += tile[0] as i64;
    }
    sum
}
