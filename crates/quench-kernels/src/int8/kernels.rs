//! u8·s8→i32 micro-kernels over one packed panel: `rows` (≤ [`MR`]) rows
//! of A times a panel of `width` (multiple of 16, ≤ [`PANEL`]) columns,
//! written raw (no zero-point correction) into a `MR×PANEL` tile.
//!
//! All paths compute the same exact wrapping i32 sums; only speed differs.

use super::{Isa, MR, PANEL};

pub(crate) type Tile = [i32; MR * PANEL];

/// The rows of A as a kernel reads them.
#[derive(Clone, Copy)]
pub(crate) enum ARows {
    /// u8 bytes (the VNNI paths and the portable one).
    U8(*const u8),
    /// The same values zero-extended to i16: the AVX2 path multiplies with
    /// `vpmaddwd`, whose i16 pairs cannot saturate, and broadcasting four
    /// ready-made i16 from memory is one load where widening bytes in the
    /// inner loop costs a shuffle per row and group.
    Wide(*const i16),
}

impl ARows {
    /// Element `i` as i32.
    ///
    /// # Safety
    /// `i` must be readable.
    #[inline(always)]
    unsafe fn at(self, i: usize) -> i32 {
        // Safety: the caller's.
        unsafe {
            match self {
                ARows::U8(p) => *p.add(i) as i32,
                ARows::Wide(p) => *p.add(i) as i32,
            }
        }
    }
}

/// Computes one tile with the chosen instruction set.
///
/// # Safety
/// `a` must allow reading `rows` rows of `4 * groups` elements at stride
/// `lda` (elements), wide exactly when `isa` is AVX2; `b` must point at
/// `groups * width * 4` packed bytes; `isa` must be supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    isa: Isa,
    a: ARows,
    lda: usize,
    rows: usize,
    b: *const i8,
    groups: usize,
    width: usize,
    c: &mut Tile,
) {
    debug_assert!((1..=MR).contains(&rows) && width.is_multiple_of(16) && width <= PANEL);
    // Safety: forwarded from the caller.
    unsafe {
        match (isa, a) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512Vnni, ARows::U8(a)) => x86::tile_avx512(a, lda, rows, b, groups, width, c),
            #[cfg(target_arch = "x86_64")]
            (Isa::AvxVnni, ARows::U8(a)) => x86::tile_avxvnni(a, lda, rows, b, groups, width, c),
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, ARows::Wide(a)) => x86::tile_avx2(a, lda, rows, b, groups, width, c),
            _ => tile_scalar(a, lda, rows, b, groups, width, c),
        }
    }
}

/// Portable reference path.
///
/// # Safety
/// As [`tile`].
pub(crate) unsafe fn tile_scalar(
    a: ARows,
    lda: usize,
    rows: usize,
    b: *const i8,
    groups: usize,
    width: usize,
    c: &mut Tile,
) {
    for r in 0..rows {
        let crow = &mut c[r * PANEL..r * PANEL + width];
        crow.fill(0);
        for g in 0..groups {
            // Safety: bounds are the caller's contract.
            let (av, bg) = unsafe {
                (
                    [0, 1, 2, 3].map(|t| a.at(r * lda + 4 * g + t)),
                    std::slice::from_raw_parts(b.add(g * width * 4), width * 4),
                )
            };
            for (j, cv) in crow.iter_mut().enumerate() {
                let bj = &bg[4 * j..4 * j + 4];
                let mut s = 0i32;
                for t in 0..4 {
                    s += av[t] * bj[t] as i32;
                }
                *cv = cv.wrapping_add(s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, PANEL, Tile};
    use std::arch::x86_64::*;

    /// `R` rows × `V` zmm (16 columns each): `R*V` accumulators stay in
    /// registers, each K-group costs V loads, R broadcasts and R*V vpdpbusd.
    #[inline(always)]
    unsafe fn avx512_rv<const R: usize, const V: usize>(
        a: *const u8,
        lda: usize,
        b: *const i8,
        groups: usize,
        c: &mut Tile,
    ) {
        // Safety: caller's bounds; the features are enabled by the caller.
        unsafe {
            let stride = V * 64;
            let mut acc = [[_mm512_setzero_si512(); V]; R];
            for g in 0..groups {
                let bp = b.add(g * stride);
                let mut bv = [_mm512_setzero_si512(); V];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm512_loadu_si512(bp.add(v * 64) as *const _);
                }
                for (r, accr) in acc.iter_mut().enumerate() {
                    let av =
                        _mm512_set1_epi32((a.add(r * lda + 4 * g) as *const i32).read_unaligned());
                    for v in 0..V {
                        accr[v] = _mm512_dpbusd_epi32(accr[v], av, bv[v]);
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                for (v, x) in accr.iter().enumerate() {
                    _mm512_storeu_si512(c.as_mut_ptr().add(r * PANEL + v * 16) as *mut _, *x);
                }
            }
        }
    }

    macro_rules! dispatch_rv {
        ($f:ident, $rows:expr, $v:expr, $($args:expr),*) => {
            match ($rows, $v) {
                (1, 1) => $f::<1, 1>($($args),*),
                (1, 2) => $f::<1, 2>($($args),*),
                (1, 3) => $f::<1, 3>($($args),*),
                (1, _) => $f::<1, 4>($($args),*),
                (2, 1) => $f::<2, 1>($($args),*),
                (2, 2) => $f::<2, 2>($($args),*),
                (2, 3) => $f::<2, 3>($($args),*),
                (2, _) => $f::<2, 4>($($args),*),
                (3, 1) => $f::<3, 1>($($args),*),
                (3, 2) => $f::<3, 2>($($args),*),
                (3, 3) => $f::<3, 3>($($args),*),
                (3, _) => $f::<3, 4>($($args),*),
                (4, 1) => $f::<4, 1>($($args),*),
                (4, 2) => $f::<4, 2>($($args),*),
                (4, 3) => $f::<4, 3>($($args),*),
                (4, _) => $f::<4, 4>($($args),*),
                (5, 1) => $f::<5, 1>($($args),*),
                (5, 2) => $f::<5, 2>($($args),*),
                (5, 3) => $f::<5, 3>($($args),*),
                (5, _) => $f::<5, 4>($($args),*),
                (_, 1) => $f::<6, 1>($($args),*),
                (_, 2) => $f::<6, 2>($($args),*),
                (_, 3) => $f::<6, 3>($($args),*),
                (_, _) => $f::<6, 4>($($args),*),
            }
        };
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_avx512(
        a: *const u8,
        lda: usize,
        rows: usize,
        b: *const i8,
        groups: usize,
        width: usize,
        c: &mut Tile,
    ) {
        const _: () = assert!(MR == 6 && PANEL == 64);
        // Safety: caller's contract.
        unsafe { dispatch_rv!(avx512_rv, rows, width / 16, a, lda, b, groups, c) }
    }

    /// AVX-VNNI: `R` rows × 16 columns at a time (two ymm of vpdpbusd).
    #[inline(always)]
    unsafe fn vnni_r16<const R: usize>(
        a: *const u8,
        lda: usize,
        b: *const i8,
        groups: usize,
        width: usize,
        col: usize,
        c: *mut i32,
    ) {
        // Safety: caller's bounds; the features are enabled by the caller.
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            let stride = width * 4;
            for g in 0..groups {
                let bp = b.add(g * stride + col * 4);
                let b0 = _mm256_loadu_si256(bp as *const _);
                let b1 = _mm256_loadu_si256(bp.add(32) as *const _);
                for (r, accr) in acc.iter_mut().enumerate() {
                    let av =
                        _mm256_set1_epi32((a.add(r * lda + 4 * g) as *const i32).read_unaligned());
                    accr[0] = _mm256_dpbusd_avx_epi32(accr[0], av, b0);
                    accr[1] = _mm256_dpbusd_avx_epi32(accr[1], av, b1);
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                let out = c.add(r * PANEL + col);
                _mm256_storeu_si256(out as *mut _, accr[0]);
                _mm256_storeu_si256(out.add(8) as *mut _, accr[1]);
            }
        }
    }

    /// AVX2 without VNNI: `R` rows × 8 columns. `vpmaddubsw` would saturate
    /// u8·s8 pair sums in i16, so both sides are i16 and `vpmaddwd` makes
    /// exact i32 pair sums: A comes widened, four K values broadcast as one
    /// 64-bit load; a 16-byte K-group of 4 columns sign-extends to one ymm.
    /// `acc[r][h]` holds the (k0+k1, k2+k3) halves of columns 4h..4h+3,
    /// added up once at the end. 2R + 2 + 1 + 1 registers: R = 6 fits all 16.
    #[inline(always)]
    unsafe fn avx2_r8<const R: usize>(
        a: *const i16,
        lda: usize,
        b: *const i8,
        groups: usize,
        width: usize,
        col: usize,
        c: *mut i32,
    ) {
        // Safety: caller's bounds; the features are enabled by the caller.
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            let stride = width * 4;
            for g in 0..groups {
                let bp = b.add(g * stride + col * 4);
                let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp as *const _));
                let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(16) as *const _));
                for (r, accr) in acc.iter_mut().enumerate() {
                    let av =
                        _mm256_set1_epi64x((a.add(r * lda + 4 * g) as *const i64).read_unaligned());
                    accr[0] = _mm256_add_epi32(accr[0], _mm256_madd_epi16(av, b0));
                    accr[1] = _mm256_add_epi32(accr[1], _mm256_madd_epi16(av, b1));
                }
            }
            // hadd gives columns [0,1,4,5 | 2,3,6,7]; put them in order.
            let idx = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
            for (r, accr) in acc.iter().enumerate() {
                let v = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(accr[0], accr[1]), idx);
                _mm256_storeu_si256(c.add(r * PANEL + col) as *mut _, v);
            }
        }
    }

    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn tile_avxvnni(
        a: *const u8,
        lda: usize,
        rows: usize,
        b: *const i8,
        groups: usize,
        width: usize,
        c: &mut Tile,
    ) {
        let cp = c.as_mut_ptr();
        let mut r0 = 0;
        while r0 < rows {
            let rr = (rows - r0).min(4);
            let ar = a.wrapping_add(r0 * lda);
            let cr = cp.wrapping_add(r0 * PANEL);
            for col in (0..width).step_by(16) {
                // Safety: caller's contract; rows r0..r0+rr are inside the tile.
                unsafe {
                    match rr {
                        1 => vnni_r16::<1>(ar, lda, b, groups, width, col, cr),
                        2 => vnni_r16::<2>(ar, lda, b, groups, width, col, cr),
                        3 => vnni_r16::<3>(ar, lda, b, groups, width, col, cr),
                        _ => vnni_r16::<4>(ar, lda, b, groups, width, col, cr),
                    }
                }
            }
            r0 += rr;
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(
        a: *const i16,
        lda: usize,
        rows: usize,
        b: *const i8,
        groups: usize,
        width: usize,
        c: &mut Tile,
    ) {
        const _: () = assert!(MR == 6);
        let cp = c.as_mut_ptr();
        for col in (0..width).step_by(8) {
            // Safety: caller's contract; rows ≤ MR.
            unsafe {
                match rows {
                    1 => avx2_r8::<1>(a, lda, b, groups, width, col, cp),
                    2 => avx2_r8::<2>(a, lda, b, groups, width, col, cp),
                    3 => avx2_r8::<3>(a, lda, b, groups, width, col, cp),
                    4 => avx2_r8::<4>(a, lda, b, groups, width, col, cp),
                    5 => avx2_r8::<5>(a, lda, b, groups, width, col, cp),
                    _ => avx2_r8::<6>(a, lda, b, groups, width, col, cp),
                }
            }
        }
    }
}
