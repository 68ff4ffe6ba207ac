//! The dataset layer of mtm.
//!
//! Reads IBL sessions in the layout the MtM authors published (spec §1.1: one Parquet row
//! per trial, spikes as CSR) from local disk or object storage, decodes batches of one
//! session into dense `(B, T, N)` counts (from a compact side-car where one was written), plans and shards batches over ranks, prefetches
//! them on worker threads, writes the same layout, and generates synthetic IBL-like
//! sessions.
//!
//! This crate never calls a collective: rank and world size are plain numbers given to the
//! [`Sampler`].

pub mod dataset;
mod dynamics;
pub mod error;
pub mod inspect;
pub mod loader;
mod reader;
pub mod sampler;
pub mod schema;
pub mod select;
pub mod session;
pub mod sidecar;
pub mod store;
pub mod streams;
pub mod synth;
pub mod writer;

pub use dataset::{Batch, Dataset, OpenOptions};
pub use error::{DataError, Result};
pub use loader::{Loader, PrefetchConfig};
pub use sampler::{BatchPlan, Sampler, SamplerState};
pub use select::SessionSelect;
pub use session::{Behaviour, BehaviourValues, GroupSource, Session, Split};
pub use store::Location;
pub use synth::{Dynamics, SynthConfig};
pub use writer::{SessionInfo, TrialRecord, WriteOptions};
