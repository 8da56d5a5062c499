//! Operator implementations, one file per family. Each file exposes
//! `register(&mut Registry)`; kernels that matter for speed live in
//! `quench-kernels`, these files adapt them to graph semantics.

use crate::Registry;

pub mod constant;
pub mod control;
pub mod conv;
pub mod elementwise;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod rnn;
pub mod shape;

/// Registers every operator Quench implements.
pub fn register_all(r: &mut Registry) {
    constant::register(r);
    control::register(r);
    conv::register(r);
    elementwise::register(r);
    matmul::register(r);
    norm::register(r);
    pool::register(r);
    quant::register(r);
    reduce::register(r);
    resize::register(r);
    rnn::register(r);
    shape::register(r);
}
