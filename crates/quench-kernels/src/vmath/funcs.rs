//! The algorithms, written once over [`Simd`]: a Cephes-style exponential and
//! a two-piece erf (odd polynomial near 0, `1 - e^{poly}` further out, as in
//! MLAS), with NaN and the range edges handled by selects so that no lane
//! branches.

use super::simd::Simd;

/// One element-wise function, applied to a vector at a time.
pub(crate) trait Unary {
    /// # Safety
    /// As for [`Simd`]: the vector type's features must be present.
    unsafe fn apply<V: Simd>(v: V) -> V;
}

pub(crate) struct Exp;
pub(crate) struct Erf;
pub(crate) struct Gelu;
pub(crate) struct Sigmoid;

/// Inputs beyond these give +inf / 0.
const EXP_HI: f32 = 88.722_84;
const EXP_LO: f32 = -87.336_55;

/// `e^x` within ~2 ulp; +inf above 88.72, 0 below -87.34, NaN kept.
#[inline(always)]
pub(crate) unsafe fn exp<V: Simd>(x: V) -> V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    unsafe {
        let xc = x.max(V::splat(EXP_LO)).min(V::splat(EXP_HI));
        let n = xc.mul(V::splat(LOG2E)).round();
        let r = n.mul_add(V::splat(-LN2_HI), xc);
        let r = n.mul_add(V::splat(-LN2_LO), r);
        // Cephes polynomial for e^r on [-ln2/2, ln2/2].
        let mut p = V::splat(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5e-1,
        ] {
            p = p.mul_add(r, V::splat(c));
        }
        let e = p.mul(r).mul_add(r, r).add(V::splat(1.0));
        // 2^n as two factors so that n = 128 stays finite.
        let h = n.mul_add(V::splat(0.5), V::splat(-0.25)).round();
        let y = e.mul(h.pow2()).mul(n.sub(h).pow2());
        let y = V::select_gt(x, V::splat(EXP_HI), V::splat(f32::INFINITY), y);
        let y = V::select_gt(V::splat(EXP_LO), x, V::splat(0.0), y);
        V::select_nan(x, x, y)
    }
}

/// Where erf switches from the odd polynomial to `1 - e^{q(|x|)}`.
const ERF_SPLIT: f32 = 0.921_875;
/// erf(x) rounds to 1 in f32 beyond this.
const ERF_ONE: f32 = 3.925;
/// `erf(x) = x + x * P(x²)` on [0, ERF_SPLIT]: least squares on Chebyshev
/// nodes (max error 1.3 ulp in f32), highest degree first.
const ERF_SMALL: [f32; 6] = [
    -6.047_158_4e-4,
    5.005_626e-3,
    -2.677_640_3e-2,
    1.128_214e-1,
    -3.761_253_4e-1,
    1.283_791_7e-1,
];
/// `ln(erfc(t)) = Q(t)` on [ERF_SPLIT, ERF_ONE], fitted the same way.
const ERF_BIG: [f32; 9] = [
    1.635_555_2e-6,
    -4.599_288_5e-5,
    5.959_702e-4,
    -4.754_333e-3,
    2.640_233_4e-2,
    -1.100_402_2e-1,
    -6.318_756e-1,
    -1.130_200_3,
    3.109_433_7e-4,
];

#[inline(always)]
pub(crate) unsafe fn erf<V: Simd>(x: V) -> V {
    unsafe {
        let a = x.abs().min(V::splat(ERF_ONE));
        let s = a.mul(a);
        let mut p = V::splat(ERF_SMALL[0]);
        for &c in &ERF_SMALL[1..] {
            p = p.mul_add(s, V::splat(c));
        }
        let small = p.mul_add(a, a);
        let mut q = V::splat(ERF_BIG[0]);
        for &c in &ERF_BIG[1..] {
            q = q.mul_add(a, V::splat(c));
        }
        let big = V::splat(1.0).sub(exp(q));
        V::select_gt(a, V::splat(ERF_SPLIT), big, small).copysign(x)
    }
}

impl Unary for Exp {
    #[inline(always)]
    unsafe fn apply<V: Simd>(v: V) -> V {
        unsafe { exp(v) }
    }
}

impl Unary for Erf {
    #[inline(always)]
    unsafe fn apply<V: Simd>(v: V) -> V {
        unsafe { erf(v) }
    }
}

impl Unary for Gelu {
    /// `x/2 · (1 + erf(x/√2))`, ONNX Gelu without approximation.
    #[inline(always)]
    unsafe fn apply<V: Simd>(v: V) -> V {
        unsafe {
            let e = erf(v.mul(V::splat(std::f32::consts::FRAC_1_SQRT_2)));
            v.mul(V::splat(0.5)).mul(e.add(V::splat(1.0)))
        }
    }
}

impl Unary for Sigmoid {
    #[inline(always)]
    unsafe fn apply<V: Simd>(v: V) -> V {
        unsafe {
            let one = V::splat(1.0);
            one.div(one.add(exp(V::splat(0.0).sub(v))))
        }
    }
}

/// `y = f(x)` a vector at a time; the tail goes through a padded buffer.
#[inline(always)]
pub(crate) unsafe fn map<V: Simd, F: Unary>(x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let l = V::LANES;
    let mut i = 0;
    unsafe {
        while i + l <= n {
            F::apply(V::load(x.as_ptr().add(i))).store(y.as_mut_ptr().add(i));
            i += l;
        }
        if i < n {
            let mut buf = [0f32; 16];
            buf[..n - i].copy_from_slice(&x[i..n]);
            F::apply(V::load(buf.as_ptr())).store(buf.as_mut_ptr());
            y[i..n].copy_from_slice(&buf[..n - i]);
        }
    }
}

/// Softmax (or LogSoftmax) of one contiguous row: max, `e^{x-max}` and its
/// sum in one pass, then one scaling pass.
#[inline(always)]
pub(crate) unsafe fn softmax_row<V: Simd>(x: &[f32], y: &mut [f32], log: bool) {
    let n = x.len().min(y.len());
    let l = V::LANES;
    let full = n - n % l;
    // The tail is padded with -inf: no effect on the max, e^-inf = 0 in the sum.
    let mut tail = [f32::NEG_INFINITY; 16];
    tail[..n - full].copy_from_slice(&x[full..n]);
    unsafe {
        let mut m = V::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i < full {
            m = V::load(x.as_ptr().add(i)).max(m);
            i += l;
        }
        if full < n {
            m = V::load(tail.as_ptr()).max(m);
        }
        let mx = V::splat(m.reduce_max());
        let mut s = V::splat(0.0);
        i = 0;
        while i < full {
            let e = exp(V::load(x.as_ptr().add(i)).sub(mx));
            e.store(y.as_mut_ptr().add(i));
            s = s.add(e);
            i += l;
        }
        if full < n {
            let e = exp(V::load(tail.as_ptr()).sub(mx));
            s = s.add(e);
            e.store(tail.as_mut_ptr());
            y[full..n].copy_from_slice(&tail[..n - full]);
        }
        let sum = s.reduce_add();
        if log {
            let shift = m.reduce_max() + sum.ln();
            for (o, &v) in y[..n].iter_mut().zip(x) {
                *o = v - shift;
            }
        } else {
            let r = V::splat(1.0 / sum);
            i = 0;
            while i < full {
                V::load(y.as_ptr().add(i))
                    .mul(r)
                    .store(y.as_mut_ptr().add(i));
                i += l;
            }
            for o in &mut y[full..n] {
                *o *= 1.0 / sum;
            }
        }
    }
}
