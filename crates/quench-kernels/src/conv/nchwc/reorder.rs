//! Reorders between the plain NCHW layout and the blocked NCHWc one.
//!
//! They run at every border of an NCHWc chain, and calibration observes
//! every activation in NCHW, so they must move data at memory speed: on
//! AVX-512 a 16 positions × 16 channels tile is transposed in registers
//! instead of one strided scalar access per value.

use super::LANES;

/// `[C][hw]` → `[blocks(C)][hw][16]`, padding channels with zeros.
pub fn nchw_to_nchwc(x: &[f32], c: usize, hw: usize, y: &mut [f32]) {
    assert!(x.len() >= c * hw && y.len() >= super::blocks(c) * hw * LANES);
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // Safety: AVX-512F was detected; the asserts bound every access.
        return unsafe { to_blocked_avx512(x, c, hw, y) };
    }
    to_blocked_scalar(x, c, hw, y, 0);
}

/// `[blocks(C)][hw][16]` → `[C][hw]` (drops the padding channels).
pub fn nchwc_to_nchw(x: &[f32], c: usize, hw: usize, y: &mut [f32]) {
    assert!(y.len() >= c * hw && x.len() >= super::blocks(c) * hw * LANES);
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // Safety: as above.
        return unsafe { from_blocked_avx512(x, c, hw, y) };
    }
    from_blocked_scalar(x, c, hw, y, 0);
}

/// `[C][hw]` → `[hw][C]`: the input layout of a small-input convolution.
pub fn nchw_to_nhwc(x: &[f32], c: usize, hw: usize, y: &mut [f32]) {
    assert!(x.len() >= c * hw && y.len() >= c * hw);
    for (p, v) in y.chunks_exact_mut(c.max(1)).take(hw).enumerate() {
        for (ch, v) in v.iter_mut().enumerate() {
            *v = x[ch * hw + p];
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Positions `from..hw` of every block, one value at a time.
fn to_blocked_scalar(x: &[f32], c: usize, hw: usize, y: &mut [f32], from: usize) {
    for (b, yb) in y
        .chunks_exact_mut(hw * LANES)
        .take(super::blocks(c))
        .enumerate()
    {
        let n = (c - b * LANES).min(LANES);
        let xb = &x[b * LANES * hw..];
        for (p, v) in yb.chunks_exact_mut(LANES).enumerate().skip(from) {
            for l in 0..n {
                v[l] = xb[l * hw + p];
            }
            v[n..].fill(0.0);
        }
    }
}

/// Positions `from..hw` of every block, one value at a time.
fn from_blocked_scalar(x: &[f32], c: usize, hw: usize, y: &mut [f32], from: usize) {
    for b in 0..super::blocks(c) {
        let n = (c - b * LANES).min(LANES);
        let xb = &x[b * hw * LANES..(b + 1) * hw * LANES];
        let yb = &mut y[b * LANES * hw..(b * LANES + n) * hw];
        for (l, yc) in yb.chunks_exact_mut(hw.max(1)).enumerate() {
            for (p, o) in yc.iter_mut().enumerate().skip(from) {
                *o = xb[p * LANES + l];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn to_blocked_avx512(x: &[f32], c: usize, hw: usize, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = hw / LANES * LANES;
    for b in 0..super::blocks(c) {
        let n = (c - b * LANES).min(LANES);
        let xb = &x[b * LANES * hw..];
        let yb = &mut y[b * hw * LANES..(b + 1) * hw * LANES];
        for p0 in (0..full).step_by(LANES) {
            let mut r = [_mm512_setzero_ps(); LANES];
            for (l, v) in r.iter_mut().enumerate().take(n) {
                let row = &xb[l * hw + p0..l * hw + p0 + LANES];
                // Safety: `row` holds 16 floats.
                *v = unsafe { _mm512_loadu_ps(row.as_ptr()) };
            }
            transpose16(&mut r);
            for (pp, v) in r.iter().enumerate() {
                let out = &mut yb[(p0 + pp) * LANES..(p0 + pp + 1) * LANES];
                // Safety: `out` holds 16 floats.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *v) };
            }
        }
    }
    to_blocked_scalar(x, c, hw, y, full);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn from_blocked_avx512(x: &[f32], c: usize, hw: usize, y: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = hw / LANES * LANES;
    for b in 0..super::blocks(c) {
        let n = (c - b * LANES).min(LANES);
        let xb = &x[b * hw * LANES..(b + 1) * hw * LANES];
        let yb = &mut y[b * LANES * hw..(b * LANES + n) * hw];
        for p0 in (0..full).step_by(LANES) {
            let mut r = [_mm512_setzero_ps(); LANES];
            for (pp, v) in r.iter_mut().enumerate() {
                let row = &xb[(p0 + pp) * LANES..(p0 + pp + 1) * LANES];
                // Safety: `row` holds 16 floats.
                *v = unsafe { _mm512_loadu_ps(row.as_ptr()) };
            }
            transpose16(&mut r);
            for (l, v) in r.iter().enumerate().take(n) {
                let out = &mut yb[l * hw + p0..l * hw + p0 + LANES];
                // Safety: `out` holds 16 floats.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *v) };
            }
        }
    }
    from_blocked_scalar(x, c, hw, y, full);
}

/// In-register transpose of a 16 × 16 tile (row `i` lane `j` → row `j`
/// lane `i`): 2-, 4-, 8-, then 16-wide interleaves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [std::arch::x86_64::__m512; LANES]) {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let pd = _mm512_castps_pd;
    for q in 0..4 {
        let (a0, a1, a2, a3) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
        r[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a0), pd(a2)));
        r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a0), pd(a2)));
        r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a1), pd(a3)));
        r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a1), pd(a3)));
    }
    for h in 0..2 {
        for i in 0..4 {
            let (a, b) = (r[8 * h + i], r[8 * h + 4 + i]);
            t[8 * h + i] = _mm512_shuffle_f32x4::<0x88>(a, b);
            t[8 * h + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(a, b);
        }
    }
    for i in 0..8 {
        r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
        r[8 + i] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[8 + i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.5 - 7.0).collect()
    }

    /// Every SIMD path against the scalar one, on tails and partial blocks.
    #[test]
    fn reorders_match_scalar() {
        for c in [1, 3, 15, 16, 17, 33, 48] {
            for hw in [1, 7, 15, 16, 17, 49, 196] {
                let x = values(c * hw);
                let nb = super::super::blocks(c) * LANES * hw;
                let (mut got, mut want) = (vec![f32::NAN; nb], vec![f32::NAN; nb]);
                nchw_to_nchwc(&x, c, hw, &mut got);
                to_blocked_scalar(&x, c, hw, &mut want, 0);
                assert_eq!(got, want, "to blocked c={c} hw={hw}");
                let (mut back, mut want_back) = (vec![f32::NAN; c * hw], vec![f32::NAN; c * hw]);
                nchwc_to_nchw(&got, c, hw, &mut back);
                from_blocked_scalar(&got, c, hw, &mut want_back, 0);
                assert_eq!(back, want_back, "from blocked c={c} hw={hw}");
                assert_eq!(back, x, "round trip c={c} hw={hw}");
                // The scalar reference itself: channel l at position p.
                if c > 2 && hw > 5 {
                    assert_eq!(want[5 * LANES + 2], x[2 * hw + 5]);
                }
            }
        }
    }
}
