//! NumPy `.npz` archives: a zip of `.npy` members named after arrays.

use crate::{DataError, npy};
use quench_ir::Tensor;
use std::io::{Read, Write};
use std::path::Path;

/// Reads every array of an `.npz`, in archive order, keyed by name (without `.npy`).
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, DataError> {
    let what = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| DataError::format(&what, format!("not a valid .npz: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| DataError::format(&what, e.to_string()))?;
        let name = member
            .name()
            .map_err(|e| DataError::format(&what, e.to_string()))?
            .to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let mut bytes = Vec::with_capacity(member.size().min(1 << 30) as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::format(&what, format!("{name}: {e}")))?;
        out.push((
            key.to_string(),
            npy::read_npy_bytes(&bytes, &format!("{what}:{name}"))?,
        ));
    }
    Ok(out)
}

/// Writes arrays into an uncompressed `.npz`, atomically.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<(), DataError> {
    let what = path.display().to_string();
    let fail = |m: String| DataError::format(&what, m);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, t) in arrays {
        zip.start_file(format!("{name}.npy"), opts)
            .map_err(|e| fail(e.to_string()))?;
        zip.write_all(&npy::write_npy_bytes(t).map_err(&fail)?)
            .map_err(|e| fail(e.to_string()))?;
    }
    let bytes = zip.finish().map_err(|e| fail(e.to_string()))?.into_inner();
    crate::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = std::env::temp_dir().join(format!("quench-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npz");
        let arrays = vec![
            (
                "x".to_string(),
                Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap(),
            ),
            (
                "ids".to_string(),
                Tensor::from_vec(vec![1, 3], vec![7i64, 8, 9]).unwrap(),
            ),
        ];
        write_npz(&p, &arrays).unwrap();
        assert_eq!(read_npz(&p).unwrap(), arrays);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
