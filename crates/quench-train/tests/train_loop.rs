//! End-to-end training on the bundled digits set: the loss falls, and a run
//! interrupted and resumed from its checkpoint ends bit-identical to an
//! uninterrupted one.

use quench_train::data::Dataset;
use quench_train::optim::{OptKind, Schedule};
use quench_train::{Config, Trainer, zoo};
use std::path::PathBuf;
use std::sync::Arc;

fn digits() -> (Arc<Dataset>, Dataset) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/digits/digits.csv.gz");
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.chw, [1, 8, 8]);
    let (mut tr, mut te) = ds.split_per_class(30);
    let (m, s) = tr.stats();
    tr.normalize(&m, &s).unwrap();
    te.normalize(&m, &s).unwrap();
    (Arc::new(tr), te)
}

fn cfg(dir: Option<PathBuf>) -> Config {
    Config {
        epochs: 2,
        batch: 32,
        lr: 0.05,
        optimizer: OptKind::Sgd {
            momentum: 0.9,
            nesterov: true,
        },
        weight_decay: 1e-4,
        schedule: Schedule::Cosine,
        seed: 3,
        threads: 2,
        checkpoint_dir: dir,
        ..Config::default()
    }
}

#[test]
fn lenet_learns_digits() {
    let (tr, te) = digits();
    let m = zoo::build("lenet", [1, 8, 8], 10, 0.5, 3).unwrap();
    let mut t = Trainer::new(m, cfg(None)).unwrap();
    let (l0, _) = t.evaluate(&te).unwrap();
    t.fit(tr, &te, &mut |_| {}).unwrap();
    let last = t.history.last().unwrap();
    assert!(last.val_loss < l0 * 0.5, "{l0} -> {}", last.val_loss);
    assert!(last.val_acc > 0.85, "{}", last.val_acc);
}

#[test]
fn resume_after_interruption_is_exact() {
    let (tr, te) = digits();
    let dir = std::env::temp_dir().join(format!("qt-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = || zoo::build("resnet8", [1, 8, 8], 10, 0.25, 5).unwrap();

    let mut a = Trainer::new(model(), cfg(None)).unwrap();
    a.fit(tr.clone(), &te, &mut |_| {}).unwrap();

    let mut c = cfg(Some(dir.clone()));
    c.checkpoint_every = 4;
    c.max_steps = Some(63); // killed mid-epoch 2; last checkpoint at step 60
    let mut b = Trainer::new(model(), c).unwrap();
    b.fit(tr.clone(), &te, &mut |_| {}).unwrap();
    assert_eq!(b.step, 63);

    let mut r = Trainer::new(model(), cfg(Some(dir.clone()))).unwrap();
    assert!(quench_train::checkpoint::load(&mut r, &dir).unwrap());
    assert_eq!(r.step, 60);
    r.fit(tr, &te, &mut |_| {}).unwrap();
    let metrics = |h: &[quench_train::EpochLog]| -> Vec<_> {
        h.iter()
            .map(|e| {
                (
                    e.epoch,
                    e.train_loss,
                    e.train_acc,
                    e.val_loss,
                    e.val_acc,
                    e.lr,
                )
            })
            .collect()
    };
    assert_eq!(metrics(&r.history), metrics(&a.history));
    for (k, w) in &a.weights {
        assert_eq!(w, &r.weights[k], "{k}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
