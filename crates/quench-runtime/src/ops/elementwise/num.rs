//! Per-dtype arithmetic with ONNX/numpy semantics, so each op is written once
//! and instantiated for every typed dtype.

use quench_ir::Elem;

/// A numeric element: integers use wrapping arithmetic (numpy's behaviour),
/// and integer division by zero yields 0 instead of trapping.
pub trait Num: Elem + PartialOrd {
    const IS_FLOAT: bool;
    const IS_SIGNED: bool;
    fn zero() -> Self;
    fn one() -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Floats: IEEE division; integers: truncation toward zero.
    fn div(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (numpy `mod`).
    fn rem_floor(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C `fmod`).
    fn rem_trunc(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn sign(self) -> Self;
    fn is_nan(self) -> bool;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    /// Integer power by squaring (numpy semantics for integer exponents).
    fn powi(self, e: i64) -> Self;
    /// numpy `maximum`: NaN wins.
    fn max_nan(self, o: Self) -> Self {
        if self.is_nan() || self > o { self } else { o }
    }
    /// numpy `minimum`: NaN wins.
    fn min_nan(self, o: Self) -> Self {
        if self.is_nan() || self < o { self } else { o }
    }
    /// Smallest and largest values (identities of Max/Min reductions).
    fn lowest() -> Self;
    fn highest() -> Self;
}

macro_rules! impl_int {
    ($t:ty, $signed:expr) => {
        impl Num for $t {
            const IS_FLOAT: bool = false;
            const IS_SIGNED: bool = $signed;
            fn zero() -> Self {
                0
            }
            fn one() -> Self {
                1
            }
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn div(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_div(o) }
            }
            fn rem_floor(self, o: Self) -> Self {
                if o == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(o);
                #[allow(unused_comparisons)]
                if r != 0 && ((r < 0) != (o < 0)) {
                    r.wrapping_add(o)
                } else {
                    r
                }
            }
            fn rem_trunc(self, o: Self) -> Self {
                if o == 0 { 0 } else { self.wrapping_rem(o) }
            }
            fn neg(self) -> Self {
                (0 as $t).wrapping_sub(self)
            }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self {
                if self < 0 { self.neg() } else { self }
            }
            #[allow(unused_comparisons)]
            fn sign(self) -> Self {
                if self > 0 {
                    1
                } else if self < 0 {
                    (0 as $t).wrapping_sub(1)
                } else {
                    0
                }
            }
            fn is_nan(self) -> bool {
                false
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn powi(self, e: i64) -> Self {
                if e < 0 {
                    // numpy refuses negative integer powers; 1/x^n truncates.
                    return match self.to_f64() {
                        1.0 => 1,
                        -1.0 => {
                            if e % 2 == 0 {
                                1
                            } else {
                                self
                            }
                        }
                        _ => 0,
                    };
                }
                let (mut base, mut e, mut acc) = (self, e as u64, 1 as $t);
                while e > 0 {
                    if e & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            fn lowest() -> Self {
                <$t>::MIN
            }
            fn highest() -> Self {
                <$t>::MAX
            }
        }
    };
}
impl_int!(i8, true);
impl_int!(i16, true);
impl_int!(i32, true);
impl_int!(i64, true);
impl_int!(u8, false);
impl_int!(u16, false);
impl_int!(u32, false);
impl_int!(u64, false);

macro_rules! impl_float {
    ($t:ty) => {
        impl Num for $t {
            const IS_FLOAT: bool = true;
            const IS_SIGNED: bool = true;
            fn zero() -> Self {
                0.0
            }
            fn one() -> Self {
                1.0
            }
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn div(self, o: Self) -> Self {
                self / o
            }
            fn rem_floor(self, o: Self) -> Self {
                let r = self % o;
                if r != 0.0 && ((r < 0.0) != (o < 0.0)) {
                    r + o
                } else if r == 0.0 {
                    (0.0 as $t).copysign(o)
                } else {
                    r
                }
            }
            fn rem_trunc(self, o: Self) -> Self {
                self % o
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                self.abs()
            }
            fn sign(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    self
                }
            }
            fn is_nan(self) -> bool {
                self.is_nan()
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn powi(self, e: i64) -> Self {
                (self as f64).powf(e as f64) as $t
            }
            fn lowest() -> Self {
                <$t>::NEG_INFINITY
            }
            fn highest() -> Self {
                <$t>::INFINITY
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);

/// Float elements, for transcendental unary ops and normalisations.
pub trait Float: Num + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    fn from_f32(v: f32) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_even(self) -> Self;
    fn recip(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn is_infinite(self) -> bool;
    fn is_sign_negative(self) -> bool;
}

macro_rules! impl_float_fns {
    ($t:ty, $erf:path) => {
        impl Float for $t {
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            fn exp(self) -> Self {
                self.exp()
            }
            fn ln(self) -> Self {
                self.ln()
            }
            fn ln_1p(self) -> Self {
                self.ln_1p()
            }
            fn sqrt(self) -> Self {
                self.sqrt()
            }
            fn tanh(self) -> Self {
                self.tanh()
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn sin(self) -> Self {
                self.sin()
            }
            fn cos(self) -> Self {
                self.cos()
            }
            fn floor(self) -> Self {
                self.floor()
            }
            fn ceil(self) -> Self {
                self.ceil()
            }
            fn round_even(self) -> Self {
                self.round_ties_even()
            }
            fn recip(self) -> Self {
                1.0 / self
            }
            fn powf(self, e: Self) -> Self {
                self.powf(e)
            }
            fn is_infinite(self) -> bool {
                self.is_infinite()
            }
            fn is_sign_negative(self) -> bool {
                self.is_sign_negative()
            }
        }
    };
}
impl_float_fns!(f32, libm::erff);
impl_float_fns!(f64, libm::erf);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_semantics_follow_numpy() {
        assert_eq!((-7i32).div(2), -3);
        assert_eq!(7i32.div(0), 0);
        assert_eq!((-7i32).rem_floor(3), 2);
        assert_eq!((-7i32).rem_trunc(3), -1);
        assert_eq!(7u8.rem_floor(3), 1);
        assert_eq!(3i64.powi(3), 27);
        assert_eq!(200u8.add(100), 44);
        assert_eq!((-5f32).rem_floor(3.0), 1.0);
        assert!(f32::NAN.max_nan(1.0).is_nan());
        assert!(1.0f32.max_nan(f32::NAN).is_nan());
    }
}
