//! u8·s8→i32 micro-kernels over one packed panel: `rows` (≤ [`MR`]) rows
//! of A times a panel of `width` (multiple of 16, ≤ [`PANEL`]) columns,
//! written raw (no zero-point correction) into a `MR×PANEL` tile.
//!
//! All paths compute the same exact wrapping i32 sums; only speed differs.

use super::{Isa, MR, PANEL};

pub(crate) type Tile = [i32; MR * PANEL];

/// Computes one tile with the chosen instruction set.
///
/// # Safety
/// `a` must allow reading `rows` rows of `4 * groups` bytes at stride `lda`;
/// `b` must point at `groups * width * 4` packed bytes; `isa` must be
/// supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    isa: Isa,
    a: *const u8,
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
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::tile_avx512(a, lda, rows, b, groups, width, c),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => x86::tile_avxvnni(a, lda, rows, b, groups, width, c),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::tile_avx2(a, lda, rows, b, groups, width, c),
            _ => tile_scalar(a, lda, rows, b, groups, width, c),
        }
    }
}

/// Portable reference path.
///
/// # Safety
/// As [`tile`].
pub(crate) unsafe fn tile_scalar(
    a: *const u8,
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
                    std::slice::from_raw_parts(a.add(r * lda + 4 * g), 4),
                    std::slice::from_raw_parts(b.add(g * width * 4), width * 4),
                )
            };
            for (j, cv) in crow.iter_mut().enumerate() {
                let bj = &bg[4 * j..4 * j + 4];
                let mut s = 0i32;
                for t in 0..4 {
                    s += av[t] as i32 * bj[t] as i32;
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

    /// The 256-bit paths work on `R` rows × 16 columns at a time (two ymm);
    /// `DOT` picks vpdpbusd (AVX-VNNI) or the exact AVX2 emulation.
    #[inline(always)]
    unsafe fn ymm_r16<const R: usize, const VNNI: bool>(
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
            // VNNI: acc[r][h] holds 8 columns. AVX2: acc[r][2h] and acc[r][2h+1]
            // hold pair sums of columns 8h..8h+3 and 8h+4..8h+7 (see below).
            let mut acc = [[_mm256_setzero_si256(); 4]; R];
            let stride = width * 4;
            for g in 0..groups {
                let bp = b.add(g * stride + col * 4);
                let b0 = _mm256_loadu_si256(bp as *const _);
                let b1 = _mm256_loadu_si256(bp.add(32) as *const _);
                if VNNI {
                    for (r, accr) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_epi32(
                            (a.add(r * lda + 4 * g) as *const i32).read_unaligned(),
                        );
                        accr[0] = _mm256_dpbusd_avx_epi32(accr[0], av, b0);
                        accr[1] = _mm256_dpbusd_avx_epi32(accr[1], av, b1);
                    }
                } else {
                    // vpmaddubsw would saturate u8·s8 pair sums in i16; widen both
                    // sides to i16 and use vpmaddwd, whose i32 pair sums are exact.
                    let w = [
                        _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b0)),
                        _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(b0)),
                        _mm256_cvtepi8_epi16(_mm256_castsi256_si128(b1)),
                        _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(b1)),
                    ];
                    for (r, accr) in acc.iter_mut().enumerate() {
                        let x = (a.add(r * lda + 4 * g) as *const u32).read_unaligned() as u64;
                        let x16 = (x & 0xff)
                            | ((x >> 8) & 0xff) << 16
                            | ((x >> 16) & 0xff) << 32
                            | (x >> 24) << 48;
                        let av = _mm256_set1_epi64x(x16 as i64);
                        for q in 0..4 {
                            accr[q] = _mm256_add_epi32(accr[q], _mm256_madd_epi16(av, w[q]));
                        }
                    }
                }
            }
            for (r, accr) in acc.iter().enumerate() {
                let out = c.add(r * PANEL + col);
                if VNNI {
                    _mm256_storeu_si256(out as *mut _, accr[0]);
                    _mm256_storeu_si256(out.add(8) as *mut _, accr[1]);
                } else {
                    // hadd gives columns [0,1,4,5 | 2,3,6,7]; put them in order.
                    let idx = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
                    let lo = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(accr[0], accr[1]), idx);
                    let hi = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(accr[2], accr[3]), idx);
                    _mm256_storeu_si256(out as *mut _, lo);
                    _mm256_storeu_si256(out.add(8) as *mut _, hi);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn ymm_tile<const VNNI: bool>(
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
                        1 => ymm_r16::<1, VNNI>(ar, lda, b, groups, width, col, cr),
                        2 => ymm_r16::<2, VNNI>(ar, lda, b, groups, width, col, cr),
                        3 => ymm_r16::<3, VNNI>(ar, lda, b, groups, width, col, cr),
                        _ => ymm_r16::<4, VNNI>(ar, lda, b, groups, width, col, cr),
                    }
                }
            }
            r0 += rr;
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
        // Safety: caller's contract.
        unsafe { ymm_tile::<true>(a, lda, rows, b, groups, width, c) }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2(
        a: *const u8,
        lda: usize,
        rows: usize,
        b: *const i8,
        groups: usize,
        width: usize,
        c: &mut Tile,
    ) {
        // Safety: caller's contract.
        unsafe { ymm_tile::<false>(a, lda, rows, b, groups, width, c) }
    }
}
