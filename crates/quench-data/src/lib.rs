//! Tensors and datasets on disk.

pub mod dataset;
pub mod npy;
pub mod npz;
pub mod preprocess;

pub use dataset::{Dataset, InputSpec};
pub use npy::{read_npy, read_npy_bytes, write_npy, write_npy_bytes};
pub use npz::{read_npz, write_npz};
pub use preprocess::Preprocess;

/// Errors reading or writing data files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

impl DataError {
    pub(crate) fn format(path: &str, message: impl Into<String>) -> DataError {
        DataError::Format {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Writes bytes atomically (temp file + rename), naming the path in errors.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), DataError> {
    quench_ir::fs::write_atomic(path, bytes).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}
