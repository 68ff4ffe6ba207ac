//! The one error type of the dataset layer.

/// Everything that can go wrong reading, writing or sampling IBL sessions.
///
/// Every variant names the location it concerns (a URL, plus the row and the
/// field where that applies) so that a user can find the bad byte without a
/// debugger.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset URL could not be understood.
    #[error("{url}: not a dataset location: {reason}")]
    InvalidUrl {
        /// The URL as the user gave it.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The object store refused or failed a request (unreachable, unauthorised, missing object).
    #[error("{url}: storage error: {source}")]
    Store {
        /// The object the request was about.
        url: String,
        /// The store's own error.
        #[source]
        source: object_store::Error,
    },
    /// The file is not readable Parquet (empty, truncated, another format).
    #[error("{url}: not a readable Parquet file: {source}")]
    Parquet {
        /// The file.
        url: String,
        /// The Parquet reader's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A required column is absent.
    #[error("{url}: required column `{column}` is missing")]
    MissingColumn {
        /// The file.
        url: String,
        /// The column's name.
        column: String,
    },
    /// A column has a type we cannot read as the published layout's.
    #[error("{url}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The file.
        url: String,
        /// The column's name.
        column: String,
        /// The type the layout prescribes.
        expected: String,
        /// The type found in the file.
        found: String,
    },
    /// One row's value is inconsistent (bad CSR, wrong shape, wrong length, null where required).
    #[error("{url}: row {row}, field `{field}`: {reason}")]
    InvalidRow {
        /// The file.
        url: String,
        /// The row's index in that file (0-based).
        row: usize,
        /// The column.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Files of one dataset disagree (unit counts, bin counts, session identity).
    #[error("{url}: {reason}")]
    Inconsistent {
        /// The file or session that disagrees with the others.
        url: String,
        /// What disagrees.
        reason: String,
    },
    /// The root holds no session folders (`{eid}_aligned/data/{split}-*.parquet`).
    #[error(
        "{url}: no sessions found (expected folders `{{eid}}_aligned/data/{{train,val,test}}-*.parquet`, or a manifest file listing session folders)"
    )]
    NoSessions {
        /// The dataset root.
        url: String,
    },
    /// A manifest line could not be used.
    #[error("{url}: line {line}: {reason}")]
    Manifest {
        /// The manifest file.
        url: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A sampler or loader setting makes no sense for this dataset.
    #[error("invalid loader setting: {0}")]
    Config(String),
    /// Writing a session failed.
    #[error("{url}: cannot write: {reason}")]
    Write {
        /// The file being written.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
