//! The training layer of mtm: the NDT1 model, the masking schemes, the training loop and the
//! evaluation of spec §2-§5 land in this crate.
//!
//! It is empty on purpose until then: the workspace's shape (and `ARCHITECTURE.md`) is fixed
//! first so that the dataset layer can be built and tested against it.
