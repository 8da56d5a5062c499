//! `quench train`: train a zoo model or an imported ONNX model on labelled
//! images, with checkpoints, resume, a progress bar and a JSON log.

use anyhow::{Context, Result, bail};
use quench_train::data::{Augment, Dataset};
use quench_train::optim::{OptKind, Schedule};
use quench_train::{Config, Event, Trainer, zoo};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Zoo model to build: mlp, lenet, resnet8, resnet18, mobilenetv2, lstm.
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    zoo: Option<String>,
    /// Channel width multiplier of the zoo model.
    #[arg(long, default_value_t = 1.0)]
    width: f32,
    /// ONNX model to fine-tune (e.g. exported by PyTorch; BatchNormalization trains with batch statistics).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training data: .npz (input, label), .csv[.gz] (pixels then label), IDX images file, or a folder of class folders.
    #[arg(long)]
    data: PathBuf,
    /// Validation data (same forms), or `split:N` to hold out the last N samples of each class of --data.
    #[arg(long)]
    val: String,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// sgd or adamw.
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Nesterov momentum for SGD.
    #[arg(long)]
    nesterov: bool,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f32,
    /// constant, step[:EPOCHS,GAMMA], cosine, onecycle[:PCT_START].
    #[arg(long, default_value = "onecycle")]
    schedule: String,
    /// Linear warm-up over this many steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    clip: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Pad images (centred) to SIZE x SIZE before training and evaluation.
    #[arg(long)]
    input_size: Option<usize>,
    /// Random crop after padding by this many pixels (0: off). Default 2, but 0
    /// for the row LSTM, which reads the rows as a sequence.
    #[arg(long)]
    crop_pad: Option<usize>,
    /// Random horizontal flips (not for digits).
    #[arg(long)]
    hflip: bool,
    /// Normalisation: auto (train-set mean/std when data is in [0, 1]), none, or MEAN,STD.
    #[arg(long, default_value = "auto")]
    norm: String,
    /// The trained model.
    #[arg(short, long)]
    output: PathBuf,
    /// Where to write checkpoint.safetensors (after each epoch and every --checkpoint-every steps).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Continue from the checkpoint in --checkpoint-dir.
    #[arg(long, requires = "checkpoint_dir")]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Per-epoch metrics as JSON.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Stop after this many steps in total.
    #[arg(long, hide = true)]
    max_steps: Option<usize>,
}

fn load_data(a: &Args) -> Result<(Dataset, Dataset)> {
    let ds = Dataset::open(&a.data).with_context(|| format!("cannot load {}", a.data.display()))?;
    Ok(match a.val.strip_prefix("split:") {
        Some(n) => {
            let n: usize = n.parse().with_context(|| format!("bad --val {}", a.val))?;
            let (tr, va) = ds.split_per_class(n);
            if tr.is_empty() || va.is_empty() {
                bail!("--val {}: the split leaves an empty set", a.val);
            }
            (tr, va)
        }
        None => {
            let v = PathBuf::from(&a.val);
            (
                ds,
                Dataset::open(&v).with_context(|| format!("cannot load {}", v.display()))?,
            )
        }
    })
}

pub fn run(a: Args) -> Result<()> {
    if super::same_path(&a.data, &a.output)
        || a.model
            .as_deref()
            .is_some_and(|m| super::same_path(m, &a.output))
    {
        bail!("-o {} would overwrite an input", a.output.display());
    }
    let crop_pad = a.crop_pad.unwrap_or(if a.zoo.as_deref() == Some("lstm") {
        0
    } else {
        2
    });
    let (mut train, mut val) = load_data(&a)?;
    if train.chw != val.chw {
        bail!(
            "train images are {:?}, validation images {:?}",
            train.chw,
            val.chw
        );
    }
    let c = train.chw[0];
    let in_unit = train.images.iter().all(|&v| (0.0..=1.0).contains(&v));
    let (mean, std): (Vec<f32>, Vec<f32>) = match a.norm.as_str() {
        "none" => (vec![0.0; c], vec![1.0; c]),
        "auto" if !in_unit => (vec![0.0; c], vec![1.0; c]),
        "auto" => train.stats(),
        s => {
            let v: Vec<f32> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .with_context(|| format!("bad --norm {s}"))?;
            match v.as_slice() {
                [m, s] => (vec![*m; c], vec![*s; c]),
                _ => bail!("--norm takes auto, none or MEAN,STD"),
            }
        }
    };
    train.normalize(&mean, &std)?;
    // Under auto, a validation set that is already normalised (float .npz
    // outside [0, 1]) is left as it is.
    let val_in_unit = val.images.iter().all(|&v| (0.0..=1.0).contains(&v));
    if a.norm != "auto" || val_in_unit {
        val.normalize(&mean, &std)?;
    }
    // The value of a black pixel, for padding and crops.
    let fill: Vec<f32> = if a.norm == "none" || (a.norm == "auto" && !in_unit) {
        vec![train.images.iter().copied().fold(f32::INFINITY, f32::min); c]
    } else {
        mean.iter().zip(&std).map(|(m, s)| -m / s).collect()
    };
    if let Some(s) = a.input_size {
        train.pad_to(s, &fill)?;
        val.pad_to(s, &fill)?;
    }
    let classes = train.classes().max(val.classes());
    let (model, name) = match (&a.zoo, &a.model) {
        (Some(z), _) => (
            zoo::build(z, train.chw, classes, a.width, a.seed)?,
            z.clone(),
        ),
        (None, Some(p)) => (super::load_model(p)?, p.display().to_string()),
        (None, None) => bail!("give --zoo NAME or --model MODEL.onnx"),
    };
    let optimizer = match a.optimizer.as_str() {
        "sgd" => OptKind::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        },
        "adamw" => OptKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        o => bail!("unknown --optimizer {o} (sgd or adamw)"),
    };
    let threads = if a.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        a.threads
    };
    let cfg = Config {
        epochs: a.epochs,
        batch: a.batch.max(1),
        lr: a.lr,
        optimizer,
        weight_decay: a.weight_decay,
        schedule: Schedule::parse(&a.schedule)?,
        warmup_steps: a.warmup,
        clip: a.clip,
        label_smoothing: a.label_smoothing,
        seed: a.seed,
        threads,
        augment: Augment {
            crop_pad,
            hflip: a.hflip,
            fill,
        },
        checkpoint_dir: a.checkpoint_dir.clone(),
        checkpoint_every: a.checkpoint_every,
        max_steps: a.max_steps,
    };
    let mut t = Trainer::new(model, cfg)?;
    if a.resume {
        let dir = a
            .checkpoint_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("."));
        if quench_train::checkpoint::load(&mut t, dir)? {
            eprintln!(
                "resuming at epoch {}, batch {} (step {})",
                t.epoch + 1,
                t.batch,
                t.step
            );
        } else {
            eprintln!("no checkpoint in {}: starting afresh", dir.display());
        }
    }
    eprintln!(
        "training {name}: {} parameters, {} train / {} val images {:?}, {threads} threads",
        t.parameters(),
        train.len(),
        val.len(),
        train.chw
    );
    if let Some(note) = t.input_adaptation(train.chw)? {
        eprintln!("{note}");
    }
    let initial = if a.model.is_some() && t.step == 0 {
        let (l, acc) = t.evaluate(&val)?;
        eprintln!("before training: val loss {l:.4} acc {:.2}%", acc * 100.0);
        Some(json!({ "val_loss": l, "val_acc": acc }))
    } else {
        None
    };
    let per_epoch = train.len().div_ceil(a.batch.max(1)) as u64;
    let style =
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mut bar: Option<indicatif::ProgressBar> = None;
    let config = json!({
        "model": name, "width": a.width, "epochs": a.epochs, "batch": a.batch, "lr": a.lr,
        "optimizer": a.optimizer, "weight_decay": a.weight_decay, "schedule": a.schedule,
        "seed": a.seed, "threads": threads, "input_size": a.input_size, "crop_pad": crop_pad,
        "train_images": train.len(), "val_images": val.len(), "norm_mean": mean, "norm_std": std,
    });
    let params = t.parameters();
    let log_path = a.log.clone();
    let write_log = |history: &[quench_train::EpochLog]| -> Result<()> {
        if let Some(p) = &log_path {
            let v = json!({ "config": config, "parameters": params, "initial": initial, "epochs": history });
            quench_ir::fs::write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes())
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        Ok(())
    };
    let mut history = t.history.clone();
    let mut log_err = None;
    let train = Arc::new(train);
    t.fit(train, &val, &mut |e| match e {
        Event::Step {
            epoch,
            batch,
            loss,
            acc,
            images_per_s,
            ..
        } => {
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(per_epoch).with_style(style.clone());
                b.set_prefix(format!("{}/{}", epoch + 1, a.epochs));
                b
            });
            b.set_position(batch as u64);
            b.set_message(format!("loss {loss:.4} acc {:.2}% {images_per_s:.0} img/s", acc * 100.0));
        }
        Event::Epoch(l) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!(
                "epoch {}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} acc {:.2}% | {:.1} s, {:.0} img/s",
                l.epoch,
                a.epochs,
                l.train_loss,
                l.train_acc * 100.0,
                l.val_loss,
                l.val_acc * 100.0,
                l.seconds,
                l.images_per_s
            );
            history.push(l.clone());
            if let Err(e) = write_log(&history) {
                log_err = Some(e);
            }
        }
        Event::Checkpoint(_) => {}
    })?;
    if let Some(e) = log_err {
        return Err(e);
    }
    let m = t.export();
    quench_onnx::save_model(&m, &a.output)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!("wrote {}", a.output.display());
    Ok(())
}
