//! Shared helpers for the end-to-end tests: the data cache and the `quench` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The cache filled by `scripts/test.sh` (models, inputs, ORT references, venv).
///
/// Without it the interop tests cannot run: under `CI=true` that is a failure,
/// elsewhere the test says so and returns.
pub fn cache_dir(need: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("QUENCH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quench")))?;
    if dir.join(need).exists() {
        return Some(dir);
    }
    let msg = format!(
        "{} is missing: run scripts/test.sh (it fetches models and builds references)",
        dir.join(need).display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

pub fn quench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(args)
        .output()
        .expect("cannot start quench")
}

pub fn python(cache: &std::path::Path) -> PathBuf {
    cache.join("venv/bin/python")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quench-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
