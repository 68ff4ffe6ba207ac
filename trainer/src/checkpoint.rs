//! Checkpoints: one folder per saved step, written under a temporary name and renamed into
//! place, so a crash mid-write never leaves a checkpoint that looks complete.
//!
//! ```text
//! checkpoints/
//!   latest                   the newest complete checkpoint's folder name
//!   step-00000500/
//!     model.safetensors      the weights, for anyone (names like `blocks.0.qkv.weight`;
//!                            burn stores Linear weights as [in, out])
//!     model.bpk              the weights with burn's parameter ids, for exact resume
//!     optimizer.bpk          AdamW moments and step counts
//!     state.json             step, sampler position, seed
//!     sessions.json          eid and unit count of every stitcher, in order
//!     config.toml            the resolved run configuration
//! ```

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use mtm_dataloader::sampler::SamplerState;
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::model::{Ndt, SessionSpec};
use crate::optim::Optim;

/// Where training stands, besides weights and optimizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// The position of rank 0's training stream; with `world_size` it gives the global
    /// position, from which a run with any number of ranks resumes.
    pub sampler: SamplerState,
    /// Ranks of the run that wrote the checkpoint.
    #[serde(default = "one")]
    pub world_size: usize,
    /// The run's seed.
    pub seed: u64,
    /// How the random streams are keyed (all are pure functions of these, so this and the
    /// step are the whole random state).
    pub rank_streams: String,
}

fn one() -> usize {
    1
}

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The folder of step `step`'s checkpoint under `dir`.
pub fn step_dir(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:08}"))
}

/// Writes a checkpoint into `dir` and returns its folder; keeps the newest `keep` (0: all).
pub fn save(
    dir: &Path,
    config: &RunConfig,
    state: &TrainState,
    model: &Ndt,
    optim: &Optim,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let final_dir = step_dir(dir, state.step);
    let name = final_dir
        .file_name()
        .expect("step folders have names")
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    let sessions = serde_json::to_string_pretty(model.sessions()).expect("sessions serialise");
    let write = |file: &str, text: &str| {
        let path = tmp.join(file);
        std::fs::write(&path, text).map_err(TrainError::io(path))
    };
    write("sessions.json", &sessions)?;
    write("config.toml", &config.to_toml())?;
    write(
        "state.json",
        &serde_json::to_string_pretty(state).expect("state serialises"),
    )?;
    let mut store = SafetensorsStore::from_file(tmp.join("model.safetensors"))
        .metadata("format", "mtm-ndt1")
        .metadata(
            "sessions",
            serde_json::to_string(model.sessions()).expect("serialises"),
        )
        .metadata("step", state.step.to_string());
    model
        .save_into(&mut store)
        .map_err(|e| bad(&tmp, format!("writing model.safetensors: {e}")))?;
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| bad(&tmp, format!("writing model.bpk: {e}")))?;
    optim
        .save(tmp.join("optimizer.bpk"))
        .map_err(|e| bad(&tmp, format!("writing optimizer.bpk: {e}")))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(TrainError::io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(TrainError::io(&final_dir))?;
    let latest_tmp = dir.join(".latest.partial");
    std::fs::write(&latest_tmp, format!("{name}\n")).map_err(TrainError::io(&latest_tmp))?;
    std::fs::rename(&latest_tmp, dir.join("latest")).map_err(TrainError::io(dir.join("latest")))?;
    if keep > 0 {
        prune(dir, keep)?;
    }
    Ok(final_dir)
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(TrainError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for old in &steps[..excess] {
        std::fs::remove_dir_all(old).map_err(TrainError::io(old))?;
    }
    Ok(())
}

/// The checkpoint folder `path` designates: a checkpoint folder itself, a `checkpoints/`
/// folder (its `latest`), or a run folder (its `checkpoints/latest`).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    for base in [path.to_path_buf(), path.join("checkpoints")] {
        let latest = base.join("latest");
        if latest.is_file() {
            let name = std::fs::read_to_string(&latest).map_err(TrainError::io(&latest))?;
            let dir = base.join(name.trim());
            if dir.join("state.json").is_file() {
                return Ok(dir);
            }
            return Err(bad(
                &latest,
                format!("names {}, which is incomplete or gone", dir.display()),
            ));
        }
    }
    Err(bad(
        path,
        "neither a checkpoint folder (with state.json) nor a run or checkpoints folder with a `latest` file",
    ))
}

/// The training state of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(TrainError::io(&path))?;
    serde_json::from_str(&text).map_err(|e| bad(&path, e.to_string()))
}

/// The run configuration stored in a checkpoint.
pub fn read_config(dir: &Path) -> Result<RunConfig> {
    RunConfig::load(&dir.join("config.toml"), &[])
}

/// The sessions (stitcher order) stored in a checkpoint.
pub fn read_sessions(dir: &Path) -> Result<Vec<SessionSpec>> {
    let path = dir.join("sessions.json");
    let text = std::fs::read_to_string(&path).map_err(TrainError::io(&path))?;
    serde_json::from_str(&text).map_err(|e| bad(&path, e.to_string()))
}

/// `model` with the checkpoint's weights and parameter ids (for resuming).
pub fn load_model(dir: &Path, model: Ndt) -> Result<Ndt> {
    model
        .try_load_file(dir.join("model.bpk"))
        .map_err(|e| bad(dir, format!("model.bpk: {e}")))
}

/// `optim` with the checkpoint's state.
pub fn load_optimizer(dir: &Path, optim: Optim) -> Result<Optim> {
    optim
        .load(dir.join("optimizer.bpk"))
        .map_err(|e| bad(dir, format!("optimizer.bpk: {e}")))
}
