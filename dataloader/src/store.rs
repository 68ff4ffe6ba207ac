//! Dataset locations: a URL (or plain path) turned into an object store and a prefix.
//!
//! Supported: plain paths and `file://` (local disk), `s3://` / `s3a://` (AWS or any
//! S3-compatible server; endpoint, region, credentials and `AWS_ALLOW_HTTP` from the
//! standard `AWS_*` environment variables), `gs://` (Google Cloud Storage, `GOOGLE_*`
//! variables), `az://` / `abfs://` (Azure, `AZURE_*` variables), and `memory://NAME`,
//! a process-wide in-memory store for unit tests.
//!
//! Public buckets (BrainWideBench's `s3://brain-wide-bench`) are read without credentials:
//! the buckets named in [`ANONYMOUS_BUCKETS_VAR`] are reached with unsigned requests while
//! every other bucket keeps the caller's credentials, so one run can read a public corpus
//! and write to a private bucket. `AWS_SKIP_SIGNATURE=true` (object_store's own variable)
//! makes every S3 request unsigned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use url::Url;

use crate::error::{DataError, Result};

/// The local folder a dataset URL names (a plain path or `file://`), or `None` for an
/// object store.
pub fn local_path(url: &str) -> Option<std::path::PathBuf> {
    match url.split_once("://") {
        None => Some(url.into()),
        Some(("file", rest)) => Some(rest.into()),
        Some(_) => None,
    }
}

/// The environment variable listing the S3 buckets read anonymously (comma-separated
/// bucket names, e.g. `brain-wide-bench`; `*` for every bucket).
pub const ANONYMOUS_BUCKETS_VAR: &str = "MTM_S3_ANONYMOUS";

/// Whether requests to `bucket` go unsigned, given the value of [`ANONYMOUS_BUCKETS_VAR`].
fn anonymous(bucket: &str, listed: Option<&str>) -> bool {
    listed.is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|b| b == "*" || b == bucket)
    })
}

/// An object store plus the prefix inside it that a URL names.
#[derive(Clone)]
pub struct Location {
    /// The store that holds the objects.
    pub store: Arc<dyn ObjectStore>,
    /// The prefix (folder or object) inside the store.
    pub path: Path,
    /// `scheme://authority` of the store, for naming objects in messages.
    base: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({})", self.url())
    }
}

impl Location {
    /// Parses a dataset URL or a plain local path.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: String| DataError::InvalidUrl {
            url: input.to_string(),
            reason,
        };
        if input.trim().is_empty() {
            return Err(invalid("empty location".into()));
        }
        let url = match Url::parse(input) {
            // A one-letter "scheme" is a Windows drive, and no scheme at all is a path.
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let abs = std::path::absolute(input).map_err(|e| invalid(e.to_string()))?;
                Url::from_file_path(&abs).map_err(|()| invalid("not an absolute path".into()))?
            }
        };
        Self::from_url(&url).map_err(|e| match e {
            DataError::InvalidUrl { reason, .. } => invalid(reason),
            other => other,
        })
    }

    fn from_url(url: &Url) -> Result<Self> {
        let invalid = |reason: String| DataError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let scheme = url.scheme();
        let authority = url.host_str().unwrap_or_default().to_string();
        // object_store paths are percent-decoded, '/'-separated, without leading '/'.
        let decoded = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
        let path = Path::parse(decoded.trim_matches('/')).map_err(|e| invalid(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            "file" => Arc::new(object_store::local::LocalFileSystem::new()),
            "memory" => memory_store(&authority),
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config());
                let listed = std::env::var(ANONYMOUS_BUCKETS_VAR).ok();
                if anonymous(&authority, listed.as_deref()) {
                    // Unsigned requests; object_store then never looks for credentials
                    // (nor asks an instance-metadata service).
                    builder = builder.with_skip_signature(true);
                }
                Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" | "adl" | "azure" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            other => {
                return Err(invalid(format!(
                    "unsupported scheme `{other}` (use a path, file://, s3://, gs://, az:// or memory://)"
                )));
            }
        };
        let base = if scheme == "file" {
            "file://".to_string()
        } else {
            format!("{scheme}://{authority}")
        };
        Ok(Self { store, path, base })
    }

    /// The same store at another path.
    pub fn with_path(&self, path: Path) -> Self {
        Self {
            store: Arc::clone(&self.store),
            path,
            base: self.base.clone(),
        }
    }

    /// A child of this location (`name` may contain `/`).
    pub fn join(&self, name: &str) -> Self {
        let mut path = self.path.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        self.with_path(path)
    }

    /// The parent folder of this location (the root stays the root).
    pub fn parent(&self) -> Self {
        let parts: Vec<_> = self.path.parts().collect();
        let parent = match parts.split_last() {
            Some((_, rest)) => Path::from_iter(rest.iter().cloned()),
            None => Path::default(),
        };
        self.with_path(parent)
    }

    /// The whole object at this location (a manifest, a list); a missing object is a
    /// [`DataError::Store`] whose source is `NotFound`.
    pub async fn read(&self) -> Result<bytes::Bytes> {
        use object_store::ObjectStoreExt;
        let store_err = |source| DataError::Store {
            url: self.url(),
            source,
        };
        self.store
            .get(&self.path)
            .await
            .map_err(store_err)?
            .bytes()
            .await
            .map_err(store_err)
    }

    /// The full URL of this location, for messages and manifests.
    pub fn url(&self) -> String {
        self.url_of(&self.path)
    }

    /// The full URL of another object in the same store.
    pub fn url_of(&self, path: &Path) -> String {
        if self.base == "file://" {
            format!("file:///{path}")
        } else {
            format!("{}/{path}", self.base)
        }
    }

    /// The last path segment (a file or folder name).
    pub fn name(&self) -> String {
        self.path.filename().unwrap_or_default().to_string()
    }
}

/// Bounded retries, so that an unreachable store fails in seconds rather than minutes.
/// A single-threaded runtime for the object-store calls of synchronous code (listing a
/// folder, reading a list, one job's fetches).
pub fn io_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

/// Named in-memory stores shared by everything in this process: a writer and a reader
/// given the same `memory://NAME` see the same objects.
fn memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_plain_paths_and_file_urls() {
        assert_eq!(local_path("data/x"), Some("data/x".into()));
        assert_eq!(local_path("file:///tmp/x"), Some("/tmp/x".into()));
        assert_eq!(local_path("s3://bucket/x"), None);
    }

    #[test]
    fn anonymous_buckets_are_named_exactly() {
        assert!(!anonymous("brain-wide-bench", None));
        assert!(anonymous("brain-wide-bench", Some("brain-wide-bench")));
        assert!(anonymous("b", Some("a, b")));
        assert!(anonymous("mine", Some("*")));
        assert!(!anonymous(
            "brain-wide-bench-copy",
            Some("brain-wide-bench")
        ));
        assert!(!anonymous("mine", Some("")));
    }

    #[test]
    fn plain_path_becomes_file_url() {
        let loc = Location::parse("/tmp/some dir/x_aligned").unwrap();
        assert_eq!(loc.url(), "file:///tmp/some dir/x_aligned");
        assert_eq!(loc.name(), "x_aligned");
        assert_eq!(loc.parent().url(), "file:///tmp/some dir");
    }

    #[test]
    fn relative_path_is_made_absolute() {
        let loc = Location::parse("rel/data").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert!(loc.url().ends_with("rel/data"));
        assert!(
            loc.url()
                .contains(cwd.file_name().unwrap().to_str().unwrap())
        );
    }

    #[test]
    fn s3_url_keeps_bucket_and_prefix() {
        let loc = Location::parse("s3://bucket/a/b").unwrap();
        assert_eq!(loc.url(), "s3://bucket/a/b");
        assert_eq!(loc.join("c/d.parquet").url(), "s3://bucket/a/b/c/d.parquet");
    }

    #[test]
    fn unknown_scheme_is_rejected_with_the_url() {
        let err = Location::parse("ftp://host/x").unwrap_err().to_string();
        assert!(
            err.contains("ftp://host/x") && err.contains("unsupported scheme"),
            "{err}"
        );
    }

    #[test]
    fn memory_stores_are_shared_by_name() {
        let a = Location::parse("memory://shared-test/x").unwrap();
        let b = Location::parse("memory://shared-test/y").unwrap();
        assert!(Arc::ptr_eq(&a.store, &b.store));
        let c = Location::parse("memory://other-test/x").unwrap();
        assert!(!Arc::ptr_eq(&a.store, &c.store));
    }
}
