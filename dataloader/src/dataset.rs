//! A dataset: every session under a root, with a runtime for storage I/O and a cache of
//! decoded row groups.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use lru::LruCache;
use object_store::ObjectStoreExt;

use crate::error::{DataError, Result};
use crate::session::{self, BehaviourValues, DecodedGroup, GroupSource, Session, Split};
use crate::store::Location;

/// Options for opening a dataset.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Threads of the runtime that performs storage I/O.
    pub io_threads: usize,
    /// Byte budget of the decoded row-group cache (0 disables caching).
    pub cache_bytes: usize,
    /// How many sessions' metadata to read at once.
    pub concurrency: usize,
    /// Read row groups from the compact side-cars where they exist (the Parquet files
    /// otherwise); `false` reads the Parquet files always (benchmarks compare the two).
    pub sidecars: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            io_threads: 2,
            cache_bytes: 2 << 30,
            concurrency: 16,
            sidecars: true,
        }
    }
}

/// Sessions of a dataset, opened and checked.
pub struct Dataset {
    /// The URL the dataset was opened from.
    pub root: String,
    /// The sessions, ordered by eid.
    pub sessions: Vec<Arc<Session>>,
    runtime: tokio::runtime::Runtime,
    cache: GroupCache,
    source: GroupSource,
    /// Spike buffers handed back by consumers, reused so that a batch does not page-fault
    /// megabytes of fresh memory.
    buffers: Mutex<Vec<Vec<f32>>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("root", &self.root)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// B trials of one session, decoded to dense arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Index of the session in [`Dataset::sessions`].
    pub session: usize,
    /// The split the trials come from.
    pub split: Split,
    /// Row index of each trial within its split.
    pub trials: Vec<u32>,
    /// Time bins T.
    pub n_bins: usize,
    /// Units N.
    pub n_units: usize,
    /// Spike counts, `(B, T, N)` row-major.
    pub spikes: Vec<f32>,
    /// Behaviour of the columns the session has: per trial (choice -1/+1, reward 0/1,
    /// block prior), or `(B, T)` (whisker motion energy, wheel speed); NaN where missing.
    pub behaviour: BehaviourValues,
}

impl Batch {
    /// Number of trials B.
    pub fn len(&self) -> usize {
        self.trials.len()
    }

    /// True for a batch of no trials.
    pub fn is_empty(&self) -> bool {
        self.trials.is_empty()
    }
}

type GroupKey = (u32, Split, u32, u32);

/// Decoded row groups under a byte budget, least recently used evicted first.
struct GroupCache {
    budget: usize,
    inner: Mutex<(LruCache<GroupKey, Arc<DecodedGroup>>, usize)>,
}

impl GroupCache {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::new((LruCache::unbounded(), 0)),
        }
    }

    fn get(&self, key: &GroupKey) -> Option<Arc<DecodedGroup>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.get(key).cloned()
    }

    fn put(&self, key: GroupKey, group: Arc<DecodedGroup>) {
        let size = group.heap_bytes();
        if size > self.budget {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (lru, bytes) = &mut *inner;
        if let Some(old) = lru.put(key, group) {
            *bytes -= old.heap_bytes();
        }
        *bytes += size;
        while *bytes > self.budget {
            match lru.pop_lru() {
                Some((_, old)) => *bytes -= old.heap_bytes(),
                None => break,
            }
        }
    }

    fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0.clear();
        inner.1 = 0;
    }
}

impl Dataset {
    /// Opens every session under `url` (a folder, or a manifest file) with default options.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &OpenOptions::default())
    }

    /// Opens every session under `url`, failing on the first problem found.
    pub fn open_with(url: &str, options: &OpenOptions) -> Result<Self> {
        let runtime = build_runtime(options.io_threads)?;
        let root = Location::parse(url)?;
        let sessions = runtime.block_on(async {
            let sources = session::discover(&root).await?;
            futures::stream::iter(sources)
                .map(session::open_session)
                .buffered(options.concurrency.max(1))
                .try_collect::<Vec<_>>()
                .await
        })?;
        Self::from_sessions(url, sessions, runtime, options)
    }

    fn from_sessions(
        url: &str,
        mut sessions: Vec<Session>,
        runtime: tokio::runtime::Runtime,
        options: &OpenOptions,
    ) -> Result<Self> {
        sessions.sort_by(|a, b| a.eid.cmp(&b.eid));
        for pair in sessions.windows(2) {
            if pair[0].eid == pair[1].eid {
                return Err(DataError::Inconsistent {
                    url: pair[1].folder.url(),
                    reason: format!(
                        "session eid `{}` also found at {}",
                        pair[1].eid,
                        pair[0].folder.url()
                    ),
                });
            }
        }
        if let Some(first) = sessions.first()
            && let Some(other) = sessions.iter().find(|s| s.n_bins != first.n_bins)
        {
            return Err(DataError::Inconsistent {
                url: other.folder.url(),
                reason: format!(
                    "{} bins per trial, but {} has {}",
                    other.n_bins,
                    first.folder.url(),
                    first.n_bins
                ),
            });
        }
        Ok(Self {
            root: url.to_string(),
            sessions: sessions.into_iter().map(Arc::new).collect(),
            runtime,
            cache: GroupCache::new(options.cache_bytes),
            source: if options.sidecars {
                GroupSource::Fastest
            } else {
                GroupSource::Parquet
            },
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// Index of the session with this eid.
    pub fn session_index(&self, eid: &str) -> Option<usize> {
        self.sessions.iter().position(|s| s.eid == eid)
    }

    /// Time bins per trial (the same for every session).
    pub fn n_bins(&self) -> usize {
        self.sessions.first().map_or(0, |s| s.n_bins)
    }

    /// Trials per session in one split, in session order.
    pub fn trial_counts(&self, split: Split) -> Vec<usize> {
        self.sessions.iter().map(|s| s.trials(split)).collect()
    }

    /// Runs a storage future to completion on the dataset's I/O runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// How the dataset was generated, when `mtm synth` (or `data.synthesize`) made it: the
    /// record at its root lets evaluation score the true rates. `None` for real data, and
    /// for a record that cannot be read or parsed (a warning says why).
    pub fn generator(&self) -> Option<crate::synth::GeneratorRecord> {
        let target = Location::parse(&self.root)
            .ok()?
            .join(crate::synth::GENERATOR_FILE);
        let bytes = self.block_on(async { target.store.get(&target.path).await?.bytes().await });
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return None,
            Err(e) => {
                tracing::debug!("{}: {e}", target.url());
                return None;
            }
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("{}: not a generator record: {e}", target.url()))
            .ok()
    }

    /// Drops every cached row group (benchmarks use it to measure cold reads).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// One decoded row group, from the cache or from storage.
    pub fn group(
        &self,
        session: usize,
        split: Split,
        file: usize,
        group: usize,
    ) -> Result<Arc<DecodedGroup>> {
        let key = (session as u32, split, file as u32, group as u32);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let decoded = Arc::new(self.block_on(session::read_group(
            &self.sessions[session],
            split,
            file,
            group,
            self.source,
        ))?);
        self.cache.put(key, Arc::clone(&decoded));
        Ok(decoded)
    }

    /// Hands a batch's spike buffer back for reuse by later batches (optional: dropping a
    /// batch is fine, recycling saves page faults on large batches).
    pub fn recycle(&self, batch: Batch) {
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        if buffers.len() < 64 {
            buffers.push(batch.spikes);
        }
    }

    fn zeroed_buffer(&self, len: usize) -> Vec<f32> {
        let reused = {
            let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
            buffers
                .iter()
                .position(|b| b.capacity() >= len)
                .map(|i| buffers.swap_remove(i))
        };
        match reused {
            Some(mut buffer) => {
                buffer.clear();
                buffer.resize(len, 0.0);
                buffer
            }
            None => vec![0.0; len],
        }
    }

    /// Decodes the given trials (row indices within `split`) of one session into a batch.
    pub fn read_batch(&self, session: usize, split: Split, trials: &[u32]) -> Result<Batch> {
        let meta = self
            .sessions
            .get(session)
            .ok_or_else(|| DataError::Config(format!("no session with index {session}")))?;
        let (t, n) = (meta.n_bins, meta.n_units);
        let b = meta.behaviour;
        let mut batch = Batch {
            session,
            split,
            trials: trials.to_vec(),
            n_bins: t,
            n_units: n,
            spikes: self.zeroed_buffer(trials.len() * t * n),
            behaviour: BehaviourValues::default(),
        };
        for b in b.present() {
            let per_trial = if b.per_bin() { t } else { 1 };
            *batch.behaviour.slot(b) = Some(Vec::with_capacity(trials.len() * per_trial));
        }
        let mut current: Option<((usize, usize), Arc<DecodedGroup>)> = None;
        for (i, &trial) in trials.iter().enumerate() {
            let (file, group, row) = meta.locate(split, trial as usize).ok_or_else(|| {
                DataError::Config(format!(
                    "trial {trial} is outside the {split} split of {} ({} trials)",
                    meta.eid,
                    meta.trials(split)
                ))
            })?;
            let decoded = match &current {
                Some((key, g)) if *key == (file, group) => Arc::clone(g),
                _ => {
                    let g = self.group(session, split, file, group)?;
                    current = Some(((file, group), Arc::clone(&g)));
                    g
                }
            };
            decoded.scatter_row(row, &mut batch.spikes[i * t * n..(i + 1) * t * n]);
            for b in b.present() {
                let per_trial = if b.per_bin() { t } else { 1 };
                if let (Some(dst), Some(src)) = (batch.behaviour.slot(b), decoded.behaviour.get(b))
                {
                    dst.extend_from_slice(&src[row * per_trial..(row + 1) * per_trial]);
                }
            }
        }
        Ok(batch)
    }
}

pub(crate) fn build_runtime(io_threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads.max(1))
        .thread_name("mtm-io")
        .enable_all()
        .build()
        .map_err(|e| DataError::Config(format!("cannot start the I/O runtime: {e}")))
}
