//! Constant weights: finding them (initializers, possibly behind Transpose
//! or Identity) and quantizing them to symmetric int8 once per use.

use crate::QuantError;
use crate::qparams::{QParams, QParamsConfig, quantize};
use quench_ir::{DType, Graph, Tensor};
use std::collections::HashMap;

/// The value of `name` when it is a compile-time constant: an initializer,
/// or a default-domain Transpose/Identity of one (exporters write weights
/// as `Transpose(W)` in front of MatMul).
pub fn resolve(graph: &Graph, name: &str) -> Result<Option<Tensor>, QuantError> {
    if let Some(t) = graph.initializers.get(name) {
        return Ok(Some(t.clone()));
    }
    let Some(node) = graph
        .nodes
        .iter()
        .find(|n| n.outputs.iter().any(|o| o == name))
    else {
        return Ok(None);
    };
    if !(node.domain.is_empty() || node.domain == "ai.onnx") || node.outputs.len() != 1 {
        return Ok(None);
    }
    let Some(src) = node.input(0) else {
        return Ok(None);
    };
    match node.op_type.as_str() {
        "Identity" => resolve(graph, src),
        "Transpose" => {
            let Some(t) = resolve(graph, src)? else {
                return Ok(None);
            };
            if t.dtype() != DType::F32 {
                return Ok(None);
            }
            let rank = t.rank();
            let perm: Vec<usize> = match node.attr_ints("perm").map_err(bad)? {
                None => (0..rank).rev().collect(),
                Some(p) => {
                    let p: Vec<usize> = p
                        .iter()
                        .map(|&v| if v < 0 { v + rank as i64 } else { v } as usize)
                        .collect();
                    let mut seen = p.clone();
                    seen.sort_unstable();
                    if seen != (0..rank).collect::<Vec<_>>() {
                        return Ok(None);
                    }
                    p
                }
            };
            let a = t.view::<f32>().map_err(bad)?.permuted_axes(perm).to_owned();
            Ok(Some(Tensor::from_array(a)))
        }
        _ => Ok(None),
    }
}

fn bad(e: quench_ir::IrError) -> QuantError {
    QuantError::Graph(e.to_string())
}

/// Symmetric int8 of `w` (float32): per tensor, or one scale per index of
/// `axis`; ORT's `quantize_data(..., symmetric=True)` (range `[-127, 127]`).
pub fn symmetric_i8(w: &Tensor, axis: Option<usize>) -> Result<(Tensor, Vec<f32>), QuantError> {
    let v = w.as_slice::<f32>().map_err(bad)?;
    if let Some(x) = v.iter().find(|x| !x.is_finite()) {
        return Err(QuantError::Graph(format!("weight holds {x}")));
    }
    let shape = w.shape();
    let (channels, inner) = match axis {
        None => (1, v.len()),
        Some(a) => (shape[a], shape[a + 1..].iter().product()),
    };
    let mut mins = vec![0f32; channels];
    let mut maxs = vec![0f32; channels];
    for (i, &x) in v.iter().enumerate() {
        let c = if axis.is_some() {
            (i / inner.max(1)) % channels
        } else {
            0
        };
        mins[c] = mins[c].min(x);
        maxs[c] = maxs[c].max(x);
    }
    let qp = QParams::from_ranges(&mins, &maxs, axis, &QParamsConfig::weight_i8())?;
    let q = quantize(w, &qp)?;
    Ok((q, qp.scale))
}

/// Names of a quantized weight and its parameters in the output graph.
#[derive(Clone, Debug)]
pub struct QWeight {
    pub q: String,
    pub scale: String,
    pub zero_point: String,
    /// Bytes the float original took, counted on the first use only.
    pub float_bytes: usize,
    pub quant_bytes: usize,
    /// Column sums of the int8 matrix (per-token zero-point correction).
    pub col_sums: Vec<i64>,
}

/// A freshly quantized weight: int8 values, scales shaped `pshape`, and the
/// float size it replaces.
pub struct Quantized {
    pub q: Tensor,
    pub scales: Vec<f32>,
    pub pshape: Vec<usize>,
    pub float_bytes: usize,
}

/// New initializers, and weights already quantized (a weight shared by
/// several nodes is stored once).
#[derive(Default)]
pub struct Cache {
    done: HashMap<String, QWeight>,
    inits: Vec<(String, Tensor)>,
}

impl Cache {
    pub fn get(&self, key: &str) -> Option<QWeight> {
        self.done.get(key).map(|w| QWeight {
            float_bytes: 0,
            quant_bytes: 0,
            ..w.clone()
        })
    }

    /// Stores `q`, `scale` (reshaped to `pshape`) and an all-zero int8
    /// zero point of the same shape under names derived from `base`.
    pub fn insert(
        &mut self,
        ctx_names: &mut std::collections::HashSet<String>,
        key: &str,
        base: &str,
        new: Quantized,
    ) -> Result<QWeight, QuantError> {
        let Quantized {
            q,
            scales,
            pshape,
            float_bytes,
        } = new;
        let n = scales.len();
        let scale = Tensor::from_vec(pshape.clone(), scales).map_err(bad)?;
        let zp = Tensor::from_vec(pshape, vec![0i8; n]).map_err(bad)?;
        let col_sums = match (q.shape(), q.as_slice::<i8>()) {
            (&[k, cols], Ok(v)) => {
                let mut s = vec![0i64; cols];
                for row in v.chunks(cols.max(1)).take(k) {
                    s.iter_mut().zip(row).for_each(|(a, &b)| *a += b as i64);
                }
                s
            }
            _ => Vec::new(),
        };
        let names = [
            crate::passes::unique(ctx_names, &format!("{base}_quantized")),
            crate::passes::unique(ctx_names, &format!("{base}_scale")),
            crate::passes::unique(ctx_names, &format!("{base}_zero_point")),
        ];
        let w = QWeight {
            q: names[0].clone(),
            scale: names[1].clone(),
            zero_point: names[2].clone(),
            float_bytes,
            quant_bytes: q.byte_size() + scale.byte_size() + zp.byte_size(),
            col_sums,
        };
        let [a, b, c] = names;
        self.inits.push((a, q));
        self.inits.push((b, scale));
        self.inits.push((c, zp));
        self.done.insert(key.to_string(), w.clone());
        Ok(w)
    }

    /// Adds a plain initializer (biases, constants of the per-token graph).
    pub fn constant(&mut self, name: String, t: Tensor) {
        self.inits.push((name, t));
    }

    pub fn take_initializers(&mut self) -> Vec<(String, Tensor)> {
        std::mem::take(&mut self.inits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_follow_each_column_absmax() {
        let w = Tensor::from_vec(vec![2, 3], vec![1.0f32, -2.0, 0.0, -0.5, 1.0, 0.0]).unwrap();
        let (q, s) = symmetric_i8(&w, Some(1)).unwrap();
        assert_eq!(s.len(), 3);
        assert!((s[0] - 1.0 / 127.0).abs() < 1e-9);
        assert!((s[1] - 2.0 / 127.0).abs() < 1e-9);
        assert_eq!(q.as_slice::<i8>().unwrap(), &[127, -127, 0, -64, 64, 0]);
        let (q, s) = symmetric_i8(&w, None).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(q.as_slice::<i8>().unwrap()[0], 64);
    }

    #[test]
    fn non_finite_weights_are_an_error() {
        let w = Tensor::from_vec(vec![2], vec![1.0f32, f32::NAN]).unwrap();
        assert!(symmetric_i8(&w, None).is_err());
    }
}
