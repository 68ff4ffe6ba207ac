//! The results table: one row per finished cell, kept as `cells/{id}/result.json` (so
//! cells finishing at once, as Slurm array tasks, never write the same file) and gathered
//! into `results.csv` and `results.parquet`.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::{Result, SweepError, io};

/// One finished cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The cell's stable id.
    pub run_id: String,
    /// Pretraining sessions.
    pub sessions: u64,
    /// Pretraining trials (train split of those sessions).
    pub trials: u64,
    /// Pretraining tokens: trials x bins per trial.
    pub tokens: u64,
    /// Masking scheme.
    pub masking: String,
    /// Model size name.
    pub model: String,
    /// Seed.
    pub seed: u64,
    /// Model parameters (with the pretraining sessions' stitchers and heads).
    pub parameters: u64,
    /// Pretraining steps.
    pub steps: u64,
    /// Trials per batch.
    pub batch_size: u64,
    /// The sweep's budget rule (`steps`, `epochs` or `converge`).
    #[serde(default)]
    pub budget_rule: String,
    /// Pretraining trials seen: steps x trials per step over every rank.
    #[serde(default)]
    pub trials_seen: u64,
    /// Passes over the pretraining trials: `trials_seen / trials`.
    #[serde(default)]
    pub epochs_seen: f64,
    /// Held-out co-smoothing bits per spike (mean over held-out sessions).
    pub co_smooth: Option<f64>,
    /// Held-out forward-prediction bits per spike.
    pub forward: Option<f64>,
    /// Held-out intra-region bits per spike.
    pub intra: Option<f64>,
    /// Held-out inter-region bits per spike.
    pub inter: Option<f64>,
    /// Held-out choice decoding accuracy.
    pub choice: Option<f64>,
    /// Held-out whisker motion energy R².
    pub whisker: Option<f64>,
    /// The smoothing + Poisson GLM baseline's co-smoothing bits per spike on the same
    /// held-out sessions and entries.
    #[serde(default)]
    pub co_smooth_baseline: Option<f64>,
    /// The baseline's forward-prediction bits per spike.
    #[serde(default)]
    pub forward_baseline: Option<f64>,
    /// The baseline's intra-region bits per spike.
    #[serde(default)]
    pub intra_baseline: Option<f64>,
    /// The baseline's inter-region bits per spike.
    #[serde(default)]
    pub inter_baseline: Option<f64>,
    /// The true rates' co-smoothing bits per spike on the same held-out entries (the
    /// ceiling; synthetic data only).
    #[serde(default)]
    pub co_smooth_ceiling: Option<f64>,
    /// The true rates' forward-prediction bits per spike.
    #[serde(default)]
    pub forward_ceiling: Option<f64>,
    /// The true rates' intra-region bits per spike.
    #[serde(default)]
    pub intra_ceiling: Option<f64>,
    /// The true rates' inter-region bits per spike.
    #[serde(default)]
    pub inter_ceiling: Option<f64>,
    /// The pretrained model's co-smoothing bits per spike on its own pretraining
    /// sessions' test trials (mean over those sessions; `None` from scratch or when the
    /// sweep does not score pretraining).
    #[serde(default)]
    pub own_co_smooth: Option<f64>,
    /// The baseline's co-smoothing on the same pretraining sessions and entries.
    #[serde(default)]
    pub own_co_smooth_baseline: Option<f64>,
    /// The true rates' co-smoothing on the same pretraining sessions and entries.
    #[serde(default)]
    pub own_co_smooth_ceiling: Option<f64>,
    /// The pretrained model's forward-prediction bits per spike on its own pretraining
    /// sessions' test trials (the task temporal masking trains for).
    #[serde(default)]
    pub own_forward: Option<f64>,
    /// The baseline's forward prediction on the same pretraining sessions and entries.
    #[serde(default)]
    pub own_forward_baseline: Option<f64>,
    /// The true rates' forward prediction on the same pretraining sessions and entries.
    #[serde(default)]
    pub own_forward_ceiling: Option<f64>,
    /// Wall time of the cell (pretraining, fine-tuning, evaluation), seconds.
    pub wall_time_s: f64,
    /// Ranks of the pretraining run.
    pub world_size: u64,
    /// `git describe` of the code that ran the cell ("unknown" outside a checkout).
    pub git_commit: String,
    /// FNV-1a hash of the cell's resolved pretraining and fine-tuning configurations.
    pub config_hash: String,
}

/// Reads one metric of a row.
pub type MetricOf = fn(&Row) -> Option<f64>;

/// The metric columns: (column name, accessor).
pub const METRICS: [(&str, MetricOf); 6] = [
    ("co_smooth", |r| r.co_smooth),
    ("forward", |r| r.forward),
    ("intra", |r| r.intra),
    ("inter", |r| r.inter),
    ("choice", |r| r.choice),
    ("whisker", |r| r.whisker),
];

/// How a metric is named in the report: its table heading, its plot title and unit.
pub struct Describe {
    /// Column heading of the summary table.
    pub heading: &'static str,
    /// Title of its plot.
    pub title: &'static str,
    /// Unit of its values.
    pub unit: &'static str,
}

/// The names of `metric` (a results column), in one place for the table and the plots.
pub fn describe(metric: &str) -> Describe {
    let (heading, title, unit) = match metric {
        "co_smooth" => (
            "held-out co-smoothing",
            "Held-out co-smoothing",
            "bits per spike",
        ),
        "forward" => (
            "held-out forward prediction",
            "Held-out forward prediction",
            "bits per spike",
        ),
        "intra" => (
            "held-out intra-region",
            "Held-out intra-region prediction",
            "bits per spike",
        ),
        "inter" => (
            "held-out inter-region",
            "Held-out inter-region prediction",
            "bits per spike",
        ),
        "choice" => ("held-out choice", "Held-out choice decoding", "accuracy"),
        "whisker" => (
            "held-out whisker",
            "Held-out whisker motion energy decoding",
            "R²",
        ),
        "own_co_smooth" => (
            "co-smoothing on its pretraining sessions",
            "Co-smoothing on the pretraining sessions",
            "bits per spike",
        ),
        "own_forward" => (
            "forward prediction on its pretraining sessions",
            "Forward prediction on the pretraining sessions",
            "bits per spike",
        ),
        _ => ("metric", "metric", ""),
    };
    Describe {
        heading,
        title,
        unit,
    }
}

/// The baseline columns beside the metrics: (column name, accessor).
pub const BASELINES: [(&str, MetricOf); 4] = [
    ("co_smooth_baseline", |r| r.co_smooth_baseline),
    ("forward_baseline", |r| r.forward_baseline),
    ("intra_baseline", |r| r.intra_baseline),
    ("inter_baseline", |r| r.inter_baseline),
];

/// The ceiling columns (true rates, synthetic data): (column name, accessor).
pub const CEILINGS: [(&str, MetricOf); 4] = [
    ("co_smooth_ceiling", |r| r.co_smooth_ceiling),
    ("forward_ceiling", |r| r.forward_ceiling),
    ("intra_ceiling", |r| r.intra_ceiling),
    ("inter_ceiling", |r| r.inter_ceiling),
];

/// The scores on the pretraining sessions themselves: (column name, accessor).
pub const OWN: [(&str, MetricOf); 6] = [
    ("own_co_smooth", |r| r.own_co_smooth),
    ("own_co_smooth_baseline", |r| r.own_co_smooth_baseline),
    ("own_co_smooth_ceiling", |r| r.own_co_smooth_ceiling),
    ("own_forward", |r| r.own_forward),
    ("own_forward_baseline", |r| r.own_forward_baseline),
    ("own_forward_ceiling", |r| r.own_forward_ceiling),
];

/// The optional number column called `name`.
pub fn column(name: &str) -> Option<MetricOf> {
    scores().find(|(n, _)| *n == name).map(|(_, get)| get)
}

/// Every optional number column, in table order.
fn scores() -> impl Iterator<Item = (&'static str, MetricOf)> {
    METRICS
        .into_iter()
        .chain(BASELINES)
        .chain(CEILINGS)
        .chain(OWN)
}

/// FNV-1a of `text`, as 16 hex digits.
pub fn config_hash(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Writes a cell's row (atomically: temporary file, then rename).
pub fn write_row(cell_dir: &Path, row: &Row) -> Result<()> {
    let path = cell_dir.join("result.json");
    let tmp = cell_dir.join(".result.json.partial");
    std::fs::write(
        &tmp,
        serde_json::to_string_pretty(row).expect("rows serialise"),
    )
    .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// The row of a finished cell, if it has one.
pub fn read_row(cell_dir: &Path) -> Result<Option<Row>> {
    let path = cell_dir.join("result.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| SweepError::Output {
                what: path.display().to_string(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub(crate) fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// Writes `rows` to `results.csv` and `results.parquet` in `dir`.
pub fn write_table(dir: &Path, rows: &[Row]) -> Result<()> {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut header: Vec<&str> = vec![
        "run_id",
        "sessions",
        "trials",
        "tokens",
        "masking",
        "model",
        "seed",
        "parameters",
        "steps",
        "batch_size",
        "budget_rule",
        "trials_seen",
        "epochs_seen",
    ];
    header.extend(scores().map(|(name, _)| name));
    header.extend(["wall_time_s", "world_size", "git_commit", "config_hash"]);
    let mut csv = header.join(",") + "\n";
    for r in rows {
        let mut fields = vec![
            csv_field(&r.run_id),
            r.sessions.to_string(),
            r.trials.to_string(),
            r.tokens.to_string(),
            csv_field(&r.masking),
            csv_field(&r.model),
            r.seed.to_string(),
            r.parameters.to_string(),
            r.steps.to_string(),
            r.batch_size.to_string(),
            csv_field(&r.budget_rule),
            r.trials_seen.to_string(),
            r.epochs_seen.to_string(),
        ];
        fields.extend(scores().map(|(_, get)| opt(get(r))));
        fields.extend([
            r.wall_time_s.to_string(),
            r.world_size.to_string(),
            csv_field(&r.git_commit),
            csv_field(&r.config_hash),
        ]);
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    // Written under a per-process temporary name and renamed: array tasks finishing at
    // once each leave a complete table.
    let csv_path = dir.join("results.csv");
    let csv_tmp = dir.join(format!(".results.csv.{}.partial", std::process::id()));
    std::fs::write(&csv_tmp, csv).map_err(io(&csv_tmp))?;
    std::fs::rename(&csv_tmp, &csv_path).map_err(io(&csv_path))?;

    let text = |f: fn(&Row) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let int = |f: fn(&Row) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)))
    };
    let float = |f: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let mut fields = vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("sessions", DataType::UInt64, false),
        Field::new("trials", DataType::UInt64, false),
        Field::new("tokens", DataType::UInt64, false),
        Field::new("masking", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("seed", DataType::UInt64, false),
        Field::new("parameters", DataType::UInt64, false),
        Field::new("steps", DataType::UInt64, false),
        Field::new("batch_size", DataType::UInt64, false),
        Field::new("budget_rule", DataType::Utf8, false),
        Field::new("trials_seen", DataType::UInt64, false),
        Field::new("epochs_seen", DataType::Float64, false),
    ];
    let mut columns = vec![
        text(|r| &r.run_id),
        int(|r| r.sessions),
        int(|r| r.trials),
        int(|r| r.tokens),
        text(|r| &r.masking),
        text(|r| &r.model),
        int(|r| r.seed),
        int(|r| r.parameters),
        int(|r| r.steps),
        int(|r| r.batch_size),
        text(|r| &r.budget_rule),
        int(|r| r.trials_seen),
        float(&|r| Some(r.epochs_seen)),
    ];
    for (name, get) in scores() {
        fields.push(Field::new(name, DataType::Float64, true));
        columns.push(float(&get));
    }
    fields.extend([
        Field::new("wall_time_s", DataType::Float64, false),
        Field::new("world_size", DataType::UInt64, false),
        Field::new("git_commit", DataType::Utf8, false),
        Field::new("config_hash", DataType::Utf8, false),
    ]);
    columns.extend([
        float(&|r| Some(r.wall_time_s)),
        int(|r| r.world_size),
        text(|r| &r.git_commit),
        text(|r| &r.config_hash),
    ]);
    let out = |e: &dyn std::fmt::Display| SweepError::Output {
        what: dir.join("results.parquet").display().to_string(),
        message: e.to_string(),
    };
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| out(&e))?;
    let path = dir.join("results.parquet");
    let tmp = dir.join(format!(".results.parquet.{}.partial", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| out(&e))?;
    writer.write(&batch).map_err(|e| out(&e))?;
    writer.close().map_err(|e| out(&e))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(id: &str, sessions: u64, co_smooth: Option<f64>) -> Row {
        Row {
            run_id: id.into(),
            sessions,
            trials: 100 * sessions,
            tokens: 10_000 * sessions,
            masking: "mtm".into(),
            model: "small".into(),
            seed: 1,
            parameters: 1234,
            steps: 500,
            batch_size: 16,
            budget_rule: "epochs".into(),
            trials_seen: 8000,
            epochs_seen: 80.0 / sessions as f64,
            co_smooth,
            forward: Some(0.01),
            intra: None,
            inter: Some(-0.2),
            choice: Some(0.9),
            whisker: Some(0.5),
            co_smooth_baseline: Some(0.1),
            forward_baseline: None,
            intra_baseline: None,
            inter_baseline: None,
            co_smooth_ceiling: Some(0.4),
            forward_ceiling: None,
            intra_ceiling: None,
            inter_ceiling: None,
            own_co_smooth: Some(0.2),
            own_co_smooth_baseline: Some(0.15),
            own_co_smooth_ceiling: Some(0.41),
            own_forward: Some(0.12),
            own_forward_baseline: Some(0.05),
            own_forward_ceiling: Some(0.3),
            wall_time_s: 12.5,
            world_size: 1,
            git_commit: "abc, def".into(),
            config_hash: config_hash("x"),
        }
    }

    #[test]
    fn rows_round_trip_and_the_table_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let cell = dir.path().join("cell");
        std::fs::create_dir_all(&cell).unwrap();
        assert_eq!(read_row(&cell).unwrap(), None);
        let r = row("small-mtm-s001-seed1", 1, Some(0.12));
        write_row(&cell, &r).unwrap();
        assert_eq!(read_row(&cell).unwrap(), Some(r.clone()));
        write_table(dir.path(), &[r, row("small-mtm-s002-seed1", 2, None)]).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains(",0.12,0.01,,-0.2,"), "{}", lines[1]);
        assert!(lines[1].contains("\"abc, def\""), "{}", lines[1]);
        let file = std::fs::File::open(dir.path().join("results.parquet")).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert_eq!(batches[0].num_columns(), 37);
        assert_eq!(lines[0].split(',').count(), 37, "{}", lines[0]);
        assert_ne!(config_hash("a"), config_hash("b"));
    }
}
