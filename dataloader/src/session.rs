//! Sessions: finding them under a root (or in a manifest), reading their metadata once,
//! and decoding their row groups into a compact form.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::reader::ObjectReader;
use crate::schema::{self, F64Lists, I64Lists};
use crate::sidecar::{self, Sidecar};
use crate::store::Location;

/// The three splits of every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// 70 % of trials.
    Train,
    /// 10 % of trials.
    Val,
    /// 20 % of trials.
    Test,
}

impl Split {
    /// All splits, in file-name order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name used in file names (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    fn from_file_name(name: &str) -> Option<Split> {
        let stem = name.strip_suffix(".parquet")?;
        Split::ALL.into_iter().find(|s| {
            stem == s.name()
                || stem
                    .strip_prefix(s.name())
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    }
}

/// The split of each of `n` trials: a seeded shuffle, then the first 70 % (rounded down) to
/// train, the next 10 % (rounded down) to val, the rest to test.
pub fn assign_splits(n: usize, rng: &mut impl rand::Rng) -> Vec<Split> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let (n_train, n_val) = (n * 7 / 10, n / 10);
    let mut assignment = vec![Split::Test; n];
    for (position, &trial) in order.iter().enumerate() {
        if position < n_train {
            assignment[trial] = Split::Train;
        } else if position < n_train + n_val {
            assignment[trial] = Split::Val;
        }
    }
    assignment
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown split `{s}` (expected train, val or test)"))
    }
}

/// One Parquet file of a session split, with its footer read.
#[derive(Clone, Debug)]
pub struct SplitFile {
    /// Where the file is.
    pub location: Location,
    /// Size in bytes.
    pub size: u64,
    /// Rows (trials) per row group.
    pub row_group_rows: Vec<usize>,
    /// The parsed footer, reused by every read of this file.
    pub(crate) metadata: ArrowReaderMetadata,
    /// Its compact side-car, when one was found and agrees with it (see [`crate::sidecar`]).
    pub sidecar: Option<Arc<Sidecar>>,
}

impl SplitFile {
    /// Number of rows (trials).
    pub fn rows(&self) -> usize {
        self.row_group_rows.iter().sum()
    }
}

/// A behaviour column of the published layout: the one list of them. A missing value
/// (a null row, or NaN inside a row) is kept as NaN; whoever uses the values decides what
/// a missing one means (evaluation leaves such trials out of decoding and counts them;
/// `mtm data inspect` reports how many there are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// `choice`: -1/+1 per trial.
    Choice,
    /// `reward`: 0/1 per trial.
    Reward,
    /// `block`: the block prior per trial.
    Block,
    /// `whisker-motion-energy`: one value per bin.
    Whisker,
    /// `wheel-speed`: one value per bin.
    Wheel,
}

impl Behaviour {
    /// Every behaviour column, in the layout's order.
    pub const ALL: [Behaviour; 5] = [
        Behaviour::Choice,
        Behaviour::Reward,
        Behaviour::Block,
        Behaviour::Whisker,
        Behaviour::Wheel,
    ];

    /// The column's name in the layout.
    pub fn column(self) -> &'static str {
        match self {
            Behaviour::Choice => schema::CHOICE,
            Behaviour::Reward => schema::REWARD,
            Behaviour::Block => schema::BLOCK,
            Behaviour::Whisker => schema::WHISKER,
            Behaviour::Wheel => schema::WHEEL,
        }
    }

    /// Whether the column holds one value per bin (otherwise one per trial).
    pub fn per_bin(self) -> bool {
        matches!(self, Behaviour::Whisker | Behaviour::Wheel)
    }
}

/// Which behaviour columns every file of a session carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BehaviourColumns {
    /// `choice`.
    pub choice: bool,
    /// `reward`.
    pub reward: bool,
    /// `block`.
    pub block: bool,
    /// `whisker-motion-energy`.
    pub whisker: bool,
    /// `wheel-speed`.
    pub wheel: bool,
}

impl BehaviourColumns {
    pub(crate) fn slot(&mut self, b: Behaviour) -> &mut bool {
        match b {
            Behaviour::Choice => &mut self.choice,
            Behaviour::Reward => &mut self.reward,
            Behaviour::Block => &mut self.block,
            Behaviour::Whisker => &mut self.whisker,
            Behaviour::Wheel => &mut self.wheel,
        }
    }

    /// Whether the session carries `b`.
    pub fn has(&self, b: Behaviour) -> bool {
        *self.clone().slot(b)
    }

    /// The columns the session carries, in the layout's order.
    pub fn present(&self) -> impl Iterator<Item = Behaviour> + use<> {
        let this = *self;
        Behaviour::ALL.into_iter().filter(move |&b| this.has(b))
    }
}

/// Values of the behaviour columns a session has, by column: per trial, or per bin
/// (`trials * n_bins`); missing values are NaN (see [`Behaviour`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BehaviourValues([Option<Vec<f32>>; 5]);

impl BehaviourValues {
    /// The values of column `b`, when present.
    pub fn get(&self, b: Behaviour) -> Option<&[f32]> {
        self.0[b as usize].as_deref()
    }

    /// Column `b`'s slot, to fill.
    pub fn slot(&mut self, b: Behaviour) -> &mut Option<Vec<f32>> {
        &mut self.0[b as usize]
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.iter().flatten().map(|v| v.len() * 4).sum()
    }
}

/// A session's metadata, read once when the dataset is opened.
#[derive(Clone, Debug)]
pub struct Session {
    /// The session id (from the `eid` column).
    pub eid: String,
    /// The session folder (`…/{eid}_aligned`).
    pub folder: Location,
    /// Number of units N.
    pub n_units: usize,
    /// Number of time bins T per trial.
    pub n_bins: usize,
    /// Bin width in seconds (0.02 when the column is absent).
    pub binsize: f64,
    /// Region acronym per unit.
    pub regions: Vec<String>,
    /// Depth per unit, when the file has it.
    pub depths: Option<Vec<f64>>,
    /// Unit ids, when the file has them.
    pub uuids: Option<Vec<String>>,
    /// Probe name, subject and lab, when present.
    pub probe_name: Option<String>,
    /// Subject (mouse).
    pub subject: Option<String>,
    /// Lab.
    pub lab: Option<String>,
    /// Behaviour columns present in every file.
    pub behaviour: BehaviourColumns,
    /// Files per split, in name order: `splits[Split as usize]`.
    pub splits: [Vec<SplitFile>; 3],
}

impl Session {
    /// The files of one split.
    pub fn files(&self, split: Split) -> &[SplitFile] {
        &self.splits[split as usize]
    }

    /// Trials in one split.
    pub fn trials(&self, split: Split) -> usize {
        self.files(split).iter().map(SplitFile::rows).sum()
    }

    /// Distinct regions with their unit counts, in order of first appearance.
    pub fn region_counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for region in &self.regions {
            match counts.iter_mut().find(|(r, _)| r == region) {
                Some((_, n)) => *n += 1,
                None => counts.push((region.clone(), 1)),
            }
        }
        counts
    }

    /// Maps a row index within a split to (file, row group, row within the group).
    pub fn locate(&self, split: Split, mut row: usize) -> Option<(usize, usize, usize)> {
        for (f, file) in self.files(split).iter().enumerate() {
            for (g, &rows) in file.row_group_rows.iter().enumerate() {
                if row < rows {
                    return Some((f, g, row));
                }
                row -= rows;
            }
        }
        None
    }
}

/// A session folder found by discovery, before its files are opened.
#[derive(Clone, Debug)]
pub struct SessionSource {
    /// The session folder.
    pub folder: Location,
    /// Its Parquet files per split with their sizes, sorted by name.
    pub files: [Vec<(Location, u64)>; 3],
    /// Side-car files found under `mtm/` with their sizes (see [`crate::sidecar`]).
    pub sidecars: Vec<(Location, u64)>,
}

/// Finds the sessions a dataset URL names: every `…/data/{split}-*.parquet` below a folder,
/// or the session folders listed in a manifest file.
pub async fn discover(root: &Location) -> Result<Vec<SessionSource>> {
    // An object at the root itself is a manifest; a folder is listed.
    if !root.path.as_ref().is_empty() {
        match root.store.head(&root.path).await {
            Ok(_) => return discover_manifest(root).await,
            Err(object_store::Error::NotFound { .. }) => {}
            // Local directories answer head() with an error that is not NotFound.
            Err(_) if root.url().starts_with("file://") => {}
            Err(source) => {
                return Err(DataError::Store {
                    url: root.url(),
                    source,
                });
            }
        }
    }
    let objects: Vec<ObjectMeta> = match root.store.list(Some(&root.path)).try_collect().await {
        Ok(objects) => objects,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(source) => {
            return Err(DataError::Store {
                url: root.url(),
                source,
            });
        }
    };
    let mut by_folder: BTreeMap<String, SessionSource> = BTreeMap::new();
    for object in objects {
        let parts: Vec<_> = object.location.parts().collect();
        let n = parts.len();
        if n < 2 {
            continue;
        }
        let name = parts[n - 1].as_ref();
        let split = match parts[n - 2].as_ref() {
            "data" => match Split::from_file_name(name) {
                Some(split) => Some(split),
                None => continue,
            },
            sidecar::FOLDER if name.ends_with(sidecar::SUFFIX) => None,
            _ => continue,
        };
        let folder_path = object_store::path::Path::from_iter(parts[..n - 2].iter().cloned());
        let key = folder_path.to_string();
        let source = by_folder.entry(key).or_insert_with(|| SessionSource {
            folder: root.with_path(folder_path),
            files: Default::default(),
            sidecars: Vec::new(),
        });
        let found = (root.with_path(object.location.clone()), object.size);
        match split {
            Some(split) => source.files[split as usize].push(found),
            None => source.sidecars.push(found),
        }
    }
    // A folder with side-cars but no Parquet files is not a session.
    by_folder.retain(|_, s| s.files.iter().any(|f| !f.is_empty()));
    let mut sources: Vec<SessionSource> = by_folder.into_values().collect();
    for source in &mut sources {
        for files in &mut source.files {
            files.sort_by_key(|(loc, _)| loc.path.to_string());
        }
    }
    if sources.is_empty() {
        return Err(DataError::NoSessions { url: root.url() });
    }
    Ok(sources)
}

/// The entries of a manifest or session list with their 1-based line numbers: each line
/// without its `#` comment, trimmed; blank lines skipped.
pub fn manifest_entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let entry = line.split('#').next().unwrap_or_default().trim();
        (!entry.is_empty()).then_some((i + 1, entry))
    })
}

/// A manifest: one session folder per line (URL, absolute path, or a path relative to the
/// manifest's folder); blank lines and `#` comments are ignored.
async fn discover_manifest(manifest: &Location) -> Result<Vec<SessionSource>> {
    let url = manifest.url();
    let bytes = manifest.read().await?;
    let text = std::str::from_utf8(&bytes).map_err(|e| DataError::Manifest {
        url: url.clone(),
        line: 1,
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let mut sources = Vec::new();
    for (line, entry) in manifest_entries(text) {
        let manifest_err = |reason: String| DataError::Manifest {
            url: url.clone(),
            line,
            reason,
        };
        let folder = if entry.contains("://") || entry.starts_with('/') {
            Location::parse(entry).map_err(|e| manifest_err(e.to_string()))?
        } else {
            manifest.parent().join(entry)
        };
        let found = Box::pin(discover(&folder))
            .await
            .map_err(|e| manifest_err(e.to_string()))?;
        if found.len() != 1 {
            return Err(manifest_err(format!(
                "`{entry}` holds {} sessions; a manifest line names exactly one session folder",
                found.len()
            )));
        }
        sources.extend(found);
    }
    if sources.is_empty() {
        return Err(DataError::NoSessions { url });
    }
    Ok(sources)
}

/// Reads a file's footer and checks its schema; opens its side-car when `sidecar` names
/// one (a side-car that cannot be used is left out with a warning: the Parquet file is
/// read instead).
async fn open_file(
    location: Location,
    size: u64,
    sidecar: Option<(Location, u64)>,
) -> Result<SplitFile> {
    let url = location.url();
    let mut reader = ObjectReader::new(location.store.clone(), location.path.clone(), size);
    let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
        .await
        .map_err(|source| parquet_error(&url, source))?;
    schema::check_schema(&url, metadata.schema())?;
    let row_group_rows = metadata
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows() as usize)
        .collect();
    let sidecar = match sidecar {
        None => None,
        Some((at, sidecar_size)) => {
            let sidecar_url = at.url();
            match Sidecar::open(at, sidecar_size).await {
                Ok(opened) => Some(Arc::new(opened)),
                Err(reason) => {
                    ignore_sidecar(&sidecar_url, &reason);
                    None
                }
            }
        }
    };
    Ok(SplitFile {
        location,
        size,
        row_group_rows,
        metadata,
        sidecar,
    })
}

fn ignore_sidecar(url: &str, reason: &str) {
    tracing::warn!(
        "{url}: side-car not used ({reason}); reading the Parquet file instead (`mtm data sidecar` rewrites it)"
    );
}

/// A storage failure under parquet's reader is reported as a storage error, the rest as
/// "not readable Parquet".
fn parquet_error(url: &str, source: parquet::errors::ParquetError) -> DataError {
    if let parquet::errors::ParquetError::External(inner) = source {
        match inner.downcast::<object_store::Error>() {
            Ok(store) => DataError::Store {
                url: url.to_string(),
                source: *store,
            },
            Err(other) => DataError::Parquet {
                url: url.to_string(),
                source: parquet::errors::ParquetError::External(other),
            },
        }
    } else {
        DataError::Parquet {
            url: url.to_string(),
            source,
        }
    }
}

/// Reads row groups of `file`, projected to `columns` (those present), as record batches.
async fn read_rows(
    file: &SplitFile,
    columns: &[&str],
    row_groups: Vec<usize>,
    limit: Option<usize>,
) -> Result<Vec<RecordBatch>> {
    let url = file.location.url();
    let schema = file.metadata.schema();
    let roots: Vec<usize> = columns
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let reader = ObjectReader::new(
        file.location.store.clone(),
        file.location.path.clone(),
        file.size,
    );
    let mask = ProjectionMask::roots(
        file.metadata.metadata().file_metadata().schema_descr(),
        roots,
    );
    let rows: usize = row_groups.iter().map(|&g| file.row_group_rows[g]).sum();
    let mut builder =
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.metadata.clone())
            .with_projection(mask)
            .with_row_groups(row_groups)
            .with_batch_size(rows.max(1));
    if let Some(limit) = limit {
        builder = builder.with_limit(limit);
    }
    let stream = builder.build().map_err(|e| parquet_error(&url, e))?;
    stream
        .try_collect()
        .await
        .map_err(|e| parquet_error(&url, e))
}

/// Opens every file of a session (footers in parallel) and reads its metadata from the
/// first row of its first file.
pub async fn open_session(source: SessionSource) -> Result<Session> {
    let mut splits: [Vec<SplitFile>; 3] = Default::default();
    let sidecar_of = |parquet: &Location| {
        let wanted = sidecar::location_for(parquet).path;
        source
            .sidecars
            .iter()
            .find(|(s, _)| s.path == wanted)
            .cloned()
    };
    for (split, files) in source.files.iter().enumerate() {
        splits[split] = futures::stream::iter(files.iter().cloned())
            .map(|(loc, size)| {
                let sidecar = sidecar_of(&loc);
                open_file(loc, size, sidecar)
            })
            .buffered(8)
            .try_collect()
            .await?;
    }
    let first = splits
        .iter()
        .flatten()
        .find(|f| f.rows() > 0)
        .or_else(|| splits.iter().flatten().next())
        .ok_or_else(|| DataError::NoSessions {
            url: source.folder.url(),
        })?;
    let url = first.location.url();
    let meta_columns = [
        schema::EID,
        schema::CLUSTER_REGIONS,
        schema::CLUSTER_DEPTHS,
        schema::CLUSTER_UUIDS,
        schema::SPIKES_SHAPE,
        schema::BINSIZE,
        schema::PROBE_NAME,
        schema::SUBJECT,
        schema::LAB,
    ];
    let batches = read_rows(first, &meta_columns, vec![0], Some(1)).await?;
    let batch = batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| DataError::Inconsistent {
            url: url.clone(),
            reason: "the session's files hold no trials".into(),
        })?;
    let row_err = |field: &str, reason: String| DataError::InvalidRow {
        url: url.clone(),
        row: 0,
        field: field.to_string(),
        reason,
    };
    let string = |name: &str| -> Result<Option<String>> {
        Ok(schema::column(&url, &batch, name)?.and_then(|a| {
            let a = a.as_string::<i32>();
            (!a.is_null(0)).then(|| a.value(0).to_string())
        }))
    };
    let strings = |name: &str| -> Result<Option<Vec<String>>> {
        Ok(schema::column(&url, &batch, name)?.and_then(|a| {
            let list = a.as_list::<i32>();
            (!list.is_null(0)).then(|| {
                let values = list.value(0);
                let values = values.as_string::<i32>();
                (0..values.len())
                    .map(|i| values.value(i).to_string())
                    .collect()
            })
        }))
    };
    let eid = string(schema::EID)?.ok_or_else(|| row_err(schema::EID, "is null".into()))?;
    let regions = strings(schema::CLUSTER_REGIONS)?
        .ok_or_else(|| row_err(schema::CLUSTER_REGIONS, "is null".into()))?;
    if regions.len() > MAX_U16 + 1 {
        return Err(row_err(
            schema::CLUSTER_REGIONS,
            format!(
                "lists {} units; mtm reads sessions of at most {} units",
                regions.len(),
                MAX_U16 + 1
            ),
        ));
    }
    let shape_col = schema::required(&url, &batch, schema::SPIKES_SHAPE)?;
    let shape = I64Lists::new(&url, schema::SPIKES_SHAPE, &shape_col)?
        .row(0)
        .map(<[i64]>::to_vec)
        .unwrap_or_default();
    if shape.len() != 2 || shape[0] <= 0 || shape[1] < 0 {
        return Err(row_err(
            schema::SPIKES_SHAPE,
            format!("expected [n_bins, n_units] with n_bins > 0, found {shape:?}"),
        ));
    }
    if shape[1] as usize != regions.len() {
        return Err(row_err(
            schema::SPIKES_SHAPE,
            format!(
                "says {} units but `cluster_regions` lists {}",
                shape[1],
                regions.len()
            ),
        ));
    }
    let depths = schema::column(&url, &batch, schema::CLUSTER_DEPTHS)?
        .and_then(|a| F64Lists::new(&a).row(0));
    let binsize = schema::column(&url, &batch, schema::BINSIZE)?
        .map(|a| a.as_primitive::<arrow_array::types::Float64Type>().value(0))
        .unwrap_or(0.02);
    let all_files = || splits.iter().flatten();
    let everywhere = |c: &str| {
        all_files().count() > 0 && all_files().all(|f| f.metadata.schema().index_of(c).is_ok())
    };
    let mut behaviour = BehaviourColumns::default();
    for b in Behaviour::ALL {
        *behaviour.slot(b) = everywhere(b.column());
    }
    for file in splits.iter_mut().flatten() {
        let Some(car) = &file.sidecar else { continue };
        let groups = file.row_group_rows.len();
        let (units, bins) = (regions.len(), shape[0] as usize);
        if let Some(reason) = car.disagreement(file.size, groups, units, bins, behaviour) {
            ignore_sidecar(&car.location.url(), &reason);
            file.sidecar = None;
        }
    }
    let session = Session {
        n_units: regions.len(),
        n_bins: shape[0] as usize,
        binsize,
        depths,
        uuids: strings(schema::CLUSTER_UUIDS)?,
        probe_name: string(schema::PROBE_NAME)?,
        subject: string(schema::SUBJECT)?,
        lab: string(schema::LAB)?,
        regions,
        eid,
        folder: source.folder,
        behaviour,
        splits,
    };
    check_eids(&session, &url).await?;
    Ok(session)
}

/// Every file of a session must belong to the same `eid`; `read_url` is the file whose eid
/// the metadata came from, which needs no second read.
async fn check_eids(session: &Session, read_url: &str) -> Result<()> {
    let files: Vec<&SplitFile> = session
        .splits
        .iter()
        .flatten()
        .filter(|f| f.rows() > 0 && f.location.url() != read_url)
        .collect();
    futures::stream::iter(files)
        .map(|file| async move {
            let url = file.location.url();
            let first_group = file.row_group_rows.iter().position(|&r| r > 0).unwrap_or(0);
            let batches = read_rows(file, &[schema::EID], vec![first_group], Some(1)).await?;
            let batch = batches.first().filter(|b| b.num_rows() > 0);
            if let Some(batch) = batch {
                let eids = schema::required(&url, batch, schema::EID)?;
                let eid = eids.as_string::<i32>().value(0);
                if eid != session.eid {
                    return Err(DataError::Inconsistent {
                        url,
                        reason: format!(
                            "eid `{eid}` differs from `{}` found in the session's first file",
                            session.eid
                        ),
                    });
                }
            }
            Ok(())
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The most units a session may have, and the largest spike count of one bin: decoded
/// row groups keep unit indices and counts as u16 (half the memory of u32 positions and
/// f32 counts, so the cache holds twice the trials and the first epoch touches half the
/// fresh memory). A Neuropixels session has a few thousand units, and a unit fires at most
/// about 1 kHz (20 spikes in a 20 ms bin).
pub const MAX_U16: usize = u16::MAX as usize;

/// One row group decoded and validated: each trial's spikes in CSR form (per-bin offsets,
/// unit index and count of each non-zero entry).
#[derive(Debug, Default)]
pub struct DecodedGroup {
    /// Number of trials in the group.
    pub n_rows: usize,
    /// Time bins per trial.
    pub n_bins: usize,
    /// `nnz[r]..nnz[r + 1]` are row r's entries in `units` / `counts`.
    pub nnz: Vec<u32>,
    /// Per row, `n_bins + 1` offsets of each bin's entries, relative to the row's first
    /// entry (`bins[r * (n_bins + 1) + t]`).
    pub bins: Vec<u32>,
    /// Unit index of each non-zero entry.
    pub units: Vec<u16>,
    /// Spike count of each entry.
    pub counts: Vec<u16>,
    /// Behaviour values of the columns the session has (per trial, or `n_rows * n_bins`).
    pub behaviour: BehaviourValues,
}

impl DecodedGroup {
    /// An empty group of trials with `n_bins` bins.
    pub fn new(n_bins: usize) -> Self {
        Self {
            n_bins,
            nnz: vec![0],
            ..Default::default()
        }
    }

    /// Approximate heap size, for the cache's byte budget.
    pub fn heap_bytes(&self) -> usize {
        self.nnz.len() * 4
            + self.bins.len() * 4
            + self.units.len() * 2
            + self.counts.len() * 2
            + self.behaviour.heap_bytes()
    }

    /// Whether `other` holds the same trials bit for bit (NaN equal to NaN): how a side-car
    /// is checked against its Parquet file.
    pub fn identical(&self, other: &DecodedGroup) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        self.n_rows == other.n_rows
            && self.n_bins == other.n_bins
            && self.nnz == other.nnz
            && self.bins == other.bins
            && self.units == other.units
            && self.counts == other.counts
            && Behaviour::ALL
                .into_iter()
                .all(|b| self.behaviour.get(b).map(bits) == other.behaviour.get(b).map(bits))
    }

    /// Row `r`'s bin offsets (`n_bins + 1`), unit indices and counts.
    pub fn row(&self, r: usize) -> (&[u32], &[u16], &[u16]) {
        let entries = self.nnz[r] as usize..self.nnz[r + 1] as usize;
        let width = self.n_bins + 1;
        (
            &self.bins[r * width..(r + 1) * width],
            &self.units[entries.clone()],
            &self.counts[entries],
        )
    }

    /// Total spikes of row `r`.
    pub fn row_spikes(&self, r: usize) -> f64 {
        self.row(r).2.iter().map(|&c| c as f64).sum()
    }

    /// Adds row `r`'s counts into a dense `(n_bins, n_units)` slice (zeroed by the caller).
    pub fn scatter_row(&self, r: usize, dense: &mut [f32]) {
        let (bins, units, counts) = self.row(r);
        let n_units = dense.len() / self.n_bins.max(1);
        for (t, w) in bins.windows(2).enumerate() {
            let row = &mut dense[t * n_units..(t + 1) * n_units];
            let range = w[0] as usize..w[1] as usize;
            for (&unit, &count) in units[range.clone()].iter().zip(&counts[range]) {
                row[unit as usize] += count as f32;
            }
        }
    }

    /// Appends one trial given as CSR (`indptr` of `n_bins + 1` offsets from 0, then the
    /// unit index and spike count of each entry), checking it first; `Err` names the
    /// layout's field and the problem, and leaves the group unchanged.
    pub fn push_row(
        &mut self,
        indptr: &[i64],
        units: &[i64],
        counts: &[i64],
        n_units: usize,
    ) -> std::result::Result<(), (&'static str, String)> {
        let n_bins = self.n_bins;
        if indptr.len() != n_bins + 1 {
            return Err((
                schema::SPIKES_INDPTR,
                format!(
                    "has length {}, expected n_bins + 1 = {}",
                    indptr.len(),
                    n_bins + 1
                ),
            ));
        }
        if units.len() != counts.len() {
            return Err((
                schema::SPIKES_INDICES,
                format!(
                    "has {} entries but `spikes_sparse_data` has {}",
                    units.len(),
                    counts.len()
                ),
            ));
        }
        if indptr[0] != 0 || indptr[n_bins] != counts.len() as i64 {
            return Err((
                schema::SPIKES_INDPTR,
                format!(
                    "must start at 0 and end at the number of values {}, found {} .. {}",
                    counts.len(),
                    indptr[0],
                    indptr[n_bins]
                ),
            ));
        }
        for (t, w) in indptr.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err((
                    schema::SPIKES_INDPTR,
                    format!("decreases from {} to {} at bin {t}", w[0], w[1]),
                ));
            }
            let range = w[0] as usize..w[1] as usize;
            for (&unit, &count) in units[range.clone()].iter().zip(&counts[range]) {
                if unit < 0 || unit as usize >= n_units {
                    return Err((
                        schema::SPIKES_INDICES,
                        format!("unit index {unit} at bin {t} is outside 0..{n_units}"),
                    ));
                }
                if count < 0 {
                    return Err((
                        schema::SPIKES_DATA,
                        format!("negative spike count {count} at bin {t}, unit {unit}"),
                    ));
                }
                if count > MAX_U16 as i64 {
                    return Err((
                        schema::SPIKES_DATA,
                        format!(
                            "spike count {count} at bin {t}, unit {unit} is above {MAX_U16}, the most one bin may hold"
                        ),
                    ));
                }
            }
        }
        // Checked above: offsets fit the row, units < n_units <= 65,536, counts fit u16.
        self.bins.extend(indptr.iter().map(|&x| x as u32));
        self.units.extend(units.iter().map(|&u| u as u16));
        self.counts.extend(counts.iter().map(|&c| c as u16));
        self.nnz.push(self.units.len() as u32);
        self.n_rows += 1;
        Ok(())
    }
}

/// Which copy of a row group to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSource {
    /// The side-car when the file has one, else the Parquet file.
    Fastest,
    /// The Parquet file.
    Parquet,
}

/// Reads and validates one row group of one split file.
pub async fn read_group(
    session: &Session,
    split: Split,
    file: usize,
    group: usize,
    from: GroupSource,
) -> Result<DecodedGroup> {
    let file_info = &session.files(split)[file];
    let first_row: usize = file_info.row_group_rows[..group].iter().sum();
    if let (GroupSource::Fastest, Some(car)) = (from, &file_info.sidecar) {
        let rows = file_info.row_group_rows[group];
        return car
            .read_group(group, rows, first_row, session.behaviour)
            .await;
    }
    let url = file_info.location.url();
    let mut columns = vec![
        schema::SPIKES_DATA,
        schema::SPIKES_INDICES,
        schema::SPIKES_INDPTR,
        schema::SPIKES_SHAPE,
    ];
    columns.extend(session.behaviour.present().map(Behaviour::column));
    let batches = read_rows(file_info, &columns, vec![group], None).await?;
    let mut out = DecodedGroup::new(session.n_bins);
    let mut row_base = first_row;
    for batch in &batches {
        decode_batch(session, &url, batch, row_base, &mut out)?;
        row_base += batch.num_rows();
    }
    Ok(out)
}

fn decode_batch(
    session: &Session,
    url: &str,
    batch: &RecordBatch,
    row_base: usize,
    out: &mut DecodedGroup,
) -> Result<()> {
    let (n_bins, n_units) = (session.n_bins, session.n_units);
    let cols: Vec<_> = [
        schema::SPIKES_DATA,
        schema::SPIKES_INDICES,
        schema::SPIKES_INDPTR,
        schema::SPIKES_SHAPE,
    ]
    .iter()
    .map(|c| schema::required(url, batch, c))
    .collect::<Result<_>>()?;
    let data = I64Lists::new(url, schema::SPIKES_DATA, &cols[0])?;
    let indices = I64Lists::new(url, schema::SPIKES_INDICES, &cols[1])?;
    let indptr = I64Lists::new(url, schema::SPIKES_INDPTR, &cols[2])?;
    let shape = I64Lists::new(url, schema::SPIKES_SHAPE, &cols[3])?;
    for r in 0..batch.num_rows() {
        let row = row_base + r;
        let err = |field: &str, reason: String| DataError::InvalidRow {
            url: url.to_string(),
            row,
            field: field.to_string(),
            reason,
        };
        let (data, indices, indptr, shape) = (
            non_null(&data, r, || err(schema::SPIKES_DATA, "is null".into()))?,
            non_null(&indices, r, || {
                err(schema::SPIKES_INDICES, "is null".into())
            })?,
            non_null(&indptr, r, || err(schema::SPIKES_INDPTR, "is null".into()))?,
            non_null(&shape, r, || err(schema::SPIKES_SHAPE, "is null".into()))?,
        );
        if shape != [n_bins as i64, n_units as i64] {
            return Err(err(
                schema::SPIKES_SHAPE,
                format!(
                    "is {shape:?}, but the session has [{n_bins}, {n_units}] (n_bins from its first row, n_units from `cluster_regions`)"
                ),
            ));
        }
        out.push_row(indptr, indices, data, n_units)
            .map_err(|(field, reason)| err(field, reason))?;
    }
    for b in session.behaviour.present() {
        let name = b.column();
        let dst = out.behaviour.slot(b).get_or_insert_with(Vec::new);
        if !b.per_bin() {
            dst.extend(scalars(url, batch, name, row_base)?);
            continue;
        }
        let array = schema::required(url, batch, name)?;
        let lists = F64Lists::new(&array);
        for r in 0..batch.num_rows() {
            match lists.row(r) {
                Some(v) if v.len() == n_bins => dst.extend(v.iter().map(|&x| x as f32)),
                Some(v) => {
                    return Err(DataError::InvalidRow {
                        url: url.to_string(),
                        row: row_base + r,
                        field: name.to_string(),
                        reason: format!("has {} values, expected one per bin ({n_bins})", v.len()),
                    });
                }
                None => dst.extend(std::iter::repeat_n(f32::NAN, n_bins)),
            }
        }
    }
    Ok(())
}

fn non_null<'a>(
    lists: &I64Lists<'a>,
    row: usize,
    err: impl FnOnce() -> DataError,
) -> Result<&'a [i64]> {
    lists.row(row).ok_or_else(err)
}

/// A per-trial scalar that the layout stores as a list of one double (or a plain double).
fn scalars(url: &str, batch: &RecordBatch, name: &str, row_base: usize) -> Result<Vec<f32>> {
    let array = schema::required(url, batch, name)?;
    if let Some(values) = array.as_primitive_opt::<arrow_array::types::Float64Type>() {
        return Ok((0..values.len())
            .map(|i| {
                if values.is_null(i) {
                    f32::NAN
                } else {
                    values.value(i) as f32
                }
            })
            .collect());
    }
    let lists = F64Lists::new(&array);
    (0..batch.num_rows())
        .map(|r| match lists.row(r) {
            None => Ok(f32::NAN),
            Some(v) if v.len() == 1 => Ok(v[0] as f32),
            Some(v) => Err(DataError::InvalidRow {
                url: url.to_string(),
                row: row_base + r,
                field: name.to_string(),
                reason: format!("expected a list of one value, found {}", v.len()),
            }),
        })
        .collect()
}
