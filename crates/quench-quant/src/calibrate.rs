//! Calibration: run the float model on sample batches and feed the planned
//! activation tensors to observers as they are produced. Values are observed
//! in a run hook and dropped right after, so memory does not grow with the
//! number of samples (unlike collecting every activation first).
//!
//! Batches run data-parallel: with `T` threads, `T` workers each run one
//! batch single-threaded (small models at calibration batch sizes use one core
//! better than they split a convolution over two). Observers still see the
//! batches in order — worker `b` waits, tensor by tensor, until batch `b − 1`
//! has fed that observer — so every range is bit-identical for any `T`, also
//! for histograms, whose bins depend on the order batches arrive in.

use crate::bias_correction::ChannelAxis;
use crate::{CalibrationMethod, ObservedRange, Observer, QParams, QParamsConfig, QuantError};
use quench_ir::Tensor;
use quench_runtime::{RunCtx, RunHooks, Session};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, mpsc};

/// One batch of named model inputs.
pub type Batch = Vec<(String, Tensor)>;

/// Ranges and quantization parameters found for each calibrated tensor.
#[derive(Debug, Default)]
pub struct Calibration {
    pub ranges: BTreeMap<String, ObservedRange>,
    pub qparams: BTreeMap<String, QParams>,
    /// Per-channel means of the tensors asked for (bias correction).
    pub means: BTreeMap<String, Vec<f64>>,
    pub batches: usize,
}

/// Per-batch channel sums and counts of one tensor, summed in batch order at
/// the end so the means do not depend on which worker finished first.
type ChannelSums = Mutex<BTreeMap<usize, (Vec<f64>, u64)>>;

/// One tensor's observer and whose turn it is to feed it.
struct Slot {
    state: Mutex<SlotState>,
    turn: Condvar,
}

struct SlotState {
    observer: Box<dyn Observer>,
    /// The batch allowed to feed the observer next.
    next: usize,
    observed: bool,
}

/// What the workers share: the observers, by tensor name, and the first
/// failed batch (`usize::MAX` while none failed).
struct Observers {
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    means: HashMap<String, (ChannelAxis, ChannelSums)>,
    /// Batches after this one stop; earlier ones run on, so that the error
    /// reported is always the first batch's in order.
    failed_at: AtomicUsize,
}

/// How one batch ended.
enum Outcome {
    Done,
    Failed(QuantError),
    /// Stopped because another batch failed.
    Aborted,
}

impl Observers {
    fn lock(&self, i: usize) -> MutexGuard<'_, SlotState> {
        self.slots[i]
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for batch `b`'s turn at slot `i`; `None` when calibration stopped.
    fn turn(&self, i: usize, b: usize) -> Option<MutexGuard<'_, SlotState>> {
        let mut st = self.lock(i);
        while st.next < b {
            if b > self.failed_at.load(Ordering::Acquire) {
                return None;
            }
            st = self.slots[i]
                .turn
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        Some(st)
    }

    /// Feeds `t` as batch `b`'s value of tensor `name`, if it is a target.
    fn observe(&self, name: &str, b: usize, t: &Tensor) -> Result<(), Outcome> {
        if let Some((axis, sums)) = self.means.get(name)
            && let Some(s) = channel_sums(t, *axis)
        {
            sums.lock().unwrap_or_else(|e| e.into_inner()).insert(b, s);
        }
        let Some(&i) = self.index.get(name) else {
            return Ok(());
        };
        let mut st = self.turn(i, b).ok_or(Outcome::Aborted)?;
        if st.next > b {
            return Ok(()); // already fed by this batch
        }
        let r = st.observer.observe_tensor(t);
        st.observed = true;
        st.next = b + 1;
        drop(st);
        self.slots[i].turn.notify_all();
        r.map_err(Outcome::Failed)
    }

    /// Batch `b` ran to the end: pass the turn on where it fed nothing.
    fn finish(&self, b: usize) -> Result<(), Outcome> {
        for (i, slot) in self.slots.iter().enumerate() {
            let mut st = self.turn(i, b).ok_or(Outcome::Aborted)?;
            if st.next == b {
                st.next = b + 1;
                drop(st);
                slot.turn.notify_all();
            }
        }
        Ok(())
    }

    /// Batch `b` failed: stops the batches after it.
    fn stop(&self, b: usize) {
        self.failed_at.fetch_min(b, Ordering::AcqRel);
        for (i, slot) in self.slots.iter().enumerate() {
            drop(self.lock(i));
            slot.turn.notify_all();
        }
    }

    /// Runs batch `b` (its target inputs observed first) with `run`.
    fn run_batch(
        &self,
        b: usize,
        batch: Batch,
        run: impl FnOnce(Batch, &mut RunHooks) -> Result<(), quench_runtime::RuntimeError>,
    ) -> Outcome {
        for (name, t) in &batch {
            if let Err(o) = self.observe(name, b, t) {
                return o;
            }
        }
        let mut failure: Option<Outcome> = None;
        let mut hook = |name: &str, t: &Tensor| {
            if failure.is_none() {
                failure = self.observe(name, b, t).err();
            }
        };
        let mut hooks = RunHooks {
            on_value: Some(&mut hook),
            ..Default::default()
        };
        let ran = run(batch, &mut hooks);
        if let Some(o) = failure {
            return o;
        }
        if let Err(e) = ran {
            return Outcome::Failed(QuantError::Config(format!(
                "calibration run {}: {e}",
                b + 1
            )));
        }
        match self.finish(b) {
            Ok(()) => Outcome::Done,
            Err(o) => o,
        }
    }
}

/// Observes `targets` (tensor name → how it will be quantized) over `batches`.
///
/// Graph inputs among the targets are observed from the fed batch; all other
/// tensors as the runtime produces them. `progress` is told after each batch.
/// Uses the session's thread count as the number of concurrent batches.
pub fn calibrate(
    session: &Session,
    targets: &[(String, QParamsConfig)],
    means: &[(String, ChannelAxis)],
    method: &CalibrationMethod,
    batches: impl Iterator<Item = Result<Batch, QuantError>>,
    progress: &mut dyn FnMut(usize),
) -> Result<Calibration, QuantError> {
    let mut slots = Vec::with_capacity(targets.len());
    let mut index = HashMap::new();
    for (name, _) in targets {
        if index.contains_key(name) {
            continue;
        }
        index.insert(name.clone(), slots.len());
        slots.push(Slot {
            state: Mutex::new(SlotState {
                observer: method.observer(name)?,
                next: 0,
                observed: false,
            }),
            turn: Condvar::new(),
        });
    }
    let obs = Observers {
        slots,
        index,
        means: means
            .iter()
            .map(|(n, a)| (n.clone(), (*a, Mutex::new(BTreeMap::new()))))
            .collect(),
        failed_at: AtomicUsize::new(usize::MAX),
    };
    let workers = match batches.size_hint() {
        (_, Some(n)) => session.threads().min(n),
        (_, None) => session.threads(),
    }
    .max(1);
    let count = if workers == 1 {
        run_serial(session, &obs, batches, progress)?
    } else {
        run_parallel(session, &obs, workers, batches, progress)?
    };
    if count == 0 {
        return Err(QuantError::Config("no calibration samples".into()));
    }
    // Histogram range choosers (entropy above all) cost more than the runs on
    // small models; they parallelise over tensors and inside, in the session's pool.
    let states: Vec<SlotState> = obs
        .slots
        .into_iter()
        .map(|s| s.state.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    let chosen: Vec<Result<(ObservedRange, QParams), QuantError>> = session.install(|| {
        targets
            .par_iter()
            .map(|(name, cfg)| {
                let st = &states[obs.index[name]];
                if !st.observed {
                    return Err(QuantError::NoData {
                        tensor: name.clone(),
                    });
                }
                let range = st.observer.range()?;
                let qp = range.qparams(cfg)?;
                Ok((range, qp))
            })
            .collect()
    });
    let mut out = Calibration {
        batches: count,
        ..Default::default()
    };
    for (name, (_, sums)) in obs.means {
        let sums = sums.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = channel_means(sums.into_values()) {
            out.means.insert(name, m);
        }
    }
    for ((name, _), r) in targets.iter().zip(chosen) {
        let (range, qp) = r?;
        out.qparams.insert(name.clone(), qp);
        out.ranges.insert(name.clone(), range);
    }
    Ok(out)
}

/// Sums of `t` per channel of `axis`, and the element count per channel.
fn channel_sums(t: &Tensor, axis: ChannelAxis) -> Option<(Vec<f64>, u64)> {
    let data = t.as_slice::<f32>().ok()?;
    let shape = t.shape();
    let a = axis.index(shape.len())?;
    let ch = shape[a];
    let inner: usize = shape[a + 1..].iter().product();
    if ch == 0 || inner == 0 {
        return None;
    }
    let mut sums = vec![0.0f64; ch];
    quench_kernels::stats::add_channel_sums(data, inner, &mut sums);
    Some((sums, (data.len() / ch) as u64))
}

/// Means from per-batch sums (in batch order); `None` if the channel count
/// changed between batches or nothing was seen.
fn channel_means(batches: impl Iterator<Item = (Vec<f64>, u64)>) -> Option<Vec<f64>> {
    let mut total: Option<(Vec<f64>, u64)> = None;
    for (s, n) in batches {
        match &mut total {
            None => total = Some((s, n)),
            Some((t, c)) => {
                if t.len() != s.len() {
                    return None;
                }
                t.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
                *c += n;
            }
        }
    }
    let (t, c) = total?;
    (c > 0).then(|| t.iter().map(|v| v / c as f64).collect())
}

/// One batch at a time, each run using the session's threads.
fn run_serial(
    session: &Session,
    obs: &Observers,
    batches: impl Iterator<Item = Result<Batch, QuantError>>,
    progress: &mut dyn FnMut(usize),
) -> Result<usize, QuantError> {
    let mut count = 0;
    for (b, batch) in batches.enumerate() {
        let outcome = obs.run_batch(b, batch?, |batch, hooks| {
            session.run_with(batch, hooks).map(|_| ())
        });
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(e) => return Err(e),
            Outcome::Aborted => return Err(QuantError::Config("calibration stopped".into())),
        }
        count += 1;
        progress(count);
    }
    Ok(count)
}

/// `workers` threads, each running whole batches single-threaded. Batches are
/// handed out in order through a bounded queue, so at most `2 × workers` are
/// in memory; the first failing batch (in batch order) is the error reported.
fn run_parallel(
    session: &Session,
    obs: &Observers,
    workers: usize,
    batches: impl Iterator<Item = Result<Batch, QuantError>>,
    progress: &mut dyn FnMut(usize),
) -> Result<usize, QuantError> {
    let (job_tx, job_rx) = mpsc::sync_channel::<(usize, Batch)>(workers);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, Outcome)>();
    let ctx = RunCtx { threads: 1 };
    let mut count = 0;
    let mut first_error: Option<(usize, QuantError)> = None;
    let mut handle = |b: usize, o: Outcome, first_error: &mut Option<(usize, QuantError)>| match o {
        Outcome::Done => {
            count += 1;
            progress(count);
        }
        Outcome::Failed(e) => {
            obs.stop(b);
            if first_error.as_ref().is_none_or(|(f, _)| b < *f) {
                *first_error = Some((b, e));
            }
        }
        Outcome::Aborted => {}
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            let ctx = &ctx;
            scope.spawn(move || {
                loop {
                    let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((b, batch)) = job else { break };
                    // A panicking op must not leave the other workers waiting
                    // for a turn that never comes: it fails the batch instead.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        obs.run_batch(b, batch, |batch, hooks| {
                            session.plan().run(ctx, batch, hooks).map(|_| ())
                        })
                    }))
                    .unwrap_or_else(|_| {
                        Outcome::Failed(QuantError::Config(format!(
                            "calibration run {}: the runtime panicked",
                            b + 1
                        )))
                    });
                    if done_tx.send((b, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        for (b, batch) in batches.enumerate() {
            if obs.failed_at.load(Ordering::Acquire) != usize::MAX {
                break;
            }
            match batch {
                Ok(batch) => {
                    if job_tx.send((b, batch)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    handle(b, Outcome::Failed(e), &mut first_error);
                    break;
                }
            }
            while let Ok((b, o)) = done_rx.try_recv() {
                handle(b, o, &mut first_error);
            }
        }
        drop(job_tx);
        for (b, o) in done_rx {
            handle(b, o, &mut first_error);
        }
    });
    match first_error {
        Some((_, e)) => Err(e),
        None => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quench_ir::{DType, Graph, Model, Node, OpsetImport, ValueInfo};

    fn identity_model() -> Model {
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetImport {
                domain: String::new(),
                version: 17,
            }],
            graph: Graph {
                inputs: vec![ValueInfo::tensor("x", DType::F32, None)],
                outputs: vec![ValueInfo::tensor("y", DType::F32, None)],
                nodes: vec![
                    Node::new("Constant", "c", &[], &["k"])
                        .with_attr("value_float", quench_ir::Attr::Float(2.0)),
                ],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn observes_inputs_across_batches_and_rejects_nan() {
        let mut m = identity_model();
        // y is the graph input itself: no op needed.
        m.graph.outputs = vec![ValueInfo::tensor("x", DType::F32, None)];
        let s = Session::new(&m, 1).unwrap();
        let batch = |v: Vec<f32>| {
            Ok(vec![(
                "x".to_string(),
                Tensor::from_vec(vec![v.len()], v).unwrap(),
            )])
        };
        let targets = vec![("x".to_string(), QParamsConfig::activation_u8())];
        let mut seen = 0;
        let c = calibrate(
            &s,
            &targets,
            &[],
            &CalibrationMethod::min_max(),
            vec![batch(vec![-1.0, 2.0]), batch(vec![0.5, 3.0])].into_iter(),
            &mut |n| seen = n,
        )
        .unwrap();
        assert_eq!(seen, 2);
        let r = &c.ranges["x"];
        assert_eq!((r.min[0], r.max[0]), (-1.0, 3.0));
        assert!((c.qparams["x"].scale[0] - 4.0 / 255.0).abs() < 1e-7);
        let err = calibrate(
            &s,
            &targets,
            &[],
            &CalibrationMethod::min_max(),
            vec![batch(vec![f32::NAN])].into_iter(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("'x'"), "{err}");
    }

    fn relu_model() -> Model {
        let mut m = identity_model();
        m.graph.outputs = vec![ValueInfo::tensor("y", DType::F32, None)];
        m.graph.nodes = vec![Node::new("Relu", "relu", &["x"], &["y"])];
        m
    }

    fn varied_batches(n: usize) -> Vec<Result<Batch, QuantError>> {
        let mut s = 0x1234_5678u32;
        (0..n)
            .map(|b| {
                // Later batches reach further, so histograms grow mid-way.
                let v: Vec<f32> = (0..300)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 17;
                        s ^= s << 5;
                        (s as f32 / u32::MAX as f32 - 0.4) * (1.0 + b as f32)
                    })
                    .collect();
                Ok(vec![(
                    "x".to_string(),
                    Tensor::from_vec(vec![300], v).unwrap(),
                )])
            })
            .collect()
    }

    #[test]
    fn parallel_batches_give_the_serial_ranges() {
        let m = relu_model();
        let targets = vec![
            ("x".to_string(), QParamsConfig::activation_u8()),
            ("y".to_string(), QParamsConfig::activation_u8()),
        ];
        for method in [CalibrationMethod::entropy(), CalibrationMethod::min_max()] {
            let run = |threads: usize| {
                let s = Session::new(&m, threads).unwrap();
                let mut last = 0;
                let c = calibrate(
                    &s,
                    &targets,
                    &[],
                    &method,
                    varied_batches(9).into_iter(),
                    &mut |n| last = n,
                )
                .unwrap();
                assert_eq!((c.batches, last), (9, 9));
                c.ranges
            };
            let serial = run(1);
            for threads in [2, 3, 16] {
                assert_eq!(run(threads), serial, "{method:?}, {threads} threads");
            }
        }
    }

    #[test]
    fn parallel_errors_name_the_first_failing_batch() {
        let m = relu_model();
        let s = Session::new(&m, 3).unwrap();
        let targets = vec![("y".to_string(), QParamsConfig::activation_u8())];
        let mut batches = varied_batches(8);
        batches[5] = Ok(vec![(
            "x".to_string(),
            Tensor::from_vec(vec![2], vec![1.0f32, f32::INFINITY]).unwrap(),
        )]);
        batches[6] = Err(QuantError::Config("cannot read sample 61".into()));
        let err = calibrate(
            &s,
            &targets,
            &[],
            &CalibrationMethod::entropy(),
            batches.into_iter(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("'y'") && err.contains("inf"), "{err}");
        let mut batches = varied_batches(8);
        batches[2] = Err(QuantError::Config("cannot read sample 21".into()));
        let err = calibrate(
            &s,
            &targets,
            &[],
            &CalibrationMethod::min_max(),
            batches.into_iter(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sample 21"), "{err}");
    }
}
