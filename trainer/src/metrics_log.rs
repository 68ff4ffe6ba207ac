//! What a run records as it goes: one [`StepRecord`] per logged step in `metrics.jsonl`
//! and `metrics.csv` (rank 0 writes them; [`crate::plots`] draws them), with the time each
//! phase of a step took.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// One line of `metrics.jsonl` / `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer steps done.
    pub step: u64,
    /// Epoch of the step's last batch.
    pub epoch: u64,
    /// Mean masked loss of the step's batches.
    pub loss: f64,
    /// Learning rate the step used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Trials per second over the steps since the last record.
    pub trials_per_s: f64,
    /// Seconds since this process started training.
    pub elapsed_s: f64,
    /// Validation loss, on the steps where it was computed.
    pub val_loss: Option<f64>,
    /// Loss of each unit's mean time course on the same validation entries (the reference
    /// a model that uses the other units gets below), where validation ran.
    #[serde(default)]
    pub val_time_course: Option<f64>,
    /// Ranks in the run.
    #[serde(default = "one")]
    pub world_size: usize,
    /// Steps skipped for non-finite gradients so far (`distributed.non_finite = "skip"`).
    #[serde(default)]
    pub skipped_steps: u64,
    /// Rank 0's mean seconds per step, since the last record, in each phase.
    #[serde(default)]
    pub time: StepTimes,
}

fn one() -> usize {
    1
}

/// Seconds spent in each phase of a step (sums over the steps of a window, or means).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    /// Waiting for the loader's next batch.
    pub data_s: f64,
    /// Masking, host-to-device copies and the forward pass with the loss.
    pub forward_s: f64,
    /// The backward pass, summing the gradients into the flat buffer and checking that
    /// they are finite.
    pub backward_s: f64,
    /// Both all-reduces (step statistics and gradient buckets), waiting for peers included.
    pub allreduce_s: f64,
    /// Clipping, gradients back to tensors and the AdamW update.
    pub optimizer_s: f64,
}

impl StepTimes {
    pub(crate) fn add(&mut self, o: &StepTimes) {
        self.data_s += o.data_s;
        self.forward_s += o.forward_s;
        self.backward_s += o.backward_s;
        self.allreduce_s += o.allreduce_s;
        self.optimizer_s += o.optimizer_s;
    }

    pub(crate) fn scaled(&self, f: f64) -> StepTimes {
        StepTimes {
            data_s: self.data_s * f,
            forward_s: self.forward_s * f,
            backward_s: self.backward_s * f,
            allreduce_s: self.allreduce_s * f,
            optimizer_s: self.optimizer_s * f,
        }
    }

    /// Seconds in all phases.
    pub fn total(&self) -> f64 {
        self.data_s + self.forward_s + self.backward_s + self.allreduce_s + self.optimizer_s
    }

    /// One line: each phase in ms and percent of the step.
    pub fn describe(&self) -> String {
        let total = self.total().max(1e-12);
        let part =
            |name: &str, v: f64| format!("{name} {:.1} ms ({:.0}%)", v * 1e3, 100.0 * v / total);
        format!(
            "{:.1} ms per step: {}, {}, {}, {}, {}",
            total * 1e3,
            part("data wait", self.data_s),
            part("forward", self.forward_s),
            part("backward", self.backward_s),
            part("all-reduce", self.allreduce_s),
            part("optimizer", self.optimizer_s)
        )
    }
}

/// `metrics.jsonl` and `metrics.csv`, appended as the run goes. On resume, lines past the
/// checkpoint's step (written after it, before a crash) are dropped, so each step appears
/// once.
pub(crate) struct MetricsFiles {
    jsonl: std::fs::File,
    csv: std::fs::File,
}

const CSV_HEADER: &str =
    "step,epoch,loss,lr,grad_norm,trials_per_s,elapsed_s,val_loss,val_time_course";

impl MetricsFiles {
    pub(crate) fn open(dir: &Path, resumed_step: u64) -> Result<Self> {
        let jsonl_path = dir.join("metrics.jsonl");
        let csv_path = dir.join("metrics.csv");
        let keep = |line: &str, step_of: &dyn Fn(&str) -> Option<u64>| {
            step_of(line).is_some_and(|s| s <= resumed_step)
        };
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        let json_step = |line: &str| {
            serde_json::from_str::<StepRecord>(line)
                .ok()
                .map(|r| r.step)
        };
        let csv_step = |line: &str| line.split(',').next()?.parse::<u64>().ok();
        let kept_json: Vec<String> = read(&jsonl_path)
            .lines()
            .filter(|l| keep(l, &json_step))
            .map(str::to_string)
            .collect();
        let kept_csv: Vec<String> = read(&csv_path)
            .lines()
            .filter(|l| keep(l, &csv_step))
            .map(str::to_string)
            .collect();
        let write_all =
            |path: &Path, header: Option<&str>, lines: &[String]| -> Result<std::fs::File> {
                let mut f = std::fs::File::create(path).map_err(TrainError::io(path))?;
                let mut text = String::new();
                if let Some(h) = header {
                    text.push_str(h);
                    text.push('\n');
                }
                for l in lines {
                    text.push_str(l);
                    text.push('\n');
                }
                f.write_all(text.as_bytes()).map_err(TrainError::io(path))?;
                Ok(f)
            };
        Ok(Self {
            jsonl: write_all(&jsonl_path, None, &kept_json)?,
            csv: write_all(&csv_path, Some(CSV_HEADER), &kept_csv)?,
        })
    }

    pub(crate) fn write(&mut self, r: &StepRecord) -> Result<()> {
        let json = serde_json::to_string(r).expect("records serialise");
        let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let csv = format!(
            "{},{},{},{},{},{},{},{},{}",
            r.step,
            r.epoch,
            r.loss,
            r.lr,
            r.grad_norm,
            r.trials_per_s,
            r.elapsed_s,
            optional(r.val_loss),
            optional(r.val_time_course)
        );
        writeln!(self.jsonl, "{json}")
            .and_then(|_| writeln!(self.csv, "{csv}"))
            .and_then(|_| self.jsonl.flush())
            .and_then(|_| self.csv.flush())
            .map_err(|e| TrainError::Io {
                path: PathBuf::from("metrics.jsonl"),
                source: e,
            })
    }
}
