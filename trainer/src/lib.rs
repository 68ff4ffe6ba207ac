//! The training layer of mtm (spec §2-§5): masking schemes ([`masking`]), the NDT1 model
//! ([`model`], its bulk-drawn [`dropout`]), the run configuration ([`config`]) resolved
//! into a plan ([`plan`]), the data a run reads ([`data`]), the training loop ([`train`]) with its optimizer
//! ([`optim`]), schedule ([`schedule`]), flat gradient buffer ([`grads`]), per-step
//! agreement between ranks ([`sync`]), validation ([`validation`]) and metrics log
//! ([`metrics_log`]); checkpoints ([`checkpoint`]), tensor I/O ([`weights`]) and models on
//! disk in any form ([`artifact`]); the activity metrics ([`metrics`]), the evaluation
//! ([`eval`], [`heldout`], [`decode`]) with its smoothing + GLM baseline ([`baseline`], kept between runs by
//! [`baseline_cache`]) and
//! typed report ([`report`]); fine-tuning on held-out sessions ([`finetune`]), the portable
//! export ([`export`]) and pictures ([`plots`], [`figures`]).

pub mod artifact;
pub mod baseline;
pub mod baseline_cache;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
mod cuda_memory;
pub mod data;
pub mod decode;
pub mod dropout;
pub mod error;
pub mod eval;
pub mod export;
pub mod figures;
pub mod finetune;
pub mod grads;
pub mod heldout;
pub mod masking;
pub mod metrics;
pub mod metrics_log;
pub mod model;
pub mod optim;
pub mod placement;
pub mod plan;
pub mod plots;
pub mod report;
pub mod schedule;
pub mod sync;
pub mod train;
pub mod ts2;
pub mod validation;
pub mod weights;

pub use error::{Result, TrainError};
