//! What a fused convolution applies to its output while it is still in
//! cache: an optional residual add, then an activation. Saves the separate
//! passes (and fresh output buffers) of Add and Relu/Clip nodes.

use super::isa::multiversion;

/// Activation applied last. NaN propagates as in the standalone ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    /// `min(max(v, lo), hi)`, as ONNX Clip (numpy `clip`).
    Clip(f32, f32),
    LeakyRelu(f32),
}

impl Act {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Act::Clip(lo, hi) => {
                let v = if v < lo { lo } else { v };
                if v > hi { hi } else { v }
            }
            Act::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
        }
    }
}

/// `y = act(y + residual)` (residual, when given, has `y`'s length).
pub fn epilogue(y: &mut [f32], residual: Option<&[f32]>, act: Act) {
    if residual.is_none() && act == Act::None {
        return;
    }
    if let Some(r) = residual {
        assert!(r.len() >= y.len(), "epilogue: residual too short");
    }
    epilogue_dispatch(y, residual, act);
}

multiversion!(fn epilogue_dispatch(y: &mut [f32], residual: Option<&[f32]>, act: Act) => epilogue_impl);

#[inline(always)]
fn epilogue_impl(y: &mut [f32], residual: Option<&[f32]>, act: Act) {
    // One monomorphic loop per activation, so each vectorises.
    macro_rules! run {
        ($f:expr) => {{
            let f = $f;
            match residual {
                Some(r) => y.iter_mut().zip(r).for_each(|(v, &r)| *v = f(*v + r)),
                None => y.iter_mut().for_each(|v| *v = f(*v)),
            }
        }};
    }
    match act {
        Act::None => run!(|v: f32| v),
        Act::Relu => run!(|v: f32| Act::Relu.apply(v)),
        Act::Clip(lo, hi) => run!(move |v: f32| Act::Clip(lo, hi).apply(v)),
        Act::LeakyRelu(a) => run!(move |v: f32| Act::LeakyRelu(a).apply(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_reference() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 9.0).collect();
        let r: Vec<f32> = (0..37).map(|i| (i % 5) as f32 - 2.0).collect();
        for act in [
            Act::None,
            Act::Relu,
            Act::Clip(0.0, 6.0),
            Act::Clip(2.0, -1.0),
            Act::LeakyRelu(0.1),
        ] {
            for res in [None, Some(&r[..])] {
                let mut y = x.clone();
                epilogue(&mut y, res, act);
                for i in 0..x.len() {
                    let v = x[i] + res.map_or(0.0, |r| r[i]);
                    let want = match act {
                        Act::None => v,
                        Act::Relu => v.max(0.0),
                        Act::Clip(lo, hi) => v.max(lo).min(hi),
                        Act::LeakyRelu(a) => {
                            if v < 0.0 {
                                v * a
                            } else {
                                v
                            }
                        }
                    };
                    assert_eq!(y[i], want, "{act:?} at {i}");
                }
            }
        }
        let mut n = [f32::NAN];
        epilogue(&mut n, None, Act::Relu);
        assert!(n[0].is_nan());
    }
}
