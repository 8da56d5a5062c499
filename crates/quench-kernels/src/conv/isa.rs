//! Run-time choice of the instruction set for auto-vectorised loops.
//!
//! Kernels are written once as `#[inline(always)]` generic Rust and
//! instantiated inside `#[target_feature]` wrappers, so the compiler emits
//! AVX-512 or AVX2 code for them while the binary stays portable.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Generic,
}

/// The best instruction set this CPU offers, detected once.
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    })
}

/// Defines `$name` dispatching to `$body_fn` compiled for the detected ISA.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body_fn:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) { $body_fn($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $body_fn($($arg),*) }
                match $crate::conv::isa::isa() {
                    // Safety: the features were detected on this CPU.
                    $crate::conv::isa::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::conv::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::conv::isa::Isa::Generic => {}
                }
            }
            $body_fn($($arg),*)
        }
    };
}
pub(crate) use multiversion;
