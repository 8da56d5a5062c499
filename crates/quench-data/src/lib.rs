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

/// Writes bytes through a sibling temp file and a rename.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), DataError> {
    use std::io::Write;
    let io = |e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
