//! The compact side-car of a split file: its spikes and behaviour as Arrow IPC, one record
//! batch per Parquet row group, written beside the published layout at ingest (or by
//! `mtm data sidecar` for a dataset made elsewhere).
//!
//! Why: the published layout stores each trial's CSR as three lists of int64, which
//! Parquet decodes through repetition and definition levels into 8-byte values; decoding
//! that is the first epoch's bottleneck (the row-group cache serves later epochs). The
//! side-car stores what [`DecodedGroup`] holds in the narrowest types (unit indices as
//! u16, counts as u8 where they fit, per-bin offsets as u32, behaviour as f32), so a cold
//! read is one ranged GET, a check and a copy. Arrow IPC (arrow-rs's own
//! reader and writer) rather than a format of our own: pyarrow reads it
//! (`pyarrow.ipc.open_file`), and its footer indexes the record batches for ranged reads.
//!
//! Where: `{eid}_aligned/mtm/{stem}.arrow` for `{eid}_aligned/data/{stem}.parquet`; outside
//! `data/`, so that tools reading the published layout never see it.
//!
//! Trust: the side-car names the size of the Parquet file it was made from, its units and
//! bins; one that disagrees with its Parquet file (or cannot be read) is ignored with a
//! warning and the Parquet file is read instead. Its contents are checked as they are
//! decoded (offsets, unit range), like the Parquet path's.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt8Type, UInt16Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, ListArray, PrimitiveArray, RecordBatch,
};
use arrow_buffer::{Buffer, OffsetBuffer};
use arrow_ipc::Block;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use object_store::ObjectStoreExt;

use crate::error::{DataError, Result};
use crate::session::{Behaviour, BehaviourColumns, DecodedGroup, MAX_U16};
use crate::store::Location;

/// The folder beside `data/` that holds a session's side-cars.
pub const FOLDER: &str = "mtm";
/// How a side-car's file name ends.
pub const SUFFIX: &str = ".arrow";

const VERSION: &str = "1";
const KEY_VERSION: &str = "mtm.sidecar.version";
const KEY_SOURCE_SIZE: &str = "mtm.sidecar.source_bytes";
const KEY_UNITS: &str = "mtm.sidecar.n_units";
const KEY_BINS: &str = "mtm.sidecar.n_bins";
const INDPTR: &str = "indptr";
const UNITS: &str = "units";
const COUNTS: &str = "counts";

/// The side-car of the Parquet file at `parquet` (`…/data/{stem}.parquet` →
/// `…/mtm/{stem}.arrow`).
pub fn location_for(parquet: &Location) -> Location {
    let name = parquet.name();
    let stem = name.strip_suffix(".parquet").unwrap_or(&name);
    parquet
        .parent()
        .parent()
        .join(&format!("{FOLDER}/{stem}{SUFFIX}"))
}

/// An opened side-car: its footer read, ready for ranged reads of one row group.
#[derive(Debug)]
pub struct Sidecar {
    /// Where it is.
    pub location: Location,
    blocks: Vec<Block>,
    decoder: arrow_ipc::reader::FileDecoder,
    /// Byte size of the Parquet file it was made from.
    source_size: u64,
    /// Units, bins and behaviour columns it was written with.
    pub n_units: usize,
    /// Bins per trial.
    pub n_bins: usize,
    behaviour: BehaviourColumns,
}

impl Sidecar {
    /// Reads the footer of the side-car at `location` (`size` bytes). `Err` carries the
    /// reason it cannot be read; whether it agrees with its Parquet file is
    /// [`Sidecar::disagreement`]'s to say.
    pub(crate) async fn open(location: Location, size: u64) -> std::result::Result<Self, String> {
        const TAIL: u64 = 10;
        if size < TAIL + 8 {
            return Err(format!("{size} bytes is too short for an Arrow IPC file"));
        }
        // One read usually covers the footer (a few hundred bytes per row group).
        let start = size.saturating_sub(64 * 1024);
        let tail = location
            .store
            .get_range(&location.path, start..size)
            .await
            .map_err(|e| e.to_string())?;
        let n = tail.len();
        let footer_len = arrow_ipc::reader::read_footer_length(
            tail[n - TAIL as usize..].try_into().expect("ten bytes"),
        )
        .map_err(|e| e.to_string())?;
        let footer_bytes = if footer_len + (TAIL as usize) <= n {
            tail.slice(n - TAIL as usize - footer_len..n - TAIL as usize)
        } else {
            let from = size
                .checked_sub(TAIL + footer_len as u64)
                .ok_or("the footer length exceeds the file")?;
            location
                .store
                .get_range(&location.path, from..size - TAIL)
                .await
                .map_err(|e| e.to_string())?
        };
        let footer = arrow_ipc::root_as_footer(&footer_bytes)
            .map_err(|e| format!("unreadable Arrow IPC footer: {e}"))?;
        let schema = footer.schema().ok_or("the footer has no schema")?;
        let schema: SchemaRef =
            Arc::new(arrow_ipc::convert::try_fb_to_schema(schema).map_err(|e| e.to_string())?);
        let blocks: Vec<Block> = footer
            .recordBatches()
            .ok_or("the footer lists no record batches")?
            .iter()
            .copied()
            .collect();
        let meta = schema.metadata();
        let number = |key: &str| -> std::result::Result<u64, String> {
            meta.get(key)
                .ok_or_else(|| format!("metadata `{key}` is missing"))?
                .parse()
                .map_err(|e| format!("metadata `{key}`: {e}"))
        };
        match meta.get(KEY_VERSION) {
            Some(v) if v == VERSION => {}
            other => {
                return Err(format!(
                    "side-car version {other:?}, this mtm reads {VERSION}"
                ));
            }
        }
        let mut behaviour = BehaviourColumns::default();
        for b in Behaviour::ALL {
            *behaviour.slot(b) = schema.index_of(b.column()).is_ok();
        }
        for column in [INDPTR, UNITS, COUNTS] {
            schema
                .index_of(column)
                .map_err(|_| format!("column `{column}` is missing"))?;
        }
        Ok(Self {
            source_size: number(KEY_SOURCE_SIZE)?,
            n_units: number(KEY_UNITS)? as usize,
            n_bins: number(KEY_BINS)? as usize,
            decoder: arrow_ipc::reader::FileDecoder::new(schema, footer.version()),
            location,
            blocks,
            behaviour,
        })
    }

    /// Whether it carries every behaviour column in `needed`.
    /// Why it cannot stand in for its Parquet file (`parquet_size` bytes, `groups` row
    /// groups) of a session of `n_units` x `n_bins` with `behaviour` columns; `None` when
    /// it agrees. The one rule for when a side-car is used.
    pub(crate) fn disagreement(
        &self,
        parquet_size: u64,
        groups: usize,
        n_units: usize,
        n_bins: usize,
        behaviour: BehaviourColumns,
    ) -> Option<String> {
        if self.source_size != parquet_size {
            Some(format!(
                "made from a Parquet file of {} bytes, the file now has {parquet_size} (stale)",
                self.source_size
            ))
        } else if self.blocks.len() != groups {
            Some(format!(
                "{} record batches for {groups} Parquet row groups",
                self.blocks.len()
            ))
        } else if (self.n_units, self.n_bins) != (n_units, n_bins) {
            Some(format!(
                "written for {} units x {} bins, the session has {n_units} x {n_bins}",
                self.n_units, self.n_bins
            ))
        } else if !behaviour.present().all(|b| self.behaviour.has(b)) {
            Some("it lacks behaviour columns the session has".into())
        } else {
            None
        }
    }

    /// Reads and decodes row group `group` (`rows` trials, the first being row
    /// `first_row` of the file), keeping the behaviour columns in `behaviour`.
    pub(crate) async fn read_group(
        &self,
        group: usize,
        rows: usize,
        first_row: usize,
        behaviour: BehaviourColumns,
    ) -> Result<DecodedGroup> {
        let url = self.location.url();
        let block = self.blocks[group];
        let from = block.offset() as u64;
        let len = block.metaDataLength() as u64 + block.bodyLength() as u64;
        let bytes = self
            .location
            .store
            .get_range(&self.location.path, from..from + len)
            .await
            .map_err(|source| DataError::Store {
                url: url.clone(),
                source,
            })?;
        let batch = self
            .decoder
            .read_record_batch(&block, &Buffer::from(bytes))
            .map_err(|e| DataError::Inconsistent {
                url: url.clone(),
                reason: format!("record batch {group} cannot be read: {e}"),
            })?
            .ok_or_else(|| DataError::Inconsistent {
                url: url.clone(),
                reason: format!("record batch {group} is empty"),
            })?;
        if batch.num_rows() != rows {
            return Err(DataError::Inconsistent {
                url,
                reason: format!(
                    "record batch {group} has {} trials, its Parquet row group {rows}",
                    batch.num_rows()
                ),
            });
        }
        decode(
            &url,
            &batch,
            self.n_bins,
            self.n_units,
            first_row,
            behaviour,
        )
    }
}

/// Column `name` of a side-car's record batch, as stored (no cast: the side-car's types
/// are its own, unlike the published layout's).
fn required<'a>(url: &str, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataError::MissingColumn {
            url: url.to_string(),
            column: name.to_string(),
        })
}

/// The values of a list column of unsigned integers, with the list offsets.
enum Ints<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
}

fn list_parts<'a>(url: &str, batch: &'a RecordBatch, name: &str) -> Result<(&'a [i32], Ints<'a>)> {
    let wrong = |found: &DataType| DataError::ColumnType {
        url: url.to_string(),
        column: name.to_string(),
        expected: "a non-null list of non-null u8, u16 or u32".into(),
        found: found.to_string(),
    };
    let array = required(url, batch, name)?;
    let list = array
        .as_list_opt::<i32>()
        .ok_or_else(|| wrong(array.data_type()))?;
    let values = list.values();
    if list.null_count() > 0 || values.null_count() > 0 {
        return Err(wrong(array.data_type()));
    }
    let ints = match values.data_type() {
        DataType::UInt8 => Ints::U8(values.as_primitive::<UInt8Type>().values()),
        DataType::UInt16 => Ints::U16(values.as_primitive::<UInt16Type>().values()),
        DataType::UInt32 => Ints::U32(values.as_primitive::<UInt32Type>().values()),
        _ => return Err(wrong(array.data_type())),
    };
    Ok((list.value_offsets(), ints))
}

fn decode(
    url: &str,
    batch: &RecordBatch,
    n_bins: usize,
    n_units: usize,
    first_row: usize,
    behaviour: BehaviourColumns,
) -> Result<DecodedGroup> {
    let (indptr_offsets, indptr) = list_parts(url, batch, INDPTR)?;
    let (unit_offsets, units) = list_parts(url, batch, UNITS)?;
    let (count_offsets, counts) = list_parts(url, batch, COUNTS)?;
    let Ints::U32(indptr) = indptr else {
        return Err(DataError::ColumnType {
            url: url.to_string(),
            column: INDPTR.into(),
            expected: "list<u32>".into(),
            found: batch
                .schema()
                .field_with_name(INDPTR)
                .map_or_else(|_| "?".into(), |f| f.data_type().to_string()),
        });
    };
    let rows = batch.num_rows();
    let nnz = *unit_offsets.last().unwrap_or(&0) as usize;
    let mut out = DecodedGroup::new(n_bins);
    out.nnz.reserve(rows);
    out.bins.reserve(rows * (n_bins + 1));
    out.units.reserve(nnz);
    out.counts.reserve(nnz);
    for r in 0..rows {
        let err = |field: &str, reason: String| DataError::InvalidRow {
            url: url.to_string(),
            row: first_row + r,
            field: field.to_string(),
            reason,
        };
        let ip = &indptr[indptr_offsets[r] as usize..indptr_offsets[r + 1] as usize];
        let (lo, hi) = (unit_offsets[r] as usize, unit_offsets[r + 1] as usize);
        if count_offsets[r] as usize != lo || count_offsets[r + 1] as usize != hi {
            return Err(err(COUNTS, "has a different length than `units`".into()));
        }
        if ip.len() != n_bins + 1 || ip[0] != 0 || ip[n_bins] as usize != hi - lo {
            return Err(err(
                INDPTR,
                format!(
                    "expected {} offsets from 0 to the row's {} entries",
                    n_bins + 1,
                    hi - lo
                ),
            ));
        }
        if ip.windows(2).any(|w| w[1] < w[0]) {
            return Err(err(INDPTR, "decreases".into()));
        }
        let bad_unit = match &units {
            Ints::U8(u) => extend_checked(&mut out.units, &u[lo..hi], n_units),
            Ints::U16(u) => extend_checked(&mut out.units, &u[lo..hi], n_units),
            Ints::U32(u) => extend_checked(&mut out.units, &u[lo..hi], n_units),
        };
        if let Some(unit) = bad_unit {
            return Err(err(
                UNITS,
                format!("unit index {unit} is outside 0..{n_units}"),
            ));
        }
        let bad_count = match &counts {
            Ints::U8(c) => extend_checked(&mut out.counts, &c[lo..hi], MAX_U16 + 1),
            Ints::U16(c) => extend_checked(&mut out.counts, &c[lo..hi], MAX_U16 + 1),
            Ints::U32(c) => extend_checked(&mut out.counts, &c[lo..hi], MAX_U16 + 1),
        };
        if let Some(count) = bad_count {
            return Err(err(
                COUNTS,
                format!("spike count {count} is above {MAX_U16}"),
            ));
        }
        out.bins.extend_from_slice(ip);
        out.nnz.push(out.units.len() as u32);
        out.n_rows += 1;
    }
    for b in behaviour.present() {
        let name = b.column();
        let array = required(url, batch, name)?;
        let expected = if b.per_bin() {
            format!("fixed_size_list<f32, {n_bins}>")
        } else {
            "f32".into()
        };
        let wrong = || DataError::ColumnType {
            url: url.to_string(),
            column: name.to_string(),
            expected: expected.clone(),
            found: array.data_type().to_string(),
        };
        let values: &[f32] = if b.per_bin() {
            let list = array.as_fixed_size_list_opt().ok_or_else(wrong)?;
            if list.value_length() as usize != n_bins || list.null_count() > 0 {
                return Err(wrong());
            }
            let values = list
                .values()
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(wrong)?
                .values();
            if values.len() != rows * n_bins {
                return Err(wrong());
            }
            values
        } else {
            array
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(wrong)?
                .values()
        };
        *out.behaviour.slot(b) = Some(values.to_vec());
    }
    Ok(out)
}

/// Appends `values` as u16 when every one is below `limit` (at most 65,536); otherwise
/// appends nothing and returns the first value out of range.
fn extend_checked<V: Copy + Into<u32>>(
    dst: &mut Vec<u16>,
    values: &[V],
    limit: usize,
) -> Option<u32> {
    if let Some(&bad) = values.iter().find(|&&v| v.into() as usize >= limit) {
        return Some(bad.into());
    }
    dst.extend(values.iter().map(|&v| v.into() as u16));
    None
}

/// Encodes one split file's decoded row groups as a side-car. `source_size` is the byte
/// size of the Parquet file they were decoded from; `behaviour` names the columns to keep.
pub fn encode(
    groups: &[DecodedGroup],
    n_bins: usize,
    n_units: usize,
    behaviour: BehaviourColumns,
    source_size: u64,
) -> std::result::Result<Vec<u8>, String> {
    let max_count = groups.iter().flat_map(|g| &g.counts).max().copied();
    let count_type = if max_count.unwrap_or(0) <= u8::MAX as u16 {
        DataType::UInt8
    } else {
        DataType::UInt16
    };
    let unit_type = DataType::UInt16;
    let item = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
    let mut fields = vec![
        Field::new(INDPTR, item(DataType::UInt32), false),
        Field::new(UNITS, item(unit_type.clone()), false),
        Field::new(COUNTS, item(count_type.clone()), false),
    ];
    for b in behaviour.present() {
        let t = if b.per_bin() {
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                n_bins as i32,
            )
        } else {
            DataType::Float32
        };
        fields.push(Field::new(b.column(), t, false));
    }
    let metadata = HashMap::from([
        (KEY_VERSION.to_string(), VERSION.to_string()),
        (KEY_SOURCE_SIZE.to_string(), source_size.to_string()),
        (KEY_UNITS.to_string(), n_units.to_string()),
        (KEY_BINS.to_string(), n_bins.to_string()),
    ]);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    // Uncompressed: on 12 sessions of ~700 units LZ4 made the files a third smaller
    // (108 MB against 162 MB; Parquet 101 MB) but decoding 3.4x slower (15 k against 51 k
    // trials/s per core), and the cold read is what the side-car is for.
    let mut writer =
        FileWriter::try_new_with_options(Vec::new(), &schema, IpcWriteOptions::default())
            .map_err(|e| e.to_string())?;
    for group in groups {
        let batch = group_batch(group, &schema, n_bins, behaviour)?;
        writer.write(&batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    writer.into_inner().map_err(|e| e.to_string())
}

fn group_batch(
    group: &DecodedGroup,
    schema: &SchemaRef,
    n_bins: usize,
    behaviour: BehaviourColumns,
) -> std::result::Result<RecordBatch, String> {
    let rows = group.n_rows;
    if group.n_bins != n_bins {
        return Err(format!(
            "a group of {} bins in a file of {n_bins}",
            group.n_bins
        ));
    }
    let list = |field: usize, lengths: &dyn Fn(usize) -> usize, values: ArrayRef| -> ArrayRef {
        let DataType::List(item) = schema.field(field).data_type() else {
            unreachable!("the first three columns are lists")
        };
        let offsets = OffsetBuffer::<i32>::from_lengths((0..rows).map(lengths));
        Arc::new(ListArray::new(Arc::clone(item), offsets, values, None))
    };
    let per_row = |r: usize| (group.nnz[r + 1] - group.nnz[r]) as usize;
    let counts: ArrayRef = match schema.field(2).data_type() {
        DataType::List(item) if item.data_type() == &DataType::UInt8 => {
            Arc::new(PrimitiveArray::<UInt8Type>::from_iter_values(
                group.counts.iter().map(|&c| c as u8),
            ))
        }
        _ => Arc::new(PrimitiveArray::<UInt16Type>::from(group.counts.clone())),
    };
    let mut columns: Vec<ArrayRef> = vec![
        list(
            0,
            &|_| n_bins + 1,
            Arc::new(PrimitiveArray::<UInt32Type>::from(group.bins.clone())),
        ),
        list(
            1,
            &per_row,
            Arc::new(PrimitiveArray::<UInt16Type>::from(group.units.clone())),
        ),
        list(2, &per_row, counts),
    ];
    for b in behaviour.present() {
        let values = group
            .behaviour
            .get(b)
            .ok_or_else(|| format!("behaviour column `{}` is missing", b.column()))?;
        let values = Float32Array::from(values.to_vec());
        columns.push(if b.per_bin() {
            Arc::new(
                FixedSizeListArray::try_new(
                    Arc::new(Field::new("item", DataType::Float32, false)),
                    n_bins as i32,
                    Arc::new(values),
                    None,
                )
                .map_err(|e| format!("`{}`: {e}", b.column()))?,
            )
        } else {
            Arc::new(values)
        });
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

/// Writes the side-car of the Parquet file at `parquet` (whose size is `source_size`) from
/// its decoded row groups; returns where it went and its size in bytes.
pub async fn write(
    parquet: &Location,
    source_size: u64,
    groups: &[DecodedGroup],
    n_bins: usize,
    n_units: usize,
    behaviour: BehaviourColumns,
) -> Result<(Location, u64)> {
    let target = location_for(parquet);
    let url = target.url();
    let bytes = encode(groups, n_bins, n_units, behaviour, source_size).map_err(|reason| {
        DataError::Write {
            url: url.clone(),
            reason,
        }
    })?;
    let size = bytes.len() as u64;
    target
        .store
        .put(&target.path, bytes.into())
        .await
        .map_err(|source| DataError::Store { url, source })?;
    Ok((target, size))
}

/// Removes the side-car of `parquet`, if there is one (a rewritten Parquet file must not
/// keep a side-car made from its earlier contents).
pub async fn remove(parquet: &Location) -> Result<()> {
    let target = location_for(parquet);
    match target.store.delete(&target.path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(DataError::Store {
            url: target.url(),
            source,
        }),
    }
}

/// What [`write_all`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Side-cars written (one per split file).
    pub files: usize,
    /// Bytes of the Parquet files they were made from.
    pub parquet_bytes: u64,
    /// Bytes of the side-cars.
    pub sidecar_bytes: u64,
}

/// Writes (or rewrites) the side-car of every split file of the dataset at `url`, decoding
/// each file from Parquet; `progress(done, total)` after each file. For datasets written
/// by other tools (mtm's own writers make side-cars as they write).
pub fn write_all(url: &str, mut progress: impl FnMut(usize, usize)) -> Result<Written> {
    let dataset = crate::Dataset::open_with(
        url,
        &crate::OpenOptions {
            cache_bytes: 0,
            sidecars: false,
            ..Default::default()
        },
    )?;
    let files: Vec<_> = dataset
        .sessions
        .iter()
        .flat_map(|s| {
            crate::Split::ALL
                .into_iter()
                .flat_map(move |split| (0..s.files(split).len()).map(move |f| (s, split, f)))
        })
        .collect();
    let mut written = Written::default();
    progress(0, files.len());
    for (done, &(session, split, f)) in files.iter().enumerate() {
        let file = &session.files(split)[f];
        let groups = (0..file.row_group_rows.len())
            .map(|g| {
                dataset.block_on(crate::session::read_group(
                    session,
                    split,
                    f,
                    g,
                    crate::GroupSource::Parquet,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let (_, size) = dataset.block_on(write(
            &file.location,
            file.size,
            &groups,
            session.n_bins,
            session.n_units,
            session.behaviour,
        ))?;
        written.files += 1;
        written.parquet_bytes += file.size;
        written.sidecar_bytes += size;
        progress(done + 1, files.len());
    }
    Ok(written)
}
