//! Helpers shared by the data-movement operators: a dtype-generic element
//! trait, axis normalisation and a per-axis gather used by Slice, Pad, Tile
//! and nearest Resize.

use crate::OpError;
use quench_ir::{DType, Elem, Node, Tensor, TensorData};

/// An element that can be copied between buffers. Besides the typed buffers,
/// raw buffers of fixed-size types (float16, bfloat16, float8) are viewed as
/// `[u8; N]` so pure data movement works for them too.
pub(crate) trait Movable: Clone + Default + Send + Sync + 'static {
    fn view(d: &TensorData) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>, dtype: DType) -> TensorData;
}

macro_rules! movable_elem {
    ($($t:ty),*) => {$(
        impl Movable for $t {
            fn view(d: &TensorData) -> Option<&[Self]> {
                <$t as Elem>::slice(d)
            }
            fn wrap(v: Vec<Self>, _: DType) -> TensorData {
                <$t as Elem>::wrap(v)
            }
        }
    )*};
}
movable_elem!(f32, f64, i8, u8, i16, u16, i32, u32, i64, u64, bool);

impl Movable for Vec<u8> {
    fn view(d: &TensorData) -> Option<&[Self]> {
        match d {
            TensorData::String(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<Self>, _: DType) -> TensorData {
        TensorData::String(v)
    }
}

macro_rules! movable_bytes {
    ($($n:literal),*) => {$(
        impl Movable for [u8; $n] {
            fn view(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::Raw { dtype, bytes } if dtype.size_of() == Some($n) => {
                        let (chunks, rest) = bytes.as_chunks::<$n>();
                        rest.is_empty().then_some(chunks)
                    }
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>, dtype: DType) -> TensorData {
                TensorData::Raw { dtype, bytes: v.into_flattened() }
            }
        }
    )*};
}
movable_bytes!(1, 2, 4, 8, 16);

/// Evaluates `$body` with the type alias `$T` bound to the [`Movable`]
/// element type of `$dtype`; the body must be a `Result<_, OpError>`.
macro_rules! with_movable {
    ($dtype:expr, $T:ident => $body:expr) => {{
        use quench_ir::DType as D;
        match $dtype {
            D::F32 => {
                type $T = f32;
                $body
            }
            D::F64 => {
                type $T = f64;
                $body
            }
            D::I8 => {
                type $T = i8;
                $body
            }
            D::U8 => {
                type $T = u8;
                $body
            }
            D::I16 => {
                type $T = i16;
                $body
            }
            D::U16 => {
                type $T = u16;
                $body
            }
            D::I32 => {
                type $T = i32;
                $body
            }
            D::U32 => {
                type $T = u32;
                $body
            }
            D::I64 => {
                type $T = i64;
                $body
            }
            D::U64 => {
                type $T = u64;
                $body
            }
            D::Bool => {
                type $T = bool;
                $body
            }
            D::String => {
                type $T = Vec<u8>;
                $body
            }
            d => match d.size_of() {
                Some(1) => {
                    type $T = [u8; 1];
                    $body
                }
                Some(2) => {
                    type $T = [u8; 2];
                    $body
                }
                Some(4) => {
                    type $T = [u8; 4];
                    $body
                }
                Some(8) => {
                    type $T = [u8; 8];
                    $body
                }
                Some(16) => {
                    type $T = [u8; 16];
                    $body
                }
                _ => Err($crate::OpError::Unsupported(format!("{d} tensors"))),
            },
        }
    }};
}
pub(crate) use with_movable;

/// The elements of `t` as `T`, or an error naming the input.
pub(crate) fn elems<'a, T: Movable>(t: &'a Tensor, what: &str) -> Result<&'a [T], OpError> {
    T::view(t.data()).ok_or_else(|| {
        OpError::Invalid(format!(
            "{what} has dtype {} and cannot be read as the expected element type (mismatched dtypes?)",
            t.dtype()
        ))
    })
}

/// A tensor of `t`'s dtype from elements produced by a generic kernel.
pub(crate) fn wrap<T: Movable>(
    shape: Vec<usize>,
    v: Vec<T>,
    dtype: DType,
) -> Result<Tensor, OpError> {
    Ok(Tensor::new(shape, T::wrap(v, dtype))?)
}

/// `axis` in `[-rank, rank)` as an index.
pub(crate) fn norm_axis(axis: i64, rank: usize, what: &str) -> Result<usize, OpError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(OpError::Invalid(format!(
            "{what} {axis} is out of range for rank {rank}"
        )));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Normalised, duplicate-free axes.
pub(crate) fn norm_axes(axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>, OpError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank, what)?;
        if out.contains(&a) {
            return Err(OpError::Invalid(format!("{what} lists axis {a} twice")));
        }
        out.push(a);
    }
    Ok(out)
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// A list of integers that moved from an attribute to an input in some
/// opset: the input when the node has one, else the attribute.
pub(crate) fn ints_input_or_attr(
    inputs: &[Option<&Tensor>],
    i: usize,
    attr: &Option<Vec<i64>>,
) -> Result<Option<Vec<i64>>, OpError> {
    match crate::op::optional(inputs, i) {
        Some(t) => Ok(Some(t.to_i64_vec()?)),
        None => Ok(attr.clone()),
    }
}

/// An `ints` attribute, owned.
pub(crate) fn attr_ints(node: &Node, name: &str) -> Result<Option<Vec<i64>>, OpError> {
    Ok(node.attr_ints(name)?.map(<[i64]>::to_vec))
}

/// Marks an output position that takes the fill value in [`gather_axes`].
pub(crate) const FILL: usize = usize::MAX;

/// Gathers `src` (of shape `in_shape`) so that the output element at
/// `[o0, o1, ...]` is the input element at `[maps[0][o0], maps[1][o1], ...]`,
/// or `fill` where any map entry is [`FILL`]. Map entries must be in range.
pub(crate) fn gather_axes<T: Movable>(
    src: &[T],
    in_shape: &[usize],
    maps: &[Vec<usize>],
    fill: &T,
) -> Vec<T> {
    let r = maps.len();
    if r == 0 {
        return src.to_vec();
    }
    let st = strides(in_shape);
    let offs: Vec<Vec<usize>> = maps
        .iter()
        .zip(&st)
        .map(|(m, &s)| {
            m.iter()
                .map(|&i| if i == FILL { FILL } else { i * s })
                .collect()
        })
        .collect();
    let n_out: usize = offs.iter().map(Vec::len).product();
    let mut out = Vec::with_capacity(n_out);
    if n_out == 0 {
        return out;
    }
    let last = &offs[r - 1];
    let first = last[0];
    let contiguous = first != FILL
        && last
            .iter()
            .enumerate()
            .all(|(k, &o)| o != FILL && o == first + k);
    let mut idx = vec![0usize; r - 1];
    loop {
        let mut base = Some(0usize);
        for (a, &i) in idx.iter().enumerate() {
            let o = offs[a][i];
            base = if o == FILL { None } else { base.map(|b| b + o) };
        }
        match base {
            None => out.extend(std::iter::repeat_n(fill.clone(), last.len())),
            Some(b) if contiguous => out.extend_from_slice(&src[b + first..b + first + last.len()]),
            Some(b) => out.extend(last.iter().map(|&o| {
                if o == FILL {
                    fill.clone()
                } else {
                    src[b + o].clone()
                }
            })),
        }
        let mut a = r - 1;
        loop {
            if a == 0 {
                return out;
            }
            a -= 1;
            idx[a] += 1;
            if idx[a] < offs[a].len() {
                break;
            }
            idx[a] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_axes_crops_and_fills() {
        let src: Vec<i32> = (0..6).collect(); // [[0,1,2],[3,4,5]]
        let out = gather_axes(&src, &[2, 3], &[vec![1, FILL], vec![2, 0]], &-1);
        assert_eq!(out, vec![5, 3, -1, -1]);
        let out = gather_axes(&src, &[2, 3], &[vec![1, 0], vec![1, 2]], &-1);
        assert_eq!(out, vec![4, 5, 1, 2]);
    }

    #[test]
    fn raw_bytes_round_trip() {
        let d = TensorData::Raw {
            dtype: DType::F16,
            bytes: vec![1, 2, 3, 4],
        };
        let v = <[u8; 2]>::view(&d).unwrap();
        assert_eq!(v, &[[1, 2], [3, 4]]);
        assert_eq!(<[u8; 2]>::wrap(v.to_vec(), DType::F16), d);
        assert!(<[u8; 4]>::view(&d).is_none());
    }

    #[test]
    fn axes_are_checked() {
        assert_eq!(norm_axis(-1, 3, "axis").unwrap(), 2);
        assert!(norm_axis(3, 3, "axis").is_err());
        assert!(norm_axes(&[0, -3], 3, "axes").is_err());
    }
}
