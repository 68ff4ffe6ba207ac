//! Scaling sweeps (how a model improves with the number of pretraining sessions): the
//! sweep configuration and its grid of cells with derived budgets ([`grid`]), the results
//! table in CSV and Parquet ([`results`]), seeds aggregated ([`summary`]), power-law
//! fits with bootstrap intervals ([`fit`]), the plots ([`plot`]) and the report that ties
//! them together ([`report`]). Running a cell (pretrain, fine-tune, evaluate) is
//! the binary's job: it starts `mtm train` and `mtm finetune` for each.

pub mod checks;
pub mod fit;
pub mod grid;
pub mod plot;
pub mod report;
pub mod results;
pub mod summary;

/// Everything that can go wrong in a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The sweep configuration is malformed.
    #[error("{origin}: {message}")]
    Config {
        /// The file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A cell's run configuration is invalid.
    #[error(transparent)]
    Train(#[from] mtm_trainer::TrainError),
    /// Writing the results table or a plot failed.
    #[error("{what}: {message}")]
    Output {
        /// Which output.
        what: String,
        /// The library's message.
        message: String,
    },
}

/// Results of this crate.
pub type Result<T, E = SweepError> = std::result::Result<T, E>;

/// An I/O error at `path`.
pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io {
        path: path.to_path_buf(),
        source,
    }
}
