//! Quantizing f32 to u8 the way ONNX QuantizeLinear does, in a loop the
//! compiler vectorises: `f32::round_ties_even` is a libm call (`rintf`) on a
//! baseline x86-64 build, which made activation quantization cost more than
//! the int8 GEMM it feeds.

/// Rounds half to even, like `f32::round_ties_even`, without a libm call.
///
/// Adding and subtracting 2²³ to |x| leaves it rounded to an integer in the
/// default (nearest-even) mode, exactly for |x| < 2²³; the sign is put back
/// after. Larger floats are already integers and are returned as they are.
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = x.abs();
    if a < TWO_23 {
        ((a + TWO_23) - TWO_23).copysign(x)
    } else {
        x
    }
}

/// `dst[i] = saturate_u8(round_half_even(src[i] / scale) + zero_point)`, as
/// DynamicQuantizeLinear and ORT's dynamic MatMul quantize activations.
pub fn quantize_u8(src: &[f32], scale: f32, zero_point: u8, dst: &mut [u8]) {
    let zp = f32::from(zero_point);
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (round_half_even(v / scale) + zp).clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_round_ties_even_everywhere_it_matters() {
        let mut xs: Vec<f32> = vec![
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            0.49999997,
            4_194_303.5,
            4_194_304.5,
            8_388_609.0,
            1e30,
            -1e30,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut s = 0x2545_f491u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            xs.push(f32::from_bits(s) % 1e7);
            xs.push((s % 2000) as f32 / 4.0 - 250.0);
        }
        for x in xs {
            if x.is_nan() {
                continue;
            }
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn quantize_u8_saturates_and_rounds_ties_to_even() {
        let src = [
            0.0,
            0.25,
            0.75,
            1.25,
            -100.0,
            100.0,
            f32::NAN,
            f32::INFINITY,
        ];
        let mut dst = [0u8; 8];
        quantize_u8(&src, 0.5, 10, &mut dst);
        assert_eq!(dst, [10, 10, 12, 12, 0, 210, 0, 255]);
    }
}
