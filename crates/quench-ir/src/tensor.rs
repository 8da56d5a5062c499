//! Dense tensors: a shape and a typed, row-major buffer.

use crate::{DType, IrError};
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// The buffer of a tensor. Types Quench computes with have a typed vector;
/// the rest (float16, bfloat16, float8, int4, ...) keep their ONNX bytes so
/// that models round-trip unchanged.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    String(Vec<Vec<u8>>),
    /// Little-endian ONNX `raw_data` of a type without a typed form.
    Raw {
        dtype: DType,
        bytes: Vec<u8>,
    },
}

/// A dense, row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Element types with a typed buffer in [`TensorData`].
pub trait Elem: Copy + Send + Sync + PartialEq + std::fmt::Debug + Default + 'static {
    const DTYPE: DType;
    fn slice(data: &TensorData) -> Option<&[Self]>;
    fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]>;
    fn into_vec(data: TensorData) -> Result<Vec<Self>, TensorData>;
    fn wrap(v: Vec<Self>) -> TensorData;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_vec(data: TensorData) -> Result<Vec<Self>, TensorData> {
                match data {
                    TensorData::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
        }
    };
}
impl_elem!(f32, F32);
impl_elem!(f64, F64);
impl_elem!(i8, I8);
impl_elem!(u8, U8);
impl_elem!(i16, I16);
impl_elem!(u16, U16);
impl_elem!(i32, I32);
impl_elem!(u32, U32);
impl_elem!(i64, I64);
impl_elem!(u64, U64);
impl_elem!(bool, Bool);

/// The most elements one tensor may have.
pub const MAX_ELEMENTS: u128 = 1 << 32;

/// Number of elements of `shape`, refusing sizes that cannot be allocated.
pub fn checked_numel(shape: &[usize]) -> Result<usize, IrError> {
    // Zero dims are skipped in the bound: an empty `[0, 2^40, 2^40]` holds no
    // data, but ops computing its strides (2^80) would overflow.
    let mut nonzero: u128 = 1;
    for &d in shape.iter().filter(|&&d| d != 0) {
        nonzero = nonzero.saturating_mul(d as u128);
    }
    // A crafted shape must fail here, not abort the process in the allocator:
    // 2^32 elements (16 GiB of f32) is beyond any tensor Quench is meant to hold.
    if nonzero > MAX_ELEMENTS {
        return Err(IrError::TooLarge(nonzero));
    }
    Ok(if shape.contains(&0) {
        0
    } else {
        nonzero as usize
    })
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I16(_) => DType::I16,
            TensorData::U16(_) => DType::U16,
            TensorData::I32(_) => DType::I32,
            TensorData::U32(_) => DType::U32,
            TensorData::I64(_) => DType::I64,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
            TensorData::Raw { dtype, .. } => *dtype,
        }
    }

    /// Element count, or `None` for raw buffers of packed sub-byte types.
    pub fn len(&self) -> Option<usize> {
        Some(match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I16(v) => v.len(),
            TensorData::U16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
            TensorData::Raw { dtype, bytes } => return dtype.size_of().map(|s| bytes.len() / s),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// A zero-filled buffer of `n` elements.
    pub fn zeros(dtype: DType, n: usize) -> Result<TensorData, IrError> {
        Ok(match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F64 => TensorData::F64(vec![0.0; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I16 => TensorData::I16(vec![0; n]),
            DType::U16 => TensorData::U16(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::U32 => TensorData::U32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::U64 => TensorData::U64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
            DType::String => TensorData::String(vec![Vec::new(); n]),
            other => match other.size_of() {
                Some(s) => TensorData::Raw {
                    dtype: other,
                    bytes: vec![0; n * s],
                },
                None => return Err(IrError::UnsupportedDType(other)),
            },
        })
    }
}

impl Tensor {
    /// A tensor from a shape and a buffer whose length must match.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, IrError> {
        let n = checked_numel(&shape)?;
        if let TensorData::Raw { dtype, bytes } = &data {
            let expected = match dtype.size_of() {
                Some(s) => n * s,
                None => n.div_ceil(2), // 4-bit types: two per byte
            };
            if bytes.len() != expected {
                return Err(IrError::ElementCount {
                    shape,
                    expected,
                    found: bytes.len(),
                });
            }
        } else if let Some(found) = data.len()
            && found != n
        {
            return Err(IrError::ElementCount {
                shape,
                expected: n,
                found,
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_vec<T: Elem>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor, IrError> {
        Tensor::new(shape, T::wrap(v))
    }

    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, IrError> {
        let n = checked_numel(&shape)?;
        Ok(Tensor {
            data: TensorData::zeros(dtype, n)?,
            shape,
        })
    }

    /// A tensor from an ndarray of any layout.
    pub fn from_array<T: Elem>(a: ArrayD<T>) -> Tensor {
        let shape = a.shape().to_vec();
        let v = if a.is_standard_layout() {
            let (v, offset) = a.into_raw_vec_and_offset();
            match offset {
                Some(0) | None => v,
                Some(o) => v[o..].to_vec(),
            }
        } else {
            a.iter().copied().collect()
        };
        Tensor {
            shape,
            data: T::wrap(v),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// The same buffer under a new shape of equal element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, IrError> {
        Tensor::new(shape, self.data)
    }

    pub fn as_slice<T: Elem>(&self) -> Result<&[T], IrError> {
        T::slice(&self.data).ok_or(IrError::DType {
            expected: T::DTYPE,
            found: self.dtype(),
        })
    }

    pub fn as_slice_mut<T: Elem>(&mut self) -> Result<&mut [T], IrError> {
        let found = self.dtype();
        T::slice_mut(&mut self.data).ok_or(IrError::DType {
            expected: T::DTYPE,
            found,
        })
    }

    pub fn into_vec<T: Elem>(self) -> Result<Vec<T>, IrError> {
        T::into_vec(self.data).map_err(|d| IrError::DType {
            expected: T::DTYPE,
            found: d.dtype(),
        })
    }

    /// A borrowed ndarray view, for ops written against ndarray.
    pub fn view<T: Elem>(&self) -> Result<ArrayViewD<'_, T>, IrError> {
        let s = self.as_slice::<T>()?;
        ArrayViewD::from_shape(IxDyn(&self.shape), s).map_err(|e| IrError::Invalid(e.to_string()))
    }

    pub fn to_array<T: Elem>(&self) -> Result<ArrayD<T>, IrError> {
        Ok(self.view::<T>()?.to_owned())
    }

    /// Integer contents as i64 (for shape-like inputs: axes, pads, indices).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, IrError> {
        Ok(match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I16(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U16(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U64(v) => v.iter().map(|&x| x as i64).collect(),
            _ => {
                return Err(IrError::DType {
                    expected: DType::I64,
                    found: self.dtype(),
                });
            }
        })
    }

    /// Float contents as f32 (for scale-like inputs and generic float maths).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, IrError> {
        Ok(match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            _ => {
                return Err(IrError::DType {
                    expected: DType::F32,
                    found: self.dtype(),
                });
            }
        })
    }

    /// Size of the buffer in bytes (for reports).
    pub fn byte_size(&self) -> usize {
        match &self.data {
            TensorData::String(v) => v.iter().map(|s| s.len()).sum(),
            TensorData::Raw { bytes, .. } => bytes.len(),
            d => d.len().unwrap_or(0) * d.dtype().size_of().unwrap_or(0),
        }
    }
}

/// Runs `$body` with `$v` bound to the typed slice of a tensor, for every
/// computable numeric dtype; evaluates `$other` for the rest.
#[macro_export]
macro_rules! with_numeric_slice {
    ($data:expr, $v:ident => $body:expr, _ => $other:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $body,
            $crate::TensorData::F64($v) => $body,
            $crate::TensorData::I8($v) => $body,
            $crate::TensorData::U8($v) => $body,
            $crate::TensorData::I16($v) => $body,
            $crate::TensorData::U16($v) => $body,
            $crate::TensorData::I32($v) => $body,
            $crate::TensorData::U32($v) => $body,
            $crate::TensorData::I64($v) => $body,
            $crate::TensorData::U64($v) => $body,
            _ => $other,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 6]).is_ok());
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 5]).is_err());
    }

    #[test]
    fn huge_shapes_are_refused() {
        assert!(matches!(
            Tensor::zeros(DType::F32, vec![1 << 40]),
            Err(IrError::TooLarge(_))
        ));
    }

    #[test]
    fn empty_tensors_with_huge_dims_are_refused() {
        // Every partial product of a valid shape fits in usize, so numel()
        // and stride arithmetic never overflow.
        assert!(Tensor::zeros(DType::F32, vec![0, 1 << 40, 1 << 40]).is_err());
        assert!(Tensor::from_vec(vec![1 << 40, 1 << 40, 0], Vec::<f32>::new()).is_err());
        assert!(checked_numel(&[usize::MAX, 0]).is_err());
        let t = Tensor::zeros(DType::F32, vec![0, 1 << 16, 1 << 16]).unwrap();
        assert_eq!(t.numel(), 0);
    }

    #[test]
    fn view_round_trips_through_ndarray() {
        let t = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let a = t.view::<i64>().unwrap().t().to_owned();
        let back = Tensor::from_array(a);
        assert_eq!(back.as_slice::<i64>().unwrap(), &[1, 3, 2, 4]);
    }
}
