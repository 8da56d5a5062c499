//! NumPy `.npy` format (versions 1–3), C or Fortran order, either endianness.

use crate::DataError;
use quench_ir::{DType, Tensor, TensorData, tensor::checked_numel};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// A safe `.npy` file stem for a tensor name: ONNX names may contain `/` or `:`.
pub fn file_stem_for(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

pub fn read_npy(path: &Path) -> Result<Tensor, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    read_npy_bytes(&bytes, &path.display().to_string())
}

/// Parses `.npy` bytes; `what` names the source in errors.
pub fn read_npy_bytes(bytes: &[u8], what: &str) -> Result<Tensor, DataError> {
    let err = |m: String| DataError::format(what, m);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("not a .npy file (bad magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| err("truncated header".into()))?;
    let header = String::from_utf8_lossy(header);
    let descr = dict_value(&header, "descr").ok_or_else(|| err("header has no 'descr'".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(&header, "fortran_order").is_some_and(|v| v.starts_with("True"));
    let shape_txt =
        dict_value(&header, "shape").ok_or_else(|| err("header has no 'shape'".into()))?;
    let shape: Vec<usize> = shape_txt
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("bad shape {shape_txt}")))
        })
        .collect::<Result<_, _>>()?;
    let n = checked_numel(&shape).map_err(|e| err(e.to_string()))?;
    // `split_at_checked`: a non-ASCII first character (fuzzing found U+FFFD
    // from a lossily decoded header) must not panic on a char boundary.
    let (endian, code) = descr.split_at_checked(1).unwrap_or(("", descr));
    let big = endian == ">";
    let (dtype, size) = match code {
        "f4" => (DType::F32, 4),
        "f8" => (DType::F64, 8),
        "i1" => (DType::I8, 1),
        "u1" => (DType::U8, 1),
        "i2" => (DType::I16, 2),
        "u2" => (DType::U16, 2),
        "i4" => (DType::I32, 4),
        "u4" => (DType::U32, 4),
        "i8" => (DType::I64, 8),
        "u8" => (DType::U64, 8),
        "b1" => (DType::Bool, 1),
        _ => return Err(err(format!("unsupported dtype '{descr}'"))),
    };
    let data = &bytes[start + header_len..];
    if data.len() < n * size {
        return Err(err(format!(
            "truncated data: {} bytes for {n} elements of {size} bytes",
            data.len()
        )));
    }
    let data = &data[..n * size];
    macro_rules! decode {
        ($t:ty, $v:ident) => {
            TensorData::$v(
                data.chunks_exact(size)
                    .map(|c| {
                        let a: [u8; std::mem::size_of::<$t>()] = c.try_into().unwrap_or_default();
                        if big {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        }
                    })
                    .collect(),
            )
        };
    }
    let td = match dtype {
        DType::F32 => decode!(f32, F32),
        DType::F64 => decode!(f64, F64),
        DType::I8 => decode!(i8, I8),
        DType::U8 => TensorData::U8(data.to_vec()),
        DType::I16 => decode!(i16, I16),
        DType::U16 => decode!(u16, U16),
        DType::I32 => decode!(i32, I32),
        DType::U32 => decode!(u32, U32),
        DType::I64 => decode!(i64, I64),
        DType::U64 => decode!(u64, U64),
        _ => TensorData::Bool(data.iter().map(|&b| b != 0).collect()),
    };
    let mut t = Tensor::new(
        if fortran {
            shape.iter().rev().copied().collect()
        } else {
            shape.clone()
        },
        td,
    )
    .map_err(|e| err(e.to_string()))?;
    if fortran && shape.len() > 1 {
        t = transpose_all(&t).map_err(err)?;
    }
    Ok(t)
}

/// Reverses all axes (Fortran order -> C order).
fn transpose_all(t: &Tensor) -> Result<Tensor, String> {
    macro_rules! rev {
        ($ty:ty) => {
            Tensor::from_array(
                t.view::<$ty>()
                    .map_err(|e| e.to_string())?
                    .reversed_axes()
                    .to_owned(),
            )
        };
    }
    Ok(match t.dtype() {
        DType::F32 => rev!(f32),
        DType::F64 => rev!(f64),
        DType::I8 => rev!(i8),
        DType::U8 => rev!(u8),
        DType::I16 => rev!(i16),
        DType::U16 => rev!(u16),
        DType::I32 => rev!(i32),
        DType::U32 => rev!(u32),
        DType::I64 => rev!(i64),
        DType::U64 => rev!(u64),
        DType::Bool => rev!(bool),
        d => return Err(format!("cannot reorder {d}")),
    })
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Encodes a tensor as `.npy` (version 1.0, little-endian, C order).
pub fn write_npy_bytes(t: &Tensor) -> Result<Vec<u8>, String> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
        };
    }
    let (descr, data) = match t.data() {
        TensorData::F32(v) => ("<f4", le!(v)),
        TensorData::F64(v) => ("<f8", le!(v)),
        TensorData::I8(v) => ("|i1", le!(v)),
        TensorData::U8(v) => ("|u1", v.clone()),
        TensorData::I16(v) => ("<i2", le!(v)),
        TensorData::U16(v) => ("<u2", le!(v)),
        TensorData::I32(v) => ("<i4", le!(v)),
        TensorData::U32(v) => ("<u4", le!(v)),
        TensorData::I64(v) => ("<i8", le!(v)),
        TensorData::U64(v) => ("<u8", le!(v)),
        TensorData::Bool(v) => ("|b1", v.iter().map(|&b| b as u8).collect()),
        _ => return Err(format!("dtype {} cannot be written as .npy", t.dtype())),
    };
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes a tensor to a `.npy` file atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), DataError> {
    let bytes =
        write_npy_bytes(t).map_err(|m| DataError::format(&path.display().to_string(), m))?;
    crate::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Tensor::from_vec(vec![2, 3], vec![1i64, -2, 3, 4, 5, 6]).unwrap();
        assert_eq!(
            read_npy_bytes(&write_npy_bytes(&t).unwrap(), "x").unwrap(),
            t
        );
        let s = Tensor::scalar(2.5f32);
        assert_eq!(
            read_npy_bytes(&write_npy_bytes(&s).unwrap(), "x").unwrap(),
            s
        );
    }

    #[test]
    fn reads_fortran_and_big_endian() {
        let hdr = "{'descr': '>i2', 'fortran_order': True, 'shape': (2, 2), }";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
        b.extend_from_slice(hdr.as_bytes());
        for v in [1i16, 3, 2, 4] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        let t = read_npy_bytes(&b, "x").unwrap();
        assert_eq!(t.as_slice::<i16>().unwrap(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let t = Tensor::from_vec(vec![4], vec![1f32; 4]).unwrap();
        let b = write_npy_bytes(&t).unwrap();
        assert!(
            read_npy_bytes(&b[..b.len() - 3], "x")
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(read_npy_bytes(b"hello world", "x").is_err());
    }

    fn with_header(hdr: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
        b.extend_from_slice(hdr);
        b.extend_from_slice(&[0; 8]);
        b
    }

    #[test]
    fn non_ascii_descr_is_an_error_not_a_panic() {
        // Found by fuzz/read_npy: a stray 0xA7 byte became U+FFFD (3 bytes).
        let b = with_header(b"{'descr': '\xa7<f4', 'fortran_order': False, 'shape': (), }");
        assert!(
            read_npy_bytes(&b, "x")
                .unwrap_err()
                .to_string()
                .contains("unsupported dtype")
        );
        let b = with_header("{'descr': 'é', 'shape': (), }".as_bytes());
        assert!(read_npy_bytes(&b, "x").is_err());
    }
}
