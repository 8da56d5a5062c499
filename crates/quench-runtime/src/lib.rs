//! The executor. A [`Plan`] is built once from a graph (ops chosen, weights
//! packed, value lifetimes computed) and then run many times. Every stage of
//! the quantization workflow runs on this one executor.

pub mod error;
pub mod op;
pub mod ops;
pub mod optimize;
pub mod plan;
pub mod registry;

pub use error::{OpError, RuntimeError};
pub use op::{BuildCtx, Op, RunCtx};
pub use plan::{Plan, PlanOptions, RunHooks, Session};
pub use registry::Registry;
