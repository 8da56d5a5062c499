//! Constant: the value is fixed when the node is built.

use crate::{BuildCtx, Op, OpError, Registry, RunCtx};
use quench_ir::Tensor;

pub fn register(r: &mut Registry) {
    r.register("", "Constant", build);
}

#[derive(Debug)]
struct Constant(Tensor);

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>, OpError> {
    Ok(Box::new(Constant(crate::plan::constant_node_value(
        ctx.node,
    )?)))
}

impl Op for Constant {
    fn run(&self, _: &RunCtx, _: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![self.0.clone()])
    }
}
