use super::*;

fn ulps(got: f32, want: f64) -> f64 {
    if got.is_nan() && want.is_nan() {
        return 0.0;
    }
    let w = want as f32;
    if got == w {
        return 0.0;
    }
    let spacing = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
    (got as f64 - want).abs() / spacing.max(f32::MIN_POSITIVE as f64)
}

/// Inputs: a dense sweep, the range edges, specials, and an odd length so
/// every path's tail is used.
fn inputs(lo: f32, hi: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..20_001)
        .map(|i| lo + (hi - lo) * i as f32 / 20_000.0)
        .collect();
    v.extend([
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        88.72,
        88.73,
        -87.33,
        -87.34,
        0.921_875,
        -0.921_875,
        3.925,
        1e-30,
        -1e-30,
    ]);
    v
}

fn check(func: UnaryFn, lo: f32, hi: f32, reference: impl Fn(f64) -> f64, max_ulps: f64, abs: f64) {
    let x = inputs(lo, hi);
    let mut scalar = vec![0f32; x.len()];
    unary_at(Level::Scalar, func, &x, &mut scalar);
    for level in Level::available() {
        let mut y = vec![0f32; x.len()];
        unary_at(level, func, &x, &mut y);
        for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
            let want = reference(xi as f64);
            let ok = ulps(yi, want) <= max_ulps || (yi as f64 - want).abs() <= abs;
            assert!(ok, "{func:?} at {level:?}: f({xi}) = {yi}, want {want}");
            // Every path agrees with the scalar one as closely (FMA moves low bits).
            let s = scalar[i];
            let ok = ulps(yi, s as f64) <= 2.0 * max_ulps || (yi - s).abs() as f64 <= 2.0 * abs;
            assert!(ok, "{func:?} at {level:?} vs scalar: f({xi}) = {yi} vs {s}");
        }
    }
}

fn erf64(x: f64) -> f64 {
    // libm's double erf through f64 -> the reference.
    unsafe extern "C" {
        fn erf(x: f64) -> f64;
    }
    // Safety: a pure libm function.
    unsafe { erf(x) }
}

#[test]
fn exp_within_2_ulp_on_every_level() {
    check(
        UnaryFn::Exp,
        -90.0,
        90.0,
        f64::exp,
        2.0,
        f32::MIN_POSITIVE as f64,
    );
}

#[test]
fn erf_within_2_ulp_on_every_level() {
    check(UnaryFn::Erf, -5.0, 5.0, erf64, 2.0, 1e-45);
}

#[test]
fn gelu_and_sigmoid_match_f64() {
    let gelu = |x: f64| {
        if x == f64::NEG_INFINITY {
            f64::NAN
        } else {
            0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
        }
    };
    // 1 + erf cancels for negative x: the error is absolute, ~|x| ulp(1).
    check(UnaryFn::Gelu, -10.0, 10.0, gelu, 4.0, 1.2e-6);
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    check(UnaryFn::Sigmoid, -100.0, 100.0, sig, 4.0, 1e-37);
}

#[test]
fn softmax_rows_match_f64_on_every_level() {
    for n in [1usize, 7, 16, 33, 128, 1000] {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37)
            .collect();
        let m = x.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
        for level in Level::available() {
            for log in [false, true] {
                let mut y = vec![0f32; n];
                softmax_row_at(level, &x, &mut y, log);
                for (&xi, &yi) in x.iter().zip(&y) {
                    let want = if log {
                        xi as f64 - m - s.ln()
                    } else {
                        (xi as f64 - m).exp() / s
                    };
                    assert!(
                        (yi as f64 - want).abs()
                            <= 2e-6 * want.abs().max(1e-3) + 2e-7 * (xi.abs() as f64),
                        "{level:?} log={log} n={n}: {yi} vs {want}"
                    );
                }
            }
        }
    }
    // A NaN anywhere in a row makes the whole row NaN, on every level.
    for level in Level::available() {
        let x = [1.0, f32::NAN, 2.0];
        let mut y = [0f32; 3];
        softmax_row_at(level, &x, &mut y, false);
        assert!(y.iter().all(|v| v.is_nan()), "{level:?}: {y:?}");
    }
}
