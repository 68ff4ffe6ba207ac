//! Writes sessions in the published layout: `{eid}_aligned/data/{split}-00000-of-00001.parquet`,
//! readable by pyarrow and by Hugging Face `datasets.load_dataset("parquet", ...)`, each file
//! with its compact side-car under `{eid}_aligned/mtm/` (see [`crate::sidecar`]).

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{DataError, Result};
use crate::schema;
use crate::session::{Behaviour, BehaviourColumns, DecodedGroup, Split};
use crate::sidecar;
use crate::store::Location;

/// Session constants, repeated on every row as the layout prescribes.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Session id.
    pub eid: String,
    /// Probe name(s).
    pub probe_name: String,
    /// Subject (mouse).
    pub subject: String,
    /// Lab.
    pub lab: String,
    /// Recording sampling frequency (Hz).
    pub sampling_freq: f64,
    /// Bin width (s).
    pub binsize: f64,
    /// Trial window length (s).
    pub interval_len: i64,
    /// Region acronym per unit.
    pub regions: Vec<String>,
    /// Peak channel per unit.
    pub channels: Vec<i64>,
    /// Depth per unit (µm).
    pub depths: Vec<f64>,
    /// 1 where the unit passed QC.
    pub good: Vec<i64>,
    /// Unit ids.
    pub uuids: Vec<String>,
    /// Key-value pairs written into each file's Parquet footer (where pyarrow's
    /// `read_metadata(...).metadata` shows them): where the session came from, such as a
    /// BrainWideBench file's build provenance. Empty for most sources.
    pub metadata: Vec<(String, String)>,
}

/// One trial: CSR spike counts over (bins, units) plus behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRecord {
    /// Time bins.
    pub n_bins: usize,
    /// CSR row pointer, `n_bins + 1` entries.
    pub indptr: Vec<i64>,
    /// Unit index of each entry.
    pub indices: Vec<i64>,
    /// Spike count of each entry.
    pub counts: Vec<i64>,
    /// -1 / +1.
    pub choice: f64,
    /// 0 / 1.
    pub reward: f64,
    /// probabilityLeft.
    pub block: f64,
    /// Whisker motion energy per bin.
    pub whisker: Vec<f64>,
    /// Wheel speed per bin, when recorded.
    pub wheel: Option<Vec<f64>>,
}

impl TrialRecord {
    /// Builds the CSR form of a dense `(n_bins, n_units)` count matrix.
    pub fn csr_from_dense(
        dense: &[u32],
        n_bins: usize,
        n_units: usize,
    ) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let mut indptr = Vec::with_capacity(n_bins + 1);
        let (mut indices, mut counts) = (Vec::new(), Vec::new());
        indptr.push(0);
        for t in 0..n_bins {
            for (u, &c) in dense[t * n_units..(t + 1) * n_units].iter().enumerate() {
                if c > 0 {
                    indices.push(u as i64);
                    counts.push(c as i64);
                }
            }
            indptr.push(indices.len() as i64);
        }
        (indptr, indices, counts)
    }
}

/// Writer settings.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// Trials per row group: the unit of reading and caching.
    pub rows_per_group: usize,
    /// Also write each file's compact side-car (`{eid}_aligned/mtm/`, see
    /// [`crate::sidecar`]); `false` removes a side-car left from an earlier write.
    pub sidecar: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            rows_per_group: 64,
            sidecar: true,
        }
    }
}

/// Writes one split of a session under `root` and returns the file's location; the
/// `wheel-speed` column is written when any of its trials has it.
pub async fn write_split(
    root: &Location,
    info: &SessionInfo,
    split: Split,
    trials: &[TrialRecord],
    options: WriteOptions,
) -> Result<Location> {
    let with_wheel = trials.iter().any(|t| t.wheel.is_some());
    let n_bins = trials.first().map_or(0, |t| t.n_bins);
    write_split_with(root, info, split, trials, options, (with_wheel, n_bins)).await
}

/// [`write_split`], with the `wheel-speed` column's presence and the bins per trial (for
/// the side-car of a split without trials) chosen by the caller.
async fn write_split_with(
    root: &Location,
    info: &SessionInfo,
    split: Split,
    trials: &[TrialRecord],
    options: WriteOptions,
    (with_wheel, n_bins): (bool, usize),
) -> Result<Location> {
    let file = root.join(&format!(
        "{}_aligned/data/{}-00000-of-00001.parquet",
        info.eid,
        split.name()
    ));
    let url = file.url();
    let write_err = |reason: String| DataError::Write {
        url: url.clone(),
        reason,
    };
    let schema = schema::write_schema(with_wheel);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(options.rows_per_group.max(1)))
        .set_key_value_metadata((!info.metadata.is_empty()).then(|| {
            info.metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect()
        }))
        .build();
    let sink = BufWriter::new(Arc::clone(&file.store), file.path.clone());
    let mut writer = AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(props))
        .map_err(|e| write_err(e.to_string()))?;
    for chunk in trials.chunks(options.rows_per_group.max(1)) {
        let batch = record_batch(&schema, info, chunk, with_wheel).map_err(&write_err)?;
        writer
            .write(&batch)
            .await
            .map_err(|e| write_err(e.to_string()))?;
    }
    writer.close().await.map_err(|e| write_err(e.to_string()))?;
    if !options.sidecar {
        sidecar::remove(&file).await?;
        return Ok(file);
    }
    let size = file
        .store
        .head(&file.path)
        .await
        .map_err(|source| DataError::Store {
            url: url.clone(),
            source,
        })?
        .size;
    let n_units = info.regions.len();
    let groups = trials
        .chunks(options.rows_per_group.max(1))
        .map(|chunk| decoded_group(chunk, n_bins, n_units, with_wheel))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(&write_err)?;
    let mut behaviour = BehaviourColumns::default();
    for b in Behaviour::ALL {
        *behaviour.slot(b) = b != Behaviour::Wheel || with_wheel;
    }
    sidecar::write(&file, size, &groups, n_bins, n_units, behaviour).await?;
    Ok(file)
}

/// The trials of one row group as the reader decodes them, for the side-car.
fn decoded_group(
    trials: &[TrialRecord],
    n_bins: usize,
    n_units: usize,
    with_wheel: bool,
) -> std::result::Result<DecodedGroup, String> {
    let mut group = DecodedGroup::new(n_bins);
    let mut per_trial = [const { Vec::new() }; 3];
    let (mut whisker, mut wheel) = (Vec::new(), Vec::new());
    for (r, trial) in trials.iter().enumerate() {
        if trial.n_bins != n_bins {
            return Err(format!(
                "trial {r} has {} bins, the file's first {n_bins}",
                trial.n_bins
            ));
        }
        group
            .push_row(&trial.indptr, &trial.indices, &trial.counts, n_units)
            .map_err(|(field, reason)| format!("trial {r}, `{field}`: {reason}"))?;
        for (values, x) in per_trial
            .iter_mut()
            .zip([trial.choice, trial.reward, trial.block])
        {
            values.push(x as f32);
        }
        let per_bin = |v: Option<&Vec<f64>>, name: &str| match v {
            Some(v) if v.len() == n_bins => Ok(v.iter().map(|&x| x as f32).collect()),
            Some(v) => Err(format!(
                "trial {r}: {name} has {} values for {n_bins} bins",
                v.len()
            )),
            None => Ok(vec![f32::NAN; n_bins]),
        };
        whisker.extend(per_bin(Some(&trial.whisker), schema::WHISKER)?);
        if with_wheel {
            wheel.extend(per_bin(trial.wheel.as_ref(), schema::WHEEL)?);
        }
    }
    let [choice, reward, block] = per_trial;
    for (b, values) in [
        (Behaviour::Choice, choice),
        (Behaviour::Reward, reward),
        (Behaviour::Block, block),
        (Behaviour::Whisker, whisker),
    ] {
        *group.behaviour.slot(b) = Some(values);
    }
    if with_wheel {
        *group.behaviour.slot(Behaviour::Wheel) = Some(wheel);
    }
    Ok(group)
}

fn record_batch(
    schema: &arrow_schema::SchemaRef,
    info: &SessionInfo,
    trials: &[TrialRecord],
    with_wheel: bool,
) -> std::result::Result<RecordBatch, String> {
    let n = trials.len();
    let i64_lists = |f: &dyn Fn(&TrialRecord) -> Vec<i64>| -> ArrayRef {
        let mut b = ListBuilder::new(Int64Builder::new());
        for t in trials {
            b.values().append_slice(&f(t));
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let f64_lists = |f: &dyn Fn(&TrialRecord) -> Option<Vec<f64>>| -> ArrayRef {
        let mut b = ListBuilder::new(Float64Builder::new());
        for t in trials {
            match f(t) {
                Some(v) => {
                    b.values().append_slice(&v);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    };
    let repeat_strings = |v: &[String]| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for _ in 0..n {
            for s in v {
                b.values().append_value(s);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let repeat_i64 = |v: &[i64]| -> ArrayRef {
        let mut b = ListBuilder::new(Int64Builder::new());
        for _ in 0..n {
            b.values().append_slice(v);
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let repeat_f64 = |v: &[f64]| -> ArrayRef {
        let mut b = ListBuilder::new(Float64Builder::new());
        for _ in 0..n {
            b.values().append_slice(v);
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let string = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s; n])) };
    let mut columns: Vec<ArrayRef> = vec![
        i64_lists(&|t| t.counts.clone()),
        i64_lists(&|t| t.indices.clone()),
        i64_lists(&|t| t.indptr.clone()),
        i64_lists(&|t| vec![t.n_bins as i64, info.regions.len() as i64]),
        f64_lists(&|t| Some(vec![t.choice])),
        f64_lists(&|t| Some(vec![t.reward])),
        f64_lists(&|t| Some(vec![t.block])),
        f64_lists(&|t| Some(t.whisker.clone())),
    ];
    if with_wheel {
        columns.push(f64_lists(&|t| t.wheel.clone()));
    }
    columns.extend([
        Arc::new(Float64Array::from(vec![info.binsize; n])) as ArrayRef,
        Arc::new(Int64Array::from(vec![info.interval_len; n])),
        string(&info.eid),
        string(&info.probe_name),
        string(&info.subject),
        string(&info.lab),
        Arc::new(Float64Array::from(vec![info.sampling_freq; n])),
        repeat_strings(&info.regions),
        repeat_i64(&info.channels),
        repeat_f64(&info.depths),
        repeat_i64(&info.good),
        repeat_strings(&info.uuids),
    ]);
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

/// Writes all three splits of a session; `trials[s]` are the trials of split `s`.
pub async fn write_session(
    root: &Location,
    info: &SessionInfo,
    trials: &[Vec<TrialRecord>; 3],
    options: WriteOptions,
) -> Result<()> {
    // One schema for the session's three files, so that a split without trials (a
    // BrainWideBench pretraining session's test split) still has the wheel column when
    // the session has a wheel, and a side-car that agrees with the session's bins.
    let with_wheel = trials.iter().flatten().any(|t| t.wheel.is_some());
    let n_bins = trials.iter().flatten().next().map_or(0, |t| t.n_bins);
    for split in Split::ALL {
        write_split_with(
            root,
            info,
            split,
            &trials[split as usize],
            options,
            (with_wheel, n_bins),
        )
        .await?;
    }
    Ok(())
}
