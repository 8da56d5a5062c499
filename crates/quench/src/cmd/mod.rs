pub mod bench;
pub mod compare;
pub mod config;
pub mod eval;
pub mod inspect;
pub mod quantize;
pub mod run;
pub mod train;

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

/// Whether two paths name the same file; `b` may not exist yet (an output about to be written).
pub fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| {
        p.canonicalize().ok().or_else(|| {
            let parent = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some(parent.canonicalize().ok()?.join(p.file_name()?))
        })
    };
    matches!((canon(a), canon(b)), (Some(x), Some(y)) if x == y)
}
