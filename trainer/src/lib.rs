//! The training layer of mtm (spec §2-§5): masking schemes ([`masking`]), the NDT1 model
//! ([`model`]), the run configuration ([`config`]), the training loop ([`train`]) with its
//! schedule ([`schedule`]) and flat gradient buffer ([`grads`]), checkpoints
//! ([`checkpoint`]), the activity metrics ([`metrics`]), the evaluation ([`eval`],
//! [`heldout`], [`decode`]) with its smoothing + GLM baseline ([`baseline`]), fine-tuning on held-out sessions ([`finetune`]) and the portable export
//! ([`export`]).

pub mod baseline;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod error;
pub mod eval;
pub mod export;
pub mod figures;
pub mod finetune;
pub mod grads;
pub mod heldout;
pub mod masking;
pub mod metrics;
pub mod model;
pub mod plots;
pub mod schedule;
pub mod sync;
pub mod train;

pub use error::{Result, TrainError};
