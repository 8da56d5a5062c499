//! Convolutions: Conv (im2col + GEMM, direct GEMM for pointwise, a direct
//! depthwise kernel), its NCHWc form for chains of them (`nchwc`), and
//! ConvTranspose (GEMM + col2im). The spatial
//! attribute handling here is shared with the pooling operators.

pub(crate) mod attrs;
mod forward;
mod nchwc;
mod transpose;

use crate::Registry;
use std::cell::RefCell;

pub fn register(r: &mut Registry) {
    r.register("", "Conv", forward::build);
    r.register("", "ConvTranspose", transpose::build);
    r.register(
        crate::optimize::DOMAIN,
        crate::optimize::FUSED_CONV,
        forward::build_fused,
    );
    use crate::optimize::{DOMAIN, FROM_NCHWC, NCHWC_CONV, TO_NCHWC};
    r.register(DOMAIN, NCHWC_CONV, nchwc::build_conv);
    r.register(DOMAIN, TO_NCHWC, nchwc::build_to_nchwc);
    r.register(DOMAIN, FROM_NCHWC, nchwc::build_from_nchwc);
}

thread_local! {
    /// im2col/col2im scratch, reused across nodes and runs: a fresh buffer of
    /// several MB per node would cost page faults on every call.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch slice of `len` floats (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (nested rayon work): use a private buffer.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

#[cfg(test)]
pub(crate) mod tests;
