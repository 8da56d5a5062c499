//! Branch-free f32 exponential that the compiler can vectorise (libm's `expf`
//! is an opaque call per element). Used by Softmax over a strided axis; the
//! contiguous cases use quench_kernels::vmath.

/// `e^x` for f32 within ~2 ulp; saturates to 0 / +inf outside the f32 range
/// and propagates NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Beyond these bounds the result is inf / 0 (denormals flushed).
    let xc = x.clamp(-87.336_55, 88.722_84);
    // Round to nearest even by the 1.5 * 2^23 trick: `round_ties_even` is a
    // libm call on baseline x86-64 and would stop the loop vectorising.
    const ROUND: f32 = 12_582_912.0;
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Cephes polynomial for e^r on [-ln2/2, ln2/2].
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // 2^n in two factors so that n = 128 (x just below the overflow bound) stays finite.
    let n = n as i32;
    let h = n >> 1;
    let s1 = f32::from_bits(((h + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - h + 127) as u32) << 23);
    let y = e * s1 * s2;
    if x.is_nan() {
        x
    } else if x > 88.722_84 {
        f32::INFINITY
    } else if x < -87.336_55 {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut x = -90.0f32;
        while x < 90.0 {
            let (got, want) = (exp_f32(x), x.exp());
            let tol = want.abs() * 4.0 * f32::EPSILON + f32::MIN_POSITIVE;
            assert!(
                got == want || (got - want).abs() <= tol,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.013;
        }
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }
}
