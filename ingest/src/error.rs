//! Errors of the ingestion.

use std::path::PathBuf;

/// What can go wrong turning ALF or BrainWideBench files into a dataset. Every variant
/// names the file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A file the session needs is absent.
    #[error("{path}: missing", path = path.display())]
    MissingFile {
        /// The file (or pattern) that was looked for.
        path: PathBuf,
    },
    /// A file could not be read or has the wrong form.
    #[error("{path}: {reason}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Arrays that must have equal lengths do not.
    #[error("{path}: {what}", path = path.display())]
    Mismatch {
        /// The file whose content disagrees with another.
        path: PathBuf,
        /// What disagrees.
        what: String,
    },
    /// The session folder does not say which session it is.
    #[error("{path}: {reason}", path = path.display())]
    Identity {
        /// The session folder.
        path: PathBuf,
        /// Why the eid could not be found.
        reason: String,
    },
    /// No trial passed the filter.
    #[error("{path}: no usable trial ({counts})", path = path.display())]
    NoTrials {
        /// The session folder.
        path: PathBuf,
        /// How many trials each rule removed.
        counts: String,
    },
    /// A written session could not be moved into place (or its staging folder removed).
    #[error("{path}: {source}", path = path.display())]
    Place {
        /// The folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A source in an object store could not be listed or fetched.
    #[error("{url}: {reason}")]
    Fetch {
        /// The object or folder.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A source folder holds no session file.
    #[error("{url}: no session files (looked for *.h5 in {looked})")]
    NoSessions {
        /// The folder given.
        url: String,
        /// The places looked in.
        looked: String,
    },
    /// Writing the dataset failed.
    #[error(transparent)]
    Write(#[from] mtm_dataloader::DataError),
}

/// Shorthand for results of this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
