//! Reading the files of an ONE/ALF session cache: `.npy` arrays, CSV and Parquet tables.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_schema::DataType;
use npyz::{DType, NpyFile, TypeChar};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{IngestError, Result};

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IngestError::MissingFile {
            path: path.to_path_buf(),
        },
        _ => IngestError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

fn npy(path: &Path) -> Result<NpyFile<std::io::BufReader<File>>> {
    NpyFile::new(std::io::BufReader::with_capacity(1 << 20, open(path)?)).map_err(|e| {
        IngestError::Read {
            path: path.to_path_buf(),
            reason: format!("not a .npy file: {e}"),
        }
    })
}

macro_rules! read_as {
    ($file:expr, $path:expr, $out:ty, [$(($tc:pat, $size:expr, $t:ty)),*]) => {{
        let file = $file;
        let DType::Plain(ts) = file.dtype() else {
            return Err(IngestError::Read { path: $path.to_path_buf(), reason: "structured arrays are not supported".into() });
        };
        let read_err = |e: std::io::Error| IngestError::Read { path: $path.to_path_buf(), reason: e.to_string() };
        match (ts.type_char(), ts.size_field()) {
            $(($tc, $size) => file.into_vec::<$t>().map_err(read_err)?.into_iter().map(|v| v as $out).collect::<Vec<$out>>(),)*
            _ => return Err(IngestError::Read { path: $path.to_path_buf(), reason: format!("unsupported dtype {ts}") }),
        }
    }};
}

/// A 1-D (or (n, 1)) numeric array as f64.
pub fn f64s(path: &Path) -> Result<Vec<f64>> {
    let file = npy(path)?;
    check_1d(path, file.shape())?;
    Ok(read_as!(
        file,
        path,
        f64,
        [
            (TypeChar::Float, 8, f64),
            (TypeChar::Float, 4, f32),
            (TypeChar::Int, 8, i64),
            (TypeChar::Int, 4, i32),
            (TypeChar::Int, 2, i16),
            (TypeChar::Int, 1, i8),
            (TypeChar::Uint, 8, u64),
            (TypeChar::Uint, 4, u32),
            (TypeChar::Uint, 2, u16),
            (TypeChar::Uint, 1, u8)
        ]
    ))
}

/// A 1-D (or (n, 1)) integer array as i64.
pub fn i64s(path: &Path) -> Result<Vec<i64>> {
    let file = npy(path)?;
    check_1d(path, file.shape())?;
    Ok(read_as!(
        file,
        path,
        i64,
        [
            (TypeChar::Int, 8, i64),
            (TypeChar::Int, 4, i32),
            (TypeChar::Int, 2, i16),
            (TypeChar::Int, 1, i8),
            (TypeChar::Uint, 8, u64),
            (TypeChar::Uint, 4, u32),
            (TypeChar::Uint, 2, u16),
            (TypeChar::Uint, 1, u8)
        ]
    ))
}

fn check_1d(path: &Path, shape: &[u64]) -> Result<()> {
    match shape {
        [_] | [_, 1] => Ok(()),
        other => Err(IngestError::Read {
            path: path.to_path_buf(),
            reason: format!("expected a 1-D array, found shape {other:?}"),
        }),
    }
}

/// One named column of a CSV file with a header row.
pub fn csv_column(path: &Path, column: &str) -> Result<Vec<String>> {
    let mut reader = csv::Reader::from_reader(open(path)?);
    let read_err = |e: csv::Error| IngestError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let headers = reader.headers().map_err(read_err)?.clone();
    let index = headers
        .iter()
        .position(|h| h == column)
        .ok_or_else(|| IngestError::Read {
            path: path.to_path_buf(),
            reason: format!(
                "no column `{column}` (columns: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        })?;
    reader
        .records()
        .map(|r| {
            r.map(|r| r.get(index).unwrap_or_default().to_string())
                .map_err(read_err)
        })
        .collect()
}

/// Numeric columns of a Parquet table as f64 (absent columns are `None`).
pub fn parquet_columns(path: &Path, columns: &[&str]) -> Result<Vec<Option<Vec<f64>>>> {
    let read_err = |reason: String| IngestError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
        .map_err(|e| read_err(format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| read_err(e.to_string()))?;
    let mut out: Vec<Option<Vec<f64>>> = columns
        .iter()
        .map(|c| schema.index_of(c).ok().map(|_| Vec::new()))
        .collect();
    for batch in reader {
        let batch = batch.map_err(|e| read_err(e.to_string()))?;
        for (name, slot) in columns.iter().zip(out.iter_mut()) {
            let Some(values) = slot else { continue };
            let array = batch.column_by_name(name).expect("present in the schema");
            let array = arrow_cast::cast(array, &DataType::Float64)
                .map_err(|e| read_err(format!("column `{name}` is not numeric: {e}")))?;
            let array = array.as_primitive::<Float64Type>();
            values.extend((0..array.len()).map(|i| {
                if array.is_null(i) {
                    f64::NAN
                } else {
                    array.value(i)
                }
            }));
        }
    }
    Ok(out)
}

/// The probe folders of a session (`alf/probe*/`, or their `pykilosort/` subfolder when it
/// holds the spikes), sorted by name.
pub fn probe_folders(session: &Path) -> Result<Vec<(String, PathBuf)>> {
    let alf = session.join("alf");
    let entries =
        std::fs::read_dir(&alf).map_err(|_| IngestError::MissingFile { path: alf.clone() })?;
    let mut probes = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !path.is_dir() || !name.starts_with("probe") {
            continue;
        }
        let folder = if path.join("pykilosort").join("spikes.times.npy").exists() {
            path.join("pykilosort")
        } else {
            path
        };
        probes.push((name, folder));
    }
    probes.sort();
    if probes.is_empty() {
        return Err(IngestError::MissingFile {
            path: alf.join("probe*/spikes.times.npy"),
        });
    }
    Ok(probes)
}
