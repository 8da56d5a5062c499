//! Sample datasets for calibration and evaluation: an `.npz` whose arrays are
//! named after the model inputs (first axis = samples), a folder of `.npy` /
//! `.npz` files (one sample each), or a folder of PNG/JPEG images with a
//! preprocessing recipe. Every sample is checked against the model's inputs.

use crate::{DataError, Preprocess, npy, npz};
use quench_ir::{DType, Tensor};
use std::path::{Path, PathBuf};

/// What the model expects of one input: name, dtype, and fixed dims (`None` = free).
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    pub dtype: Option<DType>,
    pub shape: Option<Vec<Option<usize>>>,
}

enum Store {
    /// Arrays keyed by input name; samples are slices of axis 0.
    Stacked {
        path: PathBuf,
        arrays: Vec<(String, Tensor)>,
        len: usize,
    },
    /// One file per sample.
    Files(Vec<PathBuf>),
}

/// An indexed collection of samples, each a list of named input tensors.
pub struct Dataset {
    store: Store,
    inputs: Vec<InputSpec>,
    preprocess: Option<Preprocess>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

impl Dataset {
    /// Opens `path` (an `.npz` or a folder) for a model with `inputs`.
    pub fn open(
        path: &Path,
        inputs: &[InputSpec],
        preprocess: Option<Preprocess>,
    ) -> Result<Dataset, DataError> {
        let what = path.display().to_string();
        let store = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| DataError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "npy" || e == "npz")
                        || (preprocess.is_some() && is_image(p))
                })
                .collect();
            files.sort();
            if files.is_empty() {
                let hint = if preprocess.is_none()
                    && std::fs::read_dir(path)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .any(|e| is_image(&e.path()))
                {
                    " (it has images: give --preprocess to use them)"
                } else {
                    ""
                };
                return Err(DataError::format(
                    &what,
                    format!("no .npy/.npz samples found{hint}"),
                ));
            }
            Store::Files(files)
        } else if path.extension().is_some_and(|e| e == "npz") {
            let arrays = npz::read_npz(path)?;
            let len = stacked_len(&what, &arrays, inputs)?;
            Store::Stacked {
                path: path.to_path_buf(),
                arrays,
                len,
            }
        } else if !path.exists() {
            return Err(DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        } else {
            return Err(DataError::format(
                &what,
                "expected an .npz file or a folder of samples",
            ));
        };
        Ok(Dataset {
            store,
            inputs: inputs.to_vec(),
            preprocess,
        })
    }

    pub fn len(&self) -> usize {
        match &self.store {
            Store::Stacked { len, .. } => *len,
            Store::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `start..start+n` as one batch (stacked along axis 0), checked.
    pub fn batch(&self, start: usize, n: usize) -> Result<Vec<(String, Tensor)>, DataError> {
        let end = (start + n).min(self.len());
        let parts = match &self.store {
            Store::Stacked { path, arrays, .. } => {
                let what = path.display().to_string();
                let mut out = Vec::new();
                for spec in &self.inputs {
                    let (_, t) = arrays
                        .iter()
                        .find(|(k, _)| *k == spec.name)
                        .ok_or_else(|| {
                            DataError::format(&what, format!("no array named '{}'", spec.name))
                        })?;
                    out.push((
                        spec.name.clone(),
                        slice_axis0(t, start, end).map_err(|m| DataError::format(&what, m))?,
                    ));
                }
                check_sample(&what, &out, &self.inputs)?;
                out
            }
            Store::Files(files) => {
                let mut samples = Vec::new();
                for f in &files[start..end] {
                    let s = self.load_file(f)?;
                    check_sample(&f.display().to_string(), &s, &self.inputs)?;
                    samples.push(s);
                }
                stack_samples(samples)
                    .map_err(|m| DataError::format(&format!("samples {start}..{end}"), m))?
            }
        };
        Ok(parts)
    }

    fn load_file(&self, f: &Path) -> Result<Vec<(String, Tensor)>, DataError> {
        let what = f.display().to_string();
        let single = |t: Tensor| -> Result<Vec<(String, Tensor)>, DataError> {
            match self.inputs.as_slice() {
                [one] => Ok(vec![(one.name.clone(), add_batch_dim(t, one))]),
                _ => Err(DataError::format(
                    &what,
                    format!(
                        "the model has {} inputs: use .npz samples with arrays named after them",
                        self.inputs.len()
                    ),
                )),
            }
        };
        if f.extension().is_some_and(|e| e == "npy") {
            single(npy::read_npy(f)?)
        } else if f.extension().is_some_and(|e| e == "npz") {
            let arrays = npz::read_npz(f)?;
            Ok(arrays
                .into_iter()
                .map(|(k, t)| match self.inputs.iter().find(|s| s.name == k) {
                    Some(spec) => (k, add_batch_dim(t, spec)),
                    None => (k, t),
                })
                .collect())
        } else {
            let pre = self
                .preprocess
                .as_ref()
                .ok_or_else(|| DataError::format(&what, "images need --preprocess"))?;
            single(pre.load(f)?)
        }
    }
}

/// Adds a leading batch axis when a sample file omits it.
fn add_batch_dim(t: Tensor, spec: &InputSpec) -> Tensor {
    match &spec.shape {
        Some(s) if t.rank() + 1 == s.len() => {
            let mut shape = vec![1];
            shape.extend_from_slice(t.shape());
            t.clone().reshape(shape).unwrap_or(t)
        }
        _ => t,
    }
}

fn stacked_len(
    what: &str,
    arrays: &[(String, Tensor)],
    inputs: &[InputSpec],
) -> Result<usize, DataError> {
    let mut len = None;
    for spec in inputs {
        let (_, t) = arrays
            .iter()
            .find(|(k, _)| *k == spec.name)
            .ok_or_else(|| {
                let have: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
                DataError::format(
                    what,
                    format!(
                        "no array named '{}' (model input); arrays: {}",
                        spec.name,
                        have.join(", ")
                    ),
                )
            })?;
        let n = *t.shape().first().ok_or_else(|| {
            DataError::format(
                what,
                format!(
                    "array '{}' is a scalar; the first axis must index samples",
                    spec.name
                ),
            )
        })?;
        if len.is_some_and(|l| l != n) {
            return Err(DataError::format(
                what,
                format!(
                    "array '{}' has {n} samples, others {}",
                    spec.name,
                    len.unwrap_or(0)
                ),
            ));
        }
        len = Some(n);
    }
    match len {
        Some(0) | None => Err(DataError::format(what, "no samples")),
        Some(n) => Ok(n),
    }
}

fn slice_axis0(t: &Tensor, start: usize, end: usize) -> Result<Tensor, String> {
    let row: usize = t.shape()[1..].iter().product();
    let mut shape = t.shape().to_vec();
    shape[0] = end - start;
    let (a, b) = (start * row, end * row);
    macro_rules! cut {
        ($v:expr) => {
            Tensor::from_vec(shape, $v[a..b].to_vec()).map_err(|e| e.to_string())
        };
    }
    quench_ir::with_numeric_slice!(t.data(), v => cut!(v), _ => match t.data() {
        quench_ir::TensorData::Bool(v) => cut!(v),
        _ => Err(format!("dtype {} cannot be used as model input", t.dtype())),
    })
}

/// Concatenates single samples along axis 0.
fn stack_samples(samples: Vec<Vec<(String, Tensor)>>) -> Result<Vec<(String, Tensor)>, String> {
    let mut it = samples.into_iter();
    let Some(first) = it.next() else {
        return Err("empty batch".into());
    };
    let rest: Vec<_> = it.collect();
    if rest.is_empty() {
        return Ok(first);
    }
    let mut out = Vec::new();
    for (name, t) in first {
        let mut parts = vec![t];
        for s in &rest {
            parts.push(
                s.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, t)| t.clone())
                    .ok_or(format!("sample lacks '{name}'"))?,
            );
        }
        let mut shape = parts[0].shape().to_vec();
        if shape.is_empty()
            || parts
                .iter()
                .any(|p| p.shape()[1..] != shape[1..] || p.dtype() != parts[0].dtype())
        {
            return Err(format!(
                "samples of '{name}' differ in shape or dtype and cannot be batched"
            ));
        }
        shape[0] = parts.iter().map(|p| p.shape()[0]).sum();
        macro_rules! cat {
            ($t:ty) => {{
                let mut v: Vec<$t> = Vec::new();
                for p in &parts {
                    v.extend_from_slice(p.as_slice::<$t>().map_err(|e| e.to_string())?);
                }
                Tensor::from_vec(shape, v).map_err(|e| e.to_string())?
            }};
        }
        let t = match parts[0].dtype() {
            DType::F32 => cat!(f32),
            DType::I64 => cat!(i64),
            DType::I32 => cat!(i32),
            DType::U8 => cat!(u8),
            DType::I8 => cat!(i8),
            DType::F64 => cat!(f64),
            DType::Bool => cat!(bool),
            d => return Err(format!("dtype {d} cannot be batched")),
        };
        out.push((name, t));
    }
    Ok(out)
}

/// Checks names, dtypes, fixed dims (batch excepted) and finiteness.
fn check_sample(
    what: &str,
    sample: &[(String, Tensor)],
    inputs: &[InputSpec],
) -> Result<(), DataError> {
    for spec in inputs {
        let (_, t) = sample
            .iter()
            .find(|(k, _)| *k == spec.name)
            .ok_or_else(|| {
                let have: Vec<&str> = sample.iter().map(|(k, _)| k.as_str()).collect();
                DataError::format(
                    what,
                    format!(
                        "no value for model input '{}' (found: {})",
                        spec.name,
                        have.join(", ")
                    ),
                )
            })?;
        if let Some(d) = spec.dtype
            && d != t.dtype()
        {
            return Err(DataError::format(
                what,
                format!(
                    "input '{}' must be {d}, the data is {}",
                    spec.name,
                    t.dtype()
                ),
            ));
        }
        if let Some(shape) = &spec.shape {
            let fits = shape.len() == t.rank()
                && shape
                    .iter()
                    .zip(t.shape())
                    .enumerate()
                    .all(|(i, (want, got))| i == 0 || want.is_none_or(|w| w == *got));
            if !fits {
                let show: Vec<String> = shape
                    .iter()
                    .map(|d| d.map_or("?".into(), |v| v.to_string()))
                    .collect();
                return Err(DataError::format(
                    what,
                    format!(
                        "input '{}' must have shape [{}], the data has {:?}",
                        spec.name,
                        show.join(", "),
                        t.shape()
                    ),
                ));
            }
        }
        let bad = match t.data() {
            quench_ir::TensorData::F32(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|i| (i, v[i] as f64)),
            quench_ir::TensorData::F64(v) => {
                v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i]))
            }
            _ => None,
        };
        if let Some((i, x)) = bad {
            return Err(DataError::format(
                what,
                format!(
                    "input '{}' holds {x} at element {i}: data must be finite",
                    spec.name
                ),
            ));
        }
    }
    for (k, _) in sample {
        if !inputs.iter().any(|s| s.name == *k) {
            let names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(DataError::format(
                what,
                format!("'{k}' is not a model input (inputs: {})", names.join(", ")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Vec<Option<usize>>) -> Vec<InputSpec> {
        vec![InputSpec {
            name: "input".into(),
            dtype: Some(DType::F32),
            shape: Some(shape),
        }]
    }

    #[test]
    fn image_folders_batch_with_preprocessing() {
        let dir = std::env::temp_dir().join(format!("quench-ds-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..3u8 {
            image::GrayImage::from_pixel(4, 2, image::Luma([i * 100]))
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
        let inputs = spec(vec![None, Some(1), Some(4), Some(4)]);
        assert!(
            Dataset::open(&dir, &inputs, None)
                .err()
                .unwrap()
                .to_string()
                .contains("--preprocess")
        );
        let pre = Preprocess::parse("resize=4x4,channels=gray,scale=1/100").unwrap();
        let ds = Dataset::open(&dir, &inputs, Some(pre)).unwrap();
        assert_eq!(ds.len(), 3);
        let b = ds.batch(1, 2).unwrap();
        assert_eq!(b[0].1.shape(), &[2, 1, 4, 4]);
        let v = b[0].1.as_slice::<f32>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-6 && (v[16] - 2.0).abs() < 1e-6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stacked_npz_checks_names_shapes_and_values() {
        let dir = std::env::temp_dir().join(format!("quench-ds-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("d.npz");
        let mut v = vec![0f32; 3 * 2];
        v[4] = f32::INFINITY;
        npz::write_npz(
            &f,
            &[("input".into(), Tensor::from_vec(vec![3, 2], v).unwrap())],
        )
        .unwrap();
        let ds = Dataset::open(&f, &spec(vec![None, Some(2)]), None).unwrap();
        assert_eq!(ds.batch(0, 2).unwrap()[0].1.shape(), &[2, 2]);
        assert!(ds.batch(2, 1).unwrap_err().to_string().contains("inf"));
        assert!(
            Dataset::open(&f, &spec(vec![None, Some(3)]), None)
                .unwrap()
                .batch(0, 1)
                .is_err()
        );
        let other = vec![InputSpec {
            name: "x".into(),
            dtype: None,
            shape: None,
        }];
        assert!(
            Dataset::open(&f, &other, None)
                .err()
                .unwrap()
                .to_string()
                .contains("'x'")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
