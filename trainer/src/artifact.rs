//! A trained model on disk, in any of its three forms: a checkpoint folder, a run folder
//! (its latest checkpoint) or an `mtm export` folder. [`Artifact::open`] is the one place
//! that tells them apart; evaluation, benchmarks and fine-tuning all open models through
//! it.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::checkpoint;
use crate::config::RunConfig;
use crate::error::Result;
use crate::export;
use crate::model::{Ndt, SessionSpec};
use crate::weights::{self, BurnTensors};

/// Which form a model on disk has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A checkpoint folder (`state.json`, `model.safetensors`, ...).
    Checkpoint,
    /// A run folder or its `checkpoints/` folder: its latest checkpoint.
    Run,
    /// A folder written by `mtm export`.
    Export,
}

/// A trained model read from disk: its configuration, sessions and weights.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The form it had.
    pub kind: ArtifactKind,
    /// The folder the weights came from (for a run, its latest checkpoint).
    pub dir: PathBuf,
    /// The configuration it was trained with.
    pub config: RunConfig,
    /// The sessions it was trained on, in stitcher order.
    pub sessions: Vec<SessionSpec>,
    /// Its weights, under burn's names, f32.
    pub tensors: BurnTensors,
}

impl Artifact {
    /// Opens a checkpoint, run or export folder.
    pub fn open(path: &Path) -> Result<Self> {
        if export::is_export(path) {
            let (_, config, sessions, tensors) = export::read_export(path)?;
            return Ok(Self {
                kind: ArtifactKind::Export,
                dir: path.to_path_buf(),
                config,
                sessions,
                tensors,
            });
        }
        let dir = checkpoint::resolve(path)?;
        let kind = if dir == path {
            ArtifactKind::Checkpoint
        } else {
            ArtifactKind::Run
        };
        Ok(Self {
            kind,
            config: checkpoint::read_config(&dir)?,
            sessions: checkpoint::read_sessions(&dir)?,
            tensors: weights::read_file(&dir.join("model.safetensors"))?,
            dir,
        })
    }

    /// The model, with every weight loaded, on `device`.
    pub fn model(&self, device: &Device) -> Result<Ndt> {
        weights::build(
            &self.config.model,
            &self.sessions,
            &self.tensors,
            &self.dir.join("model.safetensors"),
            device,
        )
    }
}
