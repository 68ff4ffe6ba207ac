//! The training layer of mtm (spec §2-§5).
//!
//! Landed so far: the masking schemes ([`masking`]) and the activity metrics
//! ([`metrics`]). The NDT1 model, the training loop and the evaluation come next.

pub mod masking;
pub mod metrics;
