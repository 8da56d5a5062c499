//! Checkpoints: one safetensors file with the weights (and running
//! statistics), the optimizer state, and the position in the run (epoch,
//! batch, step, partial epoch sums, history) as metadata. Written atomically
//! (temp file + rename), so a kill never leaves a torn file.

use crate::trainer::{EpochSums, Trainer};
use crate::{Result, TrainError, invalid};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FILE: &str = "checkpoint.safetensors";

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn st_err(e: safetensors::SafeTensorError) -> TrainError {
    TrainError::Invalid(format!("checkpoint: {e}"))
}

/// Writes `dir/checkpoint.safetensors`; returns its path.
pub fn save(t: &Trainer, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, w) in &t.weights {
        if let Ok(v) = w.as_slice::<f32>() {
            owned.push((format!("w/{name}"), w.shape().to_vec(), bytes(v)));
        }
    }
    for (name, slots) in &t.opt.state {
        for (i, s) in slots.iter().enumerate() {
            owned.push((format!("o/{i}/{name}"), vec![s.len()], bytes(s)));
        }
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).map_err(st_err)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let json = |v: std::result::Result<String, serde_json::Error>| v.unwrap_or_default();
    let mut meta = HashMap::new();
    meta.insert("format".into(), "quench-train/1".into());
    meta.insert("epoch".into(), t.epoch.to_string());
    meta.insert("batch".into(), t.batch.to_string());
    meta.insert("step".into(), t.step.to_string());
    meta.insert("opt_steps".into(), t.opt.steps.to_string());
    meta.insert("seed".into(), t.cfg.seed.to_string());
    meta.insert("sums".into(), json(serde_json::to_string(&t.sums)));
    meta.insert("history".into(), json(serde_json::to_string(&t.history)));
    let buf = safetensors::serialize(views, Some(meta)).map_err(st_err)?;
    let path = dir.join(FILE);
    quench_ir::fs::write_atomic(&path, &buf).map_err(|e| TrainError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    Ok(path)
}

/// Removes the temp files (`.checkpoint.safetensors.tmp<pid>`) of runs that
/// were killed while writing a checkpoint: the checkpoint itself is whole
/// (the rename never happened), the temp is garbage.
fn remove_stale_temps(dir: &Path) {
    let prefix = format!(".{FILE}.tmp");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(&prefix).unwrap_or("");
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && pid != std::process::id().to_string()
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Restores `dir/checkpoint.safetensors` into `t`; false when there is none.
pub fn load(t: &mut Trainer, dir: &Path) -> Result<bool> {
    remove_stale_temps(dir);
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(false);
    }
    let buf = std::fs::read(&path).map_err(|e| TrainError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let bad = |m: String| TrainError::Invalid(format!("{}: {m}", path.display()));
    let (_, md) = SafeTensors::read_metadata(&buf).map_err(st_err)?;
    let meta = md.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("no '{k}' in the metadata")))
    };
    let num = |k: &str| -> Result<u64> { get(k)?.parse().map_err(|_| bad(format!("bad '{k}'"))) };
    if get("format")? != "quench-train/1" {
        invalid!("{}: not a quench-train checkpoint", path.display());
    }
    if num("seed")? != t.cfg.seed {
        invalid!(
            "{}: written with --seed {}, this run has {}",
            path.display(),
            num("seed")?,
            t.cfg.seed
        );
    }
    let st = SafeTensors::deserialize(&buf).map_err(st_err)?;
    let floats = |v: &TensorView| -> Vec<f32> {
        v.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    for name in t.weights.keys().cloned().collect::<Vec<_>>() {
        let Ok(v) = st.tensor(&format!("w/{name}")) else {
            if t.weights[&name].dtype() == quench_ir::DType::F32 {
                return Err(bad(format!(
                    "no weight '{name}' (a checkpoint of another model?)"
                )));
            }
            continue;
        };
        if v.shape() != t.weights[&name].shape() {
            return Err(bad(format!(
                "weight '{name}' has shape {:?}, the model {:?}",
                v.shape(),
                t.weights[&name].shape()
            )));
        }
        let tensor = quench_ir::Tensor::from_vec(v.shape().to_vec(), floats(&v))?;
        t.weights.insert(name, Arc::new(tensor));
    }
    t.opt.state.clear();
    let mut slots: Vec<(String, usize, Vec<f32>)> = Vec::new();
    for (n, v) in st.tensors() {
        if let Some(rest) = n.strip_prefix("o/")
            && let Some((i, name)) = rest.split_once('/')
        {
            let i: usize = i
                .parse()
                .map_err(|_| bad(format!("bad tensor name '{n}'")))?;
            slots.push((name.to_string(), i, floats(&v)));
        }
    }
    slots.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    for (name, i, v) in slots {
        let e = t.opt.state.entry(name).or_default();
        if e.len() != i {
            return Err(bad("optimizer slots out of order".into()));
        }
        e.push(v);
    }
    // Keep the trainer's parameter order for the state map.
    let order: Vec<String> = t.trainable.clone();
    t.opt.state.sort_by(|a, _, b, _| {
        order
            .iter()
            .position(|x| x == a)
            .cmp(&order.iter().position(|x| x == b))
    });
    t.epoch = num("epoch")? as usize;
    t.batch = num("batch")? as usize;
    t.step = num("step")? as usize;
    t.opt.steps = num("opt_steps")?;
    t.sums = serde_json::from_str::<EpochSums>(&get("sums")?).map_err(|e| bad(e.to_string()))?;
    t.history = serde_json::from_str(&get("history")?).map_err(|e| bad(e.to_string()))?;
    Ok(true)
}
