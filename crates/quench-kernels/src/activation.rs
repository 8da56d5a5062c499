//! In-place fp32 activations on slices (used by the recurrent ops' gates).

/// `x = 1 / (1 + e^-x)`.
pub fn sigmoid(x: &mut [f32]) {
    for v in x {
        *v = sigmoid_scalar(*v);
    }
}

/// `x = tanh(x)`.
pub fn tanh(x: &mut [f32]) {
    for v in x {
        *v = v.tanh();
    }
}

/// Numerically safe logistic function: never evaluates `exp` of a large
/// positive number.
#[inline]
pub fn sigmoid_scalar(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_and_tanh_match_std() {
        let xs = [-100.0f32, -3.0, -0.5, 0.0, 0.5, 3.0, 100.0];
        let mut s = xs;
        sigmoid(&mut s);
        let mut t = xs;
        tanh(&mut t);
        for (i, &x) in xs.iter().enumerate() {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((s[i] as f64 - want).abs() < 1e-6);
            assert!((t[i] - x.tanh()).abs() < 1e-6);
        }
    }
}
