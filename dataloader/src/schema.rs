//! The published MtM layout (spec §1.1): column names, the Arrow schema we write, and the
//! type checks applied to files we read.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, GenericListArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::{DataError, Result};

/// CSR values: spike counts.
pub const SPIKES_DATA: &str = "spikes_sparse_data";
/// CSR column indices: unit index.
pub const SPIKES_INDICES: &str = "spikes_sparse_indices";
/// CSR row pointer over time bins, length `n_bins + 1`.
pub const SPIKES_INDPTR: &str = "spikes_sparse_indptr";
/// `[n_bins, n_units]`.
pub const SPIKES_SHAPE: &str = "spikes_sparse_shape";
/// Region acronym per unit.
pub const CLUSTER_REGIONS: &str = "cluster_regions";
/// Session id.
pub const EID: &str = "eid";
/// Choice, -1 or +1 (list of one double).
pub const CHOICE: &str = "choice";
/// Reward, 0 or 1 (list of one double).
pub const REWARD: &str = "reward";
/// Block prior probabilityLeft, 0.2/0.5/0.8 (list of one double).
pub const BLOCK: &str = "block";
/// Whisker motion energy, one value per bin.
pub const WHISKER: &str = "whisker-motion-energy";
/// Wheel speed, one value per bin (optional column).
pub const WHEEL: &str = "wheel-speed";
/// Bin width in seconds.
pub const BINSIZE: &str = "binsize";
/// Trial window length in seconds.
pub const INTERVAL_LEN: &str = "interval_len";
/// Probe name(s).
pub const PROBE_NAME: &str = "probe_name";
/// Subject (mouse) name.
pub const SUBJECT: &str = "subject";
/// Lab name.
pub const LAB: &str = "lab";
/// Sampling frequency of the recording (Hz).
pub const SAMPLING_FREQ: &str = "sampling_freq";
/// Peak channel per unit.
pub const CLUSTER_CHANNELS: &str = "cluster_channels";
/// Depth per unit (µm).
pub const CLUSTER_DEPTHS: &str = "cluster_depths";
/// 1 where the unit passed IBL QC.
pub const GOOD_CLUSTERS: &str = "good_clusters";
/// Stable unit ids.
pub const CLUSTER_UUIDS: &str = "cluster_uuids";

/// The columns without which a file is not a session file.
pub const REQUIRED: [&str; 6] = [
    SPIKES_DATA,
    SPIKES_INDICES,
    SPIKES_INDPTR,
    SPIKES_SHAPE,
    CLUSTER_REGIONS,
    EID,
];

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// The Arrow schema of the files we write, in the published column order.
pub fn write_schema(with_wheel: bool) -> SchemaRef {
    let i64s = || list_of(DataType::Int64);
    let f64s = || list_of(DataType::Float64);
    let mut fields = vec![
        Field::new(SPIKES_DATA, i64s(), true),
        Field::new(SPIKES_INDICES, i64s(), true),
        Field::new(SPIKES_INDPTR, i64s(), true),
        Field::new(SPIKES_SHAPE, i64s(), true),
        Field::new(CHOICE, f64s(), true),
        Field::new(REWARD, f64s(), true),
        Field::new(BLOCK, f64s(), true),
        Field::new(WHISKER, f64s(), true),
    ];
    if with_wheel {
        fields.push(Field::new(WHEEL, f64s(), true));
    }
    fields.extend([
        Field::new(BINSIZE, DataType::Float64, true),
        Field::new(INTERVAL_LEN, DataType::Int64, true),
        Field::new(EID, DataType::Utf8, true),
        Field::new(PROBE_NAME, DataType::Utf8, true),
        Field::new(SUBJECT, DataType::Utf8, true),
        Field::new(LAB, DataType::Utf8, true),
        Field::new(SAMPLING_FREQ, DataType::Float64, true),
        Field::new(CLUSTER_REGIONS, list_of(DataType::Utf8), true),
        Field::new(CLUSTER_CHANNELS, i64s(), true),
        Field::new(CLUSTER_DEPTHS, f64s(), true),
        Field::new(GOOD_CLUSTERS, i64s(), true),
        Field::new(CLUSTER_UUIDS, list_of(DataType::Utf8), true),
    ]);
    Arc::new(Schema::new(fields))
}

/// What a column must look like for us to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A list of integers (read as i64).
    IntList,
    /// A list of numbers (read as f64).
    FloatList,
    /// A number, or a list holding one number (read as f64).
    FloatOrList,
    /// A list of strings.
    StringList,
    /// A string.
    String,
    /// A number.
    Float,
}

impl Expect {
    fn describe(self) -> &'static str {
        match self {
            Expect::IntList => "list<int64> (any integer list)",
            Expect::FloatList => "list<double> (any numeric list)",
            Expect::FloatOrList => "list<double> of length 1, or double",
            Expect::StringList => "list<string>",
            Expect::String => "string",
            Expect::Float => "double",
        }
    }

    fn accepts(self, dt: &DataType) -> bool {
        let item = match dt {
            DataType::List(f) | DataType::LargeList(f) => Some(f.data_type()),
            _ => None,
        };
        match self {
            Expect::IntList => item.is_some_and(|t| t.is_integer()),
            Expect::FloatList => item.is_some_and(|t| t.is_numeric()),
            Expect::FloatOrList => dt.is_numeric() || item.is_some_and(|t| t.is_numeric()),
            Expect::StringList => item.is_some_and(|t| {
                matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
            }),
            Expect::String => matches!(
                dt,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            Expect::Float => dt.is_numeric(),
        }
    }

    /// The type we cast an accepted column to before reading it.
    fn target(self, dt: &DataType) -> DataType {
        match self {
            Expect::IntList => list_of(DataType::Int64),
            Expect::FloatList => list_of(DataType::Float64),
            Expect::FloatOrList if dt.is_numeric() => DataType::Float64,
            Expect::FloatOrList => list_of(DataType::Float64),
            Expect::StringList => list_of(DataType::Utf8),
            Expect::String => DataType::Utf8,
            Expect::Float => DataType::Float64,
        }
    }
}

/// The expectation for a known column, `None` for columns we do not read.
pub(crate) fn expectation(column: &str) -> Option<Expect> {
    Some(match column {
        SPIKES_DATA | SPIKES_INDICES | SPIKES_INDPTR | SPIKES_SHAPE => Expect::IntList,
        CLUSTER_CHANNELS | GOOD_CLUSTERS => Expect::IntList,
        CLUSTER_REGIONS | CLUSTER_UUIDS => Expect::StringList,
        CLUSTER_DEPTHS | WHISKER | WHEEL => Expect::FloatList,
        CHOICE | REWARD | BLOCK => Expect::FloatOrList,
        EID | PROBE_NAME | SUBJECT | LAB => Expect::String,
        BINSIZE | SAMPLING_FREQ | INTERVAL_LEN => Expect::Float,
        _ => return None,
    })
}

/// Checks the types of every known column present in `schema`, and that required ones exist.
pub(crate) fn check_schema(url: &str, schema: &Schema) -> Result<()> {
    for column in REQUIRED {
        if schema.field_with_name(column).is_err() {
            return Err(DataError::MissingColumn {
                url: url.to_string(),
                column: column.to_string(),
            });
        }
    }
    for field in schema.fields() {
        if let Some(expect) = expectation(field.name())
            && !expect.accepts(field.data_type())
        {
            return Err(DataError::ColumnType {
                url: url.to_string(),
                column: field.name().clone(),
                expected: expect.describe().to_string(),
                found: field.data_type().to_string(),
            });
        }
    }
    Ok(())
}

/// A column of `batch` cast to the type we read it as. `None` when absent.
pub(crate) fn column(url: &str, batch: &RecordBatch, name: &str) -> Result<Option<ArrayRef>> {
    let Some(array) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let expect = expectation(name).expect("only known columns are read");
    let target = expect.target(array.data_type());
    if array.data_type() == &target {
        return Ok(Some(Arc::clone(array)));
    }
    arrow_cast::cast(array, &target)
        .map(Some)
        .map_err(|e| DataError::ColumnType {
            url: url.to_string(),
            column: name.to_string(),
            expected: expect.describe().to_string(),
            found: format!("{} ({e})", array.data_type()),
        })
}

/// A required column, cast.
pub(crate) fn required(url: &str, batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    column(url, batch, name)?.ok_or_else(|| DataError::MissingColumn {
        url: url.to_string(),
        column: name.to_string(),
    })
}

/// A list column's (offsets, values, list-level nulls) after [`column`] cast it to i64 items.
pub(crate) struct I64Lists<'a> {
    list: &'a GenericListArray<i32>,
    values: &'a [i64],
}

impl<'a> I64Lists<'a> {
    pub(crate) fn new(url: &str, name: &str, array: &'a ArrayRef) -> Result<Self> {
        let list = array.as_list::<i32>();
        let values = list.values().as_primitive::<Int64Type>();
        if values.null_count() > 0 {
            return Err(null_items(url, name, list));
        }
        Ok(Self {
            list,
            values: values.values(),
        })
    }

    /// Row `row`'s values, or `None` when the row is null.
    pub(crate) fn row(&self, row: usize) -> Option<&'a [i64]> {
        if self.list.is_null(row) {
            return None;
        }
        let offsets = self.list.value_offsets();
        Some(&self.values[offsets[row] as usize..offsets[row + 1] as usize])
    }
}

/// Same as [`I64Lists`] for f64 items.
pub(crate) struct F64Lists<'a> {
    list: &'a GenericListArray<i32>,
    values: &'a [f64],
    items: &'a arrow_array::PrimitiveArray<Float64Type>,
}

impl<'a> F64Lists<'a> {
    pub(crate) fn new(array: &'a ArrayRef) -> Self {
        let list = array.as_list::<i32>();
        let items = list.values().as_primitive::<Float64Type>();
        Self {
            list,
            values: items.values(),
            items,
        }
    }

    /// Row `row`'s values (nulls inside read as NaN), or `None` when the row is null.
    pub(crate) fn row(&self, row: usize) -> Option<Vec<f64>> {
        if self.list.is_null(row) {
            return None;
        }
        let offsets = self.list.value_offsets();
        let range = offsets[row] as usize..offsets[row + 1] as usize;
        Some(
            range
                .map(|i| {
                    if self.items.is_null(i) {
                        f64::NAN
                    } else {
                        self.values[i]
                    }
                })
                .collect(),
        )
    }
}

fn null_items(url: &str, name: &str, list: &GenericListArray<i32>) -> DataError {
    let offsets = list.value_offsets();
    let values = list.values();
    let row = (0..list.len())
        .find(|&r| (offsets[r] as usize..offsets[r + 1] as usize).any(|i| values.is_null(i)))
        .unwrap_or(0);
    DataError::InvalidRow {
        url: url.to_string(),
        row,
        field: name.to_string(),
        reason: "contains null values".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_schema_passes_our_own_check() {
        check_schema("mem://x", &write_schema(true)).unwrap();
        check_schema("mem://x", &write_schema(false)).unwrap();
    }

    #[test]
    fn mistyped_required_column_is_named() {
        let schema = write_schema(false);
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == SPIKES_INDPTR {
                    Field::new(SPIKES_INDPTR, DataType::Utf8, true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let err = check_schema("file:///x.parquet", &Schema::new(fields)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("file:///x.parquet") && msg.contains(SPIKES_INDPTR),
            "{msg}"
        );
        assert!(matches!(err, DataError::ColumnType { .. }));
    }

    #[test]
    fn missing_required_column_is_named() {
        let fields: Vec<Field> = write_schema(false)
            .fields()
            .iter()
            .filter(|f| f.name() != EID)
            .map(|f| f.as_ref().clone())
            .collect();
        let err = check_schema("u", &Schema::new(fields)).unwrap_err();
        assert!(matches!(err, DataError::MissingColumn { ref column, .. } if column == EID));
    }
}
