//! TensorProto <-> Tensor.

use crate::OnnxError;
use crate::proto::TensorProto;
use quench_ir::{DType, Tensor, TensorData, tensor::checked_numel};
use std::path::Path;

const EXTERNAL: i32 = 1;

/// Converts a TensorProto; `base_dir` resolves external-data locations.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, OnnxError> {
    let name = t.name.as_deref().unwrap_or("");
    let code = t.data_type.unwrap_or(0);
    let dtype =
        DType::from_onnx(code).ok_or_else(|| OnnxError::tensor(name, "data_type is UNDEFINED"))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(OnnxError::tensor(
                name,
                format!("negative dimension {d} in {:?}", t.dims),
            ));
        }
        shape.push(d as usize);
    }
    let n = checked_numel(&shape).map_err(|e| OnnxError::tensor(name, e.to_string()))?;
    let fail = |e: quench_ir::IrError| OnnxError::tensor(name, e.to_string());

    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(EXTERNAL) {
        external = read_external(t, name, base_dir)?;
        Some(&external)
    } else {
        t.raw_data
            .as_deref()
            .filter(|r| !r.is_empty() || n == 0)
            .or(if has_typed_data(t) || n != 0 {
                None
            } else {
                Some(&[])
            })
    };

    let data = match raw {
        Some(bytes) => from_raw(dtype, bytes, n).map_err(|m| OnnxError::tensor(name, m))?,
        None => from_typed(t, dtype, n).map_err(|m| OnnxError::tensor(name, m))?,
    };
    Tensor::new(shape, data).map_err(fail)
}

fn has_typed_data(t: &TensorProto) -> bool {
    !(t.float_data.is_empty()
        && t.int32_data.is_empty()
        && t.int64_data.is_empty()
        && t.double_data.is_empty()
        && t.uint64_data.is_empty()
        && t.string_data.is_empty())
}

fn read_external(
    t: &TensorProto,
    name: &str,
    base_dir: Option<&Path>,
) -> Result<Vec<u8>, OnnxError> {
    use std::io::{Read, Seek, SeekFrom};
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
    };
    let location = get("location")
        .ok_or_else(|| OnnxError::tensor(name, "external data without a location"))?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(OnnxError::tensor(
            name,
            format!("external data location '{location}' leaves the model's folder"),
        ));
    }
    let base = base_dir
        .ok_or_else(|| OnnxError::tensor(name, "external data needs the model's folder"))?;
    let path = base.join(rel);
    let parse = |k: &str| -> Result<Option<u64>, OnnxError> {
        get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    OnnxError::tensor(name, format!("external data {k} '{v}' is not a number"))
                })
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let io = |e| OnnxError::Io {
        path: path.clone(),
        source: e,
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let length = match parse("length")? {
        Some(l) => l,
        None => file_len.saturating_sub(offset),
    };
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(OnnxError::tensor(
            name,
            format!(
                "external data [{offset}, +{length}) runs past the end of {} ({file_len} bytes)",
                path.display()
            ),
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

fn expect_len(found: usize, n: usize, what: &str) -> Result<(), String> {
    if found != n {
        return Err(format!(
            "{what} holds {found} elements, the shape needs {n}"
        ));
    }
    Ok(())
}

fn from_raw(dtype: DType, bytes: &[u8], n: usize) -> Result<TensorData, String> {
    macro_rules! le {
        ($t:ty, $variant:ident) => {{
            let sz = std::mem::size_of::<$t>();
            expect_len(bytes.len() / sz, n, "raw_data")?;
            if bytes.len() % sz != 0 {
                return Err(format!(
                    "raw_data length {} is not a multiple of {sz}",
                    bytes.len()
                ));
            }
            TensorData::$variant(
                bytes
                    .chunks_exact(sz)
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        }};
    }
    Ok(match dtype {
        DType::F32 => le!(f32, F32),
        DType::F64 => le!(f64, F64),
        DType::I8 => le!(i8, I8),
        DType::U8 => le!(u8, U8),
        DType::I16 => le!(i16, I16),
        DType::U16 => le!(u16, U16),
        DType::I32 => le!(i32, I32),
        DType::U32 => le!(u32, U32),
        DType::I64 => le!(i64, I64),
        DType::U64 => le!(u64, U64),
        DType::Bool => {
            expect_len(bytes.len(), n, "raw_data")?;
            TensorData::Bool(bytes.iter().map(|&b| b != 0).collect())
        }
        // An empty string tensor saves with no data at all, which lands here.
        DType::String if bytes.is_empty() && n == 0 => TensorData::String(Vec::new()),
        DType::String => return Err("string tensors cannot use raw_data".into()),
        other => TensorData::Raw {
            dtype: other,
            bytes: bytes.to_vec(),
        },
    })
}

fn from_typed(t: &TensorProto, dtype: DType, n: usize) -> Result<TensorData, String> {
    let ints = &t.int32_data;
    Ok(match dtype {
        DType::F32 => {
            expect_len(t.float_data.len(), n, "float_data")?;
            TensorData::F32(t.float_data.clone())
        }
        DType::F64 => {
            expect_len(t.double_data.len(), n, "double_data")?;
            TensorData::F64(t.double_data.clone())
        }
        DType::I64 => {
            expect_len(t.int64_data.len(), n, "int64_data")?;
            TensorData::I64(t.int64_data.clone())
        }
        DType::U64 => {
            expect_len(t.uint64_data.len(), n, "uint64_data")?;
            TensorData::U64(t.uint64_data.clone())
        }
        DType::U32 => {
            expect_len(t.uint64_data.len(), n, "uint64_data")?;
            TensorData::U32(t.uint64_data.iter().map(|&v| v as u32).collect())
        }
        DType::String => {
            expect_len(t.string_data.len(), n, "string_data")?;
            TensorData::String(t.string_data.clone())
        }
        DType::I32 | DType::I16 | DType::I8 | DType::U16 | DType::U8 | DType::Bool => {
            expect_len(ints.len(), n, "int32_data")?;
            match dtype {
                DType::I32 => TensorData::I32(ints.clone()),
                DType::I16 => TensorData::I16(ints.iter().map(|&v| v as i16).collect()),
                DType::I8 => TensorData::I8(ints.iter().map(|&v| v as i8).collect()),
                DType::U16 => TensorData::U16(ints.iter().map(|&v| v as u16).collect()),
                DType::U8 => TensorData::U8(ints.iter().map(|&v| v as u8).collect()),
                _ => TensorData::Bool(ints.iter().map(|&v| v != 0).collect()),
            }
        }
        DType::F16 | DType::BF16 => {
            expect_len(ints.len(), n, "int32_data")?;
            TensorData::Raw {
                dtype,
                bytes: ints
                    .iter()
                    .flat_map(|&v| (v as u16).to_le_bytes())
                    .collect(),
            }
        }
        DType::Other(21..=23) => {
            // 4-bit types: two elements per int32 entry, low nibble first.
            expect_len(ints.len(), n.div_ceil(2), "int32_data")?;
            TensorData::Raw {
                dtype,
                bytes: ints.iter().map(|&v| v as u8).collect(),
            }
        }
        other if other.size_of() == Some(1) => {
            expect_len(ints.len(), n, "int32_data")?;
            TensorData::Raw {
                dtype,
                bytes: ints.iter().map(|&v| v as u8).collect(),
            }
        }
        other => return Err(format!("dtype {other} is not supported")),
    })
}

/// Converts a tensor to a TensorProto with `raw_data` (strings use `string_data`).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let mut p = TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype().to_onnx()),
        ..Default::default()
    };
    macro_rules! raw {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
        };
    }
    let bytes = match t.data() {
        TensorData::F32(v) => raw!(v),
        TensorData::F64(v) => raw!(v),
        TensorData::I8(v) => raw!(v),
        TensorData::U8(v) => v.clone(),
        TensorData::I16(v) => raw!(v),
        TensorData::U16(v) => raw!(v),
        TensorData::I32(v) => raw!(v),
        TensorData::U32(v) => raw!(v),
        TensorData::I64(v) => raw!(v),
        TensorData::U64(v) => raw!(v),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        TensorData::Raw { bytes, .. } => bytes.clone(),
        TensorData::String(s) => {
            p.string_data = s.clone();
            return p;
        }
    };
    p.raw_data = Some(bytes);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_typed_tensors() {
        let t = Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 3.0, 0.25]).unwrap();
        assert_eq!(
            tensor_from_proto(&tensor_to_proto("w", &t), None).unwrap(),
            t
        );
        let b = Tensor::from_vec(vec![3], vec![true, false, true]).unwrap();
        assert_eq!(
            tensor_from_proto(&tensor_to_proto("b", &b), None).unwrap(),
            b
        );
    }

    #[test]
    fn rejects_size_mismatch_and_huge_dims() {
        let mut p = tensor_to_proto("w", &Tensor::from_vec(vec![4], vec![0f32; 4]).unwrap());
        p.dims = vec![5];
        assert!(
            tensor_from_proto(&p, None)
                .unwrap_err()
                .to_string()
                .contains("'w'")
        );
        p.dims = vec![1 << 40];
        assert!(tensor_from_proto(&p, None).is_err());
    }

    #[test]
    fn empty_string_tensors_round_trip() {
        // Loadable (string_data empty, another typed field set) but was
        // refused after saving, which writes no data field at all.
        let t = Tensor::new(vec![0, 3], TensorData::String(Vec::new())).unwrap();
        assert_eq!(
            tensor_from_proto(&tensor_to_proto("s", &t), None).unwrap(),
            t
        );
        let mut p = tensor_to_proto("s", &t);
        p.raw_data = Some(vec![1]);
        assert!(tensor_from_proto(&p, None).is_err());
    }

    #[test]
    fn reads_typed_fields() {
        let p = TensorProto {
            dims: vec![2],
            data_type: Some(3),
            int32_data: vec![-3, 7],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&p, None)
                .unwrap()
                .as_slice::<i8>()
                .unwrap(),
            &[-3, 7]
        );
    }
}
