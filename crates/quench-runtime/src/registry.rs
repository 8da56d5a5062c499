//! Operator registry: (domain, op type) -> builder.

use crate::{BuildCtx, Op, OpError};
use std::collections::HashMap;

/// Builds the runnable op for one node.
pub type BuildFn = fn(&BuildCtx) -> Result<Box<dyn Op>, OpError>;

/// Maps (domain, op type) to builders. Opset-specific behaviour is decided by
/// the builder from [`BuildCtx::opset`].
#[derive(Clone, Default)]
pub struct Registry {
    builders: HashMap<(String, String), BuildFn>,
}

/// `""` and `"ai.onnx"` name the same default domain.
pub fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}

impl Registry {
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// Every operator Quench implements.
    pub fn standard() -> Registry {
        let mut r = Registry::default();
        crate::ops::register_all(&mut r);
        r
    }

    pub fn register(&mut self, domain: &str, op_type: &str, build: BuildFn) {
        self.builders.insert(
            (normalize_domain(domain).to_string(), op_type.to_string()),
            build,
        );
    }

    pub fn get(&self, domain: &str, op_type: &str) -> Option<BuildFn> {
        self.builders
            .get(&(normalize_domain(domain).to_string(), op_type.to_string()))
            .copied()
    }

    pub fn supports(&self, domain: &str, op_type: &str) -> bool {
        self.get(domain, op_type).is_some()
    }

    /// Registered (domain, op type) pairs, sorted.
    pub fn ops(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.builders.keys().cloned().collect();
        v.sort();
        v
    }
}
