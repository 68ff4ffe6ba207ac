//! The training layer of mtm (spec §2-§5).
//!
//! Landed so far: the masking schemes ([`masking`]), the activity metrics ([`metrics`]) and
//! the NDT1 model with its masked Poisson loss ([`model`]). The training loop, checkpoints
//! and the evaluation come next.

pub mod masking;
pub mod metrics;
pub mod model;
