//! Reading a QDQ graph: which values are constants, what a DequantizeLinear
//! feeding an op and a QuantizeLinear reading its output say, and the
//! [`Emit`] buffer that new nodes and initializers are written to.

use quench_ir::{DType, Graph, Node, Tensor, TensorData};
use std::collections::{HashMap, HashSet};

/// Why a node keeps its float form.
pub(crate) type Reason = String;

/// Read-only facts about the graph being converted.
pub(crate) struct Ctx<'a> {
    pub graph: &'a Graph,
    /// The model's default-domain opset.
    pub opset: i64,
    producers: HashMap<&'a str, usize>,
    /// Node consumers of each value (a node reading it twice counts twice).
    consumers: HashMap<&'a str, Vec<usize>>,
    /// Graph outputs and names read by subgraphs: values that must survive.
    pinned: HashSet<&'a str>,
    constants: HashMap<&'a str, &'a Tensor>,
}

/// Quantization parameters taken from a DequantizeLinear or QuantizeLinear.
#[derive(Clone, Debug)]
pub(crate) struct QParam {
    pub scale_name: String,
    /// `None` when the node omits its zero point (then it is 0).
    pub zp_name: Option<String>,
    pub dtype: DType,
    pub scales: Vec<f32>,
    pub zps: Vec<i32>,
    /// The quantization axis (normalized) when per-axis, else `None`.
    pub axis: Option<usize>,
}

impl QParam {
    pub fn per_tensor(&self) -> bool {
        self.axis.is_none()
    }

    /// Same dtype, scale and zero point: values pass through unchanged.
    pub fn same_as(&self, o: &QParam) -> bool {
        self.dtype == o.dtype
            && self.axis == o.axis
            && self.scales == o.scales
            && (self.zps == o.zps || (all_zero(&self.zps) && all_zero(&o.zps)))
    }

    /// Lowest representable value of the quantized type.
    pub fn qmin_max(&self) -> (i32, i32) {
        match self.dtype {
            DType::I8 => (-128, 127),
            DType::U16 => (0, 65535),
            DType::I16 => (-32768, 32767),
            _ => (0, 255),
        }
    }
}

fn all_zero(v: &[i32]) -> bool {
    v.iter().all(|&z| z == 0)
}

/// A DequantizeLinear feeding an op input.
#[derive(Clone, Debug)]
pub(crate) struct DqIn {
    /// The quantized tensor the DequantizeLinear reads.
    pub x: String,
    pub p: QParam,
}

/// The QuantizeLinear that is the only reader of an op's output.
#[derive(Clone, Debug)]
pub(crate) struct QOut {
    pub node: usize,
    /// The quantized tensor it writes.
    pub y: String,
    pub p: QParam,
}

impl<'a> Ctx<'a> {
    pub fn new(graph: &'a Graph, opset: i64) -> Ctx<'a> {
        let mut producers = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut pinned: HashSet<&str> = graph.outputs.iter().map(|v| v.name.as_str()).collect();
        let mut constants: HashMap<&str, &Tensor> = graph
            .initializers
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        for (i, n) in graph.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                producers.insert(o.as_str(), i);
            }
            for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
                consumers.entry(inp.as_str()).or_default().push(i);
            }
            pinned.extend(quench_ir::graph::subgraph_free_names(n));
            if n.op_type == "Constant"
                && n.domain.is_empty()
                && let (Ok(Some(t)), Some(o)) = (n.attr_tensor("value"), n.outputs.first())
            {
                constants.insert(o.as_str(), t);
            }
        }
        // A graph input with an initializer of the same name can be overridden.
        for i in &graph.inputs {
            constants.remove(i.name.as_str());
        }
        Ctx {
            graph,
            opset,
            producers,
            consumers,
            pinned,
            constants,
        }
    }

    pub fn node(&self, i: usize) -> &'a Node {
        &self.graph.nodes[i]
    }

    pub fn constant(&self, name: &str) -> Option<&'a Tensor> {
        self.constants.get(name).copied()
    }

    pub fn producer(&self, name: &str) -> Option<usize> {
        self.producers.get(name).copied()
    }

    pub fn consumers(&self, name: &str) -> &[usize] {
        self.consumers.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn pinned(&self, name: &str) -> bool {
        self.pinned.contains(name)
    }

    /// The element type of a value, where the graph says it.
    pub fn dtype_of(&self, name: &str) -> Option<DType> {
        if let Some(t) = self.constant(name) {
            return Some(t.dtype());
        }
        let g = self.graph;
        let vi = g.inputs.iter().chain(&g.value_info).chain(&g.outputs);
        if let Some(d) = vi.filter(|v| v.name == name).find_map(|v| v.dtype()) {
            return Some(d);
        }
        let p = self.node(self.producer(name)?);
        if p.op_type == "QuantizeLinear" && p.domain.is_empty() {
            return q_output_dtype(self, p);
        }
        None
    }

    fn qparam(
        &self,
        n: &Node,
        rank: Option<usize>,
        x_dtype: Option<DType>,
    ) -> Result<QParam, Reason> {
        let what = &n.op_type;
        if n.attr("block_size")
            .is_some_and(|a| *a != quench_ir::Attr::Int(0))
        {
            return Err(format!("its {what} is blocked"));
        }
        let scale_name = n.input(1).ok_or(format!("its {what} has no scale"))?;
        let scale = self
            .constant(scale_name)
            .ok_or(format!("the scale of its {what} is not a constant"))?;
        let scales = match scale.data() {
            TensorData::F32(v) if !v.is_empty() => v.clone(),
            _ => return Err(format!("the scale of its {what} is not float32")),
        };
        let zp_name = n.input(2);
        let (dtype, zps) = match zp_name {
            Some(z) => {
                let t = self
                    .constant(z)
                    .ok_or(format!("the zero point of its {what} is not a constant"))?;
                (
                    t.dtype(),
                    int_vec(t).ok_or(format!("the zero point of its {what} is not an integer"))?,
                )
            }
            None => {
                let d = x_dtype.ok_or(format!("the type of its {what} is unknown"))?;
                (d, vec![0; scales.len()])
            }
        };
        if zps.len() != scales.len() {
            return Err(format!(
                "its {what} has {} scales but {} zero points",
                scales.len(),
                zps.len()
            ));
        }
        let axis = if scales.len() == 1 && scale.rank() <= 1 {
            None
        } else {
            let r = rank.ok_or(format!("the rank of its per-axis {what} is unknown"))? as i64;
            let a = n.attr_int_or("axis", 1).map_err(|e| e.to_string())?;
            let a = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a) || scale.rank() != 1 {
                return Err(format!("its {what} has a bad axis or scale shape"));
            }
            Some(a as usize)
        };
        Ok(QParam {
            scale_name: scale_name.into(),
            zp_name: zp_name.map(String::from),
            dtype,
            scales,
            zps,
            axis,
        })
    }

    /// The DequantizeLinear producing input `i` of `node`.
    pub fn dq_input(&self, node: &Node, i: usize) -> Result<DqIn, Reason> {
        let name = node.input(i).ok_or(format!("input {i} is absent"))?;
        self.dq_of(name)
            .map_err(|why| why.replace("{i}", &i.to_string()))
    }

    /// The DequantizeLinear producing `name`, if that is what produces it.
    pub fn dq_input_named(&self, name: &str) -> Option<DqIn> {
        self.dq_of(name).ok()
    }

    fn dq_of(&self, name: &str) -> Result<DqIn, Reason> {
        let p = self
            .producer(name)
            .map(|p| self.node(p))
            .filter(|p| p.op_type == "DequantizeLinear" && p.domain.is_empty())
            .ok_or("input {i} does not come from a DequantizeLinear".to_string())?;
        let x = p.input(0).ok_or("a DequantizeLinear has no input")?;
        let rank = self
            .constant(x)
            .map(|t| t.rank())
            .or_else(|| self.rank_of(x));
        let param = self.qparam(p, rank, self.dtype_of(x))?;
        Ok(DqIn {
            x: x.into(),
            p: param,
        })
    }

    fn rank_of(&self, name: &str) -> Option<usize> {
        let g = self.graph;
        g.inputs
            .iter()
            .chain(&g.value_info)
            .chain(&g.outputs)
            .find(|v| v.name == name)
            .and_then(|v| v.shape().map(|s| s.len()))
    }

    /// The per-tensor QuantizeLinear that alone reads output 0 of `node`.
    pub fn q_output(&self, node: &Node) -> Result<QOut, Reason> {
        let y = node
            .outputs
            .first()
            .filter(|s| !s.is_empty())
            .ok_or("it has no output")?;
        if node
            .outputs
            .iter()
            .skip(1)
            .any(|o| !o.is_empty() && !self.consumers(o).is_empty())
        {
            return Err("a second output is used".into());
        }
        if self.pinned(y) {
            return Err("its float output is a graph output".into());
        }
        let &[qi] = self.consumers(y) else {
            return Err("its output is read by more than one node".into());
        };
        let q = self.node(qi);
        if q.op_type != "QuantizeLinear" || !q.domain.is_empty() || q.input(0) != Some(y) {
            return Err("its output does not go to a QuantizeLinear".into());
        }
        if q.attr_int_or("saturate", 1).ok() != Some(1) {
            return Err("its QuantizeLinear does not saturate".into());
        }
        let p = self.qparam(q, None, q_output_dtype(self, q))?;
        if !p.per_tensor() {
            return Err("its output QuantizeLinear is per-axis".into());
        }
        let out = q
            .outputs
            .first()
            .filter(|s| !s.is_empty())
            .ok_or("a QuantizeLinear has no output")?;
        Ok(QOut {
            node: qi,
            y: out.clone(),
            p,
        })
    }
}

/// The type a QuantizeLinear writes: its zero point's, else `output_dtype`, else uint8.
fn q_output_dtype(ctx: &Ctx, q: &Node) -> Option<DType> {
    if let Some(z) = q.input(2) {
        return ctx.constant(z).map(|t| t.dtype());
    }
    match q.attr_int_or("output_dtype", 0).ok()? {
        0 => Some(DType::U8),
        c => DType::from_onnx(c as i32),
    }
}

pub(crate) fn int_vec(t: &Tensor) -> Option<Vec<i32>> {
    Some(match t.data() {
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U16(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I16(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        _ => return None,
    })
}

/// New nodes and initializers, with names that collide with nothing.
pub(crate) struct Emit {
    taken: HashSet<String>,
    pub inits: Vec<(String, Tensor)>,
}

impl Emit {
    pub fn new(g: &Graph) -> Emit {
        let mut taken: HashSet<String> = g.initializers.keys().cloned().collect();
        taken.extend(g.inputs.iter().chain(&g.outputs).map(|v| v.name.clone()));
        for n in &g.nodes {
            taken.extend(n.outputs.iter().cloned());
            taken.insert(n.name.clone());
        }
        Emit {
            taken,
            inits: Vec::new(),
        }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.taken.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    pub fn init(&mut self, base: &str, t: Tensor) -> String {
        let name = self.fresh(base);
        self.inits.push((name.clone(), t));
        name
    }

    /// The zero-point input for `p`, adding a zero of its type when the
    /// QDQ node omitted it (integer ops want it spelled out).
    pub fn zp(&mut self, p: &QParam) -> String {
        if let Some(z) = &p.zp_name {
            return z.clone();
        }
        let base = format!("{}_zero_point", p.scale_name);
        let n = p.scales.len();
        let shape = if n == 1 { vec![] } else { vec![n] };
        let t = match p.dtype {
            DType::I8 => Tensor::from_vec(shape, vec![0i8; n]),
            DType::I16 => Tensor::from_vec(shape, vec![0i16; n]),
            DType::U16 => Tensor::from_vec(shape, vec![0u16; n]),
            DType::I32 => Tensor::from_vec(shape, vec![0i32; n]),
            _ => Tensor::from_vec(shape, vec![0u8; n]),
        };
        match t {
            Ok(t) => self.init(&base, t),
            Err(_) => String::new(),
        }
    }
}

/// A node of the ONNX or com.microsoft domain.
pub(crate) fn node(
    op: &str,
    domain: &str,
    name: &str,
    inputs: Vec<String>,
    outputs: Vec<String>,
) -> Node {
    Node {
        name: name.into(),
        op_type: op.into(),
        domain: domain.into(),
        inputs,
        outputs,
        ..Default::default()
    }
}

/// Activations must be 8-bit and the op's types must agree, as ORT's
/// integer kernels require.
pub(crate) fn is_8bit(d: DType) -> bool {
    matches!(d, DType::U8 | DType::I8)
}
