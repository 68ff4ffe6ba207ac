//! The one error type of the training layer.

use std::path::PathBuf;

/// Everything that can go wrong configuring, training, checkpointing or evaluating.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is malformed or has bad values.
    #[error("{origin}: {message}")]
    Config {
        /// The file (or other source) the configuration came from.
        origin: String,
        /// Every problem found.
        message: String,
    },
    /// The dataset layer failed.
    #[error(transparent)]
    Data(#[from] mtm_dataloader::DataError),
    /// A checkpoint is missing, incomplete or does not fit the model.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The data does not fit the run (unknown session, too few bins, no trials).
    #[error("{0}")]
    Mismatch(String),
    /// A collective between ranks failed (its message names rank, step and sequence).
    #[error(transparent)]
    Collective(#[from] mtm_cluster::CollectiveError),
    /// The loss or the gradients stopped being finite.
    #[error("step {step}: {what} is not finite (lower train.lr or set train.clip_grad_norm)")]
    NonFinite {
        /// The optimizer step.
        step: u64,
        /// Which quantity.
        what: String,
    },
}

/// Results of the training layer.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// An I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}
