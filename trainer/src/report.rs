//! The typed report of an evaluation, shared by `mtm eval`, fine-tuning, the export's model
//! card and the sweep: per session and task, the model's scores beside the smoothing + GLM
//! baseline's and (on synthetic data) the true rates'; the means over sessions; the table
//! the command line prints. Written as JSON and read back with the same types.

use serde::{Deserialize, Serialize};

use crate::config::Task;
use crate::decode::DecodeScore;
use crate::metrics::{bps_per_unit_mean, bps_pooled_nlb};

/// An activity task's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityScore {
    /// The MtM paper's bits per spike: mean over units with scored spikes.
    pub bps_per_unit_mean: Option<f64>,
    /// Units that mean averages.
    pub units_scored: usize,
    /// The Neural Latents Benchmark's pooled bits per spike.
    pub bps_pooled_nlb: Option<f64>,
    /// Forward passes taken.
    pub forward_passes: usize,
    /// Passes the official scheme (about N/8 full passes over the split) would take.
    pub official_passes: usize,
    /// Wall time of the task, seconds.
    pub wall_s: f64,
    /// The smoothing + Poisson GLM baseline on the same scored entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Reference>,
    /// The true rates on the same scored entries (synthetic data only): the ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Reference>,
}

/// Bits per spike of a reference predictor (baseline or truth) on a task's scored entries.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Mean over units with scored spikes, as [`ActivityScore::bps_per_unit_mean`].
    pub bps_per_unit_mean: Option<f64>,
    /// Pooled over units, as [`ActivityScore::bps_pooled_nlb`].
    pub bps_pooled_nlb: Option<f64>,
}

impl Reference {
    /// Both conventions for `log_rates` against `counts` on the `scored` entries, and the
    /// number of units the per-unit mean averages.
    pub(crate) fn score(
        log_rates: &[f64],
        counts: &[f64],
        scored: &[bool],
        n_units: usize,
    ) -> (Self, usize) {
        let per_unit = bps_per_unit_mean(log_rates, counts, scored, n_units);
        let reference = Self {
            bps_per_unit_mean: per_unit.map(|(v, _)| v),
            bps_pooled_nlb: bps_pooled_nlb(log_rates, counts, scored, n_units),
        };
        (reference, per_unit.map_or(0, |(_, u)| u))
    }
}

/// One task's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskScore {
    /// Bits per spike.
    Activity(ActivityScore),
    /// Behaviour decoding.
    Decoding(DecodeScore),
    /// The task could not run on this session (e.g. no whisker column).
    Skipped {
        /// Why.
        skipped: String,
    },
}

impl TaskScore {
    /// The number in the table: bps per-unit mean, accuracy or R².
    pub fn headline(&self) -> Option<f64> {
        match self {
            TaskScore::Activity(a) => a.bps_per_unit_mean,
            TaskScore::Decoding(d) => Some(d.value),
            TaskScore::Skipped { .. } => None,
        }
    }

    /// The baseline's bps (per-unit mean), for activity tasks where it was scored.
    pub fn baseline(&self) -> Option<f64> {
        match self {
            TaskScore::Activity(a) => a.baseline.and_then(|b| b.bps_per_unit_mean),
            _ => None,
        }
    }

    /// The true rates' bps (per-unit mean), for activity tasks on synthetic data.
    pub fn ceiling(&self) -> Option<f64> {
        match self {
            TaskScore::Activity(a) => a.ceiling.and_then(|b| b.bps_per_unit_mean),
            _ => None,
        }
    }
}

/// A task's name and result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task.
    pub task: Task,
    /// Its scores.
    #[serde(flatten)]
    pub score: TaskScore,
}

/// One session's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    /// Session id.
    pub eid: String,
    /// Units.
    pub n_units: usize,
    /// Trials of the evaluated split.
    pub trials: usize,
    /// Results, in task order.
    pub tasks: Vec<TaskResult>,
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The split scored.
    pub split: String,
    /// The masking the model was trained with.
    pub masking: String,
    /// Per-session results.
    pub sessions: Vec<SessionReport>,
    /// Each task's headline number averaged over sessions (None when no session has it).
    pub mean: Vec<(Task, Option<f64>)>,
    /// The smoothing + GLM baseline's bps averaged over sessions, per task.
    pub baseline_mean: Vec<(Task, Option<f64>)>,
    /// The true rates' bps averaged over sessions, per task (synthetic data).
    pub ceiling_mean: Vec<(Task, Option<f64>)>,
}

/// The file in a run folder that holds the evaluation `mtm train` runs at its end.
pub const RUN_REPORT: &str = "eval-test.json";

/// The value for `task` in a per-task list of the report.
fn find(list: &[(Task, Option<f64>)], task: Task) -> Option<f64> {
    list.iter().find(|(t, _)| *t == task).and_then(|(_, v)| *v)
}

impl Report {
    /// `task`'s headline number averaged over sessions.
    pub fn mean_of(&self, task: Task) -> Option<f64> {
        find(&self.mean, task)
    }

    /// The smoothing + GLM baseline's bps for `task`, averaged over sessions.
    pub fn baseline_of(&self, task: Task) -> Option<f64> {
        find(&self.baseline_mean, task)
    }

    /// The true rates' bps for `task` (the ceiling; synthetic data), averaged over
    /// sessions.
    pub fn ceiling_of(&self, task: Task) -> Option<f64> {
        find(&self.ceiling_mean, task)
    }
}

/// A report over `sessions` (evaluated separately, e.g. one fine-tuned model each), with
/// each task's headline number averaged over the sessions that have it.
pub fn summarize(
    split: &str,
    masking: &str,
    tasks: &[Task],
    sessions: Vec<SessionReport>,
) -> Report {
    let mean_of = |value: fn(&TaskScore) -> Option<f64>| -> Vec<(Task, Option<f64>)> {
        tasks
            .iter()
            .map(|&task| {
                let values: Vec<f64> = sessions
                    .iter()
                    .filter_map(|s| {
                        s.tasks
                            .iter()
                            .find(|t| t.task == task)
                            .and_then(|t| value(&t.score))
                    })
                    .collect();
                let mean =
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
                (task, mean)
            })
            .collect()
    };
    let (mean, baseline_mean, ceiling_mean) = (
        mean_of(TaskScore::headline),
        mean_of(TaskScore::baseline),
        mean_of(TaskScore::ceiling),
    );
    Report {
        split: split.to_string(),
        masking: masking.to_string(),
        sessions,
        mean,
        baseline_mean,
        ceiling_mean,
    }
}

/// A reference row's value for a task, if it has one.
type ValueOf<'a> = &'a dyn Fn(Task) -> Option<f64>;

/// The report as a table in the paper's column order: one row per session and a mean row;
/// decoding cells carry the chance level in parentheses. Under each model row, the
/// smoothing + GLM baseline's bits per spike on the same entries and, on synthetic data,
/// the true rates' (the ceiling).
pub fn table(report: &Report) -> String {
    let tasks: Vec<Task> = report.mean.iter().map(|(t, _)| *t).collect();
    let mut out = format!("{:<38}", "session");
    for t in &tasks {
        out.push_str(&format!("{:>15}", t.name()));
    }
    out.push('\n');
    let cell = |v: Option<f64>| v.map_or(format!("{:>15}", "-"), |v| format!("{v:>15.4}"));
    let reference_rows = |out: &mut String, baseline: ValueOf, ceiling: ValueOf| {
        let rows: [(&str, ValueOf); 2] = [
            ("  smoothing + GLM baseline", baseline),
            ("  true rates (ceiling)", ceiling),
        ];
        for (label, values) in rows {
            if tasks.iter().all(|&t| values(t).is_none()) {
                continue;
            }
            out.push_str(&format!("{label:<38}"));
            for &t in &tasks {
                out.push_str(&cell(values(t)));
            }
            out.push('\n');
        }
    };
    for s in &report.sessions {
        out.push_str(&format!("{:<38}", s.eid));
        let result = |t: Task| s.tasks.iter().find(|r| r.task == t).map(|r| &r.score);
        for &t in &tasks {
            out.push_str(&match result(t) {
                Some(TaskScore::Decoding(d)) => {
                    format!("{:>15}", format!("{:.4} ({:.2})", d.value, d.chance))
                }
                other => cell(other.and_then(TaskScore::headline)),
            });
        }
        out.push('\n');
        reference_rows(
            &mut out,
            &|t| result(t).and_then(TaskScore::baseline),
            &|t| result(t).and_then(TaskScore::ceiling),
        );
    }
    if report.sessions.len() > 1 {
        out.push_str(&format!("{:<38}", "mean"));
        for (_, v) in &report.mean {
            out.push_str(&cell(*v));
        }
        out.push('\n');
        reference_rows(&mut out, &|t| find(&report.baseline_mean, t), &|t| {
            find(&report.ceiling_mean, t)
        });
    }
    out
}
