//! Recurrent operators: LSTM and GRU.
//!
//! Both share one shape: the input projection `X · Wᵀ` of every time step is
//! one GEMM up front, then each step does one `h · Rᵀ` product (a GEMV at
//! batch 1) and the element-wise gate maths.

mod act;
mod dynamic_lstm;
mod gru;
mod lstm;

use crate::op::{optional, required};
use crate::{OpError, Registry, bail_invalid, bail_unsupported};
use act::Act;
use quench_ir::{DType, Node, Tensor};
use quench_kernels::{gemm::sgemm_strided, gemv::sgemv};

pub fn register(r: &mut Registry) {
    r.register("", "LSTM", lstm::build);
    r.register("", "GRU", gru::build);
    r.register("com.microsoft", "DynamicQuantizeLSTM", dynamic_lstm::build);
}

/// Attributes LSTM and GRU share.
#[derive(Debug)]
struct Common {
    /// One entry per direction: does it run backwards in time?
    reverse: Vec<bool>,
    acts: Vec<Vec<Act>>,
    clip: Option<f32>,
    /// `layout = 1`: batch is the first axis of X, Y, Y_h and Y_c.
    batch_first: bool,
    hidden_size: Option<usize>,
    /// How many outputs the node asks for.
    outputs: usize,
}

impl Common {
    fn parse(node: &Node, default_acts: &[&str], max_outputs: usize) -> Result<Common, OpError> {
        let reverse = match node.attr_string_or("direction", "forward")?.as_str() {
            "forward" => vec![false],
            "reverse" => vec![true],
            "bidirectional" => vec![false, true],
            d => bail_invalid!(
                "attribute direction is '{d}', expected forward, reverse or bidirectional"
            ),
        };
        let acts = act::parse_activations(node, reverse.len(), default_acts)?;
        let clip = match node.attr_float("clip")? {
            Some(c) if c.is_nan() || c <= 0.0 => {
                bail_invalid!("attribute clip is {c}, expected a positive number")
            }
            c => c,
        };
        let batch_first = match node.attr_int_or("layout", 0)? {
            0 => false,
            1 => true,
            l => bail_invalid!("attribute layout is {l}, expected 0 or 1"),
        };
        let hidden_size = match node.attr_int("hidden_size")? {
            Some(h) if h <= 0 => bail_invalid!("attribute hidden_size is {h}, expected > 0"),
            h => h.map(|h| h as usize),
        };
        if node.outputs.len() > max_outputs {
            bail_invalid!(
                "{} outputs requested, {} has at most {max_outputs}",
                node.outputs.len(),
                node.op_type
            );
        }
        Ok(Common {
            reverse,
            acts,
            clip,
            batch_first,
            hidden_size,
            outputs: node.outputs.len(),
        })
    }
}

/// Validated sizes and inputs of one run.
struct Io<'a> {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    dirs: usize,
    batch_first: bool,
    x: &'a [f32],
    w: &'a [f32],
    r: &'a [f32],
    b: Option<&'a [f32]>,
    /// Valid steps of each batch entry.
    lens: Vec<usize>,
    h0: Option<&'a [f32]>,
}

fn f32_input<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], OpError> {
    match t.dtype() {
        DType::F32 => Ok(t.as_slice::<f32>()?),
        DType::F16 | DType::BF16 | DType::F64 => {
            bail_unsupported!(
                "{what} is {}: recurrent ops are computed in float32 only",
                t.dtype()
            )
        }
        d => bail_invalid!("{what} is {d}, expected a float type"),
    }
}

fn expect_shape(t: &Tensor, want: &[usize], what: &str) -> Result<(), OpError> {
    if t.shape() != want {
        bail_invalid!("{what} has shape {:?}, expected {want:?}", t.shape());
    }
    Ok(())
}

impl<'a> Io<'a> {
    /// Reads X, W, R, B, sequence_lens and initial_h (inputs 0..=5), for an
    /// op with `gates` gates.
    fn new(c: &Common, gates: usize, inputs: &[Option<&'a Tensor>]) -> Result<Io<'a>, OpError> {
        let (x, w, r) = (
            required(inputs, 0)?,
            required(inputs, 1)?,
            required(inputs, 2)?,
        );
        let &[d0, d1, input] = x.shape() else {
            bail_invalid!("input 0 (X) has shape {:?}, expected rank 3", x.shape());
        };
        let (seq, batch) = if c.batch_first { (d1, d0) } else { (d0, d1) };
        let dirs = c.reverse.len();
        let &[_, _, hidden] = r.shape() else {
            bail_invalid!("input 2 (R) has shape {:?}, expected rank 3", r.shape());
        };
        if let Some(h) = c.hidden_size
            && h != hidden
        {
            bail_invalid!(
                "attribute hidden_size is {h} but input 2 (R) has shape {:?}",
                r.shape()
            );
        }
        let gh = gates * hidden;
        expect_shape(r, &[dirs, gh, hidden], "input 2 (R)")?;
        expect_shape(w, &[dirs, gh, input], "input 1 (W)")?;
        let b = optional(inputs, 3);
        if let Some(b) = b {
            expect_shape(b, &[dirs, 2 * gh], "input 3 (B)")?;
        }
        let lens = match optional(inputs, 4) {
            None => vec![seq; batch],
            Some(l) => {
                if !matches!(l.dtype(), DType::I32 | DType::I64) {
                    bail_invalid!("input 4 (sequence_lens) is {}, expected int32", l.dtype());
                }
                expect_shape(l, &[batch], "input 4 (sequence_lens)")?;
                l.to_i64_vec()?
                    .into_iter()
                    .map(|v| match usize::try_from(v) {
                        Ok(v) if v <= seq => Ok(v),
                        _ => bail_invalid!("input 4 (sequence_lens) holds {v}, expected 0..={seq}"),
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let state = state_shape(c.batch_first, dirs, batch, hidden);
        let h0 = optional(inputs, 5);
        if let Some(h) = h0 {
            expect_shape(h, &state, "input 5 (initial_h)")?;
        }
        Ok(Io {
            seq,
            batch,
            input,
            hidden,
            dirs,
            batch_first: c.batch_first,
            x: f32_input(x, "input 0 (X)")?,
            w: f32_input(w, "input 1 (W)")?,
            r: f32_input(r, "input 2 (R)")?,
            b: b.map(|b| f32_input(b, "input 3 (B)")).transpose()?,
            lens,
            h0: h0
                .map(|h| f32_input(h, "input 5 (initial_h)"))
                .transpose()?,
        })
    }

    /// Row of X (and of the projection) holding step `t` of batch entry `b`.
    fn x_row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.seq + t
        } else {
            t * self.batch + b
        }
    }

    /// Offset of (direction `d`, entry `b`) in initial/final state tensors.
    fn state_at(&self, d: usize, b: usize) -> usize {
        let i = if self.batch_first {
            b * self.dirs + d
        } else {
            d * self.batch + b
        };
        i * self.hidden
    }

    /// Offset of (step `t`, direction `d`, entry `b`) in Y.
    fn y_at(&self, t: usize, d: usize, b: usize) -> usize {
        let i = if self.batch_first {
            (b * self.seq + t) * self.dirs + d
        } else {
            (t * self.dirs + d) * self.batch + b
        };
        i * self.hidden
    }

    fn y_shape(&self) -> Vec<usize> {
        let (s, d, b, h) = (self.seq, self.dirs, self.batch, self.hidden);
        if self.batch_first {
            vec![b, s, d, h]
        } else {
            vec![s, d, b, h]
        }
    }

    fn state_shape(&self) -> Vec<usize> {
        state_shape(self.batch_first, self.dirs, self.batch, self.hidden)
    }

    /// Initial state of direction `d` as `[batch, hidden]` (zeros if absent).
    fn initial(&self, s: Option<&[f32]>, d: usize) -> Vec<f32> {
        let h = self.hidden;
        let mut v = vec![0f32; self.batch * h];
        if let Some(s) = s {
            for (b, row) in v.chunks_mut(h.max(1)).enumerate() {
                let o = self.state_at(d, b);
                row.copy_from_slice(&s[o..o + h]);
            }
        }
        v
    }

    /// `X · W_dᵀ` for every step: `[seq*batch, gates*hidden]` rows in X's order.
    fn project(&self, d: usize, gates: usize, threads: usize) -> Vec<f32> {
        let (rows, gh, k) = (self.seq * self.batch, gates * self.hidden, self.input);
        let mut out = vec![0f32; rows * gh];
        let w = &self.w[d * gh * k..(d + 1) * gh * k];
        if rows == 1 {
            sgemv(gh, k, w, self.x, &mut out, 0.0);
            return out;
        }
        sgemm_strided(
            rows, gh, k, self.x, k as isize, 1, w, 1, k as isize, &mut out, 0.0, threads,
        );
        out
    }

    /// Steps the longest entry runs.
    fn max_len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// The time step batch entry `b` processes at iteration `s`, if any.
    fn step_time(&self, s: usize, b: usize, reverse: bool) -> Option<usize> {
        let len = self.lens[b];
        (s < len).then(|| if reverse { len - 1 - s } else { s })
    }
}

/// What one direction computes: Y rows in X's row order (zero past each
/// entry's length) and the final states (h, then c for LSTM), `[batch, hidden]`.
struct DirOut {
    y: Vec<f32>,
    states: Vec<Vec<f32>>,
}

/// Runs `f(direction, reverse, threads)` for each direction; the two halves
/// of a bidirectional op are independent, so they share the pool.
fn run_directions(
    io: &Io,
    reverse: &[bool],
    threads: usize,
    f: impl Fn(usize, bool, usize) -> DirOut + Sync,
) -> Vec<DirOut> {
    match reverse {
        &[r0, r1] if threads > 1 && io.seq > 0 => {
            let t = (threads / 2).max(1);
            let (a, b) = rayon::join(|| f(0, r0, t), || f(1, r1, t));
            vec![a, b]
        }
        _ => reverse
            .iter()
            .enumerate()
            .map(|(d, &r)| f(d, r, threads))
            .collect(),
    }
}

/// Interleaves the directions into Y and the final-state tensors.
fn assemble(io: &Io, outs: Vec<DirOut>) -> (Vec<f32>, Vec<Vec<f32>>) {
    let hid = io.hidden;
    let state_len = io.dirs * io.batch * hid;
    let mut y = vec![0f32; io.seq * state_len];
    let n_states = outs.first().map_or(0, |o| o.states.len());
    let mut states = vec![vec![0f32; state_len]; n_states];
    for (d, out) in outs.iter().enumerate() {
        for t in 0..io.seq {
            for b in 0..io.batch {
                let (o, row) = (io.y_at(t, d, b), io.x_row(t, b));
                y[o..o + hid].copy_from_slice(&out.y[row * hid..(row + 1) * hid]);
            }
        }
        for (dst, src) in states.iter_mut().zip(&out.states) {
            for b in 0..io.batch {
                let o = io.state_at(d, b);
                dst[o..o + hid].copy_from_slice(&src[b * hid..(b + 1) * hid]);
            }
        }
    }
    (y, states)
}

fn state_shape(batch_first: bool, dirs: usize, batch: usize, hidden: usize) -> Vec<usize> {
    if batch_first {
        vec![batch, dirs, hidden]
    } else {
        vec![dirs, batch, hidden]
    }
}

/// `out[batch × rows] = h[batch × k] · mᵀ` with `m` row-major `rows × k`.
fn times_transposed(
    h: &[f32],
    batch: usize,
    k: usize,
    m: &[f32],
    rows: usize,
    out: &mut [f32],
    threads: usize,
) {
    if batch == 1 {
        sgemv(rows, k, m, h, out, 0.0);
    } else {
        sgemm_strided(
            batch, rows, k, h, k as isize, 1, m, 1, k as isize, out, 0.0, threads,
        );
    }
}

fn clip(x: &mut [f32], c: Option<f32>) {
    if let Some(c) = c {
        x.iter_mut().for_each(|v| *v = v.clamp(-c, c));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::{BuildCtx, OpError, Registry, RunCtx};
    use quench_ir::{Node, Tensor};

    pub fn run_op(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        run_op_threads(node, inputs, 1)
    }

    pub fn run_op_threads(
        node: &Node,
        inputs: &[Option<&Tensor>],
        threads: usize,
    ) -> Result<Vec<Tensor>, OpError> {
        let r = Registry::standard();
        let build = r
            .get("", &node.op_type)
            .ok_or(OpError::Invalid("no op".into()))?;
        let lookup = |_: &str| None;
        let compile = |_: &quench_ir::Graph| Err(crate::RuntimeError::Invalid("no".into()));
        let ctx = BuildCtx {
            node,
            opset: 14,
            constants: &lookup,
            compile: &compile,
        };
        let op = build(&ctx)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        pool.install(|| op.run(&RunCtx { threads }, inputs))
    }

    #[test]
    fn bidirectional_threads_match_sequential() {
        use quench_ir::Attr;
        let (s, b, i, h) = (4, 2, 3, 5);
        let t = |shape: Vec<usize>, seed| {
            let n = shape.iter().product();
            Tensor::from_vec(shape, values(n, seed)).unwrap()
        };
        for (op, g) in [("LSTM", 4), ("GRU", 3)] {
            let (x, w, r) = (
                t(vec![b, s, i], 1),
                t(vec![2, g * h, i], 2),
                t(vec![2, g * h, h], 3),
            );
            let lens = Tensor::from_vec(vec![b], vec![4i32, 2]).unwrap();
            let node = Node::new(op, "n", &["x", "w", "r", "", "l"], &["y", "yh"])
                .with_attr("direction", Attr::String(b"bidirectional".to_vec()))
                .with_attr("layout", Attr::Int(1));
            let ins = [Some(&x), Some(&w), Some(&r), None, Some(&lens)];
            let one = run_op(&node, &ins).unwrap();
            let two = run_op_threads(&node, &ins, 2).unwrap();
            assert_eq!(one, two);
            assert_eq!(one[0].shape(), &[b, s, 2, h]);
            // Entry 1 stops after 2 steps: its later outputs are zero.
            let y = one[0].as_slice::<f32>().unwrap();
            assert!(
                y[(s + 2) * 2 * h..(2 * s) * 2 * h]
                    .iter()
                    .all(|&v| v == 0.0)
            );
        }
    }

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}
