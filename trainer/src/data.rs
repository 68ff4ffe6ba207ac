//! What a run reads: the synthetic dataset generated on first use, the sessions it trains
//! on and how the dataset's sessions map onto the model's, and each session's mean time
//! course (the reference printed beside the validation loss, and the heads' initial rates).

use mtm_dataloader::dataset::Dataset;
use mtm_dataloader::session::Split;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::masking;
use crate::model::{Ndt, SessionSpec};

/// Generates `data.synthesize` at `data.root` when that is a local folder that does not
/// exist yet. Returns whether it generated anything.
///
/// Runs that start together on the same new dataset (a sweep's cells under `--jobs`, a
/// Slurm array's tasks) would otherwise both generate it into one staging folder and
/// the second would fail at the final rename. The generation is held under an exclusive
/// lock on `{root}.lock` (flock; removed when done): whoever waits finds the folder
/// complete once the lock is theirs and generates nothing.
pub fn prepare_data(config: &RunConfig) -> Result<bool> {
    let Some(synth) = &config.data.synthesize else {
        return Ok(false);
    };
    let root = &config.data.root;
    let Some(path) = mtm_dataloader::store::local_path(root) else {
        return Ok(false);
    };
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(TrainError::io(parent))?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let lock = std::fs::File::create(&lock_path).map_err(TrainError::io(&lock_path))?;
    lock.lock().map_err(TrainError::io(&lock_path))?;
    // Checked again under the lock: the process that held it may have just finished.
    let generated = if path.exists() {
        Ok(false)
    } else {
        mtm_dataloader::synth::write_local_dataset(
            &path,
            synth,
            mtm_dataloader::WriteOptions::default(),
            |_, _| {},
        )
        .map(|_| true)
    };
    // Removed whether or not the generation succeeded. A process still waiting holds the
    // removed file's lock and then looks for the folder itself; one that comes later
    // finds the folder before it looks for a lock.
    let _ = std::fs::remove_file(&lock_path);
    Ok(generated?)
}

/// Per-session facts the loop needs: model index and unit regions as small integers.
#[derive(Clone, Debug)]
pub struct SessionMap {
    /// Model session index for each dataset session (None: not trained on).
    pub model_index: Vec<Option<usize>>,
    /// Region index of each unit, per dataset session.
    pub regions: Vec<Vec<usize>>,
}

impl SessionMap {
    /// Maps the dataset's sessions onto the model's.
    pub fn new(dataset: &Dataset, model_sessions: &[SessionSpec]) -> Self {
        let model_index = dataset
            .sessions
            .iter()
            .map(|s| model_sessions.iter().position(|m| m.eid == s.eid))
            .collect();
        let regions = dataset
            .sessions
            .iter()
            .map(|s| masking::region_indices(&s.regions))
            .collect();
        Self {
            model_index,
            regions,
        }
    }

    /// Trials of `split` per dataset session, 0 for the sessions the model does not train
    /// on (so that no plan ever holds them).
    pub fn trial_counts(&self, dataset: &Dataset, split: Split) -> Vec<usize> {
        dataset
            .trial_counts(split)
            .into_iter()
            .zip(&self.model_index)
            .map(|(n, m)| if m.is_some() { n } else { 0 })
            .collect()
    }
}

/// Each dataset session's mean time course: the log of each unit's mean count in each bin,
/// `(T, N)`, over the first 256 training trials (floored at 1e-4 for silent units); `None`
/// for sessions the model does not train on. It is the reference the validation loss is
/// printed beside (a model that does not beat it has not used the other units) and, with
/// `train.init_rates`, where each head's bias starts.
pub fn time_courses(dataset: &Dataset, map: &SessionMap) -> Result<Vec<Option<Vec<f32>>>> {
    let mut out = Vec::with_capacity(dataset.sessions.len());
    for (ds, session) in dataset.sessions.iter().enumerate() {
        let n = session.trials(Split::Train).min(256);
        if map.model_index[ds].is_none() || n == 0 {
            out.push(None);
            continue;
        }
        let trials: Vec<u32> = (0..n as u32).collect();
        let batch = dataset.read_batch(ds, Split::Train, &trials)?;
        let per_trial = batch.n_bins * batch.n_units;
        let mut sums = vec![0.0f64; per_trial];
        for trial in batch.spikes.chunks(per_trial) {
            for (s, &c) in sums.iter_mut().zip(trial) {
                *s += f64::from(c);
            }
        }
        dataset.recycle(batch);
        out.push(Some(
            sums.iter()
                .map(|s| (s / n as f64).max(1e-4).ln() as f32)
                .collect(),
        ));
    }
    Ok(out)
}

/// Sets each head's bias to the log of its unit's mean count per bin (the time course
/// averaged over bins); the values depend on the data alone, so every rank sets the same.
pub(crate) fn init_rates(mut model: Ndt, map: &SessionMap, courses: &[Option<Vec<f32>>]) -> Ndt {
    for (ds, course) in courses.iter().enumerate() {
        let (Some(index), Some(course)) = (map.model_index[ds], course) else {
            continue;
        };
        let n = model.sessions()[index].n_units;
        let bins = course.len() / n;
        let mut mean = vec![0.0f64; n];
        for row in course.chunks(n) {
            for (m, &l) in mean.iter_mut().zip(row) {
                *m += f64::from(l).exp() / bins as f64;
            }
        }
        let bias: Vec<f32> = mean.iter().map(|m| m.max(1e-4).ln() as f32).collect();
        model = model.with_head_bias(index, &bias);
    }
    model
}

/// The eids a run uses, in order: `data.sessions`, else the dataset's sessions that
/// `data.select` chooses (those it chooses but the dataset lacks are logged), else every
/// session of the dataset. The one place that rule lives.
pub fn wanted_eids(config: &RunConfig, dataset: &Dataset) -> Result<Vec<String>> {
    if !config.data.sessions.is_empty() {
        return Ok(config.data.sessions.clone());
    }
    let Some(select) = &config.data.select else {
        return Ok(dataset.sessions.iter().map(|s| s.eid.clone()).collect());
    };
    let chosen = select.eids()?;
    let (present, missing): (Vec<String>, Vec<String>) = chosen
        .into_iter()
        .partition(|eid| dataset.sessions.iter().any(|s| &s.eid == eid));
    if !missing.is_empty() {
        tracing::warn!(
            "data.select chooses {} sessions that {} does not hold (e.g. {}); using the {} it holds",
            missing.len(),
            dataset.root,
            missing[..missing.len().min(3)].join(", "),
            present.len()
        );
    }
    if present.is_empty() {
        return Err(TrainError::Mismatch(format!(
            "data.select chooses no session of {}",
            dataset.root
        )));
    }
    Ok(present)
}

/// Sessions a run trains on (see [`wanted_eids`]), checked against the model.
pub fn select_sessions(config: &RunConfig, dataset: &Dataset) -> Result<Vec<SessionSpec>> {
    wanted_eids(config, dataset)?
        .into_iter()
        .map(|eid| {
            let s = dataset
                .sessions
                .iter()
                .find(|s| s.eid == eid)
                .ok_or_else(|| {
                    TrainError::Mismatch(format!(
                        "data.sessions names {eid}, which is not in {}",
                        dataset.root
                    ))
                })?;
            if s.n_bins != config.model.n_bins {
                return Err(TrainError::Mismatch(format!(
                    "session {eid} has {} bins per trial, the model {} (model.n_bins)",
                    s.n_bins, config.model.n_bins
                )));
            }
            Ok(SessionSpec {
                eid: s.eid.clone(),
                n_units: s.n_units,
                regions: s.regions.clone(),
            })
        })
        .collect()
}
