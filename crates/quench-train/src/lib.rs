//! Training for Quench: reverse-mode differentiation over IR graphs, losses,
//! optimizers and schedules, a data pipeline, a model zoo and checkpoints.
//!
//! Crate map: `op` (the backward-rule contract) ← `ops` (one family per file)
//! ← `engine` (tape over a graph) ← `trainer` (loop, optimizer, checkpoints).

pub mod engine;
pub mod error;
pub mod op;
pub mod ops;
pub mod rng;

#[cfg(test)]
pub(crate) mod gradcheck;

pub use engine::{Engine, Tape, Weights};
pub use error::{Result, TrainError};
pub mod checkpoint;
pub mod data;
pub mod loss;
pub mod optim;
pub mod trainer;
pub mod zoo;

pub use trainer::{Config, EpochLog, Event, Trainer};
