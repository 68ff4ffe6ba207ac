//! The pictures of a run, drawn from its `metrics.jsonl` into `plots/` (SVG and PNG):
//! `loss` (training loss, validation loss, and each unit's mean time course on the same
//! validation entries, the line a model that uses the other units must get below),
//! `learning_rate` and `grad_norm`. Redrawn at every validation and at the end of the run,
//! so they can be watched while it trains.

use std::path::{Path, PathBuf};

use mtm_plot::{Chart, Mark, Scale, Series};

use crate::metrics_log::StepRecord;

/// Folder of the pictures inside a run folder.
pub const PLOTS_DIR: &str = "plots";

/// Reads `run/metrics.jsonl` and writes the training curves into `run/plots/`; returns the
/// files written. Lines that do not parse are skipped (a crash can cut the last one).
pub fn training_curves(run: &Path) -> Result<Vec<PathBuf>, String> {
    let metrics = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics)
        .map_err(|e| format!("cannot read {}: {e}", metrics.display()))?;
    let records: Vec<StepRecord> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let dir = run.join(PLOTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let series = |label: &str, colour, mark, f: &dyn Fn(&StepRecord) -> Option<f64>| Series {
        label: label.into(),
        points: records
            .iter()
            .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
            .collect(),
        mark,
        colour,
    };
    let chart = |title: &str, y_label: &str, series: Vec<Series>| Chart {
        title: title.into(),
        x_label: "optimizer step".into(),
        y_label: y_label.into(),
        x_scale: Scale::Linear,
        series,
    };
    // Each step's loss depends on the scheme its batch drew: the raw values, light, and
    // their running mean over the last ten logged steps, which shows the trend.
    let raw = series("training, each logged step", 0, Mark::Faint, &|r| {
        Some(r.loss)
    });
    let window = 10;
    let smooth = Series {
        label: format!("training, mean of the last {window} logged steps"),
        points: (0..raw.points.len())
            .map(|i| {
                let from = i.saturating_sub(window - 1);
                let part = &raw.points[from..=i];
                (
                    raw.points[i].0,
                    part.iter().map(|p| p.1).sum::<f64>() / part.len() as f64,
                )
            })
            .collect(),
        mark: Mark::Line,
        colour: 0,
    };
    let mut loss = vec![raw, smooth];
    if records.iter().any(|r| r.val_loss.is_some()) {
        loss.push(series("validation", 1, Mark::Line, &|r| r.val_loss));
        loss.push(series("", 1, Mark::Points, &|r| r.val_loss));
    }
    if records.iter().any(|r| r.val_time_course.is_some()) {
        loss.push(series(
            "each unit's mean time course (validation)",
            2,
            Mark::Reference,
            &|r| r.val_time_course,
        ));
    }
    let charts = [
        (
            "loss",
            chart("Loss", "Poisson NLL (nats per masked entry)", loss),
        ),
        (
            "learning_rate",
            chart(
                "Learning rate",
                "learning rate",
                vec![series("", 0, Mark::Line, &|r| Some(r.lr))],
            ),
        ),
        (
            "grad_norm",
            chart(
                "Gradient norm (before clipping)",
                "global L2 norm",
                vec![series("", 0, Mark::Line, &|r| Some(r.grad_norm))],
            ),
        ),
    ];
    let mut written = Vec::new();
    for (name, chart) in &charts {
        written.extend(mtm_plot::write(&dir.join(name), chart).map_err(|e| e.to_string())?);
    }
    Ok(written)
}
