//! Fine-tuning on sessions the pretrained model never saw (spec §5, the paper's Table 2).
//!
//! Each held-out session gets a new stitcher, head and session token; every other weight
//! (embedding, positions, prompt tokens, transformer, final norm) is copied by name from
//! the pretrained checkpoint or export. What was loaded, created and ignored is reported.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::model::{ModelConfig, Ndt, SessionSpec};
use crate::weights::{self, BurnTensors};

/// The file in a fine-tuning run's folder that holds its [`FinetuneReport`].
pub const FINETUNE_REPORT: &str = "finetune-report.json";

/// `finetune-report.json`: what `mtm finetune` did and how the result scored; written by
/// the binary, read back by the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneReport {
    /// The pretrained checkpoint or export, or `None` when trained from scratch.
    pub source: Option<String>,
    /// Whether only session weights were trained.
    pub freeze_backbone: bool,
    /// What each fine-tuned session took from the pretrained model.
    pub loads: Vec<SessionLoad>,
    /// The evaluation of the fine-tuned sessions.
    pub report: crate::report::Report,
}

/// One fine-tuned session's [`LoadReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLoad {
    /// The session.
    pub eid: String,
    /// What it took.
    pub load: LoadReport,
}

/// Which weights a fine-tuned model took from the pretrained one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The pretrained checkpoint or export.
    pub source: PathBuf,
    /// Parameters copied from it (burn's names).
    pub loaded: Vec<String>,
    /// Parameters created new (the held-out session's stitcher, head and token).
    pub created: Vec<String>,
    /// Pretrained tensors not used (the pretraining sessions' stitchers, heads, tokens).
    pub ignored: Vec<String>,
}

/// A pretrained model to fine-tune from.
pub struct Pretrained {
    /// Its folder (checkpoint or export).
    pub dir: PathBuf,
    /// The configuration it was trained with.
    pub config: RunConfig,
    /// The sessions it was trained on.
    pub sessions: Vec<SessionSpec>,
    tensors: BurnTensors,
}

/// The architecture fields on which two models differ (dropout aside), as messages.
pub fn architecture_differences(a: &ModelConfig, b: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            out.push(format!(
                "model.{name}: {x} here, {y} in the pretrained model"
            ));
        }
    };
    field(
        "stitch_dim",
        a.stitch_dim.to_string(),
        b.stitch_dim.to_string(),
    );
    field("hidden", a.hidden.to_string(), b.hidden.to_string());
    field("layers", a.layers.to_string(), b.layers.to_string());
    field("heads", a.heads.to_string(), b.heads.to_string());
    field("mlp", a.mlp.to_string(), b.mlp.to_string());
    field("n_bins", a.n_bins.to_string(), b.n_bins.to_string());
    field("prompts", a.prompts.to_string(), b.prompts.to_string());
    field(
        "positions",
        format!("{:?}", a.positions),
        format!("{:?}", b.positions),
    );
    out
}

/// Whether a burn parameter name belongs to one session (not shared).
fn session_specific(name: &str) -> bool {
    name.starts_with("stitchers.") || name.starts_with("heads.") || name == "session_tokens"
}

impl Pretrained {
    /// Opens a checkpoint, run or export folder (see [`Artifact::open`]).
    pub fn open(path: &Path) -> Result<Self> {
        let Artifact {
            dir,
            config,
            sessions,
            tensors,
            ..
        } = Artifact::open(path)?;
        Ok(Self {
            dir,
            config,
            sessions,
            tensors,
        })
    }

    /// Checks that a model of `architecture` can start from this one and that no held-out
    /// session was a pretraining session.
    pub fn check(&self, architecture: &ModelConfig, held_out: &[String]) -> Result<()> {
        let differences = architecture_differences(architecture, &self.config.model);
        if !differences.is_empty() {
            return Err(TrainError::Checkpoint {
                path: self.dir.clone(),
                message: format!(
                    "comes from another architecture: {}",
                    differences.join("; ")
                ),
            });
        }
        let seen: Vec<&String> = held_out
            .iter()
            .filter(|eid| self.sessions.iter().any(|s| &s.eid == *eid))
            .collect();
        if !seen.is_empty() {
            return Err(TrainError::Mismatch(format!(
                "held-out session(s) {} were pretraining sessions of {}: fine-tuning must use sessions the model never saw",
                seen.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// `model` with every shared weight copied from the pretrained model.
    pub fn load_shared(&self, mut model: Ndt) -> Result<(Ndt, LoadReport)> {
        let (shared, ignored): (Vec<_>, Vec<_>) = self
            .tensors
            .iter()
            .partition(|(name, _)| !session_specific(name));
        let shared: BurnTensors = shared
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (loaded, created) = weights::apply(&mut model, &shared, true, &self.dir)?;
        if let Some(stray) = created.iter().find(|n| !session_specific(n)) {
            return Err(TrainError::Checkpoint {
                path: self.dir.clone(),
                message: format!("has no `{stray}`, a shared weight of this architecture"),
            });
        }
        Ok((
            model,
            LoadReport {
                source: self.dir.clone(),
                loaded,
                created,
                ignored: ignored.into_iter().map(|(k, _)| k.clone()).collect(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_weights_are_not_shared() {
        for name in ["stitchers.0.weight", "heads.3.bias", "session_tokens"] {
            assert!(session_specific(name), "{name}");
        }
        for name in [
            "prompt_tokens",
            "positions",
            "blocks.0.qkv.weight",
            "embed_in.bias",
        ] {
            assert!(!session_specific(name), "{name}");
        }
    }

    #[test]
    fn architecture_differences_name_the_fields() {
        let a = ModelConfig::default();
        let b = ModelConfig {
            hidden: 256,
            dropout: 0.1,
            ..ModelConfig::default()
        };
        assert_eq!(
            architecture_differences(&a, &b),
            ["model.hidden: 512 here, 256 in the pretrained model"]
        );
    }
}
