pub mod compare;
pub mod config;
pub mod eval;
pub mod inspect;
pub mod quantize;
pub mod run;

use anyhow::{Context, Result};
use std::path::Path;

/// Loads an ONNX model, naming the file in any error.
pub fn load_model(path: &Path) -> Result<quench_ir::Model> {
    quench_onnx::load_model(path).with_context(|| format!("cannot load model {}", path.display()))
}

/// `[1×3×224×224]`-style shape text from IR dims.
pub fn show_dims(shape: Option<&[quench_ir::Dim]>) -> String {
    match shape {
        None => "[?]".into(),
        Some(s) => format!(
            "[{}]",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("×")
        ),
    }
}
