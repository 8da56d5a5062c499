//! Element-wise operators: unary maths, broadcasting arithmetic, comparisons
//! and logic, Where, Cast, Expand. Broadcasting itself lives in
//! [`broadcast`] so that other families can reuse it.

use crate::{OpError, Registry};
use quench_ir::DType;

pub mod broadcast;
pub mod fastmath;
pub mod num;

mod binary;
mod cast;
mod logic;
mod unary;

pub use broadcast::{BroadcastPlan, binary_map, broadcast_shapes, broadcast_to, unary_map};

pub fn register(r: &mut Registry) {
    unary::register(r);
    binary::register(r);
    logic::register(r);
    cast::register(r);
}

/// The error for a dtype an op does not compute (float16 and friends have no
/// typed buffer in Quench).
pub(crate) fn unsupported_dtype(what: &str, dt: DType) -> OpError {
    OpError::Unsupported(format!("{what} on {dt} tensors"))
}

/// Runs `$body` with `$T` aliased to the element type and `$v` bound to the
/// slice, for every numeric dtype; `$other` otherwise.
macro_rules! dispatch_num {
    ($data:expr, $T:ident, $v:ident => $body:expr, _ => $other:expr) => {
        match $data {
            quench_ir::TensorData::F32($v) => {
                type $T = f32;
                $body
            }
            quench_ir::TensorData::F64($v) => {
                type $T = f64;
                $body
            }
            quench_ir::TensorData::I8($v) => {
                type $T = i8;
                $body
            }
            quench_ir::TensorData::U8($v) => {
                type $T = u8;
                $body
            }
            quench_ir::TensorData::I16($v) => {
                type $T = i16;
                $body
            }
            quench_ir::TensorData::U16($v) => {
                type $T = u16;
                $body
            }
            quench_ir::TensorData::I32($v) => {
                type $T = i32;
                $body
            }
            quench_ir::TensorData::U32($v) => {
                type $T = u32;
                $body
            }
            quench_ir::TensorData::I64($v) => {
                type $T = i64;
                $body
            }
            quench_ir::TensorData::U64($v) => {
                type $T = u64;
                $body
            }
            _ => $other,
        }
    };
}
pub(crate) use dispatch_num;

/// Like [`dispatch_num`] for f32 and f64 only.
macro_rules! dispatch_float {
    ($data:expr, $T:ident, $v:ident => $body:expr, _ => $other:expr) => {
        match $data {
            quench_ir::TensorData::F32($v) => {
                type $T = f32;
                $body
            }
            quench_ir::TensorData::F64($v) => {
                type $T = f64;
                $body
            }
            _ => $other,
        }
    };
}
pub(crate) use dispatch_float;

/// Two tensors' buffers of the same numeric dtype.
macro_rules! dispatch_num2 {
    ($a:expr, $b:expr, $T:ident, $x:ident, $y:ident => $body:expr, _ => $other:expr) => {
        match ($a, $b) {
            (quench_ir::TensorData::F32($x), quench_ir::TensorData::F32($y)) => {
                type $T = f32;
                $body
            }
            (quench_ir::TensorData::F64($x), quench_ir::TensorData::F64($y)) => {
                type $T = f64;
                $body
            }
            (quench_ir::TensorData::I8($x), quench_ir::TensorData::I8($y)) => {
                type $T = i8;
                $body
            }
            (quench_ir::TensorData::U8($x), quench_ir::TensorData::U8($y)) => {
                type $T = u8;
                $body
            }
            (quench_ir::TensorData::I16($x), quench_ir::TensorData::I16($y)) => {
                type $T = i16;
                $body
            }
            (quench_ir::TensorData::U16($x), quench_ir::TensorData::U16($y)) => {
                type $T = u16;
                $body
            }
            (quench_ir::TensorData::I32($x), quench_ir::TensorData::I32($y)) => {
                type $T = i32;
                $body
            }
            (quench_ir::TensorData::U32($x), quench_ir::TensorData::U32($y)) => {
                type $T = u32;
                $body
            }
            (quench_ir::TensorData::I64($x), quench_ir::TensorData::I64($y)) => {
                type $T = i64;
                $body
            }
            (quench_ir::TensorData::U64($x), quench_ir::TensorData::U64($y)) => {
                type $T = u64;
                $body
            }
            _ => $other,
        }
    };
}
pub(crate) use dispatch_num2;

/// Every dtype with a `Copy` typed buffer (numeric and bool).
macro_rules! dispatch_copy {
    ($data:expr, $T:ident, $v:ident => $body:expr, _ => $other:expr) => {
        match $data {
            quench_ir::TensorData::Bool($v) => {
                type $T = bool;
                $body
            }
            other => $crate::ops::elementwise::dispatch_num!(other, $T, $v => $body, _ => $other),
        }
    };
}
pub(crate) use dispatch_copy;

/// Error for two inputs whose dtypes differ where ONNX requires them equal.
pub(crate) fn dtype_mismatch(a: DType, b: DType) -> OpError {
    OpError::Invalid(format!("inputs have different dtypes: {a} and {b}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::{BuildCtx, OpError, Registry, RunCtx};
    use quench_ir::{Node, Tensor};

    /// Builds `node` with the standard registry at `opset` and runs it once,
    /// returning its first output.
    pub(crate) fn run_node(
        node: Node,
        opset: i64,
        inputs: &[Option<&Tensor>],
    ) -> Result<Tensor, OpError> {
        Ok(run_node_all(node, opset, inputs)?.remove(0))
    }

    /// Like [`run_node`], returning every output.
    pub(crate) fn run_node_all(
        node: Node,
        opset: i64,
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>, OpError> {
        let r = Registry::standard();
        let Some(build) = r.get("", &node.op_type) else {
            return Err(OpError::Unsupported(node.op_type.clone()));
        };
        let consts = |_: &str| None;
        let compile =
            |_: &quench_ir::Graph| Err(crate::RuntimeError::Invalid("no subgraphs".into()));
        let ctx = BuildCtx {
            node: &node,
            opset,
            constants: &consts,
            compile: &compile,
        };
        build(&ctx)?.run(&RunCtx { threads: 2 }, inputs)
    }
}
